
use super::u32_of;
use crate::error::{shape_err, Result};
use crate::device::{Device, Tensor};
use crate::kernels::{Kernel, TransposeParams};

const TILE: usize = 16;


/// Swaps the last two dimensions: [.., R, C] -> [.., C, R] (e.g. NCHW channels to
/// token-major rows).
pub fn transpose(dev: &Device, x: &Tensor) -> Result<Tensor> {
    x.expect_f32("transpose input")?;
    let rank = x.shape().len();
    if rank < 2 {
        return shape_err!("transpose needs at least 2 dimensions, got {:?}", x.shape());
    }
    let (r, c) = (x.dim(-2), x.dim(-1));
    let batch: usize = x.shape()[..rank - 2].iter().product();
    let mut shape = x.shape().to_vec();
    shape.swap(rank - 2, rank - 1);
    let out = dev.empty(&shape)?;
    let params = TransposeParams { rows: u32_of(r, "rows")?, cols: u32_of(c, "columns")?, _pad: [0; 2] };
    let groups = [c.div_ceil(TILE) as u32, r.div_ceil(TILE) as u32, u32_of(batch, "batch")?];
    dev.dispatch(Kernel::Transpose, &[], &params, &[x, &out], groups)?;
    Ok(out)
}
