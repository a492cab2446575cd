//! The MR Sampler (MaRS, ICLR 2025): an oracle that knows x0 is recovered by
//! every solver on both grids at every number of evaluations; SDE-1 on the integer grid
//! is the published posterior sampler step by step; ODE-1 and ODE-2 converge at their
//! orders with the tiny UNet.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use std::path::Path;

use daclip_webgpu::device::block_on;
use daclip_webgpu::models::unet::ConditionalUNet;
use daclip_webgpu::ops::{self, sde_update, Noise};
use daclip_webgpu::restore::{sample, DeviceSpace, NoisePredictor, Rect, UNetPredictor};
use daclip_webgpu::kernels::sde::seeded_normal_pair;
use daclip_webgpu::sde::{Grid, IrSde, PlannedStep, Sampler};
use daclip_webgpu::restore::tiles::{TileLayout, TiledSpace};
use daclip_webgpu::weights::DeviceDType;
use daclip_webgpu::models::Checkpoint;
use daclip_webgpu::{Device, Result, Tensor};
use common::max_abs_diff;

const MR: [Sampler; 4] = [Sampler::MrOde1, Sampler::MrOde2, Sampler::MrSde1, Sampler::MrSde2];

/// The exact noise for a known clean image: n = (x - m(t)) / sigbar(t) with
/// m(t) = mu + alpha(t) (x0 - mu), computed on the GPU for the region asked for.
struct Oracle<'a> {
    sde: &'a IrSde,
    /// The clean image, planar [3, height, width].
    x0: &'a [f32],
    width: usize,
    height: usize,
    /// x0 on the region of the last call, refilled per call.
    x0_region: Option<Tensor>,
}

impl<'a> Oracle<'a> {
    fn new(sde: &'a IrSde, x0: &'a [f32], width: usize, height: usize) -> Self {
        Oracle { sde, x0, width, height, x0_region: None }
    }
}

impl NoisePredictor for Oracle<'_> {
    fn predict_noise(&mut self, dev: &Device, x: &Tensor, mu: &Tensor, at: Rect, t: f32) -> Result<Tensor> {
        let region: Vec<f32> = (0..3)
            .flat_map(|c| (at.y..at.y + at.height).flat_map(move |y| (at.x..at.x + at.width).map(move |x| (c, y, x))))
            .map(|(c, y, x)| self.x0[(c * self.height + y) * self.width + x])
            .collect();
        if self.x0_region.as_ref().is_none_or(|t| t.shape() != mu.shape()) {
            self.x0_region = Some(dev.empty(mu.shape())?);
        }
        let x0 = self.x0_region.as_ref().unwrap();
        dev.write(x0, &region)?;
        let (a, sb) = (self.sde.alpha(t as f64), self.sde.sigbar(t as f64));
        // mu + (x - mu)/sb - (a/sb)(x0 - mu), minus mu
        let y = sde_update(dev, mu, x, (1.0 / sb) as f32, None, Some((x0, (-a / sb) as f32)), (Noise::None, 0.0))?;
        ops::sub(dev, &y, mu)
    }
}

/// Runs `plan` on the GPU, the whole image at once.
fn sample_untiled(dev: &Device, predictor: &mut dyn NoisePredictor, mu: &Tensor, sde: &IrSde, plan: &[PlannedStep], seed: u64) -> Vec<f32> {
    let mut space = DeviceSpace::new(dev, predictor, mu, seed);
    let x = block_on(sample(&mut space, sde.max_sigma, plan, false, &mut |_, _| true)).unwrap();
    dev.read_blocking(&x).unwrap()
}

#[test]
fn oracle_gives_back_x0_for_every_solver_grid_and_step_count() {
    // 800 samplings of a 4x4 image: the CPU backend (the GPU's update kernel is checked
    // through the tiles of a large image below).
    let dev = Device::cpu();
    let sde = IrSde::published(100).unwrap();
    let mut rng = common::Rng::new(11);
    let n = 3 * 4 * 4;
    let mu_v: Vec<f32> = (0..n).map(|_| rng.uniform() as f32).collect();
    let x0_v: Vec<f32> = (0..n).map(|_| rng.uniform() as f32).collect();
    let mu = dev.upload(&[1, 3, 4, 4], &mu_v).unwrap();
    let mut worst = 0.0f64;
    for sampler in MR {
        for grid in [Grid::Linspace, Grid::LogSnr] {
            let mut worst_here = (0.0f64, 0);
            for steps in 1..=100 {
                let plan = sde.plan(sampler, steps, grid).unwrap();
                assert_eq!(plan.len(), steps);
                let mut oracle = Oracle::new(&sde, &x0_v, 4, 4);
                let err = max_abs_diff(&sample_untiled(&dev, &mut oracle, &mu, &sde, &plan, steps as u64), &x0_v);
                if err > worst_here.0 {
                    worst_here = (err, steps);
                }
            }
            println!("{:<8} {grid:?}: max |x - x0| over 1..100 evaluations {:.2e} (at {})", sampler.name(), worst_here.0, worst_here.1);
            worst = worst.max(worst_here.0);
        }
    }
    assert!(worst <= 1e-5, "oracle error {worst:e}");
}

#[test]
fn sde1_on_the_integer_grid_is_the_posterior_sampler() {
    let dev = Device::new_blocking().unwrap();
    let sde = IrSde::published(100).unwrap();
    let posterior = sde.plan(Sampler::Posterior, 100, Grid::Linspace).unwrap();
    let mr = sde.plan(Sampler::MrSde1, 100, Grid::Linspace).unwrap();
    let mut rng = common::Rng::new(12);
    let shape = [1, 3, 8, 8];
    let up = |v: Vec<f32>| dev.upload(&shape, &v).unwrap();
    let mu = up((0..192).map(|_| rng.uniform() as f32).collect());
    let mut worst = 0.0f64;
    for (i, (p, m)) in posterior.iter().zip(&mr).enumerate() {
        assert_eq!(p.network_time, m.network_time);
        let (x, noise, z) = (up(rng.normals(192, 0.3)), up(rng.normals(192, 1.0)), up(rng.normals(192, 1.0)));
        let run = |u: daclip_webgpu::sde::Update| {
            let y = sde_update(&dev, &mu, &x, u.a as f32, Some((&noise, u.b as f32)), None, (Noise::Given(&z), u.c as f32)).unwrap();
            dev.read_blocking(&y).unwrap()
        };
        let (a, b) = (run(p.update), run(m.update));
        let rms = (a.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / a.len() as f64).sqrt();
        let rel = max_abs_diff(&a, &b) / rms;
        worst = worst.max(rel);
        if [0, 40, 80, 98, 99].contains(&i) {
            println!("step t = {} -> {}: posterior vs MR SDE-1, relative difference {rel:.2e}", p.network_time, 99 - i);
        }
    }
    println!("worst over the 100 steps: {worst:.2e}");
    assert!(worst <= 1e-5, "{worst:e}");
}

#[test]
fn ode_solvers_converge_at_their_order_with_the_tiny_unet() {
    // The solvers' mathematics, with hundreds of network evaluations: on the CPU backend,
    // minutes faster than on lavapipe (the backends agree: tests/restore.rs).
    let dev = Device::cpu();
    let bytes = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny/universal-ir.pth")).unwrap();
    let unet = ConditionalUNet::load(&dev, &Checkpoint::parse(&bytes, None).unwrap(), DeviceDType::F32).unwrap();
    let sde = IrSde::published(100).unwrap();
    let mut rng = common::Rng::new(13);
    let side = 16;
    let mu = dev.upload(&[1, 3, side, side], &(0..3 * side * side).map(|_| rng.uniform() as f32).collect::<Vec<_>>()).unwrap();
    let ctx = dev.upload(&[1, 32], &rng.normals(32, 1.0)).unwrap();
    let run = |sampler, steps| {
        let plan = sde.plan(sampler, steps, Grid::LogSnr).unwrap();
        let times: Vec<f32> = plan.iter().map(|s| s.network_time).collect();
        let mut unet_p = UNetPredictor::new(&dev, &unet, &ctx, &ctx, &times).unwrap();
        sample_untiled(&dev, &mut unet_p, &mu, &sde, &plan, 5)
    };
    let reference = run(Sampler::MrOde2, 400);
    let mu_v = dev.read_blocking(&mu).unwrap();
    let scale = (reference.iter().zip(&mu_v).map(|(r, m)| ((r - m) as f64).powi(2)).sum::<f64>() / reference.len() as f64).sqrt();
    let err = |x: &[f32]| (x.iter().zip(&reference).map(|(a, b)| ((a - b) as f64).powi(2)).sum::<f64>() / x.len() as f64).sqrt() / scale;
    for (sampler, min_ratio) in [(Sampler::MrOde2, 3.0), (Sampler::MrOde1, 1.6)] {
        let (e20, e40) = (err(&run(sampler, 20)), err(&run(sampler, 40)));
        println!("{}: error vs 400-evaluation ODE-2 (relative to rms(x_ref - mu) = {scale:.3}): 20 steps {e20:.3e}, 40 steps {e40:.3e}, ratio {:.2}", sampler.name(), e20 / e40);
        assert!(e20 / e40 >= min_ratio, "{}: ratio {} < {min_ratio}", sampler.name(), e20 / e40);
    }
}

/// Runs `plan` with the whole-image tensors in host memory and the predictor on the tiles
/// of `layout`.
fn sample_tiled(dev: &Device, predictor: &mut dyn NoisePredictor, layout: TileLayout, lq: &[u8], sde: &IrSde, plan: &[PlannedStep], seed: u64) -> Vec<f32> {
    let mut space = TiledSpace::new(dev, predictor, layout, lq.to_vec(), seed).unwrap();
    block_on(sample(&mut space, sde.max_sigma, plan, false, &mut |_, _| true)).unwrap()
}

#[test]
fn host_noise_is_the_gpu_noise() {
    let dev = Device::new_blocking().unwrap();
    let shape = [1, 3, 33, 65]; // an odd element count: the last pair is cut
    let n = shape.iter().product::<usize>();
    let zeros = dev.upload(&shape, &vec![0.0; n]).unwrap();
    for (seed, stream) in [(0u64, 0u32), (7, 3), (u64::MAX - 5, 101)] {
        let z = sde_update(&dev, &zeros, &zeros, 0.0, None, None, (Noise::Seeded { seed, stream }, 1.0)).unwrap();
        let gpu_z = dev.read_blocking(&z).unwrap();
        let host_z: Vec<f32> = (0..n.div_ceil(2) as u32).flat_map(|p| { let (a, b) = seeded_normal_pair(seed, stream, p); [a, b] }).take(n).collect();
        let worst = max_abs_diff(&gpu_z, &host_z);
        let mean = host_z.iter().map(|v| *v as f64).sum::<f64>() / n as f64;
        println!("seed {seed}, stream {stream}: max |dev - host| {worst:.2e} over {n} normals (mean {mean:.3})");
        assert!(worst <= 1e-4, "{worst}");
    }
}

#[test]
fn queued_steps_give_the_waited_steps_values_progress_and_cancelling() {
    // Without previews each step is queued behind the last, its progress reported once it
    // has finished; with them every step is waited for and read. Both must agree.
    let dev = Device::new_blocking().unwrap();
    let sde = IrSde::published(100).unwrap();
    let (w, h) = (20, 12);
    let (lq, x0) = random_images(w, h, 8);
    let mu = lq_tensor(&dev, &lq, w, h);
    let plan = sde.plan(Sampler::MrSde2, 6, Grid::LogSnr).unwrap(); // seeded noise and the previous prediction
    let run = |read: bool, stop_after: usize| {
        let mut oracle = Oracle::new(&sde, &x0, w, h);
        let mut space = DeviceSpace::new(&dev, &mut oracle, &mu, 4);
        let mut steps = Vec::new();
        let x = block_on(sample(&mut space, sde.max_sigma, &plan, read, &mut |p, state| {
            assert_eq!(state.is_some(), read, "the state comes when asked for");
            steps.push(p.step);
            p.step < stop_after
        }));
        (x.map(|x| dev.read_blocking(&x).unwrap()), steps)
    };
    let (queued, steps) = run(false, usize::MAX);
    let (waited, waited_steps) = run(true, usize::MAX);
    assert_eq!(queued.unwrap(), waited.unwrap(), "queued steps compute what waited-for ones do");
    assert_eq!(steps, (1..=6).collect::<Vec<_>>(), "every step reported once, in order");
    assert_eq!(waited_steps, steps);
    let (cancelled, steps) = run(false, 3);
    assert_eq!(cancelled.unwrap_err(), daclip_webgpu::Error::Cancelled);
    assert_eq!(steps, vec![1, 2, 3], "nothing reported after the step that cancelled");
    let (again, _) = run(false, usize::MAX);
    assert!(again.is_ok(), "the device stays usable after a cancel with a step queued");
}

/// The 8-bit LQ image `lq` (planar) as mu = value / 255 on the device, [1, 3, h, w].
fn lq_tensor(dev: &Device, lq: &[u8], w: usize, h: usize) -> Tensor {
    dev.upload(&[1, 3, h, w], &lq.iter().map(|&v| v as f32 / 255.0).collect::<Vec<_>>()).unwrap()
}

fn random_images(width: usize, height: usize, seed: u64) -> (Vec<u8>, Vec<f32>) {
    let mut rng = common::Rng::new(seed);
    let n = 3 * width * height;
    let lq = (0..n).map(|_| (rng.uniform() * 256.0) as u8).collect();
    let x0 = (0..n).map(|_| rng.uniform() as f32).collect();
    (lq, x0)
}

#[test]
fn oracle_gives_back_x0_through_the_tiles_of_a_1500_x_1000_image() {
    let dev = Device::new_blocking().unwrap();
    let sde = IrSde::published(100).unwrap();
    let (w, h) = (1500, 1000);
    let (lq, x0) = random_images(w, h, 21);
    let mu = lq_tensor(&dev, &lq, w, h);
    let layout = TileLayout::new(w, h, 256, 64);
    println!("{w}x{h}, tile 256, overlap 64: {} tiles", layout.tile_count());
    for sampler in [Sampler::Posterior, Sampler::Sde, Sampler::MrOde1, Sampler::MrOde2, Sampler::MrSde1, Sampler::MrSde2] {
        let steps = 5;
        let plan = sde.plan(sampler, steps, Grid::LogSnr).unwrap();
        let untiled = max_abs_diff(&sample_untiled(&dev, &mut Oracle::new(&sde, &x0, w, h), &mu, &sde, &plan, 9), &x0);
        let tiled = max_abs_diff(&sample_tiled(&dev, &mut Oracle::new(&sde, &x0, w, h), layout.clone(), &lq, &sde, &plan, 9), &x0);
        println!("{:<9} {steps:>3} steps: max |x - x0| untiled {untiled:.2e}, tiled {tiled:.2e}", sampler.name());
        assert!(tiled <= untiled * 1.05 + 2e-6, "{}: tiled {tiled:e} vs untiled {untiled:e}", sampler.name());
    }
}

/// A predictor that says "no noise": what is left of a sampling run is its seeded noise.
struct NoNoise;

impl NoisePredictor for NoNoise {
    fn predict_noise(&mut self, dev: &Device, x: &Tensor, _mu: &Tensor, _at: Rect, _t: f32) -> Result<Tensor> {
        ops::sub(dev, x, x)
    }
}

#[test]
fn the_tile_grid_never_changes_the_noise_a_pixel_receives() {
    let dev = Device::new_blocking().unwrap();
    let sde = IrSde::published(100).unwrap();
    let (w, h) = (200, 150);
    let (lq, _) = random_images(w, h, 22);
    let plan = sde.plan(Sampler::MrSde2, 6, Grid::LogSnr).unwrap();
    let run = |tile, overlap| sample_tiled(&dev, &mut NoNoise, TileLayout::new(w, h, tile, overlap), &lq, &sde, &plan, 5);
    let a = run(64, 16);
    for (tile, overlap) in [(96, 32), (128, 0), (150, 64)] {
        assert!(a == run(tile, overlap), "tile {tile}, overlap {overlap}: another tile grid changed the result");
    }
    let mu = lq_tensor(&dev, &lq, w, h);
    let untiled = sample_untiled(&dev, &mut NoNoise, &mu, &sde, &plan, 5);
    let worst = max_abs_diff(&a, &untiled);
    println!("mr-sde2, 6 steps, no predicted noise: tiles of 64/96/128/150 give identical states; vs untiled (GPU noise) max difference {worst:.2e}");
    // The GPU's log/cos differ from the CPU's in the last bits; the first step's 1/alpha
    // (about 200 at t = 100) amplifies them.
    assert!(worst <= 1e-3, "{worst}");
}

#[test]
fn a_48_mp_image_samples_in_tiles_with_gpu_memory_set_by_the_tile() {
    let dev = Device::new_blocking().unwrap();
    let sde = IrSde::published(100).unwrap();
    let (w, h) = (8000, 6000);
    let lq: Vec<u8> = (0..3 * w * h).map(|i| (i % 253) as u8).collect();
    let plan = sde.plan(Sampler::MrSde2, 2, Grid::LogSnr).unwrap();
    let layout = TileLayout::new(w, h, 512, 128);
    let tiles = layout.tile_count();
    dev.release_free_buffers();
    dev.reset_peak_memory();
    let held = dev.memory().live_bytes;
    let started = std::time::Instant::now();
    let x = sample_tiled(&dev, &mut NoNoise, layout, &lq, &sde, &plan, 1);
    let peak = dev.memory().peak_bytes - held;
    println!(
        "{w}x{h} ({} MB of f32 state), mr-sde2 2 steps in {tiles} tiles of 512: peak GPU memory {:.1} MiB above what was held before, {:.1} s",
        (4 * x.len()) >> 20,
        peak as f64 / (1 << 20) as f64,
        started.elapsed().as_secs_f64()
    );
    assert_eq!(x.len(), 3 * w * h);
    assert!(x.iter().all(|v| v.is_finite()));
    // The GPU holds one tile's state, LQ and prediction (3 MiB each), not the image.
    assert!(peak <= 16 << 20, "{peak} bytes");
}

/// The JS API checks and types the same sampler and grid names as the engine: the lists
/// in www/lib/daclip.js and the unions in daclip.d.ts, against `Sampler::NAMES` and
/// `Grid::NAMES`.
#[test]
fn the_js_api_names_the_engines_samplers_and_grids() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("www/lib");
    let js = std::fs::read_to_string(root.join("daclip.js")).unwrap();
    let dts = std::fs::read_to_string(root.join("daclip.d.ts")).unwrap();
    // The quoted names of the line that starts with `start`.
    let names = |text: &str, start: &str| -> Vec<String> {
        let line = text.lines().find(|l| l.starts_with(start)).unwrap_or_else(|| panic!("no line `{start}...`"));
        line.split('\'').skip(1).step_by(2).map(str::to_string).collect()
    };
    let samplers: Vec<String> = Sampler::NAMES.iter().map(|(n, _)| n.to_string()).collect();
    let grids: Vec<String> = Grid::NAMES.iter().map(|(n, _)| n.to_string()).collect();
    assert_eq!(names(&js, "const SAMPLERS = "), samplers, "daclip.js");
    assert_eq!(names(&dts, "export type SamplerName = "), samplers, "daclip.d.ts");
    assert_eq!(names(&js, "const GRIDS = "), grids, "daclip.js");
    assert_eq!(names(&dts, "export type GridName = "), grids, "daclip.d.ts");
}
