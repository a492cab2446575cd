use bytemuck::{Pod, Zeroable};

use super::{expect_rank, grid_1d, u32_of};
use crate::error::{shape_err, Result};
use crate::device::{Device, Tensor};
use crate::shaders::Kernel;

const WG: usize = 256;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub(crate) struct Params {
    pub(crate) n: u32,
    pub(crate) c: u32,
    pub(crate) hw: u32,
    pub(crate) silu: u32,
    pub(crate) row: u32,
    pub(crate) _pad: [u32; 3],
}

/// The ResBlock's time conditioning: `x * (scale + 1) + shift` on NCHW `x` [B, C, H, W],
/// where `scale, shift = t[row + b].chunk(2)` for rows of `t` [rows, 2C]; optionally
/// followed by SiLU.
pub fn scale_shift(dev: &Device, x: &Tensor, t: &Tensor, row: usize, silu: bool) -> Result<Tensor> {
    expect_rank(x, 4, "scale_shift input")?;
    x.expect_f32("scale_shift input")?;
    t.expect_f32("scale_shift conditioning")?;
    let (b, c, hw) = (x.dim(0), x.dim(1), x.dim(2) * x.dim(3));
    if t.numel() % (2 * c) != 0 || (row + b) * 2 * c > t.numel() {
        return shape_err!("scale_shift: rows {row}..{} of {:?} for {c} channels", row + b, t.shape());
    }
    let out = dev.empty(x.shape())?;
    let n = x.numel();
    let params = Params { n: u32_of(n, "elements")?, c: u32_of(c, "channels")?, hw: u32_of(hw, "pixels")?, silu: silu as u32, row: u32_of(row, "row")?, _pad: [0; 3] };
    dev.dispatch(Kernel::ScaleShift, &[("WG", WG as f64)], &params, &[x, t, &out], grid_1d(n, WG)?)?;
    Ok(out)
}
