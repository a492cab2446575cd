//! 3x3 convolutions (stride 1, padding 1) by Winograd's F(2x2, 3x3) (Lavin & Gray 2016):
//! each 2x2 block of output pixels ("tile") from a 4x4 input patch, as 16 products of the
//! transformed weights [Cout, Cin] with the transformed patches [Cin, tiles] (one per
//! element of the 4x4 transform domain), then a transform back. 2.25 times fewer
//! multiply-adds than the direct convolution; the transforms' coefficients are 0, +-1
//! and 1/2, so rounding stays that of a direct sum.
//!
//! Two ways to the 16 products, one per CPU:
//! - **Register tiles** where the CPU has AVX-512 (natively, `tile`): the transforms write
//!   both operands in the layout of its 8 x 32 tile (8 output channels, 32 tiles; a
//!   panel holds one tile's column of every input channel), so that nothing is packed
//!   again, and each tile's 16 products go straight into the transform back while they
//!   are in L1. Packing the transformed patches for the general GEMM cost as much as
//!   half its multiply-adds, and its results made a round trip through L2.
//! - **The general GEMM** elsewhere (`gemm::sgemm`: matrixmultiply's kernels natively,
//!   `sgemm128` in the browser), on the whole block of tiles at once.
//!
//! Both compute every output as the same sum, in input-channel order, of the same
//! transformed values; only the GEMM's grouping of the sum (and fused or separate
//! multiply-adds) differs between them.

use std::ops::Range;

use super::gemm::{ranges, sgemm, ConvInput, Epilogue, Strided};
use super::tile::{self, MR, NR};
use super::{check_extent, parallel_for, threads, with_scratch, SharedOut, Values};
use crate::error::Result;
use crate::kernels::Conv2dParams;

/// Below this many input or output channels a 3x3 convolution goes through im2col: the
/// transforms would cost more than the multiplications they save.
const MIN_CHANNELS: usize = 16;

/// Below this many 2x2 output tiles per image (32x32 pixels) too: the weights' transform
/// (16 values per 9 weights, written on every call) and the narrow products outweigh the
/// multiplications saved. At 8x8 pixels and 512 channels Winograd ran at 18-30 GFLOP/s of
/// direct-convolution work; with im2col below 256 tiles a published UNet step took 118,
/// 366 and 1477 ms at 64, 128 and 256 pixels against 259, 464 and 1559 with Winograd
/// from 16 tiles (bench --device cpu, 2 threads). With the register tiles too: from 64
/// tiles a 64x64 step took 110-116 ms against 98-106, from 1024 no different.
const MIN_TILES: usize = 256;

/// Whether the convolution goes by Winograd's algorithm ([`conv3x3`]).
pub(super) fn applies(p: &Conv2dParams) -> bool {
    let tiles = p.ho.div_ceil(2) * p.wo.div_ceil(2);
    let channels = p.cin.min(p.cout) as usize;
    p.kh == 3 && p.kw == 3 && p.stride == 1 && p.pad == 1 && channels >= MIN_CHANNELS && tiles as usize >= MIN_TILES
}

/// The convolution and its epilogue, for the output tiles of the rows `tile_rows` (tiles
/// of the other rows are neither read nor written).
pub(super) fn conv3x3(p: &Conv2dParams, batch: usize, x: &ConvInput, w: Values, epilogue: &Epilogue, out: &mut [f32], tile_rows: Range<usize>) -> Result<()> {
    conv3x3_by(tile::available(), p, batch, x, w, epilogue, out, tile_rows)
}

/// The layout of the transformed weights U and patches V.
#[derive(Clone, Copy)]
enum Layout {
    /// For the register tiles: U in panels of MR output channels, [16][cout / MR][cin][MR],
    /// and V in panels of NR tiles, [16][tiles / NR][cin][NR] (the last panels padded).
    Panels,
    /// For the general GEMM: U [16][cout][cin] and V [16][cin][tiles] of a block of `tiles`.
    Whole { tiles: usize },
}

impl Layout {
    /// Output channels U holds: `cout` in whole panels (those past it computed, never
    /// stored).
    fn padded(&self, cout: usize) -> usize {
        match self {
            Layout::Panels => cout.next_multiple_of(MR),
            Layout::Whole { .. } => cout,
        }
    }

    /// Tiles of a panel of V.
    fn panel_tiles(&self) -> usize {
        match *self {
            Layout::Panels => NR,
            Layout::Whole { tiles } => tiles,
        }
    }

    /// Index of U's (element e, output channel co, input channel ci), of `cout` channels.
    fn u(&self, cin: usize, cout: usize, e: usize, co: usize, ci: usize) -> usize {
        match self {
            Layout::Panels => ((e * cout.div_ceil(MR) + co / MR) * cin + ci) * MR + co % MR,
            Layout::Whole { .. } => (e * cout + co) * cin + ci,
        }
    }

    /// Index of V's (element e, input channel ci, tile i of the block of `tiles`).
    fn v(&self, cin: usize, tiles: usize, e: usize, ci: usize, i: usize) -> usize {
        match self {
            Layout::Panels => ((e * tiles.div_ceil(NR) + i / NR) * cin + ci) * NR + i % NR,
            Layout::Whole { .. } => (e * cin + ci) * tiles + i,
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn conv3x3_by(tiled: bool, p: &Conv2dParams, batch: usize, x: &ConvInput, w: Values, epilogue: &Epilogue, out: &mut [f32], tile_rows: Range<usize>) -> Result<()> {
    let (cin, h, wd, cout) = (p.cin as usize, p.h as usize, p.w as usize, p.cout as usize);
    let (th, tw) = (h.div_ceil(2), wd.div_ceil(2));
    let tiles = th * tw;
    check_extent("conv2d weight", cout * cin * 9 - 1, w.len())?;
    check_extent("conv2d output", batch * cout * h * wd - 1, out.len())?;
    // The tiles of the rows asked for.
    let (first, last) = (tile_rows.start * tw, (tile_rows.end * tw).min(tiles));
    let count = last.saturating_sub(first);
    if count == 0 {
        return Ok(());
    }
    // Blocks of tiles: for register tiles, transformed patches of about 1 MiB (in L2
    // while every panel of weights passes); for the general GEMM, transformed patches
    // and products of about 4 MiB and at least 64 tiles (the products' width). Enough
    // blocks for every thread.
    let by_threads = count.div_ceil(threads() * 2);
    let block = if tiled {
        ((1 << 18) / (16 * cin)).min(by_threads).max(NR).next_multiple_of(NR)
    } else {
        ((1 << 20) / (16 * (cin + cout))).min(by_threads).max(64).next_multiple_of(8)
    };
    let layout = |tiles_in_block: usize| if tiled { Layout::Panels } else { Layout::Whole { tiles: tiles_in_block } };
    let u = transform_weights(w, cin, cout, layout(0));
    // Blocks of whole panels of tiles, but for the last.
    let blocks: Vec<_> = ranges(count, count.div_ceil(block), if tiled { NR } else { 8 }).into_iter().map(|(s, e)| (first + s, first + e)).collect();
    let y = SharedOut::new(out);
    let failed = std::sync::Mutex::new(None);
    parallel_for(batch * blocks.len(), |task| {
        let (bi, (t0, t1)) = (task / blocks.len(), blocks[task % blocks.len()]);
        let nb = t1 - t0;
        let lay = layout(nb);
        let runs = tile_runs(t0..t1, tw);
        let v_len = 16 * nb.next_multiple_of(lay.panel_tiles()) * cin;
        let m_len = if tiled { 16 * MR * NR } else { 16 * cout * nb };
        with_scratch(v_len, m_len, |v, m| {
            transform_patches(x, bi, cin, h, wd, &runs, nb, lay, v);
            let out = Output { y: &y, epilogue, image: bi, cout, h, wd };
            if tiled {
                // Every panel of output channels over every panel of tiles, the latter
                // (1 MiB) in L2 while a panel of weights (16 cin MR values) passes.
                for c0 in (0..cout).step_by(MR) {
                    for i0 in (0..nb).step_by(NR) {
                        for e in 0..16 {
                            let (ua, vb) = (&u[lay.u(cin, cout, e, c0, 0)..][..cin * MR], &v[lay.v(cin, nb, e, 0, i0)..][..cin * NR]);
                            tile::product(cin, ua, vb, &mut m[e * MR * NR..][..MR * NR]);
                        }
                        let panel = tile_runs(t0 + i0..t1.min(t0 + i0 + NR), tw);
                        out.store(m, |e, co| (e * MR + co - c0) * NR, c0..(c0 + MR).min(cout), &panel);
                    }
                }
            } else {
                // M = U V for each of the 16 transform elements: [16][cout][nb].
                let mo = SharedOut::new(m);
                for e in 0..16 {
                    let sa = Strided { offset: e * cout * cin, rs: cin, cs: 1 };
                    let sb = Strided { offset: e * cin * nb, rs: nb, cs: 1 };
                    let sc = Strided { offset: e * cout * nb, rs: nb, cs: 1 };
                    if let Err(err) = sgemm(cout, nb, cin, 1.0, Values::F32(&u), sa, Values::F32(v), sb, &mo, sc) {
                        failed.lock().unwrap().get_or_insert(err);
                        return;
                    }
                }
                out.store(m, |e, co| (e * cout + co) * nb, 0..cout, &runs);
            }
        });
    });
    failed.into_inner().unwrap().map_or(Ok(()), Err)
}

/// U = G g G^T for every (cout, cin), in `layout`, output channels over threads.
fn transform_weights(w: Values, cin: usize, cout: usize, layout: Layout) -> Vec<f32> {
    // Channels past cout in the last panel are computed and never stored: any value.
    let mut u = vec![0f32; 16 * layout.padded(cout) * cin];
    let us = SharedOut::new(&mut u);
    parallel_for(cout, |co| {
        // Output channel co's weights, and its 16 transformed values of each input
        // channel: [16][cin].
        let mut row = vec![0f32; cin * 9];
        w.widen_into(co * cin * 9, &mut row);
        let mut uc = vec![0f32; 16 * cin];
        for (ci, g) in row.chunks_exact(9).enumerate() {
            let mut t = [[0f32; 3]; 4]; // G g: 4 x 3
            for c in 0..3 {
                let (g0, g1, g2) = (g[c], g[3 + c], g[6 + c]);
                t[0][c] = g0;
                t[1][c] = 0.5 * (g0 + g1 + g2);
                t[2][c] = 0.5 * (g0 - g1 + g2);
                t[3][c] = g2;
            }
            for (r, row) in t.iter().enumerate() {
                let (a, b, c) = (row[0], row[1], row[2]);
                for (j, v) in [a, 0.5 * (a + b + c), 0.5 * (a - b + c), c].into_iter().enumerate() {
                    uc[(r * 4 + j) * cin + ci] = v;
                }
            }
        }
        // Output channel co's values, every `step`-th of U from `first` (1 in the whole
        // layout, MR in panels): written by this task alone.
        for (e, values) in uc.chunks_exact(cin).enumerate() {
            let first = layout.u(cin, cout, e, co, 0);
            let step = if cin > 1 { layout.u(cin, cout, e, co, 1) - first } else { 1 };
            assert!(first + (cin - 1) * step < us.len(), "Winograd weights' layout");
            for (ci, &v) in values.iter().enumerate() {
                // SAFETY: in U (checked above); no other task writes U's (e, co, ci).
                unsafe { *us.ptr().add(first + ci * step) = v };
            }
        }
    });
    u
}

/// The tiles `tiles` as runs along tile rows: (tile row, first column, count, index of
/// the first from `tiles.start`). The transforms work on whole runs, so that their loops
/// run over consecutive tiles and vectorise.
fn tile_runs(tiles: Range<usize>, tw: usize) -> Vec<(usize, usize, usize, usize)> {
    let mut runs = Vec::new();
    let mut t = tiles.start;
    while t < tiles.end {
        let (ty, tx) = (t / tw, t % tw);
        let n = (tw - tx).min(tiles.end - t);
        runs.push((ty, tx, n, t - tiles.start));
        t += n;
    }
    runs
}

/// V = B^T d B of every tile of the block (`runs`, `nb` tiles) for every input channel
/// of image `bi` of `x`, into `v` in `layout` (every tile's value written; tiles past the
/// block in its last panel are left as they were: computed, never stored).
#[allow(clippy::too_many_arguments)]
fn transform_patches(x: &ConvInput, bi: usize, cin: usize, h: usize, wd: usize, runs: &[(usize, usize, usize, usize)], nb: usize, layout: Layout, v: &mut [f32]) {
    let tw = wd.div_ceil(2);
    let (mut even, mut odd) = (vec![0f32; 4 * (tw + 1)], vec![0f32; 4 * (tw + 1)]);
    let mut db = vec![0f32; 16 * tw];
    let mut vt = vec![0f32; 4 * tw];
    let mut upsampled = vec![0f32; wd];
    for ci in 0..cin {
        for &(ty, tx0, n, i0) in runs {
            // Rows 2 ty - 1 .. 2 ty + 2 of the padded input, split into the columns
            // 2 (tx0 + k) - 1 (even[k]) and 2 (tx0 + k) (odd[k]), for k in 0..=n.
            for r in 0..4 {
                let (e, o) = (&mut even[r * (tw + 1)..r * (tw + 1) + n + 1], &mut odd[r * (tw + 1)..r * (tw + 1) + n + 1]);
                let iy = (2 * ty + r).wrapping_sub(1);
                if iy >= h {
                    e.fill(0.0);
                    o.fill(0.0);
                    continue;
                }
                let row = x.row(bi, ci, iy, &mut upsampled);
                // Columns c - 1, c for c = 2 (tx0 + k): inside the row for k in lo..hi,
                // read as pairs; padding (zeros) at the ends.
                let c0 = 2 * tx0;
                let lo = usize::from(c0 == 0);
                let hi = ((wd + 1 - c0) / 2).min(n + 1).max(lo);
                if lo == 1 {
                    (e[0], o[0]) = (0.0, row[0]); // column -1 is padding
                }
                let pairs = row[c0 + 2 * lo - 1..].chunks_exact(2).take(hi - lo);
                for ((ek, ok), pair) in e[lo..hi].iter_mut().zip(&mut o[lo..hi]).zip(pairs) {
                    *ek = pair[0];
                    *ok = pair[1];
                }
                for k in hi.max(lo)..=n {
                    let c = c0 + 2 * k;
                    e[k] = if c >= 1 && c - 1 < wd { row[c - 1] } else { 0.0 };
                    o[k] = if c < wd { row[c] } else { 0.0 };
                }
            }
            // d B for each row r (four values per tile, db[(r * 4 + j) * tw + k]), then
            // B^T (d B) combining the rows.
            for r in 0..4 {
                let e = &even[r * (tw + 1)..r * (tw + 1) + n + 1];
                let o = &odd[r * (tw + 1)..r * (tw + 1) + n + 1];
                let row = &mut db[r * 4 * tw..(r + 1) * 4 * tw];
                let (d0, rest) = row.split_at_mut(tw);
                let (d1, rest) = rest.split_at_mut(tw);
                let (d2, d3) = rest.split_at_mut(tw);
                for k in 0..n {
                    d0[k] = e[k] - e[k + 1];
                    d1[k] = o[k] + e[k + 1];
                    d2[k] = e[k + 1] - o[k];
                    d3[k] = o[k] - o[k + 1];
                }
            }
            for j in 0..4 {
                let at = |r: usize| &db[(r * 4 + j) * tw..][..n];
                let (r0, r1, r2, r3) = (at(0), at(1), at(2), at(3));
                let (t0, rest) = vt.split_at_mut(tw);
                let (t1, rest) = rest.split_at_mut(tw);
                let (t2, t3) = rest.split_at_mut(tw);
                for k in 0..n {
                    t0[k] = r0[k] - r2[k];
                    t1[k] = r1[k] + r2[k];
                    t2[k] = r2[k] - r1[k];
                    t3[k] = r1[k] - r3[k];
                }
                // Element ri * 4 + j of the run's tiles, a panel's stretch at a time.
                for ri in 0..4 {
                    let src = &vt[ri * tw..][..n];
                    let mut k = 0;
                    while k < n {
                        let i = i0 + k;
                        let len = (layout.panel_tiles() - i % layout.panel_tiles()).min(n - k);
                        let at = layout.v(cin, nb, ri * 4 + j, ci, i);
                        v[at..at + len].copy_from_slice(&src[k..k + len]);
                        k += len;
                    }
                }
            }
        }
    }
}

/// Where the transform back writes: image `image` of the output [batch, cout, h, wd].
struct Output<'a, 'b> {
    y: &'a SharedOut<'b>,
    epilogue: &'a Epilogue<'a>,
    image: usize,
    cout: usize,
    h: usize,
    wd: usize,
}

impl Output<'_, '_> {
    /// Y = A^T M A, then the epilogue, for the output channels `couts` and the tiles
    /// `runs`: each tile's 2x2 output pixels, cropped at the image's edge. Element e of output
    /// channel co's products is `m[at(e, co) + i]` for the run's tile index i.
    fn store(&self, m: &[f32], at: impl Fn(usize, usize) -> usize, couts: Range<usize>, runs: &[(usize, usize, usize, usize)]) {
        let (h, wd) = (self.h, self.wd);
        let tw = wd.div_ceil(2);
        let mut s = vec![0f32; 8 * tw]; // A^T M: s[(r * 4 + c) * tw + k]
        for co in couts {
            let yb = (self.image * self.cout + co) * h * wd;
            for &(ty, tx0, n, i0) in runs {
                let me = |e: usize| &m[at(e, co) + i0..][..n];
                for c in 0..4 {
                    let (m0, m1, m2, m3) = (me(c), me(4 + c), me(8 + c), me(12 + c));
                    let (top, bottom) = s.split_at_mut(4 * tw);
                    for (k, (t, u)) in top[c * tw..][..n].iter_mut().zip(&mut bottom[c * tw..][..n]).enumerate() {
                        *t = m0[k] + m1[k] + m2[k];
                        *u = m1[k] - m2[k] - m3[k];
                    }
                }
                for r in 0..2 {
                    let oy = 2 * ty + r;
                    if oy >= h {
                        break;
                    }
                    let at = |c: usize| &s[(r * 4 + c) * tw..][..n];
                    let (a, bb, c, d) = (at(0), at(1), at(2), at(3));
                    // Output columns 2 tx0 .. 2 (tx0 + n), cropped at the image's edge:
                    // pixels of this task's tiles alone.
                    let (x0, x1) = (2 * tx0, (2 * (tx0 + n)).min(wd));
                    // SAFETY: in bounds (x1 <= wd); no other task writes these pixels.
                    let out_row = unsafe { self.y.slice_mut(yb + oy * wd + x0, x1 - x0) };
                    let mut pairs = out_row.chunks_exact_mut(2);
                    for (k, pair) in (&mut pairs).enumerate() {
                        pair[0] = a[k] + bb[k] + c[k];
                        pair[1] = bb[k] - c[k] - d[k];
                    }
                    if let [last] = pairs.into_remainder() {
                        let k = n - 1;
                        *last = a[k] + bb[k] + c[k];
                    }
                    self.epilogue.apply(self.image, co, oy * wd + x0, out_row);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{conv3x3_by, Conv2dParams, ConvInput, Epilogue, Values};
    use crate::device::cpu::gemm::direct_sum;
    use crate::device::cpu::kernels::silu;

    /// Both ways to the products (register tiles, whose code runs without AVX-512 too,
    /// and the general GEMM) against the direct convolution in f64, with its bias, SiLU
    /// and a residual, over two images with odd sides, channel counts that fill no
    /// panel, tile rows from the middle, f32 and f16 weights; outside the rows asked for,
    /// nothing is written.
    #[test]
    fn both_ways_match_the_direct_convolution() {
        let mut rng = crate::weights::SplitMix::new(11);
        let (batch, cin, cout, h, w) = (2, 19, 13, 35, 37);
        let x: Vec<f32> = (0..batch * cin * h * w).map(|_| rng.uniform() as f32 - 0.5).collect();
        let wt: Vec<f32> = (0..cout * cin * 9).map(|_| half::f16::from_f32(rng.uniform() as f32 - 0.5).to_f32()).collect();
        let halves: Vec<u16> = wt.iter().map(|&v| half::f16::from_f32(v).to_bits()).collect();
        let bias: Vec<f32> = (0..cout).map(|_| rng.uniform() as f32).collect();
        let residual: Vec<f32> = (0..batch * cout * h * w).map(|_| rng.uniform() as f32).collect();
        let flags = Conv2dParams::SILU | Conv2dParams::RESIDUAL;
        let p = Conv2dParams { cin: cin as u32, h: h as u32, w: w as u32, cout: cout as u32, ho: h as u32, wo: w as u32, kh: 3, kw: 3, stride: 1, pad: 1, has_bias: 1, split: cin as u32, flags, ..bytemuck::Zeroable::zeroed() };
        let none = Values::F32(&[]);
        let epilogue = Epilogue::new(&p, batch, &[none, none, none, Values::F32(&bias), none, Values::F32(&residual), none]).unwrap();
        let input = ConvInput::new(&p, batch, &x, &[]).unwrap();
        let rows = 3..15; // of 18 rows of tiles
        let direct = |b: usize, co: usize, oy: usize, ox: usize| {
            let sum = bias[co] as f64 + direct_sum(&x, &wt, [cin, h, w], [3, 1, 1], b, co, oy, ox);
            silu(sum as f32) as f64 + residual[((b * cout + co) * h + oy) * w + ox] as f64
        };
        for tiled in [true, false] {
            for weights in [Values::F32(&wt), Values::F16(&halves)] {
                let mut out = vec![f32::NAN; batch * cout * h * w];
                conv3x3_by(tiled, &p, batch, &input, weights, &epilogue, &mut out, rows.clone()).unwrap();
                for b in 0..batch {
                    for co in 0..cout {
                        for oy in 0..h {
                            for ox in 0..w {
                                let got = out[((b * cout + co) * h + oy) * w + ox];
                                if !rows.contains(&(oy / 2)) {
                                    assert!(got.is_nan(), "tiled {tiled}: pixel ({oy}, {ox}) outside the rows written");
                                    continue;
                                }
                                let want = direct(b, co, oy, ox);
                                assert!((got as f64 - want).abs() < 1e-5, "tiled {tiled}: image {b} channel {co} ({oy}, {ox}): {got} vs {want}");
                            }
                        }
                    }
                }
            }
        }
    }
}
