
use super::{expect_len, grid_1d, is_f16, u32_of};
use crate::error::{shape_err, Result};
use crate::device::{Device, Tensor};
use crate::kernels::{Kernel, LayerNormParams};

const WG: usize = 128;


/// PyTorch's `nn.LayerNorm` over the last dimension; `affine` is (weight, bias), both
/// [C] and of one dtype (f32 or packed f16).
pub fn layer_norm(dev: &Device, x: &Tensor, affine: Option<(&Tensor, &Tensor)>, eps: f32) -> Result<Tensor> {
    x.expect_f32("layer_norm input")?;
    if x.shape().is_empty() {
        return shape_err!("layer_norm needs at least one dimension");
    }
    let c = x.dim(-1);
    if let Some((g, b)) = affine {
        expect_len(g, c, "layer_norm weight")?;
        expect_len(b, c, "layer_norm bias")?;
        if g.dtype() != b.dtype() {
            return shape_err!("layer_norm weight and bias must share a dtype");
        }
    }
    let rows = x.numel() / c.max(1);
    let out = dev.empty(x.shape())?;
    let params = LayerNormParams { rows: u32_of(rows, "rows")?, c: u32_of(c, "channels")?, eps, has_affine: affine.is_some() as u32 };
    let (g, b) = affine.unwrap_or((x, x));
    let overrides = [("WG", WG as f64), ("AFFINE_F16", is_f16(affine.map(|a| a.0)))];
    dev.dispatch(Kernel::LayerNorm, &overrides, &params, &[x, g, b, &out], grid_1d(rows, 1)?)?;
    Ok(out)
}
