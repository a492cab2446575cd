//! The published weights on first use, against a mirror on 127.0.0.1 serving the tiny
//! checkpoints under the published names: the first run downloads, converts and restores;
//! with the mirror gone the next run restores from the cache, the same bytes; a
//! connection dropped halfway is resumed; a damaged cache entry or download is detected;
//! --offline with nothing cached and a 404 say what to do; `weights list|path|rm`.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::Digest;

use common::{scratch, tiny};

/// A static file server on 127.0.0.1 with Range requests, and faults to order: drop the
/// connection halfway through a file's first download, or give a wrong SHA-256.
struct Mirror {
    url: String,
    files: Arc<Mutex<HashMap<String, Vec<u8>>>>,
    drop_first_get: Arc<AtomicBool>,
    wrong_sha: Arc<AtomicBool>,
    requests: Arc<AtomicUsize>,
    running: Arc<AtomicBool>,
}

impl Mirror {
    fn start(files: HashMap<String, Vec<u8>>) -> Mirror {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let mirror = Mirror {
            url: format!("http://{}/", listener.local_addr().unwrap()),
            files: Arc::new(Mutex::new(files)),
            drop_first_get: Arc::new(AtomicBool::new(false)),
            wrong_sha: Arc::new(AtomicBool::new(false)),
            requests: Arc::new(AtomicUsize::new(0)),
            running: Arc::new(AtomicBool::new(true)),
        };
        let (files, drop_first, wrong_sha, requests, running) =
            (mirror.files.clone(), mirror.drop_first_get.clone(), mirror.wrong_sha.clone(), mirror.requests.clone(), mirror.running.clone());
        std::thread::spawn(move || {
            // Bounded: the test's mirror stops when the test drops it, or after 10 minutes.
            let deadline = std::time::Instant::now() + Duration::from_secs(600);
            while running.load(Ordering::Relaxed) && std::time::Instant::now() < deadline {
                match listener.accept() {
                    Ok((stream, _)) => {
                        requests.fetch_add(1, Ordering::Relaxed);
                        serve(stream, &files, &drop_first, &wrong_sha);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        mirror
    }
}

impl Drop for Mirror {
    fn drop(&mut self) {
        self.running.store(false, Ordering::Relaxed);
    }
}

fn serve(mut stream: TcpStream, files: &Mutex<HashMap<String, Vec<u8>>>, drop_first: &AtomicBool, wrong_sha: &AtomicBool) {
    stream.set_nonblocking(false).ok();
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request = String::new();
    if reader.read_line(&mut request).is_err() {
        return;
    }
    let mut range_from = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).is_err() || line.trim().is_empty() {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("range: bytes=") {
            range_from = v.trim().trim_end_matches('-').parse::<usize>().ok();
        }
    }
    let mut parts = request.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or("/"));
    let body = files.lock().unwrap().get(path.trim_start_matches('/')).cloned();
    let Some(body) = body else {
        stream.write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 9\r\nconnection: close\r\n\r\nnot found").ok();
        return;
    };
    let mut sha: String = sha2::Sha256::digest(&body).iter().map(|b| format!("{b:02x}")).collect();
    if wrong_sha.load(Ordering::Relaxed) {
        sha = "0".repeat(64);
    }
    if method == "HEAD" {
        let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\nx-linked-etag: \"{sha}\"\r\nconnection: close\r\n\r\n", body.len());
        stream.write_all(head.as_bytes()).ok();
        return;
    }
    let from = range_from.unwrap_or(0).min(body.len());
    let status = if range_from.is_some() { "206 Partial Content" } else { "200 OK" };
    let head = format!("HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n", body.len() - from);
    stream.write_all(head.as_bytes()).ok();
    let rest = &body[from..];
    if drop_first.swap(false, Ordering::Relaxed) {
        // Half the file, then the connection drops.
        stream.write_all(&rest[..rest.len() / 2]).ok();
        stream.shutdown(std::net::Shutdown::Both).ok();
        return;
    }
    stream.write_all(rest).ok();
}



/// The command line with the cache in `cache`, no Hugging Face cache, and the mirror at
/// `base` (when given).
fn command(cache: &Path, base: Option<&str>, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_daclip-webgpu"));
    cmd.args(args).env("DACLIP_WEBGPU_CACHE", cache).env("HF_HOME", cache.join("no-hub")).env_remove("HF_HUB_OFFLINE").env_remove("DACLIP_WEBGPU_BASE_URL");
    if let Some(base) = base {
        cmd.env("DACLIP_WEBGPU_BASE_URL", base);
    }
    cmd
}

/// [`command`] run: exit code, stdout, stderr.
fn run(cache: &Path, base: Option<&str>, args: &[&str]) -> (i32, String, String) {
    let out = command(cache, base, args).output().unwrap();
    (out.status.code().unwrap(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// The tiny pair under the names of `published`: the DA-CLIP converted with its config
/// (its 32-wide text tower cannot be read off the shapes), the UNet's .pth as it is.
fn tiny_pair(dir: &Path) -> HashMap<String, Vec<u8>> {
    let daclip = dir.join("daclip.safetensors");
    let out = Command::new(env!("CARGO_BIN_EXE_daclip-webgpu"))
        .args(["convert", tiny("daclip.pt").to_str().unwrap(), "-o", daclip.to_str().unwrap(), "--clip-config", tiny("clip_config.json").to_str().unwrap(), "--dtype", "f32"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    HashMap::from([
        ("daclip_ViT-B-32.pt".to_string(), std::fs::read(&daclip).unwrap()),
        ("universal-ir.pth".to_string(), std::fs::read(tiny("universal-ir.pth")).unwrap()),
    ])
}

fn photo(dir: &Path) -> PathBuf {
    let path = dir.join("photo.png");
    common::photos::pattern(40, 32).save(&path).unwrap();
    path
}

const RESTORE: [&str; 6] = ["--device", "cpu", "--steps", "3", "--seed", "5"];

#[test]
fn the_published_pair_is_fetched_once_then_restores_offline() {
    let dir = scratch("first-use");
    let cache = dir.join("cache");
    let mirror = Mirror::start(tiny_pair(&dir));
    let input = photo(&dir);
    let out1 = dir.join("first.png");

    // First use: said before it starts, a line per file (stderr is not a terminal), then
    // converted into the cache without the originals.
    mirror.drop_first_get.store(true, Ordering::Relaxed);
    let (code, _, err) = run(&cache, Some(&mirror.url), &[&["restore", input.to_str().unwrap(), "-o", out1.to_str().unwrap()][..], &RESTORE].concat());
    println!("first run:\n{err}");
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("downloading the published weights once") && err.contains("daclip_ViT-B-32.pt (") && err.contains("universal-ir.pth ("), "{err}");
    assert!(err.contains("the connection broke") && err.contains("resuming"), "the dropped connection is resumed: {err}");
    assert!(!err.to_lowercase().contains("error"), "a run that works prints no error lines: {err}");
    let kept: Vec<String> = std::fs::read_dir(&cache).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).filter(|n| !n.ends_with(".lock")).collect();
    assert_eq!(kept.len(), 2, "only the two converted files are kept: {kept:?}");
    assert!(kept.iter().all(|n| n.ends_with(".f16.safetensors")), "{kept:?}");

    // The mirror gone: the cache alone, the same bytes, no request.
    let requests = mirror.requests.load(Ordering::Relaxed);
    drop(mirror);
    let out2 = dir.join("second.png");
    let (code, _, err) = run(&cache, Some("http://127.0.0.1:9/"), &[&["restore", input.to_str().unwrap(), "-o", out2.to_str().unwrap()][..], &RESTORE].concat());
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("download"), "{err}");
    assert_eq!(std::fs::read(&out1).unwrap(), std::fs::read(&out2).unwrap(), "the cached weights restore the same bytes");
    println!("{requests} requests on the first run, none on the second");
    let (code, _, err) = run(&cache, None, &["classify", input.to_str().unwrap(), "--offline", "--device", "cpu"]);
    assert_eq!(code, 0, "{err}");

    // list and path say where; rm removes.
    let (code, out, _) = run(&cache, None, &["weights", "list"]);
    assert_eq!(code, 0);
    println!("{out}");
    assert!(out.contains("published: cached") && out.contains("published-wild: not cached"), "{out}");
    let (code, out, _) = run(&cache, None, &["weights", "path", "published"]);
    assert_eq!(code, 0);
    assert_eq!(out.lines().count(), 2);
    assert!(out.lines().all(|l| Path::new(l).is_file()), "{out}");
    let (code, _, err) = run(&cache, None, &["weights", "path", "published-mix"]);
    assert_eq!(code, 1);
    assert!(err.contains("not in the cache") && err.contains("weights download published-mix"), "{err}");
    let (code, out, _) = run(&cache, None, &["weights", "rm", "published"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("removed"), "{out}");
    let (code, out, _) = run(&cache, None, &["weights", "list"]);
    assert_eq!(code, 0);
    assert!(out.contains("published: not cached"), "{out}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn damaged_files_are_detected_and_fetched_again() {
    let dir = scratch("damaged");
    let cache = dir.join("cache");
    let mirror = Mirror::start(tiny_pair(&dir));
    let (code, out, err) = run(&cache, Some(&mirror.url), &["weights", "download", "published"]);
    assert_eq!(code, 0, "{err}");
    let daclip = PathBuf::from(out.lines().next().unwrap());
    // A cache entry cut short is refused and fetched again.
    let bytes = std::fs::read(&daclip).unwrap();
    std::fs::write(&daclip, &bytes[..bytes.len() - 1000]).unwrap();
    let (code, _, err) = run(&cache, Some(&mirror.url), &["classify", photo(&dir).to_str().unwrap(), "--device", "cpu"]);
    println!("{err}");
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("is damaged") && err.contains("fetching it again"), "{err}");
    assert_eq!(std::fs::read(&daclip).unwrap(), bytes);

    // A download whose SHA-256 is not the server's is refused, and nothing is kept.
    run(&cache, None, &["weights", "rm"]);
    mirror.wrong_sha.store(true, Ordering::Relaxed);
    let (code, _, err) = run(&cache, Some(&mirror.url), &["weights", "download", "published"]);
    println!("{err}");
    assert_eq!(code, 1);
    assert!(err.contains("SHA-256") && err.contains("damaged on the way"), "{err}");
    assert!(!daclip.exists());

    // convert --weights: the pair's originals, fetched and kept, converted into a folder.
    mirror.wrong_sha.store(false, Ordering::Relaxed);
    let out = dir.join("converted");
    let (code, stdout, err) = run(&cache, Some(&mirror.url), &["convert", "--weights", "published", "-o", out.to_str().unwrap(), "--no-text", "--device", "cpu"]);
    println!("{stdout}{err}");
    assert_eq!(code, 0, "{err}");
    for (name, original) in [("daclip_ViT-B-32.safetensors", "daclip_ViT-B-32.pt"), ("universal-ir.safetensors", "universal-ir.pth")] {
        assert!(out.join(name).is_file(), "{name}");
        assert!(cache.join(original).is_file(), "the original {original} is kept in the cache");
    }
    assert!(stdout.contains("DA-CLIP: 70 tensors"), "the text tower dropped: {stdout}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn offline_and_missing_files_say_what_to_do() {
    let dir = scratch("offline");
    let cache = dir.join("cache");
    let input = photo(&dir);
    let out = dir.join("out.png");
    let (code, _, err) = run(&cache, None, &["restore", input.to_str().unwrap(), "-o", out.to_str().unwrap(), "--offline", "--device", "cpu"]);
    println!("{err}");
    assert_eq!(code, 1);
    assert!(err.contains("not in the cache") && err.contains("--offline") && err.contains("--daclip/--unet"), "{err}");

    let mirror = Mirror::start(HashMap::new());
    let (code, _, err) = run(&cache, Some(&mirror.url), &["classify", input.to_str().unwrap(), "--device", "cpu"]);
    println!("{err}");
    assert_eq!(code, 1);
    assert!(err.contains("HTTP 404") && err.contains("daclip_ViT-B-32.pt"), "{err}");

    // Nothing listens here: the network error names the URL and the ways out.
    let (code, _, err) = run(&cache, Some("http://127.0.0.1:9/"), &["classify", input.to_str().unwrap(), "--device", "cpu"]);
    println!("{err}");
    assert_eq!(code, 1);
    assert!(err.contains("could not reach http://127.0.0.1:9/daclip_ViT-B-32.pt") && err.contains("--offline"), "{err}");

    let (code, _, err) = run(&cache, None, &["restore", input.to_str().unwrap(), "-o", out.to_str().unwrap(), "--daclip", "x.safetensors"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("give both --daclip and --unet"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_hugging_face_copy_is_used_and_two_processes_share_one_download() {
    let dir = scratch("hub");
    let pair = tiny_pair(&dir);
    // The Hugging Face tools' cache layout: nothing is downloaded where it has the files.
    let snapshot = dir.join("cache/no-hub/hub/models--weblzw--daclip-uir-ViT-B-32-irsde/snapshots/0123abcd");
    std::fs::create_dir_all(&snapshot).unwrap();
    for (name, bytes) in &pair {
        std::fs::write(snapshot.join(name), bytes).unwrap();
    }
    let cache = dir.join("cache");
    let (code, _, err) = run(&cache, Some("http://127.0.0.1:9/"), &["weights", "download", "published"]);
    println!("{err}");
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("from the Hugging Face cache") && !err.contains("downloading"), "{err}");
    std::fs::remove_dir_all(snapshot).unwrap();

    // Two processes at once on an empty cache: one downloads, the other waits for it;
    // both end with the same files.
    run(&cache, None, &["weights", "rm"]);
    let mirror = Mirror::start(pair);
    let spawn = || command(&cache, Some(&mirror.url), &["weights", "download", "published"]).output().unwrap();
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(spawn);
        let b = s.spawn(spawn);
        (a.join().unwrap(), b.join().unwrap())
    });
    for out in [&a, &b] {
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    assert_eq!(a.stdout, b.stdout, "both name the same cached files");
    let downloads = [&a, &b].iter().map(|o| String::from_utf8_lossy(&o.stderr).matches("downloaded,").count()).sum::<usize>();
    assert_eq!(downloads, 2, "each file downloaded once: {}\n{}", String::from_utf8_lossy(&a.stderr), String::from_utf8_lossy(&b.stderr));
    std::fs::remove_dir_all(&dir).ok();
}
