//! The check a device runs before it trusts the kernels it runs the products with f16
//! weights on (cooperative matrices, f16 tiles): one product and one convolution on small
//! integers, exact in f16 and in f32 sums in any order, so the results must equal the
//! host's bit for bit. A driver that miscompiles the kernels (they are tested on lavapipe,
//! not on every GPU) must cost speed, not give wrong images.

use super::{conv2d, linear, rounds_activations_to_f16, Conv2dArgs};
use crate::device::Device;
use crate::error::Result;

/// A small integer from -2 to 2 for index `i`, varied by `salt`.
fn small(i: usize, salt: usize) -> f32 {
    ((i * 7 + salt * 3 + i / 5) % 5) as f32 - 2.0
}

/// Ok where both kernels give the exact results, else what went wrong.
pub(crate) async fn check_f16_products(dev: &Device) -> std::result::Result<(), String> {
    run(dev).await.map_err(|e| e.to_string())?
}

/// The check's results compared, inside the result of running it.
async fn run(dev: &Device) -> Result<std::result::Result<(), String>> {
    // A Linear of 64 rows, 40 inputs, 48 outputs: two tiles of rows, ragged columns and K.
    let (m, k, n) = (64, 40, 48);
    debug_assert!(rounds_activations_to_f16(dev, m, true));
    let x: Vec<f32> = (0..m * k).map(|i| small(i, 1)).collect();
    let w: Vec<f32> = (0..n * k).map(|i| small(i, 2)).collect();
    let got = linear(dev, &dev.upload(&[m, k], &x)?, &dev.upload_f16(&[n, k], &w)?, None)?;
    let want: Vec<f32> = (0..m * n).map(|o| (0..k).map(|j| x[(o / n) * k + j] * w[(o % n) * k + j]).sum()).collect();
    if let Err(e) = compare("product", &dev.read(&got).await?, &want) {
        return Ok(Err(e));
    }

    // A 3 x 3 convolution of 4 channels of 9 x 11 pixels to 40 channels, zero padding.
    let (cin, h, wd, cout) = (4, 9, 11, 40);
    let img: Vec<f32> = (0..cin * h * wd).map(|i| small(i, 3)).collect();
    let wt: Vec<f32> = (0..cout * cin * 9).map(|i| small(i, 4)).collect();
    let got = conv2d(dev, &dev.upload(&[1, cin, h, wd], &img)?, &dev.upload_f16(&[cout, cin, 3, 3], &wt)?, None, Conv2dArgs::same(3))?;
    let want: Vec<f32> = (0..cout * h * wd)
        .map(|o| {
            let (co, y, xx) = (o / (h * wd), (o / wd) % h, o % wd);
            let mut sum = 0.0;
            for ci in 0..cin {
                for (ky, kx) in (0..3).flat_map(|ky| (0..3).map(move |kx| (ky, kx))) {
                    let (iy, ix) = ((y + ky) as isize - 1, (xx + kx) as isize - 1);
                    if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < wd {
                        sum += img[(ci * h + iy as usize) * wd + ix as usize] * wt[((co * cin + ci) * 3 + ky) * 3 + kx];
                    }
                }
            }
            sum
        })
        .collect();
    Ok(compare("convolution", &dev.read(&got).await?, &want))
}

fn compare(what: &str, got: &[f32], want: &[f32]) -> std::result::Result<(), String> {
    match got.iter().zip(want).position(|(g, w)| g != w) {
        None => Ok(()),
        Some(i) => Err(format!("the {what} gave {} where {} is exact (value {i})", got[i], want[i])),
    }
}
