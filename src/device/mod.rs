//! Where kernels run: a [`Device`] is either a GPU driven through wgpu (natively Vulkan,
//! Metal, DX12; WebGPU in the browser) or the CPU backend (`device::cpu`).
//!
//! The seam between the two is [`Device::dispatch`]: every op in `crate::ops` checks its
//! shapes, allocates its output and packs the kernel's `Params` the same way for both;
//! the GPU records the dispatch of the WGSL kernel, the CPU runs the kernel's CPU twin on
//! the same parameters and buffers at once. Models and samplers are written once, over
//! `Device`.

mod cpu;
mod future;
mod gpu;
mod pool;
mod profile;
mod settings;
mod tensor;

#[cfg(target_arch = "wasm32")]
pub(crate) use future::yield_to_event_loop;
#[cfg(not(target_arch = "wasm32"))]
pub use future::block_on;
pub use pool::MemoryStats;
pub use settings::{Adapters, CooperativeMatrix, CooperativeTile, F32Tile, GpuOptions, Tuning, MAX_MACS_PER_DISPATCH};
pub(crate) use tensor::Storage;
pub use tensor::{DType, Tensor};

use std::cell::Cell;
use std::rc::Rc;

use cpu::CpuDevice;
pub use cpu::split::{KernelHelpers, KernelServer, MIN_MACS as SPLIT_MIN_MACS};
use crate::error::{Error, Result};
use crate::kernels::Kernel;
pub use profile::{DispatchTime, FamilyTime};
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
    /// The CPU backend (threads natively, SIMD in the browser).
    pub fn cpu() -> Device {
        Device { backend: Backend::Cpu(CpuDevice::new()), reason: "the CPU was asked for".into(), work: Rc::default() }
    }

    /// The backend `choice` names; [`DeviceChoice::Auto`] takes a hardware GPU and falls
    /// back to the CPU backend, saying why in [`Device::reason`]. A GPU's kernels for
    /// products with f16 weights are not checked yet: the constructors that check them
    /// ([`Device::open`] and the others) are in `ops::open`, above the ops the check runs.
    pub(crate) async fn open_unchecked(choice: DeviceChoice, options: GpuOptions) -> Result<Device> {
        let gpu = |gpu: GpuDevice, reason: String| Device { backend: Backend::Gpu(gpu), reason, work: Rc::default() };
        match choice {
            DeviceChoice::Gpu => Ok(gpu(GpuDevice::new(options).await?, "the GPU was asked for".into())),
            DeviceChoice::Cpu => Ok(Self::cpu()),
            DeviceChoice::Auto => match GpuDevice::new(options).await {
                Ok(g) if !g.info().is_software => {
                    let reason = format!("a hardware GPU adapter was found ({})", g.info());
                    Ok(gpu(g, reason))
                }
                Ok(g) => {
                    let reason = format!("the only GPU adapter is a software one ({}), slower than the CPU backend", g.info());
                    Ok(Device { reason, ..Self::cpu() })
                }
                Err(e) => Ok(Device { reason: e.to_string(), ..Self::cpu() }),
            },
        }
    }

    /// From now on no product or convolution runs on cooperative matrices (they failed
    /// the device's check); `why` goes into [`Device::reason`].
    pub(crate) fn disable_cooperative_matrix(&mut self, why: &str) {
        if let Backend::Gpu(g) = &self.backend {
            g.disable_cooperative_matrix();
            self.reason += &format!("; {why}");
        }
    }

    /// From now on products with f16 weights run on the f32 kernels (the f16 tiles failed
    /// the device's check); `why` goes into [`Device::reason`].
    pub(crate) fn disable_shader_f16(&mut self, why: &str) {
        if let Backend::Gpu(g) = &self.backend {
            g.disable_shader_f16();
            self.reason += &format!("; {why}");
        }
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

    /// The kernels' work-size settings in force ([`Tuning::CPU`] on the CPU backend).
    pub fn tuning(&self) -> Tuning {
        match &self.backend {
            Backend::Gpu(g) => g.tuning(),
            Backend::Cpu(_) => Tuning::CPU,
        }
    }

    /// Changes the kernels' work-size settings (for `bench` and the tests). A usage error,
    /// and nothing changed, on the CPU backend (other than to [`Tuning::CPU`]) and where a
    /// forced tile does not fit the device.
    pub fn set_tuning(&self, tuning: Tuning) -> Result<()> {
        let refused = |why: String| Err(Error::Usage(format!("{tuning:?} cannot be used here: {why}")));
        match &self.backend {
            Backend::Cpu(_) if tuning != Tuning::CPU => refused("the CPU backend computes each kernel whole, with no GPU tiles".into()),
            Backend::Cpu(_) => Ok(()),
            Backend::Gpu(_) if tuning.cooperative_tile.is_some_and(|t| !self.cooperative_tile_fits(t)) => {
                refused(format!("the cooperative tile does not fit {}", self.info()))
            }
            Backend::Gpu(_) if tuning.f32_tile.is_some_and(|t| !self.f32_tile_fits(t)) => refused(format!("the f32 tile does not fit {}", self.info())),
            Backend::Gpu(g) => {
                g.set_tuning(Tuning { max_macs_per_dispatch: tuning.max_macs_per_dispatch.max(1), ..tuning });
                Ok(())
            }
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

    /// Starts or stops timing each dispatch (the bench's profile): on a GPU with timestamp
    /// queries (which slows it down), on the CPU backend natively by the wall time of each
    /// kernel's twin. False where there is nothing to time it with: an adapter without
    /// timestamp queries, the CPU backend in the browser.
    pub fn set_profiling(&self, on: bool) -> bool {
        match &self.backend {
            Backend::Gpu(g) => g.set_profiling(on),
            Backend::Cpu(c) => c.set_profiling(on),
        }
    }

    /// Every dispatch since profiling started or was last taken, in order, with its time
    /// ([`FamilyTime::of`] adds them up per kernel family); None when not profiling.
    pub async fn take_profile(&self) -> Result<Option<Vec<DispatchTime>>> {
        match &self.backend {
            Backend::Gpu(g) => g.take_profile().await,
            Backend::Cpu(c) => Ok(c.take_profile()),
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

    /// On the CPU backend, lets `helpers` (other workers) compute part of each large
    /// product and convolution from now on; `None` computes them here alone. A GPU
    /// computes them whole, and refuses.
    pub fn set_kernel_helpers(&self, helpers: Option<Rc<dyn KernelHelpers>>) -> Result<()> {
        match &self.backend {
            Backend::Cpu(c) => {
                c.set_kernel_helpers(helpers);
                Ok(())
            }
            Backend::Gpu(_) => Err(Error::Usage("kernel helpers are the CPU backend's: a GPU computes each kernel whole".into())),
        }
    }

    /// Keeps the CPU backend's kernels on this worker (none to its kernel helpers) while
    /// the guard lives: while the helpers evaluate tiles of their own.
    pub(crate) fn solo(&self) -> Option<cpu::Solo> {
        match &self.backend {
            Backend::Cpu(c) => Some(c.solo()),
            Backend::Gpu(_) => None,
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

    /// Uploads values already in f16 (as stored in a checkpoint), packed two per 32-bit
    /// word on either backend (the CPU's kernels widen them where they read them).
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
            Backend::Cpu(c) => c.run(kernel, overrides, bytemuck::bytes_of(params), buffers, workgroups, flops),
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
