use bytemuck::{Pod, Zeroable};

use super::{expect_rank, grid_1d, u32_of};
use crate::error::Result;
use crate::device::{Device, Tensor};
use crate::shaders::Kernel;

const WG: usize = 256;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub(crate) struct Params {
    pub(crate) n: u32,
    pub(crate) h: u32,
    pub(crate) w: u32,
    pub(crate) _pad: u32,
}

/// `nn.Upsample(scale_factor=2, mode="nearest")` on NCHW `x`.
pub fn upsample_nearest2x(dev: &Device, x: &Tensor) -> Result<Tensor> {
    expect_rank(x, 4, "upsample input")?;
    x.expect_f32("upsample input")?;
    let (h, w) = (x.dim(2), x.dim(3));
    let out = dev.empty(&[x.dim(0), x.dim(1), 2 * h, 2 * w])?;
    let n = out.numel();
    let params = Params { n: u32_of(n, "elements")?, h: h as u32, w: w as u32, _pad: 0 };
    dev.dispatch(Kernel::UpsampleNearest, &[("WG", WG as f64)], &params, &[x, &out], grid_1d(n, WG)?)?;
    Ok(out)
}
