//! Entries packimage adds to or replaces in the archive instead of editing the root tree.
//!
//! xCAT writes `/xcatpost`, `/opt/xcat/xcatinfo`, root's shadow line and more into `rootimg`
//! before packing; we put the same bytes into the stream, so the tree is never modified. This
//! module holds the overlay and merges it with the walked entries into the final member list:
//! sorted, parents present, stable inode numbers and hard-link groups assigned. It knows no xCAT table.

use super::entry::{Entry, HardLink, Kind, Source};
use super::walk::Walked;
use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap, HashSet};

/// How an overlay entry relates to what the tree has at its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Merge {
    /// Use the overlay entry as it is, whatever the tree has.
    Replace,
    /// New content for a file the tree has: keep the tree's mode, owner, xattrs and mtime
    /// (what `cp` onto an existing file or an in-place rewrite keeps). Used as given when the
    /// tree has no such file.
    KeepMetadata,
}

/// What to add to or replace in the archive.
#[derive(Debug, Default)]
pub struct Overlay {
    entries: BTreeMap<Vec<u8>, (Entry, Merge)>,
    /// Subtrees whose content in the tree is dropped entirely (e.g. `xcatpost`).
    replaced: Vec<Vec<u8>>,
    /// Paths to drop from the archive (e.g. a renamed-away backup).
    removed: Vec<Vec<u8>>,
}

impl Overlay {
    /// An empty overlay.
    pub fn new() -> Overlay {
        Overlay::default()
    }

    /// Adds or replaces one entry.
    pub fn put(&mut self, entry: Entry, merge: Merge) {
        self.entries.insert(entry.path.clone(), (entry, merge));
    }

    /// Drops everything the tree has at and below `path`; entries `put` below it stay.
    pub fn replace_subtree(&mut self, path: &[u8]) {
        self.replaced.push(path.to_vec());
    }

    /// Drops one path of the tree from the archive.
    pub fn remove(&mut self, path: &[u8]) {
        self.removed.push(path.to_vec());
    }

    /// The entries added so far, by path.
    pub fn get(&self, path: &[u8]) -> Option<&Entry> {
        self.entries.get(path).map(|(e, _)| e)
    }

    /// Number of entries the overlay adds or replaces.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the overlay is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.replaced.is_empty() && self.removed.is_empty()
    }

    fn hides(&self, path: &[u8]) -> bool {
        self.removed.iter().any(|r| r == path) || self.replaced.iter().any(|r| is_within(path, r))
    }
}

/// Whether `path` is `dir` or below it (whole components).
pub fn is_within(path: &[u8], dir: &[u8]) -> bool {
    dir.is_empty()
        || (path.starts_with(dir) && (path.len() == dir.len() || path[dir.len()] == b'/'))
}

/// Orders paths as a sorted depth-first walk visits them: component by component, each
/// compared as bytes. (Plain byte order would put `a-b` before `a/c`.)
pub fn walk_order(a: &[u8], b: &[u8]) -> Ordering {
    let mut x = a.split(|&c| c == b'/').filter(|c| !c.is_empty());
    let mut y = b.split(|&c| c == b'/').filter(|c| !c.is_empty());
    loop {
        match (x.next(), y.next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(p), Some(q)) => match p.cmp(q) {
                Ordering::Equal => {}
                o => return o,
            },
        }
    }
}

fn parent(path: &[u8]) -> Option<&[u8]> {
    if path.is_empty() {
        return None;
    }
    Some(
        path.iter()
            .rposition(|&c| c == b'/')
            .map_or(&path[..0], |i| &path[..i]),
    )
}

/// A directory entry for a parent that neither the tree nor the overlay provides.
fn synthetic_dir(path: &[u8], mtime: i64) -> Entry {
    Entry {
        path: path.to_vec(),
        kind: Kind::Dir,
        mode: 0o755,
        uid: 0,
        gid: 0,
        mtime,
        mtime_nsec: 0,
        xattrs: Vec::new(),
        hardlink: None,
        ino: 0,
        source: Source::None,
    }
}

/// Merges the walked tree with the overlay. `keep` decides overlay entries the same way it
/// decided walked ones (xCAT applies the exlist to what it wrote into the tree). Every selected
/// entry gets its parents: the tree's own directory (real metadata) when the selection left it
/// out, else a `0755 root` directory dated `now`. The result is in walk order, with inode
/// numbers from a hash of the path (see [`number`]) and hard-link groups counted among the
/// selected members only.
pub fn merge(
    walked: Walked,
    overlay: Overlay,
    keep: &mut dyn FnMut(&[u8]) -> bool,
    now: i64,
) -> Vec<Entry> {
    let Walked {
        entries,
        mut excluded_dirs,
        ..
    } = walked;
    let mut by_path: BTreeMap<Vec<u8>, Entry> = BTreeMap::new();
    let mut from_tree: HashMap<Vec<u8>, Entry> = HashMap::new();
    for e in entries {
        if overlay.hides(&e.path) {
            continue;
        }
        if overlay.entries.contains_key(&e.path) {
            from_tree.insert(e.path.clone(), e);
            continue;
        }
        by_path.insert(e.path.clone(), e);
    }
    for (path, (mut e, how)) in overlay.entries {
        if !keep(&super::walk::find_path(&path)) {
            continue;
        }
        if how == Merge::KeepMetadata {
            if let Some(old) = from_tree
                .get(&path)
                .filter(|o| matches!(o.kind, Kind::File { .. }))
            {
                e.mode = old.mode;
                e.uid = old.uid;
                e.gid = old.gid;
                e.xattrs = old.xattrs.clone();
                e.mtime = old.mtime;
                e.mtime_nsec = old.mtime_nsec;
            }
        }
        e.hardlink = None;
        by_path.insert(path, e);
    }
    // Parents: every ancestor of every entry must be a directory in the archive.
    let mut missing = Vec::new();
    for path in by_path.keys() {
        let mut p = parent(path);
        while let Some(dir) = p {
            if by_path.contains_key(dir) || missing.iter().any(|m: &Vec<u8>| m == dir) {
                break;
            }
            missing.push(dir.to_vec());
            p = parent(dir);
        }
    }
    for dir in missing {
        let e = excluded_dirs
            .remove(&dir)
            .unwrap_or_else(|| synthetic_dir(&dir, now));
        by_path.insert(dir, e);
    }
    let mut out: Vec<Entry> = by_path.into_values().collect();
    out.sort_by(|a, b| walk_order(&a.path, &b.path));
    number(&mut out);
    out
}

/// The inode number a path asks for: FNV-1a of the path, folded to the 32 bits cpio newc
/// stores, never 0.
fn wanted_ino(path: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in path {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let folded = (h ^ (h >> 32)) & 0xffff_ffff;
    folded.max(1)
}

/// Assigns inode numbers and turns provisional hard-link groups (keyed by disk inode) into
/// counted groups; a group with one selected member is a plain file.
///
/// Numbers come from a hash of the path (of the group's first path in archive order for a
/// hard-link group), not from the position: adding or removing an entry does not renumber
/// the others, so the archive bytes around an unrelated change stay the same and the
/// segment cache can reuse them. Two paths whose hashes collide are told apart by probing
/// upwards in archive order; that is the only case where one entry's number depends on
/// another's (with 100,000 entries in 2^32 numbers, about one pair per image).
fn number(entries: &mut [Entry]) {
    let mut members: HashMap<u64, u32> = HashMap::new();
    for e in entries.iter() {
        if let Some(h) = e.hardlink {
            *members.entry(h.group).or_default() += 1;
        }
    }
    let mut used: HashSet<u64> = HashSet::with_capacity(entries.len());
    let mut take = |path: &[u8]| {
        let mut ino = wanted_ino(path);
        while !used.insert(ino) {
            ino = if ino >= 0xffff_ffff { 1 } else { ino + 1 };
        }
        ino
    };
    let mut seen: HashMap<u64, (u64, u32)> = HashMap::new();
    for e in entries.iter_mut() {
        match e.hardlink {
            Some(h) if members[&h.group] > 1 => {
                let count = members[&h.group];
                let slot = seen.entry(h.group).or_insert_with(|| (take(&e.path), 0));
                e.ino = slot.0;
                e.hardlink = Some(HardLink {
                    group: slot.0,
                    count,
                    index: slot.1,
                });
                slot.1 += 1;
            }
            _ => {
                e.ino = take(&e.path);
                e.hardlink = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, ino: Option<u64>) -> Entry {
        Entry {
            path: path.as_bytes().to_vec(),
            kind: Kind::File { size: 1 },
            mode: 0o644,
            uid: 5,
            gid: 6,
            mtime: 100,
            mtime_nsec: 0,
            xattrs: vec![(b"user.x".to_vec(), b"1".to_vec())],
            hardlink: ino.map(|i| HardLink {
                group: i,
                count: 0,
                index: 0,
            }),
            ino: 0,
            source: Source::Bytes(b"x".to_vec()),
        }
    }

    fn dir(path: &str) -> Entry {
        Entry {
            kind: Kind::Dir,
            mode: 0o700,
            ..file(path, None)
        }
    }

    fn paths(v: &[Entry]) -> Vec<String> {
        v.iter()
            .map(|e| String::from_utf8_lossy(&e.path).into_owned())
            .collect()
    }

    #[test]
    fn order_is_component_wise() {
        let mut v = vec!["a/c", "a-b", "a", "", "a/b/c", "b"];
        v.sort_by(|a, b| walk_order(a.as_bytes(), b.as_bytes()));
        assert_eq!(v, ["", "a", "a/b/c", "a/c", "a-b", "b"]);
        assert!(is_within(b"a/b", b"a"));
        assert!(!is_within(b"ab", b"a"));
        assert!(is_within(b"a", b"a"));
        assert!(is_within(b"x", b""));
    }

    #[test]
    fn overlay_replaces_adds_parents_and_numbers() {
        let walked = Walked {
            entries: vec![
                dir(""),
                dir("etc"),
                file("etc/shadow", None),
                dir("xcatpost"),
                file("xcatpost/old", None),
                file("h1", Some(9)),
                file("h2", Some(9)),
                file("solo", Some(7)),
            ],
            excluded_dirs: BTreeMap::from([(b"opt".to_vec(), dir("opt"))]),
            ..Walked::default()
        };
        let mut o = Overlay::new();
        o.replace_subtree(b"xcatpost");
        o.put(
            Entry {
                mode: 0o600,
                uid: 0,
                gid: 0,
                xattrs: vec![],
                ..file("etc/shadow", None)
            },
            Merge::KeepMetadata,
        );
        o.put(file("xcatpost/new", None), Merge::Replace);
        o.put(file("opt/xcat/xcatinfo", None), Merge::Replace);
        let out = merge(walked, o, &mut |_| true, 42);
        assert_eq!(
            paths(&out),
            [
                "",
                "etc",
                "etc/shadow",
                "h1",
                "h2",
                "opt",
                "opt/xcat",
                "opt/xcat/xcatinfo",
                "solo",
                "xcatpost",
                "xcatpost/new"
            ]
        );
        let shadow = &out[2];
        assert_eq!(
            (shadow.mode, shadow.uid, shadow.xattrs.len()),
            (0o644, 5, 1),
            "tree metadata kept"
        );
        let opt = &out[5];
        assert_eq!(opt.mode, 0o700, "excluded parent keeps its real metadata");
        let optxcat = &out[6];
        assert_eq!(
            (optxcat.mode, optxcat.mtime, optxcat.uid),
            (0o755, 42, 0),
            "synthetic parent"
        );
        // The replaced subtree's own directory is gone too; its new child gets a synthetic one.
        assert!(out.iter().all(|e| e.path != b"xcatpost/old"));
        assert_eq!((out[9].mode, out[9].mtime), (0o755, 42));
        let (h1, h2) = (&out[3], &out[4]);
        assert_eq!(h1.ino, h2.ino);
        assert_eq!(
            h1.hardlink,
            Some(HardLink {
                group: h1.ino,
                count: 2,
                index: 0
            })
        );
        assert_eq!(
            h2.hardlink,
            Some(HardLink {
                group: h1.ino,
                count: 2,
                index: 1
            })
        );
        assert_eq!(out[8].hardlink, None, "a group of one is a plain file");
        let mut inos: Vec<u64> = out.iter().map(|e| e.ino).collect();
        inos.dedup();
        assert_eq!(inos.len(), out.len() - 1, "unique except the link pair");
    }

    #[test]
    fn inode_numbers_do_not_shift_when_an_entry_is_added() {
        let tree = |extra: bool| {
            let mut entries = vec![
                dir(""),
                file("a", Some(3)),
                file("b", None),
                file("c", Some(3)),
            ];
            if extra {
                entries.insert(1, file("0-new", None));
            }
            let walked = Walked {
                entries,
                ..Walked::default()
            };
            merge(walked, Overlay::new(), &mut |_| true, 0)
        };
        let ino = |v: &[Entry], p: &str| v.iter().find(|e| e.path == p.as_bytes()).unwrap().ino;
        let (before, after) = (tree(false), tree(true));
        for p in ["", "a", "b", "c"] {
            assert_eq!(ino(&before, p), ino(&after, p), "{p}");
        }
        assert_eq!(
            ino(&after, "a"),
            ino(&after, "c"),
            "a hard-link group shares one"
        );
        assert_eq!(
            ino(&after, "a"),
            wanted_ino(b"a"),
            "from the group's first path"
        );
        assert!(after.iter().all(|e| e.ino > 0 && e.ino <= 0xffff_ffff));
    }

    #[test]
    fn colliding_hashes_still_get_unique_numbers() {
        let mut v: Vec<Entry> = (0..5).map(|_| file("same", None)).collect();
        number(&mut v);
        let mut inos: Vec<u64> = v.iter().map(|e| e.ino).collect();
        assert_eq!(inos[0], wanted_ino(b"same"));
        inos.sort_unstable();
        inos.dedup();
        assert_eq!(inos.len(), 5);
    }

    #[test]
    fn overlay_entries_obey_the_selection() {
        let walked = Walked {
            entries: vec![dir("")],
            ..Walked::default()
        };
        let mut o = Overlay::new();
        o.put(file("opt/xcat/xcatinfo", None), Merge::Replace);
        let out = merge(walked, o, &mut |p| !p.starts_with(b"./opt"), 0);
        assert_eq!(paths(&out), [""]);
    }
}
