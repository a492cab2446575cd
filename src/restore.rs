//! Restoring an image (spec section 1): DA-CLIP embeddings of the image, then the IR-SDE
//! sampler from `LQ + max_sigma * z` down to t = 0 with the UNet predicting the noise at
//! every step, then clamp and round to 8 bits. Runs natively and in the browser.

use crate::error::{Error, Result};
use crate::gpu::{Gpu, Tensor};
use crate::models::clip::preprocess::{clip_input, ImageRef};
use crate::models::clip::DaClip;
use crate::models::unet::ConditionalUNet;
use crate::ops::{sde_update, Noise};
use crate::sde::{IrSde, Sampler, PUBLISHED_T};
use crate::weights::{Checkpoint, GpuDType};

/// An 8-bit RGB image, row-major.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RgbImage {
    pub width: usize,
    pub height: usize,
    pub data: Vec<u8>,
}

#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// Network evaluations; 100 is the published setting, fewer follow the original's
    /// `sample_T` scaling.
    pub steps: usize,
    /// Seeds the sampler's noise: the same seed gives the same output on the same adapter.
    pub seed: u64,
    pub sampler: Sampler,
    /// Read back a small preview of the state after every step (costs a readback).
    pub preview: bool,
}

impl Default for RestoreOptions {
    fn default() -> Self {
        RestoreOptions { steps: PUBLISHED_T, seed: 0, sampler: Sampler::Posterior, preview: false }
    }
}

/// What the progress callback receives after each step.
pub struct StepInfo<'a> {
    /// 1-based.
    pub step: usize,
    pub total: usize,
    /// The current state, clamped, at most 128 pixels on its longer side.
    pub preview: Option<&'a RgbImage>,
}

/// Longest side of the step preview.
const PREVIEW_SIDE: usize = 128;

pub struct Restorer {
    pub daclip: DaClip,
    pub unet: ConditionalUNet,
}

impl Restorer {
    pub fn load(gpu: &Gpu, daclip: &Checkpoint, unet: &Checkpoint, dtype: GpuDType) -> Result<Restorer> {
        let daclip = DaClip::load(gpu, daclip, dtype)?;
        let unet = ConditionalUNet::load(gpu, unet, dtype)?;
        let (e, c) = (daclip.config.embed_dim, unet.config.context_dim);
        if (unet.config.use_degra_context || unet.config.use_image_context) && e != c {
            return Err(Error::WeightsMismatch(format!(
                "the UNet expects DA-CLIP embeddings of width {c}, but this DA-CLIP produces {e}: the two checkpoints do not belong together"
            )));
        }
        if unet.config.in_nc != 3 || unet.config.out_nc != 3 {
            return Err(Error::WeightsMismatch(format!("the UNet works on {} channels; RGB images need 3", unet.config.in_nc)));
        }
        Ok(Restorer { daclip, unet })
    }

    /// Restores `image`. `on_step` is called after every step (once the GPU has finished
    /// it); returning false cancels, and `restore` returns [`Error::Cancelled`].
    pub async fn restore(&self, gpu: &Gpu, image: ImageRef<'_>, options: &RestoreOptions, on_step: &mut dyn FnMut(StepInfo) -> bool) -> Result<RgbImage> {
        image.check()?;
        let (w, h) = (image.width, image.height);
        let sde = IrSde::published(options.steps)?;

        let size = self.daclip.config.vision_cfg.image_size;
        let clip = clip_input(image, size)?;
        let enc = self.daclip.encode_image(gpu, &gpu.upload(&[1, 3, size, size], &clip.pixels)?)?;

        let mut lq = vec![0.0f32; 3 * w * h];
        for (i, px) in image.data.chunks(image.channels).enumerate() {
            for c in 0..3 {
                lq[c * w * h + i] = px[c] as f32 / 255.0;
            }
        }
        let lq = gpu.upload(&[1, 3, h, w], &lq)?;
        let prompt = self.unet.prompt_embedding(gpu, &enc.degra_features)?;
        let times: Vec<f32> = (1..=sde.t).map(|t| sde.network_time(t)).collect();
        let time = self.unet.time_conditioning(gpu, &times, prompt.as_ref())?;

        // x = LQ + max_sigma * z: stream 0 of the seed; step t uses stream t.
        let seeded = |stream: u32| Noise::Seeded { seed: options.seed, stream };
        let mut x = sde_update(gpu, &lq, &lq, 0.0, None, (seeded(0), sde.max_sigma as f32))?;
        let total = sde.t;
        for t in (1..=total).rev() {
            let noise = self.unet.forward(gpu, &x, &lq, &time, sde.network_time(t), &enc.image_features)?;
            let u = sde.step(options.sampler, t);
            x = sde_update(gpu, &lq, &x, u.a as f32, Some((&noise, u.b as f32)), (seeded(t as u32), u.c as f32))?;
            // Waiting here keeps progress truthful, the queue short and the page responsive.
            gpu.sync().await?;
            let preview = match options.preview {
                true => Some(downsample(&to_rgb(gpu, &x).await?, PREVIEW_SIDE)),
                false => None,
            };
            if !on_step(StepInfo { step: total - t + 1, total, preview: preview.as_ref() }) {
                return Err(Error::Cancelled);
            }
        }
        to_rgb(gpu, &x).await
    }
}

/// A [1, 3, H, W] tensor in [0, 1] to 8 bits: clamp, `round(x * 255)` (half to even, as
/// numpy rounds in the original's `tensor2img`). Non-finite values are an error, never a
/// silently black image.
async fn to_rgb(gpu: &Gpu, x: &Tensor) -> Result<RgbImage> {
    let (h, w) = (x.dim(2), x.dim(3));
    let v = gpu.read(x).await?;
    if let Some(bad) = v.iter().find(|v| !v.is_finite()) {
        return Err(Error::NonFinite(format!("the restored image contains {bad}; the weights may be broken")));
    }
    let mut data = vec![0u8; 3 * w * h];
    for (i, px) in data.chunks_mut(3).enumerate() {
        for (c, out) in px.iter_mut().enumerate() {
            *out = (v[c * w * h + i].clamp(0.0, 1.0) * 255.0).round_ties_even() as u8;
        }
    }
    Ok(RgbImage { width: w, height: h, data })
}

/// Nearest-neighbour reduction so that the longer side is at most `side`.
fn downsample(img: &RgbImage, side: usize) -> RgbImage {
    let step = img.width.max(img.height).div_ceil(side).max(1);
    let (w, h) = (img.width.div_ceil(step), img.height.div_ceil(step));
    let mut data = Vec::with_capacity(3 * w * h);
    for y in 0..h {
        for x in 0..w {
            let i = 3 * (y * step * img.width + x * step);
            data.extend_from_slice(&img.data[i..i + 3]);
        }
    }
    RgbImage { width: w, height: h, data }
}
