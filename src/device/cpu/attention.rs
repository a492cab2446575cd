//! flash_attention.wgsl on the CPU: per (batch, head, block of queries) the scores
//! against every key as one GEMM, a row softmax, and the weighted values as a second
//! GEMM. The score block is `QUERY_BLOCK x Nk`, never `Nq x Nk`.

use super::{check_extent, parallel_for, SharedOut};
use crate::error::{Error, Result};
use crate::kernels::AttentionParams;

const QUERY_BLOCK: usize = 64;

pub(super) fn attention(p: &AttentionParams, batch: usize, d4: usize, ins: &[&[f32]], out: &mut [f32]) -> Result<()> {
    let (q, k, v) = (ins[0], ins[1], ins[2]);
    let (nq, nk, heads, d) = (p.nq as usize, p.nk as usize, p.heads as usize, 4 * d4);
    if nq == 0 || nk == 0 || d == 0 {
        return Ok(());
    }
    // The op's layout is in vec4s, as the shader reads it.
    let at = |off: u32, sb: u32, row: u32| (4 * off as usize, 4 * sb as usize, 4 * row as usize);
    let (q_off, q_sb, q_row) = at(p.q_off, p.q_sb, p.q_row);
    let (k_off, k_sb, k_row) = at(p.k_off, p.k_sb, p.k_row);
    let (v_off, v_sb, v_row) = at(p.v_off, p.v_sb, p.v_row);
    let last = |off: usize, sb: usize, row: usize, n: usize| off + (batch - 1) * sb + (n - 1) * row + heads * d - 1;
    check_extent("attention query", last(q_off, q_sb, q_row, nq), q.len())?;
    check_extent("attention key", last(k_off, k_sb, k_row, nk), k.len())?;
    check_extent("attention value", last(v_off, v_sb, v_row, nk), v.len())?;
    check_extent("attention output", batch * nq * heads * d - 1, out.len())?;
    if p.causal != 0 && nq > nk {
        return Err(Error::Shape("causal attention with more queries than keys".into()));
    }
    let o = SharedOut::new(out);
    let qblocks = nq.div_ceil(QUERY_BLOCK);
    parallel_for(batch * heads * qblocks, |t| {
        let (bh, qb) = (t / qblocks, t % qblocks);
        let (b, h) = (bh / heads, bh % heads);
        let i0 = qb * QUERY_BLOCK;
        let rows = QUERY_BLOCK.min(nq - i0);
        let mut s = vec![0f32; rows * nk];
        // SAFETY: extents were checked above for every (b, h, row); `s` is this task's.
        unsafe {
            super::gemm::raw_sgemm(rows, d, nk, p.scale, q.as_ptr().add(q_off + b * q_sb + i0 * q_row + h * d), [q_row, 1], k.as_ptr().add(k_off + b * k_sb + h * d), [1, k_row], s.as_mut_ptr(), [nk, 1], false);
        }
        let mut inv = vec![0f32; rows];
        for (r, row) in s.chunks_mut(nk).enumerate() {
            // Keys after `last_key` are masked for a causal query (as the shader does).
            let keys = if p.causal != 0 { i0 + r + nk - nq + 1 } else { nk };
            let m = super::kernels::lane_max(&row[..keys]);
            row[..keys].iter_mut().for_each(|x| *x = super::kernels::exp(*x - m));
            let sum = super::kernels::lane_sum(&row[..keys], |x| x as f64);
            row[keys..].fill(0.0);
            inv[r] = (1.0 / sum) as f32;
        }
        let ob = (b * nq + i0) * heads * d + h * d;
        // SAFETY: rows i0.. of head h in batch b: this task's block of the output alone,
        // in bounds by the check above.
        unsafe {
            super::gemm::raw_sgemm(rows, nk, d, 1.0, s.as_ptr(), [nk, 1], v.as_ptr().add(v_off + b * v_sb + h * d), [v_row, 1], o.ptr().add(ob), [heads * d, 1], false);
        }
        for (r, &f) in inv.iter().enumerate() {
            for e in 0..d {
                let i = ob + r * heads * d + e;
                // SAFETY of the read: index i is in this task's block, written above.
                let x = unsafe { *o.ptr().add(i) };
                o.set(i, x * f);
            }
        }
    });
    Ok(())
}
