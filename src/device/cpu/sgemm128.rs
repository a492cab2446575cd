//! The browser's matrix product: a packed GEMM (Goto's blocking: B in blocks of KC x NC
//! packed into panels, A in blocks of MC x KC, packed unless its rows are contiguous)
//! around a 4 x 8 register tile of 128-bit vectors. matrixmultiply's wasm kernel holds
//! an 8 x 8 tile, 16 accumulators, which V8 cannot keep in x86's 16 vector registers next
//! to the operands: it spills in the inner loop, and that loop was 80% of an image
//! encode. Here 8 accumulators, two B vectors and one broadcast A value fit (a 6 x 8
//! tile measured slower still). Natively matrixmultiply's AVX/FMA kernels run; this
//! compiles there too (portable lanes), for its tests.
//!
//! Each output is the sum over k in order, times alpha at the end: one multiply and one
//! add per term with simd128, one `f32x4.relaxed_madd` in the relaxed-SIMD build (fused
//! where the CPU has FMA, as x86 and ARM browsers' do: the rounding of a fused
//! multiply-add, within the CPU tolerance of the other build).

use std::cell::RefCell;

use lanes::{add, load, mul, mul_add, splat, splat_load, store, zero, F32x4};

const MR: usize = 4;
const NR: usize = 8;
/// Depth of a block: a B panel (KC x NR, 8 KiB) stays in L1 while the A panels pass.
const KC: usize = 256;
/// Rows of an A block (72 KiB: L2).
const MC: usize = 72;
/// Columns of a B block (1 MiB).
const NC: usize = 1024;

/// `gemm::raw_sgemm`, whose contract this keeps. Packing copies an operand once per
/// product, which for a linear layer of a few tokens costs as much as the product: so
/// the product is computed as given or transposed (`C^T = B^T A^T`), whichever packs
/// less. An A whose rows are contiguous is read in place (a weight, as `B^T`, is).
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn sgemm(m: usize, k: usize, n: usize, alpha: f32, a: *const f32, [rsa, csa]: [usize; 2], b: *const f32, [rsb, csb]: [usize; 2], c: *mut f32, [rsc, csc]: [usize; 2], accumulate: bool) {
    // Values packed, in units of k: all of B, and A unless its rows are contiguous.
    let packed = n + if csa == 1 { 0 } else { m };
    let packed_transposed = m + if rsb == 1 { 0 } else { n };
    if packed_transposed < packed {
        blocked(n, k, m, alpha, b, [csb, rsb], a, [csa, rsa], c, [csc, rsc], accumulate);
    } else {
        blocked(m, k, n, alpha, a, [rsa, csa], b, [rsb, csb], c, [rsc, csc], accumulate);
    }
}

#[allow(clippy::too_many_arguments)]
unsafe fn blocked(m: usize, k: usize, n: usize, alpha: f32, a: *const f32, [rsa, csa]: [usize; 2], b: *const f32, [rsb, csb]: [usize; 2], c: *mut f32, [rsc, csc]: [usize; 2], accumulate: bool) {
    thread_local! {
        static PACKS: RefCell<(Vec<f32>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
    }
    let in_place = csa == 1;
    PACKS.with(|packs| {
        let (pa, pb) = &mut *packs.borrow_mut();
        if !in_place {
            pa.resize(MC.next_multiple_of(MR) * KC, 0.0);
        }
        pb.resize(NC.min(n.next_multiple_of(NR)) * KC.min(k), 0.0);
        for j0 in (0..n).step_by(NC) {
            let nc = NC.min(n - j0);
            for p0 in (0..k).step_by(KC) {
                let kc = KC.min(k - p0);
                let (first, last) = (p0 == 0 && !accumulate, p0 + kc == k);
                pack_b(kc, nc, b.add(p0 * rsb + j0 * csb), rsb, csb, pb);
                for i0 in (0..m).step_by(MC) {
                    let mc = MC.min(m - i0);
                    let block = a.add(i0 * rsa + p0 * csa);
                    if !in_place {
                        pack_a(mc, kc, block, rsa, csa, pa);
                    }
                    for jr in (0..nc).step_by(NR) {
                        let bp = pb.as_ptr().add(jr * kc);
                        for ir in (0..mc).step_by(MR) {
                            let mr = MR.min(mc - ir);
                            // Row i of the panel and the step to its next k. Rows past the
                            // matrix repeat its last one (computed, never stored).
                            let (rows, step) = if in_place {
                                (std::array::from_fn(|i| block.add((ir + i.min(mr - 1)) * rsa)), 1)
                            } else {
                                (std::array::from_fn(|i| pa.as_ptr().add(ir * kc + i)), MR)
                            };
                            // A panel of at most four columns (the last of a linear
                            // layer's 50 tokens, computed transposed) needs one vector.
                            let acc = if nc - jr <= 4 { tile::<false>(kc, rows, step, bp) } else { tile::<true>(kc, rows, step, bp) };
                            let at = c.add((i0 + ir) * rsc + (j0 + jr) * csc);
                            store_tile(&acc, at, rsc, csc, mr, NR.min(nc - jr), first, last.then_some(alpha));
                        }
                    }
                }
            }
        }
    });
}

/// The MR x NR product of A's rows (entry k of row i at `rows[i] + k * step`) and a B
/// panel (kc x NR, k-major); without `BOTH`, of its first four columns only (the other
/// accumulators stay zero).
#[inline(always)]
unsafe fn tile<const BOTH: bool>(kc: usize, rows: [*const f32; MR], step: usize, b: *const f32) -> [[F32x4; 2]; MR] {
    let mut acc = [[zero(); 2]; MR];
    for k in 0..kc {
        let b0 = load(b.add(k * NR));
        let b1 = if BOTH { load(b.add(k * NR + 4)) } else { zero() };
        for (row, &a) in acc.iter_mut().zip(&rows) {
            let ai = splat_load(a.add(k * step));
            row[0] = mul_add(ai, b0, row[0]);
            if BOTH {
                row[1] = mul_add(ai, b1, row[1]);
            }
        }
    }
    acc
}

/// Writes the first `mr` x `nr` entries of a tile: added to what the previous depth
/// blocks left unless `first`, times alpha on the last block.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn store_tile(acc: &[[F32x4; 2]; MR], c: *mut f32, rsc: usize, csc: usize, mr: usize, nr: usize, first: bool, alpha: Option<f32>) {
    let alpha = alpha.filter(|&a| a != 1.0);
    if mr == MR && nr == NR && csc == 1 {
        for (i, row) in acc.iter().enumerate() {
            for (h, &v) in row.iter().enumerate() {
                let p = c.add(i * rsc + 4 * h);
                let v = if first { v } else { add(load(p), v) };
                store(p, alpha.map_or(v, |a| mul(v, splat(a))));
            }
        }
        return;
    }
    let mut vals = [[0f32; NR]; MR];
    for (i, row) in acc.iter().enumerate() {
        store(vals[i].as_mut_ptr(), row[0]);
        store(vals[i].as_mut_ptr().add(4), row[1]);
    }
    for (i, row) in vals.iter().enumerate().take(mr) {
        for (j, &v) in row.iter().enumerate().take(nr) {
            let p = c.add(i * rsc + j * csc);
            let v = if first { v } else { *p + v };
            *p = alpha.map_or(v, |a| v * a);
        }
    }
}

/// A's mc x kc block as panels of MR rows, k-major, rows past mc zero.
unsafe fn pack_a(mc: usize, kc: usize, a: *const f32, rsa: usize, csa: usize, out: &mut [f32]) {
    for (panel, chunk) in out.chunks_exact_mut(kc * MR).take(mc.div_ceil(MR)).enumerate() {
        let rows = MR.min(mc - panel * MR);
        for i in 0..MR {
            if i < rows {
                let src = a.add((panel * MR + i) * rsa);
                for k in 0..kc {
                    chunk[k * MR + i] = *src.add(k * csa);
                }
            } else {
                for k in 0..kc {
                    chunk[k * MR + i] = 0.0;
                }
            }
        }
    }
}

/// B's kc x nc block as panels of NR columns, k-major, columns past nc zero. Read along
/// B's contiguous direction: rows for a row-major B, columns for a transposed one (a
/// linear layer's weight).
unsafe fn pack_b(kc: usize, nc: usize, b: *const f32, rsb: usize, csb: usize, out: &mut [f32]) {
    for (panel, chunk) in out.chunks_exact_mut(kc * NR).take(nc.div_ceil(NR)).enumerate() {
        let cols = NR.min(nc - panel * NR);
        let b = b.add(panel * NR * csb);
        if cols < NR {
            chunk.fill(0.0);
        }
        if rsb == 1 {
            for j in 0..cols {
                let src = std::slice::from_raw_parts(b.add(j * csb), kc);
                for (k, &v) in src.iter().enumerate() {
                    chunk[k * NR + j] = v;
                }
            }
        } else {
            for (k, dst) in chunk.chunks_exact_mut(NR).enumerate() {
                let src = b.add(k * rsb);
                for (j, d) in dst.iter_mut().enumerate().take(cols) {
                    *d = *src.add(j * csb);
                }
            }
        }
    }
}

/// Four f32 lanes: wasm simd128 in the browser, plain arrays elsewhere (the same
/// arithmetic, lane by lane).
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod lanes {
    use core::arch::wasm32::*;

    pub type F32x4 = v128;

    #[inline(always)]
    pub fn zero() -> F32x4 {
        f32x4_splat(0.0)
    }
    #[inline(always)]
    pub fn splat(x: f32) -> F32x4 {
        f32x4_splat(x)
    }
    #[inline(always)]
    pub unsafe fn load(p: *const f32) -> F32x4 {
        v128_load(p as *const v128)
    }
    #[inline(always)]
    pub unsafe fn splat_load(p: *const f32) -> F32x4 {
        v128_load32_splat(p as *const u32)
    }
    #[inline(always)]
    pub unsafe fn store(p: *mut f32, v: F32x4) {
        v128_store(p as *mut v128, v)
    }
    #[inline(always)]
    pub fn add(a: F32x4, b: F32x4) -> F32x4 {
        f32x4_add(a, b)
    }
    #[inline(always)]
    pub fn mul(a: F32x4, b: F32x4) -> F32x4 {
        f32x4_mul(a, b)
    }
    #[inline(always)]
    pub fn mul_add(a: F32x4, b: F32x4, c: F32x4) -> F32x4 {
        #[cfg(target_feature = "relaxed-simd")]
        return f32x4_relaxed_madd(a, b, c);
        #[cfg(not(target_feature = "relaxed-simd"))]
        f32x4_add(c, f32x4_mul(a, b))
    }
}

#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
mod lanes {
    pub type F32x4 = [f32; 4];

    pub fn zero() -> F32x4 {
        [0.0; 4]
    }
    pub fn splat(x: f32) -> F32x4 {
        [x; 4]
    }
    pub unsafe fn load(p: *const f32) -> F32x4 {
        std::ptr::read_unaligned(p as *const F32x4)
    }
    pub unsafe fn splat_load(p: *const f32) -> F32x4 {
        [*p; 4]
    }
    pub unsafe fn store(p: *mut f32, v: F32x4) {
        std::ptr::write_unaligned(p as *mut F32x4, v)
    }
    pub fn add(a: F32x4, b: F32x4) -> F32x4 {
        std::array::from_fn(|i| a[i] + b[i])
    }
    pub fn mul(a: F32x4, b: F32x4) -> F32x4 {
        std::array::from_fn(|i| a[i] * b[i])
    }
    pub fn mul_add(a: F32x4, b: F32x4, c: F32x4) -> F32x4 {
        std::array::from_fn(|i| c[i] + a[i] * b[i])
    }
}

#[cfg(test)]
mod tests {
    /// Every blocking edge (m around MR and MC, k around KC, n around NR and NC), both
    /// layouts of each operand, alpha 1 and not, overwriting and accumulating: against a
    /// sum in f64.
    #[test]
    fn products_match_a_plain_sum() {
        let mut seed = 1u32;
        let mut next = move || {
            seed = seed.wrapping_mul(1664525).wrapping_add(1013904223);
            (seed >> 8) as f32 / (1 << 24) as f32 - 0.5
        };
        for &(m, k, n) in &[
            (1, 1, 1),
            (5, 3, 7),
            (6, 256, 8),
            (7, 257, 9),
            (50, 768, 130),
            (73, 300, 1030),
            (150, 20, 17),
        ] {
            for &(ta, tb, tc, alpha) in &[
                (false, false, false, 1.0),
                (true, true, true, 0.125),
                (false, true, false, 1.0),
            ] {
                let a: Vec<f32> = (0..m * k).map(|_| next()).collect();
                let b: Vec<f32> = (0..k * n).map(|_| next()).collect();
                let mut c = vec![f32::NAN; m * n];
                let (rsa, csa) = if ta { (1, m) } else { (k, 1) };
                let (rsb, csb) = if tb { (1, k) } else { (n, 1) };
                let (rsc, csc) = if tc { (1, m) } else { (n, 1) };
                // The product, then (alpha 1) the product added to it: twice the sum.
                for (accumulate, times) in [(false, 1.0), (true, 2.0)] {
                    if accumulate && alpha != 1.0 {
                        continue;
                    }
                    unsafe { super::sgemm(m, k, n, alpha, a.as_ptr(), [rsa, csa], b.as_ptr(), [rsb, csb], c.as_mut_ptr(), [rsc, csc], accumulate) };
                    for r in 0..m {
                        for col in 0..n {
                            let want: f64 = (0..k).map(|i| a[r * rsa + i * csa] as f64 * b[i * rsb + col * csb] as f64).sum::<f64>() * alpha as f64 * times;
                            let got = c[r * rsc + col * csc] as f64;
                            assert!((got - want).abs() <= 2e-5 * (k as f64).sqrt(), "{m}x{k}x{n} ({ta},{tb},{tc}, accumulate {accumulate}) at ({r},{col}): {got} vs {want}");
                        }
                    }
                }
            }
        }
    }
}
