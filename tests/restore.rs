//! The restore pipeline on the tiny fixtures' weights: seeded reproducibility, no
//! allocation per step, cancellation, the sde sampler, bad inputs, tiled restores.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use daclip_webgpu::device::{block_on, Adapters, GpuOptions, KernelHelpers, KernelServer};
use daclip_webgpu::models::clip::preprocess::ImageRef;
use daclip_webgpu::models::clip::DaClip;
use daclip_webgpu::models::unet::ConditionalUNet;
use daclip_webgpu::restore::{sample, DeviceSpace, NoisePredictor, Rect, RestoreOptions, Restorer, RgbImage, UNetPredictor};
use daclip_webgpu::sde::{IrSde, Sampler};
use daclip_webgpu::restore::tiles::{TileFuture, TileHelpers, TileLayout};
use daclip_webgpu::weights::DeviceDType;
use daclip_webgpu::models::Checkpoint;
use daclip_webgpu::{Device, Error, Tensor};

use common::{tiny_clip_config, tiny_fixture};

fn models(dev: &Device) -> (DaClip, ConditionalUNet) {
    let (d, u) = (tiny_fixture("daclip.pt"), tiny_fixture("universal-ir.pth"));
    let (d, u) = (Checkpoint::parse(&d, Some(tiny_clip_config())).unwrap(), Checkpoint::parse(&u, None).unwrap());
    Restorer::load_models(dev, &d, &u, DeviceDType::F32).unwrap()
}

/// A 61 x 77 test image.
fn test_image() -> RgbImage {
    image_of(61, 77)
}

/// Smooth colours plus a fixed pseudo-random grain.
fn image_of(w: usize, h: usize) -> RgbImage {
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
    let dev = Device::new_blocking().unwrap();
    let m = models(&dev);
    let r = Restorer::new(&m.0, &m.1).unwrap();
    let img = test_image();
    let run = |seed, sampler| {
        let opts = RestoreOptions { steps: 4, seed, sampler, ..Default::default() };
        block_on(r.restore(&dev, image_ref(&img), &opts, &mut |_| true)).unwrap().to_rgb8()
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
    let dev = Device::new_blocking().unwrap();
    let m = models(&dev);
    let r = Restorer::new(&m.0, &m.1).unwrap();
    let img = test_image();
    let (mut seen, mut bind_groups) = (Vec::new(), Vec::new());
    let opts = RestoreOptions { steps: 5, seed: 3, preview: true, ..Default::default() };
    let out = block_on(r.restore(&dev, image_ref(&img), &opts, &mut |s| {
        let p = s.preview.expect("preview requested");
        assert!(p.width <= 128 && p.height <= 128 && p.data.len() == 3 * p.width * p.height);
        seen.push((s.progress.step, s.progress.total, dev.memory()));
        bind_groups.push(dev.bind_groups_built());
        true
    }))
    .unwrap()
    .to_rgb8();
    println!("bind groups built by the end of each step: {bind_groups:?}");
    // The pool hands a step the buffers the last one had, so the bind groups cached then
    // serve (the second step may differ from the first: the state tensor changes buffer).
    assert!(bind_groups[2..].iter().all(|&b| b == bind_groups[1]), "steps after the second built bind groups: {bind_groups:?}");
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
    let dev = Device::new_blocking().unwrap();
    let m = models(&dev);
    let r = Restorer::new(&m.0, &m.1).unwrap();
    let img = test_image();
    let opts = RestoreOptions { steps: 10, ..Default::default() };
    let mut steps = 0;
    let err = block_on(r.restore(&dev, image_ref(&img), &opts, &mut |s| {
        steps = s.progress.step;
        s.progress.step < 2
    }))
    .unwrap_err();
    assert_eq!(err, Error::Cancelled);
    assert_eq!(steps, 2, "cancelled right after the step that asked");
    let again = block_on(r.restore(&dev, image_ref(&img), &RestoreOptions { steps: 2, ..Default::default() }, &mut |_| true));
    assert!(again.is_ok());
}

#[test]
fn bad_images_are_refused_clearly() {
    let dev = Device::new_blocking().unwrap();
    let m = models(&dev);
    let r = Restorer::new(&m.0, &m.1).unwrap();
    let opts = RestoreOptions { steps: 1, ..Default::default() };
    for (w, h) in [(1, 1), (5, 40), (0, 10)] {
        let img = RgbImage { width: w, height: h, data: vec![128; w * h * 3] };
        let err = block_on(r.restore(&dev, image_ref(&img), &opts, &mut |_| true)).unwrap_err();
        println!("{w}x{h}: {err}");
        assert!(matches!(err, Error::Shape(_)), "{err:?}");
    }
    let bad = ImageRef { width: 10, height: 10, channels: 3, data: &[0; 10] };
    assert!(matches!(block_on(r.restore(&dev, bad, &opts, &mut |_| true)), Err(Error::Shape(_))));
    // The model stays usable after refusals.
    let img = test_image();
    assert!(block_on(r.restore(&dev, image_ref(&img), &opts, &mut |_| true)).is_ok());
}

/// The 8-bit conversion of `restore`: clamp, round half to even.
fn to_u8(v: &[f32], w: usize, h: usize) -> Vec<u8> {
    (0..w * h).flat_map(|i| (0..3).map(move |c| (v[c * w * h + i].clamp(0.0, 1.0) * 255.0).round_ties_even() as u8)).collect()
}

#[test]
fn an_image_in_one_tile_takes_the_untiled_path_bit_for_bit() {
    let dev = Device::new_blocking().unwrap();
    let m = models(&dev);
    let r = Restorer::new(&m.0, &m.1).unwrap();
    let img = test_image();
    let opts = RestoreOptions { steps: 3, seed: 4, sampler: Sampler::MrSde2, ..Default::default() };
    // The untiled computation written out: the whole image on the GPU.
    let enc = m.0.encode(&dev, image_ref(&img)).unwrap();
    let sde = IrSde::published(100).unwrap();
    let plan = sde.plan(opts.sampler, opts.steps, opts.grid).unwrap();
    let times: Vec<f32> = plan.iter().map(|s| s.network_time).collect();
    let mut unet = UNetPredictor::new(&dev, &m.1, &enc.degra_features, &enc.image_features, &times).unwrap();
    let lq: Vec<f32> = (0..3).flat_map(|c| img.data.chunks(3).map(move |p| p[c] as f32 / 255.0)).collect();
    let lq = dev.upload(&[1, 3, img.height, img.width], &lq).unwrap();
    let x = block_on(sample(&mut DeviceSpace::new(&dev, &mut unet, &lq, opts.seed), sde.max_sigma, &plan, false, &mut |_, _| true)).unwrap();
    let want = to_u8(&dev.read_blocking(&x).unwrap(), img.width, img.height);
    for tile in [None, Some(77), Some(128)] {
        let out = block_on(r.restore(&dev, image_ref(&img), &RestoreOptions { tile, ..opts.clone() }, &mut |_| true)).unwrap().to_rgb8();
        assert!(out.data == want, "tile {tile:?}: not the untiled result");
    }
    let tiled = block_on(r.restore(&dev, image_ref(&img), &RestoreOptions { tile: Some(48), overlap: Some(16), ..opts.clone() }, &mut |_| true)).unwrap().to_rgb8();
    assert!(tiled.data != want, "tile 48 is a tiled restore");
}

/// Mean |difference of neighbours| across the tile borders inside the image, divided by
/// the same everywhere else: 1.0 when the borders cannot be told apart.
fn seam_score(img: &RgbImage, layout: &TileLayout) -> f64 {
    let (w, h) = (img.width, img.height);
    let (mut cols, mut rows) = (vec![false; w], vec![false; h]);
    for k in 0..layout.tile_count() {
        let t = layout.rect(k);
        for (edges, start, end, len) in [(&mut cols, t.x, t.x + t.width, w), (&mut rows, t.y, t.y + t.height, h)] {
            if start > 0 {
                edges[start] = true; // between start - 1 and start
            }
            if end < len {
                edges[end] = true;
            }
        }
    }
    let px = |x: usize, y: usize, c: usize| img.data[3 * (y * w + x) + c] as f64;
    let (mut seam, mut ns, mut rest, mut nr) = (0.0, 0, 0.0, 0);
    for (y, &row_edge) in rows.iter().enumerate() {
        for (x, &col_edge) in cols.iter().enumerate() {
            for c in 0..3 {
                // Differences with the left and the upper neighbour, where there is one.
                let left = (x > 0).then(|| (col_edge, (px(x, y, c) - px(x - 1, y, c)).abs()));
                let up = (y > 0).then(|| (row_edge, (px(x, y, c) - px(x, y - 1, c)).abs()));
                for (on_edge, d) in [left, up].into_iter().flatten() {
                    if on_edge {
                        (seam, ns) = (seam + d, ns + 1);
                    } else {
                        (rest, nr) = (rest + d, nr + 1);
                    }
                }
            }
        }
    }
    (seam / ns as f64) / (rest / nr as f64)
}

#[test]
fn tiles_of_a_256_image_blend_without_seams() {
    // The blending is the same on every backend (the_cpu_backend_restores_what_the_gpu_does
    // checks tiles on both); the CPU backend does these 256x256 restores in seconds where
    // lavapipe takes minutes.
    let dev = Device::cpu();
    let m = models(&dev);
    let r = Restorer::new(&m.0, &m.1).unwrap();
    let img = image_of(256, 256);
    let opts = RestoreOptions { steps: 3, seed: 2, sampler: Sampler::MrOde2, ..Default::default() };
    let run = |tile, overlap| block_on(r.restore(&dev, image_ref(&img), &RestoreOptions { tile: Some(tile), overlap: Some(overlap), ..opts.clone() }, &mut |_| true)).unwrap().to_rgb8();
    let untiled = run(256, 0);
    let grid_of = |overlap| TileLayout::new(256, 256, 128, overlap);
    println!("tiny weights, 256x256, mr-ode2 3 steps; seam score 1.0 = no seam");
    println!("untiled: seam score on the tile-128/overlap-32 borders {:.3}", seam_score(&untiled, &grid_of(32)));
    for overlap in [16, 32, 64] {
        let tiled = run(128, overlap);
        let d: Vec<f64> = tiled.data.iter().zip(&untiled.data).map(|(a, b)| (*a as f64 - *b as f64).abs()).collect();
        let (max, mean) = (d.iter().fold(0.0f64, |a, b| a.max(*b)), d.iter().sum::<f64>() / d.len() as f64);
        let score = seam_score(&tiled, &grid_of(overlap));
        println!("tile 128, overlap {overlap:>2} ({} tiles): vs untiled max {max}/255, mean {mean:.2}/255; seam score {score:.3}", grid_of(overlap).tile_count());
        assert!(score < 1.25, "overlap {overlap}: seam score {score}");
        assert!(mean < 10.0, "overlap {overlap}: mean difference {mean}");
    }
}

#[test]
fn tiled_restores_report_tiles_reuse_memory_and_cancel_between_tiles() {
    let dev = Device::new_blocking().unwrap();
    let m = models(&dev);
    let r = Restorer::new(&m.0, &m.1).unwrap();
    let img = image_of(100, 70);
    let opts = RestoreOptions { steps: 3, seed: 1, tile: Some(48), overlap: Some(12), preview: true, ..Default::default() };
    let tiles = r.layout(&dev, 100, 70, &opts).unwrap().tile_count();
    assert_eq!(tiles, 3 * 2);
    let mut seen = Vec::new();
    block_on(r.restore(&dev, image_ref(&img), &opts, &mut |s| {
        assert_eq!(s.preview.is_some(), s.progress.tile == s.progress.tiles, "a preview comes with each finished step");
        seen.push((s.progress, dev.memory(), dev.bind_groups_built()));
        true
    }))
    .unwrap();
    let want: Vec<(usize, usize)> = (1..=3).flat_map(|step| (1..=tiles).map(move |tile| (step, tile))).collect();
    assert_eq!(seen.iter().map(|(p, _, _)| (p.step, p.tile)).collect::<Vec<_>>(), want);
    assert!(seen.iter().all(|(p, _, _)| p.total == 3 && p.tiles == tiles));
    let after_first = seen[tiles - 1].1;
    let bind_groups: Vec<u64> = seen.iter().map(|s| s.2).collect();
    println!("bind groups built by the end of each tile: {bind_groups:?}");
    assert!(bind_groups.iter().all(|&b| b == bind_groups[0]), "tiles after the first built bind groups: {bind_groups:?}");
    for (p, mem, _) in &seen[tiles..] {
        assert_eq!(mem.live_bytes + mem.free_bytes, after_first.live_bytes + after_first.free_bytes, "step {} tile {} allocated GPU memory", p.step, p.tile);
    }
    let mut calls = 0;
    let err = block_on(r.restore(&dev, image_ref(&img), &opts, &mut |s| {
        calls += 1;
        !(s.progress.step == 2 && s.progress.tile == 2)
    }))
    .unwrap_err();
    assert_eq!(err, Error::Cancelled);
    assert_eq!(calls, tiles + 2, "cancelled right after the tile that asked");
    assert!(block_on(r.restore(&dev, image_ref(&img), &RestoreOptions { steps: 1, ..opts.clone() }, &mut |_| true)).is_ok());
}

#[test]
fn tile_options_and_image_sizes_are_checked_before_any_work() {
    let dev = Device::new_blocking().unwrap();
    let m = models(&dev);
    let r = Restorer::new(&m.0, &m.1).unwrap();
    let opts = |tile, overlap| RestoreOptions { tile, overlap, ..Default::default() };
    for (w, h, o, what) in [
        (100, 100, opts(Some(8), None), "tile size"),
        (100, 100, opts(Some(100_000), None), "tile size"),
        (100, 100, opts(Some(64), Some(40)), "overlap"),
        (20_000, 20_000, opts(None, None), "larger than restore takes"),
        (16_385, 100, opts(None, None), "larger than restore takes"),
        (3, 8000, opts(None, None), "too small"),
    ] {
        let err = r.layout(&dev, w, h, &o).unwrap_err();
        println!("{w}x{h}, tile {:?}, overlap {:?}: {err}", o.tile, o.overlap);
        assert!(err.to_string().contains(what), "{err}");
    }
    // 48 MP under WebGPU's default limits: every tile fits one binding.
    let layout = r.layout(&dev, 8000, 6000, &opts(None, None)).unwrap();
    let t = layout.rect(0);
    println!("8000x6000: {} tiles of {}x{}", layout.tile_count(), t.width, t.height);
    assert!(t.width <= 512 && t.height <= 512);
}

/// Loaded for the ten names only, DA-CLIP runs its text tower before the image towers
/// and keeps no tower: the same ranking as the model that keeps it (its text tower f32
/// there, f16 here: probabilities within 1e-3), and custom labels refused by name.
#[test]
fn daclip_without_custom_labels_ranks_the_same_and_keeps_no_text_tower() {
    let dev = Device::cpu();
    let ckpt = tiny_fixture("daclip.pt");
    let ckpt = Checkpoint::parse(&ckpt, Some(tiny_clip_config())).unwrap();
    let with_text = DaClip::load(&dev, &ckpt, DeviceDType::F16).unwrap();
    let before = dev.memory().live_bytes;
    let without = block_on(DaClip::load_without_text(&dev, &ckpt, DeviceDType::F16)).unwrap();
    let held = dev.memory().live_bytes - before;
    assert!(with_text.text.is_some() && without.text.is_none());
    let img = test_image();
    let (a, b) = (block_on(with_text.classify(&dev, image_ref(&img), None)).unwrap(), block_on(without.classify(&dev, image_ref(&img), None)).unwrap());
    let worst = a.labels.iter().zip(&a.probabilities).map(|(l, p)| (p - b.probabilities[b.labels.iter().position(|x| x == l).unwrap()]).abs()).fold(0f32, f32::max);
    println!("ten names without the text tower: probabilities within {worst:.2e}; {held} bytes held");
    assert!(worst < 1e-3, "{worst}");
    let err = block_on(without.classify(&dev, image_ref(&img), Some(&["foggy"]))).unwrap_err().to_string();
    assert!(err.contains("no text tower") && err.contains("custom labels"), "{err}");
}

#[test]
fn classify_then_restore_encodes_the_image_once_and_each_label_once() {
    let dev = Device::new_blocking().unwrap();
    let (daclip, unet) = models(&dev); // the original .pt: text tower, no stored features
    let work = |f: &mut dyn FnMut()| {
        let before = dev.dispatch_count();
        f();
        dev.dispatch_count() - before
    };
    let (a, b, c) = (image_of(61, 77), image_of(80, 60), image_of(70, 70));
    let classify = |img: &RgbImage, labels: Option<&[&str]>| block_on(daclip.classify(&dev, image_ref(img), labels)).unwrap();
    let first = work(&mut || drop(classify(&a, None)));
    let again = work(&mut || drop(classify(&a, None)));
    let image_only = work(&mut || drop(daclip.encode(&dev, image_ref(&b)).unwrap()));
    let new_image = work(&mut || drop(classify(&c, None)));
    println!("kernels: first classify {first} (image and the ten names), same image again {again}, another image {new_image}, its towers alone {image_only}");
    assert_eq!(again, 0, "the same image again: nothing recomputed");
    assert_eq!(new_image, image_only, "the ten names' text features are computed once");
    assert!(first > image_only);
    let custom = work(&mut || drop(classify(&a, Some(&["rain", "fog", "rain"]))));
    let custom_again = work(&mut || drop(classify(&a, Some(&["fog", "rain"]))));
    assert!(custom > image_only && custom_again == 0, "custom labels: the text tower once ({custom} kernels), then cached ({custom_again})");
    // restore reuses the embeddings of the image just classified.
    drop(classify(&a, None));
    let r = Restorer::new(&daclip, &unet).unwrap();
    let opts = RestoreOptions { steps: 1, ..Default::default() };
    let restore = work(&mut || drop(block_on(r.restore(&dev, image_ref(&a), &opts, &mut |_| true)).unwrap()));
    drop(classify(&b, None));
    let restore_new = work(&mut || drop(block_on(r.restore(&dev, image_ref(&a), &opts, &mut |_| true)).unwrap()));
    println!("kernels: 1-step restore of the image just classified {restore}, of the same image after classifying another {restore_new}");
    assert_eq!(restore_new, restore + image_only, "restore after classify skips the image towers");
}

#[test]
fn an_original_checkpoint_converts_for_the_cache_and_classifies_the_same() {
    let dev = Device::new_blocking().unwrap();
    let (daclip, _) = models(&dev);
    let original = tiny_fixture("daclip.pt");
    let img = image_of(61, 77);
    let want = block_on(daclip.classify(&dev, image_ref(&img), None)).unwrap();
    for keep_text in [false, true] {
        let mut bytes = Vec::new();
        block_on(daclip.converted(&dev, &original, keep_text, &mut bytes)).unwrap();
        let reloaded = DaClip::load(&dev, &Checkpoint::parse(&bytes, None).unwrap(), DeviceDType::F32).unwrap();
        let got = block_on(reloaded.classify(&dev, image_ref(&img), None)).unwrap();
        let worst = common::worst(want.labels.iter().zip(&want.probabilities).map(|(l, p)| (got.probabilities[got.labels.iter().position(|g| g == l).unwrap()] - p).abs() as f64));
        println!("converted for the cache (keep_text {keep_text}): {} of {} bytes, max probability difference {worst:.1e} (f16 storage)", bytes.len(), original.len());
        assert!(worst < 1e-2, "{worst}");
        assert!(bytes.len() < original.len());
        assert_eq!(reloaded.text.is_some(), keep_text);
    }
}

/// The same restore (seed, steps, weights) on the GPU adapter and on the CPU backend, whole
/// image and in tiles: the backends differ only in rounding (the order of sums, the last
/// bits of exp/log), which the random tiny UNet's x0 prediction amplifies by 1/alpha =
/// 200; the bound is the one the browser test uses between SwiftShader and lavapipe. The
/// GPU's products stay f32 here: on cooperative matrices (which round their inputs to
/// f16) they are held to the f16 weights' parity tolerance instead (tests/parity.rs).
#[test]
fn the_cpu_backend_restores_what_the_gpu_does() {
    let gpu = block_on(Device::new_with(GpuOptions { cooperative_matrix: Adapters::Off, ..GpuOptions::default() })).unwrap();
    let cpu = Device::cpu();
    let (mg, mc) = (models(&gpu), models(&cpu));
    let (rg, rc) = (Restorer::new(&mg.0, &mg.1).unwrap(), Restorer::new(&mc.0, &mc.1).unwrap());
    let img = image_of(72, 60);
    for (what, tile) in [("whole image", None), ("tiles of 32", Some(32))] {
        let opts = RestoreOptions { steps: 4, seed: 5, tile, overlap: tile.map(|t| t / 4), ..Default::default() };
        let a = block_on(rg.restore(&gpu, image_ref(&img), &opts, &mut |_| true)).unwrap().to_rgb8();
        let b = block_on(rc.restore(&cpu, image_ref(&img), &opts, &mut |_| true)).unwrap().to_rgb8();
        let diffs: Vec<u8> = a.data.iter().zip(&b.data).map(|(x, y)| x.abs_diff(*y)).collect();
        let worst = diffs.iter().copied().max().unwrap();
        let beyond_one = diffs.iter().filter(|&&d| d > 1).count();
        println!("{what}: GPU ({}) vs CPU: max {worst}/255, {beyond_one} of {} values beyond 1/255", gpu.info(), diffs.len());
        assert!(worst <= 4 && beyond_one * 200 <= diffs.len(), "{what}: max {worst}, {beyond_one} beyond 1/255");
    }
}

/// Kernel helpers as the browser's helper workers are: servers that hold only what they
/// are sent (as words), each reply kept until it is received.
struct Servers {
    servers: Vec<RefCell<KernelServer>>,
    replies: RefCell<Vec<Option<daclip_webgpu::Result<Vec<f32>>>>>,
    requests: Cell<usize>,
}

impl KernelHelpers for Servers {
    fn count(&self) -> usize {
        self.servers.len()
    }
    fn send(&self, helper: usize, header: &[u32], data: &[&[u32]], reply_len: usize) -> daclip_webgpu::Result<()> {
        let reply = self.servers[helper].borrow_mut().serve(header, data.iter().map(|d| d.to_vec()).collect());
        assert_eq!(reply.as_ref().map(Vec::len).unwrap_or(reply_len), reply_len);
        self.replies.borrow_mut()[helper] = Some(reply);
        self.requests.set(self.requests.get() + 1);
        Ok(())
    }
    fn receive(&self, helper: usize) -> daclip_webgpu::Result<Vec<f32>> {
        self.replies.borrow_mut()[helper].take().expect("a request before its reply")
    }
    fn min_macs(&self) -> usize {
        0
    }
}

/// Every product and convolution of a classification and a restore split over one and
/// over three kernel helpers: the same probabilities and image, bit for bit, as one
/// worker's; and the helpers forget the weights of dropped models.
#[test]
fn kernels_split_over_helpers_compute_what_one_worker_does() {
    let cpu = Device::cpu();
    let img = image_of(40, 36);
    let opts = RestoreOptions { steps: 3, seed: 5, ..Default::default() };
    // Fresh models for each run: DaClip keeps the last image's encoding.
    let run = |dev: &Device| {
        let (d, u) = models(dev);
        let probs = block_on(d.classify(dev, image_ref(&img), None)).unwrap().probabilities;
        let restored = block_on(Restorer::new(&d, &u).unwrap().restore(dev, image_ref(&img), &opts, &mut |_| true)).unwrap();
        let pixels: Vec<u32> = (0..3 * 40 * 36).map(|i| restored.value(i % 3, i / 3).to_bits()).collect();
        (probs, pixels)
    };
    let (probs, pixels) = run(&cpu);
    for count in [1, 3] {
        let servers = Rc::new(Servers { servers: (0..count).map(|_| RefCell::default()).collect(), replies: RefCell::new(vec![None; count]), requests: Cell::new(0) });
        cpu.set_kernel_helpers(Some(servers.clone())).unwrap();
        let (p, x) = run(&cpu);
        assert!(servers.requests.get() > 100, "{count} helpers: {} requests", servers.requests.get());
        assert_eq!(p, probs, "{count} helpers: probabilities");
        assert!(x == pixels, "{count} helpers: the restored image differs");
        // The models are dropped: the next request tells the helpers to forget them.
        let kept = servers.servers[0].borrow().kept_bytes();
        run(&cpu);
        let after = servers.servers[0].borrow().kept_bytes();
        assert!(kept > 0 && after <= kept, "{count} helpers: kept {kept} bytes, then {after}");
        cpu.set_kernel_helpers(None).unwrap();
    }
}

/// Helpers as the browser's helper workers are: another device with its own copy of the
/// UNet, conditioned on the restore's embeddings; each tile's future is ready only on its
/// second poll, so tiles come back after others were computed here.
struct OtherDevices {
    dev: Device,
    unet: ConditionalUNet,
    count: usize,
    context: Option<(Tensor, Tensor)>,
    tiles: Rc<Cell<usize>>,
}

struct Later(Option<daclip_webgpu::Result<Vec<f32>>>, bool);

impl Future for Later {
    type Output = daclip_webgpu::Result<Vec<f32>>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if !self.1 {
            self.1 = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        Poll::Ready(self.0.take().expect("polled after ready"))
    }
}

impl TileHelpers for OtherDevices {
    fn count(&self) -> usize {
        self.count
    }

    fn condition(&mut self, degradation: Vec<f32>, image: Vec<f32>) {
        let n = degradation.len();
        self.context = Some((self.dev.upload(&[1, n], &degradation).unwrap(), self.dev.upload(&[1, n], &image).unwrap()));
    }

    fn send(&mut self, _helper: usize, x: Vec<f32>, mu: Vec<f32>, at: Rect, t: f32) -> TileFuture {
        self.tiles.set(self.tiles.get() + 1);
        let (degra, image) = self.context.as_ref().expect("conditioned first");
        let shape = [1, 3, at.height, at.width];
        let noise = (|| {
            let mut unet = UNetPredictor::new(&self.dev, &self.unet, degra, image, &[t])?;
            let out = unet.predict_noise(&self.dev, &self.dev.upload(&shape, &x)?, &self.dev.upload(&shape, &mu)?, at, t)?;
            self.dev.read_blocking(&out)
        })();
        Box::pin(Later(Some(noise), false))
    }

    fn pause(&self) -> Pin<Box<dyn Future<Output = ()>>> {
        Box::pin(std::future::ready(()))
    }
}

/// A tiled restore whose tiles are shared with helpers gives exactly the image computed
/// alone (the browser's several workers rest on this), and the helpers did take tiles.
#[test]
fn tiles_shared_with_helpers_restore_bit_for_bit() {
    let dev = Device::cpu();
    let m = models(&dev);
    let r = Restorer::new(&m.0, &m.1).unwrap();
    let img = image_of(80, 56);
    let opts = RestoreOptions { steps: 3, seed: 4, sampler: Sampler::MrOde2, tile: Some(32), overlap: Some(8), ..Default::default() };
    let alone = block_on(r.restore(&dev, image_ref(&img), &opts, &mut |_| true)).unwrap().to_rgb8();
    for count in [1, 2, 5] {
        let helper_dev = Device::cpu();
        let tiles = Rc::new(Cell::new(0));
        let mut helpers = OtherDevices { unet: models(&helper_dev).1, dev: helper_dev, count, context: None, tiles: tiles.clone() };
        let mut progress = Vec::new();
        let shared = block_on(r.restore_sharing(&dev, image_ref(&img), &opts, Some(&mut helpers), &mut |s| {
            progress.push((s.progress.step, s.progress.tile));
            true
        }))
        .unwrap()
        .to_rgb8();
        println!("{count} helper(s): {} of {} tile evaluations done by them", tiles.get(), 3 * 6);
        assert!(tiles.get() > 0, "the helpers took tiles");
        assert!(shared == alone, "{count} helper(s): not the image computed alone");
        let want: Vec<(usize, usize)> = (1..=3).flat_map(|step| (1..=6).map(move |tile| (step, tile))).collect();
        assert_eq!(progress, want, "progress in tile order");
    }
}

#[test]
fn classifications_and_restores_in_a_row_keep_device_memory_flat() {
    // 50 calls on the CPU backend, 10 on the GPU (on lavapipe a call takes a second).
    for (dev, calls) in [(Device::new_blocking().unwrap(), 10), (Device::cpu(), 50)] {
        let m = models(&dev);
        let r = Restorer::new(&m.0, &m.1).unwrap();
        let mut usage = Vec::new();
        for i in 0..calls {
            // A new image each time: the cache of the last encoding does not hide work.
            let mut img = image_of(40, 48);
            img.data[0] = i as u8;
            block_on(m.0.classify(&dev, image_ref(&img), None)).unwrap();
            let opts = RestoreOptions { steps: 1, seed: i, ..Default::default() };
            block_on(r.restore(&dev, image_ref(&img), &opts, &mut |_| true)).unwrap();
            if i == 0 || i == calls - 1 {
                usage.push(dev.memory());
            }
        }
        let mib = |b: u64| b as f64 / (1 << 20) as f64;
        println!("{}: after 1 and {calls}: live {:.2} / {:.2} MiB, pooled {:.2} / {:.2} MiB", dev.info().name, mib(usage[0].live_bytes), mib(usage[1].live_bytes), mib(usage[0].free_bytes), mib(usage[1].free_bytes));
        assert_eq!((usage[1].live_bytes, usage[1].free_bytes), (usage[0].live_bytes, usage[0].free_bytes), "{}: memory grew", dev.info().name);
    }
}
