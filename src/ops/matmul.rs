
use super::{expect_len, is_f16, k_slices, or_placeholder, u32_of};
use crate::error::{shape_err, Result};
use crate::device::{CooperativeMatrix, CooperativeTile, DType, Device, F32Tile, Tensor};
use crate::kernels::{Kernel, MatmulParams};

/// Workgroups a product must have before it gets the larger tiles: fewer would leave a
/// large GPU's cores idle (a tile 4x the size means a quarter of the workgroups).
const LARGE_TILE_MIN_WORKGROUPS: usize = 256;

/// The f32 kernels' tile for a product of `m` rows and `n` columns, `batch` times, on
/// `dev`: the forced one if any ([`Tuning::f32_tile`](crate::device::Tuning::f32_tile)), else [`tile_shape`]'s.
pub fn f32_tile(dev: &Device, m: usize, n: usize, batch: usize) -> F32Tile {
    dev.tuning().f32_tile.unwrap_or_else(|| tile_shape(m, n, batch))
}

/// The tile for a product of `m` rows and `n` columns, `batch` times: 256 invocations,
/// as tall as the rows need so that few-row products (per-step MLPs, convolutions with 16
/// or 32 output channels) do not compute empty tile rows; large products get 4 x 8 or
/// 8 x 8 outputs per invocation (twice or four times the multiply-adds per load from
/// workgroup memory) while they still have LARGE_TILE_MIN_WORKGROUPS workgroups. Every
/// shape keeps the two workgroup tiles within WebGPU's 16 KiB.
pub(crate) fn tile_shape(m: usize, n: usize, batch: usize) -> F32Tile {
    let workgroups = |t: &F32Tile| m.div_ceil(t.rows() as usize) * n.div_ceil(t.cols() as usize) * batch;
    match m {
        0..=16 => F32Tile { wg_x: 64, wg_y: 4, tile_k: 8, mr: 1, nr: 1 },
        17..=32 => F32Tile { wg_x: 32, wg_y: 8, tile_k: 16, mr: 1, nr: 1 },
        _ => [F32Tile::LARGE, F32Tile::WIDE]
            .into_iter()
            .filter(|t| m > (t.rows() / 2) as usize)
            .find(|t| workgroups(t) >= LARGE_TILE_MIN_WORKGROUPS)
            .unwrap_or(F32Tile::SMALL),
    }
}



/// A matrix operand seen through strides (in elements): entry (group, batch, row, col) is
/// at `offset + group * group_stride + batch * batch_stride + row * row_stride + col *
/// col_stride`.
#[derive(Clone, Copy)]
pub(crate) struct Operand<'a> {
    pub tensor: &'a Tensor,
    pub offset: usize,
    pub group_stride: usize,
    pub batch_stride: usize,
    pub row_stride: usize,
    pub col_stride: usize,
}

/// A general batched product `out[g, b] = alpha * A[g, b] B[g, b] (+ bias over columns)
/// (+ residual)` for `groups` groups of `batch` products (one dispatch for a batch with two
/// strides, such as heads by chunks of pixels), written into `out` (row-major [m, n]
/// blocks at `out_offset`, `out_group_stride` and `out_batch_stride` apart); the residual
/// is read at the output's own indices.
pub(crate) struct Gemm<'a> {
    pub groups: usize,
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
    pub out_group_stride: usize,
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
    let params = MatmulParams {
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
        per_group: u32_of(g.batch.max(1), "batch")?,
        a_sg: u32_of(g.a.group_stride, "stride")?,
        b_sg: u32_of(g.b.group_stride, "stride")?,
        c_sg: u32_of(g.out_group_stride, "stride")?,
        flags: if g.residual.is_some() { MatmulParams::RESIDUAL } else { 0 },
        k_slices: 1,
    };
    let batch = g.groups * g.batch;
    // Only what the loops over K or over the accumulators, or the grid's indexing, read
    // is an override (each set is a pipeline to compile).
    let variant = [("B_F16", is_f16(Some(g.b.tensor))), ("BIAS_F16", is_f16(g.bias)), ("GROUPED", (g.groups > 1) as u32 as f64)];
    let bias = or_placeholder(g.bias, g.b.tensor);
    let buffers = [g.a.tensor, g.b.tensor, bias, or_placeholder(g.residual, g.a.tensor), g.out];
    let batch = u32_of(batch, "batch")?;
    dev.count_flops(2 * batch as usize * g.m * g.n * g.k);
    if let Some(coop) = dev.cooperative_matrix().filter(|_| runs_on_cooperative_matrices(dev, g.m, g.b.tensor.dtype() == DType::F16Packed)) {
        let tile = cooperative_tile(dev, g.m, g.n, batch as usize);
        let overrides = [&cooperative_overrides(coop, tile)[..], &variant[1..]].concat();
        let grid = [params.n.div_ceil(tile.cols(coop)), params.m.div_ceil(tile.rows(coop)), batch];
        return dev.dispatch(Kernel::MatmulCoop, &overrides, &params, &buffers, grid);
    }
    let kernel = if runs_on_f16_tiles(dev, g.m, g.b.tensor.dtype() == DType::F16Packed) { Kernel::MatmulF16 } else { Kernel::Matmul };
    let tile = f32_tile(dev, g.m, g.n, batch as usize);
    let overrides = [&tile.overrides()[..], &variant].concat();
    let grid = [params.n.div_ceil(tile.cols()), params.m.div_ceil(tile.rows()), batch];
    let slices = k_slices(dev, grid, batch as usize * g.m * g.n, g.k);
    if slices > 1 {
        // Each slice's partial sums (times alpha) into a dense plane of their own, then one
        // dispatch (no products: K = 0) adds them up with the bias and the residual (see
        // matmul.wgsl).
        let partials = dev.empty(&[batch as usize * slices as usize, g.m, g.n])?;
        let sums = MatmulParams { has_bias: 0, flags: 0, c_off: 0, c_sm: params.n, k_slices: slices, ..params };
        dev.dispatch(kernel, &overrides, &sums, &[g.a.tensor, g.b.tensor, g.b.tensor, g.a.tensor, &partials], [grid[0], grid[1], batch * slices])?;
        let add = MatmulParams { k: 0, flags: params.flags | MatmulParams::PARTIALS, k_slices: slices, ..params };
        return dev.dispatch(kernel, &overrides, &add, &[&partials, g.b.tensor, bias, buffers[3], g.out], grid);
    }
    dev.dispatch(kernel, &overrides, &params, &buffers, grid)
}

/// Whether a product (or a convolution: its rows are the output channels) of `rows` rows
/// runs on cooperative matrices on `dev`, which rounds its activations to f16 (sums stay
/// f32): where the device has them (see [`crate::device::GpuOptions`]), with f16 weights
/// (`weights_f16`: a model loaded with f16 weights, whose parity tolerance is that of
/// f16; f32 weights keep f32 products) and more than 32 rows (fewer, such as per-step
/// MLPs or convolutions to a few channels, keep the f32 kernels' tall-and-narrow tiles,
/// where a cooperative tile would be mostly empty rows).
pub fn runs_on_cooperative_matrices(dev: &Device, rows: usize, weights_f16: bool) -> bool {
    dev.cooperative_matrix().is_some() && takes_f16_kernels(rows, weights_f16)
}

/// The products (and convolutions) the f16 kernel families take where the device has
/// one: f16 weights, more than 32 rows (see the two functions around this one).
fn takes_f16_kernels(rows: usize, weights_f16: bool) -> bool {
    weights_f16 && rows > 32
}

/// Whether a product (or a convolution) of `rows` rows runs on f16 workgroup tiles on
/// `dev` (its activations rounded to f16, sums f32; see matmul.wgsl): where the device has
/// f16 shaders (see [`crate::device::GpuOptions::shader_f16`]) and no cooperative
/// matrices, for the products cooperative matrices would take: f16 weights, more than 32
/// rows. Fewer rows keep f32 activations: they are little work, and include the UNet's last
/// convolution (to 3 channels), whose rounding would reach the output unmixed (the tiny
/// UNet's parity error, f16 weights: 2.0-2.8e-3 on the f32 kernels, 4.7-6.5e-3 with f16
/// tiles for every row count).
pub fn runs_on_f16_tiles(dev: &Device, rows: usize, weights_f16: bool) -> bool {
    dev.shader_f16() && dev.cooperative_matrix().is_none() && takes_f16_kernels(rows, weights_f16)
}

/// Whether a product (or a convolution) of `rows` rows rounds its activations to f16 on
/// `dev`: on cooperative matrices or on f16 tiles (sums stay f32 on both).
pub fn rounds_activations_to_f16(dev: &Device, rows: usize, weights_f16: bool) -> bool {
    runs_on_cooperative_matrices(dev, rows, weights_f16) || runs_on_f16_tiles(dev, rows, weights_f16)
}

/// The cooperative-matrix tile of a product (or convolution) of `m` rows and `n` columns,
/// `batch` times, on `dev` (which has cooperative matrices): the forced one if any
/// ([`Tuning::cooperative_tile`](crate::device::Tuning::cooperative_tile)), else [`CooperativeTile::LARGE`] where it fits
/// the device and the product still has LARGE_TILE_MIN_WORKGROUPS workgroups of it
/// (the rule of the f32 kernels' large tiles), else [`CooperativeTile::SMALL`].
pub fn cooperative_tile(dev: &Device, m: usize, n: usize, batch: usize) -> CooperativeTile {
    if let Some(tile) = dev.tuning().cooperative_tile {
        return tile;
    }
    let Some(coop) = dev.cooperative_matrix() else { return CooperativeTile::SMALL };
    let large = CooperativeTile::LARGE;
    let workgroups = m.div_ceil(large.rows(coop) as usize) * n.div_ceil(large.cols(coop) as usize) * batch;
    if dev.cooperative_tile_fits(large) && m > (large.rows(coop) / 2) as usize && workgroups >= LARGE_TILE_MIN_WORKGROUPS {
        large
    } else {
        CooperativeTile::SMALL
    }
}

/// matmul_coop.wgsl's and conv2d_coop.wgsl's overrides for `tile` on `coop`'s matrices.
pub(crate) fn cooperative_overrides(coop: CooperativeMatrix, tile: CooperativeTile) -> [(&'static str, f64); 6] {
    [
        ("S", coop.size as f64),
        ("SUBGROUP_SIZE", coop.subgroup_size as f64),
        ("SG_ROWS", tile.sg_rows as f64),
        ("SG_COLS", tile.sg_cols as f64),
        ("ACC_ROWS", tile.acc_rows as f64),
        ("ACC_COLS", tile.acc_cols as f64),
    ]
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
            groups: 1,
            batch,
            m,
            n,
            k,
            a: Operand { tensor: a, offset: 0, group_stride: 0, batch_stride: m * k, row_stride: k, col_stride: 1 },
            b: Operand { tensor: b, offset: 0, group_stride: 0, batch_stride: if b_batched { k * n } else { 0 }, row_stride: n, col_stride: 1 },
            bias: None,
            residual: None,
            alpha: 1.0,
            out: &out,
            out_offset: 0,
            out_group_stride: 0,
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
            groups: 1,
            batch: 1,
            m,
            n,
            k,
            a: Operand { tensor: x, offset: 0, group_stride: 0, batch_stride: 0, row_stride: k, col_stride: 1 },
            b: Operand { tensor: w, offset: 0, group_stride: 0, batch_stride: 0, row_stride: 1, col_stride: k },
            bias: b,
            residual,
            alpha: 1.0,
            out: &out,
            out_offset: 0,
            out_group_stride: 0,
            out_batch_stride: 0,
        },
    )?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_products_get_large_tiles_while_they_fill_a_gpu() {
        let shape = |m, n, batch| {
            let t = tile_shape(m, n, batch);
            (t.rows(), t.cols())
        };
        assert_eq!(shape(4096, 4096, 1), (128, 128)); // 1024 workgroups
        assert_eq!(shape(200, 20013, 1), (128, 128)); // 314
        assert_eq!(shape(128, 16384, 1), (64, 128)); // 128 x 128 would give 128 workgroups
        assert_eq!(shape(64, 65536, 1), (64, 128)); // the UNet's first level at 256 x 256
        assert_eq!(shape(48, 16389, 2), (64, 128));
        assert_eq!(shape(1024, 1024, 1), (64, 64)); // 128 workgroups at most otherwise
        assert_eq!(shape(64, 4096, 1), (64, 64)); // the first level at 64 x 64
        assert_eq!(shape(20, 1 << 20, 1), (32, 128)); // few rows: the tall-and-narrow shapes
        assert_eq!(shape(1, 1 << 20, 1), (16, 256));
    }

    #[test]
    fn every_tile_fits_the_kernels_registers_and_webgpus_workgroup_memory() {
        for m in [1, 16, 17, 32, 33, 64, 65, 128, 4096] {
            for n in [1, 4096, 1 << 20] {
                let t = tile_shape(m, n, 1);
                assert!(t.fits(256, 16384), "{t:?}");
            }
        }
        for t in F32Tile::CANDIDATES {
            assert!(t.fits(256, 16384), "{t:?}");
        }
        // What fits checks: two vec4 groups per invocation at most, WebGPU's 16 KiB.
        assert!(!F32Tile { mr: 4, ..F32Tile::SMALL }.fits(256, 16384));
        assert!(!F32Tile { tile_k: 32, ..F32Tile::LARGE }.fits(256, 16384));
        assert!(F32Tile { tile_k: 32, ..F32Tile::LARGE }.fits(256, 32768));
        assert!(!F32Tile { tile_k: 64, ..F32Tile::LARGE }.fits(256, 65536)); // 8 fetches per invocation
    }
}
