//! DA-CLIP: CLIP (image and text towers) plus the controller (spec sections 2-3).

mod config;

pub use config::{DaClipConfig, TextConfig, VisionConfig};
