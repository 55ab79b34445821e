//! Walks a root tree the way `find . -xdev` does, sorted, and turns what it finds into entries.
//!
//! Symlinks are never followed, mounted filesystems are not entered (the mount point itself is
//! listed), and every path is offered to a selector before it becomes an [`Entry`]. Nothing here
//! knows exlists, injected files or archive formats.

use super::entry::{Entry, HardLink, Kind, Source};
use std::collections::BTreeMap;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// What the walk produced.
#[derive(Debug, Default)]
pub struct Walked {
    /// Selected entries in walk order (parents before children, siblings sorted by name).
    pub entries: Vec<Entry>,
    /// Directories the selector refused, by path: their real metadata, for when a selected
    /// descendant needs its parent in the archive.
    pub excluded_dirs: BTreeMap<Vec<u8>, Entry>,
    /// Sockets found (selected ones); archives cannot carry them.
    pub sockets: Vec<Vec<u8>>,
    /// Total size of the selected regular files.
    pub file_bytes: u64,
}

/// How a selector sees a path: `.` for the root, `./a/b` below it (what `find .` prints).
pub fn find_path(rel: &[u8]) -> Vec<u8> {
    if rel.is_empty() {
        b".".to_vec()
    } else {
        let mut p = Vec::with_capacity(rel.len() + 2);
        p.extend_from_slice(b"./");
        p.extend_from_slice(rel);
        p
    }
}

/// Walks `root`. `keep` gets each path in [`find_path`] form and says whether it is selected;
/// `cancelled` is polled per entry. An unreadable directory or entry is an error: an archive
/// that silently misses files is worse than none.
pub fn walk(
    root: &Path,
    keep: &mut dyn FnMut(&[u8]) -> bool,
    cancelled: &dyn Fn() -> bool,
) -> io::Result<Walked> {
    let mut out = Walked::default();
    let walker = walkdir::WalkDir::new(root)
        .follow_links(false)
        .same_file_system(true)
        .sort_by(|a, b| a.file_name().cmp(b.file_name()));
    for item in walker {
        if cancelled() {
            return Err(io::Error::new(io::ErrorKind::Interrupted, "interrupted"));
        }
        let item = item.map_err(|e| {
            let path = e
                .path()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| root.to_path_buf());
            let err = e
                .into_io_error()
                .unwrap_or_else(|| io::Error::other("filesystem loop"));
            io::Error::new(err.kind(), format!("{}: {err}", path.display()))
        })?;
        let rel = item
            .path()
            .strip_prefix(root)
            .map_err(|_| {
                io::Error::other(format!(
                    "{} is outside {}",
                    item.path().display(),
                    root.display()
                ))
            })?
            .as_os_str()
            .as_bytes()
            .to_vec();
        // The root is entered through a symlink if it is one (`cd rootimg; find .`), so its
        // entry describes the directory, not the link.
        let md = if item.depth() == 0 {
            std::fs::metadata(item.path())
        } else {
            std::fs::symlink_metadata(item.path())
        }
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", item.path().display())))?;
        let selected = keep(&find_path(&rel));
        let ft = md.file_type();
        if ft.is_socket() {
            if selected {
                out.sockets.push(rel);
            }
            continue;
        }
        if !selected && !ft.is_dir() {
            continue;
        }
        let entry = entry_for(item.path(), rel, &md)?;
        if selected {
            out.file_bytes += entry.size();
            out.entries.push(entry);
        } else {
            out.excluded_dirs.insert(entry.path.clone(), entry);
        }
    }
    Ok(out)
}

/// Builds the entry for one path from its `lstat` metadata and extended attributes. Only use
/// it for paths of one filesystem per archive: hard links are recognised by inode number.
pub fn entry_for(path: &Path, rel: Vec<u8>, md: &std::fs::Metadata) -> io::Result<Entry> {
    let ft = md.file_type();
    let rdev = md.rdev();
    let dev = || {
        (
            nix::sys::stat::major(rdev) as u32,
            nix::sys::stat::minor(rdev) as u32,
        )
    };
    let (kind, source) = if ft.is_file() {
        (
            Kind::File { size: md.len() },
            Source::Disk(PathBuf::from(path)),
        )
    } else if ft.is_dir() {
        (Kind::Dir, Source::None)
    } else if ft.is_symlink() {
        let target = std::fs::read_link(path)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        (
            Kind::Symlink {
                target: target.as_os_str().as_bytes().to_vec(),
            },
            Source::None,
        )
    } else if ft.is_char_device() {
        let (major, minor) = dev();
        (Kind::CharDev { major, minor }, Source::None)
    } else if ft.is_block_device() {
        let (major, minor) = dev();
        (Kind::BlockDev { major, minor }, Source::None)
    } else if ft.is_fifo() {
        (Kind::Fifo, Source::None)
    } else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: unsupported file type", path.display()),
        ));
    };
    Ok(Entry {
        path: rel,
        kind,
        mode: md.mode() & 0o7777,
        uid: md.uid(),
        gid: md.gid(),
        mtime: md.mtime(),
        mtime_nsec: md.mtime_nsec().clamp(0, 999_999_999) as u32,
        xattrs: read_xattrs(path)?,
        // Provisional: the group is the disk inode; `finish` counts the selected members,
        // drops groups of one and renumbers.
        hardlink: (ft.is_file() && md.nlink() > 1).then_some(HardLink {
            group: md.ino(),
            count: 0,
            index: 0,
        }),
        ino: 0,
        source,
    })
}

/// Extended attributes of `path` (not following a symlink), sorted by name.
pub fn read_xattrs(path: &Path) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let names = match xattr::list(path) {
        Ok(n) => n,
        // Filesystems without xattr support simply have none.
        Err(e) if e.raw_os_error() == Some(nix::libc::ENOTSUP) => return Ok(Vec::new()),
        Err(e) => {
            return Err(io::Error::new(
                e.kind(),
                format!("{}: listing xattrs: {e}", path.display()),
            ))
        }
    };
    let mut out = Vec::new();
    for name in names {
        match xattr::get(path, &name) {
            Ok(Some(v)) => out.push((name.as_bytes().to_vec(), v)),
            Ok(None) => {}
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!(
                        "{}: reading xattr {}: {e}",
                        path.display(),
                        name.to_string_lossy()
                    ),
                ))
            }
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_symlinked_root_is_walked_as_its_directory() {
        let t = tempfile::tempdir().unwrap();
        let real = t.path().join("real");
        std::fs::create_dir_all(real.join("etc")).unwrap();
        std::fs::write(real.join("etc/f"), "x").unwrap();
        std::os::unix::fs::symlink("etc/f", real.join("link")).unwrap();
        let root = t.path().join("rootimg");
        std::os::unix::fs::symlink(&real, &root).unwrap();
        let w = walk(&root, &mut |_| true, &|| false).unwrap();
        let kinds: Vec<(String, bool)> = w
            .entries
            .iter()
            .map(|e| {
                (
                    String::from_utf8_lossy(&e.path).into_owned(),
                    matches!(e.kind, Kind::Dir),
                )
            })
            .collect();
        assert_eq!(
            kinds,
            [
                ("".to_string(), true),
                ("etc".into(), true),
                ("etc/f".into(), false),
                ("link".into(), false)
            ]
        );
        assert!(matches!(&w.entries[3].kind, Kind::Symlink { target } if target == b"etc/f"));
    }

    #[test]
    fn selection_and_sockets() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("a/b")).unwrap();
        std::fs::write(t.path().join("a/b/f"), "x").unwrap();
        let _s = std::os::unix::net::UnixListener::bind(t.path().join("sock")).unwrap();
        let mut seen = Vec::new();
        let w = walk(
            t.path(),
            &mut |p| {
                seen.push(String::from_utf8_lossy(p).into_owned());
                p != b"./a"
            },
            &|| false,
        )
        .unwrap();
        assert_eq!(seen, [".", "./a", "./a/b", "./a/b/f", "./sock"]);
        assert!(w.excluded_dirs.contains_key(b"a".as_slice()));
        assert_eq!(w.sockets, vec![b"sock".to_vec()]);
        assert_eq!(w.file_bytes, 1);
        assert!(walk(t.path(), &mut |_| true, &|| true).is_err(), "cancel");
    }
}
