//! The UNet's LinearAttention core (spec section 4): given q, k and v, the three parts of
//! `to_qkv`'s output (see [`Qkv`]), each [B, heads * dim_head, H, W], per head
//!   q = softmax over its dim_head channels (per pixel), times dim_head^-1/2,
//!   k = softmax over the N = H W pixels (per channel),  v = v / N,
//!   context[d, e] = sum_n k[d, n] v[e, n],   out[e, n] = sum_d context[d, e] q[d, n].
//! Cost is linear in N: two softmaxes (one dispatch) and small batched products; the
//! N x N matrix of ordinary attention never appears. The context sums over all N pixels,
//! so it is split into chunks of pixels computed in parallel (one workgroup each) and
//! then summed: a single 32 x 32 product over N would occupy one workgroup per head. The
//! result [B, heads * dim_head, H, W] feeds `to_out` (a 1x1 conv and the channel
//! LayerNorm), which the model applies.

use crate::error::{shape_err, Result};
use crate::device::{Device, Tensor};
use crate::ops::{gemm, softmax_rows, Gemm, Operand, SoftmaxRows};

/// Pixels per partial context sum.
const CHUNK: usize = 256;

/// q, k and v as `to_qkv` makes them.
#[derive(Clone, Copy)]
pub enum Qkv<'a> {
    /// One tensor [B, 3 * hidden, H, W]: q, k, v are its three channel blocks.
    Stacked(&'a Tensor),
    /// Three tensors [B, hidden, H, W], where one holding all three would not fit a
    /// buffer binding.
    Apart([&'a Tensor; 3]),
}

impl<'a> Qkv<'a> {
    /// Part `i` (0 q, 1 k, 2 v) of image `b`: its tensor and first element.
    fn part(&self, i: usize, b: usize, hidden_n: usize) -> (&'a Tensor, usize) {
        match *self {
            Qkv::Stacked(t) => (t, (b * 3 + i) * hidden_n),
            Qkv::Apart(parts) => (parts[i], b * hidden_n),
        }
    }
}

pub fn linear_attention(dev: &Device, qkv: Qkv, heads: usize, dim_head: usize) -> Result<Tensor> {
    let hidden = heads * dim_head;
    let s = match qkv {
        Qkv::Stacked(t) => {
            let s = t.shape();
            if s.len() != 4 || s[1] != 3 * hidden {
                return shape_err!("linear_attention: stacked q, k, v must be [B, {}, H, W], got {s:?}", 3 * hidden);
            }
            [s[0], hidden, s[2], s[3]]
        }
        Qkv::Apart([q, k, v]) => {
            let s = q.shape();
            if s.len() != 4 || s[1] != hidden || k.shape() != s || v.shape() != s {
                return shape_err!("linear_attention: q, k, v must each be [B, {hidden}, H, W], got {s:?}, {:?}, {:?}", k.shape(), v.shape());
            }
            [s[0], s[1], s[2], s[3]]
        }
    };
    let (batch, n) = (s[0], s[2] * s[3]);
    let dd = dim_head * dim_head;
    let plane = dim_head * n; // elements of one head's q (or k, or v)
    let (full, rest) = (n / CHUNK, n % CHUNK);
    let chunks = full + (rest > 0) as usize;
    // The softmaxed q then k of one image, [2, heads, dim_head, n]: one buffer, written by
    // one dispatch, where the stack fits one (then so do these two thirds of it).
    let stacked = matches!(qkv, Qkv::Stacked(_));
    let q = dev.empty(&[1 + stacked as usize, heads, dim_head, n])?;
    let k_apart = if stacked { None } else { Some(dev.empty(&[heads, dim_head, n])?) };
    let (k, k_at) = match &k_apart {
        Some(k) => (k, 0),
        None => (&q, hidden * n),
    };
    let partial = dev.empty(&[heads, chunks, dd])?;
    let context = dev.empty(&[heads, dim_head, dim_head])?;
    let ones = dev.ones(chunks)?;
    let out = dev.empty(&[batch, hidden, s[2], s[3]])?;
    for b in 0..batch {
        let [(q_in, q_at), (k_in, k_in_at), (v_in, v_at)] = [0, 1, 2].map(|i| qkv.part(i, b, hidden * n));
        let q_rows = SoftmaxRows { x: q_in, offset: q_at, shape: [heads, dim_head, n], out_offset: 0 };
        let k_rows = SoftmaxRows { x: k_in, offset: k_in_at, shape: [hidden, n, 1], out_offset: k_at };
        if stacked {
            softmax_rows(dev, &[q_rows, k_rows], &q)?;
        } else {
            softmax_rows(dev, &[q_rows], &q)?;
            softmax_rows(dev, &[k_rows], k)?;
        }
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
                    a: Operand { tensor: k, offset: k_at + first * CHUNK, group_stride: plane, batch_stride: CHUNK, row_stride: n, col_stride: 1 },
                    b: Operand { tensor: v_in, offset: v_at + first * CHUNK, group_stride: plane, batch_stride: CHUNK, row_stride: 1, col_stride: n },
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
