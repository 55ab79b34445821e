//! genimage for RHEL-family (dnf) and SLES (zypper) images, for real: the host's dnf and
//! zypper (Debian's packages) install tiny RPMs, built here with rpmbuild and indexed with
//! createrepo_c (a comps group for dnf, a patterns.xml for zypper), into an rhels9 and a
//! sles15 image. The RPMs: pkgA, pkgB (requires pkgA), pkgC (shell %post), pkgD (lua %post),
//! pkgE/pkgF (otherpkgs), pkgSlow (a %post that can sleep, for the interrupt), minishell
//! (busybox as /bin/sh, for the shell scriptlets), a fake `kernel` (a vmlinuz and a
//! modules.dep), and a TEST DOUBLE for dracut: a busybox-sh `/usr/bin/dracut` that records
//! its arguments and writes a small gzip'd newc cpio to its output path, so the initrd phase
//! runs without a real dracut in the image (the real dracut is covered by the Debian test;
//! nothing else here is a double).
//!
//! Needs root, dnf / zypper, rpmbuild, createrepo_c, modifyrepo_c and busybox; skipped with
//! the reason otherwise.

use crate::util::{bin, cmd_exists, cpio_names, is_root, mounts_anywhere_under, skip, Dir, Output};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const KVER: &str = "5.14.0-xcattest.x86_64";

fn have(prog: &str) -> bool {
    xcat_imaged::proc::find_program(prog).is_some()
}

/// Why these builds cannot run here, if they cannot.
fn cannot(tool: &str) -> Option<String> {
    if !is_root() {
        return Some("genimage builds need root".into());
    }
    if std::env::consts::ARCH != "x86_64" {
        return Some("the test images are x86_64".into());
    }
    for p in [
        tool,
        "rpm",
        "rpmbuild",
        "createrepo_c",
        "modifyrepo_c",
        "busybox",
    ] {
        if !have(p) {
            return Some(format!(
                "{p} is not installed (apt-get install rpm createrepo-c dnf zypper busybox-static)"
            ));
        }
    }
    None
}

fn run_ok(mut c: Command, what: &str) -> Output {
    c.stdin(Stdio::null());
    let o = Output::of(c);
    assert_eq!(o.code, 0, "{what}: {o:?}");
    o
}

/// The spec skeleton of a test package.
fn spec(name: &str, extra_head: &str, body: &str) -> String {
    format!(
        "Name: {name}\nVersion: 1.0\nRelease: 1\nSummary: xcat-imaged genimage test package {name}\nLicense: MIT\n{extra_head}\n%description\nxcat-imaged genimage test package.\n\n{body}\n"
    )
}

/// The test RPMs and repositories, built once.
struct Repos {
    _tmp: tempfile::TempDir,
    /// pkgdir: the base repository (repodata, comps group, patterns).
    base: PathBuf,
    /// otherpkgdir: `extra/` (repodata: pkgE, pkgF) and `plain/` (pkgF, no repodata).
    other: PathBuf,
}

fn build_repos() -> Repos {
    let tmp = tempfile::Builder::new()
        .prefix("xcat-imaged-rpms")
        .tempdir()
        .unwrap();
    let w = tmp.path().canonicalize().unwrap();
    let home = w.join("home");
    std::fs::create_dir_all(&home).unwrap();
    let bb = xcat_imaged::proc::find_program("busybox").unwrap();
    let noarch = "BuildArch: noarch\n";
    let plain_file = |n: &str| {
        format!(
            "%install\nmkdir -p %{{buildroot}}/etc\necho '{n}=1' > %{{buildroot}}/etc/{n}.conf\n\n%files\n%config(noreplace) /etc/{n}.conf\n"
        )
    };
    let dracut = "#!/bin/sh\n\
# TEST DOUBLE for dracut, used only by the xcat-imaged tests: records its arguments and\n\
# writes a gzip'd newc cpio holding /init to its output path (the argument before the\n\
# kernel version).\n\
bb=/usr/bin/busybox\n\
out=; kver=\n\
for a in \"$@\"; do out=$kver; kver=$a; done\n\
echo \"$*\" >> /var/lib/dracut-double/calls\n\
d=/tmp/dracut-double.$$\n\
$bb mkdir -p $d || exit 1\n\
echo '#!/bin/sh' > $d/init\n\
cd $d && echo init | $bb cpio -o -H newc | $bb gzip -c > \"$out\" || exit 1\n\
cd / && $bb rm -rf $d\n";
    let specs: Vec<(&str, String)> = vec![
        ("pkgA", spec("pkgA", noarch, &plain_file("pkgA"))),
        (
            "pkgB",
            spec("pkgB", &format!("{noarch}Requires: pkgA >= 1.0\n"), &plain_file("pkgB")),
        ),
        (
            "pkgC",
            spec(
                "pkgC",
                noarch,
                "%install\nmkdir -p %{buildroot}/var/lib/pkgC\n\n%post\necho \"post ran, arg=$1\" > /var/lib/pkgC/post-sh.txt\n\n%files\n%dir /var/lib/pkgC\n",
            ),
        ),
        (
            "pkgD",
            spec(
                "pkgD",
                noarch,
                "%install\nmkdir -p %{buildroot}/var/lib/pkgD\n\n%post -p <lua>\nlocal f = io.open(\"/var/lib/pkgD/post-lua.txt\", \"w\")\nf:write(\"post ran via lua\\n\")\nf:close()\n\n%files\n%dir /var/lib/pkgD\n",
            ),
        ),
        ("pkgE", spec("pkgE", noarch, &plain_file("pkgE"))),
        ("pkgF", spec("pkgF", noarch, &plain_file("pkgF"))),
        (
            "pkgSlow",
            spec(
                "pkgSlow",
                noarch,
                "%install\nmkdir -p %{buildroot}/var/lib/slow\n\n%post\nif [ -n \"$SLOW_POST\" ]; then echo started > /var/lib/slow/started; /usr/bin/busybox sleep \"$SLOW_POST\"; fi\n\n%files\n%dir /var/lib/slow\n",
            ),
        ),
        (
            "minishell",
            spec(
                "minishell",
                "AutoReqProv: no\n%global debug_package %{nil}\n%global __strip /bin/true\n%global _build_id_links none\n",
                &format!(
                    "%install\nmkdir -p %{{buildroot}}/usr/bin %{{buildroot}}/bin\ninstall -m 0755 {} %{{buildroot}}/usr/bin/busybox\nln -s ../usr/bin/busybox %{{buildroot}}/bin/sh\n\n%files\n/usr/bin/busybox\n/bin/sh\n",
                    bb.display()
                ),
            ),
        ),
        (
            "kernel",
            spec(
                "kernel",
                noarch,
                &format!(
                    "%install\nmkdir -p %{{buildroot}}/boot %{{buildroot}}/lib/modules/{KVER} %{{buildroot}}/var/lib/kernel-test\necho 'fake kernel image {KVER}' > %{{buildroot}}/boot/vmlinuz-{KVER}\necho 'kernel/drivers/net/virtio_net.ko:' > %{{buildroot}}/lib/modules/{KVER}/modules.dep\n\n%post\nif [ -L /etc/kernel/install.d/50-dracut.install ]; then echo masked; else echo unmasked; fi > /var/lib/kernel-test/hook\necho \"DRACUT=$DRACUT GENIMAGE_TEST=$GENIMAGE_TEST\" > /var/lib/kernel-test/env\n\n%files\n/boot/vmlinuz-{KVER}\n/lib/modules/{KVER}\n%dir /var/lib/kernel-test\n"
                ),
            ),
        ),
        (
            "dracut",
            spec(
                "dracut",
                &format!("{noarch}AutoReqProv: no\n"),
                &format!(
                    "%install\nmkdir -p %{{buildroot}}/usr/bin %{{buildroot}}/usr/sbin %{{buildroot}}/usr/lib/dracut/modules.d %{{buildroot}}/var/lib/dracut-double\ncat > %{{buildroot}}/usr/bin/dracut <<'EOF'\n{dracut}EOF\nchmod 0755 %{{buildroot}}/usr/bin/dracut\nln -s ../bin/busybox %{{buildroot}}/usr/sbin/depmod\n\n%files\n/usr/bin/dracut\n/usr/sbin/depmod\n%dir /usr/lib/dracut/modules.d\n%dir /var/lib/dracut-double\n"
                ),
            ),
        ),
    ];
    let specdir = w.join("specs");
    std::fs::create_dir_all(&specdir).unwrap();
    for (name, text) in &specs {
        let p = specdir.join(format!("{name}.spec"));
        std::fs::write(&p, text).unwrap();
        let mut c = Command::new("rpmbuild");
        c.args(["-bb", "--quiet", "--define"])
            .arg(format!("_topdir {}", w.join("rpmbuild").display()))
            .arg(&p)
            .env("HOME", &home);
        run_ok(c, &format!("rpmbuild {name}"));
    }
    let rpm_of = |name: &str| -> PathBuf {
        for arch in ["noarch", "x86_64"] {
            let p = w
                .join("rpmbuild/RPMS")
                .join(arch)
                .join(format!("{name}-1.0-1.{arch}.rpm"));
            if p.is_file() {
                return p;
            }
        }
        panic!("no rpm for {name}");
    };
    let base = w.join("repo");
    let other = w.join("otherpkgs");
    for d in [&base, &other.join("extra"), &other.join("plain")] {
        std::fs::create_dir_all(d).unwrap();
    }
    for n in [
        "pkgA",
        "pkgB",
        "pkgC",
        "pkgD",
        "pkgSlow",
        "minishell",
        "kernel",
        "dracut",
    ] {
        std::fs::copy(rpm_of(n), base.join(rpm_of(n).file_name().unwrap())).unwrap();
    }
    for n in ["pkgE", "pkgF"] {
        std::fs::copy(
            rpm_of(n),
            other.join("extra").join(rpm_of(n).file_name().unwrap()),
        )
        .unwrap();
    }
    std::fs::copy(rpm_of("pkgF"), other.join("plain/pkgF-1.0-1.noarch.rpm")).unwrap();
    let comps = w.join("comps.xml");
    std::fs::write(
        &comps,
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!DOCTYPE comps PUBLIC \"-//Red Hat, Inc.//DTD Comps info//EN\" \"comps.dtd\">\n<comps>\n  <group>\n    <id>xcattest</id>\n    <name>xCAT test group</name>\n    <description>pkgA and pkgB</description>\n    <default>true</default>\n    <uservisible>true</uservisible>\n    <packagelist>\n      <packagereq type=\"mandatory\">pkgA</packagereq>\n      <packagereq type=\"default\">pkgB</packagereq>\n    </packagelist>\n  </group>\n</comps>\n",
    )
    .unwrap();
    let mut c = Command::new("createrepo_c");
    c.args(["--quiet", "--groupfile"]).arg(&comps).arg(&base);
    run_ok(c, "createrepo_c base");
    let patterns = w.join("patterns.xml");
    std::fs::write(
        &patterns,
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<patterns xmlns=\"http://novell.com/package/metadata/suse/pattern\" xmlns:rpm=\"http://linux.duke.edu/metadata/rpm\" count=\"1\">\n<pattern>\n  <name>xcattest</name>\n  <version epoch=\"0\" ver=\"1.0\" rel=\"1\"/>\n  <arch>noarch</arch>\n  <summary>xCAT test pattern</summary>\n  <description>pkgA and pkgB</description>\n  <uservisible/>\n  <rpm:requires>\n    <rpm:entry name=\"pkgA\"/>\n    <rpm:entry name=\"pkgB\"/>\n  </rpm:requires>\n</pattern>\n</patterns>\n",
    )
    .unwrap();
    let mut c = Command::new("modifyrepo_c");
    c.arg("--mdtype=patterns")
        .arg(&patterns)
        .arg(base.join("repodata"));
    run_ok(c, "modifyrepo_c");
    let mut c = Command::new("createrepo_c");
    c.arg("--quiet").arg(other.join("extra"));
    run_ok(c, "createrepo_c extra");
    Repos {
        _tmp: tmp,
        base,
        other,
    }
}

static REPOS: OnceLock<Repos> = OnceLock::new();
static REPOS_SECS: OnceLock<f64> = OnceLock::new();

fn repos() -> &'static Repos {
    REPOS.get_or_init(|| {
        let t = Instant::now();
        let r = build_repos();
        let _ = REPOS_SECS.set(t.elapsed().as_secs_f64());
        r
    })
}

/// Processes whose root or working directory is under `dir`.
fn processes_under(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let pid = e.file_name().to_string_lossy().into_owned();
        if !pid.chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        for link in ["root", "cwd"] {
            if let Ok(t) = std::fs::read_link(e.path().join(link)) {
                if t.starts_with(dir) {
                    found.push(format!("pid {pid} {link} {}", t.display()));
                }
            }
        }
    }
    found
}

/// The package names in an image's rpm database, sorted.
fn rpm_names(root: &Path) -> Vec<String> {
    let mut c = Command::new("rpm");
    c.arg("--root")
        .arg(root)
        .args(["--dbpath", "/var/lib/rpm", "-qa", "--qf", "%{NAME}\\n"]);
    let o = run_ok(c, "rpm -qa");
    let mut v: Vec<String> = o.stdout.lines().map(str::to_string).collect();
    v.sort();
    v
}

/// One test image definition: a management-node directory with lists, postinstall, defs.
struct Image {
    d: Dir,
    name: String,
    dir: PathBuf,
}

fn image(osvers: &str, pkglist: &str, otherpkglist: &str, environvar: Option<&str>) -> Image {
    let r = repos();
    let d = Dir::new();
    let name = format!("{osvers}-x86_64-netboot-compute");
    let dir = d
        .install()
        .join("netboot")
        .join(osvers)
        .join("x86_64/compute");
    for (f, t) in [
        ("xcatdsklspost", "#!/bin/sh\necho dskls\n"),
        ("xcatpostinit1.netboot", "#!/bin/sh\necho postinit1\n"),
        (
            "xcatpostinit1.service",
            "[Unit]\nDescription=xcatpostinit1\n",
        ),
        ("xcatpostinit", "#!/bin/sh\necho postinit\n"),
    ] {
        d.write(&format!("install/postscripts/{f}"), t);
    }
    let list = d.write("lists/compute.pkglist", pkglist);
    d.write("lists/sub.pkglist", "pkgD\n");
    let other = d.write("lists/compute.otherpkgs.pkglist", otherpkglist);
    let post = d.write(
        "post/compute.postinstall",
        "#!/bin/sh\nprintf '%s\\n' \"args=$2 $3 $4 $5 $6\" \"IMG_NAME=$IMG_NAME\" \"IMG_ROOTIMGDIR=$IMG_ROOTIMGDIR\" > \"$1/etc/genimage-test-postinstall\"\n",
    );
    std::fs::set_permissions(&post, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let env = environvar
        .map(|e| format!("    environvar={e}\n"))
        .unwrap_or_default();
    d.defs(&format!(
        "{name}:\n    objtype=osimage\n    imagetype=linux\n    osarch=x86_64\n    osvers={osvers}\n    profile=compute\n    provmethod=netboot\n{env}    pkglist={}\n    otherpkglist={}\n    otherpkgdir={}\n    pkgdir={}\n    postinstall={} one two\n    rootimgdir={}\n    nodebootif=eth0\n    otherifce=eth1\n",
        list.display(),
        other.display(),
        r.other.display(),
        r.base.display(),
        post.display(),
        dir.display(),
    ));
    Image { d, name, dir }
}

impl Image {
    fn genimage(&self, args: &[&str]) -> Output {
        self.genimage_with(args, &self.d.path().join("no-xcat-here"))
    }

    fn genimage_with(&self, args: &[&str], xcatroot: &Path) -> Output {
        let mut a = args.to_vec();
        a.push(&self.name);
        let mut c = self.d.command("genimage", &a);
        c.env("XCATROOT", xcatroot);
        Output::of(c)
    }
}

/// A fake xCAT installation: a classic sles dracut module of our own, rc.statelite.
fn fake_xcatroot(root: &Path) {
    let d = root.join("share/xcat/netboot/sles/dracut");
    std::fs::create_dir_all(&d).unwrap();
    for f in [
        "check",
        "install.netboot",
        "install.statelite",
        "installkernel",
        "xcatroot",
        "xcat-cmdline.sh",
        "xcat-prepivot.sh",
        "xcat-premount.sh",
    ] {
        std::fs::write(d.join(f), format!("# {f}\n")).unwrap();
    }
    let a = root.join("share/xcat/netboot/add-on/statelite");
    std::fs::create_dir_all(&a).unwrap();
    std::fs::write(a.join("rc.statelite"), "#!/bin/sh\necho statelite\n").unwrap();
}

const RH_PKGLIST: &str = "# pass 1: a group, a shell and a lua scriptlet, an include\nminishell\n  pkgC\n#INCLUDE:sub.pkglist#\n@xcattest\npkgSlow\n#NEW_INSTALL_LIST#\n#ENV:GENIMAGE_TEST=pass2#\nkernel\ndracut\n--pkgD\n";
const RH_OTHERPKGS: &str = "extra/pkgE\n#NEW_INSTALL_LIST#\n-pkgE\nextra/pkgF\n";
const SLES_PKGLIST: &str = RH_PKGLIST;
const SLES_OTHERPKGS: &str = "extra/pkgE\n#NEW_INSTALL_LIST#\n-pkgE\nplain/pkgF\n";
const EXPECTED: &[&str] = &[
    "dracut",
    "kernel",
    "minishell",
    "pkgA",
    "pkgB",
    "pkgC",
    "pkgF",
    "pkgSlow",
];

/// What the rh builds produced.
struct RhFixture {
    img: Image,
    cancel: Output,
    /// From SIGTERM to the engine's exit.
    cancel_secs: f64,
    seen_mounts: Vec<String>,
    after_cancel_mounts: Vec<String>,
    after_cancel_processes: Vec<String>,
    after_cancel_tree: Vec<String>,
    lock_free_after_cancel: bool,
    build: Output,
    build_secs: f64,
}

static RH: OnceLock<Result<RhFixture, String>> = OnceLock::new();

fn rh() -> Option<&'static RhFixture> {
    if let Some(why) = cannot("dnf") {
        skip(&why);
        return None;
    }
    match RH.get_or_init(make_rh) {
        Ok(f) => Some(f),
        Err(e) => panic!("{e}"),
    }
}

fn make_rh() -> Result<RhFixture, String> {
    // 1. Interrupted in pkgSlow's %post (SLOW_POST from osimage.environvar reaches it).
    let img = image("rhels9.4", RH_PKGLIST, RH_OTHERPKGS, Some("SLOW_POST=60"));
    let mut c = img.d.command("genimage", &[&img.name]);
    c.env("XCATROOT", img.d.path().join("no-xcat-here"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().map_err(|e| e.to_string())?;
    let out = child.stdout.take().ok_or("no stdout")?;
    let mut err = child.stderr.take().ok_or("no stderr")?;
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let out_reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    let marker = img
        .dir
        .join(".rootimg.genimage-partial/var/lib/slow/started");
    let deadline = Instant::now() + Duration::from_secs(120);
    while !marker.exists() && Instant::now() < deadline {
        if child.try_wait().map_err(|e| e.to_string())?.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let reached = marker.exists();
    let seen_mounts = mounts_anywhere_under(img.d.path());
    let killed = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .map_err(|e| e.to_string())?;
    let status = child.wait().map_err(|e| e.to_string())?;
    let cancel_secs = killed.elapsed().as_secs_f64();
    let cancel = Output {
        code: status.code().unwrap_or(-1),
        stdout: out_reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
    };
    if !reached {
        return Err(format!("pkgSlow's %post never started: {cancel:?}"));
    }
    let after_cancel_mounts = mounts_anywhere_under(img.d.path());
    let after_cancel_processes = processes_under(img.d.path());
    let after_cancel_tree = img.d.tree(&img.dir);
    let lock_free_after_cancel =
        xcat_imaged::lock::acquire_in(&img.d.locks(), &img.dir.join("rootimg")).is_ok();

    // 2. The rerun, without SLOW_POST, builds the image.
    let defs = std::fs::read_to_string(img.d.defs_path()).map_err(|e| e.to_string())?;
    std::fs::write(
        img.d.defs_path(),
        defs.replace("    environvar=SLOW_POST=60\n", ""),
    )
    .map_err(|e| e.to_string())?;
    let t = Instant::now();
    let build = img.genimage(&[]);
    let build_secs = t.elapsed().as_secs_f64();
    Ok(RhFixture {
        img,
        cancel,
        cancel_secs,
        seen_mounts,
        after_cancel_mounts,
        after_cancel_processes,
        after_cancel_tree,
        lock_free_after_cancel,
        build,
        build_secs,
    })
}

struct SlesFixture {
    img: Image,
    build: Output,
    build_secs: f64,
    /// `--onlyinitrd -n e1000` on the built image.
    onlyinitrd: Output,
}

static SLES: OnceLock<SlesFixture> = OnceLock::new();

fn sles() -> Option<&'static SlesFixture> {
    if let Some(why) = cannot("zypper") {
        skip(&why);
        return None;
    }
    Some(SLES.get_or_init(|| {
        let img = image("sles15.5", SLES_PKGLIST, SLES_OTHERPKGS, None);
        let t = Instant::now();
        let build = img.genimage(&[]);
        let build_secs = t.elapsed().as_secs_f64();
        let xcatroot = img.d.path().join("xcatroot");
        fake_xcatroot(&xcatroot);
        img.d
            .write("install/postscripts/updateflag.awk", "# updateflag\n");
        let onlyinitrd = img.genimage_with(&["--onlyinitrd", "-n", "e1000"], &xcatroot);
        SlesFixture {
            img,
            build,
            build_secs,
            onlyinitrd,
        }
    }))
}

/// What both families' images must hold.
fn check_image(img: &Image, o: &Output, tool: &str, dracut_runs: usize) {
    assert_eq!(o.code, 0, "{}\n{}", o.stderr, o.stdout);
    let r = img.dir.join("rootimg");
    assert_eq!(rpm_names(&r), EXPECTED, "exactly the expected packages");
    assert!(
        !r.join("root/.rpmdb").exists(),
        "the database is in /var/lib/rpm"
    );
    let read = |p: &str| std::fs::read_to_string(r.join(p)).unwrap_or_else(|e| panic!("{p}: {e}"));
    // Scriptlets ran inside the image, the shell one with rpm's argument.
    assert_eq!(read("var/lib/pkgC/post-sh.txt"), "post ran, arg=1\n");
    assert_eq!(read("var/lib/pkgD/post-lua.txt"), "post ran via lua\n");
    assert!(
        !r.join("var/lib/slow/started").exists(),
        "no SLOW_POST in the rerun"
    );
    // The kernel package was installed with its initrd hooks suppressed, and pass 2's #ENV:.
    assert_eq!(read("var/lib/kernel-test/hook"), "masked\n");
    let env = read("var/lib/kernel-test/env");
    assert!(env.contains("GENIMAGE_TEST=pass2"), "{env}");
    assert!(
        !r.join("etc/kernel/install.d/50-dracut.install").exists(),
        "mask removed"
    );
    // Streamed lines and the commands as run.
    assert!(
        o.stdout.contains(&format!("GENIMAGE_TEST=pass2 {tool} ")),
        "{}",
        o.stdout
    );
    assert!(
        o.stdout
            .contains("Enter the dracut mode. Dracut version: 1.0-1."),
        "the image's dracut found through its rpm database: {}",
        o.stdout
    );
    // Post files.
    assert!(read("etc/fstab").ends_with("compute_x86_64    /   tmpfs   rw  0 1\n"));
    assert_eq!(
        read("etc/resolv.conf"),
        "#Dummy resolv.conf to make boot cleaner"
    );
    assert_eq!(read("opt/xcat/xcatdsklspost"), "#!/bin/sh\necho dskls\n");
    assert_eq!(read("sbin/fsck.nfs"), "true\n");
    // postinstall with xCAT's arguments.
    let post = read("etc/genimage-test-postinstall");
    assert!(
        post.contains(&format!(
            "args={} x86_64 compute one two",
            img.name.split('-').next().unwrap()
        )),
        "{post}"
    );
    assert!(post.contains(&format!("IMG_NAME={}", img.name)), "{post}");
    assert!(
        post.contains(&format!("IMG_ROOTIMGDIR={}", r.display())),
        "{post}"
    );
    // Kernel and both initrds.
    assert_eq!(
        std::fs::read_to_string(img.dir.join("kernel")).unwrap(),
        format!("fake kernel image {KVER}\n")
    );
    for mode in ["stateless", "statelite"] {
        let names = cpio_names(&img.dir.join(format!("initrd-{mode}.gz")));
        assert_eq!(names, ["init"], "{mode}");
    }
    let calls = read("var/lib/dracut-double/calls");
    let calls: Vec<&str> = calls.lines().collect();
    assert_eq!(calls.len(), dracut_runs, "{calls:?}");
    for (i, c) in calls.iter().enumerate() {
        assert!(
            i >= 2
                || c.starts_with(
                    "--force --no-hostonly --modules nfs base network kernel-modules --add-drivers "
                ),
            "{c}"
        );
        assert!(c.ends_with(KVER), "{c}");
        // The build's drivers come from the kernel package's modules.dep (a later run
        // reads what the image's depmod, busybox's here, wrote: nothing).
        assert!(i >= 2 || c.contains("virtio_net"), "{c}");
    }
    assert!(
        calls[0].contains("--filesystems nfs"),
        "statelite first: {calls:?}"
    );
    // Nothing left behind.
    let ours = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!ours.contains(&img.d.path().display().to_string()));
    assert!(mounts_anywhere_under(img.d.path()).is_empty());
    assert!(processes_under(img.d.path()).is_empty());
    let left: Vec<String> = img
        .d
        .tree(&img.dir)
        .into_iter()
        .filter(|p| p.starts_with(".genimage-rpm") || p.starts_with(".rootimg"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    for d in ["proc", "sys", "dev", "run"] {
        let n = std::fs::read_dir(r.join(d)).map(|d| d.count()).unwrap_or(0);
        assert!(d == "dev" || n == 0, "{d} is empty (nothing mounted there)");
    }
}

#[test]
fn genimage_rhels_interrupted_in_a_scriptlet_leaves_nothing() {
    let Some(f) = rh() else { return };
    assert_eq!(f.cancel.code, 1, "{:?}", f.cancel);
    assert!(
        f.cancel
            .stderr
            .contains("Error: genimage was interrupted; the partial image was removed"),
        "{}",
        f.cancel.stderr
    );
    assert!(
        f.seen_mounts.iter().any(|m| m.ends_with("/proc")),
        "dnf's namespace had the image's proc mounted: {:?}",
        f.seen_mounts
    );
    let ours: Vec<&String> = f
        .seen_mounts
        .iter()
        .filter(|m| m.starts_with(&format!("pid {}:", std::process::id())))
        .collect();
    assert!(ours.is_empty(), "never in our namespace: {ours:?}");
    assert!(
        f.after_cancel_mounts.is_empty(),
        "{:?}",
        f.after_cancel_mounts
    );
    assert!(
        f.after_cancel_processes.is_empty(),
        "{:?}",
        f.after_cancel_processes
    );
    assert!(f.after_cancel_tree.is_empty(), "{:?}", f.after_cancel_tree);
    assert!(f.lock_free_after_cancel);
    report(&format!(
        "genimage rhels9: SIGTERM to exit {:.1} s",
        f.cancel_secs
    ));
}

#[test]
fn genimage_rpm_unsupported_family_is_refused() {
    // What the plugin maps to a family xCAT has no genimage for is still refused, with the
    // way back to xCAT's own plugin, before anything is written.
    let d = Dir::new();
    let list = d.write("compute.pkglist", "bash\n");
    d.defs(&format!(
        "cs:\n    objtype=osimage\n    imagetype=linux\n    osarch=x86_64\n    osvers=centos-stream9\n    profile=compute\n    provmethod=netboot\n    pkglist={}\n",
        list.display()
    ));
    let o = d.run("genimage", &["cs"]);
    assert_eq!(o.code, 1, "{o:?}");
    assert!(
        o.stderr
            .contains("genimage for centos-stream images (osvers centos-stream9) is not available"),
        "{}",
        o.stderr
    );
    assert!(
        o.stderr.contains("chtab -d key=imagehandler site"),
        "{}",
        o.stderr
    );
    assert!(d.tree(&d.install()).is_empty());
}

#[test]
fn genimage_rhels_with_dnf_builds_the_image() {
    let Some(f) = rh() else { return };
    let o = &f.build;
    check_image(&f.img, o, "dnf", 2);
    let r = f.img.dir.join("rootimg");
    let read = |p: &str| std::fs::read_to_string(r.join(p)).unwrap();
    // xCAT's dnf command line.
    assert!(o.stdout.contains("--disablerepo=* --enablerepo=rhels9.4-x86_64-0 --releasever=9 --setopt=module_platform_id=platform:el9 install minishell pkgC pkgD @xcattest pkgSlow"), "{}", o.stdout);
    let el9 = "--releasever=9 --setopt=module_platform_id=platform:el9";
    for w in ["clean all", "remove pkgE", "install pkgF", "update"] {
        let line = format!("--enablerepo=otherpkgs2 {el9} {w}");
        assert!(o.stdout.contains(&line), "{line}\n{}", o.stdout);
    }
    assert_eq!(read("etc/sysconfig/network"), "NETWORKING=yes\n");
    assert_eq!(
        read("etc/sysconfig/network-scripts/ifcfg-eth0"),
        "ONBOOT=no\nBOOTPROTO=dhcp\nDEVICE=eth0\n"
    );
    assert_eq!(
        read("etc/sysconfig/network-scripts/ifcfg-eth1"),
        "ONBOOT=yes\nBOOTPROTO=dhcp\nDEVICE=eth1\n"
    );
    assert!(
        !read("etc/fstab").contains("/tmp"),
        "systemd release: no /tmp line"
    );
    // No systemd in this image: xCAT's sysvinit hook.
    assert_eq!(
        read("etc/init.d/xcatpostinit"),
        "#!/bin/sh\necho postinit1\n"
    );
    assert!(r
        .join("etc/rc3.d/S61xcatpostinit")
        .symlink_metadata()
        .is_ok());
    assert!(!r.join("var/cache/dnf").read_dir().is_ok_and(
        |mut d| d.any(|e| e.is_ok_and(|e| e.path().extension().is_some_and(|x| x == "rpm")))
    ));
    report(&format!(
        "genimage rhels9 (dnf) build: {:.1} s; RPMs and repositories: {:.1} s",
        f.build_secs,
        REPOS_SECS.get().copied().unwrap_or(0.0)
    ));
}

#[allow(clippy::print_stderr)]
fn report(text: &str) {
    eprintln!("{text}");
}

#[test]
fn genimage_rhels_noupdate_rerun_in_place() {
    let Some(f) = rh() else { return };
    assert_eq!(f.build.code, 0, "{}", f.build.stderr);
    // A second, separate image so the fixture stays as built: build, then rerun in place.
    let img = image("rhels9.4", "minishell\npkgB\n", "extra/pkgE\n", None);
    let o = img.genimage(&["--noupdate"]);
    assert_eq!(o.code, 1, "no kernel in this image: {o:?}");
    assert!(o.stderr.contains("couldn't find a kernel"), "{}", o.stderr);
    assert!(
        !o.stdout.lines().any(|l| l.ends_with(" update")),
        "--noupdate: {}",
        o.stdout
    );
    assert!(o.stdout.contains("Creating the rpm database directory"));
    let r = img.dir.join("rootimg");
    assert_eq!(rpm_names(&r), ["minishell", "pkgA", "pkgB", "pkgE"]);
    // The rerun updates the tree in place (no new database, same packages).
    let o = img.genimage(&["--noupdate"]);
    assert_eq!(o.code, 1, "{o:?}");
    assert!(
        !o.stdout.contains("Creating the rpm database directory"),
        "{}",
        o.stdout
    );
    assert!(o.stdout.contains("install minishell pkgB"), "{}", o.stdout);
    assert_eq!(rpm_names(&r), ["minishell", "pkgA", "pkgB", "pkgE"]);
}

#[test]
fn genimage_sles_with_zypper_builds_the_image() {
    let Some(f) = sles() else { return };
    let o = &f.build;
    check_image(&f.img, o, "zypper", 4);
    let r = f.img.dir.join("rootimg");
    let read = |p: &str| std::fs::read_to_string(r.join(p)).unwrap();
    // --onlyinitrd: no package step, the dracut version still read from the rpm database,
    // -n plus sles's defaults (af_packet first).
    let oi = &f.onlyinitrd;
    assert_eq!(oi.code, 0, "{oi:?}");
    assert!(!oi.stdout.contains("zypper"), "{}", oi.stdout);
    assert!(
        oi.stdout
            .contains("Dracut version: 1.0-1. Dracut directory: dracut."),
        "{}",
        oi.stdout
    );
    assert!(
        oi.stdout.contains("Using xCAT's dracut module from "),
        "{}",
        oi.stdout
    );
    let calls = read("var/lib/dracut-double/calls");
    assert!(
        calls.lines().nth(2).is_some_and(|l| l.starts_with(
            "--force --no-hostonly --modules xcat nfs base network kernel-modules --add-drivers "
        )),
        "{calls}"
    );
    // The last mode built was stateless: exactly its files, with PRINIC.
    let m = r.join("usr/lib/dracut/modules.d/97xcat");
    let mut names: Vec<String> = std::fs::read_dir(&m)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "check",
            "install",
            "installkernel",
            "xcat-cmdline.sh",
            "xcat-updateflag",
            "xcatroot"
        ]
    );
    assert_eq!(
        read("usr/lib/dracut/modules.d/97xcat/xcat-cmdline.sh"),
        "# xcat-cmdline.sh\nPRINIC=eth0\n"
    );
    assert_eq!(read("etc/init.d/statelite"), "#!/bin/sh\necho statelite\n");
    assert!(
        oi.stdout.contains(&format!(
            "Network drivers not in kernel {KVER} (skipped): af_packet e1000 tg3"
        )),
        "-n after af_packet, then the defaults: {}",
        oi.stdout
    );
    assert!(o.stdout.contains("--non-interactive --no-gpg-checks --gpg-auto-import-keys install -l --no-recommends -t pattern xcattest"), "{}", o.stdout);
    assert!(
        o.stdout.contains("addrepo -t plaindir file:"),
        "{}",
        o.stdout
    );
    assert!(
        o.stdout.contains("--gpg-auto-import-keys remove pkgE"),
        "{}",
        o.stdout
    );
    let env = read("var/lib/kernel-test/env");
    assert!(env.starts_with("DRACUT=/usr/bin/true "), "{env}");
    assert_eq!(
        read("etc/sysconfig/network/ifcfg-eth0"),
        "ONBOOT=no\nBOOTPROTO=dhcp\nDEVICE=eth0\nSTARTMODE=auto\n"
    );
    assert_eq!(read("etc/securetty"), "ttyS0\nttyS1\nconsole\n");
    assert!(read("etc/fstab").contains("tmpfs   /tmp    tmpfs   defaults,size=10m"));
    assert_eq!(read("opt/xcat/xcatpostinit"), "#!/bin/sh\necho postinit\n");
    let repos: Vec<String> = std::fs::read_dir(r.join("etc/zypp/repos.d"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(repos, ["sles15.5-0.repo"], "otherpkg repositories removed");
    report(&format!(
        "genimage sles15 (zypper) build: {:.1} s",
        f.build_secs
    ));
}

#[test]
fn genimage_rpm_missing_package_is_an_error() {
    for (osvers, tool) in [("rhels9.4", "dnf"), ("sles15.5", "zypper")] {
        if let Some(why) = cannot(tool) {
            skip(&why);
            continue;
        }
        let img = image(osvers, "minishell\nno-such-package\n", "", None);
        let o = img.genimage(&[]);
        assert_eq!(o.code, 1, "{o:?}");
        let want = match tool {
            "dnf" => "Error: RPM package manager invocation failed (installing minishell no-such-package)",
            _ => "Error: zypper invocation failed (installing minishell no-such-package)",
        };
        assert!(o.stderr.contains(want), "{}", o.stderr);
        if tool == "zypper" {
            assert!(o.stderr.contains("exit status 104"), "{}", o.stderr);
            assert!(o.stderr.contains("xCAT's genimage counts this as success"));
        } else {
            assert!(o.stderr.contains("no-such-package"), "{}", o.stderr);
        }
        assert!(
            img.d
                .tree(&img.dir)
                .iter()
                .all(|p| !p.starts_with("rootimg/")
                    && !p.starts_with(".rootimg")
                    && !p.starts_with(".genimage-rpm")),
            "nothing left: {:?}",
            img.d.tree(&img.dir)
        );
        assert!(mounts_anywhere_under(img.d.path()).is_empty());
    }
}

#[test]
fn genimage_rpm_dryrun_prints_the_plan() {
    for (osvers, tool) in [("rhels9.4", "dnf"), ("sles15.5", "zypper")] {
        if let Some(why) = cannot(tool) {
            skip(&why);
            continue;
        }
        let other = if tool == "dnf" {
            RH_OTHERPKGS
        } else {
            SLES_OTHERPKGS
        };
        let img = image(osvers, RH_PKGLIST, other, None);
        let before = img.d.tree(img.d.path());
        let o = img.genimage(&["--dryrun"]);
        assert_eq!(o.code, 0, "{o:?}");
        let base = repos().base.display().to_string();
        let want: Vec<String> = if tool == "dnf" {
            vec![
                format!("family rh (dnf)"),
                format!("  baseurl=file://{base}"),
                "  [otherpkgs1]".into(),
                "pass 1: HOME=<work>/home dnf -y -c ".into(),
                "--releasever=9 --setopt=module_platform_id=platform:el9 install minishell pkgC pkgD @xcattest pkgSlow".into(),
                "pass 2: GENIMAGE_TEST=pass2 HOME=<work>/home dnf".into(),
                "remove pkgD".into(),
                "otherpkgs pass 2: ".into(),
                "post: fstab, resolv.conf, sysconfig/network, ifcfg files".into(),
            ]
        } else {
            vec![
                format!("family sles (zypper)"),
                format!("addrepo file:{base} sles15.5-0"),
                "pass 1: ZYPP_LOGFILE=<work>/zypper.log HOME=<work>/home zypper --root ".into(),
                "install -l --no-recommends -t pattern xcattest".into(),
                "addrepo -t plaindir file:".into(),
                "exit status 104 (package not found) is a failure".into(),
            ]
        };
        for w in &want {
            assert!(o.stdout.contains(w.as_str()), "{w}\n{}", o.stdout);
        }
        assert!(o.stdout.contains("Nothing was changed (--dryrun)."));
        assert_eq!(img.d.tree(img.d.path()), before, "nothing was created");
    }
}

/// The Perl side of a request, as xcatd runs it: `xCAT::Imaged::relay` with the xCAT::Table
/// doubles (`perl-shim/t/lib`) over a JSON table file; prints the responses as one JSON line.
const BRIDGE_DRIVER: &str = r#"use strict;
use warnings;
use JSON::PP ();
use xCAT::Imaged;
my $json = JSON::PP->new->utf8->canonical;
my $request = $json->decode($ENV{TEST_REQUEST});
my @responses;
xCAT::Imaged::relay($request, sub { push @responses, $_[0] });
print $json->encode(\@responses), "\n";
"#;

#[test]
fn genimage_through_the_perl_bridge_writes_the_rows_back() {
    if let Some(why) = cannot("dnf") {
        skip(&why);
        return;
    }
    if !cmd_exists("perl") {
        skip("perl not installed");
        return;
    }
    let r = repos();
    let d = Dir::new();
    let install = d.install();
    // -o/-p/-a: the pkglist and postinstall come from the profile lookup, pkgdir and
    // rootimgdir from their defaults under installdir.
    d.write(
        "install/custom/netboot/rh/compute.pkglist",
        "minishell\npkgA\nkernel\ndracut\n",
    );
    let post = d.write(
        "install/custom/netboot/rh/compute.postinstall",
        "#!/bin/sh\necho \"$2 $3 $4\" > \"$1/etc/bridge-postinstall\"\n",
    );
    std::fs::set_permissions(&post, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    d.write("install/postscripts/xcatdsklspost", "#!/bin/sh\n");
    let pkgdir = install.join("rhels9.4/x86_64");
    std::fs::create_dir_all(pkgdir.parent().unwrap()).unwrap();
    run_ok(
        {
            let mut c = Command::new("cp");
            c.arg("-a").arg(&r.base).arg(&pkgdir);
            c
        },
        "copy the repository to the default pkgdir",
    );
    let tables = d.write(
        "tables.json",
        &serde_json::json!({
            "site": [
                {"key": "installdir", "value": install.display().to_string()},
                {"key": "tftpdir", "value": d.tftp().display().to_string()},
            ],
            "osimage": [],
            "linuximage": [],
        })
        .to_string(),
    );
    let driver = d.write("driver.pl", BRIDGE_DRIVER);
    let request = serde_json::json!({
        "command": ["genimage"],
        "arg": ["-o", "rhels9.4", "-p", "compute", "-a", "x86_64", "-i", "eth0", "-n", "virtio_net"],
        "cwd": [d.path().display().to_string()],
        "clienttype": ["cli"],
        "username": ["root"],
        "_xcat_authname": ["root"],
        "_xcat_clienthost": ["localhost"],
    });
    let shim = Path::new(env!("CARGO_MANIFEST_DIR")).join("perl-shim");
    let mut c = Command::new("perl");
    c.arg("-I")
        .arg(shim.join("t/lib"))
        .arg("-I")
        .arg(shim.join("lib"))
        .arg(&driver)
        .env("TEST_REQUEST", request.to_string())
        .env("XCAT_TEST_TABLES", &tables)
        .env("XCAT_IMAGED_ENGINE", bin())
        .env("XCAT_IMAGED_LOCK_DIR", d.locks())
        .env("XCATROOT", d.path().join("no-xcat-here"))
        .current_dir(d.path());
    let o = Output::of(c);
    assert_eq!(o.code, 0, "{o:?}");
    let responses: serde_json::Value =
        serde_json::from_str(o.stdout.trim()).unwrap_or_else(|e| panic!("{e}: {o:?}"));
    let text = responses.to_string();
    assert!(
        !text.contains("\"errorcode\""),
        "the build succeeds through the bridge: {text}"
    );

    let rootimgdir = install.join("netboot/rhels9.4/x86_64/compute");
    assert_eq!(
        rpm_names(&rootimgdir.join("rootimg")),
        ["dracut", "kernel", "minishell", "pkgA"],
        "{text}"
    );
    assert!(rootimgdir.join("initrd-stateless.gz").is_file());
    let tables: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&tables).unwrap()).unwrap();
    let row = |table: &str, name: &str| -> serde_json::Map<String, serde_json::Value> {
        tables[table]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["imagename"] == name)
            .unwrap_or_else(|| panic!("no {table} row {name}: {tables}"))
            .as_object()
            .unwrap()
            .clone()
    };
    let list = install.join("custom/netboot/rh/compute.pkglist");
    for (name, provmethod) in [
        ("rhels9.4-x86_64-netboot-compute", "netboot"),
        ("rhels9.4-x86_64-statelite-compute", "statelite"),
    ] {
        let os = row("osimage", name);
        for (k, v) in [
            ("profile", "compute"),
            ("imagetype", "linux"),
            ("provmethod", provmethod),
            ("osname", "Linux"),
            ("osvers", "rhels9.4"),
            ("osarch", "x86_64"),
        ] {
            assert_eq!(
                os.get(k).and_then(|v| v.as_str()),
                Some(v),
                "{name} {k}: {os:?}"
            );
        }
        let li = row("linuximage", name);
        for (k, v) in [
            ("pkglist", list.display().to_string()),
            ("pkgdir", pkgdir.display().to_string()),
            ("rootimgdir", rootimgdir.display().to_string()),
            ("postinstall", post.display().to_string()),
            ("permission", "755".to_string()),
            ("nodebootif", "eth0".to_string()),
            ("netdrivers", "virtio_net".to_string()),
        ] {
            assert_eq!(
                li.get(k).and_then(|v| v.as_str()),
                Some(v.as_str()),
                "{name} {k}: {li:?}"
            );
        }
    }
    assert_eq!(
        std::fs::read_to_string(rootimgdir.join("rootimg/etc/bridge-postinstall")).unwrap(),
        "rhels9.4 x86_64 compute\n",
        "postinstall got xCAT's arguments"
    );
}
