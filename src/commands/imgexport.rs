//! imgexport: bundle an image (its definition, its files, optional extras) into one `.tgz`
//! that xCAT's own imgimport reads.
//!
//! Same command line, bundle layout, manifest and messages as xCAT's imgport.pm (`xexport`),
//! checked against the real imgimport. Then better (docs/imgexport.md): nothing is staged,
//! every member streams from its source file into the gzip tar; the bundle has no name until
//! it is complete; already-compressed members are stored, not deflated again; every file the
//! manifest names is checked before anything is written, and a missing one is an error rather
//! than a "Done!" bundle that does not import; no shell anywhere (scp gets an argument
//! vector); `--checksum` writes a `sha256sum -c` sidecar.

use super::Fail;
use crate::args::{self, Config};
use crate::cancel::Cancel;
use crate::export::bundle::{self, BundleWriter};
use crate::export::layout::{self, Names, Referenced};
use crate::export::manifest::{self, Value};
use crate::export::output::{self, Output};
use crate::export::sha256;
use crate::host::{Host, HostError, HostExt};
use crate::image::{self, perl_true, shown};
use crate::pack::compress::{self, Compressor};
use crate::pack::content;
use crate::pack::cpio::CpioWriter;
use crate::pack::entry::{ArchiveWriter, Entry, Kind, Source};
use crate::pack::inject::{self, Overlay};
use crate::pack::walk;
use crate::proc::{self, Step};
use crate::protocol::Row;
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::io::{self, BufWriter, Read, Seek, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// imgport.pm's GetOptions specification for imgexport, plus `--checksum`.
pub const SPECS: &[&str] = &[
    "h|?|help",
    "p|postscripts=s",
    "e|extra=s@",
    "R|remotehost=s",
    "v|verbose",
    "checksum",
];

/// The usage text, one `data` line each, as stock prints it (the last two start with a tab),
/// then our addition.
pub const USAGE: &[&str] = &[
    "imgexport: Creates a tarball (bundle) of an existing xCAT image",
    "Usage: ",
    "\timgexport [-h|--help]",
    "\timgexport <image_name> [destination] [[-e|--extra <file:dir> ] ... ] [-p|--postscripts <node_name>] [-R|--remotehost <userid@host>] [-v]",
    "\txcat-imaged also takes: --checksum (a sha256sum -c file <bundle>.sha256 beside the bundle)",
];

const KIT_COLS: &[&str] = &[
    "kitname",
    "basename",
    "description",
    "version",
    "release",
    "ostype",
    "isinternal",
    "kitdeployparams",
    "kitdir",
    "comments",
    "disable",
];

const KITREPO_COLS: &[&str] = &[
    "kitreponame",
    "kitname",
    "osbasename",
    "osmajorversion",
    "osminorversion",
    "osarch",
    "compat_osbasenames",
    "kitrepodir",
    "comments",
    "disable",
];

const KITCOMPONENT_COLS: &[&str] = &[
    "kitcompname",
    "description",
    "kitname",
    "kitreponame",
    "basename",
    "version",
    "release",
    "serverroles",
    "kitpkgdeps",
    "prerequisite",
    "driverpacks",
    "kitcompdeps",
    "postbootscripts",
    "genimage_postinstall",
    "exlist",
    "comments",
    "disable",
];

/// The compressed root images a netboot image may have, in xCAT's order of preference
/// (`SvrUtils::searchcompressedrootimg`).
const ROOTIMG_ORDER: &[&str] = &[
    "rootimg.cpio.gz",
    "rootimg.cpio.xz",
    "rootimg.tar.gz",
    "rootimg.tar.xz",
    "rootimg.sfs",
    "rootimg.gz",
];

type Result<T> = std::result::Result<T, Fail>;

/// Reports every error but the last, which ends the command.
fn fail_all(host: &mut dyn Host, mut errors: Vec<String>) -> Result<()> {
    let Some(last) = errors.pop() else {
        return Ok(());
    };
    for e in errors {
        host.error(e);
    }
    Err(Fail(last))
}

/// What the command line asked for.
struct Opts {
    name: String,
    dest: Option<String>,
    extras: Vec<String>,
    node: Option<String>,
    remote: Option<String>,
    verbose: bool,
    checksum: bool,
}

/// Where the request came from.
struct Ctx<'a> {
    cwd: Option<&'a str>,
    xcatroot: String,
}

/// What a member's content is.
enum Content {
    /// Directories and symlinks.
    None,
    /// No member at all: only the announcement (a file already stored under this name).
    Message,
    /// A file read when the member is written; `true` to follow a symlink there (as `cp`
    /// does for the files the manifest names), `false` for members of a walked tree.
    Disk(PathBuf, bool),
    /// Bytes made here (manifest.xml, litefile.csv).
    Bytes(Vec<u8>),
    /// The statelite root tree, packed into a scratch file first.
    RootimgTree,
}

/// One archive member.
struct Member {
    entry: Entry,
    content: Content,
    /// The `data` line stock prints before this file (its path).
    announce: Option<String>,
}

/// The statelite root tree to pack into `rootimgtree.gz`.
struct Statelite {
    rootimg: PathBuf,
}

/// Where the bundle goes.
enum Dest {
    /// `<dir>/<name>`.
    Local { dir: PathBuf, create_dir: bool },
    /// Built in `workdir`, then `scp`'d to `<remote>:<path>`.
    Remote {
        workdir: PathBuf,
        create_dir: bool,
        remote: String,
        path: String,
    },
}

/// Everything resolved and checked; running it is all that is left.
struct Plan {
    shown_name: String,
    imagedir: String,
    bundle_name: String,
    dest: Dest,
    members: Vec<Member>,
    statelite: Option<Statelite>,
    verbose: bool,
    checksum: bool,
    /// A sidecar left by an earlier export with --checksum, which this one would make stale.
    stale_sidecar: Option<PathBuf>,
}

/// Runs imgexport with xcatd's argument list and the request's cwd (absent for REST).
pub fn run(
    argv: &[String],
    cwd: Option<&str>,
    xcatroot: Option<&str>,
    host: &mut dyn Host,
    cancel: &Cancel,
) {
    let ctx = Ctx {
        cwd,
        xcatroot: xcatroot
            .unwrap_or("/opt/xcat")
            .trim_end_matches('/')
            .to_string(),
    };
    if let Err(Fail(text)) = try_run(argv, &ctx, host, cancel) {
        host.error(text);
    }
}

fn usage(host: &mut dyn Host) {
    for l in USAGE {
        host.data(*l);
    }
}

fn try_run(argv: &[String], ctx: &Ctx, host: &mut dyn Host, cancel: &Cancel) -> Result<()> {
    if argv.is_empty() {
        usage(host);
        // Stock sends the usage with errorcode 1; an error needs a text here.
        return Err(Fail("imgexport needs an image name.".into()));
    }
    let o = args::parse(SPECS, Config::XCAT_NO_PASS_THROUGH, argv);
    // Stock ignores what GetOptions warns about (it reaches only xcatd's log); we show it.
    for w in &o.warnings {
        host.warning(format!("{w} (ignored, as xCAT's imgexport ignores it)"));
    }
    if o.flag("h") {
        usage(host);
        return Ok(());
    }
    let opts = Opts {
        name: o.rest.first().cloned().unwrap_or_default(),
        dest: o.rest.get(1).cloned(),
        extras: o.list("e").to_vec(),
        node: o.str("p").map(str::to_string),
        remote: o.str("R").map(str::to_string),
        verbose: o.flag("v"),
        checksum: o.flag("checksum"),
    };
    let installdir = host
        .site_get("installdir")?
        .unwrap_or_else(|| "/install".into());
    let tmpdir = host.site_get("tmpdir")?;
    // Without a cwd (REST) the bundle goes to <installdir>/export, not to /.
    let default_dir = format!("{}/export", installdir.trim_end_matches('/'));
    let shown_dir = ctx.cwd.unwrap_or(&default_dir).to_string();
    match &opts.remote {
        None => host.data(format!("Exporting {} to {shown_dir}...", opts.name)),
        Some(r) => host.data(format!("Exporting {} to {r}...", opts.name)),
    }
    let plan = plan(
        &opts,
        ctx,
        &installdir,
        tmpdir.as_deref(),
        &default_dir,
        host,
    )?;
    execute(&plan, host, cancel)
}

/// Rows as the table layer gives them: NULL and empty (`/^$/`) columns left out.
fn clean(row: Row) -> Row {
    row.into_iter()
        .filter(|(_, v)| !v.is_empty() && v != "\n")
        .collect()
}

/// Values that would make the manifest unreadable are refused up front.
fn check_values(table: &str, name: &str, row: &Row) -> Result<()> {
    for (k, v) in row {
        if let Some(why) = manifest::value_problem(v) {
            return Err(Fail(format!(
                "{table}.{k} of {name} cannot be exported: {why}"
            )));
        }
    }
    Ok(())
}

/// `-r`: readable by us.
fn readable(p: &Path) -> bool {
    nix::unistd::access(p, nix::unistd::AccessFlags::R_OK).is_ok()
}

/// A path from a table: relative ones are read against `/`, as stock (running in xcatd,
/// whose cwd is `/`) reads them.
fn table_path(p: &str) -> PathBuf {
    Path::new("/").join(p)
}

/// Perl's `chop` until `<base>/<dd>` is readable (or `dd` is false), as `look_for_file` does;
/// with the verbose `not in` lines.
fn chop_distro(base: &str, osvers: &str, verbose: bool, host: &mut dyn Host) -> String {
    let mut dd = if osvers.contains("win") {
        "windows".to_string()
    } else {
        osvers.to_string()
    };
    while !readable(&table_path(&format!("{base}/{dd}"))) && perl_true(Some(&dd)) {
        if verbose {
            host.data(format!("not in  {base}/{dd}..."));
        }
        dd.pop();
    }
    dd
}

/// imgport.pm's `look_for_file`: a template or pkglist by profile, osvers and arch under
/// each base; anything else at `<base>/<dd>/<arch>/<profile>/<file>`.
fn look_for_file(
    file: &str,
    bases: &[String],
    os: &Row,
    verbose: bool,
    host: &mut dyn Host,
) -> Option<String> {
    let profile = os.get("profile").map_or("", String::as_str);
    let arch = os.get("osarch").map_or("", String::as_str);
    let osvers = os.get("osvers").map_or("", String::as_str);
    for d in bases {
        let dd = chop_distro(d, osvers, verbose, host);
        if perl_true(Some(osvers)) && (file == "tmpl" || file == "pkglist") {
            if verbose {
                host.data(format!("looking in {d}/{dd}..."));
            }
            for cand in [
                format!("{d}/{dd}/{profile}.{osvers}.{arch}.{file}"),
                format!("{d}/{dd}/{profile}.{osvers}.{file}"),
                format!("{d}/{dd}/{profile}.{arch}.{file}"),
                format!("{d}/{dd}/{profile}.{file}"),
            ] {
                if readable(&table_path(&cand)) {
                    return Some(cand);
                }
            }
        } else {
            let cand = format!("{d}/{dd}/{arch}/{profile}/{file}");
            if readable(&table_path(&cand)) {
                return Some(cand);
            }
        }
    }
    None
}

/// `-f` on a path string.
fn is_file(p: &str) -> bool {
    std::fs::metadata(table_path(p)).is_ok_and(|m| m.is_file())
}

/// The regular `*.img` files of `dir`, sorted.
fn raw_images(dir: &str) -> io::Result<Vec<String>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(table_path(dir))? {
        let e = e?;
        let name = e.file_name();
        let n = name.to_string_lossy();
        if n.ends_with(".img") && std::fs::metadata(e.path()).is_ok_and(|m| m.is_file()) {
            out.push(format!("{dir}/{n}"));
        }
    }
    out.sort();
    Ok(out)
}

/// `s/\s+/_/g`.
fn mangle(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut in_space = false;
    for c in name.chars() {
        if c.is_ascii_whitespace() || c == '\u{b}' {
            if !in_space {
                out.push('_');
            }
            in_space = true;
        } else {
            out.push(c);
            in_space = false;
        }
    }
    out
}

/// File::Basename's `fileparse` (no suffixes): (name, directory part with its trailing `/`,
/// or `./` when there is none).
fn fileparse(p: &str) -> (String, String) {
    match p.rfind('/') {
        Some(i) => (p[i + 1..].to_string(), p[..=i].to_string()),
        None => (p.to_string(), "./".to_string()),
    }
}

/// Why a bundle file name cannot be used, if it cannot.
fn bundle_name_problem(name: &str) -> Option<&'static str> {
    if name == "." || name == ".." {
        Some("it is . or ..")
    } else if name.chars().any(char::is_control) {
        Some("it contains control characters")
    } else if name.len() > 200 {
        Some("it is longer than 200 bytes")
    } else {
        None
    }
}

/// The characters we pass to scp in a remote host or path: nothing a remote shell (legacy
/// scp mode) would interpret.
fn remote_safe(s: &str, extra: &str) -> bool {
    !s.is_empty()
        && !s.starts_with('-')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._+,=%@/~-".contains(c) || extra.contains(c))
}

fn plan(
    o: &Opts,
    ctx: &Ctx,
    installdir: &str,
    tmpdir: Option<&str>,
    default_dir: &str,
    host: &mut dyn Host,
) -> Result<Plan> {
    let name = o.name.clone();
    let not_found = || {
        let n = if name.chars().any(char::is_control) {
            shown(&name)
        } else {
            name.clone()
        };
        Fail(format!("Cannot find image '{n}' from the osimage table."))
    };
    if image::component_problem(&name).is_some() {
        return Err(not_found());
    }
    let os = host
        .table_get(
            "osimage",
            &[("imagename", &name)],
            crate::defs::OSIMAGE_COLUMNS,
        )
        .map_err(|e| Fail(format!("Unable to open table 'osimage'. ({e})")))?
        .map(clean)
        .ok_or_else(not_found)?;
    let get = |k: &str| os.get(k).cloned().unwrap_or_default();
    let mut errors = Vec::new();
    for col in ["provmethod", "profile", "osvers", "osarch"] {
        if !perl_true(os.get(col).map(String::as_str)) {
            errors.push(format!(
                "The '{col}' field is not set for '{name}' in the osimage table."
            ));
        }
    }
    let pm = get("provmethod");
    let arch = get("osarch");
    let osvers = get("osvers");
    let has = |s: &str| pm.contains(s);
    if !["install", "netboot", "statelite", "raw", "sysclone"]
        .iter()
        .any(|m| has(m))
    {
        errors.push(format!("Exporting images with 'provemethod' {pm} is not supported. Hint: install, netboot, statelite, or raw"));
    }
    if has("sysclone") && !arch.contains("s390x") {
        errors.push(format!(
            "Exporting images with 'provemethod' {pm} is not supported for osarch '{arch}'"
        ));
    }
    fail_all(host, errors)?;
    check_values("osimage", &name, &os)?;

    let mut li = host
        .table_get(
            "linuximage",
            &[("imagename", &name)],
            crate::defs::LINUXIMAGE_COLUMNS,
        )
        .map_err(|e| Fail(format!("Unable to open table 'linuximage' ({e})")))?
        .map(clean)
        .ok_or_else(|| {
            Fail(format!(
                "Cannot find image '{name}' from the linuximage table."
            ))
        })?;
    check_values("linuximage", &name, &li)?;

    let kits = read_kits(&os, host)?;

    // ---- files (get_files) ----------------------------------------------------------------
    let mut top: BTreeMap<String, Value> = BTreeMap::new();
    let mut errors = Vec::new();
    let installroot = installdir.to_string();
    let xr = &ctx.xcatroot;
    let profile = get("profile");
    let mut raw_files: Vec<String> = Vec::new();
    if has("install") && !li.contains_key("template") {
        let bases = [
            format!("{installroot}/custom/install"),
            format!("{xr}/share/xcat/install"),
        ];
        match look_for_file("tmpl", &bases, &os, o.verbose, host) {
            Some(t) => {
                host.data(t.clone());
                li.insert("template".into(), t);
            }
            None => errors.push(format!("Couldn't find install template for {name}")),
        }
    }
    if has("install") {
        top.insert("media".into(), Value::scalar("required"));
    }
    let netboot_bases = [
        format!("{installroot}/custom/netboot"),
        format!("{xr}/share/xcat/netboot"),
    ];
    let image_bases = [format!("{installroot}/netboot")];
    let rootimgdir = li.get("rootimgdir").cloned();
    if let Some(d) = &rootimgdir {
        // As packimage and rmimage check it: the bundle would carry files from wherever it
        // points, and imgimport would recreate the image there.
        let why = match image::normalize_dir(d) {
            Ok(dir) if image::depth(&dir) < 2 => Some("it is / or a top-level directory".into()),
            Ok(_) => None,
            Err(why) => Some(why),
        };
        if let Some(why) = why {
            return Err(Fail(format!(
                "Invalid rootimgdir {} for osimage {name}: {why}",
                shown(d)
            )));
        }
    }
    if !osvers.contains("esx") {
        if has("netboot") {
            if arch.contains("s390x") {
                let dir = format!("{installroot}/netboot/{osvers}/s390x/{profile}");
                match raw_images(&dir) {
                    Ok(f) => raw_files = f,
                    Err(e) => errors.push(format!(
                        "Could not open image files in directory {dir} ({e})"
                    )),
                }
            } else {
                if !li.contains_key("pkglist") {
                    match look_for_file("pkglist", &netboot_bases, &os, o.verbose, host) {
                        Some(p) => {
                            li.insert("pkglist".into(), p);
                        }
                        None => errors.push(format!("Couldn't find pkglist file for {name}")),
                    }
                }
                let (ramdisk, kernel, rootimg) = match &rootimgdir {
                    Some(d) => {
                        let f = |n: &str| Some(format!("{d}/{n}")).filter(|p| is_file(p));
                        (
                            f("initrd-stateless.gz"),
                            f("kernel"),
                            ROOTIMG_ORDER.iter().find_map(|n| f(n)),
                        )
                    }
                    None => (
                        look_for_file("initrd-stateless.gz", &image_bases, &os, o.verbose, host),
                        look_for_file("kernel", &image_bases, &os, o.verbose, host),
                        ROOTIMG_ORDER
                            .iter()
                            .find_map(|n| look_for_file(n, &image_bases, &os, o.verbose, host)),
                    ),
                };
                match ramdisk {
                    Some(r) => {
                        top.insert("ramdisk".into(), Value::Scalar(r));
                    }
                    None => errors.push(format!(
                        "Couldn't find ramdisk (initrd-stateless.gz) for  {name}"
                    )),
                }
                match kernel {
                    Some(k) => {
                        top.insert("kernel".into(), Value::Scalar(k));
                    }
                    None => errors.push(format!("Couldn't find kernel (kernel) for  {name}")),
                }
                match rootimg {
                    Some(r) => {
                        top.insert("rootimg".into(), Value::Scalar(r));
                    }
                    None => errors.push(format!("Couldn't find compressed rootimg for {name}")),
                }
            }
        } else if has("statelite") {
            if !li.contains_key("pkglist") {
                match look_for_file("pkglist", &netboot_bases, &os, o.verbose, host) {
                    Some(p) => {
                        li.insert("pkglist".into(), p);
                    }
                    None => errors.push(format!("Couldn't find pkglist file for {name}")),
                }
            }
            let (kernel, ramdisk) = match &rootimgdir {
                Some(d) => {
                    let f = |n: &str| Some(format!("{d}/{n}")).filter(|p| is_file(p));
                    (f("kernel"), f("initrd-statelite.gz"))
                }
                None => (
                    look_for_file("kernel", &image_bases, &os, o.verbose, host),
                    look_for_file("initrd-statelite.gz", &image_bases, &os, o.verbose, host),
                ),
            };
            match kernel {
                Some(k) => {
                    top.insert("kernel".into(), Value::Scalar(k));
                }
                None => errors.push(format!("Couldn't find kernel (kernel) for  {name}")),
            }
            match ramdisk {
                Some(r) => {
                    top.insert("ramdisk".into(), Value::Scalar(r));
                }
                None => errors.push(format!(
                    "Couldn't find ramdisk (initrd-statelite.gz) for  {name}"
                )),
            }
        }
    }
    if (has("raw") || has("sysclone")) && arch.contains("s390x") {
        let dir = format!("{installroot}/{pm}/{osvers}/s390x/{profile}");
        match raw_images(&dir) {
            Ok(f) => raw_files.extend(f),
            Err(e) => errors.push(format!(
                "Could not open image files in directory {dir} ({e})"
            )),
        }
    }
    if !raw_files.is_empty() {
        let mut files = BTreeMap::new();
        files.insert(
            "files".to_string(),
            Value::List(raw_files.iter().cloned().map(Value::Scalar).collect()),
        );
        top.insert("rawimagefiles".into(), Value::Map(files));
    }
    fail_all(host, errors)?;

    // ---- extras and postscripts -------------------------------------------------------------
    let extras = read_extras(&o.extras, ctx.cwd, host)?;
    if let Some(node) = &o.node {
        let (ps, pbs) = postscripts(node, host)?;
        if let Some(ps) = ps {
            top.insert("postscripts".into(), Value::Scalar(ps));
        }
        if let Some(pbs) = pbs {
            top.insert("postbootscripts".into(), Value::Scalar(pbs));
        }
    }

    // ---- statelite: the root tree and the litefile rows -----------------------------------
    let imagedir = mangle(&name);
    let mut generated: Vec<(String, Vec<u8>)> = Vec::new();
    let statelite = if pm == "statelite" {
        let Some(dir) = rootimgdir.clone() else {
            return Err(Fail("Couldn't locate the root image directory. ".into()));
        };
        let rootimg = table_path(&dir).join("rootimg");
        if !std::fs::symlink_metadata(&rootimg).is_ok_and(|m| m.is_dir()) {
            return Err(Fail(format!(
                "{} does not exist or is not a directory, so there is no root tree to export (run genimage first)",
                rootimg.display()
            )));
        }
        let csv = litefile_csv(&name, &imagedir, os.get("groups"), host)?;
        top.insert(
            "rootimgtree".into(),
            Value::Scalar(format!("{dir}/rootimgtree.gz")),
        );
        top.insert(
            "litefile".into(),
            Value::Scalar(format!("{dir}/litefile.csv")),
        );
        generated.push(("litefile.csv".into(), csv));
        Some(Statelite { rootimg })
    } else {
        None
    };

    // ---- the referenced files must all be there ---------------------------------------------
    // imgimport restores them in this order (make_files); the flat copy goes to the first.
    let mut referenced: Vec<Referenced> = Vec::new();
    let split = |v: &str| -> Vec<String> {
        v.split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    };
    for key in ["kernel", "ramdisk", "rootimg"] {
        if let Some(Value::Scalar(v)) = top.get(key) {
            for p in split(v) {
                referenced.push(Referenced {
                    what: key.into(),
                    source: table_path(&p),
                    target: p,
                });
            }
        }
    }
    for (table, key) in [
        ("linuximage", "template"),
        ("linuximage", "pkglist"),
        ("osimage", "synclists"),
        ("linuximage", "otherpkglist"),
        ("linuximage", "postinstall"),
        ("linuximage", "exlist"),
    ] {
        let v = if table == "osimage" {
            os.get(key)
        } else {
            li.get(key)
        };
        for p in v.map(|v| split(v)).unwrap_or_default() {
            referenced.push(Referenced {
                what: format!("{table}.{key}"),
                source: table_path(&p),
                target: p,
            });
        }
    }
    let mut errors = Vec::new();
    for r in &referenced {
        let ok = std::fs::metadata(&r.source).is_ok_and(|m| m.is_file()) && readable(&r.source);
        if !ok {
            errors.push(format!("Couldn't find file {} for {name}.", r.target));
        }
    }
    for k in kits.values() {
        if let Some(dir) = &k.dir {
            if !std::fs::metadata(table_path(dir)).is_ok_and(|m| m.is_dir())
                || !readable(&table_path(dir))
            {
                errors.push(format!("Couldn't find file {dir} for {name}."));
            }
        }
    }
    fail_all(host, errors)?;

    // ---- layout -------------------------------------------------------------------------
    let now = now();
    let mut names = Names::new();
    let claim = |r: std::result::Result<layout::Claim, String>| {
        r.map_err(|e| Fail(format!("Cannot make the bundle: {e}")))
    };
    claim(names.claim_file(b"manifest.xml", "the manifest", None))?;
    names
        .claim_dir(b"extra", "the extra directory")
        .map_err(|e| Fail(format!("Cannot make the bundle: {e}")))?;
    for (kit, k) in &kits {
        if k.dir.is_some() {
            names
                .claim_dir(kit.as_bytes(), &format!("kit {kit}"))
                .map_err(|e| Fail(format!("Cannot make the bundle: {e}")))?;
        }
    }
    for f in &raw_files {
        let b = layout::basename(f);
        claim(names.claim_file(
            b.as_bytes(),
            &format!("raw image {f}"),
            Some(&table_path(f)),
        ))?;
    }
    if statelite.is_some() {
        claim(names.claim_file(b"rootimgtree.gz", "the statelite root tree", None))?;
        claim(names.claim_file(b"litefile.csv", "the litefile settings", None))?;
    }

    let mut members: Vec<Member> = Vec::new();
    let mut dirs: BTreeSet<Vec<u8>> = BTreeSet::new();
    let prefix = |rel: &[u8]| -> Vec<u8> {
        let mut p = imagedir.as_bytes().to_vec();
        if !rel.is_empty() {
            p.push(b'/');
            p.extend_from_slice(rel);
        }
        p
    };
    push_dir(&mut members, &mut dirs, prefix(b""), 0o755, now);
    let mut extra_values: Vec<Value> = Vec::new();
    let mut extra_members: Vec<Member> = Vec::new();
    let mut extra_dirs: BTreeSet<Vec<u8>> = BTreeSet::new();
    let mut walked_roots: Vec<String> = Vec::new();
    for x in &extras {
        let mut m = BTreeMap::new();
        m.insert("src".to_string(), Value::Scalar(x.src.clone()));
        m.insert("dest".to_string(), Value::Scalar(x.dest.clone()));
        extra_values.push(Value::Map(m));
        let owner = format!("extra {}", x.src);
        if x.is_dir {
            // The same directory twice, or one inside a directory already walked: its
            // payload is there (stock stores it once and lists it twice, too).
            if walked_roots
                .iter()
                .any(|r: &String| *r == x.src || x.src.starts_with(&format!("{r}/")))
            {
                continue;
            }
            walked_roots.push(x.src.clone());
            let root = layout::extra_dir_member(&x.src);
            names
                .claim_dir(&root, &owner)
                .map_err(|e| Fail(format!("Cannot make the bundle: {e}")))?;
            // mkpath makes the payload directory (cp -a copies only its contents): 0755 root.
            parents(
                &mut extra_members,
                &mut extra_dirs,
                &prefix(&root),
                now,
                true,
            );
            for mut e in walk_tree(Path::new(&x.src), true, host)? {
                if e.path.is_empty() {
                    continue;
                }
                let mut member = root.clone();
                member.push(b'/');
                member.extend_from_slice(&e.path);
                if e.kind == Kind::Dir {
                    names
                        .claim_dir(&member, &owner)
                        .map_err(|e| Fail(format!("Cannot make the bundle: {e}")))?;
                    if !extra_dirs.insert(prefix(&member)) {
                        continue;
                    }
                } else {
                    let source = Path::new(&x.src).join(OsStr::from_bytes(&e.path));
                    if claim(names.claim_file(&member, &owner, Some(&source)))?
                        == layout::Claim::Same
                    {
                        continue;
                    }
                }
                e.path = prefix(&member);
                let content = content_of(&e);
                extra_members.push(Member {
                    entry: e,
                    content,
                    announce: None,
                });
            }
        } else {
            let b = layout::basename(&x.src);
            let mut member = b"extra/".to_vec();
            member.extend_from_slice(b.as_bytes());
            let src = PathBuf::from(&x.src);
            match claim(names.claim_file(&member, &owner, Some(&src))) {
                Ok(layout::Claim::Same) => continue,
                Ok(layout::Claim::New) => {}
                Err(Fail(e)) => {
                    return Err(Fail(format!(
                        "{e}; imgimport restores file extras by name, so two with the same name cannot both be carried (give one's directory instead)"
                    )))
                }
            }
            parents(
                &mut extra_members,
                &mut extra_dirs,
                &prefix(b"extra"),
                now,
                true,
            );
            extra_members.push(flat_member(prefix(&member), &src, None)?);
        }
    }

    // The referenced files: flat by basename, later duplicates relocated under extra/.
    let placement = layout::place(&mut names, &referenced)
        .map_err(|e| Fail(format!("Cannot make the bundle: {e}")))?;
    for d in &placement.relocated_dirs {
        let mut m = BTreeMap::new();
        m.insert("src".to_string(), Value::Scalar(d.clone()));
        m.insert("dest".to_string(), Value::Scalar(d.clone()));
        extra_values.push(Value::Map(m));
        if o.verbose {
            host.data(format!(
                "{d}: a file there has the same name as another file of the bundle; it is carried as an extra directory so that imgimport restores both"
            ));
        }
    }
    if !extra_values.is_empty() {
        let v = if extra_values.len() == 1 {
            extra_values.remove(0)
        } else {
            Value::List(extra_values)
        };
        top.insert("extra".into(), v);
    }

    // ---- the manifest -------------------------------------------------------------------
    top.insert("osimage".into(), Value::row(&os));
    top.insert("linuximage".into(), Value::row(&li));
    for (key, rows) in [
        (
            "kit",
            kits.iter()
                .map(|(k, v)| (k.clone(), v.row.clone()))
                .collect::<BTreeMap<_, _>>(),
        ),
        (
            "kitrepo",
            kits.values().flat_map(|k| k.repos.clone()).collect(),
        ),
        (
            "kitcomp",
            kits.values().flat_map(|k| k.comps.clone()).collect(),
        ),
    ] {
        if let Some(v) = manifest::kit_section(&rows) {
            top.insert(key.into(), v);
        }
    }
    let xml = manifest::to_xml(&top);
    members.push(bytes_member(prefix(b"manifest.xml"), xml.into_bytes(), now));
    if statelite.is_some() {
        let mut e = bytes_member(prefix(b"rootimgtree.gz"), Vec::new(), now);
        e.content = Content::RootimgTree;
        members.push(e);
        for (n, data) in generated {
            members.push(bytes_member(prefix(n.as_bytes()), data, now));
        }
    }
    // Referenced files in stock's copy (and message) order: kernel, ramdisk, rootimg, then
    // template, pkglist, otherpkglist, postinstall, exlist, then synclists.
    let rank = |what: &str| match what {
        "kernel" => 0,
        "ramdisk" => 1,
        "rootimg" => 2,
        "linuximage.template" => 3,
        "linuximage.pkglist" => 4,
        "linuximage.otherpkglist" => 5,
        "linuximage.postinstall" => 6,
        "linuximage.exlist" => 7,
        _ => 8,
    };
    let mut order: Vec<&layout::Placed> = placement.placed.iter().collect();
    order.sort_by_key(|p| (rank(&referenced[p.index].what), p.index));
    for p in order {
        let r = &referenced[p.index];
        if !p.payload {
            // Already stored: only the message.
            members.push(Member {
                entry: dir_entry(Vec::new(), 0, now),
                content: Content::Message,
                announce: Some(r.target.clone()),
            });
            continue;
        }
        let path = prefix(&p.member);
        parents(&mut members, &mut dirs, &path, now, false);
        members.push(flat_member(path, &r.source, Some(r.target.clone()))?);
    }
    for (kit, k) in &kits {
        let Some(dir) = &k.dir else { continue };
        let walked = walk_tree(&table_path(dir), false, host)?;
        let mut first = true;
        for mut e in walked {
            let mut member = kit.as_bytes().to_vec();
            if !e.path.is_empty() {
                member.push(b'/');
                member.extend_from_slice(&e.path);
            }
            // cp -dr: owned by root, modes through the umask, links kept; the kit directory
            // itself is a directory even when kitdir is a symlink to one.
            e.uid = 0;
            e.gid = 0;
            if !matches!(e.kind, Kind::Symlink { .. }) {
                e.mode &= 0o755;
            }
            if member == kit.as_bytes() && e.kind != Kind::Dir {
                e.kind = Kind::Dir;
                e.mode = 0o755;
                e.source = Source::None;
            }
            e.path = prefix(&member);
            let content = content_of(&e);
            members.push(Member {
                entry: e,
                content,
                announce: first.then(|| dir.clone()),
            });
            first = false;
        }
    }
    for f in &raw_files {
        let b = layout::basename(f);
        members.push(flat_member(prefix(b.as_bytes()), &table_path(f), None)?);
    }
    // Extras last: their directories first (extra/ itself, 0755 root).
    for m in extra_members {
        if m.entry.kind == Kind::Dir && dirs.contains(&m.entry.path) {
            continue;
        }
        if m.entry.kind == Kind::Dir {
            dirs.insert(m.entry.path.clone());
        }
        members.push(m);
    }

    // ---- where it goes ------------------------------------------------------------------
    let bundle_name = match &o.dest {
        Some(d) => {
            let (n, _) = fileparse(d);
            if n.is_empty() {
                format!("{imagedir}.tgz")
            } else {
                n
            }
        }
        None => format!("{imagedir}.tgz"),
    };
    if let Some(why) = bundle_name_problem(&bundle_name) {
        return Err(Fail(format!(
            "Invalid bundle name {}: {why}",
            shown(&bundle_name)
        )));
    }
    let base_dir = |create: bool| -> Result<(PathBuf, bool)> {
        match ctx.cwd {
            Some(c) => {
                let p = PathBuf::from(c);
                if !p.is_absolute() || !p.is_dir() {
                    return Err(Fail(format!(
                        "Cannot write the bundle into {c}: it is not a directory on this management node"
                    )));
                }
                Ok((p, false))
            }
            None => {
                let p = PathBuf::from(default_dir);
                Ok((p.clone(), create && !p.is_dir()))
            }
        }
    };
    let dest = match &o.remote {
        None => {
            let (dir, create_dir) = base_dir(true)?;
            Dest::Local { dir, create_dir }
        }
        Some(remote) => {
            if !remote_safe(remote, "[]:") || (remote.contains(':') && !remote.contains('[')) {
                return Err(Fail(format!(
                    "Invalid remote host {}: use user@host (letters, digits and ._+,=%@~-)",
                    shown(remote)
                )));
            }
            let path = match &o.dest {
                Some(d) => format!("{}{bundle_name}", fileparse(d).1),
                None => bundle_name.clone(),
            };
            if !remote_safe(&path, "") {
                return Err(Fail(format!(
                    "Invalid remote destination {}: scp could hand it to the remote shell; use letters, digits and ._+,=%@/~-",
                    shown(&path)
                )));
            }
            let (workdir, create_dir) = match tmpdir {
                Some(t) => {
                    let p = PathBuf::from(t);
                    if !p.is_dir() {
                        return Err(Fail(format!(
                            "The site attribute tmpdir ({t}) is not a directory"
                        )));
                    }
                    (p, false)
                }
                None => base_dir(true)?,
            };
            Dest::Remote {
                workdir,
                create_dir,
                remote: remote.clone(),
                path,
            }
        }
    };
    let stale_sidecar = match &dest {
        Dest::Local { dir, .. } if !o.checksum => {
            Some(dir.join(format!("{bundle_name}.sha256"))).filter(|p| p.is_file())
        }
        _ => None,
    };
    Ok(Plan {
        shown_name: name,
        imagedir,
        bundle_name,
        dest,
        members,
        statelite,
        verbose: o.verbose,
        checksum: o.checksum,
        stale_sidecar,
    })
}

/// A kit with its repositories and components, as stock collects them.
struct Kit {
    row: Row,
    dir: Option<String>,
    repos: BTreeMap<String, Row>,
    comps: BTreeMap<String, Row>,
}

/// The kits of the image's kit components, each with all its repositories and components.
fn read_kits(os: &Row, host: &mut dyn Host) -> Result<BTreeMap<String, Kit>> {
    let mut kits = BTreeMap::new();
    let Some(list) = os.get("kitcomponents").filter(|v| perl_true(Some(v))) else {
        return Ok(kits);
    };
    let open = |t: &str, e: HostError| Fail(format!("Unable to open table '{t}' ({e})"));
    let sql_safe = |v: &str| -> Result<()> {
        if v.contains('\'') {
            Err(Fail(format!(
                "Cannot export kit data for {}: xCAT's table layer cannot look up names with a quote",
                shown(v)
            )))
        } else {
            Ok(())
        }
    };
    let mut kit_names: BTreeSet<String> = BTreeSet::new();
    let mut repo_names: BTreeSet<String> = BTreeSet::new();
    let mut comp_names: BTreeSet<String> = BTreeSet::new();
    for comp in list.split(',').filter(|c| !c.is_empty()) {
        let row = host
            .table_get("kitcomponent", &[("kitcompname", comp)], &["kitname"])
            .map_err(|e| open("kitcomponent", e))?
            .ok_or_else(|| {
                Fail(format!(
                    "Cannot find kitname of '{comp}' from the kitcomponent table."
                ))
            })?;
        let Some(kit) = row.get("kitname").filter(|k| !k.is_empty()) else {
            continue;
        };
        sql_safe(kit)?;
        if let Some(why) = image::component_problem(kit) {
            return Err(Fail(format!("Cannot export kit {}: {why}", shown(kit))));
        }
        kit_names.insert(kit.clone());
        for r in host
            .table_list("kitrepo", &[&format!("kitname=={kit}")], &["kitreponame"])
            .map_err(|e| open("kitrepo", e))?
        {
            if let Some(n) = r.get("kitreponame") {
                repo_names.insert(n.clone());
            }
        }
        for r in host
            .table_list(
                "kitcomponent",
                &[&format!("kitname=={kit}")],
                &["kitcompname"],
            )
            .map_err(|e| open("kitcomponent", e))?
        {
            if let Some(n) = r.get("kitcompname") {
                comp_names.insert(n.clone());
            }
        }
    }
    let mut repos_by_kit: BTreeMap<String, BTreeMap<String, Row>> = BTreeMap::new();
    let mut comps_by_kit: BTreeMap<String, BTreeMap<String, Row>> = BTreeMap::new();
    for r in &repo_names {
        let row = host
            .table_get("kitrepo", &[("kitreponame", r)], KITREPO_COLS)
            .map_err(|e| open("kitrepo", e))?
            .map(clean)
            .ok_or_else(|| Fail(format!("Cannot find kitrepo '{r}' from the kitrepo table.")))?;
        check_values("kitrepo", r, &row)?;
        let k = row.get("kitname").cloned().unwrap_or_default();
        repos_by_kit.entry(k).or_default().insert(r.clone(), row);
    }
    for c in &comp_names {
        let row = host
            .table_get("kitcomponent", &[("kitcompname", c)], KITCOMPONENT_COLS)
            .map_err(|e| open("kitcomponent", e))?
            .map(clean)
            .ok_or_else(|| Fail(format!("Cannot find kitcomp '{c}' from the kitcomp table.")))?;
        check_values("kitcomponent", c, &row)?;
        let k = row.get("kitname").cloned().unwrap_or_default();
        comps_by_kit.entry(k).or_default().insert(c.clone(), row);
    }
    for k in kit_names {
        let row = host
            .table_get("kit", &[("kitname", &k)], KIT_COLS)
            .map_err(|e| open("kit", e))?
            .map(clean)
            .ok_or_else(|| Fail(format!("Cannot find kit '{k}' from the kit table.")))?;
        check_values("kit", &k, &row)?;
        let dir = row.get("kitdir").cloned();
        kits.insert(
            k.clone(),
            Kit {
                row,
                dir,
                repos: repos_by_kit.remove(&k).unwrap_or_default(),
                comps: comps_by_kit.remove(&k).unwrap_or_default(),
            },
        );
    }
    // Repositories and components whose kitname row says another kit still go in (stock
    // keys them by name only); attach them to the first kit.
    if let Some(first) = kits.values_mut().next() {
        for (_, m) in repos_by_kit {
            first.repos.extend(m);
        }
        for (_, m) in comps_by_kit {
            first.comps.extend(m);
        }
    }
    Ok(kits)
}

/// One `-e src[:dest]`, resolved.
struct Extra {
    src: String,
    dest: String,
    is_dir: bool,
}

/// `get_extra`: `src[:dest]` split on `:` (further fields dropped); dest defaults to the
/// source directory itself or a file's directory. Relative sources are taken from the
/// client's cwd (stock resolves them against xcatd's `/`).
fn read_extras(args: &[String], cwd: Option<&str>, host: &mut dyn Host) -> Result<Vec<Extra>> {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for a in args {
        let mut fields = a.split(':');
        let src = fields.next().unwrap_or("").to_string();
        let dest = fields
            .next()
            .filter(|d| perl_true(Some(d)))
            .map(str::to_string);
        let abs = if src.starts_with('/') {
            src.clone()
        } else if src.is_empty() {
            String::new()
        } else {
            match cwd {
                Some(c) => format!("{}/{src}", c.trim_end_matches('/')),
                None => {
                    errors.push(format!(
                        "Can not find Extra file {src}: a relative path needs a working directory, and this request has none."
                    ));
                    continue;
                }
            }
        };
        let Some(norm) = layout::normalize_abs(&abs) else {
            errors.push(format!("Can not find Extra file {src}."));
            continue;
        };
        if norm == "/" {
            errors.push("An extra cannot be the whole root directory /.".to_string());
            continue;
        }
        if !readable(Path::new(&norm)) {
            errors.push(format!("Can not find Extra file {src}."));
            continue;
        }
        let is_dir = std::fs::metadata(&norm).is_ok_and(|m| m.is_dir());
        if !is_dir && !std::fs::metadata(&norm).is_ok_and(|m| m.is_file()) {
            errors.push(format!(
                "Extra file {src} is neither a regular file nor a directory."
            ));
            continue;
        }
        let dest = dest.unwrap_or_else(|| {
            if is_dir {
                norm.clone()
            } else {
                layout::dirname(&norm)
            }
        });
        if let Some(why) = manifest::value_problem(&dest).or(manifest::value_problem(&norm)) {
            errors.push(format!("Extra {src} cannot be exported: {why}"));
            continue;
        }
        out.push(Extra {
            src: norm,
            dest,
            is_dir,
        });
    }
    if !errors.is_empty() {
        errors.push(
            "Nothing was exported: the extras above are missing (xCAT's imgexport would export without them)."
                .to_string(),
        );
    }
    fail_all(host, errors)?;
    Ok(out)
}

/// `-p`: the first node of the noderange, then the `xcatdefaults` postscripts lists followed
/// by the node's own (with group inheritance).
fn postscripts(arg: &str, host: &mut dyn Host) -> Result<(Option<String>, Option<String>)> {
    let node = first_node(arg, host)?.ok_or_else(|| {
        Fail(format!(
            "Unable to get postscripts, {arg} is not a valide node."
        ))
    })?;
    let open = |e: HostError| Fail(format!("Unable to open table 'postscripts'. ({e})"));
    let attrs = ["postscripts", "postbootscripts"];
    let mut own = host
        .table_get("postscripts", &[("node", &node)], &attrs)
        .map_err(open)?
        .unwrap_or_default();
    if attrs.iter().any(|a| !own.contains_key(*a)) {
        let groups = host
            .table_get("nodelist", &[("node", &node)], &["groups"])
            .map_err(|e| Fail(format!("Unable to open table 'nodelist'. ({e})")))?
            .and_then(|r| r.get("groups").cloned())
            .unwrap_or_default();
        for g in groups.split(',').filter(|g| !g.is_empty()) {
            let missing: Vec<&str> = attrs
                .iter()
                .copied()
                .filter(|a| !own.contains_key(*a))
                .collect();
            if missing.is_empty() {
                break;
            }
            if let Some(r) = host
                .table_get("postscripts", &[("node", g)], &missing)
                .map_err(open)?
            {
                for (k, v) in r {
                    own.entry(k).or_insert(v);
                }
            }
        }
    }
    let defaults = host
        .table_get("postscripts", &[("node", "xcatdefaults")], &attrs)
        .map_err(open)?
        .unwrap_or_default();
    let join = |a: &str| -> Option<String> {
        let d = defaults.get(a).filter(|v| !v.is_empty());
        let n = own.get(a).filter(|v| !v.is_empty());
        match (d, n) {
            (Some(d), Some(n)) => Some(format!("{d},{n}")),
            (Some(d), None) => Some(d.clone()),
            (None, Some(n)) => Some(n.clone()),
            (None, None) => None,
        }
    };
    Ok((join("postscripts"), join("postbootscripts")))
}

/// The first (in sort order) node of a noderange made of node and group names, with `-name`
/// exclusions, as xCAT's `noderange` gives them. Other noderange syntax is refused.
fn first_node(arg: &str, host: &mut dyn Host) -> Result<Option<String>> {
    let mut nodes: BTreeSet<String> = BTreeSet::new();
    let mut excluded: BTreeSet<String> = BTreeSet::new();
    let nodelist = |e: HostError| Fail(format!("Unable to open table 'nodelist'. ({e})"));
    for atom in arg.split(',').filter(|a| !a.is_empty()) {
        let (atom, exclude) = match atom.strip_prefix('-') {
            Some(a) => (a, true),
            None => (atom, false),
        };
        if atom.is_empty() {
            continue;
        }
        if atom.contains('\'') {
            return Err(Fail(format!(
                "Unable to get postscripts, {arg} is not a valide node."
            )));
        }
        let mut found: BTreeSet<String> = BTreeSet::new();
        if host
            .table_get("nodelist", &[("node", atom)], &["node"])
            .map_err(nodelist)?
            .is_some()
        {
            found.insert(atom.to_string());
        } else {
            let pattern = format!("groups=~%{atom}%");
            for r in host
                .table_list("nodelist", &[&pattern], &["node", "groups"])
                .map_err(nodelist)?
            {
                let member = r
                    .get("groups")
                    .is_some_and(|g| g.split(',').any(|x| x == atom));
                if let (true, Some(n)) = (member, r.get("node")) {
                    found.insert(n.clone());
                }
            }
            if found.is_empty() && atom.chars().any(|c| "[]-:+/^@()*".contains(c)) {
                return Err(Fail(format!(
                    "Unable to get postscripts: xcat-imaged expands node and group names only, not the noderange {arg}; give the node name"
                )));
            }
        }
        if exclude {
            excluded.extend(found);
        } else {
            nodes.extend(found);
        }
    }
    Ok(nodes.into_iter().find(|n| !excluded.contains(n)))
}

/// `litefile.csv` as stock writes it: rows for image NULL, then for the whole
/// `osimage.groups` string (or `ALL` when there are no groups), then for the image; one line
/// `"<image>","<file>","<options or tmpfs>",,` per row.
fn litefile_csv(
    name: &str,
    imagedir: &str,
    groups: Option<&String>,
    host: &mut dyn Host,
) -> Result<Vec<u8>> {
    let rows = host
        .table_list("litefile", &["file=~%"], &["image", "file", "options"])
        .map_err(|e| Fail(format!("Could not open the litefile table. ({e})")))?;
    let second = groups
        .filter(|g| perl_true(Some(g)))
        .map_or("ALL", String::as_str);
    let mut csv = String::new();
    for want in [None, Some(second), Some(name)] {
        for r in &rows {
            if r.get("image").map(String::as_str) != want {
                continue;
            }
            let Some(file) = r.get("file") else { continue };
            let opts = r
                .get("options")
                .filter(|o| perl_true(Some(o)))
                .map_or("tmpfs", String::as_str);
            csv.push_str(&format!("\"{imagedir}\",\"{file}\",\"{opts}\",,\n"));
        }
    }
    Ok(csv.into_bytes())
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn dir_entry(path: Vec<u8>, mode: u32, mtime: i64) -> Entry {
    Entry {
        path,
        kind: Kind::Dir,
        mode,
        uid: 0,
        gid: 0,
        mtime,
        mtime_nsec: 0,
        xattrs: Vec::new(),
        hardlink: None,
        ino: 0,
        source: Source::None,
    }
}

fn push_dir(
    members: &mut Vec<Member>,
    dirs: &mut BTreeSet<Vec<u8>>,
    path: Vec<u8>,
    mode: u32,
    mtime: i64,
) {
    if dirs.insert(path.clone()) {
        members.push(Member {
            entry: dir_entry(path, mode, mtime),
            content: Content::None,
            announce: None,
        });
    }
}

/// Directory members for the ancestors of `path` below the image directory (and `path`
/// itself with `inclusive`), `0755 root` as mkpath makes them.
fn parents(
    members: &mut Vec<Member>,
    dirs: &mut BTreeSet<Vec<u8>>,
    path: &[u8],
    mtime: i64,
    inclusive: bool,
) {
    let mut cuts: Vec<usize> = path
        .iter()
        .enumerate()
        .filter(|&(_, &c)| c == b'/')
        .map(|(i, _)| i)
        .collect();
    if inclusive {
        cuts.push(path.len());
    }
    for i in cuts {
        push_dir(members, dirs, path[..i].to_vec(), 0o755, mtime);
    }
}

fn bytes_member(path: Vec<u8>, data: Vec<u8>, mtime: i64) -> Member {
    Member {
        entry: Entry {
            path,
            kind: Kind::File {
                size: data.len() as u64,
            },
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime,
            mtime_nsec: 0,
            xattrs: Vec::new(),
            hardlink: None,
            ino: 0,
            source: Source::None,
        },
        content: Content::Bytes(data),
        announce: None,
    }
}

/// A file stored as `cp` (no `-p`) stages it: root's, mode through the umask 022; we keep its
/// mtime. The size is taken again when the file is opened.
fn flat_member(path: Vec<u8>, src: &Path, announce: Option<String>) -> Result<Member> {
    let md =
        std::fs::metadata(src).map_err(|e| Fail(format!("Cannot read {}: {e}", src.display())))?;
    Ok(Member {
        entry: Entry {
            path,
            kind: Kind::File { size: md.len() },
            mode: md.mode() & 0o755,
            uid: 0,
            gid: 0,
            mtime: md.mtime(),
            mtime_nsec: 0,
            xattrs: Vec::new(),
            hardlink: None,
            ino: 0,
            source: Source::Disk(src.to_path_buf()),
        },
        content: Content::Disk(src.to_path_buf(), true),
        announce,
    })
}

fn content_of(e: &Entry) -> Content {
    match (&e.kind, &e.source) {
        (Kind::File { .. }, Source::Disk(p)) => Content::Disk(p.clone(), false),
        _ => Content::None,
    }
}

/// Walks a directory for an extra (`cp -a src/*`: top-level dotfiles left out, said in a
/// warning, since imgimport's `cp -a dir/*` would not restore them) or a kit (`cp -dr`:
/// everything). Entries keep their own metadata, without xattrs or hard links (GNU tar as
/// stock runs it stores neither). Sockets cannot be archived and are reported.
fn walk_tree(root: &Path, skip_dotfiles: bool, host: &mut dyn Host) -> Result<Vec<Entry>> {
    let mut skipped: Vec<String> = Vec::new();
    let mut keep = |p: &[u8]| {
        if !skip_dotfiles || p == b"." {
            return true;
        }
        let rel = p.strip_prefix(b"./").unwrap_or(p);
        let top = rel.split(|&c| c == b'/').next().unwrap_or(rel);
        if top.starts_with(b".") {
            if !rel.contains(&b'/') {
                skipped.push(String::from_utf8_lossy(rel).into_owned());
            }
            return false;
        }
        true
    };
    let walked = walk::walk(root, &mut keep, &|| false)
        .map_err(|e| Fail(format!("Cannot read {}: {e}", root.display())))?;
    if !skipped.is_empty() {
        host.warning(format!(
            "{}: {} left out: imgimport copies {}/* and would not restore top-level dotfiles",
            root.display(),
            skipped.join(", "),
            root.display()
        ));
    }
    if !walked.sockets.is_empty() {
        host.warning(format!(
            "{}: {} sockets left out (archives cannot hold them)",
            root.display(),
            walked.sockets.len()
        ));
    }
    let mut entries = walked.entries;
    for e in &mut entries {
        e.xattrs.clear();
        e.hardlink = None;
    }
    Ok(entries)
}

// ---- execute ------------------------------------------------------------------------------

/// Cancellation and progress while a member streams.
struct Watched<'a> {
    inner: &'a mut dyn Read,
    cancel: &'a Cancel,
    progress: &'a mut Progress,
    host: &'a mut dyn Host,
}

impl Read for Watched<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.cancel.is_cancelled() {
            // Not ErrorKind::Interrupted: copy loops retry on that.
            return Err(io::Error::other("interrupted"));
        }
        let n = self.inner.read(buf)?;
        self.progress.step(n as u64, self.host);
        Ok(n)
    }
}

/// Rate-limited sinfo progress.
struct Progress {
    total: u64,
    done: u64,
    started: Instant,
    last: Instant,
}

impl Progress {
    fn step(&mut self, n: u64, host: &mut dyn Host) {
        self.done += n;
        if self.last.elapsed() < Duration::from_millis(500) {
            return;
        }
        self.last = Instant::now();
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        host.sinfo(format!(
            "{}/{} MiB, {:.0} MiB/s",
            self.done >> 20,
            self.total >> 20,
            self.done as f64 / secs / 1048576.0
        ));
    }
}

fn interrupted() -> Fail {
    Fail("imgexport was interrupted; no bundle was written".into())
}

fn io_fail(what: &str, e: io::Error) -> Fail {
    if e.kind() == io::ErrorKind::Interrupted {
        interrupted()
    } else {
        Fail(format!("{what}: {e}"))
    }
}

/// Opens a member's source and checks it is still the regular file it was.
fn open_source(p: &Path, follow: bool) -> io::Result<(std::fs::File, std::fs::Metadata)> {
    let mut oo = std::fs::OpenOptions::new();
    oo.read(true);
    if !follow {
        oo.custom_flags(nix::libc::O_NOFOLLOW);
    }
    let f = oo
        .open(p)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", p.display())))?;
    let md = f.metadata()?;
    if !md.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} is no longer a regular file", p.display()),
        ));
    }
    Ok((f, md))
}

/// Packs `<rootimgdir>/rootimg` as stock's `find rootimg | cpio -H newc -o | gzip` into an
/// unnamed scratch file in `dir`.
fn pack_rootimg_tree(
    rootimg: &Path,
    dir: &Path,
    host: &mut dyn Host,
    cancel: &Cancel,
) -> Result<std::fs::File> {
    let walked = walk::walk(rootimg, &mut |_| true, &|| cancel.is_cancelled())
        .map_err(|e| io_fail(&format!("Cannot read {}", rootimg.display()), e))?;
    if !walked.sockets.is_empty() {
        host.warning(format!(
            "{} sockets in {} left out (archives cannot hold them)",
            walked.sockets.len(),
            rootimg.display()
        ));
    }
    let mut entries = inject::merge(walked, Overlay::new(), &mut |_| true, now());
    for e in &mut entries {
        let mut p = b"rootimg".to_vec();
        if !e.path.is_empty() {
            p.push(b'/');
            p.extend_from_slice(&e.path);
        }
        e.path = p;
    }
    if let Some(big) = entries.iter().find(|e| e.size() >= 1 << 32) {
        return Err(Fail(format!(
            "{} is 4 GiB or larger; the cpio format of rootimgtree.gz cannot store it",
            String::from_utf8_lossy(&big.path)
        )));
    }
    let spool = output::spool(dir).map_err(|e| Fail(e.to_string()))?;
    let file = spool
        .try_clone()
        .map_err(|e| Fail(format!("Cannot use the scratch file: {e}")))?;
    let comp = Compressor::new(
        BufWriter::with_capacity(1 << 20, file),
        &compress::Options::new(compress::Method::Gzip),
    )
    .map_err(|e| Fail(format!("Cannot start the compressor: {e}")))?;
    let mut w = CpioWriter::new(comp);
    for e in &entries {
        if cancel.is_cancelled() {
            return Err(interrupted());
        }
        let res = if w.carries_data(e) {
            match &e.source {
                Source::Disk(p) => open_source(p, false).and_then(|(mut f, md)| {
                    w.append(e, &mut f)?;
                    content::check_unchanged(p, &f, &md)
                }),
                _ => w.append(e, &mut io::empty()),
            }
        } else {
            w.append(e, &mut io::empty())
        };
        res.map_err(|err| {
            io_fail(
                &format!("Packing {} failed", String::from_utf8_lossy(&e.path)),
                err,
            )
        })?;
    }
    w.finish_archive()
        .map_err(|e| io_fail("Finishing rootimgtree.gz failed", e))?;
    let c = *w.warnings();
    if c.xattrs > 0 {
        host.warning(format!(
            "{} files of {} have extended attributes ({} file capabilities, {} SELinux labels) that the cpio of rootimgtree.gz cannot carry (xCAT's imgexport drops them too)",
            c.xattrs,
            rootimg.display(),
            c.capabilities,
            c.selinux
        ));
    }
    let mut buf = w
        .into_inner()
        .finish()
        .map_err(|e| io_fail("Compressing rootimgtree.gz failed", e))?;
    buf.flush()
        .map_err(|e| io_fail("Writing rootimgtree.gz failed", e))?;
    Ok(spool)
}

/// One `sha256sum` line (names with a backslash or newline escaped, as coreutils does).
fn sum_line(digest: &[u8; 32], name: &[u8]) -> String {
    let name = String::from_utf8_lossy(name);
    if name.contains('\\') || name.contains('\n') {
        format!(
            "\\{}  {}\n",
            sha256::hex(digest),
            name.replace('\\', "\\\\").replace('\n', "\\n")
        )
    } else {
        format!("{}  {name}\n", sha256::hex(digest))
    }
}

fn execute(p: &Plan, host: &mut dyn Host, cancel: &Cancel) -> Result<()> {
    let started = Instant::now();
    let (dir, create_dir) = match &p.dest {
        Dest::Local { dir, create_dir } => (dir, *create_dir),
        Dest::Remote {
            workdir,
            create_dir,
            ..
        } => (workdir, *create_dir),
    };
    if create_dir {
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(dir)
            .map_err(|e| Fail(format!("Cannot create {}: {e}", dir.display())))?;
        host.info(format!(
            "Created {} for the bundle (the request has no working directory)",
            dir.display()
        ));
    }
    check_space(dir, &p.members)?;

    let mut tree = match &p.statelite {
        Some(s) => {
            host.data("Packing root image. It will take a while");
            let f = pack_rootimg_tree(&s.rootimg, dir, host, cancel)?;
            host.data("Getting litefile settings");
            Some(f)
        }
        None => None,
    };

    let out = Output::create(dir, &p.bundle_name).map_err(|e| Fail(e.to_string()))?;
    if p.verbose {
        host.data(format!(
            "Writing {} ({})",
            out.target().display(),
            if out.is_unnamed() {
                "an unnamed file until it is complete"
            } else {
                "a hidden temp file until it is complete"
            }
        ));
    }
    let file = out
        .file()
        .and_then(|f| f.try_clone())
        .map_err(|e| Fail(format!("Cannot write the bundle: {e}")))?;
    let opts = bundle::Options {
        checksums: p.checksum,
        ..bundle::Options::default()
    };
    let mut w = BundleWriter::new(BufWriter::with_capacity(1 << 20, file), &opts)
        .map_err(|e| Fail(format!("Cannot start the compressor: {e}")))?;
    let total: u64 = p.members.iter().map(|m| m.entry.size()).sum();
    let mut progress = Progress {
        total,
        done: 0,
        started: Instant::now(),
        last: Instant::now(),
    };
    let mut count = 0u64;
    for m in &p.members {
        if cancel.is_cancelled() {
            return Err(interrupted());
        }
        if let Some(a) = &m.announce {
            host.data(a.clone());
        }
        if let Content::Message = m.content {
            continue;
        }
        if p.verbose {
            host.data(format!("  ./{}", String::from_utf8_lossy(&m.entry.path)));
        }
        let shown_path = String::from_utf8_lossy(&m.entry.path).into_owned();
        let fail = |e: io::Error| {
            if cancel.is_cancelled() {
                interrupted()
            } else {
                io_fail(&format!("Cannot add {shown_path} to the bundle"), e)
            }
        };
        let mut entry = m.entry.clone();
        match &m.content {
            Content::None | Content::Message => {
                w.append(&entry, &mut io::empty(), false).map_err(fail)?
            }
            Content::Bytes(b) => w.append(&entry, &mut &b[..], false).map_err(fail)?,
            Content::Disk(src, follow) => {
                let (mut f, md) = open_source(src, *follow).map_err(fail)?;
                entry.kind = Kind::File { size: md.len() };
                let mut head = [0u8; 8];
                let n = read_head(&mut f, &mut head).map_err(fail)?;
                let store = bundle::looks_compressed(&head[..n]);
                let mut chained = (&head[..n]).chain(&f);
                let mut watched = Watched {
                    inner: &mut chained,
                    cancel,
                    progress: &mut progress,
                    host,
                };
                w.append(&entry, &mut watched, store).map_err(fail)?;
                content::check_unchanged(src, &f, &md).map_err(fail)?;
            }
            Content::RootimgTree => {
                let f = tree
                    .as_mut()
                    .ok_or_else(|| Fail("the root tree was not packed".into()))?;
                f.rewind().map_err(fail)?;
                let len = f.metadata().map_err(fail)?.len();
                entry.kind = Kind::File { size: len };
                let mut watched = Watched {
                    inner: f,
                    cancel,
                    progress: &mut progress,
                    host,
                };
                w.append(&entry, &mut watched, true).map_err(fail)?;
            }
        }
        count += 1;
    }
    drop(tree);
    host.data(format!(
        "Compressing {} bundle.  Please be patient.",
        p.imagedir
    ));
    let (buf, summary) = w.finish().map_err(|e| {
        io_fail(
            "Failed to compress archive!  (Maybe there was no space left?)",
            e,
        )
    })?;
    buf.into_inner().map_err(|e| {
        io_fail(
            "Failed to compress archive!  (Maybe there was no space left?)",
            e.into_error(),
        )
    })?;
    if cancel.is_cancelled() {
        return Err(interrupted());
    }
    let sidecar = p.checksum.then(|| {
        let mut s = String::new();
        if let Some(d) = &summary.output_sha256 {
            s.push_str(&sum_line(d, p.bundle_name.as_bytes()));
        }
        for (name, d) in &summary.members {
            s.push_str(&sum_line(d, name));
        }
        s
    });

    let shown_target = match &p.dest {
        Dest::Local { .. } => {
            let target = out
                .commit(0o644)
                .map_err(|e| Fail(format!("Failed to write the image bundle: {e}")))?;
            if let Some(s) = &sidecar {
                let sc = Output::create(dir, &format!("{}.sha256", p.bundle_name))
                    .map_err(|e| Fail(e.to_string()))?;
                let mut f = sc.file().map_err(|e| Fail(e.to_string()))?;
                f.write_all(s.as_bytes())
                    .map_err(|e| Fail(format!("Cannot write the checksums: {e}")))?;
                let t = sc
                    .commit(0o644)
                    .map_err(|e| Fail(format!("Cannot write the checksums: {e}")))?;
                host.info(format!(
                    "Checksums in {} (check with: sha256sum -c {}; after extracting the bundle beside it, the members too)",
                    t.display(),
                    t.file_name().map(|n| n.to_string_lossy()).unwrap_or_default()
                ));
            }
            if let Some(stale) = &p.stale_sidecar {
                if std::fs::remove_file(stale).is_ok() {
                    host.info(format!(
                        "Removed {}, which described the previous bundle",
                        stale.display()
                    ));
                }
            }
            target.display().to_string()
        }
        Dest::Remote { remote, path, .. } => {
            let location = format!("{remote}:{path}");
            host.data(format!(
                "Moving the image bundle to the remote system location {location}"
            ));
            let src = out.reading_path().map_err(|e| Fail(e.to_string()))?;
            scp(&src, &location, cancel).map_err(|why| {
                Fail(format!(
                    "Unable to copy the image bundle {} to the remote host (Maybe passwordless ssh was not setup?) ({why})",
                    p.bundle_name
                ))
            })?;
            if let Some(s) = &sidecar {
                let sc = Output::create(dir, &format!("{}.sha256", p.bundle_name))
                    .map_err(|e| Fail(e.to_string()))?;
                sc.file()
                    .and_then(|mut f| f.write_all(s.as_bytes()).and_then(|()| f.sync_all()))
                    .map_err(|e| Fail(format!("Cannot write the checksums: {e}")))?;
                let from = sc.reading_path().map_err(|e| Fail(e.to_string()))?;
                scp(&from, &format!("{location}.sha256"), cancel).map_err(|why| {
                    Fail(format!(
                        "Unable to copy the checksums {}.sha256 to the remote host ({why})",
                        p.bundle_name
                    ))
                })?;
                host.info(format!("Checksums in {location}.sha256"));
            }
            drop(out);
            location
        }
    };
    let mib = |b: u64| b as f64 / 1048576.0;
    host.info(format!(
        "Bundle {shown_target}: {count} members of image {}, {:.1} MiB ({:.1} MiB of it already compressed and stored as is) in {:.1} MiB, {:.1} s",
        p.shown_name,
        mib(summary.tar_bytes),
        mib(summary.stored_bytes),
        mib(summary.output_bytes),
        started.elapsed().as_secs_f64()
    ));
    host.data("Done!");
    Ok(())
}

/// Reads up to `buf.len()` bytes (fewer only at the end of the file).
fn read_head(f: &mut std::fs::File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// The program that copies bundles to a remote host: `scp`, or for tests the absolute path
/// in `XCAT_IMAGED_SCP`.
fn scp_program() -> String {
    std::env::var("XCAT_IMAGED_SCP")
        .ok()
        .filter(|p| p.starts_with('/'))
        .unwrap_or_else(|| "scp".to_string())
}

/// `scp -B -- <src> <user@host:path>`, as an argument vector; stopped when cancelled.
fn scp(src: &Path, location: &str, cancel: &Cancel) -> std::result::Result<(), String> {
    let step = Step::new(
        &scp_program(),
        vec![
            std::ffi::OsString::from("-B"),
            "--".into(),
            src.as_os_str().to_os_string(),
            location.into(),
        ],
    );
    let running = proc::Running::start(&step).map_err(|e| e.to_string())?;
    running
        .wait_unless(&|| cancel.is_cancelled(), Duration::from_secs(5))
        .map(drop)
        .map_err(|e| e.to_string())
}

/// Refuses to start when the directory clearly lacks the space: members named like
/// compressed files (they will be stored) need their size, the others about half of it.
fn check_space(dir: &Path, members: &[Member]) -> Result<()> {
    let Ok(st) = nix::sys::statvfs::statvfs(dir) else {
        return Ok(());
    };
    let avail = st.blocks_available() * st.fragment_size();
    let compressed = |p: &[u8]| {
        [&b".gz"[..], b".xz", b".sfs", b".zst", b".bz2", b".lz4"]
            .iter()
            .any(|s| p.ends_with(s))
    };
    let need: u64 = members
        .iter()
        .map(|m| {
            let size = m.entry.size();
            if compressed(&m.entry.path) {
                size
            } else {
                size / 2
            }
        })
        .sum();
    if avail < need {
        return Err(Fail(format!(
            "Not enough free space in {}: about {} MiB needed, {} MiB available",
            dir.display(),
            need >> 20,
            avail >> 20
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(mangle("a b\t\tc"), "a_b_c");
        assert_eq!(mangle("plain"), "plain");
        assert_eq!(
            fileparse("sub/dir/foo.tgz"),
            ("foo.tgz".into(), "sub/dir/".into())
        );
        assert_eq!(fileparse("x/"), ("".into(), "x/".into()));
        assert_eq!(fileparse("foo"), ("foo".into(), "./".into()));
        assert_eq!(fileparse("/abs/f"), ("f".into(), "/abs/".into()));
        assert!(
            bundle_name_problem("a.tgz;rm -rf x").is_none(),
            "no shell: harmless"
        );
        assert!(bundle_name_problem("..").is_some());
        assert!(bundle_name_problem("a\nb").is_some());
    }

    #[test]
    fn remote_names() {
        assert!(remote_safe("root@mn2", "[]:"));
        assert!(remote_safe("root@[fd00::1]", "[]:"));
        assert!(!remote_safe("-oProxyCommand=x", "[]:"));
        assert!(!remote_safe("root@h;id", "[]:"));
        assert!(remote_safe("./img.tgz", ""));
        assert!(remote_safe("~/bundles/img.tgz", ""));
        assert!(!remote_safe("a b.tgz", ""));
        assert!(!remote_safe("$(id).tgz", ""));
    }

    #[test]
    fn sha256sum_lines() {
        let d = [0u8; 32];
        assert_eq!(
            sum_line(&d, b"img/kernel"),
            format!("{}  img/kernel\n", "0".repeat(64))
        );
        assert_eq!(
            sum_line(&d, b"a\\b\nc"),
            format!("\\{}  a\\\\b\\nc\n", "0".repeat(64))
        );
    }
}
