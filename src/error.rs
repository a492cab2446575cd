//! The one error type of the crate. Every failure a caller can cause or meet (no adapter,
//! a GPU validation or out-of-memory error, a shape that does not fit a kernel) comes back
//! as a value of this type; the library never panics on bad input.

use std::fmt;

#[derive(Debug, Clone, PartialEq)]
pub enum Error {
    /// No GPU adapter could be found (or, in a browser, WebGPU is not available).
    NoAdapter(String),
    /// The adapter refused to create a device.
    RequestDevice(String),
    /// WebGPU reported a validation error (a bug in a launcher or a limit exceeded).
    Validation(String),
    /// The GPU ran out of memory.
    OutOfMemory(String),
    /// The device was lost (driver reset, tab in the background for too long, ...).
    DeviceLost(String),
    /// Reading a buffer back from the GPU failed.
    Readback(String),
    /// Tensor shapes or dtypes do not fit the operation.
    Shape(String),
    /// A tensor would exceed what one buffer binding may hold on this device.
    TooLarge(String),
    /// A weights file could not be read (truncated, not a checkpoint, unsafe content).
    Checkpoint(String),
    /// A weights file was read but does not fit the model: every missing, unexpected or
    /// wrongly shaped tensor is named.
    WeightsMismatch(String),
    /// A file could not be read or written.
    Io(String),
    /// The command line was not understood.
    Usage(String),
    /// A helper worker sharing a restore's tiles failed (in the browser).
    Helper(String),
    /// The caller cancelled the work.
    Cancelled,
    /// A result contained NaN or infinity.
    NonFinite(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NoAdapter(m) => write!(f, "no GPU adapter: {m}"),
            Error::RequestDevice(m) => write!(f, "could not create a GPU device: {m}"),
            Error::Validation(m) => write!(f, "GPU validation error: {m}"),
            Error::OutOfMemory(m) => write!(f, "GPU out of memory: {m}"),
            Error::DeviceLost(m) => write!(f, "GPU device lost: {m}"),
            Error::Readback(m) => write!(f, "GPU readback failed: {m}"),
            Error::Shape(m) => write!(f, "shape error: {m}"),
            Error::TooLarge(m) => write!(f, "tensor too large for this GPU: {m}"),
            Error::Checkpoint(m) => write!(f, "cannot read weights: {m}"),
            Error::WeightsMismatch(m) => write!(f, "weights do not fit the model: {m}"),
            Error::Io(m) => write!(f, "{m}"),
            Error::Usage(m) => write!(f, "{m}"),
            Error::Helper(m) => write!(f, "a helper worker failed: {m}"),
            Error::Cancelled => write!(f, "cancelled"),
            Error::NonFinite(m) => write!(f, "{m}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<wgpu::Error> for Error {
    fn from(e: wgpu::Error) -> Self {
        match e {
            wgpu::Error::OutOfMemory { .. } => Error::OutOfMemory(e.to_string()),
            // The description carries the details (which binding, which limit).
            wgpu::Error::Validation { description, .. } => Error::Validation(description),
            other => Error::Validation(other.to_string()),
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// Returns a [`Error::Shape`] with a formatted message.
macro_rules! shape_err {
    ($($arg:tt)*) => { Err($crate::error::Error::Shape(format!($($arg)*))) };
}
pub(crate) use shape_err;
