//! The models, one struct per PyTorch module, and what a weights file holds: which model,
//! its configuration, each tensor checked against the tensor list the configuration
//! implies ([`Checkpoint`]); and the converter to safetensors.

mod checkpoint;
pub mod clip;
pub mod unet;

pub use checkpoint::{convert, Checkpoint, ConvertOptions, ModelKind, StoreDType, Summary, META_CONFIG, META_MODEL};
