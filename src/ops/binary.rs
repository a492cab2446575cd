
use super::{grid_1d, u32_of};
use crate::error::{shape_err, Result};
use crate::device::{Device, Tensor};
use crate::kernels::{Kernel, BinaryParams};

const WG: usize = 256;


/// How `b` repeats over `a` under PyTorch broadcasting, when its non-1 dimensions form
/// one contiguous block of `a`'s shape (full tensors, per-channel [C, 1, 1] of NCHW,
/// per-column vectors, per-(batch, channel) [B, C, 1, 1], scalars): (b_len, b_inner).
fn broadcast(a: &[usize], b: &[usize]) -> Option<(usize, usize)> {
    if b.len() > a.len() {
        return None;
    }
    let mut padded = vec![1; a.len() - b.len()];
    padded.extend_from_slice(b);
    let first = padded.iter().position(|&d| d != 1).unwrap_or(a.len());
    let end = padded.iter().rposition(|&d| d != 1).map_or(first, |i| i + 1);
    if padded[first..end] != a[first..end] {
        return None;
    }
    Some((padded[first..end].iter().product(), a[end..].iter().product()))
}

fn launch(dev: &Device, op: u32, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    a.expect_f32("left operand")?;
    b.expect_f32("right operand")?;
    let Some((b_len, b_inner)) = broadcast(a.shape(), b.shape()) else {
        return shape_err!("cannot broadcast {:?} onto {:?}", b.shape(), a.shape());
    };
    let out = dev.empty(a.shape())?;
    let n = a.numel();
    let params = BinaryParams { n: u32_of(n, "elements")?, b_len: u32_of(b_len, "elements")?, b_inner: u32_of(b_inner, "elements")?, _pad: 0 };
    dev.dispatch(Kernel::Binary, &[("WG", WG as f64), ("OP", op as f64)], &params, &[a, b, &out], grid_1d(n, WG)?)?;
    Ok(out)
}

/// `a + b`, with `b` broadcast as PyTorch would (see [`broadcast`] for the forms).
pub fn add(dev: &Device, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    launch(dev, 0, a, b)
}

/// `a * b`, with `b` broadcast as in [`add`].
pub fn mul(dev: &Device, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    launch(dev, 1, a, b)
}

/// `a - b`, with `b` broadcast as in [`add`].
pub fn sub(dev: &Device, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    launch(dev, 2, a, b)
}

#[cfg(test)]
mod tests {
    use super::broadcast;

    #[test]
    fn broadcast_forms() {
        assert_eq!(broadcast(&[2, 3, 4, 5], &[2, 3, 4, 5]), Some((120, 1)));
        assert_eq!(broadcast(&[2, 3, 4, 5], &[3, 1, 1]), Some((3, 20)));
        assert_eq!(broadcast(&[2, 3, 4, 5], &[2, 3, 1, 1]), Some((6, 20)));
        assert_eq!(broadcast(&[7, 5], &[5]), Some((5, 1)));
        assert_eq!(broadcast(&[7, 5], &[1]), Some((1, 1)));
        assert_eq!(broadcast(&[7, 5], &[7]), None);
        assert_eq!(broadcast(&[2, 3, 4], &[2, 1, 4]), None);
    }
}
