//! open_clip's pre-norm transformer (`transformer.resblocks.{i}`), shared by the image
//! towers, the controller and the text tower.

use crate::error::Result;
use crate::device::{Device, Tensor};
use crate::nn::{LayerNorm, Linear};
use crate::ops::{self, Heads};
use crate::weights::Vb;

/// `nn.MultiheadAttention` with q, k, v stacked in `in_proj_weight` [3W, W].
pub struct MultiheadAttention {
    pub in_proj: Linear,
    pub out_proj: Linear,
    pub heads: usize,
}

impl MultiheadAttention {
    pub fn load(vb: &Vb, width: usize, heads: usize) -> Result<Self> {
        Ok(MultiheadAttention {
            in_proj: Linear::load_named(vb, "in_proj_weight", Some("in_proj_bias"), width, 3 * width)?,
            out_proj: Linear::load(&vb.pp("out_proj"), width, width, true)?,
            heads,
        })
    }

    /// Self-attention on x [B, N, W].
    pub fn forward(&self, dev: &Device, x: &Tensor, causal: bool) -> Result<Tensor> {
        let w = x.dim(-1);
        let qkv = self.in_proj.forward(dev, x)?;
        let part = |i: usize| Heads { tensor: &qkv, start: i * w, width: w };
        let o = ops::attention(dev, part(0), part(1), part(2), self.heads, causal)?;
        self.out_proj.forward(dev, &o)
    }
}

/// `ResidualAttentionBlock`: `x + attn(ln_1(x))`, then `x + mlp(ln_2(x))` with
/// mlp = c_fc, exact GELU, c_proj.
pub struct ResidualAttentionBlock {
    pub ln_1: LayerNorm,
    pub attn: MultiheadAttention,
    pub ln_2: LayerNorm,
    pub c_fc: Linear,
    pub c_proj: Linear,
}

impl ResidualAttentionBlock {
    pub fn load(vb: &Vb, width: usize, heads: usize) -> Result<Self> {
        Ok(ResidualAttentionBlock {
            ln_1: LayerNorm::load(&vb.pp("ln_1"), width, 1e-5)?,
            attn: MultiheadAttention::load(&vb.pp("attn"), width, heads)?,
            ln_2: LayerNorm::load(&vb.pp("ln_2"), width, 1e-5)?,
            c_fc: Linear::load(&vb.pp("mlp").pp("c_fc"), width, 4 * width, true)?,
            c_proj: Linear::load(&vb.pp("mlp").pp("c_proj"), 4 * width, width, true)?,
        })
    }

    pub fn forward(&self, dev: &Device, x: &Tensor, causal: bool) -> Result<Tensor> {
        let h = self.attn.forward(dev, &self.ln_1.forward(dev, x)?, causal)?;
        let x = ops::add(dev, x, &h)?;
        let h = ops::gelu(dev, &self.c_fc.forward(dev, &self.ln_2.forward(dev, &x)?)?)?;
        ops::add(dev, &x, &self.c_proj.forward(dev, &h)?)
    }
}

/// `Transformer`: the list `resblocks`.
pub struct Transformer {
    pub resblocks: Vec<ResidualAttentionBlock>,
}

impl Transformer {
    pub fn load(vb: &Vb, width: usize, layers: usize, heads: usize) -> Result<Self> {
        let vb = vb.pp("resblocks");
        Ok(Transformer { resblocks: (0..layers).map(|i| ResidualAttentionBlock::load(&vb.pp(i), width, heads)).collect::<Result<_>>()? })
    }
}
