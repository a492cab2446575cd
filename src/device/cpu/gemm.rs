//! Matrix products and convolutions on the CPU: a packed GEMM (`matrixmultiply`'s
//! natively, `sgemm128` in the browser) on blocks of the output, the blocks spread over
//! threads. Natively on AVX-512, convolutions by register tiles (`tile`) and linear
//! layers of few rows by dot products (`dot`).

use std::ops::Range;

use super::kernels::silu;
use super::tile::{self, MR, NR};
use super::winograd;
use super::{check_extent, parallel_chunks, parallel_for, threads, with_scratch, SharedOut, Values};
use crate::error::{Error, Result};
use crate::kernels::{Conv2dParams, Kernel, MatmulParams};

/// Below this many multiply-adds a product runs on one thread (a thread hand-off costs
/// about as much).
const SERIAL_MACS: usize = 1 << 18;

/// One strided matrix: entry (r, c) at `offset + r * rs + c * cs`.
#[derive(Clone, Copy)]
pub(super) struct Strided {
    pub(super) offset: usize,
    pub(super) rs: usize,
    pub(super) cs: usize,
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
pub(super) fn sgemm(m: usize, n: usize, k: usize, alpha: f32, a: Values, sa: Strided, b: Values, sb: Strided, c: &SharedOut, sc: Strided) -> Result<()> {
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
    if by_dot(m, n, k, alpha, a, sa, b, sb, c, sc) {
        return Ok(());
    }
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

/// At most this many rows use a right f16 weight for its product to go by `dot` (where
/// the CPU has AVX-512): beyond, widening and packing the weight once per call pays for
/// itself (a 1024-row product ran at 270-290 GFLOP/s either way on 2 threads).
#[cfg(target_arch = "x86_64")]
const DOT_MAX_ROWS: usize = 256;

/// [`sgemm`]'s product by `dot` where that applies: `C = X W^T` (a linear layer) with
/// an f16 weight, at most DOT_MAX_ROWS rows and both operands contiguous along the sum,
/// on a CPU with AVX-512. Whether it did. Extents were checked by the caller. (A
/// convolution's patches would have to be transposed for it: its few-pixel convolutions
/// ran 10% slower that way than by the general GEMM.)
#[allow(clippy::too_many_arguments)]
#[cfg(target_arch = "x86_64")]
fn by_dot(m: usize, n: usize, k: usize, alpha: f32, a: Values, sa: Strided, b: Values, sb: Strided, c: &SharedOut, sc: Strided) -> bool {
    match (a, b) {
        (Values::F32(x), Values::F16(w)) if m <= DOT_MAX_ROWS && sa.cs == 1 && sb.rs == 1 && super::dot::available() => {
            // SAFETY: the caller checked every extent; the CPU has AVX-512F.
            unsafe { super::dot::products(m, n, k, alpha, x.as_ptr().add(sa.offset), sa.rs, w.as_ptr().add(sb.offset), sb.cs, c.ptr().add(sc.offset), [sc.rs, sc.cs]) };
            true
        }
        _ => false,
    }
}

#[allow(clippy::too_many_arguments)]
#[cfg(not(target_arch = "x86_64"))]
fn by_dot(_: usize, _: usize, _: usize, _: f32, _: Values, _: Strided, _: Values, _: Strided, _: &SharedOut, _: Strided) -> bool {
    false
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
pub(super) fn ranges(len: usize, parts: usize, align: usize) -> Vec<(usize, usize)> {
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
    let input = ConvInput::new(p, batch, f32_input(0)?, f32_input(1)?)?;
    // Output channel o is the weight's and bias's first_cout + o.
    let first = p.first_cout as usize;
    let kdim = (p.cin * p.kh * p.kw) as usize;
    let w = ins[2].from(first * kdim);
    if range.end > conv2d_width(p) {
        return Err(Error::Shape(format!("conv2d: range {range:?} of {}", conv2d_width(p))));
    }
    let epilogue = Epilogue::new(p, batch, ins)?;
    if winograd::applies(p) {
        winograd::conv3x3(p, batch, &input, w, &epilogue, out, range)?;
    } else {
        let gathered = input.gathered(batch);
        let x = gathered.as_deref().unwrap_or(input.x);
        convolve(tile::available(), p, batch, x, w, &epilogue, out, range)?;
    }
    Ok(())
}

/// conv2d.wgsl's steps after the sums, in its order: bias, time conditioning, SiLU,
/// residuals. The convolutions apply them to each stretch of output as they write it,
/// while it is in cache.
pub(super) struct Epilogue<'a> {
    /// Of output channel o: the weight's bias of channel first_cout + o.
    bias: Option<Vec<f32>>,
    /// The time conditioning's table (scale - 1 and shift of each channel, a row per
    /// image), and the row of the first image.
    table: Option<&'a [f32]>,
    row: usize,
    silu: bool,
    residual: Option<&'a [f32]>,
    residual2: Option<&'a [f32]>,
    cout: usize,
    npix: usize,
}

impl<'a> Epilogue<'a> {
    pub(super) fn new(p: &Conv2dParams, batch: usize, ins: &[Values<'a>]) -> Result<Self> {
        let (cout, npix) = (p.cout as usize, (p.ho * p.wo) as usize);
        let input = |flag: u32, i: usize, what: &str, last: usize| -> Result<Option<&'a [f32]>> {
            if !p.has(flag) || npix == 0 || cout == 0 {
                return Ok(None);
            }
            let values = ins[i].f32(Kernel::Conv2d)?;
            check_extent(what, last, values.len())?;
            Ok(Some(values))
        };
        let (row, n) = (p.row as usize, batch * cout * npix);
        Ok(Epilogue {
            bias: if p.has_bias != 0 { Some(ins[3].widened(p.first_cout as usize, cout, "conv2d bias")?) } else { None },
            table: input(Conv2dParams::SCALE_SHIFT, 4, "conv2d time conditioning", (row + batch) * 2 * cout - 1)?,
            row,
            silu: p.has(Conv2dParams::SILU),
            residual: input(Conv2dParams::RESIDUAL, 5, "conv2d residual", n - 1)?,
            residual2: input(Conv2dParams::RESIDUAL2, 6, "conv2d second residual", n - 1)?,
            cout,
            npix,
        })
    }

    /// The steps on `y`, the output pixels `at ..` of image `b`'s channel `co`.
    pub(super) fn apply(&self, b: usize, co: usize, at: usize, y: &mut [f32]) {
        if let Some(bias) = &self.bias {
            for v in y.iter_mut() {
                *v += bias[co];
            }
        }
        if self.table.is_none() && !self.silu && self.residual.is_none() && self.residual2.is_none() {
            return;
        }
        let cout = self.cout;
        let t = (b + self.row) * 2 * cout;
        let (scale, shift) = self.table.map_or((1.0, 0.0), |table| (table[t + co] + 1.0, table[t + cout + co]));
        let plane = (b * cout + co) * self.npix + at..(b * cout + co) * self.npix + at + y.len();
        // A pass per step (each a loop that vectorises; `y` is in L1), the same
        // operations on each value in the same order as one loop would do.
        if self.table.is_some() {
            for v in y.iter_mut() {
                *v = *v * scale + shift;
            }
        }
        if self.silu {
            for v in y.iter_mut() {
                *v = silu(*v);
            }
        }
        for residual in [self.residual, self.residual2].into_iter().flatten() {
            for (v, r) in y.iter_mut().zip(&residual[plane.clone()]) {
                *v += r;
            }
        }
    }
}

/// The input a convolution sees, [batch, cin, h, w]: `x`'s `split` channels then
/// `x2`'s, nearest-upsampled 2x where `up` is 1. Read a row at a time (the Winograd
/// transforms), or gathered whole where a product needs it as a matrix.
pub(super) struct ConvInput<'a> {
    x: &'a [f32],
    x2: &'a [f32],
    cin: usize,
    split: usize,
    h: usize,
    w: usize,
    up: bool,
}

impl<'a> ConvInput<'a> {
    pub(super) fn new(p: &Conv2dParams, batch: usize, x: &'a [f32], x2: &'a [f32]) -> Result<Self> {
        let (cin, h, w, up) = (p.cin as usize, p.h as usize, p.w as usize, p.up != 0);
        let split = (p.split as usize).min(cin);
        let (sh, sw) = if up { (h / 2, w / 2) } else { (h, w) };
        for (what, values, channels) in [("conv2d input", x, split), ("conv2d second input", x2, cin - split)] {
            if batch * channels * sh * sw > 0 {
                check_extent(what, batch * channels * sh * sw - 1, values.len())?;
            }
        }
        Ok(ConvInput { x, x2, cin, split, h, w, up })
    }

    /// Whether the input is `x` itself.
    fn plain(&self) -> bool {
        self.split == self.cin && !self.up
    }

    /// Row `y` of channel `ci` of image `b`: w values, in `buf` where upsampled.
    pub(super) fn row<'s>(&'s self, b: usize, ci: usize, y: usize, buf: &'s mut [f32]) -> &'s [f32] {
        let (sh, sw) = if self.up { (self.h / 2, self.w / 2) } else { (self.h, self.w) };
        let (values, c, channels) = if ci < self.split { (self.x, ci, self.split) } else { (self.x2, ci - self.split, self.cin - self.split) };
        let plane = &values[(b * channels + c) * sh * sw..][..sh * sw];
        if !self.up {
            return &plane[y * sw..(y + 1) * sw];
        }
        let source = &plane[(y / 2) * sw..(y / 2 + 1) * sw];
        for (xx, v) in buf[..self.w].iter_mut().enumerate() {
            *v = source[xx / 2];
        }
        &buf[..self.w]
    }

    /// The whole input as one tensor, where it is not `x` itself.
    fn gathered(&self, batch: usize) -> Option<Vec<f32>> {
        if self.plain() {
            return None;
        }
        let (cin, h, w) = (self.cin, self.h, self.w);
        let mut out = vec![0.0; batch * cin * h * w];
        // One (image, channel) plane per chunk.
        parallel_chunks(&mut out, h * w, |bc, plane| {
            let mut buf = vec![0f32; w];
            for (y, row) in plane.chunks_exact_mut(w).enumerate() {
                row.copy_from_slice(self.row(bc / cin, bc % cin, y, &mut buf));
            }
        });
        Some(out)
    }
}

/// The convolution and its epilogue, for the output channels `chans`: by register tiles
/// (`tile`, where the CPU has AVX-512) or by the general GEMM.
#[allow(clippy::too_many_arguments)]
fn convolve(tiled: bool, p: &Conv2dParams, batch: usize, x: &[f32], w: Values, epilogue: &Epilogue, out: &mut [f32], chans: Range<usize>) -> Result<()> {
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
        if tiled {
            // Patches in panels, then each panel of weights against them, each tile's
            // outputs stored (with the epilogue) while in L1.
            let panel_values = kdim * np.next_multiple_of(NR);
            with_scratch(panel_values + np, kdim * (MR + 1) + MR * NR, |patches, packed| {
                let (panels, row) = patches.split_at_mut(panel_values);
                patch_panels(x, xb, p, p0, np, direct, row, panels);
                let (weights, rest) = packed.split_at_mut(kdim * MR);
                let (tile_out, weight_row) = rest.split_at_mut(MR * NR);
                for c in (c0..c1).step_by(MR) {
                    let rows = MR.min(c1 - c);
                    tile::pack_rows(w, kdim, c, rows, weights, weight_row);
                    for (i, panel) in panels.chunks_exact(kdim * NR).enumerate() {
                        tile::product(kdim, weights, panel, tile_out);
                        let (px, n) = (i * NR, NR.min(np - i * NR));
                        for (r, values) in tile_out.chunks_exact(NR).take(rows).enumerate() {
                            let co = c + r;
                            // SAFETY: pixels of channel co of image bi in this task's block.
                            let dst = unsafe { y.slice_mut((bi * cout + co) * npix + p0 + px, n) };
                            dst.copy_from_slice(&values[..n]);
                            epilogue.apply(bi, co, p0 + px, dst);
                        }
                    }
                }
            });
            return;
        }
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
            for co in c0..c1 {
                // SAFETY: this task's block, written above.
                let row = unsafe { y.slice_mut(sc.offset + (co - c0) * npix, np) };
                epilogue.apply(bi, co, p0, row);
            }
        });
    });
    failed.into_inner().unwrap().map_or(Ok(()), Err)
}

/// The patches of output pixels `p0 .. p0 + np`: row `(ci, ky, kx)` (the weight's column
/// order), column = pixel; zero outside the image (zero padding). `col` holds cin kh kw
/// x np values.
fn im2col(x: &[f32], xb: usize, p: &Conv2dParams, p0: usize, np: usize, col: &mut [f32]) {
    for (k, row) in col.chunks_exact_mut(np).enumerate() {
        im2col_row(x, xb, p, p0, k, row);
    }
}

/// Row `k` = (ci, ky, kx) of [`im2col`]'s patches, `row.len()` pixels from p0. With
/// stride 1 each output row's stretch of it is one shifted slice of an input row:
/// copied whole.
fn im2col_row(x: &[f32], xb: usize, p: &Conv2dParams, p0: usize, k: usize, row: &mut [f32]) {
    let (h, wd) = (p.h as usize, p.w as usize);
    let (wo, kh, kw) = (p.wo as usize, p.kh as usize, p.kw as usize);
    let (stride, pad) = (p.stride as usize, p.pad as usize);
    let (ci, ky, kx) = (k / (kh * kw), k / kw % kh, k % kw);
    let plane = &x[xb + ci * h * wd..xb + (ci + 1) * h * wd];
    let np = row.len();
    row.fill(0.0); // the padding
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

/// The patches of output pixels `p0 .. p0 + np` (the input itself where `direct`) in
/// panels for register tiles: value k of pixel i at `((i / NR) kdim + k) NR + i % NR`
/// (the last panel's pixels past np left as they were: computed, never stored). `row`
/// holds np values.
#[allow(clippy::too_many_arguments)]
fn patch_panels(x: &[f32], xb: usize, p: &Conv2dParams, p0: usize, np: usize, direct: bool, row: &mut [f32], panels: &mut [f32]) {
    let (h, wd) = (p.h as usize, p.w as usize);
    let kdim = (p.cin * p.kh * p.kw) as usize;
    for k in 0..kdim {
        let values: &[f32] = if direct {
            &x[xb + k * h * wd + p0..][..np]
        } else {
            im2col_row(x, xb, p, p0, k, &mut row[..np]);
            &row[..np]
        };
        for (i, chunk) in values.chunks(NR).enumerate() {
            panels[(i * kdim + k) * NR..][..chunk.len()].copy_from_slice(chunk);
        }
    }
}

/// What [`conv2d`]'s range counts: rows of 2x2 output tiles for a Winograd convolution
/// (each worker then transforms only its tiles' inputs), else output channels.
pub(super) fn conv2d_width(p: &Conv2dParams) -> usize {
    if winograd::applies(p) {
        p.ho.div_ceil(2) as usize
    } else {
        p.cout as usize
    }
}

/// The direct convolution's sum in f64 (no bias) at output pixel (oy, ox) of image
/// b's channel co: input [batch, cin, h, w], weights [cout, cin, k, k], zero padding
/// (the unit tests' reference, here and in `winograd`).
#[cfg(test)]
#[allow(clippy::too_many_arguments)]
pub(super) fn direct_sum(x: &[f32], wt: &[f32], [cin, h, w]: [usize; 3], [k, stride, pad]: [usize; 3], b: usize, co: usize, oy: usize, ox: usize) -> f64 {
    let mut sum = 0f64;
    for ci in 0..cin {
        for ky in 0..k {
            for kx in 0..k {
                let (iy, ix) = ((oy * stride + ky).wrapping_sub(pad), (ox * stride + kx).wrapping_sub(pad));
                if iy < h && ix < w {
                    sum += x[((b * cin + ci) * h + iy) * w + ix] as f64 * wt[((co * cin + ci) * k + ky) * k + kx] as f64;
                }
            }
        }
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::{convolve, direct_sum, sgemm, Conv2dParams, Epilogue, SharedOut, Strided, Values};

    /// Both ways to a convolution (register tiles, whose code runs without AVX-512 too,
    /// and the general GEMM): 3x3 with stride 2 and 1x1 direct, f32 and f16 weights, a
    /// range of output channels that fills no panel, with bias, time conditioning and a
    /// residual, against the direct sum in f64; channels outside the range unwritten.
    #[test]
    fn both_ways_match_the_direct_convolution() {
        let mut rng = crate::weights::SplitMix::new(13);
        let (batch, cin, cout, h, w) = (2, 11, 21, 13, 9);
        let x: Vec<f32> = (0..batch * cin * h * w).map(|_| rng.uniform() as f32 - 0.5).collect();
        for (k, stride, pad) in [(3, 2, 1), (1, 1, 0)] {
            let (ho, wo) = ((h + 2 * pad - k) / stride + 1, (w + 2 * pad - k) / stride + 1);
            let wt: Vec<f32> = (0..cout * cin * k * k).map(|_| half::f16::from_f32(rng.uniform() as f32 - 0.5).to_f32()).collect();
            let halves: Vec<u16> = wt.iter().map(|&v| half::f16::from_f32(v).to_bits()).collect();
            let bias: Vec<f32> = (0..cout).map(|_| rng.uniform() as f32).collect();
            let table: Vec<f32> = (0..batch * 2 * cout).map(|_| rng.uniform() as f32).collect();
            let residual: Vec<f32> = (0..batch * cout * ho * wo).map(|_| rng.uniform() as f32).collect();
            let flags = Conv2dParams::SCALE_SHIFT | Conv2dParams::RESIDUAL;
            let dims = |v: usize| v as u32;
            let p = Conv2dParams { cin: dims(cin), h: dims(h), w: dims(w), cout: dims(cout), ho: dims(ho), wo: dims(wo), kh: dims(k), kw: dims(k), stride: dims(stride), pad: dims(pad), has_bias: 1, flags, ..bytemuck::Zeroable::zeroed() };
            let none = Values::F32(&[]);
            let epilogue = Epilogue::new(&p, batch, &[none, none, none, Values::F32(&bias), Values::F32(&table), Values::F32(&residual), none]).unwrap();
            let chans = 3..19;
            for tiled in [true, false] {
                for weights in [Values::F32(&wt), Values::F16(&halves)] {
                    let mut out = vec![f32::NAN; batch * cout * ho * wo];
                    convolve(tiled, &p, batch, &x, weights, &epilogue, &mut out, chans.clone()).unwrap();
                    for (i, &got) in out.iter().enumerate() {
                        let (b, co, oy, ox) = (i / (cout * ho * wo), i / (ho * wo) % cout, i / wo % ho, i % wo);
                        if !chans.contains(&co) {
                            assert!(got.is_nan(), "tiled {tiled}: channel {co} outside the range written");
                            continue;
                        }
                        let sum = bias[co] as f64 + direct_sum(&x, &wt, [cin, h, w], [k, stride, pad], b, co, oy, ox);
                        let t = b * 2 * cout;
                        let want = sum * (table[t + co] as f64 + 1.0) + table[t + cout + co] as f64 + residual[i] as f64;
                        assert!((got as f64 - want).abs() < 1e-5, "tiled {tiled} k{k}: output {i}: {got} vs {want}");
                    }
                }
            }
        }
    }

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
