//! The kernel interface: the one registry of WGSL kernels, each kernel's `Params`
//! (`params`) and the sampler kernel's host arithmetic ([`sde`]), shared by the GPU
//! launcher and the CPU backend's twins.
//!
//! Each kernel is one file under `shaders/`, embedded
//! at compile time. Every file is plain WGSL (sizes arrive in a `Params` uniform, tile and
//! workgroup sizes are `override` constants). The kernels that reduce across a workgroup
//! (norms, softmax) call `workgroup_sum` / `workgroup_max` and take a `Lanes` input: their
//! module is one of the two reduction files followed by the kernel's, the subgroup one
//! where the device has subgroups (see [`Kernel::source`]). The cooperative-matrix
//! kernels are written for 16 x 16 matrices and built for 8 x 8 ones where the adapter
//! offers those. The f16-tile kernels are the f32 product and convolution files built
//! with f16 workgroup tiles (WebGPU's shader-f16).

use std::borrow::Cow;

pub mod sde;
pub(crate) mod params;

pub(crate) use params::*;

/// The reduction files, relative to `shaders/`: the first works everywhere, the second
/// needs subgroups (wgpu's SUBGROUP feature natively, WebGPU's `subgroups` feature and
/// WGSL's `subgroup_id` language extension in the browser).
pub const REDUCTIONS: [&str; 2] = ["reduce/workgroup_reduce.wgsl", "reduce/workgroup_reduce_subgroups.wgsl"];
const REDUCTION_SOURCES: [&str; 2] = [
    include_str!("../../shaders/reduce/workgroup_reduce.wgsl"),
    include_str!("../../shaders/reduce/workgroup_reduce_subgroups.wgsl"),
];

/// What a browser needs at the top of a module that uses subgroups: the extension, and
/// the `subgroup_id` / `num_subgroups` built-ins (a language extension, Chrome 144+).
/// naga 30, which compiles the native modules, rejects both directives (it takes subgroup
/// operations without them), so only the browser's modules carry them.
const WEB_SUBGROUP_DIRECTIVES: &str = "enable subgroups;\nrequires subgroup_id;\n";

/// The line of matmul.wgsl and conv2d.wgsl that the f16-tile modules replace, and what
/// with (after `enable f16;`, which must come first).
const F32_TILE: &str = "alias Tile = vec4<f32>;\n";
const F16_TILE: &str = "alias Tile = vec4<f16>;\n";

macro_rules! kernels {
    ($($name:ident => $path:literal),* $(,)?) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Kernel { $($name),* }

        impl Kernel {
            pub const ALL: &'static [Kernel] = &[$(Kernel::$name),*];

            /// Path of the source file, relative to `shaders/`.
            pub fn path(self) -> &'static str {
                match self { $(Kernel::$name => $path),* }
            }

            /// The folder of the source file: the kernel family the bench's profile
            /// adds up (conv, matmul, attention, norm, elementwise, layout, reduce, sde).
            pub fn family(self) -> &'static str {
                self.path().split('/').next().unwrap_or("")
            }

            /// The kernel's own file.
            pub fn file_source(self) -> &'static str {
                match self { $(Kernel::$name => include_str!(concat!("../../shaders/", $path))),* }
            }
        }
    };
}

kernels! {
    Matmul => "matmul/matmul.wgsl",
    MatmulCoop => "matmul/matmul_coop.wgsl",
    Conv2d => "conv/conv2d.wgsl",
    Conv2dCoop => "conv/conv2d_coop.wgsl",
    MatmulF16 => "matmul/matmul.wgsl",
    Conv2dF16 => "conv/conv2d.wgsl",
    LayerNorm => "norm/layer_norm.wgsl",
    ChannelLayerNorm => "norm/channel_layer_norm.wgsl",
    GroupNorm => "norm/group_norm.wgsl",
    GroupNormStats => "norm/group_norm_stats.wgsl",
    Softmax => "reduce/softmax.wgsl",
    Activation => "elementwise/activation.wgsl",
    Binary => "elementwise/binary.wgsl",
    Concat => "layout/concat.wgsl",
    PadCrop => "layout/pad_crop.wgsl",
    Transpose => "layout/transpose.wgsl",
    GatherRows => "layout/gather_rows.wgsl",
    FlashAttention => "attention/flash_attention.wgsl",
    SdeUpdate => "sde/update.wgsl",
}

impl Kernel {
    /// Whether the kernel reduces across its workgroup (its module starts with a reduction
    /// file).
    pub fn reduces(self) -> bool {
        matches!(self, Kernel::LayerNorm | Kernel::GroupNorm | Kernel::GroupNormStats | Kernel::Softmax)
    }

    /// Whether the kernel needs cooperative matrices, f16 and subgroups (native only).
    pub fn cooperative(self) -> bool {
        matches!(self, Kernel::MatmulCoop | Kernel::Conv2dCoop)
    }

    /// Whether the kernel keeps its workgroup tiles in f16 (needs shader-f16): the f32
    /// kernel's file with f16 tiles and f32 sums, for products with f16 weights.
    pub fn f16_tiles(self) -> bool {
        matches!(self, Kernel::MatmulF16 | Kernel::Conv2dF16)
    }

    /// The WGSL module of the kernel: its file, after the reduction file it needs (the one
    /// with subgroup operations when `subgroups`, in wasm after the directives a browser
    /// requires); a cooperative kernel's with `coop_size` x `coop_size` matrices (16 or 8);
    /// an f16-tile kernel's with its tile type swapped.
    pub fn source(self, subgroups: bool, coop_size: u32) -> Cow<'static, str> {
        if self.f16_tiles() {
            let file = self.file_source();
            debug_assert!(file.contains(F32_TILE), "{} lacks the tile type's lines", self.path());
            return Cow::Owned(["enable f16;\n", &file.replacen(F32_TILE, F16_TILE, 1)].concat());
        }
        if self.cooperative() && coop_size != 16 {
            let mat = format!("coop_mat{coop_size}x{coop_size}<");
            return Cow::Owned(self.file_source().replace("coop_mat16x16<", &mat));
        }
        if !self.reduces() {
            return Cow::Borrowed(self.file_source());
        }
        let directives = if subgroups && cfg!(target_arch = "wasm32") { WEB_SUBGROUP_DIRECTIVES } else { "" };
        Cow::Owned([directives, REDUCTION_SOURCES[subgroups as usize], "\n", self.file_source()].concat())
    }
}
