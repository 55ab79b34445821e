//! Confined recursive removal: deletes a tree through directory file descriptors without following
//! symlinks and without crossing into another filesystem or mount.
//!
//! It knows nothing about images, xCAT tables, the host or the protocol; it gets a path and reports
//! what it removed, what it left alone and what failed.
//!
//! # How it stays confined
//!
//! * Every entry is looked at with `fstatat(AT_SYMLINK_NOFOLLOW)` relative to the descriptor of its
//!   directory, and directories are entered with `openat(O_NOFOLLOW|O_DIRECTORY)`, so a directory
//!   swapped for a symlink mid-walk is never followed (the open fails and the entry is looked at
//!   again).
//! * An entry whose `st_dev` differs from the directory it is in is skipped
//!   ([`SkipReason::OtherFilesystem`]). A mount of the *same* filesystem (a bind mount of
//!   `/install` inside an image on `/install`, xCAT issue #1936) has the same `st_dev`, so
//!   directories are entered with `openat2(RESOLVE_NO_XDEV)`, which refuses any mount crossing
//!   ([`SkipReason::MountPoint`]). On kernels without `openat2` the mount id from
//!   `/proc/self/fdinfo` is compared instead; if that cannot be read, the directory is not entered.
//! * The walk uses an explicit stack, so depth is limited by memory, not by the thread's stack.
//!   At most [`MAX_OPEN_DIRS`] directory descriptors are held; when the walk climbs back to a
//!   directory whose descriptor was closed, it reopens it through `..` and checks that device and
//!   inode are the ones recorded on the way down. If a directory was moved away meanwhile the
//!   check fails and the removal stops, rather than deleting in whatever `..` now is.

use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{openat, AtFlags, OFlag};
use nix::sys::stat::{fstat, fstatat, FileStat, Mode};
use nix::unistd::{unlinkat, UnlinkatFlags};
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

/// How many directory descriptors one [`remove_tree`] keeps open at most.
pub const MAX_OPEN_DIRS: usize = 64;

/// How often an entry that changes type under us (file ↔ directory ↔ symlink) is looked at again.
const RACE_RETRIES: usize = 3;

/// What [`remove_tree`] did.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Number of entries removed, directories included.
    pub removed: u64,
    /// Entries left alone on purpose, with the reason.
    pub skipped: Vec<Skipped>,
    /// Entries that could not be removed, including directories left non-empty because something
    /// below them was skipped or failed (`ENOTEMPTY`), and a cancellation
    /// ([`io::ErrorKind::Interrupted`]).
    pub errors: Vec<RemoveError>,
}

impl Outcome {
    /// True when nothing was skipped and nothing failed: the tree is gone (or was never there).
    pub fn is_complete(&self) -> bool {
        self.skipped.is_empty() && self.errors.is_empty()
    }
}

/// An entry [`remove_tree`] did not touch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// The entry, as `path` given to [`remove_tree`] joined with the names below it.
    pub path: PathBuf,
    /// Why it was left alone.
    pub reason: SkipReason,
}

/// Why an entry was left alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    /// Its `st_dev` differs from that of the directory it is in: a mount point of another
    /// filesystem, or a file bind-mounted from one.
    OtherFilesystem,
    /// A directory that is a mount point of the same filesystem (for example a bind mount).
    MountPoint,
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SkipReason::OtherFilesystem => "on another filesystem",
            SkipReason::MountPoint => "a mount point",
        })
    }
}

impl fmt::Display for Skipped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: skipped, {}", self.path.display(), self.reason)
    }
}

/// A failure to remove (or to look at) one entry.
#[derive(Debug)]
pub struct RemoveError {
    /// The entry, as `path` given to [`remove_tree`] joined with the names below it.
    pub path: PathBuf,
    /// What went wrong.
    pub err: io::Error,
}

impl fmt::Display for RemoveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.err)
    }
}

impl std::error::Error for RemoveError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.err)
    }
}

/// Removes `path` and everything below it without following symlinks and without leaving the
/// filesystem (and mount) that `path` is on.
///
/// * A symlink at `path` is removed as a link; its target is untouched. Only the last component
///   of `path` is treated this way (a trailing `/` does not change that): its parent directories
///   are resolved normally.
/// * Entries on another device, and directories that are mount points (bind mounts of the same
///   filesystem included), are left alone and reported in [`Outcome::skipped`]. Their parents then
///   cannot be removed, which shows up in [`Outcome::errors`] as `ENOTEMPTY`. If `path` itself is
///   a mount point it is skipped too and nothing is removed.
/// * A missing `path` (or parent) gives an empty [`Outcome`]: nothing removed, no error.
/// * `path` must end in a name: `/`, `..` or `.` as last component is refused
///   ([`io::ErrorKind::InvalidInput`]).
/// * `cancel` is called before each entry; once it returns true the walk stops and
///   [`Outcome::errors`] ends with an error of kind [`io::ErrorKind::Interrupted`].
/// * Failures on single entries are collected and the walk goes on; only a directory found moved
///   while its descriptor was closed, or cancellation, stops it early.
pub fn remove_tree(path: &Path, cancel: &dyn Fn() -> bool) -> Outcome {
    remove_tree_with(path, cancel, &Options::default())
}

/// Removes one non-directory entry (file, symlink, socket, fifo, device) without following
/// symlinks: a symlink is removed, not its target.
///
/// A directory gives `EISDIR` ([`io::ErrorKind::IsADirectory`]); a missing entry gives
/// [`io::ErrorKind::NotFound`].
pub fn remove_file(path: &Path) -> io::Result<()> {
    // unlink(2) never follows a final symlink and never removes a directory.
    unlinkat(nix::fcntl::AT_FDCWD, path, UnlinkatFlags::NoRemoveDir).map_err(io::Error::from)
}

/// Knobs for tests: the descriptor budget and whether `openat2` may be used.
#[derive(Debug, Clone, Copy)]
struct Options {
    max_open_dirs: usize,
    use_openat2: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            max_open_dirs: MAX_OPEN_DIRS,
            use_openat2: true,
        }
    }
}

/// A directory on the walk's stack.
struct Frame {
    /// Open descriptor, or `None` when closed to stay within the budget.
    fd: Option<OwnedFd>,
    dev: u64,
    ino: u64,
    /// Name in the parent frame (empty for the bottom frame, the parent of `path`).
    name: OsString,
    /// Entries still to look at.
    pending: Vec<OsString>,
}

/// Per-walk state that is not the stack.
struct Walk<'a> {
    /// Display path of the bottom frame (the parent of `path`, possibly empty).
    base: PathBuf,
    out: Outcome,
    use_openat2: bool,
    /// Mount id of the tree, read lazily when `openat2` is not available.
    mnt_id: Option<u64>,
    cancel: &'a dyn Fn() -> bool,
}

/// What looking at one entry gave.
enum Entry {
    /// Nothing more to do (removed, skipped, failed or vanished).
    Done,
    /// A directory on our mount, opened: walk into it.
    Descend(Frame),
}

fn remove_tree_with(path: &Path, cancel: &dyn Fn() -> bool, opts: &Options) -> Outcome {
    let mut out = Outcome::default();
    let (base, name) = match split(path) {
        Ok(v) => v,
        Err(err) => {
            out.errors.push(RemoveError {
                path: path.to_path_buf(),
                err,
            });
            return out;
        }
    };
    let open_base = if base.as_os_str().is_empty() {
        Path::new(".")
    } else {
        base.as_path()
    };
    let base_fd = match nix::fcntl::open(
        open_base,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => return out,
        Err(e) => {
            out.errors.push(RemoveError {
                path: base,
                err: e.into(),
            });
            return out;
        }
    };
    let base_st = match fstat(&base_fd) {
        Ok(st) => st,
        Err(e) => {
            out.errors.push(RemoveError {
                path: base,
                err: e.into(),
            });
            return out;
        }
    };
    let bottom = Frame {
        fd: Some(base_fd),
        dev: base_st.st_dev,
        ino: base_st.st_ino,
        name: OsString::new(),
        pending: vec![name],
    };
    let mut walk = Walk {
        base,
        out,
        use_openat2: opts.use_openat2,
        mnt_id: None,
        cancel,
    };
    walk.run(bottom, opts.max_open_dirs.max(2));
    walk.out
}

/// Splits `path` into the directory to open and the final name. The directory is empty for a
/// bare relative name.
fn split(path: &Path) -> io::Result<(PathBuf, OsString)> {
    let mut comps: Vec<Component<'_>> = path.components().collect();
    match comps.pop() {
        Some(Component::Normal(name)) => Ok((comps.iter().collect(), name.to_os_string())),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "refusing to remove a path that does not end in a name",
        )),
    }
}

fn is_dir(st: &FileStat) -> bool {
    (st.st_mode & nix::libc::S_IFMT) == nix::libc::S_IFDIR
}

impl Walk<'_> {
    fn run(&mut self, bottom: Frame, max_open: usize) {
        let mut frames = vec![bottom];
        // frames[..lowest_open] have no descriptor, frames[lowest_open..] all have one.
        let mut lowest_open = 0usize;
        loop {
            let Some(top) = frames.last_mut() else {
                return;
            };
            if let Some(name) = top.pending.pop() {
                if (self.cancel)() {
                    top.pending.push(name);
                    let here = self.dir_path(&frames);
                    self.out.errors.push(RemoveError {
                        path: here,
                        err: io::Error::new(io::ErrorKind::Interrupted, "removal cancelled"),
                    });
                    return;
                }
                let top = frames.last().expect("non-empty, checked above");
                // Invariant kept by the eviction below: the top frame is always open.
                let dirfd = top.fd.as_ref().expect("top frame is open").as_fd();
                match self.entry(dirfd, top.dev, &name, &frames) {
                    Entry::Done => {}
                    Entry::Descend(frame) => {
                        frames.push(frame);
                        if frames.len() - lowest_open > max_open {
                            frames[lowest_open].fd = None;
                            lowest_open += 1;
                        }
                    }
                }
                continue;
            }

            // The top directory has been emptied (as far as we could).
            if frames.len() == 1 {
                return; // the bottom frame is the parent of `path`: never removed
            }
            let done = frames.pop().expect("len checked above");
            let child_fd = done.fd.expect("popped frame was the open top");
            let parent_idx = frames.len() - 1;
            if parent_idx < lowest_open {
                match reopen_parent(&child_fd, &frames[parent_idx]) {
                    Ok(fd) => {
                        frames[parent_idx].fd = Some(fd);
                        lowest_open = parent_idx;
                    }
                    Err(err) => {
                        let here = self.dir_path(&frames);
                        self.out.errors.push(RemoveError { path: here, err });
                        return;
                    }
                }
            }
            drop(child_fd);
            let parent = &frames[parent_idx];
            let parent_fd = parent.fd.as_ref().expect("parent reopened above");
            match unlinkat(parent_fd, done.name.as_os_str(), UnlinkatFlags::RemoveDir) {
                Ok(()) => self.out.removed += 1,
                Err(Errno::ENOENT) => {}
                Err(e) => {
                    let p = self.entry_path(&frames, &done.name);
                    self.out.errors.push(RemoveError {
                        path: p,
                        err: e.into(),
                    });
                }
            }
        }
    }

    /// Looks at `name` in `dirfd` (a directory on device `dev`): removes it, skips it, or opens
    /// it for descent.
    fn entry(&mut self, dirfd: BorrowedFd<'_>, dev: u64, name: &OsStr, frames: &[Frame]) -> Entry {
        let mut last_err = Errno::ELOOP;
        for _ in 0..RACE_RETRIES {
            let st = match fstatat(
                dirfd,
                name,
                AtFlags::AT_SYMLINK_NOFOLLOW | AtFlags::AT_NO_AUTOMOUNT,
            ) {
                Ok(st) => st,
                Err(Errno::ENOENT) => return Entry::Done,
                Err(e) => return self.fail(frames, name, e.into()),
            };
            if st.st_dev != dev {
                return self.skip(frames, name, SkipReason::OtherFilesystem);
            }
            if !is_dir(&st) {
                match unlinkat(dirfd, name, UnlinkatFlags::NoRemoveDir) {
                    Ok(()) => {
                        self.out.removed += 1;
                        return Entry::Done;
                    }
                    Err(Errno::ENOENT) => return Entry::Done,
                    Err(Errno::EISDIR) => {
                        last_err = Errno::EISDIR;
                        continue; // became a directory: look again
                    }
                    Err(e) => return self.fail(frames, name, e.into()),
                }
            }
            let fd = match self.open_dir(dirfd, name) {
                Ok(fd) => fd,
                Err(Errno::ENOENT) => return Entry::Done,
                Err(Errno::EXDEV) => return self.skip(frames, name, SkipReason::MountPoint),
                Err(e @ (Errno::ELOOP | Errno::ENOTDIR)) => {
                    last_err = e;
                    continue; // no longer a directory: look again
                }
                Err(e) => return self.fail(frames, name, e.into()),
            };
            let st = match fstat(&fd) {
                Ok(st) => st,
                Err(e) => return self.fail(frames, name, e.into()),
            };
            if st.st_dev != dev {
                return self.skip(frames, name, SkipReason::OtherFilesystem);
            }
            if !self.use_openat2 {
                match self.same_mount(dirfd, &fd) {
                    Ok(true) => {}
                    Ok(false) => return self.skip(frames, name, SkipReason::MountPoint),
                    Err(err) => return self.fail(frames, name, err),
                }
            }
            let pending = match list(&fd) {
                Ok(names) => names,
                Err(e) => return self.fail(frames, name, e.into()),
            };
            return Entry::Descend(Frame {
                fd: Some(fd),
                dev: st.st_dev,
                ino: st.st_ino,
                name: name.to_os_string(),
                pending,
            });
        }
        let err = io::Error::other(format!(
            "entry kept changing type while being removed ({})",
            io::Error::from(last_err)
        ));
        self.fail(frames, name, err)
    }

    /// Opens directory `name` in `dirfd` without following a symlink and, where the kernel can,
    /// without crossing a mount point (`EXDEV`).
    fn open_dir(&mut self, dirfd: BorrowedFd<'_>, name: &OsStr) -> Result<OwnedFd, Errno> {
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        if self.use_openat2 {
            use nix::fcntl::{openat2, OpenHow, ResolveFlag};
            let how = OpenHow::new()
                .flags(flags)
                .resolve(ResolveFlag::RESOLVE_NO_XDEV | ResolveFlag::RESOLVE_NO_SYMLINKS);
            match openat2(dirfd, name, how) {
                Err(Errno::ENOSYS) => {
                    log::debug!("openat2 unavailable; checking mount ids through /proc");
                    self.use_openat2 = false;
                }
                other => return other,
            }
        }
        openat(dirfd, name, flags, Mode::empty())
    }

    /// Whether `child` is on the same mount as the tree (fallback for kernels without `openat2`).
    fn same_mount(&mut self, dirfd: BorrowedFd<'_>, child: &OwnedFd) -> io::Result<bool> {
        let tree = match self.mnt_id {
            Some(id) => id,
            None => {
                // Every directory on the stack is on the tree's mount, so `dirfd`'s is the one.
                let id = mnt_id(dirfd)?;
                self.mnt_id = Some(id);
                id
            }
        };
        Ok(mnt_id(child.as_fd())? == tree)
    }

    fn skip(&mut self, frames: &[Frame], name: &OsStr, reason: SkipReason) -> Entry {
        let path = self.entry_path(frames, name);
        self.out.skipped.push(Skipped { path, reason });
        Entry::Done
    }

    fn fail(&mut self, frames: &[Frame], name: &OsStr, err: io::Error) -> Entry {
        let path = self.entry_path(frames, name);
        self.out.errors.push(RemoveError { path, err });
        Entry::Done
    }

    /// Display path of the top frame's directory.
    fn dir_path(&self, frames: &[Frame]) -> PathBuf {
        let mut p = self.base.clone();
        for f in frames.iter().skip(1) {
            p.push(&f.name);
        }
        p
    }

    /// Display path of `name` inside the top frame's directory.
    fn entry_path(&self, frames: &[Frame], name: &OsStr) -> PathBuf {
        let mut p = self.dir_path(frames);
        p.push(name);
        p
    }
}

/// Reopens `parent` through `child/..` and checks it is the directory recorded on the way down.
fn reopen_parent(child: &OwnedFd, parent: &Frame) -> io::Result<OwnedFd> {
    let fd = openat(
        child,
        "..",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let st = fstat(&fd)?;
    if (st.st_dev, st.st_ino) != (parent.dev, parent.ino) {
        return Err(io::Error::other(
            "directory was moved during removal; stopped",
        ));
    }
    Ok(fd)
}

/// Names in the directory open as `fd`, without `.` and `..`.
fn list(fd: &OwnedFd) -> Result<Vec<OsString>, Errno> {
    // A fresh open of "." gives the listing its own file offset and leaves `fd` alone.
    let mut dir = Dir::openat(
        fd,
        ".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let mut names = Vec::new();
    for entry in dir.iter() {
        let entry = entry?;
        let bytes = entry.file_name().to_bytes();
        if bytes == b"." || bytes == b".." {
            continue;
        }
        names.push(OsStr::from_bytes(bytes).to_os_string());
    }
    Ok(names)
}

/// The mount id of an open descriptor, from `/proc/self/fdinfo`.
fn mnt_id(fd: BorrowedFd<'_>) -> io::Result<u64> {
    let path = format!("/proc/self/fdinfo/{}", fd.as_raw_fd());
    let text = std::fs::read_to_string(&path).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot check mount boundary: {path}: {e}"),
        )
    })?;
    text.lines()
        .find_map(|l| l.strip_prefix("mnt_id:"))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("cannot check mount boundary: no mnt_id in {path}"),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::fs;
    use std::os::unix::ffi::OsStringExt;
    use std::os::unix::fs::symlink;

    fn never() -> bool {
        false
    }

    fn is_root() -> bool {
        nix::unistd::geteuid().is_root()
    }

    fn make_tree(root: &Path) {
        fs::create_dir_all(root.join("a/b/c")).expect("mkdir");
        fs::create_dir_all(root.join("empty")).expect("mkdir");
        fs::write(root.join("top.txt"), b"x").expect("write");
        fs::write(root.join("a/one"), b"1").expect("write");
        fs::write(root.join("a/b/two"), b"2").expect("write");
        fs::write(root.join("a/b/c/three"), b"3").expect("write");
        symlink("a/b", root.join("rel-link")).expect("symlink");
        symlink("/nonexistent/dangling", root.join("dangling")).expect("symlink");
    }

    #[test]
    fn removes_regular_tree() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().join("tree");
        make_tree(&root);
        let out = remove_tree(&root, &never);
        assert!(out.is_complete(), "{out:?}");
        // top.txt, one, two, three, rel-link, dangling + dirs tree, a, b, c, empty
        assert_eq!(out.removed, 11);
        assert!(!root.exists());
        assert!(tmp.path().exists());
    }

    #[test]
    fn dot_components() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().join("tree");
        make_tree(&root);
        // `.` components, inside and trailing, name the same directory.
        let out = remove_tree(&tmp.path().join("./tree/."), &never);
        assert!(out.is_complete(), "{out:?}");
        assert!(!root.exists());
    }

    #[test]
    fn symlink_to_outside_dir_is_not_followed() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let outside = tmp.path().join("outside");
        fs::create_dir_all(outside.join("sub")).expect("mkdir");
        fs::write(outside.join("keep"), b"keep").expect("write");
        fs::write(outside.join("sub/keep2"), b"keep").expect("write");
        let root = tmp.path().join("tree");
        fs::create_dir_all(root.join("d")).expect("mkdir");
        symlink(&outside, root.join("d/link")).expect("symlink");
        symlink(&outside, root.join("link-abs")).expect("symlink");
        symlink("../outside", root.join("link-rel")).expect("symlink");
        let out = remove_tree(&root, &never);
        assert!(out.is_complete(), "{out:?}");
        assert!(!root.exists());
        assert_eq!(fs::read(outside.join("keep")).expect("kept"), b"keep");
        assert_eq!(fs::read(outside.join("sub/keep2")).expect("kept"), b"keep");
    }

    #[test]
    fn symlink_at_top_is_removed_as_link() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let target = tmp.path().join("target");
        fs::create_dir(&target).expect("mkdir");
        fs::write(target.join("keep"), b"k").expect("write");
        let link = tmp.path().join("rootimg");
        symlink(&target, &link).expect("symlink");
        let out = remove_tree(&link, &never);
        assert!(out.is_complete(), "{out:?}");
        assert_eq!(out.removed, 1);
        assert!(fs::symlink_metadata(&link).is_err());
        assert!(target.join("keep").exists());
        // A trailing slash still names the link itself here, not the target's contents.
        symlink(&target, &link).expect("symlink");
        let out = remove_tree(Path::new(&format!("{}/", link.display())), &never);
        assert!(out.is_complete(), "{out:?}");
        assert!(target.join("keep").exists());
    }

    #[test]
    fn file_at_top() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let f = tmp.path().join("file");
        fs::write(&f, b"x").expect("write");
        let out = remove_tree(&f, &never);
        assert!(out.is_complete(), "{out:?}");
        assert_eq!(out.removed, 1);
        assert!(!f.exists());
    }

    #[test]
    fn special_files() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().join("tree");
        fs::create_dir(&root).expect("mkdir");
        nix::unistd::mkfifo(&root.join("fifo"), Mode::from_bits_truncate(0o600)).expect("mkfifo");
        let _listener =
            std::os::unix::net::UnixListener::bind(root.join("sock")).expect("bind socket");
        let mut expected = 3; // fifo, sock, tree
        if is_root() {
            nix::sys::stat::mknod(
                &root.join("null"),
                nix::sys::stat::SFlag::S_IFCHR,
                Mode::from_bits_truncate(0o600),
                nix::sys::stat::makedev(1, 3),
            )
            .expect("mknod as root");
            expected += 1;
        }
        let out = remove_tree(&root, &never);
        assert!(out.is_complete(), "{out:?}");
        assert_eq!(out.removed, expected);
        assert!(!root.exists());
    }

    #[test]
    fn non_utf8_names() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().join("tree");
        let odd_dir = root.join(OsString::from_vec(b"\xff\xfe dir".to_vec()));
        fs::create_dir_all(&odd_dir).expect("mkdir");
        fs::write(
            odd_dir.join(OsString::from_vec(b"caf\xe9\n".to_vec())),
            b"x",
        )
        .expect("write");
        let out = remove_tree(&root, &never);
        assert!(out.is_complete(), "{out:?}");
        assert_eq!(out.removed, 3);
        assert!(!root.exists());
    }

    #[test]
    fn missing_path_is_ok() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let out = remove_tree(&tmp.path().join("nope"), &never);
        assert!(out.is_complete());
        assert_eq!(out.removed, 0);
        let out = remove_tree(&tmp.path().join("no/such/parent"), &never);
        assert!(out.is_complete());
        assert_eq!(out.removed, 0);
    }

    #[test]
    fn refuses_paths_without_a_name() {
        for p in ["/", "..", ".", "/tmp/..", ""] {
            let out = remove_tree(Path::new(p), &never);
            assert_eq!(out.removed, 0, "{p}");
            assert_eq!(out.errors.len(), 1, "{p}");
            assert_eq!(out.errors[0].err.kind(), io::ErrorKind::InvalidInput, "{p}");
        }
    }

    #[test]
    fn cancel_midway() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().join("tree");
        fs::create_dir(&root).expect("mkdir");
        for i in 0..20 {
            fs::write(root.join(format!("f{i}")), b"x").expect("write");
        }
        let calls = Cell::new(0u32);
        let cancel = || {
            calls.set(calls.get() + 1);
            calls.get() > 6
        };
        let out = remove_tree(&root, &cancel);
        // Call 1 is the top entry, calls 2..=6 remove five files, call 7 cancels.
        assert_eq!(out.removed, 5);
        assert_eq!(out.errors.len(), 1, "{out:?}");
        assert_eq!(out.errors[0].err.kind(), io::ErrorKind::Interrupted);
        assert_eq!(out.errors[0].path, root);
        assert_eq!(fs::read_dir(&root).expect("still there").count(), 15);
        assert!(out.errors[0]
            .to_string()
            .starts_with(&format!("{}: ", root.display())));
    }

    /// Builds `levels` nested directories named `d` below `root` with a file at the bottom,
    /// through descriptors, since the full path is longer than PATH_MAX.
    fn make_deep(root: &Path, levels: usize) {
        fs::create_dir(root).expect("mkdir");
        let mut fd = nix::fcntl::open(
            root,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .expect("open root");
        for _ in 0..levels {
            nix::sys::stat::mkdirat(&fd, "d", Mode::from_bits_truncate(0o755)).expect("mkdirat");
            fd = openat(
                &fd,
                "d",
                OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .expect("openat");
        }
        let f = openat(
            &fd,
            "bottom",
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o644),
        )
        .expect("create bottom");
        drop(f);
    }

    #[test]
    fn deep_tree() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().join("deep");
        make_deep(&root, 5000);
        let out = remove_tree(&root, &never);
        assert!(out.is_complete(), "{:?}", out.errors.first());
        assert_eq!(out.removed, 5002);
        assert!(!root.exists());
    }

    #[test]
    fn deep_tree_without_openat2() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().join("deep");
        make_deep(&root, 300);
        let opts = Options {
            max_open_dirs: 8,
            use_openat2: false,
        };
        let out = remove_tree_with(&root, &never, &opts);
        assert!(out.is_complete(), "{:?}", out.errors.first());
        assert_eq!(out.removed, 302);
        assert!(!root.exists());
    }

    /// A directory moved out of the tree while its descriptor is closed: climbing back through
    /// `..` would land outside, so the walk must stop there instead of deleting in it.
    #[test]
    fn moved_directory_stops_the_walk() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().join("deep");
        make_deep(&root, 200);
        let outside = tmp.path().join("outside");
        fs::create_dir(&outside).expect("mkdir");
        fs::write(outside.join("sentinel"), b"keep").expect("write");
        let depth10: PathBuf = std::iter::once(root.clone())
            .chain(std::iter::repeat_n(PathBuf::from("d"), 10))
            .collect();
        let calls = Cell::new(0u32);
        let cancel = || {
            calls.set(calls.get() + 1);
            if calls.get() == 150 {
                fs::rename(&depth10, outside.join("moved")).expect("rename as the attacker");
            }
            false
        };
        let opts = Options {
            max_open_dirs: 16,
            use_openat2: true,
        };
        let out = remove_tree_with(&root, &cancel, &opts);
        let last = out.errors.last().expect("walk stopped with an error");
        assert!(last.err.to_string().contains("moved"), "{last}");
        assert_eq!(fs::read(outside.join("sentinel")).expect("kept"), b"keep");
        assert!(outside.join("moved").is_dir());
        assert!(root.exists());
    }

    #[test]
    fn unreadable_dir_reported_when_not_root() {
        if is_root() {
            #[allow(clippy::print_stderr)]
            {
                eprintln!("skipped: root can read and delete in a mode-0 directory");
            }
            return;
        }
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().join("tree");
        fs::create_dir_all(root.join("locked/inner")).expect("mkdir");
        fs::write(root.join("ok"), b"x").expect("write");
        fs::set_permissions(root.join("locked"), fs::Permissions::from_mode(0o000)).expect("chmod");
        let out = remove_tree(&root, &never);
        fs::set_permissions(root.join("locked"), fs::Permissions::from_mode(0o755))
            .expect("chmod back");
        assert!(out.skipped.is_empty());
        let paths: Vec<&Path> = out.errors.iter().map(|e| e.path.as_path()).collect();
        assert_eq!(
            paths,
            vec![root.join("locked").as_path(), root.as_path()],
            "{out:?}"
        );
        assert_eq!(out.errors[0].err.kind(), io::ErrorKind::PermissionDenied);
        assert_eq!(out.errors[1].err.raw_os_error(), Some(nix::libc::ENOTEMPTY));
        assert!(!root.join("ok").exists());
    }

    #[test]
    fn remove_file_does_not_follow() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let target = tmp.path().join("target");
        fs::write(&target, b"t").expect("write");
        let link = tmp.path().join("link");
        symlink(&target, &link).expect("symlink");
        remove_file(&link).expect("remove link");
        assert!(target.exists());
        assert!(fs::symlink_metadata(&link).is_err());
        let dlink = tmp.path().join("dlink");
        symlink(tmp.path(), &dlink).expect("symlink");
        remove_file(&dlink).expect("remove dir link");
        assert!(tmp.path().exists());
        nix::unistd::mkfifo(&tmp.path().join("fifo"), Mode::from_bits_truncate(0o600))
            .expect("mkfifo");
        remove_file(&tmp.path().join("fifo")).expect("remove fifo");
        remove_file(&target).expect("remove file");
        assert!(!target.exists());
        let err = remove_file(&target).expect_err("missing");
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        fs::create_dir(tmp.path().join("dir")).expect("mkdir");
        let err = remove_file(&tmp.path().join("dir")).expect_err("dir");
        assert_eq!(err.raw_os_error(), Some(nix::libc::EISDIR));
    }

    #[test]
    fn displays() {
        let e = RemoveError {
            path: PathBuf::from("/x/y"),
            err: io::Error::from_raw_os_error(nix::libc::ENOTEMPTY),
        };
        assert_eq!(e.to_string(), "/x/y: Directory not empty (os error 39)");
        let s = Skipped {
            path: PathBuf::from("/x/proc"),
            reason: SkipReason::OtherFilesystem,
        };
        assert_eq!(s.to_string(), "/x/proc: skipped, on another filesystem");
    }

    // ---- mount tests: root only, always inside a private mount namespace ----

    const CHILD_ENV: &str = "XCAT_IMAGED_TEST_REMOVE_MOUNT_CHILD";
    const NS_ENV: &str = "XCAT_IMAGED_TEST_PARENT_MNT_NS";
    const CHILD_TEST: &str = "fs::remove::tests::mount_namespace_child";

    fn unshare_path() -> Option<PathBuf> {
        ["/usr/bin/unshare", "/bin/unshare"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
    }

    /// Runs [`mount_namespace_child`] again in this test binary, inside
    /// `unshare -m --propagation private`, so every mount it makes dies with it.
    #[test]
    #[allow(clippy::print_stderr)]
    fn mounts_inside_tree_are_left_alone() {
        if !is_root() {
            eprintln!("skipped: mount tests need root");
            return;
        }
        let Some(unshare) = unshare_path() else {
            eprintln!("skipped: unshare(1) not found");
            return;
        };
        let ns = fs::read_link("/proc/self/ns/mnt").expect("own mount namespace");
        let tmp = tempfile::tempdir().expect("tempdir");
        let exe = std::env::current_exe().expect("test binary");
        let output = std::process::Command::new(unshare)
            .args(["-m", "--propagation", "private", "--"])
            .arg(exe)
            .args([
                CHILD_TEST,
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, tmp.path())
            .env(NS_ENV, &ns)
            .output()
            .expect("run unshare");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        if !output.status.success() && text.contains("unshare failed") {
            eprintln!("skipped: cannot create a mount namespace here: {text}");
            return;
        }
        assert!(output.status.success(), "child failed:\n{text}");
        assert!(text.contains("1 passed"), "child did not run:\n{text}");
        assert!(
            text.contains("MOUNT-CHILD-OK"),
            "child did not finish:\n{text}"
        );
        // The child's mounts died with its namespace: none is visible here.
        let mounts = crate::fs::mountinfo::read().expect("mountinfo");
        let canon = fs::canonicalize(tmp.path()).expect("canonical");
        assert!(crate::fs::mountinfo::under(&mounts, &canon).is_empty());
    }

    /// The part of [`mounts_inside_tree_are_left_alone`] that runs in the private namespace.
    /// Does nothing unless started by it.
    #[test]
    #[ignore = "started by mounts_inside_tree_are_left_alone inside a private mount namespace"]
    #[allow(clippy::print_stderr)]
    fn mount_namespace_child() {
        let Some(dir) = std::env::var_os(CHILD_ENV) else {
            return;
        };
        let parent_ns = std::env::var_os(NS_ENV).expect("parent namespace passed");
        let own_ns = fs::read_link("/proc/self/ns/mnt").expect("own namespace");
        assert_ne!(
            own_ns.as_os_str(),
            parent_ns.as_os_str(),
            "not in a new mount namespace: refusing to mount"
        );
        // Be sure nothing propagates back even if unshare(1) behaved differently.
        nix::mount::mount(
            None::<&str>,
            "/",
            None::<&str>,
            nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_PRIVATE,
            None::<&str>,
        )
        .expect("make / private");
        let base = fs::canonicalize(PathBuf::from(dir)).expect("temp dir");
        mount_child_tmpfs_and_bind(&base, true);
        mount_child_tmpfs_and_bind(&base, false);
        mount_child_top_is_mount_point(&base);
        mount_child_read_only(&base);
        eprintln!("MOUNT-CHILD-OK");
    }

    fn mount_tmpfs(target: &Path, flags: nix::mount::MsFlags) {
        nix::mount::mount(Some("tmpfs"), target, Some("tmpfs"), flags, Some("size=1m"))
            .expect("mount tmpfs");
    }

    fn mount_child_tmpfs_and_bind(base: &Path, use_openat2: bool) {
        let case = base.join(if use_openat2 { "a2" } else { "fallback" });
        let root = case.join("rootimg");
        fs::create_dir_all(root.join("proc")).expect("mkdir");
        fs::create_dir_all(root.join("usr/bin")).expect("mkdir");
        fs::create_dir_all(root.join("install")).expect("mkdir");
        fs::write(root.join("usr/bin/tool"), b"x").expect("write");
        fs::write(root.join("file"), b"x").expect("write");
        // A tmpfs inside the tree (another st_dev).
        mount_tmpfs(&root.join("proc"), nix::mount::MsFlags::empty());
        fs::write(root.join("proc/inside"), b"tmpfs data").expect("write into tmpfs");
        // A bind mount of a directory on the same filesystem (same st_dev): xCAT issue #1936.
        let install = case.join("install");
        fs::create_dir_all(install.join("netboot")).expect("mkdir");
        fs::write(install.join("netboot/precious"), b"keep").expect("write");
        nix::mount::mount(
            Some(&install),
            &root.join("install"),
            None::<&str>,
            nix::mount::MsFlags::MS_BIND,
            None::<&str>,
        )
        .expect("bind mount");

        let opts = Options {
            max_open_dirs: MAX_OPEN_DIRS,
            use_openat2,
        };
        let out = remove_tree_with(&root, &never, &opts);
        let mut skipped = out.skipped.clone();
        skipped.sort_by(|a, b| a.path.cmp(&b.path));
        assert_eq!(
            skipped,
            vec![
                Skipped {
                    path: root.join("install"),
                    reason: SkipReason::MountPoint
                },
                Skipped {
                    path: root.join("proc"),
                    reason: SkipReason::OtherFilesystem
                },
            ],
            "{out:?}"
        );
        assert_eq!(out.errors.len(), 1, "{out:?}");
        assert_eq!(out.errors[0].path, root);
        assert_eq!(out.errors[0].err.raw_os_error(), Some(nix::libc::ENOTEMPTY));
        assert_eq!(out.removed, 4, "file, usr/bin/tool, usr/bin, usr: {out:?}");
        assert_eq!(
            fs::read(root.join("proc/inside")).expect("tmpfs intact"),
            b"tmpfs data"
        );
        assert_eq!(
            fs::read(install.join("netboot/precious")).expect("bind source intact"),
            b"keep"
        );
        assert!(!root.join("usr").exists());
    }

    fn mount_child_top_is_mount_point(base: &Path) {
        let root = base.join("topmount/rootimg");
        fs::create_dir_all(&root).expect("mkdir");
        mount_tmpfs(&root, nix::mount::MsFlags::empty());
        fs::write(root.join("data"), b"d").expect("write");
        let out = remove_tree(&root, &never);
        assert_eq!(out.removed, 0, "{out:?}");
        assert_eq!(
            out.skipped,
            vec![Skipped {
                path: root.clone(),
                reason: SkipReason::OtherFilesystem
            }]
        );
        assert!(out.errors.is_empty(), "{out:?}");
        assert!(root.join("data").exists());
    }

    /// As root, errors are provoked with a read-only filesystem.
    fn mount_child_read_only(base: &Path) {
        let fsdir = base.join("ro");
        fs::create_dir_all(&fsdir).expect("mkdir");
        mount_tmpfs(&fsdir, nix::mount::MsFlags::empty());
        let root = fsdir.join("tree");
        fs::create_dir_all(root.join("sub")).expect("mkdir");
        fs::write(root.join("sub/f"), b"x").expect("write");
        nix::mount::mount(
            None::<&str>,
            &fsdir,
            None::<&str>,
            nix::mount::MsFlags::MS_REMOUNT | nix::mount::MsFlags::MS_RDONLY,
            Some("size=1m"),
        )
        .expect("remount read-only");
        let out = remove_tree(&root, &never);
        assert_eq!(out.removed, 0);
        let paths: Vec<&Path> = out.errors.iter().map(|e| e.path.as_path()).collect();
        assert_eq!(
            paths,
            vec![
                root.join("sub/f").as_path(),
                root.join("sub").as_path(),
                root.as_path()
            ],
            "{out:?}"
        );
        assert_eq!(out.errors[0].err.raw_os_error(), Some(nix::libc::EROFS));
        assert!(root.join("sub/f").exists());
    }
}
