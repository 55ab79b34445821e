//! A file member's content read from disk, with a check that the file did not change while it
//! was read.
//!
//! The archive writers already refuse a file whose length differs from what the walk recorded
//! (it grew or shrank). A file rewritten in place at the same length would still slip through
//! and give an archive whose member mixes old and new bytes, so the open file is `fstat`ed
//! before and after the read: a different modification time or length is an error. A change
//! between the walk and the open is not one: the bytes read are then a consistent copy of the
//! file as it was opened. Timestamps have the kernel's clock granularity, so two writes within
//! one tick of the open can go unnoticed; the length checks do not depend on it.

use super::entry::{ArchiveWriter, Entry};
use std::fs::{File, Metadata};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Whether two `fstat`s of one open file show a change of its content.
fn changed(before: &Metadata, after: &Metadata) -> bool {
    before.len() != after.len()
        || before.mtime() != after.mtime()
        || before.mtime_nsec() != after.mtime_nsec()
}

/// Fails, naming `path`, when the open file `f` no longer has the length and modification
/// time it had when `before` was taken (both from `fstat`, so a rename over the path does not
/// count: the open file is what was read).
pub fn check_unchanged(path: &Path, f: &File, before: &Metadata) -> io::Result<()> {
    let after = f
        .metadata()
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    if changed(before, &after) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{}: file changed while being packed (modified during the read)",
                path.display()
            ),
        ));
    }
    Ok(())
}

/// Opens `path` and appends `entry` with its content through `w`; fails, naming the path, when
/// it cannot be opened or read, or when it changed while it was read.
pub fn append_from_disk(w: &mut dyn ArchiveWriter, entry: &Entry, path: &Path) -> io::Result<()> {
    let ctx = |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", path.display()));
    let mut f = File::open(path).map_err(ctx)?;
    let before = f.metadata().map_err(ctx)?;
    w.append(entry, &mut f)?;
    check_unchanged(path, &f, &before)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pack::entry::{Kind, Source};
    use std::io::{Read, Write};

    /// A writer that copies the member's bytes and, halfway, lets the test touch the file.
    struct Meddler<F: FnMut()> {
        got: Vec<u8>,
        during: F,
    }

    impl<F: FnMut()> ArchiveWriter for Meddler<F> {
        fn append(&mut self, entry: &Entry, data: &mut dyn Read) -> io::Result<()> {
            let mut half = vec![0u8; (entry.size() / 2) as usize];
            data.read_exact(&mut half)?;
            (self.during)();
            self.got.extend_from_slice(&half);
            data.read_to_end(&mut self.got)?;
            Ok(())
        }
        fn finish_archive(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn entry(size: u64) -> Entry {
        Entry {
            path: b"f".to_vec(),
            kind: Kind::File { size },
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: 0,
            mtime_nsec: 0,
            xattrs: Vec::new(),
            hardlink: None,
            ino: 1,
            source: Source::None,
        }
    }

    #[test]
    fn unchanged_file_is_read_whole() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("f");
        std::fs::write(&p, b"0123456789").unwrap();
        let mut w = Meddler {
            got: Vec::new(),
            during: || {},
        };
        append_from_disk(&mut w, &entry(10), &p).unwrap();
        assert_eq!(w.got, b"0123456789");
    }

    #[test]
    fn same_length_rewrite_during_the_read_is_an_error() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("f");
        std::fs::write(&p, b"0123456789").unwrap();
        // An mtime the rewrite is sure to change, whatever the clock's granularity.
        let old = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1000);
        std::fs::File::options()
            .write(true)
            .open(&p)
            .unwrap()
            .set_modified(old)
            .unwrap();
        let q = p.clone();
        let mut w = Meddler {
            got: Vec::new(),
            during: move || {
                let mut f = std::fs::File::options().write(true).open(&q).unwrap();
                f.write_all(b"abcdefghij").unwrap();
            },
        };
        let err = append_from_disk(&mut w, &entry(10), &p).unwrap_err();
        assert!(
            err.to_string().contains("changed while being packed"),
            "{err}"
        );
        assert!(err.to_string().contains(&p.display().to_string()), "{err}");
    }

    #[test]
    fn missing_file_names_its_path() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("gone");
        let mut w = Meddler {
            got: Vec::new(),
            during: || {},
        };
        let err = append_from_disk(&mut w, &entry(1), &p).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(err.to_string().contains("gone"), "{err}");
    }
}
