//! The one registry of WGSL kernels: each variant is one file under `shaders/`, embedded
//! at compile time. Every file is plain WGSL (sizes arrive in a `Params` uniform, tile and
//! workgroup sizes are `override` constants), so each can be read and validated alone.

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

            pub fn source(self) -> &'static str {
                match self { $(Kernel::$name => include_str!(concat!("../shaders/", $path))),* }
            }
        }
    };
}

kernels! {
    Matmul => "matmul/matmul.wgsl",
    Conv2d => "conv/conv2d.wgsl",
    LayerNorm => "norm/layer_norm.wgsl",
    ChannelLayerNorm => "norm/channel_layer_norm.wgsl",
    GroupNorm => "norm/group_norm.wgsl",
    Softmax => "reduce/softmax.wgsl",
    Activation => "elementwise/activation.wgsl",
    Binary => "elementwise/binary.wgsl",
    Concat => "layout/concat.wgsl",
    UpsampleNearest => "layout/upsample_nearest.wgsl",
    PadCrop => "layout/pad_crop.wgsl",
    Transpose => "layout/transpose.wgsl",
    GatherRows => "layout/gather_rows.wgsl",
    FlashAttention => "attention/flash_attention.wgsl",
    SdeUpdate => "sde/update.wgsl",
}
