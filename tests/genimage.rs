//! genimage end to end, for real: a minimal Debian image built with debootstrap and apt from
//! the host's Debian mirror, both initrds with the image's dracut, the write-back, then
//! packimage and an extraction as a node does it. One image per test run (a shared fixture):
//! first a build interrupted with SIGTERM during debootstrap, then the rerun that builds it,
//! then `--onlyinitrd` with an xCAT installation's dracut module.
//!
//! Needs root, debootstrap and the mirror; otherwise the tests say why they skip. Fast checks
//! (options, refusals, the dry run) run without the network.

use crate::util::{
    cmd_exists, cpio_names, host_mirror, is_root, mounts_anywhere_under, reachable, skip, Dir,
    Output,
};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The example's image name.
pub(crate) const NAME: &str = "debian-x86_64-netboot-compute";

/// `debian<major>` of the host, or debian12.
fn host_osvers() -> String {
    let text = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    let get = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(k))
            .map(|v| v.trim_matches('"').to_string())
    };
    match (get("ID="), get("VERSION_ID=")) {
        (Some(id), Some(v)) if id == "debian" && v.parse::<u32>().is_ok() => format!("debian{v}"),
        _ => "debian12".into(),
    }
}

/// Why the real build cannot run here, if it cannot.
fn cannot_build(mirror: &str) -> Option<String> {
    if !is_root() {
        return Some("genimage builds need root".into());
    }
    if !cmd_exists("debootstrap") && !Path::new("/usr/sbin/debootstrap").exists() {
        return Some("debootstrap is not installed (scripts/deps installs it)".into());
    }
    if std::env::consts::ARCH != "x86_64" {
        return Some("the test image is x86_64".into());
    }
    if !reachable(mirror) {
        return Some(format!("the Debian mirror {mirror} is not reachable"));
    }
    None
}

/// Whether `pid` is this test process or one it started (directly or not): what other tests
/// run meanwhile (the boot test's packimage and chroot runs) is not left over by genimage,
/// whose leftovers would have been reparented away from us when it exited.
fn ours(pid: &str) -> bool {
    let me = std::process::id().to_string();
    let mut p = pid.to_string();
    for _ in 0..64 {
        if p == me {
            return true;
        }
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
            return false;
        };
        // The fields after the parenthesised command name: state, ppid, ...
        let Some(ppid) = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
        else {
            return false;
        };
        if ppid == "0" || ppid == "1" {
            return false;
        }
        p = ppid.to_string();
    }
    false
}

/// Processes not started by this test process whose root or working directory is under `dir`.
fn processes_under(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let pid = e.file_name().to_string_lossy().into_owned();
        if !pid.chars().all(|c| c.is_ascii_digit()) || ours(&pid) {
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

/// A tiny Debian package and its flat repository entry.
fn make_deb(repo: &Path, name: &str) -> String {
    let root = repo.join(format!("build-{name}"));
    std::fs::create_dir_all(root.join("DEBIAN")).unwrap();
    std::fs::create_dir_all(root.join("usr/share/xcat-imaged-test")).unwrap();
    std::fs::write(
        root.join("DEBIAN/control"),
        format!("Package: {name}\nVersion: 1.0\nArchitecture: all\nMaintainer: test <test@example.com>\nDescription: genimage test package\n"),
    )
    .unwrap();
    std::fs::write(
        root.join(format!("usr/share/xcat-imaged-test/{name}")),
        "installed\n",
    )
    .unwrap();
    let deb = repo.join(format!("{name}_1.0_all.deb"));
    let o = Output::of({
        let mut c = Command::new("dpkg-deb");
        c.args(["--root-owner-group", "--build"])
            .arg(&root)
            .arg(&deb);
        c
    });
    assert_eq!(o.code, 0, "dpkg-deb: {o:?}");
    std::fs::remove_dir_all(&root).unwrap();
    let data = std::fs::read(&deb).unwrap();
    let sum = Output::of({
        let mut c = Command::new("sha256sum");
        c.arg(&deb);
        c
    });
    let sha = sum
        .stdout
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_string();
    format!(
        "Package: {name}\nVersion: 1.0\nArchitecture: all\nMaintainer: test <test@example.com>\nFilename: ./{name}_1.0_all.deb\nSize: {}\nSHA256: {sha}\nDescription: genimage test package\n\n",
        data.len()
    )
}

/// A fake xCAT installation: a dracut module of our own in xCAT's layout, rc.statelite.
fn fake_xcatroot(root: &Path) {
    let d = root.join("share/xcat/netboot/ubuntu/dracut");
    std::fs::create_dir_all(&d).unwrap();
    let files: &[(&str, &str)] = &[
        ("check", "#!/bin/sh\nexit 0\n"),
        ("module-setup.sh", "#!/bin/bash\ncheck() { return 0; }\ndepends() { echo network; return 0; }\ninstall() { . \"$moddir/install\"; }\n"),
        ("install.netboot", "#!/bin/sh\ninst \"$moddir/xcatroot\" \"/sbin/xcatroot\"\ninst_hook cmdline 10 \"$moddir/xcat-cmdline.sh\"\n"),
        ("install.statelite", "#!/bin/sh\ninst_hook pre-pivot 5 \"$moddir/xcat-prepivot.sh\"\n"),
        ("installkernel", "#!/bin/bash\ninstmods nfs sunrpc\n"),
        ("xcatroot", "#!/bin/sh\necho genimage-test-xcatroot\n"),
        ("xcat-cmdline.sh", "root=1\nrootok=1\nnetroot=xcat\n"),
        ("xcat-prepivot.sh", "#!/bin/sh\necho genimage-test-prepivot\n"),
    ];
    for (n, t) in files {
        std::fs::write(d.join(n), t).unwrap();
        std::fs::set_permissions(
            d.join(n),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
    }
    let a = root.join("share/xcat/netboot/add-on/statelite");
    std::fs::create_dir_all(&a).unwrap();
    std::fs::write(a.join("rc.statelite"), "#!/bin/sh\necho statelite\n").unwrap();
}

/// Developer shortcut: a directory that keeps the fixture (image, outputs) between runs, so
/// working on the tests does not rebuild the image each time. CI never sets it.
pub(crate) const KEEP_ENV: &str = "XCAT_IMAGED_TEST_IMAGE_DIR";

/// What the shared build produced.
pub(crate) struct Fixture {
    pub(crate) d: Dir,
    /// The image's rootimgdir.
    pub(crate) dir: PathBuf,
    xcatroot: PathBuf,
    /// The interrupted first build.
    cancel: Output,
    /// Mounts seen in the build's namespace while debootstrap ran (before SIGTERM).
    seen_mounts: Vec<String>,
    /// What was left right after the interrupted build.
    after_cancel_mounts: Vec<String>,
    after_cancel_processes: Vec<String>,
    after_cancel_tree: Vec<String>,
    lock_free_after_cancel: bool,
    build: Output,
    build_secs: f64,
    onlyinitrd: Output,
    pack: Output,
    /// Where the fixture moved packimage's archive.
    example_pack: PathBuf,
}

static FIXTURE: OnceLock<Result<Fixture, String>> = OnceLock::new();

/// The fixture's directory, removed when the test process exits (a static is never dropped,
/// and the tree is over a GiB).
static FIXTURE_DIR: OnceLock<PathBuf> = OnceLock::new();

extern "C" fn remove_fixture_dir() {
    if let Some(dir) = FIXTURE_DIR.get() {
        // Confined removal: never crosses into a mount (there should be none).
        let _ = xcat_imaged::fs::remove::remove_tree(dir, &|| false);
    }
}

pub(crate) fn fixture() -> Option<&'static Fixture> {
    match FIXTURE.get_or_init(make_fixture) {
        Ok(f) => Some(f),
        Err(why) => {
            skip(why);
            None
        }
    }
}

/// The test's additions to the example's postinstall: a record of its arguments and `IMG_*`
/// environment, and what the boot test (tests/boot.rs) looks for: a oneshot unit that reports
/// to the serial console once the image's own init runs, then powers off, and a file with a
/// capability that it checks. The marker text is composed at run time (it appears nowhere in
/// the image, a unit Description or the kernel command line), the token comes from the kernel
/// command line of each boot, and without `boottest.token=` the unit does nothing.
const TEST_POSTINSTALL: &str = r#"#!/bin/sh
# genimage test postinstall: arguments and IMG_* environment
echo "postinstall $1 $2 $3 $4 $5 $6"
printf '%s\n' "args=$2 $3 $4 $5 $6" "IMG_NAME=$IMG_NAME" "IMG_ROOTIMGDIR=$IMG_ROOTIMGDIR" "IMG_PROFILE=$IMG_PROFILE" > "$1/etc/genimage-test-postinstall"
set -e
mkdir -p "$1/usr/local/sbin" "$1/usr/local/bin" "$1/etc/systemd/system/multi-user.target.wants"
cat > "$1/usr/local/sbin/boottest-marker" <<'SCRIPT'
#!/bin/sh
tok=$(sed -n 's/.*boottest\.token=\([0-9a-f]*\).*/\1/p' /proc/cmdline)
root=$(awk '$2 == "/" { print $3 }' /proc/mounts | tr '\n' ',')
caps=$(getcap /usr/local/bin/boottest-cap | awk '{ print $2 }')
printf 'BOOTTEST_%s token=%s rootfs=%s uptime=%s\n' REACHED "$tok" "$root" "$(cut -d' ' -f1 /proc/uptime)" >/dev/ttyS0
printf 'BOOTTEST_%s token=%s caps=%s\n' CAPS "$tok" "${caps:-none}" >/dev/ttyS0
SCRIPT
chmod 755 "$1/usr/local/sbin/boottest-marker"
cat > "$1/etc/systemd/system/boottest-marker.service" <<'UNIT'
[Unit]
Description=Boot test: report to the serial console and power off
ConditionKernelCommandLine=boottest.token
After=multi-user.target

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/boottest-marker
ExecStartPost=/bin/systemctl --no-block poweroff

[Install]
WantedBy=multi-user.target
UNIT
ln -sf /etc/systemd/system/boottest-marker.service "$1/etc/systemd/system/multi-user.target.wants/boottest-marker.service"
cp "$1/usr/bin/true" "$1/usr/local/bin/boottest-cap"
chroot "$1" setcap cap_net_raw+ep /usr/local/bin/boottest-cap
"#;

/// The built-in example image (examples/debian-image) as examples/genimage writes its
/// definitions, plus the test's extras through the same attributes an admin would use: a
/// second pkglist (merged by pass; `#ENV:`, a removal, getcap for the boot test), otherpkgs
/// from a local repository, a second postinstall script with arguments.
fn example_defs(d: &Dir, mirror: &str, osvers: &str) -> String {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/debian-image");
    let text = std::fs::read_to_string(example.join("image.stanza")).unwrap();
    let text = text
        .replace("@WORK@", &d.path().display().to_string())
        .replace("@EXAMPLE@", &example.display().to_string())
        .replace("@MIRROR@", mirror.trim_end_matches('/'))
        .replace("@OSVERS@", osvers);
    let mut defs = xcat_imaged::defs::Defs::parse(&text).unwrap();
    let get = |defs: &xcat_imaged::defs::Defs, col: &str| {
        let keys = xcat_imaged::protocol::Row::from([("imagename".into(), NAME.into())]);
        let row = defs
            .table_get("linuximage", &keys, &[col.to_string()])
            .unwrap()
            .unwrap_or_else(|| panic!("the example defines {NAME}"));
        row.get(col).cloned().unwrap_or_default()
    };
    let pkglist = format!(
        "{},{}",
        get(&defs, "pkglist"),
        d.path().join("lists/test.pkglist").display()
    );
    let postinstall = format!(
        "{},{} one two",
        get(&defs, "postinstall"),
        d.path().join("post/genimage-test.postinstall").display()
    );
    let keys = xcat_imaged::protocol::Row::from([("imagename".into(), NAME.into())]);
    let values = xcat_imaged::protocol::Row::from([
        ("pkglist".to_string(), pkglist),
        ("postinstall".to_string(), postinstall),
        (
            "otherpkglist".to_string(),
            d.path()
                .join("lists/compute.otherpkgs.pkglist")
                .display()
                .to_string(),
        ),
        (
            "otherpkgdir".to_string(),
            d.path().join("otherpkgs").display().to_string(),
        ),
    ]);
    defs.table_set("linuximage", &keys, &values).unwrap();
    defs.to_stanza()
}

fn make_fixture() -> Result<Fixture, String> {
    let mirror = host_mirror();
    if let Some(why) = cannot_build(&mirror) {
        return Err(why);
    }
    let d = match std::env::var_os(KEEP_ENV) {
        Some(keep) => {
            let d = Dir::at(Path::new(&keep));
            if let Some(f) = load_fixture(&d) {
                return Ok(f);
            }
            if !d.tree(&d.install()).is_empty() {
                return Err(format!(
                    "{} has an incomplete fixture; remove it to build again",
                    d.path().display()
                ));
            }
            d
        }
        None => {
            let d = Dir::new();
            if FIXTURE_DIR.set(d.path().to_path_buf()).is_ok() {
                // SAFETY: registers a plain function; it runs once at process exit.
                unsafe {
                    nix::libc::atexit(remove_fixture_dir);
                }
            }
            d
        }
    };
    let osvers = host_osvers();
    let dir = d
        .install()
        .join("netboot")
        .join(&osvers)
        .join("x86_64/compute");
    d.write(
        "install/postscripts/xcatdsklspost",
        "#!/bin/sh\necho dskls\n",
    );
    d.write(
        "install/postscripts/xcatpostinit",
        "#!/bin/sh\necho postinit\n",
    );
    d.write(
        "lists/test.pkglist",
        "# the test's additions to the example's list, merged with it pass by pass\n#INCLUDE:sub/boot.pkglist#\n#NEW_INSTALL_LIST#\n#ENV:GENIMAGE_TEST=pass2#\n-no-such-package-is-removed-here\n",
    );
    d.write(
        "lists/sub/boot.pkglist",
        "# getcap and setcap, for the boot test's capability check\nlibcap2-bin\n",
    );
    let repo = d.path().join("otherpkgs/test");
    std::fs::create_dir_all(&repo).unwrap();
    let mut packages = make_deb(&repo, "xcat-imaged-test-a");
    packages.push_str(&make_deb(&repo, "xcat-imaged-test-b"));
    std::fs::write(repo.join("Packages"), packages).unwrap();
    d.write(
        "lists/compute.otherpkgs.pkglist",
        "test/xcat-imaged-test-a\n#NEW_INSTALL_LIST#\n-xcat-imaged-test-a\ntest/xcat-imaged-test-b\n",
    );
    let post = d.write("post/genimage-test.postinstall", TEST_POSTINSTALL);
    std::fs::set_permissions(post, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::write(d.defs_path(), example_defs(&d, &mirror, &osvers)).unwrap();
    let xcatroot = d.path().join("xcatroot");
    let none = d.path().join("no-xcat-here");

    // 1. Interrupted during debootstrap, once its proc mount exists in the build namespace.
    let mut c = d.command("genimage", &[NAME]);
    c.env("XCATROOT", &none)
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
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let out_reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line.clone());
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut unpacking = false;
    while Instant::now() < deadline {
        match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(l) if l.starts_with("I: Unpacking") => {
                unpacking = true;
                break;
            }
            Ok(_) | Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(_) => break,
        }
    }
    let mut seen_mounts = Vec::new();
    let t = Instant::now();
    while unpacking && seen_mounts.is_empty() && t.elapsed() < Duration::from_secs(30) {
        seen_mounts = mounts_anywhere_under(d.path());
        std::thread::sleep(Duration::from_millis(100));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .map_err(|e| e.to_string())?;
    let status = child.wait().map_err(|e| e.to_string())?;
    let cancel = Output {
        code: status.code().unwrap_or(-1),
        stdout: out_reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
    };
    if !unpacking {
        return Err(format!(
            "debootstrap never reached its unpack stage: {cancel:?}"
        ));
    }
    let after_cancel_mounts = mounts_anywhere_under(d.path());
    let after_cancel_processes = processes_under(d.path());
    let after_cancel_tree = d.tree(&dir);
    let lock_free_after_cancel =
        xcat_imaged::lock::acquire_in(&d.locks(), &dir.join("rootimg")).is_ok();

    // 2. The rerun builds the image.
    let t = Instant::now();
    let mut c = d.command("genimage", &[NAME]);
    c.env("XCATROOT", &none);
    let build = Output::of(c);
    let build_secs = t.elapsed().as_secs_f64();

    // 3. --onlyinitrd with an xCAT installation's dracut module and other drivers.
    fake_xcatroot(&xcatroot);
    let mut c = d.command(
        "genimage",
        &["--onlyinitrd", "-n", "virtio_net,e1000", NAME],
    );
    c.env("XCATROOT", &xcatroot);
    let onlyinitrd = Output::of(c);

    // 4. packimage, as the example is packed (its exlist); the archive is moved aside, since
    // the boot test packs the same rootimgdir again (each pack removes the other rootimg.*).
    let pack = d.run("packimage", &[NAME]);
    let example_pack = d.path().join("packs/example/rootimg.cpio.gz");
    std::fs::create_dir_all(example_pack.parent().unwrap()).unwrap();
    if pack.code == 0 {
        std::fs::rename(dir.join("rootimg.cpio.gz"), &example_pack).map_err(|e| e.to_string())?;
    }
    let f = Fixture {
        d,
        dir,
        xcatroot,
        cancel,
        seen_mounts,
        after_cancel_mounts,
        after_cancel_processes,
        after_cancel_tree,
        lock_free_after_cancel,
        build,
        build_secs,
        onlyinitrd,
        pack,
        example_pack,
    };
    if std::env::var_os(KEEP_ENV).is_some() {
        save_fixture(&f);
    }
    Ok(f)
}

/// Where [`KEEP_ENV`] keeps what the build printed, for the next run.
fn saved_path(d: &Dir) -> PathBuf {
    d.path().join("fixture.json")
}

fn save_fixture(f: &Fixture) {
    let out =
        |o: &Output| serde_json::json!({"code": o.code, "stdout": o.stdout, "stderr": o.stderr});
    let v = serde_json::json!({
        "dir": f.dir, "xcatroot": f.xcatroot, "example_pack": f.example_pack,
        "cancel": out(&f.cancel), "build": out(&f.build), "onlyinitrd": out(&f.onlyinitrd),
        "pack": out(&f.pack), "build_secs": f.build_secs,
        "seen_mounts": f.seen_mounts, "after_cancel_mounts": f.after_cancel_mounts,
        "after_cancel_processes": f.after_cancel_processes,
        "after_cancel_tree": f.after_cancel_tree,
        "lock_free_after_cancel": f.lock_free_after_cancel,
    });
    std::fs::write(saved_path(&f.d), v.to_string()).unwrap();
}

/// A fixture an earlier run left in [`KEEP_ENV`]'s directory, if it finished.
fn load_fixture(d: &Dir) -> Option<Fixture> {
    let text = std::fs::read_to_string(saved_path(d)).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    let s = |k: &str| v[k].as_str().unwrap_or_default().to_string();
    let list = |k: &str| -> Vec<String> {
        v[k].as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let out = |k: &str| Output {
        code: v[k]["code"].as_i64().unwrap_or(-1) as i32,
        stdout: v[k]["stdout"].as_str().unwrap_or_default().to_string(),
        stderr: v[k]["stderr"].as_str().unwrap_or_default().to_string(),
    };
    Some(Fixture {
        d: Dir::at(d.path()),
        dir: s("dir").into(),
        xcatroot: s("xcatroot").into(),
        cancel: out("cancel"),
        seen_mounts: list("seen_mounts"),
        after_cancel_mounts: list("after_cancel_mounts"),
        after_cancel_processes: list("after_cancel_processes"),
        after_cancel_tree: list("after_cancel_tree"),
        lock_free_after_cancel: v["lock_free_after_cancel"].as_bool().unwrap_or(false),
        build: out("build"),
        build_secs: v["build_secs"].as_f64().unwrap_or(0.0),
        onlyinitrd: out("onlyinitrd"),
        pack: out("pack"),
        example_pack: s("example_pack").into(),
    })
}

#[test]
fn genimage_interrupted_during_debootstrap_leaves_nothing() {
    let Some(f) = fixture() else { return };
    assert_eq!(f.cancel.code, 1, "{:?}", f.cancel);
    assert!(
        f.cancel
            .stderr
            .contains("Error: genimage was interrupted; the partial image was removed"),
        "{}",
        f.cancel.stderr
    );
    assert!(
        !f.seen_mounts.is_empty(),
        "debootstrap had mounted proc in its own namespace"
    );
    let host: Vec<String> = f
        .seen_mounts
        .iter()
        .filter(|m| m.starts_with(&format!("pid {}:", std::process::id())))
        .cloned()
        .collect();
    assert!(host.is_empty(), "never in our namespace: {host:?}");
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
    assert!(
        f.after_cancel_tree.is_empty(),
        "the partial tree was removed: {:?}",
        f.after_cancel_tree
    );
    assert!(f.lock_free_after_cancel, "the image lock was released");
}

#[test]
fn genimage_builds_a_bootable_debian_tree() {
    let Some(f) = fixture() else { return };
    let o = &f.build;
    assert_eq!(o.code, 0, "{}\n{}", o.stderr, o.stdout);
    let out = &o.stdout;
    // Streamed as the tools print it.
    assert!(out.contains("I: Retrieving"), "debootstrap lines");
    assert!(out.contains("Setting up dracut"), "apt lines");
    assert!(
        out.contains("dracut: *** Creating initramfs image file"),
        "dracut lines"
    );
    assert!(
        out.contains("No xCAT installation with a dracut module was found"),
        "stock modules are announced"
    );
    assert!(
        out.contains("chroot ") && out.contains("GENIMAGE_TEST=pass2 apt-get"),
        "pass 2 with its #ENV:"
    );
    assert!(
        out.contains("postinstall")
            && out.contains("genimage: debian-x86_64-netboot-compute built in")
    );
    let r = f.dir.join("rootimg");
    let read = |p: &str| std::fs::read_to_string(r.join(p)).unwrap_or_else(|e| panic!("{p}: {e}"));
    assert!(r.join("sbin/init").exists(), "systemd-sysv gives an init");
    assert!(read("etc/fstab").ends_with("compute_x86_64    /   tmpfs   rw  0 1\n"));
    assert_eq!(read("etc/hostname"), "", "not the build host's name");
    assert_eq!(
        read("etc/network/interfaces"),
        "auto eth0\niface eth0 inet dhcp\n"
    );
    assert_eq!(
        read("etc/resolv.conf"),
        "#Dummy resolv.conf to make boot cleaner"
    );
    assert!(
        !r.join("usr/sbin/policy-rc.d").exists(),
        "policy-rc.d is gone"
    );
    assert!(!r
        .join("etc/apt/sources.list.d/xcat-imaged-local.list")
        .exists());
    assert!(
        !r.join("mnt/otherpkgdir").exists(),
        "no bind mount point left"
    );
    assert_eq!(read("opt/xcat/xcatdsklspost"), "#!/bin/sh\necho dskls\n");
    assert!(r
        .join("etc/rc2.d/S61xcatpostinit")
        .symlink_metadata()
        .is_ok());
    assert!(
        std::fs::read_dir(r.join("var/cache/apt/archives")).map_or(true, |d| d
            .flatten()
            .all(|e| !e.file_name().to_string_lossy().ends_with(".deb")))
    );
    assert_eq!(
        read("etc/motd"),
        format!("Built by xcat-imaged genimage: {NAME}\n"),
        "the example's own postinstall ran first"
    );
    let post = read("etc/genimage-test-postinstall");
    assert!(
        post.contains(&format!("args={} x86_64 compute one two", host_osvers())),
        "{post}"
    );
    assert!(post.contains(&format!("IMG_NAME={NAME}")), "{post}");
    assert!(
        post.contains(&format!("IMG_ROOTIMGDIR={}", r.display())),
        "{post}"
    );
    // otherpkgs: pass 1 installed a, pass 2 removed it first and installed b.
    assert!(r
        .join("usr/share/xcat-imaged-test/xcat-imaged-test-b")
        .is_file());
    assert!(!r
        .join("usr/share/xcat-imaged-test/xcat-imaged-test-a")
        .exists());
    // No initramfs from the kernel package's own hook: genimage builds its two.
    let boot: Vec<String> = std::fs::read_dir(r.join("boot"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !boot.iter().any(|n| n.starts_with("initrd.img")),
        "{boot:?}"
    );
    // The kernel is a bzImage.
    let k = std::fs::read(f.dir.join("kernel")).unwrap();
    assert!(
        k.len() > 1 << 20 && &k[0x202..0x206] == b"HdrS",
        "kernel is a bzImage"
    );
    for mode in ["stateless", "statelite"] {
        let p = f.dir.join(format!("initrd-{mode}.gz"));
        let names = cpio_names(&p);
        assert!(names.iter().any(|n| n == "init"), "{mode}: /init");
        assert!(
            names.iter().any(|n| n.contains("dracut")),
            "{mode}: made by dracut"
        );
        assert!(
            names
                .iter()
                .any(|n| n.ends_with("/virtio_net.ko") || n.ends_with("/virtio_net.ko.xz")),
            "{mode}: the default drivers"
        );
        assert!(
            names.iter().any(|n| n.ends_with("sbin/dhclient")),
            "{mode}: network-legacy"
        );
    }
    eprintln_summary(f);
}

#[allow(clippy::print_stderr)]
fn eprintln_summary(f: &Fixture) {
    eprintln!(
        "genimage test build: {:.0} s; {}",
        f.build_secs,
        f.build
            .stdout
            .lines()
            .filter(|l| l.starts_with("genimage:") || l.starts_with("  "))
            .collect::<Vec<_>>()
            .join(" | ")
    );
}

#[test]
fn genimage_writes_the_definition_back() {
    let Some(f) = fixture() else { return };
    assert_eq!(f.build.code, 0, "{}", f.build.stderr);
    let defs = f.d.read_defs();
    let keys = xcat_imaged::protocol::Row::from([("imagename".to_string(), NAME.to_string())]);
    let cols: Vec<String> = [
        "pkgdir",
        "rootimgdir",
        "permission",
        "pkglist",
        "otherpkglist",
        "otherpkgdir",
        "postinstall",
        "netdrivers",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let row = defs.table_get("linuximage", &keys, &cols).unwrap().unwrap();
    assert_eq!(row["permission"], "755");
    assert_eq!(row["pkgdir"], host_mirror());
    assert_eq!(row["rootimgdir"], f.dir.display().to_string());
    assert!(
        row["pkglist"].ends_with(&format!(
            "examples/debian-image/compute.pkglist,{}",
            f.d.path().join("lists/test.pkglist").display()
        )),
        "{}",
        row["pkglist"]
    );
    assert!(
        row["postinstall"].contains("examples/debian-image/compute.postinstall,")
            && row["postinstall"].ends_with("genimage-test.postinstall one two"),
        "{}",
        row["postinstall"]
    );
    // The --onlyinitrd run's -n went back as the plugin does it.
    assert_eq!(row["netdrivers"], "virtio_net,e1000");
    let copies = f.d.tftp().join("xcat/osimage").join(NAME);
    for file in ["kernel", "initrd-stateless.gz", "initrd-statelite.gz"] {
        assert_eq!(
            std::fs::read(copies.join(file)).unwrap(),
            std::fs::read(f.dir.join(file)).unwrap(),
            "tftp copy of {file}"
        );
    }
}

#[test]
fn genimage_leaves_no_mount_and_no_process() {
    let Some(f) = fixture() else { return };
    assert_eq!(f.build.code, 0, "{}", f.build.stderr);
    let ours = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !ours.contains(&f.d.path().display().to_string()),
        "nothing in our mount table"
    );
    assert!(mounts_anywhere_under(f.d.path()).is_empty());
    let left = processes_under(f.d.path());
    assert!(left.is_empty(), "{left:?}");
    assert!(!f.dir.join(".rootimg.genimage-partial").exists());
    let names: Vec<String> = std::fs::read_dir(f.dir.join("rootimg/tmp"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().all(|n| !n.starts_with("xcat-imaged-initrd")),
        "{names:?}"
    );
}

#[test]
fn genimage_onlyinitrd_uses_the_xcat_dracut_module() {
    let Some(f) = fixture() else { return };
    let o = &f.onlyinitrd;
    assert_eq!(o.code, 0, "{}\n{}", o.stderr, o.stdout);
    assert!(o.stdout.contains(&format!(
        "Using xCAT's dracut module from {}",
        f.xcatroot
            .join("share/xcat/netboot/ubuntu/dracut")
            .display()
    )));
    assert!(
        !o.stdout.contains("debootstrap") && !o.stdout.contains("apt-get"),
        "no package step"
    );
    assert!(
        o.stdout
            .contains("--add-drivers virtio_net net_failover failover"),
        "-n with dependencies: {}",
        o.stdout
    );
    let stateless = cpio_names(&f.dir.join("initrd-stateless.gz"));
    assert!(
        stateless
            .iter()
            .any(|n| n == "usr/sbin/xcatroot" || n == "sbin/xcatroot"),
        "xcatroot in the stateless initrd"
    );
    assert!(stateless
        .iter()
        .any(|n| n.ends_with("cmdline/10-xcat-cmdline.sh")));
    assert!(
        !stateless.iter().any(|n| n.contains("xcat-prepivot")),
        "only the stateless files"
    );
    let statelite = cpio_names(&f.dir.join("initrd-statelite.gz"));
    assert!(statelite
        .iter()
        .any(|n| n.ends_with("pre-pivot/5-xcat-prepivot.sh")));
    let cmdline = std::fs::read_to_string(
        f.dir
            .join("rootimg/usr/lib/dracut/modules.d/97xcat/xcat-cmdline.sh"),
    )
    .unwrap();
    assert!(cmdline.ends_with("PRINIC=eth0\n"), "{cmdline}");
    assert_eq!(
        std::fs::read_to_string(f.dir.join("rootimg/etc/init.d/statelite")).unwrap(),
        "#!/bin/sh\necho statelite\n"
    );
}

#[test]
fn packimage_packs_the_built_image_and_a_node_can_unpack_it() {
    let Some(f) = fixture() else { return };
    assert_eq!(f.pack.code, 0, "{:?}", f.pack);
    let archive = &f.example_pack;
    let into = tempfile::tempdir().unwrap();
    let mut gz = Command::new("gzip")
        .arg("-cd")
        .arg(archive)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut c = Command::new("cpio");
    c.args(["-idum", "--quiet"])
        .current_dir(into.path())
        .stdin(gz.stdout.take().unwrap());
    let o = Output::of(c);
    assert!(gz.wait().unwrap().success());
    assert_eq!(o.code, 0, "{o:?}");
    let r = into.path();
    assert!(r.join("sbin/init").symlink_metadata().is_ok());
    assert!(std::fs::read_to_string(r.join("etc/fstab"))
        .unwrap()
        .contains("compute_x86_64    /   tmpfs"));
    assert!(
        r.join("opt/xcat/xcatinfo").is_file(),
        "packimage's injection"
    );
    assert!(r.join("lib/modules").is_dir());
    // The example's exlist.
    assert!(!r.join("usr/share/doc").exists(), "no documentation");
    assert!(r.join("usr/share/man").is_dir() && !r.join("usr/share/man/man1").exists());
    assert!(
        std::fs::read_dir(r.join("boot")).unwrap().next().is_none(),
        "/boot is empty"
    );
}

#[test]
fn genimage_refuses_what_it_cannot_do() {
    let d = Dir::new();
    let list = d.write("compute.pkglist", "bash\n@Core\n");
    d.defs(&format!(
        "{NAME}:\n    objtype=osimage\n    imagetype=linux\n    osarch=x86_64\n    osvers=debian12\n    profile=compute\n    provmethod=netboot\n    pkglist={}\n    pkgdir=http://deb.debian.org/debian\n\nnopkglist:\n    objtype=osimage\n    imagetype=linux\n    osarch=x86_64\n    osvers=debian12\n    profile=compute\n    provmethod=netboot\n    pkgdir=/x\n\nrh:\n    objtype=osimage\n    imagetype=linux\n    osarch=x86_64\n    osvers=rhels9.4\n    profile=compute\n    provmethod=netboot\n    pkglist={}\n\ninstall:\n    objtype=osimage\n    imagetype=linux\n    osarch=x86_64\n    osvers=debian12\n    profile=compute\n    provmethod=install\n    pkglist={}\n",
        list.display(),
        list.display(),
        list.display()
    ));
    let err = |args: &[&str]| {
        let o = d.run("genimage", args);
        assert_eq!(o.code, 1, "{args:?}: {o:?}");
        o.stderr
    };
    assert!(err(&["--interactive", NAME]).contains("--interactive is not supported by this engine"));
    if std::env::consts::ARCH == "x86_64" {
        assert!(
            err(&[NAME]).contains("apt has no package groups"),
            "checked before anything is written"
        );
    }
    assert!(err(&["nopkglist"]).contains("A .pkglist file must be specified for image 'nopkglist'"));
    assert!(err(&["rh"]).contains("available from a system that has ran copycds on rhels9.4"));
    assert!(err(&["install"]).contains("cannot be used to build diskless image"));
    assert!(err(&["nosuch"]).contains("Cannot find image 'nosuch' from the osimage table."));
    assert!(err(&["-o", "debian12", NAME]).contains("-o, -p and -a options are not allowed"));
    assert!(err(&["--onlyinitrd", "rh"]).contains("does not exist"));
    assert!(d.tree(&d.install()).is_empty(), "nothing was created");
    let o = d.run("genimage", &["-h"]);
    assert_eq!(o.code, 0);
    assert!(o.stdout.contains("genimage [-o <osver>]"));
}

#[test]
fn genimage_dryrun_prints_the_plan_and_changes_nothing() {
    if !Path::new("/usr/sbin/debootstrap").exists() && !cmd_exists("debootstrap") {
        skip("debootstrap is not installed");
        return;
    }
    if std::env::consts::ARCH != "x86_64" {
        skip("the test image is x86_64");
        return;
    }
    let d = Dir::new();
    let list = d.write(
        "compute.pkglist",
        "systemd-sysv\n#NEW_INSTALL_LIST#\n-nano\nlinux-image-amd64\n",
    );
    d.defs(&format!(
        "{NAME}:\n    objtype=osimage\n    imagetype=linux\n    osarch=x86_64\n    osvers=debian12\n    profile=compute\n    provmethod=netboot\n    pkglist={}\n    pkgdir=http://deb.debian.org/debian\n    postinstall=/bin/true x\n",
        list.display()
    ));
    let before = std::fs::read_to_string(d.defs_path()).unwrap();
    let mut c = d.command(
        "genimage",
        &["--dryrun", "--tempfile", "/tmp/xcat_genimage.1", NAME],
    );
    c.env("XCATROOT", d.path().join("none"));
    let o = Output::of(c);
    assert_eq!(o.code, 0, "{o:?}");
    let want = [
        "debootstrap --verbose --arch amd64 bookworm <rootimg> http://deb.debian.org/debian",
        "sources.list: deb http://deb.debian.org/debian-security bookworm-security main",
        "pass 1: apt-get -y install systemd-sysv",
        "pass 2: apt-get -y remove nano",
        "kernel: apt-get -y install --no-install-recommends linux-image-amd64",
        "dracut module: none (no xCAT installation found)",
        "write-back: linuximage debian-x86_64-netboot-compute: permission=755 pkgdir=http://deb.debian.org/debian",
        "Nothing was changed (--dryrun).",
    ];
    for w in want {
        assert!(o.stdout.contains(w), "{w}\n{}", o.stdout);
    }
    assert!(o.stdout.contains(&format!("postinstall: /bin/true {}/netboot/debian12/x86_64/compute/rootimg debian12 x86_64 compute x", d.install().display())));
    assert!(d.tree(&d.install()).is_empty(), "nothing was created");
    assert_eq!(std::fs::read_to_string(d.defs_path()).unwrap(), before);
}

#[test]
fn genimage_over_the_wire_needs_no_tempfile() {
    // REST's {"action":"gen"} sends only the image name (the stock plugin then fails for want
    // of --tempfile); the engine plans the same build from the tables it reads over the wire.
    if !Path::new("/usr/sbin/debootstrap").exists() && !cmd_exists("debootstrap") {
        skip("debootstrap is not installed");
        return;
    }
    if std::env::consts::ARCH != "x86_64" {
        skip("the test image is x86_64");
        return;
    }
    use xcat_imaged::protocol::{Call, FromShim};
    let d = Dir::new();
    let list = d.write("compute.pkglist", "systemd-sysv\nlinux-image-amd64\n");
    d.defs(&format!(
        "{NAME}:\n    objtype=osimage\n    imagetype=linux\n    osarch=x86_64\n    osvers=debian12\n    profile=compute\n    provmethod=netboot\n    pkglist={}\n    pkgdir=http://deb.debian.org/debian\n",
        list.display()
    ));
    let mut defs = d.read_defs();
    let mut s = crate::util::Served::start(&d.locks());
    s.send(&FromShim::Request(crate::util::request(
        "genimage",
        &[NAME, "--dryrun"],
    )));
    let t = s.finish(crate::util::answer_from(&mut defs));
    assert_eq!(t.done, Some(0), "{t:?}");
    assert!(
        t.infos()
            .iter()
            .any(|l| l.starts_with("debootstrap --verbose --arch amd64 bookworm")),
        "{t:?}"
    );
    assert!(t
        .calls
        .iter()
        .any(|c| matches!(c, Call::TableGet { table, .. } if table == "linuximage")));
    assert!(
        !t.calls.iter().any(|c| matches!(c, Call::TableSet { .. })),
        "a dry run writes nothing"
    );
}

#[test]
fn genimage_by_osver_and_profile_looks_up_the_profile_files() {
    if !Path::new("/usr/sbin/debootstrap").exists() && !cmd_exists("debootstrap") {
        skip("debootstrap is not installed");
        return;
    }
    if std::env::consts::ARCH != "x86_64" {
        skip("the test image is x86_64");
        return;
    }
    let d = Dir::new();
    // <installdir>/custom/netboot/<family> first, then the xCAT installation's directory.
    d.write(
        "install/custom/netboot/debian/compute.debian12.pkglist",
        "systemd-sysv\nlinux-image-amd64\n",
    );
    d.write(
        "xcat/share/xcat/netboot/debian/compute.pkglist",
        "not-this-one\n",
    );
    d.write(
        "xcat/share/xcat/netboot/debian/compute.postinstall",
        "#!/bin/sh\n",
    );
    d.defs("");
    let mut c = d.command(
        "genimage",
        &[
            "-o",
            "debian12.5",
            "-p",
            "compute",
            "-a",
            "x86_64",
            "--dryrun",
        ],
    );
    c.env("XCATROOT", d.path().join("xcat"));
    let o = Output::of(c);
    assert_eq!(o.code, 0, "{o:?}");
    let custom = d
        .install()
        .join("custom/netboot/debian/compute.debian12.pkglist");
    assert!(
        o.stdout
            .contains(&format!("pkglist file: {}", custom.display())),
        "{}",
        o.stdout
    );
    assert!(o
        .stdout
        .contains("genimage: pkgdir has no http mirror; using 'http://deb.debian.org/debian'"));
    assert!(o.stdout.contains(&format!(
        "postinstall: {}/xcat/share/xcat/netboot/debian/compute.postinstall",
        d.path().display()
    )));
    for m in ["netboot", "statelite"] {
        assert!(
            o.stdout.contains(&format!("write-back: osimage debian12.5-x86_64-{m}-compute: profile=compute imagetype=linux provmethod={m} osname=Linux osvers=debian12.5 osarch=x86_64")),
            "{}",
            o.stdout
        );
        assert!(o.stdout.contains(&format!("write-back: linuximage debian12.5-x86_64-{m}-compute: permission=755 pkgdir={}/debian12.5/x86_64 rootimgdir={}/netboot/debian12.5/x86_64/compute", d.install().display(), d.install().display())), "{}", o.stdout);
    }
    let o = d.run("genimage", &["-p", "compute"]);
    assert_eq!(o.code, 1);
    assert!(
        o.stderr.contains("-o <osver> and -p <profile>"),
        "{}",
        o.stderr
    );
}
