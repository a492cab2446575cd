//! The command-line tool end to end on the tiny fixtures: convert (with and without the
//! text tower), classify and restore photo files, one or many, and every refusal.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::photos::{jpeg_with_orientation, pattern};
use common::{scratch, tiny};


fn run(args: &[&str]) -> (bool, String, String) {
    let (code, out, err) = run_code(args);
    (code == 0, out, err)
}

/// The exit code, stdout and stderr.
fn run_code(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_daclip-webgpu")).args(args).output().unwrap();
    (out.status.code().unwrap(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}


/// The tiny DA-CLIP converted without its text tower into `dir`, and the tiny UNet.
fn tiny_models(dir: &Path) -> (String, String) {
    let daclip = dir.join("daclip.safetensors").to_str().unwrap().to_string();
    let (ok, _, err) = run(&["convert", tiny("daclip.pt").to_str().unwrap(), "-o", &daclip, "--clip-config", tiny("clip_config.json").to_str().unwrap(), "--no-text"]);
    assert!(ok, "{err}");
    (daclip, tiny("universal-ir.pth").to_str().unwrap().to_string())
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
    let dir = scratch("classify");
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

    // Many files: one JSON line each, a broken one reported and the exit code 1.
    let broken = dir.join("broken.webp");
    std::fs::write(&broken, b"RIFF....WEBPVP8 garbage").unwrap();
    let webp = dir.join("tiny.webp");
    image::open(&png).unwrap().save(&webp).unwrap();
    let (code, out, err) = run_code(&["classify", png.to_str().unwrap(), broken.to_str().unwrap(), webp.to_str().unwrap(), "--daclip", no_text.to_str().unwrap(), "--json"]);
    println!("{err}");
    assert_eq!(code, 1, "{err}");
    let lines: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(lines[1]["error"].as_str().unwrap().contains("cannot read the image"), "{out}");
    assert_eq!(lines[0]["probabilities"], lines[2]["probabilities"], "the lossless WebP classifies as the PNG");
    assert!(err.contains("2 of 3 classified; 1 failed") && err.contains("broken.webp"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn restore_writes_the_input_size_is_seeded_and_tiles() {
    let dir = scratch("restore");
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
    assert!(err.contains("6 tiles of 40x40 per step") && err.contains("step 2/2 (6 tiles) done"), "{err}");
    let tiled = image::open(p("t.png")).unwrap();
    assert_eq!((tiled.width(), tiled.height()), (61, 77));
    let (ok, _, err) = run(&["restore", &p("in.png"), "-o", &p("t.png"), "--daclip", &p("daclip.safetensors"), "--unet", unet.to_str().unwrap(), "--tile", "40", "--overlap", "30", "--force"]);
    assert!(!ok && err.contains("overlap must be at most half the tile"), "{err}");

    let (ok, _, err) = run(&["restore", &p("in.png"), "-o", &p("x.png"), "--daclip", unet.to_str().unwrap(), "--unet", unet.to_str().unwrap()]);
    assert!(!ok && err.contains("expected a DA-CLIP checkpoint"), "{err}");
    let (ok, _, err) = run(&["restore", &p("in.png"), "-o", &p("x.gif"), "--daclip", &p("daclip.safetensors"), "--unet", unet.to_str().unwrap()]);
    assert!(!ok && err.contains(".png, .jpg"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn usage_and_version() {
    let (code, out, _) = run_code(&["--version"]);
    assert_eq!((code, out.trim()), (0, concat!("daclip-webgpu ", env!("CARGO_PKG_VERSION"))));
    let (code, out, _) = run_code(&["classify", "--version"]);
    assert_eq!((code, out.trim()), (0, concat!("daclip-webgpu-classify ", env!("CARGO_PKG_VERSION"))));
    let (code, out, _) = run_code(&["restore", "--help"]);
    assert!(code == 0 && out.contains("--depth") && out.contains("--force"), "{out}");
    let (code, _, err) = run_code(&["restore", "in.png"]);
    assert!(code == 2 && err.contains("--output"), "{err}");
    let (code, _, err) = run_code(&["restore", "in.png", "-o", "x.png", "--daclip", "d", "--unet", "u", "--steps", "many"]);
    assert!(code == 2 && err.contains("--steps"), "{err}");
    let (code, _, err) = run_code(&["frobnicate"]);
    assert!(code == 2 && err.contains("frobnicate"), "{err}");
}

/// Each mistake in the outputs is refused at once, with exit code 2: the weights named
/// do not even exist, so any work would have failed differently.
#[test]
fn outputs_are_checked_before_any_work() {
    let dir = scratch("outputs");
    let p = |name: &str| dir.join(name).to_str().unwrap().to_string();
    image::DynamicImage::ImageRgb8(pattern(40, 48)).save(p("a.png")).unwrap();
    image::DynamicImage::ImageRgb8(pattern(40, 48)).save(p("a.jpg")).unwrap();
    std::fs::write(p("taken.png"), b"an earlier result").unwrap();
    let refused = |args: &[&str], want: &str| {
        let mut all = vec!["restore", "--daclip", "/nonexistent/daclip.safetensors", "--unet", "/nonexistent/unet.pth"];
        all.extend_from_slice(args);
        let (code, _, err) = run_code(&all);
        println!("{args:?}: {}", err.trim());
        assert!(code == 2 && err.contains(want), "{args:?}: exit {code}, {err}");
    };
    refused(&[&p("a.png"), "-o", "/missing/dir/out.png"], "/missing/dir: no such folder");
    refused(&[&p("a.png"), "-o", &p("out.gif")], "the output must end in .png, .jpg");
    refused(&[&p("a.png"), "-o", &p("out")], "the output must end in");
    refused(&[&p("a.png"), "-o", &p("a.png"), "--force"], "would overwrite its input");
    refused(&[&p("a.png"), "-o", &p("taken.png")], "taken.png exists; pass --force");
    refused(&[&p("a.png"), "-o", &p("out.jpg"), "--depth", "16"], "--depth 16 needs .png or .tiff");
    refused(&[&p("a.png"), &p("a.jpg"), "-o", &p("taken.png")], "-o names a folder");
    refused(&[&p("a.png"), &p("a.jpg"), "-o", &p("many"), "--format", "png"], "would both be written to");
    refused(&[&p("a.png"), &p("a.jpg"), "-o", "/missing/dir/many/"], "/missing/dir: no such folder");
    std::fs::create_dir(p("empty")).unwrap();
    refused(&[&p("empty"), "-o", &p("many")], "no images in this folder");
    refused(&[&p("a.png"), "-o", &p("out.png"), "--quality", "0"], "--quality");
    let read_only = dir.join("read-only");
    std::fs::create_dir(&read_only).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&read_only, std::fs::Permissions::from_mode(0o555)).unwrap();
    if std::fs::File::create(read_only.join("probe")).is_err() {
        refused(&[&p("a.png"), "-o", read_only.join("out.png").to_str().unwrap()], "cannot write in this folder");
    } else {
        common::skipped("non-root", "the refusal of a read-only output folder: running as root, it is writable");
    }
    std::fs::set_permissions(&read_only, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::remove_dir_all(&dir).ok();
}

/// A phone's portrait JPEG comes out upright, RGBA keeps its alpha exactly, grey stays
/// grey, 16 bits stay 16 bits where asked, and every output format is written.
#[test]
fn photos_come_out_upright_in_their_own_layout() {
    let dir = scratch("photos");
    let p = |name: &str| dir.join(name).to_str().unwrap().to_string();
    let (daclip, unet) = tiny_models(&dir);
    let restore = |input: &str, output: &str, extra: &[&str]| {
        let mut args = vec!["restore", input, "-o", output, "--daclip", &daclip, "--unet", &unet, "--steps", "2", "--seed", "5"];
        args.extend_from_slice(extra);
        let (ok, out, err) = run(&args);
        assert!(ok, "{err}");
        print!("{out}");
        image::open(output).unwrap()
    };

    // Stored 40 x 48 with EXIF orientation 6; its upright pixels as a PNG restore the same.
    jpeg_with_orientation(&pattern(40, 48), 6, &dir.join("portrait.jpg"));
    let upright = image::imageops::rotate90(&image::open(p("portrait.jpg")).unwrap().to_rgb8());
    upright.save(p("upright.png")).unwrap();
    let from_jpeg = restore(&p("portrait.jpg"), &p("portrait-out.png"), &[]);
    let from_png = restore(&p("upright.png"), &p("upright-out.png"), &[]);
    assert_eq!((from_jpeg.width(), from_jpeg.height()), (48, 40), "stored upright");
    assert!(from_jpeg == from_png, "the rotated JPEG restores as its upright pixels");

    // RGBA: the alpha channel comes back exactly, the colours as for the RGB image.
    let rgba = image::RgbaImage::from_fn(48, 40, |x, y| {
        let c = upright.get_pixel(x, y);
        image::Rgba([c[0], c[1], c[2], ((x * 5 + y * 11) % 256) as u8])
    });
    rgba.save(p("rgba.png")).unwrap();
    let out = restore(&p("rgba.png"), &p("rgba-out.png"), &[]);
    let out = out.as_rgba8().expect("RGBA out");
    assert!(out.pixels().zip(rgba.pixels()).all(|(a, b)| a[3] == b[3]), "alpha copied through");
    assert!(out.pixels().zip(from_png.to_rgb8().pixels()).all(|(a, b)| a.0[..3] == b.0), "RGB restored as without alpha");

    // Grey in, grey out.
    image::DynamicImage::ImageRgb8(upright.clone()).to_luma8().save(p("grey.png")).unwrap();
    let grey = restore(&p("grey.png"), &p("grey-out.png"), &[]);
    assert_eq!(grey.color(), image::ColorType::L8);

    // 16 bits where asked: the same restore, rounded to 8 bits, is the 8-bit output.
    image::DynamicImage::ImageRgb8(upright.clone()).to_rgb16().save(p("deep.png")).unwrap();
    let deep = restore(&p("deep.png"), &p("deep-out.png"), &["--depth", "16"]);
    assert_eq!(deep.color(), image::ColorType::Rgb16);
    let shallow = restore(&p("deep.png"), &p("deep-out8.png"), &[]);
    assert_eq!(shallow.color(), image::ColorType::Rgb8, "8 bits unless asked");
    let worst = common::worst(deep.to_rgb16().as_raw().iter().zip(shallow.to_rgb8().as_raw()).map(|(&a, &b)| (a as f64 / 257.0 - b as f64).abs()));
    println!("16-bit output against the 8-bit one: max {worst:.3} of 255");
    assert!(worst <= 0.5 + 1e-3, "{worst}");

    // Every output format; JPEG says it drops alpha.
    for ext in ["jpg", "webp", "tiff", "tif", "jpeg"] {
        let out = restore(&p("upright.png"), &p(&format!("o.{ext}")), &["--quality", "90"]);
        assert_eq!((out.width(), out.height()), (48, 40), "{ext}");
    }
    assert!(restore(&p("upright.png"), &p("o.webp"), &["--force"]) == from_png, "lossless WebP");
    let (ok, _, err) = run(&["restore", &p("rgba.png"), "-o", &p("rgba.jpg"), "--daclip", &daclip, "--unet", &unet, "--steps", "1"]);
    assert!(ok && err.contains("JPEG has no alpha channel"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

/// A folder of three images, one of them broken: the models load once, two outputs are
/// written under the inputs' names, the broken one is reported and the exit code is 1.
#[test]
fn a_folder_restores_past_a_broken_file() {
    let dir = scratch("folder");
    let (daclip, unet) = tiny_models(&dir);
    let photos = dir.join("photos");
    std::fs::create_dir(&photos).unwrap();
    image::DynamicImage::ImageRgb8(pattern(40, 48)).save(photos.join("one.png")).unwrap();
    image::DynamicImage::ImageRgb8(pattern(48, 40)).save(photos.join("two.jpg")).unwrap();
    std::fs::write(photos.join("three.png"), b"not a PNG").unwrap();
    std::fs::write(photos.join("notes.txt"), b"not an image by name: skipped").unwrap();
    let out = dir.join("out");
    let (code, stdout, err) = run_code(&["restore", photos.to_str().unwrap(), "-o", out.to_str().unwrap(), "--daclip", &daclip, "--unet", &unet, "--steps", "2"]);
    println!("{stdout}{err}");
    assert_eq!(code, 1, "{err}");
    let mut written: Vec<String> = std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    written.sort();
    assert_eq!(written, ["one.png", "two.jpg"]);
    assert!(err.contains("2 of 3 restored; 1 failed") && err.contains("three.png: cannot read the image"), "{err}");
    assert_eq!(err.matches("device: ").count(), 1, "one device, the models loaded once");
    assert_eq!(stdout.lines().count(), 2, "{stdout}");

    // Again: the outputs exist now.
    let (code, _, err) = run_code(&["restore", photos.to_str().unwrap(), "-o", out.to_str().unwrap(), "--daclip", &daclip, "--unet", &unet, "--steps", "2"]);
    assert!(code == 2 && err.contains("exists; pass --force"), "{err}");
    // Files and folders mixed, into another format.
    let (code, stdout, err) = run_code(&["restore", photos.join("one.png").to_str().unwrap(), photos.join("two.jpg").to_str().unwrap(), "-o", dir.join("tiffs/").to_str().unwrap(), "--format", "tiff", "--daclip", &daclip, "--unet", &unet, "--steps", "1"]);
    assert_eq!(code, 0, "{err}");
    assert!(dir.join("tiffs/one.tiff").exists() && dir.join("tiffs/two.tiff").exists(), "{stdout}");
    std::fs::remove_dir_all(&dir).ok();
}

/// A GPU device lost mid-restore (destroyed at step 2 of the first file, as a driver
/// reset would lose it): the command opens a new device, loads the weights again and
/// restores that file once more, with the output it gives without the loss.
#[test]
fn a_lost_gpu_device_is_opened_again_and_the_file_restored() {
    let dir = scratch("lost");
    let (daclip, unet) = tiny_models(&dir);
    let photos = dir.join("photos");
    std::fs::create_dir(&photos).unwrap();
    image::DynamicImage::ImageRgb8(pattern(40, 48)).save(photos.join("one.png")).unwrap();
    image::DynamicImage::ImageRgb8(pattern(48, 40)).save(photos.join("two.png")).unwrap();
    let args = |out: &Path| -> Vec<String> {
        ["restore", photos.to_str().unwrap(), "-o", out.to_str().unwrap(), "--daclip", &daclip, "--unet", &unet, "--steps", "3", "--device", "gpu"].map(String::from).to_vec()
    };
    let lost = Command::new(env!("CARGO_BIN_EXE_daclip-webgpu")).args(args(&dir.join("lost"))).env("DACLIP_WEBGPU_LOSE_DEVICE_AT_STEP", "2").output().unwrap();
    let err = String::from_utf8_lossy(&lost.stderr);
    println!("{err}");
    assert!(lost.status.success(), "{err}");
    assert!(err.contains("the GPU device was lost") && err.contains("restoring it once more"), "{err}");
    assert_eq!(err.matches("device: ").count(), 2, "a second device opened");
    let (code, _, err) = run_code(&args(&dir.join("plain")).iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(code, 0, "{err}");
    for file in ["one.png", "two.png"] {
        assert_eq!(std::fs::read(dir.join("lost").join(file)).unwrap(), std::fs::read(dir.join("plain").join(file)).unwrap(), "{file}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// `tokenize` prints the ids the text tower gets, as the library computes them, for texts
/// given and read from stdin; none at all is a usage mistake.
#[test]
fn tokenize_prints_the_ids() {
    use daclip_webgpu::models::clip::tokenizer::tokenize;
    let texts = ["rainy", "Stra\u{df}e caf\u{e9}", "don\u{e2}\u{20ac}\u{2122}t", &"word ".repeat(100)];
    let want: Vec<String> = texts.iter().map(|t| {
        let ids: Vec<u32> = tokenize(t, 77).into_iter().filter(|&i| i != 0).collect();
        serde_json::to_string(&ids).unwrap()
    }).collect();
    let (ok, out, err) = run(&["tokenize", texts[0], texts[1], texts[2], texts[3]]);
    assert!(ok, "{err}");
    assert_eq!(out.lines().collect::<Vec<_>>(), want);
    assert_eq!(want[0], "[49406,10222,49407]", "open_clip's ids for rainy");
    assert_eq!(want[2], serde_json::to_string(&tokenize("don't", 77).into_iter().filter(|&i| i != 0).collect::<Vec<_>>()).unwrap(), "mojibake repaired");
    assert_eq!(out.lines().nth(3).unwrap().matches(',').count(), 76, "truncated to 77 positions");

    let mut child = Command::new(env!("CARGO_BIN_EXE_daclip-webgpu")).args(["tokenize", "rainy", "--stdin"]).stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).spawn().unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(format!("{}\n{}\n", texts[1], texts[2]).as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8(out.stdout).unwrap().lines().collect::<Vec<_>>(), [&want[0], &want[1], &want[2]]);

    let (code, _, err) = run_code(&["tokenize"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--stdin"), "{err}");
}

#[test]
fn without_xdg_runtime_dir_a_gpu_probe_prints_no_error() {
    // Servers, containers and CI often lack the variable; Mesa then printed an error
    // line on every device it opened, though nothing was wrong.
    let out = Command::new(env!("CARGO_BIN_EXE_daclip-webgpu")).args(["info", "--device", "gpu"]).env_remove("XDG_RUNTIME_DIR").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    println!("{err}");
    assert!(out.status.success(), "{err}");
    assert!(!err.contains("XDG_RUNTIME_DIR") && !err.to_lowercase().contains("error"), "{err}");
}
