//! `ConditionalUNet` (spec section 4): the noise predictor the IR-SDE sampler calls at
//! every step.

use super::blocks::{Attention, LinearAttention, Resample, ResBlock, ResidualAttention, SpatialTransformer};
use super::config::LINEAR_ATTENTION_HIDDEN;
use super::UNetConfig;
use crate::error::{shape_err, Error, Result};
use crate::device::{Device, Tensor};
use crate::nn::{Conv2d, Linear};
use crate::ops::{self, Conv2dArgs, ConvInput};
use crate::weights::{DeviceDType, Vb};
use crate::models::{Checkpoint, ModelKind};

/// One entry of `downs` or `ups`: two ResBlocks, the level's attention, the resampling.
pub struct Level {
    pub block1: ResBlock,
    pub block2: ResBlock,
    pub attn: ResidualAttention,
    pub resample: Resample,
}

pub struct ConditionalUNet {
    pub config: UNetConfig,
    pub init_conv: Conv2d,
    /// `time_mlp.1` and `time_mlp.3` (GELU between them).
    pub time_mlp: (Linear, Linear),
    /// `prompt`, `text_mlp.0`, `text_mlp.2`, `prompt_mlp` (when use_degra_context).
    pub prompt: Option<(Tensor, Linear, Linear, Linear)>,
    /// Wild-IR's `downsample` / `upsample` around the levels (scale 0.5).
    pub downscale: Option<(Conv2d, Conv2d)>,
    pub downs: Vec<Level>,
    pub mid_block1: ResBlock,
    pub mid_attn: ResidualAttention,
    pub mid_block2: ResBlock,
    pub ups: Vec<Level>,
    pub final_res_block: ResBlock,
    pub final_conv: Conv2d,
}

/// The time conditioning of a whole sampling run, computed once before the first step:
/// for every ResBlock (in [`ConditionalUNet::res_blocks`] order) its `mlp(silu(t_emb))`
/// for every step's time, [steps, 2 dim_out]. A step then only selects its row, so steps
/// upload nothing and run no per-step MLP.
pub struct TimeConditioning {
    tables: Vec<Tensor>,
    times: Vec<f32>,
}

/// The image embedding as the UNet's SpatialTransformers use it, computed once per
/// restore: for each of them (in [`ConditionalUNet::attentions`] order) its
/// cross-attention vector (see [`SpatialTransformer::cross_vector`]).
pub struct ImageContext {
    cross: Vec<Tensor>,
}

impl TimeConditioning {
    /// The row of time `t` (which must be one of the times it was built for).
    pub fn row(&self, t: f32) -> Result<usize> {
        self.times.iter().position(|&x| x == t).ok_or_else(|| Error::Shape(format!("time {t} is not among the precomputed times")))
    }
}

impl ConditionalUNet {
    pub fn load(dev: &Device, ckpt: &Checkpoint, dtype: DeviceDType) -> Result<Self> {
        let ModelKind::UNet(cfg) = &ckpt.kind else {
            return Err(Error::WeightsMismatch(format!("expected a restoration UNet checkpoint, got a {} one", ckpt.kind.name())));
        };
        let vb = Vb::new(&ckpt.weights, dev, dtype);
        let (nf, td, depth) = (cfg.nf, cfg.time_dim(), cfg.depth());
        let dims = cfg.dims();
        let attention = |vb: &Vb, dim: usize, spatial: bool| -> Result<ResidualAttention> {
            let inner = vb.pp("fn.fn");
            Ok(ResidualAttention {
                norm: vb.tensor("fn.norm.g", &[1, dim, 1, 1])?,
                attention: if spatial && cfg.use_image_context {
                    Attention::Spatial(SpatialTransformer::load(&inner, dim, cfg.context_dim)?)
                } else {
                    Attention::Linear(LinearAttention::load(&inner, dim)?)
                },
            })
        };
        let conv = |vb: &Vb, cin, cout, k, args, bias| Conv2d::load(vb, cin, cout, k, args, bias);
        let mut downs = Vec::new();
        let mut ups = Vec::new();
        for i in 0..depth {
            let (din, dout, last) = (dims[i], dims[i + 1], i == depth - 1);
            let d = vb.pp("downs").pp(i);
            downs.push(Level {
                block1: ResBlock::load(&d.pp(0), din, din, td)?,
                block2: ResBlock::load(&d.pp(1), din, din, td)?,
                attn: attention(&d.pp(2), din, last)?,
                resample: if last {
                    Resample::Plain(conv(&d.pp(3), din, dout, 3, Conv2dArgs::same(3), false)?)
                } else {
                    Resample::Down(conv(&d.pp(3), din, dout, 4, Conv2dArgs { stride: 2, padding: 1 }, true)?)
                },
            });
        }
        for (j, i) in (0..depth).rev().enumerate() {
            let (din, dout) = (dims[i], dims[i + 1]);
            let u = vb.pp("ups").pp(j);
            ups.push(Level {
                block1: ResBlock::load(&u.pp(0), dout + din, dout, td)?,
                block2: ResBlock::load(&u.pp(1), dout + din, dout, td)?,
                attn: attention(&u.pp(2), dout, i == depth - 1)?,
                resample: if i > 0 {
                    Resample::Up(conv(&u.pp("3.1"), dout, din, 3, Conv2dArgs::same(3), true)?)
                } else {
                    Resample::Plain(conv(&u.pp(3), dout, din, 3, Conv2dArgs::same(3), false)?)
                },
            });
        }
        let mid = dims[depth];
        Ok(ConditionalUNet {
            init_conv: conv(&vb.pp("init_conv"), 2 * cfg.in_nc, nf, 7, Conv2dArgs::same(7), false)?,
            time_mlp: (Linear::load(&vb.pp("time_mlp.1"), nf, td, true)?, Linear::load(&vb.pp("time_mlp.3"), td, td, true)?),
            prompt: cfg
                .use_degra_context
                .then(|| -> Result<_> {
                    Ok((
                        vb.tensor_f32("prompt", &[1, td])?,
                        Linear::load(&vb.pp("text_mlp.0"), cfg.context_dim, td, true)?,
                        Linear::load(&vb.pp("text_mlp.2"), td, td, true)?,
                        Linear::load(&vb.pp("prompt_mlp"), td, td, true)?,
                    ))
                })
                .transpose()?,
            downscale: cfg
                .downscale
                .then(|| -> Result<_> {
                    Ok((
                        conv(&vb.pp("downsample"), nf, nf, 4, Conv2dArgs { stride: 2, padding: 1 }, true)?,
                        conv(&vb.pp("upsample.1"), nf, nf, 3, Conv2dArgs::same(3), true)?,
                    ))
                })
                .transpose()?,
            downs,
            mid_block1: ResBlock::load(&vb.pp("mid_block1"), mid, mid, td)?,
            mid_attn: attention(&vb.pp("mid_attn"), mid, true)?,
            mid_block2: ResBlock::load(&vb.pp("mid_block2"), mid, mid, td)?,
            ups,
            final_res_block: ResBlock::load(&vb.pp("final_res_block"), 2 * nf, nf, td)?,
            final_conv: conv(&vb.pp("final_conv"), nf, cfg.out_nc, 3, Conv2dArgs::same(3), true)?,
            config: cfg.clone(),
        })
    }

    /// The sinusoidal embedding of the (float) step t, computed on the CPU: sin then cos of
    /// t * exp(-k ln(10000) / (half - 1)), k < half.
    pub fn sinusoidal(&self, t: f32) -> Vec<f32> {
        let half = self.config.nf / 2;
        let scale = (10000f32).ln() / (half as f32 - 1.0);
        let freqs: Vec<f32> = (0..half).map(|k| (-(k as f32) * scale).exp()).collect();
        freqs.iter().map(|f| (t * f).sin()).chain(freqs.iter().map(|f| (t * f).cos())).collect()
    }

    /// `time_mlp(t)` for each time: [times, time_dim] (fixture `unet_temb_t*`).
    pub fn time_embedding(&self, dev: &Device, times: &[f32]) -> Result<Tensor> {
        let sin: Vec<f32> = times.iter().flat_map(|&t| self.sinusoidal(t)).collect();
        let emb = dev.upload(&[times.len(), self.config.nf], &sin)?;
        let h = ops::gelu(dev, &self.time_mlp.0.forward(dev, &emb)?)?;
        self.time_mlp.1.forward(dev, &h)
    }

    /// `prompt_mlp(softmax(text_mlp(degra)) * prompt)`: [1, time_dim] (fixture
    /// `unet_prompt_emb`); None without use_degra_context.
    pub fn prompt_embedding(&self, dev: &Device, text_context: &Tensor) -> Result<Option<Tensor>> {
        let Some((prompt, mlp0, mlp2, prompt_mlp)) = &self.prompt else { return Ok(None) };
        let h = ops::silu(dev, &mlp0.forward(dev, text_context)?)?;
        let p = ops::softmax(dev, &mlp2.forward(dev, &h)?, -1)?;
        Ok(Some(prompt_mlp.forward(dev, &ops::mul(dev, &p, prompt)?)?))
    }

    /// Every ResBlock in the order `forward` runs them.
    pub fn res_blocks(&self) -> Vec<&ResBlock> {
        let mut v: Vec<&ResBlock> = self.downs.iter().flat_map(|l| [&l.block1, &l.block2]).collect();
        v.extend([&self.mid_block1, &self.mid_block2]);
        v.extend(self.ups.iter().flat_map(|l| [&l.block1, &l.block2]));
        v.push(&self.final_res_block);
        v
    }

    /// The conditioning of every ResBlock for every time in `times`:
    /// `mlp(silu(time_mlp(t) + prompt embedding))`.
    pub fn time_conditioning(&self, dev: &Device, times: &[f32], prompt: Option<&Tensor>) -> Result<TimeConditioning> {
        let mut temb = self.time_embedding(dev, times)?;
        if let Some(p) = prompt {
            temb = ops::add(dev, &temb, p)?;
        }
        let silu_t = ops::silu(dev, &temb)?;
        let tables = self.res_blocks().iter().map(|b| b.time_table(dev, &silu_t)).collect::<Result<_>>()?;
        Ok(TimeConditioning { tables, times: times.to_vec() })
    }

    /// Every level's attention, in the order `forward` runs them.
    pub fn attentions(&self) -> Vec<&ResidualAttention> {
        let mut v: Vec<_> = self.downs.iter().map(|l| &l.attn).collect();
        v.push(&self.mid_attn);
        v.extend(self.ups.iter().map(|l| &l.attn));
        v
    }

    /// The image embedding `context` [1, context_dim] prepared for every step.
    pub fn image_context(&self, dev: &Device, context: &Tensor) -> Result<ImageContext> {
        let cross = self
            .attentions()
            .into_iter()
            .filter_map(|a| a.spatial().map(|s| s.cross_vector(dev, context)))
            .collect::<Result<_>>()?;
        Ok(ImageContext { cross })
    }

    /// Inputs are reflect-padded to a multiple of this (2^depth).
    pub fn padding_multiple(&self) -> usize {
        1 << self.config.depth()
    }

    /// The shortest side an input may have: reflect padding needs more pixels than it adds.
    pub fn min_side(&self) -> usize {
        self.padding_multiple() / 2 + 1
    }

    /// Bytes per input pixel of the widest activation (the one that meets the binding
    /// limit first): the skip concatenations of the up levels, LinearAttention's q, k and
    /// v, the final concatenation, each at its level's resolution.
    pub fn widest_bytes_per_pixel(&self) -> usize {
        let dims = self.config.dims();
        let shrink = if self.config.downscale { 4 } else { 1 };
        let levels = (0..self.config.depth()).map(|i| (dims[i + 1] + dims[i]).max(LINEAR_ATTENTION_HIDDEN).div_ceil(shrink << (2 * i)));
        4 * levels.chain([2 * self.config.nf]).max().unwrap_or(0)
    }

    /// The predicted noise for state `xt` [1, C, H, W] given `cond` (the LQ image), the
    /// time `t` (one of those `time` was built for), and the image context (from
    /// [`ConditionalUNet::image_context`]). Any H, W: the input is reflect-padded to a
    /// multiple of 2^depth and the output cropped back.
    pub fn forward(&self, dev: &Device, xt: &Tensor, cond: &Tensor, time: &TimeConditioning, t: f32, image: &ImageContext) -> Result<Tensor> {
        let row = time.row(t)?;
        if xt.shape() != cond.shape() || xt.shape().len() != 4 || xt.dim(1) != self.config.in_nc {
            return shape_err!("UNet input {:?} and condition {:?} must both be [1, {}, H, W]", xt.shape(), cond.shape(), self.config.in_nc);
        }
        let (h, w) = (xt.dim(2), xt.dim(3));
        let m = self.padding_multiple();
        let (ph, pw) = (h.next_multiple_of(m), w.next_multiple_of(m));
        if h.min(w) < self.min_side() {
            return shape_err!("an image of {w}x{h} is too small for this model: each side must be at least {} pixels", self.min_side());
        }
        // The input is torch.cat([xt - cond, cond], 1), reflect-padded: init_conv gathers
        // the concatenation itself.
        let diff = ops::sub(dev, xt, cond)?;
        let (diff, cond) = if (ph, pw) != (h, w) {
            (ops::reflect_pad(dev, &diff, ph, pw)?, ops::reflect_pad(dev, cond, ph, pw)?)
        } else {
            (diff, cond.clone())
        };
        let x0 = self.init_conv.forward(dev, ConvInput::concat(&diff, &cond))?;
        let mut x = match &self.downscale {
            Some((down, _)) => down.forward(dev, &x0)?,
            None => x0.clone(),
        };
        // The tables come in res_blocks() order, which is the order of the calls below.
        let mut tables = time.tables.iter();
        let mut table = || tables.next().ok_or_else(|| Error::Shape("time conditioning of another model".into()));
        // The cross-attention vectors likewise, in attentions() order.
        let mut cross = image.cross.iter();
        let mut attend = |attn: &ResidualAttention, x: &Tensor| -> Result<Tensor> {
            let c = attn.spatial().map(|_| cross.next().ok_or_else(|| Error::Shape("image context of another model".into()))).transpose()?;
            attn.forward(dev, x, c)
        };
        let mut skips = Vec::with_capacity(2 * self.downs.len());
        for level in &self.downs {
            x = level.block1.forward(dev, &x, table()?, row)?;
            skips.push(x.clone());
            x = level.block2.forward(dev, &x, table()?, row)?;
            x = attend(&level.attn, &x)?;
            skips.push(x.clone());
            x = level.resample.forward(dev, &x)?;
        }
        x = self.mid_block1.forward(dev, &x, table()?, row)?;
        x = attend(&self.mid_attn, &x)?;
        x = self.mid_block2.forward(dev, &x, table()?, row)?;
        for level in &self.ups {
            x = level.block1.forward(dev, ConvInput::concat(&x, &skips.pop().unwrap()), table()?, row)?;
            x = level.block2.forward(dev, ConvInput::concat(&x, &skips.pop().unwrap()), table()?, row)?;
            x = attend(&level.attn, &x)?;
            x = level.resample.forward(dev, &x)?;
        }
        if let Some((_, up)) = &self.downscale {
            x = up.forward(dev, ConvInput::upsampled(&x))?;
        }
        x = self.final_res_block.forward(dev, ConvInput::concat(&x, &x0), table()?, row)?;
        let out = self.final_conv.forward(dev, &x)?;
        if (ph, pw) != (h, w) {
            ops::crop(dev, &out, h, w)
        } else {
            Ok(out)
        }
    }
}
