//! `daclip-webgpu restore <in.png|jpg> -o <out.png|jpg> --daclip <w> --unet <w> [--steps N] [--seed S] [--sampler NAME] [--grid G] [--tile N] [--overlap N] [--device auto|gpu|cpu]`

use std::io::Write;
use std::time::Instant;

use daclip_webgpu::restore::{RestoreOptions, Restorer};
use daclip_webgpu::weights::{Checkpoint, DeviceDType};
use daclip_webgpu::{device::block_on, Error, Result};

use crate::{load_image, open_device, read_file, usage_error};

const USAGE: &str = "daclip-webgpu restore <in.png|jpg> -o <out.png|jpg> --daclip <weights> --unet <weights> [--steps N] [--seed S] [--sampler posterior|sde|mr-ode1|mr-ode2|mr-sde1|mr-sde2] [--grid linspace|logsnr] [--tile N] [--overlap N] [--device auto|gpu|cpu]";

pub fn run(args: &[String]) -> Result<()> {
    let (mut input, mut output, mut daclip, mut unet, mut device) = (None, None, None, None, None);
    let mut options = RestoreOptions::default();
    let mut it = args.iter();
    let value = |it: &mut std::slice::Iter<String>, what: &str| it.next().cloned().ok_or_else(|| usage_error(&format!("{what} needs a value"), USAGE));
    while let Some(a) = it.next() {
        match a.as_str() {
            "-o" | "--output" => output = Some(value(&mut it, "-o")?),
            "--daclip" => daclip = Some(value(&mut it, "--daclip")?),
            "--unet" => unet = Some(value(&mut it, "--unet")?),
            "--device" => device = Some(value(&mut it, "--device")?),
            "--steps" => options.steps = value(&mut it, "--steps")?.parse().map_err(|_| usage_error("--steps takes a number", USAGE))?,
            "--seed" => options.seed = value(&mut it, "--seed")?.parse().map_err(|_| usage_error("--seed takes a number", USAGE))?,
            "--sampler" => options.sampler = value(&mut it, "--sampler")?.parse()?,
            "--grid" => options.grid = value(&mut it, "--grid")?.parse()?,
            "--tile" => options.tile = Some(value(&mut it, "--tile")?.parse().map_err(|_| usage_error("--tile takes a number of pixels", USAGE))?),
            "--overlap" => options.overlap = Some(value(&mut it, "--overlap")?.parse().map_err(|_| usage_error("--overlap takes a number of pixels", USAGE))?),
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
    let dev = open_device(device.as_deref())?;
    let (daclip_bytes, unet_bytes) = (read_file(&daclip)?, read_file(&unet)?);
    let (daclip, unet) = Restorer::load_models(&dev, &Checkpoint::parse(&daclip_bytes, None)?, &Checkpoint::parse(&unet_bytes, None)?, DeviceDType::F16)?;
    let restorer = Restorer::new(&daclip, &unet)?;
    drop((daclip_bytes, unet_bytes));

    let layout = restorer.layout(&dev, img.width, img.height, &options)?;
    if !layout.is_single() {
        let r = layout.rect(0);
        eprintln!("{}x{}: {} tiles of {}x{} per step", img.width, img.height, layout.tile_count(), r.width, r.height);
    }
    let start = Instant::now();
    let mut on_step = |s: daclip_webgpu::restore::StepInfo| {
        let p = s.progress;
        let done = ((p.step - 1) * p.tiles + p.tile) as f64 / (p.total * p.tiles) as f64;
        let elapsed = start.elapsed().as_secs_f64();
        let bar = (30.0 * done) as usize;
        let tiles = if p.tiles > 1 { format!(", tile {}/{}", p.tile, p.tiles) } else { String::new() };
        eprint!("\r[{}{}] step {}/{}{tiles}, {} left ", "#".repeat(bar), ".".repeat(30 - bar), p.step, p.total, duration(elapsed / done * (1.0 - done)));
        std::io::stderr().flush().ok();
        true
    };
    let out = block_on(restorer.restore(&dev, img.as_ref(), &options, &mut on_step))?;
    eprintln!();
    image::RgbImage::from_raw(out.width as u32, out.height as u32, out.data)
        .expect("size matches")
        .save_with_format(&output, format)
        .map_err(|e| Error::Io(format!("{output}: {e}")))?;
    println!("{input} -> {output} ({}x{}, {} {} steps, {:.1} s)", out.width, out.height, options.steps, options.sampler.name(), start.elapsed().as_secs_f64());
    Ok(())
}

/// "1 h 02 min", "3 min 07 s", "12 s".
fn duration(seconds: f64) -> String {
    let s = seconds.round() as u64;
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min {:02} s", s / 60, s % 60),
        _ => format!("{} h {:02} min", s / 3600, s % 3600 / 60),
    }
}
