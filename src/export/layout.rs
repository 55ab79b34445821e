//! Where each file goes inside a bundle's image directory, so that xCAT's imgimport puts it
//! back where it came from, and what to do when two files would get the same place.
//!
//! imgimport restores the files named in the manifest (kernel, ramdisk, rootimg, rootimgtree,
//! litefile, then template, pkglist, synclists, otherpkglist, postinstall, exlist) by
//! *moving* `<imagedir>/<basename>` to each path in turn. Two paths with one basename (or one
//! path named twice) therefore lose files. The only encoding the real importer restores is
//! this: the first occurrence, in the importer's order, stays flat; every later one becomes a
//! directory-style extra `{dest: D, src: D}` whose payload is `extra/<D without its leading
//! />/<basename>`, D being the file's directory (imgimport then runs `cp -a extra/D/* D`).
//! A basename that would shadow `manifest.xml`, `extra`, a kit directory or a raw image is
//! relocated the same way.
//!
//! [`Names`] is the registry of paths already taken (files and directories, relative to the
//! image directory); every claim that would overwrite or shadow another is refused with both
//! owners named, so no bundle silently loses a file. This module knows nothing of tables,
//! hosts or the archive format: it works on path strings.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What holds a path.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Slot {
    /// A directory (explicitly claimed or the parent of a claimed path), with its first owner.
    Dir(String),
    /// A file with its owner and, for payload files, its source on disk.
    File(String, Option<PathBuf>),
}

/// The outcome of a successful file claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// The path was free; it now carries this file.
    New,
    /// The same source file already sits at this path: no second payload is needed.
    Same,
}

/// Paths taken inside the image directory.
#[derive(Debug, Default)]
pub struct Names {
    slots: BTreeMap<Vec<u8>, Slot>,
}

/// The proper ancestors of `p` (`a/b/c` → `a`, `a/b`).
fn ancestors(p: &[u8]) -> impl Iterator<Item = &[u8]> {
    p.iter()
        .enumerate()
        .filter(|&(_, &c)| c == b'/')
        .map(move |(i, _)| &p[..i])
}

fn owner_of(slot: &Slot) -> &str {
    match slot {
        Slot::Dir(o) | Slot::File(o, _) => o,
    }
}

fn shown(p: &[u8]) -> String {
    String::from_utf8_lossy(p).into_owned()
}

impl Names {
    /// An empty registry.
    pub fn new() -> Names {
        Names::default()
    }

    /// Whether `p` is taken by anything.
    pub fn is_taken(&self, p: &[u8]) -> bool {
        self.slots.contains_key(p)
    }

    /// Checks that `p`'s ancestors are not files; records them as directories.
    fn claim_parents(&mut self, p: &[u8], owner: &str) -> Result<(), String> {
        for a in ancestors(p) {
            if let Some(Slot::File(o, _)) = self.slots.get(a) {
                return Err(format!(
                    "{owner} needs {}/ to be a directory, but {o} is stored there as a file",
                    shown(a)
                ));
            }
        }
        for a in ancestors(p) {
            self.slots
                .entry(a.to_vec())
                .or_insert_with(|| Slot::Dir(owner.to_string()));
        }
        Ok(())
    }

    /// Takes `p` for a file of `owner` (a description for messages) read from `source`.
    pub fn claim_file(
        &mut self,
        p: &[u8],
        owner: &str,
        source: Option<&Path>,
    ) -> Result<Claim, String> {
        match self.slots.get(p) {
            Some(Slot::File(_, Some(s))) if source == Some(s.as_path()) => return Ok(Claim::Same),
            Some(slot) => {
                return Err(format!(
                    "{owner} and {} would both be stored as {}",
                    owner_of(slot),
                    shown(p)
                ))
            }
            None => {}
        }
        self.claim_parents(p, owner)?;
        self.slots.insert(
            p.to_vec(),
            Slot::File(owner.to_string(), source.map(Path::to_path_buf)),
        );
        Ok(Claim::New)
    }

    /// Takes `p` as a directory (claiming a directory twice is fine).
    pub fn claim_dir(&mut self, p: &[u8], owner: &str) -> Result<(), String> {
        if let Some(Slot::File(o, _)) = self.slots.get(p) {
            return Err(format!(
                "{owner} needs {}/ to be a directory, but {o} is stored there as a file",
                shown(p)
            ));
        }
        self.claim_parents(p, owner)?;
        self.slots
            .entry(p.to_vec())
            .or_insert_with(|| Slot::Dir(owner.to_string()));
        Ok(())
    }
}

/// `File::Basename::basename` on a Unix path: trailing slashes dropped, then the part after
/// the last `/`.
pub fn basename(p: &str) -> &str {
    let t = p.trim_end_matches('/');
    if t.is_empty() {
        return if p.is_empty() { "" } else { "/" };
    }
    t.rsplit('/').next().unwrap_or(t)
}

/// `File::Basename::dirname` on a Unix path (`/a/b` → `/a`, `/a` → `/`, `a` → `.`).
pub fn dirname(p: &str) -> String {
    let t = p.trim_end_matches('/');
    if t.is_empty() {
        return if p.is_empty() { ".".into() } else { "/".into() };
    }
    match t.rfind('/') {
        None => ".".into(),
        Some(i) => {
            let d = t[..i].trim_end_matches('/');
            if d.is_empty() {
                "/".into()
            } else {
                d.into()
            }
        }
    }
}

/// `p` without repeated slashes, `.` components and a trailing slash; `None` when it is not
/// absolute or has a `..` component (imgimport would resolve that through the bundle).
pub fn normalize_abs(p: &str) -> Option<String> {
    if !p.starts_with('/') {
        return None;
    }
    let mut out = String::with_capacity(p.len());
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => return None,
            c => {
                out.push('/');
                out.push_str(c);
            }
        }
    }
    if out.is_empty() {
        out.push('/');
    }
    Some(out)
}

/// The member path (relative to the image directory) of a directory extra's payload root:
/// `extra/<dir without its leading />`.
pub fn extra_dir_member(dir: &str) -> Vec<u8> {
    let mut m = b"extra".to_vec();
    for c in dir.split('/').filter(|c| !c.is_empty()) {
        m.push(b'/');
        m.extend_from_slice(c.as_bytes());
    }
    m
}

/// One file the manifest references, in the order imgimport restores them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Referenced {
    /// What names it, for messages (e.g. `linuximage.pkglist`).
    pub what: String,
    /// The path as the manifest holds it: where imgimport puts the file.
    pub target: String,
    /// Where it is read from.
    pub source: PathBuf,
}

/// Where a referenced file went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placed {
    /// Index into the list given to [`place`].
    pub index: usize,
    /// Member path relative to the image directory.
    pub member: Vec<u8>,
    /// False when the same source is already stored at that member (nothing more to write).
    pub payload: bool,
}

/// The placement of all referenced files.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Placement {
    /// Every referenced file, in the given order.
    pub placed: Vec<Placed>,
    /// Directories of relocated files, in order of first use: each becomes the extra
    /// `{dest: D, src: D}`.
    pub relocated_dirs: Vec<String>,
}

/// Places `files` (in imgimport's order) into `names`: flat by basename when that is free,
/// else relocated as described in the module documentation.
pub fn place(names: &mut Names, files: &[Referenced]) -> Result<Placement, String> {
    let mut out = Placement::default();
    for (index, f) in files.iter().enumerate() {
        let base = basename(&f.target);
        if base.is_empty() || base == "." || base == ".." || base == "/" {
            return Err(format!(
                "{} {} has no file name imgimport could restore",
                f.what, f.target
            ));
        }
        let owner = format!("{} {}", f.what, f.target);
        // Flat, unless the name is taken (even by the same file: imgimport would then move
        // the first copy away as .ORIG and restore nothing).
        if !names.is_taken(base.as_bytes()) {
            names.claim_file(base.as_bytes(), &owner, Some(&f.source))?;
            out.placed.push(Placed {
                index,
                member: base.as_bytes().to_vec(),
                payload: true,
            });
            continue;
        }
        let dir = normalize_abs(&dirname(&f.target)).ok_or_else(|| {
            format!(
                "{owner} has the same file name as another file of the bundle and is not an absolute path, so imgimport could not restore both"
            )
        })?;
        if dir == "/" {
            return Err(format!(
                "{owner} has the same file name as another file of the bundle; a file in / cannot be carried the way imgimport restores such files"
            ));
        }
        let mut member = extra_dir_member(&dir);
        member.push(b'/');
        member.extend_from_slice(base.as_bytes());
        let claim = names.claim_file(&member, &owner, Some(&f.source))?;
        if !out.relocated_dirs.contains(&dir) {
            out.relocated_dirs.push(dir);
        }
        out.placed.push(Placed {
            index,
            member,
            payload: claim == Claim::New,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(what: &str, target: &str) -> Referenced {
        Referenced {
            what: what.into(),
            target: target.into(),
            source: PathBuf::from(target),
        }
    }

    #[test]
    fn perl_basename_and_dirname() {
        for (p, b, d) in [
            ("/a/b", "b", "/a"),
            ("/a/b/", "b", "/a"),
            ("/a", "a", "/"),
            ("a", "a", "."),
            ("a/b", "b", "a"),
            ("/", "/", "/"),
            ("//a//b", "b", "//a"),
            ("", "", "."),
        ] {
            assert_eq!(basename(p), b, "basename {p}");
            if p != "//a//b" {
                assert_eq!(dirname(p), d, "dirname {p}");
            }
        }
        assert_eq!(dirname("//a//b"), "//a");
    }

    #[test]
    fn normalizing() {
        assert_eq!(
            normalize_abs("/srv//my/./dir/").as_deref(),
            Some("/srv/my/dir")
        );
        assert_eq!(normalize_abs("/").as_deref(), Some("/"));
        assert_eq!(normalize_abs("rel/x"), None);
        assert_eq!(normalize_abs("/a/../b"), None);
        assert_eq!(extra_dir_member("/srv/mydir"), b"extra/srv/mydir");
    }

    #[test]
    fn names_refuse_overlaps() {
        let mut n = Names::new();
        n.claim_file(b"manifest.xml", "the manifest", None).unwrap();
        assert!(n
            .claim_file(
                b"manifest.xml",
                "pkglist /x/manifest.xml",
                Some(Path::new("/x/manifest.xml"))
            )
            .is_err());
        n.claim_dir(b"extra", "extras").unwrap();
        n.claim_dir(b"extra", "extras").unwrap();
        assert!(n.claim_file(b"extra", "file extra", None).is_err());
        n.claim_file(b"extra/srv", "extra /a/srv", Some(Path::new("/a/srv")))
            .unwrap();
        let e = n
            .claim_dir(b"extra/srv/mydir", "extra /srv/mydir")
            .unwrap_err();
        assert!(e.contains("extra /a/srv"), "{e}");
        assert_eq!(
            n.claim_file(b"extra/srv", "again", Some(Path::new("/a/srv"))),
            Ok(Claim::Same)
        );
        n.claim_file(b"k/a/b", "kit k", Some(Path::new("/k/a/b")))
            .unwrap();
        assert!(
            n.claim_file(b"k/a", "x", None).is_err(),
            "a directory is not a file"
        );
    }

    #[test]
    fn collisions_become_directory_extras() {
        let mut n = Names::new();
        n.claim_file(b"manifest.xml", "the manifest", None).unwrap();
        n.claim_dir(b"extra", "extras").unwrap();
        let files = [
            r("kernel", "/install/netboot/x/kernel"),
            r("linuximage.pkglist", "/opt/a/compute.pkglist"),
            r("linuximage.pkglist", "/opt/b/compute.pkglist"),
            r("linuximage.otherpkglist", "/opt/a/compute.pkglist"),
            r("linuximage.exlist", "/opt/b/compute.pkglist"),
            r("linuximage.postinstall", "/opt/c/manifest.xml"),
        ];
        let p = place(&mut n, &files).unwrap();
        let members: Vec<(usize, String, bool)> = p
            .placed
            .iter()
            .map(|x| {
                (
                    x.index,
                    String::from_utf8_lossy(&x.member).into_owned(),
                    x.payload,
                )
            })
            .collect();
        assert_eq!(
            members,
            [
                (0, "kernel".to_string(), true),
                (1, "compute.pkglist".to_string(), true),
                (2, "extra/opt/b/compute.pkglist".to_string(), true),
                (3, "extra/opt/a/compute.pkglist".to_string(), true),
                (4, "extra/opt/b/compute.pkglist".to_string(), false),
                (5, "extra/opt/c/manifest.xml".to_string(), true),
            ]
        );
        assert_eq!(p.relocated_dirs, ["/opt/b", "/opt/a", "/opt/c"]);
    }

    #[test]
    fn impossible_relocations_fail() {
        let mut n = Names::new();
        let e = place(&mut n, &[r("a", "/x.pkglist"), r("b", "/x.pkglist")]).unwrap_err();
        assert!(e.contains("cannot be carried"), "{e}");
        let mut n = Names::new();
        let e = place(&mut n, &[r("a", "x.pkglist"), r("b", "y/x.pkglist")]).unwrap_err();
        assert!(e.contains("not an absolute path"), "{e}");
        let mut n = Names::new();
        n.claim_file(
            b"extra/opt",
            "extra /home/opt",
            Some(Path::new("/home/opt")),
        )
        .unwrap();
        let e = place(&mut n, &[r("a", "/opt/x/l"), r("b", "/opt/y/l")]).unwrap_err();
        assert!(e.contains("extra /home/opt"), "{e}");
        let mut n = Names::new();
        assert!(
            place(&mut n, &[r("a", "/opt/")]).is_ok(),
            "basename of a directory path"
        );
        assert!(place(&mut Names::new(), &[r("a", "")]).is_err());
    }
}
