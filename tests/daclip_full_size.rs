//! The published DA-CLIP architecture (ViT-B/32) with seeded random weights, without
//! fixtures: it runs at 224 x 224 with finite outputs, and with every zero module at zero
//! (as the controller starts training) `image_features` equals the plain CLIP tower's
//! output: the property the zero initialisation exists for.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use daclip_webgpu::models::clip::{DaClip, DaClipConfig};
use daclip_webgpu::weights::{random_safetensors, Checkpoint, DeviceDType, ModelKind};
use daclip_webgpu::Device;

#[test]
fn vit_b_32_runs_and_zero_control_changes_nothing() {
    // Without the text tower (its ten text features random): the image path only.
    let mut config = DaClipConfig::vit_b_32();
    config.text_cfg = None;
    let kind = ModelKind::DaClip(config);
    let bytes = random_safetensors(&kind.expected_tensors(), 7, |name| name.contains("zero_modules"), kind.metadata());
    let ckpt = Checkpoint::parse(&bytes, None).unwrap();
    let dev = Device::new_blocking().unwrap();
    let model = DaClip::load(&dev, &ckpt, DeviceDType::F16).unwrap();
    drop(ckpt);
    let mut rng = common::Rng::new(8);
    let image = dev.upload(&[1, 3, 224, 224], &rng.normals(3 * 224 * 224, 1.0)).unwrap();

    let enc = model.encode_image(&dev, &image).unwrap();
    let image_features = dev.read_blocking(&enc.image_features).unwrap();
    let degra = dev.read_blocking(&enc.degra_features).unwrap();
    let plain = dev.read_blocking(&model.visual.forward(&dev, &image).unwrap()).unwrap();
    assert_eq!(image_features.len(), 512);
    assert!(image_features.iter().chain(&degra).all(|v| v.is_finite()), "non-finite features");
    let rms = |v: &[f32]| (v.iter().map(|x| x * x).sum::<f32>() / v.len() as f32).sqrt();
    println!("ViT-B/32 224x224: |image_features| rms {:.4}, |degra_features| rms {:.4}", rms(&image_features), rms(&degra));
    let max_diff = image_features.iter().zip(&plain).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
    println!("zero modules at zero: max |image_features - plain CLIP tower| = {max_diff:e}");
    assert_eq!(image_features, plain, "zero control must leave CLIP's output unchanged");
    assert_ne!(image_features, degra, "the controller is a different tower");
}
