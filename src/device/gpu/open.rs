//! Opening a GPU: the adapter, the limits and features asked for, the device.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::{Arc, Mutex};

#[cfg(target_arch = "wasm32")]
use super::web_subgroups;
use super::{GpuDevice, Inner, MAX_PENDING_DISPATCHES, UNIFORM_ALIGN};
use crate::device::{AdapterInfo, CooperativeMatrix, GpuOptions};
use crate::error::{Error, Result};

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
        let (requested, subgroups) = web_subgroups::request_device(&adapter, &descriptor, options.subgroups).await;
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
                tuning: Default::default(),
            }),
        })
    }
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
