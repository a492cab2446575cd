//! `daclip-webgpu bench`: throughput of the kernels on the shapes the models use.
//!
//! Each row runs once to compile its pipeline, then repeats the op back to back in three
//! rounds and reports the fastest round's mean time per op (see `time`).

use std::time::Instant;

use daclip_webgpu::models::clip::preprocess::ImageRef;
use daclip_webgpu::models::clip::tokenizer::tokenize;
use daclip_webgpu::models::clip::{DaClip, DaClipConfig, TextTransformer, DEGRADATIONS};
use daclip_webgpu::models::unet::{ConditionalUNet, ImageContext, TimeConditioning, UNetConfig};
use daclip_webgpu::restore::{sample, RestoreOptions, Restorer, UNetPredictor};
use daclip_webgpu::sde::{Grid, IrSde, Sampler, PUBLISHED_T};
use daclip_webgpu::restore::tiles::{TileLayout, TileLimits, TiledSpace};
use daclip_webgpu::ops::{self, Conv2dArgs, Heads};
use daclip_webgpu::weights::{random_safetensors, DeviceDType};
use daclip_webgpu::models::{Checkpoint, ModelKind};
use daclip_webgpu::device::{block_on, Adapters, CooperativeTile, DispatchTime, F32Tile, FamilyTime, GpuOptions, Tuning};
use daclip_webgpu::{Device, Result, Tensor};

struct Row {
    name: String,
    /// Work per call (2 FLOPs per multiply-add).
    gflop: f64,
    ms: f64,
}

/// Times `op` (which must record or run device work and return its output): one run to compile
/// its pipelines, then three rounds of back-to-back repeats (about half a second each,
/// at least one call), and the fastest round's mean per call in ms. The best round
/// rather than the mean: these machines are shared, and interference only adds time.
fn time(dev: &Device, mut op: impl FnMut() -> Result<Tensor>) -> Result<f64> {
    let start = Instant::now();
    drop(op()?);
    dev.sync_blocking()?;
    let warm = start.elapsed().as_secs_f64();
    let reps = ((0.5 / warm.max(1e-4)) as usize).clamp(1, 50);
    let mut best = f64::MAX;
    for _ in 0..3 {
        let start = Instant::now();
        for _ in 0..reps {
            drop(op()?);
        }
        dev.sync_blocking()?;
        best = best.min(start.elapsed().as_secs_f64() * 1e3 / reps as f64);
    }
    Ok(best)
}

fn filled(dev: &Device, shape: &[usize]) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    let data: Vec<f32> = (0..n).map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5).collect();
    dev.upload(shape, &data)
}

/// The published UNet: nf 64, ch_mult 1 2 4 8, 512-wide DA-CLIP context.
fn published_unet() -> UNetConfig {
    UNetConfig { in_nc: 3, out_nc: 3, nf: 64, ch_mult: vec![1, 2, 4, 8], context_dim: 512, use_degra_context: true, use_image_context: true, downscale: false }
}

/// The Wild-IR UNet: the published one with a 768-wide image context only, at half
/// resolution inside (`scale: 0.5`).
fn wild_unet() -> UNetConfig {
    UNetConfig { context_dim: 768, use_degra_context: false, downscale: true, ..published_unet() }
}

/// Print kernel and model timings on the device (seeded random weights at the published
/// shapes).
#[derive(clap::Args)]
pub struct Args {
    /// Stop after the kernel rows.
    #[arg(long)]
    kernels: bool,
    /// Add the large rows on a software adapter or the CPU backend (matmul 4096^3, UNet
    /// step at 512x512, with --restore a 512x512 restore: many minutes on a software
    /// adapter); a hardware GPU always gets them.
    #[arg(long)]
    large: bool,
    /// Add where encode_image and each UNet step spend their time, per kernel family: on a
    /// GPU from timestamp queries (each dispatch then runs in a compute pass of its own,
    /// so the sum exceeds the step's time a little), on the CPU backend the wall time of
    /// each kernel.
    #[arg(long)]
    profile: bool,
    /// Add whole restores of a 64x64 image: the published posterior sampler (100 steps)
    /// against the MR sampler (mr-ode2, 10 and 20 steps); with the large rows also a
    /// 512x512 image with mr-ode2 in 10 steps. On a GPU first ten 64x64 UNet steps each
    /// waited for, then queued behind each other (as restores run them): the GPU's idle
    /// time between steps.
    #[arg(long)]
    restore: bool,
    /// Time only one sampler step of a WIDTHxHEIGHT image in tiles, with its peak memory.
    #[arg(long, value_name = "WxH", value_parser = parse_size)]
    tiled: Option<(usize, usize)>,
    /// The tile side for --tiled.
    #[arg(long, requires = "tiled")]
    tile: Option<usize>,
    /// Time only UNet steps at these sides (comma-separated, such as 64,128): the rows to
    /// compare two builds with, without the minutes the other rows take on a software
    /// adapter.
    #[arg(long, value_name = "SIDES", value_delimiter = ',', conflicts_with_all = ["tiled", "kernels"])]
    steps: Option<Vec<usize>>,
    /// Also time the UNet steps with the convolutions and products on the f32 kernels of
    /// fewer workgroups than each of these split along K (comma-separated, such as
    /// 256,1024; Tuning::split_k_below): whether and from where splitting pays on this
    /// GPU.
    #[arg(long, value_name = "WORKGROUPS", value_delimiter = ',')]
    split_k: Vec<usize>,
    /// Also time the UNet steps with the convolutions and attention dispatched in parts of
    /// at most 2^N multiply-adds for each N (comma-separated, such as 32,34; the default is
    /// 2^30, Tuning::max_macs_per_dispatch): whether larger dispatches pay on this GPU.
    #[arg(long, value_name = "LOG2", value_delimiter = ',', value_parser = clap::value_parser!(u32).range(10..=62))]
    dispatch_macs: Vec<u32>,
    /// Only write the bench's weights (DA-CLIP without its text tower, the UNet; seeded
    /// random, published shapes) into this folder as daclip.safetensors and
    /// unet.safetensors, for the browser bench (tests/browser/bench.mjs).
    #[arg(long, value_name = "DIR")]
    save_weights: Option<std::path::PathBuf>,
    /// Only print the memory each published model holds on the device once loaded (f16
    /// weights; seeded random values at the published shapes): what a pair needs. The
    /// text tower's token embedding stays in host memory (49408 rows, f16).
    #[arg(long)]
    memory: bool,
    #[command(flatten)]
    device: crate::DeviceArg,
}

fn parse_size(s: &str) -> std::result::Result<(usize, usize), String> {
    s.split_once('x').and_then(|(w, h)| Some((w.parse().ok()?, h.parse().ok()?))).ok_or_else(|| format!("expected WIDTHxHEIGHT, such as 1024x768, not `{s}`"))
}

pub fn run(args: Args) -> Result<()> {
    if let Some(dir) = &args.save_weights {
        for (name, bytes) in [("daclip.safetensors", published_daclip_weights()), ("unet.safetensors", published_unet_weights())] {
            let path = dir.join(name);
            std::fs::write(&path, bytes).map_err(|e| daclip_webgpu::Error::Io(format!("{}: {e}", path.display())))?;
            println!("wrote {}", path.display());
        }
        return Ok(());
    }
    let (kernels_only, tiled, tile) = (args.kernels, args.tiled, args.tile);
    let dev = args.device.open()?;
    if args.memory {
        return memory_rows(&dev);
    }
    let coop = match dev.cooperative_matrix() {
        Some(c) => format!(", products with f16 weights on {0}x{0}x{0} cooperative matrices", c.size),
        None if dev.shader_f16() => ", products with f16 weights on f16 tiles".to_string(),
        None => String::new(),
    };
    println!("device: {}{}{coop}", dev.info(), if dev.subgroups() { ", reductions with subgroups" } else { "" });
    if dev.info().is_software {
        println!("(a software adapter: these numbers measure the CPU, not a GPU)");
    }
    let large = args.large || !(dev.info().is_software || dev.is_cpu());
    let only_steps = args.steps.is_some();
    let sides = match args.steps {
        Some(sides) => sides,
        None if large => vec![64, 128, 256, 512],
        None => vec![64, 128, 256],
    };
    if (!args.split_k.is_empty() || !args.dispatch_macs.is_empty()) && dev.is_cpu() {
        return Err(daclip_webgpu::Error::Usage("--split-k, --dispatch-macs: the CPU backend has no dispatches to split".into()));
    }
    let variants = args.split_k.iter().map(|&w| StepVariant::SplitK(w)).chain(args.dispatch_macs.iter().map(|&n| StepVariant::DispatchMacs(n)));
    let variants = std::iter::once(StepVariant::Default).chain(variants).collect();
    let unet = UNetRows { sides, variants, restore: args.restore, large_restore: large, profile: args.profile, tiled: tiled.map(|size| (size, tile)) };
    if tiled.is_some() || only_steps {
        // Only the UNet's rows asked for: on a software adapter the rest takes minutes.
        return unet_rows(&dev, unet);
    }
    let mut rows = Vec::new();

    let sides: &[usize] = if large { &[512, 1024, 4096] } else { &[512, 1024] };
    for &n in sides {
        let a = filled(&dev, &[n, n])?;
        let b = filled(&dev, &[n, n])?;
        let ms = time(&dev, || ops::matmul(&dev, &a, &b))?;
        rows.push(Row { name: format!("matmul {n}x{n}x{n} f32"), gflop: 2.0 * (n * n * n) as f64 / 1e9, ms });
    }
    // The products and convolutions the models run with f16 weights: on what the device
    // runs them on, and then on each other kernel family it has (devices opened without
    // cooperative matrices, then without f16 tiles too).
    let mut f16_devices = vec![dev.clone()];
    if !dev.is_cpu() {
        let options = args.device.options();
        for other in [GpuOptions { cooperative_matrix: Adapters::Off, ..options }, GpuOptions { cooperative_matrix: Adapters::Off, shader_f16: Adapters::Off, ..options }] {
            let other = block_on(Device::new_with(other))?;
            if f16_devices.iter().all(|d| f16_products(d) != f16_products(&other)) {
                f16_devices.push(other);
            }
        }
    }
    let kernels: Vec<(&Device, String)> = match &f16_devices[..] {
        [only] => vec![(only, String::new())],
        all => all.iter().map(|d| (d, format!(", {}", f16_products(d)))).collect(),
    };
    for &n in if large { &[1024, 4096][..] } else { &[1024][..] } {
        for (dev, kernel) in &kernels {
            let x = filled(dev, &[n, n])?;
            let w = dev.upload_f16(&[n, n], &vec![0.01; n * n])?;
            let ms = time(dev, || ops::linear(dev, &x, &w, None))?;
            rows.push(Row { name: format!("linear {n}x{n} -> {n}, f16 weights{kernel}"), gflop: 2.0 * (n * n * n) as f64 / 1e9, ms });
        }
    }
    // Every cooperative tile that fits the device, forced on the largest product and a
    // UNet convolution: the figures to set ops::cooperative_tile's choice by.
    if let Some(coop) = dev.cooperative_matrix() {
        let n = if large { 4096 } else { 1024 };
        let (c, side) = (128usize, 128usize);
        let x = filled(&dev, &[n, n])?;
        let w = dev.upload_f16(&[n, n], &vec![0.01; n * n])?;
        let image = filled(&dev, &[1, c, side, side])?;
        let kernel = dev.upload_f16(&[c, c, 3, 3], &vec![0.01; c * c * 9])?;
        let forced = |d: &Device, tile| d.set_tuning(Tuning { cooperative_tile: tile, ..d.tuning() }).is_ok();
        for tile in CooperativeTile::CANDIDATES.into_iter().filter(|&t| forced(&dev, Some(t))) {
            let ms = time(&dev, || ops::linear(&dev, &x, &w, None))?;
            rows.push(Row { name: format!("linear {n}^3 f16, {}x{}: {tile}", tile.rows(coop), tile.cols(coop)), gflop: 2.0 * (n * n * n) as f64 / 1e9, ms });
            let ms = time(&dev, || ops::conv2d(&dev, &image, &kernel, None, Conv2dArgs::same(3)))?;
            let gflop = 2.0 * (c * c * 9 * side * side) as f64 / 1e9;
            rows.push(Row { name: format!("conv2d {c}->{c} at {side}, {}x{}: {tile}", tile.rows(coop), tile.cols(coop)), gflop, ms });
        }
        forced(&dev, None);
    }
    // The same for the f32 kernels' tiles: the f32 product, and a convolution with f16
    // weights on the f16 tiles and on the f32 kernel (the devices without cooperative
    // matrices where there are).
    if !dev.is_cpu() {
        let n = if large { 4096 } else { 1024 };
        let (c, side) = (128usize, 128usize);
        let (a, b) = (filled(&dev, &[n, n])?, filled(&dev, &[n, n])?);
        let mut convs = Vec::new();
        for d in f16_devices.iter().filter(|d| d.cooperative_matrix().is_none()) {
            convs.push((d, filled(d, &[1, c, side, side])?, d.upload_f16(&[c, c, 3, 3], &vec![0.01; c * c * 9])?));
        }
        let forced = |d: &Device, tile| d.set_tuning(Tuning { f32_tile: tile, ..d.tuning() }).is_ok();
        for tile in F32Tile::CANDIDATES {
            if !(forced(&dev, Some(tile)) && convs.iter().all(|(d, _, _)| forced(d, Some(tile)))) {
                continue;
            }
            let ms = time(&dev, || ops::matmul(&dev, &a, &b))?;
            rows.push(Row { name: format!("matmul {n}^3 f32, {}x{}: {tile}", tile.rows(), tile.cols()), gflop: 2.0 * (n * n * n) as f64 / 1e9, ms });
            for (d, image, kernel) in &convs {
                let ms = time(d, || ops::conv2d(d, image, kernel, None, Conv2dArgs::same(3)))?;
                let gflop = 2.0 * (c * c * 9 * side * side) as f64 / 1e9;
                rows.push(Row { name: format!("conv2d {c}->{c} at {side} {}, {}x{}: {tile}", f16_products(d), tile.rows(), tile.cols()), gflop, ms });
            }
        }
        forced(&dev, None);
        convs.iter().for_each(|(d, _, _)| { forced(d, None); });
    }
    for (c, side) in [(64usize, 256usize), (128, 128)] {
        for (dev, kernel) in &kernels {
            let x = filled(dev, &[1, c, side, side])?;
            let w = dev.upload_f16(&[c, c, 3, 3], &vec![0.01; c * c * 9])?;
            let ms = time(dev, || ops::conv2d(dev, &x, &w, None, Conv2dArgs::same(3)))?;
            let gflop = 2.0 * (c * c * 9 * side * side) as f64 / 1e9;
            rows.push(Row { name: format!("conv2d 3x3 {c}->{c} at {side}x{side}, f16 weights{kernel}"), gflop, ms });
        }
    }
    {
        let (tokens, heads, d) = (1024usize, 16usize, 32usize);
        let q = filled(&dev, &[1, tokens, heads * d])?;
        let ms = time(&dev, || ops::attention(&dev, Heads::all(&q), Heads::all(&q), Heads::all(&q), heads, false))?;
        let gflop = 4.0 * (tokens * tokens * heads * d) as f64 / 1e9;
        rows.push(Row { name: format!("attention {tokens} tokens x {heads} heads x {d}"), gflop, ms });
    }
    let encode_profile = match kernels_only {
        true => None,
        false => daclip_rows(&dev, &mut rows, args.profile)?,
    };

    println!();
    println!("| {:<64} | {:>8} | {:>10} | {:>8} |", "op", "GFLOP", "ms", "GFLOP/s");
    println!("|{:-<66}|{:->10}|{:->12}|{:->10}|", "", "", "", "");
    for r in &rows {
        println!("| {:<64} | {:>8.3} | {:>10.2} | {:>8.2} |", r.name, r.gflop, r.ms, r.gflop / (r.ms / 1e3));
    }
    if kernels_only {
        return Ok(());
    }
    if args.profile {
        print_profile(&dev, "DA-CLIP's encode_image with the controller", encode_profile);
    }
    let sides = unet.sides.clone();
    unet_rows(&dev, unet)?;
    for other in &f16_devices[1..] {
        println!("\nThe same steps with the products of f16 weights on the {} (a device opened without the others):", f16_products(other));
        unet_rows(other, UNetRows { sides: sides.clone(), variants: vec![StepVariant::Default], restore: false, large_restore: false, profile: false, tiled: None })?;
    }
    Ok(())
}

/// What `dev` runs the products and convolutions with f16 weights (more than 32 rows) on.
fn f16_products(dev: &Device) -> &'static str {
    if dev.cooperative_matrix().is_some() {
        "cooperative matrix"
    } else if ops::runs_on_f16_tiles(dev, 64, true) {
        "f16 tiles"
    } else {
        "f32 kernel"
    }
}

/// How the steps of a row are dispatched.
#[derive(Clone, Copy)]
enum StepVariant {
    /// The device's defaults.
    Default,
    /// Convolutions and products of fewer workgroups than this split along K.
    SplitK(usize),
    /// Convolutions and attention in parts of at most 2^this multiply-adds.
    DispatchMacs(u32),
}

impl StepVariant {
    /// Sets `dev` up for this variant (the CPU backend has only the default).
    fn apply(self, dev: &Device) {
        let tuning = match self {
            StepVariant::Default => Tuning::default(),
            StepVariant::SplitK(w) => Tuning { split_k_below: Some(w), ..Tuning::default() },
            StepVariant::DispatchMacs(n) => Tuning { max_macs_per_dispatch: 1 << n, ..Tuning::default() },
        };
        if !dev.is_cpu() {
            let _ = dev.set_tuning(tuning);
        }
    }

    /// The row's name for a step at `side`.
    fn row(self, side: usize) -> String {
        match self {
            StepVariant::Default => format!("UNet step at {side}x{side}"),
            StepVariant::SplitK(w) => format!("UNet step at {side}x{side}, K split below {w} workgroups"),
            StepVariant::DispatchMacs(n) => format!("UNet step at {side}x{side}, parts of 2^{n} multiply-adds"),
        }
    }
}

/// What `unet_rows` prints.
struct UNetRows {
    /// The sides of the steps timed.
    sides: Vec<usize>,
    /// How each side's step is dispatched, one row each: the defaults first.
    variants: Vec<StepVariant>,
    /// Whole restores of a 64x64 image.
    restore: bool,
    /// With `restore`, also a 512x512 image (mr-ode2, 10 steps).
    large_restore: bool,
    /// Time per kernel family of each step.
    profile: bool,
    /// Instead of everything else: one sampler step of an image this size in tiles.
    tiled: Option<((usize, usize), Option<usize>)>,
}

/// Seeded random weights of the published UNet, as safetensors with its config.
fn published_unet_weights() -> Vec<u8> {
    let kind = ModelKind::UNet(published_unet());
    random_safetensors(&kind.expected_tensors(), 2, |_| false, kind.metadata())
}

/// Seeded random weights of the published DA-CLIP without its text tower (zero dense
/// connections, as trained ones start).
fn published_daclip_weights() -> Vec<u8> {
    let kind = ModelKind::DaClip(DaClipConfig { text_cfg: None, ..DaClipConfig::vit_b_32() });
    random_safetensors(&kind.expected_tensors(), 3, |n| n.contains("zero_modules"), kind.metadata())
}

/// One step of the published UNet (seeded random f16 weights) at each of `what.sides`, with the most GPU memory held at once (weights included), its dispatches,
/// the bind groups it had to build, the CPU time to record it and the pipelines it
/// created first; or with `--tiled WxH`
/// instead one sampler step of an image that size in tiles (`--tile N`, default the
/// adapter's); with `--restore`, whole restores; with `--profile`, where each step's time
/// goes.
fn unet_rows(dev: &Device, what: UNetRows) -> Result<()> {
    let bytes = published_unet_weights();
    let unet = ConditionalUNet::load(dev, &Checkpoint::parse(&bytes, None)?, DeviceDType::F16)?;
    drop(bytes);
    let context = filled(dev, &[1, 512])?;
    let prompt = unet.prompt_embedding(dev, &context)?;
    let conditioning = unet.time_conditioning(dev, &[50.0], prompt.as_ref())?;
    let image = unet.image_context(dev, &context)?;
    dev.sync_blocking()?;
    let weights_mib = dev.memory().live_bytes as f64 / (1 << 20) as f64;
    println!();
    let memory = if dev.is_cpu() { "host memory of the CPU backend's tensors" } else { "GPU memory" };
    println!("UNet (published architecture, f16 weights: {weights_mib:.0} MiB; {memory})");
    if let Some(((w, h), tile)) = what.tiled {
        print_header();
        return tiled_step_row(dev, &unet, &context, w, h, tile);
    }
    println!("| {:<60} | {:>10} | {:>8} | {:>8} | {:>14} | {:>10} | {:>11} | {:>9} | {:>9} |", "stage", "ms", "GFLOP", "GFLOP/s", "peak MiB", "dispatches", "bind groups", "record ms", "pipelines");
    println!("|{:-<62}|{:->12}|{:->10}|{:->10}|{:->16}|{:->12}|{:->13}|{:->11}|{:->11}|", "", "", "", "", "", "", "", "", "");
    for (variant, side) in what.variants.iter().flat_map(|&variant| what.sides.iter().map(move |&side| (variant, side))) {
        variant.apply(dev);
        let x = filled(dev, &[1, 3, side, side])?;
        dev.release_free_buffers();
        dev.reset_peak_memory();
        let pipelines = dev.pipelines_created();
        let step = || unet.forward(dev, &x, &x, &conditioning, 50.0, &image);
        let ms = time(dev, step)?;
        let pipelines = dev.pipelines_created() - pipelines;
        let peak = dev.memory().peak_bytes as f64 / (1 << 20) as f64;
        // One more step, counted: the pool and the bind-group cache are warm, as in every
        // step of a restore after the first.
        let (dispatches, built, flops) = (dev.dispatch_count(), dev.bind_groups_built(), dev.flops());
        let start = Instant::now();
        drop(step()?);
        dev.flush();
        let record_ms = start.elapsed().as_secs_f64() * 1e3;
        dev.sync_blocking()?;
        let (dispatches, built) = (dev.dispatch_count() - dispatches, dev.bind_groups_built() - built);
        let gflop = (dev.flops() - flops) as f64 / 1e9;
        let row = variant.row(side);
        println!(
            "| {row:<60} | {ms:>10.1} | {gflop:>8.1} | {:>8.2} | {peak:>14.0} | {dispatches:>10} | {built:>11} | {record_ms:>9.2} | {pipelines:>9} |",
            gflop / (ms / 1e3)
        );
    }
    println!("(GFLOP: the step's products, convolutions and attention, two per multiply-add, as Device::flops counts them)");
    StepVariant::Default.apply(dev);
    if dev.is_cpu() {
        println!("(record ms: the CPU backend runs each kernel as it is recorded, so this is the step itself)");
    } else {
        println!("(record ms: the CPU time to record a step and submit it: bind groups, command encoding; on a software adapter the GPU's work competes with it for the cores)");
        println!("(pipelines: those the row's warm-up step had to create, each compiled once per device: a cold restore's first-step cost on a software adapter)");
    }
    if what.profile {
        for &side in &what.sides {
            let x = filled(dev, &[1, 3, side, side])?;
            let profile = profile_of(dev, || unet.forward(dev, &x, &x, &conditioning, 50.0, &image))?;
            print_profile(dev, &format!("a UNet step at {side}x{side}"), profile);
        }
    }
    if what.restore {
        println!();
        print_header();
        queued_step_rows(dev, &unet, &conditioning, &image)?;
        drop(unet);
        let (d, u) = (published_daclip_weights(), published_unet_weights());
        let (daclip, unet) = Restorer::load_models(dev, &Checkpoint::parse(&d, None)?, &Checkpoint::parse(&u, None)?, DeviceDType::F16)?;
        let restorer = Restorer::new(&daclip, &unet)?;
        let mut published_ms = 0.0;
        let mut restores = vec![(64, Sampler::Posterior, 100, None), (64, Sampler::MrOde2, 10, None), (64, Sampler::MrOde2, 20, None)];
        if what.large_restore {
            restores.push((512, Sampler::MrOde2, 10, None));
            // In one tile too, where its tensors fit a binding: less than half the
            // network's work of the default tiles (9 tiles of 256 at 266 GFLOP against
            // 1129), at 4x the activations' memory.
            let limits = TileLimits::new(dev, &unet);
            if limits.default_tile < 512 && limits.max_tile >= 512 {
                restores.push((512, Sampler::MrOde2, 10, Some(512)));
            }
        }
        for (side, sampler, steps, tile) in restores {
            let img: Vec<u8> = (0..side * side * 3).map(|i| (i * 37 % 256) as u8).collect();
            let image = ImageRef { width: side, height: side, channels: 3, data: &img };
            dev.release_free_buffers();
            dev.reset_peak_memory();
            let options = RestoreOptions { sampler, steps, tile, ..Default::default() };
            let layout = restorer.layout(dev, side, side, &options)?;
            let start = Instant::now();
            daclip_webgpu::device::block_on(restorer.restore(dev, image, &options, &mut |_| true))?;
            let ms = start.elapsed().as_secs_f64() * 1e3;
            let peak = dev.memory().peak_bytes as f64 / (1 << 20) as f64;
            let speedup = match (side, sampler) {
                (64, Sampler::Posterior) => {
                    published_ms = ms;
                    String::new()
                }
                (64, _) => format!(" ({:.1}x faster)", published_ms / ms),
                _ => String::new(),
            };
            let tiling = match (layout.tile_count(), tile) {
                (1, Some(_)) => ", in one tile".to_string(),
                (1, None) => String::new(),
                (tiles, _) => format!(", {tiles} tiles of {}", layout.rect(0).width),
            };
            println!("| {:<60} | {:>10.0} | {:>14.0} |", format!("restore {side}x{side}, {} {steps} steps{tiling}{speedup}", sampler.name()), ms, peak);
        }
    }
    Ok(())
}

/// Ten UNet steps at 64x64, each waited for before the next is recorded (as restores ran
/// until 2026-12-07), then queued one behind the other (as `restore::sample` runs them):
/// the difference is the GPU's idle time between steps, for recording and waiting.
fn queued_step_rows(dev: &Device, unet: &ConditionalUNet, conditioning: &TimeConditioning, image: &ImageContext) -> Result<()> {
    if dev.is_cpu() {
        return Ok(()); // it runs each kernel as it is recorded: nothing to queue
    }
    let (side, steps) = (64, 10);
    let x = filled(dev, &[1, 3, side, side])?;
    let step = || unet.forward(dev, &x, &x, conditioning, 50.0, image);
    drop(step()?);
    dev.sync_blocking()?;
    // Best of three rounds (one on a software adapter, where a step takes seconds).
    let rounds = if dev.info().is_software { 1 } else { 3 };
    for queued in [false, true] {
        let mut best = f64::MAX;
        for _ in 0..rounds {
            let start = Instant::now();
            let mut running = None;
            for _ in 0..steps {
                drop(step()?);
                if !queued {
                    dev.sync_blocking()?;
                } else if let Some(mark) = running.replace(dev.mark()) {
                    block_on(mark.wait())?;
                }
            }
            if let Some(mark) = running {
                block_on(mark.wait())?;
            }
            best = best.min(start.elapsed().as_secs_f64() * 1e3);
        }
        let how = if queued { "queued behind each other" } else { "each waited for" };
        println!("| {:<60} | {best:>10.1} | {:>14} |", format!("{steps} UNet steps at {side}x{side}, {how}"), "");
    }
    Ok(())
}

/// The device memory of each published model, loaded as the engine loads it (f16).
fn memory_rows(dev: &Device) -> Result<()> {
    println!("device: {}", dev.info());
    println!("| {:<58} | {:>10} | {:>10} |", "model (f16 weights)", "parameters", "MiB held");
    println!("|{:-<60}|{:->12}|{:->12}|", "", "", "");
    let held = |name: &str, kind: ModelKind| -> Result<()> {
        let spec = kind.expected_tensors();
        let parameters: usize = spec.iter().map(|(_, s)| s.iter().product::<usize>()).sum();
        let bytes = random_safetensors(&spec, 1, |_| false, kind.metadata());
        let before = dev.memory().live_bytes;
        let ckpt = Checkpoint::parse(&bytes, None)?;
        let model: Box<dyn std::any::Any> = match &ckpt.kind {
            ModelKind::DaClip(_) => Box::new(DaClip::load(dev, &ckpt, DeviceDType::F16)?),
            ModelKind::UNet(_) => Box::new(ConditionalUNet::load(dev, &ckpt, DeviceDType::F16)?),
        };
        dev.sync_blocking()?;
        let mib = (dev.memory().live_bytes - before) as f64 / (1 << 20) as f64;
        println!("| {name:<58} | {:>9.1}M | {mib:>10.0} |", parameters as f64 / 1e6);
        drop(model);
        Ok(())
    };
    for (pair, clip, unet) in [("published / published-mix", DaClipConfig::vit_b_32(), published_unet()), ("published-wild", DaClipConfig::vit_l_14(), wild_unet())] {
        held(&format!("{pair}: DA-CLIP with text tower (.pt)"), ModelKind::DaClip(clip.clone()))?;
        held(&format!("{pair}: DA-CLIP without (converted)"), ModelKind::DaClip(DaClipConfig { text_cfg: None, ..clip }))?;
        held(&format!("{pair}: UNet"), ModelKind::UNet(unet))?;
    }
    Ok(())
}

fn print_header() {
    println!("| {:<60} | {:>10} | {:>14} |", "stage", "ms", "peak MiB");
    println!("|{:-<62}|{:->12}|{:->16}|", "", "", "");
}

/// Dispatches the profile lists one by one.
const SLOWEST_DISPATCHES: usize = 12;

/// The dispatches of one run of `f`, each with its time (None where the device cannot
/// time them: no timestamp queries, the CPU backend in the browser).
fn profile_of<T>(dev: &Device, f: impl FnOnce() -> Result<T>) -> Result<Option<Vec<DispatchTime>>> {
    if !dev.set_profiling(true) {
        return Ok(None);
    }
    drop(f()?);
    let profile = daclip_webgpu::device::block_on(dev.take_profile())?;
    dev.set_profiling(false);
    Ok(profile)
}

/// Where one run of `what` spends its time, per kernel family, by the workgroups of its
/// dispatches, and its slowest dispatches: on a GPU from timestamp queries (a pass per
/// dispatch), on the CPU backend the wall time of each kernel.
fn print_profile(dev: &Device, what: &str, profile: Option<Vec<DispatchTime>>) {
    println!();
    let Some(profile) = profile else {
        println!("(no profile of {what}: this device cannot time its dispatches)");
        return;
    };
    let clock = if dev.is_cpu() { "the wall time of each kernel" } else { "timestamp queries, one pass per dispatch" };
    println!("Where {what} spends its time ({clock})");
    let families = FamilyTime::of(&profile);
    let total: f64 = families.iter().map(|f| f.ms).sum();
    println!("| {:<12} | {:>10} | {:>10} | {:>7} | {:>8} | {:>8} |", "family", "dispatches", "ms", "share", "GFLOP", "GFLOP/s");
    println!("|{:-<14}|{:->12}|{:->12}|{:->9}|{:->10}|{:->10}|", "", "", "", "", "", "");
    let row = |family: &str, dispatches: u64, ms: f64, flops: u64| {
        let (gflop, rate) = work_columns(flops, ms, 2);
        println!("| {family:<12} | {dispatches:>10} | {ms:>10.2} | {:>6.1}% | {gflop:>8} | {rate:>8} |", 100.0 * ms / total.max(1e-12));
    };
    for f in &families {
        row(f.family, f.dispatches, f.ms, f.flops);
    }
    row("all", families.iter().map(|f| f.dispatches).sum(), total, families.iter().map(|f| f.flops).sum());
    // How much of the work runs in dispatches too small to fill a large GPU (an H200: 132
    // cores holding 8 workgroups of 256 invocations each): what splitting K would change.
    println!("\nIts counted work by the workgroups of the dispatch it runs in");
    println!("| {:<16} | {:>10} | {:>10} | {:>8} | {:>8} |", "workgroups", "dispatches", "ms", "GFLOP", "GFLOP/s");
    println!("|{:-<18}|{:->12}|{:->12}|{:->10}|{:->10}|", "", "", "", "", "");
    let mut below = 1;
    for limit in [16, 64, 256, 1024, u32::MAX] {
        let runs: Vec<&DispatchTime> = profile.iter().filter(|d| d.flops > 0 && (below..=limit).contains(&d.workgroups.iter().product())).collect();
        let (ms, flops) = (runs.iter().fold(0.0, |ms, d| ms + d.ms), runs.iter().map(|d| d.flops).sum::<u64>());
        let (gflop, rate) = work_columns(flops, ms, 2);
        let range = if limit == u32::MAX { format!("{below} or more") } else { format!("{below} to {limit}") };
        println!("| {range:<16} | {:>10} | {ms:>10.2} | {gflop:>8} | {rate:>8} |", runs.len());
        below = limit.saturating_add(1);
    }
    // The dispatches to look at first, with the tile each ran on.
    let mut slowest: Vec<(usize, &DispatchTime)> = profile.iter().enumerate().collect();
    slowest.sort_by(|a, b| b.1.ms.total_cmp(&a.1.ms));
    println!("\nIts {} slowest dispatches (#: position in the run)", SLOWEST_DISPATCHES.min(slowest.len()));
    println!("| {:>4} | {:<28} | {:>16} | {:>8} | {:>8} | {:>8} | overrides", "#", "kernel", "workgroups", "ms", "GFLOP", "GFLOP/s");
    println!("|{:->6}|{:-<30}|{:->18}|{:->10}|{:->10}|{:->10}|{:-<10}", "", "", "", "", "", "", "");
    for (i, d) in slowest.into_iter().take(SLOWEST_DISPATCHES) {
        let [x, y, z] = d.workgroups;
        let (gflop, rate) = work_columns(d.flops, d.ms, 3);
        let kernel = if d.kernel.f16_tiles() { format!("{} f16 tiles", d.kernel.path()) } else { d.kernel.path().to_string() };
        println!("| {i:>4} | {kernel:<28} | {:>16} | {:>8.3} | {gflop:>8} | {rate:>8} | {}", format!("{x}x{y}x{z}"), d.ms, d.overrides);
    }
}

/// A profile row's GFLOP (with `decimals`) and GFLOP/s columns for `flops` in `ms`; empty
/// for the kernels whose work is not counted.
fn work_columns(flops: u64, ms: f64, decimals: usize) -> (String, String) {
    match flops {
        0 => (String::new(), String::new()),
        f => (format!("{:.decimals$}", f as f64 / 1e9), format!("{:.1}", f as f64 / 1e6 / ms)),
    }
}

/// One sampler step (network on every tile, blending, update) of a `w` x `h` image, and
/// the GPU memory it holds at most (weights included): what a tile size costs.
fn tiled_step_row(dev: &Device, unet: &ConditionalUNet, context: &Tensor, w: usize, h: usize, tile: Option<usize>) -> Result<()> {
    let limits = TileLimits::new(dev, unet);
    let (tile, overlap) = limits.resolve(tile, None)?;
    let layout = TileLayout::new(w, h, tile, overlap);
    let tiles = layout.tile_count();
    let sde = IrSde::published(PUBLISHED_T)?;
    let plan = sde.plan(Sampler::MrOde1, 1, Grid::LogSnr)?;
    let mut predictor = UNetPredictor::new(dev, unet, context, context, &[plan[0].network_time])?;
    let lq: Vec<u8> = (0..3 * w * h).map(|i| (i * 37 % 256) as u8).collect();
    let mut space = TiledSpace::new(dev, &mut predictor, layout, lq, 0)?;
    dev.release_free_buffers();
    dev.reset_peak_memory();
    let start = Instant::now();
    daclip_webgpu::device::block_on(sample(&mut space, sde.max_sigma, &plan, false, &mut |_, _| true))?;
    let ms = start.elapsed().as_secs_f64() * 1e3;
    let peak = dev.memory().peak_bytes as f64 / (1 << 20) as f64;
    println!("| {:<60} | {:>10.0} | {:>14.0} |", format!("tiled step {w}x{h}: {tiles} tiles of {tile}, overlap {overlap}"), ms, peak);
    Ok(())
}

/// DA-CLIP ViT-B/32 with seeded random f16 weights: the image path and the text tower;
/// with `profile`, the profile of one encode_image.
fn daclip_rows(dev: &Device, rows: &mut Vec<Row>, profile: bool) -> Result<Option<Vec<DispatchTime>>> {
    let kind = ModelKind::DaClip(DaClipConfig::vit_b_32());
    let bytes = random_safetensors(&kind.expected_tensors(), 1, |_| false, kind.metadata());
    let model = DaClip::load(dev, &Checkpoint::parse(&bytes, None)?, DeviceDType::F16)?;
    drop(bytes);
    let image = filled(dev, &[1, 3, 224, 224])?;
    // Counted with PyTorch's FLOP counter on the original model.
    let ms = time(dev, || Ok(model.encode_image(dev, &image)?.degra_features))?;
    rows.push(Row { name: "DA-CLIP encode_image with controller, 224x224".into(), gflop: 18.3, ms });
    let encode_profile = match profile {
        true => profile_of(dev, || model.encode_image(dev, &image))?,
        false => None,
    };
    // The tower runs up to the last end-of-text token: all 77 positions for ten labels of
    // 75 words, a few for the ten degradation names.
    let text = DaClipConfig::vit_b_32().text_cfg.expect("ViT-B/32 has a text tower");
    let flops = |m: usize| 10.0 * text.layers as f64 * (24.0 * (m * text.width * text.width) as f64 + 4.0 * (m * m * text.width) as f64) / 1e9;
    let long = ["word "; 75].concat();
    let long_labels = [long.as_str(); 10];
    let ms = time(dev, || model.encode_text(dev, &long_labels))?;
    rows.push(Row { name: "DA-CLIP text tower, 10 labels x 77 positions".into(), gflop: flops(77), ms });
    let m = TextTransformer::positions(&DEGRADATIONS.map(|d| tokenize(d, text.context_length)));
    let ms = time(dev, || model.encode_text(dev, &DEGRADATIONS))?;
    rows.push(Row { name: format!("DA-CLIP text tower, the 10 names x {m} positions"), gflop: flops(m), ms });
    Ok(encode_profile)
}
