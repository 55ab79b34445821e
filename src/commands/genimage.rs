//! genimage: build a stateless/statelite image (`rootimg/`, `kernel`, two initrds) from the
//! osimage definition, as xCAT's genimage plugin and its per-distro scripts do together.
//!
//! Same options, tables, messages and outputs as xCAT (spec `genimage.md` §1, §2); the work is
//! done by the building blocks in `crate::gen` instead of a shell string handed to a Perl
//! script, and the table write-back is done here with `table.set` (no temp-file protocol).
//! Parse → plan (every table value and file resolved and checked, nothing written) →
//! execute (lock first, then the phases). `--dryrun` prints the plan. See docs/genimage.md.
//!
//! This is the only genimage code that talks to the host (tables, messages); it never starts a
//! program or mounts anything itself (`crate::gen` does, through `crate::proc`), and knows no
//! package manager (that is the family's `gen::Backend`).

use super::Fail;
use crate::args::{self, Config};
use crate::cancel::Cancel;
use crate::fs::remove;
use crate::gen::pkglist::{self, ListError, PackageList};
use crate::gen::sandbox::no_mounts_under;
use crate::gen::tree::Tree;
use crate::gen::{
    self, initrd, post, postinstall, Backend, Build, GenError, Runner, Script, SiteInfo,
};
use crate::host::{Host, HostExt};
use crate::image::{self, perl_true, shown};
use crate::lock;
use crate::pack::publish::Staged;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// genimage.pm's GetOptions specification, plus the client's `-h` and `-v` (the stock client
/// handles those itself; over REST they reach the plugin).
pub const SPECS: &[&str] = &[
    "a=s",
    "p=s",
    "o=s",
    "n=s",
    "i=s",
    "r=s",
    "l=s",
    "t=s",
    "k=s",
    "g=s",
    "m=s",
    "kerneldir=s",
    "permission=s",
    "interactive",
    "onlyinitrd",
    "tempfile=s",
    "dryrun",
    "ignorekernelchk",
    "noupdate",
    "h|help",
    "v|version",
];

/// The usage text of xCAT's genimage client.
pub const USAGE: &str = "Usage:\n    genimage\n\n    genimage --dryrun\n\n    genimage  -o <osver> [-a <arch>] -p <profile> -i <nodebootif> -n <nodenetdrivers> [--onlyinitrd] [-r <otherifaces>] [-k <kernelver>] [-g <krpmver>] [-m statelite] [-l rootlimitsize] [-t tmplimitsize] [--permission <permission>] [--interactive] [--dryrun]\n\n    genimage [-o <osver>] [-a <arch>] [-p <profile>] [-i <nodebootif>] [-n <nodenetdrivers>] [--onlyinitrd] [-r <otherifaces>] [-k <kernelver>] [-g <krpmver>] [-m statelite] [-l rootlimitsize] [-t tmplimitsize] [--permission <permission>] [--interactive] [--dryrun] [--noupdate] <imagename>\n\n      --permission is used for statelite only\n      -g is used for SLES only\n\n      -m is used for Ubuntu, Debian and legacy Fedora versions only\n";

/// Where a fresh build is made, beside rootimg, before it replaces rootimg.
const PARTIAL: &str = ".rootimg.genimage-partial";

type Result<T> = std::result::Result<T, Fail>;

/// The command line, after xCAT's Perl truth (`-o 0` is not given).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Opts {
    name: Option<String>,
    arch: Option<String>,
    profile: Option<String>,
    osver: Option<String>,
    netdrivers: Option<String>,
    nodebootif: Option<String>,
    otherifce: Option<String>,
    rootlimit: Option<String>,
    tmplimit: Option<String>,
    kernelver: Option<String>,
    krpmver: Option<String>,
    mode: Option<String>,
    kerneldir: Option<String>,
    permission: Option<String>,
    onlyinitrd: bool,
    dryrun: bool,
    noupdate: bool,
    ignorekernelchk: bool,
}

/// What parsing decided.
enum Parsed {
    /// Usage or version was printed.
    Done,
    /// Build (or plan) this.
    Run(Box<Opts>),
}

/// A row to write back: table, image name, column values.
type Row = (&'static str, String, Vec<(String, String)>);

/// Everything resolved; executing is all that is left.
struct Plan {
    build: Build,
    backend: Box<dyn Backend>,
    backend_lines: Vec<String>,
    tftpdir: PathBuf,
    /// Rows to write back after a successful build: (table, image name, values).
    writeback: Vec<Row>,
    notes: Vec<String>,
}

/// Runs genimage with xcatd's argument list.
pub fn run(argv: &[String], xcatroot: Option<&str>, host: &mut dyn Host, cancel: &Cancel) {
    if let Err(Fail(text)) = try_run(argv, xcatroot, host, cancel) {
        host.error(text);
    }
}

fn try_run(
    argv: &[String],
    xcatroot: Option<&str>,
    host: &mut dyn Host,
    cancel: &Cancel,
) -> Result<()> {
    let opts = match parse(argv, host)? {
        Parsed::Done => return Ok(()),
        Parsed::Run(o) => *o,
    };
    let xcatroot = PathBuf::from(xcatroot.unwrap_or("/opt/xcat"));
    let plan = plan(opts.clone(), &xcatroot, host)?;
    if opts.dryrun {
        for line in dry_run_lines(&plan) {
            host.info(line);
        }
        host.info("Nothing was changed (--dryrun).");
        return Ok(());
    }
    execute(plan, host, cancel)
}

fn parse(argv: &[String], host: &mut dyn Host) -> Result<Parsed> {
    let o = args::parse(SPECS, Config::XCAT_PASS_THROUGH, argv);
    if o.flag("h") {
        host.info(USAGE);
        return Ok(Parsed::Done);
    }
    if o.flag("v") {
        host.info(format!(
            "Version {} (xcat-imaged)",
            env!("CARGO_PKG_VERSION")
        ));
        return Ok(Parsed::Done);
    }
    if o.flag("interactive") {
        return Err(Fail(
            "--interactive is not supported by this engine: package managers run without prompts \
             on the management node. Run genimage without --interactive (answers for package \
             prompts go into the pkglist as #ENV:NAME=value# or into osimage.environvar)."
                .into(),
        ));
    }
    let val = |k: &str| o.str(k).filter(|v| perl_true(Some(v))).map(str::to_string);
    let mut rest = o.rest.iter();
    let name = rest.next().cloned();
    if let Some(n) = &name {
        if n.starts_with('-') && n.len() > 1 {
            return Err(Fail(format!("Unknown option {n}\n{}", USAGE.trim_end())));
        }
    }
    for extra in rest {
        host.warning(format!("Ignoring extra argument {}", shown(extra)));
    }
    Ok(Parsed::Run(Box::new(Opts {
        name,
        arch: val("a"),
        profile: val("p"),
        osver: val("o"),
        netdrivers: val("n"),
        nodebootif: val("i"),
        otherifce: val("r"),
        rootlimit: val("l"),
        tmplimit: val("t"),
        kernelver: val("k"),
        krpmver: val("g"),
        mode: val("m"),
        kerneldir: val("kerneldir"),
        permission: val("permission"),
        onlyinitrd: o.flag("onlyinitrd"),
        dryrun: o.flag("dryrun"),
        noupdate: o.flag("noupdate"),
        ignorekernelchk: o.flag("ignorekernelchk"),
    })))
}

/// The OS family directory of an osvers, as the plugin computes it.
fn family_of(osver: &str) -> String {
    let mut f: String = osver
        .chars()
        .filter(|c| !c.is_ascii_digit() && *c != '.')
        .collect();
    if f.contains("rh") {
        f = "rh".into();
    }
    if f.contains("sles") && f.contains("sp") {
        f = "sles".into();
    }
    if osver.starts_with("leap15") {
        f = "sles".into();
    }
    f.retain(|c| c != ' ');
    f
}

/// The OS bases searched after osvers itself (SvrUtils::get_os_search_list minus osver):
/// `rocky9.6` → `rocky9.5 … rocky9.0, rocky9`; `sles15sp5` → `sles15`; `debian12.5` →
/// `debian12.4 … debian12.0, debian12`.
fn os_bases(osver: &str) -> Vec<String> {
    if osver.contains("sles") && osver.contains("sp") {
        return osver
            .rfind("sp")
            .map(|i| vec![osver[..i].to_string()])
            .unwrap_or_default();
    }
    let mut out = Vec::new();
    if let Some((base, minor)) = osver.rsplit_once('.') {
        if let Ok(n) = minor.parse::<u32>() {
            for m in (0..n).rev() {
                out.push(format!("{base}.{m}"));
            }
        }
        let mut b = base.to_string();
        out.push(b.clone());
        while let Some((shorter, _)) = b.rsplit_once('.') {
            b = shorter.to_string();
            out.push(b.clone());
        }
    }
    out.retain(|b| b != osver);
    out
}

/// `imgutils::get_profile_def_filename`: the first readable file in `dir`, in xCAT's order.
fn profile_file(dir: &Path, osver: &str, profile: &str, arch: &str, ext: &str) -> Option<PathBuf> {
    let bases = os_bases(osver);
    let fallback = osver.starts_with("leap15").then_some("sle15");
    let mut names = vec![format!("{profile}.{osver}.{arch}.{ext}")];
    names.extend(bases.iter().map(|b| format!("{profile}.{b}.{arch}.{ext}")));
    if let Some(f) = fallback {
        names.push(format!("{profile}.{f}.{arch}.{ext}"));
    }
    names.push(format!("{profile}.{arch}.{ext}"));
    names.push(format!("{profile}.{osver}.{ext}"));
    names.extend(bases.iter().map(|b| format!("{profile}.{b}.{ext}")));
    if let Some(f) = fallback {
        names.push(format!("{profile}.{f}.{ext}"));
    }
    names.push(format!("{profile}.{ext}"));
    names
        .into_iter()
        .map(|n| dir.join(n))
        .find(|p| std::fs::File::open(p).is_ok() && p.is_file())
}

fn readable(p: &Path) -> bool {
    std::fs::File::open(p).is_ok() && p.is_file()
}

/// `osimage.environvar`: `K=V,K2=V2` (a value keeps its `=`; spec §6 item 19).
fn parse_environvar(v: &str) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for item in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let Some((k, val)) = item.split_once('=') else {
            return Err(Fail(format!(
                "osimage.environvar entry {} is not NAME=value",
                shown(item)
            )));
        };
        let k = k.trim();
        let ok = !k.is_empty()
            && !k.starts_with(|c: char| c.is_ascii_digit())
            && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !ok {
            return Err(Fail(format!(
                "osimage.environvar: {} is not a variable name",
                shown(k)
            )));
        }
        out.push((k.to_string(), val.trim().to_string()));
    }
    Ok(out)
}

fn list_error(which: &str, e: ListError) -> Fail {
    match e {
        ListError::Unreadable { .. } => {
            Fail(format!("Unable to open the following pkglist files:\n{e}"))
        }
        other => Fail(format!("{which}: {other}")),
    }
}

fn checked_dir(dir: &str, what: &str) -> Result<PathBuf> {
    image::normalize_dir(dir)
        .map_err(|why| Fail(format!("The {what} ({}) cannot be used: {why}", shown(dir))))
}

fn plan(o: Opts, xcatroot: &Path, host: &mut dyn Host) -> Result<Plan> {
    let site = |host: &mut dyn Host, k: &str| host.site_get(k);
    let installdir = site(host, "installdir")?.unwrap_or_else(|| "/install".into());
    let installdir = checked_dir(&installdir, "site attribute installdir")?;
    let tftpdir = site(host, "tftpdir")?.unwrap_or_else(|| "/tftpboot".into());
    let tftpdir = checked_dir(&tftpdir, "site attribute tftpdir")?;
    let mut notes = Vec::new();

    // CLI values are written back whatever the image (the plugin's placeholder blocks).
    let mut cli_linux: Vec<(String, String)> = Vec::new();
    for (col, v) in [
        ("netdrivers", &o.netdrivers),
        ("nodebootif", &o.nodebootif),
        ("otherifce", &o.otherifce),
        ("kernelver", &o.kernelver),
        ("krpmver", &o.krpmver),
        ("kerneldir", &o.kerneldir),
        ("permission", &o.permission),
    ] {
        if let Some(v) = v {
            cli_linux.push((col.to_string(), v.clone()));
        }
    }

    struct Resolved {
        osver: String,
        arch: String,
        profile: String,
        environvar: Option<String>,
        pkglist: Option<String>,
        pkgdir: Option<String>,
        otherpkglist: Option<String>,
        otherpkgdir: Option<String>,
        postinstall: Option<String>,
        rootimgdir: Option<String>,
        kerneldir: Option<String>,
        nodebootif: Option<String>,
        otherifce: Option<String>,
        kernelver: Option<String>,
        krpmver: Option<String>,
        netdrivers: Option<String>,
        permission: Option<String>,
    }

    let r = match &o.name {
        Some(name) => {
            if o.arch.is_some() || o.osver.is_some() || o.profile.is_some() {
                return Err(Fail(
                    "-o, -p and -a options are not allowed when a image name is specified.".into(),
                ));
            }
            if let Some(why) = image::component_problem(name) {
                log::info!("image name {name:?} refused: {why}");
                return Err(Fail(format!(
                    "Cannot find image '{}' from the osimage table.",
                    shown(name)
                )));
            }
            let os = host
                .table_get(
                    "osimage",
                    &[("imagename", name)],
                    &["osvers", "osarch", "profile", "provmethod", "environvar"],
                )
                .map_err(|e| Fail(format!("The osimage table cannot be open. ({e})")))?
                .ok_or_else(|| {
                    Fail(format!(
                        "Cannot find image '{name}' from the osimage table."
                    ))
                })?;
            let li = host
                .table_get(
                    "linuximage",
                    &[("imagename", name)],
                    &[
                        "pkglist",
                        "pkgdir",
                        "otherpkglist",
                        "otherpkgdir",
                        "postinstall",
                        "rootimgdir",
                        "kerneldir",
                        "krpmver",
                        "nodebootif",
                        "otherifce",
                        "kernelver",
                        "netdrivers",
                        "permission",
                        "driverupdatesrc",
                    ],
                )
                .map_err(|e| Fail(format!("The linuximage table cannot be open. ({e})")))?
                .ok_or_else(|| Fail(format!("Cannot find {name} from the linuximage table.")))?;
            let get = |row: &crate::protocol::Row, k: &str| {
                row.get(k).cloned().filter(|v| perl_true(Some(v)))
            };
            let (Some(osver), Some(arch), Some(profile), Some(provmethod)) = (
                get(&os, "osvers"),
                get(&os, "osarch"),
                get(&os, "profile"),
                get(&os, "provmethod"),
            ) else {
                return Err(Fail(format!(
                    "osimage.osvers, osimage.osarch, osimage.profile and osimage.provmethod must be specified for the image {name} in the database."
                )));
            };
            if provmethod != "netboot" && provmethod != "statelite" {
                return Err(Fail(format!(
                    "'{name}' cannot be used to build diskless image. Make sure osimage.provmethod is 'netboot'."
                )));
            }
            let Some(pkglist) = get(&li, "pkglist") else {
                return Err(Fail(format!(
                    "A .pkglist file must be specified for image '{name}' in the linuximage table."
                )));
            };
            for f in pkglist::split_files(&pkglist) {
                if !readable(&f) {
                    return Err(Fail(format!(
                        "The pkglist specified '{}' does not exist!",
                        f.display()
                    )));
                }
            }
            let otherpkglist = get(&li, "otherpkglist");
            for f in pkglist::split_files(otherpkglist.as_deref().unwrap_or("")) {
                if !readable(&f) {
                    return Err(Fail(format!(
                        "The otherpkglist specified '{}' does not exist!",
                        f.display()
                    )));
                }
            }
            let postinstall = get(&li, "postinstall");
            for entry in postinstall.as_deref().unwrap_or("").split(',') {
                if let Some(file) = entry.split_whitespace().next() {
                    if !readable(Path::new(file)) {
                        return Err(Fail(format!(
                            "The postinstall_filename specified '{file}' does not exist!"
                        )));
                    }
                }
            }
            if get(&li, "driverupdatesrc").is_some() {
                notes.push(
                    "linuximage.driverupdatesrc is ignored: driver update disks and driver packages are not supported by this engine yet".into(),
                );
            }
            // CLI values win over the table; the plugin says when they differ.
            let mut pick = |cli: &Option<String>, col: &str, what: &str| -> Option<String> {
                match cli {
                    Some(v) => {
                        if Some(v) != li.get(col) {
                            host.info(format!("{what} is different from the value in linuximage table, will update it."));
                        }
                        Some(v.clone())
                    }
                    None => get(&li, col),
                }
            };
            let nodebootif = pick(&o.nodebootif, "nodebootif", "The primary nic");
            let otherifce = pick(&o.otherifce, "otherifce", "The other ifces");
            let kernelver = pick(&o.kernelver, "kernelver", "The kernelver");
            let krpmver = pick(&o.krpmver, "krpmver", "The krpmver");
            let kerneldir = pick(&o.kerneldir, "kerneldir", "The kerneldir");
            let netdrivers = pick(&o.netdrivers, "netdrivers", "The netdrivers");
            let permission = pick(&o.permission, "permission", "The permission");
            Resolved {
                osver,
                arch,
                profile,
                environvar: get(&os, "environvar"),
                pkglist: Some(pkglist),
                pkgdir: get(&li, "pkgdir"),
                otherpkglist,
                otherpkgdir: get(&li, "otherpkgdir"),
                postinstall,
                rootimgdir: get(&li, "rootimgdir"),
                kerneldir,
                nodebootif,
                otherifce,
                kernelver,
                krpmver,
                netdrivers,
                permission,
            }
        }
        None => {
            let (Some(osver), Some(profile)) = (o.osver.clone(), o.profile.clone()) else {
                return Err(Fail(format!(
                    "An image name, or -o <osver> and -p <profile>, must be given.\n{USAGE}"
                )));
            };
            let arch = o.arch.clone().unwrap_or_else(|| {
                let m = gen::debian::host_machine();
                if m.len() == 4 && m.starts_with('i') && m.ends_with("86") {
                    "x86".into()
                } else {
                    m
                }
            });
            for (what, v) in [("osver", &osver), ("arch", &arch), ("profile", &profile)] {
                if let Some(why) = image::component_problem(v) {
                    return Err(Fail(format!("Invalid {what} {}: {why}", shown(v))));
                }
            }
            let family = family_of(&osver);
            let dirs = [
                installdir.join("custom/netboot").join(&family),
                xcatroot.join("share/xcat/netboot").join(&family),
            ];
            let lookup = |ext: &str| {
                dirs.iter()
                    .find_map(|d| profile_file(d, &osver, &profile, &arch, ext))
                    .map(|p| p.display().to_string())
            };
            let pkglist = lookup("pkglist");
            if pkglist.is_none() {
                return Err(Fail(format!("Unable to find package list for {profile}!")));
            }
            Resolved {
                pkgdir: None,
                otherpkglist: lookup("otherpkgs.pkglist"),
                otherpkgdir: None,
                postinstall: lookup("postinstall"),
                rootimgdir: None,
                kerneldir: o.kerneldir.clone(),
                nodebootif: o.nodebootif.clone(),
                otherifce: o.otherifce.clone(),
                kernelver: o.kernelver.clone(),
                krpmver: o.krpmver.clone(),
                netdrivers: o.netdrivers.clone(),
                permission: o.permission.clone(),
                environvar: None,
                pkglist,
                osver,
                arch,
                profile,
            }
        }
    };

    let family = family_of(&r.osver);
    if o.mode.is_some() && family != "ubuntu" && family != "debian" && !r.osver.contains("fedora12")
    {
        return Err(Fail(
            "-m flag is valid for Ubuntu, Debian and Fedora12 only.".into(),
        ));
    }
    if o.mode.is_some() {
        notes.push(
            "-m has no effect here: both the stateless and the statelite initrd are always built"
                .into(),
        );
    }
    if o.rootlimit.is_some() {
        notes.push(if gen::is_rh_family(&family) || gen::is_sles_family(&family) {
            "-l (rootlimit) is not supported by this engine yet (xCAT's rh dracut module reads it from /etc/cmdline in the initrd)".into()
        } else {
            "-l (rootlimit) is not used for Debian-family images (xCAT's ubuntu dracut module ignores it too)".into()
        });
    }
    if o.ignorekernelchk {
        notes.push("--ignorekernelchk has no effect: driver update disks are not supported by this engine yet".into());
    }
    let Some(backend) = gen::backend_for(&family) else {
        return Err(Fail(format!(
            "genimage for {family} images (osvers {}) is not available in this version of xcat-imaged: it builds Debian, Ubuntu, RHEL-family ({}) and SLES images. Remove the site key imagehandler (chtab -d key=imagehandler site) to use xCAT's own genimage",
            r.osver,
            gen::RH_FAMILIES.join(", ")
        )));
    };

    let destdir = match &r.rootimgdir {
        Some(d) => checked_dir(d, "rootimgdir")?,
        None => {
            for (what, v) in [
                ("osvers", &r.osver),
                ("osarch", &r.arch),
                ("profile", &r.profile),
            ] {
                if let Some(why) = image::component_problem(v) {
                    return Err(Fail(format!("Invalid {what} {}: {why}", shown(v))));
                }
            }
            installdir
                .join("netboot")
                .join(&r.osver)
                .join(&r.arch)
                .join(&r.profile)
        }
    };
    image::check_image_dir(&destdir, &[&installdir, &tftpdir]).map_err(|why| {
        Fail(format!(
            "Refusing to build the image in {}: {why}",
            destdir.display()
        ))
    })?;
    let rootimg = destdir.join("rootimg");

    let env = parse_environvar(r.environvar.as_deref().unwrap_or(""))?;
    let env_get = |k: &str| {
        env.iter()
            .rev()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .or_else(|| std::env::var(k).ok())
    };
    let pkglist_attr = r.pkglist.clone().unwrap_or_default();
    let pkglist = pkglist::parse_files(&pkglist::split_files(&pkglist_attr), &env_get)
        .map_err(|e| list_error("pkglist", e))?;
    let otherpkglist = match &r.otherpkglist {
        Some(a) => pkglist::parse_files(&pkglist::split_files(a), &env_get)
            .map_err(|e| list_error("otherpkglist", e))?,
        None => PackageList::default(),
    };
    let postinstall: Vec<Script> = r
        .postinstall
        .as_deref()
        .unwrap_or("")
        .split(',')
        .filter_map(|e| {
            let mut w = e.split_whitespace();
            w.next().map(|p| Script {
                path: PathBuf::from(p),
                args: w.map(str::to_string).collect(),
            })
        })
        .collect();
    let pkgdir_attr = r.pkgdir.clone().unwrap_or_else(|| {
        installdir
            .join(&r.osver)
            .join(&r.arch)
            .display()
            .to_string()
    });
    let kerneldir = match &r.kerneldir {
        Some(d) => checked_dir(d, "kerneldir")?,
        None => installdir.join("kernels"),
    };
    let split_list = |v: &Option<String>| -> Vec<String> {
        v.as_deref()
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    };
    let netboot_share = Some(xcatroot.join("share/xcat/netboot")).filter(|d| d.is_dir());
    let build = Build {
        name: o.name.clone(),
        family: family.clone(),
        destdir: destdir.clone(),
        rootimg,
        pkglist_attr,
        pkglist,
        otherpkglist_attr: r.otherpkglist.clone(),
        otherpkglist,
        pkgdir: pkgdir_attr
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
        pkgdir_attr: pkgdir_attr.clone(),
        otherpkgdir: split_list(&r.otherpkgdir),
        otherpkgdir_attr: r.otherpkgdir.clone(),
        postinstall,
        postinstall_attr: r.postinstall.clone(),
        netdrivers: r.netdrivers.as_ref().map(|_| split_list(&r.netdrivers)),
        nodebootif: r.nodebootif.clone(),
        otherifce: split_list(&r.otherifce),
        tmplimit: o.tmplimit.clone(),
        kernelver: r.kernelver.clone(),
        krpmver: r.krpmver.clone(),
        kerneldir,
        permission: r.permission.clone().unwrap_or_else(|| "755".into()),
        onlyinitrd: o.onlyinitrd,
        noupdate: o.noupdate,
        env,
        installdir: installdir.clone(),
        netboot_share,
        site: SiteInfo {
            ubuntu_apt_mirror: site(host, "ubuntu_apt_mirror")?,
            debian_apt_mirror: site(host, "debian_apt_mirror")?,
        },
        osver: r.osver.clone(),
        arch: r.arch.clone(),
        profile: r.profile.clone(),
    };
    let backend_lines = backend.plan(&build).map_err(Fail)?;

    // The write-back (spec §2.2): CLI values, then what the build used (which wins).
    let mut linux = cli_linux;
    let mut set = |k: &str, v: &str| {
        linux.retain(|(c, _)| c != k);
        linux.push((k.to_string(), v.to_string()));
    };
    set("permission", &build.permission);
    set("pkgdir", &build.pkgdir_attr);
    set("rootimgdir", &build.destdir.display().to_string());
    set("pkglist", &build.pkglist_attr);
    if let Some(v) = &build.otherpkglist_attr {
        set("otherpkglist", v);
    }
    if let Some(v) = &build.postinstall_attr {
        set("postinstall", v);
    }
    if let Some(v) = &build.otherpkgdir_attr {
        set("otherpkgdir", v);
    }
    let mut writeback = Vec::new();
    match &build.name {
        Some(n) => writeback.push(("linuximage", n.clone(), linux)),
        None => {
            for method in ["netboot", "statelite"] {
                let n = format!("{}-{}-{method}-{}", build.osver, build.arch, build.profile);
                let os: Vec<(String, String)> = [
                    ("profile", build.profile.as_str()),
                    ("imagetype", "linux"),
                    ("provmethod", method),
                    ("osname", "Linux"),
                    ("osvers", build.osver.as_str()),
                    ("osarch", build.arch.as_str()),
                ]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
                writeback.push(("osimage", n.clone(), os));
                writeback.push(("linuximage", n, linux.clone()));
            }
        }
    }
    Ok(Plan {
        build,
        backend,
        backend_lines,
        tftpdir,
        writeback,
        notes,
    })
}

fn dry_run_lines(p: &Plan) -> Vec<String> {
    let b = &p.build;
    let mut l = vec![format!(
        "genimage {}: osvers {}, arch {}, profile {}, family {} ({})",
        b.name.as_deref().unwrap_or("(by -o/-p)"),
        b.osver,
        b.arch,
        b.profile,
        b.family,
        p.backend.tool()
    )];
    l.extend(p.notes.iter().cloned());
    l.push(format!("rootimgdir: {}", b.destdir.display()));
    for f in &b.pkglist.files {
        l.push(format!("pkglist file: {}", f.display()));
    }
    for f in &b.otherpkglist.files {
        l.push(format!("otherpkglist file: {}", f.display()));
    }
    if b.onlyinitrd {
        l.push("--onlyinitrd: no package phase, no post files, no postinstall".into());
    }
    l.extend(p.backend_lines.iter().cloned());
    if !b.onlyinitrd {
        l.push(post::summary(&b.family).into());
        for s in &b.postinstall {
            l.push(format!(
                "postinstall: {}",
                postinstall::step(b, s).display()
            ));
        }
    }
    l.push(match &b.kernelver {
        Some(k) => format!("kernel: {k}"),
        None => "kernel: the highest version in rootimg/boot".into(),
    });
    // The image's dracut version is not known before the build: rh and sles show the
    // oldest module directory; the build chooses by version.
    let module = initrd::xcat_module(b.netboot_share.as_deref(), &b.family, None).map(|(d, _)| d);
    l.push(match &module {
        Some(m) => format!("dracut module: xCAT's from {}", m.display()),
        None => {
            "dracut module: none (no xCAT installation found): dracut's stock modules only".into()
        }
    });
    for mode in initrd::MODES {
        l.push(format!(
            "initrd: chroot <rootimg> dracut --force --no-hostonly --modules \"{}{}\" --add-drivers \"<netdrivers and dependencies>\"{} ... -> {}",
            if module.is_some() { "xcat " } else { "" },
            if gen::is_rh_family(&b.family) {
                "nfs base network kernel-modules syslog <systemd modules of the image>"
            } else if gen::is_sles_family(&b.family) {
                "nfs base network kernel-modules lvm"
            } else {
                "nfs base network-legacy kernel-modules"
            },
            if mode == "statelite" { " --filesystems nfs" } else { "" },
            b.destdir.join(format!("initrd-{mode}.gz")).display()
        ));
    }
    l.push(format!("output: {}", b.destdir.join("kernel").display()));
    if let Some(n) = &b.name {
        l.push(format!(
            "copies: {}",
            p.tftpdir.join("xcat/osimage").join(n).display()
        ));
    }
    for (table, name, values) in &p.writeback {
        let v: Vec<String> = values.iter().map(|(k, v)| format!("{k}={v}")).collect();
        l.push(format!("write-back: {table} {name}: {}", v.join(" ")));
    }
    l
}

fn interrupted(state: &str) -> Fail {
    Fail(format!("genimage was interrupted; {state}"))
}

fn gen_fail(e: GenError, state: &str) -> Fail {
    match e {
        GenError::Interrupted => interrupted(state),
        GenError::Failed(t) => Fail(t),
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / 1048576.0)
}

fn execute(p: Plan, host: &mut dyn Host, cancel: &Cancel) -> Result<()> {
    let started = Instant::now();
    let b = &p.build;
    for n in &p.notes {
        host.info(n.clone());
    }
    if !nix::unistd::geteuid().is_root() {
        return Err(Fail(
            "genimage must run as root: it creates device nodes, mounts and changes root in private namespaces".into(),
        ));
    }
    if let Ok(real) = std::fs::canonicalize(&b.destdir) {
        no_mounts_under(&real).map_err(|e| Fail(format!("Refusing to build: {e}")))?;
    }
    if b.onlyinitrd && !b.rootimg.is_dir() {
        return Err(Fail(format!(
            "the root image directory \"{}\"does not exist, please run \"genimage {}\" to generate the root image directory first!",
            b.rootimg.display(),
            b.name.as_deref().unwrap_or("<image>")
        )));
    }
    std::fs::create_dir_all(&b.destdir)
        .map_err(|e| Fail(format!("Cannot create {}: {e}", b.destdir.display())))?;
    let _lock = lock::acquire(&b.rootimg).map_err(|e| Fail(e.to_string()))?;
    let mut r = Runner::new(host, cancel);

    if !b.onlyinitrd {
        packages_phase(&p, &mut r)?;
        r.phase("postinstall", |r| postinstall::run(r, b))
            .map_err(|e| {
                gen_fail(
                    e,
                    "the image is built, its postinstall scripts did not all run",
                )
            })?;
    } else if !b.postinstall.is_empty() {
        r.info("postinstall scripts are not run with --onlyinitrd");
    }

    let tree = Tree::open(&b.rootimg).map_err(|e| Fail(e.to_string()))?;
    let notes = post::statelite(&tree, b.netboot_share.as_deref()).map_err(Fail)?;
    for n in notes {
        r.info(n);
    }
    post::patch_rc_sysinit(&tree).map_err(|e| Fail(e.to_string()))?;
    let mut notes = Vec::new();
    let dracut_version = p
        .backend
        .installed_version(&b.rootimg, "dracut")
        .unwrap_or_default();
    let iplan = initrd::plan(
        &tree,
        b,
        Some(dracut_version.as_str()).filter(|v| !v.is_empty()),
        &mut notes,
    )
    .map_err(Fail)?;
    for n in notes {
        r.info(n);
    }
    r.info(format!(
        "Enter the dracut mode. Dracut version: {dracut_version}. Dracut directory: {}.",
        iplan
            .xcat_module
            .as_deref()
            .and_then(Path::file_name)
            .map_or("dracut".into(), |n| n.to_string_lossy())
    ));
    match &iplan.xcat_module {
        Some(m) => r.info(format!("Using xCAT's dracut module from {}", m.display())),
        None => r.info(format!(
            "No xCAT installation with a dracut module was found (XCATROOT/share/xcat/netboot/{}/dracut): the initrds are built with dracut's stock modules only ({}); they do not contain xCAT's xcatroot and cannot netboot an xCAT node by themselves",
            b.family,
            iplan.modules()
        )),
    }
    r.check()
        .map_err(|e| gen_fail(e, "the previous kernel and initrds are unchanged"))?;
    let kernel = initrd::install_kernel(&tree, &iplan.kernel, &b.destdir)
        .map_err(|e| Fail(format!("Cannot copy the kernel {}: {e}", iplan.kernel.file)))?;
    r.info(format!(
        "kernel {} copied to {}",
        iplan.kernel.version,
        kernel.display()
    ));
    let initrds = r
        .phase("initrds", |r| initrd::build(r, b, &tree, &iplan))
        .map_err(|e| gen_fail(e, "the previous initrds are unchanged"))?;

    // The plugin's copy to tftp, atomic and checked.
    let mut copy_errors = Vec::new();
    if let Some(name) = &b.name {
        let dir = p.tftpdir.join("xcat/osimage").join(name);
        let mut files = initrds.clone();
        files.push(kernel.clone());
        if let Err(e) = std::fs::create_dir_all(&dir) {
            copy_errors.push(format!("Cannot create {}: {e}", dir.display()));
        } else {
            for f in &files {
                let fname = f
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let res = std::fs::File::open(f).and_then(|mut src| {
                    let mut s = Staged::create(&dir, &fname)?;
                    std::io::copy(&mut src, s.file())?;
                    s.commit(0o644)
                });
                if let Err(e) = res {
                    copy_errors.push(format!(
                        "Cannot copy {} to {}: {e}",
                        f.display(),
                        dir.display()
                    ));
                }
            }
        }
    }

    for (table, name, values) in &p.writeback {
        let vals: Vec<(&str, &str)> = values
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        r.host()
            .table_set(table, &[("imagename", name)], &vals)
            .map_err(|e| Fail(format!("Cannot update the {table} table for {name}: {e}")))?;
    }

    let size = gen::tree_size(&b.rootimg);
    let times: Vec<String> = r
        .times
        .iter()
        .map(|(n, d)| format!("{n} {:.0} s", d.as_secs_f64()))
        .collect();
    let host = r.host();
    host.info(format!(
        "genimage: {} built in {:.0} s ({})",
        b.name.as_deref().unwrap_or(&b.profile),
        started.elapsed().as_secs_f64(),
        times.join(", ")
    ));
    host.info(format!(
        "  rootimg  {} ({})",
        b.rootimg.display(),
        mib(size)
    ));
    for f in std::iter::once(&kernel).chain(initrds.iter()) {
        let len = std::fs::metadata(f).map(|m| m.len()).unwrap_or(0);
        host.info(format!("  {}  ({})", f.display(), mib(len)));
    }
    if let Some(n) = &b.name {
        host.info(format!("Next: packimage {n}"));
    }
    if !copy_errors.is_empty() {
        return Err(Fail(copy_errors.join("\n")));
    }
    Ok(())
}

/// The package phase and the post files: into a fresh tree that replaces rootimg only when
/// complete, or in place when rootimg already holds a system.
fn packages_phase(p: &Plan, r: &mut Runner) -> Result<()> {
    let b = &p.build;
    let fresh = !p.backend.is_bootstrapped(&b.rootimg);
    let partial = b.destdir.join(PARTIAL);
    let work = if fresh {
        let empty = std::fs::read_dir(&b.rootimg).map_or(true, |mut d| d.next().is_none());
        if b.rootimg.exists() && !empty {
            return Err(Fail(format!(
                "{} exists but holds no complete system (an earlier build stopped?); remove it (rmimage {}) and run genimage again",
                b.rootimg.display(),
                b.name.as_deref().unwrap_or("<image>")
            )));
        }
        remove_partial(&partial, r)?;
        std::fs::create_dir(&partial)
            .map_err(|e| Fail(format!("Cannot create {}: {e}", partial.display())))?;
        partial.clone()
    } else {
        b.rootimg.clone()
    };
    let state = if fresh {
        format!(
            "the partial image was removed; {} is unchanged",
            b.rootimg.display()
        )
    } else {
        format!(
            "{} may be partly updated; run genimage again",
            b.rootimg.display()
        )
    };
    let res = (|| {
        if fresh {
            r.phase("bootstrap", |r| p.backend.bootstrap(r, b, &work))?;
        }
        r.phase("packages", |r| p.backend.packages(r, b, &work))?;
        r.check()?;
        let tree = Tree::open(&work)?;
        for n in post::generic_post(&tree, b)? {
            r.info(n);
        }
        Ok(())
    })();
    if let Err(e) = res {
        if fresh {
            let _ = remove_partial(&partial, r);
        }
        return Err(gen_fail(e, &state));
    }
    if fresh {
        if b.rootimg.exists() {
            std::fs::remove_dir(&b.rootimg)
                .map_err(|e| Fail(format!("Cannot replace {}: {e}", b.rootimg.display())))?;
        }
        std::fs::rename(&partial, &b.rootimg).map_err(|e| {
            Fail(format!(
                "Cannot move {} to {}: {e}",
                partial.display(),
                b.rootimg.display()
            ))
        })?;
    }
    Ok(())
}

/// Removes what an earlier (or this, failed) fresh build left; never crosses a mount.
fn remove_partial(partial: &Path, r: &mut Runner) -> Result<()> {
    if std::fs::symlink_metadata(partial).is_err() {
        return Ok(());
    }
    if let Ok(real) = std::fs::canonicalize(partial) {
        no_mounts_under(&real)
            .map_err(|e| Fail(format!("Cannot remove {}: {e}", partial.display())))?;
    }
    let outcome = remove::remove_tree(partial, &|| false);
    if !outcome.errors.is_empty() || !outcome.skipped.is_empty() {
        let first = outcome
            .errors
            .first()
            .map(|e| e.to_string())
            .or_else(|| {
                outcome
                    .skipped
                    .first()
                    .map(|s| format!("{} is {}", s.path.display(), s.reason))
            })
            .unwrap_or_default();
        r.warning(format!(
            "Could not remove all of {}: {first}",
            partial.display()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::defs::Defs;
    use crate::host::local::LocalHost;

    fn parse_opts(args: &[&str]) -> std::result::Result<Opts, String> {
        let argv: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let defs = Defs::parse("clustersite:\n objtype=site\n").unwrap();
        let mut host = LocalHost::new(
            defs,
            None,
            Box::new(std::io::sink()),
            Box::new(std::io::sink()),
        );
        match parse(&argv, &mut host) {
            Ok(Parsed::Run(o)) => Ok(*o),
            Ok(Parsed::Done) => Err("done".into()),
            Err(Fail(t)) => Err(t),
        }
    }

    #[test]
    fn options_as_the_plugin_parses_them() {
        let o = parse_opts(&[
            "-n",
            "e1000,igb",
            "-i",
            "eth0",
            "-r",
            "eth1",
            "--noupdate",
            "--tempfile",
            "/tmp/x",
            "img",
        ])
        .unwrap();
        assert_eq!(o.name.as_deref(), Some("img"));
        assert_eq!(o.netdrivers.as_deref(), Some("e1000,igb"));
        assert_eq!(o.nodebootif.as_deref(), Some("eth0"));
        assert_eq!(o.otherifce.as_deref(), Some("eth1"));
        assert!(o.noupdate && !o.dryrun);
        let o = parse_opts(&[
            "-o",
            "debian12",
            "-p",
            "compute",
            "-a",
            "x86_64",
            "--dryrun",
            "--onlyinitrd",
            "-k",
            "6.1",
            "--permission=700",
            "--kerneldir",
            "/k",
            "-l",
            "4G",
            "-t",
            "1g",
            "-g",
            "1",
            "-m",
            "statelite",
            "--ignorekernelchk",
        ])
        .unwrap();
        assert_eq!(o.name, None);
        assert_eq!(
            (o.osver.as_deref(), o.profile.as_deref(), o.arch.as_deref()),
            (Some("debian12"), Some("compute"), Some("x86_64"))
        );
        assert!(o.dryrun && o.onlyinitrd && o.ignorekernelchk);
        assert_eq!(o.permission.as_deref(), Some("700"));
        assert_eq!(o.kernelver.as_deref(), Some("6.1"));
        assert_eq!(o.mode.as_deref(), Some("statelite"));
        // Perl truth: -o 0 is not given.
        assert_eq!(parse_opts(&["-o", "0", "img"]).unwrap().osver, None);
        assert!(parse_opts(&["--interactive", "img"])
            .unwrap_err()
            .contains("not supported by this engine"));
        assert!(parse_opts(&["--bogus", "img"])
            .unwrap_err()
            .starts_with("Unknown option --bogus"));
        assert_eq!(parse_opts(&["-h"]).unwrap_err(), "done");
        assert_eq!(parse_opts(&["--version"]).unwrap_err(), "done");
    }

    #[test]
    fn families_as_the_plugin_maps_them() {
        for (o, f) in [
            ("rhels9.4", "rh"),
            ("rocky9.4", "rocky"),
            ("alma9", "alma"),
            ("ol9", "ol"),
            ("debian12.5", "debian"),
            ("ubuntu24.04", "ubuntu"),
            ("sles15.5", "sles"),
            ("sles12sp5", "sles"),
            ("leap15.5", "sles"),
            ("centos-stream9", "centos-stream"),
        ] {
            assert_eq!(family_of(o), f, "{o}");
        }
    }

    #[test]
    fn profile_files_in_xcat_order() {
        assert_eq!(os_bases("rocky9.2"), ["rocky9.1", "rocky9.0", "rocky9"]);
        assert_eq!(os_bases("sles15sp5"), ["sles15"]);
        assert_eq!(os_bases("debian12"), Vec::<String>::new());
        let t = tempfile::tempdir().unwrap();
        let d = t.path();
        let touch = |n: &str| std::fs::write(d.join(n), "x\n").unwrap();
        touch("compute.pkglist");
        assert_eq!(
            profile_file(d, "debian12.5", "compute", "x86_64", "pkglist"),
            Some(d.join("compute.pkglist"))
        );
        touch("compute.debian12.pkglist");
        assert_eq!(
            profile_file(d, "debian12.5", "compute", "x86_64", "pkglist"),
            Some(d.join("compute.debian12.pkglist"))
        );
        touch("compute.x86_64.pkglist");
        assert_eq!(
            profile_file(d, "debian12.5", "compute", "x86_64", "pkglist"),
            Some(d.join("compute.x86_64.pkglist"))
        );
        touch("compute.debian12.3.x86_64.pkglist");
        assert_eq!(
            profile_file(d, "debian12.5", "compute", "x86_64", "pkglist"),
            Some(d.join("compute.debian12.3.x86_64.pkglist"))
        );
        touch("compute.debian12.5.x86_64.pkglist");
        assert_eq!(
            profile_file(d, "debian12.5", "compute", "x86_64", "pkglist"),
            Some(d.join("compute.debian12.5.x86_64.pkglist"))
        );
        assert_eq!(
            profile_file(d, "debian12.5", "service", "x86_64", "pkglist"),
            None
        );
    }

    #[test]
    fn osver_mode_rows_fit_the_tables() {
        // The four rows of the -o/-p form, as xCAT's save_image_data creates them.
        let mut defs = Defs::parse("clustersite:\n objtype=site\n").unwrap();
        let row = |pairs: &[(&str, &str)]| -> crate::protocol::Row {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        for m in ["netboot", "statelite"] {
            let keys = row(&[("imagename", &format!("debian12-x86_64-{m}-compute"))]);
            defs.table_set(
                "osimage",
                &keys,
                &row(&[
                    ("profile", "compute"),
                    ("imagetype", "linux"),
                    ("provmethod", m),
                    ("osname", "Linux"),
                    ("osvers", "debian12"),
                    ("osarch", "x86_64"),
                ]),
            )
            .unwrap();
            defs.table_set(
                "linuximage",
                &keys,
                &row(&[
                    ("permission", "755"),
                    ("pkgdir", "/install/debian12/x86_64"),
                    ("rootimgdir", "/install/netboot/debian12/x86_64/compute"),
                    ("pkglist", "/p"),
                ]),
            )
            .unwrap();
        }
        let text = defs.to_stanza();
        assert!(
            text.contains("debian12-x86_64-statelite-compute:"),
            "{text}"
        );
        assert!(text.contains("provmethod=statelite"), "{text}");
    }

    #[test]
    fn environvar_keeps_equals_signs() {
        assert_eq!(
            parse_environvar("A=1, B=x=y ,").unwrap_or_default(),
            [
                ("A".to_string(), "1".to_string()),
                ("B".to_string(), "x=y".to_string())
            ]
        );
        assert!(parse_environvar("novalue").is_err());
        assert!(parse_environvar("1A=2").is_err());
    }
}
