//! The MR Sampler (shared/spec/fast-sampler.md): an oracle that knows x0 is recovered by
//! every solver on both grids at every number of evaluations; SDE-1 on the integer grid
//! is the published posterior sampler step by step; ODE-1 and ODE-2 converge at their
//! orders with the tiny UNet.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use std::path::Path;

use daclip_webgpu::gpu::block_on;
use daclip_webgpu::models::unet::ConditionalUNet;
use daclip_webgpu::ops::{self, sde_update, Noise};
use daclip_webgpu::restore::{sample, NoisePredictor, UNetPredictor};
use daclip_webgpu::sde::{Grid, IrSde, Sampler};
use daclip_webgpu::weights::{Checkpoint, GpuDType};
use daclip_webgpu::{Gpu, Result, Tensor};

const MR: [Sampler; 4] = [Sampler::MrOde1, Sampler::MrOde2, Sampler::MrSde1, Sampler::MrSde2];

/// The exact noise for a known clean image: n = (x - m(t)) / sigbar(t) with
/// m(t) = mu + alpha(t) (x0 - mu), computed on the GPU.
struct Oracle<'a> {
    sde: &'a IrSde,
    mu: &'a Tensor,
    x0: &'a Tensor,
}

impl NoisePredictor for Oracle<'_> {
    fn predict_noise(&mut self, gpu: &Gpu, x: &Tensor, t: f32) -> Result<Tensor> {
        let (a, sb) = (self.sde.alpha(t as f64), self.sde.sigbar(t as f64));
        // mu + (x - mu)/sb - (a/sb)(x0 - mu), minus mu
        let y = sde_update(gpu, self.mu, x, (1.0 / sb) as f32, None, Some((self.x0, (-a / sb) as f32)), (Noise::None, 0.0))?;
        ops::sub(gpu, &y, self.mu)
    }
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn oracle_gives_back_x0_for_every_solver_grid_and_step_count() {
    let gpu = Gpu::new_blocking().unwrap();
    let sde = IrSde::published(100).unwrap();
    let mut rng = common::Rng::new(11);
    let n = 3 * 4 * 4;
    let mu_v: Vec<f32> = (0..n).map(|_| rng.uniform() as f32).collect();
    let x0_v: Vec<f32> = (0..n).map(|_| rng.uniform() as f32).collect();
    let (mu, x0) = (gpu.upload(&[1, 3, 4, 4], &mu_v).unwrap(), gpu.upload(&[1, 3, 4, 4], &x0_v).unwrap());
    let mut worst = 0.0f32;
    for sampler in MR {
        for grid in [Grid::Linspace, Grid::LogSnr] {
            let mut worst_here = (0.0f32, 0);
            for steps in 1..=100 {
                let plan = sde.plan(sampler, steps, grid).unwrap();
                assert_eq!(plan.len(), steps);
                let mut oracle = Oracle { sde: &sde, mu: &mu, x0: &x0 };
                let x = block_on(sample(&gpu, &mut oracle, &mu, sde.max_sigma, &plan, steps as u64, false, &mut |_, _, _| true)).unwrap();
                let err = max_abs_diff(&gpu.read_blocking(&x).unwrap(), &x0_v);
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
    let gpu = Gpu::new_blocking().unwrap();
    let sde = IrSde::published(100).unwrap();
    let posterior = sde.plan(Sampler::Posterior, 100, Grid::Linspace).unwrap();
    let mr = sde.plan(Sampler::MrSde1, 100, Grid::Linspace).unwrap();
    let mut rng = common::Rng::new(12);
    let shape = [1, 3, 8, 8];
    let up = |v: Vec<f32>| gpu.upload(&shape, &v).unwrap();
    let mu = up((0..192).map(|_| rng.uniform() as f32).collect());
    let mut worst = 0.0f64;
    for (i, (p, m)) in posterior.iter().zip(&mr).enumerate() {
        assert_eq!(p.network_time, m.network_time);
        let (x, noise, z) = (up(rng.normals(192, 0.3)), up(rng.normals(192, 1.0)), up(rng.normals(192, 1.0)));
        let run = |u: daclip_webgpu::sde::Update| {
            let y = sde_update(&gpu, &mu, &x, u.a as f32, Some((&noise, u.b as f32)), None, (Noise::Given(&z), u.c as f32)).unwrap();
            gpu.read_blocking(&y).unwrap()
        };
        let (a, b) = (run(p.update), run(m.update));
        let rms = (a.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / a.len() as f64).sqrt();
        let rel = max_abs_diff(&a, &b) as f64 / rms;
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
    let gpu = Gpu::new_blocking().unwrap();
    let bytes = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny/universal-ir.pth")).unwrap();
    let unet = ConditionalUNet::load(&gpu, &Checkpoint::parse(&bytes, None).unwrap(), GpuDType::F32).unwrap();
    let sde = IrSde::published(100).unwrap();
    let mut rng = common::Rng::new(13);
    let side = 16;
    let mu = gpu.upload(&[1, 3, side, side], &(0..3 * side * side).map(|_| rng.uniform() as f32).collect::<Vec<_>>()).unwrap();
    let ctx = gpu.upload(&[1, 32], &rng.normals(32, 1.0)).unwrap();
    let run = |sampler, steps| {
        let plan = sde.plan(sampler, steps, Grid::LogSnr).unwrap();
        let times: Vec<f32> = plan.iter().map(|s| s.network_time).collect();
        let mut unet_p = UNetPredictor::new(&gpu, &unet, &mu, &ctx, &ctx, &times).unwrap();
        let x = block_on(sample(&gpu, &mut unet_p, &mu, sde.max_sigma, &plan, 5, false, &mut |_, _, _| true)).unwrap();
        gpu.read_blocking(&x).unwrap()
    };
    let reference = run(Sampler::MrOde2, 400);
    let mu_v = gpu.read_blocking(&mu).unwrap();
    let scale = (reference.iter().zip(&mu_v).map(|(r, m)| ((r - m) as f64).powi(2)).sum::<f64>() / reference.len() as f64).sqrt();
    let err = |x: &[f32]| (x.iter().zip(&reference).map(|(a, b)| ((a - b) as f64).powi(2)).sum::<f64>() / x.len() as f64).sqrt() / scale;
    for (sampler, min_ratio) in [(Sampler::MrOde2, 3.0), (Sampler::MrOde1, 1.6)] {
        let (e20, e40) = (err(&run(sampler, 20)), err(&run(sampler, 40)));
        println!("{}: error vs 400-evaluation ODE-2 (relative to rms(x_ref - mu) = {scale:.3}): 20 steps {e20:.3e}, 40 steps {e40:.3e}, ratio {:.2}", sampler.name(), e20 / e40);
        assert!(e20 / e40 >= min_ratio, "{}: ratio {} < {min_ratio}", sampler.name(), e20 / e40);
    }
}
