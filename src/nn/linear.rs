use crate::error::Result;
use crate::device::{Device, Tensor};
use crate::ops;
use crate::weights::Vb;

/// PyTorch's `nn.Linear` (`weight` [out, in], optional `bias` [out]).
pub struct Linear {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
}

impl Linear {
    /// Loads `weight` and `bias` under `vb`.
    pub fn load(vb: &Vb, din: usize, dout: usize, bias: bool) -> Result<Linear> {
        Self::load_named(vb, "weight", bias.then_some("bias"), din, dout)
    }

    /// Loads a Linear stored under other names (nn.MultiheadAttention's `in_proj_weight`).
    pub fn load_named(vb: &Vb, weight: &str, bias: Option<&str>, din: usize, dout: usize) -> Result<Linear> {
        Ok(Linear { weight: vb.tensor(weight, &[dout, din])?, bias: bias.map(|b| vb.tensor(b, &[dout])).transpose()? })
    }

    pub fn forward(&self, dev: &Device, x: &Tensor) -> Result<Tensor> {
        ops::linear(dev, x, &self.weight, self.bias.as_ref())
    }
}
