//! The segment cache that makes repacks cost only what changed.
//!
//! The published image is itself the cache: it is a series of independently compressed
//! segments (gzip members or xz streams, see `compress.rs`), and beside it, in
//! `<rootimgdir>/.packcache/<image file>.idx`, an index lists each segment's key (BLAKE3 of
//! its uncompressed bytes), uncompressed length, compressed length and the CRC32 of its
//! compressed bytes, in file order. A repack hashes each new segment and, when the old image
//! holds a segment with that key, copies the old compressed bytes instead of compressing
//! again. Compressing a segment gives the same bytes every time (same library, level and
//! input), so the result is byte-identical to a full pack.
//!
//! So the cache costs no disk space beyond the index, and it is pruned by construction: it is
//! exactly what the last published image uses. The index names the compressor settings and
//! the image's length; an index that does not match the image (a crash between publishing and
//! writing the index, someone replacing the file) is ignored or, segment by segment, fails
//! the CRC check: a bad or missing cache entry only means compressing again. Nodes never see
//! any of it: the directory is beside `rootimg`, not in it, and only `rootimg.*` is served.
//! The image lock (held by packimage for the whole run) serialises readers and writers.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// The cache directory's name inside the image directory.
pub const DIR: &str = ".packcache";

const MAGIC: &str = "xcat-imaged segment index 1";

/// Identifies a segment: BLAKE3 of its uncompressed bytes.
pub type Key = [u8; 32];

/// Hashes a segment's uncompressed bytes.
pub fn key(data: &[u8]) -> Key {
    *blake3::hash(data).as_bytes()
}

/// One segment of a written image, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// BLAKE3 of the uncompressed bytes.
    pub key: Key,
    /// Uncompressed length.
    pub len: u64,
    /// Compressed length in the image file.
    pub clen: u64,
    /// CRC32 of the compressed bytes.
    pub crc: u32,
}

#[derive(Debug, Clone, Copy)]
struct Loc {
    offset: u64,
    clen: u64,
    crc: u32,
}

/// The old image and its index, to copy unchanged segments from.
#[derive(Debug)]
pub struct Reuse {
    file: File,
    map: HashMap<Key, Loc>,
}

fn index_path(dir: &Path, image: &str) -> PathBuf {
    dir.join(DIR).join(format!("{image}.idx"))
}

fn hex(k: &Key) -> String {
    k.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn unhex(s: &str) -> Option<Key> {
    if s.len() != 64 {
        return None;
    }
    let mut k = [0u8; 32];
    for (i, b) in k.iter_mut().enumerate() {
        *b = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(k)
}

impl Reuse {
    /// Opens the published `<dir>/<image>` and its index written with settings `tag`.
    /// `None` when there is no usable cache (no index, other settings, the image does not
    /// have the length the index says); the caller then compresses everything.
    pub fn open(dir: &Path, image: &str, tag: &str) -> Option<Reuse> {
        let text = std::fs::read_to_string(index_path(dir, image)).ok()?;
        let mut lines = text.lines();
        if lines.next()? != MAGIC || lines.next()? != format!("tag {tag}") {
            log::info!("segment cache for {image}: other settings, not used");
            return None;
        }
        let total: u64 = lines.next()?.strip_prefix("image ")?.parse().ok()?;
        let file = File::open(dir.join(image)).ok()?;
        if file.metadata().ok()?.len() != total {
            log::info!("segment cache for {image}: the image is not the one indexed, not used");
            return None;
        }
        let mut map = HashMap::new();
        let mut offset = 0u64;
        for line in lines {
            let mut f = line.split(' ');
            let (k, _len, clen, crc) = (f.next()?, f.next()?, f.next()?, f.next()?);
            let clen: u64 = clen.parse().ok()?;
            let loc = Loc {
                offset,
                clen,
                crc: u32::from_str_radix(crc, 16).ok()?,
            };
            map.entry(unhex(k)?).or_insert(loc);
            offset = offset.checked_add(clen)?;
        }
        if offset != total {
            return None;
        }
        Some(Reuse { file, map })
    }

    /// Number of distinct segments the old image offers.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the old image offers nothing.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Puts the old compressed bytes of segment `key` (of `len` uncompressed bytes) into
    /// `out`. False when the old image has no such segment or its bytes do not match the
    /// index (then `out` is garbage and the caller compresses).
    pub fn fetch(&self, key: &Key, len: usize, out: &mut Vec<u8>) -> bool {
        let Some(loc) = self.map.get(key) else {
            return false;
        };
        // More than any compressor writes for `len` bytes: a damaged index, not a segment.
        let bound = len + len / 8 + (64 << 10);
        let Some(n) = usize::try_from(loc.clen).ok().filter(|&n| n <= bound) else {
            return false;
        };
        out.clear();
        out.resize(n, 0);
        if self.file.read_exact_at(out, loc.offset).is_err() {
            return false;
        }
        if libdeflater::crc32(out) != loc.crc {
            log::warn!(
                "segment cache: a cached segment does not match its index; compressing it again"
            );
            return false;
        }
        true
    }
}

/// Writes the index of the just-published `<dir>/<image>` (atomically: temp file, rename)
/// and removes everything else in the cache directory (indexes of formats that are gone,
/// stale temp files). `records` is `None` for a format that has no index (squashfs): then
/// the directory is emptied and removed.
pub fn save(dir: &Path, image: &str, tag: &str, records: Option<&[Record]>) -> io::Result<()> {
    let cache = dir.join(DIR);
    let keep = format!("{image}.idx");
    if let Some(records) = records {
        std::fs::create_dir_all(&cache)?;
        let total: u64 = records.iter().map(|r| r.clen).sum();
        let mut text = format!("{MAGIC}\ntag {tag}\nimage {total}\n");
        for r in records {
            let _ = writeln!(text, "{} {} {} {:08x}", hex(&r.key), r.len, r.clen, r.crc);
        }
        let tmp = cache.join(format!(".{keep}.tmp"));
        {
            let mut f = File::create(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_data()?;
        }
        std::fs::rename(&tmp, cache.join(&keep))?;
    }
    let Ok(entries) = std::fs::read_dir(&cache) else {
        return Ok(());
    };
    for e in entries.flatten() {
        if records.is_some() && e.file_name().as_encoded_bytes() == keep.as_bytes() {
            continue;
        }
        if e.file_type().is_ok_and(|t| t.is_file()) {
            std::fs::remove_file(e.path())?;
        }
    }
    if records.is_none() {
        let _ = std::fs::remove_dir(&cache);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(data: &[u8], comp: &[u8]) -> Record {
        Record {
            key: key(data),
            len: data.len() as u64,
            clen: comp.len() as u64,
            crc: libdeflater::crc32(comp),
        }
    }

    #[test]
    fn index_round_trip_corruption_and_pruning() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("rootimg.cpio.gz"), b"AAAABBB").unwrap();
        let records = [rec(b"one", b"AAAA"), rec(b"two", b"BBB")];
        std::fs::create_dir_all(d.join(DIR)).unwrap();
        std::fs::write(d.join(DIR).join("rootimg.tar.xz.idx"), "old").unwrap();
        save(d, "rootimg.cpio.gz", "gzip 6", Some(&records)).unwrap();
        assert!(!d.join(DIR).join("rootimg.tar.xz.idx").exists(), "pruned");
        assert!(
            Reuse::open(d, "rootimg.cpio.gz", "xz 6").is_none(),
            "other tag"
        );
        let r = Reuse::open(d, "rootimg.cpio.gz", "gzip 6").unwrap();
        assert_eq!(r.len(), 2);
        let mut out = Vec::new();
        assert!(r.fetch(&key(b"two"), 3, &mut out));
        assert_eq!(out, b"BBB");
        assert!(!r.fetch(&key(b"three"), 5, &mut out));
        // A changed byte in the image: that segment is refused, the other still served.
        std::fs::write(d.join("rootimg.cpio.gz"), b"AAAABxB").unwrap();
        let r = Reuse::open(d, "rootimg.cpio.gz", "gzip 6").unwrap();
        assert!(!r.fetch(&key(b"two"), 3, &mut out));
        assert!(r.fetch(&key(b"one"), 3, &mut out));
        // Another length: the index is ignored.
        std::fs::write(d.join("rootimg.cpio.gz"), b"AAAA").unwrap();
        assert!(Reuse::open(d, "rootimg.cpio.gz", "gzip 6").is_none());
        // squashfs: nothing to index, the directory goes.
        save(d, "rootimg.sfs", "", None).unwrap();
        assert!(!d.join(DIR).exists());
    }
}
