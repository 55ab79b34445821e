//! Fault injection with the real binary: SIGKILL at many points of packimage (every format),
//! imgexport and genimage; a destination filesystem that fills up (a small tmpfs in a private
//! mount namespace); a file the engine cannot read; a file that changes while it is packed.
//! After every fault: the previous image or bundle byte-identical (or a complete new one, when
//! the kill came after the rename), no temp file left by the next run, no process and no mount
//! left, the lock free, and the next run succeeds.
//!
//! Each test prints a `faults:` line with what it injected (`--nocapture` shows them; the
//! counts in docs/reliability.md come from there).

use crate::util::{
    cmd_exists, host_mirror, is_root, mounts_anywhere_under, reachable, skip, Dir, Output,
};
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const NAME: &str = "rhels9-x86_64-netboot-compute";

/// Prints one summary line of a fault test.
#[allow(clippy::print_stderr)]
fn report(line: &str) {
    eprintln!("faults: {line}");
}

/// `n` incompressible bytes (splitmix64), different for every seed.
fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mix = |mut z: u64| {
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    // The start is mixed too: consecutive seeds must not give shifted copies of one stream.
    let mut x = mix(seed.wrapping_add(0x2545_F491_4F6C_DD1D));
    let mut v = Vec::with_capacity(n + 8);
    while v.len() < n {
        x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
        v.extend_from_slice(&mix(x).to_le_bytes());
    }
    v.truncate(n);
    v
}

/// A management node with one netboot image: a small tree of every common kind of entry plus
/// `bulk_mib` MiB of incompressible data, so a pack takes long enough to be hit mid-way.
struct Node {
    d: Dir,
    dir: PathBuf,
}

impl Node {
    fn new(bulk_mib: usize) -> Node {
        let d = Dir::new();
        let dir = d.install().join("netboot/rhels9/x86_64/compute");
        std::fs::create_dir_all(&dir).unwrap();
        let n = Node { d, dir };
        n.d.write(
            "install/postscripts/xcatdsklspost",
            "#!/bin/sh\necho dskls\n",
        );
        n.d.write("compute.exlist", "./tmp*\n");
        n.d.defs(&format!(
            "{NAME}:\n    objtype=osimage\n    imagetype=linux\n    osarch=x86_64\n    osvers=rhels9\n    profile=compute\n    provmethod=netboot\n    exlist={}\n\n",
            n.d.path().join("compute.exlist").display()
        ));
        n.build_tree(bulk_mib);
        n
    }

    fn rootimg(&self) -> PathBuf {
        self.dir.join("rootimg")
    }

    /// The tree; also used to fill a tmpfs mounted over the image directory.
    fn build_tree(&self, bulk_mib: usize) {
        let r = self.rootimg();
        for d in ["etc", "usr/bin", "var/lib/bulk", "tmp", "dev", "proc"] {
            std::fs::create_dir_all(r.join(d)).unwrap();
        }
        std::fs::write(r.join("etc/shadow"), "root:!:19000:0:99999:7:::\n").unwrap();
        std::fs::write(r.join("etc/hostname"), "image\n").unwrap();
        std::fs::write(r.join("usr/bin/tool"), noise(70_000, 3)).unwrap();
        std::fs::hard_link(r.join("usr/bin/tool"), r.join("usr/bin/tool2")).unwrap();
        std::os::unix::fs::symlink("tool", r.join("usr/bin/link")).unwrap();
        std::fs::write(r.join("tmp/junk"), "excluded\n").unwrap();
        for i in 0..bulk_mib {
            std::fs::write(
                r.join(format!("var/lib/bulk/f{i:03}")),
                noise(1 << 20, i as u64 + 11),
            )
            .unwrap();
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut a = vec![NAME];
        a.extend_from_slice(args);
        let mut c = self.d.command("packimage", &a);
        c.stdout(Stdio::null()).stderr(Stdio::null());
        c
    }

    fn pack(&self, args: &[&str]) -> Output {
        let mut a = vec![NAME];
        a.extend_from_slice(args);
        self.d.run("packimage", &a)
    }

    /// The image directory's entries; the segment cache's directory (`.packcache`) is shown
    /// only when it holds anything but the index of the one image there, so every check of
    /// "one image, nothing else" also checks the cache.
    fn names(&self) -> Vec<String> {
        let mut v = names(&self.dir);
        let images: Vec<String> = v
            .iter()
            .filter(|n| n.starts_with("rootimg."))
            .cloned()
            .collect();
        let cache = self.dir.join(".packcache");
        if cache.is_dir() {
            let idx = names(&cache);
            let only_current =
                idx.is_empty() || (images.len() == 1 && idx == [format!("{}.idx", images[0])]);
            if only_current {
                v.retain(|n| n != ".packcache");
            }
        }
        v
    }

    fn lock_free(&self) -> bool {
        xcat_imaged::lock::acquire_in(&self.d.locks(), &self.rootimg()).is_ok()
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

fn temp_files(dir: &Path) -> Vec<String> {
    names(dir)
        .into_iter()
        .filter(|n| n.ends_with(".tmp"))
        .collect()
}

/// Unpacks an archive as the node's xcatroot does (`gzip -cd | cpio -idum`, `tar -xf`,
/// unsquashfs) into a new directory; returns the names of what came out of `var/lib/bulk`,
/// so a truncated archive (or one that lost members) is noticed.
fn extract(archive: &Path, into: &Path) -> Vec<String> {
    std::fs::create_dir_all(into).unwrap();
    let name = archive.file_name().unwrap().to_string_lossy().into_owned();
    let ok = match name.as_str() {
        "rootimg.cpio.gz" | "rootimg.cpio.xz" => {
            let z = if name.ends_with("gz") { "gzip" } else { "xz" };
            let mut dec = Command::new(z)
                .arg("-cd")
                .arg(archive)
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            let st = Command::new("cpio")
                .args(["-idum", "--quiet"])
                .current_dir(into)
                .stdin(dec.stdout.take().unwrap())
                .status()
                .unwrap();
            dec.wait().unwrap().success() && st.success()
        }
        "rootimg.tar.gz" | "rootimg.tar.xz" => Command::new("tar")
            .arg("-xf")
            .arg(archive)
            .current_dir(into)
            .status()
            .unwrap()
            .success(),
        "rootimg.sfs" => Command::new("unsquashfs")
            .args(["-f", "-no-progress", "-d"])
            .arg(into)
            .arg(archive)
            .stdout(Stdio::null())
            .status()
            .unwrap()
            .success(),
        other => panic!("unknown archive {other}"),
    };
    assert!(ok, "{} does not extract", archive.display());
    names(&into.join("var/lib/bulk"))
}

/// Pids of processes whose command line mentions `dir` (mksquashfs gets the temp path).
fn processes_naming(dir: &Path) -> Vec<String> {
    let needle = dir.as_os_str().as_encoded_bytes();
    let me = std::process::id().to_string();
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let pid = e.file_name().to_string_lossy().into_owned();
        if !pid.chars().all(|c| c.is_ascii_digit()) || pid == me {
            continue;
        }
        if let Ok(cmd) = std::fs::read(e.path().join("cmdline")) {
            if cmd.windows(needle.len()).any(|w| w == needle) {
                found.push(format!("{pid}: {}", String::from_utf8_lossy(&cmd)));
            }
        }
    }
    found
}

/// Waits (up to 10 s) until `probe` finds nothing; returns what it found last.
fn settles(probe: impl Fn() -> Vec<String>) -> Vec<String> {
    let t = Instant::now();
    loop {
        let left = probe();
        if left.is_empty() || t.elapsed() > Duration::from_secs(10) {
            return left;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Where in a run a kill lands.
#[derive(Debug, Clone, Copy)]
enum Point {
    /// Right after the spawn (before or during startup).
    Spawned,
    /// Once the image lock file holds the engine's PID.
    Locked,
    /// Once `n` bytes of output exist (0: the output file was just created).
    Bytes(u64),
}

/// Bytes written so far by `pid` (or its children) into `dir`: named temp files there, and
/// unnamed (`O_TMPFILE`) or deleted files the engine holds open there.
fn output_bytes(pid: u32, dir: &Path, stale: &[String]) -> Option<u64> {
    let mut best: Option<u64> = None;
    for n in temp_files(dir).into_iter().filter(|n| !stale.contains(n)) {
        if let Ok(md) = std::fs::metadata(dir.join(&n)) {
            best = best.max(Some(md.len()));
        }
    }
    if let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
        for fd in fds.flatten() {
            let Ok(target) = std::fs::read_link(fd.path()) else {
                continue;
            };
            let t = target.to_string_lossy();
            if target.starts_with(dir) && t.ends_with(" (deleted)") {
                if let Ok(md) = std::fs::metadata(fd.path()) {
                    best = best.max(Some(md.len()));
                }
            }
        }
    }
    best
}

/// Waits until the image lock can be taken (a killed engine's child may still hold a copy
/// of the descriptor between its fork and exec). None when it was free at once, else who held
/// it at first; panics when it stays held for 10 s.
fn lock_released(n: &Node) -> Option<String> {
    if n.lock_free() {
        return None;
    }
    let holders = lock_holders(n);
    let t = Instant::now();
    while !n.lock_free() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the lock stays held: {holders}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    Some(holders)
}

/// The `/proc/locks` lines of the image's lock file, for failure messages and the report.
fn lock_holders(n: &Node) -> String {
    use std::os::unix::fs::MetadataExt;
    let inodes: Vec<String> = std::fs::read_dir(n.d.locks())
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .map(|m| format!(":{} ", m.ino()))
        .collect();
    std::fs::read_to_string("/proc/locks")
        .unwrap_or_default()
        .lines()
        .filter(|l| inodes.iter().any(|i| l.contains(i.as_str())))
        .collect::<Vec<_>>()
        .join("; ")
}

fn holds_lock(pid: u32, locks: &Path) -> bool {
    std::fs::read_dir(locks)
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| std::fs::read_to_string(e.path()).is_ok_and(|s| s.trim() == pid.to_string()))
}

/// Starts `c` and runs it until `point`, then SIGKILLs it. Returns true when the kill hit a
/// running engine, false when it had finished first. Temp files killed runs left in `out_dir`
/// do not count as output of this one.
fn kill_at(mut c: Command, point: Point, out_dir: &Path, locks: &Path) -> bool {
    let stale = temp_files(out_dir);
    let mut child = c.spawn().unwrap();
    let pid = child.id();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        let now = match point {
            Point::Spawned => true,
            Point::Locked => holds_lock(pid, locks),
            Point::Bytes(n) => output_bytes(pid, out_dir, &stale).is_some_and(|b| b >= n),
        };
        if now || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    let hit = child.try_wait().unwrap().is_none();
    let _ = child.kill();
    let _ = child.wait();
    hit
}

/// The kill points for a run whose output ends up about `size` bytes: the phases, then every
/// tenth of the output, then its full size (the fsync/rename window).
fn points(size: u64) -> Vec<Point> {
    let mut v = vec![Point::Spawned, Point::Locked, Point::Bytes(0)];
    v.extend((1..10).map(|k| Point::Bytes(size * k / 10)));
    v.push(Point::Bytes(size));
    v
}

#[test]
fn packimage_sigkill_at_every_phase_and_every_tenth_of_every_format() {
    let t0 = Instant::now();
    let mut faults = 0;
    let mut summary = Vec::new();
    let mut transient = Vec::new();
    // xz is about ten times slower than gzip: less data gives it as long a run.
    for (m, c, file, mib) in [
        ("cpio", "gzip", "rootimg.cpio.gz", 8),
        ("cpio", "xz", "rootimg.cpio.xz", 1),
        ("tar", "gzip", "rootimg.tar.gz", 8),
        ("tar", "xz", "rootimg.tar.xz", 1),
        ("squashfs", "gzip", "rootimg.sfs", 8),
    ] {
        if m == "squashfs" && !(cmd_exists("mksquashfs") && cmd_exists("unsquashfs")) {
            skip("squashfs-tools not installed");
            continue;
        }
        let n = Node::new(mib);
        let args = ["-m", m, "-c", c];
        let o = n.pack(&args);
        assert_eq!(o.code, 0, "{m}/{c}: {o:?}");
        let target = n.dir.join(file);
        let mut old = std::fs::read(&target).unwrap();
        let bulk = extract(&target, &n.d.path().join(format!("x-{file}")));
        assert_eq!(bulk.len(), mib, "{file}: the first pack is complete");
        let (mut hit, mut kept, mut replaced) = (0, 0, 0);
        for (i, p) in points(old.len() as u64).into_iter().enumerate() {
            if !kill_at(n.command(&args), p, &n.dir, &n.d.locks()) {
                continue;
            }
            hit += 1;
            let left = settles(|| processes_naming(&n.dir));
            assert!(left.is_empty(), "{file} at {p:?}: processes left {left:?}");
            let now = std::fs::read(&target).unwrap();
            if now == old {
                kept += 1;
            } else {
                // Killed after the rename: only a complete archive may be there.
                replaced += 1;
                let got = extract(&target, &n.d.path().join(format!("y-{file}-{i}")));
                assert_eq!(got, bulk, "{file} at {p:?}: a replaced image is complete");
                old = now;
            }
            if let Some(holders) = lock_released(&n) {
                transient.push(format!("{file} at {p:?}: {holders}"));
            }
        }
        faults += hit;
        // The next run succeeds and removes what the killed ones left.
        let o = n.pack(&args);
        assert_eq!(o.code, 0, "{file}: the run after the kills: {o:?}");
        assert_eq!(temp_files(&n.dir), Vec::<String>::new(), "{file}");
        assert_eq!(
            n.names(),
            ["rootimg", file],
            "{file}: one image, nothing else"
        );
        let got = extract(&target, &n.d.path().join(format!("z-{file}")));
        assert_eq!(got, bulk, "{file}: the rerun's image is complete");
        assert!(
            hit >= 8,
            "{file}: only {hit} of the kills hit a running pack"
        );
        summary.push(format!(
            "{file} {hit} kills ({kept} old kept, {replaced} new complete)"
        ));
    }
    report(&format!(
        "packimage SIGKILL: {faults} kills: {}; lock still held just after the kill: {}; {:.1} s",
        summary.join(", "),
        transient.len(),
        t0.elapsed().as_secs_f64()
    ));
    for t in transient {
        report(&format!("  {t}"));
    }
}

/// An imgexport node: kernel, initrds and a rootimg archive big enough to be hit mid-way, an
/// old bundle in the client's cwd.
struct Export {
    d: Dir,
    dir: PathBuf,
    cwd: PathBuf,
}

impl Export {
    fn new(kernel_mib: usize) -> Export {
        let d = Dir::new();
        let dir = d.install().join("netboot/rhels9/x86_64/compute");
        let cwd = d.path().join("cwd");
        std::fs::create_dir_all(dir.join("rootimg/etc")).unwrap();
        std::fs::create_dir_all(&cwd).unwrap();
        std::fs::write(dir.join("rootimg/etc/hosts"), "127.0.0.1 localhost\n").unwrap();
        std::fs::write(dir.join("kernel"), noise(kernel_mib << 20, 5)).unwrap();
        std::fs::write(dir.join("initrd-stateless.gz"), noise(300_000, 6)).unwrap();
        std::fs::write(dir.join("rootimg.cpio.gz"), noise(2 << 20, 7)).unwrap();
        let pkglist = d.write("lists/compute.pkglist", "bash\n");
        d.defs(&format!(
            "{NAME}:\n    objtype=osimage\n    imagetype=linux\n    osarch=x86_64\n    osvers=rhels9\n    profile=compute\n    provmethod=netboot\n    rootimgdir={}\n    pkglist={}\n\n",
            dir.display(),
            pkglist.display()
        ));
        Export { d, dir, cwd }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut a = vec![NAME];
        a.extend_from_slice(args);
        let mut c = self.d.command("imgexport", &a);
        c.current_dir(&self.cwd)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        c
    }

    fn export(&self, args: &[&str]) -> Output {
        let mut a = vec![NAME];
        a.extend_from_slice(args);
        let mut c = self.d.command("imgexport", &a);
        c.current_dir(&self.cwd);
        Output::of(c)
    }
}

/// The bundle's members (`tar -tzf`), which also proves it is a whole gzip'd tar.
fn members(bundle: &Path) -> Vec<String> {
    let out = Command::new("tar")
        .arg("-tzf")
        .arg(bundle)
        .output()
        .unwrap();
    assert!(out.status.success(), "tar -tzf {}", bundle.display());
    let mut v: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    v.sort();
    v
}

#[test]
fn imgexport_sigkill_at_every_phase_and_every_tenth() {
    let n = Export::new(6);
    let t0 = Instant::now();
    let o = n.export(&["keep.tgz"]);
    assert_eq!(o.code, 0, "{o:?}");
    let bundle = n.cwd.join("keep.tgz");
    let mut old = std::fs::read(&bundle).unwrap();
    let want = members(&bundle);
    assert!(want.len() >= 5, "{want:?}");
    let (mut hit, mut kept, mut replaced) = (0, 0, 0);
    for p in points(old.len() as u64) {
        if !kill_at(n.command(&["keep.tgz"]), p, &n.cwd, &n.d.locks()) {
            continue;
        }
        hit += 1;
        let left = settles(|| processes_naming(&n.cwd));
        assert!(left.is_empty(), "at {p:?}: processes left {left:?}");
        let now = std::fs::read(&bundle).unwrap();
        if now == old {
            kept += 1;
        } else {
            replaced += 1;
            assert_eq!(
                members(&bundle),
                want,
                "at {p:?}: a replaced bundle is complete"
            );
            old = now;
        }
        let names = names(&n.cwd);
        assert!(
            names.iter().all(|f| f.starts_with("keep.tgz")),
            "at {p:?}: {names:?}"
        );
    }
    let o = n.export(&["keep.tgz"]);
    assert_eq!(o.code, 0, "the run after the kills: {o:?}");
    assert_eq!(names(&n.cwd), ["keep.tgz"], "no temp file, nothing else");
    assert_eq!(members(&bundle), want);
    assert!(hit >= 8, "only {hit} kills hit a running export");
    assert_eq!(
        names(&n.dir),
        [
            "initrd-stateless.gz",
            "kernel",
            "rootimg",
            "rootimg.cpio.gz"
        ],
        "the image directory is never written"
    );
    report(&format!(
        "imgexport SIGKILL: {hit} kills ({kept} old bundle kept, {replaced} new complete); {:.1} s",
        t0.elapsed().as_secs_f64()
    ));
}

/// Runs `f` on a new thread that has its own private mount namespace, so what it mounts is
/// seen by it and the processes it starts only, and vanishes with them.
fn in_private_mounts<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            use nix::mount::{mount, MsFlags};
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).expect("unshare");
            mount(
                None::<&str>,
                "/",
                None::<&str>,
                MsFlags::MS_REC | MsFlags::MS_PRIVATE,
                None::<&str>,
            )
            .expect("make / private");
            f()
        })
        .join()
        .expect("namespace thread")
    })
}

/// Mounts (or remounts) a tmpfs of `bytes` at `dir`, in the caller's namespace.
fn tmpfs(dir: &Path, bytes: u64, remount: bool) {
    use nix::mount::{mount, MsFlags};
    let flags = if remount {
        MsFlags::MS_REMOUNT
    } else {
        MsFlags::empty()
    };
    let opts = format!("size={bytes},mode=0755");
    mount(
        Some("tmpfs"),
        dir,
        Some("tmpfs"),
        flags,
        Some(opts.as_str()),
    )
    .expect("mount tmpfs");
}

fn used_bytes(dir: &Path) -> u64 {
    let st = nix::sys::statvfs::statvfs(dir).unwrap();
    (st.blocks() - st.blocks_free()) * st.fragment_size()
}

#[test]
fn a_full_destination_fails_clearly_and_keeps_the_old_image() {
    if !is_root() && skip("mounting a tmpfs needs root") {
        return;
    }
    let t0 = Instant::now();
    let faults = in_private_mounts(|| {
        let n = Node::new(0);
        std::fs::remove_dir_all(n.rootimg()).unwrap();
        // The image directory is a tmpfs holding the tree and the old image.
        tmpfs(&n.dir, 64 << 20, false);
        n.build_tree(4);
        let input = 4u64 << 20;
        let mut faults = 0;
        for (m, c, file) in [
            ("cpio", "gzip", "rootimg.cpio.gz"),
            ("cpio", "xz", "rootimg.cpio.xz"),
            ("tar", "gzip", "rootimg.tar.gz"),
            ("tar", "xz", "rootimg.tar.xz"),
            ("squashfs", "gzip", "rootimg.sfs"),
        ] {
            if m == "squashfs" && !cmd_exists("mksquashfs") {
                continue;
            }
            let args = ["-m", m, "-c", c];
            tmpfs(&n.dir, 64 << 20, true);
            let o = n.pack(&args);
            assert_eq!(o.code, 0, "{file}: {o:?}");
            let old = std::fs::read(n.dir.join(file)).unwrap();
            // 1. Less free space than the pack can need: refused before anything is written.
            // 2. Enough to pass that check, too little for the archive: ENOSPC mid-write.
            for (free, why) in [
                (1u64 << 20, "Not enough free space"),
                (input * 6 / 10, "No space left on device"),
            ] {
                tmpfs(&n.dir, used_bytes(&n.dir) + free, true);
                let o = n.pack(&args);
                faults += 1;
                assert_eq!(o.code, 1, "{file} with {free} bytes free: {o:?}");
                assert!(
                    o.stderr.starts_with("Error: ") && o.stderr.contains(why),
                    "{file}: {}",
                    o.stderr
                );
                report(&format!("  {file}: {}", o.stderr.trim_end()));
                assert!(
                    std::fs::read(n.dir.join(file)).unwrap() == old,
                    "{file}: old image kept"
                );
                assert_eq!(
                    temp_files(&n.dir),
                    Vec::<String>::new(),
                    "{file}: no temp left"
                );
                assert!(lock_released(&n).is_none());
            }
            assert!(processes_naming(&n.dir).is_empty());
        }
        // imgexport into a full cwd: the old bundle stays, nothing else appears.
        let x = Export::new(12);
        tmpfs(&x.cwd, 64 << 20, false);
        let o = x.export(&["keep.tgz"]);
        assert_eq!(o.code, 0, "{o:?}");
        let old = std::fs::read(x.cwd.join("keep.tgz")).unwrap();
        // About 14 MiB of bundle; imgexport's own check wants half of it free.
        for (free, why) in [
            (256u64 << 10, "Not enough free space"),
            (10 << 20, "No space left on device"),
        ] {
            tmpfs(&x.cwd, used_bytes(&x.cwd) + free, true);
            let o = x.export(&["keep.tgz"]);
            faults += 1;
            assert_eq!(o.code, 1, "imgexport with {free} bytes free: {o:?}");
            assert!(
                o.stderr.starts_with("Error: ") && o.stderr.contains(why),
                "{}",
                o.stderr
            );
            report(&format!("  imgexport: {}", o.stderr.trim_end()));
            assert!(std::fs::read(x.cwd.join("keep.tgz")).unwrap() == old);
            assert_eq!(names(&x.cwd), ["keep.tgz"], "nothing else in the cwd");
        }
        for m in [&x.cwd, &n.dir] {
            nix::mount::umount2(m.as_path(), nix::mount::MntFlags::MNT_DETACH).unwrap();
        }
        faults
    });
    report(&format!(
        "full filesystem: {faults} runs on a full tmpfs, each errorcode 1 with the old file kept; {:.1} s",
        t0.elapsed().as_secs_f64()
    ));
}

/// The engine as root without CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH, as on a root-squashed
/// NFS export: files and directories without read permission for their owner fail.
fn without_dac(c: Command) -> Command {
    let mut s = Command::new("setpriv");
    s.args([
        "--bounding-set",
        "-dac_override,-dac_read_search",
        "--inh-caps",
        "-dac_override,-dac_read_search",
        "--",
    ]);
    s.arg(c.get_program()).args(c.get_args());
    for (k, v) in c.get_envs() {
        match v {
            Some(v) => s.env(k, v),
            None => s.env_remove(k),
        };
    }
    if let Some(d) = c.get_current_dir() {
        s.current_dir(d);
    }
    s
}

#[test]
fn unreadable_files_and_directories_are_errors_and_keep_the_old_image() {
    if !is_root() && skip("dropping root's capabilities needs root") {
        return;
    }
    if !cmd_exists("setpriv") && skip("setpriv (util-linux) not installed") {
        return;
    }
    let n = Node::new(2);
    let mut faults = 0;
    assert_eq!(n.pack(&["-m", "tar"]).code, 0);
    let old = std::fs::read(n.dir.join("rootimg.tar.gz")).unwrap();
    let secret = n.rootimg().join("etc/secret");
    std::fs::write(&secret, "s\n").unwrap();
    std::fs::set_permissions(&secret, PermissionsExt::from_mode(0o000)).unwrap();
    let closed = n.rootimg().join("var/closed");
    std::fs::create_dir_all(closed.join("inside")).unwrap();
    for (what, path) in [("file", &secret), ("directory", &closed)] {
        if what == "directory" {
            std::fs::set_permissions(&secret, PermissionsExt::from_mode(0o600)).unwrap();
            std::fs::set_permissions(&closed, PermissionsExt::from_mode(0o000)).unwrap();
        }
        for m in ["tar", "cpio"] {
            let mut a = vec![NAME, "-m", m];
            a.push("-c");
            a.push("gzip");
            let o = Output::of(without_dac(n.d.command("packimage", &a)));
            faults += 1;
            assert_eq!(o.code, 1, "unreadable {what}, {m}: {o:?}");
            assert!(
                o.stderr.contains(&path.display().to_string())
                    && o.stderr.contains("Permission denied"),
                "{what}: {}",
                o.stderr
            );
            assert!(std::fs::read(n.dir.join("rootimg.tar.gz")).unwrap() == old);
            assert_eq!(n.names(), ["rootimg", "rootimg.tar.gz"], "no temp, no cpio");
            report(&format!("  {what}, {m}: {}", o.stderr.trim_end()));
        }
    }
    // The control: with its capabilities the same engine packs the same tree.
    std::fs::set_permissions(&closed, PermissionsExt::from_mode(0o755)).unwrap();
    let o = Output::of(without_dac(n.d.command("packimage", &[NAME, "-m", "tar"])));
    assert_eq!(o.code, 0, "readable again: {o:?}");
    std::fs::set_permissions(&closed, PermissionsExt::from_mode(0o000)).unwrap();
    let o = n.pack(&["-m", "tar"]);
    assert_eq!(o.code, 0, "root with CAP_DAC_OVERRIDE reads it: {o:?}");
    std::fs::set_permissions(&closed, PermissionsExt::from_mode(0o755)).unwrap();

    // imgexport: an unreadable kernel.
    let x = Export::new(1);
    let o = x.export(&["keep.tgz"]);
    assert_eq!(o.code, 0, "{o:?}");
    let old = std::fs::read(x.cwd.join("keep.tgz")).unwrap();
    std::fs::set_permissions(x.dir.join("kernel"), PermissionsExt::from_mode(0o000)).unwrap();
    let mut c = x.d.command("imgexport", &[NAME, "keep.tgz"]);
    c.current_dir(&x.cwd);
    let o = Output::of(without_dac(c));
    faults += 1;
    assert_eq!(o.code, 1, "{o:?}");
    // Checked up front, with stock's message for a file it cannot read.
    assert!(
        o.stderr.contains(&format!(
            "Couldn't find file {}",
            x.dir.join("kernel").display()
        )),
        "{}",
        o.stderr
    );
    assert!(std::fs::read(x.cwd.join("keep.tgz")).unwrap() == old);
    assert_eq!(names(&x.cwd), ["keep.tgz"]);
    report(&format!(
        "unreadable: {faults} runs, each errorcode 1 naming the path, old file kept"
    ));
}

/// How a file is changed while it is packed.
#[derive(Debug, Clone, Copy)]
enum Change {
    /// Truncated to a third.
    Shrink,
    /// Extended by 4 KiB.
    Grow,
    /// 4 KiB in its middle rewritten in place, the length unchanged.
    Rewrite,
}

/// Whether `pid` has `path` open.
fn has_open(pid: u32, path: &Path) -> bool {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
        .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|t| t == path))
}

/// Runs a pack and changes `path` once the engine has it open (the change may still come
/// after the read, when the engine is fast).
fn pack_changing(n: &Node, args: &[&str], path: &Path, how: Change) -> Output {
    use std::os::unix::fs::FileExt;
    let mut c = n.command(args);
    c.stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let mut err = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let pid = child.id();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !has_open(pid, path) && child.try_wait().unwrap().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_micros(200));
    }
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    let len = f.metadata().unwrap().len();
    match how {
        Change::Shrink => f.set_len(len / 3).unwrap(),
        // Small writes, so the change follows the open as closely as it can.
        Change::Grow => f.write_all_at(&[7u8; 4096], len).unwrap(),
        Change::Rewrite => f.write_all_at(&[7u8; 4096], len / 2).unwrap(),
    }
    let status = child.wait().unwrap();
    Output {
        code: status.code().unwrap_or(-1),
        stdout: String::new(),
        stderr: reader.join().unwrap(),
    }
}

#[test]
fn a_file_changing_while_packed_is_an_error_never_a_corrupt_image() {
    let n = Node::new(2);
    let big = n.rootimg().join("var/lib/bulk/changing");
    let original = noise(12 << 20, 99);
    let mut rewritten = original.clone();
    rewritten[6 << 20..(6 << 20) + 4096].fill(7);
    let mut faults = 0;
    let mut late = 0;
    let mut formats = vec![
        ("cpio", "gzip", "rootimg.cpio.gz"),
        ("tar", "gzip", "rootimg.tar.gz"),
    ];
    if cmd_exists("mksquashfs") && cmd_exists("unsquashfs") {
        formats.push(("squashfs", "gzip", "rootimg.sfs"));
    }
    // The check is in the entry loop all writers share; xz would only make the runs longer.
    for (m, c, file) in formats {
        let args = ["-m", m, "-c", c];
        std::fs::write(&big, &original).unwrap();
        assert_eq!(n.pack(&args).code, 0);
        let mut old = std::fs::read(n.dir.join(file)).unwrap();
        for how in [Change::Shrink, Change::Grow, Change::Rewrite] {
            let mut detected = false;
            for attempt in 0..5 {
                std::fs::write(&big, &original).unwrap();
                let o = pack_changing(&n, &args, &big, how);
                assert_eq!(temp_files(&n.dir), Vec::<String>::new());
                if o.code == 0 {
                    // Only a read that ended before the change may succeed, and then the
                    // archive holds the file as it was (every change alters its bytes); or,
                    // for the same-length rewrite, a change between the open and the first
                    // fstat: then the whole rewritten file, never a mix.
                    let x = n.d.path().join(format!("x-{file}-{how:?}-{attempt}"));
                    extract(&n.dir.join(file), &x);
                    let got = std::fs::read(x.join("var/lib/bulk/changing")).unwrap();
                    assert!(
                        got == original || (matches!(how, Change::Rewrite) && got == rewritten),
                        "{file}, {how:?}: a successful pack holds the file as it was"
                    );
                    std::fs::remove_dir_all(&x).unwrap();
                    late += 1;
                    old = std::fs::read(n.dir.join(file)).unwrap();
                    continue;
                }
                faults += 1;
                assert_eq!(o.code, 1, "{file}, {how:?}: {o:?}");
                // A short or long read, or a changed fstat after a read of the right length.
                let msg = ["shrank", "grew", "changed"].map(|m| format!("{m} while being packed"));
                assert!(
                    o.stderr.contains("var/lib/bulk/changing")
                        && msg.iter().any(|m| o.stderr.contains(m.as_str())),
                    "{file}, {how:?}: {}",
                    o.stderr
                );
                assert!(
                    std::fs::read(n.dir.join(file)).unwrap() == old,
                    "{file}: old kept"
                );
                report(&format!("  {file}, {how:?}: {}", o.stderr.trim_end()));
                detected = true;
                break;
            }
            assert!(
                detected,
                "{file}, {how:?}: the change never came during the read"
            );
        }
        std::fs::write(&big, &original).unwrap();
        assert_eq!(n.pack(&args).code, 0, "{file}: left alone, the file packs");
    }
    report(&format!(
        "changing file: {faults} packs with the file shrunk, grown or rewritten while open, each errorcode 1, old image kept; {late} that succeeded, each with the file whole and unmixed (changed after the read, or before it began)"
    ));
}

// ---- genimage ------------------------------------------------------------------------------

/// Processes whose root or working directory is under `dir`, or that name it.
fn processes_under(dir: &Path) -> Vec<String> {
    let mut found = processes_naming(dir);
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

/// A genimage run whose stdout lines arrive on a channel.
struct Watched {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
    reader: std::thread::JoinHandle<String>,
    err: std::thread::JoinHandle<String>,
}

impl Watched {
    fn start(mut c: Command) -> Watched {
        let mut child = c
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let mut err = child.stderr.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut all = String::new();
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(l.clone());
                all.push_str(&l);
                all.push('\n');
            }
            all
        });
        let err = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            s
        });
        Watched {
            child,
            lines,
            reader,
            err,
        }
    }

    /// Waits for the `nth` line starting with `prefix` (None: any line); false on EOF or
    /// timeout.
    fn wait_for(&self, prefix: Option<&str>, nth: usize) -> bool {
        let deadline = Instant::now() + Duration::from_secs(600);
        let mut seen = 0;
        while Instant::now() < deadline {
            match self.lines.recv_timeout(Duration::from_secs(1)) {
                Ok(l) if prefix.is_none_or(|p| l.starts_with(p)) => {
                    seen += 1;
                    if seen >= nth {
                        return true;
                    }
                }
                Ok(_) | Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(_) => return false,
            }
        }
        false
    }

    fn signal(mut self, sig: nix::sys::signal::Signal) -> Output {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), sig);
        let status = self.child.wait().unwrap();
        Output {
            code: status.code().unwrap_or(-1),
            stdout: self.reader.join().unwrap_or_default(),
            stderr: self.err.join().unwrap_or_default(),
        }
    }
}

#[test]
fn genimage_sigkill_in_its_early_phases_leaves_no_mount_and_the_rerun_starts_clean() {
    use nix::sys::signal::Signal;
    let mirror = host_mirror();
    if !is_root() && skip("genimage builds need root") {
        return;
    }
    if !Path::new("/usr/sbin/debootstrap").exists() && skip("debootstrap is not installed") {
        return;
    }
    if std::env::consts::ARCH != "x86_64" && skip("the test image is x86_64") {
        return;
    }
    if !reachable(&mirror) && skip(&format!("the Debian mirror {mirror} is not reachable")) {
        return;
    }
    let t0 = Instant::now();
    let d = Dir::new();
    let dir = d.install().join("netboot/debian12/x86_64/compute");
    d.write("install/postscripts/xcatdsklspost", "#!/bin/sh\n");
    d.write("lists/compute.pkglist", "systemd-sysv\n");
    d.defs(&format!(
        "{NAME}:\n    objtype=osimage\n    imagetype=linux\n    osarch=x86_64\n    osvers=debian12\n    profile=compute\n    provmethod=netboot\n    environvar=DEBOOTSTRAP_VARIANT=minbase\n    pkglist={}\n    pkgdir={mirror}\n    rootimgdir={}\n\n",
        d.path().join("lists/compute.pkglist").display(),
        dir.display(),
    ));
    let host_mounts = std::fs::read_to_string("/proc/1/mountinfo").unwrap_or_default();
    let run = || {
        let mut c = d.command("genimage", &[NAME]);
        c.env("XCATROOT", d.path().join("no-xcat-here"));
        Watched::start(c)
    };
    // Kill points: the first line, debootstrap's first download, its dependency resolution,
    // the middle of its package downloads, and its unpack stage once its proc mount exists in
    // the build's namespace.
    let mut kills = 0;
    let mut with_mounts = 0;
    for (point, nth) in [
        ("first line", 1),
        ("I: Retrieving", 1),
        ("I: Resolving dependencies", 1),
        ("I: Retrieving", 40),
        ("I: Unpacking", 1),
    ] {
        let w = run();
        let prefix = (point != "first line").then_some(point);
        assert!(
            w.wait_for(prefix, nth),
            "genimage never printed {point} ({nth})"
        );
        if point == "I: Unpacking" {
            let t = Instant::now();
            while mounts_anywhere_under(d.path()).is_empty()
                && t.elapsed() < Duration::from_secs(30)
            {
                std::thread::sleep(Duration::from_millis(50));
            }
            if !mounts_anywhere_under(d.path()).is_empty() {
                with_mounts += 1;
            }
        }
        let o = w.signal(Signal::SIGKILL);
        assert_eq!(o.code, -1, "killed at {point}: {o:?}");
        kills += 1;
        let m = settles(|| mounts_anywhere_under(d.path()));
        assert!(m.is_empty(), "after a kill at {point}: mounts left {m:?}");
        let p = settles(|| processes_under(d.path()));
        assert!(
            p.is_empty(),
            "after a kill at {point}: processes left {p:?}"
        );
        assert!(xcat_imaged::lock::acquire_in(&d.locks(), &dir.join("rootimg")).is_ok());
        let rootimg = dir.join("rootimg");
        assert!(
            std::fs::read_dir(&rootimg).map_or(true, |mut e| e.next().is_none()),
            "after a kill at {point}: rootimg holds no partial tree"
        );
        assert_eq!(
            std::fs::read_to_string("/proc/1/mountinfo").unwrap_or_default(),
            host_mounts,
            "the host's mount table is unchanged"
        );
    }
    assert_eq!(
        with_mounts, 1,
        "the unpack-stage kill hit a build with its mounts"
    );
    // The rerun removes the killed build's partial tree and starts over; SIGTERM then ends it
    // cleanly (the full rerun to a bootable image is tests/genimage.rs's fixture).
    assert!(
        dir.join(".rootimg.genimage-partial").exists(),
        "the kill left its partial tree"
    );
    let w = run();
    assert!(
        w.wait_for(Some("I: Retrieving"), 1),
        "the rerun reached debootstrap"
    );
    let o = w.signal(Signal::SIGTERM);
    assert_eq!(o.code, 1, "{o:?}");
    assert!(
        o.stderr.contains("genimage was interrupted"),
        "{}",
        o.stderr
    );
    assert!(
        !dir.join(".rootimg.genimage-partial").exists(),
        "the rerun's cancel removed the partial tree"
    );
    assert!(settles(|| mounts_anywhere_under(d.path())).is_empty());
    assert!(settles(|| processes_under(d.path())).is_empty());
    report(&format!(
        "genimage SIGKILL: {kills} kills ({with_mounts} with the build's mounts up), then a rerun; {:.1} s",
        t0.elapsed().as_secs_f64()
    ));
}
