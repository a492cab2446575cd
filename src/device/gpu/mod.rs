//! The wgpu backend: the device, the buffer pool, the pipeline cache and command
//! batching.
//!
//! Kernels are not submitted one by one. Each launcher calls
//! [`Device::dispatch`](crate::Device::dispatch), which records the dispatch (pipeline,
//! buffers, uniform parameters, workgroup count) into the pending batch;
//! [`Device::flush`](crate::Device::flush) turns the batch into ONE command buffer with
//! one compute pass, writes every dispatch's parameters into one uniform buffer (each at
//! its dynamic offset), and submits it. A whole forward pass is therefore a handful of
//! submits. Reading a tensor back flushes.
//!
//! Recording cost: the uniform buffer lives as long as the device, so a bind group
//! depends only on the buffers it binds; bind groups are kept per (layout, buffers) and a
//! UNet step, which draws the same buffers from the pool every time, builds almost none
//! after its first run. Bind groups holding a buffer go when the buffer is destroyed.
//!
//! Errors: every submit and every pipeline or buffer creation runs inside WebGPU error
//! scopes (validation and out-of-memory). The scopes' results are collected and checked by
//! [`Device::sync`](crate::Device::sync) and by every read, so a failed kernel is an
//! `Err`, never a silently wrong tensor. Errors outside any scope land in an
//! uncaptured-error handler that records them instead of panicking (wgpu's default would
//! panic).
//!
//! The files: opening an adapter (`open`), recording and submitting dispatches
//! (`dispatch`), tensors and reads (`transfer`), error scopes, marks and waits (`sync`),
//! and timestamps per dispatch (`profile`).

mod dispatch;
mod open;
mod profile;
mod sync;
mod transfer;
#[cfg(target_arch = "wasm32")]
mod web_subgroups;

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::{Arc, Mutex};

use super::pool::{MemoryStats, Pool};
use super::tensor::Tensor;
use super::{AdapterInfo, CooperativeMatrix, Tuning};
use crate::error::Error;
use crate::kernels::Kernel;

use dispatch::{Batch, BindKey, Layout, Pipeline, PipelineKey};
use profile::Profiler;
pub(crate) use sync::GpuMark;
pub(crate) use transfer::GpuRead;


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
    /// A tensor of ones, grown on demand (see [`Device::ones`](crate::Device::ones)).
    ones: RefCell<Option<Tensor>>,
    /// Kernels recorded since the device was opened.
    dispatched: std::cell::Cell<u64>,
    /// Whether the reduction kernels use subgroup operations (see
    /// [`GpuOptions`](crate::device::GpuOptions)).
    subgroups: bool,
    /// Whether products with f16 weights off cooperative matrices run on f16 workgroup
    /// tiles (see [`GpuOptions::shader_f16`](crate::device::GpuOptions::shader_f16);
    /// cleared when they fail the device's check).
    shader_f16: std::cell::Cell<bool>,
    /// What the matrix products run on where the adapter has tensor cores (cleared when
    /// they fail the device's check).
    cooperative_matrix: std::cell::Cell<Option<CooperativeMatrix>>,
    /// See [`crate::Device::tuning`].
    tuning: std::cell::Cell<Tuning>,
}

/// A GPU device and everything needed to run kernels on it. Cheap to clone (shared).
/// Not `Send`: a device is driven from one thread (or the browser's worker).
#[derive(Clone)]
pub(crate) struct GpuDevice {
    inner: Rc<Inner>,
}

impl GpuDevice {
    /// The cooperative matrices the matrix products run on, if any.
    pub fn cooperative_matrix(&self) -> Option<CooperativeMatrix> {
        self.inner.cooperative_matrix.get()
    }

    pub fn tuning(&self) -> Tuning {
        self.inner.tuning.get()
    }

    pub fn set_tuning(&self, tuning: Tuning) {
        self.inner.tuning.set(tuning);
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

    /// Starts a new peak-memory measurement from the current allocation.
    pub fn reset_peak_memory(&self) {
        self.inner.pool.borrow_mut().reset_peak();
    }

    /// Frees the buffers the pool keeps for reuse.
    pub fn release_free_buffers(&self) {
        self.inner.pool.borrow_mut().clear();
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests;
