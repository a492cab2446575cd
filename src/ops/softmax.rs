use bytemuck::{Pod, Zeroable};

use super::{grid_1d, u32_of};
use crate::error::{shape_err, Result};
use crate::device::{Device, Tensor};
use crate::shaders::Kernel;

const WG: usize = 64;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub(crate) struct Params {
    pub(crate) outer: u32,
    pub(crate) dim: u32,
    pub(crate) inner: u32,
    pub(crate) in_off: u32,
}

/// Softmax along dimension `dim` (negative counts from the end).
pub fn softmax(dev: &Device, x: &Tensor, dim: isize) -> Result<Tensor> {
    let rank = x.shape().len() as isize;
    let d = if dim < 0 { rank + dim } else { dim };
    if d < 0 || d >= rank {
        return shape_err!("softmax: dimension {dim} out of range for {:?}", x.shape());
    }
    let d = d as usize;
    let outer: usize = x.shape()[..d].iter().product();
    let inner: usize = x.shape()[d + 1..].iter().product();
    let out = dev.empty(x.shape())?;
    softmax_rows(dev, x, 0, [outer, x.shape()[d], inner], &out)?;
    Ok(out)
}

/// Softmax of the block of `x` starting at element `offset`, seen as [outer, dim, inner]
/// and reduced along `dim`, written contiguous into `out`.
pub(crate) fn softmax_rows(dev: &Device, x: &Tensor, offset: usize, [outer, dim, inner]: [usize; 3], out: &Tensor) -> Result<()> {
    x.expect_f32("softmax input")?;
    if offset + outer * dim * inner > x.numel() || out.numel() < outer * dim * inner {
        return shape_err!("softmax: block [{outer}, {dim}, {inner}] at {offset} does not fit");
    }
    let params = Params {
        outer: u32_of(outer, "rows")?,
        dim: u32_of(dim, "softmax length")?,
        inner: u32_of(inner, "stride")?,
        in_off: u32_of(offset, "offset")?,
    };
    // Strided rows go one per invocation, contiguous rows one per workgroup (softmax.wgsl).
    let per_invocation = inner > 1;
    let overrides = [("WG", WG as f64), ("ROW_PER_INVOCATION", per_invocation as u32 as f64)];
    let groups = grid_1d(outer * inner, if per_invocation { WG } else { 1 })?;
    dev.dispatch(Kernel::Softmax, &overrides, &params, &[x, out], groups)
}
