//! One launcher per kernel: each file checks shapes, allocates the output, packs the
//! kernel's `Params` (defined in `crate::kernels`) and records the dispatch.
//! Launchers never wait for the GPU; results are read with [`crate::Device::read`].

pub(crate) mod activation;
pub(crate) mod attention;
pub(crate) mod binary;
pub(crate) mod concat;
pub(crate) mod conv2d;
pub(crate) mod gather_rows;
pub(crate) mod group_norm;
pub(crate) mod layer_norm;
pub(crate) mod channel_layer_norm;
pub(crate) mod matmul;
mod open;
pub(crate) mod pad_crop;
pub(crate) mod sde_update;
pub(crate) mod softmax;
pub(crate) mod transpose;

pub use activation::{geglu, gelu, silu};
pub use attention::{attention, Heads};
pub use binary::{add, mul, sub};
pub use channel_layer_norm::{channel_layer_norm, channel_layer_norm_with};
pub use concat::concat_channels;
pub use conv2d::{conv2d, conv2d_channels, conv2d_with, Conv2dArgs, ConvInput, Epilogue};
pub use gather_rows::gather_rows;
pub use group_norm::group_norm;
pub use layer_norm::layer_norm;
pub use matmul::{cooperative_tile, f32_tile, linear, linear_with, matmul, rounds_activations_to_f16, runs_on_f16_tiles, runs_on_cooperative_matrices};
pub(crate) use matmul::{gemm, Gemm, Operand};
pub use pad_crop::{crop, reflect_pad};
pub use sde_update::{sde_update, Noise};
pub use softmax::softmax;
pub(crate) use softmax::{softmax_rows, SoftmaxRows};
pub use transpose::transpose;

use crate::error::{Error, Result};
use crate::device::{DType, Device, Tensor};

/// Workgroup count for `n` items handled `per_group` at a time, spread over x and y so
/// that no dimension exceeds WebGPU's 65535 (kernels rebuild the linear index from
/// `workgroup_id` and `num_workgroups`).
pub(crate) fn grid_1d(n: usize, per_group: usize) -> Result<[u32; 3]> {
    const MAX: usize = 65535;
    let groups = n.div_ceil(per_group);
    if groups <= MAX {
        return Ok([groups as u32, 1, 1]);
    }
    let y = groups.div_ceil(MAX);
    if y > MAX {
        return Err(Error::TooLarge(format!("{n} elements need more than {MAX} x {MAX} workgroups")));
    }
    Ok([MAX as u32, y as u32, 1])
}

/// How many of a kernel's `groups` x-workgroups (each `macs_per_group` multiply-adds) one
/// dispatch takes: as many as [`Tuning::max_macs_per_dispatch`](crate::device::Tuning::max_macs_per_dispatch) allows (all on the CPU
/// backend, which computes the whole output in one call), at least one.
pub(crate) fn groups_per_dispatch(dev: &Device, groups: u32, macs_per_group: u64) -> u32 {
    (dev.tuning().max_macs_per_dispatch / macs_per_group.max(1)).clamp(1, groups.max(1) as u64) as u32
}

/// Slices of K, each at least this many K steps of the largest tile (16), so that a
/// slice's products outweigh writing and re-reading its partial sums.
const MIN_SLICE_K: usize = 8 * 16;

/// Most slices K is split into: the partial sums take this many times the output's memory.
const MAX_K_SLICES: usize = 16;

/// The slices a product or convolution on the f32 kernels, on the workgroup grid `grid`
/// (its z the batch), with `outputs` outputs and sums `kdim` long (a convolution's input
/// channels x taps), splits K into: 1 unless the device was asked to split
/// ([`Tuning::split_k_below`](crate::device::Tuning::split_k_below)); then enough to reach that many workgroups, with each slice
/// at least MIN_SLICE_K long, at most MAX_K_SLICES of them, their partial sums within one
/// binding and the split grid's z (batch by slice) within the device's limit. Each slice's
/// partial sums go to a plane of their own, and a second dispatch of the same pipeline (a
/// PARTIALS flag) adds them up before the bias and the epilogue.
pub fn k_slices(dev: &Device, grid: [u32; 3], outputs: usize, kdim: usize) -> u32 {
    let workgroups = grid.iter().map(|&g| g as usize).product::<usize>();
    match dev.tuning().split_k_below {
        Some(target) if workgroups < target => {
            let planes = dev.max_tensor_bytes() / (4 * outputs.max(1));
            let z_room = (dev.limits().max_compute_workgroups_per_dimension / grid[2].max(1)) as usize;
            (target.div_ceil(workgroups.max(1))).min(kdim / MIN_SLICE_K).min(planes).min(z_room).clamp(1, MAX_K_SLICES) as u32
        }
        _ => 1,
    }
}

/// The tensor to bind where a kernel's optional input is absent (the binding must exist;
/// a `has_*` flag in the params keeps the kernel from reading it).
pub(crate) fn or_placeholder<'a>(t: Option<&'a Tensor>, fallback: &'a Tensor) -> &'a Tensor {
    t.unwrap_or(fallback)
}

/// Override value telling a kernel that a weight operand is packed f16.
pub(crate) fn is_f16(t: Option<&Tensor>) -> f64 {
    match t.map(Tensor::dtype) {
        Some(DType::F16Packed) => 1.0,
        _ => 0.0,
    }
}

/// Values must fit the u32 fields of a kernel's params.
pub(crate) fn u32_of(n: usize, what: &str) -> Result<u32> {
    u32::try_from(n).map_err(|_| Error::TooLarge(format!("{what} = {n} does not fit in 32 bits")))
}

pub(crate) fn expect_rank(t: &Tensor, rank: usize, what: &str) -> Result<()> {
    if t.shape().len() != rank {
        return Err(Error::Shape(format!("{what} must have {rank} dimensions, got {:?}", t.shape())));
    }
    Ok(())
}

pub(crate) fn expect_len(t: &Tensor, len: usize, what: &str) -> Result<()> {
    if t.numel() != len {
        return Err(Error::Shape(format!("{what} must have {len} elements, got shape {:?}", t.shape())));
    }
    Ok(())
}
