
use super::{expect_rank, grid_1d, is_f16, u32_of};
use crate::error::{shape_err, Result};
use crate::device::{DType, Device, Tensor};
use crate::kernels::{Kernel, GatherRowsParams};

const WG: usize = 256;


/// `table[index]` for a [rows, C] table (f32 or packed f16) and u32 indices [M]: [M, C].
/// The caller checks the indices (they come from the CPU); out-of-range ones read the
/// last row rather than out of bounds.
pub fn gather_rows(dev: &Device, table: &Tensor, index: &Tensor) -> Result<Tensor> {
    expect_rank(table, 2, "gather table")?;
    if index.dtype() != DType::U32 || index.shape().len() != 1 {
        return shape_err!("gather indices must be a 1-D u32 tensor, got {:?} {:?}", index.shape(), index.dtype());
    }
    let (rows, c) = (table.dim(0), table.dim(1));
    let out = dev.empty(&[index.numel(), c])?;
    let n = out.numel();
    let params = GatherRowsParams { n: u32_of(n, "elements")?, c: u32_of(c, "columns")?, table_rows: u32_of(rows, "rows")?, _pad: 0 };
    let overrides = [("WG", WG as f64), ("TABLE_F16", is_f16(Some(table)))];
    dev.dispatch(Kernel::GatherRows, &overrides, &params, &[table, index, &out], grid_1d(n, WG)?)?;
    Ok(out)
}
