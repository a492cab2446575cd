//! Subgroups in the browser, which wgpu 30 cannot ask for: its WebGPU backend maps
//! features to WebGPU's names through a table that lacks `subgroups`, so the feature is
//! neither requested nor reported. WGSL reaches the browser unchanged, so a device
//! created with the feature runs the subgroup reduction file as it is natively.
//!
//! wgpu's `Adapter::request_device` calls `GPUAdapter.requestDevice` before it returns
//! its future. For that one synchronous call, `requestDevice` is replaced by a proxy that
//! adds `subgroups` to the descriptor's required features where the adapter offers it;
//! the original is put back before anything else can run (JavaScript has one thread
//! here), so nothing else on the page sees the proxy.

use std::cell::Cell;
use std::rc::Rc;

use js_sys::{Array, Function, Object, Proxy, Reflect};
use wasm_bindgen::closure::Closure;
use wasm_bindgen::{JsCast, JsValue};

fn get(target: &JsValue, key: &str) -> Result<JsValue, JsValue> {
    Reflect::get(target, &JsValue::from_str(key))
}

/// `set.has(name)` of a JavaScript set-like (GPUSupportedFeatures, WGSLLanguageFeatures).
fn set_has(set: &JsValue, name: &str) -> Result<bool, JsValue> {
    let has: Function = get(set, "has")?.dyn_into()?;
    Ok(has.call1(set, &JsValue::from_str(name))?.is_truthy())
}

/// Whether WGSL here has the `subgroup_id` language extension, which the subgroup
/// reduction file needs for its `subgroup_id` and `num_subgroups` built-ins.
fn wgsl_has_subgroup_id() -> bool {
    let global: JsValue = js_sys::global().into();
    let has = || set_has(&get(&get(&get(&global, "navigator")?, "gpu")?, "wgslLanguageFeatures")?, "subgroup_id");
    has().unwrap_or(false)
}

/// Adds "subgroups" to `args[0].requiredFeatures` when `adapter` offers the feature; says
/// whether it did.
fn add_subgroups(adapter: &JsValue, args: &Array) -> Result<bool, JsValue> {
    if !set_has(&get(adapter, "features")?, "subgroups")? {
        return Ok(false);
    }
    let descriptor = args.get(0);
    let descriptor = if descriptor.is_object() { descriptor } else { Object::new().into() };
    let required = get(&descriptor, "requiredFeatures")?;
    let features = if required.is_undefined() { Array::new() } else { Array::from(&required) };
    features.push(&JsValue::from_str("subgroups"));
    Reflect::set(&descriptor, &JsValue::from_str("requiredFeatures"), &features)?;
    args.set(0, descriptor);
    Ok(true)
}

/// `adapter.request_device(descriptor)`, with WebGPU's `subgroups` feature added where
/// `want` and the adapter and WGSL offer it; the bool says whether it was.
pub(super) async fn request_device(adapter: &wgpu::Adapter, descriptor: &wgpu::DeviceDescriptor<'_>, want: bool) -> (Result<(wgpu::Device, wgpu::Queue), wgpu::RequestDeviceError>, bool) {
    let added = Rc::new(Cell::new(false));
    let prototype = (want && wgsl_has_subgroup_id())
        .then(|| get(&js_sys::global(), "GPUAdapter").and_then(|class| get(&class, "prototype")))
        .and_then(|p| p.ok())
        .filter(JsValue::is_object);
    let original = prototype.as_ref().and_then(|p| get(p, "requestDevice").ok()).and_then(|f| f.dyn_into::<Function>().ok());
    let (Some(prototype), Some(original)) = (prototype, original) else {
        return (adapter.request_device(descriptor).await, false);
    };

    let flag = added.clone();
    // The proxy's `apply` trap: never throws (an exception would cross wgpu's wasm frames);
    // where the descriptor cannot be extended the call goes through unchanged.
    let trap = Closure::<dyn FnMut(Function, JsValue, Array) -> JsValue>::new(move |target: Function, this: JsValue, args: Array| {
        flag.set(add_subgroups(&this, &args).unwrap_or(false));
        Reflect::apply(&target, &this, &args).unwrap_or_else(|e| js_sys::Promise::reject(&e).into())
    });
    let handler = Object::new();
    let key = JsValue::from_str("requestDevice");
    let installed = Reflect::set(&handler, &JsValue::from_str("apply"), trap.as_ref()).is_ok()
        && Reflect::set(&prototype, &key, &Proxy::new(&original, &handler)).is_ok();
    let future = adapter.request_device(descriptor);
    if installed {
        let _ = Reflect::set(&prototype, &key, &original);
    }
    let result = future.await;
    // Dropped only now: the trap must outlive any call made through the proxy.
    drop(trap);
    match result {
        // A device is better than none: should the browser refuse the feature it lists,
        // the workgroup-memory variant runs.
        Err(_) if added.get() => (adapter.request_device(descriptor).await, false),
        result => (result, added.get()),
    }
}
