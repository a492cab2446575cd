use crate::error::Result;
use crate::device::{Device, Tensor};
use crate::ops::{self, Conv2dArgs, Epilogue};
use crate::weights::Vb;

/// PyTorch's `nn.Conv2d` (square kernel, zero padding) with optional bias.
pub struct Conv2d {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
    pub args: Conv2dArgs,
}

impl Conv2d {
    pub fn load(vb: &Vb, cin: usize, cout: usize, kernel: usize, args: Conv2dArgs, bias: bool) -> Result<Conv2d> {
        Ok(Conv2d {
            weight: vb.tensor("weight", &[cout, cin, kernel, kernel])?,
            bias: bias.then(|| vb.tensor("bias", &[cout])).transpose()?,
            args,
        })
    }

    pub fn forward(&self, dev: &Device, x: &Tensor) -> Result<Tensor> {
        self.forward_with(dev, x, Epilogue::default())
    }

    /// The convolution with element-wise work after it fused in (see [`Epilogue`]).
    pub fn forward_with(&self, dev: &Device, x: &Tensor, epilogue: Epilogue) -> Result<Tensor> {
        ops::conv2d_with(dev, x, &self.weight, self.bias.as_ref(), self.args, epilogue)
    }
}
