//! Where kernels run: a [`Device`] is either a GPU driven through wgpu (natively Vulkan,
//! Metal, DX12; WebGPU in the browser) or the CPU backend (`crate::cpu`).
//!
//! The seam between the two is [`Device::dispatch`]: every op in `crate::ops` checks its
//! shapes, allocates its output and packs the kernel's `Params` the same way for both;
//! the GPU records the dispatch of the WGSL kernel, the CPU runs the kernel's CPU twin on
//! the same parameters and buffers at once. Models and samplers are written once, over
//! `Device`.

mod future;
mod gpu;
mod pool;
mod tensor;
#[cfg(target_arch = "wasm32")]
mod web_subgroups;

pub use future::Callback;
#[cfg(target_arch = "wasm32")]
pub(crate) use future::yield_to_event_loop;
#[cfg(not(target_arch = "wasm32"))]
pub use future::block_on;
pub use pool::MemoryStats;
pub(crate) use tensor::Storage;
pub use tensor::{DType, Tensor};

use std::cell::Cell;
use std::rc::Rc;

use crate::cpu::CpuDevice;
use crate::error::{Error, Result};
use crate::shaders::Kernel;
pub use gpu::{DispatchTime, FamilyTime};
use gpu::GpuDevice;

/// What the adapter is and what it allows, for display and for choosing work sizes.
#[derive(Debug, Clone)]
pub struct AdapterInfo {
    pub name: String,
    /// The wgpu backend (Vulkan, Metal, Dx12, BrowserWebGpu, ...) or `cpu`.
    pub backend: String,
    pub device_type: String,
    pub driver: String,
    /// True for software GPU adapters (lavapipe, SwiftShader, WARP): expect CPU speed at
    /// best. False for the CPU backend itself, which is written for CPUs.
    pub is_software: bool,
    /// The limits the device was created with (WebGPU defaults, raised only for buffer
    /// sizes where the adapter offers more). The CPU backend keeps WebGPU's defaults, so
    /// that both backends choose the same tiles for the same image.
    pub limits: wgpu::Limits,
    /// Features the adapter offers (not all are enabled on the device).
    pub features: Vec<String>,
    /// The cooperative-matrix (tensor core) configurations the adapter offers, as
    /// `MxNxK in->accumulator` (empty without wgpu's EXPERIMENTAL_COOPERATIVE_MATRIX).
    pub cooperative_matrix: Vec<String>,
}

impl std::fmt::Display for AdapterInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Browsers hide the adapter's name; say what we know instead of printing nothing.
        let name = if self.name.is_empty() { "unnamed adapter" } else { &self.name };
        write!(f, "{name} ({}, {}", self.backend, self.device_type)?;
        if !self.driver.is_empty() {
            write!(f, ", {}", self.driver)?;
        }
        write!(f, ")")
    }
}

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

/// Which backend to open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceChoice {
    /// A hardware GPU when there is one; the CPU backend where there is no adapter or
    /// only a software one (lavapipe, SwiftShader), which the CPU backend outruns.
    Auto,
    /// The GPU adapter, whatever it is (software adapters included).
    Gpu,
    /// The CPU backend.
    Cpu,
}

impl DeviceChoice {
    pub fn parse(s: &str) -> Result<DeviceChoice> {
        match s {
            "auto" => Ok(DeviceChoice::Auto),
            "gpu" | "webgpu" => Ok(DeviceChoice::Gpu),
            "cpu" => Ok(DeviceChoice::Cpu),
            _ => Err(Error::Usage(format!("unknown device `{s}`: use auto, gpu or cpu"))),
        }
    }
}

#[derive(Clone)]
enum Backend {
    Gpu(GpuDevice),
    Cpu(CpuDevice),
}

/// A tensor's values on their way back: see [`Device::start_read`].
pub struct PendingRead(Readback);

enum Readback {
    Gpu(GpuDevice, gpu::GpuRead),
    /// The CPU backend's values, read at once.
    Done(Vec<f32>),
}

impl PendingRead {
    /// The values, once their copy is done; reports the first GPU error of the work
    /// recorded before [`Device::start_read`] (since the last mark, read or sync).
    pub async fn values(self) -> Result<Vec<f32>> {
        match self.0 {
            Readback::Gpu(g, read) => g.finish_read(read).await,
            Readback::Done(values) => {
                #[cfg(target_arch = "wasm32")]
                future::yield_to_event_loop().await;
                Ok(values)
            }
        }
    }
}

/// Work submitted to a device, to wait for later: see [`Device::mark`].
pub struct QueueMark(Option<(GpuDevice, gpu::GpuMark)>);

impl QueueMark {
    /// Waits for the work submitted before the mark (not for work submitted since) and
    /// reports the first GPU error of the work it marks (recorded since the last mark,
    /// read or sync). On the CPU backend the work is done (in the browser the event loop takes a
    /// turn, as in [`Device::sync`]).
    pub async fn wait(self) -> Result<()> {
        match self.0 {
            Some((g, mark)) => g.wait_for(mark).await,
            None => {
                #[cfg(target_arch = "wasm32")]
                future::yield_to_event_loop().await;
                Ok(())
            }
        }
    }
}

/// A device and everything needed to run kernels on it. Cheap to clone (shared).
/// Not `Send`: a device is driven from one thread (or the browser's worker); the CPU
/// backend uses threads of its own inside each kernel natively.
#[derive(Clone)]
pub struct Device {
    backend: Backend,
    /// Why this backend was chosen (for [`Device::open`]'s callers to show).
    reason: String,
    work: Rc<WorkCount>,
}

/// What [`Device::count_flops`] counts.
#[derive(Default)]
struct WorkCount {
    /// See [`Device::flops`].
    total: Cell<u64>,
    /// Counted for the next dispatch, which takes them (for a profile).
    next_dispatch: Cell<u64>,
}

impl Device {
    /// Opens the best GPU adapter: natively any wgpu backend (Vulkan, Metal, DX12, GL),
    /// in the browser WebGPU.
    pub async fn new() -> Result<Device> {
        Self::new_with(GpuOptions::default()).await
    }

    /// [`Device::new`] with what it may use of the adapter's optional features.
    pub async fn new_with(options: GpuOptions) -> Result<Device> {
        let gpu = GpuDevice::new(options).await?;
        Ok(Self::checked(gpu, "the GPU was asked for".into()).await)
    }

    /// The device of `gpu`, whose kernels for products with f16 weights (cooperative
    /// matrices, else f16 tiles, where it has them) first pass a check of exact results
    /// (`ops::f16_check`); where they fail it, they are not used (the next family runs:
    /// f16 tiles, then the f32 kernels) and `reason` says why.
    async fn checked(gpu: GpuDevice, reason: String) -> Device {
        let mut dev = Device { backend: Backend::Gpu(gpu.clone()), reason, work: Rc::default() };
        if dev.cooperative_matrix().is_some() {
            if let Err(why) = crate::ops::f16_check::check_f16_products(&dev).await {
                gpu.disable_cooperative_matrix();
                dev.reason += &format!("; its cooperative matrices failed the device's check ({why}), so they are not used");
            }
        }
        if crate::ops::runs_on_f16_tiles(&dev, 64, true) {
            if let Err(why) = crate::ops::f16_check::check_f16_products(&dev).await {
                gpu.disable_shader_f16();
                dev.reason += &format!("; its f16 tiles failed the device's check ({why}), so they are not used");
            }
        }
        dev.release_free_buffers();
        dev
    }

    /// [`Device::new`] for native callers that are not async.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn new_blocking() -> Result<Device> {
        block_on(Self::new())
    }

    /// The CPU backend (threads natively, SIMD in the browser).
    pub fn cpu() -> Device {
        Device { backend: Backend::Cpu(CpuDevice::new()), reason: "the CPU was asked for".into(), work: Rc::default() }
    }

    /// Opens the backend `choice` names; [`DeviceChoice::Auto`] takes a hardware GPU and
    /// falls back to the CPU backend, saying why in [`Device::reason`].
    pub async fn open(choice: DeviceChoice) -> Result<Device> {
        Self::open_with(choice, GpuOptions::default()).await
    }

    /// [`Device::open`] with what a GPU may use of the adapter's optional features.
    pub async fn open_with(choice: DeviceChoice, options: GpuOptions) -> Result<Device> {
        match choice {
            DeviceChoice::Gpu => Self::new_with(options).await,
            DeviceChoice::Cpu => Ok(Self::cpu()),
            DeviceChoice::Auto => match GpuDevice::new(options).await {
                Ok(gpu) if !gpu.info().is_software => {
                    let reason = format!("a hardware GPU adapter was found ({})", gpu.info());
                    Ok(Self::checked(gpu, reason).await)
                }
                Ok(gpu) => {
                    let reason = format!("the only GPU adapter is a software one ({}), slower than the CPU backend", gpu.info());
                    Ok(Device { reason, ..Self::cpu() })
                }
                Err(e) => Ok(Device { reason: e.to_string(), ..Self::cpu() }),
            },
        }
    }

    #[cfg(not(target_arch = "wasm32"))]
    pub fn open_blocking(choice: DeviceChoice) -> Result<Device> {
        block_on(Self::open(choice))
    }

    /// Why this backend runs (e.g. "no GPU adapter: ..."), for the user to see.
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// True for the CPU backend.
    pub fn is_cpu(&self) -> bool {
        matches!(self.backend, Backend::Cpu(_))
    }

    /// Whether the reduction kernels run with subgroup operations (see [`GpuOptions`];
    /// false on the CPU backend).
    pub fn subgroups(&self) -> bool {
        matches!(&self.backend, Backend::Gpu(g) if g.subgroups())
    }

    /// Whether the products and convolutions with f16 weights that are not on
    /// cooperative matrices run on f16 workgroup tiles (see [`GpuOptions::shader_f16`];
    /// never on the CPU backend).
    pub fn shader_f16(&self) -> bool {
        matches!(&self.backend, Backend::Gpu(g) if g.shader_f16())
    }

    /// The cooperative matrices the matrix products run on, if any (see [`GpuOptions`];
    /// none on the CPU backend and in the browser).
    pub fn cooperative_matrix(&self) -> Option<CooperativeMatrix> {
        match &self.backend {
            Backend::Gpu(g) => g.cooperative_matrix(),
            Backend::Cpu(_) => None,
        }
    }

    /// Makes every cooperative-matrix product and convolution use `tile` (None: each
    /// chooses its own, [`crate::ops::cooperative_tile`]), for `bench` and the tests.
    /// False (and nothing changed) where the device has no cooperative matrices or the
    /// tile does not fit it.
    pub fn force_cooperative_tile(&self, tile: Option<CooperativeTile>) -> bool {
        match &self.backend {
            Backend::Gpu(g) if self.cooperative_matrix().is_some() && tile.is_none_or(|t| self.cooperative_tile_fits(t)) => {
                g.force_cooperative_tile(tile);
                true
            }
            _ => false,
        }
    }

    /// Makes the convolutions and products on the f32 kernels with fewer than `workgroups`
    /// workgroups split their sums along K until they have about that many
    /// ([`crate::ops::k_slices`]); None, the default: never. A large GPU runs a convolution
    /// or product of few workgroups (the UNet's lowest levels: 8 to 64 for a 64x64 image,
    /// their transformers' products 4 to 64) on a few of its cores; whether
    /// splitting pays there, and from how many workgroups, is still to be measured on
    /// one (`bench --split-k`), so nothing splits unless asked. False (nothing changed)
    /// on the CPU backend, which has no such kernel.
    pub fn set_split_k_below(&self, workgroups: Option<usize>) -> bool {
        match &self.backend {
            Backend::Gpu(g) => {
                g.set_split_k_below(workgroups);
                true
            }
            Backend::Cpu(_) => false,
        }
    }

    /// See [`Device::set_split_k_below`].
    pub fn split_k_below(&self) -> Option<usize> {
        match &self.backend {
            Backend::Gpu(g) => g.split_k_below(),
            Backend::Cpu(_) => None,
        }
    }

    /// Makes a convolution or attention go to the GPU in dispatches of at most `macs`
    /// multiply-adds each (blocks of its output), instead of the default 2^30
    /// ([`crate::ops::MAX_MACS_PER_DISPATCH`], which keeps a dispatch short on a slow GPU but
    /// gives a large GPU parts of a few hundred workgroups: a 256x256 step's full-size
    /// convolutions go in 3 to 5 parts). Whether larger dispatches pay is for `bench
    /// --dispatch-macs` on a GPU to say. False (nothing changed) on the CPU backend, which
    /// computes each kernel whole.
    pub fn set_max_macs_per_dispatch(&self, macs: u64) -> bool {
        match &self.backend {
            Backend::Gpu(g) => {
                g.set_max_macs_per_dispatch(macs);
                true
            }
            Backend::Cpu(_) => false,
        }
    }

    /// See [`Device::set_max_macs_per_dispatch`]; unlimited on the CPU backend.
    pub fn max_macs_per_dispatch(&self) -> u64 {
        match &self.backend {
            Backend::Gpu(g) => g.max_macs_per_dispatch(),
            Backend::Cpu(_) => u64::MAX,
        }
    }

    /// The tile every cooperative product uses, if one was forced.
    pub fn forced_cooperative_tile(&self) -> Option<CooperativeTile> {
        match &self.backend {
            Backend::Gpu(g) => g.forced_cooperative_tile(),
            Backend::Cpu(_) => None,
        }
    }

    /// Makes every product and convolution on the f32 kernels use `tile` (None: each
    /// chooses its own, [`crate::ops::f32_tile`]), for `bench` and the tests. False (and
    /// nothing changed) on the CPU backend or where the tile does not fit the device.
    pub fn force_f32_tile(&self, tile: Option<F32Tile>) -> bool {
        match &self.backend {
            Backend::Gpu(g) if tile.is_none_or(|t| self.f32_tile_fits(t)) => {
                g.force_f32_tile(tile);
                true
            }
            _ => false,
        }
    }

    /// The tile every product on the f32 kernels uses, if one was forced.
    pub fn forced_f32_tile(&self) -> Option<F32Tile> {
        match &self.backend {
            Backend::Gpu(g) => g.forced_f32_tile(),
            Backend::Cpu(_) => None,
        }
    }

    /// Whether `tile` fits this device's limits (false on the CPU backend, which has no
    /// such kernels).
    pub fn f32_tile_fits(&self, tile: F32Tile) -> bool {
        match &self.backend {
            Backend::Gpu(g) => tile.fits(g.limits().max_compute_invocations_per_workgroup, g.limits().max_compute_workgroup_storage_size),
            Backend::Cpu(_) => false,
        }
    }

    /// Whether `tile` fits this device's cooperative matrices and limits.
    pub fn cooperative_tile_fits(&self, tile: CooperativeTile) -> bool {
        match (&self.backend, self.cooperative_matrix()) {
            (Backend::Gpu(g), Some(coop)) => {
                let l = g.limits();
                tile.fits(coop, l.max_compute_invocations_per_workgroup, l.max_compute_workgroup_storage_size)
            }
            _ => false,
        }
    }

    pub fn info(&self) -> &AdapterInfo {
        match &self.backend {
            Backend::Gpu(g) => g.info(),
            Backend::Cpu(c) => c.info(),
        }
    }

    pub fn limits(&self) -> &wgpu::Limits {
        &self.info().limits
    }

    /// The most bytes one tensor may hold: it must fit one buffer and one binding.
    pub fn max_tensor_bytes(&self) -> usize {
        let limits = self.limits();
        limits.max_storage_buffer_binding_size.min(limits.max_buffer_size) as usize
    }

    /// Kernels recorded (GPU) or run (CPU) since the device was opened: lets tests tell
    /// whether a call did any work at all.
    pub fn dispatch_count(&self) -> u64 {
        match &self.backend {
            Backend::Gpu(g) => g.dispatch_count(),
            Backend::Cpu(c) => c.dispatch_count(),
        }
    }

    /// Floating-point operations of the products, convolutions and attention recorded
    /// (GPU) or run (CPU) since the device was opened, two per multiply-add as PyTorch's
    /// FLOP counter counts them (a convolution as the direct sum, whatever the CPU
    /// backend's Winograd saves): the work a bench divides by the time.
    pub fn flops(&self) -> u64 {
        self.work.total.get()
    }

    /// Adds the work of the dispatch a launcher records next to [`Device::flops`] (and
    /// to its kernel family's in a profile).
    pub(crate) fn count_flops(&self, flops: usize) {
        let work = &self.work;
        work.total.set(work.total.get() + flops as u64);
        work.next_dispatch.set(work.next_dispatch.get() + flops as u64);
    }

    /// Bind groups built since the device was opened (the GPU keeps them per set of
    /// buffers and reuses them; the CPU backend builds none).
    pub fn bind_groups_built(&self) -> u64 {
        match &self.backend {
            Backend::Gpu(g) => g.bind_groups_built(),
            Backend::Cpu(_) => 0,
        }
    }

    /// Compute pipelines created since the device was opened (the CPU backend has none).
    pub fn pipelines_created(&self) -> u64 {
        match &self.backend {
            Backend::Gpu(g) => g.pipelines_created(),
            Backend::Cpu(_) => 0,
        }
    }

    /// Starts or stops timing each GPU dispatch with timestamp queries (the bench's
    /// profile; it slows the GPU down). False where there is nothing to time it with: the
    /// CPU backend, an adapter without timestamp queries.
    pub fn set_profiling(&self, on: bool) -> bool {
        match &self.backend {
            Backend::Gpu(g) => g.set_profiling(on),
            Backend::Cpu(_) => false,
        }
    }

    /// Every dispatch since profiling started or was last taken, in order, with its GPU
    /// time ([`FamilyTime::of`] adds them up per kernel family); None when not profiling.
    pub async fn take_profile(&self) -> Result<Option<Vec<DispatchTime>>> {
        match &self.backend {
            Backend::Gpu(g) => g.take_profile().await,
            Backend::Cpu(_) => Ok(None),
        }
    }

    /// Bytes held by tensors, waiting for reuse, and the peak (GPU memory, or host memory
    /// of the CPU backend's tensors).
    pub fn memory(&self) -> MemoryStats {
        match &self.backend {
            Backend::Gpu(g) => g.memory(),
            Backend::Cpu(c) => c.memory(),
        }
    }

    /// Starts a new peak-memory measurement from the current allocation.
    pub fn reset_peak_memory(&self) {
        match &self.backend {
            Backend::Gpu(g) => g.reset_peak_memory(),
            Backend::Cpu(c) => c.reset_peak_memory(),
        }
    }

    /// Why the GPU device was lost (a driver reset, a watchdog, [`Device::destroy`]), once
    /// it was; the models on it must be loaded again on a new device. Never for the CPU.
    pub fn lost(&self) -> Option<String> {
        match &self.backend {
            Backend::Gpu(g) => g.lost(),
            Backend::Cpu(_) => None,
        }
    }

    /// Loses the GPU device on purpose, for tests of what follows; the CPU backend has no
    /// device to lose.
    pub fn destroy(&self) -> Result<()> {
        match &self.backend {
            Backend::Gpu(g) => {
                g.destroy();
                Ok(())
            }
            Backend::Cpu(_) => Err(Error::Usage("the CPU backend has no GPU device to lose".into())),
        }
    }

    /// Frees the buffers the GPU pool keeps for reuse (the CPU backend keeps none).
    pub fn release_free_buffers(&self) {
        if let Backend::Gpu(g) = &self.backend {
            g.release_free_buffers();
        }
    }

    /// Submits pending work, waits for it, and reports the first error the device saw
    /// since the last sync. The CPU backend runs kernels at once: nothing to wait for (in
    /// the browser it lets the event loop take a turn here and in reads, as waiting for a
    /// GPU does, so that a worker sees aborts between steps and tiles).
    pub async fn sync(&self) -> Result<()> {
        match &self.backend {
            Backend::Gpu(g) => g.sync().await,
            Backend::Cpu(_) => {
                #[cfg(target_arch = "wasm32")]
                future::yield_to_event_loop().await;
                Ok(())
            }
        }
    }

    #[cfg(not(target_arch = "wasm32"))]
    pub fn sync_blocking(&self) -> Result<()> {
        block_on(self.sync())
    }

    /// Submits the work recorded so far and marks it, so that it can be waited for while
    /// more is recorded behind it ([`QueueMark::wait`]): the GPU then does not idle while
    /// the CPU records the next work. On the CPU backend the work is done already.
    pub fn mark(&self) -> QueueMark {
        QueueMark(match &self.backend {
            Backend::Gpu(g) => Some((g.clone(), g.mark())),
            Backend::Cpu(_) => None,
        })
    }

    /// Submits every pending GPU dispatch (no-op on the CPU).
    pub fn flush(&self) {
        if let Backend::Gpu(g) = &self.backend {
            g.flush();
        }
    }

    /// An uninitialised f32 tensor, for kernel outputs.
    pub fn empty(&self, shape: &[usize]) -> Result<Tensor> {
        match &self.backend {
            Backend::Gpu(g) => g.empty(shape),
            Backend::Cpu(c) => c.empty(shape),
        }
    }

    pub fn upload(&self, shape: &[usize], data: &[f32]) -> Result<Tensor> {
        check_len(shape, data.len())?;
        match &self.backend {
            Backend::Gpu(g) => g.upload(shape, data),
            Backend::Cpu(c) => c.upload(shape, DType::F32, bytemuck::cast_slice(data)),
        }
    }

    /// Overwrites an f32 tensor with `data`. Lets a loop refill the same tensor (the tiles
    /// of a tiled restore) instead of creating one per upload.
    pub fn write(&self, t: &Tensor, data: &[f32]) -> Result<()> {
        t.expect_f32("a written tensor")?;
        check_len(t.shape(), data.len())?;
        match &self.backend {
            Backend::Gpu(g) => g.write(t, data),
            Backend::Cpu(_) => t.cpu()?.write(data),
        }
    }

    /// `n` ones: kernels that need a constant vector (a sum as a product with ones) get
    /// it without an upload per call on the GPU.
    pub(crate) fn ones(&self, n: usize) -> Result<Tensor> {
        match &self.backend {
            Backend::Gpu(g) => g.ones(n),
            Backend::Cpu(c) => c.upload(&[n], DType::F32, &vec![1f32.to_bits(); n]),
        }
    }

    /// Uploads indices (token ids, row numbers).
    pub fn upload_u32(&self, shape: &[usize], data: &[u32]) -> Result<Tensor> {
        check_len(shape, data.len())?;
        match &self.backend {
            Backend::Gpu(g) => g.upload_u32(shape, data),
            Backend::Cpu(c) => c.upload(shape, DType::U32, data),
        }
    }

    /// Uploads f32 values rounded to f16 (weights).
    pub fn upload_f16(&self, shape: &[usize], data: &[f32]) -> Result<Tensor> {
        check_len(shape, data.len())?;
        let halves: Vec<half::f16> = data.iter().map(|&x| half::f16::from_f32(x)).collect();
        self.upload_f16_bits(shape, &halves)
    }

    /// Uploads values already in f16 (as stored in a checkpoint): on the GPU packed two per
    /// 32-bit word, on the CPU widened to f32 once here (the values stay f16's).
    pub fn upload_f16_bits(&self, shape: &[usize], data: &[half::f16]) -> Result<Tensor> {
        check_len(shape, data.len())?;
        match &self.backend {
            Backend::Gpu(g) => g.upload_f16_bits(shape, data),
            Backend::Cpu(c) => c.upload_f16(shape, data),
        }
    }

    /// Copies a tensor back as f32 (f16 tensors are widened, indices converted). On the
    /// GPU this submits pending work first, waits for it, and fails if any GPU error
    /// happened since the last mark, read or sync.
    pub async fn read(&self, t: &Tensor) -> Result<Vec<f32>> {
        self.start_read(t)?.values().await
    }

    /// Starts copying a tensor back ([`Device::read`] in two halves): pending work and
    /// the copy are submitted now, and [`PendingRead::values`] waits for that copy only,
    /// so that work submitted meanwhile keeps the GPU busy while the CPU waits.
    pub fn start_read(&self, t: &Tensor) -> Result<PendingRead> {
        Ok(PendingRead(match &self.backend {
            Backend::Gpu(g) => Readback::Gpu(g.clone(), g.start_read(t)?),
            Backend::Cpu(_) => Readback::Done(t.cpu()?.read(t.dtype(), t.numel())?),
        }))
    }

    #[cfg(not(target_arch = "wasm32"))]
    pub fn read_blocking(&self, t: &Tensor) -> Result<Vec<f32>> {
        block_on(self.read(t))
    }

    /// Runs one kernel: recorded into the GPU's pending batch, or run on the CPU now.
    ///
    /// Binding convention shared by every shader and its CPU twin: `@binding(0)` is the
    /// `Params` uniform, `@binding(1..)` the storage buffers in the order given here, the
    /// output last. `params` must be a `#[repr(C)]` struct of 32-bit scalars matching the
    /// shader's `struct Params`.
    pub(crate) fn dispatch<P: bytemuck::Pod>(
        &self,
        kernel: Kernel,
        overrides: &[(&'static str, f64)],
        params: &P,
        buffers: &[&Tensor],
        workgroups: [u32; 3],
    ) -> Result<()> {
        let flops = self.work.next_dispatch.take();
        // Both backends refuse what a GPU under WebGPU's limits could not dispatch.
        let max = self.limits().max_compute_workgroups_per_dimension;
        if workgroups.iter().any(|&w| w > max) {
            return Err(Error::TooLarge(format!(
                "{} needs {workgroups:?} workgroups, more than the {max} per dimension this device allows",
                kernel.path()
            )));
        }
        match &self.backend {
            Backend::Gpu(g) => g.dispatch(kernel, overrides, params, buffers, workgroups, flops),
            Backend::Cpu(c) => c.run(kernel, overrides, bytemuck::bytes_of(params), buffers, workgroups),
        }
    }
}

pub(crate) fn check_len(shape: &[usize], len: usize) -> Result<()> {
    let n: usize = shape.iter().product();
    if n != len {
        return Err(Error::Shape(format!("shape {shape:?} has {n} elements but {len} values were given")));
    }
    Ok(())
}
