//! Weights in: the published PyTorch checkpoints (`torch.save` zip archives, read
//! without Python by a restricted unpickler) and safetensors files (ours after
//! `daclip-webgpu convert`, or any with the same keys), checked by name and shape against
//! the model, then streamed to the GPU one tensor at a time.

mod checkpoint;
mod pickle;
mod random;
mod torch;
mod zip;

pub use checkpoint::{convert, Checkpoint, Conversion, ConvertOptions, ModelKind, StoreDType, Summary, META_CONFIG, META_MODEL};
pub use random::random_safetensors;

use std::collections::BTreeMap;
use std::fmt::Display;

use crate::error::{Error, Result};
use crate::device::{Device, Tensor};

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

/// A tensor as it lies in a weights file: little-endian bytes, borrowed from the file.
#[derive(Debug, Clone)]
pub struct HostTensor<'a> {
    pub dtype: HostDType,
    pub shape: Vec<usize>,
    pub data: &'a [u8],
}

impl HostTensor<'_> {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// The values as f32 (integers are refused: no model weight is an integer).
    pub fn to_f32(&self) -> Result<Vec<f32>> {
        let d = self.data;
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

/// The named tensors of one weights file, borrowing its bytes.
pub struct Weights<'a> {
    pub format: Format,
    tensors: BTreeMap<String, HostTensor<'a>>,
    metadata: BTreeMap<String, String>,
}

/// Whether `bytes` look like a `torch.save` file (a zip archive) rather than safetensors.
pub fn is_torch_archive(bytes: &[u8]) -> bool {
    bytes.starts_with(b"PK\x03\x04")
}

impl<'a> Weights<'a> {
    /// Reads a `torch.save` archive (.pt/.pth) or a safetensors file, told apart by
    /// their first bytes.
    pub fn parse(bytes: &'a [u8]) -> Result<Weights<'a>> {
        if is_torch_archive(bytes) {
            let tensors = torch::read(bytes)?.into_iter().collect();
            return Ok(Weights { format: Format::Torch, tensors, metadata: BTreeMap::new() });
        }
        if bytes.len() >= 2 && bytes[0] == 0x80 && bytes[1] <= 5 {
            return Err(Error::Checkpoint(
                "this is a checkpoint in PyTorch's legacy (pre-1.6) format; re-save it with a current torch.save".into(),
            ));
        }
        let st = safetensors::SafeTensors::deserialize(bytes).map_err(|e| {
            Error::Checkpoint(format!("neither a torch.save archive nor a valid safetensors file ({e})"))
        })?;
        let mut tensors = BTreeMap::new();
        for (name, view) in st.iter() {
            let dtype = match view.dtype() {
                safetensors::Dtype::F32 => HostDType::F32,
                safetensors::Dtype::F16 => HostDType::F16,
                safetensors::Dtype::BF16 => HostDType::BF16,
                safetensors::Dtype::I64 => HostDType::I64,
                other => return Err(Error::Checkpoint(format!("tensor `{name}` has dtype {other:?}; only F32, F16, BF16 and I64 are supported"))),
            };
            tensors.insert(name.to_string(), HostTensor { dtype, shape: view.shape().to_vec(), data: view.data() });
        }
        let (_, header) = safetensors::SafeTensors::read_metadata(bytes).map_err(|e| Error::Checkpoint(e.to_string()))?;
        let metadata = header.metadata().clone().unwrap_or_default().into_iter().collect();
        Ok(Weights { format: Format::Safetensors, tensors, metadata })
    }

    pub fn get(&self, name: &str) -> Option<&HostTensor<'a>> {
        self.tensors.get(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    pub fn tensors(&self) -> impl Iterator<Item = (&str, &HostTensor<'a>)> {
        self.tensors.iter().map(|(k, v)| (k.as_str(), v))
    }

    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }

    pub(crate) fn remove(&mut self, name: &str) -> Option<HostTensor<'a>> {
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
/// key. Each call uploads one tensor, so host memory holds the file plus one tensor.
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

    pub fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.weights.get(&self.key(name)).is_some()
    }

    /// The host tensor `name`, checked to have `shape`.
    pub fn host(&self, name: &str, shape: &[usize]) -> Result<&'w HostTensor<'a>> {
        let key = self.key(name);
        let t = self.weights.get(&key).ok_or_else(|| Error::WeightsMismatch(format!("missing tensor `{key}`")))?;
        if t.shape != shape {
            return Err(Error::WeightsMismatch(format!("tensor `{key}` has shape {:?}, expected {shape:?}", t.shape)));
        }
        Ok(t)
    }

    /// Uploads `name` (checked to have `shape`) in this builder's GPU dtype.
    pub fn tensor(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let t = self.host(name, shape)?;
        match self.dtype {
            DeviceDType::F32 => self.dev.upload(shape, &t.to_f32()?),
            DeviceDType::F16 => self.dev.upload_f16_bits(shape, &t.to_f16()?),
        }
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
