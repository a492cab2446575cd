
use super::{expect_rank, grid_1d, u32_of};
use crate::error::{shape_err, Result};
use crate::device::{Device, Tensor};
use crate::kernels::{Kernel, ConcatParams};

const WG: usize = 256;


/// `torch.cat([a, b], dim=1)` for NCHW tensors of equal batch and size.
pub fn concat_channels(dev: &Device, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    expect_rank(a, 4, "concat input")?;
    expect_rank(b, 4, "concat input")?;
    a.expect_f32("concat input")?;
    b.expect_f32("concat input")?;
    if a.dim(0) != b.dim(0) || a.shape()[2..] != b.shape()[2..] {
        return shape_err!("concat along channels needs equal batch and size, got {:?} and {:?}", a.shape(), b.shape());
    }
    let (c1, c2) = (a.dim(1), b.dim(1));
    let out = dev.empty(&[a.dim(0), c1 + c2, a.dim(2), a.dim(3)])?;
    let n = out.numel();
    let params = ConcatParams { n: u32_of(n, "elements")?, c1: c1 as u32, c2: c2 as u32, hw: u32_of(a.dim(2) * a.dim(3), "pixels")? };
    dev.dispatch(Kernel::Concat, &[("WG", WG as f64)], &params, &[a, b, &out], grid_1d(n, WG)?)?;
    Ok(out)
}
