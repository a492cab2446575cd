//! The UNet's modules (spec section 4), named and nested as in the state dict.

use crate::error::{Error, Result};
use crate::device::{Device, Tensor};
use crate::nn::{linear_attention, Conv2d, LayerNorm, Linear, Qkv};
use crate::ops::{self, Conv2dArgs, ConvInput, Epilogue, Heads};
use crate::weights::Vb;

use super::config::LINEAR_ATTENTION_HIDDEN;

const CHANNEL_LN_EPS: f32 = 1e-5;

/// `ResBlock(dim_in, dim_out)`: `s, b = mlp(silu(t)).chunk(2)`;
/// `h = silu(block1(x) * (s + 1) + b)`; `h = silu(block2(h))`; `h + res_conv(x)`.
pub struct ResBlock {
    /// `mlp.1` (the SiLU before it is applied once per step to the shared time embedding).
    pub mlp: Linear,
    pub block1: Conv2d,
    pub block2: Conv2d,
    /// 1x1 conv when the widths differ, else identity.
    pub res_conv: Option<Conv2d>,
}

impl ResBlock {
    pub fn load(vb: &Vb, din: usize, dout: usize, time_dim: usize) -> Result<Self> {
        Ok(ResBlock {
            mlp: Linear::load(&vb.pp("mlp.1"), time_dim, 2 * dout, true)?,
            block1: Conv2d::load(&vb.pp("block1.proj"), din, dout, 3, Conv2dArgs::same(3), false)?,
            block2: Conv2d::load(&vb.pp("block2.proj"), dout, dout, 3, Conv2dArgs::same(3), false)?,
            res_conv: (din != dout).then(|| Conv2d::load(&vb.pp("res_conv"), din, dout, 1, Conv2dArgs::same(1), false)).transpose()?,
        })
    }

    /// `mlp(silu(t_emb))` for rows of time embeddings [steps, time_dim] -> [steps, 2 dout].
    pub fn time_table(&self, dev: &Device, silu_t: &Tensor) -> Result<Tensor> {
        self.mlp.forward(dev, silu_t)
    }

    /// `table` is this block's [`ResBlock::time_table`]; `row` selects the step.
    /// Three convolutions (two without `res_conv`), the element-wise steps in their
    /// epilogues. `x` may be a concatenation (the up levels' input and skip): only
    /// block1 and res_conv read it, and they gather it themselves.
    pub fn forward<'a>(&self, dev: &Device, x: impl Into<ConvInput<'a>>, table: &Tensor, row: usize) -> Result<Tensor> {
        let x = x.into();
        let h = self.block1.forward_with(dev, x, Epilogue { scale_shift: Some((table, row)), silu: true, ..Default::default() })?;
        let res = match (&self.res_conv, x.plain()) {
            (Some(c), _) => c.forward(dev, x)?,
            (None, Some(x)) => x.clone(),
            (None, None) => return Err(Error::Shape("a ResBlock without res_conv adds its input as it is: it cannot take a concatenation".into())),
        };
        self.block2.forward_with(dev, &h, Epilogue { silu: true, residual: Some(&res), ..Default::default() })
    }
}

/// `LinearAttention(dim)`: 4 heads of 32, softmax of q over channels and of k over pixels.
pub struct LinearAttention {
    pub to_qkv: Conv2d,
    pub to_out: Conv2d,
    /// `to_out.1.g`: the channel LayerNorm after the output conv.
    pub to_out_norm: Tensor,
}

impl LinearAttention {
    pub fn load(vb: &Vb, dim: usize) -> Result<Self> {
        let h = LINEAR_ATTENTION_HIDDEN;
        Ok(LinearAttention {
            to_qkv: Conv2d::load(&vb.pp("to_qkv"), dim, 3 * h, 1, Conv2dArgs::same(1), false)?,
            to_out: Conv2d::load(&vb.pp("to_out.0"), h, dim, 1, Conv2dArgs::same(1), true)?,
            to_out_norm: vb.tensor("to_out.1.g", &[1, dim, 1, 1])?,
        })
    }

    /// The attention of `x`, plus `residual` (added by the last norm's kernel).
    pub fn forward(&self, dev: &Device, x: &Tensor, residual: &Tensor) -> Result<Tensor> {
        let h = LINEAR_ATTENTION_HIDDEN;
        let stack_bytes = 4 * 3 * h * x.dim(0) * x.dim(2) * x.dim(3);
        // to_qkv in one convolution where its output fits a binding; else in three, each
        // a third of the channels, so that the image size limit stays that of one third
        // (see ConditionalUNet::widest_bytes_per_pixel).
        let out = if stack_bytes <= dev.max_tensor_bytes() {
            let qkv = self.to_qkv.forward(dev, x)?;
            linear_attention(dev, Qkv::Stacked(&qkv), 4, h / 4)?
        } else {
            let part = |i: usize| ops::conv2d_channels(dev, x, &self.to_qkv.weight, None, self.to_qkv.args, Epilogue::default(), i * h..(i + 1) * h);
            let (q, k, v) = (part(0)?, part(1)?, part(2)?);
            linear_attention(dev, Qkv::Apart([&q, &k, &v]), 4, h / 4)?
        };
        ops::channel_layer_norm_with(dev, &self.to_out.forward(dev, &out)?, &self.to_out_norm, CHANNEL_LN_EPS, Some(residual))
    }
}

/// `SpatialTransformer(dim, dim / 32 heads of 32)` with one `BasicTransformerBlock`:
/// GroupNorm(32, eps 1e-6), proj_in, self-attention, cross-attention on the image
/// context, GEGLU feed-forward (each pre-LayerNorm with a residual), proj_out, + input.
pub struct SpatialTransformer {
    pub norm: (Tensor, Tensor),
    pub proj_in: Conv2d,
    pub norm1: LayerNorm,
    /// attn1's to_q, to_k and to_v stacked into one [3C, C] projection at load time.
    pub attn1_qkv: Linear,
    /// attn1's to_out weight; its bias is in `attn2_out`'s (see `forward`).
    pub attn1_out: Tensor,
    pub norm2: LayerNorm,
    pub attn2_v: Linear,
    /// attn2's to_out with attn1's to_out bias added to its own (in f32, at load).
    pub attn2_out: Linear,
    pub norm3: LayerNorm,
    pub ff_in: Linear,
    pub ff_out: Linear,
    pub proj_out: Conv2d,
    heads: usize,
}

impl SpatialTransformer {
    pub fn load(vb: &Vb, dim: usize, context_dim: usize) -> Result<Self> {
        let b = vb.pp("transformer_blocks.0");
        // attn2's to_q and to_k are checked but not used: see `forward`.
        b.host("attn2.to_q.weight", &[dim, dim])?;
        b.host("attn2.to_k.weight", &[dim, context_dim])?;
        let mut qkv = Vec::with_capacity(3 * dim * dim);
        for name in ["attn1.to_q.weight", "attn1.to_k.weight", "attn1.to_v.weight"] {
            qkv.extend(b.host(name, &[dim, dim])?.to_f32()?);
        }
        let qkv = vb.upload(&[3 * dim, dim], &qkv)?;
        let biases = [b.host("attn1.to_out.0.bias", &[dim])?.to_f32()?, b.host("attn2.to_out.0.bias", &[dim])?.to_f32()?];
        let attn2_out_bias: Vec<f32> = biases[0].iter().zip(&biases[1]).map(|(x, y)| x + y).collect();
        Ok(SpatialTransformer {
            norm: (vb.tensor("norm.weight", &[dim])?, vb.tensor("norm.bias", &[dim])?),
            proj_in: Conv2d::load(&vb.pp("proj_in"), dim, dim, 1, Conv2dArgs::same(1), true)?,
            norm1: LayerNorm::load(&b.pp("norm1"), dim, 1e-5)?,
            attn1_qkv: Linear { weight: qkv, bias: None },
            attn1_out: b.pp("attn1.to_out.0").tensor("weight", &[dim, dim])?,
            norm2: LayerNorm::load(&b.pp("norm2"), dim, 1e-5)?,
            attn2_v: Linear::load(&b.pp("attn2.to_v"), context_dim, dim, false)?,
            attn2_out: Linear { weight: b.pp("attn2.to_out.0").tensor("weight", &[dim, dim])?, bias: Some(b.upload_f32(&[dim], &attn2_out_bias)?) },
            norm3: LayerNorm::load(&b.pp("norm3"), dim, 1e-5)?,
            ff_in: Linear::load(&b.pp("ff.net.0.proj"), dim, 8 * dim, true)?,
            ff_out: Linear::load(&b.pp("ff.net.2"), 4 * dim, dim, true)?,
            proj_out: Conv2d::load(&vb.pp("proj_out"), dim, dim, 1, Conv2dArgs::same(1), true)?,
            heads: dim / 32,
        })
    }

    /// What the cross-attention adds to every token for the image embedding `context`
    /// [1, context_dim] (see `forward`): depends on nothing else, so a restore computes it
    /// once for all its steps and tiles.
    pub fn cross_vector(&self, dev: &Device, context: &Tensor) -> Result<Tensor> {
        self.attn2_out.forward(dev, &self.attn2_v.forward(dev, context)?)
    }

    /// `cross` is [`SpatialTransformer::cross_vector`] of the image embedding; `outer`
    /// is added last (the level's residual, by proj_out's kernel).
    pub fn forward(&self, dev: &Device, x: &Tensor, cross: &Tensor, outer: &Tensor) -> Result<Tensor> {
        let (c, h, w) = (x.dim(1), x.dim(2), x.dim(3));
        let t = ops::group_norm(dev, x, 32, Some((&self.norm.0, &self.norm.1)), 1e-6, false)?;
        let t = self.proj_in.forward(dev, &t)?;
        let t = ops::transpose(dev, &t.reshape(&[1, c, h * w])?)?; // tokens [1, HW, C]

        // Cross-attention on ONE context token: the softmax over a single key is exactly 1,
        // so every query receives that token's value whatever q and k are. attn2 therefore
        // adds the same vector to_out(to_v(context)) to every token; norm2 and to_q/to_k
        // cannot change it and are skipped. That vector (with attn1's to_out bias, which
        // attn2_out's bias includes) is the bias of attn1's output projection, whose
        // kernel also adds the residual: t + attn1(t) + attn2(t) in one product.
        let qkv = self.attn1_qkv.forward(dev, &self.norm1.forward(dev, &t)?)?;
        let part = |i: usize| Heads { tensor: &qkv, start: i * c, width: c };
        let a = ops::attention(dev, part(0), part(1), part(2), self.heads, false)?;
        let t = ops::linear_with(dev, &a, &self.attn1_out, Some(cross), Some(&t))?;

        let f = ops::geglu(dev, &self.ff_in.forward(dev, &self.norm3.forward(dev, &t)?)?)?;
        let t = ops::linear_with(dev, &f, &self.ff_out.weight, self.ff_out.bias.as_ref(), Some(&t))?;

        let t = ops::transpose(dev, &t)?.reshape(&[1, c, h, w])?;
        self.proj_out.forward_with(dev, &t, Epilogue { residual: Some(x), second_residual: Some(outer), ..Default::default() })
    }
}

/// The attention of one level.
#[allow(clippy::large_enum_variant)] // one per UNet level: the size does not matter
pub enum Attention {
    Linear(LinearAttention),
    Spatial(SpatialTransformer),
}

/// `Residual(PreNorm(dim, attention))`: `attention(LN_c(x), context) + x`.
pub struct ResidualAttention {
    /// `fn.norm.g`
    pub norm: Tensor,
    /// `fn.fn`
    pub attention: Attention,
}

impl ResidualAttention {
    /// The SpatialTransformer, where this level has one (it needs a cross-attention
    /// vector; LinearAttention does not).
    pub fn spatial(&self) -> Option<&SpatialTransformer> {
        match &self.attention {
            Attention::Spatial(s) => Some(s),
            Attention::Linear(_) => None,
        }
    }

    /// `cross`: a SpatialTransformer's cross-attention vector (unused by LinearAttention).
    pub fn forward(&self, dev: &Device, x: &Tensor, cross: Option<&Tensor>) -> Result<Tensor> {
        let n = ops::channel_layer_norm(dev, x, &self.norm, CHANNEL_LN_EPS)?;
        match &self.attention {
            Attention::Linear(a) => a.forward(dev, &n, x),
            Attention::Spatial(s) => {
                let cross = cross.ok_or_else(|| Error::Shape("a SpatialTransformer needs its cross-attention vector".into()))?;
                s.forward(dev, &n, cross, x)
            }
        }
    }
}

/// The last module of a level: a Downsample/Upsample, or the plain 3x3 conv at the ends.
pub enum Resample {
    /// Conv2d 4x4, stride 2, padding 1, with bias.
    Down(Conv2d),
    /// Nearest 2x, then Conv2d 3x3 with bias (`.1`).
    Up(Conv2d),
    /// `default_conv`: 3x3, no bias.
    Plain(Conv2d),
}

impl Resample {
    pub fn forward(&self, dev: &Device, x: &Tensor) -> Result<Tensor> {
        match self {
            Resample::Down(c) | Resample::Plain(c) => c.forward(dev, x),
            Resample::Up(c) => c.forward(dev, ConvInput::upsampled(x)),
        }
    }
}
