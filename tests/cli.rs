//! The command-line tool end to end on the tiny fixtures: convert (with and without the
//! text tower) and classify a PNG.
#![cfg(not(target_arch = "wasm32"))]

use std::path::{Path, PathBuf};
use std::process::Command;

fn tiny(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny").join(file)
}

fn run(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_daclip-webgpu")).args(args).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// The fixture's 8-bit input (clip_u8, H x W x 3) as a PNG, and the expected probabilities.
fn fixture_png(dir: &Path) -> (PathBuf, Vec<f32>) {
    let bytes = std::fs::read(tiny("fixtures.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let u8s = st.tensor("clip_u8").unwrap();
    let (h, w) = (u8s.shape()[0] as u32, u8s.shape()[1] as u32);
    let path = dir.join("tiny.png");
    image::RgbImage::from_raw(w, h, u8s.data().to_vec()).unwrap().save(&path).unwrap();
    let probs = st.tensor("text_probs").unwrap().data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
    (path, probs)
}

#[test]
fn convert_and_classify() {
    let dir = std::env::temp_dir().join(format!("daclip-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (png, want) = fixture_png(&dir);
    let config = tiny("clip_config.json");
    let pt = tiny("daclip.pt");
    let no_text = dir.join("daclip-notext.safetensors");
    let (ok, out, err) = run(&["convert", pt.to_str().unwrap(), "-o", no_text.to_str().unwrap(), "--clip-config", config.to_str().unwrap(), "--no-text"]);
    println!("{out}{err}");
    assert!(ok && out.contains("DA-CLIP: 70 tensors"), "{out}{err}");

    let (ok, out, err) = run(&["classify", png.to_str().unwrap(), "--daclip", no_text.to_str().unwrap(), "--json"]);
    assert!(ok, "{err}");
    let result: serde_json::Value = serde_json::from_str(&out).unwrap();
    let labels: Vec<String> = serde_json::from_value(result["labels"].clone()).unwrap();
    let probs: Vec<f32> = serde_json::from_value(result["probabilities"].clone()).unwrap();
    assert_eq!(result["degradation_features"].as_array().unwrap().len(), 32);
    // The fixture's probabilities are in training order; ours are ranked.
    let names = daclip_webgpu::models::clip::DEGRADATIONS;
    let mut max_err = 0.0f32;
    for (label, p) in labels.iter().zip(&probs) {
        let i = names.iter().position(|n| n == label).unwrap();
        max_err = max_err.max((p - want[i]).abs());
    }
    println!("classify (f16 weights, PNG round trip, our resize): top {} {:.3}, max probability error {max_err:.2e}", labels[0], probs[0]);
    assert!(max_err < 1e-2, "probabilities differ from the fixture's by {max_err}");

    let (ok, out, _) = run(&["classify", png.to_str().unwrap(), "--daclip", no_text.to_str().unwrap()]);
    assert!(ok && out.lines().count() == 10 && out.contains('%'), "{out}");

    let (ok, _, err) = run(&["classify", png.to_str().unwrap(), "--daclip", no_text.to_str().unwrap(), "--labels", "a,b"]);
    assert!(!ok && err.contains("--no-text"), "custom labels need the text tower: {err}");
    let (ok, _, err) = run(&["classify", dir.join("missing.png").to_str().unwrap(), "--daclip", no_text.to_str().unwrap()]);
    assert!(!ok && err.contains("cannot read the image"), "{err}");
    let (ok, _, err) = run(&["classify", png.to_str().unwrap(), "--daclip", png.to_str().unwrap()]);
    assert!(!ok && err.contains("cannot read weights"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn restore_writes_the_input_size_is_seeded_and_tiles() {
    let dir = std::env::temp_dir().join(format!("daclip-restore-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = |name: &str| dir.join(name).to_str().unwrap().to_string();
    // A 61 x 77 PNG (odd sizes: padding and crop).
    let img = image::RgbImage::from_fn(61, 77, |x, y| image::Rgb([(x * 4) as u8, (y * 3) as u8, ((x * y) % 251) as u8]));
    img.save(p("in.png")).unwrap();
    let (ok, _, err) = run(&["convert", tiny("daclip.pt").to_str().unwrap(), "-o", &p("daclip.safetensors"), "--clip-config", tiny("clip_config.json").to_str().unwrap(), "--no-text"]);
    assert!(ok, "{err}");
    let unet = tiny("universal-ir.pth"); // the original .pth works directly
    let restore = |seed: &str, out: &str| {
        let (ok, stdout, err) = run(&["restore", &p("in.png"), "-o", &p(out), "--daclip", &p("daclip.safetensors"), "--unet", unet.to_str().unwrap(), "--steps", "10", "--seed", seed]);
        assert!(ok, "{err}");
        println!("{stdout}");
        std::fs::read(p(out)).unwrap()
    };
    let a = restore("7", "a.png");
    let b = restore("7", "b.png");
    let c = restore("8", "c.png");
    let decoded = image::load_from_memory(&a).unwrap();
    assert_eq!((decoded.width(), decoded.height()), (61, 77));
    assert_eq!(a, b, "the same seed gives an identical file");
    assert_ne!(a, c, "another seed gives another file");

    // Tiles: the bar shows them, the output keeps the input's size.
    let (ok, stdout, err) = run(&["restore", &p("in.png"), "-o", &p("t.png"), "--daclip", &p("daclip.safetensors"), "--unet", unet.to_str().unwrap(), "--steps", "2", "--tile", "40", "--overlap", "10"]);
    assert!(ok, "{err}");
    println!("{stdout}{}", err.rsplit('\r').next().unwrap_or(""));
    assert!(err.contains("6 tiles of 40x40 per step") && err.contains("step 2/2, tile 6/6"), "{err}");
    let tiled = image::open(p("t.png")).unwrap();
    assert_eq!((tiled.width(), tiled.height()), (61, 77));
    let (ok, _, err) = run(&["restore", &p("in.png"), "-o", &p("t.png"), "--daclip", &p("daclip.safetensors"), "--unet", unet.to_str().unwrap(), "--tile", "40", "--overlap", "30"]);
    assert!(!ok && err.contains("overlap must be at most half the tile"), "{err}");

    let (ok, _, err) = run(&["restore", &p("in.png"), "-o", &p("x.png"), "--daclip", unet.to_str().unwrap(), "--unet", unet.to_str().unwrap()]);
    assert!(!ok && err.contains("expected a DA-CLIP checkpoint"), "{err}");
    let (ok, _, err) = run(&["restore", &p("in.png"), "-o", &p("x.gif"), "--daclip", &p("daclip.safetensors"), "--unet", unet.to_str().unwrap()]);
    assert!(!ok && err.contains(".png, .jpg"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}
