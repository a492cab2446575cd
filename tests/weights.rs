//! The checkpoint reader, the converter and the loader on the committed tiny checkpoints,
//! and a clear error (never a panic) for every kind of malformed input.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use std::borrow::Cow;
use std::cell::Cell;
use std::collections::HashMap;
use std::path::Path;

use daclip_webgpu::models::clip::{DaClipConfig, TextConfig, VisionConfig};
use daclip_webgpu::weights::{FileSource, Source, DeviceDType, Vb, Weights};
use daclip_webgpu::models::{Checkpoint, ConvertOptions, ModelKind, StoreDType, convert};
use daclip_webgpu::{Error, Device};

use common::{converted, tiny, tiny_clip_config, tiny_fixture};

#[test]
fn torch_reader_matches_pytorch() {
    let digest: serde_json::Value = serde_json::from_slice(&tiny_fixture("checkpoint_digest.json")).unwrap();
    for file in ["daclip.pt", "universal-ir.pth"] {
        let bytes = tiny_fixture(file);
        let w = Weights::parse(&bytes).unwrap();
        let expected = digest[file].as_object().unwrap();
        assert_eq!(w.names().count(), expected.len(), "{file}: tensor count");
        let mut worst = 0.0f64;
        for (name, d) in expected {
            let t = w.get(name).unwrap_or_else(|| panic!("{file}: `{name}` missing"));
            let shape: Vec<usize> = serde_json::from_value(d["shape"].clone()).unwrap();
            assert_eq!(t.shape, shape, "{name}");
            let v = w.load(name).unwrap().to_f32().unwrap();
            let first: Vec<f64> = serde_json::from_value(d["first"].clone()).unwrap();
            // The digest's f64s came from f32s: back in f32 they must match bit for bit.
            for (a, b) in v.iter().zip(&first) {
                assert_eq!(*a, *b as f32, "{name}: first values");
            }
            let sum: f64 = v.iter().map(|&x| x as f64).sum();
            let sum_sq: f64 = v.iter().map(|&x| x as f64 * x as f64).sum();
            let scale = sum_sq.sqrt() * (v.len() as f64).sqrt() + 1e-30;
            worst = worst.max((sum - d["sum"].as_f64().unwrap()).abs() / scale);
            worst = worst.max((sum_sq - d["sum_sq"].as_f64().unwrap()).abs() / (sum_sq + 1e-30));
        }
        println!("{file}: {} tensors read, worst relative difference of sums vs PyTorch {worst:.2e}", expected.len());
        assert!(worst < 1e-12, "{file}: sums differ from PyTorch's by {worst:e}");
    }
}

#[test]
fn conversion_keeps_values() {
    for (file, config) in [("daclip.pt", Some(tiny_clip_config())), ("universal-ir.pth", None)] {
        let bytes = tiny_fixture(file);
        let original = Checkpoint::parse(&bytes, config.clone()).unwrap();
        for dtype in [StoreDType::F32, StoreDType::F16] {
            let (out, summary) = converted(&bytes, ConvertOptions { clip_config: config.clone(), ..ConvertOptions::new(dtype) }).unwrap();
            println!("{file} {dtype:?}: {summary}");
            // The converted file carries its config: no --clip-config needed to read it.
            let converted = Checkpoint::parse(&out, None).unwrap();
            assert_eq!(converted.kind, original.kind);
            assert_eq!(converted.weights.names().count(), original.weights.names().count());
            let mut max_err = 0.0f32;
            for name in original.weights.names() {
                let a = original.weights.load(name).unwrap().to_f32().unwrap();
                let b = converted.weights.load(name).unwrap().to_f32().unwrap();
                for (x, y) in a.iter().zip(&b) {
                    match dtype {
                        StoreDType::F32 => assert_eq!(x.to_bits(), y.to_bits(), "{name}"),
                        StoreDType::F16 => assert_eq!(half::f16::from_f32(*x).to_f32(), *y, "{name}"),
                    }
                    max_err = max_err.max((x - y).abs());
                }
            }
            println!("  every value {} (max abs change {max_err:.2e})", if dtype == StoreDType::F32 { "bit-identical" } else { "the f16 rounding of the original" });
        }
    }
    let bytes = tiny_fixture("daclip.pt");
    let ckpt = Checkpoint::parse(&bytes, Some(tiny_clip_config())).unwrap();
    assert_eq!(ckpt.aliases_dropped, 32, "the visual.* aliases are dropped, clip.visual.* kept");
    assert!(ckpt.weights.names().all(|n| !n.starts_with("visual.")));
}

/// Each conversion makes its metadata map afresh (a HashMap, in a new order each time):
/// the file must not depend on it.
#[test]
fn conversion_gives_the_same_bytes_every_time() {
    let pt = tiny_fixture("daclip.pt");
    let options = || ConvertOptions { clip_config: Some(tiny_clip_config()), ..ConvertOptions::new(StoreDType::F16) };
    let first = converted(&pt, options()).unwrap().0;
    for _ in 0..8 {
        assert!(converted(&pt, options()).unwrap().0 == first, "two conversions of one file differ");
    }
}

#[test]
fn unet_config_is_inferred_from_shapes() {
    let bytes = tiny_fixture("universal-ir.pth");
    let ckpt = Checkpoint::parse(&bytes, None).unwrap();
    let ModelKind::UNet(c) = ckpt.kind else { panic!("not a UNet") };
    assert_eq!((c.in_nc, c.out_nc, c.nf, c.ch_mult.clone(), c.context_dim), (3, 3, 16, vec![1, 1, 2, 2], 32));
    assert!(c.use_degra_context && c.use_image_context && !c.downscale);
}

#[test]
fn loader_uploads_named_tensors() {
    let dev = Device::new_blocking().unwrap();
    let bytes = tiny_fixture("universal-ir.pth");
    let w = Weights::parse(&bytes).unwrap();
    let want = w.load("downs.3.2.fn.fn.transformer_blocks.0.attn2.to_k.weight").unwrap().to_f32().unwrap();
    for dtype in [DeviceDType::F32, DeviceDType::F16] {
        let vb = Vb::new(&w, &dev, dtype).pp("downs").pp(3).pp("2.fn.fn").pp("transformer_blocks.0");
        let t = vb.pp("attn2").tensor("to_k.weight", &[32, 32]).unwrap();
        let got = dev.read_blocking(&t).unwrap();
        let tol = if dtype == DeviceDType::F16 { 1e-3 } else { 0.0 };
        assert!(got.iter().zip(&want).all(|(a, b)| (a - b).abs() <= tol * b.abs().max(1e-3)), "{dtype:?}");
        let err = vb.pp("attn2").tensor("to_k.weight", &[32, 16]).unwrap_err();
        assert!(err.to_string().contains("downs.3.2.fn.fn.transformer_blocks.0.attn2.to_k.weight"), "{err}");
        let err = vb.tensor("no_such.weight", &[1]).unwrap_err();
        assert!(matches!(err, Error::WeightsMismatch(_)), "{err}");
    }
}

/// A file read piece by piece that remembers its largest single read.
struct CountingSource {
    file: FileSource,
    largest_read: Cell<usize>,
    total_read: Cell<u64>,
}

impl Source for CountingSource {
    fn len(&self) -> u64 {
        self.file.len()
    }

    fn read_at(&self, offset: u64, len: usize) -> daclip_webgpu::Result<Cow<'_, [u8]>> {
        self.largest_read.set(self.largest_read.get().max(len));
        self.total_read.set(self.total_read.get() + len as u64);
        self.file.read_at(offset, len)
    }
}

#[test]
fn checkpoints_are_read_tensor_by_tensor_from_disk() {
    for (file, config) in [("daclip.pt", Some(tiny_clip_config())), ("universal-ir.pth", None)] {
        let bytes = tiny_fixture(file);
        let in_memory = Checkpoint::parse(&bytes, config.clone()).unwrap();
        let src = CountingSource { file: FileSource::open(&tiny(file)).unwrap(), largest_read: Cell::new(0), total_read: Cell::new(0) };
        // The index (central directory, local headers, pickle) and then one tensor at a
        // time: never the whole file.
        let largest_tensor = in_memory.weights.tensors().map(|(_, t)| t.numel() * t.dtype.size()).max().unwrap();
        let most_at_once = largest_tensor.max(64 << 10);
        {
            let from_disk = Checkpoint::read(&src, config.clone()).unwrap();
            assert_eq!(from_disk.kind, in_memory.kind);
            let index_read = src.total_read.get();
            for (name, _) in in_memory.weights.tensors() {
                let (a, b) = (in_memory.weights.load(name).unwrap(), from_disk.weights.load(name).unwrap());
                assert_eq!((a.dtype, &a.shape, &*a.data), (b.dtype, &b.shape, &*b.data), "{file}: {name}");
            }
            println!("{file}: {} bytes, index {index_read} bytes, largest read {} bytes, largest tensor {largest_tensor}", bytes.len(), src.largest_read.get());
            assert!(src.largest_read.get() <= most_at_once, "{file}: a read of {} bytes", src.largest_read.get());
            assert!(index_read < bytes.len() as u64 / 10, "{file}: the index took {index_read} bytes of {}", bytes.len());
        }
        // The converter streams too: the same bytes as converting the file in memory.
        let options = ConvertOptions { clip_config: config.clone(), ..ConvertOptions::new(StoreDType::F16) };
        let mut from_disk = Vec::new();
        src.largest_read.set(0);
        convert(&src, options.clone(), &mut from_disk).unwrap();
        assert!(from_disk == converted(&bytes, options).unwrap().0, "{file}: conversions from disk and from memory differ");
        assert!(src.largest_read.get() <= most_at_once, "{file}: conversion read {} bytes at once", src.largest_read.get());
    }

    // A file cut short reads as truncated, from its index or when a tensor is read.
    let dir = std::env::temp_dir().join(format!("daclip-webgpu-weights-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bytes = tiny_fixture("universal-ir.pth");
    let path = dir.join("cut.pth");
    std::fs::write(&path, &bytes[..bytes.len() - 100]).unwrap();
    let err = Checkpoint::read(FileSource::open(&path).unwrap(), None).err().expect("a truncated checkpoint must be refused");
    assert!(err.to_string().contains("truncated"), "{err}");
    let err = FileSource::open(&dir).err().unwrap();
    assert!(err.to_string().contains("folder"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_weight_larger_than_one_binding_is_named() {
    // 8193 x 4096 f16 values: 64 MiB in the file, 128 MiB + 32 KiB as f32, one binding's
    // default limit (WebGPU's 128 MiB) exceeded on a GPU.
    let spec = vec![("big.weight".to_string(), vec![8193, 4096])];
    let bytes = daclip_webgpu::weights::random_safetensors(&spec, 1, |_| false, Default::default());
    let w = Weights::parse(&bytes).unwrap();
    let gpu = Device::new_blocking().unwrap();
    let err = Vb::new(&w, &gpu, DeviceDType::F32).tensor("big.weight", &[8193, 4096]).unwrap_err();
    println!("{}: {err}", gpu.info());
    let msg = err.to_string();
    assert!(matches!(err, Error::TooLarge(_)) && msg.contains("weight `big.weight` [8193, 4096] needs 134234112 bytes (128.02 MiB)") && msg.contains("at most 134217728 (128.00 MiB)"), "{msg}");
    assert!(!msg.contains("image"), "a weight's error speaks of images: {msg}");
    // Packed f16 on a GPU it fits; the CPU backend, which has no bindings, takes either.
    Vb::new(&w, &gpu, DeviceDType::F16).tensor("big.weight", &[8193, 4096]).unwrap();
    for dtype in [DeviceDType::F32, DeviceDType::F16] {
        let t = Vb::new(&w, &Device::cpu(), dtype).tensor("big.weight", &[8193, 4096]).unwrap();
        assert_eq!(t.shape(), &[8193, 4096]);
    }
}

/// A STORED zip archive, as torch.save writes (CRCs left zero: the reader does not check them).
fn zip_archive(files: &[(&str, &[u8])]) -> Vec<u8> {
    let (mut out, mut central) = (Vec::new(), Vec::new());
    for (name, data) in files {
        let offset = out.len() as u32;
        out.extend(0x0403_4b50u32.to_le_bytes());
        out.extend([20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        out.extend((data.len() as u32).to_le_bytes());
        out.extend((data.len() as u32).to_le_bytes());
        out.extend((name.len() as u16).to_le_bytes());
        out.extend(0u16.to_le_bytes());
        out.extend(name.as_bytes());
        out.extend(*data);
        central.extend(0x0201_4b50u32.to_le_bytes());
        central.extend([20, 0, 20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        central.extend((data.len() as u32).to_le_bytes());
        central.extend((data.len() as u32).to_le_bytes());
        central.extend((name.len() as u16).to_le_bytes());
        central.extend([0; 12]);
        central.extend(offset.to_le_bytes());
        central.extend(name.as_bytes());
    }
    let cd_offset = out.len() as u32;
    out.extend(&central);
    out.extend(0x0605_4b50u32.to_le_bytes());
    out.extend([0, 0, 0, 0]);
    out.extend((files.len() as u16).to_le_bytes());
    out.extend((files.len() as u16).to_le_bytes());
    out.extend((central.len() as u32).to_le_bytes());
    out.extend(cd_offset.to_le_bytes());
    out.extend([0, 0]);
    out
}

/// A safetensors file from a raw header and data.
fn safetensors_raw(header: &str, data: &[u8]) -> Vec<u8> {
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend(header.as_bytes());
    out.extend(data);
    out
}

/// The tiny UNet as f32 safetensors with `edit` applied to its (name, shape, values) list.
fn edited_unet(edit: impl Fn(&mut Vec<(String, Vec<usize>, Vec<f32>)>)) -> Vec<u8> {
    let bytes = tiny_fixture("universal-ir.pth");
    let w = Weights::parse(&bytes).unwrap();
    let mut list: Vec<(String, Vec<usize>, Vec<f32>)> = w.tensors().map(|(n, t)| (n.to_string(), t.shape.clone(), w.load(n).unwrap().to_f32().unwrap())).collect();
    edit(&mut list);
    let views: Vec<(String, safetensors::tensor::TensorView)> = list
        .iter()
        .map(|(n, s, v)| (n.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), bytemuck::cast_slice(v)).unwrap()))
        .collect();
    safetensors::serialize(views, None).unwrap()
}

#[test]
fn malformed_inputs_give_clear_errors() {
    let pt = tiny_fixture("daclip.pt");
    let evil_pickle: &[u8] = b"\x80\x02cos\nsystem\nq\x00X\x02\x00\x00\x00lsq\x01\x85q\x02Rq\x03.";
    let mut cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty file", vec![], "neither a torch.save archive nor a valid safetensors file"),
        ("random bytes", (0..4096u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect(), "neither a torch.save archive"),
        ("truncated .pt (first half)", pt[..pt.len() / 2].to_vec(), "end-of-central-directory"),
        ("truncated .pt (last 100 bytes cut)", pt[..pt.len() - 100].to_vec(), "end-of-central-directory"),
        ("pickle calling os.system", zip_archive(&[("archive/data.pkl", evil_pickle)]), "`os.system`"),
        ("zip without data.pkl", zip_archive(&[("archive/version", b"3\n")]), "no data.pkl"),
        ("legacy torch format", b"\x80\x02\x8a\x0alz\xfc\x9cF\xf9 j\xa8P\x19.".to_vec(), "legacy"),
        ("safetensors header larger than the file", safetensors_raw(r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#, &[0; 4])[..40].to_vec(), "neither a torch.save archive nor a valid safetensors file"),
        ("safetensors with overlapping offsets", safetensors_raw(r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#, &[0; 12]), "safetensors"),
        ("safetensors with an absurd header size", { let mut b = u64::MAX.to_le_bytes().to_vec(); b.extend(b"{}"); b }, "safetensors"),
        ("safetensors of an unknown model", safetensors_raw(r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#, &[0; 4]), "neither a DA-CLIP checkpoint"),
    ];
    // Pickles made to exhaust memory or the stack rather than to hold tensors.
    let pickle = |body: Vec<u8>| zip_archive(&[("archive/data.pkl", &[b"\x80\x02".to_vec(), body, b".".to_vec()].concat())]);
    let doubled = [b")".to_vec(), b"2\x86".repeat(60)].concat(); // (x, x) of (x, x) ... 60 times over
    cases.push(("pickle doubling a tuple 60 times over", pickle(doubled), "does not hold a state dict"));
    cases.push(("pickle nesting a million tuples", pickle([b")".to_vec(), b"\x85".repeat(1_000_000)].concat()), "nested more than 100 deep"));
    cases.push(("pickle appending a list to itself", pickle(b"]2a".to_vec()), "recursive structure"));
    cases.push(("pickle memoizing at index 900,000 (sizing the memo from the file)", pickle([b"}r".to_vec(), 900_000u32.to_le_bytes().to_vec()].concat()), "absurd memo index"));
    cases.push(("UNet missing a tensor", edited_unet(|l| l.retain(|(n, _, _)| n != "mid_attn.fn.fn.proj_out.bias")), "missing `mid_attn.fn.fn.proj_out.bias`"));
    cases.push(("UNet with a wrongly shaped tensor", edited_unet(|l| {
        let e = l.iter_mut().find(|(n, _, _)| n == "ups.1.0.block1.proj.weight").unwrap();
        e.1.swap(0, 1);
    }), "`ups.1.0.block1.proj.weight` has shape [48, 32, 3, 3], expected [32, 48, 3, 3]"));
    cases.push(("UNet with an unexpected tensor", edited_unet(|l| l.push(("extra.weight".into(), vec![2], vec![1.0, 2.0]))), "unexpected `extra.weight`"));
    cases.push(("DA-CLIP whose heads cannot be read off its shapes (the tiny file's 32-channel text heads)", pt.clone(), "--clip-config"));

    for (what, bytes, expect) in &cases {
        let err = Checkpoint::parse(bytes, None).err().unwrap_or_else(|| panic!("{what}: accepted"));
        let msg = err.to_string();
        println!("{what}:\n    {}", msg.lines().take(3).collect::<Vec<_>>().join("\n    "));
        assert!(msg.contains(expect), "{what}: message lacks {expect:?}: {msg}");
    }
}

#[test]
fn convert_command_writes_a_loadable_file() {
    let dir = std::env::temp_dir().join(format!("daclip-convert-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("daclip.safetensors");
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_daclip-webgpu"))
        .args(["convert", tiny("daclip.pt").to_str().unwrap(), "-o", out.to_str().unwrap(), "--clip-config", tiny("clip_config.json").to_str().unwrap()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    println!("{stdout}{}", String::from_utf8_lossy(&run.stderr));
    assert!(run.status.success());
    assert!(stdout.contains("DA-CLIP: 99 tensors"), "{stdout}");
    let bytes = std::fs::read(&out).unwrap();
    let ckpt = Checkpoint::parse(&bytes, None).unwrap();
    assert_eq!(ckpt.kind, ModelKind::DaClip(tiny_clip_config()));
    let meta: HashMap<_, _> = ckpt.weights.metadata().clone().into_iter().collect();
    assert_eq!(meta.get("daclip_webgpu.model").map(String::as_str), Some("daclip"));

    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_daclip-webgpu"))
        .args(["convert", tiny("daclip.pt").to_str().unwrap(), "-o", out.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!bad.status.success(), "the tiny file's 32-channel heads are not read off its shapes");
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--clip-config"));
    std::fs::remove_dir_all(&dir).ok();
}

/// A published DA-CLIP `.pt` carries no config: it is read off the tensor shapes, for
/// ViT-B/32 (DA-CLIP, universal IR) and ViT-L/14 (Wild-IR) alike.
#[test]
fn daclip_configs_are_read_off_the_tensor_shapes() {
    let vit_l_14 = DaClipConfig {
        embed_dim: 768,
        vision_cfg: VisionConfig { image_size: 224, layers: 24, width: 1024, patch_size: 14, head_width: 64 },
        text_cfg: Some(TextConfig { context_length: 77, vocab_size: 49408, width: 768, heads: 12, layers: 12 }),
    };
    let without_text = DaClipConfig { text_cfg: None, ..DaClipConfig::vit_b_32() };
    for (name, config) in [("ViT-B/32", DaClipConfig::vit_b_32()), ("ViT-L/14", vit_l_14), ("ViT-B/32 without its text tower", without_text)] {
        let shapes: HashMap<String, Vec<usize>> = config.expected_tensors().into_iter().collect();
        let inferred = DaClipConfig::infer(|k| shapes.get(k).cloned()).unwrap();
        println!("{name}: {} tensors -> {inferred:?}", shapes.len());
        assert_eq!(inferred, config, "{name}");
    }
    let tiny: HashMap<String, Vec<usize>> = tiny_clip_config().expected_tensors().into_iter().collect();
    let err = DaClipConfig::infer(|k| tiny.get(k).cloned()).unwrap_err().to_string();
    assert!(err.contains("heads of 64 channels") && err.contains("--clip-config"), "{err}");
}

/// Each model's loader reads every tensor its expected-tensor list names (the logit
/// scale aside) and no other (a missing one fails the load, an unread one is left in
/// `unread`): the tiny pair in
/// the original's files, and the Wild-IR architectures (image context only, a downscaled
/// UNet; ViT-L/14 widths) with seeded random weights.
#[test]
fn every_expected_tensor_is_read_by_its_loader() {
    use daclip_webgpu::models::clip::DaClip;
    use daclip_webgpu::models::unet::{ConditionalUNet, UNetConfig};
    use daclip_webgpu::weights::random_safetensors;
    let dev = Device::cpu();
    let wild = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/wild-reduced");
    let wild_clip: DaClipConfig = serde_json::from_slice(&std::fs::read(wild.join("clip_config.json")).unwrap()).unwrap();
    let spec: serde_json::Value = serde_json::from_slice(&std::fs::read(wild.join("random_weights.json")).unwrap()).unwrap();
    let wild_unet: UNetConfig = serde_json::from_value(spec["unet_config"].clone()).unwrap();
    let random = |kind: ModelKind| random_safetensors(&kind.expected_tensors(), 5, |_| false, kind.metadata());
    let files = [
        ("tiny daclip.pt", tiny_fixture("daclip.pt"), Some(tiny_clip_config())),
        ("tiny universal-ir.pth", tiny_fixture("universal-ir.pth"), None),
        ("Wild-IR DA-CLIP", random(ModelKind::DaClip(wild_clip)), None),
        ("Wild-IR UNet", random(ModelKind::UNet(wild_unet)), None),
    ];
    for (name, bytes, config) in files {
        let ckpt = Checkpoint::parse(&bytes, config).unwrap();
        match ckpt.kind {
            ModelKind::DaClip(_) => drop(DaClip::load(&dev, &ckpt, DeviceDType::F16).unwrap()),
            ModelKind::UNet(_) => drop(ConditionalUNet::load(&dev, &ckpt, DeviceDType::F16).unwrap()),
        }
        // The checkpoints hold CLIP's learned logit scale, which DA-CLIP's classification
        // does not use (it multiplies by 100).
        let unread: Vec<String> = ckpt.weights.unread().into_iter().filter(|n| !n.ends_with("logit_scale")).collect();
        println!("{name}: {} tensors, {} unread besides the logit scale", ckpt.weights.names().count(), unread.len());
        assert!(unread.is_empty(), "{name}: expected but never read by the loader: {unread:?}");
    }
}
