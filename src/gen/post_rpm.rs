//! The generic post files of RHEL-family and SLES images, as xCAT's rh and sles genimage
//! write them (`generic_post` and `postscripts()`; spec §3.3): fstab with the
//! `<profile>_<arch> / tmpfs` root line, `/etc/sysconfig/network`, an ifcfg file per
//! interface (the boot NIC `ONBOOT=no`, so the network start does not break the NFS/RAM
//! root; the others `ONBOOT=yes`, all DHCP), the dummy resolv.conf, securetty, the root
//! passwd fix, skel files, xCAT's boot hook, `fsck.nfs` and `xcatdsklspost`.
//!
//! Deliberately different from xCAT:
//! * Directories an ifcfg file needs are created (EL9 has no `network-scripts/` until
//!   `NetworkManager-initscripts-updown` is installed; xCAT's Perl `open` then silently
//!   writes nothing). On SLES `/etc/sysconfig/network` is the directory of the ifcfg files,
//!   so the rh-style `NETWORKING=yes` file is not written there (xCAT's `open` of it fails
//!   silently on every SLES).
//! * securetty lines are added only when missing (no pile-up on reruns).
//! * `S10network` is linked only when `/etc/init.d/network` exists (never dangling).
//! * sles: services are enabled with the links `systemctl enable` makes for them
//!   (`multi-user.target.wants/`; wicked also as `network.service`), not by running
//!   systemctl in the image; the `site.timezone` step (`zic -l`) and the non-systemd
//!   `gettyset` script (both releases without systemd: EL6, SLES 11) are not done.
//!
//! It knows the image layout; not tables, packages or the host.

use super::post::{add_securetty, copy_skel, fix_root_passwd, fsck_nfs_and_dsklspost};
use super::tree::{Kind, Tree};
use super::Build;
use std::io;

/// Which of xCAT's scripts to follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavour {
    /// `rh/genimage` (also centos, rocky, alma, ol, SL, fedora).
    Rh,
    /// `sles/genimage`.
    Sles,
}

/// xCAT's `using_systemd` for rh: fedora ≥ 15, rhels/centos/ol/rhelhpc ≥ 7, rocky/alma ≥ 8.
pub fn using_systemd(osver: &str) -> bool {
    let num = |prefix: &str| -> Option<u32> {
        let rest = osver.strip_prefix(prefix)?;
        let d: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
        d.parse().ok()
    };
    for (p, min) in [
        ("fedora", 15),
        ("rhels", 7),
        ("centos", 7),
        ("rocky", 8),
        ("alma", 8),
        ("ol", 7),
        ("rhelhpc", 7),
    ] {
        if let Some(n) = num(p) {
            return n >= min;
        }
    }
    false
}

/// The fstab xCAT's rh / sles script writes.
pub fn fstab(f: Flavour, osver: &str, profile: &str, arch: &str, tmplimit: Option<&str>) -> String {
    let mut t = String::from(
        "devpts  /dev/pts devpts   gid=5,mode=620 0 0\n\
         tmpfs   /dev/shm tmpfs    defaults       0 0\n\
         proc    /proc    proc     defaults       0 0\n\
         sysfs   /sys     sysfs    defaults       0 0\n",
    );
    match (f, tmplimit) {
        (Flavour::Rh, _) if using_systemd(osver) => {}
        (_, Some(l)) => {
            t.push_str(&format!(
                "tmpfs   /tmp     tmpfs    defaults,size={l}       0 2\n"
            ));
            t.push_str(&format!(
                "tmpfs   /var/tmp     tmpfs    defaults,size={l}       0 2\n"
            ));
        }
        (Flavour::Rh, None) => {
            t.push_str("tmpfs   /tmp     tmpfs    defaults,size=10m             0 2\n");
            t.push_str("tmpfs   /var/tmp     tmpfs    defaults,size=10m       0 2\n");
        }
        (Flavour::Sles, None) => {
            t.push_str("tmpfs   /tmp    tmpfs   defaults,size=10m       0 2\n");
            t.push_str("tmpfs   /var/tmp    tmpfs   defaults,size=10m   0 2\n");
        }
    }
    t.push_str(&format!("{profile}_{arch}    /   tmpfs   rw  0 1\n"));
    t
}

/// The ifcfg files: (path in the image, text). The boot NIC is not started by the network
/// service (the node already has it up from the initrd).
pub fn ifcfg_files(
    f: Flavour,
    nodebootif: Option<&str>,
    others: &[String],
) -> Vec<(String, String)> {
    let dir = match f {
        Flavour::Rh => "etc/sysconfig/network-scripts",
        Flavour::Sles => "etc/sysconfig/network",
    };
    let extra = match f {
        Flavour::Rh => "",
        Flavour::Sles => "STARTMODE=auto\n",
    };
    let mut out = Vec::new();
    let nics = nodebootif
        .into_iter()
        .map(|n| (n, "no"))
        .chain(others.iter().map(|n| (n.as_str(), "yes")));
    for (nic, onboot) in nics {
        if nic.is_empty() || nic.contains('/') || nic.starts_with('.') {
            continue;
        }
        out.push((
            format!("{dir}/ifcfg-{nic}"),
            format!("ONBOOT={onboot}\nBOOTPROTO=dhcp\nDEVICE={nic}\n{extra}"),
        ));
    }
    out
}

/// Replaces, in each line starting with `key`, the rest of the line with `value`.
fn set_value(text: &str, key: &str, value: &str, only_if: Option<&str>) -> String {
    text.split_inclusive('\n')
        .map(|l| match l.strip_prefix(key) {
            Some(rest) if only_if.is_none_or(|o| rest.trim_end() == o) => {
                format!("{key}{value}\n")
            }
            _ => l.to_string(),
        })
        .collect()
}

fn edit(tree: &Tree, rel: &str, f: impl Fn(&str) -> String) -> io::Result<()> {
    if let Some((Kind::File, st)) = tree.lstat(rel)? {
        if let Some(data) = tree.read(rel)? {
            let text = String::from_utf8_lossy(&data);
            let new = f(&text);
            if new != text {
                tree.write(rel, new.as_bytes(), st.st_mode & 0o7777)?;
            }
        }
    }
    Ok(())
}

/// The generic post steps of an rh / sles image. Returns notes for the admin.
pub fn generic_post(tree: &Tree, b: &Build, f: Flavour) -> io::Result<Vec<String>> {
    let mut notes = Vec::new();
    if f == Flavour::Sles {
        edit(tree, "etc/sysconfig/clock", |t| {
            set_value(t, "HWCLOCK=", "\"--localtime\"", None)
        })?;
        edit(tree, "etc/sysconfig/network/dhcp", |t| {
            set_value(t, "DHCLIENT_SET_HOSTNAME=", "\"yes\"", Some("\"no\""))
        })?;
    }
    tree.mkdir_all("dev", 0o755)?;
    tree.char_device("dev/null", 0o666, 1, 3)?;
    tree.mkdir_all("etc/sysconfig", 0o755)?;
    tree.write(
        "etc/fstab",
        fstab(f, &b.osver, &b.profile, &b.arch, b.tmplimit.as_deref()).as_bytes(),
        0o644,
    )?;
    if f == Flavour::Rh && tree.kind("etc/sysconfig/network")? != Some(Kind::Dir) {
        tree.write("etc/sysconfig/network", b"NETWORKING=yes\n", 0o644)?;
    }
    // sles keeps a resolv.conf link to a file with content (netconfig's); rh overwrites.
    let keep_link = f == Flavour::Sles
        && tree.kind("etc/resolv.conf")? == Some(Kind::Symlink)
        && tree
            .read("etc/resolv.conf")
            .ok()
            .flatten()
            .is_some_and(|d| !d.is_empty());
    if !keep_link {
        tree.remove("etc/resolv.conf")?;
        tree.write(
            "etc/resolv.conf",
            b"#Dummy resolv.conf to make boot cleaner",
            0o644,
        )?;
    }
    for (path, text) in ifcfg_files(f, b.nodebootif.as_deref(), &b.otherifce) {
        if let Some((dir, _)) = path.rsplit_once('/') {
            tree.mkdir_all(dir, 0o755)?;
        }
        tree.write(&path, text.as_bytes(), 0o644)?;
    }
    if b.arch != "s390x" {
        match f {
            Flavour::Rh => add_securetty(tree, &["ttyS0", "ttyS1"])?,
            Flavour::Sles => add_securetty(tree, &["ttyS0", "ttyS1", "console"])?,
        }
    }
    fix_root_passwd(tree)?;
    copy_skel(tree)?;
    match f {
        Flavour::Rh => rh_hooks(tree, b, &mut notes)?,
        Flavour::Sles => sles_hooks(tree, b, &mut notes)?,
    }
    fsck_nfs_and_dsklspost(tree, b, &mut notes)?;
    Ok(notes)
}

/// rh: the network rc link and xCAT's boot hook (`xcatpostinit1` for systemd).
fn rh_hooks(tree: &Tree, b: &Build, notes: &mut Vec<String>) -> io::Result<()> {
    if tree.is_dir("etc/rc3.d") && tree.kind("etc/init.d/network")?.is_some() {
        let has = tree
            .list("etc/rc3.d")?
            .iter()
            .any(|n| n.len() > 3 && n.starts_with('S') && n[3..].starts_with("network"));
        if !has {
            tree.symlink("/etc/init.d/network", "etc/rc3.d/S10network")?;
        }
    }
    if b.arch == "s390x" {
        return Ok(());
    }
    tree.remove("etc/systemd/system/multi-user.target.wants/xcatpostinit1.service")?;
    tree.remove("etc/rc3.d/S61xcatpostinit")?;
    tree.mkdir_all("opt/xcat", 0o755)?;
    let ps = b.installdir.join("postscripts");
    let script = ps.join("xcatpostinit1.netboot");
    if !script.is_file() {
        notes.push(format!(
            "{} not found: the image has no xCAT boot hook (xcatpostinit1)",
            script.display()
        ));
        return Ok(());
    }
    if tree.is_dir("usr/lib/systemd") {
        tree.copy_in(&script, "opt/xcat/xcatpostinit1", 0o755)?;
        let unit = ps.join("xcatpostinit1.service");
        if unit.is_file() {
            tree.mkdir_all("etc/systemd/system/multi-user.target.wants", 0o755)?;
            tree.copy_in(&unit, "etc/systemd/system/xcatpostinit1.service", 0o644)?;
            tree.symlink(
                "../xcatpostinit1.service",
                "etc/systemd/system/multi-user.target.wants/xcatpostinit1.service",
            )?;
        } else {
            notes.push(format!(
                "{} not found: xcatpostinit1 is not enabled",
                unit.display()
            ));
        }
    } else {
        tree.mkdir_all("etc/init.d", 0o755)?;
        tree.copy_in(&script, "etc/init.d/xcatpostinit", 0o755)?;
        tree.mkdir_all("etc/rc3.d", 0o755)?;
        tree.symlink("../init.d/xcatpostinit", "etc/rc3.d/S61xcatpostinit")?;
    }
    Ok(())
}

/// sles: xCAT's boot hook and the services xCAT enables (sshd, the network, xcatpostinit).
fn sles_hooks(tree: &Tree, b: &Build, notes: &mut Vec<String>) -> io::Result<()> {
    let ps = b.installdir.join("postscripts");
    let script = ps.join("xcatpostinit");
    tree.mkdir_all("opt/xcat", 0o755)?;
    if script.is_file() {
        tree.copy_in(&script, "opt/xcat/xcatpostinit", 0o755)?;
        if tree.is_dir("usr/lib/systemd/system") {
            let unit = ps.join("xcatpostinit.service");
            if unit.is_file() {
                tree.copy_in(&unit, "usr/lib/systemd/system/xcatpostinit.service", 0o644)?;
            }
        } else if tree.is_dir("etc/init.d") {
            tree.copy_in(&script, "etc/init.d/xcatpostinit", 0o755)?;
        }
    } else {
        notes.push(format!(
            "{} not found: the image has no xCAT boot hook (xcatpostinit)",
            script.display()
        ));
    }
    let units = "usr/lib/systemd/system";
    let wants = "etc/systemd/system/multi-user.target.wants";
    for svc in ["sshd", "wicked", "xcatpostinit"] {
        let unit = format!("{units}/{svc}.service");
        if tree.kind(&unit)? == Some(Kind::File) {
            tree.mkdir_all(wants, 0o755)?;
            tree.symlink(&format!("/{unit}"), &format!("{wants}/{svc}.service"))?;
            if svc == "wicked" {
                tree.symlink(&format!("/{unit}"), "etc/systemd/system/network.service")?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gen::debian::tests::build;

    #[test]
    fn systemd_releases() {
        assert!(
            using_systemd("rhels9.4") && using_systemd("rocky8.10") && using_systemd("fedora40")
        );
        assert!(
            !using_systemd("rhels6.10") && !using_systemd("rocky7") && !using_systemd("sles15")
        );
    }

    #[test]
    fn fstab_per_flavour() {
        let f = fstab(Flavour::Rh, "rhels9.4", "compute", "x86_64", None);
        assert!(
            !f.contains("/tmp"),
            "systemd images get no /tmp tmpfs line: {f}"
        );
        assert!(f.ends_with("compute_x86_64    /   tmpfs   rw  0 1\n"));
        let f = fstab(Flavour::Rh, "rhels6.10", "compute", "x86_64", None);
        assert!(f.contains("tmpfs   /tmp     tmpfs    defaults,size=10m             0 2\n"));
        let f = fstab(Flavour::Sles, "sles15.5", "compute", "x86_64", Some("1g"));
        assert!(f.contains("tmpfs   /var/tmp     tmpfs    defaults,size=1g       0 2\n"));
        let f = fstab(Flavour::Sles, "sles15.5", "compute", "x86_64", None);
        assert!(f.contains("tmpfs   /tmp    tmpfs   defaults,size=10m       0 2\n"));
    }

    #[test]
    fn ifcfg_as_xcat() {
        assert_eq!(
            ifcfg_files(Flavour::Rh, Some("eth0"), &["ib0".into()]),
            [
                (
                    "etc/sysconfig/network-scripts/ifcfg-eth0".to_string(),
                    "ONBOOT=no\nBOOTPROTO=dhcp\nDEVICE=eth0\n".to_string()
                ),
                (
                    "etc/sysconfig/network-scripts/ifcfg-ib0".to_string(),
                    "ONBOOT=yes\nBOOTPROTO=dhcp\nDEVICE=ib0\n".to_string()
                )
            ]
        );
        assert_eq!(
            ifcfg_files(Flavour::Sles, Some("eth0"), &[]),
            [(
                "etc/sysconfig/network/ifcfg-eth0".to_string(),
                "ONBOOT=no\nBOOTPROTO=dhcp\nDEVICE=eth0\nSTARTMODE=auto\n".to_string()
            )]
        );
        assert!(ifcfg_files(Flavour::Rh, Some("../x"), &[]).is_empty());
    }

    fn tree_with_basics(t: &std::path::Path) -> std::path::PathBuf {
        let r = t.join("rootimg");
        for d in ["etc/skel", "usr/lib/systemd/system", "dev"] {
            std::fs::create_dir_all(r.join(d)).unwrap();
        }
        std::fs::write(r.join("etc/passwd"), "root:*:0:0:root:/root:/bin/bash\n").unwrap();
        std::fs::write(r.join("etc/skel/.bashrc"), "# bashrc\n").unwrap();
        let ps = t.join("install/postscripts");
        std::fs::create_dir_all(&ps).unwrap();
        for f in [
            "xcatpostinit1.netboot",
            "xcatpostinit1.service",
            "xcatpostinit",
            "xcatpostinit.service",
            "xcatdsklspost",
        ] {
            std::fs::write(ps.join(f), format!("{f}\n")).unwrap();
        }
        r
    }

    #[test]
    fn rh_post_files() {
        let t = tempfile::tempdir().unwrap();
        let r = tree_with_basics(t.path());
        let mut b = build(&[]);
        b.osver = "rhels9.4".into();
        b.family = "rh".into();
        b.installdir = t.path().join("install");
        b.nodebootif = Some("eth0".into());
        b.otherifce = vec!["eth1".into()];
        let tree = Tree::open(&r).unwrap();
        let notes = generic_post(&tree, &b, Flavour::Rh).unwrap();
        assert!(notes.is_empty(), "{notes:?}");
        let read = |p: &str| std::fs::read_to_string(r.join(p)).unwrap();
        assert_eq!(read("etc/sysconfig/network"), "NETWORKING=yes\n");
        assert_eq!(
            read("etc/sysconfig/network-scripts/ifcfg-eth0"),
            "ONBOOT=no\nBOOTPROTO=dhcp\nDEVICE=eth0\n"
        );
        assert_eq!(
            read("etc/sysconfig/network-scripts/ifcfg-eth1"),
            "ONBOOT=yes\nBOOTPROTO=dhcp\nDEVICE=eth1\n"
        );
        assert_eq!(
            read("etc/resolv.conf"),
            "#Dummy resolv.conf to make boot cleaner"
        );
        assert!(read("etc/passwd").starts_with("root:x:"));
        assert_eq!(read("root/.bashrc"), "# bashrc\n");
        assert_eq!(read("opt/xcat/xcatpostinit1"), "xcatpostinit1.netboot\n");
        assert_eq!(
            read("etc/systemd/system/xcatpostinit1.service"),
            "xcatpostinit1.service\n"
        );
        assert_eq!(
            std::fs::read_link(
                r.join("etc/systemd/system/multi-user.target.wants/xcatpostinit1.service")
            )
            .unwrap(),
            std::path::Path::new("../xcatpostinit1.service")
        );
        assert_eq!(read("opt/xcat/xcatdsklspost"), "xcatdsklspost\n");
        assert_eq!(read("sbin/fsck.nfs"), "true\n");
        generic_post(&tree, &b, Flavour::Rh).unwrap();
        assert_eq!(
            read("etc/securetty"),
            "ttyS0\nttyS1\n",
            "a rerun adds nothing"
        );
    }

    #[test]
    fn sles_post_files() {
        let t = tempfile::tempdir().unwrap();
        let r = tree_with_basics(t.path());
        std::fs::create_dir_all(r.join("etc/sysconfig/network")).unwrap();
        std::fs::write(
            r.join("etc/sysconfig/network/dhcp"),
            "A=1\nDHCLIENT_SET_HOSTNAME=\"no\"\n",
        )
        .unwrap();
        std::fs::write(r.join("etc/sysconfig/clock"), "HWCLOCK=\"-u\"\n").unwrap();
        std::fs::write(r.join("usr/lib/systemd/system/sshd.service"), "[Unit]\n").unwrap();
        std::fs::write(r.join("usr/lib/systemd/system/wicked.service"), "[Unit]\n").unwrap();
        let mut b = build(&[]);
        b.osver = "sles15.5".into();
        b.family = "sles".into();
        b.installdir = t.path().join("install");
        b.nodebootif = Some("eth0".into());
        let tree = Tree::open(&r).unwrap();
        generic_post(&tree, &b, Flavour::Sles).unwrap();
        let read = |p: &str| std::fs::read_to_string(r.join(p)).unwrap();
        assert_eq!(
            read("etc/sysconfig/network/dhcp"),
            "A=1\nDHCLIENT_SET_HOSTNAME=\"yes\"\n"
        );
        assert_eq!(read("etc/sysconfig/clock"), "HWCLOCK=\"--localtime\"\n");
        assert_eq!(
            read("etc/sysconfig/network/ifcfg-eth0"),
            "ONBOOT=no\nBOOTPROTO=dhcp\nDEVICE=eth0\nSTARTMODE=auto\n"
        );
        assert_eq!(read("etc/securetty"), "ttyS0\nttyS1\nconsole\n");
        assert!(read("etc/fstab").contains("tmpfs   /tmp    tmpfs   defaults,size=10m"));
        assert_eq!(read("opt/xcat/xcatpostinit"), "xcatpostinit\n");
        assert_eq!(
            read("usr/lib/systemd/system/xcatpostinit.service"),
            "xcatpostinit.service\n"
        );
        let wants = r.join("etc/systemd/system/multi-user.target.wants");
        for s in ["sshd", "wicked", "xcatpostinit"] {
            assert_eq!(
                std::fs::read_link(wants.join(format!("{s}.service"))).unwrap(),
                std::path::PathBuf::from(format!("/usr/lib/systemd/system/{s}.service"))
            );
        }
        assert!(r
            .join("etc/systemd/system/network.service")
            .symlink_metadata()
            .is_ok());
    }
}
