//! packimage end to end in standalone mode: messages, every format extracted by the real
//! tools nodes use, injected content, the untouched tree, atomic publish, kill mid-pack.

use crate::util::{cmd_exists, is_root, skip, Dir, Output};
use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

const NAME: &str = "rhels9-x86_64-netboot-compute";

/// A management node with one netboot image whose tree has every kind of entry.
struct Node {
    d: Dir,
    dir: PathBuf,
}

impl Node {
    fn new(extra_defs: &[(&str, &str)], site: &[(&str, &str)]) -> Node {
        let d = Dir::new();
        let dir = d.install().join("netboot/rhels9/x86_64/compute");
        build_tree(&dir.join("rootimg"));
        d.write(
            "install/postscripts/xcatdsklspost",
            "#!/bin/sh\necho dskls\n",
        );
        d.write("install/postscripts/syslog", "syslog script\n");
        d.write("install/postscripts/_xcat/ca.pem", "pem\n");
        d.write("install/postscripts/.hidden", "not copied\n");
        std::fs::set_permissions(
            d.install().join("postscripts/xcatdsklspost"),
            PermissionsExt::from_mode(0o644),
        )
        .unwrap();
        d.write("compute.exlist", "./usr/share/doc*\n# a comment\n./tmp*   # trailing comment\n./usr/share/zoneinfo*\n+./usr/share/doc/keep*\n#INCLUDE:more.exlist#\n");
        d.write("more.exlist", "./var/cache*\n");
        let mut defs = format!(
            "{NAME}:\n    objtype=osimage\n    imagetype=linux\n    osarch=x86_64\n    osvers=rhels9\n    profile=compute\n    provmethod=netboot\n    exlist={}\n",
            d.path().join("compute.exlist").display()
        );
        for (k, v) in extra_defs {
            defs.push_str(&format!("    {k}={v}\n"));
        }
        defs.push('\n');
        d.defs_with_site(site, &defs);
        Node { d, dir }
    }

    fn rootimg(&self) -> PathBuf {
        self.dir.join("rootimg")
    }

    fn pack(&self, args: &[&str]) -> Output {
        let mut a = vec![NAME];
        a.extend_from_slice(args);
        self.d.run("packimage", &a)
    }
}

fn build_tree(r: &Path) {
    for d in [
        "etc",
        "usr/bin",
        "usr/share/doc/pkg",
        "usr/share/doc/keepme",
        "usr/share/zoneinfo/Europe",
        "tmp",
        "var/cache/x",
        "var/lib",
        "dev",
        "proc",
        "opt",
    ] {
        std::fs::create_dir_all(r.join(d)).unwrap();
    }
    std::fs::write(
        r.join("etc/shadow"),
        "root:!:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\n",
    )
    .unwrap();
    std::fs::set_permissions(r.join("etc/shadow"), PermissionsExt::from_mode(0o640)).unwrap();
    std::fs::write(r.join("etc/hostname"), "image\n").unwrap();
    std::fs::copy("/bin/true", r.join("usr/bin/true")).unwrap();
    std::fs::hard_link(r.join("usr/bin/true"), r.join("usr/bin/true2")).unwrap();
    std::fs::hard_link(r.join("usr/bin/true"), r.join("usr/bin/true3")).unwrap();
    std::os::unix::fs::symlink("true", r.join("usr/bin/rel-link")).unwrap();
    std::os::unix::fs::symlink("/usr/bin/true", r.join("usr/bin/abs-link")).unwrap();
    std::fs::write(r.join("usr/share/doc/pkg/README"), "doc\n").unwrap();
    std::fs::write(r.join("usr/share/doc/keepme/LICENSE"), "keep\n").unwrap();
    std::fs::write(r.join("usr/share/zoneinfo/Europe/Berlin"), "TZif-fake\n").unwrap();
    std::fs::write(r.join("usr/share/zoneinfo/UTC"), "TZif-utc\n").unwrap();
    std::fs::write(r.join("tmp/junk"), "junk\n").unwrap();
    std::fs::write(r.join("var/cache/x/blob"), "cache\n").unwrap();
    std::fs::write(r.join("var/lib/name with space"), "space\n").unwrap();
    std::fs::write(r.join("var/lib/new\nline"), "newline\n").unwrap();
    std::fs::write(r.join("var/lib/setuid"), "suid\n").unwrap();
    // A sparse file: 3 MiB hole, then data.
    let f = std::fs::File::create(r.join("var/lib/sparse")).unwrap();
    f.set_len(3 << 20).unwrap();
    std::os::unix::fs::FileExt::write_at(&f, b"end", 3 << 20).unwrap();
    // Something bigger than one compression block, with varied content.
    let mut big = Vec::with_capacity(5 << 20);
    let mut x: u32 = 1;
    for i in 0..(5u32 << 20) {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
        big.push(if i % 7 == 0 {
            (x >> 24) as u8
        } else {
            b'a' + (i % 26) as u8
        });
    }
    std::fs::write(r.join("usr/bin/big"), &big).unwrap();
    nix::unistd::mkfifo(
        &r.join("var/lib/fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    )
    .unwrap();
    let _sock = std::os::unix::net::UnixListener::bind(r.join("var/lib/socket")).unwrap();
    if is_root() {
        nix::sys::stat::mknod(
            &r.join("dev/null"),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::from_bits_truncate(0o666),
            nix::sys::stat::makedev(1, 3),
        )
        .unwrap();
        std::os::unix::fs::lchown(r.join("var/lib/setuid"), Some(1234), Some(5678)).unwrap();
    }
    // After chown, which clears setuid.
    std::fs::set_permissions(r.join("var/lib/setuid"), PermissionsExt::from_mode(0o4755)).unwrap();
    let _ = xattr::set(r.join("etc/hostname"), "user.test", b"va\0lue\n");
    if cmd_exists("setcap") {
        let _ = Command::new("setcap")
            .arg("cap_net_raw+ep")
            .arg(r.join("usr/bin/true"))
            .status();
    }
}

fn hash(data: &[u8]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    data.hash(&mut h);
    h.finish()
}

/// One line per path: type, mode, owner, content hash or link target, hard-link identity, and
/// (when asked) xattrs. Directory mtimes are left out: extractors do not restore them.
fn manifest(root: &Path, with_xattrs: bool) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut inodes: BTreeMap<u64, String> = BTreeMap::new();
    for item in walkdir::WalkDir::new(root)
        .follow_links(false)
        .sort_by_file_name()
    {
        let item = item.unwrap();
        let rel = item
            .path()
            .strip_prefix(root)
            .unwrap()
            .display()
            .to_string();
        let md = std::fs::symlink_metadata(item.path()).unwrap();
        let ft = md.file_type();
        let mut s = format!("{:o} {}:{}", md.mode(), md.uid(), md.gid());
        if ft.is_file() {
            let data = std::fs::read(item.path()).unwrap();
            s.push_str(&format!(
                " size={} hash={:x} mtime={}",
                data.len(),
                hash(&data),
                md.mtime()
            ));
            if md.nlink() > 1 {
                let first = inodes.entry(md.ino()).or_insert_with(|| rel.clone());
                s.push_str(&format!(" link={first}"));
            }
        } else if ft.is_symlink() {
            s.push_str(&format!(
                " -> {}",
                std::fs::read_link(item.path()).unwrap().display()
            ));
        } else if !ft.is_dir() {
            s.push_str(&format!(" rdev={}", md.rdev()));
        }
        if with_xattrs && !ft.is_symlink() {
            let mut names: Vec<_> = xattr::list(item.path())
                .map(|l| l.collect())
                .unwrap_or_default();
            names.sort();
            for n in names {
                let v = xattr::get(item.path(), &n)
                    .ok()
                    .flatten()
                    .unwrap_or_default();
                s.push_str(&format!(" {}={:x}", n.to_string_lossy(), hash(&v)));
            }
        }
        out.insert(rel, s);
    }
    out
}

/// The tree as the archive should reproduce it: the exlist applied, the injected paths and
/// the socket left out (checked separately).
fn expected(rootimg: &Path, with_xattrs: bool, tz: Option<&str>) -> BTreeMap<String, String> {
    let mut m = manifest(rootimg, with_xattrs);
    m.retain(|p, _| {
        // The time zone's file is included back, and its parent directories with it.
        let tz_kept = tz.is_some_and(|tz| {
            let f = format!("usr/share/zoneinfo/{tz}");
            f == *p || f.starts_with(&format!("{p}/"))
        });
        let excluded = (p.starts_with("usr/share/doc")
            && !p.starts_with("usr/share/doc/keep")
            && p != "usr/share/doc")
            || p.starts_with("tmp")
            || (p.starts_with("usr/share/zoneinfo") && p != "usr/share/zoneinfo" && !tz_kept)
            || p.starts_with("var/cache");
        !excluded && p != "var/lib/socket" && p != "etc/shadow" && !p.is_empty()
    });
    m
}

/// Unpacks an archive the way the node's xcatroot does (`gzip -cd | cpio -idum`,
/// `tar --selinux --xattrs-include='*' -xf`, unsquashfs for the sfs), without a shell.
fn extract(archive: &Path, into: &Path) -> Output {
    use std::process::Stdio;
    std::fs::create_dir_all(into).unwrap();
    let name = archive.file_name().unwrap().to_string_lossy().into_owned();
    let pipe = |decomp: &str| {
        let mut d = Command::new(decomp)
            .arg("-cd")
            .arg(archive)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut c = Command::new("cpio");
        c.arg("-idum")
            .current_dir(into)
            .stdin(d.stdout.take().unwrap());
        let o = Output::of(c);
        assert!(d.wait().unwrap().success(), "{decomp} -cd failed");
        o
    };
    let tar = |z: &str| {
        let mut c = Command::new("tar");
        c.args(["--selinux", "--xattrs-include=*", z])
            .arg(archive)
            .current_dir(into);
        Output::of(c)
    };
    match name.as_str() {
        "rootimg.cpio.gz" => pipe("gzip"),
        "rootimg.cpio.xz" => pipe("xz"),
        "rootimg.tar.gz" => tar("-zxf"),
        "rootimg.tar.xz" => tar("-Jxf"),
        "rootimg.sfs" => {
            let mut c = Command::new("unsquashfs");
            c.args(["-f", "-no-progress", "-d"]).arg(into).arg(archive);
            Output::of(c)
        }
        other => panic!("unknown archive {other}"),
    }
}

fn strip_injected(m: &mut BTreeMap<String, String>) {
    m.retain(|p, _| {
        !(p.starts_with("xcatpost")
            || p.starts_with("opt/xcat")
            || p == "etc/shadow"
            || p == "etc/localtime"
            || p.is_empty())
    });
}

#[test]
fn argument_and_definition_errors_match_stock() {
    let n = Node::new(&[], &[]);
    let usage = format!("{}\n", xcat_imaged::commands::packimage::USAGE);
    let o = n.d.run("packimage", &[]);
    assert_eq!((o.code, o.stdout.as_str()), (0, usage.as_str()));
    let o = n.d.run("packimage", &["-h"]);
    assert_eq!((o.code, o.stdout.as_str()), (0, usage.as_str()));
    let o = n.d.run("packimage", &["-v"]);
    assert_eq!(o.code, 0);
    assert!(o.stdout.starts_with("Version "), "{o:?}");
    let cases: &[(&[&str], &str)] = &[
        (
            &["-o", "rhels9", NAME],
            "-o, -p and -a options are obsoleted, please use 'packimage <osimage name>' instead.",
        ),
        (
            &["-h", "-p", "x"],
            "-o, -p and -a options are obsoleted, please use 'packimage <osimage name>' instead.",
        ),
        (
            &["-m", "tar"],
            "An image name is required, use 'packimage <osimage name>'.",
        ),
        (
            &["nosuch"],
            "Cannot find image 'nosuch' from the osimage table.",
        ),
        (
            &[NAME, "-m", "zip"],
            "Invalid archive method 'zip' requested",
        ),
        (&[NAME, "-m=tar"], "Invalid archive method '=tar' requested"),
        (
            &[NAME, "-c", "bzip2"],
            "Invalid compress method 'bzip2' requested",
        ),
        (
            &[NAME, "-c", "bzip2", "-m", "zip"],
            "Invalid compress method 'bzip2' requested",
        ),
    ];
    for (args, err) in cases {
        let o = n.d.run("packimage", args);
        assert_eq!(o.stderr, format!("Error: {err}\n"), "{args:?}");
        assert_eq!(o.code, 1, "{args:?}");
    }
    // Nothing was written by any of them.
    assert!(std::fs::read_dir(&n.dir)
        .unwrap()
        .all(|e| e.unwrap().file_name() == "rootimg"));
}

#[test]
fn definition_problems() {
    let d = Dir::new();
    d.defs("img:\n    objtype=osimage\n    osvers=rhels9\n    osarch=x86_64\n    profile=c\n    provmethod=statelite\n    exlist=/x\n\nbare:\n    objtype=osimage\n    provmethod=netboot\n    exlist=/x\n\n");
    let o = d.run("packimage", &["img"]);
    assert_eq!(o.stderr, "Error: 'img' cannot be used to build diskless image. Make sure osimage.provmethod is 'netboot'.\n");
    let o = d.run("packimage", &["bare"]);
    assert_eq!(o.stderr, "Error: osimage.osvers, osimage.osarch, osimage.profile and osimage.provmethod must be specified for the image bare in the database.\n");
    d.defs("img:\n    objtype=osimage\n    osvers=rhels9\n    osarch=x86_64\n    profile=c\n    provmethod=netboot\n\n");
    let o = d.run("packimage", &["img"]);
    assert_eq!(
        o.stderr,
        "Error: Cannot find img from the linuximage table.\n"
    );
    d.defs("img:\n    objtype=osimage\n    osvers=rhels9\n    osarch=x86_64\n    profile=c\n    provmethod=netboot\n    exlist=/nonexistent.exlist\n\n");
    let o = d.run("packimage", &["img"]);
    let rootimg = d.install().join("netboot/rhels9/x86_64/c/rootimg");
    assert_eq!(
        o.stderr,
        format!("Error: {} does not exist, run genimage -o rhels9 -p c on a server with matching architecture\n", rootimg.display())
    );
    std::fs::create_dir_all(&rootimg).unwrap();
    let o = d.run("packimage", &["img"]);
    assert!(o.stderr.contains("Could not find the script"), "{o:?}");
    d.write("install/postscripts/xcatdsklspost", "x");
    let o = d.run("packimage", &["img"]);
    assert!(
        o.stderr
            .starts_with("Error: Cannot use exlist /nonexistent.exlist:"),
        "{o:?}"
    );
    assert_eq!(o.code, 1);
    assert_eq!(
        std::fs::read_dir(rootimg.parent().unwrap())
            .unwrap()
            .count(),
        1,
        "nothing written"
    );
}

#[test]
fn every_format_extracts_to_the_tree_minus_the_exlist() {
    let n = Node::new(&[], &[("timezone", "Europe/Berlin")]);
    let before = manifest(&n.rootimg(), true);
    for (m, c, file) in [
        ("cpio", "gzip", "rootimg.cpio.gz"),
        ("cpio", "xz", "rootimg.cpio.xz"),
        ("tar", "pigz", "rootimg.tar.gz"),
        ("tar", "xz", "rootimg.tar.xz"),
        ("squashfs", "gzip", "rootimg.sfs"),
    ] {
        if m == "squashfs" && !cmd_exists("unsquashfs") {
            skip("squashfs-tools not installed");
            continue;
        }
        let o = n.pack(&["-m", m, "-c", c]);
        assert_eq!(o.code, 0, "{m}/{c}: {o:?}");
        let lines = o.lines();
        assert_eq!(
            lines[0],
            format!("Packing contents of {}", n.rootimg().display())
        );
        assert_eq!(lines[1], format!("archive method:{m}"));
        if m != "squashfs" {
            assert_eq!(lines[2], format!("compress method:{c}"));
        }
        assert!(lines.last().unwrap().starts_with("Packed "), "{lines:?}");
        assert!(
            o.stderr.contains("Warning: 1 sockets skipped"),
            "{}",
            o.stderr
        );
        if m == "cpio" && cmd_exists("setcap") {
            assert!(o.stderr.contains("cpio cannot carry"), "{}", o.stderr);
        }
        // Only the new format is left; mode 0644.
        // Beside them the segment cache's index (tests/packimage_cache.rs), for cpio and tar.
        let mut names: Vec<String> = std::fs::read_dir(&n.dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name != ".packcache")
            .collect();
        names.sort();
        assert_eq!(
            names,
            vec!["rootimg".to_string(), file.to_string()],
            "{m}/{c}"
        );
        assert_eq!(
            n.dir.join(".packcache").exists(),
            m != "squashfs",
            "{m}/{c}"
        );
        let archive = n.dir.join(file);
        assert_eq!(std::fs::metadata(&archive).unwrap().mode() & 0o777, 0o644);

        let out = n.d.path().join(format!("x-{m}-{c}"));
        let x = extract(&archive, &out);
        assert_eq!(x.code, 0, "{m}/{c}: {x:?}");
        let xattrs = m == "tar";
        let mut got = manifest(&out, xattrs);
        strip_injected(&mut got);
        let mut want = expected(&n.rootimg(), xattrs, Some("Europe/Berlin"));
        // squashfs stores hard links as links; it has no sparse files; all formats keep mtime
        // of files. cpio drops xattrs (compared only for tar).
        if m == "squashfs" {
            got.values_mut()
                .for_each(|v| *v = v.split(" mtime=").next().unwrap().to_string());
            want.values_mut()
                .for_each(|v| *v = v.split(" mtime=").next().unwrap().to_string());
        }
        assert_eq!(got, want, "{m}/{c}: extracted tree differs");
    }
    assert_eq!(
        before,
        manifest(&n.rootimg(), true),
        "rootimg must not change"
    );
}

#[test]
fn injected_content_is_what_xcat_writes() {
    let n = Node::new(&[], &[("timezone", "Europe/Berlin")]);
    let o = n.pack(&["-m", "tar"]);
    assert_eq!(o.code, 0, "{o:?}");
    let out = n.d.path().join("x");
    assert_eq!(extract(&n.dir.join("rootimg.tar.gz"), &out).code, 0);
    let info = std::fs::read_to_string(out.join("opt/xcat/xcatinfo")).unwrap();
    let lines: Vec<&str> = info.lines().collect();
    assert_eq!(lines[0], format!("IMAGENAME='{NAME}'"));
    assert!(
        lines[1].starts_with("IMAGEUUID='") && lines[1].len() == "IMAGEUUID=''".len() + 36,
        "{info}"
    );
    assert!(lines[2].starts_with("TIMESTAMP='"), "{info}");
    let shadow = std::fs::read_to_string(out.join("etc/shadow")).unwrap();
    assert_eq!(
        shadow,
        "root:cluster:13880:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\n"
    );
    assert_eq!(
        std::fs::metadata(out.join("etc/shadow")).unwrap().mode() & 0o777,
        0o640,
        "shadow keeps its mode"
    );
    assert_eq!(
        std::fs::read_link(out.join("etc/localtime")).unwrap(),
        PathBuf::from("../usr/share/zoneinfo/Europe/Berlin")
    );
    assert_eq!(
        std::fs::read_to_string(out.join("usr/share/zoneinfo/Europe/Berlin")).unwrap(),
        "TZif-fake\n"
    );
    assert!(
        !out.join("usr/share/zoneinfo/UTC").exists(),
        "the rest of zoneinfo stays excluded"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("opt/xcat/xcatdsklspost")).unwrap(),
        "#!/bin/sh\necho dskls\n"
    );
    assert_eq!(
        std::fs::metadata(out.join("opt/xcat/xcatdsklspost"))
            .unwrap()
            .mode()
            & 0o777,
        0o755
    );
    assert_eq!(
        std::fs::read_to_string(out.join("xcatpost/syslog")).unwrap(),
        "syslog script\n"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("xcatpost/_xcat/ca.pem")).unwrap(),
        "pem\n"
    );
    assert!(!out.join("xcatpost/.hidden").exists());
    // A second pack writes a new UUID.
    assert_eq!(n.pack(&["-m", "tar"]).code, 0);
    let out2 = n.d.path().join("x2");
    assert_eq!(extract(&n.dir.join("rootimg.tar.gz"), &out2).code, 0);
    let info2 = std::fs::read_to_string(out2.join("opt/xcat/xcatinfo")).unwrap();
    assert_ne!(info.lines().nth(1), info2.lines().nth(1));
    // Nothing of this is in the tree itself.
    for p in ["xcatpost", "opt/xcat", "etc/localtime"] {
        assert!(!n.rootimg().join(p).exists(), "{p} written into rootimg");
    }
    assert_eq!(
        std::fs::read_to_string(n.rootimg().join("etc/shadow")).unwrap(),
        "root:!:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\n"
    );
}

#[test]
fn secureroot_and_system_password() {
    let n = Node::new(&[], &[("secureroot", "1")]);
    let o = n.pack(&["-m", "tar"]);
    assert_eq!(o.code, 0, "{o:?}");
    assert!(o.stdout.contains(
        "No timezone defined in site table, skipping timezone /etc/localtime configuration"
    ));
    assert!(o
        .stdout
        .contains("No timezone defined in site table, skipping timezone exlist configuration"));
    let out = n.d.path().join("x");
    assert_eq!(extract(&n.dir.join("rootimg.tar.gz"), &out).code, 0);
    assert!(std::fs::read_to_string(out.join("etc/shadow"))
        .unwrap()
        .starts_with("root:*:13880:"));

    let n = Node::new(&[], &[]);
    let text = std::fs::read_to_string(n.d.defs_path()).unwrap();
    let hash = "$6$salt$abcdefghijklmnop";
    std::fs::write(n.d.defs_path(), format!("{text}system-root:\n    objtype=passwd\n    key=system\n    username=root\n    password={hash}\n\n")).unwrap();
    assert_eq!(n.pack(&["-m", "tar"]).code, 0);
    let out = n.d.path().join("y");
    assert_eq!(extract(&n.dir.join("rootimg.tar.gz"), &out).code, 0);
    assert!(std::fs::read_to_string(out.join("etc/shadow"))
        .unwrap()
        .starts_with(&format!("root:{hash}:13880:")));
}

#[test]
fn synclists_and_nosyncfiles() {
    let n = Node::new(&[], &[]);
    n.d.write("sync/motd", "synced motd\n");
    n.d.write("sync/conf/a.conf", "a\n");
    n.d.write("sync/conf/b.conf", "b\n");
    n.d.write("sync/append.txt", "appended\n");
    let s = n.d.path().join("sync");
    let list = n.d.write(
        "compute.synclist",
        &format!(
            "# image sync\n$SRC/motd -> /etc/motd\n{0}/conf/*.conf -> /etc/app/\n{0}/motd -> (node1) /etc/node-only\nAPPEND:\n{0}/append.txt -> /etc/hostname\n",
            s.display()
        ),
    );
    let text = std::fs::read_to_string(n.d.defs_path()).unwrap();
    let extra = format!(
        "    provmethod=netboot\n    synclists={}\n    environvar=SRC={}\n",
        list.display(),
        s.display()
    );
    std::fs::write(
        n.d.defs_path(),
        text.replacen("    provmethod=netboot\n", &extra, 1),
    )
    .unwrap();
    let o = n.pack(&["-m", "tar"]);
    assert_eq!(o.code, 0, "{o:?}");
    assert!(
        o.stderr
            .contains("node-specific line (node1) does not apply to an image"),
        "{}",
        o.stderr
    );
    assert!(
        o.stderr.contains("sections are not applied to images"),
        "{}",
        o.stderr
    );
    let out = n.d.path().join("x");
    assert_eq!(extract(&n.dir.join("rootimg.tar.gz"), &out).code, 0);
    assert_eq!(
        std::fs::read_to_string(out.join("etc/motd")).unwrap(),
        "synced motd\n"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("etc/app/a.conf")).unwrap(),
        "a\n"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("etc/app/b.conf")).unwrap(),
        "b\n"
    );
    assert!(!out.join("etc/node-only").exists());
    assert_eq!(
        std::fs::read_to_string(out.join("etc/hostname")).unwrap(),
        "image\n",
        "APPEND is not applied to images"
    );
    assert!(!n.rootimg().join("etc/motd").exists());
    assert_eq!(n.pack(&["-m", "tar", "--nosyncfiles"]).code, 0);
    let out = n.d.path().join("y");
    assert_eq!(extract(&n.dir.join("rootimg.tar.gz"), &out).code, 0);
    assert!(!out.join("etc/motd").exists());
}

#[test]
fn dry_run_and_explain_write_nothing() {
    let n = Node::new(&[], &[]);
    let o = n.pack(&[
        "--dry-run",
        "--explain",
        "./usr/share/doc/pkg/README",
        "--explain",
        "usr/share/doc/keepme/LICENSE",
    ]);
    assert_eq!(o.code, 0, "{o:?}");
    assert!(
        o.stdout
            .contains("./usr/share/doc/pkg/README: excluded by ./usr/share/doc*"),
        "{}",
        o.stdout
    );
    assert!(
        o.stdout
            .contains("./usr/share/doc/keepme/LICENSE: included back by +./usr/share/doc/keep*"),
        "{}",
        o.stdout
    );
    assert!(o.stdout.lines().any(|l| l == "./usr/bin/true"));
    assert!(!o.stdout.lines().any(|l| l == "./tmp/junk"));
    assert_eq!(std::fs::read_dir(&n.dir).unwrap().count(), 1);
}

#[test]
fn publish_is_atomic_and_failures_keep_the_old_image() {
    let n = Node::new(&[], &[]);
    assert_eq!(n.pack(&["-m", "tar", "-c", "xz"]).code, 0);
    let old = std::fs::read(n.dir.join("rootimg.tar.xz")).unwrap();
    // A stale temp file from a killed run is cleaned by the next run.
    std::fs::write(n.dir.join(".rootimg.cpio.gz.deadbeef.tmp"), "partial").unwrap();
    // An unreadable exlist include makes the next pack fail before it writes anything.
    std::fs::remove_file(n.d.path().join("more.exlist")).unwrap();
    let o = n.pack(&["-m", "cpio"]);
    assert_eq!(o.code, 1);
    assert!(o.stderr.contains("more.exlist"), "{}", o.stderr);
    assert_eq!(std::fs::read(n.dir.join("rootimg.tar.xz")).unwrap(), old);
    n.d.write("more.exlist", "./var/cache*\n");
    assert_eq!(n.pack(&["-m", "cpio"]).code, 0);
    let names: Vec<String> = std::fs::read_dir(&n.dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let mut names = names;
    names.sort();
    // The segment cache's directory holds only the new image's index.
    assert_eq!(names, [".packcache", "rootimg", "rootimg.cpio.gz"]);
    let cache: Vec<_> = std::fs::read_dir(n.dir.join(".packcache"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(cache, ["rootimg.cpio.gz.idx"]);
}

#[test]
fn kill_mid_pack_keeps_the_previous_image() {
    let n = Node::new(&[], &[]);
    // Make the tree big enough that a pack takes a while.
    let bulk = n.rootimg().join("var/lib/bulk");
    std::fs::create_dir_all(&bulk).unwrap();
    let mut x: u64 = 7;
    for i in 0..10 {
        let mut data = vec![0u8; 2 << 20];
        for b in data.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        std::fs::write(bulk.join(format!("f{i}")), data).unwrap();
    }
    assert_eq!(n.pack(&["-m", "tar", "-c", "xz"]).code, 0);
    let old = std::fs::read(n.dir.join("rootimg.tar.xz")).unwrap();
    for delay_ms in [50u64, 300, 800] {
        let mut child =
            n.d.command("packimage", &[NAME, "-m", "tar", "-c", "xz"])
                .spawn()
                .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(
            std::fs::read(n.dir.join("rootimg.tar.xz")).unwrap(),
            old,
            "after kill at {delay_ms} ms"
        );
    }
    // SIGTERM is a clean cancel: an error, no temp file.
    let child =
        n.d.command("packimage", &[NAME, "-m", "tar", "-c", "xz"])
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    if out.status.code() == Some(1) {
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("interrupted"),
            "{:?}",
            out
        );
        assert!(std::fs::read_dir(&n.dir).unwrap().all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .ends_with(".tmp")));
    }
    assert_eq!(std::fs::read(n.dir.join("rootimg.tar.xz")).unwrap(), old);
    // The next run succeeds and leaves no temp file behind.
    assert_eq!(n.pack(&["-m", "tar", "-c", "xz"]).code, 0);
    let names: Vec<String> = std::fs::read_dir(&n.dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
}

#[test]
fn lock_is_shared_with_xcat() {
    let n = Node::new(&[], &[]);
    let held = xcat_imaged::lock::acquire_in(&n.d.locks(), &n.rootimg()).unwrap();
    let o = n.pack(&[]);
    assert_eq!(o.code, 1);
    assert!(
        o.stderr.contains(
            "failed to acquire lock, seems there is another genimage/packimage/rmimage process"
        ),
        "{}",
        o.stderr
    );
    drop(held);
    assert_eq!(n.pack(&[]).code, 0);
}

#[test]
fn statelite_link_entries_go_back_to_their_defaults() {
    use xcat_imaged::protocol::{Call, FromShim, Reply};
    let n = Node::new(&[], &[]);
    let r = n.rootimg();
    std::fs::create_dir_all(r.join(".statelite")).unwrap();
    std::fs::write(r.join(".statelite/litefile.save"), "saved\n").unwrap();
    std::fs::create_dir_all(r.join(".default/etc/lite")).unwrap();
    std::fs::write(r.join(".default/etc/lite/conf"), "stateless default\n").unwrap();
    std::fs::create_dir_all(r.join("etc/lite")).unwrap();
    std::fs::write(r.join("etc/lite/conf"), "statelite link target\n").unwrap();
    std::fs::write(r.join("etc/lite/extra"), "only in the treated tree\n").unwrap();
    std::fs::write(r.join("etc/tmpfs-only"), "not a link entry\n").unwrap();
    let mut defs = n.d.read_defs();
    let mut from_defs = crate::util::answer_from(&mut defs);
    let synth = "rhels9-x86_64-statelite-compute";
    let mut s = crate::util::Served::start(&n.d.locks());
    s.send(&FromShim::Request(crate::util::request(
        "packimage",
        &[NAME, "-m", "tar"],
    )));
    let t = s.finish(|c| match c {
        Call::TableList { table, filter, .. } if table == "litefile" => {
            let rows = match filter[0].as_str() {
                "image==ALL" => serde_json::json!([{"image": "ALL", "file": "/etc/lite/", "options": "tmpfs,link"}]),
                f if f == format!("image=={synth}") => serde_json::json!([
                    {"image": synth, "file": "/etc/lite/conf", "options": "link"},
                    {"image": synth, "file": "/etc/tmpfs-only", "options": "tmpfs"}
                ]),
                _ => serde_json::json!([]),
            };
            Reply { id: 0, ok: true, result: Some(rows), error: None }
        }
        other => from_defs(other),
    });
    assert_eq!(t.done, Some(0), "{t:?}");
    let out = n.d.path().join("x");
    assert_eq!(extract(&n.dir.join("rootimg.tar.gz"), &out).code, 0);
    // /etc/lite/ is a top-level link entry: its default replaces the treated directory;
    // /etc/lite/conf is its child and is not handled on its own; tmpfs-only is not a link.
    assert_eq!(
        std::fs::read_to_string(out.join("etc/lite/conf")).unwrap(),
        "stateless default\n"
    );
    assert!(!out.join("etc/lite/extra").exists());
    assert_eq!(
        std::fs::read_to_string(out.join("etc/tmpfs-only")).unwrap(),
        "not a link entry\n"
    );
    assert!(!out.join(".statelite").exists() && !out.join(".default").exists());
    assert_eq!(
        std::fs::read_to_string(r.join("etc/lite/conf")).unwrap(),
        "statelite link target\n",
        "tree untouched"
    );
}

#[test]
fn tracker_writes_metainfo_beside_the_cpio() {
    if !cmd_exists("ctorrent") && crate::util::skip("ctorrent not installed") {
        return;
    }
    let n = Node::new(&[], &[]);
    let o = n.pack(&["--tracker", "http://127.0.0.1:6969/announce"]);
    assert_eq!(o.code, 0, "{o:?}");
    let meta = n.dir.join("rootimg.cpio.gz.metainfo");
    let data = std::fs::read(&meta).unwrap();
    assert!(data.starts_with(b"d8:announce"), "a bencoded torrent");
    assert_eq!(std::fs::metadata(&meta).unwrap().mode() & 0o777, 0o644);
    // A later pack in another format removes the stale metainfo too.
    assert_eq!(n.pack(&["-m", "tar"]).code, 0);
    assert!(!meta.exists());
}

#[test]
fn two_packs_of_one_image_exclude_each_other() {
    let n = Node::new(&[], &[]);
    let children: Vec<_> = (0..2)
        .map(|_| {
            n.d.command("packimage", &[NAME, "-m", "tar", "-c", "xz"])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outs: Vec<_> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    let ok = outs.iter().filter(|o| o.status.success()).count();
    assert!(ok >= 1, "{outs:?}");
    for o in outs.iter().filter(|o| !o.status.success()) {
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains(
                "failed to acquire lock, seems there is another genimage/packimage/rmimage process"
            ),
            "{err}"
        );
    }
    let out = n.d.path().join("x");
    assert_eq!(extract(&n.dir.join("rootimg.tar.xz"), &out).code, 0);
}
