//! Tensors: a shape, an element type and storage on the device that made them (a GPU
//! buffer, or host memory for the CPU backend).
//!
//! Activations are always f32. Weights may also be stored as f16, packed two per `u32`
//! (element `i` in the low half of word `i / 2` when `i` is even), which kernels read with
//! `unpack2x16float` and which needs no shader-f16 feature.

use std::cell::RefCell;
use std::rc::{Rc, Weak};

use super::cpu::CpuBuffer;
use crate::device::pool::Pool;
use crate::error::{shape_err, Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    /// IEEE half floats packed two per 32-bit word.
    F16Packed,
    /// Unsigned integers (indices).
    U32,
}

impl DType {
    /// Bytes of buffer needed for `n` elements (rounded up to whole 32-bit words).
    pub fn bytes_for(self, n: usize) -> u64 {
        match self {
            DType::F32 | DType::U32 => 4 * n as u64,
            DType::F16Packed => 4 * n.div_ceil(2) as u64,
        }
    }
}

/// f16 values packed two per word, as [`DType::F16Packed`] holds them on either backend:
/// value `2i` in the low half of word `i`, a zero high half after an odd count.
pub(crate) fn pack_f16(values: &[half::f16]) -> Vec<u32> {
    values.chunks(2).map(|p| p[0].to_bits() as u32 | (p.get(1).map_or(0, |h| h.to_bits()) as u32) << 16).collect()
}

/// A buffer that returns to its pool when the last tensor viewing it is dropped.
pub(crate) struct GpuBuffer {
    pub(crate) buffer: wgpu::Buffer,
    pool: Weak<RefCell<Pool>>,
    /// Back into the pool when dropped (kernel outputs), or freed (uploads: every upload
    /// takes a fresh buffer, so recycling them would grow the pool by each upload).
    recycle: bool,
}

impl GpuBuffer {
    /// A buffer for kernel outputs, recycled through the pool.
    pub(crate) fn pooled(buffer: wgpu::Buffer, pool: &Rc<RefCell<Pool>>) -> Self {
        GpuBuffer { buffer, pool: Rc::downgrade(pool), recycle: true }
    }

    /// A buffer written at creation, freed when dropped.
    pub(crate) fn uploaded(buffer: wgpu::Buffer, pool: &Rc<RefCell<Pool>>) -> Self {
        GpuBuffer { buffer, pool: Rc::downgrade(pool), recycle: false }
    }
}

impl Drop for GpuBuffer {
    fn drop(&mut self) {
        if let Some(pool) = self.pool.upgrade() {
            if self.recycle {
                pool.borrow_mut().give_back(self.buffer.clone());
            } else {
                pool.borrow_mut().retire(self.buffer.clone());
            }
        }
    }
}

/// Where a tensor's elements live.
#[derive(Clone)]
pub(crate) enum Storage {
    Gpu(Rc<GpuBuffer>),
    Cpu(Rc<CpuBuffer>),
}

/// A tensor on a [`crate::Device`]. Cloning is cheap and shares the storage;
/// [`Tensor::reshape`] is a view. Tensors are row-major and contiguous; images are NCHW.
#[derive(Clone)]
pub struct Tensor {
    pub(crate) storage: Storage,
    shape: Vec<usize>,
    dtype: DType,
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tensor({:?}, {:?})", self.shape, self.dtype)
    }
}

impl Tensor {
    pub(crate) fn new(storage: Storage, shape: Vec<usize>, dtype: DType) -> Self {
        Tensor { storage, shape, dtype }
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Size of dimension `d`; negative `d` counts from the end.
    pub fn dim(&self, d: isize) -> usize {
        let i = if d < 0 { self.shape.len() as isize + d } else { d };
        self.shape[i as usize]
    }

    /// The same data seen with another shape of the same element count.
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor> {
        let n: usize = shape.iter().product();
        if n != self.numel() {
            return shape_err!("cannot reshape {:?} ({} elements) to {:?}", self.shape, self.numel(), shape);
        }
        Ok(Tensor { storage: self.storage.clone(), shape: shape.to_vec(), dtype: self.dtype })
    }

    /// The first `n` elements as a 1-D view.
    pub(crate) fn prefix(&self, n: usize) -> Tensor {
        debug_assert!(n <= self.numel());
        Tensor { storage: self.storage.clone(), shape: vec![n], dtype: self.dtype }
    }

    /// The GPU buffer; an error for a tensor of the CPU backend.
    pub(crate) fn buffer(&self) -> Result<&wgpu::Buffer> {
        match &self.storage {
            Storage::Gpu(b) => Ok(&b.buffer),
            Storage::Cpu(_) => Err(other_device()),
        }
    }

    /// The host memory; an error for a tensor on a GPU.
    pub(crate) fn cpu(&self) -> Result<&CpuBuffer> {
        match &self.storage {
            Storage::Cpu(b) => Ok(b),
            Storage::Gpu(_) => Err(other_device()),
        }
    }

    /// Fails unless the tensor is f32 (activations must be).
    pub(crate) fn expect_f32(&self, what: &str) -> Result<()> {
        if self.dtype != DType::F32 {
            return shape_err!("{what} must be f32, got {:?}", self.dtype);
        }
        Ok(())
    }
}

fn other_device() -> Error {
    Error::Shape("a tensor made on one device was given to another (GPU and CPU tensors do not mix)".into())
}
