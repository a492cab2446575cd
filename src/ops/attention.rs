
use super::{groups_per_dispatch, u32_of};
use crate::error::{shape_err, Result};
use crate::device::{Device, Tensor};
use crate::kernels::{Kernel, AttentionParams};

const BLOCK_Q: u32 = 64;
const BLOCK_K: u32 = 16;
/// `4 * MAX_D4` of the shader: head dimensions up to this (multiples of 4) are supported.
pub const MAX_HEAD_DIM: usize = 64;


/// Columns `start .. start + width` of a token-major tensor [B, N, C]: where the q, k or v
/// of every head sits, side by side, e.g. one third of a fused qkv projection.
#[derive(Clone, Copy)]
pub struct Heads<'a> {
    pub tensor: &'a Tensor,
    pub start: usize,
    pub width: usize,
}

impl<'a> Heads<'a> {
    /// All columns of `t`.
    pub fn all(t: &'a Tensor) -> Self {
        Heads { tensor: t, start: 0, width: t.shape().last().copied().unwrap_or(0) }
    }

    /// (batch, tokens, offset, batch stride, row stride); the last three in vec4s, as
    /// the kernel reads them.
    fn layout(&self, what: &str) -> Result<(usize, usize, u32, u32, u32)> {
        let s = self.tensor.shape();
        if s.len() != 3 || self.start + self.width > s[2] {
            return shape_err!("attention {what}: columns {}..{} of {:?} ([B, N, C] expected)", self.start, self.start + self.width, s);
        }
        if !self.start.is_multiple_of(4) || !s[2].is_multiple_of(4) {
            return shape_err!("attention {what}: column offset {} and row width {} must be multiples of 4", self.start, s[2]);
        }
        self.tensor.expect_f32(what)?;
        Ok((s[0], s[1], u32_of(self.start / 4, "offset")?, u32_of(s[1] * s[2] / 4, "stride")?, u32_of(s[2] / 4, "stride")?))
    }
}

/// Multi-head scaled dot-product attention, `softmax(q k^T / sqrt(D)) v` per head, with
/// an online softmax (no Nq x Nk matrix). q is [B, Nq, H*D]-shaped columns, k and v
/// [B, Nk, H*D]; the result is [B, Nq, H*D]. `causal` masks key j > query i. Head
/// dimensions are multiples of 4 up to 64.
pub fn attention(dev: &Device, q: Heads, k: Heads, v: Heads, heads: usize, causal: bool) -> Result<Tensor> {
    let (bq, nq, q_off, q_sb, q_row) = q.layout("query")?;
    let (bk, nk, k_off, k_sb, k_row) = k.layout("key")?;
    let (bv, nv, v_off, v_sb, v_row) = v.layout("value")?;
    if heads == 0 || !q.width.is_multiple_of(heads) || k.width != q.width || v.width != q.width {
        return shape_err!("attention: widths q {}, k {}, v {} do not split into {heads} equal heads", q.width, k.width, v.width);
    }
    if bq != bk || bk != bv || nk != nv || nk == 0 {
        return shape_err!("attention: batch or key counts differ (q {bq}x{nq}, k {bk}x{nk}, v {bv}x{nv})");
    }
    if causal && nq > nk {
        return shape_err!("attention: a causal mask needs at most as many queries ({nq}) as keys ({nk})");
    }
    let d = q.width / heads;
    if d > MAX_HEAD_DIM || !d.is_multiple_of(4) {
        return shape_err!("attention: head dimension {d} must be a multiple of 4 and at most {MAX_HEAD_DIM}");
    }
    let out = dev.empty(&[bq, nq, q.width])?;
    let params = AttentionParams {
        nq: u32_of(nq, "queries")?,
        nk: u32_of(nk, "keys")?,
        first_group: 0,
        causal: causal as u32,
        q_off,
        q_sb,
        q_row,
        scale: 1.0 / (d as f32).sqrt(),
        k_off,
        k_sb,
        k_row,
        heads: u32_of(heads, "heads")?,
        v_off,
        v_sb,
        v_row,
        _pad: 0,
    };
    let overrides = [("BLOCK_Q", BLOCK_Q as f64), ("BLOCK_K", BLOCK_K as f64), ("D4", (d / 4) as f64)];
    let blocks = params.nq.div_ceil(BLOCK_Q);
    let per_dispatch = groups_per_dispatch(dev, blocks, 2 * BLOCK_Q as u64 * nk as u64 * q.width as u64 * bq as u64);
    for first_group in (0..blocks).step_by(per_dispatch as usize) {
        let part = AttentionParams { first_group, ..params };
        let groups = [per_dispatch.min(blocks - first_group), params.heads, u32_of(bq, "batch")?];
        // Scores and weighted values: two products of queries x nk x d per head (a causal
        // mask's skipped half counted too, as PyTorch's counter does).
        let queries = ((first_group + groups[0]) * BLOCK_Q).min(params.nq) - first_group * BLOCK_Q;
        dev.count_flops(4 * bq * heads * queries as usize * nk * d);
        dev.dispatch(Kernel::FlashAttention, &overrides, &part, &[q.tensor, k.tensor, v.tensor, &out], groups)?;
    }
    Ok(out)
}
