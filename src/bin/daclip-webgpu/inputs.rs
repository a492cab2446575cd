//! Many inputs: files and folders expanded to the image files to work on, and (for
//! restore) the output of each planned and checked before any work, so that a mistake
//! costs nothing.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use daclip_webgpu::photo::{OutputFormat, Photo, INPUT_EXTENSIONS};
use daclip_webgpu::{Error, Result};

/// The files named, with each folder replaced by the images in it (by file-name
/// extension, sorted, not recursive). A file is kept whatever its name: reading it says
/// what is wrong with it.
pub fn expand(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for path in paths {
        if !path.is_dir() {
            files.push(path.clone());
            continue;
        }
        let entries = std::fs::read_dir(path).map_err(|e| Error::Io(format!("{}: {e}", path.display())))?;
        let mut images: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && p.extension().and_then(|e| e.to_str()).is_some_and(|e| INPUT_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str())))
            .collect();
        if images.is_empty() {
            return Err(Error::Usage(format!("{}: no images in this folder (files ending in .{})", path.display(), INPUT_EXTENSIONS.join(", ."))));
        }
        images.sort();
        files.append(&mut images);
    }
    Ok(files)
}

/// One file to restore and where its result goes.
pub struct Job {
    pub input: PathBuf,
    pub output: PathBuf,
    pub format: OutputFormat,
}

/// Plans the outputs: `output` is a file for one input named as a file, else a folder
/// (created when its parent exists) that receives `<input name>.<ext>`, the extension the
/// input's where that is a format written, else `format`'s or png. Refuses, before any
/// work: an unknown extension, a missing or read-only folder, an output that is one of
/// the inputs or that two inputs would share, and an existing file unless `force`.
pub fn plan(named: &[PathBuf], files: Vec<PathBuf>, output: &Path, format: Option<OutputFormat>, force: bool) -> Result<Vec<Job>> {
    let to_folder = named.len() > 1 || named.iter().any(|p| p.is_dir()) || output.is_dir() || output.as_os_str().to_string_lossy().ends_with(std::path::MAIN_SEPARATOR);
    let jobs: Vec<Job> = if to_folder {
        if output.exists() && !output.is_dir() {
            return Err(Error::Usage(format!("{}: with many inputs -o names a folder, and this is a file", output.display())));
        }
        if !output.exists() {
            check_folder(output.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")))?;
            std::fs::create_dir(output).map_err(|e| Error::Usage(format!("{}: cannot create the output folder ({e})", output.display())))?;
        }
        files
            .into_iter()
            .map(|input| {
                let own = input.extension().and_then(|e| e.to_str()).filter(|e| OutputFormat::from_extension(&e.to_ascii_lowercase()).is_some());
                let (ext, format) = match (format, own) {
                    (Some(f), _) => (f.extension().to_string(), f),
                    (None, Some(e)) => (e.to_string(), OutputFormat::from_extension(&e.to_ascii_lowercase()).expect("filtered")),
                    (None, None) => ("png".to_string(), OutputFormat::Png),
                };
                let stem = input.file_stem().unwrap_or(input.as_os_str()).to_string_lossy();
                let output = output.join(format!("{stem}.{ext}"));
                Job { input, output, format }
            })
            .collect()
    } else {
        let from_name = OutputFormat::from_path(output)
            .ok_or_else(|| Error::Usage(format!("{}: the output must end in {}", output.display(), OutputFormat::NAMES)))?;
        if format.is_some_and(|f| f != from_name) {
            return Err(Error::Usage(format!("{}: --format {} disagrees with the file name", output.display(), format.unwrap().extension())));
        }
        files.into_iter().map(|input| Job { input, output: output.to_path_buf(), format: from_name }).collect()
    };

    let mut folders_checked = Vec::new();
    let mut claimed: HashMap<PathBuf, &Path> = HashMap::new();
    for job in &jobs {
        let folder = job.output.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        if !folders_checked.iter().any(|f| f == folder) {
            check_folder(folder)?;
            folders_checked.push(folder.to_path_buf());
        }
        let out = absolute(&job.output);
        if job.input.exists() && absolute(&job.input) == out {
            return Err(Error::Usage(format!("{}: the output would overwrite its input", job.output.display())));
        }
        if let Some(other) = claimed.insert(out, &job.input) {
            return Err(Error::Usage(format!("{} and {} would both be written to {}; pass --format or restore them separately", other.display(), job.input.display(), job.output.display())));
        }
        if job.output.exists() && !force {
            return Err(Error::Usage(format!("{} exists; pass --force to overwrite it", job.output.display())));
        }
    }
    Ok(jobs)
}

/// The folder exists and a file can be created in it.
fn check_folder(folder: &Path) -> Result<()> {
    if !folder.is_dir() {
        return Err(Error::Usage(format!("{}: no such folder", folder.display())));
    }
    let probe = folder.join(format!(".daclip-webgpu-write-test-{}", std::process::id()));
    match std::fs::File::create(&probe) {
        Ok(_) => {
            std::fs::remove_file(&probe).ok();
            Ok(())
        }
        Err(e) => Err(Error::Usage(format!("{}: cannot write in this folder ({e})", folder.display()))),
    }
}

/// The path with its folder resolved (the file itself need not exist).
fn absolute(path: &Path) -> PathBuf {
    let folder = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    match (folder.canonicalize(), path.file_name()) {
        (Ok(f), Some(name)) => f.join(name),
        _ => path.to_path_buf(),
    }
}

/// The error's message, starting with the file's name unless it already does.
pub fn about(path: &Path, e: &Error) -> String {
    let (name, msg) = (path.display().to_string(), e.to_string());
    if msg.starts_with(&name) {
        msg
    } else {
        format!("{name}: {msg}")
    }
}

/// How a command over `total` files ended: the failures (already reported one by one)
/// listed again at the end, after "N of M <done>".
pub fn outcome(done: &str, total: usize, failed: &[String]) -> crate::Outcome {
    if failed.is_empty() {
        return crate::Outcome::Done;
    }
    eprintln!("{} of {total} {done}; {} failed:", total - failed.len(), failed.len());
    for e in failed {
        eprintln!("  {e}");
    }
    crate::Outcome::SomeFailed
}

/// Reads the photos of a run in order; a run of one file reads it at once, before the
/// weights, so that a bad file costs nothing.
pub struct PhotoReader(Option<Photo>);

impl PhotoReader {
    pub fn new(paths: &[&Path]) -> Result<PhotoReader> {
        Ok(PhotoReader(match paths {
            [only] => Some(Photo::read(only)?),
            _ => None,
        }))
    }

    /// The photo at `path` (the one read ahead, if that was it).
    pub fn read(&mut self, path: &Path) -> Result<Photo> {
        self.0.take().map_or_else(|| Photo::read(path), Ok)
    }
}
