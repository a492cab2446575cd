//! The one registry of WGSL kernels: each kernel is one file under `shaders/`, embedded
//! at compile time. Every file is plain WGSL (sizes arrive in a `Params` uniform, tile and
//! workgroup sizes are `override` constants). A kernel's module may include shared
//! parts, files that are not kernels themselves (see [`Kernel::parts`]): the reduction
//! that norms and softmax call (`workgroup_sum` / `workgroup_max`, the subgroup variant
//! where the device has subgroups), the register tile of matmul and convolution, the
//! Params of the two GroupNorm passes. WGSL declarations may come in any order, so a part
//! may call functions its kernel defines.

use std::borrow::Cow;

macro_rules! registry {
    ($(#[$doc:meta])* $kind:ident { $($name:ident => $path:literal),* $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $kind { $($name),* }

        impl $kind {
            pub const ALL: &'static [$kind] = &[$($kind::$name),*];

            /// Path of the source file, relative to `shaders/`.
            pub fn path(self) -> &'static str {
                match self { $($kind::$name => $path),* }
            }

            /// The file's own text.
            pub fn file_source(self) -> &'static str {
                match self { $($kind::$name => include_str!(concat!("../shaders/", $path))),* }
            }
        }
    };
}

registry! {
    /// The kernels: one compute entry point `main` each.
    Kernel {
        Matmul => "matmul/matmul.wgsl",
        Conv2d => "conv/conv2d.wgsl",
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
}

registry! {
    /// The files kernels' modules include besides their own.
    Part {
        WorkgroupReduce => "reduce/workgroup_reduce.wgsl",
        WorkgroupReduceSubgroups => "reduce/workgroup_reduce_subgroups.wgsl",
        RegisterTile => "matmul/register_tile.wgsl",
        GroupNormParams => "norm/group_norm_params.wgsl",
    }
}

impl Kernel {
    /// The folder of the source file: the kernel family the bench's profile adds up
    /// (conv, matmul, attention, norm, elementwise, layout, reduce, sde).
    pub fn family(self) -> &'static str {
        self.path().split('/').next().unwrap_or("")
    }

    /// Whether the kernel reduces across its workgroup (its module starts with a reduction
    /// part).
    pub fn reduces(self) -> bool {
        matches!(self, Kernel::LayerNorm | Kernel::GroupNorm | Kernel::GroupNormStats | Kernel::Softmax)
    }

    /// The parts of the kernel's module besides its file, in order: the reduction (with
    /// subgroup operations when `subgroups`) where it reduces, then what it shares with
    /// another kernel.
    pub fn parts(self, subgroups: bool) -> Vec<Part> {
        let reduction = self.reduces().then_some(if subgroups { Part::WorkgroupReduceSubgroups } else { Part::WorkgroupReduce });
        let shared = match self {
            Kernel::Matmul | Kernel::Conv2d => Some(Part::RegisterTile),
            Kernel::GroupNorm | Kernel::GroupNormStats => Some(Part::GroupNormParams),
            _ => None,
        };
        reduction.into_iter().chain(shared).collect()
    }

    /// The WGSL module of the kernel: its file, then its parts. (Parts after the file:
    /// naga 30 fails to specialise a module whose named overrides follow an array sized
    /// by an override expression, such as the register tile's workgroup tiles, and WGSL
    /// does not care about the order.)
    pub fn source(self, subgroups: bool) -> Cow<'static, str> {
        let parts = self.parts(subgroups);
        if parts.is_empty() {
            return Cow::Borrowed(self.file_source());
        }
        let text: Vec<&str> = std::iter::once(self.file_source()).chain(parts.iter().map(|p| p.file_source())).flat_map(|t| [t, "\n"]).collect();
        Cow::Owned(text.concat())
    }
}
