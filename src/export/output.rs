//! Where a bundle is written until it is complete: an unnamed file in the destination
//! directory, given its name only when it is finished.
//!
//! [`Output::create`] opens the file with `O_TMPFILE`, so it has no name while it is written:
//! a failed, cancelled or even killed (SIGKILL) export leaves nothing behind. [`Output::commit`]
//! fsyncs it, links it under a hidden temporary name and renames that over the target, so the
//! target is replaced atomically (a reader of the old bundle keeps reading the old bytes).
//! Filesystems without `O_TMPFILE` (NFS, old kernels) get a hidden named temp file instead,
//! which is removed on every error path except SIGKILL. [`spool`] gives a scratch file that is
//! never linked at all.
//!
//! Nothing here knows bundles, archives or hosts.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// A random 64-bit value for temp names.
fn nonce() -> u64 {
    let mut b = [0u8; 8];
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

/// The hidden name a file gets just before it is renamed over `name` (or, without
/// `O_TMPFILE`, while it is written).
fn temp_name(name: &str) -> String {
    format!(".{name}.{:016x}.tmp", nonce())
}

/// Opens an unnamed file in `dir` (`O_TMPFILE`), or `None` when the filesystem cannot.
fn open_unnamed(dir: &Path) -> io::Result<Option<File>> {
    match OpenOptions::new()
        .read(true)
        .write(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_TMPFILE | nix::libc::O_CLOEXEC)
        .open(dir)
    {
        Ok(f) => Ok(Some(f)),
        // EOPNOTSUPP (the filesystem), EISDIR / EINVAL (kernels without O_TMPFILE).
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(nix::libc::EOPNOTSUPP | nix::libc::EISDIR | nix::libc::EINVAL)
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Creates `dir/<hidden temp name>` exclusively, mode 0600.
fn create_named(dir: &Path, name: &str) -> io::Result<(File, PathBuf)> {
    loop {
        let path = dir.join(temp_name(name));
        match OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(nix::libc::O_CLOEXEC)
            .open(&path)
        {
            Ok(f) => return Ok((f, path)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

/// A file being written for `dir/name`. Dropping it without [`Output::commit`] leaves no
/// trace (the unnamed file is freed; a named fallback temp is removed).
#[derive(Debug)]
pub struct Output {
    dir: PathBuf,
    target: PathBuf,
    name: String,
    file: Option<File>,
    /// The fallback temp file's path, when there is one.
    named: Option<PathBuf>,
}

impl Output {
    /// Starts the file for `dir/name` (`name` must be a plain file name).
    pub fn create(dir: &Path, name: &str) -> io::Result<Output> {
        Output::create_with(dir, name, true)
    }

    /// [`Output::create`], optionally without trying `O_TMPFILE` (to test the fallback).
    fn create_with(dir: &Path, name: &str, try_unnamed: bool) -> io::Result<Output> {
        let ctx = |e: io::Error| {
            io::Error::new(
                e.kind(),
                format!("cannot create a file in {}: {e}", dir.display()),
            )
        };
        let unnamed = if try_unnamed {
            open_unnamed(dir).map_err(ctx)?
        } else {
            None
        };
        let (file, named) = match unnamed {
            Some(f) => (f, None),
            None => {
                let (f, p) = create_named(dir, name).map_err(ctx)?;
                (f, Some(p))
            }
        };
        Ok(Output {
            dir: dir.to_path_buf(),
            target: dir.join(name),
            name: name.to_string(),
            file: Some(file),
            named,
        })
    }

    /// The file, for writing and reading back.
    pub fn file(&self) -> io::Result<&File> {
        self.file
            .as_ref()
            .ok_or_else(|| io::Error::other("the output was already committed"))
    }

    /// Where [`Output::commit`] puts it.
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// A path other programs can open the content by while it is being written: the fallback
    /// temp file, or `/proc/<pid>/fd/<n>` for the unnamed file.
    pub fn reading_path(&self) -> io::Result<PathBuf> {
        if let Some(p) = &self.named {
            return Ok(p.clone());
        }
        let fd = self.file()?.as_raw_fd();
        Ok(PathBuf::from(format!(
            "/proc/{}/fd/{fd}",
            std::process::id()
        )))
    }

    /// Whether the file has no name while it is written.
    pub fn is_unnamed(&self) -> bool {
        self.named.is_none()
    }

    /// fsyncs the file, sets `mode`, gives it its name (replacing an existing file of that
    /// name atomically) and fsyncs the directory.
    pub fn commit(mut self, mode: u32) -> io::Result<PathBuf> {
        let file = self
            .file
            .take()
            .ok_or_else(|| io::Error::other("the output was already committed"))?;
        file.sync_all()
            .map_err(|e| io::Error::new(e.kind(), format!("syncing the bundle: {e}")))?;
        file.set_permissions(std::fs::Permissions::from_mode(mode))?;
        let temp = match self.named.take() {
            Some(p) => p,
            None => {
                let p = self.dir.join(temp_name(&self.name));
                link_unnamed(&file, &p)?;
                p
            }
        };
        // From here on the temp path exists; remember it so an error removes it.
        self.named = Some(temp.clone());
        drop(file);
        std::fs::rename(&temp, &self.target).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "renaming {} to {}: {e}",
                    temp.display(),
                    self.target.display()
                ),
            )
        })?;
        self.named = None;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| {
                io::Error::new(e.kind(), format!("syncing {}: {e}", self.dir.display()))
            })?;
        Ok(self.target.clone())
    }
}

impl Drop for Output {
    fn drop(&mut self) {
        if let Some(p) = self.named.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Gives the unnamed `file` the name `path` (`linkat` of `/proc/self/fd/N`, which needs no
/// privilege, else `AT_EMPTY_PATH`).
fn link_unnamed(file: &File, path: &Path) -> io::Result<()> {
    use nix::fcntl::{AtFlags, AT_FDCWD};
    let proc_path = format!("/proc/self/fd/{}", file.as_raw_fd());
    let first = nix::unistd::linkat(
        AT_FDCWD,
        proc_path.as_str(),
        AT_FDCWD,
        path,
        AtFlags::AT_SYMLINK_FOLLOW,
    );
    match first {
        Ok(()) => Ok(()),
        Err(e1) => {
            nix::unistd::linkat(file, "", AT_FDCWD, path, AtFlags::AT_EMPTY_PATH).map_err(|e2| {
                io::Error::other(format!(
                    "cannot give the bundle a name in {}: {e1} (via /proc), {e2}",
                    path.parent().unwrap_or(Path::new("/")).display()
                ))
            })
        }
    }
}

/// A scratch file in `dir` that never has a name (`O_TMPFILE`, or created and unlinked at
/// once), for content that must be complete before it can be archived.
pub fn spool(dir: &Path) -> io::Result<File> {
    let ctx = |e: io::Error| {
        io::Error::new(
            e.kind(),
            format!("cannot create a scratch file in {}: {e}", dir.display()),
        )
    };
    if let Some(f) = open_unnamed(dir).map_err(ctx)? {
        return Ok(f);
    }
    let (f, p) = create_named(dir, "spool").map_err(ctx)?;
    std::fs::remove_file(&p).map_err(ctx)?;
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek, Write};

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn nothing_is_visible_until_commit() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("b.tgz"), b"old").unwrap();
        let out = Output::create(t.path(), "b.tgz").unwrap();
        out.file().unwrap().write_all(b"new").unwrap();
        if out.is_unnamed() {
            assert_eq!(names(t.path()), ["b.tgz"]);
        }
        let mut via = File::open(out.reading_path().unwrap()).unwrap();
        let mut got = Vec::new();
        via.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"new");
        assert_eq!(std::fs::read(t.path().join("b.tgz")).unwrap(), b"old");
        let target = out.commit(0o644).unwrap();
        assert_eq!(target, t.path().join("b.tgz"));
        assert_eq!(std::fs::read(&target).unwrap(), b"new");
        assert_eq!(
            std::fs::metadata(&target).unwrap().permissions().mode() & 0o777,
            0o644
        );
        assert_eq!(names(t.path()), ["b.tgz"]);
    }

    #[test]
    fn dropping_leaves_nothing() {
        let t = tempfile::tempdir().unwrap();
        let out = Output::create(t.path(), "x.tgz").unwrap();
        out.file().unwrap().write_all(b"partial").unwrap();
        drop(out);
        assert!(names(t.path()).is_empty());
        let mut s = spool(t.path()).unwrap();
        s.write_all(b"scratch").unwrap();
        assert!(names(t.path()).is_empty());
        s.rewind().unwrap();
        let mut got = String::new();
        s.read_to_string(&mut got).unwrap();
        assert_eq!(got, "scratch");
    }

    #[test]
    fn the_named_fallback_is_hidden_and_cleaned_up() {
        let t = tempfile::tempdir().unwrap();
        let out = Output::create_with(t.path(), "b.tgz", false).unwrap();
        assert!(!out.is_unnamed());
        let n = names(t.path());
        assert_eq!(n.len(), 1);
        assert!(
            n[0].starts_with(".b.tgz.") && n[0].ends_with(".tmp"),
            "{n:?}"
        );
        assert_eq!(out.reading_path().unwrap(), t.path().join(&n[0]));
        out.file().unwrap().write_all(b"x").unwrap();
        drop(out);
        assert!(names(t.path()).is_empty());
        let out = Output::create_with(t.path(), "b.tgz", false).unwrap();
        out.file().unwrap().write_all(b"done").unwrap();
        out.commit(0o644).unwrap();
        assert_eq!(names(t.path()), ["b.tgz"]);
        assert_eq!(std::fs::read(t.path().join("b.tgz")).unwrap(), b"done");
    }

    #[test]
    fn a_missing_directory_is_an_error() {
        let t = tempfile::tempdir().unwrap();
        let e = Output::create(&t.path().join("nope"), "x.tgz").unwrap_err();
        assert!(e.to_string().contains("cannot create a file in"), "{e}");
    }
}
