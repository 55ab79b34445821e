//! imgexport end to end with the real binary: the spec's §7 fixture and its variants
//! (members, manifest bytes, messages, destinations, rootimg choice, extras, statelite, kits,
//! `-p`, collisions, checksums, scp), extracted with GNU tar and compared with the sources;
//! failures that leave nothing behind, kill mid-export.

use crate::util::{cmd_exists, skip, Dir, Output, Served};
use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use xcat_imaged::defs::Defs;
use xcat_imaged::protocol::{Call, FromShim, Reply, Request, Row, ToShim};

const IMG: &str = "rhels8.6.0-x86_64-netboot-compute";

/// The §7 management node: an image with pkglist, exlist and postinstall, a rootimgdir with
/// kernel, initrd-stateless.gz and rootimg.cpio.gz plus decoys, and an empty client cwd.
struct Node {
    d: Dir,
    dir: PathBuf,
    lists: PathBuf,
    cwd: PathBuf,
}

fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut c = libdeflater::Compressor::new(libdeflater::CompressionLvl::default());
    let mut out = vec![0u8; c.gzip_compress_bound(data.len())];
    let n = c.gzip_compress(data, &mut out).unwrap();
    out.truncate(n);
    out
}

impl Node {
    fn new() -> Node {
        Node::with(&[], &[])
    }

    /// With extra osimage attributes and site attributes.
    fn with(attrs: &[(&str, &str)], site: &[(&str, &str)]) -> Node {
        let d = Dir::new();
        let dir = d.install().join("netboot/rhels8.6.0/x86_64/compute");
        let lists = d.path().join("opt/xcat/share/xcat/netboot/rh");
        let cwd = d.path().join("cwd");
        std::fs::create_dir_all(dir.join("rootimg/etc")).unwrap();
        std::fs::create_dir_all(&lists).unwrap();
        std::fs::create_dir_all(&cwd).unwrap();
        std::fs::write(dir.join("kernel"), noise(300_000, 1)).unwrap();
        std::fs::write(dir.join("initrd-stateless.gz"), gzip(&noise(200_000, 2))).unwrap();
        std::fs::write(
            dir.join("rootimg.cpio.gz"),
            gzip(&b"rootimg content ".repeat(40_000)),
        )
        .unwrap();
        std::fs::write(dir.join("initrd-statelite.gz"), "decoy").unwrap();
        std::fs::write(dir.join("rootimg/etc/hosts"), "127.0.0.1 localhost\n").unwrap();
        std::fs::write(
            lists.join("compute.rhels8.x86_64.pkglist"),
            format!("bash\n#INCLUDE:{}/extra.pkglist#\n", lists.display()),
        )
        .unwrap();
        std::fs::write(lists.join("extra.pkglist"), "vim\n").unwrap();
        std::fs::write(
            lists.join("compute.rhels8.x86_64.exlist"),
            "./usr/share/doc*\n",
        )
        .unwrap();
        std::fs::write(
            lists.join("compute.rhels8.x86_64.postinstall"),
            "#!/bin/sh\necho postinstall\n",
        )
        .unwrap();
        std::fs::set_permissions(
            lists.join("compute.rhels8.x86_64.postinstall"),
            PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let n = Node { d, dir, lists, cwd };
        n.defs(attrs, site);
        n
    }

    fn list(&self, ext: &str) -> String {
        format!("{}/compute.rhels8.x86_64.{ext}", self.lists.display())
    }

    /// The definitions: the fixture's rows, `attrs` added (an empty value drops one).
    fn defs(&self, attrs: &[(&str, &str)], site: &[(&str, &str)]) {
        let install = self.d.install();
        let mut a: BTreeMap<String, String> = [
            ("imagetype", "linux".to_string()),
            ("osarch", "x86_64".into()),
            ("osdistroname", "rhels8.6.0-x86_64".into()),
            ("osname", "Linux".into()),
            ("osvers", "rhels8.6.0".into()),
            ("profile", "compute".into()),
            ("provmethod", "netboot".into()),
            ("exlist", self.list("exlist")),
            ("pkgdir", format!("{}/rhels8.6.0/x86_64", install.display())),
            ("pkglist", self.list("pkglist")),
            ("postinstall", self.list("postinstall")),
            ("rootimgdir", self.dir.display().to_string()),
            (
                "otherpkgdir",
                format!("{}/post/otherpkgs/rhels8.6.0/x86_64", install.display()),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        for (k, v) in attrs {
            if v.is_empty() {
                a.remove(*k);
            } else {
                a.insert(k.to_string(), v.to_string());
            }
        }
        let mut s = format!("{IMG}:\n    objtype=osimage\n");
        for (k, v) in &a {
            s.push_str(&format!("    {k}={v}\n"));
        }
        s.push('\n');
        self.d.defs_with_site(site, &s);
    }

    /// Runs imgexport standalone with the client in `cwd`.
    fn export(&self, args: &[&str]) -> Output {
        Output::of(self.command(args))
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = self.d.command("imgexport", args);
        c.current_dir(&self.cwd)
            .env("XCATROOT", self.d.path().join("opt/xcat"));
        c
    }

    fn bundle(&self) -> PathBuf {
        self.cwd.join(format!("{IMG}.tgz"))
    }

    /// What the cwd holds.
    fn cwd_names(&self) -> Vec<String> {
        names(&self.cwd)
    }
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// `tar -tzf` of a bundle, with the leading `./` dropped (and the `./` entry, if any).
fn members(bundle: &Path) -> BTreeSet<String> {
    let out = Command::new("tar")
        .arg("-tzf")
        .arg(bundle)
        .output()
        .unwrap();
    assert!(out.status.success(), "tar -tzf {}", bundle.display());
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| l.strip_prefix("./").unwrap_or(l).to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

/// Extracts a bundle with GNU tar (as imgimport does, `tar zxf`) into a new directory.
fn extract(bundle: &Path, into: &Path) {
    std::fs::create_dir_all(into).unwrap();
    let st = Command::new("tar")
        .arg("zxf")
        .arg(bundle)
        .current_dir(into)
        .status()
        .unwrap();
    assert!(st.success(), "tar zxf {}", bundle.display());
}

fn expected_manifest(n: &Node) -> String {
    let dir = n.dir.display();
    let l = n.lists.display();
    let install = n.d.install();
    let install = install.display();
    format!(
        "<?xml version=\"1.0\"?>
<xcatimage>
  <kernel>{dir}/kernel</kernel>
  <linuximage>
    <exlist>{l}/compute.rhels8.x86_64.exlist</exlist>
    <imagename>{IMG}</imagename>
    <otherpkgdir>{install}/post/otherpkgs/rhels8.6.0/x86_64</otherpkgdir>
    <pkgdir>{install}/rhels8.6.0/x86_64</pkgdir>
    <pkglist>{l}/compute.rhels8.x86_64.pkglist</pkglist>
    <postinstall>{l}/compute.rhels8.x86_64.postinstall</postinstall>
    <rootimgdir>{dir}</rootimgdir>
  </linuximage>
  <osimage>
    <imagename>{IMG}</imagename>
    <imagetype>linux</imagetype>
    <osarch>x86_64</osarch>
    <osdistroname>rhels8.6.0-x86_64</osdistroname>
    <osname>Linux</osname>
    <osvers>rhels8.6.0</osvers>
    <profile>compute</profile>
    <provmethod>netboot</provmethod>
  </osimage>
  <ramdisk>{dir}/initrd-stateless.gz</ramdisk>
  <rootimg>{dir}/rootimg.cpio.gz</rootimg>
</xcatimage>
"
    )
}

#[test]
fn the_reference_fixture() {
    let n = Node::new();
    let o = n.export(&[IMG]);
    assert_eq!(o.code, 0, "{o:?}");
    assert_eq!(o.stderr, "", "{o:?}");
    let lines = o.lines();
    let dir = n.dir.display();
    let want = [
        format!("Exporting {IMG} to {}...", n.cwd.display()),
        format!("{dir}/kernel"),
        format!("{dir}/initrd-stateless.gz"),
        format!("{dir}/rootimg.cpio.gz"),
        n.list("pkglist"),
        n.list("postinstall"),
        n.list("exlist"),
        format!("Compressing {IMG} bundle.  Please be patient."),
    ];
    assert_eq!(lines[..want.len()], want[..], "{lines:#?}");
    assert!(lines[want.len()].starts_with(&format!("Bundle {}: 8 members", n.bundle().display())));
    assert_eq!(lines.last(), Some(&"Done!"));
    assert_eq!(lines.len(), want.len() + 2);

    // Only the bundle in cwd, mode 0644, a gzip file.
    assert_eq!(n.cwd_names(), [format!("{IMG}.tgz")]);
    let md = std::fs::metadata(n.bundle()).unwrap();
    assert_eq!(md.permissions().mode() & 0o777, 0o644);
    let head = std::fs::read(n.bundle()).unwrap();
    assert_eq!(&head[..2], &[0x1f, 0x8b]);
    assert!(Command::new("gzip")
        .arg("-t")
        .arg(n.bundle())
        .status()
        .unwrap()
        .success());

    let m = members(&n.bundle());
    let want: BTreeSet<String> = [
        "",
        "/manifest.xml",
        "/kernel",
        "/initrd-stateless.gz",
        "/rootimg.cpio.gz",
        "/compute.rhels8.x86_64.pkglist",
        "/compute.rhels8.x86_64.exlist",
        "/compute.rhels8.x86_64.postinstall",
    ]
    .iter()
    .map(|s| {
        if s.is_empty() {
            format!("{IMG}/")
        } else {
            format!("{IMG}{s}")
        }
    })
    .collect();
    assert_eq!(m, want);
    for bad in [
        "rootimg/",
        "initrd-statelite.gz",
        "extra.pkglist",
        "extra/",
        "rootimgtree.gz",
        "litefile.csv",
        "rootimg.sfs",
        "rootimg.gz",
    ] {
        assert!(
            !m.contains(&format!("{IMG}/{bad}")),
            "{bad} must not be exported"
        );
    }
    assert!(m.iter().all(|p| p.starts_with(&format!("{IMG}/"))));

    // Every member equals its source; the manifest is the stock bytes.
    let x = n.d.path().join("x");
    extract(&n.bundle(), &x);
    let got = x.join(IMG);
    for (member, src) in [
        ("kernel", n.dir.join("kernel")),
        ("initrd-stateless.gz", n.dir.join("initrd-stateless.gz")),
        ("rootimg.cpio.gz", n.dir.join("rootimg.cpio.gz")),
        (
            "compute.rhels8.x86_64.pkglist",
            n.lists.join("compute.rhels8.x86_64.pkglist"),
        ),
        (
            "compute.rhels8.x86_64.exlist",
            n.lists.join("compute.rhels8.x86_64.exlist"),
        ),
        (
            "compute.rhels8.x86_64.postinstall",
            n.lists.join("compute.rhels8.x86_64.postinstall"),
        ),
    ] {
        assert_eq!(
            std::fs::read(got.join(member)).unwrap(),
            std::fs::read(&src).unwrap(),
            "{member}"
        );
    }
    assert!(
        std::fs::read_to_string(got.join("compute.rhels8.x86_64.pkglist"))
            .unwrap()
            .contains("#INCLUDE:")
    );
    assert_eq!(
        std::fs::metadata(got.join("compute.rhels8.x86_64.postinstall"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o755
    );
    assert_eq!(
        std::fs::read_to_string(got.join("manifest.xml")).unwrap(),
        expected_manifest(&n)
    );
    // No `./` member: extracting does not change the mode of the directory it happens in.
    let listing = Command::new("tar")
        .arg("-tzf")
        .arg(n.bundle())
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&listing.stdout)
        .lines()
        .any(|l| l == "./"));
}

#[test]
fn usage_and_options() {
    let n = Node::new();
    let usage: String = xcat_imaged::commands::imgexport::USAGE
        .iter()
        .map(|l| format!("{l}\n"))
        .collect();
    let o = n.export(&[]);
    assert_eq!((o.code, o.stdout.as_str()), (1, usage.as_str()), "{o:?}");
    for flag in ["-h", "--help", "-?", "--HELP"] {
        let o = n.export(&[flag, IMG]);
        assert_eq!(
            (o.code, o.stdout.as_str()),
            (0, usage.as_str()),
            "{flag}: {o:?}"
        );
    }
    assert!(n.cwd_names().is_empty());
    // An unknown option is a warning (stock ignores it); its value becomes a positional.
    let o = n.export(&[IMG, "-E", "x.tgz"]);
    assert_eq!(o.code, 0, "{o:?}");
    assert!(o.stderr.contains("Warning: Unknown option: E"), "{o:?}");
    assert_eq!(n.cwd_names(), ["x.tgz"]);
    // Options without an image name: stock's messages.
    let o = n.export(&["-v"]);
    assert_eq!(o.code, 1);
    assert_eq!(o.stdout, format!("Exporting  to {}...\n", n.cwd.display()));
    assert_eq!(
        o.stderr,
        "Error: Cannot find image '' from the osimage table.\n"
    );
    let o = n.export(&["nosuch"]);
    assert_eq!(
        o.stderr,
        "Error: Cannot find image 'nosuch' from the osimage table.\n"
    );
}

#[test]
fn definition_errors_are_reported_together() {
    let n = Node::with(&[("provmethod", ""), ("profile", ""), ("osarch", "")], &[]);
    let o = n.export(&[IMG]);
    assert_eq!(o.code, 1);
    assert_eq!(
        o.stderr,
        format!(
            "Error: The 'provmethod' field is not set for '{IMG}' in the osimage table.\n\
             Error: The 'profile' field is not set for '{IMG}' in the osimage table.\n\
             Error: The 'osarch' field is not set for '{IMG}' in the osimage table.\n\
             Error: Exporting images with 'provemethod'  is not supported. Hint: install, netboot, statelite, or raw\n"
        )
    );
    let n = Node::with(&[("provmethod", "sysclone")], &[]);
    let o = n.export(&[IMG]);
    assert_eq!(
        o.stderr,
        "Error: Exporting images with 'provemethod' sysclone is not supported for osarch 'x86_64'\n"
    );
    assert!(n.cwd_names().is_empty());
}

#[test]
fn missing_files_fail_before_anything_is_written() {
    // See: spec §3.5, stock writes <rootimg>…/compute/</rootimg> and says Done!.
    let n = Node::new();
    std::fs::remove_file(n.dir.join("rootimg.cpio.gz")).unwrap();
    let o = n.export(&[IMG]);
    assert_eq!(o.code, 1);
    assert!(o.stderr.contains(&format!(
        "Error: Couldn't find compressed rootimg for {IMG}"
    )));
    assert!(!o.stdout.contains("Done!"));
    assert!(n.cwd_names().is_empty());

    // A listed file that is gone: stock says "Skip." and writes a bundle that does not import.
    let n = Node::new();
    std::fs::remove_file(n.lists.join("compute.rhels8.x86_64.exlist")).unwrap();
    let o = n.export(&[IMG]);
    assert_eq!(o.code, 1);
    assert_eq!(
        o.stderr,
        format!(
            "Error: Couldn't find file {} for {IMG}.\n",
            n.list("exlist")
        )
    );
    assert!(n.cwd_names().is_empty());

    let n = Node::new();
    std::fs::remove_file(n.dir.join("kernel")).unwrap();
    std::fs::remove_file(n.dir.join("initrd-stateless.gz")).unwrap();
    let o = n.export(&[IMG]);
    assert_eq!(
        o.stderr,
        format!(
            "Error: Couldn't find ramdisk (initrd-stateless.gz) for  {IMG}\nError: Couldn't find kernel (kernel) for  {IMG}\n"
        )
    );

    // A missing extra stops the export too (stock exports without it, exit 1).
    let n = Node::new();
    let o = n.export(&[IMG, "-e", "/nonexistent/file"]);
    assert_eq!(o.code, 1);
    assert!(
        o.stderr
            .starts_with("Error: Can not find Extra file /nonexistent/file.\n"),
        "{o:?}"
    );
    assert!(n.cwd_names().is_empty());
}

#[test]
fn destinations() {
    let n = Node::new();
    assert_eq!(n.export(&[IMG, "sub/dir/foo.tgz"]).code, 0);
    assert_eq!(n.cwd_names(), ["foo.tgz"]);
    std::fs::remove_file(n.cwd.join("foo.tgz")).unwrap();
    assert_eq!(n.export(&[IMG, "x/"]).code, 0);
    assert_eq!(n.cwd_names(), [format!("{IMG}.tgz")]);
    std::fs::remove_file(n.bundle()).unwrap();
    // A name stock would hand to a shell: here it is only a name.
    // See: spec §6.1, `imgexport img1 'a.tgz;echo INJECTED…'` ran the echo as root.
    let evil = "a.tgz;touch INJECTED;x";
    let o = n.export(&[IMG, evil]);
    assert_eq!(o.code, 0, "{o:?}");
    assert_eq!(n.cwd_names(), [evil]);
    assert!(!n.d.path().join("INJECTED").exists() && !n.cwd.join("INJECTED").exists());
    for bad in ["..", "x/.."] {
        let o = n.export(&[IMG, bad]);
        assert_eq!(o.code, 1, "{bad}");
        assert!(o.stderr.contains("Invalid bundle name"), "{bad}: {o:?}");
    }
    // An existing bundle is replaced (atomically): the new bytes, nothing else left.
    std::fs::write(n.cwd.join("old.tgz"), "old").unwrap();
    assert_eq!(n.export(&[IMG, "old.tgz"]).code, 0);
    assert_eq!(members(&n.cwd.join("old.tgz")).len(), 8);
    assert_eq!(n.cwd_names(), [evil, "old.tgz"]);
}

#[test]
fn rootimg_choice_order() {
    let cases: &[(&[&str], &str)] = &[
        (
            &[
                "rootimg.cpio.gz",
                "rootimg.cpio.xz",
                "rootimg.tar.gz",
                "rootimg.sfs",
                "rootimg.gz",
            ],
            "rootimg.cpio.gz",
        ),
        (&["rootimg.sfs", "rootimg.gz"], "rootimg.sfs"),
        (
            &["rootimg.sfs", "rootimg.gz", "rootimg.tar.xz"],
            "rootimg.tar.xz",
        ),
        (&["rootimg.gz"], "rootimg.gz"),
    ];
    for (present, chosen) in cases {
        let n = Node::new();
        std::fs::remove_file(n.dir.join("rootimg.cpio.gz")).unwrap();
        for f in *present {
            std::fs::write(n.dir.join(f), format!("{f} content")).unwrap();
        }
        let o = n.export(&[IMG]);
        assert_eq!(o.code, 0, "{present:?}: {o:?}");
        let m = members(&n.bundle());
        let roots: Vec<&String> = m.iter().filter(|p| p.contains("/rootimg.")).collect();
        assert_eq!(roots, [&format!("{IMG}/{chosen}")], "{present:?}");
        let x = n.d.path().join("x");
        extract(&n.bundle(), &x);
        let man = std::fs::read_to_string(x.join(IMG).join("manifest.xml")).unwrap();
        assert!(
            man.contains(&format!("<rootimg>{}/{chosen}</rootimg>", n.dir.display())),
            "{man}"
        );
    }
}

#[test]
fn extras() {
    let n = Node::new();
    let ps = n.d.write("install/postscripts/myscript1", "#!/bin/sh\n");
    let mydir = n.d.path().join("srv/mydir");
    n.d.write("srv/mydir/a", "a\n");
    n.d.write("srv/mydir/sub/b", "b\n");
    n.d.write("srv/mydir/.hidden", "h\n");
    std::os::unix::fs::symlink("a", mydir.join("link")).unwrap();
    n.d.write("cwd/relative.conf", "rel\n");
    let spec = format!("{}:/usr/mydir", mydir.display());
    let o = n.export(&[
        IMG,
        "-e",
        &ps.display().to_string(),
        "--extra",
        &spec,
        "-e",
        "relative.conf",
    ]);
    assert_eq!(o.code, 0, "{o:?}");
    assert!(
        o.stderr.contains(".hidden left out"),
        "dotfiles are named: {o:?}"
    );
    let m = members(&n.bundle());
    let rel = |p: &Path| p.display().to_string().trim_start_matches('/').to_string();
    for want in [
        "extra/".to_string(),
        "extra/myscript1".to_string(),
        "extra/relative.conf".to_string(),
        format!("extra/{}/", rel(&mydir)),
        format!("extra/{}/a", rel(&mydir)),
        format!("extra/{}/link", rel(&mydir)),
        format!("extra/{}/sub/b", rel(&mydir)),
    ] {
        assert!(m.contains(&format!("{IMG}/{want}")), "{want} in {m:#?}");
    }
    assert!(!m.iter().any(|p| p.contains(".hidden")));
    let x = n.d.path().join("x");
    extract(&n.bundle(), &x);
    let got = x.join(IMG);
    let man = std::fs::read_to_string(got.join("manifest.xml")).unwrap();
    let extras: Vec<&str> = man
        .lines()
        .filter(|l| l.contains("<dest>") || l.contains("<src>"))
        .collect();
    assert_eq!(
        extras,
        [
            format!("    <dest>{}</dest>", ps.parent().unwrap().display()),
            format!("    <src>{}</src>", ps.display()),
            "    <dest>/usr/mydir</dest>".to_string(),
            format!("    <src>{}</src>", mydir.display()),
            format!("    <dest>{}</dest>", n.cwd.display()),
            format!("    <src>{}/relative.conf</src>", n.cwd.display()),
        ]
    );
    assert_eq!(
        std::fs::read_link(got.join("extra").join(rel(&mydir)).join("link")).unwrap(),
        PathBuf::from("a")
    );
    assert_eq!(
        std::fs::read(got.join("extra").join(rel(&mydir)).join("sub/b")).unwrap(),
        b"b\n"
    );
    // Two file extras with one name cannot both be restored by imgimport: refused.
    n.d.write("other/myscript1", "x\n");
    let o = n.export(&[
        IMG,
        "-e",
        &ps.display().to_string(),
        "-e",
        &n.d.path().join("other/myscript1").display().to_string(),
    ]);
    assert_eq!(o.code, 1);
    assert!(
        o.stderr.contains("would both be stored as extra/myscript1"),
        "{o:?}"
    );
}

#[test]
fn same_basenames_are_relocated_so_imgimport_restores_both() {
    let n = Node::new();
    let other = n.d.write(
        "install/custom/netboot/rh/compute.rhels8.x86_64.pkglist",
        "other\n",
    );
    n.defs(&[("otherpkglist", &other.display().to_string())], &[]);
    let o = n.export(&[IMG]);
    assert_eq!(o.code, 0, "{o:?}");
    let x = n.d.path().join("x");
    extract(&n.bundle(), &x);
    let got = x.join(IMG);
    let relocated = got
        .join("extra")
        .join(
            other
                .parent()
                .unwrap()
                .display()
                .to_string()
                .trim_start_matches('/'),
        )
        .join("compute.rhels8.x86_64.pkglist");
    assert_eq!(std::fs::read(&relocated).unwrap(), b"other\n");
    assert_eq!(
        std::fs::read(got.join("compute.rhels8.x86_64.pkglist")).unwrap(),
        std::fs::read(n.lists.join("compute.rhels8.x86_64.pkglist")).unwrap()
    );
    let man = std::fs::read_to_string(got.join("manifest.xml")).unwrap();
    let d = other.parent().unwrap().display().to_string();
    assert!(
        man.contains(&format!(
            "  <extra>\n    <dest>{d}</dest>\n    <src>{d}</src>\n  </extra>\n"
        )),
        "{man}"
    );
}

#[test]
fn checksum_sidecar() {
    if !cmd_exists("sha256sum") {
        skip("sha256sum not installed");
        return;
    }
    let n = Node::new();
    let o = n.export(&[IMG, "--checksum"]);
    assert_eq!(o.code, 0, "{o:?}");
    let sidecar = n.cwd.join(format!("{IMG}.tgz.sha256"));
    let text = std::fs::read_to_string(&sidecar).unwrap();
    assert_eq!(
        text.lines().count(),
        8,
        "the bundle and its 7 files: {text}"
    );
    assert!(text
        .lines()
        .next()
        .unwrap()
        .ends_with(&format!("  {IMG}.tgz")));
    extract(&n.bundle(), &n.cwd);
    let check = Command::new("sha256sum")
        .args(["-c", "--strict"])
        .arg(&sidecar)
        .current_dir(&n.cwd)
        .output()
        .unwrap();
    assert!(check.status.success(), "{check:?}");
    assert_eq!(
        String::from_utf8_lossy(&check.stdout)
            .matches(": OK")
            .count(),
        8
    );
    // A bundle made without --checksum removes the sidecar that no longer matches.
    std::fs::remove_dir_all(n.cwd.join(IMG)).unwrap();
    let o = n.export(&[IMG]);
    assert_eq!(o.code, 0);
    assert!(
        o.stdout.contains("which described the previous bundle"),
        "{o:?}"
    );
    assert_eq!(n.cwd_names(), [format!("{IMG}.tgz")]);
}

#[test]
fn compressed_members_are_stored_and_the_rest_deflated() {
    let n = Node::new();
    // A large compressible list file and a large gzip rootimg.
    let big_list = b"package-name-with-a-long-name\n".repeat(100_000);
    std::fs::write(n.lists.join("compute.rhels8.x86_64.exlist"), &big_list).unwrap();
    let rootimg = gzip(&noise(3 << 20, 9));
    std::fs::write(n.dir.join("rootimg.cpio.gz"), &rootimg).unwrap();
    let o = n.export(&[IMG]);
    assert_eq!(o.code, 0, "{o:?}");
    let size = std::fs::metadata(n.bundle()).unwrap().len() as usize;
    let gz_inputs = rootimg.len()
        + std::fs::metadata(n.dir.join("initrd-stateless.gz"))
            .unwrap()
            .len() as usize;
    // The list shrank to a few KiB; the stored members cost 5 bytes per 64 KiB.
    assert!(size < gz_inputs + 300_000 + 100_000, "{size}");
    assert!(size > gz_inputs, "{size}");
    let line = o
        .lines()
        .into_iter()
        .find(|l| l.starts_with("Bundle "))
        .unwrap()
        .to_string();
    assert!(
        line.contains("already compressed and stored as is"),
        "{line}"
    );
}

#[test]
fn kill_mid_export_leaves_nothing() {
    let n = Node::new();
    // Big, slow to deflate (not a compressed format): the export takes a while.
    std::fs::write(n.dir.join("kernel"), noise(60 << 20, 5)).unwrap();
    std::fs::write(n.cwd.join("keep.tgz"), "old bundle").unwrap();
    for delay_ms in [30u64, 300, 900] {
        let mut child = n
            .command(&[IMG, "keep.tgz"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        let _ = child.kill();
        let _ = child.wait();
        let names = n.cwd_names();
        if names == ["keep.tgz"] && std::fs::read(n.cwd.join("keep.tgz")).unwrap() == b"old bundle"
        {
            continue;
        }
        // Only a finished export may have replaced it.
        assert_eq!(names, ["keep.tgz"], "after kill at {delay_ms} ms");
        assert_eq!(members(&n.cwd.join("keep.tgz")).len(), 8);
        std::fs::write(n.cwd.join("keep.tgz"), "old bundle").unwrap();
    }
    // SIGTERM is a clean cancel: an error, nothing new.
    let child = n
        .command(&[IMG, "keep.tgz"])
        .stdout(std::process::Stdio::piped())
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
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("imgexport was interrupted; no bundle was written"),
            "{err}"
        );
        assert!(!String::from_utf8_lossy(&out.stdout).contains("Done!"));
        assert_eq!(
            std::fs::read(n.cwd.join("keep.tgz")).unwrap(),
            b"old bundle"
        );
    }
    assert_eq!(n.cwd_names(), ["keep.tgz"]);
}

/// A fake scp (the engine runs it with a clean environment) that records its arguments in
/// `dir/args` and copies the file into `dir`; it fails when `dir/fail` exists. Everything it
/// touches is inside `dir`, which is baked into the script.
fn fake_scp(d: &Dir, dir: &Path) -> Option<PathBuf> {
    if !cmd_exists("perl") {
        return None;
    }
    let dir = dir.display().to_string();
    assert!(
        dir.starts_with("/tmp/") || dir.starts_with(&std::env::temp_dir().display().to_string())
    );
    assert!(!dir.contains('\'') && !dir.contains('\\'));
    let p = d.path().join("fake-scp");
    std::fs::write(
        &p,
        format!(
            "#!/usr/bin/perl\nuse strict; use warnings; use File::Copy;\n\
             my $dir = '{dir}'; -d $dir or die \"no $dir\";\n\
             open my $log, '>>', \"$dir/args\" or die; print {{$log}} join(\"\\0\", @ARGV), \"\\n\"; close $log;\n\
             exit 3 if -e \"$dir/fail\";\n\
             my ($src, $dst) = @ARGV[-2, -1]; $dst =~ s/.*://; $dst =~ s{{.*/}}{{}};\n\
             copy($src, \"$dir/$dst\") or die \"copy: $!\";\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(&p, PermissionsExt::from_mode(0o755)).unwrap();
    Some(p)
}

#[test]
fn remote_copy_uses_an_argument_vector() {
    let n = Node::new();
    let remote = n.d.path().join("remote");
    std::fs::create_dir(&remote).unwrap();
    let Some(scp) = fake_scp(&n.d, &remote) else {
        skip("perl not installed");
        return;
    };
    let run = |args: &[&str], fail: bool| {
        if fail {
            std::fs::write(remote.join("fail"), "").unwrap();
        } else {
            let _ = std::fs::remove_file(remote.join("fail"));
        }
        let mut c = n.command(args);
        c.env("XCAT_IMAGED_SCP", &scp);
        Output::of(c)
    };
    let o = run(
        &[IMG, "bundles/img.tgz", "-R", "root@mn2", "--checksum"],
        false,
    );
    assert_eq!(o.code, 0, "{o:?}");
    let lines = o.lines();
    assert_eq!(lines[0], format!("Exporting {IMG} to root@mn2..."));
    assert!(lines.contains(
        &"Moving the image bundle to the remote system location root@mn2:bundles/img.tgz"
    ));
    assert_eq!(lines.last(), Some(&"Done!"));
    let args = std::fs::read_to_string(remote.join("args")).unwrap();
    let calls: Vec<Vec<&str>> = args.lines().map(|l| l.split('\0').collect()).collect();
    assert_eq!(calls.len(), 2, "the bundle and its checksums");
    assert_eq!(&calls[0][..2], ["-B", "--"]);
    assert_eq!(calls[0][3], "root@mn2:bundles/img.tgz");
    assert_eq!(calls[1][3], "root@mn2:bundles/img.tgz.sha256");
    assert_eq!(members(&remote.join("img.tgz")).len(), 8);
    assert!(
        n.cwd_names().is_empty(),
        "nothing left locally: {:?}",
        n.cwd_names()
    );
    // No destination: the remote home; a bare name: ./name.
    std::fs::remove_file(remote.join("args")).unwrap();
    assert_eq!(run(&[IMG, "-R", "root@mn2"], false).code, 0);
    assert_eq!(run(&[IMG, "b.tgz", "-R", "root@mn2"], false).code, 0);
    let args = std::fs::read_to_string(remote.join("args")).unwrap();
    let targets: Vec<&str> = args
        .lines()
        .map(|l| l.rsplit('\0').next().unwrap())
        .collect();
    assert_eq!(
        targets,
        [format!("root@mn2:{IMG}.tgz").as_str(), "root@mn2:./b.tgz"]
    );
    // A failed copy is an error, and nothing is left behind.
    let o = run(&[IMG, "-R", "root@mn2"], true);
    assert_eq!(o.code, 1);
    assert!(o.stderr.contains(&format!(
        "Unable to copy the image bundle {IMG}.tgz to the remote host (Maybe passwordless ssh was not setup?)"
    )), "{o:?}");
    assert!(!o.stdout.contains("Done!"));
    assert!(n.cwd_names().is_empty());
    // Hosts and paths a shell or scp would interpret are refused.
    for (r, d) in [
        ("-oProxyCommand=x", "a.tgz"),
        ("root@mn2", "$(id)/a.tgz"),
        ("a b", "a.tgz"),
    ] {
        let o = run(&[IMG, d, "-R", r], false);
        assert_eq!(o.code, 1, "{r} {d}");
        assert!(o.stderr.contains("Invalid remote"), "{o:?}");
    }
}

// ---- serve mode: tables the definitions file cannot hold ---------------------------------

/// Extra tables for serve-mode tests, answered like xCAT::Table, in front of a defs file.
struct Tables {
    defs: Defs,
    extra: BTreeMap<String, Vec<Row>>,
}

fn row(pairs: &[(&str, &str)]) -> Row {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

impl Tables {
    fn answer(&mut self, call: &Call) -> Reply {
        let ok = |v: serde_json::Value| Reply {
            id: 0,
            ok: true,
            result: Some(v),
            error: None,
        };
        let project = |r: &Row, attrs: &[String]| -> Option<Row> {
            let p: Row = r
                .iter()
                .filter(|(k, _)| attrs.iter().any(|a| a == *k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            (!p.is_empty()).then_some(p)
        };
        match call {
            Call::TableGet { table, keys, attrs } if self.extra.contains_key(table) => {
                let found = self.extra[table]
                    .iter()
                    .filter(|r| keys.iter().all(|(k, v)| r.get(k) == Some(v)))
                    .find_map(|r| project(r, attrs));
                ok(serde_json::to_value(found).unwrap())
            }
            Call::TableList {
                table,
                filter,
                attrs,
            } if self.extra.contains_key(table) => {
                let rows: Vec<Row> = self.extra[table]
                    .iter()
                    .filter(|r| {
                        filter.iter().all(|f| {
                            if let Some((k, v)) = f.split_once("==") {
                                r.get(k).map(String::as_str) == Some(v)
                            } else if let Some((k, v)) = f.split_once("=~") {
                                let v = v.trim_matches('%');
                                r.get(k).is_some_and(|x| x.contains(v))
                            } else {
                                panic!("unsupported filter {f}")
                            }
                        })
                    })
                    .filter_map(|r| project(r, attrs))
                    .collect();
                ok(serde_json::to_value(rows).unwrap())
            }
            other => crate::util::answer_from(&mut self.defs)(other),
        }
    }
}

/// Runs imgexport in serve mode with `cwd` (None: as REST sends it).
fn serve(
    n: &Node,
    args: &[&str],
    cwd: Option<&Path>,
    extra: BTreeMap<String, Vec<Row>>,
) -> crate::util::Transcript {
    let mut tables = Tables {
        defs: n.d.read_defs(),
        extra,
    };
    let mut s = Served::start(&n.d.locks());
    s.send(&FromShim::Request(Request {
        v: 1,
        command: "imgexport".into(),
        args: args.iter().map(|a| a.to_string()).collect(),
        cwd: cwd.map(|c| c.display().to_string()),
        user: Some("root".into()),
        clienttype: Some(if cwd.is_some() { "cli" } else { "ws" }.into()),
        environment: None,
        xcatroot: Some(n.d.path().join("opt/xcat").display().to_string()),
    }));
    s.finish(|c| tables.answer(c))
}

fn datas(t: &crate::util::Transcript) -> Vec<&str> {
    t.messages
        .iter()
        .filter_map(|m| match m {
            ToShim::Data { text } => Some(text.as_str()),
            _ => None,
        })
        .collect()
}

#[test]
fn rest_requests_go_to_the_export_directory() {
    let n = Node::new();
    let t = serve(&n, &[IMG], None, BTreeMap::new());
    assert_eq!(t.done, Some(0), "{t:?}");
    let dir = n.d.install().join("export");
    assert_eq!(
        datas(&t)[0],
        format!("Exporting {IMG} to {}...", dir.display())
    );
    assert!(t
        .infos()
        .iter()
        .any(|i| i.starts_with(&format!("Bundle {}/{IMG}.tgz:", dir.display()))));
    assert_eq!(
        std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
        0o700
    );
    assert_eq!(names(&dir), [format!("{IMG}.tgz")]);
    assert_eq!(members(&dir.join(format!("{IMG}.tgz"))).len(), 8);
}

#[test]
fn statelite_bundle() {
    if !cmd_exists("cpio") {
        skip("cpio not installed");
        return;
    }
    let n = Node::with(
        &[("provmethod", "statelite"), ("groups", "compute,all")],
        &[],
    );
    std::fs::write(n.dir.join("initrd-statelite.gz"), gzip(b"statelite initrd")).unwrap();
    let r = n.dir.join("rootimg");
    std::fs::create_dir_all(r.join("usr/bin")).unwrap();
    std::fs::write(r.join("usr/bin/tool"), "tool\n").unwrap();
    std::fs::hard_link(r.join("usr/bin/tool"), r.join("usr/bin/tool2")).unwrap();
    std::os::unix::fs::symlink("tool", r.join("usr/bin/link")).unwrap();
    let mut extra = BTreeMap::new();
    extra.insert(
        "litefile".to_string(),
        vec![
            row(&[
                ("image", "ALL"),
                ("file", "/etc/adjtime"),
                ("options", "tmpfs"),
            ]),
            row(&[
                ("image", "compute,all"),
                ("file", "/var/log/"),
                ("options", "persistent"),
            ]),
            row(&[("file", "/etc/nullimage")]),
            row(&[("image", IMG), ("file", "/etc/ssh/")]),
            row(&[("image", "other"), ("file", "/opt/")]),
        ],
    );
    let t = serve(&n, &[IMG], Some(&n.cwd), extra);
    assert_eq!(t.done, Some(0), "{t:?}");
    let d = datas(&t);
    assert_eq!(d[1], "Packing root image. It will take a while");
    assert_eq!(d[2], "Getting litefile settings");
    let m = members(&n.bundle());
    for want in [
        "rootimgtree.gz",
        "litefile.csv",
        "kernel",
        "initrd-statelite.gz",
    ] {
        assert!(m.contains(&format!("{IMG}/{want}")), "{want}: {m:#?}");
    }
    assert!(!m
        .iter()
        .any(|p| p.contains("rootimg.cpio") || p.contains("initrd-stateless")));
    let x = n.d.path().join("x");
    extract(&n.bundle(), &x);
    let got = x.join(IMG);
    assert_eq!(
        std::fs::read_to_string(got.join("litefile.csv")).unwrap(),
        format!(
            "\"{IMG}\",\"/etc/nullimage\",\"tmpfs\",,\n\"{IMG}\",\"/var/log/\",\"persistent\",,\n\"{IMG}\",\"/etc/ssh/\",\"tmpfs\",,\n"
        )
    );
    let man = std::fs::read_to_string(got.join("manifest.xml")).unwrap();
    let dir = n.dir.display();
    assert!(man.contains(&format!("<rootimgtree>{dir}/rootimgtree.gz</rootimgtree>")));
    assert!(man.contains(&format!("<litefile>{dir}/litefile.csv</litefile>")));
    assert!(man.contains(&format!("<ramdisk>{dir}/initrd-statelite.gz</ramdisk>")));
    assert!(!man.contains("<rootimg>"));
    // imgimport runs `zcat rootimgtree.gz | cpio -idum` in the rootimgdir.
    let tree = n.d.path().join("tree");
    std::fs::create_dir(&tree).unwrap();
    let gz = std::fs::File::open(got.join("rootimgtree.gz")).unwrap();
    let mut zcat = Command::new("gzip")
        .arg("-cd")
        .stdin(gz)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let st = Command::new("cpio")
        .arg("-idum")
        .current_dir(&tree)
        .stdin(zcat.stdout.take().unwrap())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(st.success() && zcat.wait().unwrap().success());
    let t = tree.join("rootimg");
    assert_eq!(
        std::fs::read_to_string(t.join("etc/hosts")).unwrap(),
        "127.0.0.1 localhost\n"
    );
    assert_eq!(
        std::fs::read_to_string(t.join("usr/bin/tool2")).unwrap(),
        "tool\n"
    );
    assert_eq!(
        std::fs::read_link(t.join("usr/bin/link")).unwrap(),
        PathBuf::from("tool")
    );
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        std::fs::metadata(t.join("usr/bin/tool")).unwrap().ino(),
        std::fs::metadata(t.join("usr/bin/tool2")).unwrap().ino(),
        "hard links stay links"
    );
    // No rootimgdir: stock's message.
    let n2 = Node::with(&[("provmethod", "statelite"), ("rootimgdir", "")], &[]);
    let t = serve(&n2, &[IMG], Some(&n2.cwd), BTreeMap::new());
    assert_eq!(t.done, Some(1));
    assert_eq!(
        t.errors(),
        [("Couldn't locate the root image directory. ", 1)],
        "{t:?}"
    );
}

#[test]
fn kits_and_postscripts() {
    let n = Node::with(&[("kitcomponents", "comp1-1.0-x86_64")], &[]);
    let kitdir = n.d.install().join("kits/mykit-1.0-x86_64");
    n.d.write("install/kits/mykit-1.0-x86_64/repos/r1/pkg.rpm", "rpm\n");
    n.d.write(
        "install/kits/mykit-1.0-x86_64/other_files/KIT_x.sh",
        "#!/bin/sh\n",
    );
    let mut extra = BTreeMap::new();
    extra.insert(
        "kitcomponent".to_string(),
        vec![
            row(&[
                ("kitcompname", "comp1-1.0-x86_64"),
                ("kitname", "mykit-1.0-x86_64"),
                ("kitreponame", "r1"),
            ]),
            row(&[
                ("kitcompname", "comp2-1.0-x86_64"),
                ("kitname", "mykit-1.0-x86_64"),
                ("kitreponame", "r1"),
            ]),
        ],
    );
    extra.insert(
        "kit".to_string(),
        vec![row(&[
            ("kitname", "mykit-1.0-x86_64"),
            ("basename", "mykit"),
            ("kitdir", &kitdir.display().to_string()),
        ])],
    );
    extra.insert(
        "kitrepo".to_string(),
        vec![row(&[
            ("kitreponame", "r1"),
            ("kitname", "mykit-1.0-x86_64"),
        ])],
    );
    extra.insert(
        "nodelist".to_string(),
        vec![
            row(&[("node", "cn2"), ("groups", "compute,all")]),
            row(&[("node", "cn1"), ("groups", "compute,all")]),
        ],
    );
    extra.insert(
        "postscripts".to_string(),
        vec![
            row(&[
                ("node", "xcatdefaults"),
                ("postscripts", "syslog,remoteshell"),
                ("postbootscripts", "otherpkgs"),
            ]),
            row(&[("node", "compute"), ("postscripts", "confignics")]),
            row(&[("node", "cn1"), ("postbootscripts", "mypost")]),
        ],
    );
    let t = serve(&n, &[IMG, "-p", "compute"], Some(&n.cwd), extra.clone());
    assert_eq!(t.done, Some(0), "{t:?}");
    assert!(datas(&t).contains(&kitdir.display().to_string().as_str()));
    let m = members(&n.bundle());
    assert!(
        m.contains(&format!("{IMG}/mykit-1.0-x86_64/repos/r1/pkg.rpm")),
        "{m:#?}"
    );
    let x = n.d.path().join("x");
    extract(&n.bundle(), &x);
    let man = std::fs::read_to_string(x.join(IMG).join("manifest.xml")).unwrap();
    // One kit and one repo: the nested form imgimport reads; two components: stock's form.
    assert!(
        man.contains("  <kit>\n    <mykit-1.0-x86_64>\n      <basename>mykit</basename>\n"),
        "{man}"
    );
    assert!(
        man.contains("  <kitrepo>\n    <r1>\n      <kitname>mykit-1.0-x86_64</kitname>\n"),
        "{man}"
    );
    assert!(
        man.contains("  <kitcomp>\n    <name>comp1-1.0-x86_64</name>\n"),
        "{man}"
    );
    assert!(
        man.contains("  <kitcomp>\n    <name>comp2-1.0-x86_64</name>\n"),
        "{man}"
    );
    // -p compute: the first node is cn1 (sorted), its group's postscripts, after the defaults.
    assert!(
        man.contains("  <postbootscripts>otherpkgs,mypost</postbootscripts>\n"),
        "{man}"
    );
    assert!(
        man.contains("  <postscripts>syslog,remoteshell,confignics</postscripts>\n"),
        "{man}"
    );
    let t = serve(&n, &[IMG, "-p", "nosuchnode"], Some(&n.cwd), extra.clone());
    assert_eq!(
        t.errors(),
        [(
            "Unable to get postscripts, nosuchnode is not a valide node.",
            1
        )]
    );
    let t = serve(&n, &[IMG, "-p", "cn[1-2]"], Some(&n.cwd), extra);
    assert!(
        t.errors()[0]
            .0
            .contains("expands node and group names only"),
        "{t:?}"
    );
}
