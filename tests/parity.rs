//! Parity with the original PyTorch computation on a fixture directory (the format:
//! docs/development.md, "Fixtures and the PyTorch reference"). Reads `DACLIP_FIXTURES`
//! (default: the committed tiny set), converts the .pt there in memory when no converted
//! file is present, and prints the error of every key it checks, for float32 and float16
//! weights, on the GPU adapter (`*_gpu`) and on the CPU backend (`*_cpu`).
//!
//!     DACLIP_FIXTURES=<dir> cargo test --release --test parity -- --nocapture
#![cfg(not(target_arch = "wasm32"))]

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use daclip_webgpu::device::block_on;
use daclip_webgpu::models::clip::preprocess::{clip_input, ImageRef};
use daclip_webgpu::models::clip::tokenizer::tokenize;
use daclip_webgpu::models::clip::{probabilities, DaClip, DaClipConfig, DEGRADATIONS};
use daclip_webgpu::models::unet::ConditionalUNet;
use daclip_webgpu::ops::{sde_update, Noise};
use daclip_webgpu::sde::IrSde;
use daclip_webgpu::weights::{random_safetensors, DeviceDType};
use daclip_webgpu::models::{Checkpoint, ConvertOptions, ModelKind, StoreDType};
use daclip_webgpu::Device;

const TOL_F32: f64 = 1e-4;
const TOL_F16: f64 = 1e-2;

fn dir() -> PathBuf {
    std::env::var_os("DACLIP_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tiny")))
}

/// The Wild-IR pair at its real widths, vocabulary and patch size with fewer layers, its
/// weights made from `random_weights.json` (tests/reference/make_fixtures.py
/// --wild-reduced).
fn wild_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/wild-reduced"))
}

/// The fixture arrays as f32 (uint8 and int64 arrays converted), with their shapes.
struct Fixtures(HashMap<String, (Vec<usize>, Vec<f32>)>);

impl Fixtures {
    fn load(dir: &Path) -> Fixtures {
        let path = dir.join("fixtures.safetensors");
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let mut map = HashMap::new();
        for (name, v) in st.iter() {
            let d = v.data();
            let vals: Vec<f32> = match v.dtype() {
                safetensors::Dtype::F32 => d.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect(),
                safetensors::Dtype::U8 => d.iter().map(|&b| b as f32).collect(),
                safetensors::Dtype::I64 => d.chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap()) as f32).collect(),
                other => panic!("{name}: unexpected dtype {other:?}"),
            };
            map.insert(name.to_string(), (v.shape().to_vec(), vals));
        }
        Fixtures(map)
    }

    fn get(&self, key: &str) -> &(Vec<usize>, Vec<f32>) {
        self.0.get(key).unwrap_or_else(|| panic!("fixture `{key}` missing"))
    }

    /// A key that fixture directories made before it existed lack.
    fn optional(&self, key: &str) -> Option<&(Vec<usize>, Vec<f32>)> {
        self.0.get(key)
    }
}

/// max|got - want| / max(rms(want), 1e-6)
fn rel_error(got: &[f32], want: &[f32]) -> f64 {
    assert_eq!(got.len(), want.len(), "length");
    let rms = (want.iter().map(|&w| w as f64 * w as f64).sum::<f64>() / want.len() as f64).sqrt();
    let max = got.iter().zip(want).map(|(&g, &w)| (g as f64 - w as f64).abs()).fold(0.0, |m: f64, e| if e.is_nan() { f64::INFINITY } else { m.max(e) });
    max / rms.max(1e-6)
}

struct Report {
    label: &'static str,
    tol: f64,
    failures: Vec<String>,
}

impl Report {
    fn check(&mut self, key: &str, got: &[f32], want: &[f32]) {
        let e = rel_error(got, want);
        let ok = e <= self.tol;
        println!("  {:<28} {:<8} rel err {e:.3e}  {}", key, self.label, if ok { "ok" } else { "FAIL" });
        if !ok {
            self.failures.push(format!("{key} ({}): {e:.3e} > {:.0e}", self.label, self.tol));
        }
    }
}

/// The weights to check, named `<stem>.pt|.pth` / `<stem>.safetensors` in the fixture
/// directory: the original file converted in memory to f32 and to f16 when it is there,
/// else the converted file as it is; or, where `random_weights.json` is, the crate's
/// seeded random weights it names (f16 values, loaded as f32 and as f16).
fn variants(d: &Path, original: &str, converted: &str) -> Vec<(&'static str, Vec<u8>, DeviceDType, f64)> {
    let config: Option<DaClipConfig> = std::fs::read(d.join("clip_config.json")).ok().map(|b| serde_json::from_slice(&b).expect("clip_config.json"));
    if let Ok(spec) = std::fs::read(d.join("random_weights.json")) {
        let spec: serde_json::Value = serde_json::from_slice(&spec).expect("random_weights.json");
        let (kind, seed) = if original == "daclip.pt" {
            (ModelKind::DaClip(config.expect("clip_config.json")), &spec["daclip_seed"])
        } else {
            (ModelKind::UNet(serde_json::from_value(spec["unet_config"].clone()).expect("unet_config")), &spec["unet_seed"])
        };
        let bytes = random_safetensors(&kind.expected_tensors(), seed.as_u64().expect("a seed"), |_| false, kind.metadata());
        return vec![("f32", bytes.clone(), DeviceDType::F32, TOL_F32), ("f16", bytes, DeviceDType::F16, TOL_F16)];
    }
    if let Ok(pt) = std::fs::read(d.join(original)) {
        return vec![
            ("f32", common::converted(&pt, ConvertOptions { clip_config: config.clone(), ..ConvertOptions::new(StoreDType::F32) }).unwrap().0, DeviceDType::F32, TOL_F32),
            ("f16", common::converted(&pt, ConvertOptions { clip_config: config, ..ConvertOptions::new(StoreDType::F16) }).unwrap().0, DeviceDType::F16, TOL_F16),
        ];
    }
    let st = std::fs::read(d.join(converted)).unwrap_or_else(|_| panic!("neither {original} nor {converted} in the fixture directory"));
    let f16 = Checkpoint::parse(&st, config).unwrap().weights.tensors().any(|(_, t)| t.dtype != daclip_webgpu::weights::HostDType::F32);
    vec![if f16 { ("file f16", st, DeviceDType::F16, TOL_F16) } else { ("file f32", st, DeviceDType::F32, TOL_F32) }]
}

fn daclip_parity(dev: Device, dir: &Path) {
    let fx = Fixtures::load(dir);
    println!("fixtures: {}\nadapter: {}", dir.display(), dev.info());
    let mut failures = Vec::new();

    // Preprocessing: bicubic resize + crop within one 8-bit level of PIL.
    let (u8_shape, u8_vals) = fx.get("clip_u8");
    let u8_bytes: Vec<u8> = u8_vals.iter().map(|&v| v as u8).collect();
    let (_, resized_want) = fx.get("clip_resized_u8");
    let size = fx.get("clip_resized_u8").0[0];
    let input = clip_input(ImageRef { width: u8_shape[1], height: u8_shape[0], channels: 3, data: &u8_bytes }, size).unwrap();
    let worst = common::worst(input.resized_u8.iter().zip(resized_want).map(|(&a, &b)| (a as f64 - b as f64).abs()));
    let off = input.resized_u8.iter().zip(resized_want).filter(|(&a, &b)| a as f32 != b).count();
    println!("  {:<28} max {worst} level(s) off, {off} of {} values differ", "clip_resized_u8", resized_want.len());
    if worst > 1.0 {
        failures.push(format!("clip_resized_u8 off by {worst} levels"));
    }
    let (_, clip_input_want) = fx.get("clip_input");
    println!("  {:<28} rel err {:.3e} (from our own resize)", "clip_input", rel_error(&input.pixels, clip_input_want));

    // Tokens: exactly the original ids.
    let (_, tokens_want) = fx.get("text_tokens");
    let context = fx.get("text_tokens").0[1];
    let tokens: Vec<f32> = DEGRADATIONS.iter().flat_map(|t| tokenize(t, context)).map(|v| v as f32).collect();
    let same = tokens == *tokens_want;
    println!("  {:<28} {}", "text_tokens", if same { "identical" } else { "DIFFERENT" });
    if !same {
        failures.push("text_tokens differ".into());
    }

    for (label, bytes, dtype, tol) in variants(dir, "daclip.pt", "daclip.safetensors") {
        let mut r = Report { label, tol, failures: Vec::new() };
        let ckpt = Checkpoint::parse(&bytes, None).unwrap();
        let model = DaClip::load(&dev, &ckpt, dtype).unwrap();
        // The model's input is the fixture's own clip_input, so that model errors are not
        // mixed with the (separately checked) resampling.
        let (shape, pixels) = fx.get("clip_input");
        let image = dev.upload(shape, pixels).unwrap();
        let enc = model.encode_image(&dev, &image).unwrap();
        let read = |t: &daclip_webgpu::Tensor| dev.read_blocking(t).unwrap();
        let image_features = read(&enc.image_features);
        let degra = read(&enc.degra_features);
        r.check("image_features", &image_features, &fx.get("image_features").1);
        r.check("degra_features", &degra, &fx.get("degra_features").1);
        let hiddens: Vec<f32> = enc.control_hiddens.iter().flat_map(read).collect();
        r.check("control_hiddens", &hiddens, &fx.get("control_hiddens").1);
        let plain = model.visual.forward(&dev, &image).unwrap();
        r.check("image_features_nocontrol", &read(&plain), &fx.get("image_features_nocontrol").1);
        if model.text.is_some() {
            let text = read(&model.encode_text(&dev, &DEGRADATIONS).unwrap());
            r.check("text_features", &text, &fx.get("text_features").1);
        }
        let text = block_on(model.label_features(&dev, None)).unwrap();
        r.check("text_probs", &probabilities(&degra, &text), &fx.get("text_probs").1);
        failures.extend(r.failures);
    }
    assert!(failures.is_empty(), "parity failures:\n{}", failures.join("\n"));
}

fn sde_parity(dev: Device) {
    let fx = Fixtures::load(&dir());
    let sde = IrSde::published(100).unwrap();
    let mut r = Report { label: "f64", tol: TOL_F32, failures: Vec::new() };
    let f32s = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<_>>();
    r.check("sde_thetas", &f32s(&sde.thetas), &fx.get("sde_thetas").1);
    r.check("sde_sigmas", &f32s(&sde.sigmas), &fx.get("sde_sigmas").1);
    r.check("sde_thetas_cumsum", &f32s(&sde.thetas_cumsum), &fx.get("sde_thetas_cumsum").1);
    r.check("sde_sigma_bars", &f32s(&sde.sigma_bars), &fx.get("sde_sigma_bars").1);
    r.check("sde_dt", &[sde.dt as f32], &fx.get("sde_dt").1);
    r.check("sde_max_sigma", &[sde.max_sigma as f32], &fx.get("sde_max_sigma").1);

    // The three posterior steps, from the stored state, noise and z.
    let mut skipped = 0;
    let (shape, cond) = fx.get("unet_cond");
    let mu = dev.upload(shape, cond).unwrap();
    for k in 0..3 {
        let t = fx.get(&format!("post{k}_t")).1[0] as usize;
        let up = |key: &str| dev.upload(shape, &fx.get(&format!("post{k}_{key}")).1).unwrap();
        let (x, noise, z) = (up("xt"), up("noise"), up("z"));
        let run = |u: daclip_webgpu::sde::Update, with_z: bool| {
            let zn = if with_z { (Noise::Given(&z), u.c as f32) } else { (Noise::None, 0.0) };
            dev.read_blocking(&sde_update(&dev, &mu, &x, u.a as f32, Some((&noise, u.b as f32)), None, zn).unwrap()).unwrap()
        };
        r.check(&format!("post{k}_x0 (t={t})"), &run(sde.x0_update(t), false), &fx.get(&format!("post{k}_x0")).1);
        r.check(&format!("post{k}_mean"), &run(sde.posterior_mean_update(t), false), &fx.get(&format!("post{k}_mean")).1);
        r.check(&format!("post{k}_std"), &[sde.posterior_std(t) as f32], &fx.get(&format!("post{k}_std")).1);
        r.check(&format!("post{k}_out"), &run(sde.posterior_step(t), true), &fx.get(&format!("post{k}_out")).1);
        // The "sde" sampler's step from the same state, noise and z.
        match fx.optional(&format!("sde{k}_out")) {
            Some((_, want)) => r.check(&format!("sde{k}_out"), &run(sde.sde_step(t), true), want),
            None => {
                skipped += 1;
                common::skipped("sde-fixtures", &format!("sde{k}_out: not in this fixture directory (made before the key existed)"));
            }
        }
    }
    println!("sde steps: {skipped} of 3 skipped");
    assert!(r.failures.is_empty(), "parity failures:\n{}", r.failures.join("\n"));
}

fn unet_parity(dev: Device, dir: &Path) {
    let fx = Fixtures::load(dir);
    println!("fixtures: {}\nadapter: {}", dir.display(), dev.info());
    let up = |key: &str| { let (s, v) = fx.get(key); dev.upload(s, v).unwrap() };
    // The contexts are the fixture's own DA-CLIP outputs, so that UNet errors are not mixed
    // with DA-CLIP's (checked by daclip_parity).
    let degra = up("degra_features");
    let image = up("image_features");
    let mut failures = Vec::new();
    for (label, bytes, dtype, tol) in variants(dir, "universal-ir.pth", "universal-ir.safetensors") {
        let mut r = Report { label, tol, failures: Vec::new() };
        let model = ConditionalUNet::load(&dev, &Checkpoint::parse(&bytes, None).unwrap(), dtype).unwrap();
        let read = |t: &daclip_webgpu::Tensor| dev.read_blocking(t).unwrap();
        let prompt = model.prompt_embedding(&dev, &degra).unwrap();
        if let Some(p) = &prompt {
            r.check("unet_prompt_emb", &read(p), &fx.get("unet_prompt_emb").1);
        }
        let (xt, cond) = (up("unet_xt"), up("unet_cond"));
        let times = [1.0f32, 50.0, 100.0];
        let temb = read(&model.time_embedding(&dev, &times).unwrap());
        let time = model.time_conditioning(&dev, &times, prompt.as_ref()).unwrap();
        let context = model.image_context(&dev, &image).unwrap();
        for (i, t) in times.iter().enumerate() {
            let width = temb.len() / times.len();
            r.check(&format!("unet_temb_t{t}"), &temb[i * width..(i + 1) * width], &fx.get(&format!("unet_temb_t{t}")).1);
            let out = model.forward(&dev, &xt, &cond, &time, *t, &context).unwrap();
            r.check(&format!("unet_out_t{t}"), &read(&out), &fx.get(&format!("unet_out_t{t}")).1);
        }
        let out = model.forward(&dev, &up("odd_xt"), &up("odd_cond"), &time, 50.0, &context).unwrap();
        r.check(&format!("odd_out_t50 {:?}", &fx.get("odd_xt").0[2..]), &read(&out), &fx.get("odd_out_t50").1);
        failures.extend(r.failures);
    }
    assert!(failures.is_empty(), "parity failures:\n{}", failures.join("\n"));
}

/// The GPU adapter, with the products of f16 weights on cooperative matrices wherever it
/// offers them (a hardware GPU does by default; Mesa 26's lavapipe only when asked).
fn gpu() -> Device {
    common::gpu_with(common::COOPERATIVE)
}

#[test]
fn daclip_parity_gpu_f16_tiles() {
    if let Some(dev) = common::gpu_with_f16_tiles("parity on f16 tiles") {
        daclip_parity(dev, &dir());
    }
}

#[test]
fn unet_parity_gpu_f16_tiles() {
    if let Some(dev) = common::gpu_with_f16_tiles("parity on f16 tiles") {
        unet_parity(dev, &dir());
    }
}

#[test]
fn daclip_parity_gpu() {
    daclip_parity(gpu(), &dir());
}

#[test]
fn daclip_parity_cpu() {
    daclip_parity(Device::cpu(), &dir());
}

#[test]
fn sde_parity_gpu() {
    sde_parity(gpu());
}

#[test]
fn sde_parity_cpu() {
    sde_parity(Device::cpu());
}

#[test]
fn unet_parity_gpu() {
    unet_parity(gpu(), &dir());
}

#[test]
fn unet_parity_cpu() {
    unet_parity(Device::cpu(), &dir());
}

#[test]
fn wild_daclip_parity_gpu() {
    daclip_parity(gpu(), &wild_dir());
}

#[test]
fn wild_daclip_parity_cpu() {
    daclip_parity(Device::cpu(), &wild_dir());
}

#[test]
fn wild_unet_parity_gpu() {
    unet_parity(gpu(), &wild_dir());
}

#[test]
fn wild_unet_parity_cpu() {
    unet_parity(Device::cpu(), &wild_dir());
}
