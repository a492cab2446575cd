use bytemuck::{Pod, Zeroable};

use super::{expect_len, expect_rank, grid_1d, is_f16, u32_of};
use crate::error::Result;
use crate::device::{Device, Tensor};
use crate::shaders::Kernel;

const WG: usize = 256;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub(crate) struct Params {
    pub(crate) batch: u32,
    pub(crate) c: u32,
    pub(crate) hw: u32,
    pub(crate) eps: f32,
}

/// The UNet's channel LayerNorm on NCHW `x`: per pixel, normalise over channels and
/// multiply by the gain `g` (stored as [1, C, 1, 1]; any shape with C elements).
pub fn channel_layer_norm(dev: &Device, x: &Tensor, g: &Tensor, eps: f32) -> Result<Tensor> {
    expect_rank(x, 4, "channel_layer_norm input")?;
    x.expect_f32("channel_layer_norm input")?;
    let (b, c, hw) = (x.dim(0), x.dim(1), x.dim(2) * x.dim(3));
    expect_len(g, c, "channel_layer_norm gain")?;
    let out = dev.empty(x.shape())?;
    let params = Params { batch: u32_of(b, "batch")?, c: u32_of(c, "channels")?, hw: u32_of(hw, "pixels")?, eps };
    let overrides = [("WG", WG as f64), ("G_F16", is_f16(Some(g)))];
    dev.dispatch(Kernel::ChannelLayerNorm, &overrides, &params, &[x, g, &out], grid_1d(b * hw, WG)?)?;
    Ok(out)
}
