//! rmimage: remove an image's generated files (and with `--xcatdef` its definition), safely.
//!
//! Same options, messages and errorcodes as xCAT's rmimage.pm, with its sharp edges fixed
//! (see docs/rmimage.md): names and directories are checked before anything happens,
//! everything mounted under the root image is unmounted or nothing is deleted, deletion never
//! follows a symlink or leaves the image's filesystem, and failures are reported.

use super::Fail;
use crate::args::{self, Config};
use crate::cancel::Cancel;
use crate::fs::{mountinfo, remove};
use crate::host::{Host, HostExt};
use crate::image::{self, perl_true, shown};
use crate::lock;
use std::path::{Path, PathBuf};

/// rmimage.pm's GetOptions specification.
pub const SPECS: &[&str] = &["o=s", "a=s", "p=s", "h|help", "V|verbose", "xcatdef"];

/// The usage text, as stock prints it (leading empty line and `--xcatde` included).
pub const USAGE: &str =
    "\nUsage:\n    rmimage [-h | --help]\n    rmimage [-V | --verbose] imagename [--xcatde]";

const METHODS: &[&str] = &["netboot", "statelite", "raw", "sysclone"];

/// Where the image's files are, once the definition and the name have been resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    /// The image name, or `None` in the `-o/-a/-p` form.
    name: Option<String>,
    osver: String,
    arch: String,
    profile: String,
    method: Option<String>,
    dir: PathBuf,
}

/// Runs rmimage with xcatd's argument list.
pub fn run(argv: &[String], host: &mut dyn Host, cancel: &Cancel) {
    if let Err(Fail(text)) = try_run(argv, host, cancel) {
        host.error(text);
    }
}

fn try_run(argv: &[String], host: &mut dyn Host, cancel: &Cancel) -> Result<(), Fail> {
    let opts = args::parse(SPECS, Config::XCAT_PASS_THROUGH, argv);
    if opts.flag("h") {
        host.info(USAGE);
        return Ok(());
    }
    let verbose = opts.flag("V");
    let xcatdef = opts.flag("xcatdef");
    let (o, a, p) = (opts.str("o"), opts.str("a"), opts.str("p"));

    let name = match opts.rest.first() {
        Some(name) => {
            if verbose {
                host.info(format!("image name is {name}"));
            }
            if perl_true(a) || perl_true(o) || perl_true(p) {
                return Err(Fail(
                    "-o, -a and -p options are not allowed when a image name is specified.".into(),
                ));
            }
            if let Some(why) = image::component_problem(name) {
                // Stock treats "0" and "" as no name and wipes <tftpdir>/xcat/netboot (E22).
                log::info!("image name {name:?} refused: {why}");
                return Err(Fail(format!("Invalid image name {}", shown(name))));
            }
            Some(name.clone())
        }
        None => {
            if !(perl_true(o) && perl_true(a) && perl_true(p)) {
                return Err(Fail("Missing flag -o, -a or -p".into()));
            }
            if xcatdef {
                return Err(Fail(
                    "--xcatdef can not be used with the -o, -a or -p".into(),
                ));
            }
            None
        }
    };

    let installdir = host
        .site_get("installdir")?
        .unwrap_or_else(|| "/install".into());
    let tftpdir = host
        .site_get("tftpdir")?
        .unwrap_or_else(|| "/tftpboot".into());
    let installdir = checked_root(&installdir, "installdir")?;
    let tftpdir = checked_root(&tftpdir, "tftpdir")?;

    let target = match &name {
        Some(name) => resolve_by_name(name, &installdir, verbose, host)?,
        None => {
            let (o, a, p) = (o.unwrap_or(""), a.unwrap_or(""), p.unwrap_or(""));
            for (flag, v) in [("-o", o), ("-a", a), ("-p", p)] {
                if let Some(why) = image::component_problem(v) {
                    return Err(Fail(format!(
                        "Invalid value {} for {flag}: {why}",
                        shown(v)
                    )));
                }
            }
            Target {
                name: None,
                osver: o.into(),
                arch: a.into(),
                profile: p.into(),
                method: None,
                dir: image_dir(&installdir, o, a, p, None),
            }
        }
    };
    if verbose {
        host.info(format!("image directory is {}", target.dir.display()));
    }
    image::check_image_dir(&target.dir, &[&installdir, &tftpdir]).map_err(|why| {
        Fail(format!(
            "Refusing to remove image files in {}: {why}",
            target.dir.display()
        ))
    })?;
    if !target.dir.is_dir() {
        return Err(Fail(format!(
            "Image directory {} does not exist",
            target.dir.display()
        )));
    }

    let _lock = lock::acquire(&target.dir.join("rootimg")).map_err(|e| Fail(e.to_string()))?;

    if target.method.as_deref() == Some("sysclone") && target.arch != "s390x" {
        return Err(Fail(format!(
            "rmimage cannot be used to remove sysclone images for \"{}\" architecture",
            target.arch
        )));
    }

    let complete = remove_files(&target, &tftpdir, verbose, host, cancel)?;
    if !complete {
        return Err(Fail(
            "Image files were not completely removed from this management node; see the errors above. \
             The osimage definition was kept."
                .into(),
        ));
    }
    host.info("Image files have been removed successfully from this management node.");

    if target.name.is_none() || target.method.as_deref() == Some("statelite") {
        host.info(format!(
            "Please be aware that the statelite image files on the diskful service nodes are not removed, \
             you can remove the image files on the service nodes manually if necessary, for example, use \
             command \"rsync -az --delete {} <sn>:/\" to remove the image files on the service nodes, where \
             the <sn> is the hostname of the service node.",
            installdir.display()
        ));
    }

    if let (true, Some(name)) = (xcatdef, &target.name) {
        host.info(format!("Removing osimage definition for {name}."));
        let mut failed = Vec::new();
        for table in ["osimage", "linuximage", "nimimage", "winimage"] {
            if let Err(e) = host.table_delete(table, &[("imagename", name)]) {
                failed.push(format!("{table}: {e}"));
            }
        }
        if failed.is_empty() {
            host.info(format!(
                "osimage definition for {name} is removed successfully."
            ));
        } else {
            return Err(Fail(format!(
                "Failed to remove the osimage definition for {name} ({})",
                failed.join("; ")
            )));
        }
    }
    Ok(())
}

/// installdir and tftpdir are roots our containment checks rely on, so they must be sane.
fn checked_root(dir: &str, what: &str) -> Result<PathBuf, Fail> {
    image::normalize_dir(dir).map_err(|why| {
        Fail(format!(
            "The site attribute {what} ({}) cannot be used: {why}",
            shown(dir)
        ))
    })
}

/// `<installdir>/netboot/<osver>/<arch>/<profile>`, or `<installdir>/<method>/...` for s390x raw
/// and sysclone images, as stock computes it.
fn image_dir(
    installdir: &Path,
    osver: &str,
    arch: &str,
    profile: &str,
    method: Option<&str>,
) -> PathBuf {
    let top = match method {
        Some(m @ ("raw" | "sysclone")) if arch == "s390x" => m,
        _ => "netboot",
    };
    installdir.join(top).join(osver).join(arch).join(profile)
}

fn invalid_method(m: &str) -> Fail {
    Fail(format!(
        "Invalid method \"{m}\", the rmimage command can only be used to remove the netboot, statelite, sysclone or raw image files"
    ))
}

fn resolve_by_name(
    name: &str,
    installdir: &Path,
    verbose: bool,
    host: &mut dyn Host,
) -> Result<Target, Fail> {
    let row = host
        .table_get(
            "osimage",
            &[("imagename", name)],
            &["osvers", "osarch", "profile", "provmethod"],
        )
        .map_err(|e| Fail(format!("Can not open osimage table. ({e})")))?
        .unwrap_or_default();
    let get = |k: &str| row.get(k).cloned();
    let (mut osver, mut arch, mut profile, mut method) = (
        get("osvers"),
        get("osarch"),
        get("profile"),
        get("provmethod"),
    );
    if verbose {
        host.info(format!(
            "For osimage {name}: osver = {}, arch = {}, profile = {}, method = {} in osimage table",
            osver.as_deref().unwrap_or(""),
            arch.as_deref().unwrap_or(""),
            profile.as_deref().unwrap_or(""),
            method.as_deref().unwrap_or("")
        ));
    }
    if let Some(m) = method.as_deref().filter(|m| perl_true(Some(m))) {
        if !METHODS.contains(&m) {
            return Err(invalid_method(m));
        }
    }
    let rootimgdir = host
        .table_get("linuximage", &[("imagename", name)], &["rootimgdir"])
        .map_err(|e| Fail(format!("Can not open linuximage table. ({e})")))?
        .and_then(|r| r.get("rootimgdir").cloned())
        .filter(|d| perl_true(Some(d)));
    if verbose {
        host.info(format!(
            "For osimage {name}: rootimgdir = {} in linuximage table",
            rootimgdir.as_deref().unwrap_or("")
        ));
    }
    let dir = match rootimgdir {
        Some(d) => image::normalize_dir(&d).map_err(|why| {
            Fail(format!(
                "Invalid rootimgdir {} for osimage {name}: {why}",
                shown(&d)
            ))
        })?,
        None => {
            if !(perl_true(osver.as_deref())
                && perl_true(arch.as_deref())
                && perl_true(profile.as_deref()))
            {
                // Stock splits the name into at most 4 fields; all four override the table.
                let mut f = name.splitn(4, '-').map(str::to_string);
                osver = f.next();
                arch = f.next();
                method = f.next();
                profile = f.next();
                let all = [&osver, &arch, &method, &profile];
                if !all.iter().all(|v| perl_true(v.as_deref())) {
                    return Err(Fail(format!("Invalid image name {}", shown(name))));
                }
                let m = method.as_deref().unwrap_or("");
                if !METHODS.contains(&m) {
                    return Err(invalid_method(m));
                }
            }
            let (o, a, p) = (
                osver.as_deref().unwrap_or(""),
                arch.as_deref().unwrap_or(""),
                profile.as_deref().unwrap_or(""),
            );
            for (what, v) in [("osvers", o), ("osarch", a), ("profile", p)] {
                if let Some(why) = image::component_problem(v) {
                    return Err(Fail(format!(
                        "Invalid {what} {} for osimage {name}: {why}",
                        shown(v)
                    )));
                }
            }
            image_dir(installdir, o, a, p, method.as_deref())
        }
    };
    Ok(Target {
        name: Some(name.to_string()),
        osver: osver.unwrap_or_default(),
        arch: arch.unwrap_or_default(),
        profile: profile.unwrap_or_default(),
        method,
        dir,
    })
}

/// The generated files stock rmimage removes: kernel, initrds, then every `rootimg.*`, sorted.
fn candidate_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = ["kernel", "initrd-stateless.gz", "initrd-statelite.gz"]
        .iter()
        .map(|f| dir.join(f))
        .collect();
    let mut archives: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().as_encoded_bytes().starts_with(b"rootimg."))
        .map(|e| e.path())
        .collect();
    archives.sort();
    files.extend(archives);
    files
}

/// Unmounts everything at or under `rootimg` (deepest first) and checks that nothing is left.
fn unmount_under(rootimg: &Path, verbose: bool, host: &mut dyn Host) -> Result<(), Fail> {
    // A failed realpath must never mean "every mount" (xCAT E23).
    let real = std::fs::canonicalize(rootimg).map_err(|e| {
        Fail(format!(
            "Cannot resolve {}: {e}; nothing was removed",
            rootimg.display()
        ))
    })?;
    let read = || {
        mountinfo::read().map_err(|e| {
            Fail(format!(
                "Cannot read the mount table: {e}; nothing was removed"
            ))
        })
    };
    let mounts = read()?;
    for m in mountinfo::under(&mounts, &real) {
        if verbose {
            host.info(format!("Unmounting {}", m.mount_point.display()));
        }
        // Lazy, as stock does: a busy mount is detached now and freed when it is idle.
        if let Err(e) = nix::mount::umount2(&m.mount_point, nix::mount::MntFlags::MNT_DETACH) {
            log::info!("umount {}: {e}", m.mount_point.display());
        }
    }
    let left = read()?;
    let still: Vec<String> = mountinfo::under(&left, &real)
        .iter()
        .map(|m| m.mount_point.display().to_string())
        .collect();
    if !still.is_empty() {
        return Err(Fail(format!(
            "{} still mounted under {} and cannot be unmounted; nothing was removed. \
             Unmount {} manually and try again.",
            still.join(", "),
            rootimg.display(),
            if still.len() == 1 { "it" } else { "them" }
        )));
    }
    Ok(())
}

/// Reports the outcome of one confined removal; true when it removed everything.
fn report(outcome: &remove::Outcome, host: &mut dyn Host) -> bool {
    for s in &outcome.skipped {
        host.warning(format!(
            "{} is {} and was left alone",
            s.path.display(),
            s.reason
        ));
    }
    const MAX_SHOWN: usize = 20;
    for e in outcome.errors.iter().take(MAX_SHOWN) {
        host.error(format!("Cannot remove {e}"));
    }
    if outcome.errors.len() > MAX_SHOWN {
        host.error(format!(
            "... and {} more files could not be removed",
            outcome.errors.len() - MAX_SHOWN
        ));
    }
    outcome.errors.is_empty() && outcome.skipped.is_empty()
}

/// Removes the image's files in stock order. Returns whether everything went.
fn remove_files(
    t: &Target,
    tftpdir: &Path,
    verbose: bool,
    host: &mut dyn Host,
    cancel: &Cancel,
) -> Result<bool, Fail> {
    let interrupted = || Fail("rmimage was interrupted; the image may be partly removed".into());
    let files = candidate_files(&t.dir);
    let rootimg = t.dir.join("rootimg");
    let is_cancelled = || cancel.is_cancelled();
    let mut complete = true;

    match std::fs::symlink_metadata(&rootimg) {
        Ok(md) if md.is_dir() => {
            unmount_under(&rootimg, verbose, host)?;
            if cancel.is_cancelled() {
                return Err(interrupted());
            }
            host.info(format!("Removing directory {}", rootimg.display()));
            let outcome = remove::remove_tree(&rootimg, &is_cancelled);
            if cancel.is_cancelled() {
                return Err(interrupted());
            }
            complete &= report(&outcome, host);
        }
        // A symlink to a directory: stock removes the link and keeps the target; so do we.
        Ok(md) if md.file_type().is_symlink() && rootimg.is_dir() => {
            host.info(format!("Removing directory {}", rootimg.display()));
            if let Err(e) = remove::remove_file(&rootimg) {
                host.error(format!("Cannot remove {}: {e}", rootimg.display()));
                complete = false;
            }
        }
        _ => {}
    }

    for f in files {
        if cancel.is_cancelled() {
            return Err(interrupted());
        }
        if f.is_file() {
            host.info(format!("Removing file {}", f.display()));
            if let Err(e) = remove::remove_file(&f) {
                host.error(format!("Cannot remove {}: {e}", f.display()));
                complete = false;
            }
        }
    }

    // packimage's segment index beside the image (src/pack/segcache.rs): only describes
    // the rootimg.* files just removed.
    let cache = t.dir.join(crate::pack::segcache::DIR);
    if std::fs::symlink_metadata(&cache).is_ok_and(|m| m.is_dir()) {
        if cancel.is_cancelled() {
            return Err(interrupted());
        }
        host.info(format!("Removing directory {}", cache.display()));
        complete &= report(&remove::remove_tree(&cache, &is_cancelled), host);
    }

    let tftp = match &t.name {
        Some(name) => tftpdir.join("xcat").join("osimage").join(name),
        None => tftpdir
            .join("xcat")
            .join("netboot")
            .join(&t.osver)
            .join(&t.arch)
            .join(&t.profile),
    };
    if std::fs::symlink_metadata(&tftp).is_ok_and(|m| m.is_dir()) {
        host.info(format!("Removing directory {}", tftp.display()));
        complete &= report(&remove::remove_tree(&tftp, &is_cancelled), host);
    }

    let whole_dir = matches!(t.method.as_deref(), Some("raw" | "netboot" | "sysclone"));
    if t.arch == "s390x" && whole_dir && t.dir.is_dir() {
        host.info(format!("Removing directory {}", t.dir.display()));
        complete &= report(&remove::remove_tree(&t.dir, &is_cancelled), host);
    }
    if cancel.is_cancelled() {
        return Err(interrupted());
    }
    Ok(complete)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_dirs_as_stock() {
        let i = Path::new("/install");
        assert_eq!(
            image_dir(i, "rhels9", "x86_64", "compute", None),
            PathBuf::from("/install/netboot/rhels9/x86_64/compute")
        );
        assert_eq!(
            image_dir(i, "sles15", "s390x", "compute", Some("raw")),
            PathBuf::from("/install/raw/sles15/s390x/compute")
        );
        assert_eq!(
            image_dir(i, "sles15", "s390x", "c", Some("sysclone")),
            PathBuf::from("/install/sysclone/sles15/s390x/c")
        );
        assert_eq!(
            image_dir(i, "sles15", "s390x", "c", Some("netboot")),
            PathBuf::from("/install/netboot/sles15/s390x/c")
        );
        assert_eq!(
            image_dir(i, "rhels9", "x86_64", "c", Some("raw")),
            PathBuf::from("/install/netboot/rhels9/x86_64/c")
        );
    }

    #[test]
    fn candidates_in_stock_order() {
        let t = tempfile::tempdir().unwrap();
        for f in [
            "rootimg.tar.xz",
            "rootimg.cpio.gz",
            "rootimg-statelite.gz",
            "other",
            "rootimgx",
        ] {
            std::fs::write(t.path().join(f), b"x").unwrap();
        }
        let names: Vec<String> = candidate_files(t.path())
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "kernel",
                "initrd-stateless.gz",
                "initrd-statelite.gz",
                "rootimg.cpio.gz",
                "rootimg.tar.xz"
            ]
        );
    }
}
