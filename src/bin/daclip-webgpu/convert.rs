//! `daclip-webgpu convert <in.pt|.pth> -o <out.safetensors> [--dtype f16|f32] [--clip-config config.json] [--no-text] [--device auto|gpu|cpu]`

use daclip_webgpu::models::clip::{degradation_text_features, DaClipConfig};
use daclip_webgpu::weights::{convert, Checkpoint, ConvertOptions, StoreDType};
use daclip_webgpu::{device::block_on, Error, Result};

use crate::{open_device, read_file, usage_error};

const USAGE: &str = "daclip-webgpu convert <in.pt|.pth> -o <out.safetensors> [--dtype f16|f32] [--clip-config config.json] [--no-text] [--device auto|gpu|cpu]";

pub fn run(args: &[String]) -> Result<()> {
    let (mut input, mut output, mut options, mut no_text, mut device) = (None, None, ConvertOptions::new(StoreDType::F16), false, None::<String>);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "-o" | "--output" => output = Some(it.next().ok_or_else(|| usage_error("-o needs a path", USAGE))?.clone()),
            "--dtype" => {
                options.dtype = match it.next().map(String::as_str) {
                    Some("f16") => StoreDType::F16,
                    Some("f32") => StoreDType::F32,
                    other => return Err(usage_error(&format!("--dtype must be f16 or f32, got {other:?}"), USAGE)),
                }
            }
            "--clip-config" => {
                let path = it.next().ok_or_else(|| usage_error("--clip-config needs a path", USAGE))?;
                let cfg: DaClipConfig = serde_json::from_slice(&read_file(path)?)
                    .map_err(|e| Error::Checkpoint(format!("{path} is not an open_clip model config: {e}")))?;
                options.clip_config = Some(cfg);
            }
            "--no-text" => no_text = true,
            "--device" => device = Some(it.next().ok_or_else(|| usage_error("--device needs auto, gpu or cpu", USAGE))?.clone()),
            s if s.starts_with('-') => return Err(usage_error(&format!("unknown option {s}"), USAGE)),
            s if input.is_none() => input = Some(s.to_string()),
            s => return Err(usage_error(&format!("unexpected argument {s}"), USAGE)),
        }
    }
    let input = input.ok_or_else(|| usage_error("no input checkpoint given", USAGE))?;
    let output = output.ok_or_else(|| usage_error("no output given (-o out.safetensors)", USAGE))?;
    let bytes = read_file(&input)?;
    if no_text {
        // The ten degradation names' text features, computed once by the tower being dropped.
        let dev = open_device(device.as_deref())?;
        let ckpt = Checkpoint::parse(&bytes, options.clip_config.clone())?;
        options.text_features = Some(block_on(degradation_text_features(&dev, &ckpt))?);
    }
    let converted = convert(&bytes, options)?;
    std::fs::write(&output, &converted.bytes).map_err(|e| Error::Checkpoint(format!("{output}: {e}")))?;
    println!("{input} -> {output}");
    println!("{}", converted.summary);
    Ok(())
}
