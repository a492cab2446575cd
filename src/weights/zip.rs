//! Just enough of the ZIP format to read `torch.save` archives: the central directory
//! (with ZIP64 extensions for large files) and STORED (uncompressed) entries, which is
//! how PyTorch writes every record. Entries are returned as places in the file, to be
//! read when needed.

use super::source::Source;
use crate::error::{Error, Result};

const EOCD: u32 = 0x0605_4b50;
const ZIP64_LOCATOR: u32 = 0x0706_4b50;
const ZIP64_EOCD: u32 = 0x0606_4b50;
const CENTRAL: u32 = 0x0201_4b50;
const LOCAL: u32 = 0x0403_4b50;

fn bad(msg: impl std::fmt::Display) -> Error {
    Error::Checkpoint(format!("not a readable torch.save zip archive: {msg}"))
}

fn u16_at(b: &[u8], at: usize) -> Result<u16> {
    b.get(at..at + 2).map(|s| u16::from_le_bytes([s[0], s[1]])).ok_or_else(|| bad("truncated record"))
}

fn u32_at(b: &[u8], at: usize) -> Result<u32> {
    b.get(at..at + 4).map(|s| u32::from_le_bytes(s.try_into().unwrap())).ok_or_else(|| bad("truncated record"))
}

fn u64_at(b: &[u8], at: usize) -> Result<u64> {
    b.get(at..at + 8).map(|s| u64::from_le_bytes(s.try_into().unwrap())).ok_or_else(|| bad("truncated record"))
}

fn usize_of(v: u64) -> Result<usize> {
    usize::try_from(v).map_err(|_| bad("offset beyond addressable memory"))
}

/// One entry: its name and where its bytes lie in the archive.
pub struct Entry {
    pub name: String,
    pub offset: u64,
    pub size: usize,
}

/// The archive's entries, read from its central directory (at the end) and each entry's
/// local header: a few kilobytes of a checkpoint of any size.
pub fn entries(src: &dyn Source) -> Result<Vec<Entry>> {
    let len = src.len();
    // The end-of-central-directory record sits in the last 22 + 65535 (comment) bytes.
    let tail_from = len.saturating_sub(22 + 65535);
    let tail = src.read_at(tail_from, (len - tail_from) as usize)?;
    let eocd = (0..tail.len().saturating_sub(21))
        .rev()
        .find(|&i| u32_at(&tail, i).ok() == Some(EOCD))
        .ok_or_else(|| bad("no end-of-central-directory record (the file is truncated or not a zip)"))?;
    let mut count = u16_at(&tail, eocd + 10)? as u64;
    let mut cd_size = u32_at(&tail, eocd + 12)? as u64;
    let mut cd_offset = u32_at(&tail, eocd + 16)? as u64;
    if count == 0xFFFF || cd_size == 0xFFFF_FFFF || cd_offset == 0xFFFF_FFFF {
        let loc = eocd.checked_sub(20).ok_or_else(|| bad("missing ZIP64 locator"))?;
        if u32_at(&tail, loc)? != ZIP64_LOCATOR {
            return Err(bad("missing ZIP64 locator"));
        }
        let rec = src.read_at(u64_at(&tail, loc + 8)?, 56).map_err(|_| bad("bad ZIP64 end record"))?;
        if u32_at(&rec, 0)? != ZIP64_EOCD {
            return Err(bad("bad ZIP64 end record"));
        }
        count = u64_at(&rec, 32)?;
        cd_size = u64_at(&rec, 40)?;
        cd_offset = u64_at(&rec, 48)?;
    }
    let cd = src.read_at(cd_offset, usize_of(cd_size)?).map_err(|_| bad("the central directory lies outside the file (truncated download?)"))?;
    let bytes: &[u8] = &cd;
    let mut at = 0;
    let mut out = Vec::new();
    for _ in 0..count {
        if u32_at(bytes, at)? != CENTRAL {
            return Err(bad("corrupt central directory"));
        }
        let method = u16_at(bytes, at + 10)?;
        let mut size = u32_at(bytes, at + 24)? as u64;
        let name_len = u16_at(bytes, at + 28)? as usize;
        let extra_len = u16_at(bytes, at + 30)? as usize;
        let comment_len = u16_at(bytes, at + 32)? as usize;
        let mut local = u32_at(bytes, at + 42)? as u64;
        let name_bytes = bytes.get(at + 46..at + 46 + name_len).ok_or_else(|| bad("truncated entry name"))?;
        let name = String::from_utf8_lossy(name_bytes).into_owned();
        // ZIP64 extra field: the 64-bit values of the 32-bit fields that read 0xFFFFFFFF,
        // in the order uncompressed size, compressed size, local header offset.
        let extra = bytes.get(at + 46 + name_len..at + 46 + name_len + extra_len).ok_or_else(|| bad("truncated extra field"))?;
        let (size32, compressed32, local32) = (size, u32_at(bytes, at + 20)?, local);
        let mut e = 0;
        while e + 4 <= extra.len() {
            let (id, len) = (u16_at(extra, e)?, u16_at(extra, e + 2)? as usize);
            if id == 0x0001 {
                let mut f = e + 4;
                if size32 == 0xFFFF_FFFF {
                    size = u64_at(extra, f)?;
                    f += 8;
                }
                if compressed32 == 0xFFFF_FFFF {
                    f += 8; // equal to the size: entries are stored
                }
                if local32 == 0xFFFF_FFFF {
                    local = u64_at(extra, f)?;
                }
            }
            e += 4 + len;
        }
        if method != 0 {
            return Err(bad(format!("entry {name} is compressed (method {method}); torch.save writes stored entries only")));
        }
        let header = src.read_at(local, 30).map_err(|_| bad(format!("entry {name} has no local header")))?;
        if u32_at(&header, 0)? != LOCAL {
            return Err(bad(format!("entry {name} has no local header")));
        }
        let start = local + 30 + u16_at(&header, 26)? as u64 + u16_at(&header, 28)? as u64;
        let size = usize_of(size)?;
        if start.checked_add(size as u64).is_none_or(|end| end > len) {
            return Err(bad(format!("entry {name} runs past the end of the file (truncated download?)")));
        }
        out.push(Entry { name, offset: start, size });
        at += 46 + name_len + extra_len + comment_len;
    }
    Ok(out)
}
