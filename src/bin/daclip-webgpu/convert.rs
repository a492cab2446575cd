//! `daclip-webgpu convert <in.pt|.pth> -o <out.safetensors> [--dtype f16|f32] [--clip-config config.json] [--no-text] [--device D]`

use std::path::PathBuf;

use daclip_webgpu::models::clip::{degradation_text_features, DaClipConfig};
use daclip_webgpu::weights::{convert, Checkpoint, ConvertOptions, StoreDType};
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
    let bytes = read_file(input)?;
    if args.no_text {
        // The ten degradation names' text features, computed once by the tower being dropped.
        let dev = args.device.open()?;
        let ckpt = Checkpoint::parse(&bytes, options.clip_config.clone())?;
        options.text_features = Some(block_on(degradation_text_features(&dev, &ckpt))?);
    }
    let converted = convert(&bytes, options)?;
    std::fs::write(output, &converted.bytes).map_err(|e| Error::Checkpoint(format!("{}: {e}", output.display())))?;
    println!("{} -> {}", input.display(), output.display());
    println!("{}", converted.summary);
    Ok(())
}
