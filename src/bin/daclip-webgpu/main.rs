//! The native command-line tool.

mod bench;

use std::process::ExitCode;

const USAGE: &str = "daclip-webgpu: DA-CLIP image restoration on WebGPU

USAGE:
    daclip-webgpu bench      print kernel throughput on this machine's GPU adapter
    daclip-webgpu info       print the GPU adapter and its limits

Set WGPU_BACKEND=vulkan|metal|dx12|gl to choose a backend.";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("bench") => bench::run(),
        Some("info") => info(),
        Some("-h" | "--help" | "help") | None => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Some(other) => {
            eprintln!("unknown command '{other}'\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn info() -> daclip_webgpu::Result<()> {
    let gpu = daclip_webgpu::Gpu::new_blocking()?;
    let info = gpu.info();
    let l = &info.limits;
    println!("adapter:   {info}");
    println!("software:  {}", info.is_software);
    println!("limits:    {} invocations/workgroup, {} B workgroup storage, {} storage buffers/stage, {} MiB/binding, {} MiB/buffer",
        l.max_compute_invocations_per_workgroup, l.max_compute_workgroup_storage_size,
        l.max_storage_buffers_per_shader_stage, l.max_storage_buffer_binding_size >> 20, l.max_buffer_size >> 20);
    println!("features:  {}", info.features.join(", "));
    Ok(())
}
