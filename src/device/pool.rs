//! Recycles storage buffers for intermediates.
//!
//! A forward pass allocates the same sizes over and over (a UNet step repeats exactly), so
//! buffers are kept in per-size free lists and reused instead of being created and
//! destroyed. Sizes are rounded up to 256 bytes so that near-equal shapes share a class.
//!
//! A class hands out its free buffer of the lowest id, not the last one given back: which
//! buffers a step gets then depends only on which are free when it starts, not on the
//! order the previous step let them go, so a repeated step binds the same buffers every
//! time and its bind groups come from the cache. (A stack instead permutes the buffers
//! from step to step: a UNet step at 64x64 built 85 bind groups for its 148 dispatches
//! after four steps.)
//!
//! Reuse inside one pending batch is safe: dispatches in a WebGPU compute pass execute in
//! order with storage writes visible to later dispatches, and buffers handed out here are
//! only ever written by kernels, never by `queue.write_buffer` (which would run before the
//! whole batch).

use std::collections::{BTreeSet, HashMap};

pub(crate) const SIZE_CLASS: u64 = 256;

#[derive(Default)]
pub(crate) struct Pool {
    free: HashMap<u64, BTreeSet<wgpu::Buffer>>,
    /// Bytes in buffers currently held by tensors.
    live_bytes: u64,
    /// Bytes in buffers waiting in the free lists.
    free_bytes: u64,
    /// The most bytes ever allocated at once (live + free).
    peak_bytes: u64,
    /// Buffers no tensor holds any more and the pool does not keep: destroyed after the
    /// next submit (a dispatch still waiting in the batch may use them). Dropping alone
    /// frees nothing in the browser until the JS garbage collector runs.
    retired: Vec<wgpu::Buffer>,
}

/// What the pool holds, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MemoryStats {
    pub live_bytes: u64,
    pub free_bytes: u64,
    pub peak_bytes: u64,
}

pub(crate) fn size_class(bytes: u64) -> u64 {
    bytes.max(4).div_ceil(SIZE_CLASS) * SIZE_CLASS
}

impl Pool {
    /// The free buffer of this size class with the lowest id, if one is waiting.
    pub(crate) fn take(&mut self, class: u64) -> Option<wgpu::Buffer> {
        let buffer = self.free.get_mut(&class)?.pop_first()?;
        self.free_bytes -= class;
        self.live_bytes += class;
        Some(buffer)
    }

    /// Records a newly created buffer of this size class.
    pub(crate) fn created(&mut self, class: u64) {
        self.live_bytes += class;
        self.peak_bytes = self.peak_bytes.max(self.live_bytes + self.free_bytes);
    }

    /// A buffer not kept for reuse, no longer held by any tensor.
    pub(crate) fn retire(&mut self, buffer: wgpu::Buffer) {
        self.live_bytes -= buffer.size();
        self.retired.push(buffer);
    }

    /// The retired buffers, to destroy once the batch that may use them is submitted.
    pub(crate) fn take_retired(&mut self) -> Vec<wgpu::Buffer> {
        std::mem::take(&mut self.retired)
    }

    pub(crate) fn give_back(&mut self, buffer: wgpu::Buffer) {
        let class = buffer.size();
        self.live_bytes -= class;
        self.free_bytes += class;
        self.free.entry(class).or_default().insert(buffer);
    }

    /// Retires every waiting buffer (destroyed after the next submit, so a batch that
    /// reads them still runs).
    pub(crate) fn clear(&mut self) {
        for (_, buffers) in self.free.drain() {
            self.retired.extend(buffers);
        }
        self.free_bytes = 0;
    }

    pub(crate) fn stats(&self) -> MemoryStats {
        MemoryStats { live_bytes: self.live_bytes, free_bytes: self.free_bytes, peak_bytes: self.peak_bytes }
    }

    pub(crate) fn reset_peak(&mut self) {
        self.peak_bytes = self.live_bytes + self.free_bytes;
    }
}
