//! What a weights file holds (DA-CLIP or the restoration UNet, and its configuration),
//! checked tensor by tensor against the architecture; and the converter to safetensors.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::{HostDType, Weights};
use crate::error::{Error, Result};
use crate::models::clip::{DaClipConfig, STORED_TEXT_FEATURES};
use crate::models::unet::UNetConfig;
use crate::models::TensorSpec;

/// Metadata keys of the safetensors files this crate writes.
pub const META_MODEL: &str = "daclip_webgpu.model";
pub const META_CONFIG: &str = "daclip_webgpu.config";

#[derive(Debug, Clone, PartialEq)]
pub enum ModelKind {
    DaClip(DaClipConfig),
    UNet(UNetConfig),
}

impl ModelKind {
    pub fn name(&self) -> &'static str {
        match self {
            ModelKind::DaClip(_) => "daclip",
            ModelKind::UNet(_) => "unet",
        }
    }

    fn label(&self) -> &'static str {
        match self {
            ModelKind::DaClip(_) => "DA-CLIP",
            ModelKind::UNet(_) => "restoration UNet",
        }
    }

    /// The safetensors metadata that identifies this model and its config.
    pub fn metadata(&self) -> HashMap<String, String> {
        HashMap::from([(META_MODEL.to_string(), self.name().to_string()), (META_CONFIG.to_string(), self.config_json())])
    }

    fn config_json(&self) -> String {
        match self {
            ModelKind::DaClip(c) => serde_json::to_string(c),
            ModelKind::UNet(c) => serde_json::to_string(c),
        }
        .expect("configs serialise")
    }

    pub fn expected_tensors(&self) -> TensorSpec {
        match self {
            ModelKind::DaClip(c) => c.expected_tensors(),
            ModelKind::UNet(c) => c.expected_tensors(),
        }
    }
}

/// A weights file whose every tensor was checked against the model it belongs to.
pub struct Checkpoint<'a> {
    pub weights: Weights<'a>,
    pub kind: ModelKind,
    /// `visual.*` tensors dropped because they alias `clip.visual.*`.
    pub aliases_dropped: usize,
}

impl<'a> Checkpoint<'a> {
    /// Reads `bytes` (.pt/.pth or safetensors), finds which model it is and checks every
    /// tensor's name and shape. `clip_config` describes a DA-CLIP checkpoint that carries
    /// no config of its own (every .pt); without it the config is read off the tensor
    /// shapes ([`DaClipConfig::infer`]).
    pub fn parse(bytes: &'a [u8], clip_config: Option<DaClipConfig>) -> Result<Checkpoint<'a>> {
        let mut weights = Weights::parse(bytes)?;
        let kind = identify(&weights, clip_config)?;
        let mut aliases_dropped = 0;
        if let ModelKind::DaClip(_) = kind {
            // The original registers CLIP's image tower twice (`clip.visual` and `visual`);
            // torch.save stores the storage once but lists the keys twice.
            let aliases: Vec<String> = weights
                .names()
                .filter(|n| n.starts_with("visual.") && weights.get(&format!("clip.{n}")).is_some())
                .map(str::to_string)
                .collect();
            for n in aliases {
                let (alias, twin) = (weights.get(&n).unwrap(), weights.get(&format!("clip.{n}")).unwrap());
                if alias.shape != twin.shape {
                    return Err(Error::WeightsMismatch(format!("`{n}` should be an alias of `clip.{n}` but has shape {:?} instead of {:?}", alias.shape, twin.shape)));
                }
                weights.remove(&n);
                aliases_dropped += 1;
            }
        }
        check(&weights, &kind)?;
        Ok(Checkpoint { weights, kind, aliases_dropped })
    }
}

/// Which model the file holds, with its configuration checked to be one the model can
/// have.
fn identify(w: &Weights, clip_config: Option<DaClipConfig>) -> Result<ModelKind> {
    let kind = identify_unchecked(w, clip_config)?;
    match &kind {
        ModelKind::DaClip(c) => c.validate()?,
        ModelKind::UNet(c) => c.validate()?,
    }
    Ok(kind)
}

fn identify_unchecked(w: &Weights, clip_config: Option<DaClipConfig>) -> Result<ModelKind> {
    let meta = w.metadata();
    if let (Some(model), Some(config)) = (meta.get(META_MODEL), meta.get(META_CONFIG)) {
        let bad = |e: serde_json::Error| Error::Checkpoint(format!("the file's {META_CONFIG} metadata is not a valid {model} config: {e}"));
        return match model.as_str() {
            "daclip" => Ok(ModelKind::DaClip(serde_json::from_str(config).map_err(bad)?)),
            "unet" => Ok(ModelKind::UNet(serde_json::from_str(config).map_err(bad)?)),
            other => Err(Error::Checkpoint(format!("unknown model `{other}` in the file's metadata"))),
        };
    }
    if w.get("visual_control.conv1.weight").is_some() || w.get("clip.visual.conv1.weight").is_some() {
        let config = match clip_config {
            Some(c) => c,
            None => DaClipConfig::infer(|k| w.get(k).map(|t| t.shape.clone()))?,
        };
        return Ok(ModelKind::DaClip(config));
    }
    if w.get("init_conv.weight").is_some() {
        return Ok(ModelKind::UNet(UNetConfig::infer(|k| w.get(k).map(|t| t.shape.clone()))?));
    }
    let some: Vec<&str> = w.names().take(5).collect();
    Err(Error::WeightsMismatch(format!(
        "neither a DA-CLIP checkpoint (no `visual_control.*` / `clip.visual.*`) nor a restoration UNet (no `init_conv.weight`); \
         it has {} tensors, e.g. {some:?}",
        w.names().count()
    )))
}

/// Compares the file's tensors with the architecture's and names every difference.
fn check(w: &Weights, kind: &ModelKind) -> Result<()> {
    let expected = kind.expected_tensors();
    let expected_names: BTreeSet<&str> = expected.iter().map(|(n, _)| n.as_str()).collect();
    let mut problems = Vec::new();
    for (name, shape) in &expected {
        match w.get(name) {
            None => problems.push(format!("missing `{name}` {shape:?}")),
            Some(t) if &t.shape != shape => problems.push(format!("`{name}` has shape {:?}, expected {shape:?}", t.shape)),
            Some(t) if t.dtype == HostDType::I64 => problems.push(format!("`{name}` is int64, expected floats")),
            Some(_) => {}
        }
    }
    for name in w.names().filter(|n| !expected_names.contains(n)) {
        problems.push(format!("unexpected `{name}` {:?}", w.get(name).unwrap().shape));
    }
    if problems.is_empty() {
        return Ok(());
    }
    const SHOWN: usize = 40;
    let mut msg = format!("{} checkpoint: {} tensor(s) do not fit the architecture", kind.label(), problems.len());
    for p in problems.iter().take(SHOWN) {
        msg.push_str("\n  ");
        msg.push_str(p);
    }
    if problems.len() > SHOWN {
        msg.push_str(&format!("\n  ... and {} more", problems.len() - SHOWN));
    }
    if let ModelKind::DaClip(_) = kind {
        msg.push_str("\n(the configuration was read off the tensor shapes, or given; pass the checkpoint's open_clip config with --clip-config)");
    }
    Err(Error::WeightsMismatch(msg))
}

/// Storage type of a converted file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreDType {
    F16,
    F32,
}

#[derive(Debug, Clone)]
pub struct Summary {
    pub model: &'static str,
    pub tensors: usize,
    pub parameters: usize,
    pub aliases_dropped: usize,
    pub bytes_in: usize,
    pub bytes_out: usize,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {} tensors, {:.1} M parameters", self.model, self.tensors, self.parameters as f64 / 1e6)?;
        if self.aliases_dropped > 0 {
            write!(f, " ({} duplicate visual.* aliases dropped)", self.aliases_dropped)?;
        }
        write!(f, "; {:.1} MB in, {:.1} MB out", self.bytes_in as f64 / 1e6, self.bytes_out as f64 / 1e6)
    }
}

pub struct Conversion {
    pub bytes: Vec<u8>,
    pub summary: Summary,
}

struct Owned {
    dtype: safetensors::Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl safetensors::View for Owned {
    fn dtype(&self) -> safetensors::Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

/// What `convert` writes.
#[derive(Debug, Clone)]
pub struct ConvertOptions {
    pub dtype: StoreDType,
    /// The open_clip config of a DA-CLIP .pt (default: read off its tensor shapes).
    pub clip_config: Option<DaClipConfig>,
    /// DA-CLIP only: drop the text tower and store these text features of the ten
    /// degradations instead (see `models::clip::degradation_text_features`).
    pub text_features: Option<Vec<f32>>,
}

impl ConvertOptions {
    pub fn new(dtype: StoreDType) -> Self {
        ConvertOptions { dtype, clip_config: None, text_features: None }
    }
}

fn encode(values: &[f32], dtype: StoreDType) -> (safetensors::Dtype, Vec<u8>) {
    match dtype {
        StoreDType::F32 => (safetensors::Dtype::F32, values.iter().flat_map(|v| v.to_le_bytes()).collect()),
        StoreDType::F16 => (safetensors::Dtype::F16, values.iter().flat_map(|v| half::f16::from_f32(*v).to_le_bytes()).collect()),
    }
}

/// The safetensors file with its header's keys sorted: the crate writes the metadata in
/// a `HashMap`'s order, which differs from run to run, and a conversion should give the
/// same bytes every time (the fuzzer's crashers are edits at offsets of such a file).
fn with_sorted_header(file: Vec<u8>) -> Vec<u8> {
    let n = u64::from_le_bytes(file[..8].try_into().expect("a header length")) as usize;
    let header: BTreeMap<String, serde_json::Value> = serde_json::from_slice(&file[8..8 + n]).expect("the header the crate wrote");
    let mut json = serde_json::to_vec(&header).expect("a JSON header");
    json.resize(json.len().next_multiple_of(8), b' ');
    let mut out = Vec::with_capacity(8 + json.len() + file.len() - 8 - n);
    out.extend_from_slice(&(json.len() as u64).to_le_bytes());
    out.extend_from_slice(&json);
    out.extend_from_slice(&file[8 + n..]);
    out
}

/// Converts a checkpoint (.pt/.pth or safetensors) to a checked safetensors file in
/// `dtype`, with the model and its config in the metadata.
pub fn convert(bytes: &[u8], options: ConvertOptions) -> Result<Conversion> {
    let dtype = options.dtype;
    let mut ckpt = Checkpoint::parse(bytes, options.clip_config)?;
    let mut tensors = Vec::new();
    let mut parameters = 0;
    if let Some(features) = &options.text_features {
        let ModelKind::DaClip(config) = &mut ckpt.kind else {
            return Err(Error::WeightsMismatch("--no-text applies to DA-CLIP checkpoints only".into()));
        };
        if features.len() != 10 * config.embed_dim {
            return Err(Error::Shape(format!("expected 10 x {} text features, got {} values", config.embed_dim, features.len())));
        }
        config.text_cfg = None;
        let (st_dtype, data) = encode(features, dtype);
        tensors.push((STORED_TEXT_FEATURES.to_string(), Owned { dtype: st_dtype, shape: vec![10, config.embed_dim], data }));
        parameters += features.len();
    }
    for (name, t) in ckpt.weights.tensors() {
        if options.text_features.is_some() && DaClipConfig::is_text_tensor(name) {
            continue;
        }
        parameters += t.numel();
        let (st_dtype, data) = encode(&t.to_f32()?, dtype);
        tensors.push((name.to_string(), Owned { dtype: st_dtype, shape: t.shape.clone(), data }));
    }
    let count = tensors.len();
    let mut metadata = ckpt.kind.metadata();
    metadata.insert("format".to_string(), "pt".to_string());
    let out = safetensors::serialize(tensors, Some(metadata)).map_err(|e| Error::Checkpoint(format!("writing safetensors: {e}")))?;
    let out = with_sorted_header(out);
    Ok(Conversion {
        summary: Summary {
            model: ckpt.kind.label(),
            tensors: count,
            parameters,
            aliases_dropped: ckpt.aliases_dropped,
            bytes_in: bytes.len(),
            bytes_out: out.len(),
        },
        bytes: out,
    })
}
