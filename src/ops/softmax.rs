
use super::{grid_1d, u32_of};
use crate::error::{shape_err, Result};
use crate::device::{Device, Tensor};
use crate::kernels::{Kernel, SoftmaxParams};

const WG: usize = 64;


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
    softmax_rows(dev, &[SoftmaxRows { x, offset: 0, shape: [outer, x.shape()[d], inner], out_offset: 0 }], &out)?;
    Ok(out)
}

/// A block of softmax rows: `x` from element `offset`, seen as `shape` = [outer, dim,
/// inner] and reduced along dim, written contiguous from element `out_offset` of the
/// output.
pub(crate) struct SoftmaxRows<'a> {
    pub(crate) x: &'a Tensor,
    pub(crate) offset: usize,
    pub(crate) shape: [usize; 3],
    pub(crate) out_offset: usize,
}

/// The softmaxes of up to two blocks into `out`, in one dispatch: at most one block with
/// strided rows (inner > 1) and one with contiguous rows (softmax.wgsl maps each its way).
pub(crate) fn softmax_rows(dev: &Device, blocks: &[SoftmaxRows], out: &Tensor) -> Result<()> {
    let (strided, contiguous): (Vec<&SoftmaxRows>, Vec<&SoftmaxRows>) = blocks.iter().partition(|b| b.shape[2] > 1);
    if blocks.is_empty() || strided.len() > 1 || contiguous.len() > 1 {
        return shape_err!("softmax: one dispatch takes one block of strided rows and one of contiguous rows, got {} and {}", strided.len(), contiguous.len());
    }
    for b in blocks {
        b.x.expect_f32("softmax input")?;
        let [outer, dim, inner] = b.shape;
        let len = outer * dim * inner;
        if b.offset + len > b.x.numel() || b.out_offset + len > out.numel() {
            return shape_err!("softmax: block [{outer}, {dim}, {inner}] from {} into {} does not fit", b.offset, b.out_offset);
        }
    }
    // A missing block has no rows and binds the other block's tensor.
    let (a, b) = (strided.first().copied(), contiguous.first().copied());
    let fields = |blk: Option<&SoftmaxRows>| -> Result<[u32; 5]> {
        let Some(blk) = blk else { return Ok([0; 5]) };
        let [outer, dim, inner] = blk.shape;
        Ok([u32_of(outer, "rows")?, u32_of(dim, "softmax length")?, u32_of(inner, "stride")?, u32_of(blk.offset, "offset")?, u32_of(blk.out_offset, "offset")?])
    };
    let a_rows = a.map_or(0, |a| a.shape[0] * a.shape[2]);
    let b_rows = b.map_or(0, |b| b.shape[0] * b.shape[2]);
    let a_groups = a_rows.div_ceil(WG);
    let [a_outer, a_dim, a_inner, a_in, a_out] = fields(a)?;
    let [b_outer, b_dim, b_inner, b_in, b_out] = fields(b)?;
    let params = SoftmaxParams { a_outer, a_dim, a_inner, a_in, a_out, b_outer, b_dim, b_inner, b_in, b_out, a_groups: u32_of(a_groups, "workgroups")?, _pad: 0 };
    let (xa, xb) = (a.map_or(blocks[0].x, |a| a.x), b.map_or(blocks[0].x, |b| b.x));
    dev.dispatch(Kernel::Softmax, &[("WG", WG as f64)], &params, &[xa, xb, out], grid_1d(a_groups + b_rows, 1)?)
}
