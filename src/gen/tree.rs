//! Files inside an image tree, written and read without ever leaving it.
//!
//! Every path is relative to the tree's root and resolved with `openat2(RESOLVE_IN_ROOT)`: a
//! symlink in the image (`/etc/resolv.conf -> /run/systemd/...`, `/lib -> usr/lib`, or a
//! hostile `../../..`) resolves inside the image, never on the host. The last component is
//! never followed: writing replaces a symlink instead of writing through it (xCAT opens such
//! paths with Perl's `open` and follows them, onto the build host if the link is absolute).
//! Writes go to a temp file in the same directory and are renamed into place.
//!
//! It knows nothing of packages, tables or the host.

use nix::errno::Errno;
use nix::fcntl::{openat, openat2, renameat, AtFlags, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fchmod, fstatat, mkdirat, mknodat, FileStat, Mode, SFlag};
use nix::unistd::{symlinkat, unlinkat, UnlinkatFlags};
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

/// An image tree opened at its root.
#[derive(Debug)]
pub struct Tree {
    root: PathBuf,
    fd: OwnedFd,
}

/// The kind of an entry, as `lstat` sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
    /// A character device.
    CharDev,
    /// Anything else.
    Other,
}

fn kind_of(st: &FileStat) -> Kind {
    match st.st_mode & nix::libc::S_IFMT {
        nix::libc::S_IFREG => Kind::File,
        nix::libc::S_IFDIR => Kind::Dir,
        nix::libc::S_IFLNK => Kind::Symlink,
        nix::libc::S_IFCHR => Kind::CharDev,
        _ => Kind::Other,
    }
}

fn invalid(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg.to_string())
}

/// Splits `rel` into its parent (relative, maybe empty) and last name; refuses absolute
/// paths, `.`/`..` components and an empty name.
fn split(rel: &Path) -> io::Result<(PathBuf, &OsStr)> {
    let mut parent = PathBuf::new();
    let mut name = None;
    for c in rel.components() {
        match c {
            Component::Normal(n) => {
                if let Some(prev) = name.replace(n) {
                    parent.push(prev);
                }
            }
            Component::CurDir => {}
            _ => return Err(invalid("image paths must be relative, without ..")),
        }
    }
    let name = name.ok_or_else(|| invalid("empty image path"))?;
    Ok((parent, name))
}

impl Tree {
    /// Opens the tree rooted at `root` (which must be a directory).
    pub fn open(root: &Path) -> io::Result<Tree> {
        let fd = nix::fcntl::open(
            root,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| {
            io::Error::new(
                io::Error::from(e).kind(),
                format!("{}: {e}", root.display()),
            )
        })?;
        Ok(Tree {
            root: root.to_path_buf(),
            fd,
        })
    }

    /// The root as opened.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `root/rel`, for messages.
    pub fn shown(&self, rel: &str) -> String {
        self.root.join(rel).display().to_string()
    }

    fn ctx(&self, rel: &Path, e: impl Into<io::Error>) -> io::Error {
        let e: io::Error = e.into();
        io::Error::new(e.kind(), format!("{}: {e}", self.root.join(rel).display()))
    }

    /// Opens a directory of the tree (resolved inside it).
    pub fn open_dir(&self, rel: &Path) -> io::Result<OwnedFd> {
        let target: &Path = if rel.as_os_str().is_empty() {
            Path::new(".")
        } else {
            rel
        };
        let how = OpenHow::new()
            .flags(OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
        openat2(&self.fd, target, how).map_err(|e| self.ctx(rel, e))
    }

    fn parent(&self, rel: &Path) -> io::Result<(OwnedFd, PathBuf, std::ffi::OsString)> {
        let (parent, name) = split(rel)?;
        let name = name.to_os_string();
        Ok((self.open_dir(&parent)?, parent, name))
    }

    /// What is at `rel` (the last component not followed), or `None`.
    pub fn lstat(&self, rel: &str) -> io::Result<Option<(Kind, FileStat)>> {
        let rel = Path::new(rel);
        let (dir, _, name) = match self.parent(rel) {
            Ok(p) => p,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        match fstatat(&dir, name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some((kind_of(&st), st))),
            Err(Errno::ENOENT) => Ok(None),
            Err(e) => Err(self.ctx(rel, e)),
        }
    }

    /// The kind of `rel`, or `None` when absent.
    pub fn kind(&self, rel: &str) -> io::Result<Option<Kind>> {
        Ok(self.lstat(rel)?.map(|(k, _)| k))
    }

    /// Whether `rel` is a directory (following symlinks inside the tree).
    pub fn is_dir(&self, rel: &str) -> bool {
        self.open_dir(Path::new(rel)).is_ok()
    }

    /// Opens a file for reading, resolved inside the tree (symlinks followed, inside).
    pub fn open_file(&self, rel: &str) -> io::Result<File> {
        let how = OpenHow::new()
            .flags(OFlag::O_RDONLY | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
        openat2(&self.fd, Path::new(rel), how)
            .map(File::from)
            .map_err(|e| self.ctx(Path::new(rel), e))
    }

    /// Reads a whole file; `None` when it is absent.
    pub fn read(&self, rel: &str) -> io::Result<Option<Vec<u8>>> {
        match self.open_file(rel) {
            Ok(mut f) => {
                let mut v = Vec::new();
                f.read_to_end(&mut v)?;
                Ok(Some(v))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Creates a directory and its missing parents (each `mode`), inside the tree.
    pub fn mkdir_all(&self, rel: &str, mode: u32) -> io::Result<()> {
        let mut cur = PathBuf::new();
        for c in Path::new(rel).components() {
            let Component::Normal(n) = c else {
                return Err(invalid("image paths must be relative, without .."));
            };
            let dir = self.open_dir(&cur)?;
            match mkdirat(&dir, n, Mode::from_bits_truncate(mode)) {
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(e) => return Err(self.ctx(&cur.join(n), e)),
            }
            cur.push(n);
        }
        // The result must be a directory inside the tree (not a file, not a dangling link).
        self.open_dir(&cur).map(drop)
    }

    /// Writes `data` to `rel` atomically with exactly `mode` (a symlink there is replaced, not
    /// followed). The parent directory must exist.
    pub fn write(&self, rel: &str, data: &[u8], mode: u32) -> io::Result<()> {
        let relp = Path::new(rel);
        let (dir, _, name) = self.parent(relp)?;
        let tmp = format!(
            ".{}.xcat-imaged.{}.tmp",
            name.to_string_lossy(),
            std::process::id()
        );
        let _ = unlinkat(&dir, tmp.as_str(), UnlinkatFlags::NoRemoveDir);
        let fd = openat(
            &dir,
            tmp.as_str(),
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o600),
        )
        .map_err(|e| self.ctx(relp, e))?;
        let mut f = File::from(fd);
        let res = f
            .write_all(data)
            .and_then(|()| fchmod(&f, Mode::from_bits_truncate(mode)).map_err(io::Error::from))
            .and_then(|()| {
                renameat(&dir, tmp.as_str(), &dir, name.as_os_str()).map_err(io::Error::from)
            });
        if let Err(e) = res {
            let _ = unlinkat(&dir, tmp.as_str(), UnlinkatFlags::NoRemoveDir);
            return Err(self.ctx(relp, e));
        }
        Ok(())
    }

    /// Appends to a file (creating it with `mode`): read, extend, write atomically.
    pub fn append(&self, rel: &str, data: &[u8], mode: u32) -> io::Result<()> {
        let (mut old, mode) = match self.lstat(rel)? {
            Some((Kind::File, st)) => (self.read(rel)?.unwrap_or_default(), st.st_mode & 0o7777),
            _ => (Vec::new(), mode),
        };
        old.extend_from_slice(data);
        self.write(rel, &old, mode)
    }

    /// Copies a host file into the tree with `mode`.
    pub fn copy_in(&self, src: &Path, rel: &str, mode: u32) -> io::Result<()> {
        let data = std::fs::read(src)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", src.display())))?;
        self.write(rel, &data, mode)
    }

    /// Removes a file, symlink or device at `rel` (never a directory); true if it was there.
    pub fn remove(&self, rel: &str) -> io::Result<bool> {
        let relp = Path::new(rel);
        let (dir, _, name) = match self.parent(relp) {
            Ok(p) => p,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        };
        match unlinkat(&dir, name.as_os_str(), UnlinkatFlags::NoRemoveDir) {
            Ok(()) => Ok(true),
            Err(Errno::ENOENT) => Ok(false),
            Err(e) => Err(self.ctx(relp, e)),
        }
    }

    /// Removes an empty directory at `rel`; true if it was removed.
    pub fn rmdir(&self, rel: &str) -> io::Result<bool> {
        let relp = Path::new(rel);
        let (dir, _, name) = match self.parent(relp) {
            Ok(p) => p,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        };
        match unlinkat(&dir, name.as_os_str(), UnlinkatFlags::RemoveDir) {
            Ok(()) => Ok(true),
            Err(Errno::ENOENT) | Err(Errno::ENOTEMPTY) | Err(Errno::EEXIST) => Ok(false),
            Err(e) => Err(self.ctx(relp, e)),
        }
    }

    /// Makes `rel` a symlink to `target`, replacing a file or link there.
    pub fn symlink(&self, target: &str, rel: &str) -> io::Result<()> {
        let relp = Path::new(rel);
        let (dir, _, name) = self.parent(relp)?;
        let tmp = format!(
            ".{}.xcat-imaged.{}.lnk",
            name.to_string_lossy(),
            std::process::id()
        );
        let _ = unlinkat(&dir, tmp.as_str(), UnlinkatFlags::NoRemoveDir);
        symlinkat(target, &dir, tmp.as_str()).map_err(|e| self.ctx(relp, e))?;
        renameat(&dir, tmp.as_str(), &dir, name.as_os_str()).map_err(|e| {
            let _ = unlinkat(&dir, tmp.as_str(), UnlinkatFlags::NoRemoveDir);
            self.ctx(relp, e)
        })
    }

    /// Makes `rel` a character device (replacing what is there unless it already is one).
    pub fn char_device(&self, rel: &str, mode: u32, major: u64, minor: u64) -> io::Result<()> {
        let want = nix::sys::stat::makedev(major, minor);
        if let Some((Kind::CharDev, st)) = self.lstat(rel)? {
            if st.st_rdev == want {
                return Ok(());
            }
        }
        let relp = Path::new(rel);
        let (dir, _, name) = self.parent(relp)?;
        match unlinkat(&dir, name.as_os_str(), UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => {}
            Err(e) => return Err(self.ctx(relp, e)),
        }
        mknodat(
            &dir,
            name.as_os_str(),
            SFlag::S_IFCHR,
            Mode::from_bits_truncate(mode),
            want,
        )
        .map_err(|e| self.ctx(relp, e))?;
        nix::sys::stat::fchmodat(
            &dir,
            name.as_os_str(),
            Mode::from_bits_truncate(mode),
            nix::sys::stat::FchmodatFlags::NoFollowSymlink,
        )
        .or_else(|e| {
            // Some kernels refuse AT_SYMLINK_NOFOLLOW for fchmodat; the node is ours.
            if e == Errno::EOPNOTSUPP || e == Errno::EINVAL {
                nix::sys::stat::fchmodat(
                    &dir,
                    name.as_os_str(),
                    Mode::from_bits_truncate(mode),
                    nix::sys::stat::FchmodatFlags::FollowSymlink,
                )
            } else {
                Err(e)
            }
        })
        .map_err(|e| self.ctx(relp, e))
    }

    /// The names in a directory of the tree, sorted; empty when it is absent.
    pub fn list(&self, rel: &str) -> io::Result<Vec<String>> {
        let fd = match self.open_dir(Path::new(rel)) {
            Ok(fd) => fd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut dir = nix::dir::Dir::from_fd(fd).map_err(io::Error::from)?;
        let mut names = Vec::new();
        for e in dir.iter() {
            let e = e.map_err(io::Error::from)?;
            let n = e.file_name().to_bytes();
            if n == b"." || n == b".." {
                continue;
            }
            names.push(String::from_utf8_lossy(OsStr::from_bytes(n).as_bytes()).into_owned());
        }
        names.sort();
        Ok(names)
    }

    /// Whether any path component of `rel` (the last included) is a symlink or not there;
    /// mount points must be plain directories or files of the image.
    pub fn plain_path(&self, rel: &str) -> io::Result<bool> {
        let mut cur = PathBuf::new();
        for c in Path::new(rel).components() {
            let Component::Normal(n) = c else {
                return Err(invalid("image paths must be relative, without .."));
            };
            cur.push(n);
            match self.kind(&cur.to_string_lossy())? {
                None | Some(Kind::Symlink) => return Ok(false),
                Some(_) => {}
            }
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_resolve_inside_the_tree() {
        let host = tempfile::tempdir().unwrap();
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        std::fs::create_dir_all(r.join("etc")).unwrap();
        std::fs::create_dir_all(r.join("run/target")).unwrap();
        // An absolute link to a host path, and an escaping relative one.
        let victim = host.path().join("victim");
        std::fs::write(&victim, "host file\n").unwrap();
        std::os::unix::fs::symlink(&victim, r.join("etc/resolv.conf")).unwrap();
        std::os::unix::fs::symlink("../../../../../../../../..", r.join("up")).unwrap();
        std::os::unix::fs::symlink("/run/target", r.join("abs")).unwrap();
        let tree = Tree::open(r).unwrap();

        tree.write("etc/resolv.conf", b"#Dummy\n", 0o644).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "host file\n");
        assert_eq!(tree.kind("etc/resolv.conf").unwrap(), Some(Kind::File));

        // Through "up" we stay at the image root; through "abs" inside the image.
        tree.write("up/escaped", b"x", 0o600).unwrap();
        assert!(r.join("escaped").is_file());
        tree.write("abs/inside", b"y", 0o600).unwrap();
        assert!(r.join("run/target/inside").is_file());
        assert!(tree.write("../x", b"", 0o600).is_err());
        assert!(tree.write("/etc/x", b"", 0o600).is_err());
    }

    #[test]
    fn write_append_remove_symlink_list() {
        let t = tempfile::tempdir().unwrap();
        let tree = Tree::open(t.path()).unwrap();
        tree.mkdir_all("etc/network", 0o755).unwrap();
        assert!(tree.is_dir("etc/network"));
        tree.write("etc/a", b"one\n", 0o640).unwrap();
        tree.append("etc/a", b"two\n", 0o600).unwrap();
        assert_eq!(tree.read("etc/a").unwrap().unwrap(), b"one\ntwo\n");
        let (_, st) = tree.lstat("etc/a").unwrap().unwrap();
        assert_eq!(st.st_mode & 0o7777, 0o640, "append keeps the mode");
        tree.symlink("../init.d/x", "etc/link").unwrap();
        tree.symlink("../init.d/y", "etc/link").unwrap();
        assert_eq!(
            std::fs::read_link(t.path().join("etc/link")).unwrap(),
            PathBuf::from("../init.d/y")
        );
        assert_eq!(tree.list("etc").unwrap(), ["a", "link", "network"]);
        assert!(tree.remove("etc/link").unwrap());
        assert!(!tree.remove("etc/link").unwrap());
        assert!(tree.remove("etc/network").is_err(), "never a directory");
        assert_eq!(tree.read("etc/none").unwrap(), None);
        assert!(tree.plain_path("etc/a").unwrap());
        std::os::unix::fs::symlink("etc", t.path().join("e")).unwrap();
        assert!(!tree.plain_path("e/a").unwrap());
    }

    #[test]
    fn devices() {
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        let t = tempfile::tempdir().unwrap();
        let tree = Tree::open(t.path()).unwrap();
        tree.mkdir_all("dev", 0o755).unwrap();
        std::fs::write(t.path().join("dev/null"), "not a device").unwrap();
        tree.char_device("dev/null", 0o666, 1, 3).unwrap();
        let (k, st) = tree.lstat("dev/null").unwrap().unwrap();
        assert_eq!(k, Kind::CharDev);
        assert_eq!(st.st_mode & 0o777, 0o666);
    }
}
