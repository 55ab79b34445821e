//! The files genimage writes into a freshly built image so it boots as an xCAT stateless
//! node (xCAT's `generic_post` and `postscripts()`, ubuntu flavour here, rh and sles in
//! [`super::post_rpm`]; spec §3.3), and the statelite scaffolding.
//!
//! Everything is written through [`Tree`], so a symlink in the image never sends a write to
//! the host. Deliberately different from xCAT:
//! * `/etc/hostname` is emptied (debootstrap copies the build host's name in; xCAT leaves
//!   that to the shipped postinstall, spec §7.1 step 8).
//! * `/etc/securetty` gets ttyS0/ttyS1 only when missing, so reruns do not pile them up.
//! * `/bin/sh` stays what the image's dash package makes it (xCAT ubuntu relinks it to bash,
//!   behind dpkg's back: spec §6 item 16); the upstart `/etc/init/ttyS.conf` is not written
//!   (no upstart on any supported release).
//! * `S10networking` is linked only when `/etc/init.d/networking` exists (never dangling).
//!
//! It knows the image layout; not tables, packages or the host.

use super::tree::{Kind, Tree};
use super::Build;
use std::io;
use std::path::Path;

/// The fstab xCAT writes: pseudo filesystems, tmpfs `/tmp` and `/var/tmp`, the tmpfs root.
pub fn fstab(profile: &str, arch: &str, tmplimit: Option<&str>) -> String {
    let mut t = String::from(
        "devpts  /dev/pts devpts   gid=5,mode=620 0 0\n\
         tmpfs   /dev/shm tmpfs    defaults       0 0\n\
         proc    /proc    proc     defaults       0 0\n\
         sysfs   /sys     sysfs    defaults       0 0\n",
    );
    match tmplimit {
        Some(l) => {
            t.push_str(&format!(
                "tmpfs   /tmp     tmpfs    defaults,size={l}       0 2\n"
            ));
            t.push_str(&format!(
                "tmpfs   /var/tmp     tmpfs    defaults,size={l}       0 2\n"
            ));
        }
        None => {
            t.push_str("tmpfs   /tmp     tmpfs    defaults             0 2\n");
            t.push_str("tmpfs   /var/tmp     tmpfs    defaults       0 2\n");
        }
    }
    t.push_str(&format!("{profile}_{arch}    /   tmpfs   rw  0 1\n"));
    t
}

/// `/etc/network/interfaces` as xCAT writes it: DHCP on the boot interface and the others.
pub fn interfaces(nodebootif: Option<&str>, others: &[String]) -> Option<String> {
    let mut t = String::new();
    for nic in nodebootif
        .into_iter()
        .chain(others.iter().map(String::as_str))
    {
        if !nic.is_empty() {
            t.push_str(&format!("auto {nic}\niface {nic} inet dhcp\n"));
        }
    }
    (!t.is_empty()).then_some(t)
}

/// The generic post steps for the build's family (rh and sles flavours in
/// [`super::post_rpm`]). Returns notes for the admin.
pub fn generic_post(tree: &Tree, b: &Build) -> io::Result<Vec<String>> {
    if super::is_rh_family(&b.family) {
        return super::post_rpm::generic_post(tree, b, super::post_rpm::Flavour::Rh);
    }
    if super::is_sles_family(&b.family) {
        return super::post_rpm::generic_post(tree, b, super::post_rpm::Flavour::Sles);
    }
    debian_post(tree, b)
}

/// What the dry run says the post step writes.
pub fn summary(family: &str) -> &'static str {
    if super::is_rh_family(family) {
        "post: fstab, resolv.conf, sysconfig/network, ifcfg files, securetty, passwd, skel, xcatpostinit1 (systemd), fsck.nfs, xcatdsklspost"
    } else if super::is_sles_family(family) {
        "post: fstab, resolv.conf, sysconfig clock/dhcp, ifcfg files, securetty, passwd, skel, xcatpostinit, enabled sshd/wicked/xcatpostinit, fsck.nfs, xcatdsklspost"
    } else {
        "post: fstab, resolv.conf, hostname, network, securetty, passwd, xcatpostinit, fsck.nfs, xcatdsklspost"
    }
}

/// The generic post steps for a Debian-family image. Returns notes for the admin.
fn debian_post(tree: &Tree, b: &Build) -> io::Result<Vec<String>> {
    let mut notes = Vec::new();
    tree.mkdir_all("dev", 0o755)?;
    tree.char_device("dev/null", 0o666, 1, 3)?;
    tree.mkdir_all("etc", 0o755)?;
    tree.write(
        "etc/fstab",
        fstab(&b.profile, &b.arch, b.tmplimit.as_deref()).as_bytes(),
        0o644,
    )?;
    tree.write(
        "etc/resolv.conf",
        b"#Dummy resolv.conf to make boot cleaner",
        0o644,
    )?;
    tree.write("etc/hostname", b"", 0o644)?;
    if let Some(text) = interfaces(b.nodebootif.as_deref(), &b.otherifce) {
        tree.mkdir_all("etc/network", 0o755)?;
        tree.write("etc/network/interfaces", text.as_bytes(), 0o644)?;
    }
    if b.arch != "s390x" {
        add_securetty(tree, &["ttyS0", "ttyS1"])?;
    }
    fix_root_passwd(tree)?;
    copy_skel(tree)?;
    if tree.is_dir("etc/rc3.d") && tree.kind("etc/init.d/networking")?.is_some() {
        let has = tree
            .list("etc/rc3.d")?
            .iter()
            .any(|n| n.len() > 3 && n.starts_with('S') && n[3..].starts_with("network"));
        if !has {
            tree.symlink("/etc/init.d/networking", "etc/rc3.d/S10networking")?;
        }
    }
    let postscripts = b.installdir.join("postscripts");
    let xcatpostinit = postscripts.join("xcatpostinit");
    if xcatpostinit.is_file() {
        tree.mkdir_all("etc/init.d", 0o755)?;
        tree.copy_in(&xcatpostinit, "etc/init.d/xcatpostinit", 0o755)?;
        tree.mkdir_all("etc/rc2.d", 0o755)?;
        tree.symlink("../init.d/xcatpostinit", "etc/rc2.d/S61xcatpostinit")?;
    } else {
        notes.push(format!(
            "{} not found: the image has no xCAT boot hook (xcatpostinit)",
            xcatpostinit.display()
        ));
    }
    fsck_nfs_and_dsklspost(tree, b, &mut notes)?;
    Ok(notes)
}

/// Appends the serial consoles (or others) to `/etc/securetty` that it does not list yet,
/// so reruns do not pile them up.
pub(super) fn add_securetty(tree: &Tree, ttys: &[&str]) -> io::Result<()> {
    let old =
        String::from_utf8_lossy(&tree.read("etc/securetty")?.unwrap_or_default()).into_owned();
    let mut add = String::new();
    for tty in ttys {
        if !old.lines().any(|l| l.trim() == *tty) {
            add.push_str(tty);
            add.push('\n');
        }
    }
    if !add.is_empty() {
        tree.append("etc/securetty", add.as_bytes(), 0o644)?;
    }
    Ok(())
}

/// `root:*` → `root:x` in `/etc/passwd`.
pub(super) fn fix_root_passwd(tree: &Tree) -> io::Result<()> {
    if let Some(passwd) = tree.read("etc/passwd")? {
        let text = String::from_utf8_lossy(&passwd);
        let fixed: String = text
            .split_inclusive('\n')
            .map(|l| match l.strip_prefix("root:*") {
                Some(rest) => format!("root:x{rest}"),
                None => l.to_string(),
            })
            .collect();
        if fixed != text {
            let mode = tree
                .lstat("etc/passwd")?
                .map_or(0o644, |(_, st)| st.st_mode & 0o7777);
            tree.write("etc/passwd", fixed.as_bytes(), mode)?;
        }
    }
    Ok(())
}

/// Copies the dot files of `/etc/skel` into `/root`.
pub(super) fn copy_skel(tree: &Tree) -> io::Result<()> {
    tree.mkdir_all("root", 0o700)?;
    for name in tree.list("etc/skel")? {
        if !name.starts_with('.') {
            continue;
        }
        let src = format!("etc/skel/{name}");
        if let Some((Kind::File, st)) = tree.lstat(&src)? {
            if let Some(data) = tree.read(&src)? {
                tree.write(&format!("root/{name}"), &data, st.st_mode & 0o7777)?;
            }
        }
    }
    Ok(())
}

/// xCAT's `postscripts()` besides generic_post: `/sbin/fsck.nfs` ("true") and
/// `/opt/xcat/xcatdsklspost` from `<installdir>/postscripts`.
pub(super) fn fsck_nfs_and_dsklspost(
    tree: &Tree,
    b: &Build,
    notes: &mut Vec<String>,
) -> io::Result<()> {
    tree.mkdir_all("sbin", 0o755)?;
    let fsck_ok = tree
        .lstat("sbin/fsck.nfs")?
        .is_some_and(|(k, st)| k == Kind::File && st.st_mode & 0o111 != 0);
    if !fsck_ok {
        tree.write("sbin/fsck.nfs", b"true\n", 0o755)?;
    }
    tree.mkdir_all("opt/xcat", 0o755)?;
    let dsklspost = b.installdir.join("postscripts/xcatdsklspost");
    if dsklspost.is_file() {
        tree.copy_in(&dsklspost, "opt/xcat/xcatdsklspost", 0o755)?;
    } else {
        notes.push(format!(
            "{} not found: not copied into the image",
            dsklspost.display()
        ));
    }
    Ok(())
}

/// The statelite scaffolding (also under `--onlyinitrd`, as xCAT): `/.statelite` and
/// `/etc/init.d/statelite` from xCAT's add-on directory. Without an xCAT installation the
/// script is skipped with a note; with one, a missing script is xCAT's error.
pub fn statelite(tree: &Tree, share: Option<&Path>) -> Result<Vec<String>, String> {
    let io = |e: io::Error| e.to_string();
    tree.mkdir_all(".statelite", 0o755).map_err(io)?;
    let Some(share) = share else {
        return Ok(vec![
            "No xCAT installation: /etc/init.d/statelite (rc.statelite) is not put into the image"
                .into(),
        ]);
    };
    let src = share.join("add-on/statelite/rc.statelite");
    if !src.is_file() {
        return Err(format!("Can't find {}!", src.display()));
    }
    let mode = std::fs::metadata(&src)
        .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o7777)
        .unwrap_or(0o755);
    tree.mkdir_all("etc/init.d", 0o755).map_err(io)?;
    tree.copy_in(&src, "etc/init.d/statelite", mode)
        .map_err(io)?;
    Ok(Vec::new())
}

/// xCAT's rc.sysinit change in dracut mode: keep a backup, never remount the root.
pub fn patch_rc_sysinit(tree: &Tree) -> io::Result<()> {
    let Some(data) = tree.read("etc/rc.sysinit")? else {
        return Ok(());
    };
    let mode = tree
        .lstat("etc/rc.sysinit")?
        .map_or(0o755, |(_, st)| st.st_mode & 0o7777);
    tree.write("etc/rc.sysinit.backup", &data, mode)?;
    let text = String::from_utf8_lossy(&data);
    let patched: String = text
        .split_inclusive('\n')
        .map(|l| {
            if l == "if remount_needed ; then\n" {
                "if false; then\n"
            } else {
                l
            }
        })
        .collect();
    tree.write("etc/rc.sysinit", patched.as_bytes(), mode)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gen::debian::tests::build;

    #[test]
    fn fstab_as_xcat() {
        let f = fstab("compute", "x86_64", None);
        assert!(
            f.ends_with("compute_x86_64    /   tmpfs   rw  0 1\n"),
            "{f}"
        );
        assert!(f.contains("tmpfs   /tmp     tmpfs    defaults             0 2\n"));
        let f = fstab("compute", "x86_64", Some("1g"));
        assert!(f.contains("defaults,size=1g"));
    }

    #[test]
    fn interfaces_as_xcat() {
        assert_eq!(interfaces(None, &[]), None);
        assert_eq!(
            interfaces(Some("eth0"), &["eth1".into()]).unwrap(),
            "auto eth0\niface eth0 inet dhcp\nauto eth1\niface eth1 inet dhcp\n"
        );
    }

    #[test]
    fn post_files_in_a_small_tree() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path().join("rootimg");
        for d in ["etc/skel", "etc/rc3.d", "etc/init.d", "dev", "root"] {
            std::fs::create_dir_all(r.join(d)).unwrap();
        }
        std::fs::write(
            r.join("etc/passwd"),
            "root:*:0:0:root:/root:/bin/bash\ndaemon:*:1:1::/:/bin/false\n",
        )
        .unwrap();
        std::fs::write(r.join("etc/skel/.bashrc"), "# bashrc\n").unwrap();
        std::fs::write(r.join("etc/hostname"), "buildhost\n").unwrap();
        std::fs::write(r.join("etc/init.d/networking"), "#!/bin/sh\n").unwrap();
        let inst = t.path().join("install");
        std::fs::create_dir_all(inst.join("postscripts")).unwrap();
        std::fs::write(inst.join("postscripts/xcatdsklspost"), "#!/bin/sh\n").unwrap();
        let mut b = build(&[]);
        b.installdir = inst;
        b.nodebootif = Some("eth0".into());
        let tree = Tree::open(&r).unwrap();
        let notes = generic_post(&tree, &b).unwrap();
        assert!(notes[0].contains("xcatpostinit"), "{notes:?}");
        let read = |p: &str| std::fs::read_to_string(r.join(p)).unwrap();
        assert!(read("etc/fstab").contains("compute_x86_64    /   tmpfs"));
        assert_eq!(read("etc/hostname"), "");
        assert_eq!(
            read("etc/network/interfaces"),
            "auto eth0\niface eth0 inet dhcp\n"
        );
        assert!(read("etc/passwd").starts_with("root:x:0:0"));
        assert!(read("etc/passwd").contains("daemon:*:1"));
        assert_eq!(read("root/.bashrc"), "# bashrc\n");
        assert_eq!(read("sbin/fsck.nfs"), "true\n");
        assert_eq!(read("opt/xcat/xcatdsklspost"), "#!/bin/sh\n");
        assert_eq!(
            std::fs::read_link(r.join("etc/rc3.d/S10networking")).unwrap(),
            Path::new("/etc/init.d/networking")
        );
        generic_post(&tree, &b).unwrap();
        assert_eq!(
            read("etc/securetty"),
            "ttyS0\nttyS1\n",
            "a rerun adds nothing"
        );
        let n = statelite(&tree, None).unwrap();
        assert!(n[0].contains("rc.statelite"));
        assert!(r.join(".statelite").is_dir());
        let share = t.path().join("share");
        assert!(statelite(&tree, Some(&share))
            .unwrap_err()
            .contains("Can't find"));
        std::fs::create_dir_all(share.join("add-on/statelite")).unwrap();
        std::fs::write(share.join("add-on/statelite/rc.statelite"), "#!/bin/sh\n").unwrap();
        statelite(&tree, Some(&share)).unwrap();
        assert_eq!(read("etc/init.d/statelite"), "#!/bin/sh\n");
    }

    #[test]
    fn rc_sysinit() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("etc")).unwrap();
        std::fs::write(
            t.path().join("etc/rc.sysinit"),
            "a\nif remount_needed ; then\nb\n",
        )
        .unwrap();
        let tree = Tree::open(t.path()).unwrap();
        patch_rc_sysinit(&tree).unwrap();
        assert_eq!(
            std::fs::read_to_string(t.path().join("etc/rc.sysinit")).unwrap(),
            "a\nif false; then\nb\n"
        );
        assert!(t.path().join("etc/rc.sysinit.backup").is_file());
    }
}
