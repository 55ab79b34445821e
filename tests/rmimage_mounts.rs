//! rmimage against real mounts, made in a private mount namespace that dies with the test.
//!
//! A `sleep` started by `unshare -m --propagation private` holds the namespace; mounts and the
//! engine run inside it through `nsenter`. Nothing is ever mounted in the host's namespace.

use crate::util::{bin, cmd_exists, is_root, skip, Dir, Output};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A private mount namespace held open by a sleeping process.
struct Ns {
    holder: Child,
}

impl Ns {
    fn new() -> Option<Ns> {
        if !is_root() {
            skip("mount tests need root");
            return None;
        }
        if !cmd_exists("unshare") || !cmd_exists("nsenter") {
            skip("unshare/nsenter (util-linux) not installed");
            return None;
        }
        let holder = Command::new("unshare")
            .args(["-m", "--propagation", "private", "sleep", "600"])
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn unshare");
        let ns = Ns { holder };
        // Entering before unshare has finished would put our mounts in the host namespace:
        // wait until the holder has exec'd sleep (after unshare and the propagation change)
        // and really is in another namespace.
        let pid = ns.holder.id();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            let theirs = std::fs::read_link(format!("/proc/{pid}/ns/mnt")).ok();
            let ours = std::fs::read_link("/proc/self/ns/mnt").ok();
            if comm.trim() == "sleep" && theirs.is_some() && theirs != ours {
                return Some(ns);
            }
            assert!(Instant::now() < deadline, "namespace holder did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn cmd(&self, prog: &Path, args: &[&str]) -> Command {
        let mut c = Command::new("nsenter");
        c.arg("-t")
            .arg(self.holder.id().to_string())
            .arg("-m")
            .arg("--")
            .arg(prog)
            .args(args);
        c
    }

    fn must(&self, prog: &str, args: &[&str]) {
        let o = Output::of(self.cmd(Path::new(prog), args));
        assert_eq!(o.code, 0, "{prog} {args:?}: {o:?}");
    }

    /// Mount points inside the namespace at or below `dir`.
    fn mounts_under(&self, dir: &Path) -> Vec<String> {
        let text =
            std::fs::read(format!("/proc/{}/mountinfo", self.holder.id())).expect("mountinfo");
        let mounts = xcat_imaged::fs::mountinfo::parse(&text).expect("parse mountinfo");
        xcat_imaged::fs::mountinfo::under(&mounts, dir)
            .iter()
            .map(|m| m.mount_point.display().to_string())
            .collect()
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

fn image_setup(d: &Dir) -> (std::path::PathBuf, std::path::PathBuf) {
    d.defs("");
    let dir = d.install().join("netboot/rhels9/x86_64/compute");
    d.image(&dir);
    let sentinel = d.path().join("sentinel");
    std::fs::create_dir_all(sentinel.join("sub")).unwrap();
    std::fs::write(sentinel.join("sub/precious"), "data").unwrap();
    (dir, sentinel)
}

fn run_engine(ns: &Ns, d: &Dir, wrapper: &[&str]) -> Output {
    let defs = d.defs_path().display().to_string();
    let lockdir = format!("XCAT_IMAGED_LOCK_DIR={}", d.locks().display());
    let engine = bin().display().to_string();
    let mut args: Vec<&str> = wrapper.to_vec();
    args.extend([
        "env",
        &lockdir,
        &engine,
        "rmimage",
        "rhels9-x86_64-netboot-compute",
        "--defs",
        &defs,
    ]);
    Output::of(ns.cmd(Path::new(args[0]), &args[1..]))
}

/// See: xCAT issue #1936 — a bind mount of /install inside the image; rmimage deleted /install.
#[test]
fn rmimage_keeps_bind_mounted_install() {
    let Some(ns) = Ns::new() else { return };
    let d = Dir::new();
    let (dir, sentinel) = image_setup(&d);
    let rootimg = dir.join("rootimg");
    let bind_at = rootimg.join("mnt/install");
    let spaced = rootimg.join("var/dir with space");
    std::fs::create_dir_all(&bind_at).unwrap();
    std::fs::create_dir_all(&spaced).unwrap();
    ns.must(
        "mount",
        &[
            "--bind",
            &sentinel.display().to_string(),
            &bind_at.display().to_string(),
        ],
    );
    ns.must(
        "mount",
        &["-t", "tmpfs", "none", &spaced.display().to_string()],
    );
    ns.must(
        "mount",
        &[
            "-t",
            "proc",
            "proc",
            &rootimg.join("proc").display().to_string(),
        ],
    );
    assert_eq!(ns.mounts_under(&rootimg).len(), 3);
    // A sibling whose name merely starts with "rootimg" is not ours to unmount (xCAT E24).
    let sibling = dir.join("rootimg2");
    std::fs::create_dir_all(&sibling).unwrap();
    ns.must(
        "mount",
        &["-t", "tmpfs", "none", &sibling.display().to_string()],
    );

    let o = run_engine(&ns, &d, &[]);
    assert_eq!(o.code, 0, "{o:?}");
    assert!(o
        .stdout
        .contains("Image files have been removed successfully"));
    assert!(!rootimg.exists());
    assert_eq!(
        std::fs::read_to_string(sentinel.join("sub/precious")).unwrap(),
        "data"
    );
    assert!(ns.mounts_under(&rootimg).is_empty());
    assert_eq!(
        ns.mounts_under(&sibling),
        vec![sibling.display().to_string()]
    );
}

/// A mount that cannot be unmounted (locked into a less privileged namespace) makes rmimage
/// refuse before it deletes anything.
#[test]
fn rmimage_refuses_when_a_mount_stays() {
    let Some(ns) = Ns::new() else { return };
    let d = Dir::new();
    let (dir, sentinel) = image_setup(&d);
    let rootimg = dir.join("rootimg");
    let bind_at = rootimg.join("mnt/data");
    std::fs::create_dir_all(&bind_at).unwrap();
    ns.must(
        "mount",
        &[
            "--bind",
            &sentinel.display().to_string(),
            &bind_at.display().to_string(),
        ],
    );
    let before = d.tree(d.path());
    // Mounts inherited into a new user+mount namespace are locked: umount fails there.
    let o = run_engine(
        &ns,
        &d,
        &[
            "unshare",
            "-U",
            "-m",
            "--map-root-user",
            "--propagation",
            "private",
        ],
    );
    assert_eq!(o.code, 1, "{o:?}");
    assert_eq!(
        o.stderr,
        format!(
            "Error: {} still mounted under {} and cannot be unmounted; nothing was removed. Unmount it manually and try again.\n",
            bind_at.display(),
            rootimg.display()
        )
    );
    assert_eq!(o.stdout, "");
    let mut after = d.tree(d.path());
    after.retain(|p| !p.starts_with("locks/"));
    let mut before = before;
    before.retain(|p| !p.starts_with("locks/"));
    assert_eq!(before, after, "nothing may change on disk");
    assert_eq!(
        std::fs::read_to_string(sentinel.join("sub/precious")).unwrap(),
        "data"
    );
}
