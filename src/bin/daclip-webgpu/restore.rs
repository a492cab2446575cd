//! `daclip-webgpu restore <in.png|jpg> -o <out.png|jpg> --daclip <w> --unet <w> [--steps N] [--seed S] [--sampler posterior|sde]`

use std::io::Write;
use std::time::Instant;

use daclip_webgpu::restore::{RestoreOptions, Restorer};
use daclip_webgpu::weights::{Checkpoint, GpuDType};
use daclip_webgpu::{gpu::block_on, Error, Gpu, Result};

use crate::{load_image, read_file, usage_error};

const USAGE: &str = "daclip-webgpu restore <in.png|jpg> -o <out.png|jpg> --daclip <weights> --unet <weights> [--steps N] [--seed S] [--sampler posterior|sde|mr-ode1|mr-ode2|mr-sde1|mr-sde2] [--grid linspace|logsnr]";

pub fn run(args: &[String]) -> Result<()> {
    let (mut input, mut output, mut daclip, mut unet) = (None, None, None, None);
    let mut options = RestoreOptions::default();
    let mut it = args.iter();
    let value = |it: &mut std::slice::Iter<String>, what: &str| it.next().cloned().ok_or_else(|| usage_error(&format!("{what} needs a value"), USAGE));
    while let Some(a) = it.next() {
        match a.as_str() {
            "-o" | "--output" => output = Some(value(&mut it, "-o")?),
            "--daclip" => daclip = Some(value(&mut it, "--daclip")?),
            "--unet" => unet = Some(value(&mut it, "--unet")?),
            "--steps" => options.steps = value(&mut it, "--steps")?.parse().map_err(|_| usage_error("--steps takes a number", USAGE))?,
            "--seed" => options.seed = value(&mut it, "--seed")?.parse().map_err(|_| usage_error("--seed takes a number", USAGE))?,
            "--sampler" => options.sampler = value(&mut it, "--sampler")?.parse()?,
            "--grid" => options.grid = value(&mut it, "--grid")?.parse()?,
            s if s.starts_with('-') => return Err(usage_error(&format!("unknown option {s}"), USAGE)),
            s if input.is_none() => input = Some(s.to_string()),
            s => return Err(usage_error(&format!("unexpected argument {s}"), USAGE)),
        }
    }
    let input = input.ok_or_else(|| usage_error("no input image given", USAGE))?;
    let output = output.ok_or_else(|| usage_error("no output given (-o out.png)", USAGE))?;
    let daclip = daclip.ok_or_else(|| usage_error("no DA-CLIP weights given (--daclip)", USAGE))?;
    let unet = unet.ok_or_else(|| usage_error("no UNet weights given (--unet)", USAGE))?;
    let format = image::ImageFormat::from_path(&output)
        .ok()
        .filter(|f| matches!(f, image::ImageFormat::Png | image::ImageFormat::Jpeg))
        .ok_or_else(|| usage_error(&format!("{output}: the output must end in .png, .jpg or .jpeg"), USAGE))?;

    let img = load_image(&input)?;
    let gpu = Gpu::new_blocking()?;
    let (daclip_bytes, unet_bytes) = (read_file(&daclip)?, read_file(&unet)?);
    let (daclip, unet) = Restorer::load_models(&gpu, &Checkpoint::parse(&daclip_bytes, None)?, &Checkpoint::parse(&unet_bytes, None)?, GpuDType::F16)?;
    let restorer = Restorer::new(&daclip, &unet)?;
    drop((daclip_bytes, unet_bytes));

    let start = Instant::now();
    let mut on_step = |s: daclip_webgpu::restore::StepInfo| {
        let done = 30 * s.step / s.total;
        let per_step = start.elapsed().as_secs_f64() / s.step as f64;
        eprint!("\r[{}{}] {}/{} steps, {per_step:.2} s/step ", "#".repeat(done), ".".repeat(30 - done), s.step, s.total);
        std::io::stderr().flush().ok();
        true
    };
    let out = block_on(restorer.restore(&gpu, img.as_ref(), &options, &mut on_step))?;
    eprintln!();
    image::RgbImage::from_raw(out.width as u32, out.height as u32, out.data)
        .expect("size matches")
        .save_with_format(&output, format)
        .map_err(|e| Error::Io(format!("{output}: {e}")))?;
    println!("{input} -> {output} ({}x{}, {} {} steps, {:.1} s)", out.width, out.height, options.steps, options.sampler.name(), start.elapsed().as_secs_f64());
    Ok(())
}
