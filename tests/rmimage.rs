//! rmimage end to end in standalone mode: messages, exit codes, what is removed and kept.

use crate::util::{skip, Dir};
use std::path::{Path, PathBuf};

const USAGE: &str =
    "\nUsage:\n    rmimage [-h | --help]\n    rmimage [-V | --verbose] imagename [--xcatde]\n";

fn osimage(name: &str, attrs: &[(&str, &str)]) -> String {
    let mut s = format!("{name}:\n    objtype=osimage\n    imagetype=linux\n");
    for (k, v) in attrs {
        s.push_str(&format!("    {k}={v}\n"));
    }
    s.push('\n');
    s
}

/// A netboot image with an explicit rootimgdir, its files and its tftp directory.
fn netboot_image(d: &Dir, name: &str) -> PathBuf {
    let dir = d.install().join("netboot/rhels9/x86_64/compute");
    d.image(&dir);
    std::fs::create_dir_all(d.tftp().join("xcat/osimage").join(name)).unwrap();
    std::fs::write(d.tftp().join("xcat/osimage").join(name).join("kernel"), "k").unwrap();
    d.defs(&osimage(
        name,
        &[
            ("osvers", "rhels9"),
            ("osarch", "x86_64"),
            ("profile", "compute"),
            ("provmethod", "netboot"),
            ("rootimgdir", &dir.display().to_string()),
        ],
    ));
    dir
}

fn removal_lines(dir: &Path, tftp: &Path) -> Vec<String> {
    let mut v = vec![format!("Removing directory {}/rootimg", dir.display())];
    for f in [
        "kernel",
        "initrd-stateless.gz",
        "initrd-statelite.gz",
        "rootimg.cpio.gz",
        "rootimg.tar.xz",
    ] {
        v.push(format!("Removing file {}/{f}", dir.display()));
    }
    v.push(format!("Removing directory {}", tftp.display()));
    v.push("Image files have been removed successfully from this management node.".into());
    v
}

#[test]
fn usage() {
    let d = Dir::new();
    d.defs("");
    for flag in ["-h", "--help", "--HELP", "--he"] {
        let o = d.run("rmimage", &[flag]);
        assert_eq!(o.code, 0, "{flag}: {o:?}");
        assert_eq!(o.stdout, USAGE, "{flag}");
        assert_eq!(o.stderr, "");
    }
}

#[test]
fn argument_errors_match_stock() {
    let d = Dir::new();
    d.defs("");
    let cases: &[(&[&str], &str)] = &[
        (&[], "Error: Missing flag -o, -a or -p\n"),
        (&["-o", "rhels9", "-a", "x86_64"], "Error: Missing flag -o, -a or -p\n"),
        (&["-o", "0", "-a", "x86_64", "-p", "compute"], "Error: Missing flag -o, -a or -p\n"),
        (&["-o", "rhels9", "-a", "x86_64", "-p", "c", "--xcatdef"], "Error: --xcatdef can not be used with the -o, -a or -p\n"),
        (&["img", "-o", "rhels9"], "Error: -o, -a and -p options are not allowed when a image name is specified.\n"),
        // pass_through: unknown options become the image name (the z/VM CGI's `rmimage -v`).
        (&["-v", "img"], "Error: Invalid image name -v\n"),
        (&["-x", "img"], "Error: Invalid image name -x\n"),
        (&["-o"], "Error: Invalid image name -o\n"),
        (&["nodashes"], "Error: Invalid image name nodashes\n"),
        (&["a-b-c-"], "Error: Invalid image name a-b-c-\n"),
        (&["rhels9-x86_64-install-compute"], "Error: Invalid method \"install\", the rmimage command can only be used to remove the netboot, statelite, sysclone or raw image files\n"),
        (&["rhels9-x86_64-netboot-compute"], ""),
    ];
    for (args, err) in cases {
        let o = d.run("rmimage", args);
        if err.is_empty() {
            let dir = d.install().join("netboot/rhels9/x86_64/compute");
            assert_eq!(
                o.stderr,
                format!("Error: Image directory {} does not exist\n", dir.display()),
                "{args:?}"
            );
        } else {
            assert_eq!(o.stderr, *err, "{args:?}");
        }
        assert_eq!(o.code, 1, "{args:?}");
        assert_eq!(o.stdout, "", "{args:?}");
    }
}

#[test]
fn removes_a_netboot_image_with_stock_messages() {
    let d = Dir::new();
    let name = "rhels9-x86_64-netboot-compute";
    let dir = netboot_image(&d, name);
    std::fs::write(dir.join("keepme.txt"), "custom").unwrap();
    std::fs::write(dir.join("rootimg-statelite.gz"), "x").unwrap();
    let o = d.run("rmimage", &[name]);
    assert_eq!(o.stderr, "");
    assert_eq!(o.code, 0);
    assert_eq!(
        o.lines(),
        removal_lines(&dir, &d.tftp().join("xcat/osimage").join(name))
    );
    // The directory itself and files stock does not own stay.
    assert_eq!(d.tree(&dir), vec!["keepme.txt", "rootimg-statelite.gz"]);
    // The definition stays without --xcatdef.
    assert!(d.read_defs().objects().iter().any(|o| o.name == name));
}

#[test]
fn verbose_lines() {
    let d = Dir::new();
    let name = "rhels9-x86_64-netboot-compute";
    let dir = netboot_image(&d, name);
    for flag in ["-V", "--verbose", "--Verbose"] {
        d.image(&dir);
        let o = d.run("rmimage", &[flag, name]);
        assert_eq!(o.code, 0, "{o:?}");
        let lines = o.lines();
        assert_eq!(
            &lines[..4],
            &[
                format!("image name is {name}"),
                format!("For osimage {name}: osver = rhels9, arch = x86_64, profile = compute, method = netboot in osimage table"),
                format!("For osimage {name}: rootimgdir = {} in linuximage table", dir.display()),
                format!("image directory is {}", dir.display()),
            ]
        );
    }
}

#[test]
fn name_splitting_without_definition() {
    let d = Dir::new();
    d.defs("");
    let dir = d.install().join("netboot/rhels9/x86_64/compute");
    d.image(&dir);
    let o = d.run("rmimage", &["-V", "rhels9-x86_64-netboot-compute"]);
    assert_eq!(o.code, 0, "{o:?}");
    assert_eq!(o.lines()[1], "For osimage rhels9-x86_64-netboot-compute: osver = , arch = , profile = , method =  in osimage table");
    assert!(!dir.join("rootimg").exists());
    // statelite images live in the netboot tree too, and get the service-node note.
    let dir = d.install().join("netboot/sles15/ppc64le/service");
    d.image(&dir);
    let o = d.run("rmimage", &["sles15-ppc64le-statelite-service"]);
    assert_eq!(o.code, 0, "{o:?}");
    assert!(o.stdout.contains("Please be aware that the statelite image files on the diskful service nodes are not removed"));
    assert!(o.stdout.contains(&format!(
        "\"rsync -az --delete {} <sn>:/\"",
        d.install().display()
    )));
    assert!(!dir.join("rootimg").exists());
}

#[test]
fn flag_form_and_service_node_note() {
    let d = Dir::new();
    d.defs("");
    let dir = d.install().join("netboot/rhels9/x86_64/compute");
    d.image(&dir);
    let tftp = d.tftp().join("xcat/netboot/rhels9/x86_64/compute");
    std::fs::create_dir_all(&tftp).unwrap();
    let o = d.run(
        "rmimage",
        &["-o", "rhels9", "-a", "x86_64", "-p", "compute"],
    );
    assert_eq!(o.code, 0, "{o:?}");
    let mut want = removal_lines(&dir, &tftp);
    want.push(format!(
        "Please be aware that the statelite image files on the diskful service nodes are not removed, you can remove the image files on the service nodes manually if necessary, for example, use command \"rsync -az --delete {} <sn>:/\" to remove the image files on the service nodes, where the <sn> is the hostname of the service node.",
        d.install().display()
    ));
    assert_eq!(o.lines(), want);
    assert!(!tftp.exists());
    // Path components from flags cannot climb out.
    let o = d.run("rmimage", &["-o", "rhels9", "-a", "x86_64", "-p", ".."]);
    assert_eq!(o.code, 1);
    assert_eq!(o.stderr, "Error: Invalid value .. for -p: it is . or ..\n");
}

#[test]
fn xcatdef_removes_the_definition_rows() {
    let d = Dir::new();
    let name = "rhels9-x86_64-netboot-compute";
    let dir = netboot_image(&d, name);
    // A second image must survive.
    let text = std::fs::read_to_string(d.defs_path()).unwrap()
        + &osimage("other", &[("osvers", "rhels8")]);
    std::fs::write(d.defs_path(), text).unwrap();
    let o = d.run("rmimage", &[name, "--xcat"]);
    assert_eq!(o.code, 0, "{o:?}");
    let lines = o.lines();
    assert_eq!(
        &lines[lines.len() - 2..],
        &[
            format!("Removing osimage definition for {name}."),
            format!("osimage definition for {name} is removed successfully."),
        ]
    );
    let defs = d.read_defs();
    let names: Vec<&str> = defs.objects().iter().map(|o| o.name.as_str()).collect();
    assert_eq!(names, ["clustersite", "other"]);
    assert!(!dir.join("rootimg").exists());
}

#[test]
fn invalid_provmethod_is_refused() {
    let d = Dir::new();
    d.defs(&osimage("img", &[("provmethod", "install")]));
    let o = d.run("rmimage", &["img"]);
    assert_eq!(o.code, 1);
    assert_eq!(o.stderr, "Error: Invalid method \"install\", the rmimage command can only be used to remove the netboot, statelite, sysclone or raw image files\n");
}

#[test]
fn sysclone_is_refused_after_lock_except_on_s390x() {
    let d = Dir::new();
    let dir = d.install().join("netboot/rhels9/x86_64/sc");
    d.image(&dir);
    d.defs(&osimage(
        "sc",
        &[
            ("osvers", "rhels9"),
            ("osarch", "x86_64"),
            ("profile", "sc"),
            ("provmethod", "sysclone"),
        ],
    ));
    let o = d.run("rmimage", &["sc"]);
    assert_eq!(o.code, 1);
    assert_eq!(
        o.stderr,
        "Error: rmimage cannot be used to remove sysclone images for \"x86_64\" architecture\n"
    );
    assert!(dir.join("rootimg/etc/hostname").exists());
}

#[test]
fn s390x_removes_the_whole_image_directory() {
    let d = Dir::new();
    d.defs("");
    let dir = d.install().join("raw/zvm7/s390x/compute");
    d.image(&dir);
    std::fs::write(dir.join("extra"), "x").unwrap();
    let o = d.run("rmimage", &["zvm7-s390x-raw-compute"]);
    assert_eq!(o.code, 0, "{o:?}");
    assert!(o
        .stdout
        .contains(&format!("Removing directory {}\n", dir.display())));
    assert!(!dir.exists());
    assert!(d.install().join("raw/zvm7/s390x").exists());
}

#[test]
fn lock_held_by_another_process_is_refused() {
    let d = Dir::new();
    let name = "rhels9-x86_64-netboot-compute";
    let dir = netboot_image(&d, name);
    let rootimg = dir.join("rootimg");
    let held = xcat_imaged::lock::acquire_in(&d.locks(), &rootimg).expect("take the lock");
    let o = d.run("rmimage", &[name]);
    assert_eq!(o.code, 1);
    assert_eq!(
        o.stderr,
        format!(
            "Error: failed to acquire lock, seems there is another genimage/packimage/rmimage process {} running on root image dir \"{}\"\n",
            std::process::id(),
            rootimg.display()
        )
    );
    assert!(rootimg.join("etc/hostname").exists());
    drop(held);
    assert_eq!(d.run("rmimage", &[name]).code, 0);
    // The lock file stays, so its inode is the same for the next flock.
    assert_eq!(std::fs::read_dir(d.locks()).unwrap().count(), 1);
}

/// See: xCAT E22 — `rmimage 0` and `rmimage ""` removed all of <tftpdir>/xcat/netboot.
#[test]
fn rmimage_zero_name_refused() {
    let d = Dir::new();
    d.defs("");
    let keep = d.tftp().join("xcat/netboot/rhels9/x86_64/compute/kernel");
    std::fs::create_dir_all(keep.parent().unwrap()).unwrap();
    std::fs::write(&keep, "k").unwrap();
    std::fs::write(d.install().join("netboot/kernel"), "k").ok();
    for name in ["0", ""] {
        let o = d.run("rmimage", &[name]);
        assert_eq!(o.code, 1, "{name:?}");
        let shown = if name.is_empty() { "\"\"" } else { name };
        assert_eq!(o.stderr, format!("Error: Invalid image name {shown}\n"));
        assert!(keep.exists());
    }
}

/// See: xCAT E26 — rootimgdir "/" removed /kernel and /rootimg*; relative and dotted dirs.
#[test]
fn hostile_rootimgdir_refused_and_nothing_changes() {
    let d = Dir::new();
    let victim = d.path().join("victim");
    d.image(&victim);
    std::fs::create_dir_all(d.install().join("netboot")).unwrap();
    d.defs("");
    let snapshot = || {
        let mut t = d.tree(d.path());
        t.retain(|p| !p.starts_with("locks/") && p != "defs.stanza");
        t
    };
    let before = snapshot();
    let bad = [
        ("/".to_string(), "Error: Refusing to remove image files in /: / is / or a top-level directory\n".to_string()),
        ("/usr".into(), "Error: Refusing to remove image files in /usr: /usr is / or a top-level directory\n".into()),
        ("relative/dir".into(), "Error: Invalid rootimgdir relative/dir for osimage img: it is not an absolute path\n".into()),
        (format!("{}/../victim", d.install().display()), format!("Error: Invalid rootimgdir {}/../victim for osimage img: it contains . or .. components\n", d.install().display())),
        (d.install().display().to_string(), format!("Error: Refusing to remove image files in {0}: it is {0} itself\n", d.install().display())),
        (d.path().display().to_string(), format!("Error: Refusing to remove image files in {0}: it would contain {0}/install\n", d.path().display())),
    ];
    for (dir, err) in bad {
        d.defs(&osimage(
            "img",
            &[("rootimgdir", &dir), ("provmethod", "netboot")],
        ));
        let o = d.run("rmimage", &["img"]);
        assert_eq!(o.code, 1, "{dir}");
        assert_eq!(o.stderr, err, "{dir}");
        assert_eq!(o.stdout, "");
    }
    // A symlinked rootimgdir that resolves to / is refused too.
    let link = d.install().join("netboot/link");
    std::fs::create_dir_all(link.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink("/", &link).unwrap();
    d.defs(&osimage(
        "img",
        &[("rootimgdir", &link.display().to_string())],
    ));
    let o = d.run("rmimage", &["img"]);
    assert_eq!(o.code, 1);
    assert!(o.stderr.contains("it resolves to /"), "{}", o.stderr);
    std::fs::remove_file(&link).unwrap();
    assert_eq!(before, snapshot());
}

#[test]
fn symlinks_are_never_followed() {
    let d = Dir::new();
    let name = "rhels9-x86_64-netboot-compute";
    let dir = netboot_image(&d, name);
    let outside = d.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("precious"), "data").unwrap();
    std::os::unix::fs::symlink(&outside, dir.join("rootimg/mnt")).unwrap();
    std::os::unix::fs::symlink(outside.join("precious"), dir.join("rootimg/etc/link")).unwrap();
    // A kernel that is a symlink: the link goes, its target stays.
    std::fs::remove_file(dir.join("kernel")).unwrap();
    std::os::unix::fs::symlink(outside.join("precious"), dir.join("kernel")).unwrap();
    let o = d.run("rmimage", &[name]);
    assert_eq!(o.code, 0, "{o:?}");
    assert!(!dir.join("rootimg").exists());
    assert!(std::fs::symlink_metadata(dir.join("kernel")).is_err());
    assert_eq!(
        std::fs::read_to_string(outside.join("precious")).unwrap(),
        "data"
    );
}

#[test]
fn rootimg_symlink_is_removed_as_a_link() {
    let d = Dir::new();
    let name = "rhels9-x86_64-netboot-compute";
    let dir = netboot_image(&d, name);
    let real = d.path().join("realroot");
    std::fs::rename(dir.join("rootimg"), &real).unwrap();
    std::os::unix::fs::symlink(&real, dir.join("rootimg")).unwrap();
    let o = d.run("rmimage", &[name]);
    assert_eq!(o.code, 0, "{o:?}");
    assert!(o
        .stdout
        .starts_with(&format!("Removing directory {}/rootimg\n", dir.display())));
    assert!(std::fs::symlink_metadata(dir.join("rootimg")).is_err());
    assert!(real.join("etc/hostname").exists());
}

#[test]
fn missing_directory_keeps_definition() {
    let d = Dir::new();
    let name = "rhels9-x86_64-netboot-compute";
    let dir = netboot_image(&d, name);
    std::fs::remove_dir_all(&dir).unwrap();
    let o = d.run("rmimage", &[name, "--xcatdef"]);
    assert_eq!(o.code, 1);
    assert_eq!(
        o.stderr,
        format!("Error: Image directory {} does not exist\n", dir.display())
    );
    assert!(d.read_defs().objects().iter().any(|o| o.name == name));
}

/// See: xCAT E27 — failed unlinks were ignored and "removed successfully" always printed.
#[test]
fn unremovable_files_are_reported_not_claimed() {
    let d = Dir::new();
    let name = "rhels9-x86_64-netboot-compute";
    let dir = netboot_image(&d, name);
    let stuck = dir.join("rootimg/etc/hostname");
    let ro = dir.join("rootimg/etc");
    // Root ignores permissions, so pin the file with the immutable attribute instead.
    let pin = |on: bool| {
        if crate::util::is_root() {
            std::process::Command::new("chattr")
                .arg(if on { "+i" } else { "-i" })
                .arg(&stuck)
                .status()
                .is_ok_and(|s| s.success())
        } else {
            let mode = if on { 0o555 } else { 0o755 };
            std::fs::set_permissions(&ro, std::os::unix::fs::PermissionsExt::from_mode(mode))
                .is_ok()
        }
    };
    if !pin(true) {
        skip("cannot make a file unremovable here (chattr +i unsupported)");
        return;
    }
    let o = d.run("rmimage", &[name, "--xcatdef"]);
    pin(false);
    assert_eq!(o.code, 1);
    assert!(
        o.stderr
            .contains(&format!("Error: Cannot remove {}", stuck.display())),
        "{}",
        o.stderr
    );
    assert!(
        o.stderr.contains("Image files were not completely removed"),
        "{}",
        o.stderr
    );
    assert!(!o.stdout.contains("removed successfully"));
    assert!(d.read_defs().objects().iter().any(|o| o.name == name));
}
