//! The pieces of an image build (genimage): the resolved [`Build`], the [`Runner`] that starts
//! programs in the sandbox and streams their output, and the per-family package [`Backend`].
//!
//! The command (`commands::genimage`) resolves options and tables into a [`Build`] and drives
//! the phases; the modules here do the work and know nothing of tables, the protocol or how the
//! values were found:
//!
//! * [`pkglist`]: the list grammar; [`tree`]: confined file access inside the image;
//!   [`sandbox`]: namespaces and mounts of every program;
//! * [`debian`]: the Debian/Ubuntu backend (debootstrap + apt in the image);
//! * [`dnf`]: the RHEL-family backend, [`zypper`]: the SLES backend (the host's package
//!   manager installing into the image), with what they share in [`rpm`];
//! * [`post`]: the files genimage writes into the image (fstab, network, xCAT hooks;
//!   rh and sles flavours in [`post_rpm`]);
//! * [`postinstall`]: the admin's postinstall scripts; [`initrd`]: kernel and dracut initrds.
//!
//! A new distribution family is a new [`Backend`]: it creates the base system and installs the
//! packages; everything after that (post files, postinstall, kernel, initrds) is shared.

pub mod debian;
pub mod dnf;
pub mod initrd;
pub mod pkglist;
pub mod post;
pub mod post_rpm;
pub mod postinstall;
pub mod rpm;
pub mod sandbox;
pub mod tree;
pub mod zypper;

use crate::cancel::Cancel;
use crate::host::{Host, HostExt};
use crate::proc::{self, Line, Step, StepError};
use pkglist::PackageList;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Why a build phase stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GenError {
    /// Something failed; the text says what.
    Failed(String),
    /// SIGINT/SIGTERM (or the bridge going away) asked us to stop.
    Interrupted,
}

impl fmt::Display for GenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GenError::Failed(t) => f.write_str(t),
            GenError::Interrupted => f.write_str("interrupted"),
        }
    }
}

impl From<std::io::Error> for GenError {
    fn from(e: std::io::Error) -> GenError {
        GenError::Failed(e.to_string())
    }
}

/// Result of a build phase.
pub type GenResult<T> = Result<T, GenError>;

/// Shorthand for a failure with a text.
pub fn failed<T>(text: impl Into<String>) -> GenResult<T> {
    Err(GenError::Failed(text.into()))
}

/// A postinstall entry: the script and its extra arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Script {
    /// The script (run as a program).
    pub path: PathBuf,
    /// Words after the script in the attribute.
    pub args: Vec<String>,
}

/// Site values the Debian-family sources need.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SiteInfo {
    /// `site.ubuntu_apt_mirror`.
    pub ubuntu_apt_mirror: Option<String>,
    /// `site.debian_apt_mirror` (our addition, the same knob for Debian).
    pub debian_apt_mirror: Option<String>,
}

/// Everything one genimage run needs, resolved and checked.
#[derive(Debug, Clone)]
pub struct Build {
    /// The osimage name; `None` in the `-o/-p` form.
    pub name: Option<String>,
    /// `osimage.osvers`.
    pub osver: String,
    /// `osimage.osarch` as xCAT writes it (`x86_64`, `ppc64le`, `aarch64`).
    pub arch: String,
    /// `osimage.profile`.
    pub profile: String,
    /// The OS family directory name (`debian`, `ubuntu`, `rh`, `sles`...).
    pub family: String,
    /// `<rootimgdir>`: kernel, initrds and `rootimg/` live here.
    pub destdir: PathBuf,
    /// `<rootimgdir>/rootimg`.
    pub rootimg: PathBuf,
    /// The effective pkglist attribute (comma list of files).
    pub pkglist_attr: String,
    /// The parsed pkglist.
    pub pkglist: PackageList,
    /// The effective otherpkglist attribute, if any.
    pub otherpkglist_attr: Option<String>,
    /// The parsed otherpkglist (empty without one).
    pub otherpkglist: PackageList,
    /// `linuximage.pkgdir` entries (local directories and URLs, with optional suite and
    /// components for Debian mirrors).
    pub pkgdir: Vec<String>,
    /// The effective pkgdir attribute, as written back.
    pub pkgdir_attr: String,
    /// `linuximage.otherpkgdir` entries.
    pub otherpkgdir: Vec<String>,
    /// The effective otherpkgdir attribute.
    pub otherpkgdir_attr: Option<String>,
    /// Postinstall scripts.
    pub postinstall: Vec<Script>,
    /// The effective postinstall attribute.
    pub postinstall_attr: Option<String>,
    /// `-n` / `linuximage.netdrivers`, as given (comma list split); `None` = family defaults.
    pub netdrivers: Option<Vec<String>>,
    /// `-i` / `linuximage.nodebootif`.
    pub nodebootif: Option<String>,
    /// `-r` / `linuximage.otherifce`.
    pub otherifce: Vec<String>,
    /// `-t` (deprecated): size of the `/tmp` and `/var/tmp` tmpfs lines of fstab.
    pub tmplimit: Option<String>,
    /// `-k` / `linuximage.kernelver`.
    pub kernelver: Option<String>,
    /// `-g` / `linuximage.krpmver`: the kernel package version for `-k` (rh, sles).
    pub krpmver: Option<String>,
    /// `linuximage.kerneldir` (default `<installdir>/kernels`).
    pub kerneldir: PathBuf,
    /// `--permission` (default 755).
    pub permission: String,
    /// `--onlyinitrd`: no package phase, no post files, no postinstall.
    pub onlyinitrd: bool,
    /// `--noupdate`: no upgrade steps.
    pub noupdate: bool,
    /// `osimage.environvar` pairs: exported to every program of the build.
    pub env: Vec<(String, String)>,
    /// `site.installdir`.
    pub installdir: PathBuf,
    /// `<xcatroot>/share/xcat/netboot` when that directory exists.
    pub netboot_share: Option<PathBuf>,
    /// Site values.
    pub site: SiteInfo,
}

impl Build {
    /// The environment value for `name` from `osimage.environvar`, else the engine's own.
    pub fn env_lookup(&self, name: &str) -> Option<String> {
        self.env
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .or_else(|| std::env::var(name).ok())
    }
}

/// A package backend: creates the base system and installs the packages of one family.
pub trait Backend {
    /// The package tool, for messages (`apt`, `dnf`, `zypper`).
    fn tool(&self) -> &'static str;
    /// Checks what can be checked before anything is written (sources, list entries the tool
    /// cannot handle); returns the plan's lines about sources and package steps.
    fn plan(&self, b: &Build) -> Result<Vec<String>, String>;
    /// Whether `root` already holds a complete base system (a rerun then updates it in place).
    fn is_bootstrapped(&self, root: &Path) -> bool;
    /// Creates the base system in the empty directory `root`.
    fn bootstrap(&self, r: &mut Runner, b: &Build, root: &Path) -> GenResult<()>;
    /// The package phase in the bootstrapped tree `root`: sources, pkglist passes, kernel,
    /// otherpkgs, updates; leaves no build-time file behind (also when it fails).
    fn packages(&self, r: &mut Runner, b: &Build, root: &Path) -> GenResult<()>;
    /// The installed version of `package` in `root`, if it is installed.
    fn installed_version(&self, root: &Path, package: &str) -> Option<String>;
}

/// xCAT's RHEL-family directories: `rh` and those whose genimage links to it.
pub const RH_FAMILIES: &[&str] = &["rh", "centos", "rocky", "alma", "ol", "SL", "fedora"];

/// Whether an OS family builds with xCAT's rh genimage (dnf).
pub fn is_rh_family(family: &str) -> bool {
    RH_FAMILIES.contains(&family)
}

/// Whether an OS family builds with xCAT's sles genimage (zypper; leap15 maps to it).
pub fn is_sles_family(family: &str) -> bool {
    family == "sles"
}

/// The backend for an OS family, or `None` when this engine cannot build it yet.
pub fn backend_for(family: &str) -> Option<Box<dyn Backend>> {
    match family {
        "debian" => Some(Box::new(debian::Debian { ubuntu: false })),
        "ubuntu" => Some(Box::new(debian::Debian { ubuntu: true })),
        f if is_rh_family(f) => Some(Box::new(dnf::Dnf)),
        f if is_sles_family(f) => Some(Box::new(zypper::Zypper)),
        _ => None,
    }
}

/// Runs the programs of a build: streams their lines to the host as `info`, stops them on
/// cancellation, keeps phase times.
pub struct Runner<'a> {
    host: &'a mut dyn Host,
    cancel: &'a Cancel,
    /// Phase name and wall time, in order.
    pub times: Vec<(String, Duration)>,
}

impl<'a> Runner<'a> {
    /// A runner reporting to `host`, stopping when `cancel` is set.
    pub fn new(host: &'a mut dyn Host, cancel: &'a Cancel) -> Runner<'a> {
        Runner {
            host,
            cancel,
            times: Vec::new(),
        }
    }

    /// The host, for messages.
    pub fn host(&mut self) -> &mut dyn Host {
        self.host
    }

    /// An `info` line.
    pub fn info(&mut self, text: impl Into<String>) {
        self.host.info(text);
    }

    /// A `warning` line.
    pub fn warning(&mut self, text: impl Into<String>) {
        self.host.warning(text);
    }

    /// `Err(Interrupted)` once cancellation was asked for.
    pub fn check(&self) -> GenResult<()> {
        if self.cancel.is_cancelled() {
            Err(GenError::Interrupted)
        } else {
            Ok(())
        }
    }

    /// Whether cancellation was asked for.
    pub fn cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Runs `step`, announcing it as `shown`, streaming its output; a failure becomes
    /// `what(error)`.
    pub fn run(
        &mut self,
        shown: &str,
        step: &Step,
        what: impl FnOnce(&StepError) -> String,
    ) -> GenResult<()> {
        self.check()?;
        self.host.info(shown.to_string());
        let cancel = self.cancel;
        let host = &mut *self.host;
        let res = proc::run_streaming(
            step,
            &mut |line| match line {
                Line::Stdout(t) | Line::Stderr(t) => host.info(t),
            },
            &|| cancel.is_cancelled(),
        );
        if self.cancel.is_cancelled() {
            return Err(GenError::Interrupted);
        }
        res.map_err(|e| GenError::Failed(what(&e)))
    }

    /// Runs `f` as the phase `name`, recording its wall time.
    pub fn phase<T>(
        &mut self,
        name: &str,
        f: impl FnOnce(&mut Runner<'a>) -> GenResult<T>,
    ) -> GenResult<T> {
        let t = Instant::now();
        let r = f(self);
        self.times.push((name.to_string(), t.elapsed()));
        r
    }
}

/// How a step failure reads in an error: the step's own words, then its last stderr lines.
pub fn step_failure(what: &str, e: &StepError) -> String {
    if e.stderr.is_empty() {
        format!("{what}: {} {}", e.step, e.how)
    } else {
        format!("{what}: {} {}:\n{}", e.step, e.how, e.stderr)
    }
}

/// Compares version strings the way people read them: runs of digits as numbers, the rest
/// as text (`5.10` after `5.9`, `6.1.0-50` after `6.1.0-9`).
pub fn version_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    fn chunks(s: &str) -> Vec<(bool, &str)> {
        let mut out = Vec::new();
        let mut start = 0;
        let bytes = s.as_bytes();
        for i in 1..=bytes.len() {
            if i == bytes.len() || bytes[i].is_ascii_digit() != bytes[start].is_ascii_digit() {
                out.push((bytes[start].is_ascii_digit(), &s[start..i]));
                start = i;
            }
        }
        out
    }
    if a.is_empty() || b.is_empty() {
        return a.cmp(b);
    }
    let (ca, cb) = (chunks(a), chunks(b));
    for (x, y) in ca.iter().zip(cb.iter()) {
        let o = match (x, y) {
            ((true, p), (true, q)) => {
                let (p, q) = (p.trim_start_matches('0'), q.trim_start_matches('0'));
                p.len().cmp(&q.len()).then_with(|| p.cmp(q))
            }
            ((_, p), (_, q)) => p.cmp(q),
        };
        if o != std::cmp::Ordering::Equal {
            return o;
        }
    }
    ca.len().cmp(&cb.len())
}

/// Bytes used by a tree (allocated blocks), not crossing into other filesystems.
pub fn tree_size(root: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut seen = std::collections::HashSet::new();
    walkdir::WalkDir::new(root)
        .same_file_system(true)
        .follow_links(false)
        .into_iter()
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.nlink() <= 1 || seen.insert((m.dev(), m.ino())))
        .map(|m| m.blocks() * 512)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cmp::Ordering::*;

    #[test]
    fn versions_compare_numerically() {
        assert_eq!(version_cmp("5.10.0", "5.9.0"), Greater);
        assert_eq!(version_cmp("6.1.0-50-amd64", "6.1.0-9-amd64"), Greater);
        assert_eq!(version_cmp("6.1.0-9-amd64", "6.1.0-9-amd64"), Equal);
        assert_eq!(version_cmp("6.1.0", "6.1.0-1"), Less);
        assert_eq!(version_cmp("059", "59"), Equal);
        let mut v = vec!["5.9", "5.10", "4.19", "5.10.1"];
        v.sort_by(|a, b| version_cmp(a, b));
        assert_eq!(v, ["4.19", "5.9", "5.10", "5.10.1"]);
    }
}
