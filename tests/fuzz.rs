//! Mutation fuzzing of everything that reads a weights file (zip, the restricted
//! unpickler, the safetensors header, the config in its metadata, the shape checks, the
//! converter and the model loaders), on stable Rust: the valid tiny checkpoints are
//! mutated (bit flips, extreme bytes and length fields, truncations, splices, inserted
//! and deleted bytes, swapped pickle opcodes, numbers in the JSON header set to extremes),
//! mostly where the files' structure lies, and every case must end in `Ok` or a named
//! error: no panic, no hang, and no single allocation beyond what the file's size allows.
//!
//! `cargo test --release --test fuzz` runs 8,000 cases; longer runs from a command:
//! `FUZZ_CASES=1000000 FUZZ_SEED=7 cargo test --release --test fuzz -- --nocapture`.
//! An input that fails is written to `target/fuzz-crashers/` (as its seed's name and one edit);
//! once fixed, it goes into `tests/fixtures/crashers/`, which every run reads first.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{converted, tiny_clip_config, tiny_fixture, Rng};
use daclip_webgpu::models::clip::{DaClip, DaClipConfig};
use daclip_webgpu::models::unet::ConditionalUNet;
use daclip_webgpu::weights::DeviceDType;
use daclip_webgpu::models::{Checkpoint, ConvertOptions, ModelKind, StoreDType, convert};
use daclip_webgpu::{Device, Error};

/// The largest single allocation since the last reset: a reader that trusts a length
/// field shows here before it can exhaust memory.
struct LargestAllocation;

static LARGEST: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for LargestAllocation {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST.fetch_max(new_size, Ordering::Relaxed);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static ALLOCATOR: LargestAllocation = LargestAllocation;

/// What a file of `len` bytes may make the readers allocate at once: its tensors widened
/// from f16 to f32 on the CPU device, and some slack for tables.
fn allocation_allowed(len: usize) -> usize {
    4 * len + (16 << 20)
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Everything a load does with a file of unknown origin, as the engine does it.
fn read_all(dev: &Device, bytes: &[u8], clip_config: Option<DaClipConfig>) -> Result<&'static str, Error> {
    let ckpt = Checkpoint::parse(bytes, clip_config.clone())?;
    match &ckpt.kind {
        ModelKind::DaClip(_) => drop(DaClip::load(dev, &ckpt, DeviceDType::F16)?),
        ModelKind::UNet(_) => drop(ConditionalUNet::load(dev, &ckpt, DeviceDType::F16)?),
    }
    convert(&bytes, ConvertOptions { clip_config, ..ConvertOptions::new(StoreDType::F16) }, &mut std::io::sink())?;
    Ok(ckpt.kind.name())
}

/// A valid file to mutate, and the byte ranges where its structure lies.
struct Seed {
    name: &'static str,
    bytes: Vec<u8>,
    clip_config: Option<DaClipConfig>,
    structure: Vec<(usize, usize)>,
    /// Where the pickle lies (torch archives): its opcodes are swapped there.
    pickle: Option<(usize, usize)>,
}

fn u16_at(b: &[u8], at: usize) -> usize {
    u16::from_le_bytes([b[at], b[at + 1]]) as usize
}

fn u32_at(b: &[u8], at: usize) -> usize {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap()) as usize
}

/// The bytes of a seed by its name: the two committed tiny checkpoints, and the tiny
/// DA-CLIP converted to f16 safetensors here (as `www/build.mjs` converts it for the
/// demo; a clean clone has no build output to read).
fn seed_bytes(name: &str) -> Vec<u8> {
    match name {
        "daclip.pt" | "universal-ir.pth" => tiny_fixture(name),
        "daclip.safetensors" => {
            let options = ConvertOptions { clip_config: Some(tiny_clip_config()), ..ConvertOptions::new(StoreDType::F16) };
            converted(&tiny_fixture("daclip.pt"), options).unwrap().0
        }
        _ => panic!("no seed is named {name}"),
    }
}

fn seed(name: &'static str, clip_config: Option<DaClipConfig>) -> Seed {
    let bytes = seed_bytes(name);
    let mut structure = Vec::new();
    let mut pickle = None;
    if bytes.starts_with(b"PK\x03\x04") {
        // Local headers one after another (torch.save writes sizes into them), small
        // records whole, then the central directory to the end.
        let mut at = 0;
        while bytes[at..].starts_with(b"PK\x03\x04") {
            let (size, name_len, extra_len) = (u32_at(&bytes, at + 18), u16_at(&bytes, at + 26), u16_at(&bytes, at + 28));
            let data = at + 30 + name_len + extra_len;
            structure.push((at, data));
            let entry = String::from_utf8_lossy(&bytes[at + 30..at + 30 + name_len]).into_owned();
            if entry.ends_with("data.pkl") {
                pickle = Some((data, data + size));
            }
            if size <= 4096 {
                structure.push((data, data + size));
            }
            at = data + size;
        }
        structure.push((at, bytes.len()));
    } else {
        let header = 8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        structure.push((0, header));
    }
    Seed { name, bytes, clip_config, structure, pickle }
}

/// Opcodes of pickle protocols 0 to 5, and bytes that are none.
const OPCODES: &[u8] = b"(.0125FIJKLMNPQRSTUVXabcdeghijlopqrstu}])\x80\x81\x82\x83\x84\x85\x86\x87\x88\x89\x8a\x8b\x8c\x8d\x8e\x8f\x90\x91\x92\x93\x94\x95\x96\x97\x98\x00\xff";

const EXTREME_U64: &[u64] = &[0, 1, 0x7F, 0x80, 0xFF, 0xFFFF, 0x7FFF_FFFF, 0xFFFF_FFFF, 0x1_0000_0000, u64::MAX / 2, u64::MAX];

const NUMBERS: &[&str] = &["0", "1", "-1", "4294967295", "4294967296", "1000000000000", "18446744073709551615", "99999999999999999999999", "1e400", "3.5"];

fn mutate(seed: &Seed, other: &Seed, rng: &mut Rng) -> Vec<u8> {
    let mut b = seed.bytes.clone();
    for _ in 0..1 + rng.below(3) {
        if b.is_empty() {
            break;
        }
        // Mostly where the structure is; sometimes anywhere.
        let p = if rng.below(10) == 0 {
            rng.below(b.len())
        } else {
            let (s, e) = seed.structure[rng.below(seed.structure.len())];
            (s + rng.below(e - s)).min(b.len() - 1)
        };
        // A safetensors header is JSON, which almost any byte change breaks: half its
        // mutations change a number instead.
        let op = if seed.pickle.is_none() && rng.below(2) == 0 { 8 } else { rng.below(9) };
        match op {
            0 => b[p] ^= 1 << rng.below(8),
            1 => {
                let random = rng.next_u64() as u8;
                b[p] = rng.pick(&[0u8, 1, 0x7F, 0x80, 0xFF, random]);
            }
            2 => {
                let v = rng.pick(EXTREME_U64).to_le_bytes();
                let n = if rng.below(2) == 0 { 4 } else { 8 }.min(b.len() - p);
                b[p..p + n].copy_from_slice(&v[..n]);
            }
            3 => b.truncate(p),
            4 => {
                let src = &other.bytes;
                let n = (1 + rng.below(256)).min(b.len() - p);
                let from = rng.below(src.len() - n);
                b[p..p + n].copy_from_slice(&src[from..from + n]);
            }
            5 => {
                let n = 1 + rng.below(16);
                let insert: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
                b.splice(p..p, insert);
            }
            6 => {
                let n = (1 + rng.below(16)).min(b.len() - p);
                b.drain(p..p + n);
            }
            7 => match seed.pickle {
                Some((s, e)) => {
                    let at = (s + rng.below(e - s)).min(b.len() - 1);
                    b[at] = rng.pick(OPCODES);
                }
                None => b[p] = rng.pick(OPCODES),
            },
            _ => {
                // A number in the JSON header (safetensors offsets and shapes, the config
                // in the metadata) set to an extreme.
                let header = seed.structure[0].1.min(b.len());
                let mut digits: Vec<usize> = (8..header).filter(|&i| b[i].is_ascii_digit() && !b[i - 1].is_ascii_digit()).collect();
                // Half the time one of the model config's (in the metadata), which sizes
                // everything the loaders expect.
                let config = b[..header].windows(6).position(|w| w == b"config");
                let config_end = config.and_then(|c| b[c..header].windows(2).position(|w| w == b"}\"").map(|e| c + e));
                if let (Some(c), Some(e)) = (config, config_end) {
                    if rng.below(2) == 0 {
                        digits.retain(|&i| i > c && i < e);
                    }
                }
                if digits.is_empty() {
                    b[p] ^= 0xFF;
                } else {
                    let at = rng.pick(&digits);
                    let end = (at..header).find(|&i| !b[i].is_ascii_digit()).unwrap_or(header);
                    b.splice(at..end, rng.pick(NUMBERS).bytes());
                }
            }
        }
    }
    b
}

enum Outcome {
    Read(&'static str),
    Refused(Error),
    Panicked(String),
}

/// Runs one input, catching a panic and measuring its largest allocation.
fn run_case(dev: &Device, bytes: &[u8], clip_config: Option<DaClipConfig>) -> (Outcome, usize) {
    LARGEST.store(0, Ordering::Relaxed);
    let outcome = match catch_unwind(AssertUnwindSafe(|| read_all(dev, bytes, clip_config))) {
        Ok(Ok(kind)) => Outcome::Read(kind),
        Ok(Err(e)) => Outcome::Refused(e),
        Err(p) => Outcome::Panicked(p.downcast_ref::<String>().cloned().or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string())).unwrap_or_default()),
    };
    (outcome, LARGEST.load(Ordering::Relaxed))
}

/// The first words of an error: what the table groups by.
fn kind_of(e: &Error) -> String {
    // Without the names and numbers that differ from case to case.
    let mut text = String::new();
    let mut quoted = false;
    for c in e.to_string().chars() {
        match c {
            '`' => {
                quoted = !quoted;
                if quoted {
                    text.push_str("`..`");
                }
            }
            _ if quoted => {}
            '0'..='9' if text.ends_with('#') => {}
            '0'..='9' => text.push('#'),
            _ => text.push(c),
        }
    }
    let words: Vec<&str> = text.split('#').next().unwrap_or_default().split_whitespace().take(9).collect();
    words.join(" ")
}

fn crashers_dir() -> PathBuf {
    root().join("tests/fixtures/crashers")
}

/// A crasher as its seed and one edit (the bytes between their common prefix and
/// suffix), small enough to commit where the file itself is megabytes.
#[derive(serde::Serialize, serde::Deserialize)]
struct Crasher {
    seed: String,
    /// Where the edit starts, how many of the seed's bytes it removes, and the bytes it
    /// puts there (hex).
    at: usize,
    removed: usize,
    inserted: String,
    /// What went wrong when it was found.
    found: String,
}

impl Crasher {
    fn new(seed: &Seed, input: &[u8], found: String) -> Crasher {
        let prefix = seed.bytes.iter().zip(input).take_while(|(a, b)| a == b).count();
        let max_suffix = seed.bytes.len().min(input.len()) - prefix;
        let suffix = seed.bytes.iter().rev().zip(input.iter().rev()).take(max_suffix).take_while(|(a, b)| a == b).count();
        let inserted = input[prefix..input.len() - suffix].iter().map(|b| format!("{b:02x}")).collect();
        Crasher { seed: seed.name.to_string(), at: prefix, removed: seed.bytes.len() - suffix - prefix, inserted, found }
    }

    fn bytes(&self) -> Vec<u8> {
        let mut b = seed_bytes(&self.seed);
        let inserted: Vec<u8> = (0..self.inserted.len() / 2).map(|i| u8::from_str_radix(&self.inserted[2 * i..2 * i + 2], 16).unwrap()).collect();
        b.splice(self.at..self.at + self.removed, inserted);
        b
    }
}

#[test]
fn mutated_weights_files_end_in_a_value_or_a_named_error() {
    std::panic::set_hook(Box::new(|_| {})); // panics are reported below, with their input
    let dev = Device::cpu();
    let clip = tiny_clip_config();
    let mut failures = Vec::new();

    // Every input found so far that once broke a reader.
    let mut corpus: Vec<PathBuf> = std::fs::read_dir(crashers_dir()).map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect()).unwrap_or_default();
    corpus.sort();
    for path in &corpus {
        let crasher: Crasher = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let bytes = crasher.bytes();
        // A crasher made from the DA-CLIP .pt is read with its config, as that seed was.
        let config = (crasher.seed == "daclip.pt").then(|| clip.clone());
        let (outcome, largest) = run_case(&dev, &bytes, config);
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        match outcome {
            Outcome::Refused(e) if largest <= allocation_allowed(bytes.len()) => println!("crasher {name}: refused ({})", kind_of(&e)),
            Outcome::Refused(_) => failures.push(format!("crasher {name}: allocated {largest} bytes at once for a file of {}", bytes.len())),
            Outcome::Read(_) => failures.push(format!("crasher {name}: read as valid")),
            Outcome::Panicked(m) => failures.push(format!("crasher {name}: panicked: {m}")),
        }
    }
    println!("{} crasher(s) of the corpus refused cleanly", corpus.len() - failures.len());

    let seeds = [
        seed("daclip.pt", Some(clip.clone())),
        seed("universal-ir.pth", None),
        seed("daclip.safetensors", None),
    ];
    for s in &seeds {
        let (outcome, largest) = run_case(&dev, &s.bytes, s.clip_config.clone());
        assert!(matches!(outcome, Outcome::Read(_)), "the seed {} must be valid", s.name);
        assert!(largest <= allocation_allowed(s.bytes.len()), "the seed {} allocates {largest} bytes at once", s.name);
    }

    let cases: u64 = std::env::var("FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(8_000);
    let base: u64 = std::env::var("FUZZ_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(1);
    // A hang shows as a case that does not end: the watchdog names it and stops the run.
    let current = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let watchdog = {
        let (current, done) = (current.clone(), done.clone());
        std::thread::spawn(move || {
            let (mut last, mut since) = (u64::MAX, Instant::now());
            while !done.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(200));
                let now = current.load(Ordering::Relaxed);
                if now != last {
                    (last, since) = (now, Instant::now());
                } else if since.elapsed() > Duration::from_secs(120) {
                    eprintln!("case {now} (FUZZ_SEED={base}) has run for 2 minutes: a hang");
                    std::process::exit(1);
                }
            }
        })
    };
    let out_dir = root().join("target/fuzz-crashers");
    let mut table: BTreeMap<(&str, String), usize> = BTreeMap::new();
    // The largest single allocation as a share of what the file's size allows.
    let mut worst_share = 0.0f64;
    for case in 0..cases {
        current.store(case, Ordering::Relaxed);
        let mut rng = Rng::new(base.wrapping_mul(0x1000_0000_01B3) ^ case.wrapping_mul(0x9E37_79B9));
        let s = &seeds[case as usize % seeds.len()];
        let other = &seeds[rng.below(seeds.len())];
        let input = mutate(s, other, &mut rng);
        let (outcome, largest) = run_case(&dev, &input, s.clip_config.clone());
        worst_share = worst_share.max(largest as f64 / allocation_allowed(input.len()) as f64);
        let problem = match &outcome {
            Outcome::Read(kind) => {
                *table.entry((s.name, format!("read as a valid {kind}"))).or_default() += 1;
                None
            }
            Outcome::Refused(e) => {
                *table.entry((s.name, kind_of(e))).or_default() += 1;
                None
            }
            Outcome::Panicked(m) => Some(format!("panicked: {m}")),
        };
        let problem = problem.or_else(|| (largest > allocation_allowed(input.len())).then(|| format!("allocated {largest} bytes at once for a file of {}", input.len())));
        if let Some(problem) = problem {
            std::fs::create_dir_all(&out_dir).unwrap();
            let file = out_dir.join(format!("{}-seed{base}-case{case}.json", s.name));
            std::fs::write(&file, serde_json::to_string_pretty(&Crasher::new(s, &input, problem.clone())).unwrap()).unwrap();
            failures.push(format!("case {case} ({}): {problem}; input in {}", s.name, file.display()));
        }
    }
    done.store(true, Ordering::Relaxed);
    watchdog.join().unwrap();

    println!("{cases} mutated files (FUZZ_SEED={base}); the largest single allocation {:.1}% of what the file's size allows (16 MiB + 4 x its size)", 100.0 * worst_share);
    println!("| seed | outcome | cases |\n|---|---|---|");
    for ((seed, outcome), n) in &table {
        println!("| {seed} | {outcome} | {n} |");
    }
    drop(std::panic::take_hook()); // the default hook again, to report the verdict
    assert!(failures.is_empty(), "{} failure(s):\n{}", failures.len(), failures.join("\n"));
}
