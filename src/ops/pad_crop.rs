
use super::{expect_rank, grid_1d, u32_of};
use crate::error::{shape_err, Result};
use crate::device::{Device, Tensor};
use crate::kernels::{Kernel, PadCropParams};

const WG: usize = 256;


fn launch(dev: &Device, x: &Tensor, ho: usize, wo: usize) -> Result<Tensor> {
    let (h, w) = (x.dim(2), x.dim(3));
    let out = dev.empty(&[x.dim(0), x.dim(1), ho, wo])?;
    let n = out.numel();
    let params = PadCropParams { n: u32_of(n, "elements")?, h: h as u32, w: w as u32, ho: ho as u32, wo: wo as u32, _pad: [0; 3] };
    dev.dispatch(Kernel::PadCrop, &[("WG", WG as f64)], &params, &[x, &out], grid_1d(n, WG)?)?;
    Ok(out)
}

/// Pads NCHW `x` on the right and bottom to `h` x `w` by reflection (PyTorch's
/// `F.pad(x, (0, w - W, 0, h - H), mode="reflect")`, which needs each pad < the size).
pub fn reflect_pad(dev: &Device, x: &Tensor, h: usize, w: usize) -> Result<Tensor> {
    expect_rank(x, 4, "reflect_pad input")?;
    x.expect_f32("reflect_pad input")?;
    let (xh, xw) = (x.dim(2), x.dim(3));
    if h < xh || w < xw || h - xh >= xh || w - xw >= xw {
        return shape_err!("reflect padding {xh}x{xw} to {h}x{w}: each pad must be >= 0 and smaller than the size");
    }
    launch(dev, x, h, w)
}

/// Keeps the top-left `h` x `w` of NCHW `x`.
pub fn crop(dev: &Device, x: &Tensor, h: usize, w: usize) -> Result<Tensor> {
    expect_rank(x, 4, "crop input")?;
    x.expect_f32("crop input")?;
    if h > x.dim(2) || w > x.dim(3) {
        return shape_err!("cannot crop {:?} to {h}x{w}", x.shape());
    }
    launch(dev, x, h, w)
}
