//! Where a weights file's bytes come from. A published checkpoint can be larger than the
//! memory a process (or a wasm instance) may hold, so the readers never ask for the whole
//! file: they read the index (the zip's central directory at its end, the pickle, a
//! safetensors header) and then one tensor at a time, through [`Source::read_at`].

use std::borrow::Cow;

use crate::error::{Error, Result};

/// Random access to the bytes of one file.
pub trait Source {
    /// The file's length in bytes.
    fn len(&self) -> u64;

    /// `len` bytes from `offset`: borrowed where the whole file is in memory, read
    /// otherwise. A range past the end is an error that says the file is truncated,
    /// checked before anything is allocated.
    fn read_at(&self, offset: u64, len: usize) -> Result<Cow<'_, [u8]>>;

    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The range `offset .. offset + len` of a file of `file_len` bytes, or the error that
/// says it lies past the end.
pub fn check_range(offset: u64, len: usize, file_len: u64) -> Result<()> {
    match offset.checked_add(len as u64) {
        Some(end) if end <= file_len => Ok(()),
        _ => Err(Error::Checkpoint(format!(
            "the file ends at byte {file_len} but {len} bytes at offset {offset} were needed (truncated download?)"
        ))),
    }
}

impl Source for [u8] {
    fn len(&self) -> u64 {
        <[u8]>::len(self) as u64
    }

    fn read_at(&self, offset: u64, len: usize) -> Result<Cow<'_, [u8]>> {
        check_range(offset, len, Source::len(self))?;
        let start = offset as usize;
        Ok(Cow::Borrowed(&self[start..start + len]))
    }
}

impl<T: Source + ?Sized> Source for &T {
    fn len(&self) -> u64 {
        (**self).len()
    }

    fn read_at(&self, offset: u64, len: usize) -> Result<Cow<'_, [u8]>> {
        (**self).read_at(offset, len)
    }
}

impl Source for Vec<u8> {
    fn len(&self) -> u64 {
        Source::len(self.as_slice())
    }

    fn read_at(&self, offset: u64, len: usize) -> Result<Cow<'_, [u8]>> {
        self.as_slice().read_at(offset, len)
    }
}

/// A file on disk, read piece by piece: a 3 GB checkpoint costs the memory of its largest
/// tensor, not of the file.
#[cfg(not(target_arch = "wasm32"))]
pub struct FileSource {
    file: std::fs::File,
    len: u64,
    path: String,
}

#[cfg(not(target_arch = "wasm32"))]
impl FileSource {
    pub fn open(path: &std::path::Path) -> Result<FileSource> {
        let io = |e: std::io::Error| Error::Io(format!("{}: {e}", path.display()));
        let file = std::fs::File::open(path).map_err(io)?;
        let meta = file.metadata().map_err(io)?;
        if meta.is_dir() {
            return Err(Error::Io(format!("{}: is a folder, not a weights file", path.display())));
        }
        Ok(FileSource { file, len: meta.len(), path: path.display().to_string() })
    }
}

#[cfg(not(target_arch = "wasm32"))]
impl Source for FileSource {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_at(&self, offset: u64, len: usize) -> Result<Cow<'_, [u8]>> {
        check_range(offset, len, self.len)?;
        let mut buf = vec![0u8; len];
        read_exact_at(&self.file, &mut buf, offset).map_err(|e| Error::Io(format!("{}: reading {len} bytes at {offset}: {e}", self.path)))?;
        Ok(Cow::Owned(buf))
    }
}

#[cfg(unix)]
fn read_exact_at(file: &std::fs::File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
}

#[cfg(windows)]
fn read_exact_at(file: &std::fs::File, mut buf: &mut [u8], mut offset: u64) -> std::io::Result<()> {
    use std::os::windows::fs::FileExt;
    while !buf.is_empty() {
        match file.seek_read(buf, offset)? {
            0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            n => {
                buf = &mut buf[n..];
                offset += n as u64;
            }
        }
    }
    Ok(())
}
