//! `daclip-webgpu classify <image> --daclip <weights> [--labels "a,b,..."] [--json] [--device auto|gpu|cpu]`

use daclip_webgpu::models::clip::DaClip;
use daclip_webgpu::weights::{Checkpoint, DeviceDType};
use daclip_webgpu::{device::block_on, Result};

use crate::{load_image, open_device, read_file, usage_error};

const USAGE: &str = "daclip-webgpu classify <image.png|jpg> --daclip <weights> [--labels \"a,b,...\"] [--json] [--device auto|gpu|cpu]";

pub fn run(args: &[String]) -> Result<()> {
    let (mut image, mut weights, mut labels, mut json, mut device) = (None, None, None::<String>, false, None::<String>);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--daclip" => weights = Some(it.next().ok_or_else(|| usage_error("--daclip needs a path", USAGE))?.clone()),
            "--labels" => labels = Some(it.next().ok_or_else(|| usage_error("--labels needs a list", USAGE))?.clone()),
            "--json" => json = true,
            "--device" => device = Some(it.next().ok_or_else(|| usage_error("--device needs auto, gpu or cpu", USAGE))?.clone()),
            s if s.starts_with('-') => return Err(usage_error(&format!("unknown option {s}"), USAGE)),
            s if image.is_none() => image = Some(s.to_string()),
            s => return Err(usage_error(&format!("unexpected argument {s}"), USAGE)),
        }
    }
    let image = image.ok_or_else(|| usage_error("no image given", USAGE))?;
    let weights = weights.ok_or_else(|| usage_error("no DA-CLIP weights given (--daclip)", USAGE))?;
    let labels: Option<Vec<String>> = labels.map(|l| l.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect());

    let img = load_image(&image)?;
    let bytes = read_file(&weights)?;
    let ckpt = Checkpoint::parse(&bytes, None)?;
    let dev = open_device(device.as_deref())?;
    let model = DaClip::load(&dev, &ckpt, DeviceDType::F16)?;
    drop(ckpt);
    let label_refs: Option<Vec<&str>> = labels.as_ref().map(|l| l.iter().map(String::as_str).collect());
    let result = block_on(model.classify(&dev, img.as_ref(), label_refs.as_deref()))?;

    if json {
        let out = serde_json::json!({
            "labels": result.labels,
            "probabilities": result.probabilities,
            "image_features": result.image_features,
            "degradation_features": result.degradation_features,
        });
        println!("{out}");
    } else {
        for (label, p) in result.labels.iter().zip(&result.probabilities) {
            println!("{:>6.2}%  {label}", 100.0 * p);
        }
    }
    Ok(())
}
