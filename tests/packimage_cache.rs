//! packimage's segmented output and segment cache, end to end: a repack after a change
//! reuses the unchanged segments and gives exactly the bytes of a full `--no-cache` pack;
//! the multi-member/multi-stream files decode with GNU gzip, busybox, xz, tar and cpio; a
//! damaged cache never damages the image; squashfs writes nothing to TMPDIR; rmimage removes
//! the cache.

use crate::util::{cmd_exists, skip, Dir, Output};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const NAME: &str = "cache-netboot-compute";
/// Test hooks of packimage (docs/packimage.md): a fixed clock and xcatinfo UUID, so two
/// packs of the same tree can be compared byte for byte.
const EPOCH: &str = "1700000000";
const UUID: &str = "0b5e1f9a-6a3c-4c1e-9f00-5ca1ab1e0001";

struct Node {
    d: Dir,
    dir: PathBuf,
}

/// Text-like, moderately compressible content unique to `seed`.
fn content(seed: u64, len: usize) -> Vec<u8> {
    let words: [&[u8]; 8] = [
        b"kernel ",
        b"module ",
        b"libc.so.6 ",
        b"/usr/lib ",
        b"netboot ",
        b"\n",
        b"xcat ",
        b"= ",
    ];
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 16);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(words[(x % 8) as usize]);
        if x.is_multiple_of(5) {
            out.extend_from_slice(format!("{:x}", x >> 40).as_bytes());
        }
    }
    out.truncate(len);
    out
}

impl Node {
    /// An image of `files` files of `size` bytes in 20 directories.
    fn new(files: usize, size: usize) -> Node {
        let d = Dir::new();
        let dir = d.install().join("netboot/debian12/x86_64/compute");
        let r = dir.join("rootimg");
        for i in 0..files {
            let p = r.join(format!("usr/lib/d{:02}/f{i:05}", i % 20));
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, content(i as u64, size)).unwrap();
        }
        std::fs::create_dir_all(r.join("etc")).unwrap();
        std::fs::write(r.join("etc/shadow"), "root:!:19000:0:99999:7:::\n").unwrap();
        std::fs::hard_link(r.join("usr/lib/d00/f00000"), r.join("usr/lib/linked")).unwrap();
        d.write("install/postscripts/xcatdsklspost", "#!/bin/sh\n");
        d.defs(&format!(
            "{NAME}:\n    objtype=osimage\n    imagetype=linux\n    osarch=x86_64\n    osvers=debian12\n    profile=compute\n    provmethod=netboot\n    rootimgdir={}\n\n",
            dir.display()
        ));
        Node { d, dir }
    }

    fn file(&self, i: usize) -> PathBuf {
        self.dir
            .join("rootimg")
            .join(format!("usr/lib/d{:02}/f{i:05}", i % 20))
    }

    /// Packs with the fixed clock and UUID; returns the summary line's segment counts
    /// (total, reused, compressed) and the image bytes.
    fn pack(&self, args: &[&str], file: &str) -> ((u64, u64, u64), Vec<u8>) {
        let o = self.run(
            args,
            &[
                ("SOURCE_DATE_EPOCH", EPOCH),
                ("XCAT_IMAGED_TEST_UUID", UUID),
            ],
        );
        (counts(&o), std::fs::read(self.dir.join(file)).unwrap())
    }

    fn run(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut a = vec![NAME, "--nosyncfiles"];
        a.extend_from_slice(args);
        let mut c = self.d.command("packimage", &a);
        for (k, v) in env {
            c.env(k, v);
        }
        let o = Output::of(c);
        assert_eq!(o.code, 0, "{o:?}");
        o
    }
}

/// `(segments, reused, compressed)` from `Packed ...; N segments, R reused, C compressed`.
fn counts(o: &Output) -> (u64, u64, u64) {
    let last = *o.lines().last().unwrap();
    let tail = last.split("; ").nth(1).unwrap_or_else(|| panic!("{last}"));
    let n: Vec<u64> = tail
        .split(", ")
        .map(|w| w.split(' ').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(n.len(), 3, "{last}");
    assert_eq!(n[0], n[1] + n[2], "{last}");
    (n[0], n[1], n[2])
}

/// Rewrites a file with one byte changed and a new mtime (what a package update does).
fn touch(p: &Path) {
    let mut b = std::fs::read(p).unwrap();
    b[100] ^= 0x20;
    std::fs::write(p, b).unwrap();
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_750_000_000);
    std::fs::File::options()
        .write(true)
        .open(p)
        .unwrap()
        .set_modified(t)
        .unwrap();
}

/// Runs `argv` with `input` on stdin; its stdout.
fn filter(argv: &[&str], input: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut c = Command::new(argv[0])
        .args(&argv[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = c.stdin.take().unwrap();
    let data = input.to_vec();
    let feeder = std::thread::spawn(move || {
        let _ = stdin.write_all(&data);
    });
    let o = c.wait_with_output().unwrap();
    feeder.join().unwrap();
    assert!(
        o.status.success(),
        "{argv:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o.stdout
}

/// The full-pack / repack / --no-cache sequence for one format, checked byte for byte.
fn repack_matches_full_pack(method: &str, compress: &str, file: &str) {
    let n = Node::new(400, 48 << 10);
    let args = ["-m", method, "-c", compress];
    let (cold, first) = n.pack(&args, file);
    assert_eq!(cold.1, 0, "nothing to reuse on the first pack");
    assert!(
        cold.0 >= 5,
        "{cold:?}: the image should have several segments"
    );
    // The same tree again: everything reused, same bytes.
    let (same, again) = n.pack(&args, file);
    assert_eq!((same.1, same.2), (same.0, 0), "{same:?}");
    assert!(
        again == first,
        "{method}/{compress}: an unchanged repack differs"
    );

    // One file changed.
    touch(&n.file(217));
    let (one, repacked) = n.pack(&args, file);
    assert!(
        one.2 >= 1 && one.2 <= 2,
        "{one:?}: only the changed region is compressed"
    );
    let (full, fresh) = n.pack(&["-m", method, "-c", compress, "--no-cache"], file);
    assert_eq!(full.1, 0, "--no-cache reuses nothing");
    assert!(
        repacked == fresh,
        "{method}/{compress}: repack differs from a full pack"
    );

    // 1% of the files (4 of 400) changed.
    for i in [3, 120, 255, 390] {
        touch(&n.file(i));
    }
    let (some, repacked) = n.pack(&args, file);
    assert!(some.2 >= 1 && some.2 <= 8, "{some:?}");
    assert!(some.1 >= some.0 / 2, "{some:?}: most segments reused");
    let (_, fresh) = n.pack(&["-m", method, "-c", compress, "--no-cache"], file);
    assert!(
        repacked == fresh,
        "{method}/{compress}: repack differs from a full pack"
    );

    // The cache holds only the index of this image.
    let cache: Vec<String> = std::fs::read_dir(n.dir.join(".packcache"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(cache, [format!("{file}.idx")]);
    // What a node unpacks has the changed content.
    let raw = if compress == "xz" {
        filter(&["xz", "-dc"], &repacked)
    } else {
        filter(&["gzip", "-cd"], &repacked)
    };
    let want = std::fs::read(n.file(390)).unwrap();
    let name = "usr/lib/d10/f00390";
    let listed = if method == "cpio" {
        filter(
            &["cpio", "-i", "--quiet", "--to-stdout", &format!("./{name}")],
            &raw,
        )
    } else {
        filter(&["tar", "-xOf", "-", &format!("./{name}")], &raw)
    };
    assert!(listed == want, "{method}: the node would get other bytes");

    // A normal repack (fresh UUID and clock): only the few segments holding what packimage
    // stamps with the time (xcatinfo, its directories) are compressed again.
    let o = n.run(&args, &[]);
    let normal = counts(&o);
    assert!(normal.2 <= 3, "{normal:?}");
}

#[test]
fn cpio_gzip_repack_is_byte_identical_to_a_full_pack() {
    repack_matches_full_pack("cpio", "gzip", "rootimg.cpio.gz");
}

#[test]
fn tar_gzip_repack_is_byte_identical_to_a_full_pack() {
    repack_matches_full_pack("tar", "pigz", "rootimg.tar.gz");
}

#[test]
fn xz_repack_is_byte_identical_and_every_xz_decoder_reads_the_streams() {
    // 20 MiB: a few xz segments (8-32 MiB), fast to compress at preset 6.
    let n = Node::new(200, 100 << 10);
    let (cold, first) = n.pack(&["-m", "cpio", "-c", "xz"], "rootimg.cpio.xz");
    assert_eq!(cold.1, 0);
    touch(&n.file(150));
    let (warm, repacked) = n.pack(&["-m", "cpio", "-c", "xz"], "rootimg.cpio.xz");
    let (_, fresh) = n.pack(&["-m", "cpio", "-c", "xz", "--no-cache"], "rootimg.cpio.xz");
    assert!(repacked == fresh, "xz repack differs from a full pack");
    assert!(warm.1 >= 1 || warm.0 == 1, "{warm:?}");
    assert_ne!(first, repacked);
    // Several xz streams, concatenated.
    let archive = n.dir.join("rootimg.cpio.xz");
    let list = Command::new("xz")
        .args(["--robot", "--list"])
        .arg(&archive)
        .output()
        .unwrap();
    let list = String::from_utf8_lossy(&list.stdout).into_owned();
    let streams: u64 = list
        .lines()
        .find(|l| l.starts_with("totals"))
        .and_then(|l| l.split('\t').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    assert!(streams >= 2, "{list}");
    let by_xz = filter(&["xz", "-dc"], &repacked);
    if cmd_exists("busybox") {
        assert!(
            filter(&["busybox", "xz", "-dc"], &repacked) == by_xz,
            "busybox xz"
        );
        assert!(
            filter(&["busybox", "unxz", "-c"], &repacked) == by_xz,
            "busybox unxz"
        );
    } else {
        skip("busybox not installed");
    }
    let names = filter(&["cpio", "-t", "--quiet"], &by_xz);
    assert_eq!(
        String::from_utf8_lossy(&names).lines().count(),
        200 + 32,
        "{}",
        String::from_utf8_lossy(&names)
    );
}

#[test]
fn gzip_members_decode_with_gnu_gzip_busybox_tar_and_cpio() {
    let n = Node::new(300, 40 << 10);
    let (c, cpio_gz) = n.pack(&["-m", "cpio"], "rootimg.cpio.gz");
    assert!(c.0 >= 4, "{c:?}");
    let gnu = filter(&["gzip", "-cd"], &cpio_gz);
    assert!(filter(&["zcat"], &cpio_gz) == gnu);
    if cmd_exists("busybox") {
        assert!(
            filter(&["busybox", "gzip", "-dc"], &cpio_gz) == gnu,
            "busybox gzip -d"
        );
        let listed = filter(&["busybox", "cpio", "-t"], &gnu);
        assert!(String::from_utf8_lossy(&listed).contains("usr/lib/d19/f00299"));
    } else {
        skip("busybox not installed");
    }
    let listed = filter(&["cpio", "-t", "--quiet"], &gnu);
    assert!(String::from_utf8_lossy(&listed).contains("./usr/lib/d19/f00299"));
    let (t, tar_gz) = n.pack(&["-m", "tar"], "rootimg.tar.gz");
    assert!(t.0 >= 4, "{t:?}");
    let listed = filter(&["tar", "-tzf", "-"], &tar_gz);
    let text = String::from_utf8_lossy(&listed);
    assert!(text.contains("./usr/lib/d19/f00299"), "{text}");
    assert_eq!(text.lines().count(), 300 + 32);
}

#[test]
fn a_damaged_cache_never_damages_the_image() {
    let n = Node::new(300, 40 << 10);
    let file = "rootimg.cpio.gz";
    let (_, reference) = n.pack(&["-m", "cpio", "--no-cache"], file);
    let image = n.dir.join(file);
    let index = n.dir.join(".packcache").join(format!("{file}.idx"));

    // A flipped byte inside the published image (the cache's source): that segment is
    // compressed again, the rest reused.
    let mut bytes = reference.clone();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&image, &bytes).unwrap();
    let (c, out) = n.pack(&["-m", "cpio"], file);
    assert_eq!(
        c.2, 1,
        "{c:?}: exactly the damaged segment is compressed again"
    );
    assert!(out == reference);

    // A wrong key on one index line: that segment is not found, the others still are.
    let text = std::fs::read_to_string(&index).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    lines[4] = format!("{}{}", "f".repeat(64), &lines[4][64..]);
    std::fs::write(&index, lines.join("\n") + "\n").unwrap();
    let (c, out) = n.pack(&["-m", "cpio"], file);
    assert_eq!(c.2, 1, "{c:?}");
    assert!(out == reference);

    // Garbage index, truncated image: nothing reused, still the same bytes.
    std::fs::write(&index, "not an index\n").unwrap();
    let (c, out) = n.pack(&["-m", "cpio"], file);
    assert_eq!(c.1, 0, "{c:?}");
    assert!(out == reference);
    std::fs::write(&image, &reference[..reference.len() / 3]).unwrap();
    let (c, out) = n.pack(&["-m", "cpio"], file);
    assert_eq!(c.1, 0, "{c:?}");
    assert!(out == reference);

    // Another format replaces the image: its index replaces the old one.
    let (_, _) = n.pack(&["-m", "tar"], "rootimg.tar.gz");
    let cache: Vec<String> = std::fs::read_dir(n.dir.join(".packcache"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(cache, ["rootimg.tar.gz.idx"]);
    assert!(!image.exists());
}

#[test]
fn squashfs_streams_without_temp_files_and_drops_the_cache() {
    if !cmd_exists("mksquashfs") || !cmd_exists("unsquashfs") {
        skip("squashfs-tools not installed");
        return;
    }
    let n = Node::new(100, 20 << 10);
    n.pack(&["-m", "cpio"], "rootimg.cpio.gz");
    assert!(n.dir.join(".packcache").is_dir());
    let tmp = n.d.path().join("tmpdir");
    std::fs::create_dir(&tmp).unwrap();
    let o = n.run(
        &["-m", "squashfs"],
        &[
            ("TMPDIR", tmp.to_str().unwrap()),
            ("TMP", tmp.to_str().unwrap()),
        ],
    );
    assert!(o.lines().last().unwrap().starts_with("Packed "), "{o:?}");
    assert_eq!(
        std::fs::read_dir(&tmp).unwrap().count(),
        0,
        "TMPDIR stayed empty"
    );
    // Nothing but the image and the tree in the image directory: no staging copy, no cache.
    let mut names: Vec<String> = std::fs::read_dir(&n.dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["rootimg", "rootimg.sfs"]);
    let list = Command::new("unsquashfs")
        .args(["-l"])
        .arg(n.dir.join("rootimg.sfs"))
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&list.stdout).contains("usr/lib/d19/f00099"));
}

#[test]
fn rmimage_removes_the_cache_with_the_image() {
    let n = Node::new(50, 10 << 10);
    n.pack(&["-m", "tar"], "rootimg.tar.gz");
    assert!(n.dir.join(".packcache/rootimg.tar.gz.idx").is_file());
    let o = n.d.run("rmimage", &[NAME]);
    assert_eq!(o.code, 0, "{o:?}");
    assert!(!n.dir.join(".packcache").exists(), "{o:?}");
    assert!(!n.dir.join("rootimg.tar.gz").exists());
    assert!(o.stdout.contains(".packcache"), "{o:?}");
}
