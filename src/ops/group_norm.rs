
use super::{expect_len, expect_rank, is_f16, u32_of};
use crate::error::{shape_err, Result};
use crate::device::{Device, Tensor};
use crate::kernels::{Kernel, GroupNormParams};

const WG: usize = 256;

/// Values per workgroup of a large group (group_norm.wgsl): a group of at least
/// MIN_CHUNKS chunks is normalised by one workgroup per chunk after a statistics pass,
/// instead of by one workgroup, which would leave 32 workgroups for a whole image.
const CHUNK: usize = 4096;
const MIN_CHUNKS: usize = 4;


/// PyTorch's `nn.GroupNorm` on NCHW `x`, with optional affine (weight, bias) [C] and an
/// optional SiLU fused after it.
pub fn group_norm(
    dev: &Device,
    x: &Tensor,
    groups: usize,
    affine: Option<(&Tensor, &Tensor)>,
    eps: f32,
    silu: bool,
) -> Result<Tensor> {
    expect_rank(x, 4, "group_norm input")?;
    x.expect_f32("group_norm input")?;
    let (b, c, hw) = (x.dim(0), x.dim(1), x.dim(2) * x.dim(3));
    if groups == 0 || c % groups != 0 {
        return shape_err!("group_norm: {c} channels cannot be split into {groups} groups");
    }
    if let Some((g, bb)) = affine {
        expect_len(g, c, "group_norm weight")?;
        expect_len(bb, c, "group_norm bias")?;
        if g.dtype() != bb.dtype() {
            return shape_err!("group_norm weight and bias must share a dtype");
        }
    }
    let n = c / groups * hw;
    let chunks = if n >= MIN_CHUNKS * CHUNK { n.div_ceil(CHUNK) } else { 1 };
    let out = dev.empty(x.shape())?;
    let params = GroupNormParams {
        batch: u32_of(b, "batch")?,
        c: u32_of(c, "channels")?,
        hw: u32_of(hw, "pixels")?,
        groups: u32_of(groups, "groups")?,
        eps,
        has_affine: affine.is_some() as u32,
        silu: silu as u32,
        chunk: u32_of(CHUNK.min(n), "chunk")?,
        chunks: u32_of(chunks, "chunks")?,
        _pad: [0; 3],
    };
    let (g, bb) = affine.unwrap_or((x, x));
    let overrides = [("WG", WG as f64), ("AFFINE_F16", is_f16(affine.map(|a| a.0)))];
    let grid = [params.groups, params.batch, params.chunks];
    let stats = if chunks > 1 {
        let stats = dev.empty(&[b, groups, chunks, 2])?;
        dev.dispatch(Kernel::GroupNormStats, &[("WG", WG as f64)], &params, &[x, &stats], grid)?;
        Some(stats)
    } else {
        None
    };
    dev.dispatch(Kernel::GroupNorm, &overrides, &params, &[x, g, bb, stats.as_ref().unwrap_or(x), &out], grid)?;
    Ok(out)
}
