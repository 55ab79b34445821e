//! Atomic file replacement: readers see either the old contents or the new, never a mix.
//!
//! It knows only paths and bytes; it never knows xCAT tables, the host or the protocol.

use nix::errno::Errno;
use nix::fcntl::{openat, renameat, OFlag};
use nix::sys::stat::{fchmod, fstatat, Mode};
use nix::unistd::{unlinkat, UnlinkatFlags};
use std::collections::hash_map::RandomState;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::hash::{BuildHasher, Hasher};
use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// How many temp names are tried before giving up on `EEXIST`.
const NAME_ATTEMPTS: usize = 16;

/// Writes `data` to `path` atomically.
///
/// Steps: create a temp file in the same directory (unpredictable name `.<name>.<random>.tmp`,
/// `O_CREAT|O_EXCL|O_NOFOLLOW`), write, set the mode, fsync, rename over `path`, fsync the
/// directory.
///
/// * **Mode.** If `path` already exists as a regular file, its permission bits (`0o7777`) are
///   kept and `mode` is ignored; otherwise the new file gets exactly `mode & 0o7777`. The umask
///   does not apply (the mode is set with `fchmod`). Ownership is not kept: the new file belongs
///   to the caller.
/// * **Symlinks.** A symlink at `path` is replaced by the new file; its target is not touched.
///   The parent directories of `path` are resolved normally.
/// * **Errors.** On any error before the rename, nothing at `path` changes and the temp file is
///   removed. If only the final directory fsync fails, the new contents are already in place
///   but their durability is not confirmed; the error is still returned.
/// * `path` must end in a name (not `/`, `.` or `..`): otherwise
///   [`io::ErrorKind::InvalidInput`].
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    let (dir, name) = split(path)?;
    let dir_fd = nix::fcntl::open(
        dir.as_path(),
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| with_path(e.into(), &dir))?;

    let mode = match fstatat(
        &dir_fd,
        name.as_os_str(),
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    ) {
        Ok(st) if (st.st_mode & nix::libc::S_IFMT) == nix::libc::S_IFREG => st.st_mode & 0o7777,
        Ok(_) | Err(Errno::ENOENT) => mode & 0o7777,
        Err(e) => return Err(with_path(e.into(), path)),
    };

    let (tmp_name, file) = create_temp(&dir_fd, &name).map_err(|e| with_path(e, &dir))?;
    let result = fill(file, data, mode).and_then(|()| {
        renameat(&dir_fd, tmp_name.as_os_str(), &dir_fd, name.as_os_str()).map_err(io::Error::from)
    });
    if let Err(e) = result {
        // Best effort: the temp file is ours and was never visible under `path`.
        let _ = unlinkat(&dir_fd, tmp_name.as_os_str(), UnlinkatFlags::NoRemoveDir);
        return Err(with_path(e, path));
    }
    File::from(dir_fd)
        .sync_all()
        .map_err(|e| with_path(e, &dir))
}

/// Writes, sets the mode and fsyncs the temp file.
fn fill(mut file: File, data: &[u8], mode: u32) -> io::Result<()> {
    file.write_all(data)?;
    fchmod(&file, Mode::from_bits_truncate(mode))?;
    file.sync_all()
}

/// Creates a new temp file next to `name` in `dir_fd`, retrying on a name collision.
fn create_temp(dir_fd: &OwnedFd, name: &OsStr) -> io::Result<(OsString, File)> {
    let flags =
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let mut last = io::Error::from(Errno::EEXIST);
    for _ in 0..NAME_ATTEMPTS {
        let mut tmp = OsString::from(".");
        tmp.push(name);
        tmp.push(format!(".{:016x}.tmp", random_u64()));
        match openat(
            dir_fd,
            tmp.as_os_str(),
            flags,
            Mode::from_bits_truncate(0o600),
        ) {
            Ok(fd) => return Ok((tmp, File::from(fd))),
            Err(Errno::EEXIST) => last = Errno::EEXIST.into(),
            Err(Errno::ENAMETOOLONG) => {
                // A long target name: fall back to a short random name.
                let tmp = OsString::from(format!(".tmp.{:016x}", random_u64()));
                match openat(
                    dir_fd,
                    tmp.as_os_str(),
                    flags,
                    Mode::from_bits_truncate(0o600),
                ) {
                    Ok(fd) => return Ok((tmp, File::from(fd))),
                    Err(e) => last = e.into(),
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(last)
}

/// 64 unpredictable bits: std's `RandomState` is seeded from the OS's random source, and the
/// counter and clock make successive values differ.
fn random_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    if let Ok(t) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        h.write_u128(t.as_nanos());
    }
    h.write_u32(std::process::id());
    h.finish()
}

fn split(path: &Path) -> io::Result<(PathBuf, OsString)> {
    let mut comps: Vec<Component<'_>> = path.components().collect();
    match comps.pop() {
        Some(Component::Normal(name)) => {
            let dir: PathBuf = comps.iter().collect();
            let dir = if dir.as_os_str().is_empty() {
                PathBuf::from(".")
            } else {
                dir
            };
            Ok((dir, name.to_os_string()))
        }
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{}: not a file name", path.display()),
        )),
    }
}

fn with_path(e: io::Error, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::{symlink, PermissionsExt};

    fn mode_of(p: &Path) -> u32 {
        fs::metadata(p).expect("stat").permissions().mode() & 0o7777
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .expect("read_dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn creates_with_exact_mode() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let p = tmp.path().join("xcatinfo");
        write_atomic(&p, b"hello\n", 0o640).expect("write");
        assert_eq!(fs::read(&p).expect("read"), b"hello\n");
        assert_eq!(mode_of(&p), 0o640);
        // The umask does not apply: 0o666 stays 0o666 although umask is at least 0o022 usually.
        let q = tmp.path().join("open");
        write_atomic(&q, b"", 0o666).expect("write");
        assert_eq!(mode_of(&q), 0o666);
        assert_eq!(fs::read(&q).expect("read"), b"");
        assert_eq!(names(tmp.path()), vec!["open", "xcatinfo"]);
    }

    #[test]
    fn replaces_and_keeps_existing_mode() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let p = tmp.path().join("f");
        fs::write(&p, b"old contents that are longer").expect("write");
        fs::set_permissions(&p, fs::Permissions::from_mode(0o604)).expect("chmod");
        let old_ino = std::os::unix::fs::MetadataExt::ino(&fs::metadata(&p).expect("stat"));
        write_atomic(&p, b"new", 0o600).expect("write");
        assert_eq!(fs::read(&p).expect("read"), b"new");
        assert_eq!(mode_of(&p), 0o604);
        let new_ino = std::os::unix::fs::MetadataExt::ino(&fs::metadata(&p).expect("stat"));
        assert_ne!(
            old_ino, new_ino,
            "replaced by rename, not rewritten in place"
        );
        assert_eq!(names(tmp.path()), vec!["f"]);
    }

    #[test]
    fn old_file_stays_readable_through_open_handle() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let p = tmp.path().join("f");
        fs::write(&p, b"old").expect("write");
        let held = fs::File::open(&p).expect("open");
        write_atomic(&p, b"new", 0o644).expect("write");
        let mut s = String::new();
        io::Read::read_to_string(&mut &held, &mut s).expect("read old");
        assert_eq!(s, "old");
        assert_eq!(fs::read(&p).expect("read"), b"new");
    }

    #[test]
    fn symlink_is_replaced_not_followed() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let target = tmp.path().join("target");
        fs::write(&target, b"target").expect("write");
        fs::set_permissions(&target, fs::Permissions::from_mode(0o600)).expect("chmod");
        let link = tmp.path().join("link");
        symlink(&target, &link).expect("symlink");
        write_atomic(&link, b"new", 0o644).expect("write");
        assert_eq!(fs::read(&target).expect("read"), b"target");
        assert!(fs::symlink_metadata(&link).expect("lstat").is_file());
        assert_eq!(mode_of(&link), 0o644);
    }

    #[test]
    fn failure_leaves_target_and_no_temp() {
        let tmp = tempfile::tempdir().expect("tempdir");
        // Target is a non-empty directory: the rename fails.
        let d = tmp.path().join("dir");
        fs::create_dir(&d).expect("mkdir");
        fs::write(d.join("inside"), b"x").expect("write");
        let err = write_atomic(&d, b"data", 0o644).expect_err("cannot replace a directory");
        assert!(err.to_string().contains(&d.display().to_string()), "{err}");
        assert!(d.is_dir());
        assert_eq!(names(tmp.path()), vec!["dir"]);
        assert_eq!(names(&d), vec!["inside"]);
    }

    #[test]
    fn missing_directory_and_bad_names() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let err = write_atomic(&tmp.path().join("no/such/f"), b"x", 0o644).expect_err("missing");
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        for bad in ["/", "..", "/tmp/.."] {
            let err = write_atomic(Path::new(bad), b"x", 0o644).expect_err(bad);
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{bad}");
        }
        assert!(names(tmp.path()).is_empty());
    }

    #[test]
    fn long_name_uses_short_temp() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let name = "n".repeat(250);
        let p = tmp.path().join(&name);
        write_atomic(&p, b"x", 0o644).expect("write");
        assert_eq!(names(tmp.path()), vec![name]);
    }

    #[test]
    fn temp_names_differ() {
        let a = random_u64();
        let b = random_u64();
        assert_ne!(a, b);
    }
}
