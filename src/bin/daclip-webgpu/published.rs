//! The published weights on first use: `--weights published|published-mix|published-wild`
//! (the default where neither --daclip nor --unet is given) downloads the pair once from
//! the model card (or a mirror), converts it to f16 safetensors in the cache and loads
//! it from there ever after, offline; and `daclip-webgpu weights list|download|rm|path`.

use std::fs::File;
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use daclip_webgpu::weights::FileSource;
use daclip_webgpu::models::{Checkpoint, ConvertOptions, StoreDType};
use daclip_webgpu::{Error, Result};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Deserialize;

use crate::convert::convert_file;

/// The published pairs, as the npm package lists them: the JSON between the markers in
/// www/lib/daclip.js is the one table both read.
const PACKAGE: &str = include_str!("../../../www/lib/daclip.js");
const BEGIN: &str = "// BEGIN PUBLISHED";
const END: &str = "// END PUBLISHED";

#[derive(Deserialize)]
struct Table {
    #[serde(rename = "baseUrl")]
    base_url: String,
    pairs: std::collections::BTreeMap<String, Pair>,
}

#[derive(Deserialize, Clone)]
pub struct Pair {
    pub daclip: String,
    pub unet: String,
    /// Bytes of GPU memory the loaded pair holds.
    pub memory: u64,
    pub about: String,
}

fn table() -> Table {
    let start = PACKAGE.find(BEGIN).expect("the table's start marker in daclip.js");
    let json = &PACKAGE[start..PACKAGE.find(END).expect("the table's end marker in daclip.js")];
    let json = &json[json.find('{').expect("a JSON object")..json.rfind('}').expect("a JSON object") + 1];
    serde_json::from_str(json).expect("daclip.js's table of published weights is JSON")
}

/// The names `--weights` takes.
pub fn names() -> Vec<String> {
    table().pairs.into_keys().collect()
}

pub const DEFAULT: &str = "published";

fn pair_name(s: &str) -> std::result::Result<String, String> {
    let names = names();
    if names.iter().any(|n| n == s) {
        Ok(s.to_string())
    } else {
        Err(format!("no published pair is named `{s}`: {}", names.join(", ")))
    }
}

/// Where the published weights come from and go: the flags every command that loads
/// weights shares.
#[derive(clap::Args, Clone)]
pub struct WeightsArgs {
    /// A published pair, downloaded on first use and kept converted in the cache
    /// (published: DA-CLIP ViT-B/32 and the universal-IR UNet, about 1.2 GB; published-mix;
    /// published-wild: ViT-L/14 and the Wild-IR UNet, 3.2 GB). The default where neither
    /// --daclip nor --unet is given.
    #[arg(long, value_parser = pair_name)]
    pub weights: Option<String>,
    /// Download from this mirror (a folder of the same file names) instead of the model
    /// card; also DACLIP_WEBGPU_BASE_URL.
    #[arg(long, env = "DACLIP_WEBGPU_BASE_URL")]
    pub base_url: Option<String>,
    /// Never use the network: only weights already in the cache (also HF_HUB_OFFLINE=1).
    #[arg(long)]
    pub offline: bool,
    /// Keep the downloaded .pt/.pth beside the converted files in the cache.
    #[arg(long)]
    pub keep_original: bool,
}

/// The cache folder: DACLIP_WEBGPU_CACHE, else the platform's (~/.cache/daclip-webgpu,
/// ~/Library/Caches/daclip-webgpu, %LOCALAPPDATA%\daclip-webgpu).
pub fn cache_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("DACLIP_WEBGPU_CACHE").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    dirs::cache_dir()
        .map(|d| d.join("daclip-webgpu"))
        .ok_or_else(|| Error::Usage("no cache folder on this system: set DACLIP_WEBGPU_CACHE to one".into()))
}

fn io(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Io(format!("{}: {e}", path.display()))
}

/// The converted file a published original is kept as.
fn converted_name(original: &str) -> String {
    format!("{original}.f16.safetensors")
}

fn megabytes(bytes: u64) -> String {
    format!("{:.0} MB", bytes as f64 / 1e6)
}

pub struct Published {
    pub name: String,
    pub pair: Pair,
    base_url: String,
    offline: bool,
    keep_original: bool,
    cache: PathBuf,
}

impl Published {
    pub fn new(name: Option<&str>, args: &WeightsArgs) -> Result<Published> {
        let table = table();
        let name = name.or(args.weights.as_deref()).unwrap_or(DEFAULT).to_string();
        let pair = table.pairs.get(&name).cloned().ok_or_else(|| Error::Usage(format!("no published pair is named `{name}`: {}", names().join(", "))))?;
        let mut base_url = args.base_url.clone().unwrap_or(table.base_url);
        if !base_url.ends_with('/') {
            base_url.push('/');
        }
        let offline = args.offline || std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
        Ok(Published { name, pair, base_url, offline, keep_original: args.keep_original, cache: cache_dir()? })
    }

    pub fn files(&self) -> [&str; 2] {
        [&self.pair.daclip, &self.pair.unet]
    }

    /// The converted files of the pair (DA-CLIP, and the UNet `with_unet`), downloaded
    /// and converted first where they are not in the cache (the sizes said before the
    /// download starts).
    pub fn ensure(&self, with_unet: bool) -> Result<(PathBuf, Option<PathBuf>)> {
        let wanted = &self.files()[..if with_unet { 2 } else { 1 }];
        let cached: Vec<Option<PathBuf>> = wanted.iter().map(|f| self.cached(f)).collect();
        let missing: Vec<&str> = wanted.iter().zip(&cached).filter(|(_, c)| c.is_none()).map(|(f, _)| *f).collect();
        let mut heads = std::collections::HashMap::new();
        if !missing.is_empty() {
            if self.offline {
                return Err(Error::Io(format!(
                    "the {} weights are not in the cache ({}) and --offline (or HF_HUB_OFFLINE) forbids downloading them; run once online, or pass --daclip/--unet with your own files",
                    self.name,
                    self.cache.display()
                )));
            }
            let from_hub: Vec<&str> = missing.iter().copied().filter(|f| hub_copy(f).is_some()).collect();
            let to_download: Vec<&str> = missing.iter().copied().filter(|f| !from_hub.contains(f)).collect();
            for f in &to_download {
                heads.insert(*f, self.head(f)?);
            }
            if !to_download.is_empty() {
                let listed: Vec<String> = to_download.iter().map(|f| format!("{f} ({})", heads[f].size.map_or("size unknown".into(), megabytes))).collect();
                let total = heads.values().filter_map(|h| h.size).sum::<u64>();
                eprintln!(
                    "downloading the {} weights once, {} in all: {} from {}; kept converted in {}",
                    self.name,
                    megabytes(total),
                    listed.join(", "),
                    self.base_url,
                    self.cache.display()
                );
            }
        }
        // A file found cached above is used as it is; a missing one is looked for again
        // under its lock (another process may have fetched it meanwhile).
        let mut paths = wanted.iter().zip(cached).map(|(f, c)| c.map_or_else(|| self.ensure_file(f, heads.remove(f)), Ok));
        let daclip = paths.next().expect("DA-CLIP is always wanted")?;
        Ok((daclip, paths.next().transpose()?))
    }

    /// The cached converted file of `original`, where it is there and reads as a
    /// complete safetensors file; a damaged one is removed (and fetched again).
    fn cached(&self, original: &str) -> Option<PathBuf> {
        let path = self.cache.join(converted_name(original));
        if !path.is_file() {
            return None;
        }
        match FileSource::open(&path).and_then(|f| Checkpoint::read(f, None).map(|_| ())) {
            Ok(()) => Some(path),
            Err(e) => {
                eprintln!("the cached {} is damaged ({e}); fetching it again", path.display());
                std::fs::remove_file(&path).ok();
                None
            }
        }
    }

    /// `head`: what the server said of the file, where it was asked already.
    fn ensure_file(&self, original: &str, head: Option<Head>) -> Result<PathBuf> {
        let _lock = self.lock(original)?;
        if let Some(path) = self.cached(original) {
            return Ok(path);
        }
        let (source, downloaded) = self.locate_original(original, head)?;
        let out = self.cache.join(converted_name(original));
        let converted = FileSource::open(&source).and_then(|file| convert_file(&file, &out, ConvertOptions::new(StoreDType::F16)));
        if let Err(e) = converted {
            if downloaded {
                // A download that does not convert is not what the model card serves.
                std::fs::remove_file(&source).ok();
            }
            return Err(Error::Checkpoint(format!("{original} from {}: {e}", source.display())));
        }
        if downloaded && !self.keep_original {
            std::fs::remove_file(&source).map_err(|e| io(&source, e))?;
        }
        Ok(out)
    }

    /// The original `file` of the pair (.pt/.pth), fetched into the cache and kept there
    /// where it is not at hand.
    pub fn original(&self, file: &str) -> Result<PathBuf> {
        let _lock = self.lock(file)?;
        Ok(self.locate_original(file, None)?.0)
    }

    /// One process at a time fetches a file: another waits here, then finds it there.
    /// The cache folder is made here, where every fetch starts.
    fn lock(&self, file: &str) -> Result<File> {
        std::fs::create_dir_all(&self.cache).map_err(|e| io(&self.cache, format!("cannot create the cache folder ({e})")))?;
        let lock_path = self.cache.join(format!("{file}.lock"));
        let lock = File::create(&lock_path).map_err(|e| io(&lock_path, e))?;
        if lock.try_lock().is_err() {
            eprintln!("waiting for another daclip-webgpu to finish fetching {file}...");
            lock.lock().map_err(|e| io(&lock_path, e))?;
        }
        Ok(lock)
    }

    /// Where the original `original` is: kept in the cache, in the Hugging Face cache, or
    /// downloaded now (then the second value is true).
    fn locate_original(&self, original: &str, head: Option<Head>) -> Result<(PathBuf, bool)> {
        Ok(match (self.cache.join(original), hub_copy(original)) {
            (kept, _) if kept.is_file() => (kept, false),
            (_, Some(hub)) => {
                eprintln!("using {original} from the Hugging Face cache: {}", hub.display());
                (hub, false)
            }
            (target, None) if !self.offline => {
                let head = match head {
                    Some(h) => h,
                    None => self.head(original)?,
                };
                self.download(original, &target, head)?;
                (target, true)
            }
            _ => return Err(Error::Io(format!("{original} is not in the cache and --offline forbids downloading it"))),
        })
    }

    fn url(&self, file: &str) -> String {
        format!("{}{file}", self.base_url)
    }

    /// The file's size and, where the server says (the hub's `X-Linked-Etag` of an LFS
    /// file), its SHA-256; redirects not followed, since the hub's own answer carries them.
    fn head(&self, file: &str) -> Result<Head> {
        let url = self.url(file);
        let agent: ureq::Agent = ureq::Agent::config_builder().max_redirects(0).timeout_connect(Some(Duration::from_secs(30))).build().into();
        let response = agent.head(&url).call().map_err(|e| unreachable_error(&url, e))?;
        let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
        let size = header("x-linked-size").or_else(|| if response.status().is_redirection() { None } else { header("content-length") }).and_then(|v| v.parse().ok());
        let sha256 = header("x-linked-etag").map(|e| e.trim_matches('"').to_ascii_lowercase()).filter(|e| e.len() == 64 && e.bytes().all(|b| b.is_ascii_hexdigit()));
        Ok(Head { size, sha256 })
    }

    /// Downloads `file` to `target`: into `<target>.part`, resumed with a Range request
    /// after a broken connection (here, or in an earlier run), checked against the size
    /// and the SHA-256 the server gives, then renamed.
    fn download(&self, file: &str, target: &Path, head: Head) -> Result<()> {
        let url = self.url(file);
        let part = target.with_file_name(format!("{file}.part"));
        let bar = progress(file, head.size);
        const ATTEMPTS: usize = 4;
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.fetch_into(&url, &part, head.size, &bar) {
                Ok(()) => break,
                Err(Fetch::Broken(e)) if attempt < ATTEMPTS => {
                    bar.suspend(|| eprintln!("{file}: the connection broke ({e}); resuming"));
                    std::thread::sleep(Duration::from_millis(500 * attempt as u64));
                }
                Err(Fetch::Broken(e)) => {
                    bar.abandon();
                    return Err(Error::Io(format!("could not download {url}: {e}; run the command again to resume ({} kept)", part.display())));
                }
                Err(Fetch::Failed(e)) => {
                    bar.abandon();
                    return Err(e);
                }
            }
        }
        bar.finish_and_clear();
        let got = part.metadata().map_err(|e| io(&part, e))?.len();
        if let Some(size) = head.size.filter(|&s| s != got) {
            std::fs::remove_file(&part).ok();
            return Err(Error::Io(format!("{url}: downloaded {got} bytes where the server announced {size}; run the command again")));
        }
        if let Some(want) = &head.sha256 {
            let got = sha256_of(&part)?;
            if &got != want {
                std::fs::remove_file(&part).ok();
                return Err(Error::Io(format!("{url}: the download's SHA-256 is {got}, the server's is {want}: it was damaged on the way; run the command again")));
            }
        }
        std::fs::rename(&part, target).map_err(|e| io(target, e))?;
        eprintln!("{file}: downloaded, {}", megabytes(got));
        Ok(())
    }

    fn fetch_into(&self, url: &str, part: &Path, size: Option<u64>, bar: &ProgressBar) -> std::result::Result<(), Fetch> {
        let have = part.metadata().map(|m| m.len()).unwrap_or(0);
        if size.is_some_and(|s| have == s) {
            return Ok(());
        }
        let mut request = ureq::get(url);
        if have > 0 {
            request = request.header("Range", &format!("bytes={have}-"));
        }
        let mut response = request.call().map_err(|e| match e {
            ureq::Error::StatusCode(_) => Fetch::Failed(unreachable_error(url, e)),
            e => Fetch::Broken(e.to_string()),
        })?;
        let resumed = response.status().as_u16() == 206;
        let mut out = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(resumed)
            .truncate(!resumed)
            .open(part)
            .map_err(|e| Fetch::Failed(io(part, e)))?;
        let mut at = if resumed { have } else { 0 };
        bar.set_position(at);
        let mut body = response.body_mut().as_reader();
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = match body.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) => return Err(Fetch::Broken(e.to_string())),
            };
            out.write_all(&buf[..n]).map_err(|e| Fetch::Failed(disk_error(part, e)))?;
            at += n as u64;
            bar.set_position(at);
        }
        out.sync_all().map_err(|e| Fetch::Failed(disk_error(part, e)))?;
        match size {
            Some(s) if at < s => Err(Fetch::Broken(format!("the server stopped after {at} of {s} bytes"))),
            _ => Ok(()),
        }
    }

    /// Each file of the pair: where it is kept and its size, if cached.
    pub fn status(&self) -> Vec<(String, PathBuf, Option<u64>)> {
        self.files()
            .into_iter()
            .map(|f| {
                let path = self.cache.join(converted_name(f));
                let size = path.metadata().ok().map(|m| m.len());
                (f.to_string(), path, size)
            })
            .collect()
    }

    /// Removes the pair's files from the cache (converted, originals, partial downloads);
    /// returns how many there were.
    pub fn remove(&self) -> Result<usize> {
        let mut removed = 0;
        for f in self.files() {
            for name in [converted_name(f), f.to_string(), format!("{f}.part"), format!(".{}.partial", converted_name(f)), format!("{f}.lock")] {
                let path = self.cache.join(name);
                if path.exists() {
                    std::fs::remove_file(&path).map_err(|e| io(&path, e))?;
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }
}

/// The weight files a command loads: those named with --daclip (and --unet where
/// `with_unet`), or else the published pair (`--weights`, default `published`), fetched
/// on first use.
pub fn resolve(daclip: Option<&Path>, unet: Option<&Path>, args: &WeightsArgs, with_unet: bool) -> Result<(PathBuf, Option<PathBuf>)> {
    let named = daclip.is_some() || unet.is_some();
    if named && args.weights.is_some() {
        return Err(Error::Usage("give --weights (a published pair) or your own --daclip/--unet files, not both".into()));
    }
    match (daclip, unet) {
        (Some(d), Some(u)) if with_unet => Ok((d.to_path_buf(), Some(u.to_path_buf()))),
        (Some(d), None) if !with_unet => Ok((d.to_path_buf(), None)),
        (None, None) => Published::new(None, args)?.ensure(with_unet),
        _ if with_unet => Err(Error::Usage("give both --daclip and --unet, or neither to use the published weights (--weights)".into())),
        _ => Err(Error::Usage("classify takes --daclip only".into())),
    }
}

struct Head {
    size: Option<u64>,
    sha256: Option<String>,
}

enum Fetch {
    /// The connection broke: worth resuming.
    Broken(String),
    /// Anything else (an HTTP status, the disk).
    Failed(Error),
}

fn unreachable_error(url: &str, e: ureq::Error) -> Error {
    match e {
        ureq::Error::StatusCode(code) => Error::Io(format!("{url}: HTTP {code}{}", if code == 404 { " (not found: is the mirror's folder right?)" } else { "" })),
        e => Error::Io(format!("could not reach {url}: {e}; use --offline with cached weights, or --daclip/--unet with your own files")),
    }
}

fn disk_error(path: &Path, e: std::io::Error) -> Error {
    if e.kind() == std::io::ErrorKind::StorageFull {
        return Error::Io(format!("{}: the disk is full; free some space (or set DACLIP_WEBGPU_CACHE to a larger disk) and run the command again to resume", path.display()));
    }
    io(path, e)
}

fn progress(file: &str, size: Option<u64>) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        eprintln!("downloading {file}...");
        return ProgressBar::hidden();
    }
    let bar = match size {
        Some(s) => ProgressBar::new(s),
        None => ProgressBar::no_length(),
    };
    bar.set_style(ProgressStyle::with_template("{msg} [{bar:30}] {decimal_bytes}/{decimal_total_bytes} {decimal_bytes_per_sec}, {eta} left").expect("a valid template").progress_chars("=> "));
    bar.set_message(file.to_string());
    bar
}

fn sha256_of(path: &Path) -> Result<String> {
    use sha2::Digest;
    let mut file = File::open(path).map_err(|e| io(path, e))?;
    let mut hasher = sha2::Sha256::new();
    std::io::copy(&mut file, &mut hasher).map_err(|e| io(path, e))?;
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// The model card's folder in the Hugging Face cache.
const HUB_REPO: &str = "models--weblzw--daclip-uir-ViT-B-32-irsde";

/// A copy of `file` that the Hugging Face tools already downloaded ($HF_HOME/hub, else
/// ~/.cache/huggingface/hub): used instead of downloading it again.
fn hub_copy(file: &str) -> Option<PathBuf> {
    let hub = match std::env::var_os("HF_HOME").filter(|h| !h.is_empty()) {
        Some(home) => PathBuf::from(home).join("hub"),
        None => dirs::home_dir()?.join(".cache/huggingface/hub"),
    };
    let snapshots = std::fs::read_dir(hub.join(HUB_REPO).join("snapshots")).ok()?;
    snapshots.filter_map(|s| s.ok()).map(|s| s.path().join(file)).find(|p| p.is_file())
}
