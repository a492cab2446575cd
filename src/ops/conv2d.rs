use bytemuck::{Pod, Zeroable};

use super::matmul::tile_shape;
use super::{expect_len, expect_rank, groups_per_dispatch, is_f16, or_placeholder, u32_of};
use crate::error::{shape_err, Result};
use crate::device::{Device, Tensor};
use crate::shaders::Kernel;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub(crate) struct Params {
    pub(crate) cin: u32,
    pub(crate) h: u32,
    pub(crate) w: u32,
    pub(crate) cout: u32,
    pub(crate) ho: u32,
    pub(crate) wo: u32,
    pub(crate) kh: u32,
    pub(crate) kw: u32,
    pub(crate) stride: u32,
    pub(crate) pad: u32,
    pub(crate) has_bias: u32,
    /// The first block of output pixels of this dispatch (a large convolution goes in
    /// several).
    pub(crate) first_group: u32,
    /// The time conditioning's row for the first image of the batch (see [`Epilogue`]).
    pub(crate) row: u32,
    pub(crate) _pad: [u32; 3],
}

/// What a convolution applies to its output before writing it, in this order (after the
/// bias): the ResBlock's time conditioning `v * (scale + 1) + shift` with `scale, shift =
/// table[row + b].chunk(2)` (the table is [rows, 2 Cout]), SiLU, then adding `residual`
/// (a tensor of the output's shape). Fused so that no step is a pass of its own.
#[derive(Default, Clone, Copy)]
pub struct Epilogue<'a> {
    pub scale_shift: Option<(&'a Tensor, usize)>,
    pub silu: bool,
    pub residual: Option<&'a Tensor>,
}

/// Stride and zero padding of a convolution (the same on both axes, as in every
/// convolution of DA-CLIP and its UNet).
#[derive(Debug, Clone, Copy)]
pub struct Conv2dArgs {
    pub stride: usize,
    pub padding: usize,
}

impl Conv2dArgs {
    /// Stride 1 and "same" padding `k / 2`, PyTorch's default in the UNet's convs.
    pub fn same(kernel: usize) -> Self {
        Conv2dArgs { stride: 1, padding: kernel / 2 }
    }
}

/// PyTorch's `F.conv2d` on NCHW `x` [B, Cin, H, W] with weight [Cout, Cin, kh, kw] and
/// optional bias [Cout]; weight and bias may be f32 or packed f16.
pub fn conv2d(dev: &Device, x: &Tensor, w: &Tensor, bias: Option<&Tensor>, args: Conv2dArgs) -> Result<Tensor> {
    conv2d_with(dev, x, w, bias, args, Epilogue::default())
}

/// [`conv2d`] followed by an [`Epilogue`] in the same kernel.
pub fn conv2d_with(dev: &Device, x: &Tensor, w: &Tensor, bias: Option<&Tensor>, args: Conv2dArgs, epilogue: Epilogue) -> Result<Tensor> {
    expect_rank(x, 4, "conv2d input")?;
    expect_rank(w, 4, "conv2d weight")?;
    x.expect_f32("conv2d input")?;
    let [b, cin, h, wd] = [x.dim(0), x.dim(1), x.dim(2), x.dim(3)];
    let [cout, wcin, kh, kw] = [w.dim(0), w.dim(1), w.dim(2), w.dim(3)];
    if wcin != cin {
        return shape_err!("conv2d: input {:?} has {cin} channels but weight {:?} expects {wcin}", x.shape(), w.shape());
    }
    if args.stride == 0 || h + 2 * args.padding < kh || wd + 2 * args.padding < kw {
        return shape_err!("conv2d: kernel {kh}x{kw} (stride {}, padding {}) does not fit input {:?}", args.stride, args.padding, x.shape());
    }
    if let Some(bias) = bias {
        expect_len(bias, cout, "conv2d bias")?;
    }
    let ho = (h + 2 * args.padding - kh) / args.stride + 1;
    let wo = (wd + 2 * args.padding - kw) / args.stride + 1;
    let row = match epilogue.scale_shift {
        Some((table, row)) => {
            table.expect_f32("conv2d time conditioning")?;
            if table.numel() % (2 * cout) != 0 || (row + b) * 2 * cout > table.numel() {
                return shape_err!("conv2d time conditioning: rows {row}..{} of {:?} for {cout} channels", row + b, table.shape());
            }
            row
        }
        None => 0,
    };
    if let Some(r) = epilogue.residual {
        r.expect_f32("conv2d residual")?;
        if r.shape() != [b, cout, ho, wo] {
            return shape_err!("conv2d residual {:?} does not match the output [{b}, {cout}, {ho}, {wo}]", r.shape());
        }
    }
    let out = dev.empty(&[b, cout, ho, wo])?;
    let params = Params {
        cin: u32_of(cin, "channels")?,
        h: u32_of(h, "height")?,
        w: u32_of(wd, "width")?,
        cout: u32_of(cout, "channels")?,
        ho: ho as u32,
        wo: wo as u32,
        kh: kh as u32,
        kw: kw as u32,
        stride: u32_of(args.stride, "stride")?,
        pad: u32_of(args.padding, "padding")?,
        has_bias: bias.is_some() as u32,
        first_group: 0,
        row: u32_of(row, "row")?,
        _pad: [0; 3],
    };
    // Output channels are the rows of this product.
    let tile = tile_shape(cout, ho * wo, b);
    let epilogue_overrides = [
        ("W_F16", is_f16(Some(w))),
        ("BIAS_F16", is_f16(bias)),
        ("SCALE_SHIFT", epilogue.scale_shift.is_some() as u32 as f64),
        ("SILU", epilogue.silu as u32 as f64),
        ("RESIDUAL", epilogue.residual.is_some() as u32 as f64),
    ];
    let overrides = [&tile.overrides()[..], &epilogue_overrides].concat();
    let pixels = u32_of(ho * wo, "output pixels")?;
    let pixel_groups = pixels.div_ceil(tile.cols());
    let (cout_groups, batch) = (params.cout.div_ceil(tile.rows()), u32_of(b, "batch")?);
    let per_dispatch = groups_per_dispatch(dev, pixel_groups, tile.cols() as u64 * cout as u64 * (cin * kh * kw) as u64 * b as u64);
    for first_group in (0..pixel_groups).step_by(per_dispatch as usize) {
        let part = Params { first_group, ..params };
        let groups = [per_dispatch.min(pixel_groups - first_group), cout_groups, batch];
        let table = or_placeholder(epilogue.scale_shift.map(|(t, _)| t), x);
        dev.dispatch(Kernel::Conv2d, &overrides, &part, &[x, w, or_placeholder(bias, w), table, or_placeholder(epilogue.residual, x), &out], groups)?;
    }
    Ok(out)
}
