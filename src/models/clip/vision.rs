//! open_clip's `VisionTransformer` (spec section 2): patch conv, class token, positional
//! embedding, ln_pre, the blocks, ln_post on the class token, `@ proj`.

use super::transformer::Transformer;
use super::VisionConfig;
use crate::error::{shape_err, Result};
use crate::device::{Device, Tensor};
use crate::nn::LayerNorm;
use crate::ops::{self, Conv2dArgs};
use crate::weights::Vb;

pub struct VisionTransformer {
    pub conv1: Tensor,
    pub class_embedding: Tensor,
    pub positional_embedding: Tensor,
    pub ln_pre: LayerNorm,
    pub transformer: Transformer,
    pub ln_post: LayerNorm,
    pub proj: Tensor,
    cfg: VisionConfig,
    /// The index 0 as a GPU tensor: which row `pool` takes.
    class_row: Tensor,
}

impl VisionTransformer {
    /// `blocks` is where the blocks live under `vb`: `transformer` for CLIP's tower,
    /// `transformer.transformer` for the controller (its ControlTransformer wraps them).
    pub fn load(dev: &Device, vb: &Vb, cfg: &VisionConfig, embed_dim: usize, blocks: &str) -> Result<Self> {
        let (w, p) = (cfg.width, cfg.patch_size);
        let tokens = cfg.tokens();
        Ok(VisionTransformer {
            conv1: vb.pp("conv1").tensor("weight", &[w, 3, p, p])?,
            // Added to activations, so kept in f32 whatever the weights' storage.
            class_embedding: vb.tensor_f32("class_embedding", &[w])?.reshape(&[1, 1, 1, w])?,
            positional_embedding: vb.tensor_f32("positional_embedding", &[tokens, w])?,
            ln_pre: LayerNorm::load(&vb.pp("ln_pre"), w, 1e-5)?,
            transformer: Transformer::load(&vb.pp(blocks), w, cfg.layers, w / cfg.head_width)?,
            ln_post: LayerNorm::load(&vb.pp("ln_post"), w, 1e-5)?,
            proj: vb.tensor("proj", &[w, embed_dim])?,
            cfg: cfg.clone(),
            class_row: dev.upload_u32(&[1], &[0])?,
        })
    }

    /// The token stream after ln_pre: image [1, 3, S, S] -> [1, tokens, width].
    pub fn embed(&self, dev: &Device, image: &Tensor) -> Result<Tensor> {
        let (s, w, p) = (self.cfg.image_size, self.cfg.width, self.cfg.patch_size);
        if image.shape() != [1, 3, s, s] {
            return shape_err!("the image tower takes one [1, 3, {s}, {s}] image, got {:?}", image.shape());
        }
        let grid = s / p;
        let patches = ops::conv2d(dev, image, &self.conv1, None, Conv2dArgs { stride: p, padding: 0 })?;
        let patches = ops::transpose(dev, &patches.reshape(&[1, w, grid * grid])?)?; // token-major
        let x = ops::concat_channels(dev, &self.class_embedding, &patches.reshape(&[1, grid * grid, 1, w])?)?;
        let x = ops::add(dev, &x.reshape(&[1, grid * grid + 1, w])?, &self.positional_embedding)?;
        self.ln_pre.forward(dev, &x)
    }

    /// ln_post of the class token, `@ proj`: [1, tokens, width] -> [1, embed_dim].
    pub fn pool(&self, dev: &Device, x: &Tensor) -> Result<Tensor> {
        let first = ops::gather_rows(dev, &x.reshape(&[x.numel() / self.cfg.width, self.cfg.width])?, &self.class_row)?;
        ops::matmul(dev, &self.ln_post.forward(dev, &first)?, &self.proj)
    }

    /// CLIP's image tower without control: [1, 3, S, S] -> [1, embed_dim].
    pub fn forward(&self, dev: &Device, image: &Tensor) -> Result<Tensor> {
        let mut x = self.embed(dev, image)?;
        for block in &self.transformer.resblocks {
            x = block.forward(dev, &x, false)?;
        }
        self.pool(dev, &x)
    }
}
