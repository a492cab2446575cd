//! GPU time per dispatch, from timestamp queries (the bench's `--profile`).

use std::rc::Rc;

use super::GpuDevice;
use crate::device::future::Callback;
use crate::error::{Error, Result};
use crate::kernels::Kernel;

/// [`GpuDevice::set_profiling`]).
#[derive(Default)]
pub(super) struct Profiler {
    /// Timestamps of flushed batches not yet read: the buffer they were resolved into and
    /// each begin/end pair's dispatch, its GPU time still 0.
    pub(super) pending: Vec<(wgpu::Buffer, Vec<DispatchTime>)>,
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

impl GpuDevice {
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
}
