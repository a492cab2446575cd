use crate::error::Result;
use crate::device::{Device, Tensor};
use crate::ops::{self, Conv2dArgs, ConvInput, Epilogue};
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

    /// The convolution of a tensor, or of a concatenation or upsampling gathered on the
    /// fly (see [`ConvInput`]).
    pub fn forward<'a>(&self, dev: &Device, input: impl Into<ConvInput<'a>>) -> Result<Tensor> {
        self.forward_with(dev, input, Epilogue::default())
    }

    /// The convolution with element-wise work after it fused in (see [`Epilogue`]).
    pub fn forward_with<'a>(&self, dev: &Device, input: impl Into<ConvInput<'a>>, epilogue: Epilogue) -> Result<Tensor> {
        ops::conv2d_with(dev, input, &self.weight, self.bias.as_ref(), self.args, epilogue)
    }
}
