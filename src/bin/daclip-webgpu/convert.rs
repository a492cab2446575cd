//! `daclip-webgpu convert <in.pt|.pth> -o <out.safetensors> [--dtype f16|f32] [--clip-config config.json] [--no-text] [--device D]`

use std::path::{Path, PathBuf};

use daclip_webgpu::models::clip::{degradation_text_features, DaClipConfig};
use daclip_webgpu::weights::FileSource;
use daclip_webgpu::models::{Checkpoint, ConvertOptions, ModelKind, StoreDType, Summary, convert};
use daclip_webgpu::{device::block_on, Error, Result};

use crate::published::{Published, WeightsArgs};
use crate::{read_file, DeviceArg};

/// Check a published checkpoint (.pt, .pth) and write it as safetensors.
///
/// The tensors are checked against the architecture and stored with the model's config.
#[derive(clap::Args)]
pub struct Args {
    /// The checkpoint: a DA-CLIP .pt or a UNet .pth (or a safetensors file to re-store).
    input: Option<PathBuf>,
    /// The .safetensors file to write (with --weights: the folder that receives the
    /// pair's two files).
    #[arg(short, long)]
    output: PathBuf,
    /// Stored precision: f16 (half the size; what the engine computes with) or f32.
    #[arg(long, default_value = "f16", value_parser = ["f16", "f32"])]
    dtype: String,
    /// An open_clip model config (JSON) for a DA-CLIP checkpoint that is not ViT-B/32.
    #[arg(long)]
    clip_config: Option<PathBuf>,
    /// Drop DA-CLIP's text tower and keep the text features of the ten trained
    /// degradation names (computed here, on --device).
    #[arg(long)]
    no_text: bool,
    /// Instead of a file, a published pair's originals (fetched where they are not in
    /// the cache, and kept there).
    #[command(flatten)]
    weights: WeightsArgs,
    #[command(flatten)]
    device: DeviceArg,
}

pub fn run(args: Args) -> Result<()> {
    let mut options = ConvertOptions::new(if args.dtype == "f32" { StoreDType::F32 } else { StoreDType::F16 });
    if let Some(path) = &args.clip_config {
        let cfg: DaClipConfig = serde_json::from_slice(&read_file(path)?)
            .map_err(|e| Error::Checkpoint(format!("{} is not an open_clip model config: {e}", path.display())))?;
        options.clip_config = Some(cfg);
    }
    let inputs: Vec<(PathBuf, PathBuf)> = match (&args.input, &args.weights.weights) {
        (Some(input), None) => vec![(input.clone(), args.output.clone())],
        (None, Some(name)) => {
            // The published originals, fetched (and kept) where they are not at hand, each
            // converted into the folder -o.
            let published = Published::new(Some(name), &args.weights)?;
            std::fs::create_dir_all(&args.output).map_err(|e| Error::Io(format!("{}: {e}", args.output.display())))?;
            published
                .files()
                .into_iter()
                .map(|f| Ok((published.original(f)?, args.output.join(format!("{}.safetensors", Path::new(f).file_stem().map_or(f.into(), |s| s.to_string_lossy()))))))
                .collect::<Result<_>>()?
        }
        _ => return Err(Error::Usage("give one checkpoint to convert, or --weights NAME for a published pair (into the folder -o)".into())),
    };
    for (input, output) in inputs {
        let file = FileSource::open(&input)?;
        let mut options = options.clone();
        if args.no_text {
            let ckpt = Checkpoint::read(&file, options.clip_config.clone())?;
            // A published pair's UNet has no text tower to drop; a file named alone is refused.
            if matches!(ckpt.kind, ModelKind::DaClip(_)) || args.input.is_some() {
                // The ten degradation names' text features, computed once by the tower being dropped.
                let dev = args.device.open()?;
                options.text_features = Some(block_on(degradation_text_features(&dev, &ckpt))?);
            }
        }
        let summary = convert_file(&file, &output, options)?;
        println!("{} -> {}", input.display(), output.display());
        println!("{summary}");
    }
    Ok(())
}

/// Converts `source` into the file `output`, written under a temporary name and renamed
/// when complete: a failed conversion leaves no half-written file under the name a later
/// load would trust.
pub fn convert_file(source: &FileSource, output: &Path, options: ConvertOptions) -> Result<Summary> {
    let partial = output.with_file_name(format!(".{}.partial", output.file_name().map_or("converted".into(), |n| n.to_string_lossy())));
    let io = |e: std::io::Error| Error::Io(format!("{}: {e}", output.display()));
    let result = (|| -> Result<_> {
        let mut out = std::io::BufWriter::new(std::fs::File::create(&partial).map_err(io)?);
        let summary = convert(source, options, &mut out)?;
        out.into_inner().map_err(|e| io(e.into_error()))?.sync_all().map_err(io)?;
        std::fs::rename(&partial, output).map_err(io)?;
        Ok(summary)
    })();
    if result.is_err() {
        std::fs::remove_file(&partial).ok();
    }
    result
}
