//! The CPU twins of the norm, softmax, element-wise, layout and sampler kernels: the same
//! arithmetic as their WGSL files, sums accumulated in f64.

use super::{check_extent, parallel_chunks, parallel_for, SharedOut, Values};
use crate::error::Result;
use crate::kernels::Kernel;
use crate::kernels::sde::{update_slice, UpdateTerms, ZTerm};
use crate::kernels::{ActivationParams, BinaryParams, ChannelLayerNormParams, ConcatParams, GatherRowsParams, GroupNormParams, LayerNormParams, PadCropParams, SdeUpdateParams, SoftmaxParams, TransposeParams};

/// Elements per task of the element-wise kernels.
const CHUNK: usize = 1 << 14;

/// e^x to within 2 ulp (Cephes' range reduction and polynomial), written without
/// branches or library calls so that loops over slices vectorise (libm's `expf` does
/// not, and softmax, attention and the activations are mostly exponentials).
#[inline(always)]
#[allow(clippy::excessive_precision)] // the published coefficients, as written
pub(super) fn exp(x: f32) -> f32 {
    let x = x.clamp(-87.0, 88.0);
    // n = round(x / ln 2) by the 1.5 * 2^23 trick: t's low mantissa bits then hold n, so
    // 2^n needs no float-to-int conversion.
    const ROUND: f32 = 12_582_912.0;
    let t = x * std::f32::consts::LOG2_E + ROUND;
    let n = t - ROUND;
    let r = x - n * 0.693_359_4 - n * -2.121_944_4e-4;
    let mut p = 1.987_569_1e-4;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 5.000_000_1e-1;
    let e = p * r * r + r + 1.0;
    e * f32::from_bits(t.to_bits().wrapping_sub(0x4B40_0000).wrapping_add(127) << 23)
}

pub(super) fn silu(v: f32) -> f32 {
    v / (1.0 + exp(-v))
}

/// activation.wgsl's exact GELU: the erfc of Abramowitz-Stegun 7.1.26 (|error| < 1.5e-7).
#[allow(clippy::excessive_precision)] // the published coefficients, as activation.wgsl has them
fn gelu(x: f32) -> f32 {
    let z = x.abs() * std::f32::consts::FRAC_1_SQRT_2;
    let t = 1.0 / (1.0 + 0.3275911 * z);
    let poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))));
    let tail = 0.5 * poly * exp(-z * z);
    x * if x >= 0.0 { 1.0 - tail } else { tail }
}

/// Mean and 1/sqrt(var + eps) of `xs`.
fn moments(xs: &[f32], eps: f32) -> (f32, f32) {
    let n = xs.len() as f64;
    let mean = lane_sum(xs, |v| v as f64) / n;
    let var = lane_sum(xs, |v| (v as f64 - mean).powi(2)) / n;
    (mean as f32, (1.0 / (var + eps as f64).sqrt()) as f32)
}

/// The sum of `f(v)` over `values` in 8 partial sums (value i into sum i mod 8), added
/// at the end: sums in order are one chain of dependent adds, one add per 4 cycles
/// (a 256x256 UNet step's norms and softmaxes sum rows of 65536 values).
pub(super) fn lane_sum(values: &[f32], f: impl Fn(f32) -> f64) -> f64 {
    let mut lanes = [0f64; 8];
    let chunks = values.chunks_exact(8);
    let rest = chunks.remainder();
    for chunk in chunks {
        for (lane, &v) in lanes.iter_mut().zip(chunk) {
            *lane += f(v);
        }
    }
    for (lane, &v) in lanes.iter_mut().zip(rest) {
        *lane += f(v);
    }
    lanes.iter().sum()
}

/// The largest of `values` (f32::MIN for none), in 8 running maxima (see [`lane_sum`]).
pub(super) fn lane_max(values: &[f32]) -> f32 {
    let mut lanes = [f32::MIN; 8];
    let chunks = values.chunks_exact(8);
    let rest = chunks.remainder();
    for chunk in chunks {
        for (lane, &v) in lanes.iter_mut().zip(chunk) {
            *lane = lane.max(v);
        }
    }
    for (lane, &v) in lanes.iter_mut().zip(rest) {
        *lane = lane.max(v);
    }
    lanes.into_iter().fold(f32::MIN, f32::max)
}

pub(super) fn layer_norm(p: &LayerNormParams, ins: &[Values], out: &mut [f32]) -> Result<()> {
    let x = ins[0].f32(Kernel::LayerNorm)?;
    let (rows, c) = (p.rows as usize, p.c as usize);
    check_extent("layer_norm input", rows * c - 1, x.len())?;
    check_extent("layer_norm output", rows * c - 1, out.len())?;
    let (g, b) = if p.has_affine != 0 { (ins[1].widened(0, c, "layer_norm gain")?, ins[2].widened(0, c, "layer_norm bias")?) } else { Default::default() };
    parallel_chunks(&mut out[..rows * c], c, |r, y| {
        let xr = &x[r * c..(r + 1) * c];
        let (mean, inv) = moments(xr, p.eps);
        for (i, o) in y.iter_mut().enumerate() {
            let v = (xr[i] - mean) * inv;
            *o = if p.has_affine != 0 { v * g[i] + b[i] } else { v };
        }
    });
    Ok(())
}

pub(super) fn channel_layer_norm(p: &ChannelLayerNormParams, residual: bool, ins: &[Values], out: &mut [f32]) -> Result<()> {
    let x = ins[0].f32(Kernel::ChannelLayerNorm)?;
    let residual = if residual { Some(ins[2].f32(Kernel::ChannelLayerNorm)?) } else { None };
    let (batch, c, hw) = (p.batch as usize, p.c as usize, p.hw as usize);
    check_extent("channel_layer_norm input", batch * c * hw - 1, x.len())?;
    let g = ins[1].widened(0, c, "channel_layer_norm gain")?;
    check_extent("channel_layer_norm output", batch * c * hw - 1, out.len())?;
    if let Some(r) = residual {
        check_extent("channel_layer_norm residual", batch * c * hw - 1, r.len())?;
    }
    // Tasks: one image, a run of pixels, every channel (strided writes: SharedOut).
    const PIXELS: usize = 256;
    let runs = hw.div_ceil(PIXELS);
    let y = SharedOut::new(out);
    parallel_for(batch * runs, |t| {
        let (b, p0) = (t / runs, (t % runs) * PIXELS);
        let p1 = (p0 + PIXELS).min(hw);
        let base = b * c * hw;
        let mut sum = vec![0f64; p1 - p0];
        for ch in 0..c {
            for (s, &v) in sum.iter_mut().zip(&x[base + ch * hw + p0..base + ch * hw + p1]) {
                *s += v as f64;
            }
        }
        let mean: Vec<f64> = sum.iter().map(|s| s / c as f64).collect();
        let mut var = vec![0f64; p1 - p0];
        for ch in 0..c {
            for ((s, &v), m) in var.iter_mut().zip(&x[base + ch * hw + p0..base + ch * hw + p1]).zip(&mean) {
                *s += (v as f64 - m).powi(2);
            }
        }
        let inv: Vec<f32> = var.iter().map(|v| (1.0 / (v / c as f64 + p.eps as f64).sqrt()) as f32).collect();
        for (ch, &gc) in g[..c].iter().enumerate() {
            let row = base + ch * hw;
            for i in 0..p1 - p0 {
                // Pixels p0..p1 of image b: this task's alone.
                let at = row + p0 + i;
                y.set(at, (x[at] - mean[i] as f32) * inv[i] * gc + residual.map_or(0.0, |r| r[at]));
            }
        }
    });
    Ok(())
}

pub(super) fn group_norm(p: &GroupNormParams, ins: &[Values], out: &mut [f32]) -> Result<()> {
    let (x, stats) = (ins[0].f32(Kernel::GroupNorm)?, ins[3].f32(Kernel::GroupNorm)?);
    let (batch, c, hw, groups) = (p.batch as usize, p.c as usize, p.hw as usize, p.groups as usize);
    let cg = c / groups;
    let n = cg * hw;
    check_extent("group_norm input", batch * c * hw - 1, x.len())?;
    check_extent("group_norm output", batch * c * hw - 1, out.len())?;
    let (g, b) = if p.has_affine != 0 { (ins[1].widened(0, c, "group_norm gain")?, ins[2].widened(0, c, "group_norm bias")?) } else { Default::default() };
    let chunks = p.chunks as usize;
    if chunks > 1 {
        check_extent("group_norm statistics", batch * groups * chunks * 2 - 1, stats.len())?;
    }
    // (batch, group) blocks are contiguous and in order: one chunk each.
    parallel_chunks(&mut out[..batch * c * hw], n, |blk, y| {
        let xs = &x[blk * n..(blk + 1) * n];
        let (mean, inv) = if chunks > 1 {
            merged_moments(&stats[blk * chunks * 2..(blk + 1) * chunks * 2], p.chunk as usize, n, p.eps)
        } else {
            moments(xs, p.eps)
        };
        let ch0 = (blk % groups) * cg;
        for (i, o) in y.iter_mut().enumerate() {
            let mut v = (xs[i] - mean) * inv;
            if p.has_affine != 0 {
                let ch = ch0 + i / hw;
                v = v * g[ch] + b[ch];
            }
            *o = if p.silu != 0 { silu(v) } else { v };
        }
    });
    Ok(())
}

/// group_norm.wgsl's merge of its chunks' (mean, M2) into the group's mean and
/// 1 / sqrt(var + eps): the size-weighted mean of the means, and the M2s plus each
/// chunk's size times its mean's squared deviation (in f64 here).
fn merged_moments(stats: &[f32], chunk: usize, n: usize, eps: f32) -> (f32, f32) {
    let size = |j: usize| chunk.min(n - j * chunk) as f64;
    let mean = stats.chunks_exact(2).enumerate().map(|(j, st)| size(j) * st[0] as f64).sum::<f64>() / n as f64;
    let m2: f64 = stats.chunks_exact(2).enumerate().map(|(j, st)| st[1] as f64 + size(j) * (st[0] as f64 - mean).powi(2)).sum();
    (mean as f32, (1.0 / (m2 / n as f64 + eps as f64).sqrt()) as f32)
}

/// group_norm_stats.wgsl: each chunk's mean and sum of squared deviations.
pub(super) fn group_norm_stats(p: &GroupNormParams, ins: &[&[f32]], out: &mut [f32]) -> Result<()> {
    let x = ins[0];
    let (batch, c, hw, groups, chunk, chunks) = (p.batch as usize, p.c as usize, p.hw as usize, p.groups as usize, p.chunk as usize, p.chunks as usize);
    let n = c / groups * hw;
    check_extent("group_norm_stats input", batch * c * hw - 1, x.len())?;
    check_extent("group_norm_stats output", batch * groups * chunks * 2 - 1, out.len())?;
    parallel_chunks(&mut out[..batch * groups * chunks * 2], 2, |t, st| {
        let (blk, j) = (t / chunks, t % chunks);
        let xs = &x[blk * n + j * chunk..blk * n + (j * chunk + chunk).min(n)];
        let mean = lane_sum(xs, |v| v as f64) / xs.len() as f64;
        st[0] = mean as f32;
        st[1] = lane_sum(xs, |v| (v as f64 - mean).powi(2)) as f32;
    });
    Ok(())
}

pub(super) fn softmax(p: &SoftmaxParams, ins: &[&[f32]], out: &mut [f32]) -> Result<()> {
    let a = [p.a_outer, p.a_dim, p.a_inner, p.a_in, p.a_out].map(|v| v as usize);
    let b = [p.b_outer, p.b_dim, p.b_inner, p.b_in, p.b_out].map(|v| v as usize);
    for ([outer, dim, inner, off, out_off], x) in [(a, ins[0]), (b, ins[1])] {
        if outer * dim * inner > 0 {
            softmax_block(x, [outer, dim, inner, off], out, out_off)?;
        }
    }
    Ok(())
}

/// Softmax of `x` from `off` seen as [outer, dim, inner] along dim, into `out` from `out_off`.
fn softmax_block(x: &[f32], [outer, dim, inner, off]: [usize; 4], out: &mut [f32], out_off: usize) -> Result<()> {
    let block = dim * inner;
    check_extent("softmax input", off + outer * block - 1, x.len())?;
    check_extent("softmax output", out_off + outer * block - 1, out.len())?;
    parallel_chunks(&mut out[out_off..out_off + outer * block], block, |o, y| {
        let xs = &x[off + o * block..off + (o + 1) * block];
        if inner == 1 {
            let m = lane_max(xs);
            for (o, &v) in y.iter_mut().zip(xs) {
                *o = exp(v - m);
            }
            let inv = (1.0 / lane_sum(y, |v| v as f64)) as f32;
            y.iter_mut().for_each(|o| *o *= inv);
            return;
        }
        // Strided rows: all `inner` rows at once, walking the block in memory order.
        let mut m = xs[..inner].to_vec();
        for j in 1..dim {
            for (mi, &v) in m.iter_mut().zip(&xs[j * inner..(j + 1) * inner]) {
                *mi = mi.max(v);
            }
        }
        let mut sum = vec![0f32; inner];
        for j in 0..dim {
            let (src, dst) = (&xs[j * inner..(j + 1) * inner], &mut y[j * inner..(j + 1) * inner]);
            for (((o, &v), &mi), s) in dst.iter_mut().zip(src).zip(&m).zip(sum.iter_mut()) {
                *o = exp(v - mi);
                *s += *o;
            }
        }
        sum.iter_mut().for_each(|s| *s = 1.0 / *s);
        for j in 0..dim {
            for (o, &inv) in y[j * inner..(j + 1) * inner].iter_mut().zip(&sum) {
                *o *= inv;
            }
        }
    });
    Ok(())
}

pub(super) fn activation(p: &ActivationParams, op: u32, ins: &[&[f32]], out: &mut [f32]) -> Result<()> {
    let x = ins[0];
    let (n, d) = (p.n as usize, p.d as usize);
    check_extent("activation output", n - 1, out.len())?;
    check_extent("activation input", if op == 2 { 2 * n - 1 } else { n - 1 }, x.len())?;
    parallel_chunks(&mut out[..n], CHUNK, |c, y| {
        let i0 = c * CHUNK;
        match op {
            0 => y.iter_mut().zip(&x[i0..]).for_each(|(o, &v)| *o = gelu(v)),
            1 => y.iter_mut().zip(&x[i0..]).for_each(|(o, &v)| *o = silu(v)),
            _ => {
                for (j, o) in y.iter_mut().enumerate() {
                    let (r, col) = ((i0 + j) / d, (i0 + j) % d);
                    *o = x[r * 2 * d + col] * gelu(x[r * 2 * d + d + col]);
                }
            }
        }
    });
    Ok(())
}

pub(super) fn binary(p: &BinaryParams, op: u32, ins: &[&[f32]], out: &mut [f32]) -> Result<()> {
    let (a, b) = (ins[0], ins[1]);
    let (n, b_len, b_inner) = (p.n as usize, p.b_len as usize, p.b_inner as usize);
    check_extent("binary operand", n - 1, a.len().min(out.len()))?;
    check_extent("binary broadcast operand", b_len - 1, b.len())?;
    // Runs of `unit` elements see either one value of b (b_inner > 1: a plane per
    // channel) or all of b in order (b_inner == 1): loops without a division per element.
    let unit = if b_inner > 1 { b_inner } else { b_len };
    let f = |a: f32, b: f32| match op {
        0 => a + b,
        1 => a * b,
        _ => a - b,
    };
    parallel_chunks(&mut out[..n], unit * (CHUNK / unit).max(1), |c, y| {
        let u0 = c * (CHUNK / unit).max(1);
        for (k, yr) in y.chunks_mut(unit).enumerate() {
            let u = u0 + k;
            let ar = &a[u * unit..];
            if b_inner > 1 {
                let bv = b[u % b_len];
                yr.iter_mut().zip(ar).for_each(|(o, &av)| *o = f(av, bv));
            } else {
                yr.iter_mut().zip(ar).zip(b).for_each(|((o, &av), &bv)| *o = f(av, bv));
            }
        }
    });
    Ok(())
}

pub(super) fn concat(p: &ConcatParams, ins: &[&[f32]], out: &mut [f32]) -> Result<()> {
    let (a, b) = (ins[0], ins[1]);
    let (n, c1, c2, hw) = (p.n as usize, p.c1 as usize, p.c2 as usize, p.hw as usize);
    let batch = n / ((c1 + c2) * hw);
    check_extent("concat output", n - 1, out.len())?;
    check_extent("concat first input", batch * c1 * hw - 1, a.len())?;
    check_extent("concat second input", batch * c2 * hw - 1, b.len())?;
    parallel_chunks(&mut out[..n], (c1 + c2) * hw, |bt, y| {
        y[..c1 * hw].copy_from_slice(&a[bt * c1 * hw..(bt + 1) * c1 * hw]);
        y[c1 * hw..].copy_from_slice(&b[bt * c2 * hw..(bt + 1) * c2 * hw]);
    });
    Ok(())
}

pub(super) fn pad_crop(p: &PadCropParams, ins: &[&[f32]], out: &mut [f32]) -> Result<()> {
    let x = ins[0];
    let (n, h, w, ho, wo) = (p.n as usize, p.h as usize, p.w as usize, p.ho as usize, p.wo as usize);
    let planes = n / (ho * wo);
    check_extent("pad/crop output", n - 1, out.len())?;
    check_extent("pad/crop input", planes * h * w - 1, x.len())?;
    // Reflection about the last row/column, as reflect padding on the bottom/right does.
    let reflect = |o: usize, len: usize| if o >= len { 2 * (len - 1) - o } else { o };
    parallel_chunks(&mut out[..n], wo, |r, y| {
        let (plane, oy) = (r / ho, r % ho);
        let src = &x[(plane * h + reflect(oy, h)) * w..][..w];
        for (ox, o) in y.iter_mut().enumerate() {
            *o = src[reflect(ox, w)];
        }
    });
    Ok(())
}

pub(super) fn transpose(p: &TransposeParams, batch: usize, ins: &[&[f32]], out: &mut [f32]) -> Result<()> {
    let x = ins[0];
    let (rows, cols) = (p.rows as usize, p.cols as usize);
    let plane = rows * cols;
    check_extent("transpose input", batch * plane - 1, x.len())?;
    check_extent("transpose output", batch * plane - 1, out.len())?;
    const TILE: usize = 32;
    // One output plane per chunk, walked in tiles so that reads and writes stay in cache.
    parallel_chunks(&mut out[..batch * plane], plane, |b, y| {
        let xs = &x[b * plane..(b + 1) * plane];
        for r0 in (0..rows).step_by(TILE) {
            for c0 in (0..cols).step_by(TILE) {
                for r in r0..(r0 + TILE).min(rows) {
                    for c in c0..(c0 + TILE).min(cols) {
                        y[c * rows + r] = xs[r * cols + c];
                    }
                }
            }
        }
    });
    Ok(())
}

pub(super) fn gather_rows(p: &GatherRowsParams, ins: &[Values], out: &mut [f32]) -> Result<()> {
    let (table, index) = (ins[0], bytemuck::cast_slice::<f32, u32>(ins[1].f32(Kernel::GatherRows)?));
    let (n, c, rows) = (p.n as usize, p.c as usize, p.table_rows as usize);
    check_extent("gather output", n - 1, out.len())?;
    check_extent("gather indices", n / c - 1, index.len())?;
    check_extent("gather table", rows * c - 1, table.len())?;
    for (r, y) in out[..n].chunks_mut(c).enumerate() {
        // Out-of-range indices read the last row, as the shader does.
        let src = (index[r] as usize).min(rows - 1);
        table.widen_into(src * c, y);
    }
    Ok(())
}

pub(super) fn sde_update(p: &SdeUpdateParams, z_mode: u32, ins: &[&[f32]], out: &mut [f32]) -> Result<()> {
    let (mu, x, noise, z, prev) = (ins[0], ins[1], ins[2], ins[3], ins[4]);
    let n = p.n as usize;
    check_extent("sampler update", n - 1, [mu.len(), x.len(), noise.len(), z.len(), prev.len(), out.len()].into_iter().min().unwrap())?;
    let z = match z_mode {
        1 => ZTerm::Given(z),
        2 => ZTerm::Seeded { seed: p.seed_lo as u64 | (p.seed_hi as u64) << 32, stream: p.stream },
        _ => ZTerm::None,
    };
    let terms = UpdateTerms { a: p.a, b: p.b, c: p.c, d: p.d, noise, prev, z };
    parallel_chunks(&mut out[..n], CHUNK, |ch, y| update_slice(y, ch * CHUNK, |i| mu[i], Some(x), &terms));
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn exp_is_within_two_ulp_of_f64() {
        let mut worst = 0f64;
        for i in -87_000..88_000 {
            let x = i as f32 / 1000.0;
            let want = (x as f64).exp();
            worst = worst.max(((super::exp(x) as f64 - want) / want).abs());
        }
        assert!(worst < 2.5e-7, "exp relative error {worst:.2e}");
        assert_eq!(super::exp(-1e9), super::exp(-87.0));
        assert!(super::exp(1e9).is_finite());
    }
}
