//! The kernels in headless Chromium on WebGPU (wasm32), against the same CPU references
//! as the native tests. Run by tests/run through wasm-bindgen-test-runner.
#![cfg(target_arch = "wasm32")]

mod common;

use daclip_webgpu::Gpu;
use wasm_bindgen_test::{wasm_bindgen_test, wasm_bindgen_test_configure};

wasm_bindgen_test_configure!(run_in_browser);

async fn gpu() -> Gpu {
    let gpu = Gpu::new().await.expect("WebGPU adapter");
    report!("adapter: {}", gpu.info());
    gpu
}

#[wasm_bindgen_test]
async fn matmul_in_browser() {
    let gpu = gpu().await;
    common::cases::matmul(&gpu).await;
    common::cases::linear(&gpu).await;
}

#[wasm_bindgen_test]
async fn conv2d_in_browser() {
    common::cases::conv2d(&gpu().await).await;
}

#[wasm_bindgen_test]
async fn attention_in_browser() {
    common::cases::attention(&gpu().await).await;
}
