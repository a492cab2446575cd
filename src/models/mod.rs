//! The models, one struct per PyTorch module. So far: their configurations and the exact
//! tensor list each configuration implies, used to check checkpoints by name and shape.

pub mod clip;
pub mod unet;

/// Expected tensors of a model: (state-dict key, shape), in a stable order.
pub type TensorSpec = Vec<(String, Vec<usize>)>;
