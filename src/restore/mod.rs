//! Restoring an image (spec section 1): DA-CLIP embeddings of the image, then a sampler
//! from `LQ + max_sigma * z` down to t = 0 with the UNet predicting the noise at every
//! step, then clamp and round to 8 bits. Runs natively and in the browser.

pub mod tiles;

use std::borrow::Cow;

use crate::error::{Error, Result};
use crate::device::{Device, QueueMark, Tensor};
use crate::models::clip::preprocess::ImageRef;
use crate::models::clip::DaClip;
use crate::models::unet::{ConditionalUNet, ImageContext, TimeConditioning};
use crate::ops::{sde_update, Noise};
use crate::sde::{Grid, IrSde, PlannedStep, Sampler, Update, PUBLISHED_T};
use tiles::{check_image_size, TileHelpers, TileLayout, TileLimits, TiledSpace};
use crate::weights::DeviceDType;
use crate::models::Checkpoint;

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
    /// Tile side in pixels for images larger than one tile (None: [`TileLimits`]'s
    /// default for the adapter and model). An image that fits in one tile is restored
    /// whole.
    pub tile: Option<usize>,
    /// Overlap of neighbouring tiles in pixels (None: a quarter of the tile).
    pub overlap: Option<usize>,
    /// Read back a small preview of the state after every step (costs a readback).
    pub preview: bool,
}

impl Default for RestoreOptions {
    fn default() -> Self {
        RestoreOptions { steps: PUBLISHED_T, seed: 0, sampler: Sampler::Posterior, grid: Grid::LogSnr, tile: None, overlap: None, preview: false }
    }
}

/// Where a sampling run is: step `step` of `total` (1-based), `tile` of its `tiles` tiles
/// done. `tile == tiles` means the step is finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub step: usize,
    pub total: usize,
    pub tile: usize,
    pub tiles: usize,
}

/// What the progress callback receives after each tile.
pub struct StepInfo<'a> {
    pub progress: Progress,
    /// The current state, clamped, at most 128 pixels on its longer side (when asked
    /// for, on finished steps).
    pub preview: Option<&'a RgbImage>,
}

/// Longest side of the step preview.
const PREVIEW_SIDE: usize = 128;

/// A rectangle of the image, in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rect {
    pub x: usize,
    pub y: usize,
    pub width: usize,
    pub height: usize,
}

/// What a sampler calls for the noise in state `x` at network time `t`, on the region `at`
/// of the image (the whole image, or one tile); `x` and `mu` (the LQ image there) are
/// [1, 3, at.height, at.width]. The UNet is one; tests use an oracle that knows the answer.
pub trait NoisePredictor {
    fn predict_noise(&mut self, dev: &Device, x: &Tensor, mu: &Tensor, at: Rect, t: f32) -> Result<Tensor>;
}

/// Where a sampling run keeps its whole-image tensors (the state, the LQ image `mu`, the
/// noise prediction) and how it computes a step on them: [`DeviceSpace`] keeps them on the
/// GPU (an image that fits in one tile), [`tiles::TiledSpace`] in host memory with
/// the network run tile by tile. [`sample`] is written once over both.
#[allow(async_fn_in_trait)] // used with static dispatch on one thread; no Send bound wanted
pub trait SamplingSpace {
    type Field;
    /// Tiles per network evaluation.
    fn tiles(&self) -> usize;
    /// `mu + c z`, z the seeded normals of `stream`.
    fn start(&mut self, c: f32, stream: u32) -> Result<Self::Field>;
    /// `mu + a (x - mu) + b noise + d (prev - mu) + c z` (z of stream `z.0`, coefficient
    /// `z.1`); `x` is consumed, its memory may be reused.
    fn update(&mut self, x: Self::Field, a: f32, noise: &Self::Field, b: f32, prev: Option<(&Self::Field, f32)>, z: Option<(u32, f32)>) -> Result<Self::Field>;
    /// The data prediction `mu + p.a (x - mu) + p.b noise`.
    fn prediction(&mut self, x: &Self::Field, noise: &Self::Field, p: Update) -> Result<Self::Field>;
    /// The network's noise for the whole state; `on_tile(k)` after tile k < tiles
    /// returns whether to go on.
    async fn predict_noise(&mut self, x: &Self::Field, t: f32, on_tile: &mut dyn FnMut(usize) -> bool) -> Result<Self::Field>;
    /// Submits the step's work where it runs on a device's queue, marked to be waited for
    /// later; None where the step is finished once recorded (its tiles came back).
    fn submit_step(&mut self) -> Option<QueueMark>;
    /// Waits for the step's work; the state's values when `read`.
    async fn finish_step<'f>(&'f mut self, x: &'f Self::Field, read: bool) -> Result<Option<Cow<'f, [f32]>>>;
}

/// Called after every tile with the progress and, on finished steps, the state's values
/// when they were asked for; returns whether to go on.
pub type AfterTile<'a> = dyn FnMut(Progress, Option<&[f32]>) -> bool + 'a;

/// Runs the steps of `plan` from `mu + max_sigma * z` and returns the final state.
/// `after_tile` runs after each tile and once the work of each step has finished, with the
/// state's values when `read_state` asks for them; returning false cancels
/// ([`Error::Cancelled`]).
pub async fn sample<S: SamplingSpace>(space: &mut S, max_sigma: f64, plan: &[PlannedStep], read_state: bool, after_tile: &mut AfterTile<'_>) -> Result<S::Field> {
    let tiles = space.tiles();
    // Noise streams: 0 for the start, i + 1 for step i.
    let mut x = space.start(max_sigma as f32, 0)?;
    let mut prev: Option<S::Field> = None;
    // A step the GPU may still be running, reported once it has finished: the next step
    // is recorded and queued behind it meanwhile, so the GPU does not idle while the CPU
    // records (the queue holds at most two steps; progress stays truthful).
    let mut running: Option<(Progress, QueueMark)> = None;
    for (i, step) in plan.iter().enumerate() {
        let progress = |tile| Progress { step: i + 1, total: plan.len(), tile, tiles };
        let noise = space.predict_noise(&x, step.network_time, &mut |tile| after_tile(progress(tile), None)).await?;
        let q = step.prediction.map(|p| space.prediction(&x, &noise, p)).transpose()?;
        let u = step.update;
        let z = (u.c != 0.0).then_some((i as u32 + 1, u.c as f32));
        let prev_term = prev.as_ref().filter(|_| step.d != 0.0).map(|p| (p, step.d as f32));
        x = space.update(x, u.a as f32, &noise, u.b as f32, prev_term, z)?;
        drop(noise);
        prev = q;
        if !read_state {
            if let Some(mark) = space.submit_step() {
                if let Some((finished, mark)) = running.replace((progress(tiles), mark)) {
                    report_when_done(mark, finished, after_tile).await?;
                }
                continue;
            }
        }
        // Waiting here keeps progress truthful, the queue short and the page responsive.
        let state = space.finish_step(&x, read_state).await?;
        if !after_tile(progress(tiles), state.as_deref()) {
            return Err(Error::Cancelled);
        }
    }
    if let Some((finished, mark)) = running {
        report_when_done(mark, finished, after_tile).await?;
    }
    Ok(x)
}

/// Waits for a queued step's work, then reports it finished ([`Error::Cancelled`] where
/// `after_tile` says to stop).
async fn report_when_done(mark: QueueMark, finished: Progress, after_tile: &mut AfterTile<'_>) -> Result<()> {
    mark.wait().await?;
    if after_tile(finished, None) { Ok(()) } else { Err(Error::Cancelled) }
}

/// The whole image on the GPU: one network evaluation per step, every update one kernel.
pub struct DeviceSpace<'a> {
    dev: &'a Device,
    predictor: &'a mut dyn NoisePredictor,
    mu: &'a Tensor,
    seed: u64,
}

impl<'a> DeviceSpace<'a> {
    /// `mu` is the LQ image [1, 3, H, W].
    pub fn new(dev: &'a Device, predictor: &'a mut dyn NoisePredictor, mu: &'a Tensor, seed: u64) -> Self {
        DeviceSpace { dev, predictor, mu, seed }
    }

    fn z(&self, z: Option<(u32, f32)>) -> (Noise<'static>, f32) {
        match z {
            Some((stream, c)) => (Noise::Seeded { seed: self.seed, stream }, c),
            None => (Noise::None, 0.0),
        }
    }
}

impl SamplingSpace for DeviceSpace<'_> {
    type Field = Tensor;

    fn tiles(&self) -> usize {
        1
    }

    fn start(&mut self, c: f32, stream: u32) -> Result<Tensor> {
        sde_update(self.dev, self.mu, self.mu, 0.0, None, None, self.z(Some((stream, c))))
    }

    fn update(&mut self, x: Tensor, a: f32, noise: &Tensor, b: f32, prev: Option<(&Tensor, f32)>, z: Option<(u32, f32)>) -> Result<Tensor> {
        sde_update(self.dev, self.mu, &x, a, Some((noise, b)), prev, self.z(z))
    }

    fn prediction(&mut self, x: &Tensor, noise: &Tensor, p: Update) -> Result<Tensor> {
        sde_update(self.dev, self.mu, x, p.a as f32, Some((noise, p.b as f32)), None, (Noise::None, 0.0))
    }

    async fn predict_noise(&mut self, x: &Tensor, t: f32, _on_tile: &mut dyn FnMut(usize) -> bool) -> Result<Tensor> {
        let at = Rect { x: 0, y: 0, width: self.mu.dim(3), height: self.mu.dim(2) };
        self.predictor.predict_noise(self.dev, x, self.mu, at, t)
    }

    fn submit_step(&mut self) -> Option<QueueMark> {
        Some(self.dev.mark())
    }

    async fn finish_step<'f>(&'f mut self, x: &'f Tensor, read: bool) -> Result<Option<Cow<'f, [f32]>>> {
        self.dev.sync().await?;
        Ok(if read { Some(Cow::Owned(self.dev.read(x).await?)) } else { None })
    }
}

/// The UNet as a [`NoisePredictor`], conditioned on one image's DA-CLIP embeddings.
pub struct UNetPredictor<'a> {
    unet: &'a ConditionalUNet,
    time: TimeConditioning,
    image: ImageContext,
}

impl<'a> UNetPredictor<'a> {
    /// For DA-CLIP's two embeddings, at the network `times` a sampling plan will ask for
    /// (their conditioning is computed here, once).
    pub fn new(dev: &Device, unet: &'a ConditionalUNet, degra_context: &Tensor, image_context: &Tensor, times: &[f32]) -> Result<Self> {
        let prompt = unet.prompt_embedding(dev, degra_context)?;
        let time = unet.time_conditioning(dev, times, prompt.as_ref())?;
        let image = unet.image_context(dev, image_context)?;
        Ok(UNetPredictor { unet, time, image })
    }
}

impl NoisePredictor for UNetPredictor<'_> {
    fn predict_noise(&mut self, dev: &Device, x: &Tensor, mu: &Tensor, _at: Rect, t: f32) -> Result<Tensor> {
        self.unet.forward(dev, x, mu, &self.time, t, &self.image)
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
    pub fn load_models(dev: &Device, daclip: &Checkpoint, unet: &Checkpoint, dtype: DeviceDType) -> Result<(DaClip, ConditionalUNet)> {
        let models = (DaClip::load(dev, daclip, dtype)?, ConditionalUNet::load(dev, unet, dtype)?);
        Restorer::new(&models.0, &models.1)?;
        Ok(models)
    }

    /// The tiles a restore of a `width` x `height` image with `options` would use (checks
    /// the size and the tile options).
    pub fn layout(&self, dev: &Device, width: usize, height: usize, options: &RestoreOptions) -> Result<TileLayout> {
        check_image_size(width, height, self.unet.min_side())?;
        let (tile, overlap) = TileLimits::new(dev, self.unet).resolve(options.tile, options.overlap)?;
        Ok(TileLayout::new(width, height, tile, overlap))
    }

    /// One network evaluation on a tile of `layout`'s size (zero inputs and embeddings),
    /// waited for: what a caller times to say how long a restore will take.
    pub async fn evaluate_tile(&self, dev: &Device, layout: &TileLayout) -> Result<()> {
        let r = layout.rect(0);
        let shape = [1, 3, r.height, r.width];
        let zeros = dev.upload(&shape, &vec![0.0; 3 * r.width * r.height])?;
        let context = dev.upload(&[1, self.daclip.config.embed_dim], &vec![0.0; self.daclip.config.embed_dim])?;
        let t = PUBLISHED_T as f32;
        let mut unet = UNetPredictor::new(dev, self.unet, &context, &context, &[t])?;
        unet.predict_noise(dev, &zeros, &zeros, r, t)?;
        dev.sync().await
    }

    /// Restores `image`. `on_step` is called after every tile and every finished step
    /// (once the GPU has finished it); returning false cancels, and `restore` returns
    /// [`Error::Cancelled`].
    pub async fn restore(&self, dev: &Device, image: ImageRef<'_>, options: &RestoreOptions, on_step: &mut dyn FnMut(StepInfo) -> bool) -> Result<Restored> {
        self.restore_sharing(dev, image, options, None, on_step).await
    }

    /// [`Restorer::restore`], sharing each step's tiles with `helpers` (evaluators of this
    /// restorer's UNet elsewhere) when the image is tiled. The result does not depend on
    /// the helpers.
    pub async fn restore_sharing(&self, dev: &Device, image: ImageRef<'_>, options: &RestoreOptions, helpers: Option<&mut dyn TileHelpers>, on_step: &mut dyn FnMut(StepInfo) -> bool) -> Result<Restored> {
        image.check()?;
        let (w, h) = (image.width, image.height);
        let layout = self.layout(dev, w, h, options)?;
        let sde = IrSde::published(PUBLISHED_T)?;
        let plan = sde.plan(options.sampler, options.steps, options.grid)?;

        let enc = self.daclip.encode(dev, image)?;
        let times: Vec<f32> = plan.iter().map(|s| s.network_time).collect();
        let mut predictor = UNetPredictor::new(dev, self.unet, &enc.degra_features, &enc.image_features, &times)?;

        let mut after_tile = |progress: Progress, state: Option<&[f32]>| match state.map(|v| preview(v, w, h)) {
            Some(Err(_)) => true, // a non-finite preview: the final check reports it
            Some(Ok(img)) => on_step(StepInfo { progress, preview: Some(&img) }),
            None => on_step(StepInfo { progress, preview: None }),
        };
        let lq = planar_lq(image);
        let x = if layout.is_single() {
            // The exact (parity) path: the whole image on the GPU.
            let lq: Vec<f32> = lq.iter().map(|&v| v as f32 / 255.0).collect();
            let lq = dev.upload(&[1, 3, h, w], &lq)?;
            let mut space = DeviceSpace::new(dev, &mut predictor, &lq, options.seed);
            let x = sample(&mut space, sde.max_sigma, &plan, options.preview, &mut after_tile).await?;
            dev.read(&x).await?
        } else {
            let mut helpers = helpers.filter(|h| h.count() > 0);
            // Helpers busy with tiles of their own take no part of this worker's kernels.
            let _solo = helpers.is_some().then(|| dev.solo());
            if let Some(h) = helpers.as_mut() {
                h.condition(dev.read(&enc.degra_features).await?, dev.read(&enc.image_features).await?);
            }
            // Reborrowed for the space's shorter lifetime (`Option::map` cannot shorten
            // the trait object's).
            let helpers: Option<&mut dyn TileHelpers> = match helpers {
                Some(h) => Some(&mut *h),
                None => None,
            };
            let mut space = TiledSpace::new(dev, &mut predictor, layout, lq, options.seed)?.with_helpers(helpers);
            sample(&mut space, sde.max_sigma, &plan, options.preview, &mut after_tile).await?
        };
        Restored::new(x, w, h)
    }
}

/// A restored image: the sampler's final state, [3, H, W] values (finite: checked), to
/// be stored at 8 bits (as the original's `tensor2img`) or 16.
#[derive(Debug, Clone)]
pub struct Restored {
    pub width: usize,
    pub height: usize,
    planar: Vec<f32>,
}

impl Restored {
    /// Non-finite values are an error, never a silently black image.
    fn new(planar: Vec<f32>, width: usize, height: usize) -> Result<Restored> {
        if let Some(bad) = planar.iter().find(|v| !v.is_finite()) {
            return Err(Error::NonFinite(format!("the restored image contains {bad}; the weights may be broken")));
        }
        Ok(Restored { width, height, planar })
    }

    /// The value of channel `c` (0 R, 1 G, 2 B) at pixel `i` (row-major), unclamped.
    pub fn value(&self, c: usize, i: usize) -> f32 {
        self.planar[c * self.width * self.height + i]
    }

    /// 8-bit RGB: clamp, `round(x * 255)` (half to even, as numpy rounds in the
    /// original's `tensor2img`).
    pub fn to_rgb8(&self) -> RgbImage {
        let data = self.interleaved(|v| quantize(v, 255.0) as u8);
        RgbImage { width: self.width, height: self.height, data }
    }

    /// 16-bit RGB, interleaved: clamp, `round(x * 65535)`.
    pub fn to_rgb16(&self) -> Vec<u16> {
        self.interleaved(|v| quantize(v, 65535.0) as u16)
    }

    fn interleaved<T: Copy + Default>(&self, q: impl Fn(f32) -> T) -> Vec<T> {
        let n = self.width * self.height;
        let mut out = vec![T::default(); 3 * n];
        for (i, px) in out.chunks_mut(3).enumerate() {
            for (c, o) in px.iter_mut().enumerate() {
                *o = q(self.planar[c * n + i]);
            }
        }
        out
    }
}

/// `round(clamp(v, 0, 1) * max)`, half to even.
pub fn quantize(v: f32, max: f32) -> f32 {
    (v.clamp(0.0, 1.0) * max).round_ties_even()
}

/// The image's RGB values, planar [3, H, W].
fn planar_lq(image: ImageRef) -> Vec<u8> {
    let n = image.width * image.height;
    let mut lq = vec![0u8; 3 * n];
    for (i, px) in image.data.chunks(image.channels).enumerate() {
        for c in 0..3 {
            lq[c * n + i] = px[c];
        }
    }
    lq
}

/// The planar [3, H, W] state as 8 bits, reduced (nearest neighbour) so that the longer
/// side is at most [`PREVIEW_SIDE`].
fn preview(v: &[f32], w: usize, h: usize) -> Result<RgbImage> {
    let step = w.max(h).div_ceil(PREVIEW_SIDE).max(1);
    let (pw, ph) = (w.div_ceil(step), h.div_ceil(step));
    let mut picked = vec![0.0f32; 3 * pw * ph];
    for c in 0..3 {
        for y in 0..ph {
            for x in 0..pw {
                picked[(c * ph + y) * pw + x] = v[(c * h + y * step) * w + x * step];
            }
        }
    }
    Ok(Restored::new(picked, pw, ph)?.to_rgb8())
}
