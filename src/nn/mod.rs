//! Building blocks over the kernels: PyTorch modules with their weights, and composite
//! operations.

mod conv2d;
mod layer_norm;
mod linear;
mod linear_attention;

pub use conv2d::Conv2d;
pub use layer_norm::LayerNorm;
pub use linear::Linear;
pub use linear_attention::{linear_attention, Qkv};
