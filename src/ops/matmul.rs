use bytemuck::{Pod, Zeroable};

use super::{expect_len, is_f16, or_placeholder, u32_of};
use crate::error::{shape_err, Result};
use crate::device::{Device, Tensor};
use crate::shaders::Kernel;

/// Workgroup shape (WG_X, WG_Y, TILE_K) for a product with `m` rows: 256 invocations
/// with 4 x 4 outputs each, as tall as the rows need so that few-row products (per-step
/// MLPs, convolutions with 16 or 32 output channels) do not compute empty tile rows. Each
/// shape keeps the two workgroup tiles within WebGPU's 16 KiB.
pub(crate) fn tile_shape(m: usize) -> (u32, u32, u32) {
    match m {
        0..=16 => (64, 4, 8),
        17..=32 => (32, 8, 16),
        _ => (16, 16, 16),
    }
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub(crate) struct Params {
    pub(crate) m: u32,
    pub(crate) n: u32,
    pub(crate) k: u32,
    pub(crate) has_bias: u32,
    pub(crate) a_off: u32,
    pub(crate) a_sb: u32,
    pub(crate) a_sm: u32,
    pub(crate) a_sk: u32,
    pub(crate) b_off: u32,
    pub(crate) b_sb: u32,
    pub(crate) b_sk: u32,
    pub(crate) b_sn: u32,
    pub(crate) c_off: u32,
    pub(crate) c_sb: u32,
    pub(crate) c_sm: u32,
    pub(crate) alpha: f32,
}

/// A matrix operand seen through strides (in elements): entry (batch, row, col) is at
/// `offset + batch * batch_stride + row * row_stride + col * col_stride`.
#[derive(Clone, Copy)]
pub(crate) struct Operand<'a> {
    pub tensor: &'a Tensor,
    pub offset: usize,
    pub batch_stride: usize,
    pub row_stride: usize,
    pub col_stride: usize,
}

/// A general batched product `out[b] = alpha * A[b] B[b] (+ bias over columns)
/// (+ residual)` written into `out` (row-major [batch, m, n] blocks at `out_offset`,
/// `out_batch_stride` apart); the residual is read at the output's own indices.
pub(crate) struct Gemm<'a> {
    pub batch: usize,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub a: Operand<'a>,
    pub b: Operand<'a>,
    pub bias: Option<&'a Tensor>,
    pub residual: Option<&'a Tensor>,
    pub alpha: f32,
    pub out: &'a Tensor,
    pub out_offset: usize,
    pub out_batch_stride: usize,
}

pub(crate) fn gemm(dev: &Device, g: Gemm) -> Result<()> {
    g.a.tensor.expect_f32("matmul left operand")?;
    g.out.expect_f32("matmul output")?;
    if let Some(bias) = g.bias {
        expect_len(bias, g.n, "bias")?;
    }
    if let Some(r) = g.residual {
        r.expect_f32("matmul residual")?;
        if r.numel() != g.out.numel() {
            return shape_err!("matmul residual {:?} does not match the output {:?}", r.shape(), g.out.shape());
        }
    }
    let params = Params {
        m: u32_of(g.m, "rows")?,
        n: u32_of(g.n, "columns")?,
        k: u32_of(g.k, "inner dimension")?,
        has_bias: g.bias.is_some() as u32,
        a_off: u32_of(g.a.offset, "offset")?,
        a_sb: u32_of(g.a.batch_stride, "stride")?,
        a_sm: u32_of(g.a.row_stride, "stride")?,
        a_sk: u32_of(g.a.col_stride, "stride")?,
        b_off: u32_of(g.b.offset, "offset")?,
        b_sb: u32_of(g.b.batch_stride, "stride")?,
        b_sk: u32_of(g.b.row_stride, "stride")?,
        b_sn: u32_of(g.b.col_stride, "stride")?,
        c_off: u32_of(g.out_offset, "offset")?,
        c_sb: u32_of(g.out_batch_stride, "stride")?,
        c_sm: u32_of(g.n, "columns")?,
        alpha: g.alpha,
    };
    let (wg_x, wg_y, tile_k) = tile_shape(g.m);
    let overrides = [
        ("WG_X", wg_x as f64),
        ("WG_Y", wg_y as f64),
        ("TILE_K", tile_k as f64),
        ("B_F16", is_f16(Some(g.b.tensor))),
        ("BIAS_F16", is_f16(g.bias)),
        ("RESIDUAL", g.residual.is_some() as u32 as f64),
    ];
    let bias = or_placeholder(g.bias, g.b.tensor);
    let residual = or_placeholder(g.residual, g.a.tensor);
    let groups = [params.n.div_ceil(4 * wg_x), params.m.div_ceil(4 * wg_y), u32_of(g.batch, "batch")?];
    dev.dispatch(Kernel::Matmul, &overrides, &params, &[g.a.tensor, g.b.tensor, bias, residual, g.out], groups)
}

/// Batched matrix product: `a` is [.., M, K] (f32), `b` is [.., K, N] with the same
/// leading dimensions or 2-D (shared by every batch; f32 or packed f16).
pub fn matmul(dev: &Device, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let (ar, br) = (a.shape().len(), b.shape().len());
    if ar < 2 || br < 2 {
        return shape_err!("matmul needs matrices, got {:?} and {:?}", a.shape(), b.shape());
    }
    let (m, k) = (a.dim(-2), a.dim(-1));
    let (kb, n) = (b.dim(-2), b.dim(-1));
    let batch: usize = a.shape()[..ar - 2].iter().product();
    let b_batched = br > 2;
    if kb != k || (b_batched && b.shape()[..br - 2] != a.shape()[..ar - 2]) {
        return shape_err!("matmul shapes do not fit: {:?} x {:?}", a.shape(), b.shape());
    }
    let mut shape = a.shape()[..ar - 2].to_vec();
    shape.extend([m, n]);
    let out = dev.empty(&shape)?;
    gemm(
        dev,
        Gemm {
            batch,
            m,
            n,
            k,
            a: Operand { tensor: a, offset: 0, batch_stride: m * k, row_stride: k, col_stride: 1 },
            b: Operand { tensor: b, offset: 0, batch_stride: if b_batched { k * n } else { 0 }, row_stride: n, col_stride: 1 },
            bias: None,
            residual: None,
            alpha: 1.0,
            out: &out,
            out_offset: 0,
            out_batch_stride: m * n,
        },
    )?;
    Ok(out)
}

/// PyTorch's `nn.Linear`: `y = x W^T + b` for `x` [.., K], `W` [N, K], `b` [N]; the
/// weight and bias may be f32 or packed f16.
pub fn linear(dev: &Device, x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    linear_with(dev, x, w, b, None)
}

/// [`linear`] with `residual` (the output's shape) added in the same kernel: a
/// transformer's `x + f(x)`.
pub fn linear_with(dev: &Device, x: &Tensor, w: &Tensor, b: Option<&Tensor>, residual: Option<&Tensor>) -> Result<Tensor> {
    if w.shape().len() != 2 || x.shape().is_empty() || x.dim(-1) != w.dim(1) {
        return shape_err!("linear: input {:?} does not fit weight {:?} ([out, in])", x.shape(), w.shape());
    }
    let (n, k) = (w.dim(0), w.dim(1));
    let m = x.numel() / k;
    let mut shape = x.shape().to_vec();
    *shape.last_mut().unwrap() = n;
    let out = dev.empty(&shape)?;
    gemm(
        dev,
        Gemm {
            batch: 1,
            m,
            n,
            k,
            a: Operand { tensor: x, offset: 0, batch_stride: 0, row_stride: k, col_stride: 1 },
            b: Operand { tensor: w, offset: 0, batch_stride: 0, row_stride: 1, col_stride: k },
            bias: b,
            residual,
            alpha: 1.0,
            out: &out,
            out_offset: 0,
            out_batch_stride: 0,
        },
    )?;
    Ok(out)
}
