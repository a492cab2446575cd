//! Restoring an image (spec section 1): DA-CLIP embeddings of the image, then a sampler
//! from `LQ + max_sigma * z` down to t = 0 with the UNet predicting the noise at every
//! step, then clamp and round to 8 bits. Runs natively and in the browser.

use crate::error::{Error, Result};
use crate::gpu::{Gpu, Tensor};
use crate::models::clip::preprocess::ImageRef;
use crate::models::clip::DaClip;
use crate::models::unet::{ConditionalUNet, TimeConditioning};
use crate::ops::{sde_update, Noise};
use crate::sde::{Grid, IrSde, PlannedStep, Sampler, PUBLISHED_T};
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
    /// Network evaluations. For the published posterior sampler 100 is the published
    /// setting (fewer follow the original's `sample_T` scaling); the MR samplers reach
    /// similar results in 10-20.
    pub steps: usize,
    /// Seeds the sampler's noise: the same seed gives the same output on the same adapter.
    pub seed: u64,
    pub sampler: Sampler,
    /// Time grid of the MR samplers.
    pub grid: Grid,
    /// Read back a small preview of the state after every step (costs a readback).
    pub preview: bool,
}

impl Default for RestoreOptions {
    fn default() -> Self {
        RestoreOptions { steps: PUBLISHED_T, seed: 0, sampler: Sampler::Posterior, grid: Grid::LogSnr, preview: false }
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

/// What a sampler calls at every step: the noise in state `x` at network time `t`. The
/// UNet is one; tests use an oracle that knows the answer.
pub trait NoisePredictor {
    fn predict_noise(&mut self, gpu: &Gpu, x: &Tensor, t: f32) -> Result<Tensor>;
}

/// Called after each sampling step with (step, total, the state's values when asked
/// for); returns whether to go on.
pub type AfterStep<'a> = dyn FnMut(usize, usize, Option<&[f32]>) -> bool + 'a;

/// Runs the steps of `plan` from `mu + max_sigma * z` and returns the final state.
/// `after_step(step, total, state)` runs once the GPU has finished each step, with the
/// state's values when `read_state` asks for them (a readback); returning false cancels
/// ([`Error::Cancelled`]).
#[allow(clippy::too_many_arguments)]
pub async fn sample(
    gpu: &Gpu,
    predictor: &mut dyn NoisePredictor,
    mu: &Tensor,
    max_sigma: f64,
    plan: &[PlannedStep],
    seed: u64,
    read_state: bool,
    after_step: &mut AfterStep<'_>,
) -> Result<Tensor> {
    // Noise streams: 0 for the start, i + 1 for step i.
    let seeded = |stream: usize| Noise::Seeded { seed, stream: stream as u32 };
    let mut x = sde_update(gpu, mu, mu, 0.0, None, None, (seeded(0), max_sigma as f32))?;
    let mut prev: Option<Tensor> = None;
    for (i, step) in plan.iter().enumerate() {
        let noise = predictor.predict_noise(gpu, &x, step.network_time)?;
        let q = match step.prediction {
            Some(p) => Some(sde_update(gpu, mu, &x, p.a as f32, Some((&noise, p.b as f32)), None, (Noise::None, 0.0))?),
            None => None,
        };
        let u = step.update;
        let z = if u.c != 0.0 { seeded(i + 1) } else { Noise::None };
        let prev_term = prev.as_ref().filter(|_| step.d != 0.0).map(|p| (p, step.d as f32));
        x = sde_update(gpu, mu, &x, u.a as f32, Some((&noise, u.b as f32)), prev_term, (z, u.c as f32))?;
        prev = q;
        // Waiting here keeps progress truthful, the queue short and the page responsive.
        gpu.sync().await?;
        let state = if read_state { Some(gpu.read(&x).await?) } else { None };
        if !after_step(i + 1, plan.len(), state.as_deref()) {
            return Err(Error::Cancelled);
        }
    }
    Ok(x)
}

/// The UNet as a [`NoisePredictor`] for one image.
pub struct UNetPredictor<'a> {
    unet: &'a ConditionalUNet,
    cond: &'a Tensor,
    time: TimeConditioning,
    image_context: &'a Tensor,
}

impl<'a> UNetPredictor<'a> {
    /// For the LQ image `cond` and DA-CLIP's two embeddings, at the network `times` a
    /// sampling plan will ask for (their conditioning is computed here, once).
    pub fn new(gpu: &Gpu, unet: &'a ConditionalUNet, cond: &'a Tensor, degra_context: &Tensor, image_context: &'a Tensor, times: &[f32]) -> Result<Self> {
        let prompt = unet.prompt_embedding(gpu, degra_context)?;
        let time = unet.time_conditioning(gpu, times, prompt.as_ref())?;
        Ok(UNetPredictor { unet, cond, time, image_context })
    }
}

impl NoisePredictor for UNetPredictor<'_> {
    fn predict_noise(&mut self, gpu: &Gpu, x: &Tensor, t: f32) -> Result<Tensor> {
        self.unet.forward(gpu, x, self.cond, &self.time, t, self.image_context)
    }
}

/// A DA-CLIP and a UNet that belong together.
pub struct Restorer<'m> {
    pub daclip: &'m DaClip,
    pub unet: &'m ConditionalUNet,
}

impl<'m> Restorer<'m> {
    /// Checks that the two models fit each other.
    pub fn new(daclip: &'m DaClip, unet: &'m ConditionalUNet) -> Result<Restorer<'m>> {
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

    /// Loads both checkpoints (checked) and keeps them for [`Restorer::new`].
    pub fn load_models(gpu: &Gpu, daclip: &Checkpoint, unet: &Checkpoint, dtype: GpuDType) -> Result<(DaClip, ConditionalUNet)> {
        let models = (DaClip::load(gpu, daclip, dtype)?, ConditionalUNet::load(gpu, unet, dtype)?);
        Restorer::new(&models.0, &models.1)?;
        Ok(models)
    }

    /// Restores `image`. `on_step` is called after every step (once the GPU has finished
    /// it); returning false cancels, and `restore` returns [`Error::Cancelled`].
    pub async fn restore(&self, gpu: &Gpu, image: ImageRef<'_>, options: &RestoreOptions, on_step: &mut dyn FnMut(StepInfo) -> bool) -> Result<RgbImage> {
        image.check()?;
        let (w, h) = (image.width, image.height);
        let sde = IrSde::published(PUBLISHED_T)?;
        let plan = sde.plan(options.sampler, options.steps, options.grid)?;

        let enc = self.daclip.encode_image(gpu, &self.daclip.image_input(gpu, image)?)?;

        let mut lq = vec![0.0f32; 3 * w * h];
        for (i, px) in image.data.chunks(image.channels).enumerate() {
            for c in 0..3 {
                lq[c * w * h + i] = px[c] as f32 / 255.0;
            }
        }
        let lq = gpu.upload(&[1, 3, h, w], &lq)?;
        let times: Vec<f32> = plan.iter().map(|s| s.network_time).collect();
        let mut predictor = UNetPredictor::new(gpu, self.unet, &lq, &enc.degra_features, &enc.image_features, &times)?;

        let mut after_step = |step: usize, total: usize, state: Option<&[f32]>| {
            let preview = state.map(|v| to_rgb(v, w, h).map(|img| downsample(&img, PREVIEW_SIDE)));
            match preview {
                Some(Err(_)) => true, // a non-finite preview: the final check reports it
                Some(Ok(img)) => on_step(StepInfo { step, total, preview: Some(&img) }),
                None => on_step(StepInfo { step, total, preview: None }),
            }
        };
        let x = sample(gpu, &mut predictor, &lq, sde.max_sigma, &plan, options.seed, options.preview, &mut after_step).await?;
        to_rgb(&gpu.read(&x).await?, w, h)
    }
}

/// [1, 3, H, W] values in [0, 1] to 8 bits: clamp, `round(x * 255)` (half to even, as
/// numpy rounds in the original's `tensor2img`). Non-finite values are an error, never a
/// silently black image.
fn to_rgb(v: &[f32], w: usize, h: usize) -> Result<RgbImage> {
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
