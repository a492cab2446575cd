//! The native command-line tool. (Built for wasm32 too, as every bin target is when the
//! crate's tests are, but there it is empty: the browser gets the library instead.)
#![cfg_attr(target_arch = "wasm32", allow(dead_code, unused_imports))]

#[cfg(not(target_arch = "wasm32"))]
mod bench;
#[cfg(not(target_arch = "wasm32"))]
mod classify;
#[cfg(not(target_arch = "wasm32"))]
mod convert;
#[cfg(not(target_arch = "wasm32"))]
mod restore;

use std::process::ExitCode;

#[cfg(target_arch = "wasm32")]
fn main() {}

const USAGE: &str = "daclip-webgpu: DA-CLIP image restoration on WebGPU

USAGE:
    daclip-webgpu convert <in.pt|.pth> -o <out.safetensors> [--dtype f16|f32] [--clip-config config.json] [--no-text]
                             check a published checkpoint against the architecture and
                             write it as safetensors (default f16) with its config;
                             --no-text drops DA-CLIP's text tower and keeps the text
                             features of the ten trained degradation names
    daclip-webgpu classify <image.png|jpg> --daclip <weights> [--labels \"a,b,...\"] [--json] [--device D]
                             rank the degradations of an image (weights: .safetensors,
                             .pt); --json also prints both feature vectors
    daclip-webgpu restore <in.png|jpg> -o <out.png|jpg> --daclip <weights> --unet <weights>
                          [--steps N] [--seed S] [--sampler NAME] [--grid linspace|logsnr]
                          [--tile N] [--overlap N] [--device D]
                             restore an image (default: the published posterior sampler,
                             100 steps, seed 0). Samplers: posterior, sde, and the fast MR
                             Sampler mr-ode1, mr-ode2, mr-sde1, mr-sde2 (10-20 steps);
                             --grid picks the MR time grid (default logsnr). Images larger
                             than a tile (default 256 px for the published UNet, overlap
                             a quarter of it) are restored in tiles blended at every step
    daclip-webgpu bench [--kernels | --restore | --tiled WxH [--tile N]] [--device D]
                             print kernel and model timings on the device (seeded random weights); --kernels stops after the
                             kernels; --restore adds whole restores of a 64x64 image: the
                             published posterior sampler (100 steps) against the MR
                             Sampler (mr-ode2, 10 and 20); --tiled WxH times only one
                             sampler step of a WxH image in tiles, with its peak memory
    daclip-webgpu info       print the device, its limits and features

Every command that computes takes --device auto|gpu|cpu: auto (the default) runs on a
hardware GPU and on the CPU backend where there is none or only a software adapter
(lavapipe); stderr says which runs and why. Set WGPU_BACKEND=vulkan|metal|dx12|gl to
choose the GPU backend.";

#[cfg(not(target_arch = "wasm32"))]
fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("bench") => bench::run(&args[1..]),
        Some("convert") => convert::run(&args[1..]),
        Some("classify") => classify::run(&args[1..]),
        Some("restore") => restore::run(&args[1..]),
        Some("info") => info(&args[1..]),
        Some("-h" | "--help" | "help") | None => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Some(other) => {
            eprintln!("unknown command '{other}'\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A command-line mistake, with the command's usage.
#[cfg(not(target_arch = "wasm32"))]
fn usage_error(msg: &str, usage: &str) -> daclip_webgpu::Error {
    daclip_webgpu::Error::Usage(format!("{msg}\nusage: {usage}"))
}

#[cfg(not(target_arch = "wasm32"))]
fn read_file(path: &str) -> daclip_webgpu::Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| daclip_webgpu::Error::Io(format!("{path}: {e}")))
}

/// An 8-bit RGB image decoded from a PNG or JPEG file.
#[cfg(not(target_arch = "wasm32"))]
struct LoadedImage {
    width: usize,
    height: usize,
    rgb: Vec<u8>,
}

#[cfg(not(target_arch = "wasm32"))]
impl LoadedImage {
    fn as_ref(&self) -> daclip_webgpu::models::clip::preprocess::ImageRef<'_> {
        daclip_webgpu::models::clip::preprocess::ImageRef { width: self.width, height: self.height, channels: 3, data: &self.rgb }
    }
}

#[cfg(not(target_arch = "wasm32"))]
fn load_image(path: &str) -> daclip_webgpu::Result<LoadedImage> {
    let img = image::open(path).map_err(|e| daclip_webgpu::Error::Io(format!("{path}: cannot read the image ({e}); PNG and JPEG are supported")))?;
    let rgb = img.to_rgb8();
    Ok(LoadedImage { width: rgb.width() as usize, height: rgb.height() as usize, rgb: rgb.into_raw() })
}

/// Opens the device `--device` names (`auto` unless given) and says on stderr which one
/// runs and why.
#[cfg(not(target_arch = "wasm32"))]
fn open_device(choice: Option<&str>) -> daclip_webgpu::Result<daclip_webgpu::Device> {
    let choice = daclip_webgpu::device::DeviceChoice::parse(choice.unwrap_or("auto"))?;
    let dev = daclip_webgpu::Device::open_blocking(choice)?;
    eprintln!("device: {} ({})", dev.info(), dev.reason());
    Ok(dev)
}

#[cfg(not(target_arch = "wasm32"))]
fn info(args: &[String]) -> daclip_webgpu::Result<()> {
    let device = match args {
        [] => None,
        [flag, d] if flag == "--device" => Some(d.as_str()),
        _ => return Err(usage_error("unexpected arguments", "daclip-webgpu info [--device auto|gpu|cpu]")),
    };
    let dev = open_device(device)?;
    let info = dev.info();
    let l = &info.limits;
    println!("adapter:   {info}");
    println!("software:  {}", info.is_software);
    println!("limits:    {} invocations/workgroup, {} B workgroup storage, {} storage buffers/stage, {} MiB/binding, {} MiB/buffer",
        l.max_compute_invocations_per_workgroup, l.max_compute_workgroup_storage_size,
        l.max_storage_buffers_per_shader_stage, l.max_storage_buffer_binding_size >> 20, l.max_buffer_size >> 20);
    println!("features:  {}", info.features.join(", "));
    Ok(())
}
