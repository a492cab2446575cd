//! The kernels in headless Chromium on WebGPU (wasm32), against the same CPU references
//! as the native tests. Run by tests/run through wasm-bindgen-test-runner.
#![cfg(target_arch = "wasm32")]

mod common;

use daclip_webgpu::device::GpuOptions;
use daclip_webgpu::Device;
use js_sys::Reflect;
use wasm_bindgen::{JsCast, JsValue};
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

/// Whether this browser offers what the subgroup reduction file needs, asked of WebGPU
/// directly: the adapter's `subgroups` feature and WGSL's `subgroup_id` (SwiftShader in
/// Chromium 156 has both).
async fn browser_offers_subgroups() -> bool {
    let get = |target: &JsValue, key: &str| Reflect::get(target, &key.into()).unwrap();
    let has = |set: JsValue, name: &str| {
        let f: js_sys::Function = get(&set, "has").dyn_into().unwrap();
        f.call1(&set, &name.into()).unwrap().is_truthy()
    };
    let gpu = get(&get(&js_sys::global(), "navigator"), "gpu");
    let request: js_sys::Function = get(&gpu, "requestAdapter").dyn_into().unwrap();
    let adapter = wasm_bindgen_futures::JsFuture::from(request.call0(&gpu).unwrap().dyn_into::<js_sys::Promise>().unwrap()).await.unwrap();
    has(get(&adapter, "features"), "subgroups") && has(get(&gpu, "wgslLanguageFeatures"), "subgroup_id")
}

/// The reduction kernels (norms, softmax) in both variants: with subgroups, which wgpu
/// cannot request in the browser by itself (src/device/gpu/web_subgroups.rs), where the
/// browser offers them, and with workgroup memory.
#[wasm_bindgen_test]
async fn reductions_in_browser() {
    let offered = browser_offers_subgroups().await;
    let dev = dev().await;
    report!("subgroups offered: {offered}, used: {}", dev.subgroups());
    assert_eq!(dev.subgroups(), offered);
    common::cases::norms(&dev).await;
    common::cases::softmax(&dev).await;

    let plain = Device::new_with(GpuOptions { subgroups: false, ..GpuOptions::default() }).await.expect("WebGPU adapter");
    assert!(!plain.subgroups());
    common::cases::norms(&plain).await;
    common::cases::softmax(&plain).await;
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
