use bytemuck::{Pod, Zeroable};

use super::{expect_len, expect_rank, is_f16, u32_of};
use crate::error::{shape_err, Result};
use crate::device::{Device, Tensor};
use crate::shaders::Kernel;

const WG: usize = 256;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub(crate) struct Params {
    pub(crate) batch: u32,
    pub(crate) c: u32,
    pub(crate) hw: u32,
    pub(crate) groups: u32,
    pub(crate) eps: f32,
    pub(crate) has_affine: u32,
    pub(crate) silu: u32,
    pub(crate) _pad: u32,
}

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
    let out = dev.empty(x.shape())?;
    let params = Params {
        batch: u32_of(b, "batch")?,
        c: u32_of(c, "channels")?,
        hw: u32_of(hw, "pixels")?,
        groups: u32_of(groups, "groups")?,
        eps,
        has_affine: affine.is_some() as u32,
        silu: silu as u32,
        _pad: 0,
    };
    let (g, bb) = affine.unwrap_or((x, x));
    let overrides = [("WG", WG as f64), ("AFFINE_F16", is_f16(affine.map(|a| a.0)))];
    dev.dispatch(Kernel::GroupNorm, &overrides, &params, &[x, g, bb, &out], [params.groups, params.batch, 1])?;
    Ok(out)
}
