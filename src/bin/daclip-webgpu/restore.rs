//! `daclip-webgpu restore <inputs>... -o <output> --daclip <w> --unet <w> [options]`: one
//! file to a file, or many files and folders into a folder, with the models loaded once.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use daclip_webgpu::models::clip::DaClip;
use daclip_webgpu::models::unet::ConditionalUNet;
use daclip_webgpu::photo::{write, OutputFormat, Photo};
use daclip_webgpu::restore::{RestoreOptions, Restorer, StepInfo};
use daclip_webgpu::sde::{Grid, Sampler, PUBLISHED_T};
use daclip_webgpu::weights::{DeviceDType, FileSource};
use daclip_webgpu::models::Checkpoint;
use daclip_webgpu::{device::block_on, Device, Error, Result};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use crate::inputs::{about, expand, outcome, plan, Job, PhotoReader};
use crate::published::{resolve, WeightsArgs};
use crate::{DeviceArg, Outcome};

/// Restore photos: one file to a file, or many files and folders into a folder.
///
/// The models are loaded once. Outputs are upright (EXIF orientation applied), in the
/// input's layout (grey stays grey, alpha is copied through) and checked before any
/// work: the folder exists and is writable, the extension is known, no input is
/// overwritten, no existing file unless --force. A file that fails is reported at the
/// end and the others go on (exit code 1).
#[derive(clap::Args)]
pub struct Args {
    /// Images (PNG, JPEG, WebP, TIFF, BMP, GIF: the first frame) or folders of them.
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    /// The output: a .png, .jpg, .webp (lossless) or .tiff file for one input, else a
    /// folder (created if missing) that receives each input's name, with the input's
    /// extension where it is one of those, else --format's.
    #[arg(short, long)]
    output: PathBuf,
    /// DA-CLIP weights (.safetensors, or the published .pt), with --unet; without
    /// either the published pair is used (--weights).
    #[arg(long)]
    daclip: Option<PathBuf>,
    /// UNet weights (.safetensors, or the published .pth).
    #[arg(long)]
    unet: Option<PathBuf>,
    #[command(flatten)]
    weights: WeightsArgs,
    /// Network evaluations, 1 to 1000: 100 is the published posterior sampler's; the MR
    /// samplers reach similar results in 10-20.
    #[arg(long, default_value_t = PUBLISHED_T)]
    steps: usize,
    /// Seeds the sampler's noise: the same seed gives the same output on the same device.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// posterior (published), sde, or the fast mr-ode1, mr-ode2, mr-sde1, mr-sde2.
    #[arg(long, default_value = "posterior")]
    sampler: Sampler,
    /// Time grid of the MR samplers: logsnr or linspace.
    #[arg(long, default_value = "logsnr")]
    grid: Grid,
    /// Tile side in pixels for images larger than a tile (default 256 for the published
    /// UNet); tiles are blended at every step.
    #[arg(long)]
    tile: Option<usize>,
    /// Overlap of neighbouring tiles in pixels (default a quarter of the tile).
    #[arg(long)]
    overlap: Option<usize>,
    /// Bits per sample of the outputs: 8, or 16 (PNG, TIFF; the models see 8-bit input).
    #[arg(long, default_value = "8", value_parser = ["8", "16"])]
    depth: String,
    /// JPEG quality, 1 to 100.
    #[arg(long, default_value_t = 95, value_parser = clap::value_parser!(u8).range(1..=100))]
    quality: u8,
    /// Format of the outputs in a folder: png, jpg, webp or tiff.
    #[arg(long, value_parser = ["png", "jpg", "webp", "tiff"])]
    format: Option<String>,
    /// Overwrite existing output files.
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    device: DeviceArg,
}

pub fn run(args: Args) -> Result<Outcome> {
    let options = RestoreOptions { steps: args.steps, seed: args.seed, sampler: args.sampler, grid: args.grid, tile: args.tile, overlap: args.overlap, preview: false };
    let bits: u8 = args.depth.parse().expect("8 or 16");
    let format = args.format.as_deref().map(|f| OutputFormat::from_extension(f).expect("one of the values"));
    let jobs = plan(&args.inputs, expand(&args.inputs)?, &args.output, format, args.force)?;
    if let Some(job) = jobs.iter().find(|j| bits == 16 && !j.format.has_16_bits()) {
        return Err(Error::Usage(format!("{}: --depth 16 needs .png or .tiff outputs", job.output.display())));
    }
    let mut photos = PhotoReader::new(&jobs.iter().map(|j| j.input.as_path()).collect::<Vec<_>>())?;

    let mut engine = Engine::load(&args)?;
    let progress = Progress::new(jobs.len());
    let mut failed = Vec::new();
    for job in &jobs {
        let attempt = |engine: &Engine, photo: &Photo| restore_one(&engine.dev, &engine.restorer()?, photo, job, &options, bits, args.quality, &progress);
        let result = photos.read(&job.input).and_then(|photo| match (attempt(&engine, &photo), engine.dev.lost()) {
            // A lost GPU device (a driver reset, a watchdog) takes the models with it: a
            // new device with the weights loaded again restores the file once more.
            (Err(_), Some(why)) => {
                progress.say(&format!("{}: the GPU device was lost ({why}); opening the GPU again, loading the weights again and restoring it once more", job.input.display()));
                engine = Engine::load(&args)?;
                attempt(&engine, &photo)
            }
            (result, _) => result,
        });
        match result {
            Ok(done) => progress.say_out(&done),
            Err(e) if jobs.len() == 1 => return Err(e),
            Err(e) => {
                let e = about(&job.input, &e);
                progress.say(&format!("failed: {e}"));
                failed.push(e);
            }
        }
        progress.file_done();
    }
    progress.finish();
    Ok(outcome("restored", jobs.len(), &failed))
}

/// The device and the two models on it.
struct Engine {
    dev: Device,
    daclip: DaClip,
    unet: ConditionalUNet,
}

impl Engine {
    fn load(args: &Args) -> Result<Engine> {
        let dev = args.device.open()?;
        let (daclip, unet) = resolve(args.daclip.as_deref(), args.unet.as_deref(), &args.weights, true)?;
        let (daclip_file, unet_file) = (FileSource::open(&daclip)?, FileSource::open(&unet.expect("resolved with the UNet"))?);
        let started = Instant::now();
        // load_models checks that the two belong together (restorer() cannot fail after it).
        let (daclip, unet) = Restorer::load_models(&dev, &Checkpoint::read(&daclip_file, None)?, &Checkpoint::read(&unet_file, None)?, DeviceDType::F16)?;
        dev.sync_blocking()?;
        eprintln!("weights loaded in {:.1} s", started.elapsed().as_secs_f64());
        Ok(Engine { dev, daclip, unet })
    }

    fn restorer(&self) -> Result<Restorer<'_>> {
        Restorer::new(&self.daclip, &self.unet)
    }
}

static LOST_ONCE: AtomicBool = AtomicBool::new(false);

/// `DACLIP_WEBGPU_LOSE_DEVICE_AT_STEP=n`: the GPU device is destroyed at step n of the
/// first restore, as a driver reset would lose it (for the test of recovery).
fn lose_device_at_step() -> Option<usize> {
    std::env::var("DACLIP_WEBGPU_LOSE_DEVICE_AT_STEP").ok()?.parse().ok()
}

#[allow(clippy::too_many_arguments)]
fn restore_one(dev: &Device, restorer: &Restorer, photo: &Photo, job: &Job, options: &RestoreOptions, bits: u8, quality: u8, progress: &Progress) -> Result<String> {
    let name = job.input.display().to_string();
    let layout = restorer.layout(dev, photo.width, photo.height, options)?;
    if !layout.is_single() {
        let r = layout.rect(0);
        progress.say(&format!("{name}: {}x{}, {} tiles of {}x{} per step", photo.width, photo.height, layout.tile_count(), r.width, r.height));
    }
    if photo.layout.has_alpha() && !job.format.keeps_alpha() {
        progress.say(&format!("{name}: JPEG has no alpha channel; the output drops it (write .png, .webp or .tiff to keep it)"));
    }
    let start = Instant::now();
    progress.start_file(&name);
    let lose_at = lose_device_at_step().filter(|_| !LOST_ONCE.swap(true, Ordering::Relaxed));
    let restored = block_on(restorer.restore(dev, photo.as_image_ref(), options, &mut |s| {
        if Some(s.progress.step) == lose_at {
            let _ = dev.destroy();
        }
        progress.step(&name, &s, start)
    }))?;
    write(&photo.compose(&restored, bits)?, &job.output, job.format, quality)?;
    Ok(format!(
        "{} -> {} ({}x{}, {} {} steps, {:.1} s)",
        name,
        job.output.display(),
        photo.width,
        photo.height,
        options.steps,
        options.sampler.name(),
        start.elapsed().as_secs_f64()
    ))
}

/// Progress bars with ETA on a terminal (overall for many files, and per file: one unit a
/// tile); elsewhere (a log, a pipe) one line per finished step instead.
struct Progress {
    bars: Option<(MultiProgress, Option<ProgressBar>, ProgressBar)>,
}

impl Progress {
    fn new(files: usize) -> Progress {
        if !std::io::stderr().is_terminal() {
            return Progress { bars: None };
        }
        let multi = MultiProgress::new();
        let overall = (files > 1).then(|| {
            let bar = multi.add(ProgressBar::new(files as u64));
            bar.set_style(ProgressStyle::with_template("files [{bar:30}] {pos}/{len}, {elapsed} so far, about {eta} left").expect("template").progress_chars("#>."));
            bar
        });
        let file = multi.add(ProgressBar::new(1));
        file.set_style(ProgressStyle::with_template("{msg} [{bar:30}] {percent}%, about {eta} left").expect("template").progress_chars("#>."));
        Progress { bars: Some((multi, overall, file)) }
    }

    /// A line on stderr that does not tear the bars.
    fn say(&self, line: &str) {
        match &self.bars {
            Some((multi, ..)) => multi.suspend(|| eprintln!("{line}")),
            None => eprintln!("{line}"),
        }
    }

    /// A result line on stdout.
    fn say_out(&self, line: &str) {
        match &self.bars {
            Some((multi, ..)) => multi.suspend(|| println!("{line}")),
            None => println!("{line}"),
        }
    }

    fn start_file(&self, name: &str) {
        if let Some((_, _, file)) = &self.bars {
            file.reset();
            file.set_message(name.to_string());
        }
    }

    /// After each tile; never cancels.
    fn step(&self, name: &str, s: &StepInfo, start: Instant) -> bool {
        let p = s.progress;
        let (done, total) = ((p.step - 1) * p.tiles + p.tile, p.total * p.tiles);
        match &self.bars {
            Some((_, _, file)) => {
                file.set_length(total as u64);
                file.set_position(done as u64);
                file.set_message(format!("{name} step {}/{}", p.step, p.total));
            }
            None if p.tile == p.tiles => {
                let elapsed = start.elapsed();
                let left = elapsed.mul_f64((total - done) as f64 / done as f64);
                let tiles = if p.tiles > 1 { format!(" ({} tiles)", p.tiles) } else { String::new() };
                eprintln!("{name}: step {}/{}{tiles} done, {} so far, about {} left", p.step, p.total, duration(elapsed), duration(left));
            }
            None => {}
        }
        true
    }

    fn file_done(&self) {
        if let Some((_, Some(overall), _)) = &self.bars {
            overall.inc(1);
        }
    }

    fn finish(&self) {
        if let Some((multi, ..)) = &self.bars {
            multi.clear().ok();
        }
    }
}

/// "1 h 02 min", "3 min 07 s", "12 s".
fn duration(d: Duration) -> String {
    let s = d.as_secs_f64().round() as u64;
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min {:02} s", s / 60, s % 60),
        _ => format!("{} h {:02} min", s / 3600, s % 3600 / 60),
    }
}
