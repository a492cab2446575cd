//! The restore pipeline on the tiny fixtures' weights: seeded reproducibility, no
//! allocation per step, cancellation, the sde sampler, bad inputs.
#![cfg(not(target_arch = "wasm32"))]

use std::path::Path;

use daclip_webgpu::gpu::block_on;
use daclip_webgpu::models::clip::preprocess::ImageRef;
use daclip_webgpu::models::clip::{DaClip, DaClipConfig};
use daclip_webgpu::models::unet::ConditionalUNet;
use daclip_webgpu::restore::{RestoreOptions, Restorer, RgbImage};
use daclip_webgpu::sde::Sampler;
use daclip_webgpu::weights::{Checkpoint, GpuDType};
use daclip_webgpu::{Error, Gpu};

fn tiny(file: &str) -> Vec<u8> {
    std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny").join(file)).unwrap()
}

fn models(gpu: &Gpu) -> (DaClip, ConditionalUNet) {
    let config: DaClipConfig = serde_json::from_slice(&tiny("clip_config.json")).unwrap();
    let (d, u) = (tiny("daclip.pt"), tiny("universal-ir.pth"));
    Restorer::load_models(gpu, &Checkpoint::parse(&d, Some(config)).unwrap(), &Checkpoint::parse(&u, None).unwrap(), GpuDType::F32).unwrap()
}

/// A 61 x 77 test image: smooth colours plus a fixed pseudo-random grain.
fn test_image() -> RgbImage {
    let (w, h) = (61, 77);
    let data = (0..w * h * 3)
        .map(|i| {
            let (p, c) = (i / 3, i % 3);
            let (x, y) = ((p % w) as f32, (p / w) as f32);
            let smooth = 128.0 + 90.0 * ((x / 7.0 + c as f32).sin() * (y / 9.0).cos());
            let grain = ((i as u32).wrapping_mul(2654435761) >> 27) as f32 - 16.0;
            (smooth + grain).clamp(0.0, 255.0) as u8
        })
        .collect();
    RgbImage { width: w, height: h, data }
}

fn image_ref(img: &RgbImage) -> ImageRef<'_> {
    ImageRef { width: img.width, height: img.height, channels: 3, data: &img.data }
}

#[test]
fn seeded_restores_are_reproducible() {
    let gpu = Gpu::new_blocking().unwrap();
    let m = models(&gpu);
    let r = Restorer::new(&m.0, &m.1).unwrap();
    let img = test_image();
    let run = |seed, sampler| {
        let opts = RestoreOptions { steps: 4, seed, sampler, ..Default::default() };
        block_on(r.restore(&gpu, image_ref(&img), &opts, &mut |_| true)).unwrap()
    };
    let a = run(1, Sampler::Posterior);
    assert_eq!((a.width, a.height), (61, 77));
    assert_eq!(a, run(1, Sampler::Posterior), "same seed, same adapter: identical output");
    let b = run(2, Sampler::Posterior);
    let changed = a.data.iter().zip(&b.data).filter(|(x, y)| x != y).count();
    println!("seed 1 vs seed 2: {changed} of {} values differ", a.data.len());
    assert!(changed > a.data.len() / 10, "another seed gives another sample");
    let s = run(1, Sampler::Sde);
    assert_eq!(s.data.len(), a.data.len());
}

#[test]
fn steps_reuse_buffers_and_report_progress() {
    let gpu = Gpu::new_blocking().unwrap();
    let m = models(&gpu);
    let r = Restorer::new(&m.0, &m.1).unwrap();
    let img = test_image();
    let mut seen = Vec::new();
    let opts = RestoreOptions { steps: 5, seed: 3, preview: true, ..Default::default() };
    let out = block_on(r.restore(&gpu, image_ref(&img), &opts, &mut |s| {
        let p = s.preview.expect("preview requested");
        assert!(p.width <= 128 && p.height <= 128 && p.data.len() == 3 * p.width * p.height);
        seen.push((s.progress.step, s.progress.total, gpu.memory()));
        true
    }))
    .unwrap();
    assert_eq!(out.data.len(), 61 * 77 * 3);
    assert_eq!(seen.iter().map(|s| (s.0, s.1)).collect::<Vec<_>>(), (1..=5).map(|i| (i, 5)).collect::<Vec<_>>());
    for (step, _, mem) in &seen {
        println!("after step {step}: {} KiB in use, {} KiB pooled, peak {} KiB", mem.live_bytes >> 10, mem.free_bytes >> 10, mem.peak_bytes >> 10);
    }
    let first = seen[0].2;
    for (step, _, mem) in &seen[1..] {
        assert_eq!(mem.peak_bytes, first.peak_bytes, "step {step} allocated new GPU memory");
        assert_eq!(mem.live_bytes + mem.free_bytes, first.live_bytes + first.free_bytes, "step {step}");
    }
}

#[test]
fn cancelling_stops_within_a_step_and_leaves_the_model_usable() {
    let gpu = Gpu::new_blocking().unwrap();
    let m = models(&gpu);
    let r = Restorer::new(&m.0, &m.1).unwrap();
    let img = test_image();
    let opts = RestoreOptions { steps: 10, ..Default::default() };
    let mut steps = 0;
    let err = block_on(r.restore(&gpu, image_ref(&img), &opts, &mut |s| {
        steps = s.progress.step;
        s.progress.step < 2
    }))
    .unwrap_err();
    assert_eq!(err, Error::Cancelled);
    assert_eq!(steps, 2, "cancelled right after the step that asked");
    let again = block_on(r.restore(&gpu, image_ref(&img), &RestoreOptions { steps: 2, ..Default::default() }, &mut |_| true));
    assert!(again.is_ok());
}

#[test]
fn bad_images_are_refused_clearly() {
    let gpu = Gpu::new_blocking().unwrap();
    let m = models(&gpu);
    let r = Restorer::new(&m.0, &m.1).unwrap();
    let opts = RestoreOptions { steps: 1, ..Default::default() };
    for (w, h) in [(1, 1), (5, 40), (0, 10)] {
        let img = RgbImage { width: w, height: h, data: vec![128; w * h * 3] };
        let err = block_on(r.restore(&gpu, image_ref(&img), &opts, &mut |_| true)).unwrap_err();
        println!("{w}x{h}: {err}");
        assert!(matches!(err, Error::Shape(_)), "{err:?}");
    }
    let bad = ImageRef { width: 10, height: 10, channels: 3, data: &[0; 10] };
    assert!(matches!(block_on(r.restore(&gpu, bad, &opts, &mut |_| true)), Err(Error::Shape(_))));
    // The model stays usable after refusals.
    let img = test_image();
    assert!(block_on(r.restore(&gpu, image_ref(&img), &opts, &mut |_| true)).is_ok());
}
