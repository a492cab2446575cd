//! Named tensors out of a `torch.save` archive (`<name>/data.pkl` plus one raw storage
//! per `<name>/data/<key>`), as places in the file: only the pickle is read here.

use std::collections::HashMap;

use super::pickle::{self, StorageType, TensorRef, Value};
use super::source::Source;
use super::{zip, HostDType, TensorInfo};
use crate::error::{Error, Result};

fn bad(msg: impl std::fmt::Display) -> Error {
    Error::Checkpoint(msg.to_string())
}

/// The tensors of the state dict in `bytes`: a bare state dict or one wrapped as
/// `{"state_dict": ...}`; a `module.` prefix (DataParallel) is removed; entries that are
/// not tensors (optimizer state, epochs, ...) are ignored.
pub fn read(src: &dyn Source) -> Result<Vec<(String, TensorInfo)>> {
    let entries = zip::entries(src)?;
    let pkl = entries
        .iter()
        .find(|e| e.name.ends_with("data.pkl"))
        .ok_or_else(|| bad("the archive has no data.pkl: not a torch.save checkpoint"))?;
    let root = &pkl.name[..pkl.name.len() - "data.pkl".len()];
    if let Some(order) = entries.iter().find(|e| e.name.ends_with("byteorder")) {
        if *src.read_at(order.offset, order.size.min(16))? != *b"little" {
            return Err(bad("the checkpoint was saved on a big-endian machine; re-save it on a little-endian one"));
        }
    }
    let storages: HashMap<&str, &zip::Entry> = entries
        .iter()
        .filter_map(|e| e.name.strip_prefix(root).and_then(|n| n.strip_prefix("data/")).map(|k| (k, e)))
        .collect();

    let mut dict = pickle::load(&src.read_at(pkl.offset, pkl.size)?)?;
    if let Value::Dict(d) = &dict {
        let inner = d.borrow().iter().find(|(k, _)| matches!(k, Value::Str(s) if s == "state_dict")).map(|(_, v)| v.clone());
        if let Some(inner @ Value::Dict(_)) = inner {
            dict = inner;
        }
    }
    let Value::Dict(d) = dict else {
        return Err(bad("the checkpoint does not hold a state dict (a dict of tensors)"));
    };
    let mut out = Vec::new();
    for (k, v) in d.borrow().iter() {
        let (Value::Str(name), Value::Tensor(t)) = (k, v) else { continue };
        let name = name.strip_prefix("module.").unwrap_or(name).to_string();
        let tensor = view(&name, t, &storages)?;
        out.push((name, tensor));
    }
    Ok(out)
}

fn view(name: &str, t: &TensorRef, storages: &HashMap<&str, &zip::Entry>) -> Result<TensorInfo> {
    let dtype = match t.storage_type {
        StorageType::F32 => HostDType::F32,
        StorageType::F16 => HostDType::F16,
        StorageType::BF16 => HostDType::BF16,
        StorageType::I64 => HostDType::I64,
        StorageType::Other(s) => return Err(bad(format!("tensor `{name}` is stored as {s}; only float32, float16, bfloat16 and int64 are supported"))),
    };
    let storage = storages
        .get(t.storage_key.as_str())
        .ok_or_else(|| bad(format!("tensor `{name}`: storage {} is missing from the archive (truncated file?)", t.storage_key)))?;
    // Row-major strides; dimensions of size 1 may carry any stride.
    let mut expect = 1;
    for (&dim, &stride) in t.shape.iter().zip(&t.stride).rev() {
        if dim != 1 && stride != expect {
            return Err(bad(format!("tensor `{name}` is not contiguous (shape {:?}, stride {:?}); save `.contiguous()` tensors", t.shape, t.stride)));
        }
        expect *= dim;
    }
    // Checked: a shape's product may overflow (the more so in wasm32's 32-bit usize).
    let numel = t.shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
    let size = dtype.size();
    let start = t.offset.checked_mul(size);
    let end = start.and_then(|s| numel.and_then(|n| n.checked_mul(size)).and_then(|n| s.checked_add(n)));
    match (start, end) {
        (Some(s), Some(e)) if e <= storage.size => Ok(TensorInfo { dtype, shape: t.shape.clone(), offset: storage.offset + s as u64, len: e - s }),
        _ => Err(bad(format!("tensor `{name}` ({:?} at offset {}) lies outside its storage of {} bytes", t.shape, t.offset, storage.size))),
    }
}
