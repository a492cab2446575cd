//! Weights in: the published PyTorch checkpoints (`torch.save` zip archives, read
//! without Python by a restricted unpickler) and safetensors files (ours after
//! `daclip-webgpu convert`, or any with the same keys), indexed by name, read one tensor
//! at a time and streamed to the device. What the tensors mean is the models' business
//! (`crate::models::Checkpoint` checks them against a model); this module knows names,
//! shapes and bytes.

mod pickle;
mod random;
mod source;
mod torch;
mod zip;

pub use random::{random_safetensors, SplitMix};
#[cfg(not(target_arch = "wasm32"))]
pub use source::FileSource;
pub use source::{check_range, Source};

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Display;

use crate::error::{Error, Result};
use crate::device::{Device, Tensor};

/// Expected tensors of a model: (state-dict key, shape), in a stable order.
pub type TensorSpec = Vec<(String, Vec<usize>)>;

/// Element types a weights file may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostDType {
    F32,
    F16,
    BF16,
    I64,
}

impl HostDType {
    pub fn size(self) -> usize {
        match self {
            HostDType::F32 => 4,
            HostDType::F16 | HostDType::BF16 => 2,
            HostDType::I64 => 8,
        }
    }
}

/// A tensor's place in a weights file: what the index (pickle or safetensors header)
/// says of it, before any of its bytes are read.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    pub dtype: HostDType,
    pub shape: Vec<usize>,
    offset: u64,
    len: usize,
}

impl TensorInfo {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// A tensor's little-endian bytes, borrowed from a file in memory or read from one on
/// disk.
#[derive(Debug, Clone)]
pub struct HostTensor<'a> {
    pub dtype: HostDType,
    pub shape: Vec<usize>,
    pub data: Cow<'a, [u8]>,
}

impl HostTensor<'_> {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// The values as f32 (integers are refused: no model weight is an integer).
    pub fn to_f32(&self) -> Result<Vec<f32>> {
        let d = &*self.data;
        Ok(match self.dtype {
            HostDType::F32 => d.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect(),
            HostDType::F16 => d.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
            HostDType::BF16 => d.chunks_exact(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
            HostDType::I64 => return Err(Error::WeightsMismatch("an int64 tensor where floats were expected".into())),
        })
    }

    /// The values rounded to f16 (f16 data is passed through unchanged).
    pub fn to_f16(&self) -> Result<Vec<half::f16>> {
        if self.dtype == HostDType::F16 {
            return Ok(self.data.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]])).collect());
        }
        Ok(self.to_f32()?.into_iter().map(half::f16::from_f32).collect())
    }
}

/// Which file format the bytes were in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Torch,
    Safetensors,
}

/// The index of one weights file (every tensor's name, dtype, shape and place) and the
/// file it reads each tensor from when asked.
pub struct Weights<'a> {
    pub format: Format,
    source: Box<dyn Source + 'a>,
    tensors: BTreeMap<String, TensorInfo>,
    metadata: BTreeMap<String, String>,
    /// The tensors [`Weights::load`] read (see [`Weights::unread`]).
    read: RefCell<BTreeSet<String>>,
}

/// Whether a file starting with `head` looks like a `torch.save` file (a zip archive)
/// rather than safetensors.
fn is_torch_archive(head: &[u8]) -> bool {
    head.starts_with(b"PK\x03\x04")
}

/// The largest safetensors header read (the format's own bound).
const MAX_SAFETENSORS_HEADER: u64 = 100_000_000;

impl<'a> Weights<'a> {
    /// Reads the index of a `torch.save` archive (.pt/.pth) or a safetensors file, told
    /// apart by their first bytes. The tensors' bytes are read later, one by one.
    pub fn read(source: impl Source + 'a) -> Result<Weights<'a>> {
        let source: Box<dyn Source + 'a> = Box::new(source);
        let head = source.read_at(0, source.len().min(8) as usize)?;
        if is_torch_archive(&head) {
            let tensors = torch::read(&*source)?.into_iter().collect();
            return Ok(Weights { format: Format::Torch, source, tensors, metadata: BTreeMap::new(), read: RefCell::default() });
        }
        if head.len() >= 2 && head[0] == 0x80 && head[1] <= 5 {
            return Err(Error::Checkpoint(
                "this is a checkpoint in PyTorch's legacy (pre-1.6) format; re-save it with a current torch.save".into(),
            ));
        }
        let invalid = |e: &dyn Display| Error::Checkpoint(format!("neither a torch.save archive nor a valid safetensors file ({e})"));
        if head.len() < 8 {
            return Err(invalid(&"the file is shorter than a safetensors header"));
        }
        let n = u64::from_le_bytes(head[..8].try_into().expect("8 bytes"));
        if n > MAX_SAFETENSORS_HEADER || n + 8 > source.len() {
            return Err(invalid(&format!("a header of {n} bytes in a file of {}", source.len())));
        }
        // The crate's own checks: offsets in order, contiguous, each the size its shape
        // and dtype give.
        let meta: safetensors::tensor::Metadata = serde_json::from_slice(&source.read_at(8, n as usize)?).map_err(|e| invalid(&e))?;
        let data_start = 8 + n;
        let data_len = meta.tensors().values().map(|t| t.data_offsets.1).max().unwrap_or(0) as u64;
        if data_start.checked_add(data_len) != Some(source.len()) {
            return Err(invalid(&format!("the header describes {data_len} bytes of tensors but the file holds {}", source.len() - data_start)));
        }
        let mut tensors = BTreeMap::new();
        for (name, info) in meta.tensors() {
            let dtype = match info.dtype {
                safetensors::Dtype::F32 => HostDType::F32,
                safetensors::Dtype::F16 => HostDType::F16,
                safetensors::Dtype::BF16 => HostDType::BF16,
                safetensors::Dtype::I64 => HostDType::I64,
                other => return Err(Error::Checkpoint(format!("tensor `{name}` has dtype {other:?}; only F32, F16, BF16 and I64 are supported"))),
            };
            let (start, end) = info.data_offsets;
            tensors.insert(name, TensorInfo { dtype, shape: info.shape.clone(), offset: data_start + start as u64, len: end - start });
        }
        let metadata = meta.metadata().clone().unwrap_or_default().into_iter().collect();
        Ok(Weights { format: Format::Safetensors, source, tensors, metadata, read: RefCell::default() })
    }

    /// [`Weights::read`] of a file already in memory.
    pub fn parse(bytes: &'a [u8]) -> Result<Weights<'a>> {
        Weights::read(bytes)
    }

    pub fn get(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.get(name)
    }

    /// Reads the tensor `name` from the file.
    pub fn load(&self, name: &str) -> Result<HostTensor<'_>> {
        let info = self.get(name).ok_or_else(|| Error::WeightsMismatch(format!("missing tensor `{name}`")))?;
        self.read.borrow_mut().insert(name.to_string());
        Ok(HostTensor { dtype: info.dtype, shape: info.shape.clone(), data: self.source.read_at(info.offset, info.len)? })
    }

    /// The tensors never read by [`Weights::load`]: after a model's loader, what the file
    /// holds that the model does not use (tests/weights.rs checks that each model's
    /// expected tensors are exactly what its loader reads).
    pub fn unread(&self) -> Vec<String> {
        let read = self.read.borrow();
        self.tensors.keys().filter(|k| !read.contains(*k)).cloned().collect()
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    pub fn tensors(&self) -> impl Iterator<Item = (&str, &TensorInfo)> {
        self.tensors.iter().map(|(k, v)| (k.as_str(), v))
    }

    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }

    pub(crate) fn remove(&mut self, name: &str) -> Option<TensorInfo> {
        self.tensors.remove(name)
    }
}

/// How weights are kept on the GPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceDType {
    F32,
    /// Packed two per u32: half the memory, read in f32 by the kernels.
    F16,
}

/// A prefix into a checked [`Weights`], as candle's VarBuilder: model code asks for
/// `vb.pp("transformer").pp(i).tensor("attn.in_proj_weight", ..)` and never spells a full
/// key. Each call reads and uploads one tensor, so host memory holds one tensor at a time.
#[derive(Clone)]
pub struct Vb<'w, 'a> {
    weights: &'w Weights<'a>,
    dev: &'w Device,
    dtype: DeviceDType,
    prefix: String,
}

impl<'w, 'a> Vb<'w, 'a> {
    pub fn new(weights: &'w Weights<'a>, dev: &'w Device, dtype: DeviceDType) -> Self {
        Vb { weights, dev, dtype, prefix: String::new() }
    }

    /// The builder one level down: `pp("downs").pp(3)` is `downs.3.`.
    pub fn pp(&self, name: impl Display) -> Self {
        Vb { prefix: format!("{}{name}.", self.prefix), ..self.clone() }
    }

    /// How this builder keeps weights on the device.
    pub fn dtype(&self) -> DeviceDType {
        self.dtype
    }

    pub fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.weights.get(&self.key(name)).is_some()
    }

    /// The host tensor `name`, checked to have `shape`.
    pub fn host(&self, name: &str, shape: &[usize]) -> Result<HostTensor<'w>> {
        let key = self.key(name);
        let t = self.weights.get(&key).ok_or_else(|| Error::WeightsMismatch(format!("missing tensor `{key}`")))?;
        if t.shape != shape {
            return Err(Error::WeightsMismatch(format!("tensor `{key}` has shape {:?}, expected {shape:?}", t.shape)));
        }
        self.weights.load(&key)
    }

    /// Uploads `name` (checked to have `shape`) in this builder's GPU dtype.
    pub fn tensor(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        // Checked before reading: the error names the weight, not an activation. f16
        // weights are packed two per word. The CPU backend has no buffer bindings: its
        // weights may be larger (its activations keep the GPU's limit).
        let per_value = if self.dtype == DeviceDType::F32 { 4 } else { 2 };
        let bytes = shape.iter().product::<usize>().saturating_mul(per_value);
        if !self.dev.is_cpu() && bytes > self.dev.max_tensor_bytes() {
            let max = self.dev.max_tensor_bytes();
            let mib = |b: usize| b as f64 / (1 << 20) as f64;
            return Err(Error::TooLarge(format!(
                "weight `{}` {shape:?} needs {bytes} bytes ({:.2} MiB) but one buffer binding may hold at most {max} ({:.2} MiB) on this device",
                self.key(name),
                mib(bytes),
                mib(max)
            )));
        }
        let t = self.host(name, shape)?;
        let uploaded = match self.dtype {
            DeviceDType::F32 => self.dev.upload(shape, &t.to_f32()?),
            DeviceDType::F16 => self.dev.upload_f16_bits(shape, &t.to_f16()?),
        };
        // A GPU too small for the model: say how far the load got.
        uploaded.map_err(|e| match e {
            Error::OutOfMemory(m) => Error::OutOfMemory(format!(
                "{m} (loading weight `{}` {shape:?}, with {:.0} MiB of tensors already on the device: this GPU cannot hold these weights; try the CPU backend, or the smaller published pair)",
                self.key(name),
                self.dev.memory().live_bytes as f64 / (1 << 20) as f64
            )),
            e => e,
        })
    }

    /// Uploads values derived from the file's tensors (a split or a concatenation) in
    /// this builder's GPU dtype.
    pub fn upload(&self, shape: &[usize], values: &[f32]) -> Result<Tensor> {
        match self.dtype {
            DeviceDType::F32 => self.dev.upload(shape, values),
            DeviceDType::F16 => self.dev.upload_f16(shape, values),
        }
    }

    /// Uploads computed values as f32 whatever this builder's dtype (sums of stored
    /// weights, which rounding to f16 again would change).
    pub fn upload_f32(&self, shape: &[usize], values: &[f32]) -> Result<Tensor> {
        self.dev.upload(shape, values)
    }

    /// Uploads `name` as f32 whatever this builder's dtype (for small vectors that kernels
    /// read as activations, e.g. embeddings added to a stream).
    pub fn tensor_f32(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        self.dev.upload(shape, &self.host(name, shape)?.to_f32()?)
    }
}
