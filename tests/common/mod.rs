//! What the test binaries share: CPU references (f64 accumulation), a seeded generator
//! and the kernel test cases (async functions over a `Device`, run by the native tests in
//! tests/kernels.rs and the browser tests in tests/browser.rs); the tiny fixtures and
//! scratch folders; the GPU opened with each kernel family; error helpers that see NaN;
//! kernel settings; and `skipped`, how a check that cannot run here says so.
#![allow(dead_code)]

pub mod cases;
#[cfg(not(target_arch = "wasm32"))]
pub mod photos;
pub mod reference;

use daclip_webgpu::device::{Adapters, GpuOptions};

/// Prints a line natively and to the browser console under wasm-bindgen-test.
#[macro_export]
macro_rules! report {
    ($($arg:tt)*) => {{
        #[cfg(target_arch = "wasm32")]
        wasm_bindgen_test::console_log!($($arg)*);
        #[cfg(not(target_arch = "wasm32"))]
        println!($($arg)*);
    }};
}

/// The path of a file of the committed tiny checkpoints and their config
/// (tests/fixtures/tiny/).
#[cfg(not(target_arch = "wasm32"))]
pub fn tiny(file: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny").join(file)
}

/// The bytes of [`tiny`]`(file)`.
#[cfg(not(target_arch = "wasm32"))]
pub fn tiny_fixture(file: &str) -> Vec<u8> {
    let path = tiny(file);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// An empty folder of its own for the test `name` of this test binary.
#[cfg(not(target_arch = "wasm32"))]
pub fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("daclip-{}-{name}-{}", env!("CARGO_CRATE_NAME"), std::process::id()));
    std::fs::remove_dir_all(&dir).ok();
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Every product on the f32 kernels (f16 weights read as f32), whatever the adapter offers.
pub const F32_KERNELS: GpuOptions = GpuOptions { subgroups: true, shader_f16: Adapters::Off, cooperative_matrix: Adapters::Off };

/// The products with f16 weights on f16 workgroup tiles (what a hardware GPU with f16
/// shaders and without cooperative matrices runs), also on a software adapter.
pub const F16_TILES: GpuOptions = GpuOptions { subgroups: true, shader_f16: Adapters::Any, cooperative_matrix: Adapters::Off };

/// The products with f16 weights on cooperative matrices wherever the adapter offers them
/// (a hardware GPU does by default; Mesa 26's lavapipe only when asked).
pub const COOPERATIVE: GpuOptions = GpuOptions { subgroups: true, shader_f16: Adapters::Hardware, cooperative_matrix: Adapters::Any };

/// The GPU adapter opened with `options`, saying what its products with f16 weights run on.
#[cfg(not(target_arch = "wasm32"))]
pub fn gpu_with(options: GpuOptions) -> daclip_webgpu::Device {
    let dev = daclip_webgpu::device::block_on(daclip_webgpu::Device::new_with(options)).expect("no GPU adapter (install mesa-vulkan-drivers for lavapipe)");
    let products = match (dev.cooperative_matrix(), dev.shader_f16()) {
        (Some(_), _) => "cooperative matrices",
        (None, true) => "f16 tiles",
        (None, false) => "the f32 kernels",
    };
    println!("adapter: {}; products with f16 weights on {products}", dev.info());
    dev
}

/// [`gpu_with`]`(F16_TILES)` where the adapter has f16 shaders (Debian 12's lavapipe
/// does; SwiftShader does not); elsewhere None, and `what` counted as skipped.
#[cfg(not(target_arch = "wasm32"))]
pub fn gpu_with_f16_tiles(what: &str) -> Option<daclip_webgpu::Device> {
    let dev = gpu_with(F16_TILES);
    if !dev.shader_f16() {
        skipped("shader-f16", &format!("{what}: no f16 shaders on {}", dev.info()));
        return None;
    }
    Some(dev)
}

/// [`gpu_with`]`(COOPERATIVE)` where the adapter has cooperative matrices the kernels
/// take (Mesa 26's lavapipe does; Debian 12's does not); elsewhere None, and `what`
/// counted as skipped.
#[cfg(not(target_arch = "wasm32"))]
pub fn gpu_with_cooperative_matrices(what: &str) -> Option<daclip_webgpu::Device> {
    let dev = gpu_with(COOPERATIVE);
    if dev.cooperative_matrix().is_none() {
        skipped("cooperative-matrix", &format!("{what}: no cooperative matrices on {}", dev.info()));
        return None;
    }
    Some(dev)
}

/// `bytes` (a checkpoint in memory) converted to safetensors in memory.
#[allow(dead_code)]
pub fn converted(bytes: &[u8], options: daclip_webgpu::models::ConvertOptions) -> daclip_webgpu::Result<(Vec<u8>, daclip_webgpu::models::Summary)> {
    let mut out = Vec::new();
    let summary = daclip_webgpu::models::convert(&bytes, options, &mut out)?;
    Ok((out, summary))
}

/// The open_clip config of the tiny DA-CLIP (its 32-wide text tower cannot be read off
/// the tensor shapes).
#[cfg(not(target_arch = "wasm32"))]
pub fn tiny_clip_config() -> daclip_webgpu::models::clip::DaClipConfig {
    serde_json::from_slice(&tiny_fixture("clip_config.json")).unwrap()
}

/// The crate's SplitMix64 with Box-Muller normals: reproducible inputs.
pub struct Rng(daclip_webgpu::weights::SplitMix);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(daclip_webgpu::weights::SplitMix::new(seed))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// Uniform in 0..n (0 for n = 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        self.0.uniform()
    }

    pub fn normal(&mut self) -> f32 {
        let u1 = self.uniform().max(1e-300);
        let u2 = self.uniform();
        ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
    }

    pub fn normals(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.normal() * scale).collect()
    }
}

/// Values as they are after an f16 round trip (what the GPU sees of f16 weights).
pub fn f16_rounded(v: &[f32]) -> Vec<f32> {
    v.iter().map(|&x| half::f16::from_f32(x).to_f32()).collect()
}

/// The largest of `values` (errors, differences), infinity where one is NaN: `f64::max`
/// drops NaN, so a fold over it would score an all-NaN result 0 and pass.
pub fn worst(values: impl IntoIterator<Item = f64>) -> f64 {
    values.into_iter().fold(0.0, |m, v| if v.is_nan() { f64::INFINITY } else { m.max(v) })
}

/// max |a - b| over two results of one length, NaN-aware (see [`worst`]).
#[allow(dead_code)]
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len(), "result length");
    worst(a.iter().zip(b).map(|(x, y)| (*x as f64 - *y as f64).abs()))
}

/// max |got - want|, and that divided by max(rms(want), 1e-6) (the fixtures' metric).
pub fn errors(got: &[f32], want: &[f64]) -> (f64, f64) {
    assert_eq!(got.len(), want.len(), "result length");
    let max_abs = worst(got.iter().zip(want).map(|(g, w)| (*g as f64 - w).abs()));
    let rms = (want.iter().map(|w| w * w).sum::<f64>() / want.len().max(1) as f64).sqrt();
    (max_abs, max_abs / rms.max(1e-6))
}

/// Prints the errors of `name` and asserts the relative one is at most `tol`.
pub fn check(name: &str, got: &[f32], want: &[f64], tol: f64) {
    let (abs, rel) = errors(got, want);
    report!("{name:<52} max abs err {abs:.3e}   rel {rel:.3e}   (tol {tol:.0e})");
    assert!(rel <= tol, "{name}: relative error {rel:.3e} exceeds {tol:.0e}");
}

/// Changes `dev`'s kernel settings with `change`; false (nothing changed) where the device
/// refuses them (the CPU backend, a tile that does not fit).
pub fn tune(dev: &daclip_webgpu::Device, change: impl FnOnce(&mut daclip_webgpu::device::Tuning)) -> bool {
    let mut tuning = dev.tuning();
    change(&mut tuning);
    dev.set_tuning(tuning).is_ok()
}

/// A check that cannot run here because `feature` is missing: printed as `SKIPPED
/// [feature]: what`, which `bash tests/run` counts and lists at its end. Where
/// `DACLIP_REQUIRE` (comma-separated) names the feature it fails instead: tests/mesa26-lavapipe
/// requires `cooperative-matrix`, which Mesa 26's lavapipe has.
pub fn skipped(feature: &str, what: &str) {
    let required = std::env::var("DACLIP_REQUIRE").unwrap_or_default();
    assert!(!required.split(',').any(|r| r.trim() == feature), "{what}: `{feature}` is required here (DACLIP_REQUIRE={required}) but missing");
    // On a line of its own: libtest has printed `test name ... ` without a newline.
    println!("\nSKIPPED [{feature}]: {what}");
}
