//! The built-in example image boots, the way an xCAT node boots it (issue #7; recipe and
//! measurements in docs/reliability.md and ../shared/notes/qemu-boot-test.md).
//!
//! The genimage fixture's image (examples/debian-image plus the test's extras) is packed by our
//! packimage in all five formats, and each archive is booted under `qemu-system-x86_64` with
//! pure software emulation (`-accel tcg`, never KVM), no network device, the generated
//! `<rootimgdir>/kernel` and a loader initramfs the test builds: static busybox, GNU tar and
//! the loop/squashfs/overlay modules from the image's own tree, and an `/init` that does what
//! xCAT's node-side `xcatroot` does once it has downloaded the image (tmpfs root and
//! `gzip -cd | cpio -idum`, `xz -cd | cpio -idum`, `tar --xattrs-include='*' -xf`, or the
//! squashfs under an overlay), then `switch_root`s to the image's systemd. The archive rides
//! along as a second, uncompressed cpio member of the initrd. A unit the test's postinstall
//! put into the image prints a marker with this run's token on the serial console and powers
//! off; for tar and squashfs it also shows that a file capability survived (cpio's newc format
//! has no xattrs, so there it must be gone, as with xCAT). The generated `initrd-stateless.gz`
//! is booted far enough to see dracut start.
//!
//! Needs root and the fixture (see tests/genimage.rs), qemu-system-x86_64 and a static
//! /bin/busybox (busybox-static); otherwise the tests say why they skip. At most two QEMUs
//! run at a time.

use crate::genimage::{fixture, Fixture, KEEP_ENV, NAME};
use crate::util::{skip, Output};
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// One way packimage packs the image.
struct Format {
    file: &'static str,
    args: &'static [&'static str],
    /// Whether the format carries xattrs, so the file capability must survive.
    keeps_caps: bool,
    /// The root file system type the booted system must see.
    rootfs: &'static str,
}

/// Quickest to pack first, so the first boots start early.
const FORMATS: &[Format] = &[
    Format {
        file: "rootimg.cpio.gz",
        args: &["-m", "cpio", "-c", "gzip"],
        keeps_caps: false,
        rootfs: "tmpfs",
    },
    Format {
        file: "rootimg.tar.gz",
        args: &["-m", "tar", "-c", "gzip"],
        keeps_caps: true,
        rootfs: "tmpfs",
    },
    Format {
        file: "rootimg.sfs",
        args: &["-m", "squashfs"],
        keeps_caps: true,
        rootfs: "overlay",
    },
    Format {
        file: "rootimg.cpio.xz",
        args: &["-m", "cpio", "-c", "xz"],
        keeps_caps: false,
        rootfs: "tmpfs",
    },
    Format {
        file: "rootimg.tar.xz",
        args: &["-m", "tar", "-c", "xz"],
        keeps_caps: true,
        rootfs: "tmpfs",
    },
];

/// What the boot packs leave out besides the example's exlist, for speed under emulation:
/// the kernel modules (the loader takes its three from the unpacked tree; QEMU's devices need
/// none) and translations.
const BOOT_EXLIST: &str =
    "# boot test: left out for speed under emulation\n./usr/lib/modules/*\n./usr/share/locale/*\n";

/// The kernel command line of every boot. `no_timer_check`: on a loaded host the emulated
/// CPU can be so slow that the kernel's IO-APIC timer check fails and it panics at 0.05 s
/// ("IO-APIC + timer doesn't work!"), as seen here with a load average of 10 on two cores.
const APPEND: &str = "console=ttyS0 panic=-1 loglevel=4 no_timer_check";

/// A generous bound for one boot (about 20-40 s when the host is idle).
const BOOT_TIMEOUT: Duration = Duration::from_secs(600);

/// Guest memory: the unpacked tree lives in a tmpfs (half of RAM at most) next to the archive.
const GUEST_MIB: &str = "1024";

/// The node-side loader: what xCAT's `xcatroot` does after its download, then switch_root.
const LOADER_INIT: &str = r#"#!/bin/sh
# Test loader (tests/boot.rs): unpack or mount the image as xcatroot does, then switch_root.
export PATH=/bin
set -o pipefail
fail() { echo "LOADER_FAIL: $*"; sleep 1; poweroff -f; }

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
while read -r m; do insmod "/lib/modules/$m" || fail "insmod $m"; done < /lib/modules/order

echo "LOADER_START uptime=$(cut -d' ' -f1 /proc/uptime)"
NEWROOT=/newroot
mkdir -p $NEWROOT
if [ -r /rootimg.sfs ]; then
    mkdir -p /ro /rw
    mount -t squashfs -o ro,loop /rootimg.sfs /ro || fail "mount squashfs"
    mount -t tmpfs -o mode=755 rw /rw || fail "mount tmpfs"
    mkdir -p /rw/upper /rw/work
    mount -t overlay -o lowerdir=/ro,upperdir=/rw/upper,workdir=/rw/work \
        mergedroot $NEWROOT || fail "mount overlay"
elif [ -r /rootimg.cpio.gz ] || [ -r /rootimg.cpio.xz ]; then
    mount -t tmpfs -o mode=755 rootfs $NEWROOT || fail "mount tmpfs"
    cd $NEWROOT
    if [ -r /rootimg.cpio.gz ]; then
        gzip -cd /rootimg.cpio.gz | cpio -idum || fail "cpio.gz extract"
    else
        xz -cd /rootimg.cpio.xz | cpio -idum || fail "cpio.xz extract"
    fi
    rm -f /rootimg.cpio.*
elif [ -r /rootimg.tar.gz ] || [ -r /rootimg.tar.xz ]; then
    mount -t tmpfs -o mode=755 rootfs $NEWROOT || fail "mount tmpfs"
    cd $NEWROOT
    if [ -r /rootimg.tar.gz ]; then
        /bin/gnutar --xattrs-include='*' -xzf /rootimg.tar.gz || fail "tar.gz extract"
    else
        /bin/gnutar --xattrs-include='*' -xJf /rootimg.tar.xz || fail "tar.xz extract"
    fi
    rm -f /rootimg.tar.*
else
    fail "no /rootimg.* in the loader"
fi
cd /
echo "LOADER_UNPACKED uptime=$(cut -d' ' -f1 /proc/uptime)"
[ -e $NEWROOT/sbin/init ] || [ -L $NEWROOT/sbin/init ] || fail "image has no /sbin/init"
[ -e $NEWROOT/dev/console ] || mknod $NEWROOT/dev/console c 5 1
umount /proc /sys
mount --move /dev $NEWROOT/dev || umount -l /dev
exec switch_root $NEWROOT /sbin/init
"#;

/// At most two QEMUs at a time (each is two busy vCPU threads).
struct Slots {
    free: Mutex<usize>,
    cv: Condvar,
}

static SLOTS: Slots = Slots {
    free: Mutex::new(2),
    cv: Condvar::new(),
};

struct Slot;

impl Slots {
    fn take(&'static self) -> Slot {
        let mut n = self.free.lock().unwrap_or_else(|e| e.into_inner());
        while *n == 0 {
            n = self.cv.wait(n).unwrap_or_else(|e| e.into_inner());
        }
        *n -= 1;
        Slot
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        *SLOTS.free.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        SLOTS.cv.notify_one();
    }
}

/// Why the boot tests cannot run here, if they cannot.
fn cannot_boot() -> Option<String> {
    if std::env::consts::ARCH != "x86_64" {
        return Some("the boot test runs x86_64 guests".into());
    }
    if !crate::util::cmd_exists("qemu-system-x86_64") {
        return Some("qemu-system-x86_64 is not installed (qemu-system-x86)".into());
    }
    match std::fs::read("/bin/busybox") {
        Ok(elf) if !has_interpreter(&elf) => None,
        Ok(_) => Some("/bin/busybox is not static (install busybox-static)".into()),
        Err(_) => Some("/bin/busybox is missing (install busybox-static)".into()),
    }
}

/// Whether an ELF64 file asks for a dynamic loader (has a PT_INTERP program header).
fn has_interpreter(elf: &[u8]) -> bool {
    let u16_at = |o: usize| {
        elf.get(o..o + 2)
            .map_or(0, |b| u16::from_le_bytes([b[0], b[1]]))
    };
    let phoff = elf
        .get(0x20..0x28)
        .map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8]))) as usize;
    let (size, count) = (u16_at(0x36) as usize, u16_at(0x38) as usize);
    (0..count)
        .any(|i| elf.get(phoff + i * size..phoff + i * size + 4) == Some(&3u32.to_le_bytes()[..]))
}

/// A fresh token per run, so a stale log can never pass.
fn token() -> String {
    let mut b = [0u8; 16];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .unwrap();
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn run(prog: &str, args: &[&str]) -> Output {
    let mut c = Command::new(prog);
    c.args(args);
    Output::of(c)
}

/// The one kernel version the image has.
fn kernel_version(rootimg: &Path) -> String {
    let mut v: Vec<String> = std::fs::read_dir(rootimg.join("lib/modules"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(v.len(), 1, "one kernel in the image: {v:?}");
    v.remove(0)
}

/// The image's canonical path for `path`, its symlinks resolved inside the image.
fn in_image(rootimg: &Path, path: &str) -> PathBuf {
    let o = run(
        "chroot",
        &[&rootimg.display().to_string(), "readlink", "-f", path],
    );
    assert_eq!(o.code, 0, "readlink -f {path} in the image: {o:?}");
    rootimg.join(o.stdout.trim().trim_start_matches('/'))
}

/// Module files for `names` and their dependencies, dependencies first (from modules.dep);
/// built-in ones are left out.
fn module_closure(moddir: &Path, names: &[&str]) -> Vec<String> {
    let dep = std::fs::read_to_string(moddir.join("modules.dep")).unwrap();
    let builtin = std::fs::read_to_string(moddir.join("modules.builtin")).unwrap_or_default();
    let base = |p: &str| {
        let file = p.rsplit('/').next().unwrap_or(p);
        file.split(".ko").next().unwrap_or(file).replace('-', "_")
    };
    fn add(path: &str, dep: &str, out: &mut Vec<String>) {
        if out.iter().any(|p| p == path) {
            return;
        }
        let line = dep
            .lines()
            .find(|l| l.split(':').next() == Some(path))
            .unwrap_or_else(|| panic!("{path} is not in modules.dep"));
        for d in line.split(':').nth(1).unwrap_or("").split_whitespace() {
            add(d, dep, out);
        }
        out.push(path.to_string());
    }
    let mut out = Vec::new();
    for name in names {
        let found = dep
            .lines()
            .filter_map(|l| l.split(':').next())
            .find(|p| base(p) == *name);
        match found {
            Some(p) => add(p, &dep, &mut out),
            None => assert!(
                builtin.lines().any(|l| base(l) == *name),
                "module {name} is neither in modules.dep nor built in"
            ),
        }
    }
    out
}

/// Runs `find . | cpio -o -H newc` in `dir` (owners root) into `out`, through `compress`
/// when given.
fn cpio_of(dir: &Path, names: &[u8], out: File, compress: Option<&str>) {
    let mut cpio = Command::new("cpio");
    cpio.args(["-o", "-H", "newc", "-R", "0:0", "--quiet"])
        .current_dir(dir)
        .stdin(Stdio::piped());
    let mut gz = None;
    match compress {
        Some(prog) => {
            let mut cpio = cpio.stdout(Stdio::piped()).spawn().unwrap();
            let pipe = cpio.stdout.take().unwrap();
            let child = Command::new(prog)
                .arg("-c")
                .stdin(pipe)
                .stdout(out)
                .spawn()
                .unwrap();
            gz = Some(child);
            finish_cpio(cpio, names);
        }
        None => {
            let cpio = cpio.stdout(out).spawn().unwrap();
            finish_cpio(cpio, names);
        }
    }
    if let Some(mut g) = gz {
        assert!(g.wait().unwrap().success(), "compressing the loader");
    }
}

fn finish_cpio(mut cpio: std::process::Child, names: &[u8]) {
    cpio.stdin.take().unwrap().write_all(names).unwrap();
    assert!(cpio.wait().unwrap().success(), "cpio -o");
}

/// The loader initramfs without the image: one gzip'd newc member, zero-padded to 512 bytes
/// (the kernel looks for a following member only at an aligned offset).
fn build_loader(rootimg: &Path, work: &Path) -> PathBuf {
    let stage = work.join("loader");
    for d in ["bin", "dev", "proc", "sys", "newroot", "lib/modules"] {
        std::fs::create_dir_all(stage.join(d)).unwrap();
    }
    std::os::unix::fs::symlink("bin", stage.join("sbin")).unwrap();
    std::fs::copy("/bin/busybox", stage.join("bin/busybox")).unwrap();
    let applets = run("/bin/busybox", &["--list"]);
    assert_eq!(applets.code, 0, "{applets:?}");
    for a in applets.stdout.lines().filter(|a| *a != "busybox") {
        std::os::unix::fs::symlink("busybox", stage.join("bin").join(a)).unwrap();
    }
    // GNU tar from the image (busybox tar has no --xattrs-include) with its libraries.
    std::fs::copy(in_image(rootimg, "/usr/bin/tar"), stage.join("bin/gnutar")).unwrap();
    let ldd = run(
        "chroot",
        &[&rootimg.display().to_string(), "ldd", "/usr/bin/tar"],
    );
    assert_eq!(ldd.code, 0, "ldd in the image: {ldd:?}");
    for l in ldd.stdout.lines() {
        let lib = match l.split_once("=>") {
            Some((_, r)) => r.split_whitespace().next(),
            None => l.split_whitespace().next().filter(|p| p.starts_with('/')),
        };
        if let Some(lib) = lib.filter(|p| p.starts_with('/')) {
            let to = stage.join(lib.trim_start_matches('/'));
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            std::fs::copy(in_image(rootimg, lib), &to).unwrap();
        }
    }
    let moddir = rootimg.join("lib/modules").join(kernel_version(rootimg));
    let mut order = String::new();
    for m in module_closure(&moddir, &["loop", "squashfs", "overlay"]) {
        let from = moddir.join(&m);
        let file = m.rsplit('/').next().unwrap();
        let plain = file.split(".ko").next().unwrap().to_string() + ".ko";
        let to = stage.join("lib/modules").join(&plain);
        match file.rsplit_once(".ko.") {
            // Compressed modules (newer kernels): busybox insmod wants them plain.
            Some((_, ext)) => {
                let prog = if ext == "zst" { "zstd" } else { "xz" };
                let mut c = Command::new(prog);
                c.arg("-dc").arg(&from).stdout(File::create(&to).unwrap());
                let o = Output::of(c);
                assert_eq!(o.code, 0, "{prog} -dc {m}: {o:?}");
            }
            None => {
                std::fs::copy(&from, &to).unwrap();
            }
        }
        order.push_str(&plain);
        order.push('\n');
    }
    std::fs::write(stage.join("lib/modules/order"), order).unwrap();
    std::fs::write(stage.join("init"), LOADER_INIT).unwrap();
    std::fs::set_permissions(
        stage.join("init"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    nix::sys::stat::mknod(
        &stage.join("dev/console"),
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o600),
        nix::sys::stat::makedev(5, 1),
    )
    .unwrap();
    let find = run("find", &[&stage.display().to_string(), "-mindepth", "1"]);
    assert_eq!(find.code, 0, "{find:?}");
    let prefix = format!("{}/", stage.display());
    let names: String = find
        .stdout
        .lines()
        .map(|l| format!("{}\n", l.strip_prefix(&prefix).unwrap_or(l)))
        .collect();
    let loader = work.join("loader.img");
    cpio_of(
        &stage,
        names.as_bytes(),
        File::create(&loader).unwrap(),
        Some("gzip"),
    );
    let len = std::fs::metadata(&loader).unwrap().len();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&loader)
        .unwrap();
    f.set_len(len.div_ceil(512) * 512).unwrap();
    loader
}

/// The loader with `archive` appended as a second, uncompressed member (`/rootimg.<fmt>`).
fn initrd_with(loader: &Path, archive: &Path, work: &Path) -> PathBuf {
    let name = archive.file_name().unwrap().to_string_lossy().into_owned();
    let out = work.join(format!("initrd-{name}"));
    std::fs::copy(loader, &out).unwrap();
    let f = std::fs::OpenOptions::new().append(true).open(&out).unwrap();
    cpio_of(
        archive.parent().unwrap(),
        format!("{name}\n").as_bytes(),
        f,
        None,
    );
    out
}

/// How one QEMU run ended.
struct Boot {
    /// QEMU ended by itself (poweroff, or reboot/panic turned into an exit by -no-reboot).
    exited: bool,
    /// Wall time from start to exit or kill.
    secs: f64,
    /// The serial console.
    log: String,
    /// QEMU's own stderr/stdout.
    qemu: String,
}

/// Boots `kernel` + `initrd` with software emulation, no network, the console on a serial
/// log file; kills QEMU (SIGKILL) after `timeout`, or as soon as `enough` holds for the log.
fn qemu(
    work: &Path,
    tag: &str,
    kernel: &Path,
    initrd: &Path,
    append: &str,
    timeout: Duration,
    enough: Option<&dyn Fn(&str) -> bool>,
) -> Boot {
    let log = work.join(format!("serial-{tag}.log"));
    let own = work.join(format!("qemu-{tag}.log"));
    let _slot = SLOTS.take();
    let t = Instant::now();
    let mut child = Command::new("qemu-system-x86_64")
        .args([
            "-machine", "q35", "-accel", "tcg", "-smp", "2", "-m", GUEST_MIB,
        ])
        .args([
            "-nodefaults",
            "-nic",
            "none",
            "-display",
            "none",
            "-monitor",
            "none",
        ])
        .args(["-no-reboot", "-serial"])
        .arg(format!("file:{}", log.display()))
        .arg("-kernel")
        .arg(kernel)
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", append])
        .stdin(Stdio::null())
        .stdout(File::create(&own).unwrap())
        .stderr(File::create(work.join(format!("qemu-{tag}.err"))).unwrap())
        .spawn()
        .unwrap();
    let read = || String::from_utf8_lossy(&std::fs::read(&log).unwrap_or_default()).into_owned();
    let exited = loop {
        if child.try_wait().unwrap().is_some() {
            break true;
        }
        if t.elapsed() > timeout || enough.is_some_and(|f| f(&read())) {
            let _ = child.kill();
            let _ = child.wait();
            break false;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    let secs = t.elapsed().as_secs_f64();
    if let Some(keep) = std::env::var_os(KEEP_ENV) {
        // The developer shortcut keeps the last console logs for reading.
        let logs = Path::new(&keep).join("boot-logs");
        let _ = std::fs::create_dir_all(&logs);
        let _ = std::fs::copy(&log, logs.join(log.file_name().unwrap()));
    }
    let qemu = std::fs::read_to_string(&own).unwrap_or_default()
        + &std::fs::read_to_string(work.join(format!("qemu-{tag}.err"))).unwrap_or_default();
    Boot {
        exited,
        secs,
        log: read(),
        qemu,
    }
}

/// The last lines of a serial log, for failure messages.
fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// A `key=value` number from the marker-like line starting with `prefix`.
fn uptime_after(log: &str, prefix: &str) -> Option<f64> {
    let line = log.lines().find_map(|l| l.find(prefix).map(|i| &l[i..]))?;
    line.split_whitespace()
        .find_map(|w| w.strip_prefix("uptime="))?
        .parse()
        .ok()
}

/// The boot packs: the example's exlist plus [`BOOT_EXLIST`] in linuximage.exlist, each
/// format packed by packimage and moved out of rootimgdir (a pack removes the other
/// rootimg.* there). With [`KEEP_ENV`] set, packs from an earlier run are reused.
fn set_boot_exlist(f: &Fixture) {
    let list = f.d.write("lists/boot.exlist", BOOT_EXLIST);
    let example =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/debian-image/compute.exlist");
    let mut defs = f.d.read_defs();
    let keys = xcat_imaged::protocol::Row::from([("imagename".into(), NAME.into())]);
    let values = xcat_imaged::protocol::Row::from([(
        "exlist".to_string(),
        format!("{},{}", example.display(), list.display()),
    )]);
    defs.table_set("linuximage", &keys, &values).unwrap();
    // Replaced by a rename: other tests read the file meanwhile.
    let tmp = f.d.path().join("defs.stanza.boot");
    std::fs::write(&tmp, defs.to_stanza()).unwrap();
    std::fs::rename(&tmp, f.d.defs_path()).unwrap();
}

fn pack(f: &Fixture, fmt: &Format, packs: &Path) -> (PathBuf, Option<f64>) {
    let to = packs.join(fmt.file);
    if std::env::var_os(KEEP_ENV).is_some() && to.is_file() {
        return (to, None);
    }
    let mut args = vec![NAME];
    args.extend_from_slice(fmt.args);
    let t = Instant::now();
    let o = f.d.run("packimage", &args);
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(o.code, 0, "packimage {args:?}: {o:?}");
    std::fs::rename(f.dir.join(fmt.file), &to).unwrap();
    (to, Some(secs))
}

#[test]
#[allow(clippy::print_stderr)]
fn example_image_boots_from_every_packed_format() {
    let Some(f) = fixture() else { return };
    if let Some(why) = cannot_boot() {
        skip(&why);
        return;
    }
    let started = Instant::now();
    let rootimg = f.dir.join("rootimg");
    let kernel = f.dir.join("kernel");
    let work = tempfile::Builder::new()
        .prefix("boot")
        .tempdir_in(f.d.path())
        .unwrap();
    let loader = build_loader(&rootimg, work.path());
    set_boot_exlist(f);
    let packs = f.d.path().join("packs/boot");
    std::fs::create_dir_all(&packs).unwrap();
    let tok = token();
    let append = format!("{APPEND} boottest.token={tok}");
    let results = std::thread::scope(|s| {
        let mut running = Vec::new();
        for fmt in FORMATS {
            let (archive, pack_secs) = pack(f, fmt, &packs);
            let size = std::fs::metadata(&archive).unwrap().len();
            let (work, loader, kernel, append) = (work.path(), &loader, &kernel, &append);
            running.push(s.spawn(move || {
                let initrd = initrd_with(loader, &archive, work);
                let boot = qemu(work, fmt.file, kernel, &initrd, append, BOOT_TIMEOUT, None);
                let _ = std::fs::remove_file(initrd);
                (fmt, pack_secs, size, boot)
            }));
        }
        running
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect::<Vec<_>>()
    });
    let mut failures = Vec::new();
    for (fmt, pack_secs, size, boot) in &results {
        let reached = format!("BOOTTEST_REACHED token={tok} rootfs=");
        let caps = format!(
            "BOOTTEST_CAPS token={tok} caps={}",
            if fmt.keeps_caps {
                "cap_net_raw=ep"
            } else {
                "none"
            }
        );
        let rootfs = boot
            .log
            .lines()
            .find_map(|l| l.find(&reached).map(|i| &l[i + reached.len()..]))
            .and_then(|r| r.split_whitespace().next())
            .unwrap_or("");
        eprintln!(
            "boot {:16} {:>5.1} MB  pack {:>6}  loader {:>5} s  unpacked {:>5} s  marker {:>5} s  wall {:>5.1} s  rootfs {rootfs}",
            fmt.file,
            *size as f64 / 1e6,
            pack_secs.map_or("reused".to_string(), |s| format!("{s:.1} s")),
            uptime_after(&boot.log, "LOADER_START").map_or("-".into(), |u| format!("{u:.1}")),
            uptime_after(&boot.log, "LOADER_UNPACKED").map_or("-".into(), |u| format!("{u:.1}")),
            uptime_after(&boot.log, "BOOTTEST_REACHED").map_or("-".into(), |u| format!("{u:.1}")),
            boot.secs,
        );
        let mut why = Vec::new();
        if !boot.exited {
            why.push(format!("killed after {:.0} s", boot.secs));
        }
        if boot.log.contains("LOADER_FAIL") {
            why.push("the loader failed".into());
        }
        if boot.log.contains("Initramfs unpacking failed") {
            why.push("bad initramfs".into());
        }
        if boot.log.contains("Kernel panic") {
            why.push("kernel panic".into());
        }
        if rootfs.is_empty() {
            why.push("no marker: the image's init did not run the unit".into());
        } else if !rootfs.split(',').any(|t| t == fmt.rootfs) {
            why.push(format!("root file system {rootfs}, not {}", fmt.rootfs));
        }
        if !boot.log.contains(&caps) {
            why.push(format!("no '{caps}'"));
        }
        if !boot.log.contains("reboot: Power down") {
            why.push("no clean poweroff".into());
        }
        if !why.is_empty() {
            failures.push(format!(
                "{}: {}\n--- serial log (end) ---\n{}\n--- qemu ---\n{}",
                fmt.file,
                why.join("; "),
                tail(&boot.log),
                boot.qemu
            ));
        }
    }
    eprintln!(
        "boot test: {} formats in {:.0} s",
        results.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
#[allow(clippy::print_stderr)]
fn example_initrd_stateless_starts_dracut() {
    let Some(f) = fixture() else { return };
    if let Some(why) = cannot_boot() {
        skip(&why);
        return;
    }
    let work = tempfile::Builder::new()
        .prefix("boot-dracut")
        .tempdir_in(f.d.path())
        .unwrap();
    let seen = |log: &str| log.contains("dracut");
    let boot = qemu(
        work.path(),
        "initrd-stateless",
        &f.dir.join("kernel"),
        &f.dir.join("initrd-stateless.gz"),
        APPEND,
        Duration::from_secs(600),
        Some(&seen),
    );
    eprintln!(
        "boot initrd-stateless.gz: dracut after {:.1} s: {}",
        boot.secs,
        boot.log.lines().find(|l| seen(l)).unwrap_or("")
    );
    assert!(
        seen(&boot.log),
        "no dracut on the console after {:.0} s (exited: {})\n{}\n--- qemu ---\n{}",
        boot.secs,
        boot.exited,
        tail(&boot.log),
        boot.qemu
    );
}
