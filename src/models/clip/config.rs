//! The open_clip model configuration of a DA-CLIP checkpoint and the tensors it implies.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::weights::TensorSpec;

/// The ten degradations the published model was trained to tell apart, in the order of
/// its training (and of [`STORED_TEXT_FEATURES`]).
pub const DEGRADATIONS: [&str; 10] =
    ["motion-blurry", "hazy", "jpeg-compressed", "low-light", "noisy", "raindrop", "rainy", "shadowed", "snowy", "uncompleted"];

/// In files converted without the text tower (`convert --no-text`): the text features of
/// [`DEGRADATIONS`], [10, embed_dim], computed by the dropped tower at conversion.
pub const STORED_TEXT_FEATURES: &str = "degradation_text_features";

/// Bounds of [`DaClipConfig::validate`], far beyond any published CLIP (ViT-bigG: width
/// 1664, 48 layers).
const MAX_WIDTH: usize = 16384;
const MAX_LAYERS: usize = 256;
const MAX_IMAGE_SIZE: usize = 4096;
const MAX_CONTEXT: usize = 4096;
const MAX_VOCABULARY: usize = 1 << 20;

/// `vision_cfg` of an open_clip model config (the fields a ViT needs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VisionConfig {
    pub image_size: usize,
    pub layers: usize,
    pub width: usize,
    pub patch_size: usize,
    #[serde(default = "default_head_width")]
    pub head_width: usize,
}

/// `text_cfg` of an open_clip model config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TextConfig {
    pub context_length: usize,
    pub vocab_size: usize,
    pub width: usize,
    pub heads: usize,
    pub layers: usize,
}

/// An open_clip model config (schema of `daclip_ViT-B-32.json`). `text_cfg` is absent
/// in converted files whose text tower was dropped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DaClipConfig {
    pub embed_dim: usize,
    pub vision_cfg: VisionConfig,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text_cfg: Option<TextConfig>,
}

fn default_head_width() -> usize {
    64
}

impl VisionConfig {
    /// Patches plus the class token.
    pub fn tokens(&self) -> usize {
        let grid = self.image_size / self.patch_size;
        grid * grid + 1
    }
}

impl DaClipConfig {
    /// The published DA-CLIP ViT-B/32 (`daclip_ViT-B-32.json`).
    pub fn vit_b_32() -> Self {
        DaClipConfig {
            embed_dim: 512,
            vision_cfg: VisionConfig { image_size: 224, layers: 12, width: 768, patch_size: 32, head_width: 64 },
            text_cfg: Some(TextConfig { context_length: 77, vocab_size: 49408, width: 512, heads: 8, layers: 12 }),
        }
    }

    /// The published DA-CLIP ViT-L/14 of the Wild-IR pair (`wild-daclip_ViT-L-14.pt`).
    pub fn vit_l_14() -> Self {
        DaClipConfig {
            embed_dim: 768,
            vision_cfg: VisionConfig { image_size: 224, layers: 24, width: 1024, patch_size: 14, head_width: 64 },
            text_cfg: Some(TextConfig { context_length: 77, vocab_size: 49408, width: 768, heads: 12, layers: 12 }),
        }
    }

    /// The configuration of a DA-CLIP checkpoint that carries none (every published
    /// `.pt`), read off its tensor shapes: widths, patch size, image size, depths and the
    /// embedding width are all in the shapes; the number of attention heads is not, and is
    /// taken to be width / 64, as in every published CLIP (ViT-B/32, ViT-L/14: heads of
    /// 64 channels). A checkpoint with other heads needs its open_clip config.
    pub fn infer(shape_of: impl Fn(&str) -> Option<Vec<usize>>) -> Result<DaClipConfig> {
        const HEAD_WIDTH: usize = 64;
        let need = |key: &str| shape_of(key).ok_or_else(|| Error::WeightsMismatch(format!("missing tensor `{key}`, needed to read the DA-CLIP configuration off the shapes")));
        let bad = |what: String| Error::WeightsMismatch(format!("{what}: not a CLIP of heads of {HEAD_WIDTH} channels; pass the checkpoint's open_clip config (--clip-config)"));
        let conv = need("clip.visual.conv1.weight")?;
        let [width, 3, patch, patch2] = conv[..] else { return Err(bad(format!("clip.visual.conv1.weight has shape {conv:?}"))) };
        let positions = need("clip.visual.positional_embedding")?;
        let position_count = positions.first().copied().unwrap_or(0);
        let grid = (position_count.saturating_sub(1) as f64).sqrt() as usize;
        let proj = need("clip.visual.proj")?;
        if patch != patch2 || grid * grid + 1 != position_count || proj.len() != 2 || width % HEAD_WIDTH != 0 {
            return Err(bad(format!("vision tower of width {width}, patches {patch}x{patch2}, positions {positions:?}")));
        }
        let layers = |prefix: &str| (0..).take_while(|i| shape_of(&format!("{prefix}resblocks.{i}.ln_1.weight")).is_some()).count();
        let vision_cfg = VisionConfig { image_size: grid * patch, layers: layers("clip.visual.transformer."), width, patch_size: patch, head_width: HEAD_WIDTH };
        let text_cfg = match shape_of("clip.token_embedding.weight") {
            None => None, // a converted file without its text tower
            Some(tokens) => {
                let context = need("clip.positional_embedding")?;
                let (&[vocab_size, w], Some(&context_length)) = (&tokens[..], context.first()) else {
                    return Err(bad(format!("token embedding {tokens:?}, positional embedding {context:?}")));
                };
                if w % HEAD_WIDTH != 0 {
                    return Err(bad(format!("text tower of width {w}")));
                }
                Some(TextConfig { context_length, vocab_size, width: w, heads: w / HEAD_WIDTH, layers: layers("clip.transformer.") })
            }
        };
        Ok(DaClipConfig { embed_dim: proj[1], vision_cfg, text_cfg })
    }

    /// Refuses a configuration no CLIP has (zero sizes, widths that do not split into
    /// heads, patches that do not tile the image, absurd depths) before anything is sized
    /// from it: a config comes from a file's metadata or the user, and the tensor list it
    /// implies would otherwise divide by zero or grow without bound.
    pub fn validate(&self) -> Result<()> {
        let (v, e) = (&self.vision_cfg, self.embed_dim);
        let bad = |what: String| Err(Error::WeightsMismatch(format!("not a CLIP configuration: {what}")));
        let within = |x: usize, max: usize| (1..=max).contains(&x);
        if !within(e, MAX_WIDTH) {
            return bad(format!("embed_dim {e} (1 to {MAX_WIDTH})"));
        }
        if !within(v.width, MAX_WIDTH) || !within(v.head_width, v.width) || v.width % v.head_width != 0 {
            return bad(format!("vision width {} in heads of {}", v.width, v.head_width));
        }
        if !within(v.layers, MAX_LAYERS) {
            return bad(format!("{} vision layers (1 to {MAX_LAYERS})", v.layers));
        }
        if !within(v.image_size, MAX_IMAGE_SIZE) || !within(v.patch_size, v.image_size) || v.image_size % v.patch_size != 0 {
            return bad(format!("image size {} in patches of {}", v.image_size, v.patch_size));
        }
        if let Some(t) = &self.text_cfg {
            if !within(t.width, MAX_WIDTH) || !within(t.heads, t.width) || t.width % t.heads != 0 {
                return bad(format!("text width {} in {} heads", t.width, t.heads));
            }
            if !within(t.layers, MAX_LAYERS) || !within(t.context_length, MAX_CONTEXT) || !within(t.vocab_size, MAX_VOCABULARY) {
                return bad(format!("{} text layers, context {}, vocabulary {}", t.layers, t.context_length, t.vocab_size));
            }
        }
        Ok(())
    }

    /// Whether `key` belongs to the text tower (dropped by `convert --no-text`).
    pub fn is_text_tensor(key: &str) -> bool {
        key == "clip.logit_scale" || key == "clip.text_projection" || ["clip.token_embedding.", "clip.positional_embedding", "clip.transformer.", "clip.ln_final."].iter().any(|p| key.starts_with(p))
    }

    /// Every tensor of the checkpoint (after dropping the `visual.*` aliases).
    pub fn expected_tensors(&self) -> TensorSpec {
        let mut t = TensorSpec::new();
        let v = &self.vision_cfg;
        vision_tower(&mut t, "clip.visual.", "transformer.", v, self.embed_dim);
        vision_tower(&mut t, "visual_control.", "transformer.transformer.", v, self.embed_dim);
        for i in 0..v.layers {
            t.push((format!("visual_control.transformer.zero_modules.{i}.weight"), vec![v.width, v.width]));
            t.push((format!("visual_control.transformer.zero_modules.{i}.bias"), vec![v.width]));
        }
        if let Some(tc) = &self.text_cfg {
            t.push(("clip.token_embedding.weight".into(), vec![tc.vocab_size, tc.width]));
            t.push(("clip.positional_embedding".into(), vec![tc.context_length, tc.width]));
            for i in 0..tc.layers {
                block(&mut t, &format!("clip.transformer.resblocks.{i}."), tc.width);
            }
            t.push(("clip.ln_final.weight".into(), vec![tc.width]));
            t.push(("clip.ln_final.bias".into(), vec![tc.width]));
            t.push(("clip.text_projection".into(), vec![tc.width, self.embed_dim]));
            t.push(("clip.logit_scale".into(), vec![]));
        } else {
            t.push((STORED_TEXT_FEATURES.into(), vec![DEGRADATIONS.len(), self.embed_dim]));
        }
        t.push(("logit_scale".into(), vec![]));
        t
    }
}

fn vision_tower(t: &mut TensorSpec, p: &str, blocks: &str, v: &VisionConfig, embed_dim: usize) {
    let w = v.width;
    let grid = v.image_size / v.patch_size;
    t.push((format!("{p}conv1.weight"), vec![w, 3, v.patch_size, v.patch_size]));
    t.push((format!("{p}class_embedding"), vec![w]));
    t.push((format!("{p}positional_embedding"), vec![grid * grid + 1, w]));
    t.push((format!("{p}ln_pre.weight"), vec![w]));
    t.push((format!("{p}ln_pre.bias"), vec![w]));
    for i in 0..v.layers {
        block(t, &format!("{p}{blocks}resblocks.{i}."), w);
    }
    t.push((format!("{p}ln_post.weight"), vec![w]));
    t.push((format!("{p}ln_post.bias"), vec![w]));
    t.push((format!("{p}proj"), vec![w, embed_dim]));
}

/// A pre-norm transformer block (open_clip `ResidualAttentionBlock`, MLP ratio 4).
fn block(t: &mut TensorSpec, p: &str, w: usize) {
    for (name, shape) in [
        ("ln_1.weight", vec![w]),
        ("ln_1.bias", vec![w]),
        ("attn.in_proj_weight", vec![3 * w, w]),
        ("attn.in_proj_bias", vec![3 * w]),
        ("attn.out_proj.weight", vec![w, w]),
        ("attn.out_proj.bias", vec![w]),
        ("ln_2.weight", vec![w]),
        ("ln_2.bias", vec![w]),
        ("mlp.c_fc.weight", vec![4 * w, w]),
        ("mlp.c_fc.bias", vec![4 * w]),
        ("mlp.c_proj.weight", vec![w, 4 * w]),
        ("mlp.c_proj.bias", vec![w]),
    ] {
        t.push((format!("{p}{name}"), shape));
    }
}
