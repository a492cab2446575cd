//! Recording dispatches into the pending batch and submitting it (see the module notes
//! of [`super`]): shader modules, pipelines and bind groups, each built once and kept.

use std::rc::Rc;

use super::{GpuDevice, MAX_CACHED_BIND_GROUPS, MAX_PENDING_DISPATCHES, UNIFORM_ALIGN};
use crate::device::profile::overrides_text;
use crate::device::DispatchTime;
use crate::device::tensor::Tensor;
use crate::error::{Error, Result};
use crate::kernels::Kernel;

#[derive(Clone, PartialEq, Eq, Hash)]
pub(super) struct PipelineKey {
    kernel: Kernel,
    overrides: Vec<(&'static str, u64)>,
    /// Part of the key because the layout comes from it: a launcher that binds the wrong
    /// count gets a validation error, and a later right call its own pipeline.
    buffers: usize,
}

pub(super) struct Pipeline {
    kernel: Kernel,
    /// Its override constants, `NAME=value` apart by spaces, for a profile to show.
    overrides: Rc<str>,
    pipeline: wgpu::ComputePipeline,
}

/// The one bind group layout of every kernel with `n` storage buffers, from the binding
/// convention of [`crate::Device::dispatch`]: the uniform parameters at binding 0 (with a
/// dynamic offset), read-only storage at 1..n, the output (read-write) at n.
pub(super) struct Layout {
    bind_group: wgpu::BindGroupLayout,
    pipeline: wgpu::PipelineLayout,
}

/// A bind group is determined by its layout (the buffer count), the size of the
/// parameters window and the buffers.
#[derive(PartialEq, Eq, Hash)]
pub(super) struct BindKey {
    uniform_size: u64,
    buffers: Vec<wgpu::Buffer>,
}

pub(super) struct Dispatch {
    pipeline: Rc<Pipeline>,
    buffers: Vec<wgpu::Buffer>,
    uniform_offset: u32,
    uniform_size: u64,
    workgroups: [u32; 3],
    /// Its work, for a profile (see [`crate::Device::flops`]).
    flops: u64,
}


#[derive(Default)]
pub(super) struct Batch {
    uniforms: Vec<u8>,
    dispatches: Vec<Dispatch>,
}

impl GpuDevice {
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
            Pipeline { kernel, overrides: overrides_text(overrides), pipeline }
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
