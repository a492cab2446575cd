//! Error scopes, waiting for the GPU, and marks of submitted work.

use super::{GpuDevice, ScopeFuture};
use crate::device::future::Callback;
use crate::error::{Error, Result};

/// Work submitted to a GPU's queue, marked by [`GpuDevice::mark`].
pub(crate) struct GpuMark {
    submission: wgpu::SubmissionIndex,
    done: Callback<()>,
    /// The error scopes of the marked work.
    scopes: Vec<ScopeFuture>,
}

impl GpuDevice {
    // ---- scopes ---------------------------------------------------------------------

    /// Runs `f` inside validation and out-of-memory error scopes; their results are
    /// checked at the next [`Device::sync`](crate::Device::sync).
    pub(super) fn scoped<T>(&self, f: impl FnOnce() -> T) -> T {
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
    pub(super) fn take_scopes(&self) -> Vec<ScopeFuture> {
        std::mem::take(&mut *self.inner.scopes.borrow_mut())
    }

    /// The first error of `scopes` or of the uncaptured handler.
    pub(super) async fn errors_of(&self, scopes: Vec<ScopeFuture>) -> Result<()> {
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


    pub(super) async fn wait_idle(&self) -> Result<()> {
        let (tx, done) = Callback::new();
        self.inner.queue.on_submitted_work_done(move || tx.send(()));
        self.poll_wait()?;
        done.await;
        Ok(())
    }

    /// Natively, runs the callbacks of `submission` (and of those before it) once it is
    /// done, not waiting for later submissions; in the browser the event loop runs them.
    pub(super) fn poll_until(&self, submission: wgpu::SubmissionIndex) -> Result<()> {
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
    pub(super) fn poll_wait(&self) -> Result<()> {
        #[cfg(not(target_arch = "wasm32"))]
        self.inner
            .device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::DeviceLost(e.to_string()))?;
        Ok(())
    }

    // ---- tensors --------------------------------------------------------------------
}
