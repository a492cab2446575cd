//! What a weights file holds (DA-CLIP or the restoration UNet, and its configuration),
//! checked tensor by tensor against the architecture; and the converter to safetensors.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use std::io::Write;

use super::clip::{DaClipConfig, STORED_TEXT_FEATURES};
use super::unet::UNetConfig;
use crate::error::{Error, Result};
use crate::weights::{HostDType, Source, TensorSpec, Weights};

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
    /// Reads the index of `bytes` (.pt/.pth or safetensors), finds which model it is and checks every
    /// tensor's name and shape. `clip_config` describes a DA-CLIP checkpoint that carries
    /// no config of its own (every .pt); without it the config is read off the tensor
    /// shapes ([`DaClipConfig::infer`]).
    pub fn parse(bytes: &'a [u8], clip_config: Option<DaClipConfig>) -> Result<Checkpoint<'a>> {
        Checkpoint::read(bytes, clip_config)
    }

    /// [`Checkpoint::parse`] of a file read piece by piece (see [`Source`]).
    pub fn read(source: impl Source + 'a, clip_config: Option<DaClipConfig>) -> Result<Checkpoint<'a>> {
        let mut weights = Weights::read(source)?;
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
    pub bytes_in: u64,
    pub bytes_out: u64,
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

impl StoreDType {
    fn safetensors(self) -> safetensors::Dtype {
        match self {
            StoreDType::F32 => safetensors::Dtype::F32,
            StoreDType::F16 => safetensors::Dtype::F16,
        }
    }

    fn size(self) -> usize {
        match self {
            StoreDType::F32 => 4,
            StoreDType::F16 => 2,
        }
    }

    fn encode(self, values: &[f32]) -> Vec<u8> {
        match self {
            StoreDType::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            StoreDType::F16 => values.iter().flat_map(|v| half::f16::from_f32(*v).to_le_bytes()).collect(),
        }
    }
}

/// The safetensors header of `tensors` (name, shape; all in `dtype`, their data in this
/// order): the keys sorted, padded with spaces to a multiple of 8 bytes, as the
/// safetensors crate lays out a file of one dtype, so that a conversion gives the same
/// bytes every time (the fuzzer's crashers are edits at offsets of such a file).
fn safetensors_header(tensors: &[(String, Vec<usize>)], dtype: StoreDType, metadata: HashMap<String, String>) -> Vec<u8> {
    let mut header: BTreeMap<String, serde_json::Value> = BTreeMap::new();
    header.insert("__metadata__".into(), serde_json::to_value(metadata.into_iter().collect::<BTreeMap<_, _>>()).expect("strings"));
    let mut offset = 0;
    for (name, shape) in tensors {
        let len = shape.iter().product::<usize>() * dtype.size();
        let info = safetensors::tensor::TensorInfo { dtype: dtype.safetensors(), shape: shape.clone(), data_offsets: (offset, offset + len) };
        header.insert(name.clone(), serde_json::to_value(info).expect("a tensor's info"));
        offset += len;
    }
    let mut json = serde_json::to_vec(&header).expect("a JSON header");
    json.resize(json.len().next_multiple_of(8), b' ');
    let mut out = (json.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&json);
    out
}

/// Converts a checkpoint (.pt/.pth or safetensors) to a checked safetensors file in
/// `options.dtype`, with the model and its config in the metadata, written to `out` one
/// tensor at a time: memory holds the index and one tensor, whatever the file's size.
pub fn convert(source: &dyn Source, options: ConvertOptions, out: &mut dyn Write) -> Result<Summary> {
    let dtype = options.dtype;
    let mut ckpt = Checkpoint::read(source, options.clip_config)?;
    if let Some(features) = &options.text_features {
        let ModelKind::DaClip(config) = &mut ckpt.kind else {
            return Err(Error::WeightsMismatch("--no-text applies to DA-CLIP checkpoints only".into()));
        };
        if features.len() != 10 * config.embed_dim {
            return Err(Error::Shape(format!("expected 10 x {} text features, got {} values", config.embed_dim, features.len())));
        }
        config.text_cfg = None;
    }
    let text_features = options.text_features.as_ref().map(|f| (STORED_TEXT_FEATURES.to_string(), vec![10, f.len() / 10]));
    // Every name is of one dtype, so the data lies in name order (the safetensors crate's).
    let mut tensors: Vec<(String, Vec<usize>)> = ckpt
        .weights
        .tensors()
        .filter(|(name, _)| options.text_features.is_none() || !DaClipConfig::is_text_tensor(name))
        .map(|(name, t)| (name.to_string(), t.shape.clone()))
        .chain(text_features)
        .collect();
    tensors.sort();
    let mut metadata = ckpt.kind.metadata();
    metadata.insert("format".to_string(), "pt".to_string());
    let header = safetensors_header(&tensors, dtype, metadata);
    let write = |out: &mut dyn Write, bytes: &[u8]| out.write_all(bytes).map_err(|e| Error::Io(format!("writing the converted file: {e}")));
    write(out, &header)?;
    let mut parameters = 0;
    let mut bytes_out = header.len() as u64;
    for (name, shape) in &tensors {
        let values = match &options.text_features {
            Some(features) if name == STORED_TEXT_FEATURES => Cow::Borrowed(features.as_slice()),
            _ => Cow::Owned(ckpt.weights.load(name)?.to_f32()?),
        };
        debug_assert_eq!(values.len(), shape.iter().product::<usize>());
        let data = dtype.encode(&values);
        write(out, &data)?;
        parameters += values.len();
        bytes_out += data.len() as u64;
    }
    out.flush().map_err(|e| Error::Io(format!("writing the converted file: {e}")))?;
    Ok(Summary {
        model: ckpt.kind.label(),
        tensors: tensors.len(),
        parameters,
        aliases_dropped: ckpt.aliases_dropped,
        bytes_in: source.len(),
        bytes_out,
    })
}
