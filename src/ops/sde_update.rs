
use super::{grid_1d, u32_of};
use crate::error::{shape_err, Result};
use crate::device::{Device, Tensor};
use crate::kernels::{Kernel, SdeUpdateParams};

const WG: usize = 256;


/// The `z` of an update.
#[derive(Clone, Copy)]
pub enum Noise<'a> {
    None,
    /// Given standard normal values (tests, fixtures).
    Given(&'a Tensor),
    /// Generated on the GPU from (seed, stream): the same pair gives the same values.
    Seeded { seed: u64, stream: u32 },
}

/// `mu + a (x - mu) + b noise + d (prev - mu) + c z` element-wise, the terms given as
/// (tensor, coefficient); absent ones are zero. All tensors have the shape of `mu`.
pub fn sde_update(dev: &Device, mu: &Tensor, x: &Tensor, a: f32, noise: Option<(&Tensor, f32)>, prev: Option<(&Tensor, f32)>, z: (Noise, f32)) -> Result<Tensor> {
    let shape = mu.shape();
    let tensors = [Some(x), noise.map(|n| n.0), prev.map(|p| p.0), match z.0 { Noise::Given(t) => Some(t), _ => None }];
    for t in tensors.into_iter().flatten() {
        t.expect_f32("sampler state")?;
        if t.shape() != shape {
            return shape_err!("sampler update: {:?} does not match {:?}", t.shape(), shape);
        }
    }
    let out = dev.empty(shape)?;
    let n = out.numel();
    let (seed, stream) = match z.0 {
        Noise::Seeded { seed, stream } => (seed, stream),
        _ => (0, 0),
    };
    let params = SdeUpdateParams {
        n: u32_of(n, "elements")?,
        seed_lo: seed as u32,
        seed_hi: (seed >> 32) as u32,
        stream,
        a,
        b: noise.map_or(0.0, |n| n.1),
        c: z.1,
        d: prev.map_or(0.0, |p| p.1),
    };
    let (z_mode, z_buf) = match z.0 {
        Noise::None => (0.0, mu),
        Noise::Given(t) => (1.0, t),
        Noise::Seeded { .. } => (2.0, mu),
    };
    // Absent terms bind mu (with coefficient 0).
    let noise_buf = noise.map_or(mu, |n| n.0);
    let prev_buf = prev.map_or(mu, |p| p.0);
    dev.dispatch(Kernel::SdeUpdate, &[("WG", WG as f64), ("Z", z_mode)], &params, &[mu, x, noise_buf, z_buf, prev_buf, &out], grid_1d(n, WG)?)?;
    Ok(out)
}
