//! CPU references (f64 accumulation), a seeded generator and the kernel test cases.
//! The cases are async functions over a `Device`, shared by the native tests
//! (tests/kernels.rs, on lavapipe) and the browser tests (tests/browser.rs, Chromium).
#![allow(dead_code)]

pub mod cases;
#[cfg(not(target_arch = "wasm32"))]
pub mod photos;
pub mod reference;

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

/// A file of the committed tiny checkpoints and their config (tests/fixtures/tiny/).
#[cfg(not(target_arch = "wasm32"))]
pub fn tiny_fixture(file: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny").join(file);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
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

/// SplitMix64 with Box-Muller normals: reproducible inputs without a dependency.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
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
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
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
