//! The ConditionalUNet's configuration, inferred from a checkpoint's tensor shapes, and
//! the exact tensor list a configuration implies.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::weights::TensorSpec;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UNetConfig {
    pub in_nc: usize,
    pub out_nc: usize,
    pub nf: usize,
    pub ch_mult: Vec<usize>,
    /// Width of the DA-CLIP embeddings (512 for ViT-B/32).
    pub context_dim: usize,
    /// The degradation embedding steers the time embedding (`prompt`, `text_mlp`, `prompt_mlp`).
    pub use_degra_context: bool,
    /// The SpatialTransformers cross-attend to the image embedding.
    pub use_image_context: bool,
    /// Wild-IR's `scale: 0.5`: a stride-2 `downsample` after `init_conv` and an
    /// `upsample` before the last concatenation.
    pub downscale: bool,
}

/// LinearAttention's fixed size: 4 heads of 32 channels.
pub const LINEAR_ATTENTION_HIDDEN: usize = 128;

impl UNetConfig {
    pub fn time_dim(&self) -> usize {
        4 * self.nf
    }

    pub fn depth(&self) -> usize {
        self.ch_mult.len()
    }

    /// Channel widths `[1] + ch_mult` times nf.
    pub fn dims(&self) -> Vec<usize> {
        std::iter::once(1).chain(self.ch_mult.iter().copied()).map(|m| m * self.nf).collect()
    }

    /// Reads the configuration off a checkpoint: `shape_of(key)` gives a tensor's shape.
    pub fn infer(shape_of: impl Fn(&str) -> Option<Vec<usize>>) -> Result<UNetConfig> {
        let need = |key: &str| shape_of(key).ok_or_else(|| Error::WeightsMismatch(format!("missing tensor `{key}`, needed to infer the UNet's configuration")));
        let init = need("init_conv.weight")?;
        let fin = need("final_conv.weight")?;
        if init.len() != 4 || fin.len() != 4 || init[1] % 2 != 0 {
            return Err(Error::WeightsMismatch(format!("init_conv.weight {init:?} / final_conv.weight {fin:?} are not conv weights of a ConditionalUNet")));
        }
        let nf = init[0];
        let mut ch_mult = Vec::new();
        // downs.{i}.3 is a Downsample (a conv with bias) or, at the last level, a plain conv.
        while let Some(s) = shape_of(&format!("downs.{}.3.weight", ch_mult.len())) {
            let out = s.first().copied().unwrap_or(0);
            if nf == 0 || out == 0 || out % nf != 0 {
                return Err(Error::WeightsMismatch(format!("downs.{}.3.weight has shape {s:?}: its output channels are not a multiple of nf = {nf}", ch_mult.len())));
            }
            ch_mult.push(out / nf);
        }
        if ch_mult.is_empty() {
            return Err(Error::WeightsMismatch("no `downs.0.3.weight`: not a ConditionalUNet checkpoint".into()));
        }
        let deepest = ch_mult.len() - 1;
        let to_k = shape_of(&format!("downs.{deepest}.2.fn.fn.transformer_blocks.0.attn2.to_k.weight"));
        let use_degra_context = shape_of("prompt").is_some();
        let context_dim = match (&to_k, shape_of("text_mlp.0.weight")) {
            (_, Some(t)) if use_degra_context => t.get(1).copied().unwrap_or(0),
            (Some(k), _) => k.get(1).copied().unwrap_or(0),
            _ => 0,
        };
        Ok(UNetConfig {
            in_nc: init[1] / 2,
            out_nc: fin[0],
            nf,
            ch_mult,
            context_dim,
            use_degra_context,
            use_image_context: to_k.is_some(),
            downscale: shape_of("downsample.weight").is_some(),
        })
    }

    /// Refuses a configuration no ConditionalUNet has (zero widths, absurd depths, a
    /// context of width 0 where one is used) before anything is sized from it: a config
    /// may come from a file's metadata.
    pub fn validate(&self) -> Result<()> {
        let within = |x: usize, max: usize| (1..=max).contains(&x);
        let context_used = self.use_degra_context || self.use_image_context;
        let ok = within(self.in_nc, 64)
            && within(self.out_nc, 64)
            && within(self.nf, 4096)
            && within(self.ch_mult.len(), 16)
            && self.ch_mult.iter().all(|&m| within(m, 64))
            && self.context_dim <= 16384
            && (!context_used || self.context_dim > 0);
        if ok {
            return Ok(());
        }
        Err(Error::WeightsMismatch(format!(
            "not a ConditionalUNet configuration: in_nc {}, out_nc {}, nf {}, ch_mult {:?}, context_dim {}",
            self.in_nc, self.out_nc, self.nf, self.ch_mult, self.context_dim
        )))
    }

    /// Every tensor of the checkpoint.
    pub fn expected_tensors(&self) -> TensorSpec {
        let mut t = TensorSpec::new();
        let (nf, td) = (self.nf, self.time_dim());
        let dims = self.dims();
        let depth = self.depth();
        t.push(("init_conv.weight".into(), vec![nf, 2 * self.in_nc, 7, 7]));
        if self.downscale {
            t.push(("downsample.weight".into(), vec![nf, nf, 4, 4]));
            t.push(("downsample.bias".into(), vec![nf]));
            t.push(("upsample.1.weight".into(), vec![nf, nf, 3, 3]));
            t.push(("upsample.1.bias".into(), vec![nf]));
        }
        t.push(("time_mlp.1.weight".into(), vec![td, nf]));
        t.push(("time_mlp.1.bias".into(), vec![td]));
        t.push(("time_mlp.3.weight".into(), vec![td, td]));
        t.push(("time_mlp.3.bias".into(), vec![td]));
        if self.use_degra_context {
            t.push(("prompt".into(), vec![1, td]));
            t.push(("text_mlp.0.weight".into(), vec![td, self.context_dim]));
            t.push(("text_mlp.0.bias".into(), vec![td]));
            t.push(("text_mlp.2.weight".into(), vec![td, td]));
            t.push(("text_mlp.2.bias".into(), vec![td]));
            t.push(("prompt_mlp.weight".into(), vec![td, td]));
            t.push(("prompt_mlp.bias".into(), vec![td]));
        }
        for i in 0..depth {
            let (din, dout) = (dims[i], dims[i + 1]);
            let p = format!("downs.{i}.");
            res_block(&mut t, &format!("{p}0."), din, din, td);
            res_block(&mut t, &format!("{p}1."), din, din, td);
            self.attention(&mut t, &format!("{p}2."), din, i == depth - 1);
            conv(&mut t, &format!("{p}3."), dout, din, if i < depth - 1 { 4 } else { 3 }, i < depth - 1);
        }
        let mid = dims[depth];
        res_block(&mut t, "mid_block1.", mid, mid, td);
        self.attention(&mut t, "mid_attn.", mid, true);
        res_block(&mut t, "mid_block2.", mid, mid, td);
        for (j, i) in (0..depth).rev().enumerate() {
            let (din, dout) = (dims[i], dims[i + 1]);
            let p = format!("ups.{j}.");
            res_block(&mut t, &format!("{p}0."), dout + din, dout, td);
            res_block(&mut t, &format!("{p}1."), dout + din, dout, td);
            self.attention(&mut t, &format!("{p}2."), dout, i == depth - 1);
            if i > 0 {
                conv(&mut t, &format!("{p}3.1."), din, dout, 3, true);
            } else {
                conv(&mut t, &format!("{p}3."), din, dout, 3, false);
            }
        }
        res_block(&mut t, "final_res_block.", 2 * nf, nf, td);
        conv(&mut t, "final_conv.", self.out_nc, nf, 3, true);
        t
    }

    /// `Residual(PreNorm(c, A))` at prefix `p`: A is a SpatialTransformer where `spatial`
    /// (and the model has one), else LinearAttention.
    fn attention(&self, t: &mut TensorSpec, p: &str, c: usize, spatial: bool) {
        t.push((format!("{p}fn.norm.g"), vec![1, c, 1, 1]));
        let p = format!("{p}fn.fn.");
        if spatial && self.use_image_context {
            spatial_transformer(t, &p, c, self.context_dim);
        } else {
            let h = LINEAR_ATTENTION_HIDDEN;
            t.push((format!("{p}to_qkv.weight"), vec![3 * h, c, 1, 1]));
            t.push((format!("{p}to_out.0.weight"), vec![c, h, 1, 1]));
            t.push((format!("{p}to_out.0.bias"), vec![c]));
            t.push((format!("{p}to_out.1.g"), vec![1, c, 1, 1]));
        }
    }
}

fn conv(t: &mut TensorSpec, p: &str, cout: usize, cin: usize, k: usize, bias: bool) {
    t.push((format!("{p}weight"), vec![cout, cin, k, k]));
    if bias {
        t.push((format!("{p}bias"), vec![cout]));
    }
}

fn res_block(t: &mut TensorSpec, p: &str, din: usize, dout: usize, time_dim: usize) {
    t.push((format!("{p}mlp.1.weight"), vec![2 * dout, time_dim]));
    t.push((format!("{p}mlp.1.bias"), vec![2 * dout]));
    conv(t, &format!("{p}block1.proj."), dout, din, 3, false);
    conv(t, &format!("{p}block2.proj."), dout, dout, 3, false);
    if din != dout {
        conv(t, &format!("{p}res_conv."), dout, din, 1, false);
    }
}

fn spatial_transformer(t: &mut TensorSpec, p: &str, c: usize, context_dim: usize) {
    t.push((format!("{p}norm.weight"), vec![c]));
    t.push((format!("{p}norm.bias"), vec![c]));
    conv(t, &format!("{p}proj_in."), c, c, 1, true);
    let b = format!("{p}transformer_blocks.0.");
    for (attn, kv_dim) in [("attn1", c), ("attn2", context_dim)] {
        t.push((format!("{b}{attn}.to_q.weight"), vec![c, c]));
        t.push((format!("{b}{attn}.to_k.weight"), vec![c, kv_dim]));
        t.push((format!("{b}{attn}.to_v.weight"), vec![c, kv_dim]));
        t.push((format!("{b}{attn}.to_out.0.weight"), vec![c, c]));
        t.push((format!("{b}{attn}.to_out.0.bias"), vec![c]));
    }
    t.push((format!("{b}ff.net.0.proj.weight"), vec![8 * c, c]));
    t.push((format!("{b}ff.net.0.proj.bias"), vec![8 * c]));
    t.push((format!("{b}ff.net.2.weight"), vec![c, 4 * c]));
    t.push((format!("{b}ff.net.2.bias"), vec![c]));
    for n in ["norm1", "norm2", "norm3"] {
        t.push((format!("{b}{n}.weight"), vec![c]));
        t.push((format!("{b}{n}.bias"), vec![c]));
    }
    conv(t, &format!("{p}proj_out."), c, c, 1, true);
}
