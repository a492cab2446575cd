//! The restoration UNet (ConditionalUNet, spec section 4).

mod config;

pub use config::UNetConfig;
