//! Each kernel's `Params` uniform as the Rust side packs it: defined once, for the ops
//! that dispatch the WGSL kernel and for the CPU backend's twin of it. A test reads each
//! kernel's WGSL `Params` struct through naga and checks that its members have the Rust
//! fields' names (padding aside), types and offsets, and that the sizes agree.

use bytemuck::{Pod, Zeroable};

#[cfg(all(test, not(target_arch = "wasm32")))]
use super::Kernel;

/// A `#[repr(C)]` Pod struct of 32-bit fields, and (for the layout test) the kernels
/// that read it and each field's name, offset and type.
macro_rules! params {
    ($(#[$meta:meta])* $name:ident for $($kernel:ident),+ { $($(#[$fmeta:meta])* $field:ident: $ty:ty),* $(,)? }) => {
        $(#[$meta])*
        #[repr(C)]
        #[derive(Clone, Copy, Pod, Zeroable)]
        pub(crate) struct $name { $($(#[$fmeta])* pub(crate) $field: $ty),* }

        #[cfg(all(test, not(target_arch = "wasm32")))]
        impl $name {
            const LAYOUT: Layout = Layout {
                name: stringify!($name),
                kernels: &[$(Kernel::$kernel),+],
                size: std::mem::size_of::<$name>(),
                fields: &[$((stringify!($field), std::mem::offset_of!($name, $field), stringify!($ty))),*],
            };
        }
    };
}

params! {
    ActivationParams for Activation {
        n: u32,
        d: u32,
        _pad: [u32; 2],
    }
}

params! {
    AttentionParams for FlashAttention {
        nq: u32,
        nk: u32,
        /// The first query block of this dispatch (long attention goes in several).
        first_group: u32,
        causal: u32,
        q_off: u32,
        q_sb: u32,
        q_row: u32,
        scale: f32,
        k_off: u32,
        k_sb: u32,
        k_row: u32,
        heads: u32,
        v_off: u32,
        v_sb: u32,
        v_row: u32,
        _pad: u32,
    }
}

params! {
    BinaryParams for Binary {
        n: u32,
        b_len: u32,
        b_inner: u32,
        _pad: u32,
    }
}

params! {
    ChannelLayerNormParams for ChannelLayerNorm {
        batch: u32,
        c: u32,
        hw: u32,
        eps: f32,
    }
}

params! {
    ConcatParams for Concat {
        n: u32,
        c1: u32,
        c2: u32,
        hw: u32,
    }
}

params! {
    Conv2dParams for Conv2d, Conv2dCoop, Conv2dF16 {
        cin: u32,
        h: u32,
        w: u32,
        cout: u32,
        ho: u32,
        wo: u32,
        kh: u32,
        kw: u32,
        stride: u32,
        pad: u32,
        has_bias: u32,
        /// The first block of output pixels of this dispatch (a large convolution goes in
        /// several).
        first_group: u32,
        /// The time conditioning's row for the first image of the batch (see [`Epilogue`](crate::ops::Epilogue)).
        row: u32,
        /// Channels read from the first input (`cin` unless it is a [`ConvInput::concat`](crate::ops::ConvInput::concat)).
        split: u32,
        /// The input upsampling's log2 (1 for a [`ConvInput::upsampled`](crate::ops::ConvInput::upsampled), else 0).
        up: u32,
        /// [`Self::BIAS_F16`] and the [`Epilogue`](crate::ops::Epilogue)'s steps.
        flags: u32,
        /// The weight's (and bias's) first output channel computed: output channel `o` is the
        /// weight's `first_cout + o` (see `ops::conv2d_channels`).
        first_cout: u32,
        /// The slices K is split into (1: not split; see `ops::k_slices`).
        k_slices: u32,
        _pad: [u32; 2],
    }
}
impl Conv2dParams {
    pub(crate) const BIAS_F16: u32 = 1;
    pub(crate) const SCALE_SHIFT: u32 = 2;
    pub(crate) const SILU: u32 = 4;
    pub(crate) const RESIDUAL: u32 = 8;
    pub(crate) const RESIDUAL2: u32 = 16;
    /// The dispatch adding the partial sums of K's slices (bound as the input) to the bias.
    pub(crate) const PARTIALS: u32 = 32;

    pub(crate) fn has(&self, flag: u32) -> bool {
        self.flags & flag != 0
    }
}

params! {
    GatherRowsParams for GatherRows {
        n: u32,
        c: u32,
        table_rows: u32,
        _pad: u32,
    }
}

params! {
    GroupNormParams for GroupNorm, GroupNormStats {
        batch: u32,
        c: u32,
        hw: u32,
        groups: u32,
        eps: f32,
        has_affine: u32,
        silu: u32,
        /// Values per chunk and chunks per group (1: the whole group in one workgroup).
        chunk: u32,
        chunks: u32,
        _pad: [u32; 3],
    }
}

params! {
    LayerNormParams for LayerNorm {
        rows: u32,
        c: u32,
        eps: f32,
        has_affine: u32,
    }
}

params! {
    MatmulParams for Matmul, MatmulCoop, MatmulF16 {
        m: u32,
        n: u32,
        k: u32,
        has_bias: u32,
        a_off: u32,
        a_sb: u32,
        a_sm: u32,
        a_sk: u32,
        b_off: u32,
        b_sb: u32,
        b_sk: u32,
        b_sn: u32,
        c_off: u32,
        c_sb: u32,
        c_sm: u32,
        alpha: f32,
        /// Matrices per group: the grid's z is group * per_group + index in the group.
        per_group: u32,
        a_sg: u32,
        b_sg: u32,
        c_sg: u32,
        /// [`Self::RESIDUAL`], [`Self::PARTIALS`].
        flags: u32,
        /// The slices K is split into (1: not split; see `ops::k_slices`).
        k_slices: u32,
    }
}
impl MatmulParams {
    pub(crate) const RESIDUAL: u32 = 1;
    /// Adds the `k_slices` planes of partial sums bound as A (see matmul.wgsl).
    pub(crate) const PARTIALS: u32 = 2;

    pub(crate) fn has(&self, flag: u32) -> bool {
        self.flags & flag != 0
    }
}

params! {
    PadCropParams for PadCrop {
        n: u32,
        h: u32,
        w: u32,
        ho: u32,
        wo: u32,
        _pad: [u32; 3],
    }
}

params! {
    SdeUpdateParams for SdeUpdate {
        n: u32,
        seed_lo: u32,
        seed_hi: u32,
        stream: u32,
        a: f32,
        b: f32,
        c: f32,
        d: f32,
    }
}

params! {
/// softmax.wgsl's two blocks: `a_*` rows one per invocation (strided), `b_*` rows one per
/// workgroup (contiguous); `a_groups` workgroups go to block a.
    SoftmaxParams for Softmax {
        a_outer: u32,
        a_dim: u32,
        a_inner: u32,
        a_in: u32,
        a_out: u32,
        b_outer: u32,
        b_dim: u32,
        b_inner: u32,
        b_in: u32,
        b_out: u32,
        a_groups: u32,
        _pad: u32,
    }
}

params! {
    TransposeParams for Transpose {
        rows: u32,
        cols: u32,
        _pad: [u32; 2],
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
struct Layout {
    name: &'static str,
    kernels: &'static [Kernel],
    size: usize,
    /// (name, byte offset, Rust type)
    fields: &'static [(&'static str, usize, &'static str)],
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;

    const ALL: [Layout; 14] = [
        ActivationParams::LAYOUT,
        AttentionParams::LAYOUT,
        BinaryParams::LAYOUT,
        ChannelLayerNormParams::LAYOUT,
        ConcatParams::LAYOUT,
        Conv2dParams::LAYOUT,
        GatherRowsParams::LAYOUT,
        GroupNormParams::LAYOUT,
        LayerNormParams::LAYOUT,
        MatmulParams::LAYOUT,
        PadCropParams::LAYOUT,
        SdeUpdateParams::LAYOUT,
        SoftmaxParams::LAYOUT,
        TransposeParams::LAYOUT,
    ];

    /// The WGSL `Params` struct's members, all 32-bit scalars (an array member fails the
    /// test): (name, offset, type).
    fn wgsl_words(kernel: Kernel) -> (Vec<(String, usize, &'static str)>, usize) {
        let src = kernel.source(false, 16);
        let module = naga::front::wgsl::parse_str(&src).unwrap_or_else(|e| panic!("{}: {}", kernel.path(), e.emit_to_string(&src)));
        let (_, ty) = module.types.iter().find(|(_, t)| t.name.as_deref() == Some("Params")).unwrap_or_else(|| panic!("{}: no struct Params", kernel.path()));
        let naga::TypeInner::Struct { members, span } = &ty.inner else { panic!("{}: Params is not a struct", kernel.path()) };
        let word = |inner: &naga::TypeInner| match inner {
            naga::TypeInner::Scalar(naga::Scalar { kind: naga::ScalarKind::Uint, width: 4 }) => "u32",
            naga::TypeInner::Scalar(naga::Scalar { kind: naga::ScalarKind::Float, width: 4 }) => "f32",
            other => panic!("{}: a Params member of type {other:?}", kernel.path()),
        };
        let words = members
            .iter()
            .map(|m| (m.name.clone().unwrap_or_default(), m.offset as usize, word(&module.types[m.ty].inner)))
            .collect();
        (words, *span as usize)
    }

    /// The Rust fields flattened the same way (`[u32; n]` padding as n words).
    fn rust_words(layout: &Layout) -> Vec<(String, usize, &'static str)> {
        let mut words = Vec::new();
        for &(name, offset, ty) in layout.fields {
            match ty {
                "u32" | "f32" => words.push((name.to_string(), offset, ty)),
                _ => {
                    let n: usize = ty.trim_start_matches("[u32;").trim_end_matches(']').trim().parse().unwrap_or_else(|_| panic!("{}.{name}: type {ty}", layout.name));
                    words.extend((0..n).map(|i| (name.to_string(), offset + 4 * i, "u32")));
                }
            }
        }
        words
    }

    #[test]
    fn every_kernels_params_match_its_wgsl_struct() {
        let mut covered = Vec::new();
        for layout in &ALL {
            let rust = rust_words(layout);
            for &kernel in layout.kernels {
                covered.push(kernel);
                let (wgsl, size) = wgsl_words(kernel);
                let at = format!("{} in {}", layout.name, kernel.path());
                assert_eq!(size, layout.size, "{at}: WGSL {size} bytes, Rust {}", layout.size);
                assert_eq!(wgsl.len(), rust.len(), "{at}: WGSL {wgsl:?}\nRust {rust:?}");
                for (w, r) in wgsl.iter().zip(&rust) {
                    // Padding may be named differently on each side.
                    let names_agree = w.0 == r.0 || (w.0.starts_with('_') && r.0.starts_with('_'));
                    assert!(names_agree && w.1 == r.1 && w.2 == r.2, "{at}: WGSL member {w:?}, Rust field {r:?}");
                }
            }
        }
        for &kernel in Kernel::ALL {
            assert!(covered.contains(&kernel), "{}: no Rust Params declared for it", kernel.path());
        }
    }
}
