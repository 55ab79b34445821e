//! Atomic publication of a packed image: write beside the target, then rename over it.
//!
//! A node that is downloading `rootimg.cpio.gz` during a repack keeps reading the old file to
//! its end; a failed, cancelled or killed pack leaves the previous image as it was. Other
//! `rootimg.*` formats are removed only after the new file is in place. Nothing here knows
//! archive formats or xCAT tables.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Temp files are `.<name>.<random>.tmp`: hidden, and not matched by `rootimg.*` (nodeset,
/// rmimage and stock packimage glob for that).
fn temp_name(name: &str, nonce: u64) -> String {
    format!(".{name}.{nonce:016x}.tmp")
}

fn nonce() -> u64 {
    let mut b = [0u8; 8];
    // /dev/urandom never blocks; fall back to time and pid if it is unreadable.
    if File::open("/dev/urandom")
        .and_then(|mut f| io::Read::read_exact(&mut f, &mut b))
        .is_ok()
    {
        return u64::from_ne_bytes(b);
    }
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    (t as u64) ^ (u64::from(std::process::id()) << 32)
}

/// A file being written under a temp name in the destination directory. Dropping it without
/// [`Staged::commit`] deletes the temp file and publishes nothing.
#[derive(Debug)]
pub struct Staged {
    dir: PathBuf,
    temp: PathBuf,
    target: PathBuf,
    file: Option<File>,
}

impl Staged {
    /// Creates `.<name>.<random>.tmp` in `dir`, mode 0600 while it is written (as stock
    /// packimage's umask 0077).
    pub fn create(dir: &Path, name: &str) -> io::Result<Staged> {
        let target = dir.join(name);
        loop {
            let temp = dir.join(temp_name(name, nonce()));
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(nix::libc::O_CLOEXEC)
                .open(&temp)
            {
                Ok(file) => {
                    return Ok(Staged {
                        dir: dir.to_path_buf(),
                        temp,
                        target,
                        file: Some(file),
                    })
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => {
                    return Err(io::Error::new(
                        e.kind(),
                        format!("creating a temp file in {}: {e}", dir.display()),
                    ))
                }
            }
        }
    }

    /// The temp file, for writing.
    pub fn file(&mut self) -> &mut File {
        self.file
            .as_mut()
            .expect("a Staged file is present until commit")
    }

    /// Where the file will be published.
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// The temp file's path.
    pub fn temp_path(&self) -> &Path {
        &self.temp
    }

    /// fsyncs the file, sets `mode`, renames it over the target and fsyncs the directory.
    pub fn commit(mut self, mode: u32) -> io::Result<PathBuf> {
        let file = self
            .file
            .take()
            .expect("a Staged file is present until commit");
        let ctx = |what: &str, e: io::Error| {
            io::Error::new(e.kind(), format!("{what} {}: {e}", self.temp.display()))
        };
        file.sync_all().map_err(|e| ctx("syncing", e))?;
        file.set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(|e| ctx("chmod", e))?;
        drop(file);
        std::fs::rename(&self.temp, &self.target).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "renaming {} to {}: {e}",
                    self.temp.display(),
                    self.target.display()
                ),
            )
        })?;
        // From here the temp name is gone; Drop must not touch the published file.
        self.temp = PathBuf::new();
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| {
                io::Error::new(e.kind(), format!("syncing {}: {e}", self.dir.display()))
            })?;
        Ok(self.target.clone())
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.temp.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

/// Removes temp files an earlier, killed run left behind (`.rootimg*.tmp`). Call it only while
/// holding the image lock, so no other pack is writing one. Returns what was removed.
pub fn clean_stale(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut gone = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let name = e.file_name();
        let n = name.as_bytes();
        if n.starts_with(b".rootimg") && n.ends_with(b".tmp") && e.file_type()?.is_file() {
            std::fs::remove_file(e.path())?;
            gone.push(e.path());
        }
    }
    gone.sort();
    Ok(gone)
}

/// After a successful publish of `keep`: removes every other regular file `rootimg.*` in `dir`
/// (old formats, and `.metainfo` files of other formats), as stock packimage does before it
/// packs; directories and `keep` itself stay. Returns what was removed.
pub fn remove_other_formats(dir: &Path, keep: &[&str]) -> io::Result<Vec<PathBuf>> {
    let mut gone = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let name = e.file_name();
        let n = name.as_bytes();
        if n.starts_with(b"rootimg.")
            && !keep.iter().any(|k| k.as_bytes() == n)
            && e.file_type()?.is_file()
        {
            std::fs::remove_file(e.path())?;
            gone.push(e.path());
        }
    }
    gone.sort();
    Ok(gone)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn commit_replaces_atomically_and_drop_cleans_up() {
        let t = tempfile::tempdir().unwrap();
        let target = t.path().join("rootimg.cpio.gz");
        std::fs::write(&target, b"old").unwrap();
        let mut s = Staged::create(t.path(), "rootimg.cpio.gz").unwrap();
        s.file().write_all(b"new").unwrap();
        let temp = s.temp_path().to_path_buf();
        assert!(temp
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with(".rootimg.cpio.gz."));
        assert_eq!(
            std::fs::read(&target).unwrap(),
            b"old",
            "old file untouched until commit"
        );
        let md = std::fs::metadata(&temp).unwrap();
        assert_eq!(md.permissions().mode() & 0o777, 0o600);
        s.commit(0o644).unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"new");
        assert_eq!(
            std::fs::metadata(&target).unwrap().permissions().mode() & 0o777,
            0o644
        );
        assert!(!temp.exists());

        let mut s = Staged::create(t.path(), "rootimg.cpio.gz").unwrap();
        s.file().write_all(b"partial").unwrap();
        let temp = s.temp_path().to_path_buf();
        drop(s);
        assert!(!temp.exists());
        assert_eq!(std::fs::read(&target).unwrap(), b"new");
    }

    #[test]
    fn an_old_reader_keeps_the_old_bytes() {
        let t = tempfile::tempdir().unwrap();
        let target = t.path().join("rootimg.tar.xz");
        std::fs::write(&target, vec![1u8; 10000]).unwrap();
        let mut reader = File::open(&target).unwrap();
        let mut s = Staged::create(t.path(), "rootimg.tar.xz").unwrap();
        s.file().write_all(&[2u8; 10]).unwrap();
        s.commit(0o644).unwrap();
        let mut got = Vec::new();
        io::Read::read_to_end(&mut reader, &mut got).unwrap();
        assert_eq!(got, vec![1u8; 10000]);
    }

    #[test]
    fn stale_and_other_formats() {
        let t = tempfile::tempdir().unwrap();
        for f in [
            ".rootimg.cpio.gz.0123.tmp",
            "rootimg.cpio.gz",
            "rootimg.tar.xz",
            "rootimg.sfs",
            "rootimg.cpio.gz.metainfo",
            "rootimg-statelite.gz",
            "kernel",
            ".other.tmp",
        ] {
            std::fs::write(t.path().join(f), b"x").unwrap();
        }
        std::fs::create_dir(t.path().join("rootimg.bak")).unwrap();
        let gone = clean_stale(t.path()).unwrap();
        assert_eq!(gone, vec![t.path().join(".rootimg.cpio.gz.0123.tmp")]);
        let gone = remove_other_formats(t.path(), &["rootimg.cpio.gz", "rootimg.cpio.gz.metainfo"])
            .unwrap();
        assert_eq!(
            gone,
            vec![
                t.path().join("rootimg.sfs"),
                t.path().join("rootimg.tar.xz")
            ]
        );
        for f in [
            "rootimg.cpio.gz",
            "rootimg.cpio.gz.metainfo",
            "rootimg-statelite.gz",
            "kernel",
            ".other.tmp",
            "rootimg.bak",
        ] {
            assert!(t.path().join(f).exists(), "{f}");
        }
    }
}
