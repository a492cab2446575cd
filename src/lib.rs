//! daclip-webgpu: DA-CLIP image restoration on WebGPU.
//!
//! The crate is a library of hand-written WGSL compute kernels ([`ops`]), the plumbing that
//! drives them through wgpu ([`device`]), and building blocks composed from them ([`nn`]).
//! The same code runs natively (Vulkan, Metal, DX12) and in the browser (WebGPU).

pub mod error;
pub mod kernels;
pub mod device;
pub mod models;
pub mod nn;
pub mod ops;
#[cfg(not(target_arch = "wasm32"))]
pub mod photo;
pub mod restore;
pub mod sde;
pub mod weights;
#[cfg(target_arch = "wasm32")]
pub mod web;

pub use error::{Error, Result};
pub use device::{AdapterInfo, DType, Device, MemoryStats, Tensor};
