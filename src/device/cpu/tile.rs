//! The register tile of the convolutions natively on AVX-512: `c = a^T b` for an MR x NR
//! block of outputs (MR output channels by NR pixels or Winograd tiles), from panels
//! that hold, for each step of the sum, MR values of `a` and NR of `b`. 16 accumulators
//! of 16 lanes, two vectors of `b` and a broadcast value of `a` fit AVX-512's 32
//! registers. The callers write their operands straight into panels (the Winograd
//! transforms, the patches of a convolution), where the general GEMM would copy them
//! once more, and take each tile's outputs while they are in L1.

use super::Values;

/// Output channels, and pixels or tiles, of a tile.
pub(super) const MR: usize = 8;
pub(super) const NR: usize = 32;

/// Whether this CPU computes by register tiles.
pub(super) fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    return std::arch::is_x86_feature_detected!("avx512f");
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Rows `first .. first + rows` (rows at most MR) of the matrix `w` of rows of `len`
/// values as a panel: `out[p * MR + i]` = row `first + i`'s value p, the last row
/// repeated past `rows` (computed, never stored). With AVX-512, sixteen values of the
/// eight rows at a time, transposed in registers (value by value, this took as long
/// as the products of an 8x8 image's convolutions); `row` holds `len` values for the
/// rest.
pub(super) fn pack_rows(w: Values, len: usize, first: usize, rows: usize, out: &mut [f32], row: &mut [f32]) {
    assert!(rows >= 1 && (first + rows) * len <= w.len() && out.len() >= len * MR && row.len() >= len, "weight panel extents");
    let row_at = |i: usize| (first + i.min(rows - 1)) * len;
    #[cfg(target_arch = "x86_64")]
    let done = if available() {
        let whole = len / 16 * 16;
        // SAFETY: the CPU has AVX-512F; rows of `len` values from row_at(i) lie in w
        // (checked above), and out holds len MR values.
        unsafe {
            let rows = match w {
                Values::F16(h) => avx512::Rows::F16(std::array::from_fn(|i| h.as_ptr().add(row_at(i)))),
                Values::F32(f) => avx512::Rows::F32(std::array::from_fn(|i| f.as_ptr().add(row_at(i)))),
            };
            avx512::pack(rows, whole, out.as_mut_ptr());
        }
        whole
    } else {
        0
    };
    #[cfg(not(target_arch = "x86_64"))]
    let done = 0;
    if done < len {
        for i in 0..MR {
            w.widen_into(row_at(i) + done, &mut row[done..len]);
            for (p, &v) in row[..len].iter().enumerate().skip(done) {
                out[p * MR + i] = v;
            }
        }
    }
}

/// `c[i][j] = sum over p of a[p][i] b[p][j]` for an MR x NR tile (c row-major), with `a`
/// and `b` panels of `k` steps.
pub(super) fn product(k: usize, a: &[f32], b: &[f32], c: &mut [f32]) {
    assert!(a.len() >= k * MR && b.len() >= k * NR && c.len() >= MR * NR, "register tile operands");
    #[cfg(target_arch = "x86_64")]
    if available() {
        // SAFETY: the CPU has AVX-512F; the extents were checked above.
        return unsafe { avx512::tile(k, a.as_ptr(), b.as_ptr(), c.as_mut_ptr()) };
    }
    // A CPU without AVX-512 takes the general GEMM (see `available`); this is for the
    // tests there.
    for i in 0..MR {
        for j in 0..NR {
            let mut sum = 0f32;
            for p in 0..k {
                sum = a[p * MR + i].mul_add(b[p * NR + j], sum);
            }
            c[i * NR + j] = sum;
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::{
        __m512, _mm256_loadu_si256, _mm512_castps512_ps128, _mm512_cvtph_ps, _mm512_extractf32x4_ps, _mm512_fmadd_ps, _mm512_loadu_ps, _mm512_set1_ps, _mm512_setzero_ps, _mm512_shuffle_ps, _mm512_storeu_ps, _mm512_unpackhi_ps,
        _mm512_unpacklo_ps, _mm_storeu_ps,
    };

    use super::{MR, NR};

    /// `super::product` in 16 zmm accumulators (no closures here: their code
    /// would not get this function's target features).
    ///
    /// # Safety
    /// The CPU has AVX-512F; `a` holds k MR, `b` k NR and `c` MR NR values.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn tile(k: usize, a: *const f32, b: *const f32, c: *mut f32) {
        let mut acc = [[_mm512_setzero_ps(); 2]; MR];
        for p in 0..k {
            let (b0, b1) = (_mm512_loadu_ps(b.add(p * NR)), _mm512_loadu_ps(b.add(p * NR + 16)));
            for (i, acc) in acc.iter_mut().enumerate() {
                let ai = _mm512_set1_ps(*a.add(p * MR + i));
                acc[0] = _mm512_fmadd_ps(ai, b0, acc[0]);
                acc[1] = _mm512_fmadd_ps(ai, b1, acc[1]);
            }
        }
        for (i, acc) in acc.iter().enumerate() {
            _mm512_storeu_ps(c.add(i * NR), acc[0]);
            _mm512_storeu_ps(c.add(i * NR + 16), acc[1]);
        }
    }

    /// The MR rows a panel is packed from: f16 bits or f32.
    pub(super) enum Rows {
        F16([*const u16; MR]),
        F32([*const f32; MR]),
    }

    /// `super::pack_rows` for values `0 .. len` (a multiple of 16) of `rows`.
    ///
    /// # Safety
    /// As `transpose`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn pack(rows: Rows, len: usize, out: *mut f32) {
        for p in (0..len).step_by(16) {
            let mut v = [_mm512_setzero_ps(); MR];
            for (i, v) in v.iter_mut().enumerate() {
                *v = match &rows {
                    Rows::F16(rows) => _mm512_cvtph_ps(_mm256_loadu_si256(rows[i].add(p).cast())),
                    Rows::F32(rows) => _mm512_loadu_ps(rows[i].add(p)),
                };
            }
            transpose(v, out.add(p * MR));
        }
    }

    /// `out[p * MR + i] = v[i][p]` for 16 values p of the MR = 8 rows: pairs of rows
    /// interleaved by value, then by two values, which leaves in 128-bit lane l of
    /// `lo[s]` (rows 0-3) and `hi[s]` (rows 4-7) the rows' value 4 l + s.
    ///
    /// # Safety
    /// The CPU has AVX-512F; the rows hold 16 values from where they were read and out
    /// 128 values.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn transpose(v: [__m512; MR], out: *mut f32) {
        let mut lo = [_mm512_setzero_ps(); 4];
        let mut hi = [_mm512_setzero_ps(); 4];
        for (half, quads) in [&mut lo, &mut hi].into_iter().enumerate() {
            let r = 4 * half;
            // Per lane: [a0 b0 a1 b1] and [a2 b2 a3 b3] of rows (r, r + 1) and (r + 2, r + 3).
            let (ab_lo, ab_hi) = (_mm512_unpacklo_ps(v[r], v[r + 1]), _mm512_unpackhi_ps(v[r], v[r + 1]));
            let (cd_lo, cd_hi) = (_mm512_unpacklo_ps(v[r + 2], v[r + 3]), _mm512_unpackhi_ps(v[r + 2], v[r + 3]));
            quads[0] = _mm512_shuffle_ps::<0x44>(ab_lo, cd_lo);
            quads[1] = _mm512_shuffle_ps::<0xEE>(ab_lo, cd_lo);
            quads[2] = _mm512_shuffle_ps::<0x44>(ab_hi, cd_hi);
            quads[3] = _mm512_shuffle_ps::<0xEE>(ab_hi, cd_hi);
        }
        for s in 0..4 {
            for (quad, at) in [(lo[s], 0), (hi[s], 4)] {
                _mm_storeu_ps(out.add(s * MR + at), _mm512_castps512_ps128(quad));
                _mm_storeu_ps(out.add((4 + s) * MR + at), _mm512_extractf32x4_ps::<1>(quad));
                _mm_storeu_ps(out.add((8 + s) * MR + at), _mm512_extractf32x4_ps::<2>(quad));
                _mm_storeu_ps(out.add((12 + s) * MR + at), _mm512_extractf32x4_ps::<3>(quad));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{pack_rows, MR};
    use crate::device::cpu::Values;

    /// Panels of f16 and f32 rows (a length with a tail past the sixteens, fewer rows than
    /// a panel) hold each row's values in place, the last row repeated.
    #[test]
    fn packed_rows_are_the_rows_transposed() {
        let (len, rows, first) = (37, 5, 2);
        let wide: Vec<f32> = (0..(first + rows) * len).map(|i| i as f32).collect();
        let halves: Vec<u16> = wide.iter().map(|&v| half::f16::from_f32(v).to_bits()).collect();
        for w in [Values::F32(&wide), Values::F16(&halves)] {
            let (mut out, mut row) = (vec![f32::NAN; len * MR], vec![0f32; len]);
            pack_rows(w, len, first, rows, &mut out, &mut row);
            for p in 0..len {
                for i in 0..MR {
                    assert_eq!(out[p * MR + i], wide[(first + i.min(rows - 1)) * len + p], "value {p} of row {i}");
                }
            }
        }
    }
}
