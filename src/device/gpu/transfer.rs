//! Tensors on the GPU: allocating from the pool, uploads, writes and reads.

use std::rc::Rc;

use super::{GpuDevice, ScopeFuture};
use crate::device::check_len;
use crate::device::future::Callback;
use crate::device::pool::size_class;
use crate::device::tensor::{pack_f16, DType, GpuBuffer, Storage, Tensor};
use crate::error::{Error, Result};

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

impl GpuDevice {
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
        self.upload_words(shape, DType::F16Packed, &pack_f16(data))
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

}


fn storage_usage() -> wgpu::BufferUsages {
    wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST
}
