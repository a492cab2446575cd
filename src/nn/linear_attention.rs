//! The UNet's LinearAttention core (spec section 4): given q, k and v, the three parts of
//! `to_qkv`'s output, each [B, heads * dim_head, H, W] (kept apart so that no buffer
//! holds all three at full resolution), per head
//!   q = softmax over its dim_head channels (per pixel), times dim_head^-1/2,
//!   k = softmax over the N = H W pixels (per channel),  v = v / N,
//!   context[d, e] = sum_n k[d, n] v[e, n],   out[e, n] = sum_d context[d, e] q[d, n].
//! Cost is linear in N: two softmaxes and small batched products; the N x N matrix of
//! ordinary attention never appears. The context sums over all N pixels, so it is split
//! into chunks of pixels computed in parallel (one workgroup each) and then summed:
//! a single 32 x 32 product over N would occupy one workgroup per head. The result [B, heads * dim_head, H, W] feeds
//! `to_out` (a 1x1 conv and the channel LayerNorm), which the model applies.

use crate::error::{shape_err, Result};
use crate::device::{Device, Tensor};
use crate::ops::{gemm, softmax_rows, Gemm, Operand};

/// Pixels per partial context sum.
const CHUNK: usize = 256;

pub fn linear_attention(dev: &Device, q_in: &Tensor, k_in: &Tensor, v_in: &Tensor, heads: usize, dim_head: usize) -> Result<Tensor> {
    let s = q_in.shape();
    let hidden = heads * dim_head;
    if s.len() != 4 || s[1] != hidden || k_in.shape() != s || v_in.shape() != s {
        return shape_err!("linear_attention: q, k, v must each be [B, {hidden}, H, W], got {s:?}, {:?}, {:?}", k_in.shape(), v_in.shape());
    }
    let (batch, n) = (s[0], s[2] * s[3]);
    let dd = dim_head * dim_head;
    let plane = dim_head * n; // elements of one head's q (or k, or v)
    let (full, rest) = (n / CHUNK, n % CHUNK);
    let chunks = full + (rest > 0) as usize;
    let q = dev.empty(&[heads, dim_head, n])?;
    let k = dev.empty(&[heads, dim_head, n])?;
    let partial = dev.empty(&[heads, chunks, dd])?;
    let context = dev.empty(&[heads, dim_head, dim_head])?;
    let ones = dev.ones(chunks)?;
    let out = dev.empty(&[batch, hidden, s[2], s[3]])?;
    for b in 0..batch {
        let base = b * hidden * n;
        softmax_rows(dev, q_in, base, [heads, dim_head, n], &q)?;
        softmax_rows(dev, k_in, base, [hidden, n, 1], &k)?;
        // partial[h][c] (d x e) = k[h][:, chunk c] . v[h][:, chunk c]^T: heads by chunks in
        // one product per chunk length (the full chunks, then the rest).
        for (first, count, len) in [(0, full, CHUNK), (full, (rest > 0) as usize, rest)] {
            if count == 0 {
                continue;
            }
            gemm(
                dev,
                Gemm {
                    groups: heads,
                    batch: count,
                    m: dim_head,
                    n: dim_head,
                    k: len,
                    a: Operand { tensor: &k, offset: first * CHUNK, group_stride: plane, batch_stride: CHUNK, row_stride: n, col_stride: 1 },
                    b: Operand { tensor: v_in, offset: base + first * CHUNK, group_stride: plane, batch_stride: CHUNK, row_stride: 1, col_stride: n },
                    bias: None,
                    residual: None,
                    alpha: 1.0,
                    out: &partial,
                    out_offset: first * dd,
                    out_group_stride: chunks * dd,
                    out_batch_stride: dd,
                },
            )?;
        }
        // context[h] = (1/N) sum over chunks: ones [1, chunks] . partial[h] [chunks, d*e]
        gemm(
            dev,
            Gemm {
                groups: 1,
                batch: heads,
                m: 1,
                n: dd,
                k: chunks,
                a: Operand { tensor: &ones, offset: 0, group_stride: 0, batch_stride: 0, row_stride: chunks, col_stride: 1 },
                b: Operand { tensor: &partial, offset: 0, group_stride: 0, batch_stride: chunks * dd, row_stride: dd, col_stride: 1 },
                bias: None,
                residual: None,
                alpha: 1.0 / n as f32,
                out: &context,
                out_offset: 0,
                out_group_stride: 0,
                out_batch_stride: dd,
            },
        )?;
        // out[h] (e x n) = context[h]^T (e x d) . q[h] (d x n) * dim_head^-1/2
        gemm(
            dev,
            Gemm {
                groups: 1,
                batch: heads,
                m: dim_head,
                n,
                k: dim_head,
                a: Operand { tensor: &context, offset: 0, group_stride: 0, batch_stride: dd, row_stride: 1, col_stride: dim_head },
                b: Operand { tensor: &q, offset: 0, group_stride: 0, batch_stride: plane, row_stride: n, col_stride: 1 },
                bias: None,
                residual: None,
                alpha: 1.0 / (dim_head as f32).sqrt(),
                out: &out,
                out_offset: b * hidden * n,
                out_group_stride: 0,
                out_batch_stride: plane,
            },
        )?;
    }
    Ok(out)
}
