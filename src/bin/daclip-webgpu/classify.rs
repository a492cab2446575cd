//! `daclip-webgpu classify <images>... --daclip <weights> [--labels "a,b,..."] [--json] [--device D]`

use std::path::PathBuf;

use daclip_webgpu::models::clip::DaClip;
use daclip_webgpu::photo::Photo;
use daclip_webgpu::weights::{DeviceDType, FileSource};
use daclip_webgpu::models::Checkpoint;
use daclip_webgpu::{device::block_on, Device, Result};

use crate::inputs::{about, expand, outcome, PhotoReader};
use crate::published::{resolve, WeightsArgs};
use crate::{DeviceArg, Outcome};

/// Rank the degradations of images (the ten trained names, or your own labels).
#[derive(clap::Args)]
pub struct Args {
    /// Images (PNG, JPEG, WebP, TIFF, BMP, GIF) or folders of them.
    #[arg(required = true)]
    images: Vec<PathBuf>,
    /// DA-CLIP weights (.safetensors, or the published .pt); without it the published
    /// DA-CLIP is used (--weights).
    #[arg(long)]
    daclip: Option<PathBuf>,
    #[command(flatten)]
    weights: WeightsArgs,
    /// Your own labels, comma-separated, instead of the ten trained names (needs the
    /// text tower: weights not converted with --no-text).
    #[arg(long)]
    labels: Option<String>,
    /// One JSON line per image: file, labels, probabilities and both feature vectors (or
    /// file and error).
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    device: DeviceArg,
}

pub fn run(args: Args) -> Result<Outcome> {
    let files = expand(&args.images)?;
    let labels: Option<Vec<String>> = args.labels.map(|l| l.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect());
    let label_refs: Option<Vec<&str>> = labels.as_ref().map(|l| l.iter().map(String::as_str).collect());
    let mut photos = PhotoReader::new(&files.iter().map(PathBuf::as_path).collect::<Vec<_>>())?;
    let (daclip, _) = resolve(args.daclip.as_deref(), None, &args.weights, false)?;
    let file = FileSource::open(&daclip)?;
    let ckpt = Checkpoint::read(&file, None)?;
    let dev = args.device.open()?;
    // The text tower only for custom labels (otherwise it runs for the ten names alone,
    // before the image towers load).
    let model = match labels {
        Some(_) => DaClip::load(&dev, &ckpt, DeviceDType::F16)?,
        None => daclip_webgpu::device::block_on(DaClip::load_without_text(&dev, &ckpt, DeviceDType::F16))?,
    };
    drop(ckpt);

    let mut failed = Vec::new();
    for file in &files {
        match photos.read(file).and_then(|p| classify_one(&dev, &model, &p, label_refs.as_deref(), file, args.json, files.len() > 1)) {
            Ok(()) => {}
            Err(e) if files.len() == 1 => return Err(e),
            Err(e) => {
                if args.json {
                    println!("{}", serde_json::json!({ "file": file.display().to_string(), "error": e.to_string() }));
                }
                let e = about(file, &e);
                eprintln!("failed: {e}");
                failed.push(e);
            }
        }
    }
    Ok(outcome("classified", files.len(), &failed))
}

fn classify_one(dev: &Device, model: &DaClip, photo: &Photo, labels: Option<&[&str]>, file: &std::path::Path, json: bool, many: bool) -> Result<()> {
    let result = block_on(model.classify(dev, photo.as_image_ref(), labels))?;
    if json {
        let out = serde_json::json!({
            "file": file.display().to_string(),
            "labels": result.labels,
            "probabilities": result.probabilities,
            "image_features": result.image_features,
            "degradation_features": result.degradation_features,
        });
        println!("{out}");
        return Ok(());
    }
    if many {
        println!("{}:", file.display());
    }
    for (label, p) in result.labels.iter().zip(&result.probabilities) {
        println!("{:>6.2}%  {label}", 100.0 * p);
    }
    Ok(())
}
