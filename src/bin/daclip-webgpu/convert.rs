//! `daclip-webgpu convert <in.pt|.pth> -o <out.safetensors> [--dtype f16|f32] [--clip-config config.json]`

use daclip_webgpu::models::clip::DaClipConfig;
use daclip_webgpu::weights::{convert, StoreDType};
use daclip_webgpu::{Error, Result};

fn usage(msg: &str) -> Error {
    Error::Checkpoint(format!("{msg}\nusage: daclip-webgpu convert <in.pt|.pth> -o <out.safetensors> [--dtype f16|f32] [--clip-config config.json]"))
}

pub fn run(args: &[String]) -> Result<()> {
    let (mut input, mut output, mut dtype, mut clip_config) = (None, None, StoreDType::F16, None);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "-o" | "--output" => output = Some(it.next().ok_or_else(|| usage("-o needs a path"))?.clone()),
            "--dtype" => {
                dtype = match it.next().map(String::as_str) {
                    Some("f16") => StoreDType::F16,
                    Some("f32") => StoreDType::F32,
                    other => return Err(usage(&format!("--dtype must be f16 or f32, got {other:?}"))),
                }
            }
            "--clip-config" => {
                let path = it.next().ok_or_else(|| usage("--clip-config needs a path"))?;
                let text = std::fs::read_to_string(path).map_err(|e| Error::Checkpoint(format!("{path}: {e}")))?;
                let cfg: DaClipConfig = serde_json::from_str(&text)
                    .map_err(|e| Error::Checkpoint(format!("{path} is not an open_clip model config: {e}")))?;
                clip_config = Some(cfg);
            }
            s if s.starts_with('-') => return Err(usage(&format!("unknown option {s}"))),
            s if input.is_none() => input = Some(s.to_string()),
            s => return Err(usage(&format!("unexpected argument {s}"))),
        }
    }
    let input = input.ok_or_else(|| usage("no input checkpoint given"))?;
    let output = output.ok_or_else(|| usage("no output given (-o out.safetensors)"))?;
    let bytes = std::fs::read(&input).map_err(|e| Error::Checkpoint(format!("{input}: {e}")))?;
    let converted = convert(&bytes, dtype, clip_config)?;
    std::fs::write(&output, &converted.bytes).map_err(|e| Error::Checkpoint(format!("{output}: {e}")))?;
    println!("{input} -> {output}");
    println!("{}", converted.summary);
    Ok(())
}
