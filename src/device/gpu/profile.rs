//! GPU time per dispatch, from timestamp queries (the bench's `--profile`).


use super::GpuDevice;
use crate::device::DispatchTime;
use crate::device::future::Callback;
use crate::error::{Error, Result};

/// GPU time per kernel, from timestamp queries around each dispatch (see
/// [`GpuDevice::set_profiling`]).
#[derive(Default)]
pub(super) struct Profiler {
    /// Timestamps of flushed batches not yet read: the buffer they were resolved into and
    /// each begin/end pair's dispatch, its GPU time still 0.
    pub(super) pending: Vec<(wgpu::Buffer, Vec<DispatchTime>)>,
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
