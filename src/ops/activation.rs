
use super::{grid_1d, u32_of};
use crate::error::{shape_err, Result};
use crate::device::{Device, Tensor};
use crate::kernels::{Kernel, ActivationParams};

const WG: usize = 256;


/// The `OP` override values of activation.wgsl.
#[derive(Clone, Copy)]
enum Op {
    Gelu = 0,
    Silu = 1,
    Geglu = 2,
}

fn launch(dev: &Device, op: Op, x: &Tensor, out_shape: &[usize], d: usize) -> Result<Tensor> {
    x.expect_f32("activation input")?;
    let out = dev.empty(out_shape)?;
    let n = out.numel();
    let params = ActivationParams { n: u32_of(n, "elements")?, d: u32_of(d, "width")?, _pad: [0; 2] };
    dev.dispatch(Kernel::Activation, &[("WG", WG as f64), ("OP", op as u32 as f64)], &params, &[x, &out], grid_1d(n, WG)?)?;
    Ok(out)
}

/// Exact GELU (erf form, PyTorch's `nn.GELU()`).
pub fn gelu(dev: &Device, x: &Tensor) -> Result<Tensor> {
    launch(dev, Op::Gelu, x, x.shape(), 1)
}

/// SiLU, `x * sigmoid(x)`.
pub fn silu(dev: &Device, x: &Tensor) -> Result<Tensor> {
    launch(dev, Op::Silu, x, x.shape(), 1)
}

/// GEGLU: for `x` [.., 2D], `a, g = x.chunk(2, -1)` and the result [.., D] is `a * gelu(g)`.
pub fn geglu(dev: &Device, x: &Tensor) -> Result<Tensor> {
    let last = x.shape().last().copied().unwrap_or(0);
    if last == 0 || last % 2 != 0 {
        return shape_err!("geglu needs an even last dimension, got {:?}", x.shape());
    }
    let mut shape = x.shape().to_vec();
    *shape.last_mut().unwrap() = last / 2;
    launch(dev, Op::Geglu, x, &shape, last / 2)
}
