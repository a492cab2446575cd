use bytemuck::{Pod, Zeroable};

use super::{expect_rank, grid_1d, u32_of};
use crate::error::{shape_err, Result};
use crate::gpu::{Gpu, Tensor};
use crate::shaders::Kernel;

const WG: usize = 256;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    n: u32,
    h: u32,
    w: u32,
    ho: u32,
    wo: u32,
    _pad: [u32; 3],
}

fn launch(gpu: &Gpu, x: &Tensor, ho: usize, wo: usize) -> Result<Tensor> {
    let (h, w) = (x.dim(2), x.dim(3));
    let out = gpu.empty(&[x.dim(0), x.dim(1), ho, wo])?;
    let n = out.numel();
    let params = Params { n: u32_of(n, "elements")?, h: h as u32, w: w as u32, ho: ho as u32, wo: wo as u32, _pad: [0; 3] };
    gpu.dispatch(Kernel::PadCrop, &[("WG", WG as f64)], &params, &[x, &out], grid_1d(n, WG)?)?;
    Ok(out)
}

/// Pads NCHW `x` on the right and bottom to `h` x `w` by reflection (PyTorch's
/// `F.pad(x, (0, w - W, 0, h - H), mode="reflect")`, which needs each pad < the size).
pub fn reflect_pad(gpu: &Gpu, x: &Tensor, h: usize, w: usize) -> Result<Tensor> {
    expect_rank(x, 4, "reflect_pad input")?;
    x.expect_f32("reflect_pad input")?;
    let (xh, xw) = (x.dim(2), x.dim(3));
    if h < xh || w < xw || h - xh >= xh || w - xw >= xw {
        return shape_err!("reflect padding {xh}x{xw} to {h}x{w}: each pad must be >= 0 and smaller than the size");
    }
    launch(gpu, x, h, w)
}

/// Keeps the top-left `h` x `w` of NCHW `x`.
pub fn crop(gpu: &Gpu, x: &Tensor, h: usize, w: usize) -> Result<Tensor> {
    expect_rank(x, 4, "crop input")?;
    x.expect_f32("crop input")?;
    if h > x.dim(2) || w > x.dim(3) {
        return shape_err!("cannot crop {:?} to {h}x{w}", x.shape());
    }
    launch(gpu, x, h, w)
}
