
use super::{expect_len, expect_rank, grid_1d, is_f16, or_placeholder, u32_of};
use crate::error::{shape_err, Result};
use crate::device::{Device, Tensor};
use crate::kernels::{Kernel, ChannelLayerNormParams};

const WG: usize = 256;


/// The UNet's channel LayerNorm on NCHW `x`: per pixel, normalise over channels and
/// multiply by the gain `g` (stored as [1, C, 1, 1]; any shape with C elements).
pub fn channel_layer_norm(dev: &Device, x: &Tensor, g: &Tensor, eps: f32) -> Result<Tensor> {
    channel_layer_norm_with(dev, x, g, eps, None)
}

/// [`channel_layer_norm`], plus `residual` (x's shape) added in the same kernel.
pub fn channel_layer_norm_with(dev: &Device, x: &Tensor, g: &Tensor, eps: f32, residual: Option<&Tensor>) -> Result<Tensor> {
    expect_rank(x, 4, "channel_layer_norm input")?;
    x.expect_f32("channel_layer_norm input")?;
    let (b, c, hw) = (x.dim(0), x.dim(1), x.dim(2) * x.dim(3));
    expect_len(g, c, "channel_layer_norm gain")?;
    if let Some(r) = residual {
        r.expect_f32("channel_layer_norm residual")?;
        if r.shape() != x.shape() {
            return shape_err!("channel_layer_norm residual {:?} does not match the input {:?}", r.shape(), x.shape());
        }
    }
    let out = dev.empty(x.shape())?;
    let params = ChannelLayerNormParams { batch: u32_of(b, "batch")?, c: u32_of(c, "channels")?, hw: u32_of(hw, "pixels")?, eps };
    let overrides = [("WG", WG as f64), ("G_F16", is_f16(Some(g))), ("RESIDUAL", residual.is_some() as u32 as f64)];
    dev.dispatch(Kernel::ChannelLayerNorm, &overrides, &params, &[x, g, or_placeholder(residual, x), &out], grid_1d(b * hw, WG)?)?;
    Ok(out)
}
