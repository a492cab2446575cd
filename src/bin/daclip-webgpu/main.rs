//! The native command-line tool. (Built for wasm32 too, as every bin target is when the
//! crate's tests are, but there it is empty: the browser gets the library instead.)
#![cfg_attr(target_arch = "wasm32", allow(dead_code, unused_imports))]

#[cfg(not(target_arch = "wasm32"))]
mod bench;
#[cfg(not(target_arch = "wasm32"))]
mod classify;
#[cfg(not(target_arch = "wasm32"))]
mod convert;
#[cfg(not(target_arch = "wasm32"))]
mod inputs;
#[cfg(not(target_arch = "wasm32"))]
mod published;
#[cfg(not(target_arch = "wasm32"))]
mod restore;

#[cfg(target_arch = "wasm32")]
fn main() {}

#[cfg(not(target_arch = "wasm32"))]
use native::{read_file, DeviceArg, Outcome};

#[cfg(not(target_arch = "wasm32"))]
fn main() -> std::process::ExitCode {
    native::main()
}

#[cfg(not(target_arch = "wasm32"))]
mod native {
    use std::process::ExitCode;

    use clap::{Parser, Subcommand};
    use daclip_webgpu::device::{block_on, Adapters, DeviceChoice, GpuOptions};
    use daclip_webgpu::{Device, Error, Result};

    /// DA-CLIP image restoration on WebGPU (and on the CPU where there is no GPU).
    #[derive(Parser)]
    #[command(name = "daclip-webgpu", version, propagate_version = true, after_help = "Exit codes: 0 done, 1 failed (for many files: any of them), 2 a usage mistake.\nSet WGPU_BACKEND=vulkan|metal|dx12|gl to choose the GPU backend.")]
    struct Cli {
        #[command(subcommand)]
        command: Command,
    }

    #[derive(Subcommand)]
    enum Command {
        Restore(crate::restore::Args),
        Classify(crate::classify::Args),
        Convert(crate::convert::Args),
        Bench(crate::bench::Args),
        /// Print the token ids DA-CLIP's text tower gets for each text (a label for
        /// classify --labels): one JSON array per line, start and end tokens included,
        /// truncated to the 77 positions, without the zero padding.
        Tokenize {
            /// The texts.
            texts: Vec<String>,
            /// Also read texts from standard input, one per line (after those given).
            #[arg(long)]
            stdin: bool,
        },
        /// Print the device, its limits and features.
        Info {
            #[command(flatten)]
            device: DeviceArg,
        },
        /// The published weights in the cache: list, download, rm, path.
        Weights {
            #[command(subcommand)]
            action: WeightsCommand,
        },
    }

    #[derive(Subcommand)]
    enum WeightsCommand {
        /// Each published pair: cached or not, its files, their sizes and where.
        List,
        /// Download and convert a pair into the cache now (default: published).
        Download {
            name: Option<String>,
            #[command(flatten)]
            args: crate::published::WeightsArgs,
        },
        /// Remove a pair from the cache, or every pair.
        Rm { name: Option<String> },
        /// Print the paths of a cached pair's two files (DA-CLIP, then the UNet).
        Path { name: Option<String> },
    }

    /// `--device`, on every command that computes.
    #[derive(clap::Args, Clone)]
    pub struct DeviceArg {
        /// auto: a hardware GPU, else the CPU backend (also where the only adapter is a
        /// software one such as lavapipe); stderr says which runs and why.
        #[arg(long, default_value = "auto", value_parser = ["auto", "gpu", "cpu"])]
        pub device: String,
        /// Where the products and convolutions with f16 weights run on cooperative
        /// matrices (tensor cores; their activations rounded to f16): hardware: on hardware
        /// GPUs that offer them natively; any: on software adapters too (Mesa 26's
        /// lavapipe, which emulates them slowly); off: never (the f32 kernels).
        #[arg(long, default_value = "hardware", value_parser = ["hardware", "any", "off"])]
        pub cooperative_matrix: String,
        /// Where those products and convolutions run on f16 workgroup tiles instead
        /// (activations rounded to f16, sums f32), on GPUs with f16 shaders and no
        /// cooperative matrices: hardware, any (lavapipe too) or off.
        #[arg(long, default_value = "hardware", value_parser = ["hardware", "any", "off"])]
        pub shader_f16: String,
    }

    impl DeviceArg {
        /// The GPU options the flags ask for.
        pub fn options(&self) -> GpuOptions {
            let adapters = |arg: &str| match arg {
                "any" => Adapters::Any,
                "off" => Adapters::Off,
                _ => Adapters::Hardware,
            };
            GpuOptions { cooperative_matrix: adapters(&self.cooperative_matrix), shader_f16: adapters(&self.shader_f16), ..GpuOptions::default() }
        }

        /// Opens the device and says on stderr which one runs and why.
        pub fn open(&self) -> Result<Device> {
            let dev = block_on(Device::open_with(DeviceChoice::parse(&self.device)?, self.options()))?;
            eprintln!("device: {} ({})", dev.info(), dev.reason());
            Ok(dev)
        }
    }

    /// How a command ended: every file done, or some failed (already reported).
    pub enum Outcome {
        Done,
        SomeFailed,
    }

    pub fn main() -> ExitCode {
        let cli = Cli::parse(); // usage mistakes exit with 2, --help and --version with 0
        quiet_mesa();
        let result = match cli.command {
            Command::Restore(args) => crate::restore::run(args),
            Command::Classify(args) => crate::classify::run(args),
            Command::Convert(args) => crate::convert::run(args).map(|()| Outcome::Done),
            Command::Bench(args) => crate::bench::run(args).map(|()| Outcome::Done),
            Command::Tokenize { texts, stdin } => tokenize(texts, stdin).map(|()| Outcome::Done),
            Command::Info { device } => info(&device).map(|()| Outcome::Done),
            Command::Weights { action } => weights(action).map(|()| Outcome::Done),
        };
        match result {
            Ok(Outcome::Done) => ExitCode::SUCCESS,
            Ok(Outcome::SomeFailed) => ExitCode::FAILURE,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(if matches!(e, Error::Usage(_)) { 2 } else { 1 })
            }
        }
    }

    /// Mesa prints "error: XDG_RUNTIME_DIR is invalid or not set" on every device it
    /// opens where the variable is missing (servers, containers, CI), though nothing is
    /// wrong: give it a private folder of its own before any GPU is probed.
    fn quiet_mesa() {
        #[cfg(target_os = "linux")]
        if std::env::var_os("XDG_RUNTIME_DIR").is_none() {
            use std::os::unix::fs::{DirBuilderExt, MetadataExt};
            let uid = std::fs::metadata("/proc/self").map(|m| m.uid()).unwrap_or(0);
            let dir = std::env::temp_dir().join(format!("daclip-webgpu-runtime-{uid}"));
            let made = std::fs::DirBuilder::new().mode(0o700).create(&dir);
            let ours = std::fs::metadata(&dir).is_ok_and(|m| m.uid() == uid && m.mode() & 0o077 == 0);
            if (made.is_ok() || dir.is_dir()) && ours {
                // SAFETY: at start-up, before any thread is spawned.
                unsafe { std::env::set_var("XDG_RUNTIME_DIR", &dir) };
            }
        }
    }

    fn weights(action: WeightsCommand) -> Result<()> {
        use crate::published::{names, Published, WeightsArgs};
        let none = WeightsArgs { weights: None, base_url: None, offline: false, keep_original: false };
        match action {
            WeightsCommand::List => {
                println!("cache: {}", crate::published::cache_dir()?.display());
                for name in names() {
                    let p = Published::new(Some(&name), &none)?;
                    let files = p.status();
                    let cached = files.iter().all(|(_, _, size)| size.is_some());
                    println!("{name}: {} ({}; about {:.1} GB of GPU memory)", if cached { "cached" } else { "not cached" }, p.pair.about, p.pair.memory as f64 / 1e9);
                    for (original, path, size) in files {
                        let size = size.map_or("not cached".into(), |s| format!("{:.0} MB", s as f64 / 1e6));
                        println!("  {original}: {size}, {}", path.display());
                    }
                }
            }
            WeightsCommand::Download { name, args } => {
                let (daclip, unet) = Published::new(name.as_deref(), &args)?.ensure(true)?;
                println!("{}", daclip.display());
                unet.into_iter().for_each(|u| println!("{}", u.display()));
            }
            WeightsCommand::Rm { name } => {
                let all = names();
                let names = name.map_or(all, |n| vec![n]);
                let mut removed = 0;
                for name in &names {
                    removed += Published::new(Some(name), &none)?.remove()?;
                }
                println!("removed {removed} file(s) of {} from {}", names.join(", "), crate::published::cache_dir()?.display());
            }
            WeightsCommand::Path { name } => {
                let p = Published::new(name.as_deref(), &none)?;
                for (original, path, size) in p.status() {
                    if size.is_none() {
                        return Err(Error::Io(format!("{original} of {} is not in the cache; `daclip-webgpu weights download {}` fetches it", p.name, p.name)));
                    }
                    println!("{}", path.display());
                }
            }
        }
        Ok(())
    }

    pub fn read_file(path: &std::path::Path) -> Result<Vec<u8>> {
        std::fs::read(path).map_err(|e| Error::Io(format!("{}: {e}", path.display())))
    }

    fn tokenize(mut texts: Vec<String>, stdin: bool) -> Result<()> {
        use std::io::BufRead;
        if stdin {
            for line in std::io::stdin().lock().lines() {
                texts.push(line.map_err(|e| Error::Io(format!("standard input: {e}")))?);
            }
        } else if texts.is_empty() {
            return Err(Error::Usage("give the texts to tokenize, or --stdin to read them one per line".into()));
        }
        for text in &texts {
            let ids = daclip_webgpu::models::clip::tokenizer::label_ids(text);
            println!("{}", serde_json::to_string(&ids).expect("a list of integers"));
        }
        Ok(())
    }

    fn info(device: &DeviceArg) -> Result<()> {
        let dev = device.open()?;
        let info = dev.info();
        let l = &info.limits;
        println!("adapter:   {info}");
        println!("software:  {}", info.is_software);
        println!("limits:    {} invocations/workgroup, {} B workgroup storage, {} storage buffers/stage, {} MiB/binding, {} MiB/buffer",
            l.max_compute_invocations_per_workgroup, l.max_compute_workgroup_storage_size,
            l.max_storage_buffers_per_shader_stage, l.max_storage_buffer_binding_size >> 20, l.max_buffer_size >> 20);
        println!("features:  {}", info.features.join(", "));
        if !info.cooperative_matrix.is_empty() {
            println!("cooperative matrix: {}", info.cooperative_matrix.join(", "));
        }
        println!("kernels:   reductions with {}", if dev.subgroups() { "subgroup operations" } else { "workgroup memory" });
        match dev.cooperative_matrix() {
            Some(c) => println!("           products and convolutions with f16 weights on {0}x{0}x{0} cooperative matrices (subgroups of {1})", c.size, c.subgroup_size),
            None if dev.shader_f16() => println!("           products and convolutions with f16 weights on f16 workgroup tiles (f32 sums)"),
            None => println!("           products and convolutions on the f32 kernels"),
        }
        Ok(())
    }
}
