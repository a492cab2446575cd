//! The kernels in headless Chromium on WebGPU (wasm32), against the same CPU references
//! as the native tests. Run by tests/run through wasm-bindgen-test-runner.
#![cfg(target_arch = "wasm32")]

mod common;

use daclip_webgpu::Device;
use wasm_bindgen_test::{wasm_bindgen_test, wasm_bindgen_test_configure};

wasm_bindgen_test_configure!(run_in_browser);

async fn dev() -> Device {
    let dev = Device::new().await.expect("WebGPU adapter");
    report!("adapter: {}", dev.info());
    dev
}

#[wasm_bindgen_test]
async fn matmul_in_browser() {
    let dev = dev().await;
    common::cases::matmul(&dev).await;
    common::cases::linear(&dev).await;
}

#[wasm_bindgen_test]
async fn conv2d_in_browser() {
    common::cases::conv2d(&dev().await).await;
}

#[wasm_bindgen_test]
async fn attention_in_browser() {
    common::cases::attention(&dev().await).await;
}

/// The CPU backend compiled to wasm with simd128: every kernel case, as natively.
#[wasm_bindgen_test]
async fn cpu_backend_in_browser() {
    let dev = Device::cpu();
    report!("device: {}", dev.info());
    common::cases::matmul(&dev).await;
    common::cases::linear(&dev).await;
    common::cases::conv2d(&dev).await;
    common::cases::norms(&dev).await;
    common::cases::softmax(&dev).await;
    common::cases::activations(&dev).await;
    common::cases::elementwise(&dev).await;
    common::cases::layout(&dev).await;
    common::cases::attention(&dev).await;
    common::cases::linear_attn(&dev).await;
}
