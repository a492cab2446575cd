//! Opening a device. [`Device`]'s constructors live here, above the ops, because before a
//! GPU is used its kernels for products with f16 weights (cooperative matrices, f16
//! tiles) must pass a check that runs them: one product and one convolution on small
//! integers, exact in f16 and in f32 sums in any order, so the results must equal the
//! host's bit for bit. A driver that miscompiles the kernels (they are tested on lavapipe,
//! not on every GPU) must cost speed, not give wrong images.

use super::{conv2d, linear, rounds_activations_to_f16, runs_on_f16_tiles, Conv2dArgs};
#[cfg(not(target_arch = "wasm32"))]
use crate::device::block_on;
use crate::device::{Device, DeviceChoice, GpuOptions};
use crate::error::Result;

impl Device {
    /// Opens the best GPU adapter: natively any wgpu backend (Vulkan, Metal, DX12, GL),
    /// in the browser WebGPU.
    pub async fn new() -> Result<Device> {
        Self::new_with(GpuOptions::default()).await
    }

    /// [`Device::new`] with what it may use of the adapter's optional features.
    pub async fn new_with(options: GpuOptions) -> Result<Device> {
        Self::open_with(DeviceChoice::Gpu, options).await
    }

    /// [`Device::new`] for native callers that are not async.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn new_blocking() -> Result<Device> {
        block_on(Self::new())
    }

    /// Opens the backend `choice` names; [`DeviceChoice::Auto`] takes a hardware GPU and
    /// falls back to the CPU backend, saying why in [`Device::reason`].
    pub async fn open(choice: DeviceChoice) -> Result<Device> {
        Self::open_with(choice, GpuOptions::default()).await
    }

    /// [`Device::open`] with what a GPU may use of the adapter's optional features. The
    /// kernels for products with f16 weights (cooperative matrices, else f16 tiles, where
    /// it has them) first pass the check; where they fail it they are not used (the next
    /// family runs: f16 tiles, then the f32 kernels) and [`Device::reason`] says why.
    pub async fn open_with(choice: DeviceChoice, options: GpuOptions) -> Result<Device> {
        let mut dev = Device::open_unchecked(choice, options).await?;
        if dev.cooperative_matrix().is_some() {
            if let Err(why) = check_f16_products(&dev).await {
                dev.disable_cooperative_matrix(&format!("its cooperative matrices failed the device's check ({why}), so they are not used"));
            }
        }
        if runs_on_f16_tiles(&dev, 64, true) {
            if let Err(why) = check_f16_products(&dev).await {
                dev.disable_shader_f16(&format!("its f16 tiles failed the device's check ({why}), so they are not used"));
            }
        }
        dev.release_free_buffers();
        Ok(dev)
    }

    #[cfg(not(target_arch = "wasm32"))]
    pub fn open_blocking(choice: DeviceChoice) -> Result<Device> {
        block_on(Self::open(choice))
    }
}

/// A small integer from -2 to 2 for index `i`, varied by `salt`.
fn small(i: usize, salt: usize) -> f32 {
    ((i * 7 + salt * 3 + i / 5) % 5) as f32 - 2.0
}

/// Ok where both kernels give the exact results, else what went wrong.
async fn check_f16_products(dev: &Device) -> std::result::Result<(), String> {
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
