//! The Debian/Ubuntu backend: debootstrap from the pkgdir mirror, then apt inside the image.
//!
//! Follows xCAT's ubuntu genimage (the maintained Debian-family script; spec §3.4.1, §7) with
//! Debian names for Debian images, and these deliberate differences (spec §6):
//!
//! * Sources: `http(s)` entries of pkgdir are mirrors (`URL [suite [components]]`); a bare URL
//!   gets the suite from osvers and its `-updates` pocket (and `-security` where the mirror is
//!   known to serve it). A local pkgdir directory is used when it is a mirror (`dists/`) or a
//!   flat repository (`Packages`), shown read-only inside the image; a copycds tree is not
//!   required (item 16). Without any mirror, `site.debian_apt_mirror` /
//!   `site.ubuntu_apt_mirror` or the distribution's public archive.
//! * No `--allow-unauthenticated`: packages from signed mirrors are verified; only local
//!   repositories are `[trusted=yes]` (as xCAT marks them).
//! * `policy-rc.d` is there only while packages are installed and removed after (item 16), also
//!   when the phase fails; the host's resolv.conf is shown read-only inside instead of being
//!   copied into the image, `/etc/hosts` is never replaced (item 16).
//! * `INITRD=No` while packages are installed: the kernel package's own initramfs run (dracut
//!   or initramfs-tools through `/etc/kernel/postinst.d`) is skipped; genimage builds the two
//!   initrds it needs itself.
//! * Removals (`-pkg`, `--pkg`) work (`apt-get remove`, xCAT's `apt-get update remove` never
//!   did), also in the base pkglist (item 10); `#ENV:` pairs are environment variables of
//!   the pass's commands (item 10); every exit status is checked (removal failures warn).
//!
//! It knows apt, debootstrap and Debian's file layout; not tables, the host or the protocol.

use super::pkglist::Pass;
use super::sandbox::{Bind, Sandbox};
use super::tree::{Kind, Tree};
use super::{step_failure, Backend, Build, GenError, GenResult, Runner};
use crate::proc::Step;
use std::path::{Path, PathBuf};

/// The Debian-family backend.
#[derive(Debug, Clone, Copy)]
pub struct Debian {
    /// Ubuntu rather than Debian (suites, components, kernel names, default mirror).
    pub ubuntu: bool,
}

/// What marks our policy-rc.d, so only ours is removed.
const POLICY_MARK: &str = "# xcat-imaged genimage: no service starts while the image is built";
/// Local otherpkgs repositories, removed after the build.
const LOCAL_LIST: &str = "etc/apt/sources.list.d/xcat-imaged-local.list";
/// Remote otherpkgs repositories, kept in the image.
const OTHER_LIST: &str = "etc/apt/sources.list.d/xcat-imaged-otherpkgs.list";

/// Debian's architecture name for xCAT's.
pub fn deb_arch(arch: &str) -> Option<&'static str> {
    Some(match arch {
        "x86_64" | "amd64" => "amd64",
        "x86" | "i386" | "i486" | "i586" | "i686" => "i386",
        "ppc64le" | "ppc64el" => "ppc64el",
        "aarch64" | "arm64" => "arm64",
        "s390x" => "s390x",
        "armhf" | "armv7l" => "armhf",
        _ => return None,
    })
}

/// The suite (codename) for an osvers: `debian12.5` → bookworm, `ubuntu24.04.1` → noble.
pub fn suite_for(osver: &str, ubuntu: bool) -> Option<&'static str> {
    if ubuntu {
        let v = osver.strip_prefix("ubuntu")?;
        let mut parts = v.split('.');
        let major = format!("{}.{}", parts.next()?, parts.next()?);
        Some(match major.as_str() {
            "18.04" => "bionic",
            "20.04" => "focal",
            "22.04" => "jammy",
            "24.04" => "noble",
            "26.04" => "resolute",
            _ => return None,
        })
    } else {
        let v = osver.strip_prefix("debian")?;
        let major = v.split('.').next()?;
        Some(match major {
            "10" => "buster",
            "11" => "bullseye",
            "12" => "bookworm",
            "13" => "trixie",
            "14" => "forky",
            _ => return None,
        })
    }
}

/// The package sources of a build.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sources {
    /// debootstrap's mirror URL (maybe `file://`) and suite.
    pub bootstrap: (String, String),
    /// sources.list lines (after `deb `) that stay in the image.
    pub remote: Vec<String>,
    /// sources.list lines for local repositories shown under `/mnt` (removed after).
    pub local: Vec<String>,
    /// otherpkgs lines that stay in the image.
    pub other_remote: Vec<String>,
    /// otherpkgs lines for the local otherpkgdir (removed after).
    pub other_local: Vec<String>,
    /// Host directories shown read-only.
    pub binds: Vec<Bind>,
    /// Things to tell the admin.
    pub notes: Vec<String>,
}

fn is_url(s: &str) -> bool {
    s.starts_with("http://") || s.starts_with("https://")
}

fn has_packages(dir: &Path) -> bool {
    ["Packages", "Packages.gz", "Packages.xz"]
        .iter()
        .any(|f| dir.join(f).is_file())
}

/// The last directory name in `<dir>/dists` (as xCAT's `ls | grep dr | last`).
fn local_suite(dir: &Path) -> Option<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir.join("dists"))
        .ok()?
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names.pop()
}

impl Debian {
    fn components(&self) -> &'static str {
        if self.ubuntu {
            "main universe"
        } else {
            "main"
        }
    }

    fn default_mirror(&self, b: &Build) -> String {
        let site = if self.ubuntu {
            &b.site.ubuntu_apt_mirror
        } else {
            &b.site.debian_apt_mirror
        };
        site.clone().unwrap_or_else(|| {
            if self.ubuntu {
                "http://archive.ubuntu.com/ubuntu".into()
            } else {
                "http://deb.debian.org/debian".into()
            }
        })
    }

    /// Lines for a bare mirror URL: the suite, its updates and, where known, security.
    fn expand_mirror(&self, url: &str, suite: &str) -> Vec<String> {
        let comps = self.components();
        let url = url.trim_end_matches('/');
        let mut v = vec![
            format!("{url} {suite} {comps}"),
            format!("{url} {suite}-updates {comps}"),
        ];
        if self.ubuntu {
            v.push(format!("{url} {suite}-security {comps}"));
        } else if let Some(base) = url
            .strip_suffix("/debian")
            .filter(|b| b.ends_with("//deb.debian.org") || b.ends_with("//security.debian.org"))
        {
            let sec = if suite == "buster" {
                format!("{suite}/updates")
            } else {
                format!("{suite}-security")
            };
            v.push(format!("{base}/debian-security {sec} {comps}"));
        }
        v
    }

    /// Resolves pkgdir, otherpkgdir and kerneldir into sources.
    pub fn sources(&self, b: &Build) -> Result<Sources, String> {
        let default_suite = suite_for(&b.osver, self.ubuntu);
        let need_suite = || {
            default_suite.map(str::to_string).ok_or_else(|| {
                format!(
                    "Cannot tell the {} suite of osvers {}; give it in pkgdir as \"<mirror URL> <suite>\"",
                    if self.ubuntu { "Ubuntu" } else { "Debian" },
                    b.osver
                )
            })
        };
        let mut s = Sources::default();
        let mut bootstrap: Option<(String, String)> = None;
        let mut local_mirror: Option<(String, String)> = None;
        for (i, entry) in b.pkgdir.iter().enumerate() {
            let words: Vec<&str> = entry.split_whitespace().collect();
            let Some(first) = words.first() else { continue };
            if is_url(first) {
                let lines = if words.len() == 1 {
                    self.expand_mirror(first, &need_suite()?)
                } else {
                    let comps = if words.len() > 2 {
                        words[2..].join(" ")
                    } else {
                        self.components().to_string()
                    };
                    vec![format!("{} {} {comps}", first, words[1])]
                };
                if bootstrap.is_none() {
                    let suite = match words.get(1) {
                        Some(s) => s.to_string(),
                        None => need_suite()?,
                    };
                    bootstrap = Some((first.trim_end_matches('/').to_string(), suite));
                }
                s.remote.extend(lines);
            } else if first.starts_with('/') {
                let dir = PathBuf::from(first);
                if !dir.is_dir() {
                    s.notes
                        .push(format!("The specified pkgdir {first} does not exist!"));
                    continue;
                }
                let target = format!("mnt/pkgdir/{i}");
                if dir.join("dists").is_dir() {
                    let suite = match words.get(1) {
                        Some(s) => s.to_string(),
                        None => match local_suite(&dir) {
                            Some(s) => s,
                            None => need_suite()?,
                        },
                    };
                    let comps = if words.len() > 2 {
                        words[2..].join(" ")
                    } else {
                        self.components().to_string()
                    };
                    s.local
                        .push(format!("[trusted=yes] file:///{target} {suite} {comps}"));
                    if local_mirror.is_none() {
                        local_mirror = Some((format!("file://{first}"), suite));
                    }
                } else if has_packages(&dir) {
                    s.local.push(format!("[trusted=yes] file:///{target} ./"));
                } else {
                    s.notes.push(format!(
                        "pkgdir {first} is neither an apt mirror (dists/) nor a flat repository (Packages); ignored"
                    ));
                    continue;
                }
                s.binds.push(Bind {
                    source: dir,
                    target,
                });
            } else {
                return Err(format!(
                    "pkgdir entry \"{entry}\" is neither an http(s) mirror nor an absolute directory"
                ));
            }
        }
        s.bootstrap = match bootstrap.or(local_mirror) {
            Some(b) => b,
            None => {
                let mirror = self.default_mirror(b);
                let suite = need_suite()?;
                s.notes.push(format!(
                    "genimage: pkgdir has no http mirror; using '{mirror}' [{suite} {{,-updates{}}} {}] ({} or default)",
                    if self.ubuntu || mirror.contains("deb.debian.org") { ",-security" } else { "" },
                    self.components(),
                    if self.ubuntu { "site.ubuntu_apt_mirror" } else { "site.debian_apt_mirror" }
                ));
                s.remote.extend(self.expand_mirror(&mirror, &suite));
                (mirror.trim_end_matches('/').to_string(), suite)
            }
        };
        // -k: a kernel repository in kerneldir, as a flat repository.
        if b.kernelver.is_some() && has_packages(&b.kerneldir) {
            let target = "mnt/kerneldir".to_string();
            s.local.push(format!("[trusted=yes] file:///{target} ./"));
            s.binds.push(Bind {
                source: b.kerneldir.clone(),
                target,
            });
        }
        // otherpkgdir: URLs as given, at most one local directory.
        let mut local_other: Option<PathBuf> = None;
        for entry in &b.otherpkgdir {
            let e = entry.trim();
            if e.is_empty() {
                continue;
            }
            if is_url(e) {
                s.other_remote.push(e.to_string());
            } else if local_other.replace(PathBuf::from(e)).is_some() {
                return Err(
                    "genimage: at most only 1 local dir in otherpkgdir is supported.".into(),
                );
            }
        }
        if let Some(dir) = local_other {
            if !dir.is_dir() {
                s.notes.push(format!(
                    "The specified otherpkgdir {} does not exist!",
                    dir.display()
                ));
            } else {
                let mut any = false;
                for pass in b.otherpkglist.passes.values() {
                    for (key, _) in &pass.install {
                        if key.split('/').any(|c| c == "..") || key.starts_with('/') {
                            return Err(format!(
                                "otherpkglist entry directory {key} must be relative to otherpkgdir, without .."
                            ));
                        }
                        let sub = if key == "." {
                            dir.clone()
                        } else {
                            dir.join(key)
                        };
                        let line = format!(
                            "[trusted=yes] file:///mnt/otherpkgdir/{} ./",
                            if key == "." { "" } else { key }
                        );
                        if has_packages(&sub) && !s.other_local.contains(&line) {
                            s.other_local.push(line);
                            any = true;
                        }
                    }
                }
                if any {
                    s.binds.push(Bind {
                        source: dir,
                        target: "mnt/otherpkgdir".into(),
                    });
                }
            }
        }
        Ok(s)
    }

    /// Kernel packages for the kernel step, from the names the pkglist asked for.
    fn kernel_packages(&self, b: &Build, asked: &[String]) -> Vec<String> {
        if asked.is_empty() {
            return Vec::new();
        }
        match &b.kernelver {
            Some(k) if self.ubuntu => vec![
                format!("linux-image-{k}"),
                format!("linux-modules-extra-{k}"),
            ],
            Some(k) => vec![format!("linux-image-{k}")],
            None => asked.to_vec(),
        }
    }

    /// Splits a base pass into (packages, kernel packages), applying `-k` to headers.
    fn base_names(&self, b: &Build, pass: &Pass) -> (Vec<String>, Vec<String>) {
        let mut pkgs = Vec::new();
        let mut kernel = Vec::new();
        for n in pass.all_names() {
            if n.starts_with("linux-image-") || (self.ubuntu && n == "linux-image") {
                kernel.push(n);
            } else if n.starts_with("linux-headers") && b.kernelver.is_some() {
                pkgs.push(format!(
                    "linux-headers-{}",
                    b.kernelver.as_deref().unwrap_or("")
                ));
            } else {
                pkgs.push(n);
            }
        }
        (pkgs, kernel)
    }

    fn check_names(&self, list: &super::pkglist::PackageList, which: &str) -> Result<(), String> {
        for pass in list.passes.values() {
            for n in pass.all_names() {
                if n.starts_with('@') {
                    return Err(format!(
                        "{which}: {n}: apt has no package groups; list the packages (or a metapackage) instead"
                    ));
                }
            }
        }
        Ok(())
    }
}

/// The environment of every apt and dpkg run in the image.
fn apt_env(b: &Build, pass_env: &[(String, String)]) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = [
        ("DEBIAN_FRONTEND", "noninteractive"),
        ("DEBCONF_NONINTERACTIVE_SEEN", "true"),
        ("INITRD", "No"),
        ("HOME", "/root"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    env.extend(proxy_env());
    env.extend(b.env.iter().cloned());
    env.extend(pass_env.iter().cloned());
    env
}

/// The engine's proxy settings, passed on to debootstrap and apt (xCAT's shell passed its
/// whole environment).
fn proxy_env() -> Vec<(String, String)> {
    [
        "http_proxy",
        "https_proxy",
        "no_proxy",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "NO_PROXY",
    ]
    .iter()
    .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_string(), v)))
    .collect()
}

const APT_OPTS: &[&str] = &[
    "-q",
    "-y",
    "-o",
    "Dpkg::Options::=--force-confdef",
    "-o",
    "Dpkg::Options::=--force-confold",
    "-o",
    "Dpkg::Use-Pty=0",
    "-o",
    "APT::Color=0",
];

/// A program run inside the image, and how it is announced.
struct InImage<'s> {
    sandbox: &'s Sandbox,
    root: String,
}

impl InImage<'_> {
    /// `shown_env` are the variables worth showing (a pass's `#ENV:`), all of `env` is set.
    fn step(
        &self,
        prog: &str,
        args: &[String],
        env: &[(String, String)],
        shown_env: &[(String, String)],
    ) -> (String, Step) {
        let mut step = Step::new(prog, args.iter().cloned()).isolated(self.sandbox.chroot());
        step.env = env.to_vec();
        let mut shown = format!("chroot {} ", self.root);
        for (k, v) in shown_env {
            shown.push_str(&format!("{k}={v} "));
        }
        shown.push_str(&step.display());
        (shown, step)
    }

    fn apt(
        &self,
        b: &Build,
        args: &[&str],
        names: &[String],
        env: &[(String, String)],
    ) -> (String, Step) {
        let mut a: Vec<String> = APT_OPTS.iter().map(|s| s.to_string()).collect();
        if !recommends(b) {
            a.extend([
                "-o".to_string(),
                "APT::Install-Recommends=false".to_string(),
            ]);
        }
        a.extend(args.iter().map(|s| s.to_string()));
        a.extend(names.iter().cloned());
        self.step("apt-get", &a, &apt_env(b, env), env)
    }
}

/// `APT_INSTALL_RECOMMENDS=no` (or false, 0) in osimage.environvar: install no recommended
/// packages (apt's default, and xCAT's, is to install them).
fn recommends(b: &Build) -> bool {
    !b.env
        .iter()
        .rev()
        .find(|(k, _)| k == "APT_INSTALL_RECOMMENDS")
        .is_some_and(|(_, v)| {
            matches!(
                v.to_ascii_lowercase().as_str(),
                "no" | "false" | "0" | "off"
            )
        })
}

impl Backend for Debian {
    fn tool(&self) -> &'static str {
        "apt"
    }

    fn plan(&self, b: &Build) -> Result<Vec<String>, String> {
        let arch = deb_arch(&b.arch).ok_or_else(|| format!("Unknown architecture {}", b.arch))?;
        let host_arch = deb_arch(&host_machine()).unwrap_or("");
        if arch != host_arch {
            return Err(format!(
                "Building {} images on this {} management node is not supported by this engine (no qemu-user emulation yet)",
                b.arch,
                host_machine()
            ));
        }
        self.check_names(&b.pkglist, "pkglist")?;
        self.check_names(&b.otherpkglist, "otherpkglist")?;
        let s = self.sources(b)?;
        let mut lines = Vec::new();
        for n in &s.notes {
            lines.push(n.clone());
        }
        if !b.onlyinitrd {
            if self.is_bootstrapped(&b.rootimg) {
                lines.push(format!(
                    "{} holds a Debian system: it is updated in place",
                    b.rootimg.display()
                ));
            } else {
                if crate::proc::find_program("debootstrap").is_none() {
                    return Err("debootstrap is not installed on this management node (apt-get install debootstrap)".into());
                }
                lines.push(format!(
                    "debootstrap --verbose --arch {arch}{} {} <rootimg> {}",
                    variant(b)
                        .map(|v| format!(" --variant={v}"))
                        .unwrap_or_default(),
                    s.bootstrap.1,
                    s.bootstrap.0
                ));
            }
            for l in s.remote.iter().chain(&s.local) {
                lines.push(format!("sources.list: deb {l}"));
            }
            for l in s.other_remote.iter().chain(&s.other_local) {
                lines.push(format!("otherpkgs sources: deb {l}"));
            }
            for bind in &s.binds {
                lines.push(format!(
                    "read-only in the image: {} at /{}",
                    bind.source.display(),
                    bind.target
                ));
            }
            if !recommends(b) {
                lines
                    .push("APT_INSTALL_RECOMMENDS=no: apt installs no recommended packages".into());
            }
            lines.push("apt-get update".into());
            if !b.noupdate {
                lines.push("apt-get -y upgrade".into());
            }
            let mut kernel = Vec::new();
            for (n, pass) in &b.pkglist.passes {
                let (pkgs, k) = self.base_names(b, pass);
                kernel.extend(k);
                let env: Vec<String> = pass.env.iter().map(|(k, v)| format!("{k}={v} ")).collect();
                if !pass.pre_remove.is_empty() {
                    lines.push(format!(
                        "pass {n}: {}apt-get -y remove {}",
                        env.concat(),
                        pass.pre_remove.join(" ")
                    ));
                }
                if !pkgs.is_empty() {
                    lines.push(format!(
                        "pass {n}: {}apt-get -y install {}",
                        env.concat(),
                        pkgs.join(" ")
                    ));
                }
                if !pass.post_remove.is_empty() {
                    lines.push(format!(
                        "pass {n}: {}apt-get -y remove {}",
                        env.concat(),
                        pass.post_remove.join(" ")
                    ));
                }
            }
            let kernel = self.kernel_packages(b, &kernel);
            if !kernel.is_empty() {
                lines.push(format!(
                    "kernel: apt-get -y install --no-install-recommends {}",
                    kernel.join(" ")
                ));
            }
            for (n, pass) in &b.otherpkglist.passes {
                let env: Vec<String> = pass.env.iter().map(|(k, v)| format!("{k}={v} ")).collect();
                if !pass.pre_remove.is_empty() {
                    lines.push(format!(
                        "otherpkgs pass {n}: apt-get -y remove {}",
                        pass.pre_remove.join(" ")
                    ));
                }
                lines.push(format!(
                    "otherpkgs pass {n}: {}apt-get -y install {}",
                    env.concat(),
                    pass.all_names().join(" ")
                ));
                if !pass.post_remove.is_empty() {
                    lines.push(format!(
                        "otherpkgs pass {n}: apt-get -y remove {}",
                        pass.post_remove.join(" ")
                    ));
                }
            }
            if !b.noupdate && !b.otherpkglist.is_empty() {
                lines.push("apt-get -y dist-upgrade".into());
            }
            lines.push("apt-get clean".into());
        }
        Ok(lines)
    }

    fn is_bootstrapped(&self, root: &Path) -> bool {
        root.join("var/lib/dpkg/status").is_file() && !root.join("debootstrap").exists()
    }

    fn bootstrap(&self, r: &mut Runner, b: &Build, root: &Path) -> GenResult<()> {
        let s = self.sources(b).map_err(GenError::Failed)?;
        for n in &s.notes {
            r.info(n.clone());
        }
        let arch = deb_arch(&b.arch).unwrap_or("amd64");
        let mut args: Vec<String> = vec!["--verbose".into(), "--arch".into(), arch.into()];
        if let Some(v) = variant(b) {
            args.push(format!("--variant={v}"));
        }
        args.push(s.bootstrap.1.clone());
        args.push(root.display().to_string());
        args.push(s.bootstrap.0.clone());
        let mut step = Step::new("debootstrap", args).isolated(Sandbox::host_side());
        step.env = proxy_env();
        step.env.extend(b.env.iter().cloned());
        let shown = format!(
            "Run cmd [{}] to create rootimage bootstraps",
            step.display()
        );
        r.run(&shown, &step, |e| {
            step_failure(
                "Error: Can not create bootstraps for rootimage. Make sure you specified full mirror path",
                e,
            )
        })
    }

    fn packages(&self, r: &mut Runner, b: &Build, root: &Path) -> GenResult<()> {
        let s = self.sources(b).map_err(GenError::Failed)?;
        let tree = Tree::open(root)?;
        let sandbox = Sandbox::new(root)?
            .with_host_resolver()
            .with_binds(s.binds.clone());
        sandbox.prepare()?;
        let res = self
            .setup(&tree, &s)
            .and_then(|()| self.steps(r, b, &tree, &sandbox, &s));
        let down = self.teardown(&tree, &s);
        let mounts = sandbox.check_no_mounts();
        res?;
        down?;
        mounts.map_err(GenError::Failed)
    }

    fn installed_version(&self, root: &Path, package: &str) -> Option<String> {
        let tree = Tree::open(root).ok()?;
        let status = tree.read("var/lib/dpkg/status").ok()??;
        dpkg_version(&String::from_utf8_lossy(&status), package)
    }
}

/// `DEBOOTSTRAP_VARIANT` from osimage.environvar (e.g. `minbase`); xCAT uses the default.
fn variant(b: &Build) -> Option<String> {
    b.env
        .iter()
        .rev()
        .find(|(k, _)| k == "DEBOOTSTRAP_VARIANT")
        .map(|(_, v)| v.clone())
        .filter(|v| !v.is_empty() && v.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
}

/// The machine name of the build host (`uname -m`).
pub fn host_machine() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.machine().to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The version of an installed package in a dpkg status file.
pub fn dpkg_version(status: &str, package: &str) -> Option<String> {
    for stanza in status.split("\n\n") {
        let mut name = None;
        let mut version = None;
        let mut installed = false;
        for line in stanza.lines() {
            if let Some(v) = line.strip_prefix("Package: ") {
                name = Some(v.trim());
            } else if let Some(v) = line.strip_prefix("Version: ") {
                version = Some(v.trim());
            } else if let Some(v) = line.strip_prefix("Status: ") {
                installed = v.trim().ends_with(" installed");
            }
        }
        if name == Some(package) && installed {
            return version.map(str::to_string);
        }
    }
    None
}

fn sources_text(lines: &[String]) -> String {
    let mut t = String::from("# written by xcat-imaged genimage\n");
    for l in lines {
        t.push_str("deb ");
        t.push_str(l);
        t.push('\n');
    }
    t
}

impl Debian {
    /// Build-time files: sources, policy-rc.d.
    fn setup(&self, tree: &Tree, s: &Sources) -> GenResult<()> {
        tree.mkdir_all("etc/apt/sources.list.d", 0o755)?;
        let mut all = s.remote.clone();
        all.extend(s.local.iter().cloned());
        tree.write("etc/apt/sources.list", sources_text(&all).as_bytes(), 0o644)?;
        if !s.other_remote.is_empty() {
            tree.write(OTHER_LIST, sources_text(&s.other_remote).as_bytes(), 0o644)?;
        }
        if !s.other_local.is_empty() {
            tree.write(LOCAL_LIST, sources_text(&s.other_local).as_bytes(), 0o644)?;
        }
        tree.mkdir_all("usr/sbin", 0o755)?;
        if tree.kind("usr/sbin/policy-rc.d")?.is_none() {
            tree.write(
                "usr/sbin/policy-rc.d",
                format!("#!/bin/sh\n{POLICY_MARK}\nexit 101\n").as_bytes(),
                0o755,
            )?;
        }
        Ok(())
    }

    /// Takes the build-time files out again; the image keeps only its remote sources.
    fn teardown(&self, tree: &Tree, s: &Sources) -> GenResult<()> {
        if let Some(Kind::File) = tree.kind("usr/sbin/policy-rc.d")? {
            let ours = tree
                .read("usr/sbin/policy-rc.d")?
                .is_some_and(|d| String::from_utf8_lossy(&d).contains(POLICY_MARK));
            if ours {
                tree.remove("usr/sbin/policy-rc.d")?;
            }
        }
        tree.remove(LOCAL_LIST)?;
        if !s.local.is_empty() {
            tree.write(
                "etc/apt/sources.list",
                sources_text(&s.remote).as_bytes(),
                0o644,
            )?;
        }
        for b in &s.binds {
            tree.rmdir(&b.target)?;
        }
        tree.rmdir("mnt/pkgdir")?;
        Ok(())
    }

    fn steps(
        &self,
        r: &mut Runner,
        b: &Build,
        tree: &Tree,
        sandbox: &Sandbox,
        s: &Sources,
    ) -> GenResult<()> {
        let img = InImage {
            sandbox,
            root: tree.root().display().to_string(),
        };
        let check = |r: &mut Runner| -> GenResult<()> {
            sandbox.check_no_mounts().map_err(GenError::Failed)?;
            r.check()
        };
        // An earlier run may have been stopped half-way through dpkg.
        let (shown, step) = img.step(
            "dpkg",
            &["--configure".into(), "-a".into()],
            &apt_env(b, &[]),
            &[],
        );
        r.run(&shown, &step, |e| {
            step_failure("Failed to configure the packages of the image", e)
        })?;
        let (shown, step) = img.apt(b, &["update"], &[], &[]);
        r.run(&shown, &step, |e| {
            step_failure("Failed to update package metadata", e)
        })?;
        if !b.noupdate {
            let (shown, step) = img.apt(b, &["upgrade"], &[], &[]);
            r.run(&shown, &step, |e| {
                step_failure("Failed to upgrade the packages of the image", e)
            })?;
        }
        check(r)?;

        let mut kernel_asked = Vec::new();
        for pass in b.pkglist.passes.values() {
            let (pkgs, kernel) = self.base_names(b, pass);
            kernel_asked.extend(kernel);
            self.removal(r, b, &img, &pass.pre_remove, &pass.env)?;
            if !pkgs.is_empty() {
                let (shown, step) = img.apt(b, &["install"], &pkgs, &pass.env);
                r.run(&shown, &step, |e| {
                    step_failure(&format!("Failed to install packages {}", pkgs.join(" ")), e)
                })?;
            }
            self.removal(r, b, &img, &pass.post_remove, &pass.env)?;
            check(r)?;
        }
        let kernel = self.kernel_packages(b, &kernel_asked);
        if !kernel.is_empty() {
            let (shown, step) = img.apt(b, &["install", "--no-install-recommends"], &kernel, &[]);
            r.run(&shown, &step, |e| {
                step_failure(
                    &format!("Failed to install kernel package {}", kernel.join(" ")),
                    e,
                )
            })?;
            check(r)?;
        }

        if !b.otherpkglist.is_empty() {
            if !s.other_remote.is_empty() || !s.other_local.is_empty() {
                let (shown, step) = img.apt(b, &["update"], &[], &[]);
                r.run(&shown, &step, |e| {
                    step_failure("Failed to update package metadata", e)
                })?;
            }
            for pass in b.otherpkglist.passes.values() {
                self.removal(r, b, &img, &pass.pre_remove, &pass.env)?;
                let names = pass.all_names();
                if names.is_empty() {
                    r.info("No Packages marked for install");
                } else {
                    let (shown, step) = img.apt(b, &["install"], &names, &pass.env);
                    r.run(&shown, &step, |e| {
                        step_failure("apt-get invocation failed", e)
                    })?;
                }
                self.removal(r, b, &img, &pass.post_remove, &pass.env)?;
                check(r)?;
            }
            if !b.noupdate {
                let (shown, step) = img.apt(b, &["dist-upgrade"], &[], &[]);
                r.run(&shown, &step, |e| {
                    step_failure("Failed to upgrade the packages of the image", e)
                })?;
            }
        }
        let (shown, step) = img.apt(b, &["clean"], &[], &[]);
        r.run(&shown, &step, |e| {
            step_failure("Failed to clean the apt cache", e)
        })?;
        check(r)
    }

    /// `apt-get remove` of a pass's removals; a failure is a warning, as xCAT never stops there.
    fn removal(
        &self,
        r: &mut Runner,
        b: &Build,
        img: &InImage,
        names: &[String],
        env: &[(String, String)],
    ) -> GenResult<()> {
        if names.is_empty() {
            return Ok(());
        }
        let (shown, step) = img.apt(b, &["remove"], names, env);
        match r.run(&shown, &step, |e| {
            step_failure("Removing packages failed", e)
        }) {
            Err(GenError::Failed(t)) => {
                r.warning(t);
                Ok(())
            }
            other => other,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::gen::pkglist::PackageList;
    use crate::gen::SiteInfo;

    pub(crate) fn build(pkgdir: &[&str]) -> Build {
        Build {
            name: Some("img".into()),
            osver: "debian12".into(),
            arch: "x86_64".into(),
            profile: "compute".into(),
            family: "debian".into(),
            destdir: "/nonexistent/img".into(),
            rootimg: "/nonexistent/img/rootimg".into(),
            pkglist_attr: "/p".into(),
            pkglist: PackageList::default(),
            otherpkglist_attr: None,
            otherpkglist: PackageList::default(),
            pkgdir: pkgdir.iter().map(|s| s.to_string()).collect(),
            pkgdir_attr: pkgdir.join(","),
            otherpkgdir: Vec::new(),
            otherpkgdir_attr: None,
            postinstall: Vec::new(),
            postinstall_attr: None,
            netdrivers: None,
            nodebootif: None,
            otherifce: Vec::new(),
            tmplimit: None,
            kernelver: None,
            krpmver: None,
            kerneldir: "/nonexistent/kernels".into(),
            permission: "755".into(),
            onlyinitrd: false,
            noupdate: false,
            env: Vec::new(),
            installdir: "/nonexistent".into(),
            netboot_share: None,
            site: SiteInfo::default(),
        }
    }

    #[test]
    fn suites_and_arches() {
        assert_eq!(suite_for("debian12", false), Some("bookworm"));
        assert_eq!(suite_for("debian12.5", false), Some("bookworm"));
        assert_eq!(suite_for("debian13", false), Some("trixie"));
        assert_eq!(suite_for("ubuntu24.04.2", true), Some("noble"));
        assert_eq!(suite_for("ubuntu22.04", true), Some("jammy"));
        assert_eq!(suite_for("debian99", false), None);
        assert_eq!(deb_arch("x86_64"), Some("amd64"));
        assert_eq!(deb_arch("ppc64le"), Some("ppc64el"));
        assert_eq!(deb_arch("aarch64"), Some("arm64"));
        assert_eq!(deb_arch("sparc"), None);
    }

    #[test]
    fn bare_mirror_gets_updates_and_security() {
        let d = Debian { ubuntu: false };
        let s = d
            .sources(&build(&["http://deb.debian.org/debian/"]))
            .unwrap();
        assert_eq!(
            s.bootstrap,
            ("http://deb.debian.org/debian".into(), "bookworm".into())
        );
        assert_eq!(
            s.remote,
            [
                "http://deb.debian.org/debian bookworm main",
                "http://deb.debian.org/debian bookworm-updates main",
                "http://deb.debian.org/debian-security bookworm-security main"
            ]
        );
        assert!(s.notes.is_empty());
        // A private mirror: no guessed security URL.
        let s = d.sources(&build(&["http://mirror.local/debian"])).unwrap();
        assert_eq!(s.remote.len(), 2);
    }

    #[test]
    fn explicit_entries_are_used_as_given() {
        let d = Debian { ubuntu: false };
        let s = d
            .sources(&build(&[
                "http://m/debian trixie main contrib",
                "http://m/debian-security trixie-security main",
            ]))
            .unwrap();
        assert_eq!(s.bootstrap, ("http://m/debian".into(), "trixie".into()));
        assert_eq!(
            s.remote,
            [
                "http://m/debian trixie main contrib",
                "http://m/debian-security trixie-security main"
            ]
        );
    }

    #[test]
    fn no_mirror_uses_the_default_and_says_so() {
        let d = Debian { ubuntu: false };
        let mut b = build(&["/nonexistent/install/debian12/x86_64"]);
        let s = d.sources(&b).unwrap();
        assert_eq!(s.bootstrap.0, "http://deb.debian.org/debian");
        assert!(s.notes[0].contains("does not exist"), "{:?}", s.notes);
        assert!(
            s.notes[1].contains("pkgdir has no http mirror"),
            "{:?}",
            s.notes
        );
        b.site.debian_apt_mirror = Some("http://cache.local/debian".into());
        assert_eq!(
            d.sources(&b).unwrap().bootstrap.0,
            "http://cache.local/debian"
        );
        let u = Debian { ubuntu: true };
        let mut b = build(&[]);
        b.osver = "ubuntu24.04".into();
        let s = u.sources(&b).unwrap();
        assert_eq!(
            s.remote[2],
            "http://archive.ubuntu.com/ubuntu noble-security main universe"
        );
        b.osver = "ubuntu30.04".into();
        assert!(u.sources(&b).unwrap_err().contains("suite"));
    }

    #[test]
    fn local_repositories_are_bound_read_only() {
        let t = tempfile::tempdir().unwrap();
        let mirror = t.path().join("mirror");
        std::fs::create_dir_all(mirror.join("dists/bookworm")).unwrap();
        let flat = t.path().join("flat");
        std::fs::create_dir_all(&flat).unwrap();
        std::fs::write(flat.join("Packages.gz"), b"").unwrap();
        let d = Debian { ubuntu: false };
        let m = mirror.display().to_string();
        let f = flat.display().to_string();
        let s = d.sources(&build(&[&m, &f])).unwrap();
        assert_eq!(s.bootstrap, (format!("file://{m}"), "bookworm".into()));
        assert_eq!(
            s.local,
            [
                "[trusted=yes] file:///mnt/pkgdir/0 bookworm main",
                "[trusted=yes] file:///mnt/pkgdir/1 ./"
            ]
        );
        assert_eq!(s.binds.len(), 2);
        assert_eq!(s.binds[1].target, "mnt/pkgdir/1");
    }

    #[test]
    fn otherpkgdir_rules() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("xcat/core")).unwrap();
        std::fs::write(t.path().join("xcat/core/Packages"), b"").unwrap();
        let d = Debian { ubuntu: false };
        let mut b = build(&["http://deb.debian.org/debian"]);
        b.otherpkgdir = vec![t.path().display().to_string(), "http://x/repo ./".into()];
        let mut pass = Pass::default();
        pass.install
            .push(("xcat/core".into(), vec!["xcat-client".into()]));
        pass.install.push(("none".into(), vec!["x".into()]));
        b.otherpkglist.passes.insert(1, pass);
        let s = d.sources(&b).unwrap();
        assert_eq!(
            s.other_local,
            ["[trusted=yes] file:///mnt/otherpkgdir/xcat/core ./"]
        );
        assert_eq!(s.other_remote, ["http://x/repo ./"]);
        assert_eq!(s.binds.last().unwrap().target, "mnt/otherpkgdir");
        b.otherpkgdir.push("/second".into());
        assert!(d
            .sources(&b)
            .unwrap_err()
            .contains("at most only 1 local dir"));
    }

    #[test]
    fn kernel_names_and_groups() {
        let d = Debian { ubuntu: false };
        let mut b = build(&[]);
        let mut pass = Pass::default();
        for n in ["bash", "linux-image-amd64", "linux-headers-amd64"] {
            pass.install.push((".".into(), vec![n.into()]));
        }
        let (pkgs, kernel) = d.base_names(&b, &pass);
        assert_eq!(pkgs, ["bash", "linux-headers-amd64"]);
        assert_eq!(kernel, ["linux-image-amd64"]);
        assert_eq!(d.kernel_packages(&b, &kernel), ["linux-image-amd64"]);
        b.kernelver = Some("6.1.0-50-amd64".into());
        let (pkgs, _) = d.base_names(&b, &pass);
        assert_eq!(pkgs, ["bash", "linux-headers-6.1.0-50-amd64"]);
        assert_eq!(
            d.kernel_packages(&b, &kernel),
            ["linux-image-6.1.0-50-amd64"]
        );
        let mut l = PackageList::default();
        let mut p = Pass::default();
        p.install.push((".".into(), vec!["@Core".into()]));
        l.passes.insert(1, p);
        assert!(d
            .check_names(&l, "pkglist")
            .unwrap_err()
            .contains("no package groups"));
    }

    #[test]
    fn dpkg_status_versions() {
        let status = "Package: dracut\nStatus: install ok installed\nVersion: 059-4\n\nPackage: gone\nStatus: deinstall ok config-files\nVersion: 1\n";
        assert_eq!(dpkg_version(status, "dracut").as_deref(), Some("059-4"));
        assert_eq!(dpkg_version(status, "gone"), None);
        assert_eq!(dpkg_version(status, "none"), None);
    }

    #[test]
    fn apt_environment() {
        let mut b = build(&[]);
        b.env = vec![("A".into(), "1".into())];
        let env = apt_env(&b, &[("B".into(), "2".into())]);
        assert!(env.contains(&("INITRD".into(), "No".into())));
        assert_eq!(
            &env[env.len() - 2..],
            [
                ("A".to_string(), "1".to_string()),
                ("B".to_string(), "2".to_string())
            ]
        );
    }
}
