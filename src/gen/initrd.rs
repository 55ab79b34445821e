//! Kernel and initrds: `<rootimgdir>/kernel`, `initrd-stateless.gz` and `initrd-statelite.gz`.
//!
//! * Kernel version: `-k` / `linuximage.kernelver`, else the highest version among
//!   `boot/vmlinuz-*`, else among `lib/modules/*`, compared as versions (xCAT takes the last
//!   glob match, so 5.10 loses to 5.9, and falls back to the build host's `uname -r`: spec §6
//!   item 14; here no kernel in the image is an error).
//! * Network drivers: `-n` as given, or the family defaults; each with its dependencies from
//!   `modules.dep` (compressed modules too). A driver the kernel does not have is skipped
//!   with a note (built-in ones silently).
//! * dracut runs inside the image (the sandbox gives it proc, sys and dev), without host-only
//!   mode, once per mode, with the module list, drivers and file systems on its command line:
//!   the image's `/etc/dracut.conf` is left alone (xCAT overwrites it each run: item 8).
//!   xCAT's dracut module comes from `<xcatroot>/share/xcat/netboot/<family>/dracut` (for
//!   Debian, which has none, ubuntu's) into `modules.d/97xcat`, with exactly the files of the
//!   mode being built; without an xCAT installation only dracut's stock modules are used, and
//!   the output says so.
//! * Compression: gzip level 6 (pigz when the image has it); dracut's default `-9` costs
//!   seven times the time for 1 % (measured: 66 s against 9 s for a 177 MB initramfs).
//! * Outputs are written beside their final name and renamed over it (item 8), mode 0644.
//!
//! It knows the kernel and dracut layout of an image; not tables or the host.

use super::sandbox::Sandbox;
use super::tree::{Kind, Tree};
use super::{step_failure, version_cmp, Build, GenError, GenResult, Runner};
use crate::pack::publish::Staged;
use crate::proc::Step;
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};

/// The two initrd modes, in xCAT ubuntu's order.
pub const MODES: [&str; 2] = ["statelite", "stateless"];

/// The kernel genimage uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kernel {
    /// `uname -r` of it.
    pub version: String,
    /// Its image file, relative to the rootimg.
    pub file: String,
}

/// Picks the kernel: `wanted`, else the highest installed version.
pub fn choose_kernel(tree: &Tree, wanted: Option<&str>) -> Result<Kernel, String> {
    let version = match wanted {
        Some(k) => k.to_string(),
        None => {
            let io = |e: io::Error| e.to_string();
            let mut found: Vec<String> = tree
                .list("boot")
                .map_err(io)?
                .into_iter()
                .filter_map(|n| n.strip_prefix("vmlinuz-").map(str::to_string))
                .collect();
            if found.is_empty() {
                found = tree.list("lib/modules").map_err(io)?;
            }
            found.sort_by(|a, b| version_cmp(a, b));
            found.pop().ok_or_else(|| {
                format!(
                    "couldn't find a kernel in {}; add the kernel package (linux-image-amd64 on Debian) to the pkglist",
                    tree.shown("boot")
                )
            })?
        }
    };
    for f in [
        format!("boot/vmlinux-{version}"),
        format!("boot/vmlinuz-{version}"),
        format!("boot/image-{version}"),
        format!("lib/modules/{version}/vmlinuz"),
    ] {
        if tree.open_file(&f).is_ok() {
            return Ok(Kernel { version, file: f });
        }
    }
    Err(format!(
        "couldn't find the kernel file matched {version} in {}",
        tree.shown("boot")
    ))
}

/// Copies `from` (opened in the tree) to `dir/name` through a temp file and a rename.
fn publish_from(mut from: std::fs::File, dir: &Path, name: &str) -> io::Result<PathBuf> {
    let mut staged = Staged::create(dir, name)?;
    io::copy(&mut from, staged.file())?;
    staged.file().sync_all()?;
    staged.commit(0o644)
}

/// Writes the kernel to `<destdir>/kernel`.
pub fn install_kernel(tree: &Tree, k: &Kernel, destdir: &Path) -> io::Result<PathBuf> {
    publish_from(tree.open_file(&k.file)?, destdir, "kernel")
}

/// The network drivers a family uses when `-n` is not given (ubuntu genimage).
pub fn default_drivers(arch: &str) -> Vec<String> {
    let list: &[&str] = match arch {
        "x86" | "x86_64" => &[
            "tg3",
            "bnx2",
            "bnx2x",
            "e1000",
            "e1000e",
            "igb",
            "mlx_en",
            "virtio_net",
            "overlay",
        ],
        "ppc64el" | "ppc64le" => &[
            "tg3",
            "bnx2",
            "bnx2x",
            "e1000",
            "e1000e",
            "igb",
            "ibmveth",
            "ehea",
            "mlx_en",
            "mlx4_en",
            "virtio_net",
            "overlay",
        ],
        "ppc64" => &["e1000", "e1000e", "igb", "ibmveth", "ehea"],
        "s390x" => &["qdio", "ccwgroup"],
        _ => &["virtio_net", "overlay"],
    };
    list.iter().map(|s| s.to_string()).collect()
}

/// The network drivers of a build: rh and sles always add their per-arch defaults to `-n`
/// (sles also `af_packet`); the Debian family uses its defaults only without `-n`.
pub fn family_drivers(family: &str, arch: &str, given: Option<&[String]>) -> Vec<String> {
    let rh = super::is_rh_family(family);
    let sles = super::is_sles_family(family);
    if !rh && !sles {
        return given.map_or_else(|| default_drivers(arch), <[String]>::to_vec);
    }
    let x86 = arch == "x86" || arch == "x86_64";
    let defaults: &[&str] = match (rh, arch) {
        (true, _) if x86 => &[
            "tg3",
            "bnx2",
            "bnx2x",
            "e1000",
            "e1000e",
            "igb",
            "mlx_en",
            "virtio_net",
            "be2net",
        ],
        (true, "aarch64") => &[
            "tg3",
            "bnx2",
            "bnx2x",
            "e1000e",
            "igb",
            "mlx_en",
            "virtio_net",
        ],
        (true, "ppc64" | "ppc64le") => &["e1000", "e1000e", "igb", "ibmveth", "ehea"],
        (_, "s390x") => &["qdio", "ccwgroup"],
        (false, _) if x86 => &[
            "tg3",
            "bnx2",
            "bnx2x",
            "e1000",
            "e1000e",
            "virtio_net",
            "virtio_balloon",
            "igb",
            "mlx4_en",
            "be2net",
        ],
        (false, "ppc64" | "ppc64le") => {
            &["tg3", "e1000", "e1000e", "igb", "ibmveth", "ehea", "be2net"]
        }
        _ => &["virtio_net"],
    };
    let mut out: Vec<String> = Vec::new();
    if sles {
        out.push("af_packet".into());
    }
    // rh adds the root file systems' drivers too.
    let fs: &[&str] = if rh { &["ext3", "ext4"] } else { &[] };
    for d in given
        .unwrap_or_default()
        .iter()
        .map(String::as_str)
        .chain(defaults.iter().copied())
        .chain(fs.iter().copied())
    {
        let d = d.trim_end_matches(".ko");
        if !out.iter().any(|o| o == d) {
            out.push(d.to_string());
        }
    }
    out
}

/// A module's name from its path in modules.dep (`kernel/a/b/e1000.ko.xz` → `e1000`).
fn module_name(path: &str) -> String {
    let base = path.rsplit('/').next().unwrap_or(path);
    let base = [".gz", ".xz", ".zst"]
        .iter()
        .find_map(|s| base.strip_suffix(s))
        .unwrap_or(base);
    base.strip_suffix(".ko").unwrap_or(base).to_string()
}

/// The drivers with their dependencies: (all, added as dependencies, not in the kernel).
/// Names compare with `-` and `_` alike, as modprobe does.
pub fn driver_closure(
    modules_dep: &str,
    builtin: &str,
    wanted: &[String],
) -> (Vec<String>, Vec<String>, Vec<String>) {
    let norm = |s: &str| s.replace('-', "_");
    let mut deps: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut real: BTreeMap<String, String> = BTreeMap::new();
    for line in modules_dep.lines() {
        let Some((m, d)) = line.split_once(':') else {
            continue;
        };
        let name = module_name(m.trim());
        real.insert(norm(&name), name.clone());
        deps.insert(norm(&name), d.split_whitespace().map(module_name).collect());
    }
    let builtin: BTreeSet<String> = builtin
        .lines()
        .map(|l| norm(&module_name(l.trim())))
        .collect();
    let mut all: Vec<String> = Vec::new();
    let mut added = Vec::new();
    let mut missing = Vec::new();
    let mut seen = BTreeSet::new();
    let mut todo: Vec<(String, bool)> = wanted
        .iter()
        .map(|w| (w.trim_end_matches(".ko").to_string(), false))
        .filter(|(w, _)| !w.is_empty() && w != "allupdate")
        .rev()
        .collect();
    while let Some((w, is_dep)) = todo.pop() {
        let k = norm(&w);
        if !seen.insert(k.clone()) {
            continue;
        }
        match deps.get(&k) {
            Some(d) => {
                let name = real.get(&k).cloned().unwrap_or(w);
                if is_dep {
                    added.push(name.clone());
                }
                all.push(name);
                for dep in d.iter().rev() {
                    todo.push((dep.clone(), true));
                }
            }
            None if builtin.contains(&k) => {}
            None => missing.push(w),
        }
    }
    (all, added, missing)
}

/// dracut's version as a number, as xCAT compares it (`057-70.git20240819.el9` → 57,
/// `059-4` → 59, `105-1` → 105).
pub fn dracut_number(version: &str) -> Option<u32> {
    let d: String = version.chars().take_while(|c| c.is_ascii_digit()).collect();
    d.parse().ok()
}

/// How xCAT's module directory is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// One directory: `check`, `install.netboot` / `install.statelite`, scripts.
    Classic,
    /// rh `dracut_105`: a `module-setup.sh` module per mode in `stateless/`, `statelite/`.
    PerMode,
}

/// The rh / sles module directory names for a dracut version, best first (xCAT picks
/// `dracut_105` ≥ 105, `dracut_047` ≥ 047, `dracut_033` ≥ 033, else `dracut`; sles ships
/// `dracut_033` and `dracut` only). Lower ones follow as fallbacks.
fn rpm_module_dirs(dracut: Option<u32>) -> Vec<&'static str> {
    let n = dracut.unwrap_or(0);
    ["dracut_105", "dracut_047", "dracut_033", "dracut"]
        .into_iter()
        .zip([105, 47, 33, 0])
        .filter(|(_, min)| n >= *min)
        .map(|(d, _)| d)
        .collect()
}

/// Where xCAT's dracut module for this family is, if the xCAT installation has one, and
/// its layout. rh and sles choose the directory by the image's dracut version (`None`:
/// unknown, the oldest).
pub fn xcat_module(
    share: Option<&Path>,
    family: &str,
    dracut: Option<u32>,
) -> Option<(PathBuf, Layout)> {
    let share = share?;
    if !super::is_rh_family(family) && !super::is_sles_family(family) {
        return xcat_module_source(Some(share), family).map(|d| (d, Layout::Classic));
    }
    let mut fams = vec![family];
    if super::is_rh_family(family) && family != "rh" {
        fams.push("rh");
    }
    for d in rpm_module_dirs(dracut) {
        for f in &fams {
            let dir = share.join(f).join(d);
            if d == "dracut_105" {
                if dir.join("stateless/module-setup.sh").is_file() {
                    return Some((dir, Layout::PerMode));
                }
            } else if dir.join("check").is_file() {
                return Some((dir, Layout::Classic));
            }
        }
    }
    None
}

/// Where xCAT's dracut module for a Debian-family image is, if the xCAT installation has
/// one (rh and sles: [`xcat_module`]).
pub fn xcat_module_source(share: Option<&Path>, family: &str) -> Option<PathBuf> {
    let share = share?;
    let mut candidates = vec![share.join(family).join("dracut")];
    if family == "debian" {
        // xCAT ships no Debian dracut module; its ubuntu one is the Debian-family module.
        candidates.push(share.join("ubuntu/dracut"));
    }
    candidates.into_iter().find(|d| d.join("check").is_file())
}

/// The files of xCAT's module for a mode: (source name, name in the module directory).
fn module_files(mode: &str, layout: Layout, rpm: bool) -> Vec<(&'static str, &'static str)> {
    if layout == Layout::PerMode {
        let mut v = vec![
            ("installkernel", "installkernel"),
            ("module-setup.sh", "module-setup.sh"),
            ("xcat-cmdline.sh", "xcat-cmdline.sh"),
            ("xcatroot", "xcatroot"),
            ("xcat-updateflag", "xcat-updateflag"),
        ];
        if mode == "statelite" {
            v.extend([
                ("xcat-premount.sh", "xcat-premount.sh"),
                ("xcat-prepivot.sh", "xcat-prepivot.sh"),
            ]);
        }
        return v;
    }
    let mut v = vec![("check", "check"), ("module-setup.sh", "module-setup.sh")];
    if mode == "statelite" {
        v.extend([
            ("install.statelite", "install"),
            ("xcat-prepivot.sh", "xcat-prepivot.sh"),
        ]);
        if rpm {
            v.push(("xcat-premount.sh", "xcat-premount.sh"));
        }
    } else {
        v.extend([
            ("install.netboot", "install"),
            ("xcat-cmdline.sh", "xcat-cmdline.sh"),
            ("xcatroot", "xcatroot"),
            ("installkernel", "installkernel"),
        ]);
    }
    v
}

/// Puts exactly the files of `mode` into the image's `97xcat` module directory (Debian
/// family; [`install_module_in`] for the others).
pub fn install_module(
    tree: &Tree,
    modules_d: &str,
    src: &Path,
    mode: &str,
    prinic: Option<&str>,
) -> io::Result<()> {
    let m = ModuleInstall {
        src,
        layout: Layout::Classic,
        dir_name: "97xcat",
        rpm: false,
        updateflag: None,
    };
    install_module_in(tree, modules_d, &m, mode, prinic)
}

/// What [`install_module_in`] installs.
pub struct ModuleInstall<'a> {
    /// xCAT's module directory.
    pub src: &'a Path,
    /// Its layout.
    pub layout: Layout,
    /// `97xcat` (Debian family, sles) or `98xcat` (rh).
    pub dir_name: &'a str,
    /// rh / sles file set (the statelite premount hook).
    pub rpm: bool,
    /// `<installdir>/postscripts/updateflag.awk`, installed as `xcat-updateflag` (classic
    /// rh / sles layout), when it exists.
    pub updateflag: Option<&'a Path>,
}

/// Puts exactly the files of `mode` into the image's xCAT module directory, with their
/// modes; `PRINIC=<nic>` appended to the classic `xcat-cmdline.sh` (the rh `dracut_105`
/// module does without, as in xCAT).
pub fn install_module_in(
    tree: &Tree,
    modules_d: &str,
    m: &ModuleInstall,
    mode: &str,
    prinic: Option<&str>,
) -> io::Result<()> {
    let src_dir = match m.layout {
        Layout::Classic => m.src.to_path_buf(),
        Layout::PerMode => m.src.join(mode),
    };
    let src = src_dir.as_path();
    let dir = format!("{modules_d}/{}", m.dir_name);

    tree.mkdir_all(&dir, 0o755)?;
    for old in tree.list(&dir)? {
        let p = format!("{dir}/{old}");
        if tree.kind(&p)? != Some(Kind::Dir) {
            tree.remove(&p)?;
        }
    }
    let mut files: Vec<(PathBuf, &str)> = module_files(mode, m.layout, m.rpm)
        .into_iter()
        .map(|(from, to)| (src.join(from), to))
        .collect();
    if m.layout == Layout::Classic {
        if let Some(u) = m.updateflag.filter(|u| u.is_file()) {
            files.push((u.to_path_buf(), "xcat-updateflag"));
        }
    }
    for (f, to) in files {
        let from = f.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if m.layout == Layout::Classic && from == "module-setup.sh" && !f.is_file() {
            continue;
        }
        let md = std::fs::metadata(&f).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("xCAT's dracut module file {} is missing: {e}", f.display()),
            )
        })?;
        let mode_bits = std::os::unix::fs::PermissionsExt::mode(&md.permissions()) & 0o7777;
        let mut data = std::fs::read(&f)?;
        if from == "xcat-cmdline.sh" && m.layout == Layout::Classic {
            if let Some(nic) = prinic {
                if !data.is_empty() && !data.ends_with(b"\n") {
                    data.push(b'\n');
                }
                data.extend_from_slice(format!("PRINIC={nic}\n").as_bytes());
            }
        }
        tree.write(&format!("{dir}/{to}"), &data, mode_bits)?;
    }
    Ok(())
}

/// Everything the initrd phase works with.
pub struct InitrdPlan {
    /// The kernel.
    pub kernel: Kernel,
    /// `add_drivers`.
    pub drivers: Vec<String>,
    /// `usr/lib/dracut/modules.d` or `usr/share/dracut/modules.d`.
    pub modules_d: String,
    /// xCAT's module, if any.
    pub xcat_module: Option<PathBuf>,
    /// Its layout.
    pub layout: Layout,
    /// Its directory in `modules_d`: `97xcat`, `98xcat` for rh.
    pub module_dir: &'static str,
    /// dracut's module list (`--modules`), `xcat` first when xCAT's module is used.
    pub module_list: Vec<String>,
    /// The compressor command line.
    pub compress: String,
}

impl InitrdPlan {
    /// dracut's `--modules` list.
    pub fn modules(&self) -> String {
        self.module_list.join(" ")
    }

    /// dracut's arguments for one mode, writing `out` (a path inside the image).
    pub fn dracut_args(&self, mode: &str, out: &str) -> Vec<String> {
        let mut a = vec![
            "--force".to_string(),
            "--no-hostonly".into(),
            "--modules".into(),
            self.modules(),
            "--add-drivers".into(),
            self.drivers.join(" "),
            "--compress".into(),
            self.compress.clone(),
        ];
        if mode == "statelite" {
            a.extend(["--filesystems".to_string(), "nfs".to_string()]);
        }
        a.extend([out.to_string(), self.kernel.version.clone()]);
        a
    }
}

/// dracut's module list for the family, as xCAT's scripts write `dracutmodules+=`: the
/// Debian family `nfs base <network-legacy|network> kernel-modules`; rh `nfs base network
/// kernel-modules syslog` (dracut ≥ 105: also `network-manager dbus dbus-broker`; EL ≥ 10
/// `network-manager`) plus whichever of `systemd systemd-initrd dracut-systemd fadump
/// kernel-modules-extra` the image has; sles `nfs base network kernel-modules lvm [fadump]`.
/// Modules beyond the first four are listed only when the image's dracut has them (xCAT
/// lists some unconditionally, and dracut fails on a missing one). `xcat` leads with xCAT's
/// module.
pub fn module_list(
    b: &Build,
    available: &[String],
    legacy_net: bool,
    dracut: Option<u32>,
    xcat: bool,
) -> Vec<String> {
    let has = |m: &str| available.iter().any(|a| a == m);
    let mut v: Vec<&str> = Vec::new();
    if xcat {
        v.push("xcat");
    }
    let rh = super::is_rh_family(&b.family);
    let sles = super::is_sles_family(&b.family);
    if !rh && !sles {
        v.extend([
            "nfs",
            "base",
            if legacy_net {
                "network-legacy"
            } else {
                "network"
            },
            "kernel-modules",
        ]);
        return v.into_iter().map(str::to_string).collect();
    }
    v.extend(["nfs", "base", "network"]);
    let mut optional: Vec<&str> = Vec::new();
    if rh {
        let el = super::dnf::release(&b.osver).map_or(0, |(m, _)| m);
        if dracut.unwrap_or(0) >= 105 {
            optional.extend([
                "network-manager",
                "kernel-modules",
                "syslog",
                "dbus",
                "dbus-broker",
            ]);
        } else {
            optional.extend(["kernel-modules", "syslog"]);
            if el >= 10 && !b.osver.starts_with("fedora") {
                optional.push("network-manager");
            }
        }
        optional.extend([
            "systemd",
            "systemd-initrd",
            "dracut-systemd",
            "fadump",
            "kernel-modules-extra",
        ]);
    } else {
        optional.extend(["kernel-modules", "lvm", "fadump"]);
    }
    for m in optional {
        if m == "kernel-modules" || has(m) {
            v.push(m);
        }
    }
    v.into_iter().map(str::to_string).collect()
}

/// The dracut modules an image has (`modules.d/<NN><name>` → `name`).
fn available_modules(tree: &Tree, modules_d: &str) -> Vec<String> {
    tree.list(modules_d)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|n| {
            let rest = n.trim_start_matches(|c: char| c.is_ascii_digit());
            (rest.len() < n.len() && !rest.is_empty()).then(|| rest.to_string())
        })
        .collect()
}

/// Resolves kernel, drivers and dracut layout of the image (no side effect). `dracut` is
/// the image's dracut version, if known (it chooses xCAT's rh / sles module directory).
pub fn plan(
    tree: &Tree,
    b: &Build,
    dracut: Option<&str>,
    notes: &mut Vec<String>,
) -> Result<InitrdPlan, String> {
    let kernel = choose_kernel(tree, b.kernelver.as_deref())?;
    let modules_d = if tree.is_dir("usr/lib/dracut/modules.d") {
        "usr/lib/dracut/modules.d"
    } else if tree.is_dir("usr/share/dracut/modules.d") {
        "usr/share/dracut/modules.d"
    } else {
        return Err(format!(
            "{} has no dracut; add dracut and dracut-network to the pkglist (the legacy non-dracut initrd is not supported by this engine)",
            tree.root().display()
        ));
    };
    let wanted = family_drivers(&b.family, &b.arch, b.netdrivers.as_deref());
    let read = |p: String| {
        tree.read(&p)
            .ok()
            .flatten()
            .map(|d| String::from_utf8_lossy(&d).into_owned())
            .unwrap_or_default()
    };
    let dep = read(format!("lib/modules/{}/modules.dep", kernel.version));
    let builtin = read(format!("lib/modules/{}/modules.builtin", kernel.version));
    let (drivers, added, missing) = driver_closure(&dep, &builtin, &wanted);
    for a in added {
        notes.push(format!("Added {a} as an autodetected dependency"));
    }
    if !missing.is_empty() {
        notes.push(format!(
            "Network drivers not in kernel {} (skipped): {}",
            kernel.version,
            missing.join(" ")
        ));
    }
    let legacy_net = tree.is_dir(&format!("{modules_d}/35network-legacy"))
        && tree.kind("usr/sbin/wicked").ok().flatten().is_none();
    let dracut_n = dracut.and_then(dracut_number);
    let module = xcat_module(b.netboot_share.as_deref(), &b.family, dracut_n);
    let available = available_modules(tree, modules_d);
    let pigz = ["usr/bin/pigz", "bin/pigz"]
        .iter()
        .any(|p| tree.open_file(p).is_ok());
    Ok(InitrdPlan {
        kernel,
        drivers,
        modules_d: modules_d.to_string(),
        module_list: module_list(b, &available, legacy_net, dracut_n, module.is_some()),
        layout: module.as_ref().map_or(Layout::Classic, |(_, l)| *l),
        module_dir: if super::is_rh_family(&b.family) {
            "98xcat"
        } else {
            "97xcat"
        },
        xcat_module: module.map(|(d, _)| d),
        compress: if pigz {
            "pigz -6 -n".into()
        } else {
            "gzip -6 -n".into()
        },
    })
}

/// Builds both initrds and publishes them into `destdir`. The image's `/tmp` holds dracut's
/// output only while it runs.
pub fn build(r: &mut Runner, b: &Build, tree: &Tree, p: &InitrdPlan) -> GenResult<Vec<PathBuf>> {
    let sandbox = Sandbox::new(tree.root())?;
    sandbox.prepare()?;
    let shown_root = tree.root().display().to_string();
    let (shown, step) = in_image(
        &sandbox,
        &shown_root,
        "depmod",
        vec![p.kernel.version.clone()],
    );
    r.run(&shown, &step, |e| step_failure("depmod failed", e))?;
    // What a killed earlier run left in the image's /tmp.
    for n in tree.list("tmp").unwrap_or_default() {
        if n.starts_with("xcat-imaged-initrd-") {
            let _ = tree.remove(&format!("tmp/{n}"));
        }
    }
    let mut out = Vec::new();
    for mode in MODES {
        r.check()?;
        if let Some(src) = &p.xcat_module {
            let updateflag = b.installdir.join("postscripts/updateflag.awk");
            let rpm = super::is_rh_family(&b.family) || super::is_sles_family(&b.family);
            let m = ModuleInstall {
                src,
                layout: p.layout,
                dir_name: p.module_dir,
                rpm,
                updateflag: rpm.then_some(updateflag.as_path()),
            };
            install_module_in(tree, &p.modules_d, &m, mode, b.nodebootif.as_deref())
                .map_err(|e| GenError::Failed(e.to_string()))?;
        }
        tree.mkdir_all("tmp", 0o1777)?;
        let name = format!("xcat-imaged-initrd-{mode}.{}.gz", std::process::id());
        let inside = format!("/tmp/{name}");
        let (shown, step) = in_image(
            &sandbox,
            &shown_root,
            "dracut",
            p.dracut_args(mode, &inside),
        );
        let res = r.run(&shown, &step, |e| {
            step_failure(
                &format!("Error: failed to generate the initial ramdisk for {mode}"),
                e,
            )
        });
        let published = res.and_then(|()| {
            sandbox.check_no_mounts().map_err(GenError::Failed)?;
            let f = tree.open_file(&format!("tmp/{name}"))?;
            publish_from(f, &b.destdir, &format!("initrd-{mode}.gz")).map_err(GenError::from)
        });
        let _ = tree.remove(&format!("tmp/{name}"));
        let path = published?;
        r.info(format!(
            "the initial ramdisk for {mode} is generated successfully."
        ));
        out.push(path);
    }
    if p.xcat_module.is_none() {
        // Nothing of ours stays in modules.d.
        let _ = tree.rmdir(&format!("{}/{}", p.modules_d, p.module_dir));
    }
    Ok(out)
}

fn in_image(sandbox: &Sandbox, root: &str, prog: &str, args: Vec<String>) -> (String, Step) {
    let step = Step::new(prog, args).isolated(sandbox.chroot());
    (format!("chroot {root} {}", step.display()), step)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEP: &str = "kernel/drivers/net/ethernet/intel/e1000e/e1000e.ko: kernel/drivers/ptp/ptp.ko kernel/drivers/pps/pps_core.ko\n\
kernel/drivers/ptp/ptp.ko: kernel/drivers/pps/pps_core.ko\n\
kernel/drivers/pps/pps_core.ko:\n\
kernel/drivers/net/virtio_net.ko.xz: kernel/net/core/failover.ko.xz kernel/drivers/net/net_failover.ko.xz\n\
kernel/drivers/net/net_failover.ko.xz: kernel/net/core/failover.ko.xz\n\
kernel/net/core/failover.ko.xz:\n\
kernel/fs/overlayfs/overlay.ko:\n";

    #[test]
    fn drivers_with_dependencies() {
        let wanted: Vec<String> = ["e1000e.ko", "virtio-net", "mlx_en", "tg3", "overlay"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let (all, added, missing) = driver_closure(
            DEP,
            "kernel/drivers/net/ethernet/broadcom/tg3.ko\n",
            &wanted,
        );
        assert_eq!(
            all,
            [
                "e1000e",
                "ptp",
                "pps_core",
                "virtio_net",
                "failover",
                "net_failover",
                "overlay"
            ]
        );
        assert_eq!(added, ["ptp", "pps_core", "failover", "net_failover"]);
        assert_eq!(missing, ["mlx_en"], "tg3 is built in: not missing");
    }

    #[test]
    fn drivers_per_family() {
        let n = vec!["mlx5_core".to_string(), "e1000".into()];
        assert_eq!(family_drivers("debian", "x86_64", Some(&n)), n);
        assert!(family_drivers("ubuntu", "x86_64", None).contains(&"overlay".to_string()));
        let rh = family_drivers("rh", "x86_64", Some(&n));
        assert_eq!(&rh[..3], ["mlx5_core", "e1000", "tg3"]);
        assert!(rh.contains(&"be2net".to_string()));
        assert_eq!(rh.iter().filter(|d| *d == "e1000").count(), 1);
        let sles = family_drivers("sles", "x86_64", None);
        assert_eq!(sles[0], "af_packet");
        assert!(sles.contains(&"virtio_balloon".to_string()));
    }

    #[test]
    fn kernels_by_version() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("boot")).unwrap();
        for v in ["5.9.0-1", "5.10.0-1"] {
            std::fs::write(t.path().join(format!("boot/vmlinuz-{v}")), v).unwrap();
        }
        let tree = Tree::open(t.path()).unwrap();
        let k = choose_kernel(&tree, None).unwrap();
        assert_eq!(
            k,
            Kernel {
                version: "5.10.0-1".into(),
                file: "boot/vmlinuz-5.10.0-1".into()
            }
        );
        assert_eq!(
            choose_kernel(&tree, Some("5.9.0-1")).unwrap().version,
            "5.9.0-1"
        );
        assert!(choose_kernel(&tree, Some("4.0"))
            .unwrap_err()
            .contains("matched 4.0"));
        let empty = tempfile::tempdir().unwrap();
        let tree = Tree::open(empty.path()).unwrap();
        assert!(choose_kernel(&tree, None)
            .unwrap_err()
            .contains("add the kernel package"));
    }

    #[test]
    fn module_files_per_mode() {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("dracut");
        std::fs::create_dir_all(&src).unwrap();
        for f in [
            "check",
            "module-setup.sh",
            "install.netboot",
            "install.statelite",
            "xcat-cmdline.sh",
            "xcatroot",
            "installkernel",
            "xcat-prepivot.sh",
        ] {
            std::fs::write(src.join(f), format!("{f}\n")).unwrap();
        }
        let img = t.path().join("img");
        std::fs::create_dir_all(img.join("usr/lib/dracut/modules.d")).unwrap();
        let tree = Tree::open(&img).unwrap();
        install_module(
            &tree,
            "usr/lib/dracut/modules.d",
            &src,
            "statelite",
            Some("eth0"),
        )
        .unwrap();
        let d = "usr/lib/dracut/modules.d/97xcat";
        assert_eq!(
            tree.list(d).unwrap(),
            ["check", "install", "module-setup.sh", "xcat-prepivot.sh"]
        );
        assert_eq!(
            tree.read(&format!("{d}/install")).unwrap().unwrap(),
            b"install.statelite\n"
        );
        install_module(
            &tree,
            "usr/lib/dracut/modules.d",
            &src,
            "stateless",
            Some("eth0"),
        )
        .unwrap();
        assert_eq!(
            tree.list(d).unwrap(),
            [
                "check",
                "install",
                "installkernel",
                "module-setup.sh",
                "xcat-cmdline.sh",
                "xcatroot"
            ],
            "exactly the stateless files"
        );
        assert_eq!(
            tree.read(&format!("{d}/xcat-cmdline.sh")).unwrap().unwrap(),
            b"xcat-cmdline.sh\nPRINIC=eth0\n"
        );
        assert_eq!(xcat_module_source(Some(t.path()), "debian"), None);
        std::fs::create_dir_all(t.path().join("ubuntu")).unwrap();
        std::fs::rename(&src, t.path().join("ubuntu/dracut")).unwrap();
        assert_eq!(
            xcat_module_source(Some(t.path()), "debian"),
            Some(t.path().join("ubuntu/dracut"))
        );
    }

    #[test]
    fn rh_and_sles_modules_by_dracut_version() {
        let t = tempfile::tempdir().unwrap();
        let share = t.path();
        for d in [
            "rh/dracut",
            "rh/dracut_033",
            "rh/dracut_047",
            "sles/dracut_033",
        ] {
            std::fs::create_dir_all(share.join(d)).unwrap();
            std::fs::write(share.join(d).join("check"), "").unwrap();
        }
        let m = |f: &str, v: Option<u32>| xcat_module(Some(share), f, v);
        assert_eq!(
            m("rh", Some(57)),
            Some((share.join("rh/dracut_047"), Layout::Classic))
        );
        assert_eq!(
            m("rocky", Some(40)),
            Some((share.join("rh/dracut_033"), Layout::Classic))
        );
        assert_eq!(
            m("rh", None),
            Some((share.join("rh/dracut"), Layout::Classic))
        );
        assert_eq!(
            m("rh", Some(105)),
            Some((share.join("rh/dracut_047"), Layout::Classic))
        );
        std::fs::create_dir_all(share.join("rh/dracut_105/stateless")).unwrap();
        std::fs::write(share.join("rh/dracut_105/stateless/module-setup.sh"), "").unwrap();
        assert_eq!(
            m("alma", Some(106)),
            Some((share.join("rh/dracut_105"), Layout::PerMode))
        );
        assert_eq!(
            m("sles", Some(55)),
            Some((share.join("sles/dracut_033"), Layout::Classic))
        );
        assert_eq!(m("sles", Some(20)), None);
        assert_eq!(dracut_number("057-70.git20240819.el9"), Some(57));
        assert_eq!(dracut_number("105-1"), Some(105));
        assert_eq!(dracut_number(""), None);
    }

    #[test]
    fn module_lists_per_family() {
        let mut b = crate::gen::debian::tests::build(&[]);
        let avail: Vec<String> = ["systemd", "syslog", "network-manager", "lvm", "dbus"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            module_list(&b, &avail, true, Some(59), false).join(" "),
            "nfs base network-legacy kernel-modules"
        );
        b.family = "rh".into();
        b.osver = "rhels9.4".into();
        assert_eq!(
            module_list(&b, &avail, true, Some(57), true).join(" "),
            "xcat nfs base network kernel-modules syslog systemd"
        );
        b.osver = "rhels10.0".into();
        assert_eq!(
            module_list(&b, &avail, false, Some(105), true).join(" "),
            "xcat nfs base network network-manager kernel-modules syslog dbus systemd"
        );
        b.family = "sles".into();
        assert_eq!(
            module_list(&b, &avail, false, Some(55), false).join(" "),
            "nfs base network kernel-modules lvm"
        );
    }

    #[test]
    fn per_mode_module_files() {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("dracut_105");
        for mode in MODES {
            std::fs::create_dir_all(src.join(mode)).unwrap();
            for f in [
                "installkernel",
                "module-setup.sh",
                "xcat-cmdline.sh",
                "xcatroot",
                "xcat-updateflag",
                "xcat-premount.sh",
                "xcat-prepivot.sh",
            ] {
                std::fs::write(src.join(mode).join(f), format!("{mode}/{f}\n")).unwrap();
            }
        }
        let img = t.path().join("img");
        std::fs::create_dir_all(img.join("usr/lib/dracut/modules.d")).unwrap();
        let tree = Tree::open(&img).unwrap();
        let m = ModuleInstall {
            src: &src,
            layout: Layout::PerMode,
            dir_name: "98xcat",
            rpm: true,
            updateflag: None,
        };
        let d = "usr/lib/dracut/modules.d/98xcat";
        install_module_in(
            &tree,
            "usr/lib/dracut/modules.d",
            &m,
            "stateless",
            Some("eth0"),
        )
        .unwrap();
        assert_eq!(
            tree.list(d).unwrap(),
            [
                "installkernel",
                "module-setup.sh",
                "xcat-cmdline.sh",
                "xcat-updateflag",
                "xcatroot"
            ]
        );
        assert_eq!(
            tree.read(&format!("{d}/xcat-cmdline.sh")).unwrap().unwrap(),
            b"stateless/xcat-cmdline.sh\n",
            "no PRINIC in the dracut_105 module, as xCAT"
        );
        install_module_in(&tree, "usr/lib/dracut/modules.d", &m, "statelite", None).unwrap();
        assert_eq!(tree.list(d).unwrap().len(), 7);
        assert_eq!(
            tree.read(&format!("{d}/xcatroot")).unwrap().unwrap(),
            b"statelite/xcatroot\n"
        );
        // The classic rh layout with updateflag.awk from the postscripts.
        let classic = t.path().join("dracut_047");
        std::fs::create_dir_all(&classic).unwrap();
        for f in [
            "check",
            "install.statelite",
            "xcat-prepivot.sh",
            "xcat-premount.sh",
        ] {
            std::fs::write(classic.join(f), "x\n").unwrap();
        }
        let awk = t.path().join("updateflag.awk");
        std::fs::write(&awk, "awk\n").unwrap();
        let m = ModuleInstall {
            src: &classic,
            layout: Layout::Classic,
            dir_name: "98xcat",
            rpm: true,
            updateflag: Some(&awk),
        };
        install_module_in(&tree, "usr/lib/dracut/modules.d", &m, "statelite", None).unwrap();
        assert_eq!(
            tree.list(d).unwrap(),
            [
                "check",
                "install",
                "xcat-premount.sh",
                "xcat-prepivot.sh",
                "xcat-updateflag"
            ]
        );
    }

    #[test]
    fn dracut_arguments() {
        let p = InitrdPlan {
            kernel: Kernel {
                version: "6.1.0-50-amd64".into(),
                file: "boot/vmlinuz-6.1.0-50-amd64".into(),
            },
            drivers: vec!["e1000".into(), "virtio_net".into()],
            modules_d: "usr/lib/dracut/modules.d".into(),
            xcat_module: None,
            layout: Layout::Classic,
            module_dir: "97xcat",
            module_list: ["nfs", "base", "network-legacy", "kernel-modules"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            compress: "gzip -6 -n".into(),
        };
        assert_eq!(
            p.dracut_args("statelite", "/tmp/x.gz"),
            [
                "--force",
                "--no-hostonly",
                "--modules",
                "nfs base network-legacy kernel-modules",
                "--add-drivers",
                "e1000 virtio_net",
                "--compress",
                "gzip -6 -n",
                "--filesystems",
                "nfs",
                "/tmp/x.gz",
                "6.1.0-50-amd64"
            ]
        );
    }
}
