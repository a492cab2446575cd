//! The restoration UNet (ConditionalUNet, spec section 4).

mod blocks;
mod config;
mod model;

pub use blocks::{Attention, LinearAttention, Resample, ResBlock, ResidualAttention, SpatialTransformer};
pub use config::UNetConfig;
pub use model::{ConditionalUNet, ImageContext, Level, TimeConditioning};
