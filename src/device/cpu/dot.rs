//! Linear layers of few rows with an f16 weight, on AVX-512 (natively): `C[i][j] = alpha
//! sum over p of X[i][p] W[j][p]`, the activations' rows and the weight's rows both read
//! in place along the sum. A weight that few rows use is read about once, so the general
//! GEMM's copies of it (widened to f32, then packed) cost as much as its multiply-adds:
//! a ViT layer's products have 50 rows. Here each weight vector is widened in registers
//! (`vcvtph2ps`) as it is read. 110-115 GFLOP/s on one core for the ViT's shapes, about
//! 60% of the core's FMA peak: each vector of weights costs a conversion on the FMA
//! ports (a tile of 8 x 3 was no faster; weights widened once per four rows into L1,
//! slower).
//!
//! A 6 x 4 tile of outputs keeps 16 lanes of partial sums each (24 registers), summed
//! across lanes at the end; a tile at the matrix's edge repeats its last row or weight
//! (computed, never stored), so every output has the same arithmetic wherever it lies
//! (split products stay bit for bit the whole one).

use std::arch::x86_64::{__m512, _mm256_loadu_si256, _mm512_cvtph_ps, _mm512_fmadd_ps, _mm512_loadu_ps, _mm512_reduce_add_ps, _mm512_setzero_ps};

/// Rows of X, and of W, per tile.
const MR: usize = 6;
const NR: usize = 4;

/// Whether this CPU has the instructions.
pub(super) fn available() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
}

/// `C[i * rsc + j * csc] = alpha sum over p < k of X[i * rx + p] W[j * rw + p]` for
/// i < m, j < n, W's values f16 bits (finite).
///
/// # Safety
/// The CPU has AVX-512F ([`available`]); every index those strides reach lies in its
/// allocation; C overlaps neither operand; m, n and k are at least 1.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn products(m: usize, n: usize, k: usize, alpha: f32, x: *const f32, rx: usize, w: *const u16, rw: usize, c: *mut f32, [rsc, csc]: [usize; 2]) {
    // Blocks of weight rows of about 256 KiB (in L2), and in each, six rows of X (in L1
    // while the block's rows pass) against every four weight rows.
    let block = ((1 << 17) / k).max(1).next_multiple_of(NR);
    for b0 in (0..n).step_by(block) {
        for i0 in (0..m).step_by(MR) {
            let mr = MR.min(m - i0);
            let xs: [*const f32; MR] = std::array::from_fn(|i| x.add((i0 + i.min(mr - 1)) * rx));
            for j0 in (b0..n.min(b0 + block)).step_by(NR) {
                let nr = NR.min(n - j0);
                let ws: [*const u16; NR] = std::array::from_fn(|j| w.add((j0 + j.min(nr - 1)) * rw));
                let sums = tile(k, xs, ws);
                for (i, row) in sums.iter().enumerate().take(mr) {
                    for (j, &s) in row.iter().enumerate().take(nr) {
                        *c.add((i0 + i) * rsc + (j0 + j) * csc) = alpha * s;
                    }
                }
            }
        }
    }
}

/// Sixteen weights from `row` at value `p`, widened to f32 (exactly).
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn load(row: *const u16, p: usize) -> __m512 {
    _mm512_cvtph_ps(_mm256_loadu_si256(row.add(p).cast()))
}

/// The MR x NR sums of `xs[i]` and `ws[j]` over k: sixteen lanes of partial sums per
/// output (value p in lane p mod 16, while p < k rounded down to 16), added across the
/// lanes, then the remaining values in order.
#[target_feature(enable = "avx512f")]
unsafe fn tile(k: usize, xs: [*const f32; MR], ws: [*const u16; NR]) -> [[f32; NR]; MR] {
    let mut acc = [[_mm512_setzero_ps(); NR]; MR];
    let whole = k / 16 * 16;
    let mut p = 0;
    while p < whole {
        let wv = [load(ws[0], p), load(ws[1], p), load(ws[2], p), load(ws[3], p)];
        for (acc, &x) in acc.iter_mut().zip(&xs) {
            let xv = _mm512_loadu_ps(x.add(p));
            for (a, &wv) in acc.iter_mut().zip(&wv) {
                *a = _mm512_fmadd_ps(xv, wv, *a);
            }
        }
        p += 16;
    }
    let mut sums = [[0f32; NR]; MR];
    for (i, row) in sums.iter_mut().enumerate() {
        for (j, s) in row.iter_mut().enumerate() {
            let mut sum = _mm512_reduce_add_ps(acc[i][j]);
            for q in whole..k {
                sum = (*xs[i].add(q)).mul_add(half::f16::from_bits(*ws[j].add(q)).to_f32(), sum);
            }
            *s = sum;
        }
    }
    sums
}

#[cfg(test)]
mod tests {
    use super::{available, products};

    /// Against f64 sums: shapes with edge tiles in both directions and sums with a tail
    /// (k not a multiple of 16), C by rows and transposed, alpha.
    #[test]
    fn products_match_f64_sums() {
        if !available() {
            eprintln!("skipped: this CPU has no AVX-512");
            return;
        }
        let mut rng = crate::weights::SplitMix::new(5);
        for (m, n, k) in [(1, 1, 1), (50, 37, 768), (7, 5, 33), (13, 9, 16)] {
            let x: Vec<f32> = (0..m * k).map(|_| rng.uniform() as f32 - 0.5).collect();
            let wide: Vec<f32> = (0..n * k).map(|_| half::f16::from_f32(rng.uniform() as f32 - 0.5).to_f32()).collect();
            let halves: Vec<u16> = wide.iter().map(|&v| half::f16::from_f32(v).to_bits()).collect();
            for transposed in [false, true] {
                let strides = if transposed { [1, m] } else { [n, 1] };
                let mut c = vec![f32::NAN; m * n];
                // SAFETY: test data of these extents; the CPU has AVX-512F.
                unsafe { products(m, n, k, 0.5, x.as_ptr(), k, halves.as_ptr(), k, c.as_mut_ptr(), strides) };
                for i in 0..m {
                    for j in 0..n {
                        let want: f64 = 0.5 * (0..k).map(|p| x[i * k + p] as f64 * wide[j * k + p] as f64).sum::<f64>();
                        let got = c[i * strides[0] + j * strides[1]];
                        assert!((got as f64 - want).abs() < 1e-5, "{m}x{n}x{k} ({i}, {j}): {got} vs {want}");
                    }
                }
            }
        }
    }
}
