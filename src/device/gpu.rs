//! The wgpu backend: the device, the buffer pool, the pipeline cache and command
//! batching.
//!
//! Kernels are not submitted one by one. Each launcher calls [`Device::dispatch`], which
//! records the dispatch (pipeline, buffers, uniform parameters, workgroup count) into the
//! pending batch; [`Device::flush`] turns the batch into ONE command buffer with one compute
//! pass, writes every dispatch's parameters into one uniform buffer (each at its dynamic
//! offset), and submits it. A whole forward pass is therefore a handful of submits.
//! Reading a tensor back flushes.
//!
//! Recording cost: the uniform buffer lives as long as the device, so a bind group
//! depends only on the buffers it binds; bind groups are kept per (layout, buffers) and a
//! UNet step, which draws the same buffers from the pool every time, builds almost none
//! after its first run. Bind groups holding a buffer go when the buffer is destroyed.
//!
//! Errors: every submit and every pipeline or buffer creation runs inside WebGPU error
//! scopes (validation and out-of-memory). The scopes' results are collected and checked by
//! [`Device::sync`] and by every read, so a failed kernel is an `Err`, never a silently wrong
//! tensor. Errors outside any scope land in an uncaptured-error handler that records them
//! instead of panicking (wgpu's default would panic).


use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};
use crate::shaders::Kernel;
use super::future::Callback;
use super::pool::{size_class, MemoryStats, Pool};
use super::tensor::{DType, GpuBuffer, Storage, Tensor};
use super::{check_len, AdapterInfo, CooperativeMatrix, CooperativeTile, F32Tile, GpuOptions};

/// Dispatches recorded before an automatic flush, so that long forward passes still
/// reach the GPU in steady pieces (and a page's event loop gets a turn between them).
const MAX_PENDING_DISPATCHES: usize = 512;

/// WebGPU's `minUniformBufferOffsetAlignment` default: where each dispatch's parameters
/// start, and the most bytes of parameters a kernel may take.
const UNIFORM_ALIGN: usize = 256;

/// Bind groups kept at most; past this the cache starts again (a long run of differently
/// sized images would otherwise keep every combination it ever bound).
const MAX_CACHED_BIND_GROUPS: usize = 8192;

type ScopeFuture = Pin<Box<dyn Future<Output = Option<wgpu::Error>>>>;

#[derive(Clone, PartialEq, Eq, Hash)]
struct PipelineKey {
    kernel: Kernel,
    overrides: Vec<(&'static str, u64)>,
    /// Part of the key because the layout comes from it: a launcher that binds the wrong
    /// count gets a validation error, and a later right call its own pipeline.
    buffers: usize,
}

struct Pipeline {
    kernel: Kernel,
    /// Its override constants, `NAME=value` apart by spaces, for a profile to show.
    overrides: Rc<str>,
    pipeline: wgpu::ComputePipeline,
}

/// The one bind group layout of every kernel with `n` storage buffers, from the binding
/// convention of [`crate::Device::dispatch`]: the uniform parameters at binding 0 (with a
/// dynamic offset), read-only storage at 1..n, the output (read-write) at n.
struct Layout {
    bind_group: wgpu::BindGroupLayout,
    pipeline: wgpu::PipelineLayout,
}

/// A bind group is determined by its layout (the buffer count), the size of the
/// parameters window and the buffers.
#[derive(PartialEq, Eq, Hash)]
struct BindKey {
    uniform_size: u64,
    buffers: Vec<wgpu::Buffer>,
}

struct Dispatch {
    pipeline: Rc<Pipeline>,
    buffers: Vec<wgpu::Buffer>,
    uniform_offset: u32,
    uniform_size: u64,
    workgroups: [u32; 3],
    /// Its work, for a profile (see [`crate::Device::flops`]).
    flops: u64,
}

/// GPU time per kernel, from timestamp queries around each dispatch (see
/// [`GpuDevice::set_profiling`]).
#[derive(Default)]
struct Profiler {
    /// Timestamps of flushed batches not yet read: the buffer they were resolved into and
    /// each begin/end pair's dispatch, its GPU time still 0.
    pending: Vec<(wgpu::Buffer, Vec<DispatchTime>)>,
}

/// One dispatch of a profile (see [`crate::Device::take_profile`]).
#[derive(Debug, Clone, PartialEq)]
pub struct DispatchTime {
    pub kernel: Kernel,
    /// The pipeline's override constants (tile sizes, variants), `NAME=value` apart by spaces.
    pub overrides: Rc<str>,
    pub workgroups: [u32; 3],
    /// Floating-point operations counted for it (see [`crate::Device::flops`]; 0 for the
    /// kernels not counted: norms, element-wise, layout, ...).
    pub flops: u64,
    /// Its GPU time, from timestamp queries.
    pub ms: f64,
}

/// What the bench prints of a profile: GPU time, dispatches and work of one kernel family
/// (the folder of its shader: conv, matmul, attention, norm, elementwise, ...).
#[derive(Debug, Clone, PartialEq)]
pub struct FamilyTime {
    pub family: &'static str,
    pub dispatches: u64,
    pub ms: f64,
    /// Floating-point operations counted for its dispatches.
    pub flops: u64,
}

impl FamilyTime {
    /// The dispatches of `profile` added up per kernel family, the slowest family first.
    pub fn of(profile: &[DispatchTime]) -> Vec<FamilyTime> {
        let mut families: Vec<FamilyTime> = Vec::new();
        for d in profile {
            let family = d.kernel.family();
            match families.iter_mut().find(|f| f.family == family) {
                Some(f) => {
                    f.dispatches += 1;
                    f.ms += d.ms;
                    f.flops += d.flops;
                }
                None => families.push(FamilyTime { family, dispatches: 1, ms: d.ms, flops: d.flops }),
            }
        }
        families.sort_by(|a, b| b.ms.total_cmp(&a.ms));
        families
    }
}

#[derive(Default)]
struct Batch {
    uniforms: Vec<u8>,
    dispatches: Vec<Dispatch>,
}

struct Inner {
    device: wgpu::Device,
    queue: wgpu::Queue,
    info: AdapterInfo,
    modules: RefCell<HashMap<Kernel, wgpu::ShaderModule>>,
    layouts: RefCell<HashMap<usize, Rc<Layout>>>,
    pipelines: RefCell<HashMap<PipelineKey, Rc<Pipeline>>>,
    /// Every dispatch's parameters, rewritten by each flush (see the module notes).
    params: wgpu::Buffer,
    bind_groups: RefCell<HashMap<BindKey, wgpu::BindGroup>>,
    /// Bind groups built since the device was opened (the rest came from the cache).
    bind_groups_built: std::cell::Cell<u64>,
    /// Present while profiling; needs the adapter's timestamp queries.
    profiler: RefCell<Option<Profiler>>,
    pool: Rc<RefCell<Pool>>,
    batch: RefCell<Batch>,
    scopes: RefCell<Vec<ScopeFuture>>,
    uncaptured: Arc<Mutex<Vec<Error>>>,
    /// Set by the device-lost callback: why the device was lost.
    lost: Arc<Mutex<Option<String>>>,
    /// A tensor of ones, grown on demand (see [`Device::ones`]).
    ones: RefCell<Option<Tensor>>,
    /// Kernels recorded since the device was opened.
    dispatched: std::cell::Cell<u64>,
    /// Whether the reduction kernels use subgroup operations (see [`GpuOptions`]).
    subgroups: bool,
    /// Whether products with f16 weights off cooperative matrices run on f16 workgroup
    /// tiles (see [`GpuOptions::shader_f16`]; cleared when they fail the device's check).
    shader_f16: std::cell::Cell<bool>,
    /// What the matrix products run on where the adapter has tensor cores (cleared when
    /// they fail the device's check).
    cooperative_matrix: std::cell::Cell<Option<CooperativeMatrix>>,
    /// The tile every cooperative product uses, when one is forced (bench, tests).
    forced_cooperative_tile: std::cell::Cell<Option<CooperativeTile>>,
    /// The tile every product on the f32 kernels uses, when one is forced.
    forced_f32_tile: std::cell::Cell<Option<F32Tile>>,
    /// See [`crate::Device::split_k_below`].
    split_k_below: std::cell::Cell<Option<usize>>,
    /// See [`crate::Device::max_macs_per_dispatch`].
    max_macs_per_dispatch: std::cell::Cell<u64>,
}

/// A copy of a tensor on its way to the CPU (see [`GpuDevice::start_read`]).
pub(crate) struct GpuRead {
    staging: wgpu::Buffer,
    submission: wgpu::SubmissionIndex,
    mapped: Callback<std::result::Result<(), wgpu::BufferAsyncError>>,
    /// The error scopes of the work before the copy and of the copy.
    scopes: Vec<ScopeFuture>,
    dtype: DType,
    numel: usize,
    bytes: u64,
}

/// Work submitted to a GPU's queue, marked by [`GpuDevice::mark`].
pub(crate) struct GpuMark {
    submission: wgpu::SubmissionIndex,
    done: Callback<()>,
    /// The error scopes of the marked work.
    scopes: Vec<ScopeFuture>,
}

/// A GPU device and everything needed to run kernels on it. Cheap to clone (shared).
/// Not `Send`: a device is driven from one thread (or the browser's worker).
#[derive(Clone)]
pub(crate) struct GpuDevice {
    inner: Rc<Inner>,
}

impl GpuDevice {
    /// Opens the best available adapter: natively any wgpu backend (Vulkan, Metal, DX12,
    /// GL), in the browser WebGPU.
    pub async fn new(options: GpuOptions) -> Result<GpuDevice> {
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
        let adapter = instance
            .request_adapter(&wgpu::RequestAdapterOptions {
                power_preference: wgpu::PowerPreference::HighPerformance,
                ..Default::default()
            })
            .await
            .map_err(|e| Error::NoAdapter(no_adapter_message(&e.to_string())))?;
        Self::from_adapter(adapter, options).await
    }


    async fn from_adapter(adapter: wgpu::Adapter, options: GpuOptions) -> Result<GpuDevice> {
        let offered = adapter.limits();
        // WebGPU's defaults, which every kernel is written to fit. Only the buffer sizes
        // are raised when the adapter offers more: that lets bigger images through on big
        // GPUs without any kernel depending on it (and, natively, workgroup memory for
        // the cooperative-matrix tiles below).
        let mut limits = wgpu::Limits::default();
        limits.max_buffer_size = limits.max_buffer_size.max(offered.max_buffer_size);
        limits.max_storage_buffer_binding_size =
            limits.max_storage_buffer_binding_size.max(offered.max_storage_buffer_binding_size);
        let mut limits = limits.or_worse_values_from(&offered);
        // Timestamps only for the bench's profile (`set_profiling`); nothing else depends
        // on them. Subgroups for the reduction kernels, which have a plain variant.
        let mut features = adapter.features() & wgpu::Features::TIMESTAMP_QUERY;
        if options.subgroups {
            features |= adapter.features() & wgpu::Features::SUBGROUP;
        }
        let software = adapter.get_info().device_type == wgpu::DeviceType::Cpu;
        let cooperative_matrix = options.cooperative_matrix.allow(software).then(|| cooperative_matrix_of(&adapter)).flatten();
        let shader_f16 = options.shader_f16.allow(software) && adapter.features().contains(wgpu::Features::SHADER_F16);
        if shader_f16 {
            features |= wgpu::Features::SHADER_F16;
        }
        let mut experimental_features = wgpu::ExperimentalFeatures::disabled();
        if cooperative_matrix.is_some() {
            features |= COOPERATIVE_FEATURES;
            // Native only: the larger cooperative tiles need more workgroup memory than
            // WebGPU's default 16 KiB (CooperativeTile::workgroup_bytes), and are chosen
            // only where the device has it.
            limits.max_compute_workgroup_storage_size = offered.max_compute_workgroup_storage_size.max(limits.max_compute_workgroup_storage_size);
            // SAFETY: wgpu marks cooperative matrices experimental (their validation is
            // incomplete). Only matmul_coop.wgsl uses them, with loads and stores inside
            // workgroup memory it declares, and its results are tested against the CPU.
            experimental_features = unsafe { wgpu::ExperimentalFeatures::enabled() };
        }
        let descriptor = wgpu::DeviceDescriptor {
            label: Some("daclip-webgpu"),
            required_features: features,
            required_limits: limits.clone(),
            experimental_features,
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        };
        #[cfg(not(target_arch = "wasm32"))]
        let (requested, subgroups) = (adapter.request_device(&descriptor).await, options.subgroups && features.contains(wgpu::Features::SUBGROUP));
        #[cfg(target_arch = "wasm32")]
        let (requested, subgroups) = super::web_subgroups::request_device(&adapter, &descriptor, options.subgroups).await;
        let (device, queue) = requested.map_err(|e| Error::RequestDevice(e.to_string()))?;

        let uncaptured = Arc::new(Mutex::new(Vec::new()));
        let sink = uncaptured.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            if let Ok(mut v) = sink.lock() {
                v.push(Error::from(e));
            }
        }));
        let sink = uncaptured.clone();
        let lost = Arc::new(Mutex::new(None));
        let lost_sink = lost.clone();
        device.set_device_lost_callback(move |reason, message| {
            let why = format!("{reason:?}: {message}");
            if let Ok(mut v) = sink.lock() {
                v.push(Error::DeviceLost(why.clone()));
            }
            if let Ok(mut l) = lost_sink.lock() {
                *l = Some(why);
            }
        });

        let ai = adapter.get_info();
        let info = AdapterInfo {
            name: ai.name.clone(),
            backend: format!("{:?}", ai.backend),
            device_type: format!("{:?}", ai.device_type),
            driver: [ai.driver.as_str(), ai.driver_info.as_str()]
                .iter()
                .filter(|s| !s.is_empty())
                .cloned()
                .collect::<Vec<_>>()
                .join(" "),
            is_software: ai.device_type == wgpu::DeviceType::Cpu,
            limits,
            features: adapter.features().iter_names().map(|(n, _)| n.to_string()).collect(),
            cooperative_matrix: adapter
                .cooperative_matrix_properties()
                .iter()
                .map(|c| format!("{}x{}x{} {:?}->{:?}", c.m_size, c.n_size, c.k_size, c.ab_type, c.cr_type))
                .collect(),
        };
        let params = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("params"),
            size: (MAX_PENDING_DISPATCHES * UNIFORM_ALIGN) as u64,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        Ok(GpuDevice {
            inner: Rc::new(Inner {
                device,
                queue,
                info,
                modules: RefCell::default(),
                layouts: RefCell::default(),
                pipelines: RefCell::default(),
                params,
                bind_groups: RefCell::default(),
                bind_groups_built: Default::default(),
                profiler: RefCell::default(),
                pool: Rc::default(),
                batch: RefCell::default(),
                scopes: RefCell::default(),
                uncaptured,
                lost,
                ones: RefCell::default(),
                dispatched: Default::default(),
                subgroups,
                shader_f16: std::cell::Cell::new(shader_f16),
                cooperative_matrix: std::cell::Cell::new(cooperative_matrix),
                forced_cooperative_tile: std::cell::Cell::new(None),
                forced_f32_tile: std::cell::Cell::new(None),
                split_k_below: std::cell::Cell::new(None),
                max_macs_per_dispatch: std::cell::Cell::new(crate::ops::MAX_MACS_PER_DISPATCH),
            }),
        })
    }

    /// The cooperative matrices the matrix products run on, if any.
    pub fn cooperative_matrix(&self) -> Option<CooperativeMatrix> {
        self.inner.cooperative_matrix.get()
    }

    /// Makes every cooperative product use `tile` (None: each chooses its own).
    pub fn force_cooperative_tile(&self, tile: Option<CooperativeTile>) {
        self.inner.forced_cooperative_tile.set(tile);
    }

    pub fn forced_cooperative_tile(&self) -> Option<CooperativeTile> {
        self.inner.forced_cooperative_tile.get()
    }

    /// Makes every product on the f32 kernels use `tile` (None: each chooses its own).
    pub fn force_f32_tile(&self, tile: Option<F32Tile>) {
        self.inner.forced_f32_tile.set(tile);
    }

    pub fn forced_f32_tile(&self) -> Option<F32Tile> {
        self.inner.forced_f32_tile.get()
    }

    pub fn set_split_k_below(&self, workgroups: Option<usize>) {
        self.inner.split_k_below.set(workgroups);
    }

    pub fn split_k_below(&self) -> Option<usize> {
        self.inner.split_k_below.get()
    }

    pub fn set_max_macs_per_dispatch(&self, macs: u64) {
        self.inner.max_macs_per_dispatch.set(macs.max(1));
    }

    pub fn max_macs_per_dispatch(&self) -> u64 {
        self.inner.max_macs_per_dispatch.get()
    }

    /// From now on no product or convolution runs on cooperative matrices (the device's
    /// check failed them).
    pub fn disable_cooperative_matrix(&self) {
        self.inner.cooperative_matrix.set(None);
    }

    /// Why the device was lost, once it was: every later use of it fails.
    pub fn lost(&self) -> Option<String> {
        self.inner.lost.lock().ok().and_then(|l| l.clone())
    }

    /// Destroys the device, as a driver reset would lose it (for tests of recovery).
    pub fn destroy(&self) {
        self.inner.device.destroy();
    }

    pub fn info(&self) -> &AdapterInfo {
        &self.inner.info
    }

    pub fn limits(&self) -> &wgpu::Limits {
        &self.inner.info.limits
    }

    /// Whether the reduction kernels (norms, softmax) use subgroup operations.
    pub fn subgroups(&self) -> bool {
        self.inner.subgroups
    }

    pub fn shader_f16(&self) -> bool {
        self.inner.shader_f16.get()
    }

    /// Runs the products with f16 weights on the f32 kernels from now on (the f16 tiles
    /// failed the device's check).
    pub fn disable_shader_f16(&self) {
        self.inner.shader_f16.set(false);
    }

    /// Kernels recorded since the device was opened: lets tests tell whether a call did
    /// GPU work at all.
    pub fn dispatch_count(&self) -> u64 {
        self.inner.dispatched.get()
    }

    /// Bind groups built since the device was opened: the dispatches that did not find
    /// theirs in the cache.
    pub fn bind_groups_built(&self) -> u64 {
        self.inner.bind_groups_built.get()
    }

    /// Compute pipelines created since the device was opened: one per kernel and set of
    /// override values, each compiled once (on a software adapter the cost of a short
    /// restore's first step).
    pub fn pipelines_created(&self) -> u64 {
        self.inner.pipelines.borrow().len() as u64
    }

    pub fn memory(&self) -> MemoryStats {
        self.inner.pool.borrow().stats()
    }

    /// Starts (or stops) timing every dispatch on the GPU with timestamp queries, each in
    /// a compute pass of its own (which itself costs time: for the bench's profile, not
    /// for restores). False where the adapter has no timestamp queries.
    pub fn set_profiling(&self, on: bool) -> bool {
        if !self.inner.device.features().contains(wgpu::Features::TIMESTAMP_QUERY) {
            return false;
        }
        self.flush();
        let replaced = std::mem::replace(&mut *self.inner.profiler.borrow_mut(), on.then(Profiler::default));
        // Timestamps never taken: freed now, not when a garbage collector runs.
        replaced.iter().flat_map(|p| &p.pending).for_each(|(buffer, _)| buffer.destroy());
        true
    }

    /// Every dispatch since profiling started (or was last taken), in order, with its GPU
    /// time; None when not profiling.
    pub async fn take_profile(&self) -> Result<Option<Vec<DispatchTime>>> {
        self.sync().await?;
        let pending = match self.inner.profiler.borrow_mut().as_mut() {
            Some(p) => std::mem::take(&mut p.pending),
            None => return Ok(None),
        };
        let period = self.inner.queue.get_timestamp_period() as f64;
        let mut profile = Vec::new();
        for (buffer, dispatches) in pending {
            let (tx, mapped) = Callback::new();
            buffer.slice(..).map_async(wgpu::MapMode::Read, move |r| tx.send(r));
            self.poll_wait()?;
            mapped.await.map_err(|e| Error::Readback(e.to_string()))?;
            let view = buffer.get_mapped_range(..).map_err(|e| Error::Readback(e.to_string()))?;
            let ticks: &[u64] = bytemuck::cast_slice(&view);
            for (pair, d) in ticks.chunks_exact(2).zip(dispatches) {
                profile.push(DispatchTime { ms: pair[1].saturating_sub(pair[0]) as f64 * period / 1e6, ..d });
            }
            drop(view);
            buffer.destroy();
        }
        Ok(Some(profile))
    }

    /// Starts a new peak-memory measurement from the current allocation.
    pub fn reset_peak_memory(&self) {
        self.inner.pool.borrow_mut().reset_peak();
    }

    /// Frees the buffers the pool keeps for reuse.
    pub fn release_free_buffers(&self) {
        self.inner.pool.borrow_mut().clear();
    }

    // ---- scopes ---------------------------------------------------------------------

    /// Runs `f` inside validation and out-of-memory error scopes; their results are
    /// checked at the next [`Device::sync`].
    fn scoped<T>(&self, f: impl FnOnce() -> T) -> T {
        let device = &self.inner.device;
        let validation = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let oom = device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let out = f();
        let mut scopes = self.inner.scopes.borrow_mut();
        scopes.push(Box::pin(oom.pop()));
        scopes.push(Box::pin(validation.pop()));
        out
    }

    /// Submits pending work, waits for the GPU to finish it, and reports the first error
    /// any scope or the uncaptured handler saw since the last sync.
    pub async fn sync(&self) -> Result<()> {
        self.flush();
        self.wait_idle().await?;
        let scopes = self.take_scopes();
        self.errors_of(scopes).await
    }

    /// Submits pending work and marks it, to be waited for with [`GpuDevice::wait_for`]
    /// while later work is recorded and submitted behind it.
    pub fn mark(&self) -> GpuMark {
        self.flush();
        // An empty submit: its index stands for everything submitted so far.
        let submission = self.inner.queue.submit([]);
        let (tx, done) = Callback::new();
        self.inner.queue.on_submitted_work_done(move || tx.send(()));
        GpuMark { submission, done, scopes: self.take_scopes() }
    }

    /// Waits for the work submitted before `mark` (not for any submitted since), and
    /// reports the first error of the work it marks or of the uncaptured handler.
    pub async fn wait_for(&self, mark: GpuMark) -> Result<()> {
        self.poll_until(mark.submission)?;
        mark.done.await;
        self.errors_of(mark.scopes).await
    }

    /// The error scopes of the work recorded so far, to be checked by whoever waits for
    /// that work: a mark or a readback checks its own, not those of work submitted after
    /// it, which in a browser may resolve only once that work is done.
    fn take_scopes(&self) -> Vec<ScopeFuture> {
        std::mem::take(&mut *self.inner.scopes.borrow_mut())
    }

    /// The first error of `scopes` or of the uncaptured handler.
    async fn errors_of(&self, scopes: Vec<ScopeFuture>) -> Result<()> {
        let mut first = None;
        for s in scopes {
            if let Some(e) = s.await {
                first.get_or_insert(Error::from(e));
            }
        }
        if let Ok(mut v) = self.inner.uncaptured.lock() {
            if let Some(e) = v.drain(..).next() {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }


    async fn wait_idle(&self) -> Result<()> {
        let (tx, done) = Callback::new();
        self.inner.queue.on_submitted_work_done(move || tx.send(()));
        self.poll_wait()?;
        done.await;
        Ok(())
    }

    /// Natively, runs the callbacks of `submission` (and of those before it) once it is
    /// done, not waiting for later submissions; in the browser the event loop runs them.
    fn poll_until(&self, submission: wgpu::SubmissionIndex) -> Result<()> {
        #[cfg(not(target_arch = "wasm32"))]
        self.inner
            .device
            .poll(wgpu::PollType::Wait { submission_index: Some(submission), timeout: None })
            .map_err(|e| Error::DeviceLost(e.to_string()))?;
        #[cfg(target_arch = "wasm32")]
        let _ = submission;
        Ok(())
    }

    /// Natively, callbacks fire inside `poll`; in the browser the event loop runs them.
    fn poll_wait(&self) -> Result<()> {
        #[cfg(not(target_arch = "wasm32"))]
        self.inner
            .device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::DeviceLost(e.to_string()))?;
        Ok(())
    }

    // ---- tensors --------------------------------------------------------------------

    fn check_size(&self, bytes: u64, shape: &[usize]) -> Result<()> {
        let max = self.limits().max_storage_buffer_binding_size.min(self.limits().max_buffer_size);
        if bytes > max {
            return Err(Error::TooLarge(format!(
                "a tensor of shape {shape:?} needs {} MiB but one buffer binding may hold at most {} MiB on this device; use a smaller image",
                bytes >> 20,
                max >> 20
            )));
        }
        Ok(())
    }

    /// An uninitialised f32 tensor from the pool, for kernel outputs.
    pub fn empty(&self, shape: &[usize]) -> Result<Tensor> {
        let bytes = DType::F32.bytes_for(shape.iter().product());
        self.check_size(bytes, shape)?;
        let class = size_class(bytes);
        let reused = self.inner.pool.borrow_mut().take(class);
        let buffer = match reused {
            Some(b) => b,
            None => {
                let b = self.scoped(|| {
                    self.inner.device.create_buffer(&wgpu::BufferDescriptor {
                        label: None,
                        size: class,
                        usage: storage_usage(),
                        mapped_at_creation: false,
                    })
                });
                self.inner.pool.borrow_mut().created(class);
                b
            }
        };
        Ok(Tensor::new(Storage::Gpu(Rc::new(GpuBuffer::pooled(buffer, &self.inner.pool))), shape.to_vec(), DType::F32))
    }

    /// Creates a tensor holding `words` (raw 32-bit words of the given dtype). Uploads
    /// always get a fresh buffer, written at creation, so they can never overwrite a
    /// pooled buffer that pending kernels still read.
    fn upload_words(&self, shape: &[usize], dtype: DType, words: &[u32]) -> Result<Tensor> {
        let bytes = dtype.bytes_for(shape.iter().product());
        debug_assert_eq!(bytes, 4 * words.len() as u64);
        self.check_size(bytes, shape)?;
        let class = size_class(bytes);
        let buffer = self.scoped(|| {
            let b = self.inner.device.create_buffer(&wgpu::BufferDescriptor {
                label: None,
                size: class,
                usage: storage_usage(),
                mapped_at_creation: true,
            });
            let written = match bytes {
                0 => Ok(()),
                _ => b.get_mapped_range_mut(..bytes).map(|mut v| v.copy_from_slice(bytemuck::cast_slice(words))),
            };
            b.unmap();
            written.map(|_| b)
        });
        let buffer = buffer.map_err(|e| Error::OutOfMemory(format!("mapping a new {bytes}-byte buffer failed: {e}")))?;
        self.inner.pool.borrow_mut().created(class);
        Ok(Tensor::new(Storage::Gpu(Rc::new(GpuBuffer::uploaded(buffer, &self.inner.pool))), shape.to_vec(), dtype))
    }

    pub fn upload(&self, shape: &[usize], data: &[f32]) -> Result<Tensor> {
        check_len(shape, data.len())?;
        self.upload_words(shape, DType::F32, bytemuck::cast_slice(data))
    }

    /// Overwrites an f32 tensor with `data`. Pending work is submitted first: queue writes
    /// run before the batch that is still being recorded, which may read this buffer, but
    /// after everything already submitted. Lets a loop refill the same buffer (the tiles of
    /// a tiled restore) instead of creating one per upload.
    pub fn write(&self, t: &Tensor, data: &[f32]) -> Result<()> {
        t.expect_f32("a written tensor")?;
        check_len(t.shape(), data.len())?;
        let buffer = t.buffer()?;
        self.flush();
        self.scoped(|| self.inner.queue.write_buffer(buffer, 0, bytemuck::cast_slice(data)));
        Ok(())
    }

    /// `n` ones, as a view of one cached tensor: kernels that need a constant vector (a
    /// sum as a product with ones) get it without an upload per call.
    pub(crate) fn ones(&self, n: usize) -> Result<Tensor> {
        let mut cached = self.inner.ones.borrow_mut();
        if cached.as_ref().is_none_or(|t| t.numel() < n) {
            let len = n.next_power_of_two();
            *cached = Some(self.upload(&[len], &vec![1.0; len])?);
        }
        Ok(cached.as_ref().unwrap().prefix(n))
    }

    /// Uploads indices (token ids, row numbers).
    pub fn upload_u32(&self, shape: &[usize], data: &[u32]) -> Result<Tensor> {
        check_len(shape, data.len())?;
        self.upload_words(shape, DType::U32, data)
    }

    /// Uploads values already in f16 (as stored in a checkpoint), packed two per word.
    pub fn upload_f16_bits(&self, shape: &[usize], data: &[half::f16]) -> Result<Tensor> {
        check_len(shape, data.len())?;
        let words: Vec<u32> = data
            .chunks(2)
            .map(|p| p[0].to_bits() as u32 | (p.get(1).map_or(0, |h| h.to_bits()) as u32) << 16)
            .collect();
        self.upload_words(shape, DType::F16Packed, &words)
    }

    /// Submits pending work and the copy of `t` into a buffer the CPU can map, and asks
    /// for the mapping: [`GpuDevice::finish_read`] waits for that copy only, so that work
    /// submitted meanwhile keeps the GPU busy.
    pub fn start_read(&self, t: &Tensor) -> Result<GpuRead> {
        let buffer = t.buffer()?;
        self.flush();
        let bytes = t.dtype().bytes_for(t.numel());
        let (staging, submission) = self.scoped(|| {
            let staging = self.inner.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("readback"),
                size: bytes.max(4),
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            let mut enc = self.inner.device.create_command_encoder(&Default::default());
            enc.copy_buffer_to_buffer(buffer, 0, &staging, 0, bytes);
            (staging, self.inner.queue.submit([enc.finish()]))
        });
        let (tx, mapped) = Callback::new();
        staging.slice(..).map_async(wgpu::MapMode::Read, move |r| tx.send(r));
        Ok(GpuRead { staging, submission, mapped, scopes: self.take_scopes(), dtype: t.dtype(), numel: t.numel(), bytes })
    }

    /// The values of a [`GpuDevice::start_read`], once its copy is done. Reports the first
    /// error of the work before the copy or of the uncaptured handler.
    pub async fn finish_read(&self, read: GpuRead) -> Result<Vec<f32>> {
        let GpuRead { staging, submission, mapped, scopes, dtype, numel, bytes } = read;
        self.poll_until(submission)?;
        let map_result = mapped.await;
        // Errors of the kernels that produced the tensor take precedence over the mapping
        // failure they may have caused.
        self.errors_of(scopes).await?;
        map_result.map_err(|e| Error::Readback(e.to_string()))?;
        let view = staging.get_mapped_range(..).map_err(|e| Error::Readback(e.to_string()))?;
        let words: &[u32] = bytemuck::cast_slice(&view[..bytes as usize]);
        let out = match dtype {
            DType::F32 => bytemuck::cast_slice(words).to_vec(),
            DType::U32 => words.iter().map(|&w| w as f32).collect(),
            DType::F16Packed => words
                .iter()
                .flat_map(|w| [half::f16::from_bits(*w as u16), half::f16::from_bits((w >> 16) as u16)])
                .take(numel)
                .map(f32::from)
                .collect(),
        };
        drop(view);
        staging.unmap();
        Ok(out)
    }


    // ---- kernels --------------------------------------------------------------------

    fn layout(&self, buffers: usize) -> Rc<Layout> {
        if let Some(l) = self.inner.layouts.borrow().get(&buffers) {
            return l.clone();
        }
        let device = &self.inner.device;
        let storage = |binding: u32, read_only: bool| wgpu::BindGroupLayoutEntry {
            binding,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer { ty: wgpu::BufferBindingType::Storage { read_only }, has_dynamic_offset: false, min_binding_size: None },
            count: None,
        };
        let mut entries = vec![wgpu::BindGroupLayoutEntry {
            binding: 0,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer { ty: wgpu::BufferBindingType::Uniform, has_dynamic_offset: true, min_binding_size: None },
            count: None,
        }];
        entries.extend((1..=buffers).map(|i| storage(i as u32, i < buffers)));
        let layout = self.scoped(|| {
            let bind_group = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor { label: None, entries: &entries });
            let pipeline = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                label: None,
                bind_group_layouts: &[Some(&bind_group)],
                immediate_size: 0,
            });
            Rc::new(Layout { bind_group, pipeline })
        });
        self.inner.layouts.borrow_mut().insert(buffers, layout.clone());
        layout
    }

    fn pipeline(&self, kernel: Kernel, overrides: &[(&'static str, f64)], buffers: usize) -> Rc<Pipeline> {
        let key = PipelineKey { kernel, overrides: overrides.iter().map(|(n, v)| (*n, v.to_bits())).collect(), buffers };
        if let Some(p) = self.inner.pipelines.borrow().get(&key) {
            return p.clone();
        }
        let device = &self.inner.device;
        let layout = self.layout(buffers);
        let pipeline = self.scoped(|| {
            let mut modules = self.inner.modules.borrow_mut();
            let module = modules.entry(kernel).or_insert_with(|| {
                device.create_shader_module(wgpu::ShaderModuleDescriptor {
                    label: Some(kernel.path()),
                    source: wgpu::ShaderSource::Wgsl(kernel.source(self.inner.subgroups, self.inner.cooperative_matrix.get().map_or(16, |c| c.size))),
                })
            });
            let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(kernel.path()),
                layout: Some(&layout.pipeline),
                module,
                entry_point: Some("main"),
                compilation_options: wgpu::PipelineCompilationOptions { constants: overrides, ..Default::default() },
                cache: None,
            });
            let overrides = overrides.iter().map(|(name, value)| format!("{name}={value}")).collect::<Vec<_>>().join(" ").into();
            Pipeline { kernel, overrides, pipeline }
        });
        let pipeline = Rc::new(pipeline);
        self.inner.pipelines.borrow_mut().insert(key, pipeline.clone());
        pipeline
    }

    /// Records one dispatch of `kernel` into the pending batch (the binding convention
    /// and the checks: [`crate::Device::dispatch`]).
    pub(crate) fn dispatch<P: bytemuck::Pod>(&self, kernel: Kernel, overrides: &[(&'static str, f64)], params: &P, buffers: &[&Tensor], workgroups: [u32; 3], flops: u64) -> Result<()> {
        if workgroups.contains(&0) {
            return Ok(());
        }
        let bytes = bytemuck::bytes_of(params);
        let size = bytes.len().next_multiple_of(16);
        if size > UNIFORM_ALIGN {
            return Err(Error::Usage(format!("{}: {size} bytes of parameters, more than the {UNIFORM_ALIGN} a dispatch may take", kernel.path())));
        }
        let buffers = buffers.iter().map(|t| t.buffer().cloned()).collect::<Result<Vec<_>>>()?;
        let pipeline = self.pipeline(kernel, overrides, buffers.len());
        let full = {
            let mut batch = self.inner.batch.borrow_mut();
            let offset = batch.uniforms.len().next_multiple_of(UNIFORM_ALIGN);
            batch.uniforms.resize(offset, 0);
            batch.uniforms.extend_from_slice(bytes);
            batch.uniforms.resize(offset + size, 0);
            batch.dispatches.push(Dispatch {
                pipeline,
                buffers,
                uniform_offset: offset as u32,
                uniform_size: size as u64,
                workgroups,
                flops,
            });
            batch.dispatches.len() >= MAX_PENDING_DISPATCHES
        };
        self.inner.dispatched.set(self.inner.dispatched.get() + 1);
        if full {
            self.flush();
        }
        Ok(())
    }

    /// The bind group of a dispatch, from the cache when these buffers were bound together
    /// before.
    fn bind_group(&self, d: &Dispatch) -> wgpu::BindGroup {
        let key = BindKey { uniform_size: d.uniform_size, buffers: d.buffers.clone() };
        if let Some(g) = self.inner.bind_groups.borrow().get(&key) {
            return g.clone();
        }
        let layout = self.layout(d.buffers.len());
        let mut entries = vec![wgpu::BindGroupEntry {
            binding: 0,
            resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                buffer: &self.inner.params,
                offset: 0,
                size: wgpu::BufferSize::new(d.uniform_size),
            }),
        }];
        for (i, b) in d.buffers.iter().enumerate() {
            entries.push(wgpu::BindGroupEntry { binding: 1 + i as u32, resource: b.as_entire_binding() });
        }
        let group = self.inner.device.create_bind_group(&wgpu::BindGroupDescriptor { label: None, layout: &layout.bind_group, entries: &entries });
        self.inner.bind_groups_built.set(self.inner.bind_groups_built.get() + 1);
        let mut cache = self.inner.bind_groups.borrow_mut();
        if cache.len() >= MAX_CACHED_BIND_GROUPS {
            cache.clear();
        }
        cache.insert(key, group.clone());
        group
    }

    /// Submits every pending dispatch as one command buffer with one compute pass (one
    /// pass per dispatch while profiling).
    pub fn flush(&self) {
        let batch = std::mem::take(&mut *self.inner.batch.borrow_mut());
        // Taken before the submit: every use of these is in this batch or an earlier one.
        let retired = self.inner.pool.borrow_mut().take_retired();
        if !retired.is_empty() {
            #[allow(clippy::mutable_key_type)] // a buffer hashes by its id, which never changes
            let gone: std::collections::HashSet<&wgpu::Buffer> = retired.iter().collect();
            self.inner.bind_groups.borrow_mut().retain(|k, _| !k.buffers.iter().any(|b| gone.contains(b)));
        }
        if batch.dispatches.is_empty() {
            retired.iter().for_each(wgpu::Buffer::destroy);
            return;
        }
        let device = &self.inner.device;
        self.scoped(|| {
            // Runs before this submit's passes and after every earlier submit's, which
            // read the parameters they were recorded with.
            self.inner.queue.write_buffer(&self.inner.params, 0, &batch.uniforms);
            let groups: Vec<wgpu::BindGroup> = batch.dispatches.iter().map(|d| self.bind_group(d)).collect();
            let record = |pass: &mut wgpu::ComputePass, d: &Dispatch, g: &wgpu::BindGroup| {
                pass.set_pipeline(&d.pipeline.pipeline);
                pass.set_bind_group(0, g, &[d.uniform_offset]);
                pass.dispatch_workgroups(d.workgroups[0], d.workgroups[1], d.workgroups[2]);
            };
            let mut enc = device.create_command_encoder(&Default::default());
            let mut resolved = None;
            if let Some(profiler) = self.inner.profiler.borrow_mut().as_mut() {
                let n = batch.dispatches.len() as u32;
                let queries = device.create_query_set(&wgpu::QuerySetDescriptor { label: Some("profile"), ty: wgpu::QueryType::Timestamp, count: 2 * n });
                for (i, (d, g)) in batch.dispatches.iter().zip(&groups).enumerate() {
                    let timestamp_writes = wgpu::ComputePassTimestampWrites {
                        query_set: &queries,
                        beginning_of_pass_write_index: Some(2 * i as u32),
                        end_of_pass_write_index: Some(2 * i as u32 + 1),
                    };
                    let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor { label: None, timestamp_writes: Some(timestamp_writes) });
                    record(&mut pass, d, g);
                }
                let bytes = 16 * n as u64;
                let buffer = |usage| device.create_buffer(&wgpu::BufferDescriptor { label: Some("profile"), size: bytes, usage, mapped_at_creation: false });
                let (resolve, readback) = (buffer(wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC), buffer(wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST));
                enc.resolve_query_set(&queries, 0..2 * n, &resolve, 0);
                enc.copy_buffer_to_buffer(&resolve, 0, &readback, 0, bytes);
                let dispatches = batch.dispatches.iter().map(|d| DispatchTime {
                    kernel: d.pipeline.kernel,
                    overrides: d.pipeline.overrides.clone(),
                    workgroups: d.workgroups,
                    flops: d.flops,
                    ms: 0.0,
                });
                profiler.pending.push((readback, dispatches.collect()));
                resolved = Some(resolve);
            } else {
                let mut pass = enc.begin_compute_pass(&Default::default());
                for (d, g) in batch.dispatches.iter().zip(&groups) {
                    record(&mut pass, d, g);
                }
            }
            self.inner.queue.submit([enc.finish()]);
            // Submitted work keeps what it uses: destroying now frees the memory once the
            // GPU is done with it, without waiting for a garbage collector.
            resolved.iter().for_each(wgpu::Buffer::destroy);
            retired.iter().for_each(wgpu::Buffer::destroy);
        });
    }
}

fn storage_usage() -> wgpu::BufferUsages {
    wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST
}

/// What matmul_coop.wgsl needs besides the matrices: f16 workgroup tiles and subgroup ids.
const COOPERATIVE_FEATURES: wgpu::Features = wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX
    .union(wgpu::Features::SHADER_F16)
    .union(wgpu::Features::SUBGROUP);

/// The cooperative-matrix configuration matmul_coop.wgsl can use on `adapter`: square
/// f16 -> f32 matrices of 16 (preferred: NVIDIA's) or 8 (Apple's, lavapipe's), on
/// subgroups of one fixed size (the kernel maps subgroups to tiles by it) of at least
/// size^2 / 8 invocations (on the small tile each then fetches at most 16 values of a step;
/// `CooperativeTile::fits` decides the rest).
fn cooperative_matrix_of(adapter: &wgpu::Adapter) -> Option<CooperativeMatrix> {
    if !adapter.features().contains(COOPERATIVE_FEATURES) {
        return None;
    }
    let info = adapter.get_info();
    let subgroup_size = info.subgroup_min_size;
    if subgroup_size != info.subgroup_max_size || subgroup_size == 0 || 4 * subgroup_size > 256 {
        return None;
    }
    let offered = adapter.cooperative_matrix_properties();
    [16, 8]
        .into_iter()
        .filter(|&size| 2 * size * size <= 16 * subgroup_size)
        .find(|&size| {
            offered.iter().any(|c| {
                (c.m_size, c.n_size, c.k_size) == (size, size, size)
                    && c.ab_type == wgpu::CooperativeScalarType::F16
                    && c.cr_type == wgpu::CooperativeScalarType::F32
            })
        })
        .map(|size| CooperativeMatrix { size, subgroup_size })
}

fn no_adapter_message(detail: &str) -> String {
    if cfg!(target_arch = "wasm32") {
        format!(
            "WebGPU is not available in this browser ({detail}). Use a current Chrome or Edge (113+), \
             Safari 26+, or Firefox 141+ on Windows; on Linux Chrome needs --enable-unsafe-webgpu \
             or chrome://flags/#enable-unsafe-webgpu."
        )
    } else {
        format!(
            "{detail}. Install a Vulkan, Metal or DX12 driver; on a machine without a GPU, \
             Mesa's lavapipe (Debian: apt install mesa-vulkan-drivers) works."
        )
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;
    use crate::device::{block_on, Device};

    #[repr(C)]
    #[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
    struct ActivationParams {
        n: u32,
        d: u32,
        _pad: [u32; 2],
    }

    #[test]
    fn marks_and_started_reads_report_the_errors_of_their_own_work() {
        let dev = Device::new_blocking().unwrap();
        let x = dev.upload(&[4], &[1.0, -2.0, 3.0, -4.0]).unwrap();
        let params = ActivationParams { n: 4, d: 1, _pad: [0; 2] };
        let broken = || dev.dispatch(Kernel::Activation, &[], &params, &[&x], [1, 1, 1]).unwrap();
        broken();
        let broken_mark = dev.mark();
        let y = crate::ops::silu(&dev, &x).unwrap();
        let fine_mark = dev.mark();
        let err = block_on(broken_mark.wait()).unwrap_err();
        assert!(matches!(err, Error::Validation(_)), "{err:?}");
        block_on(fine_mark.wait()).expect("the work after the broken dispatch is fine, and its mark says so");
        broken();
        let broken_read = dev.start_read(&x).unwrap();
        let fine_read = dev.start_read(&y).unwrap();
        assert!(matches!(block_on(broken_read.values()), Err(Error::Validation(_))));
        let v = block_on(fine_read.values()).unwrap();
        assert!((v[0] - 0.731_058_6).abs() < 1e-6, "{v:?}");
    }

    #[test]
    fn validation_error_comes_back_as_err_and_the_device_stays_usable() {
        let dev = Device::new_blocking().unwrap();
        let x = dev.upload(&[4], &[1.0, -2.0, 3.0, -4.0]).unwrap();
        // activation.wgsl binds two storage buffers; give it one.
        let params = ActivationParams { n: 4, d: 1, _pad: [0; 2] };
        dev.dispatch(Kernel::Activation, &[], &params, &[&x], [1, 1, 1]).unwrap();
        let err = dev.read_blocking(&x).unwrap_err();
        println!("broken dispatch gave: {err}");
        assert!(matches!(err, Error::Validation(_)), "{err:?}");

        let y = crate::ops::silu(&dev, &x).unwrap();
        let v = dev.read_blocking(&y).unwrap();
        assert!((v[0] - 0.731_058_6).abs() < 1e-6, "{v:?}");
    }

    #[test]
    fn oversized_tensors_and_grids_are_refused() {
        let dev = Device::new_blocking().unwrap();
        let err = dev.empty(&[1 << 20, 1 << 10]).unwrap_err();
        println!("4 GiB tensor gave: {err}");
        assert!(matches!(err, Error::TooLarge(_)));
        let x = dev.upload(&[1], &[0.0]).unwrap();
        let params = ActivationParams { n: 1, d: 1, _pad: [0; 2] };
        let err = dev.dispatch(Kernel::Activation, &[], &params, &[&x, &x], [70_000, 1, 1]).unwrap_err();
        assert!(matches!(err, Error::TooLarge(_)), "{err:?}");
    }

    #[test]
    fn device_keeps_to_webgpu_default_limits() {
        let dev = Device::new_blocking().unwrap();
        let l = dev.limits();
        let d = wgpu::Limits::default();
        assert_eq!(l.max_compute_invocations_per_workgroup, d.max_compute_invocations_per_workgroup);
        // Raised only for the larger cooperative-matrix tiles, which are chosen by whether
        // they fit (CooperativeTile::fits).
        if dev.cooperative_matrix().is_some() {
            assert!(l.max_compute_workgroup_storage_size >= d.max_compute_workgroup_storage_size);
        } else {
            assert_eq!(l.max_compute_workgroup_storage_size, d.max_compute_workgroup_storage_size);
        }
        assert_eq!(l.max_storage_buffers_per_shader_stage, d.max_storage_buffers_per_shader_stage);
        assert!(!dev.info().name.is_empty() && !dev.info().features.is_empty());
        println!("{} limits: {} invocations, {} B workgroup storage, {} MiB binding", dev.info(), l.max_compute_invocations_per_workgroup, l.max_compute_workgroup_storage_size, l.max_storage_buffer_binding_size >> 20);
    }

    #[test]
    fn bind_groups_are_reused_and_forgotten_with_their_buffers() {
        let dev = Device::new_blocking().unwrap();
        let x = dev.upload(&[1000], &[0.5; 1000]).unwrap();
        let step = || crate::ops::gelu(&dev, &crate::ops::silu(&dev, &x).unwrap()).unwrap();
        let want = dev.read_blocking(&step()).unwrap();
        let built = dev.bind_groups_built();
        for _ in 0..3 {
            assert_eq!(dev.read_blocking(&step()).unwrap(), want);
        }
        assert_eq!(dev.bind_groups_built(), built, "the pool hands out the same buffers, so the same bind groups serve");
        // Destroys the pooled buffers: a bind group kept for them would fail validation.
        dev.release_free_buffers();
        assert_eq!(dev.read_blocking(&step()).unwrap(), want);
        assert_eq!(dev.bind_groups_built(), built + 2, "new buffers, new bind groups");
    }

    #[test]
    fn gathers_and_epilogues_share_their_convolutions_and_products_pipelines() {
        use crate::ops::{conv2d_with, linear_with, Conv2dArgs, ConvInput, Epilogue};
        let dev = Device::new_blocking().unwrap();
        let up = |shape: &[usize]| dev.upload(shape, &vec![0.25; shape.iter().product()]).unwrap();
        let (x, half, small) = (up(&[1, 16, 6, 6]), up(&[1, 8, 6, 6]), up(&[1, 16, 3, 3]));
        let (w, bias, table, res) = (up(&[16, 16, 3, 3]), up(&[16]), up(&[1, 32]), up(&[1, 16, 6, 6]));
        let args = Conv2dArgs::same(3);
        let (lin_x, lin_w, lin_b, lin_res) = (up(&[8, 16]), up(&[16, 16]), up(&[16]), up(&[8, 16]));
        conv2d_with(&dev, &x, &w, None, args, Epilogue::default()).unwrap();
        linear_with(&dev, &lin_x, &lin_w, None, None).unwrap();
        let created = dev.pipelines_created();
        // The gathers and the epilogue's steps are values in Params, not overrides: no
        // pipeline of their own to compile, which a short restore on a software adapter
        // pays for.
        let fused = Epilogue { scale_shift: Some((&table, 0)), silu: true, residual: Some(&res), second_residual: Some(&res) };
        conv2d_with(&dev, ConvInput::concat(&half, &half), &w, Some(&bias), args, fused).unwrap();
        conv2d_with(&dev, ConvInput::upsampled(&small), &w, Some(&bias), args, Epilogue { residual: Some(&res), ..Default::default() }).unwrap();
        linear_with(&dev, &lin_x, &lin_w, Some(&lin_b), Some(&lin_res)).unwrap();
        dev.sync_blocking().unwrap();
        assert_eq!(dev.pipelines_created(), created);
        // What the loops over K or the accumulators read stays an override: an f32 bias
        // shares the product's pipeline (BIAS_F16 false), an f16 one has its own.
        let f16_bias = dev.upload_f16(&[16], &[0.5; 16]).unwrap();
        linear_with(&dev, &lin_x, &lin_w, Some(&f16_bias), None).unwrap();
        assert_eq!(dev.pipelines_created(), created + 1);
    }

    #[test]
    fn the_profile_counts_each_dispatch_in_its_family() {
        let dev = Device::new_blocking().unwrap();
        let x = dev.upload(&[64, 64], &vec![0.25; 64 * 64]).unwrap();
        if !dev.set_profiling(true) {
            println!("{}: no timestamp queries, nothing to profile", dev.info());
            return;
        }
        let y = crate::ops::matmul(&dev, &crate::ops::silu(&dev, &x).unwrap(), &x).unwrap();
        let z = crate::ops::silu(&dev, &y).unwrap();
        let image = dev.upload(&[1, 8, 10, 10], &[0.5; 800]).unwrap();
        let w = dev.upload(&[4, 8, 3, 3], &[0.5; 288]).unwrap();
        drop(crate::ops::conv2d(&dev, &image, &w, None, crate::ops::Conv2dArgs::same(3)).unwrap());
        let profile = block_on(dev.take_profile()).unwrap().unwrap();
        println!("{profile:?}");
        assert_eq!(profile.iter().map(|d| d.kernel.family()).collect::<Vec<_>>(), ["elementwise", "matmul", "elementwise", "conv"], "every dispatch in order");
        let families = FamilyTime::of(&profile);
        let family = |name| families.iter().find(|f| f.family == name).map(|f| (f.dispatches, f.flops));
        assert_eq!(family("elementwise"), Some((2, 0)));
        assert_eq!(family("matmul"), Some((1, 2 * 64 * 64 * 64)));
        assert_eq!(family("conv"), Some((1, 2 * 4 * 8 * 9 * 100)));
        assert!(profile.iter().all(|d| d.ms >= 0.0 && d.ms.is_finite()));
        assert!(profile[1].overrides.contains("MR="), "a product's tile: {}", profile[1].overrides);
        assert_eq!(block_on(dev.take_profile()).unwrap().unwrap(), vec![], "taking the profile starts it again");
        dev.set_profiling(false);
        assert!(block_on(dev.take_profile()).unwrap().is_none());
        assert!(dev.read_blocking(&z).unwrap().iter().all(|v| v.is_finite()));
    }

    #[test]
    fn pool_recycles_intermediates() {
        let dev = Device::new_blocking().unwrap();
        let x = dev.upload(&[1000], &[0.5; 1000]).unwrap();
        let a = crate::ops::silu(&dev, &x).unwrap();
        let first = dev.memory();
        drop(a);
        assert_eq!(dev.memory().free_bytes, first.free_bytes + 4096);
        let b = crate::ops::gelu(&dev, &x).unwrap();
        assert_eq!(dev.memory(), first, "the freed buffer is reused, nothing new is allocated");
        assert!(dev.read_blocking(&b).unwrap().iter().all(|v| (v - 0.345_731_2).abs() < 1e-6));
        // An upload is freed, not pooled: each upload takes a fresh buffer, so pooling them
        // would grow the pool by every upload (a leak over many calls).
        let before = dev.memory();
        drop(x);
        let after = dev.memory();
        assert_eq!((after.free_bytes, after.live_bytes), (before.free_bytes, before.live_bytes - 4096));
    }
}
