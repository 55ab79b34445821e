//! The build sandbox: how every program of an image build is started.
//!
//! Each program runs in a child that makes its own namespaces between fork and exec
//! ([`crate::proc::Isolation`]): a private mount namespace, a PID namespace whose init is the
//! program, and a UTS namespace with the host name `localhost`. For programs that run inside
//! the image, the child mounts a fresh `proc`, a read-only `sysfs`, a minimal `/dev` (tmpfs
//! with null, zero, full, random, urandom, tty, a private devpts and shm), a tmpfs `/run`, the
//! host's `resolv.conf` read-only and any local repositories read-only, then changes root.
//! Host programs that work on the image from outside (dnf, zypper) get the same mounts
//! without the change of root.
//!
//! Consequences, by construction rather than by cleanup code:
//! * Nothing is ever mounted in the engine's (or the host's) mount namespace; every mount is
//!   gone when the program's last process ends, also when the engine is killed with SIGKILL
//!   (the child dies with it, and the namespace with the child).
//! * No process outlives its step: when the program ends, the kernel kills what it started.
//! * Nothing of the host is writable inside: no host `/dev`, `/sys`, `/run` or package
//!   directory is bound writable (xCAT binds `/run` and `/sys`, and copies `/dev`).
//!
//! Mount points are checked before each start: each must be a plain path of the image, no
//! component a symlink (a link would redirect a mount in the child's namespace). After each
//! step the engine's mount table is checked for anything under the image.
//!
//! It knows image trees and mount points, not packages or xCAT.

use crate::fs::mountinfo;
use crate::gen::tree::{Kind, Tree};
use crate::proc::{Isolation, MountFlags, MountSpec, NodeSpec, Setup};
use std::io;
use std::path::{Path, PathBuf};

/// Host name inside the build.
pub const HOSTNAME: &str = "localhost";

/// A host directory shown read-only inside the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind {
    /// Host directory.
    pub source: PathBuf,
    /// Where in the image (relative), e.g. `mnt/pkgdir/0`.
    pub target: String,
}

/// How the programs of one build are started.
#[derive(Debug, Clone)]
pub struct Sandbox {
    /// The image root, canonical.
    root: PathBuf,
    binds: Vec<Bind>,
    /// Host resolver configuration shown inside, read-only.
    resolv: Option<PathBuf>,
}

impl Sandbox {
    /// A sandbox for the image at `root` (which must exist).
    pub fn new(root: &Path) -> io::Result<Sandbox> {
        let root = std::fs::canonicalize(root)?;
        Ok(Sandbox {
            root,
            binds: Vec::new(),
            resolv: None,
        })
    }

    /// The canonical image root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Shows the host's `/etc/resolv.conf` (resolved) inside, read-only, so package tools
    /// can resolve their mirrors. Nothing is copied into the image.
    pub fn with_host_resolver(mut self) -> Sandbox {
        self.resolv = std::fs::canonicalize("/etc/resolv.conf")
            .ok()
            .filter(|p| p.is_file());
        self
    }

    /// Shows host directories read-only inside.
    pub fn with_binds(mut self, binds: Vec<Bind>) -> Sandbox {
        self.binds = binds;
        self
    }

    /// The binds, for plans and messages.
    pub fn binds(&self) -> &[Bind] {
        &self.binds
    }

    /// Isolation for a program on the host side (debootstrap, postinstall scripts): private
    /// mount, PID and UTS namespaces, no mounts of its own.
    pub fn host_side() -> Isolation {
        Isolation {
            pid_namespace: true,
            hostname: Some(HOSTNAME.into()),
            setup: Vec::new(),
            chroot: None,
        }
    }

    /// Makes sure the mount points exist as plain directories (or, for the resolver, a plain
    /// file) of the image. Creates what is missing; refuses symlinks.
    pub fn prepare(&self) -> io::Result<()> {
        let tree = Tree::open(&self.root)?;
        let mut dirs: Vec<&str> = vec!["proc", "sys", "dev", "run"];
        dirs.extend(self.binds.iter().map(|b| b.target.as_str()));
        for d in dirs {
            tree.mkdir_all(d, 0o755)?;
            if !tree.plain_path(d)? {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "{} is a symlink or under one; a mount point must be a plain directory of the image",
                        tree.shown(d)
                    ),
                ));
            }
        }
        if self.resolv.is_some() {
            tree.mkdir_all("etc", 0o755)?;
            match tree.kind("etc/resolv.conf")? {
                Some(Kind::File) => {}
                // A link (systemd-resolved's) or nothing: an empty file to mount over. The
                // image gets its own resolv.conf at the end of the build anyway.
                _ => tree.write("etc/resolv.conf", b"", 0o644)?,
            }
            if !tree.plain_path("etc/resolv.conf")? {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{} is under a symlink", tree.shown("etc/resolv.conf")),
                ));
            }
        }
        Ok(())
    }

    /// Isolation for a program run inside the image (call [`Sandbox::prepare`] first).
    pub fn chroot(&self) -> Isolation {
        Isolation {
            chroot: Some(self.root.clone()),
            ..self.image_mounts()
        }
    }

    /// Isolation for a host program that works on the image from outside (dnf
    /// `--installroot`, zypper `--root`: rpm changes root itself for the scriptlets): the
    /// same mounts in the image as [`Sandbox::chroot`], no change of root (call
    /// [`Sandbox::prepare`] first).
    pub fn image_mounts(&self) -> Isolation {
        let r = &self.root;
        let hard = MountFlags {
            nosuid: true,
            nodev: true,
            noexec: true,
            readonly: false,
        };
        let fresh = |fstype: &str, target: PathBuf, data: &str, flags: MountFlags| {
            Setup::Mount(MountSpec::Fresh {
                fstype: fstype.into(),
                source: fstype.into(),
                target,
                data: data.into(),
                flags,
            })
        };
        let dev = r.join("dev");
        let mut setup = vec![
            fresh("proc", r.join("proc"), "", hard),
            fresh(
                "sysfs",
                r.join("sys"),
                "",
                MountFlags {
                    readonly: true,
                    ..hard
                },
            ),
            fresh(
                "tmpfs",
                dev.clone(),
                "mode=755,size=16m",
                MountFlags {
                    nosuid: true,
                    noexec: true,
                    ..MountFlags::default()
                },
            ),
        ];
        for (name, major, minor) in [
            ("null", 1, 3),
            ("zero", 1, 5),
            ("full", 1, 7),
            ("random", 1, 8),
            ("urandom", 1, 9),
            ("tty", 5, 0),
        ] {
            setup.push(Setup::Node(NodeSpec::CharDev {
                path: dev.join(name),
                mode: 0o666,
                major,
                minor,
            }));
        }
        for d in ["pts", "shm"] {
            setup.push(Setup::Node(NodeSpec::Dir {
                path: dev.join(d),
                mode: 0o755,
            }));
        }
        setup.push(fresh(
            "devpts",
            dev.join("pts"),
            "newinstance,ptmxmode=0666,mode=0620,gid=5",
            MountFlags {
                nosuid: true,
                noexec: true,
                ..MountFlags::default()
            },
        ));
        setup.push(fresh("tmpfs", dev.join("shm"), "mode=1777,size=64m", hard));
        for (target, path) in [
            ("pts/ptmx", "ptmx"),
            ("/proc/self/fd", "fd"),
            ("/proc/self/fd/0", "stdin"),
            ("/proc/self/fd/1", "stdout"),
            ("/proc/self/fd/2", "stderr"),
        ] {
            setup.push(Setup::Node(NodeSpec::Symlink {
                target: target.into(),
                path: dev.join(path),
            }));
        }
        setup.push(fresh(
            "tmpfs",
            r.join("run"),
            "mode=755,size=64m",
            MountFlags {
                nosuid: true,
                nodev: true,
                ..MountFlags::default()
            },
        ));
        setup.push(Setup::Node(NodeSpec::Dir {
            path: r.join("run/lock"),
            mode: 0o1777,
        }));
        if let Some(resolv) = &self.resolv {
            setup.push(Setup::Mount(MountSpec::Bind {
                source: resolv.clone(),
                target: r.join("etc/resolv.conf"),
                readonly: true,
            }));
        }
        for b in &self.binds {
            setup.push(Setup::Mount(MountSpec::Bind {
                source: b.source.clone(),
                target: r.join(&b.target),
                readonly: true,
            }));
        }
        Isolation {
            pid_namespace: true,
            hostname: Some(HOSTNAME.into()),
            setup,
            chroot: None,
        }
    }

    /// Fails when anything is mounted at or under the image in the engine's namespace.
    pub fn check_no_mounts(&self) -> Result<(), String> {
        no_mounts_under(&self.root)
    }
}

/// Fails when anything is mounted at or under `dir` (canonical) in this process's namespace.
pub fn no_mounts_under(dir: &Path) -> Result<(), String> {
    let mounts = mountinfo::read().map_err(|e| format!("cannot read the mount table: {e}"))?;
    let found: Vec<String> = mountinfo::under(&mounts, dir)
        .iter()
        .map(|m| m.mount_point.display().to_string())
        .collect();
    if found.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} mounted under {}; unmount {} first",
            found.join(", "),
            dir.display(),
            if found.len() == 1 { "it" } else { "them" }
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proc::{run, Step};

    #[test]
    fn symlinked_mount_points_are_refused() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir(t.path().join("elsewhere")).unwrap();
        std::os::unix::fs::symlink("/elsewhere", t.path().join("proc")).unwrap();
        let e = Sandbox::new(t.path()).unwrap().prepare().unwrap_err();
        assert!(e.to_string().contains("symlink"), "{e}");
    }

    #[test]
    fn image_mounts_are_the_chroot_mounts_without_the_root_change() {
        let t = tempfile::tempdir().unwrap();
        let s = Sandbox::new(t.path()).unwrap();
        let (c, m) = (s.chroot(), s.image_mounts());
        assert_eq!(c.chroot.as_deref(), Some(s.root()));
        assert_eq!(m.chroot, None);
        assert_eq!(c.setup, m.setup);
        assert!(m.pid_namespace);
    }

    #[test]
    fn resolver_file_replaces_a_link() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir(t.path().join("etc")).unwrap();
        std::os::unix::fs::symlink(
            "/run/systemd/resolve/stub-resolv.conf",
            t.path().join("etc/resolv.conf"),
        )
        .unwrap();
        let s = Sandbox::new(t.path()).unwrap().with_host_resolver();
        s.prepare().unwrap();
        if s.resolv.is_some() {
            assert!(t
                .path()
                .join("etc/resolv.conf")
                .symlink_metadata()
                .unwrap()
                .is_file());
        }
        for d in ["proc", "sys", "dev", "run"] {
            assert!(t.path().join(d).is_dir());
        }
    }

    /// A busybox tree: the chroot sees fresh proc, sys, dev, a read-only bind, and nothing
    /// of it is left in our namespace or in the tree.
    #[test]
    fn chroot_sees_its_own_mounts() {
        let Some(bb) = crate::proc::find_program("busybox") else {
            return;
        };
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        std::fs::create_dir_all(r.join("bin")).unwrap();
        std::fs::copy(bb, r.join("bin/busybox")).unwrap();
        for a in ["sh", "cat", "ls", "touch", "readlink"] {
            std::os::unix::fs::symlink("busybox", r.join("bin").join(a)).unwrap();
        }
        let repo = tempfile::tempdir().unwrap();
        std::fs::write(repo.path().join("Packages"), "x\n").unwrap();
        let s = Sandbox::new(r).unwrap().with_binds(vec![Bind {
            source: repo.path().to_path_buf(),
            target: "mnt/repo".into(),
        }]);
        s.prepare().unwrap();
        let iso = s.chroot();
        let out =
            run(&Step::new("cat", ["/proc/1/comm", "/mnt/repo/Packages"]).isolated(iso.clone()))
                .unwrap();
        assert_eq!(out, "cat\nx\n");
        let out = run(&Step::new("ls", ["/dev"]).isolated(iso.clone())).unwrap();
        for n in ["null", "ptmx", "pts", "shm", "urandom", "fd"] {
            assert!(out.split_whitespace().any(|w| w == n), "{n} in {out}");
        }
        let e = run(&Step::new("touch", ["/mnt/repo/new"]).isolated(iso.clone())).unwrap_err();
        assert!(e.stderr.contains("Read-only"), "{e}");
        let e = run(&Step::new("touch", ["/sys/x"]).isolated(iso)).unwrap_err();
        assert!(!e.stderr.is_empty(), "{e}");
        s.check_no_mounts().unwrap();
        assert_eq!(
            std::fs::read_dir(r.join("dev")).unwrap().count(),
            0,
            "dev nodes lived on the tmpfs"
        );
        assert_eq!(std::fs::read_dir(r.join("proc")).unwrap().count(), 0);
    }
}
