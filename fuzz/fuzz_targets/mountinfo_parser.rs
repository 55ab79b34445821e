//! The /proc/self/mountinfo parser. Arbitrary input must not panic; and a mount point encoded
//! the way the kernel encodes it (`\ooo` for space, tab, newline and backslash) decodes to the
//! same bytes (decode ∘ encode = identity), and `under` returns only mounts below the directory.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use xcat_imaged::fs::mountinfo;

fn encode(path: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for &b in path {
        if matches!(b, b' ' | b'\t' | b'\n' | b'\\') {
            out.extend_from_slice(format!("\\{b:03o}").as_bytes());
        } else {
            out.push(b);
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    if let Ok(mounts) = mountinfo::parse(data) {
        let dir = Path::new("/install/netboot");
        for m in mountinfo::under(&mounts, dir) {
            assert!(m.mount_point.starts_with(dir));
        }
    }
    // Identity: the input (NUL-free, as paths are) as a mount point and as a source.
    let path: Vec<u8> = [b"/".as_slice(), data]
        .concat()
        .into_iter()
        .filter(|&b| b != 0)
        .collect();
    let enc = encode(&path);
    let mut line = b"36 35 98:0 / ".to_vec();
    line.extend_from_slice(&enc);
    line.extend_from_slice(b" rw,noatime master:1 - ext4 ");
    line.extend_from_slice(&enc);
    line.extend_from_slice(b" rw\n");
    let mounts = mountinfo::parse(&line).expect("a well-formed line parses");
    assert_eq!(mounts.len(), 1);
    assert_eq!(mounts[0].mount_point.as_os_str().as_bytes(), &path[..]);
    assert_eq!(mounts[0].source.as_bytes(), &path[..]);
    assert_eq!(mounts[0].fstype, "ext4");
    let found = mountinfo::under(&mounts, Path::new(OsStr::from_bytes(&path)));
    assert_eq!(found.len(), 1, "a mount is under its own mount point");
});
