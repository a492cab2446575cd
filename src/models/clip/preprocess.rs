//! CLIP's image preprocessing as the published pipeline runs it (torchvision on PIL
//! images): shorter side resized to the model's size with PIL's bicubic filter
//! (antialiased when shrinking), center crop, scale to [0, 1], normalise per channel.
//!
//! The resampling reproduces Pillow's `ImagingResample` for 8-bit images: separable
//! passes (horizontal, then vertical) with the bicubic kernel (a = -0.5) stretched by the
//! scale factor when shrinking, weights normalised and rounded to 22-bit fixed point, and
//! each pass rounded and clamped to 8 bits.

use crate::error::{Error, Result};

pub const CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
#[allow(clippy::excessive_precision)] // the published constants, digit for digit
pub const CLIP_STD: [f32; 3] = [0.268_629_54, 0.261_302_58, 0.275_777_11];

/// An 8-bit image, row-major, 3 (RGB) or 4 (RGBA, alpha ignored) channels per pixel.
#[derive(Clone, Copy)]
pub struct ImageRef<'a> {
    pub width: usize,
    pub height: usize,
    pub channels: usize,
    pub data: &'a [u8],
}

impl ImageRef<'_> {
    pub fn check(&self) -> Result<()> {
        if self.width == 0 || self.height == 0 {
            return Err(Error::Shape(format!("the image is empty ({}x{})", self.width, self.height)));
        }
        if !matches!(self.channels, 3 | 4) || self.data.len() != self.width * self.height * self.channels {
            return Err(Error::Shape(format!(
                "expected {}x{} RGB or RGBA bytes, got {} bytes for {} channels",
                self.width, self.height, self.data.len(), self.channels
            )));
        }
        Ok(())
    }
}

/// What the image tower sees, and the 8-bit crop it came from.
pub struct ClipInput {
    /// size x size x 3, the crop after resizing.
    pub resized_u8: Vec<u8>,
    /// 3 x size x size, normalised: the tower's input.
    pub pixels: Vec<f32>,
    pub size: usize,
}

/// The longest side a resize before the crop may have: far beyond any photo (a 1 x 16384
/// strip gives 224 x 3.7 M), and small enough for 32-bit indices.
const MAX_RESIZED_SIDE: u64 = 1 << 28;

pub fn clip_input(image: ImageRef, size: usize) -> Result<ClipInput> {
    image.check()?;
    let (w, h) = (image.width, image.height);
    // torchvision Resize(size): the shorter side becomes `size`, the longer keeps the
    // aspect ratio, truncated. In u64: in wasm `size * h` overflows usize for a strip of
    // 19 M pixels.
    let long = (size as u64 * w.max(h) as u64) / w.min(h) as u64;
    if long > MAX_RESIZED_SIDE {
        return Err(Error::Shape(format!("a {w}x{h} image is too thin to classify: its shorter side resized to {size} makes the longer {long} pixels (at most {MAX_RESIZED_SIDE})")));
    }
    let (nw, nh) = if w <= h { (size, long as usize) } else { (long as usize, size) };
    let rgb: Vec<u8> = image.data.chunks(image.channels).flat_map(|p| [p[0], p[1], p[2]]).collect();
    // CenterCrop: offsets rounded as Python's round() does (half to even). Only the crop
    // is computed: the whole resized image of a thin strip (1 x 16384 -> 224 x 3.7 M)
    // would take gigabytes.
    let top = round_half_even((nh - size) as f64 / 2.0);
    let left = round_half_even((nw - size) as f64 / 2.0);
    let resized_u8 = resize_bicubic_window(&rgb, (w, h), (nw, nh), Window { left, top, width: size, height: size });
    let mut pixels = vec![0.0f32; 3 * size * size];
    for (i, px) in resized_u8.chunks(3).enumerate() {
        for c in 0..3 {
            pixels[c * size * size + i] = (px[c] as f32 / 255.0 - CLIP_MEAN[c]) / CLIP_STD[c];
        }
    }
    Ok(ClipInput { resized_u8, pixels, size })
}

fn round_half_even(x: f64) -> usize {
    let r = x.round();
    (if (x - x.trunc()).abs() == 0.5 && r % 2.0 != 0.0 { r - x.signum() } else { r }) as usize
}

const PRECISION_BITS: u32 = 32 - 8 - 2;

fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// Pillow's `precompute_coeffs` and `normalize_coeffs_8bpc` for the output indices
/// `outputs` of `out_size`: for each, the first input index and the fixed-point weights.
fn coefficients(in_size: usize, out_size: usize, outputs: std::ops::Range<usize>) -> Vec<(usize, Vec<i64>)> {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = 2.0 * filterscale;
    outputs
        .map(|xx| {
            let center = (xx as f64 + 0.5) * scale;
            let xmin = ((center - support + 0.5) as i64).max(0) as usize; // C casts truncate
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
            let w: Vec<f64> = (xmin..xmax).map(|x| bicubic((x as f64 - center + 0.5) / filterscale)).collect();
            let total: f64 = w.iter().sum();
            let fixed = w
                .iter()
                .map(|&k| {
                    let k = if total != 0.0 { k / total } else { k } * (1i64 << PRECISION_BITS) as f64;
                    (if k < 0.0 { k - 0.5 } else { k + 0.5 }) as i64
                })
                .collect();
            (xmin, fixed)
        })
        .collect()
}

fn clip8(v: i64) -> u8 {
    (v >> PRECISION_BITS).clamp(0, 255) as u8
}

/// One separable pass along rows (`horizontal`) or columns, on RGB bytes: the output
/// indices `outputs` of a resize of that axis to `out_size`.
fn pass(src: &[u8], w: usize, h: usize, out_size: usize, outputs: std::ops::Range<usize>, horizontal: bool) -> Vec<u8> {
    let coeffs = coefficients(if horizontal { w } else { h }, out_size, outputs.clone());
    let (ow, oh) = if horizontal { (outputs.len(), h) } else { (w, outputs.len()) };
    let mut out = vec![0u8; ow * oh * 3];
    for y in 0..oh {
        for x in 0..ow {
            let (start, k) = &coeffs[if horizontal { x } else { y }];
            for c in 0..3 {
                let mut acc = 1i64 << (PRECISION_BITS - 1);
                for (i, &kk) in k.iter().enumerate() {
                    let (sx, sy) = if horizontal { (start + i, y) } else { (x, start + i) };
                    acc += src[(sy * w + sx) * 3 + c] as i64 * kk;
                }
                out[(y * ow + x) * 3 + c] = clip8(acc);
            }
        }
    }
    out
}

/// A rectangle of an image, in pixels.
#[derive(Clone, Copy, Debug)]
pub struct Window {
    pub left: usize,
    pub top: usize,
    pub width: usize,
    pub height: usize,
}

/// The `window` of Pillow's `Image.resize((nw, nh), BICUBIC)` of an RGB image of `w` x `h`
/// bytes: horizontal pass, then vertical, as Pillow runs them. Each output pixel depends
/// only on its own filter window, so computing just the window's columns and rows gives
/// the same bytes as cropping the whole result.
///
/// # Panics
/// Where the window is not inside `nw` x `nh`, or `rgb` holds fewer than `w` x `h` pixels.
pub fn resize_bicubic_window(rgb: &[u8], (w, h): (usize, usize), (nw, nh): (usize, usize), window: Window) -> Vec<u8> {
    let Window { left, top, width, height } = window;
    assert!(left + width <= nw && top + height <= nh, "{window:?} is outside {nw}x{nh}");
    let columns = if nw != w {
        pass(rgb, w, h, nw, left..left + width, true)
    } else {
        rgb.chunks(w * 3).flat_map(|row| &row[left * 3..(left + width) * 3]).copied().collect()
    };
    if nh != h {
        pass(&columns, width, h, nh, top..top + height, false)
    } else {
        columns[top * width * 3..(top + height) * width * 3].to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The whole resize, as Pillow computes it, for the comparison.
    fn resize_whole(rgb: &[u8], w: usize, h: usize, nw: usize, nh: usize) -> Vec<u8> {
        resize_bicubic_window(rgb, (w, h), (nw, nh), Window { left: 0, top: 0, width: nw, height: nh })
    }

    #[test]
    fn a_window_of_the_resize_is_the_crop_of_the_whole() {
        let mut seed = 7u32;
        for (w, h, nw, nh) in [(37, 23, 16, 11), (9, 40, 20, 88), (50, 3, 120, 7), (12, 12, 12, 30), (30, 18, 30, 9)] {
            let rgb: Vec<u8> = (0..w * h * 3).map(|_| { seed = seed.wrapping_mul(1664525).wrapping_add(1013904223); (seed >> 24) as u8 }).collect();
            let whole = resize_whole(&rgb, w, h, nw, nh);
            for window in [Window { left: 0, top: 0, width: nw, height: nh }, Window { left: nw / 3, top: nh / 4, width: nw / 2, height: nh / 2 }, Window { left: nw - 1, top: nh - 1, width: 1, height: 1 }] {
                let crop: Vec<u8> = (window.top..window.top + window.height)
                    .flat_map(|y| whole[(y * nw + window.left) * 3..(y * nw + window.left + window.width) * 3].to_vec())
                    .collect();
                assert_eq!(resize_bicubic_window(&rgb, (w, h), (nw, nh), window), crop, "{w}x{h} -> {nw}x{nh}, {window:?}");
            }
        }
    }

    #[test]
    fn a_strip_too_thin_to_resize_is_refused() {
        let data = vec![7u8; 3 * 1_200_000];
        let err = clip_input(ImageRef { width: 1, height: 1_200_000, channels: 3, data: &data }, 224).err().expect("refused");
        assert!(err.to_string().contains("too thin to classify"), "{err}");
    }

    #[test]
    fn a_thin_strip_is_resized_in_its_crop_only() {
        // 1 x 16384 resizes to 224 x 3,670,016 before the crop: 2.5 GB if made whole.
        for (w, h) in [(1, 16384), (16384, 1)] {
            let data: Vec<u8> = (0..w * h * 3).map(|i| (i % 251) as u8).collect();
            let input = clip_input(ImageRef { width: w, height: h, channels: 3, data: &data }, 224).unwrap();
            assert_eq!((input.resized_u8.len(), input.pixels.len()), (224 * 224 * 3, 3 * 224 * 224), "{w}x{h}");
            assert!(input.pixels.iter().all(|v| v.is_finite()));
        }
    }
}
