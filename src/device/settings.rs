//! What a GPU device may use and how its kernels cut their work: the adapter features
//! it may use ([`GpuOptions`]), the matrix kernels' tiles, and the work-size settings
//! `bench` and the tests change ([`Tuning`]).

/// What the GPU backend may use of the adapter's optional features.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GpuOptions {
    /// Subgroup operations in the reduction kernels (norms, softmax) where the adapter
    /// offers them: natively on Vulkan, Metal and DX12; in the browser where WebGPU offers
    /// `subgroups` and WGSL `subgroup_id` (Chrome 144+). Off, every adapter runs the
    /// workgroup-memory variant (the same results to rounding). Default: on.
    pub subgroups: bool,
    /// Which adapters run the matrix products with f16 weights on cooperative matrices
    /// (tensor cores): natively, where the adapter offers wgpu's
    /// EXPERIMENTAL_COOPERATIVE_MATRIX with a 16 x 16 x 16 or 8 x 8 x 8 f16 -> f32
    /// configuration, f16 shaders and subgroups of one fixed size (NVIDIA through Vulkan;
    /// Mesa 26's lavapipe, a software one). Such a product rounds its activations to f16
    /// (sums stay f32), within the f16 weights' parity tolerance. Default: hardware
    /// adapters (a software one emulates the matrices more slowly than it runs the f32
    /// kernel: Mesa 26.2's lavapipe, `bench`, a 1024^3 product with f16 weights at 2.9
    /// against 4.5 GFLOP/s).
    pub cooperative_matrix: Adapters,
    /// Which adapters run the products and convolutions cooperative matrices would take
    /// on f16 workgroup tiles instead, where they offer f16 shaders (WebGPU's
    /// `shader-f16`, wgpu's SHADER_F16) and no cooperative matrices: half the workgroup memory and half the bytes read from it per
    /// multiply-add; the activations rounded to f16 on their way in, sums f32 (the
    /// cooperative matrices' rounding). Default: hardware adapters (on lavapipe the f16
    /// conversions cost more than they save).
    pub shader_f16: Adapters,
}

impl Default for GpuOptions {
    fn default() -> Self {
        GpuOptions { subgroups: true, cooperative_matrix: Adapters::Hardware, shader_f16: Adapters::Hardware }
    }
}

/// Which adapters use an optional kernel family ([`GpuOptions`]); products with f32
/// weights always stay on the f32 kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Adapters {
    /// None: those products stay on the f32 kernels.
    Off,
    /// Hardware adapters that offer what the family needs.
    Hardware,
    /// Any adapter that offers it (to test the kernels on lavapipe).
    Any,
}

impl Adapters {
    /// Whether an adapter that offers the family uses it (`software`: lavapipe, SwiftShader).
    pub fn allow(self, software: bool) -> bool {
        match self {
            Adapters::Off => false,
            Adapters::Hardware => !software,
            Adapters::Any => true,
        }
    }
}

/// The cooperative-matrix configuration the matrix products use: `size` x `size` x
/// `size` f16 inputs, f32 sums, on subgroups of `subgroup_size` invocations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CooperativeMatrix {
    pub size: u32,
    pub subgroup_size: u32,
}

/// How matmul_coop.wgsl and conv2d_coop.wgsl cut a product into workgroups:
/// `sg_rows` x `sg_cols` subgroups, each accumulating `acc_rows` x `acc_cols` matrices,
/// so a workgroup computes (`acc_rows` `sg_rows` S) x (`acc_cols` `sg_cols` S) outputs for
/// S x S matrices, walking K 2 S at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CooperativeTile {
    pub sg_rows: u32,
    pub sg_cols: u32,
    pub acc_rows: u32,
    pub acc_cols: u32,
}

impl CooperativeTile {
    /// 2 x 2 subgroups of 2 x 2 matrices: 64 x 64 outputs for S = 16.
    pub const SMALL: CooperativeTile = CooperativeTile { sg_rows: 2, sg_cols: 2, acc_rows: 2, acc_cols: 2 };
    /// 2 x 4 subgroups of 4 x 2 matrices: 128 x 128 outputs for S = 16, half the global
    /// reads of SMALL per multiply-add, and 8 products per 6 matrix loads from workgroup
    /// memory against SMALL's 4 per 4.
    pub const LARGE: CooperativeTile = CooperativeTile { sg_rows: 2, sg_cols: 4, acc_rows: 4, acc_cols: 2 };
    /// The tiles `bench` times (where they fit the device) and the kernel tests check.
    pub const CANDIDATES: [CooperativeTile; 6] = [
        Self::SMALL,
        Self::LARGE,
        CooperativeTile { sg_rows: 4, sg_cols: 2, acc_rows: 2, acc_cols: 4 },
        CooperativeTile { sg_rows: 2, sg_cols: 2, acc_rows: 4, acc_cols: 4 },
        CooperativeTile { sg_rows: 2, sg_cols: 4, acc_rows: 2, acc_cols: 2 },
        CooperativeTile { sg_rows: 2, sg_cols: 2, acc_rows: 2, acc_cols: 4 },
    ];

    /// Output rows (and columns) of one workgroup on `coop`'s matrices.
    pub fn rows(&self, coop: CooperativeMatrix) -> u32 {
        self.acc_rows * self.sg_rows * coop.size
    }

    pub fn cols(&self, coop: CooperativeMatrix) -> u32 {
        self.acc_cols * self.sg_cols * coop.size
    }

    pub fn invocations(&self, coop: CooperativeMatrix) -> u32 {
        self.sg_rows * self.sg_cols * coop.subgroup_size
    }

    /// The kernels' workgroup memory: the f16 A tile (rows by 2 S + 8), the f16 B tile
    /// (2 S by columns + 8) and an f32 S x S staging tile per subgroup.
    pub fn workgroup_bytes(&self, coop: CooperativeMatrix) -> u32 {
        let (s, k) = (coop.size, 2 * coop.size);
        let a = self.rows(coop) * (k + 8) * 2;
        let b = k * (self.cols(coop) + 8) * 2;
        (a.next_multiple_of(4) + b.next_multiple_of(4)) + self.sg_rows * self.sg_cols * s * s * 4
    }

    /// Whether the kernels can run this tile on `coop`'s matrices within `limits`: at most
    /// 32 values fetched per invocation and step, 16 accumulators and 4 rows or columns of
    /// them per subgroup (the shaders' MAX_FETCH, MAX_ACC, MAX_FRAGMENTS), a pixel per
    /// invocation of a column (conv2d_coop.wgsl: the columns divide the invocations).
    pub fn fits(&self, coop: CooperativeMatrix, max_invocations: u32, max_workgroup_bytes: u32) -> bool {
        let threads = self.invocations(coop);
        let k = 2 * coop.size;
        threads <= max_invocations
            && self.workgroup_bytes(coop) <= max_workgroup_bytes
            && (self.rows(coop) * k).div_ceil(threads) <= 32
            && (self.cols(coop) * k).div_ceil(threads) <= 32
            && self.acc_rows * self.acc_cols <= 16
            && self.acc_rows.max(self.acc_cols) <= 4
            && threads.is_multiple_of(self.cols(coop))
    }
}

impl std::fmt::Display for CooperativeTile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}x{} subgroups of {}x{} matrices", self.sg_rows, self.sg_cols, self.acc_rows, self.acc_cols)
    }
}

/// How the f32 kernels (matmul.wgsl, conv2d.wgsl: every product without cooperative
/// matrices) cut a product into workgroups: `wg_x` x `wg_y` invocations, each computing
/// (4 `mr`) x (4 `nr`) outputs in vec4 registers, K walked `tile_k` at a time through
/// workgroup memory (the kernels' overrides of the same names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct F32Tile {
    pub wg_x: u32,
    pub wg_y: u32,
    pub tile_k: u32,
    pub mr: u32,
    pub nr: u32,
}

impl F32Tile {
    /// 16 x 16 invocations of 4 x 4 outputs: 64 x 64.
    pub const SMALL: F32Tile = F32Tile { wg_x: 16, wg_y: 16, tile_k: 16, mr: 1, nr: 1 };
    /// 16 x 16 invocations of 4 x 8 outputs: 64 x 128.
    pub const WIDE: F32Tile = F32Tile { nr: 2, ..Self::SMALL };
    /// 16 x 16 invocations of 8 x 8 outputs: 128 x 128, four times SMALL's multiply-adds
    /// per load from workgroup memory, which it fills (16 KiB, WebGPU's default).
    pub const LARGE: F32Tile = F32Tile { mr: 2, nr: 2, ..Self::SMALL };
    /// The tiles `bench` times on the largest product and a UNet convolution (where they
    /// fit the device) and the kernel tests check: the three above, LARGE with half the K
    /// step (half the workgroup memory, so more workgroups may share a core), and 8 x 8
    /// outputs per invocation on other workgroup shapes.
    pub const CANDIDATES: [F32Tile; 7] = [
        Self::SMALL,
        Self::WIDE,
        Self::LARGE,
        F32Tile { tile_k: 8, ..Self::LARGE },
        F32Tile { wg_x: 16, wg_y: 8, ..Self::LARGE },
        F32Tile { wg_x: 32, wg_y: 8, tile_k: 8, ..Self::LARGE },
        F32Tile { wg_x: 8, wg_y: 32, tile_k: 8, ..Self::LARGE },
    ];

    /// Output rows (for a convolution, output channels) one workgroup computes.
    pub fn rows(&self) -> u32 {
        4 * self.mr * self.wg_y
    }

    /// Output columns (pixels) one workgroup computes.
    pub fn cols(&self) -> u32 {
        4 * self.nr * self.wg_x
    }

    pub fn invocations(&self) -> u32 {
        self.wg_x * self.wg_y
    }

    /// The kernels' two workgroup tiles of vec4s: K step by rows / 4 and by columns / 4.
    pub fn workgroup_bytes(&self) -> u32 {
        16 * self.tile_k * (self.rows() + self.cols()) / 4
    }

    /// Whether the kernels can run this tile within `limits`: 1 or 2 vec4 groups of rows
    /// and of columns per invocation, at most 4 vec4s of each operand fetched per
    /// invocation and step (MAX_FETCH), and the columns' vec4 groups dividing the
    /// invocations (conv2d.wgsl's gather).
    pub fn fits(&self, max_invocations: u32, max_workgroup_bytes: u32) -> bool {
        let threads = self.invocations();
        let (row_groups, col_groups) = (self.rows() / 4, self.cols() / 4);
        threads <= max_invocations
            && self.workgroup_bytes() <= max_workgroup_bytes
            && (1..=2).contains(&self.mr)
            && (1..=2).contains(&self.nr)
            && (row_groups * self.tile_k).div_ceil(threads) <= 4
            && (col_groups * self.tile_k).div_ceil(threads) <= 4
            && threads.is_multiple_of(col_groups)
    }

    /// The kernels' override constants for this tile.
    pub fn overrides(&self) -> [(&'static str, f64); 5] {
        [
            ("WG_X", self.wg_x as f64),
            ("WG_Y", self.wg_y as f64),
            ("TILE_K", self.tile_k as f64),
            ("MR", self.mr as f64),
            ("NR", self.nr as f64),
        ]
    }
}

impl std::fmt::Display for F32Tile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}x{} invocations of {}x{}, K step {}", self.wg_y, self.wg_x, 4 * self.mr, 4 * self.nr, self.tile_k)
    }
}

/// The most multiply-adds one dispatch of a convolution or attention does by default
/// ([`Tuning::max_macs_per_dispatch`]): 2^30 (2.1 GFLOP, 0.04 s at 50 GFLOP/s, a slow
/// integrated GPU's pace with these kernels), so that no dispatch runs for long (Windows
/// resets a GPU that does not answer for 2 s). The UNet's largest convolution, 128 to 64
/// channels 3 x 3 on a 512 x 512 tile, goes in 18 parts.
pub const MAX_MACS_PER_DISPATCH: u64 = 1 << 30;

/// The GPU kernels' work sizes, for `bench` and the tests: every user gets the
/// defaults, which the ops choose per call (see [`super::Device::tuning`], [`super::Device::set_tuning`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tuning {
    /// The tile every cooperative-matrix product and convolution uses (None: each chooses
    /// its own, [`crate::ops::cooperative_tile`]).
    pub cooperative_tile: Option<CooperativeTile>,
    /// The tile every product and convolution on the f32 kernels uses (None: each chooses
    /// its own, [`crate::ops::f32_tile`]).
    pub f32_tile: Option<F32Tile>,
    /// Convolutions and products on the f32 kernels with fewer than this many workgroups
    /// split their sums along K until they have about that many (`ops::k_slices`); None,
    /// the default: never. A large GPU runs a convolution or product of few workgroups
    /// (the UNet's lowest levels: 8 to 64 for a 64x64 image, their transformers' products
    /// 4 to 64) on a few of its cores; whether splitting pays there, and from how many
    /// workgroups, is still to be measured on one (`bench --split-k`).
    pub split_k_below: Option<usize>,
    /// A convolution or attention goes to the GPU in dispatches of at most this many
    /// multiply-adds each (blocks of its output); default [`MAX_MACS_PER_DISPATCH`], which
    /// keeps a dispatch short on a slow GPU but gives a large GPU parts of a few hundred
    /// workgroups (a 256x256 step's full-size convolutions go in 3 to 5 parts). Whether
    /// larger dispatches pay is for `bench --dispatch-macs` on a GPU to say.
    pub max_macs_per_dispatch: u64,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning { cooperative_tile: None, f32_tile: None, split_k_below: None, max_macs_per_dispatch: MAX_MACS_PER_DISPATCH }
    }
}

impl Tuning {
    /// The CPU backend's, which it cannot change: no such kernels, each kernel computed
    /// whole.
    pub const CPU: Tuning = Tuning { cooperative_tile: None, f32_tile: None, split_k_below: None, max_macs_per_dispatch: u64::MAX };
}
