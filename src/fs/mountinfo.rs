//! Parses `/proc/self/mountinfo` into typed records and finds the mounts below a directory.
//!
//! It knows the kernel's text format only; it never knows xCAT tables, the host or the protocol,
//! and it never mounts or unmounts anything.
//!
//! Each line has the form (see proc(5)):
//!
//! ```text
//! 36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
//! (1)(2)(3)   (4)   (5)      (6)      (7)   (8) (9)   (10)         (11)
//! ```
//!
//! The kernel escapes space, tab, newline and backslash in paths as `\ooo` octal; those escapes
//! are decoded here, and paths are kept as raw bytes so a non-UTF-8 name survives intact. Unlike
//! xCAT's rmimage, which splits `/proc/mounts` on spaces and compares undecoded strings by prefix,
//! [`under`] compares whole path components.

use std::ffi::OsString;
use std::fmt;
use std::io;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

/// One line of `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// Unique id of the mount (field 1).
    pub id: u32,
    /// Id of the parent mount, or of itself at the top of the tree (field 2).
    pub parent: u32,
    /// `st_dev` of files on this mount as (major, minor) (field 3).
    pub dev: (u32, u32),
    /// Path of the directory in the filesystem that forms the root of this mount (field 4),
    /// escapes decoded. For a bind mount of `/srv/x` this is `/srv/x` (or a path within the
    /// source filesystem).
    pub root: PathBuf,
    /// Where the mount is, relative to the process's root directory (field 5), escapes decoded.
    pub mount_point: PathBuf,
    /// Filesystem type such as `tmpfs` or `ext4` (first field after the `-`), escapes decoded.
    pub fstype: String,
    /// Mount source such as `/dev/sda1`, `tmpfs` or `none` (second field after the `-`),
    /// escapes decoded; may be empty.
    pub source: OsString,
}

/// A line of mountinfo text that does not have the expected shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    /// What was wrong with the line.
    pub msg: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "mountinfo line {}: {}", self.line, self.msg)
    }
}

impl std::error::Error for ParseError {}

impl From<ParseError> for io::Error {
    fn from(e: ParseError) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, e)
    }
}

/// Parses mountinfo text, one [`Mount`] per non-empty line, in the order given.
///
/// Lines are separated by `\n`; fields by single spaces. An empty line (such as after the
/// final newline) is ignored. Fields after the source (the super options) are not kept.
pub fn parse(text: &[u8]) -> Result<Vec<Mount>, ParseError> {
    let mut mounts = Vec::new();
    for (idx, line) in text.split(|&b| b == b'\n').enumerate() {
        if line.is_empty() {
            continue;
        }
        let mount = parse_line(line).map_err(|msg| ParseError { line: idx + 1, msg })?;
        mounts.push(mount);
    }
    Ok(mounts)
}

/// Reads and parses `/proc/self/mountinfo` of the calling process (its mount namespace).
///
/// A malformed line is reported as [`io::ErrorKind::InvalidData`] carrying the [`ParseError`].
pub fn read() -> io::Result<Vec<Mount>> {
    let text = std::fs::read("/proc/self/mountinfo")?;
    Ok(parse(&text)?)
}

/// Mount points at or below `dir`, deepest first.
///
/// Matching is by whole path components: `/a/rootimg` matches `/a/rootimg` and
/// `/a/rootimg/proc`, but not `/a/rootimg2` or `/a/rootimg.bak`. `dir` is compared as given, so
/// the caller should pass a canonical absolute path (mount points in mountinfo are canonical and
/// relative to the process's root). Among mounts of equal depth, the ones listed later (mounted
/// later, so on top when stacked on one mount point) come first, which is the order to unmount
/// them in.
pub fn under<'a>(mounts: &'a [Mount], dir: &Path) -> Vec<&'a Mount> {
    let mut found: Vec<&Mount> = mounts
        .iter()
        .rev()
        .filter(|m| m.mount_point.starts_with(dir))
        .collect();
    // Stable sort: keeps the reversed file order among equal depths.
    found.sort_by_key(|m| std::cmp::Reverse(m.mount_point.components().count()));
    found
}

fn parse_line(line: &[u8]) -> Result<Mount, String> {
    let mut fields = line.split(|&b| b == b' ');
    let mut next = |what: &str| {
        fields
            .next()
            .ok_or_else(|| format!("missing field: {what}"))
    };
    let id = parse_u32(next("mount id")?, "mount id")?;
    let parent = parse_u32(next("parent id")?, "parent id")?;
    let dev_field = next("major:minor")?;
    let root = next("root")?;
    let mount_point = next("mount point")?;
    let _options = next("mount options")?;

    let dev = {
        let mut parts = dev_field.splitn(2, |&b| b == b':');
        let major = parts.next().unwrap_or_default();
        let minor = parts
            .next()
            .ok_or_else(|| format!("bad major:minor {:?}", lossy(dev_field)))?;
        (parse_u32(major, "major")?, parse_u32(minor, "minor")?)
    };

    // Optional fields (shared:N, master:N, propagate_from:N, unbindable) up to the lone "-".
    loop {
        match fields.next() {
            Some(b"-") => break,
            Some(_) => {}
            None => return Err("missing separator \"-\"".to_string()),
        }
    }
    let fstype = fields
        .next()
        .ok_or_else(|| "missing field: filesystem type".to_string())?;
    let source = fields
        .next()
        .ok_or_else(|| "missing field: mount source".to_string())?;

    if root.is_empty() {
        return Err("empty root".to_string());
    }
    if mount_point.is_empty() {
        return Err("empty mount point".to_string());
    }
    if fstype.is_empty() {
        return Err("empty filesystem type".to_string());
    }
    let fstype = String::from_utf8(unescape(fstype))
        .map_err(|_| format!("filesystem type is not UTF-8: {:?}", lossy(fstype)))?;

    Ok(Mount {
        id,
        parent,
        dev,
        root: PathBuf::from(OsString::from_vec(unescape(root))),
        mount_point: PathBuf::from(OsString::from_vec(unescape(mount_point))),
        fstype,
        source: OsString::from_vec(unescape(source)),
    })
}

fn parse_u32(field: &[u8], what: &str) -> Result<u32, String> {
    let text = std::str::from_utf8(field).map_err(|_| format!("bad {what} {:?}", lossy(field)))?;
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("bad {what} {text:?}"));
    }
    text.parse::<u32>()
        .map_err(|e| format!("bad {what} {text:?}: {e}"))
}

/// Decodes `\ooo` octal escapes. A backslash not followed by three octal digits whose value fits
/// a byte is kept literally (the kernel never writes one, but a literal is safer than an error).
fn unescape(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        if field[i] == b'\\' {
            if let Some(value) = octal3(&field[i + 1..]) {
                out.push(value);
                i += 4;
                continue;
            }
        }
        out.push(field[i]);
        i += 1;
    }
    out
}

fn octal3(rest: &[u8]) -> Option<u8> {
    let digits = rest.get(..3)?;
    let mut value: u32 = 0;
    for &d in digits {
        if !(b'0'..=b'7').contains(&d) {
            return None;
        }
        value = value * 8 + u32::from(d - b'0');
    }
    u8::try_from(value).ok()
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStrExt;

    fn one(line: &[u8]) -> Mount {
        let mut v = parse(line).expect("line parses");
        assert_eq!(v.len(), 1);
        v.remove(0)
    }

    #[test]
    fn plain_line() {
        let m = one(
            b"36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue\n",
        );
        assert_eq!(m.id, 36);
        assert_eq!(m.parent, 35);
        assert_eq!(m.dev, (98, 0));
        assert_eq!(m.root, Path::new("/mnt1"));
        assert_eq!(m.mount_point, Path::new("/mnt2"));
        assert_eq!(m.fstype, "ext3");
        assert_eq!(m.source, OsString::from("/dev/root"));
    }

    #[test]
    fn no_optional_fields_and_several() {
        let v = parse(
            b"22 1 0:21 / /proc rw,nosuid - proc proc rw\n\
              23 1 0:22 / /sys rw shared:1 master:2 propagate_from:3 unbindable - sysfs sysfs rw\n",
        )
        .expect("parses");
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].mount_point, Path::new("/proc"));
        assert_eq!(v[0].fstype, "proc");
        assert_eq!(v[1].fstype, "sysfs");
        assert_eq!(v[1].source, OsString::from("sysfs"));
        assert_eq!(v[1].dev, (0, 22));
    }

    #[test]
    fn escapes_decoded() {
        let m =
            one(b"40 1 0:50 /a\\134b /tmp/x/mnt\\040a\\011tab\\012nl rw - tmpfs my\\040src rw\n");
        assert_eq!(m.root.as_os_str().as_bytes(), b"/a\\b");
        assert_eq!(
            m.mount_point.as_os_str().as_bytes(),
            b"/tmp/x/mnt a\ttab\nnl"
        );
        assert_eq!(m.source.as_bytes(), b"my src");
        // Any \ooo is decoded, not just the four the kernel writes.
        let m = one(b"40 1 0:50 / /x\\101\\377 rw - tmpfs t rw\n");
        assert_eq!(m.mount_point.as_os_str().as_bytes(), b"/xA\xff");
    }

    #[test]
    fn bad_escapes_kept_literally() {
        let m = one(b"40 1 0:50 / /x\\9\\0 rw - tmpfs t rw");
        assert_eq!(m.mount_point.as_os_str().as_bytes(), b"/x\\9\\0");
        let m = one(b"40 1 0:50 / /x\\777y\\ rw - tmpfs t rw");
        assert_eq!(m.mount_point.as_os_str().as_bytes(), b"/x\\777y\\");
    }

    #[test]
    fn non_utf8_kept() {
        let m = one(b"40 1 0:50 /r\xe9 /tmp/caf\xe9 rw - tmpfs src\xff rw\n");
        assert_eq!(m.root.as_os_str().as_bytes(), b"/r\xe9");
        assert_eq!(m.mount_point.as_os_str().as_bytes(), b"/tmp/caf\xe9");
        assert_eq!(m.source.as_bytes(), b"src\xff");
    }

    #[test]
    fn empty_source_allowed() {
        let m = one(b"40 1 0:50 / /x rw - tmpfs  rw\n");
        assert_eq!(m.source, OsString::new());
        assert_eq!(m.fstype, "tmpfs");
    }

    #[test]
    fn malformed_lines() {
        let cases: &[(&[u8], usize, &str)] = &[
            (b"x 1 0:1 / /a rw - t s rw", 1, "bad mount id"),
            (
                b"1 1 0:1 / /a rw - t s rw\n\n1 1 0-1 / /a rw - t s rw",
                3,
                "major:minor",
            ),
            (b"1 1 a:1 / /a rw - t s rw", 1, "bad major"),
            (b"1 1 0:1 / /a rw shared:1 t s rw", 1, "separator"),
            (b"1 1 0:1 / /a", 1, "mount options"),
            (b"1 1 0:1 / /a rw -", 1, "filesystem type"),
            (b"1 1 0:1 / /a rw - tmpfs", 1, "mount source"),
            (b"1 1 0:1 /  rw - t s rw", 1, "empty mount point"),
            (b"1 -1 0:1 / /a rw - t s rw", 1, "bad parent id"),
            (b"1 99999999999 0:1 / /a rw - t s rw", 1, "bad parent id"),
            (b"", 0, ""),
        ];
        for (text, line, needle) in cases {
            match parse(text) {
                Ok(v) if *line == 0 => assert!(v.is_empty()),
                Ok(v) => panic!("{:?} parsed as {v:?}", String::from_utf8_lossy(text)),
                Err(e) => {
                    assert_eq!(e.line, *line, "{e}");
                    assert!(e.msg.contains(needle), "{e}");
                    assert!(e
                        .to_string()
                        .starts_with(&format!("mountinfo line {line}: ")));
                }
            }
        }
    }

    #[test]
    fn display() {
        let e = ParseError {
            line: 7,
            msg: "missing separator \"-\"".into(),
        };
        assert_eq!(e.to_string(), "mountinfo line 7: missing separator \"-\"");
        let io: io::Error = e.into();
        assert_eq!(io.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn under_matches_whole_components_deepest_first() {
        let text = b"1 0 8:1 / / rw - ext4 /dev/sda1 rw\n\
            2 1 0:5 / /a/rootimg rw - tmpfs t rw\n\
            3 2 0:6 / /a/rootimg/proc rw - proc proc rw\n\
            4 1 0:7 / /a/rootimg2 rw - tmpfs t rw\n\
            5 1 0:8 / /a/rootimg.bak/proc rw - proc proc rw\n\
            6 3 0:9 / /a/rootimg/proc/sys/fs/binfmt_misc rw - binfmt_misc b rw\n\
            7 2 0:10 / /a/rootimg/dev rw - devtmpfs d rw\n\
            8 7 0:11 / /a/rootimg/dev rw - tmpfs stacked rw\n\
            9 1 0:12 / /a/root rw - tmpfs t rw\n";
        let mounts = parse(text).expect("parses");
        let ids: Vec<u32> = under(&mounts, Path::new("/a/rootimg"))
            .iter()
            .map(|m| m.id)
            .collect();
        assert_eq!(ids, vec![6, 8, 7, 3, 2]);
        // A trailing slash names the same directory.
        let ids2: Vec<u32> = under(&mounts, Path::new("/a/rootimg/"))
            .iter()
            .map(|m| m.id)
            .collect();
        assert_eq!(ids, ids2);
        assert!(under(&mounts, Path::new("/nothing")).is_empty());
        assert_eq!(under(&mounts, Path::new("/")).len(), mounts.len());
    }

    #[test]
    fn under_with_escaped_mount_point() {
        let mounts = parse(b"2 1 0:5 / /a/root\\040img/proc rw - proc proc rw\n").expect("ok");
        assert_eq!(under(&mounts, Path::new("/a/root img")).len(), 1);
        assert!(under(&mounts, Path::new("/a/root\\040img")).is_empty());
    }

    #[test]
    fn reads_own_mountinfo() {
        let mounts = read().expect("/proc/self/mountinfo readable");
        assert!(!mounts.is_empty());
        assert!(mounts.iter().any(|m| m.mount_point == Path::new("/")));
    }
}
