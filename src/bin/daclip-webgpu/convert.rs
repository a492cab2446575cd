//! `daclip-webgpu convert <in.pt|.pth> -o <out.safetensors> [--dtype f16|f32] [--clip-config config.json] [--no-text] [--device D]`

use std::path::PathBuf;

use daclip_webgpu::models::clip::{degradation_text_features, DaClipConfig};
use daclip_webgpu::weights::{convert, Checkpoint, ConvertOptions, FileSource, StoreDType};
use daclip_webgpu::{device::block_on, Error, Result};

use crate::{read_file, DeviceArg};

/// Check a published checkpoint (.pt, .pth) and write it as safetensors.
///
/// The tensors are checked against the architecture and stored with the model's config.
#[derive(clap::Args)]
pub struct Args {
    /// The checkpoint: a DA-CLIP .pt or a UNet .pth (or a safetensors file to re-store).
    input: PathBuf,
    /// The .safetensors file to write.
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
    let (input, output) = (&args.input, &args.output);
    let file = FileSource::open(input)?;
    if args.no_text {
        // The ten degradation names' text features, computed once by the tower being dropped.
        let dev = args.device.open()?;
        let ckpt = Checkpoint::read(&file, options.clip_config.clone())?;
        options.text_features = Some(block_on(degradation_text_features(&dev, &ckpt))?);
    }
    // Written under a temporary name and renamed when complete: a failed conversion
    // leaves no half-written file under the name a later load would trust.
    let partial = output.with_file_name(format!(".{}.partial", output.file_name().map_or("converted".into(), |n| n.to_string_lossy())));
    let io = |e: std::io::Error| Error::Io(format!("{}: {e}", output.display()));
    let result = (|| -> Result<_> {
        let mut out = std::io::BufWriter::new(std::fs::File::create(&partial).map_err(io)?);
        let summary = convert(&file, options, &mut out)?;
        out.into_inner().map_err(|e| io(e.into_error()))?.sync_all().map_err(io)?;
        std::fs::rename(&partial, output).map_err(io)?;
        Ok(summary)
    })();
    if result.is_err() {
        std::fs::remove_file(&partial).ok();
    }
    let summary = result?;
    println!("{} -> {}", input.display(), output.display());
    println!("{summary}");
    Ok(())
}
