//! The UNet's LinearAttention core (spec section 4): given the output of `to_qkv`
//! [B, 3 * heads * dim_head, H, W], per head
//!   q = softmax over its dim_head channels (per pixel), times dim_head^-1/2,
//!   k = softmax over the N = H W pixels (per channel),  v = v / N,
//!   context[d, e] = sum_n k[d, n] v[e, n],   out[e, n] = sum_d context[d, e] q[d, n].
//! Cost is linear in N: two softmaxes and two small batched products; the N x N matrix
//! of ordinary attention never appears. The result [B, heads * dim_head, H, W] feeds
//! `to_out` (a 1x1 conv and the channel LayerNorm), which the model applies.

use crate::error::{shape_err, Result};
use crate::gpu::{Gpu, Tensor};
use crate::ops::{gemm, softmax_rows, Gemm, Operand};

pub fn linear_attention(gpu: &Gpu, qkv: &Tensor, heads: usize, dim_head: usize) -> Result<Tensor> {
    let s = qkv.shape();
    let hidden = heads * dim_head;
    if s.len() != 4 || s[1] != 3 * hidden {
        return shape_err!("linear_attention: expected [B, {}, H, W], got {s:?}", 3 * hidden);
    }
    let (batch, n) = (s[0], s[2] * s[3]);
    let q = gpu.empty(&[heads, dim_head, n])?;
    let k = gpu.empty(&[heads, dim_head, n])?;
    let context = gpu.empty(&[heads, dim_head, dim_head])?;
    let out = gpu.empty(&[batch, hidden, s[2], s[3]])?;
    let plane = dim_head * n; // elements of one head's q (or k, or v)
    for b in 0..batch {
        let base = b * 3 * hidden * n;
        softmax_rows(gpu, qkv, base, [heads, dim_head, n], &q)?;
        softmax_rows(gpu, qkv, base + hidden * n, [hidden, n, 1], &k)?;
        // context[h] (d x e) = k[h] (d x n) . v[h]^T (n x e) / N
        gemm(
            gpu,
            Gemm {
                batch: heads,
                m: dim_head,
                n: dim_head,
                k: n,
                a: Operand { tensor: &k, offset: 0, batch_stride: plane, row_stride: n, col_stride: 1 },
                b: Operand { tensor: qkv, offset: base + 2 * hidden * n, batch_stride: plane, row_stride: 1, col_stride: n },
                bias: None,
                alpha: 1.0 / n as f32,
                out: &context,
                out_offset: 0,
                out_batch_stride: dim_head * dim_head,
            },
        )?;
        // out[h] (e x n) = context[h]^T (e x d) . q[h] (d x n) * dim_head^-1/2
        gemm(
            gpu,
            Gemm {
                batch: heads,
                m: dim_head,
                n,
                k: dim_head,
                a: Operand { tensor: &context, offset: 0, batch_stride: dim_head * dim_head, row_stride: 1, col_stride: dim_head },
                b: Operand { tensor: &q, offset: 0, batch_stride: plane, row_stride: n, col_stride: 1 },
                bias: None,
                alpha: 1.0 / (dim_head as f32).sqrt(),
                out: &out,
                out_offset: b * hidden * n,
                out_batch_stride: plane,
            },
        )?;
    }
    Ok(out)
}
