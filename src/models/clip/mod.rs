//! DA-CLIP: CLIP (image and text towers) plus the controller (spec sections 2-3), and the
//! image preprocessing and tokenizer that feed it.

mod clean;
mod config;
mod daclip;
mod generated;
pub mod preprocess;
mod text;
pub mod tokenizer;
mod transformer;
mod vision;

pub use config::{DaClipConfig, TextConfig, VisionConfig, DEGRADATIONS, STORED_TEXT_FEATURES};
pub use daclip::{degradation_text_features, probabilities, Classification, DaClip, ImageEncoding};
pub use text::TextTransformer;
pub use transformer::{MultiheadAttention, ResidualAttentionBlock, Transformer};
pub use vision::VisionTransformer;
