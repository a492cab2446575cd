//! DA-CLIP (spec section 3): CLIP plus a controller, a trained copy of the image tower
//! whose blocks each feed a zero-initialised Linear. The controller's pooled output is the
//! degradation embedding; its Linear outputs are added to CLIP's stream after CLIP's
//! blocks in REVERSED order (block 0 gets the last controller layer's output), because the
//! published code pops them off a Python list. The trained weights depend on that order.

use std::cell::RefCell;
use std::collections::HashMap;

use super::preprocess::{clip_input, ImageRef};
use super::text::TextTransformer;
use super::tokenizer::tokenize;
use super::vision::VisionTransformer;
use super::{DaClipConfig, DEGRADATIONS, STORED_TEXT_FEATURES};
use crate::error::{Error, Result};
use crate::device::{Device, Tensor};
use crate::nn::Linear;
use crate::ops;
use crate::weights::{DeviceDType, Source, Vb};
use crate::models::{Checkpoint, ConvertOptions, ModelKind, StoreDType, convert};

/// The two unnormalised embeddings of one image.
#[derive(Clone)]
pub struct ImageEncoding {
    /// Content features of the would-be clean image: [1, embed_dim].
    pub image_features: Tensor,
    /// Degradation features: [1, embed_dim].
    pub degra_features: Tensor,
    /// The controller's zero-module outputs, one [1, tokens, width] per layer (debug aid).
    pub control_hiddens: Vec<Tensor>,
}

/// Degradation probabilities, most likely first.
#[derive(Debug, Clone)]
pub struct Classification {
    pub labels: Vec<String>,
    pub probabilities: Vec<f32>,
    pub image_features: Vec<f32>,
    pub degradation_features: Vec<f32>,
}

pub struct DaClip {
    pub config: DaClipConfig,
    /// `clip.visual`: CLIP's frozen image tower.
    pub visual: VisionTransformer,
    /// `visual_control`: the controller tower.
    pub visual_control: VisionTransformer,
    /// `visual_control.transformer.zero_modules`.
    pub zero_modules: Vec<Linear>,
    /// `clip.token_embedding` .. `clip.text_projection`; absent in `--no-text` files.
    pub text: Option<TextTransformer>,
    /// Text features of [`DEGRADATIONS`], [10, embed_dim], when the file carries them.
    stored_text_features: Option<Vec<Vec<f32>>>,
    /// Text features computed so far, by label: the text tower runs once per label.
    text_features: RefCell<HashMap<String, Vec<f32>>>,
    /// The last image encoded, keyed by what the towers saw (the 8-bit crop): classify
    /// then restore of one image runs the towers once.
    last_encoding: RefCell<Option<(Vec<u8>, ImageEncoding)>>,
}

/// Custom labels whose text features are kept (beyond that the cache starts over).
const TEXT_FEATURE_CACHE: usize = 256;

impl DaClip {
    /// Uploads a checked DA-CLIP checkpoint, one tensor at a time.
    pub fn load(dev: &Device, ckpt: &Checkpoint, dtype: DeviceDType) -> Result<DaClip> {
        Self::load_towers(dev, ckpt, dtype, true)
    }

    /// [`DaClip::load`] for a model that ranks only the ten trained names (no custom
    /// labels): a checkpoint with a text tower and without stored features has the tower
    /// loaded alone first, run for the ten names (as `convert --no-text` does) and
    /// dropped before the image towers load. The towers are then never in memory
    /// together: ViT-L/14's text tower (0.16 GB of f16) took the browser's CPU backend
    /// from 1.4 to 1.7 GB.
    pub async fn load_without_text(dev: &Device, ckpt: &Checkpoint<'_>, dtype: DeviceDType) -> Result<DaClip> {
        let computed = match &ckpt.kind {
            ModelKind::DaClip(config) if config.text_cfg.is_some() && ckpt.weights.get(STORED_TEXT_FEATURES).is_none() => {
                Some(degradation_text_features(dev, ckpt).await?.chunks(config.embed_dim).map(<[f32]>::to_vec).collect())
            }
            _ => None,
        };
        let mut model = Self::load_towers(dev, ckpt, dtype, false)?;
        if computed.is_some() {
            model.stored_text_features = computed;
        }
        Ok(model)
    }

    fn load_towers(dev: &Device, ckpt: &Checkpoint, dtype: DeviceDType, with_text: bool) -> Result<DaClip> {
        let ModelKind::DaClip(config) = &ckpt.kind else {
            return Err(Error::WeightsMismatch(format!("expected a DA-CLIP checkpoint, got a {} one", ckpt.kind.name())));
        };
        let vb = Vb::new(&ckpt.weights, dev, dtype);
        let (v, e) = (&config.vision_cfg, config.embed_dim);
        let zero = vb.pp("visual_control.transformer.zero_modules");
        let stored_text_features = match ckpt.weights.get(STORED_TEXT_FEATURES) {
            Some(_) => Some(ckpt.weights.load(STORED_TEXT_FEATURES)?.to_f32()?.chunks(e).map(<[f32]>::to_vec).collect()),
            None => None,
        };
        Ok(DaClip {
            visual: VisionTransformer::load(dev, &vb.pp("clip.visual"), v, e, "transformer")?,
            visual_control: VisionTransformer::load(dev, &vb.pp("visual_control"), v, e, "transformer.transformer")?,
            zero_modules: (0..v.layers).map(|i| Linear::load(&zero.pp(i), v.width, v.width, true)).collect::<Result<_>>()?,
            text: config.text_cfg.as_ref().filter(|_| with_text).map(|t| TextTransformer::load(&vb.pp("clip"), t, e)).transpose()?,
            stored_text_features,
            text_features: RefCell::default(),
            last_encoding: RefCell::default(),
            config: config.clone(),
        })
    }

    /// The embeddings of an 8-bit image: preprocessed, uploaded and encoded, or taken from
    /// the last call when the image the towers see is the same.
    pub fn encode(&self, dev: &Device, image: ImageRef) -> Result<ImageEncoding> {
        let input = clip_input(image, self.config.vision_cfg.image_size)?;
        if let Some((key, enc)) = &*self.last_encoding.borrow() {
            if *key == input.resized_u8 {
                return Ok(enc.clone());
            }
        }
        // The old encoding's buffers go back to the pool before the new one is computed:
        // holding both would need one more set of them.
        *self.last_encoding.borrow_mut() = None;
        let pixels = dev.upload(&[1, 3, input.size, input.size], &input.pixels)?;
        let enc = self.encode_image(dev, &pixels)?;
        *self.last_encoding.borrow_mut() = Some((input.resized_u8, enc.clone()));
        Ok(enc)
    }

    /// `encode_image(image, control=True)` on a preprocessed image [1, 3, S, S].
    pub fn encode_image(&self, dev: &Device, image: &Tensor) -> Result<ImageEncoding> {
        let mut x = self.visual_control.embed(dev, image)?;
        let mut hiddens = Vec::with_capacity(self.zero_modules.len());
        for (block, zero) in self.visual_control.transformer.resblocks.iter().zip(&self.zero_modules) {
            x = block.forward(dev, &x, false)?;
            hiddens.push(zero.forward(dev, &x)?);
        }
        let degra_features = self.visual_control.pool(dev, &x)?;

        let mut x = self.visual.embed(dev, image)?;
        for (block, hidden) in self.visual.transformer.resblocks.iter().zip(hiddens.iter().rev()) {
            x = ops::add(dev, &block.forward(dev, &x, false)?, hidden)?;
        }
        let image_features = self.visual.pool(dev, &x)?;
        Ok(ImageEncoding { image_features, degra_features, control_hiddens: hiddens })
    }

    /// Unnormalised text features [texts, embed_dim] (needs the text tower).
    pub fn encode_text(&self, dev: &Device, texts: &[&str]) -> Result<Tensor> {
        let text = self.text.as_ref().ok_or_else(|| {
            Error::WeightsMismatch("this DA-CLIP model has no text tower (its file was converted with --no-text, or it was loaded without custom labels): it can only rank the ten built-in degradations".into())
        })?;
        let tokens: Vec<Vec<u32>> = texts.iter().map(|t| tokenize(t, text.context_length())).collect();
        text.forward(dev, &tokens)
    }

    /// Runs the text tower for the ten trained names now when the file does not store
    /// their features (an original `.pt`), so that no `classify` waits for it.
    pub async fn prepare_degradation_features(&self, dev: &Device) -> Result<()> {
        if self.stored_text_features.is_none() && self.text.is_some() {
            self.label_features(dev, None).await?;
        }
        Ok(())
    }

    /// This model's original checkpoint as f16 safetensors, for a cache: with the ten
    /// trained names' text features (as this model computes them) in place of the text
    /// tower, unless `keep_text`.
    pub async fn converted(&self, dev: &Device, source: &dyn Source, keep_text: bool, out: &mut dyn std::io::Write) -> Result<()> {
        let mut options = ConvertOptions::new(StoreDType::F16);
        options.clip_config = Some(self.config.clone());
        if !keep_text {
            options.text_features = Some(self.label_features(dev, None).await?.concat());
        }
        convert(source, options, out)?;
        Ok(())
    }

    /// Text features of `labels`, or of [`DEGRADATIONS`] when `labels` is None (taken
    /// from the file when it stores them, else computed). Each label goes through the
    /// text tower once per model; later calls take it from a cache.
    pub async fn label_features(&self, dev: &Device, labels: Option<&[&str]>) -> Result<Vec<Vec<f32>>> {
        if let (None, Some(stored)) = (labels, &self.stored_text_features) {
            return Ok(stored.clone());
        }
        let labels = labels.unwrap_or(&DEGRADATIONS);
        let mut unique: Vec<&str> = Vec::new();
        for l in labels {
            if !unique.contains(l) {
                unique.push(l);
            }
        }
        let missing: Vec<&str> = {
            let mut cache = self.text_features.borrow_mut();
            let missing: Vec<&str> = unique.iter().copied().filter(|l| !cache.contains_key(*l)).collect();
            if cache.len() + missing.len() > TEXT_FEATURE_CACHE {
                cache.clear();
                unique
            } else {
                missing
            }
        };
        if !missing.is_empty() {
            let t = self.encode_text(dev, &missing)?;
            let features = dev.read(&t).await?;
            let mut cache = self.text_features.borrow_mut();
            for (label, f) in missing.iter().zip(features.chunks(self.config.embed_dim)) {
                cache.insert(label.to_string(), f.to_vec());
            }
        }
        let cache = self.text_features.borrow();
        Ok(labels.iter().map(|l| cache[*l].clone()).collect())
    }

    /// Ranks `labels` (default: the ten trained degradations) for an 8-bit image:
    /// `softmax(100 * cos(degradation features, text features))`.
    pub async fn classify(&self, dev: &Device, image: ImageRef<'_>, labels: Option<&[&str]>) -> Result<Classification> {
        if labels.is_some_and(|l| l.is_empty()) {
            return Err(Error::Shape("classify needs at least one label".into()));
        }
        let enc = self.encode(dev, image)?;
        let text = self.label_features(dev, labels).await?;
        let image_features = dev.read(&enc.image_features).await?;
        let degradation_features = dev.read(&enc.degra_features).await?;
        let probs = probabilities(&degradation_features, &text);
        let names: Vec<String> = labels.unwrap_or(&DEGRADATIONS).iter().map(|s| s.to_string()).collect();
        let mut order: Vec<usize> = (0..names.len()).collect();
        order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]));
        Ok(Classification {
            labels: order.iter().map(|&i| names[i].clone()).collect(),
            probabilities: order.iter().map(|&i| probs[i]).collect(),
            image_features,
            degradation_features,
        })
    }
}

/// The text features of [`DEGRADATIONS`] computed by the text tower of a DA-CLIP
/// checkpoint (what `convert --no-text` stores), [10 * embed_dim].
pub async fn degradation_text_features(dev: &Device, ckpt: &Checkpoint<'_>) -> Result<Vec<f32>> {
    let ModelKind::DaClip(config) = &ckpt.kind else {
        return Err(Error::WeightsMismatch("text features need a DA-CLIP checkpoint".into()));
    };
    let text_cfg = config.text_cfg.as_ref().ok_or_else(|| Error::WeightsMismatch("this DA-CLIP file has no text tower".into()))?;
    let vb = Vb::new(&ckpt.weights, dev, DeviceDType::F32);
    let text = TextTransformer::load(&vb.pp("clip"), text_cfg, config.embed_dim)?;
    let tokens: Vec<Vec<u32>> = DEGRADATIONS.iter().map(|t| tokenize(t, text.context_length())).collect();
    dev.read(&text.forward(dev, &tokens)?).await
}

/// `softmax(100 * d_hat . t_hat)` over the texts, in f64.
pub fn probabilities(degra: &[f32], texts: &[Vec<f32>]) -> Vec<f32> {
    let unit = |v: &[f32]| {
        let n = v.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt().max(1e-12);
        v.iter().map(|&x| x as f64 / n).collect::<Vec<f64>>()
    };
    let d = unit(degra);
    let logits: Vec<f64> = texts.iter().map(|t| 100.0 * unit(t).iter().zip(&d).map(|(a, b)| a * b).sum::<f64>()).collect();
    let m = logits.iter().cloned().fold(f64::MIN, f64::max);
    let z: f64 = logits.iter().map(|l| (l - m).exp()).sum();
    logits.iter().map(|l| ((l - m).exp() / z) as f32).collect()
}
