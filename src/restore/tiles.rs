//! Restoring images larger than one tile (docs/design.md, "Large images: tiles"): at every sampler
//! step the network runs on overlapping, equal-size tiles of the current whole-image state;
//! their noise predictions are blended with smooth weights into one whole-image
//! prediction, and ONE sampler update is applied to the whole state. Tiles are never
//! sampled separately, so they cannot drift apart.
//!
//! The whole-image tensors (the state, the LQ image, the blended prediction, the previous
//! data prediction of second-order samplers) live in host memory: 12 bytes per pixel each
//! (the LQ image 3 bytes), so the GPU holds only the weights and one tile's activations,
//! whatever the image size, and no tensor ever approaches a binding limit. The sampler
//! update runs on the CPU with the GPU kernel's noise generator, keyed by the pixel's
//! position in the whole image: the tile grid never changes the noise.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use crate::error::{Error, Result};
use crate::device::{Device, PendingRead, QueueMark, Tensor};
use crate::models::unet::ConditionalUNet;
use super::{NoisePredictor, Rect, SamplingSpace};
use crate::kernels::sde::{update_slice, UpdateTerms, ZTerm};
use crate::sde::Update;

/// Activations of the published UNet (nf = 64) at a 256 x 256 tile, measured with the
/// bench: 477 MiB, about 119 bytes per pixel per unit of nf.
const ACTIVATION_BYTES_PER_PIXEL_PER_NF: usize = 119;

/// GPU memory the default tile may take for activations (the weights come on top).
const TILE_MEMORY_BUDGET: usize = 512 << 20;

/// The smallest tile accepted: smaller ones are mostly padding and overlap.
pub const MIN_TILE: usize = 32;

/// The largest image `restore` accepts: 64 MP, each side at most 16384 pixels. Host memory
/// for the whole-image tensors and the image is about 31 bytes per pixel (55 for
/// second-order samplers, which keep two more fields).
pub const MAX_PIXELS: usize = 64 << 20;
pub const MAX_SIDE: usize = 16384;

/// Tile sizes that fit `unet` on `dev`, and the default one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TileLimits {
    /// The largest tile whose widest tensor fits one storage binding.
    pub max_tile: usize,
    /// The largest of 512, 448, ..., 256 whose activations fit the memory budget and the
    /// binding (the UNet was trained on 256 px patches), else `max_tile`.
    pub default_tile: usize,
}

impl TileLimits {
    pub fn new(dev: &Device, unet: &ConditionalUNet) -> TileLimits {
        let binding = dev.max_tensor_bytes();
        let widest = unet.widest_bytes_per_pixel();
        let m = unet.padding_multiple();
        let fits = |t: usize| widest * t.next_multiple_of(m).pow(2) <= binding;
        let max_tile = (MIN_TILE..=MAX_SIDE).step_by(16).take_while(|&t| fits(t)).last().unwrap_or(MIN_TILE);
        let budget = |t: usize| ACTIVATION_BYTES_PER_PIXEL_PER_NF * unet.config.nf * t * t <= TILE_MEMORY_BUDGET;
        let default_tile = [512, 448, 384, 320, 256].into_iter().find(|&t| fits(t) && budget(t)).unwrap_or(max_tile.min(256));
        TileLimits { max_tile, default_tile }
    }

    /// The tile and overlap to use: the caller's, checked, or the defaults (overlap a
    /// quarter of the tile).
    pub fn resolve(&self, tile: Option<usize>, overlap: Option<usize>) -> Result<(usize, usize)> {
        let tile = tile.unwrap_or(self.default_tile);
        if !(MIN_TILE..=self.max_tile).contains(&tile) {
            return Err(Error::Usage(format!("the tile size must be from {MIN_TILE} to {} pixels on this GPU, not {tile}", self.max_tile)));
        }
        let overlap = overlap.unwrap_or(tile / 4);
        if overlap > tile / 2 {
            return Err(Error::Usage(format!("the tile overlap must be at most half the tile ({} pixels), not {overlap}", tile / 2)));
        }
        Ok((tile, overlap))
    }
}

/// Refuses images `restore` cannot take, before any work.
pub fn check_image_size(width: usize, height: usize, min_side: usize) -> Result<()> {
    if width.min(height) < min_side {
        return Err(Error::Shape(format!("an image of {width}x{height} is too small for this model: each side must be at least {min_side} pixels")));
    }
    if width.max(height) > MAX_SIDE || width * height > MAX_PIXELS {
        return Err(Error::Shape(format!(
            "an image of {width}x{height} is larger than restore takes ({} MP, each side at most {MAX_SIDE} pixels); scale it down first",
            MAX_PIXELS >> 20
        )));
    }
    Ok(())
}

/// Tiles along one axis: their starts and each tile's blending weight per position,
/// already divided by the sum over the tiles that cover it.
#[derive(Debug, Clone)]
struct Axis {
    starts: Vec<usize>,
    weights: Vec<Vec<f32>>,
}

impl Axis {
    /// `len` covered by tiles of `tile` (at most `len`) overlapping by at least `overlap`;
    /// the last tile is shifted inwards so that every tile has the same size.
    fn new(len: usize, tile: usize, overlap: usize) -> Axis {
        let tile = tile.min(len);
        let stride = (tile - overlap).max(1);
        let count = (len - tile).div_ceil(stride) + 1;
        let starts: Vec<usize> = (0..count).map(|i| (i * stride).min(len - tile)).collect();
        // Raised-cosine ramps over each side's actual overlap with the neighbour; 1 in the
        // middle and along the image's own borders. Weights are positive everywhere, so the
        // normalisation below never divides by zero.
        let ramp = |u: usize, width: usize| (std::f64::consts::FRAC_PI_2 * (u as f64 + 0.5) / width as f64).sin().powi(2);
        let raw: Vec<Vec<f64>> = starts
            .iter()
            .enumerate()
            .map(|(i, &s)| {
                let left = if i > 0 { starts[i - 1] + tile - s } else { 0 };
                let right = if i + 1 < count { s + tile - starts[i + 1] } else { 0 };
                (0..tile)
                    .map(|u| {
                        let l = if u < left { ramp(u, left) } else { 1.0 };
                        let r = if tile - u <= right { ramp(tile - 1 - u, right) } else { 1.0 };
                        l * r
                    })
                    .collect()
            })
            .collect();
        let mut sum = vec![0.0f64; len];
        for (s, w) in starts.iter().zip(&raw) {
            for (u, v) in w.iter().enumerate() {
                sum[s + u] += v;
            }
        }
        let weights = starts.iter().zip(&raw).map(|(s, w)| w.iter().enumerate().map(|(u, v)| (v / sum[s + u]) as f32).collect()).collect();
        Axis { starts, weights }
    }

    fn tile(&self) -> usize {
        self.weights[0].len()
    }
}

/// The tiles of an image: a grid of equal-size tiles, row by row, and their blending
/// weights. A tile's weight at a pixel is the product of its row and column weights, so
/// the normalisation (the sum over tiles) factors per axis too.
#[derive(Debug, Clone)]
pub struct TileLayout {
    pub width: usize,
    pub height: usize,
    rows: Axis,
    cols: Axis,
}

impl TileLayout {
    pub fn new(width: usize, height: usize, tile: usize, overlap: usize) -> TileLayout {
        TileLayout { width, height, rows: Axis::new(height, tile, overlap), cols: Axis::new(width, tile, overlap) }
    }

    pub fn tile_count(&self) -> usize {
        self.rows.starts.len() * self.cols.starts.len()
    }

    /// One tile covers the image: the untiled path.
    pub fn is_single(&self) -> bool {
        self.tile_count() == 1
    }

    /// Tile `k`, row by row.
    pub fn rect(&self, k: usize) -> Rect {
        let n = self.cols.starts.len();
        Rect { x: self.cols.starts[k % n], y: self.rows.starts[k / n], width: self.cols.tile(), height: self.rows.tile() }
    }

    /// Copies tile `k` out of a whole-image planar [3, H, W] field.
    fn crop<T: Copy>(&self, k: usize, field: &[T], out: &mut Vec<T>) {
        let r = self.rect(k);
        out.clear();
        for c in 0..3 {
            for y in r.y..r.y + r.height {
                let row = (c * self.height + y) * self.width + r.x;
                out.extend_from_slice(&field[row..row + r.width]);
            }
        }
    }

    /// Adds tile `k`'s values [3, h, w] times its normalised weights into `field`.
    fn blend(&self, k: usize, tile: &[f32], field: &mut [f32]) {
        let (r, n) = (self.rect(k), self.cols.starts.len());
        let (wy, wx) = (&self.rows.weights[k / n], &self.cols.weights[k % n]);
        for c in 0..3 {
            for (u, wy) in wy.iter().enumerate() {
                let src = &tile[(c * r.height + u) * r.width..][..r.width];
                let dst = &mut field[(c * self.height + r.y + u) * self.width + r.x..][..r.width];
                for ((d, s), wx) in dst.iter_mut().zip(src).zip(wx) {
                    *d += wy * wx * s;
                }
            }
        }
    }
}

/// A zeroed field of `n` values, or a clear error when host memory runs out (a failed
/// allocation would abort, in wasm without a message).
fn zeroed(n: usize) -> Result<Vec<f32>> {
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|_| Error::OutOfMemory(format!("no host memory for a {} MiB image buffer; use a smaller image", (4 * n) >> 20)))?;
    v.resize(n, 0.0);
    Ok(v)
}

/// A tile's noise prediction computed elsewhere, ready when the future is.
pub type TileFuture = Pin<Box<dyn Future<Output = Result<Vec<f32>>>>>;

/// Other evaluators of the same network on the same conditioning (in the browser: helper
/// workers, each its own wasm instance with its own copy of the UNet), to which a tiled
/// restore hands tiles while it computes others itself. Their results are blended in tile
/// order, exactly as if computed here: the same code on the same weights gives the same
/// values, so the restore does not depend on how many helpers there are.
pub trait TileHelpers {
    /// How many tiles may be out at once (one per helper).
    fn count(&self) -> usize;
    /// The restore's DA-CLIP embeddings (degradation, image), for the helpers' UNets.
    fn condition(&mut self, degradation: Vec<f32>, image: Vec<f32>);
    /// Starts helper `helper` (< count) on a tile: its state `x` and LQ image `mu`, planar
    /// [3, h, w], at network time `t`; resolves to the noise, planar [3, h, w].
    fn send(&mut self, helper: usize, x: Vec<f32>, mu: Vec<f32>, at: Rect, t: f32) -> TileFuture;
    /// Lets helpers' replies arrive (in the browser: one turn of the event loop).
    fn pause(&self) -> Pin<Box<dyn Future<Output = ()>>>;
}

/// The sampler's whole-image tensors in host memory, the network run tile by tile (here,
/// and on [`TileHelpers`] where there are any).
pub struct TiledSpace<'a> {
    dev: &'a Device,
    predictor: &'a mut dyn NoisePredictor,
    helpers: Option<&'a mut dyn TileHelpers>,
    layout: TileLayout,
    /// The LQ image, planar [3, H, W] 8-bit: mu = value / 255.
    lq: Vec<u8>,
    seed: u64,
    /// One tile's state and LQ on the GPU, refilled for every tile.
    x_tile: Tensor,
    mu_tile: Tensor,
}

impl<'a> TiledSpace<'a> {
    /// `lq` is the planar [3, H, W] 8-bit LQ image of `layout`'s size.
    pub fn new(dev: &'a Device, predictor: &'a mut dyn NoisePredictor, layout: TileLayout, lq: Vec<u8>, seed: u64) -> Result<Self> {
        if lq.len() != 3 * layout.width * layout.height {
            return Err(Error::Shape(format!("the LQ image has {} values, not 3 x {} x {}", lq.len(), layout.height, layout.width)));
        }
        let r = layout.rect(0);
        let shape = [1, 3, r.height, r.width];
        Ok(TiledSpace { dev, predictor, helpers: None, layout, lq, seed, x_tile: dev.empty(&shape)?, mu_tile: dev.empty(&shape)? })
    }

    /// Shares every step's tiles with `helpers`.
    pub fn with_helpers(mut self, helpers: Option<&'a mut dyn TileHelpers>) -> Self {
        self.helpers = helpers.filter(|h| h.count() > 0);
        self
    }

    /// Tile `k`'s state and LQ image, planar.
    fn tile_inputs(&self, k: usize, x: &[f32]) -> (Vec<f32>, Vec<f32>) {
        let (mut xs, mut mus) = (Vec::new(), Vec::new());
        self.layout.crop(k, x, &mut xs);
        self.layout.crop(k, &self.lq, &mut mus);
        (xs, mus.iter().map(|&v| v as f32 / 255.0).collect())
    }

    /// Tile `k`'s noise, computed here: recorded and submitted, its readback started.
    /// Refilling the tile's inputs for the next tile while this one computes is safe: a
    /// write reaches the GPU after the work submitted before it.
    fn start_tile(&mut self, k: usize, x: &[f32], t: f32) -> Result<PendingRead> {
        let (xs, mu) = self.tile_inputs(k, x);
        self.dev.write(&self.x_tile, &xs)?;
        self.dev.write(&self.mu_tile, &mu)?;
        let noise = self.predictor.predict_noise(self.dev, &self.x_tile, &self.mu_tile, self.layout.rect(k), t)?;
        self.dev.start_read(&noise)
    }

    fn mu(&self, i: usize) -> f32 {
        self.lq[i] as f32 / 255.0
    }

    /// `mu + a (x - mu) + b noise + d (prev - mu) + c z` into `out` (which holds x), element
    /// `i` of the whole image as the GPU kernel computes element `i`.
    fn combine_into(&self, out: &mut [f32], a: f32, noise: Option<(&[f32], f32)>, prev: Option<(&[f32], f32)>, z: Option<(u32, f32)>) {
        let (noise, b) = noise.unwrap_or((&[], 0.0));
        let (prev, d) = prev.unwrap_or((&[], 0.0));
        let (z, c) = match z {
            Some((stream, c)) => (ZTerm::Seeded { seed: self.seed, stream }, c),
            None => (ZTerm::None, 0.0),
        };
        let terms = UpdateTerms { a, b, c, d, noise, prev, z };
        update_slice(out, 0, |i| self.mu(i), None, &terms);
    }
}

impl SamplingSpace for TiledSpace<'_> {
    type Field = Vec<f32>;

    fn tiles(&self) -> usize {
        self.layout.tile_count()
    }

    fn start(&mut self, c: f32, stream: u32) -> Result<Vec<f32>> {
        let mut x = zeroed(self.lq.len())?;
        self.combine_into(&mut x, 0.0, None, None, Some((stream, c)));
        Ok(x)
    }

    fn update(&mut self, mut x: Vec<f32>, a: f32, noise: &Vec<f32>, b: f32, prev: Option<(&Vec<f32>, f32)>, z: Option<(u32, f32)>) -> Result<Vec<f32>> {
        self.combine_into(&mut x, a, Some((noise, b)), prev.map(|(p, d)| (p.as_slice(), d)), z);
        Ok(x)
    }

    fn prediction(&mut self, x: &Vec<f32>, noise: &Vec<f32>, p: Update) -> Result<Vec<f32>> {
        let mut q = zeroed(x.len())?;
        q.copy_from_slice(x);
        self.combine_into(&mut q, p.a as f32, Some((noise, p.b as f32)), None, None);
        Ok(q)
    }

    async fn predict_noise(&mut self, x: &Vec<f32>, t: f32, on_tile: &mut dyn FnMut(usize) -> bool) -> Result<Vec<f32>> {
        let mut blended = zeroed(x.len())?;
        let tiles = self.layout.tile_count();
        // Tiles are blended in order (sums in the same order: the same values whoever
        // computed them); `done` holds the ones that came back early.
        let mut done: BTreeMap<usize, Vec<f32>> = BTreeMap::new();
        let mut next_blend = 0;
        let mut next = 0;
        let mut out: Vec<Option<(usize, TileFuture)>> = (0..self.helpers.as_ref().map_or(0, |h| h.count())).map(|_| None).collect();
        // The tile this worker's device computes, read back once the next one is queued
        // behind it: the GPU does not wait for its readback, the blending and the
        // recording of the next tile.
        let mut own: Option<(usize, PendingRead)> = None;
        while next_blend < tiles {
            // Every idle helper gets the next tile, then this worker computes one itself.
            for (helper, slot) in out.iter_mut().enumerate() {
                if slot.is_none() && next < tiles {
                    let (xs, mu) = self.tile_inputs(next, x);
                    let rect = self.layout.rect(next);
                    *slot = Some((next, self.helpers.as_mut().expect("helpers have slots").send(helper, xs, mu, rect, t)));
                    next += 1;
                }
            }
            if next < tiles {
                let k = next;
                next += 1;
                let started = self.start_tile(k, x, t)?;
                if let Some((j, read)) = own.replace((k, started)) {
                    done.insert(j, read.values().await?);
                }
                if let Some(h) = &self.helpers {
                    h.pause().await;
                }
            } else {
                // Nothing left to start: wait for the earliest tile, here or on a helper.
                let mine = own.as_ref().map(|(k, _)| *k);
                match out.iter_mut().filter(|s| s.is_some()).min_by_key(|s| s.as_ref().map(|(k, _)| *k)) {
                    Some(slot) if mine.is_none_or(|mine| slot.as_ref().is_some_and(|(k, _)| *k < mine)) => {
                        let (k, future) = slot.take().expect("filtered");
                        done.insert(k, future.await?);
                    }
                    _ => {
                        if let Some((k, read)) = own.take() {
                            done.insert(k, read.values().await?);
                        }
                    }
                }
            }
            for slot in out.iter_mut() {
                if let Some((k, future)) = slot {
                    if let Poll::Ready(noise) = future.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
                        done.insert(*k, noise?);
                        *slot = None;
                    }
                }
            }
            while let Some(noise) = done.remove(&next_blend) {
                self.layout.blend(next_blend, &noise, &mut blended);
                next_blend += 1;
                // The last tile is reported with the finished step.
                if next_blend < tiles && !on_tile(next_blend) {
                    return Err(Error::Cancelled);
                }
            }
        }
        Ok(blended)
    }

    fn submit_step(&mut self) -> Option<QueueMark> {
        None
    }

    async fn finish_step<'f>(&'f mut self, x: &'f Vec<f32>, read: bool) -> Result<Option<Cow<'f, [f32]>>> {
        Ok(read.then_some(Cow::Borrowed(x.as_slice())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiles_are_equal_sized_cover_the_image_and_weights_sum_to_one() {
        for (len, tile, overlap) in [(3000, 256, 64), (300, 256, 64), (256, 256, 64), (200, 256, 64), (500, 128, 0), (1000, 128, 64), (97, 32, 16)] {
            let a = Axis::new(len, tile, overlap);
            let t = a.tile();
            assert_eq!(t, tile.min(len));
            assert_eq!(*a.starts.last().unwrap() + t, len, "{len} {tile} {overlap}: the last tile ends at the border");
            let mut sum = vec![0.0f64; len];
            for (i, (s, w)) in a.starts.iter().zip(&a.weights).enumerate() {
                if i > 0 {
                    assert!(a.starts[i - 1] + t >= s + overlap, "{len} {tile} {overlap}: overlap below {overlap}");
                }
                for (u, v) in w.iter().enumerate() {
                    assert!(*v > 0.0 && *v <= 1.0);
                    sum[s + u] += *v as f64;
                }
            }
            assert!(sum.iter().all(|s| (s - 1.0).abs() < 1e-6), "{len} {tile} {overlap}: weights do not sum to one");
            // The image's own borders keep weight 1 (one tile covers them).
            assert_eq!((a.weights[0][0], *a.weights.last().unwrap().last().unwrap()), (1.0, 1.0));
        }
    }

    #[test]
    fn weights_fall_towards_zero_at_inner_tile_borders() {
        let a = Axis::new(1000, 256, 64);
        let (w0, w1) = (&a.weights[0], &a.weights[1]);
        assert!(w0[255] < 0.01 && w1[0] < 0.01, "{} {}", w0[255], w1[0]);
        assert_eq!(w0[100], 1.0);
        // Smooth: no jump between neighbouring pixels larger than the ramp's slope allows.
        assert!(w0.windows(2).all(|p| (p[0] - p[1]).abs() < 0.05));
    }

    #[test]
    fn crop_and_blend_of_a_constant_field_give_it_back() {
        let layout = TileLayout::new(300, 200, 128, 32);
        assert_eq!(layout.tile_count(), 3 * 2);
        let field: Vec<f32> = (0..3 * 300 * 200).map(|i| (i % 977) as f32).collect();
        let mut blended = vec![0.0f32; field.len()];
        let mut tile = Vec::new();
        for k in 0..layout.tile_count() {
            layout.crop(k, &field, &mut tile);
            assert_eq!(tile.len(), 3 * 128 * 128);
            layout.blend(k, &tile, &mut blended);
        }
        // total_cmp puts NaN above every number: a NaN is the worst, not dropped.
        let worst = field.iter().zip(&blended).map(|(a, b)| (a - b).abs() / a.max(1.0)).max_by(f32::total_cmp).unwrap_or(0.0);
        assert!(worst < 1e-5, "{worst}");
    }
}
