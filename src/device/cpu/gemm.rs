//! Matrix products and convolutions on the CPU: a packed GEMM (`matrixmultiply`'s
//! natively, `sgemm128` in the browser) on blocks of the output, the blocks spread over
//! threads.

use std::ops::Range;

use super::kernels::silu;
use super::{check_extent, parallel_chunks, parallel_for, threads, with_scratch, SharedOut, Values};
use crate::error::{Error, Result};
use crate::kernels::{Conv2dParams, Kernel, MatmulParams};

/// Below this many multiply-adds a product runs on one thread (a thread hand-off costs
/// about as much).
const SERIAL_MACS: usize = 1 << 18;

/// One strided matrix: entry (r, c) at `offset + r * rs + c * cs`.
#[derive(Clone, Copy)]
struct Strided {
    offset: usize,
    rs: usize,
    cs: usize,
}

impl Strided {
    fn max_index(&self, rows: usize, cols: usize) -> usize {
        self.offset + (rows - 1) * self.rs + (cols - 1) * self.cs
    }
}

/// `C = alpha A B` for an m x k `A` and k x n `B` read from slices, written into `c`
/// (which the caller sized). Every extent is checked before the unsafe call. A packed
/// f16 operand (a weight) is widened a block at a time (see [`widened_sgemm`]).
#[allow(clippy::too_many_arguments)]
fn sgemm(m: usize, n: usize, k: usize, alpha: f32, a: Values, sa: Strided, b: Values, sb: Strided, c: &SharedOut, sc: Strided) -> Result<()> {
    if m == 0 || n == 0 {
        return Ok(());
    }
    check_extent("matmul output", sc.max_index(m, n), c.len())?;
    if k == 0 {
        for r in 0..m {
            for col in 0..n {
                c.set(sc.offset + r * sc.rs + col * sc.cs, 0.0);
            }
        }
        return Ok(());
    }
    check_extent("matmul left operand", sa.max_index(m, k), a.len())?;
    check_extent("matmul right operand", sb.max_index(k, n), b.len())?;
    match (a, b) {
        // SAFETY: every index the product touches was checked above; the caller guarantees
        // that no other task writes this block of C.
        (Values::F32(a), Values::F32(b)) => unsafe {
            let (a, b, c) = (a.as_ptr().add(sa.offset), b.as_ptr().add(sb.offset), c.ptr().add(sc.offset));
            raw_sgemm(m, k, n, alpha, a, [sa.rs, sa.cs], b, [sb.rs, sb.cs], c, [sc.rs, sc.cs], false);
        },
        (Values::F16(w), Values::F32(b)) => widened_sgemm(Side::Left, [m, k, n], alpha, w, sa, b, sb, c, sc),
        (Values::F32(a), Values::F16(w)) => widened_sgemm(Side::Right, [m, k, n], alpha, w, sb, a, sa, c, sc),
        (Values::F16(_), Values::F16(_)) => return Err(Error::Usage("matmul: both operands packed f16 (only weights are)".into())),
    }
    Ok(())
}

/// Which operand of a product is the f16 weight.
#[derive(Clone, Copy, PartialEq)]
enum Side {
    Left,
    Right,
}

/// Depth and width of the f16 weight's blocks widened at once: 512 KiB of f32, in L2
/// while the product reads it (its packing copies it once more, which a weight read as
/// f32 costs too).
const WIDEN_DEPTH: usize = 256;
const WIDEN_WIDTH: usize = 512;

/// [`sgemm`] with an f16 weight `w` as the left (m x k) or right (k x n) operand and f32
/// `x` as the other: the weight is widened WIDEN_DEPTH x WIDEN_WIDTH at a time into this
/// thread's buffer (in the orientation it is stored, so the copy reads it in order), and
/// each block's product is added into C. The weight stays f16 in memory: half the bytes
/// of f32, and each block is read from memory once per call either way. Extents were
/// checked by the caller.
#[allow(clippy::too_many_arguments)]
fn widened_sgemm(side: Side, [m, k, n]: [usize; 3], alpha: f32, w: &[u16], sw: Strided, x: &[f32], sx: Strided, c: &SharedOut, sc: Strided) {
    thread_local! {
        static WIDE: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    // The weight's other dimension: rows of a left, columns of a right operand.
    let width = if side == Side::Left { m } else { n };
    // The weight's entry (depth d, position j) at sw.offset + d * step_d + j * step_j.
    let (step_d, step_j) = if side == Side::Left { (sw.cs, sw.rs) } else { (sw.rs, sw.cs) };
    WIDE.with(|wide| {
        let mut wide = wide.borrow_mut();
        wide.resize(WIDEN_DEPTH * WIDEN_WIDTH, 0.0);
        for j0 in (0..width).step_by(WIDEN_WIDTH) {
            let wj = WIDEN_WIDTH.min(width - j0);
            for d0 in (0..k).step_by(WIDEN_DEPTH) {
                let kd = WIDEN_DEPTH.min(k - d0);
                // The block in the buffer, contiguous along whichever of its dimensions
                // the weight is: (d, j) at d * rd + j * rj.
                let (rd, rj) = if step_d == 1 { (1, kd) } else { (wj, 1) };
                let block = &mut wide[..kd * wj];
                let at = |d: usize, j: usize| sw.offset + (d0 + d) * step_d + (j0 + j) * step_j;
                if step_d == 1 {
                    for (j, dst) in block.chunks_exact_mut(kd).enumerate() {
                        Values::F16(w).widen_into(at(0, j), dst);
                    }
                } else if step_j == 1 {
                    for (d, dst) in block.chunks_exact_mut(wj).enumerate() {
                        Values::F16(w).widen_into(at(d, 0), dst);
                    }
                } else {
                    for d in 0..kd {
                        for j in 0..wj {
                            block[d * rd + j * rj] = Values::F16(w).get(at(d, j));
                        }
                    }
                }
                let accumulate = d0 > 0;
                // SAFETY: the block lies in `wide`; x's and C's extents were checked by
                // the caller for the whole product, of which these are parts.
                unsafe {
                    let wp = block.as_ptr();
                    if side == Side::Left {
                        let xp = x.as_ptr().add(sx.offset + d0 * sx.rs);
                        let cp = c.ptr().add(sc.offset + j0 * sc.rs);
                        raw_sgemm(wj, kd, n, 1.0, wp, [rj, rd], xp, [sx.rs, sx.cs], cp, [sc.rs, sc.cs], accumulate);
                    } else {
                        let xp = x.as_ptr().add(sx.offset + d0 * sx.cs);
                        let cp = c.ptr().add(sc.offset + j0 * sc.cs);
                        raw_sgemm(m, kd, wj, 1.0, xp, [sx.rs, sx.cs], wp, [rd, rj], cp, [sc.rs, sc.cs], accumulate);
                    }
                }
            }
        }
    });
    if alpha != 1.0 {
        for r in 0..m {
            for col in 0..n {
                let i = sc.offset + r * sc.rs + col * sc.cs;
                // SAFETY of the read: index i is in this task's block, written above.
                c.set(i, alpha * unsafe { *c.ptr().add(i) });
            }
        }
    }
}

/// `C = alpha A B`, or `C += alpha A B` where `accumulate` (then alpha must be 1), for
/// an m x k `A`, k x n `B` and m x n `C`, entry (r, c) of each at `r * strides[0] + c *
/// strides[1]` from its pointer; k at least 1.
///
/// # Safety
/// Every entry those strides reach lies in its allocation; C overlaps neither A nor B.
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn raw_sgemm(m: usize, k: usize, n: usize, alpha: f32, a: *const f32, sa: [usize; 2], b: *const f32, sb: [usize; 2], c: *mut f32, sc: [usize; 2], accumulate: bool) {
    debug_assert!(!accumulate || alpha == 1.0, "an accumulating product scales by 1");
    #[cfg(target_arch = "wasm32")]
    super::sgemm128::sgemm(m, k, n, alpha, a, sa, b, sb, c, sc, accumulate);
    #[cfg(not(target_arch = "wasm32"))]
    {
        let i = |s: [usize; 2]| (s[0] as isize, s[1] as isize);
        let ((rsa, csa), (rsb, csb), (rsc, csc)) = (i(sa), i(sb), i(sc));
        let beta = if accumulate { 1.0 } else { 0.0 };
        matrixmultiply::sgemm(m, k, n, alpha, a, rsa, csa, b, rsb, csb, beta, c, rsc, csc);
    }
}

/// Splits `len` into about `parts` ranges whose starts are multiples of `align`.
fn ranges(len: usize, parts: usize, align: usize) -> Vec<(usize, usize)> {
    let step = len.div_ceil(parts.max(1)).next_multiple_of(align).max(align);
    (0..len).step_by(step).map(|s| (s, (s + step).min(len))).collect()
}

/// matmul.wgsl: `c[g, b] = alpha a[g, b] b[g, b] (+ bias over columns)` with strided
/// operands; `batch` counts every group's matrices. Only the columns `cols` of every
/// matrix are computed (see `split`): each output's arithmetic is that of the whole
/// product whatever the range (the same sums in the same order).
pub(super) fn matmul(p: &MatmulParams, batch: usize, ins: &[Values], out: &mut [f32], cols: Range<usize>) -> Result<()> {
    if p.k_slices != 1 || p.has(MatmulParams::PARTIALS) {
        // ops::k_slices never splits on the CPU backend.
        return Err(Error::Usage("matmul: sums split along K are a GPU dispatch scheme, not recorded on the CPU backend".into()));
    }
    let with_residual = p.has(MatmulParams::RESIDUAL);
    let (a, b, residual) = (ins[0], ins[1], ins[3].f32(Kernel::Matmul)?);
    let (m, n, k) = (p.m as usize, p.n as usize, p.k as usize);
    if m == 0 || cols.is_empty() {
        return Ok(());
    }
    if cols.end > n {
        return Err(Error::Shape(format!("matmul: columns {cols:?} of {n}")));
    }
    let bias = if p.has_bias != 0 { ins[2].widened(0, n, "matmul bias")? } else { Vec::new() };
    if with_residual {
        check_extent("matmul residual", out.len() - 1, residual.len())?;
    }
    let c = SharedOut::new(out);
    // Blocks of rows or columns (whichever is longer) so that every thread has work even
    // for one matrix; whole matrices when there are many.
    let width = cols.len();
    let per = if batch * m * width * k < SERIAL_MACS { 1 } else { threads().div_ceil(batch) };
    let split_rows = m >= width;
    let blocks: Vec<_> = if split_rows { ranges(m, per, 16) } else { ranges(width, per, 16).into_iter().map(|(s, e)| (cols.start + s, cols.start + e)).collect() };
    let tasks = batch * blocks.len();
    let failed = std::sync::Mutex::new(None);
    parallel_for(tasks, |t| {
        let (z, (s, e)) = (t / blocks.len(), blocks[t % blocks.len()]);
        let (g, bi) = (z / p.per_group as usize, z % p.per_group as usize);
        let (r0, r1, c0, c1) = if split_rows { (s, e, cols.start, cols.end) } else { (0, m, s, e) };
        let base = |off: u32, sg: u32, sb: u32| off as usize + g * sg as usize + bi * sb as usize;
        let sa = Strided { offset: base(p.a_off, p.a_sg, p.a_sb) + r0 * p.a_sm as usize, rs: p.a_sm as usize, cs: p.a_sk as usize };
        let sb = Strided { offset: base(p.b_off, p.b_sg, p.b_sb) + c0 * p.b_sn as usize, rs: p.b_sk as usize, cs: p.b_sn as usize };
        let sc = Strided { offset: base(p.c_off, p.c_sg, p.c_sb) + r0 * p.c_sm as usize + c0, rs: p.c_sm as usize, cs: 1 };
        // Rows r0..r1 and columns c0..c1 of matrix bi: this task's block alone.
        let done = sgemm(r1 - r0, c1 - c0, k, p.alpha, a, sa, b, sb, &c, sc);
        if let Err(e) = done {
            failed.lock().unwrap().get_or_insert(e);
            return;
        }
        if p.has_bias != 0 || with_residual {
            for r in 0..r1 - r0 {
                let row = sc.offset + r * sc.rs;
                for col in 0..c1 - c0 {
                    let i = row + col;
                    // SAFETY of the read-modify-write: index i is in this task's block.
                    let mut v = unsafe { *c.ptr().add(i) };
                    if p.has_bias != 0 {
                        v += bias[c0 + col];
                    }
                    if with_residual {
                        v += residual[i];
                    }
                    c.set(i, v);
                }
            }
        }
    });
    failed.into_inner().unwrap().map_or(Ok(()), Err)
}

/// conv2d.wgsl: the convolution as a product of the weights [Cout, Cin kh kw] with the
/// input's patches, one block of output pixels at a time (im2col of that block only, so
/// the patch matrix stays in cache; 1x1 convolutions read the input directly). Only the
/// outputs of `range` are computed (see `split`), each with the arithmetic of the whole
/// convolution: of [`conv2d_width`], the rows of 2x2 output tiles of a Winograd
/// convolution (which then transforms only those tiles' inputs), else the output
/// channels.
pub(super) fn conv2d(p: &Conv2dParams, batch: usize, ins: &[Values], out: &mut [f32], range: Range<usize>) -> Result<()> {
    if p.k_slices != 1 || p.has(Conv2dParams::PARTIALS) {
        // ops::k_slices never splits on the CPU backend.
        return Err(Error::Usage("conv2d: sums split along K are a GPU dispatch scheme, not recorded on the CPU backend".into()));
    }
    let f32_input = |i: usize| ins[i].f32(Kernel::Conv2d);
    let (x, x2) = (f32_input(0)?, f32_input(1)?);
    let gathered = gather_input(p, batch, x, x2)?;
    // Output channel o is the weight's and bias's first_cout + o.
    let first = p.first_cout as usize;
    let kdim = (p.cin * p.kh * p.kw) as usize;
    let w = ins[2].from(first * kdim);
    if range.end > conv2d_width(p) {
        return Err(Error::Shape(format!("conv2d: range {range:?} of {}", conv2d_width(p))));
    }
    let bias = if p.has_bias != 0 { Some(ins[3].widened(first, p.cout as usize, "conv2d bias")?) } else { None };
    let x = gathered.as_deref().unwrap_or(x);
    // The output channels, and the pixels of each channel's plane, computed.
    let (cout, npix) = (p.cout as usize, (p.ho * p.wo) as usize);
    let (chans, pixels) = if by_winograd(p) {
        winograd_3x3(p, batch, x, w, bias.as_deref(), out, range.clone())?;
        (0..cout, 2 * range.start * p.wo as usize..(2 * range.end * p.wo as usize).min(npix))
    } else {
        convolve(p, batch, x, w, bias.as_deref(), out, range.clone())?;
        (range, 0..npix)
    };
    let [scale_shift, silu_on, with_residual, with_residual2] = [Conv2dParams::SCALE_SHIFT, Conv2dParams::SILU, Conv2dParams::RESIDUAL, Conv2dParams::RESIDUAL2].map(|f| p.has(f));
    if !(scale_shift || silu_on || with_residual || with_residual2) || npix == 0 || cout == 0 {
        return Ok(());
    }
    let (table, residual, residual2, row) = (f32_input(4)?, f32_input(5)?, f32_input(6)?, p.row as usize);
    let n = batch * cout * npix;
    if scale_shift {
        check_extent("conv2d time conditioning", (row + batch) * 2 * cout - 1, table.len())?;
    }
    if with_residual {
        check_extent("conv2d residual", n - 1, residual.len())?;
    }
    if with_residual2 {
        check_extent("conv2d second residual", n - 1, residual2.len())?;
    }
    // One (image, channel) plane per chunk, in the kernel's order: time conditioning,
    // SiLU, residuals.
    parallel_chunks(&mut out[..n], npix, |bc, y| {
        let (b, co) = (bc / cout + row, bc % cout);
        if !chans.contains(&co) {
            return;
        }
        let y = &mut y[pixels.clone()];
        let (scale, shift) = if scale_shift { (table[b * 2 * cout + co] + 1.0, table[b * 2 * cout + cout + co]) } else { (1.0, 0.0) };
        let planes = if with_residual { bc * npix + pixels.start..bc * npix + pixels.end } else { 0..0 };
        let res = &residual[planes.clone()];
        let res2 = &residual2[if with_residual2 { planes } else { 0..0 }];
        for (i, o) in y.iter_mut().enumerate() {
            let mut v = *o;
            if scale_shift {
                v = v * scale + shift;
            }
            if silu_on {
                v = silu(v);
            }
            if with_residual {
                v += res[i];
            }
            if with_residual2 {
                v += res2[i];
            }
            *o = v;
        }
    });
    Ok(())
}

/// The input the convolution sees, [batch, cin, h, w], where it is not `x` itself:
/// `x`'s `split` channels then `x2`'s, nearest-upsampled 2x where `up` is 1. Built whole
/// here (the copy the GPU kernel saves is cheap next to the convolution on a CPU).
fn gather_input(p: &Conv2dParams, batch: usize, x: &[f32], x2: &[f32]) -> Result<Option<Vec<f32>>> {
    let (cin, split, h, w) = (p.cin as usize, p.split as usize, p.h as usize, p.w as usize);
    let upsample = p.up != 0;
    if split >= cin && !upsample {
        return Ok(None);
    }
    let (sh, sw) = if upsample { (h / 2, w / 2) } else { (h, w) };
    check_extent("conv2d input", batch * split * sh * sw - 1, x.len())?;
    if cin > split {
        check_extent("conv2d second input", batch * (cin - split) * sh * sw - 1, x2.len())?;
    }
    let mut out = vec![0.0; batch * cin * h * w];
    // One (image, channel) plane per chunk.
    parallel_chunks(&mut out, h * w, |bc, plane| {
        let (b, c) = (bc / cin, bc % cin);
        let src = if c < split { &x[(b * split + c) * sh * sw..][..sh * sw] } else { &x2[(b * (cin - split) + c - split) * sh * sw..][..sh * sw] };
        if upsample {
            for (y, row) in plane.chunks_exact_mut(w).enumerate() {
                for (xx, v) in row.iter_mut().enumerate() {
                    *v = src[(y / 2) * sw + xx / 2];
                }
            }
        } else {
            plane.copy_from_slice(src);
        }
    });
    Ok(Some(out))
}

/// The convolution and its bias, before the epilogue.
fn convolve(p: &Conv2dParams, batch: usize, x: &[f32], w: Values, bias: Option<&[f32]>, out: &mut [f32], chans: Range<usize>) -> Result<()> {
    let (cin, h, wd, cout) = (p.cin as usize, p.h as usize, p.w as usize, p.cout as usize);
    let (ho, wo, kh, kw) = (p.ho as usize, p.wo as usize, p.kh as usize, p.kw as usize);
    let (stride, pad) = (p.stride as usize, p.pad as usize);
    let taps = kh * kw;
    let kdim = cin * taps;
    let npix = ho * wo;
    if npix == 0 || chans.is_empty() {
        return Ok(());
    }
    check_extent("conv2d input", batch * cin * h * wd - 1, x.len())?;
    check_extent("conv2d weight", cout * kdim - 1, w.len())?;
    let direct = taps == 1 && stride == 1 && pad == 0;
    // Pixel blocks: a patch matrix of at most about 1 MiB, and enough blocks for every
    // thread.
    let by_cache = ((1 << 18) / kdim.max(1)).max(64);
    let by_threads = npix.div_ceil(threads() * 2).max(64);
    let block = by_cache.min(by_threads).next_multiple_of(16);
    let blocks = ranges(npix, npix.div_ceil(block), 16);
    // Few pixels (the UNet's lowest levels: 64 at 8x8): the output channels are split
    // too, so that every thread has work (one thread, as in wasm, needs no split).
    let channel_parts = match threads() {
        1 => 1,
        t => (2 * t).div_ceil(batch * blocks.len()).min(chans.len().div_ceil(8)),
    };
    let channels: Vec<_> = ranges(chans.len(), channel_parts, 8).into_iter().map(|(s, e)| (chans.start + s, chans.start + e)).collect();
    let tasks = blocks.len() * channels.len();
    let y = SharedOut::new(out);
    let failed = std::sync::Mutex::new(None);
    parallel_for(batch * tasks, |t| {
        let (bi, t) = (t / tasks, t % tasks);
        let ((p0, p1), (c0, c1)) = (blocks[t / channels.len()], channels[t % channels.len()]);
        let np = p1 - p0;
        let xb = bi * cin * h * wd;
        // The block's patch matrix in this thread's scratch (none for direct 1x1).
        with_scratch(if direct { 0 } else { kdim * np }, 0, |patches, _| {
            let (bsrc, sb): (&[f32], Strided) = if direct {
                (x, Strided { offset: xb + p0, rs: h * wd, cs: 1 })
            } else {
                im2col(x, xb, p, p0, np, patches);
                (patches, Strided { offset: 0, rs: np, cs: 1 })
            };
            let sa = Strided { offset: c0 * kdim, rs: kdim, cs: 1 };
            let sc = Strided { offset: (bi * cout + c0) * npix + p0, rs: npix, cs: 1 };
            // Output pixels p0..p1 of channels c0..c1 of image bi: this task's block alone.
            if let Err(e) = sgemm(c1 - c0, np, kdim, 1.0, w, sa, Values::F32(bsrc), sb, &y, sc) {
                failed.lock().unwrap().get_or_insert(e);
                return;
            }
            if let Some(bias) = bias {
                for (co, &bv) in bias[c0..c1].iter().enumerate() {
                    let row = sc.offset + co * npix;
                    for i in row..row + np {
                        // SAFETY of the read: index i is in this task's block, written above.
                        let v = unsafe { *y.ptr().add(i) };
                        y.set(i, v + bv);
                    }
                }
            }
        });
    });
    failed.into_inner().unwrap().map_or(Ok(()), Err)
}

/// The patches of output pixels `p0 .. p0 + np`: row `(ci, ky, kx)` (the weight's column
/// order), column = pixel; zero outside the image (zero padding). With stride 1 each
/// output row's stretch of a patch row is one shifted slice of an input row: copied
/// whole. `col` holds cin kh kw x np values.
fn im2col(x: &[f32], xb: usize, p: &Conv2dParams, p0: usize, np: usize, col: &mut [f32]) {
    let (cin, h, wd) = (p.cin as usize, p.h as usize, p.w as usize);
    let (wo, kh, kw) = (p.wo as usize, p.kh as usize, p.kw as usize);
    let (stride, pad) = (p.stride as usize, p.pad as usize);
    col.fill(0.0); // the padding
    let mut rows = col.chunks_mut(np);
    for ci in 0..cin {
        let plane = &x[xb + ci * h * wd..xb + (ci + 1) * h * wd];
        for ky in 0..kh {
            for kx in 0..kw {
                let row = rows.next().unwrap();
                // Output pixels p0.. walked one output row (or part of one) at a time.
                let mut at = 0;
                while at < np {
                    let (oy, ox0) = ((p0 + at) / wo, (p0 + at) % wo);
                    let len = (wo - ox0).min(np - at);
                    let dst = &mut row[at..at + len];
                    at += len;
                    let iy = (oy * stride + ky).wrapping_sub(pad);
                    if iy >= h {
                        continue; // a padding row: zeros
                    }
                    let src = &plane[iy * wd..(iy + 1) * wd];
                    if stride == 1 {
                        // ix = ox + kx - pad lies in the image for ox in lo..hi.
                        let lo = pad.saturating_sub(kx).max(ox0);
                        let hi = (wd + pad).saturating_sub(kx).min(ox0 + len);
                        if lo < hi {
                            dst[lo - ox0..hi - ox0].copy_from_slice(&src[lo + kx - pad..hi + kx - pad]);
                        }
                    } else {
                        for (i, v) in dst.iter_mut().enumerate() {
                            let ix = ((ox0 + i) * stride + kx).wrapping_sub(pad);
                            if ix < wd {
                                *v = src[ix];
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Whether the convolution goes by Winograd's algorithm ([`winograd_3x3`]).
pub(super) fn by_winograd(p: &Conv2dParams) -> bool {
    let tiles = p.ho.div_ceil(2) * p.wo.div_ceil(2);
    let channels = p.cin.min(p.cout) as usize;
    p.kh == 3 && p.kw == 3 && p.stride == 1 && p.pad == 1 && channels >= WINOGRAD_MIN_CHANNELS && tiles as usize >= WINOGRAD_MIN_TILES
}

/// What [`conv2d`]'s range counts: rows of 2x2 output tiles for a Winograd convolution
/// (each worker then transforms only its tiles' inputs), else output channels.
pub(super) fn conv2d_width(p: &Conv2dParams) -> usize {
    if by_winograd(p) {
        p.ho.div_ceil(2) as usize
    } else {
        p.cout as usize
    }
}

/// Below this many input or output channels a 3x3 convolution goes through im2col: the
/// transforms would cost more than the multiplications they save.
const WINOGRAD_MIN_CHANNELS: usize = 16;

/// Below this many 2x2 output tiles per image (32x32 pixels) too: the weights' transform
/// (16 values per 9 weights, written on every call) and the narrow products outweigh the
/// multiplications saved. At 8x8 pixels and 512 channels Winograd ran at 18-30 GFLOP/s of
/// direct-convolution work; with im2col below 256 tiles a published UNet step took 118,
/// 366 and 1477 ms at 64, 128 and 256 pixels against 259, 464 and 1559 with Winograd
/// from 16 tiles (bench --device cpu, 2 threads).
const WINOGRAD_MIN_TILES: usize = 256;

/// A 3x3, stride 1, padding 1 convolution by Winograd's F(2x2, 3x3) (Lavin & Gray 2016):
/// each 2x2 block of output pixels ("tile") from a 4x4 input patch, as 16 products of the
/// transformed weights [Cout, Cin] with the transformed patches [Cin, tiles] (one per
/// element of the 4x4 transform domain), then a transform back. 2.25 times fewer
/// multiply-adds than the direct convolution; the transforms' coefficients are 0, +-1
/// and 1/2, so rounding stays that of a direct sum. Tiles go in blocks that keep both
/// transformed blocks in cache, the blocks spread over threads.
fn winograd_3x3(p: &Conv2dParams, batch: usize, x: &[f32], w: Values, bias: Option<&[f32]>, out: &mut [f32], tile_rows: Range<usize>) -> Result<()> {
    let (cin, h, wd, cout) = (p.cin as usize, p.h as usize, p.w as usize, p.cout as usize);
    let (th, tw) = (h.div_ceil(2), wd.div_ceil(2));
    let tiles = th * tw;
    check_extent("conv2d output", batch * cout * h * wd - 1, out.len())?;
    // U = G g G^T for every (cout, cin): [16][cout][cin], output channels over threads.
    let mut u = vec![0f32; 16 * cout * cin];
    {
        let us = SharedOut::new(&mut u);
        parallel_for(cout, |co| {
            for ci in 0..cin {
                let mut g = [0f32; 9];
                w.widen_into((co * cin + ci) * 9, &mut g);
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
                        // Row co of every transform element's matrix: this task's alone.
                        us.set(((r * 4 + j) * cout + co) * cin + ci, v);
                    }
                }
            }
        });
    }
    // Blocks of tiles whose transformed inputs and products take about 4 MiB, but at least
    // 64 tiles (the products' width) and enough blocks for every thread.
    let by_cache = (1 << 20) / (16 * (cin + cout));
    // The tiles of the rows asked for.
    let (first, last) = (tile_rows.start * tw, (tile_rows.end * tw).min(tiles));
    let count = last.saturating_sub(first);
    if count == 0 {
        return Ok(());
    }
    let by_threads = count.div_ceil(threads() * 2);
    let block = by_cache.min(by_threads).max(64).next_multiple_of(8);
    let blocks: Vec<_> = ranges(count, count.div_ceil(block), 8).into_iter().map(|(s, e)| (first + s, first + e)).collect();
    let y = SharedOut::new(out);
    let failed = std::sync::Mutex::new(None);
    parallel_for(batch * blocks.len(), |task| {
        let (bi, (t0, t1)) = (task / blocks.len(), blocks[task % blocks.len()]);
        let nb = t1 - t0;
        let xb = &x[bi * cin * h * wd..(bi + 1) * cin * h * wd];
        // The block's tiles as runs along tile rows: (tile row, first column, count, index
        // of the first in the block). The transforms work on whole runs, so that their
        // loops run over consecutive tiles and vectorise.
        let mut runs = Vec::new();
        let mut t = t0;
        while t < t1 {
            let (ty, tx) = (t / tw, t % tw);
            let n = (tw - tx).min(t1 - t);
            runs.push((ty, tx, n, t - t0));
            t += n;
        }
        with_scratch(16 * cin * nb, 16 * cout * nb, |v, m| {
        // V = B^T d B of every tile of the block, for every input channel: [16][cin][nb]
        // (every element written below).
        let (mut even, mut odd) = (vec![0f32; 4 * (tw + 1)], vec![0f32; 4 * (tw + 1)]);
        let mut db = vec![0f32; 16 * tw];
        for ci in 0..cin {
            let plane = &xb[ci * h * wd..(ci + 1) * h * wd];
            for &(ty, tx0, n, i0) in &runs {
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
                    let row = &plane[iy * wd..(iy + 1) * wd];
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
                    let dst = |ri: usize| ((ri * 4 + j) * cin + ci) * nb + i0;
                    for (k, d) in v[dst(0)..][..n].iter_mut().enumerate() {
                        *d = r0[k] - r2[k];
                    }
                    for (k, d) in v[dst(1)..][..n].iter_mut().enumerate() {
                        *d = r1[k] + r2[k];
                    }
                    for (k, d) in v[dst(2)..][..n].iter_mut().enumerate() {
                        *d = r2[k] - r1[k];
                    }
                    for (k, d) in v[dst(3)..][..n].iter_mut().enumerate() {
                        *d = r1[k] - r3[k];
                    }
                }
            }
        }
        // M = U V for each of the 16 transform elements: [16][cout][nb].
        {
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
        }
        // Y = A^T M A: each tile's 2x2 output pixels, cropped at the image's edge.
        let mut s = vec![0f32; 8 * tw]; // A^T M: s[(r * 4 + c) * tw + k]
        for co in 0..cout {
            let b = bias.map_or(0.0, |b| b[co]);
            let yb = (bi * cout + co) * h * wd;
            for &(ty, tx0, n, i0) in &runs {
                let me = |e: usize| &m[(e * cout + co) * nb + i0..][..n];
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
                    let out_row = unsafe { y.slice_mut(yb + oy * wd + x0, x1 - x0) };
                    let mut pairs = out_row.chunks_exact_mut(2);
                    for (k, pair) in (&mut pairs).enumerate() {
                        pair[0] = a[k] + bb[k] + c[k] + b;
                        pair[1] = bb[k] - c[k] - d[k] + b;
                    }
                    if let [last] = pairs.into_remainder() {
                        let k = n - 1;
                        *last = a[k] + bb[k] + c[k] + b;
                    }
                }
            }
        }
        });
    });
    failed.into_inner().unwrap().map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::{sgemm, SharedOut, Strided, Values};

    /// Products with an f16 weight on either side, in each layout (contiguous along the
    /// depth, along the width, and neither), across the widened blocks' edges (depth and
    /// width not multiples of the block), alpha 1 and not: against the same product of
    /// the weight widened whole.
    #[test]
    fn f16_weights_widened_by_blocks_match_f32() {
        let mut rng = crate::weights::SplitMix::new(7);
        for (m, k, n) in [(3, 600, 1100), (700, 300, 5), (1, 1, 1)] {
            for left in [false, true] {
                let (rows, cols) = if left { (m, k) } else { (k, n) };
                for layout in 0..3 {
                    // The weight's (row, col) at offset 5 + row * rs + col * cs.
                    let (rs, cs) = match layout {
                        0 => (cols, 1),
                        1 => (1, rows),
                        _ => (2 * cols + 1, 2),
                    };
                    let len = 5 + (rows - 1) * rs + (cols - 1) * cs + 1;
                    let halves: Vec<u16> = (0..len).map(|_| half::f16::from_f32(rng.uniform() as f32 - 0.5).to_bits()).collect();
                    let wide: Vec<f32> = halves.iter().map(|&h| half::f16::from_bits(h).to_f32()).collect();
                    let x: Vec<f32> = (0..m.max(n) * k).map(|_| rng.uniform() as f32 - 0.5).collect();
                    let sw = Strided { offset: 5, rs, cs };
                    let sx = if left { Strided { offset: 0, rs: n, cs: 1 } } else { Strided { offset: 0, rs: k, cs: 1 } };
                    let sc = Strided { offset: 0, rs: n, cs: 1 };
                    for alpha in [1.0, 0.25] {
                        let run = |w: Values| {
                            let mut c = vec![f32::NAN; m * n];
                            let out = SharedOut::new(&mut c);
                            let (a, sa, b, sb) = if left { (w, sw, Values::F32(&x), sx) } else { (Values::F32(&x), sx, w, sw) };
                            sgemm(m, n, k, alpha, a, sa, b, sb, &out, sc).unwrap();
                            c
                        };
                        let (got, want) = (run(Values::F16(&halves)), run(Values::F32(&wide)));
                        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                            assert!((g - w).abs() <= 1e-5 * (k as f32).sqrt(), "{m}x{k}x{n} left {left} layout {layout} alpha {alpha} at {i}: {g} vs {w}");
                        }
                    }
                }
            }
        }
    }
}
