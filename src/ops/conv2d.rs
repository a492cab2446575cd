use std::ops::Range;


use super::matmul::{cooperative_overrides, cooperative_tile, f32_tile, runs_on_f16_tiles, runs_on_cooperative_matrices};
use super::{expect_len, expect_rank, groups_per_dispatch, is_f16, k_slices, or_placeholder, u32_of};
use crate::error::{shape_err, Result};
use crate::device::{DType, Device, Tensor};
use crate::kernels::{Kernel, Conv2dParams};



/// What a convolution reads, gathered by its kernel instead of passes of their own:
/// `torch.cat([x, second], 1)` where `second` is given, then, with `upsample`, that image
/// nearest-upsampled 2x (`nn.Upsample(scale_factor=2, mode="nearest")`).
#[derive(Clone, Copy)]
pub struct ConvInput<'a> {
    pub x: &'a Tensor,
    pub second: Option<&'a Tensor>,
    pub upsample: bool,
}

impl<'a> ConvInput<'a> {
    /// The channels of `x` then those of `second`.
    pub fn concat(x: &'a Tensor, second: &'a Tensor) -> Self {
        ConvInput { x, second: Some(second), upsample: false }
    }

    /// `x` nearest-upsampled 2x.
    pub fn upsampled(x: &'a Tensor) -> Self {
        ConvInput { x, second: None, upsample: true }
    }

    /// The tensor itself when the input is just one tensor as stored.
    pub fn plain(&self) -> Option<&'a Tensor> {
        (self.second.is_none() && !self.upsample).then_some(self.x)
    }

    /// [batch, channels, height, width] of the input the convolution sees.
    fn shape(&self) -> Result<[usize; 4]> {
        let x = self.x;
        expect_rank(x, 4, "conv2d input")?;
        x.expect_f32("conv2d input")?;
        let mut c = x.dim(1);
        if let Some(s) = self.second {
            expect_rank(s, 4, "conv2d second input")?;
            s.expect_f32("conv2d second input")?;
            if s.dim(0) != x.dim(0) || s.shape()[2..] != x.shape()[2..] {
                return shape_err!("conv2d: the inputs to concatenate need equal batch and size, got {:?} and {:?}", x.shape(), s.shape());
            }
            c += s.dim(1);
        }
        let f = if self.upsample { 2 } else { 1 };
        Ok([x.dim(0), c, f * x.dim(2), f * x.dim(3)])
    }
}

impl<'a> From<&'a Tensor> for ConvInput<'a> {
    fn from(x: &'a Tensor) -> Self {
        ConvInput { x, second: None, upsample: false }
    }
}

/// What a convolution applies to its output before writing it, in this order (after the
/// bias): the ResBlock's time conditioning `v * (scale + 1) + shift` with `scale, shift =
/// table[row + b].chunk(2)` (the table is [rows, 2 Cout]), SiLU, then adding `residual`
/// and then `second_residual` (tensors of the output's shape; the second only with the
/// first: a SpatialTransformer level's inner and outer residual). Fused so that no step
/// is a pass of its own.
#[derive(Default, Clone, Copy)]
pub struct Epilogue<'a> {
    pub scale_shift: Option<(&'a Tensor, usize)>,
    pub silu: bool,
    pub residual: Option<&'a Tensor>,
    pub second_residual: Option<&'a Tensor>,
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

/// [`conv2d`] of a [`ConvInput`] (a tensor, a concatenation, an upsampled image),
/// followed by an [`Epilogue`], in one kernel.
pub fn conv2d_with<'a>(dev: &Device, input: impl Into<ConvInput<'a>>, w: &Tensor, bias: Option<&Tensor>, args: Conv2dArgs, epilogue: Epilogue) -> Result<Tensor> {
    expect_rank(w, 4, "conv2d weight")?;
    conv2d_channels(dev, input, w, bias, args, epilogue, 0..w.dim(0))
}

/// [`conv2d_with`] computing only the output channels `channels` of `w` and `bias`: one
/// part of a stacked projection (LinearAttention's q, k, v) where all of it would not fit
/// one buffer.
pub fn conv2d_channels<'a>(dev: &Device, input: impl Into<ConvInput<'a>>, w: &Tensor, bias: Option<&Tensor>, args: Conv2dArgs, epilogue: Epilogue, channels: Range<usize>) -> Result<Tensor> {
    let input = input.into();
    let x = input.x;
    let [b, cin, h, wd] = input.shape()?;
    expect_rank(w, 4, "conv2d weight")?;
    let [wcout, wcin, kh, kw] = [w.dim(0), w.dim(1), w.dim(2), w.dim(3)];
    if channels.start > channels.end || channels.end > wcout {
        return shape_err!("conv2d: output channels {channels:?} of weight {:?}", w.shape());
    }
    let cout = channels.len();
    if wcin != cin {
        return shape_err!("conv2d: input [{b}, {cin}, {h}, {wd}] has {cin} channels but weight {:?} expects {wcin}", w.shape());
    }
    if args.stride == 0 || h + 2 * args.padding < kh || wd + 2 * args.padding < kw {
        return shape_err!("conv2d: kernel {kh}x{kw} (stride {}, padding {}) does not fit input [{b}, {cin}, {h}, {wd}]", args.stride, args.padding);
    }
    if let Some(bias) = bias {
        expect_len(bias, wcout, "conv2d bias")?;
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
    if epilogue.second_residual.is_some() && epilogue.residual.is_none() {
        return shape_err!("conv2d: a second residual needs a first");
    }
    for r in epilogue.residual.iter().chain(&epilogue.second_residual) {
        r.expect_f32("conv2d residual")?;
        if r.shape() != [b, cout, ho, wo] {
            return shape_err!("conv2d residual {:?} does not match the output [{b}, {cout}, {ho}, {wo}]", r.shape());
        }
    }
    let out = dev.empty(&[b, cout, ho, wo])?;
    let params = Conv2dParams {
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
        split: x.dim(1) as u32,
        up: input.upsample as u32,
        flags: [
            (is_f16(bias) != 0.0, Conv2dParams::BIAS_F16),
            (epilogue.scale_shift.is_some(), Conv2dParams::SCALE_SHIFT),
            (epilogue.silu, Conv2dParams::SILU),
            (epilogue.residual.is_some(), Conv2dParams::RESIDUAL),
            (epilogue.second_residual.is_some(), Conv2dParams::RESIDUAL2),
        ]
        .iter()
        .filter(|(on, _)| *on)
        .fold(0, |flags, (_, flag)| flags | flag),
        first_cout: channels.start as u32,
        k_slices: 1,
        _pad: [0; 2],
    };
    // Output channels are the rows of this product. Only what the inner loop reads is
    // an override (each set is a pipeline to compile).
    let (kernel, overrides, rows, cols) = match dev.cooperative_matrix().filter(|_| runs_on_cooperative_matrices(dev, cout, w.dtype() == DType::F16Packed)) {
        Some(c) => {
            let tile = cooperative_tile(dev, cout, ho * wo, b);
            (Kernel::Conv2dCoop, cooperative_overrides(c, tile).to_vec(), tile.rows(c), tile.cols(c))
        }
        None => {
            let tile = f32_tile(dev, cout, ho * wo, b);
            let kernel = if runs_on_f16_tiles(dev, cout, w.dtype() == DType::F16Packed) { Kernel::Conv2dF16 } else { Kernel::Conv2d };
            (kernel, [&tile.overrides()[..], &[("W_F16", is_f16(Some(w)))]].concat(), tile.rows(), tile.cols())
        }
    };
    let pixels = u32_of(ho * wo, "output pixels")?;
    let pixel_groups = pixels.div_ceil(cols);
    let (cout_groups, batch) = (params.cout.div_ceil(rows), u32_of(b, "batch")?);
    let per_dispatch = groups_per_dispatch(dev, pixel_groups, cols as u64 * cout as u64 * (cin * kh * kw) as u64 * b as u64);
    let table = or_placeholder(epilogue.scale_shift.map(|(t, _)| t), x);
    let slices = match kernel {
        Kernel::Conv2d | Kernel::Conv2dF16 if per_dispatch == pixel_groups => k_slices(dev, [pixel_groups, cout_groups, batch], b * cout * ho * wo, cin * kh * kw),
        _ => 1,
    };
    if slices > 1 {
        // Each slice's partial sums into a plane of their own, then one dispatch adds them
        // up with the bias and applies the epilogue (see conv2d.wgsl).
        let partials = dev.empty(&[b * slices as usize, cout, ho, wo])?;
        let sums = Conv2dParams { has_bias: 0, flags: 0, k_slices: slices, ..params };
        dev.count_flops(2 * b * cout * cin * kh * kw * ho * wo);
        let buffers = [x, or_placeholder(input.second, x), w, w, x, x, x, &partials];
        dev.dispatch(kernel, &overrides, &sums, &buffers, [pixel_groups, cout_groups, batch * slices])?;
        let add = Conv2dParams { flags: params.flags | Conv2dParams::PARTIALS, k_slices: slices, ..params };
        let buffers = [&partials, &partials, w, or_placeholder(bias, w), table, or_placeholder(epilogue.residual, x), or_placeholder(epilogue.second_residual, x), &out];
        dev.dispatch(kernel, &overrides, &add, &buffers, [pixel_groups, cout_groups, batch])?;
        return Ok(out);
    }
    for first_group in (0..pixel_groups).step_by(per_dispatch as usize) {
        let part = Conv2dParams { first_group, ..params };
        let groups = [per_dispatch.min(pixel_groups - first_group), cout_groups, batch];
        let computed = (first_group + groups[0]).saturating_mul(cols).min(pixels) - first_group * cols;
        dev.count_flops(2 * b * cout * cin * kh * kw * computed as usize);
        let buffers = [x, or_placeholder(input.second, x), w, or_placeholder(bias, w), table, or_placeholder(epilogue.residual, x), or_placeholder(epilogue.second_residual, x), &out];
        dev.dispatch(kernel, &overrides, &part, &buffers, groups)?;
    }
    Ok(out)
}
