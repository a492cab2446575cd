use crate::error::Result;
use crate::device::{Device, Tensor};
use crate::ops;
use crate::weights::Vb;

/// PyTorch's `nn.LayerNorm` over the last dimension, with affine weight and bias.
pub struct LayerNorm {
    pub weight: Tensor,
    pub bias: Tensor,
    pub eps: f32,
}

impl LayerNorm {
    pub fn load(vb: &Vb, dim: usize, eps: f32) -> Result<LayerNorm> {
        Ok(LayerNorm { weight: vb.tensor("weight", &[dim])?, bias: vb.tensor("bias", &[dim])?, eps })
    }

    pub fn forward(&self, dev: &Device, x: &Tensor) -> Result<Tensor> {
        ops::layer_norm(dev, x, Some((&self.weight, &self.bias)), self.eps)
    }
}
