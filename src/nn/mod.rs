//! Building blocks composed from several kernels.

mod linear_attention;

pub use linear_attention::linear_attention;
