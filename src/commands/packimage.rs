//! packimage: pack an image's `rootimg` into the archive nodes download, in one pass.
//!
//! Same options, messages, errorcodes and output names as xCAT's packimage.pm. Everything is
//! checked before anything is written; what xCAT writes into `rootimg` before packing is put
//! into the archive stream instead (the tree is never modified); the archive is written beside
//! the old one and renamed over it only when complete (docs/packimage.md).

use super::Fail;
use crate::args::{self, Config};
use crate::cancel::Cancel;
use crate::host::{Host, HostExt};
use crate::image::{self, perl_true, shown};
use crate::lock;
use crate::pack::compress::{self, Compressor};
use crate::pack::content;
use crate::pack::cpio::CpioWriter;
use crate::pack::entry::{ArchiveWriter, Entry, Kind, Source};
use crate::pack::exlist::{self, Decision, Selection};
use crate::pack::inject::{self, Merge, Overlay};
use crate::pack::publish::{self, Staged};
use crate::pack::segcache;
use crate::pack::synclist;
use crate::pack::tar::TarWriter;
use crate::pack::walk;
use crate::proc::{self, Step};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// packimage.pm's GetOptions specification, plus our own long options (which only extend
/// what unique-prefix abbreviation can reach; none shadows a stock one).
pub const SPECS: &[&str] = &[
    "profile|p=s",
    "arch|a=s",
    "osver|o=s",
    "method|m=s",
    "compress|c=s",
    "tracker=s",
    "nosyncfiles",
    "help|h",
    "version|v",
    "dry-run",
    "explain=s@",
    "no-cache",
];

/// The usage text, as stock prints it, then our additions.
pub const USAGE: &str = "Usage:\n   packimage [-m| --method=cpio|tar] [-c| --compress=gzip|pigz|xz] [--nosyncfiles] <imagename>\n   packimage [-h| --help]\n   packimage [-v| --version]\n   xcat-imaged also takes: -m squashfs, --tracker URL, --dry-run, --explain PATH, --no-cache";

type Result<T> = std::result::Result<T, Fail>;

/// The archive formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    Cpio,
    Tar,
    Squashfs,
}

impl Method {
    fn name(self) -> &'static str {
        match self {
            Method::Cpio => "cpio",
            Method::Tar => "tar",
            Method::Squashfs => "squashfs",
        }
    }
}

/// What the command line asked for, after the stock checks.
struct Opts {
    name: String,
    /// `-m` and `-c` as given; checked after the definitions, as stock orders its errors.
    method: Option<String>,
    compress: Option<String>,
    tracker: Option<String>,
    nosyncfiles: bool,
    dry_run: bool,
    explain: Vec<String>,
    /// Compress every segment again instead of reusing the previous image's.
    no_cache: bool,
}

/// Everything resolved and checked; running it is all that is left.
struct Plan {
    opts: Opts,
    method: Method,
    /// The compressor and how it is named in `compress method:<c>`.
    compress: (compress::Method, String),
    destdir: PathBuf,
    rootimg: PathBuf,
    installdir: PathBuf,
    selection: Selection,
    exlist_files: Vec<PathBuf>,
    timezone: Option<String>,
    shadow_hash: String,
    dracut_install: Option<PathBuf>,
    /// Statelite `link` entries to switch back to their stateless defaults (paths in the image).
    statelite_links: Vec<String>,
    synclists: Vec<synclist::SyncList>,
}

/// Runs packimage with xcatd's argument list.
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
    if argv.is_empty() {
        host.info(USAGE);
        return Ok(());
    }
    let Some(opts) = parse(argv, host)? else {
        return Ok(());
    };
    let xcatroot = PathBuf::from(xcatroot.unwrap_or("/opt/xcat"));
    let plan = plan(opts, &xcatroot, host)?;
    let _lock = lock::acquire(&plan.rootimg).map_err(|e| Fail(e.to_string()))?;
    execute(&plan, host, cancel)
}

/// Options in stock order: obsolete flags, version, help, image name, then the method and
/// compressor (which stock checks only after it has changed the tree; we check them first).
fn parse(argv: &[String], host: &mut dyn Host) -> Result<Option<Opts>> {
    let o = args::parse(SPECS, Config::XCAT_PASS_THROUGH, argv);
    if perl_true(o.str("profile")) || perl_true(o.str("arch")) || perl_true(o.str("osver")) {
        return Err(Fail(
            "-o, -p and -a options are obsoleted, please use 'packimage <osimage name>' instead."
                .into(),
        ));
    }
    if o.flag("help") && !o.flag("version") {
        host.info(USAGE);
        return Ok(None);
    }
    if o.flag("version") {
        host.info(format!(
            "Version {} (xcat-imaged)",
            env!("CARGO_PKG_VERSION")
        ));
        return Ok(None);
    }
    let Some(name) = o.rest.first().cloned() else {
        return Err(Fail(
            "An image name is required, use 'packimage <osimage name>'.".into(),
        ));
    };
    if let Some(why) = image::component_problem(&name) {
        log::info!("image name {name:?} refused: {why}");
        return Err(Fail(format!(
            "Cannot find image '{}' from the osimage table.",
            shown(&name)
        )));
    }
    Ok(Some(Opts {
        name,
        method: o.str("method").map(str::to_string),
        compress: o.str("compress").map(str::to_string),
        tracker: o.str("tracker").map(str::to_string),
        nosyncfiles: o.flag("nosyncfiles"),
        dry_run: o.flag("dry-run"),
        explain: o.list("explain").to_vec(),
        no_cache: o.flag("no-cache"),
    }))
}

fn plan(opts: Opts, xcatroot: &Path, host: &mut dyn Host) -> Result<Plan> {
    let name = opts.name.clone();
    let os = host
        .table_get(
            "osimage",
            &[("imagename", &name)],
            &[
                "osvers",
                "osarch",
                "profile",
                "provmethod",
                "synclists",
                "environvar",
            ],
        )
        .map_err(|e| Fail(format!("The osimage table cannot be opened. ({e})")))?
        .ok_or_else(|| {
            Fail(format!(
                "Cannot find image '{name}' from the osimage table."
            ))
        })?;
    let li = host
        .table_get(
            "linuximage",
            &[("imagename", &name)],
            &["exlist", "rootimgdir"],
        )
        .map_err(|e| Fail(format!("The linuximage table cannot be opened. ({e})")))?;
    // getAttribs returns no row when none of the asked columns is set; stock then says the
    // image is missing from linuximage, and so do we.
    let li = li.ok_or_else(|| Fail(format!("Cannot find {name} from the linuximage table.")))?;
    let get = |k: &str| os.get(k).cloned().filter(|v| perl_true(Some(v)));
    let (Some(osvers), Some(osarch), Some(profile), Some(provmethod)) = (
        get("osvers"),
        get("osarch"),
        get("profile"),
        get("provmethod"),
    ) else {
        return Err(Fail(format!(
            "osimage.osvers, osimage.osarch, osimage.profile and osimage.provmethod must be specified for the image {name} in the database."
        )));
    };
    if provmethod != "netboot" {
        return Err(Fail(format!(
            "'{name}' cannot be used to build diskless image. Make sure osimage.provmethod is 'netboot'."
        )));
    }
    // Stock checks the compressor before the method, so a request with both wrong reports
    // the compressor.
    let compress = match opts.compress.as_deref() {
        None => (compress::Method::Gzip, "gzip".to_string()),
        Some(c @ ("gzip" | "pigz")) => (compress::Method::Gzip, c.to_string()),
        Some("xz") => (compress::Method::Xz, "xz".to_string()),
        Some(c) => return Err(Fail(format!("Invalid compress method '{c}' requested"))),
    };
    let method = match opts.method.as_deref().unwrap_or("cpio") {
        "cpio" => Method::Cpio,
        "tar" => Method::Tar,
        "squashfs" => Method::Squashfs,
        m => return Err(Fail(format!("Invalid archive method '{m}' requested"))),
    };
    let installdir = host
        .site_get("installdir")?
        .unwrap_or_else(|| "/install".into());
    let installdir = image::normalize_dir(&installdir).map_err(|why| {
        Fail(format!(
            "The site attribute installdir ({}) cannot be used: {why}",
            shown(&installdir)
        ))
    })?;
    let destdir = match li.get("rootimgdir").filter(|d| perl_true(Some(d))) {
        Some(d) => image::normalize_dir(d).map_err(|why| {
            Fail(format!(
                "Invalid rootimgdir {} for osimage {name}: {why}",
                shown(d)
            ))
        })?,
        None => {
            for (what, v) in [
                ("osvers", &osvers),
                ("osarch", &osarch),
                ("profile", &profile),
            ] {
                if let Some(why) = image::component_problem(v) {
                    return Err(Fail(format!(
                        "Invalid {what} {} for osimage {name}: {why}",
                        shown(v)
                    )));
                }
            }
            installdir
                .join("netboot")
                .join(&osvers)
                .join(&osarch)
                .join(&profile)
        }
    };
    image::check_image_dir(&destdir, &[&installdir]).map_err(|why| {
        Fail(format!(
            "Refusing to pack into {}: {why}",
            destdir.display()
        ))
    })?;
    let rootimg = destdir.join("rootimg");

    // The dracut install script comes from the xCAT installation the request names.
    let netboot = xcatroot.join("share/xcat/netboot");
    let dracut_install = if netboot.is_dir() {
        let dist = distname(&osvers, &netboot).ok_or_else(|| {
            Fail(format!(
                "Unable to find {} directory for {osvers}",
                netboot.display()
            ))
        })?;
        let own = netboot.join(&dist).join("dracut_033/install.netboot");
        let rh = netboot.join("rh/dracut_033/install.netboot");
        [own, rh].into_iter().find(|p| p.is_file())
    } else {
        None
    };

    if !rootimg.is_dir() {
        return Err(Fail(format!(
            "{} does not exist, run genimage -o {osvers} -p {profile} on a server with matching architecture",
            rootimg.display()
        )));
    }
    let dsklspost = installdir.join("postscripts/xcatdsklspost");
    if !opts.dry_run && !dsklspost.is_file() {
        // Stock reports this and packs anyway (exit 1); an image without it cannot run its
        // postscripts, so we stop before writing anything.
        return Err(Fail(format!(
            "Could not find the script {}.",
            dsklspost.display()
        )));
    }
    match method {
        Method::Squashfs if proc::find_program("mksquashfs").is_none() => {
            let rpm = if osvers.contains("sle") {
                "squashfs"
            } else {
                "squashfs-tools"
            };
            return Err(Fail(format!(
                "mksquashfs not found, {rpm} rpm should be installed on the management node"
            )));
        }
        _ => {}
    }
    if opts.tracker.is_some() && method == Method::Cpio && proc::find_program("ctorrent").is_none()
    {
        return Err(Fail(
            "--tracker needs ctorrent, which is not installed on the management node".into(),
        ));
    }

    // Time zone: the localtime link goes into the stream; its zoneinfo file is included back.
    let timezone = host.site_get("timezone")?;
    let tz_includes = match &timezone {
        Some(tz) => {
            if tz.split('/').any(|c| c.is_empty() || c == "." || c == "..") {
                return Err(Fail(format!("Invalid site timezone {}", shown(tz))));
            }
            exlist::timezone_includes(&rootimg, tz)
        }
        None => Vec::new(),
    };
    let exlist_files: Vec<PathBuf> = li
        .get("exlist")
        .map(|v| {
            exlist::split_exlist_attr(v)
                .into_iter()
                .map(PathBuf::from)
                .collect()
        })
        .unwrap_or_default();
    let mut rules = Vec::new();
    for f in &exlist_files {
        rules.extend(
            exlist::read_exlist(f)
                .map_err(|e| Fail(format!("Cannot use exlist {}: {e}", f.display())))?,
        );
    }
    let selection = Selection::new(rules, tz_includes);

    let secureroot = host
        .site_get("secureroot")?
        .is_some_and(|v| v.trim().parse::<f64>() == Ok(1.0));
    let shadow_hash = if secureroot {
        "*".to_string()
    } else {
        host.system_password()?
            .unwrap_or_else(|| "cluster".to_string())
    };

    let mut synclists = Vec::new();
    if !opts.nosyncfiles {
        let files: Vec<PathBuf> = match get("synclists") {
            Some(v) => v
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(PathBuf::from)
                .collect(),
            None => synclist::default_synclist_candidates(&installdir, &osvers, &osarch, &profile)
                .into_iter()
                .find(|p| p.is_file())
                .into_iter()
                .collect(),
        };
        for f in files.into_iter().filter(|f| f.is_file()) {
            let text = std::fs::read_to_string(&f)
                .map_err(|e| Fail(format!("Cannot read synclist {}: {e}", f.display())))?;
            let env = synclist::parse_osimage_env(get("environvar").as_deref().unwrap_or(""));
            synclists.push(
                synclist::parse_synclist_with_env(&text, &f, &env)
                    .map_err(|e| Fail(format!("Cannot use synclist: {e}")))?,
            );
        }
    }

    let statelite_links = if rootimg.join(".statelite/litefile.save").is_file() {
        statelite_links(host, &format!("{osvers}-{osarch}-statelite-{profile}"))?
    } else {
        Vec::new()
    };

    Ok(Plan {
        method,
        compress,
        statelite_links,
        destdir,
        rootimg,
        installdir,
        selection,
        exlist_files,
        timezone,
        shadow_hash,
        dracut_install,
        synclists,
        opts,
    })
}

/// The top-level `link` entries of the litefile table for a statelite-treated tree, as
/// `ilitefile <osvers>-<osarch>-statelite-<profile>` finds them: rows for the image's groups,
/// `ALL` and the image itself, later ones overriding earlier ones for the same file; entries
/// whose parent directory is itself an entry are left to their parent (parseLiteFiles).
fn statelite_links(host: &mut dyn Host, image: &str) -> Result<Vec<String>> {
    let groups = host
        .table_get("osimage", &[("imagename", image)], &["groups"])?
        .and_then(|r| r.get("groups").cloned());
    let mut by_file: std::collections::BTreeMap<String, String> = std::collections::BTreeMap::new();
    for key in groups.iter().map(String::as_str).chain(["ALL", image]) {
        let cond = format!("image=={key}");
        for row in host.table_list("litefile", &[&cond], &["image", "file", "options"])? {
            if let Some(file) = row.get("file") {
                by_file.insert(
                    file.clone(),
                    row.get("options").cloned().unwrap_or_default(),
                );
            }
        }
    }
    let files: Vec<&String> = by_file.keys().collect();
    let mut links = Vec::new();
    for (file, options) in &by_file {
        let trimmed = file.trim_end_matches('/');
        let parent = match trimmed.rfind('/') {
            Some(i) => format!("{}/", &trimmed[..i.max(1)]),
            None => "/".to_string(),
        };
        let is_child = parent != "/" && files.iter().any(|f| **f == parent);
        if !is_child && options.contains("link") {
            if image::normalize_dir(trimmed).is_err() || trimmed == "/" {
                return Err(Fail(format!(
                    "Invalid litefile entry {} for {image}",
                    shown(file)
                )));
            }
            links.push(trimmed.to_string());
        }
    }
    Ok(links)
}

/// Which `share/xcat/netboot/<dist>` directory serves `osvers`: the longest prefix that exists
/// (`rhels9.4` → `rh`), `sles` for Leap 15.
fn distname(osvers: &str, netboot: &Path) -> Option<String> {
    if osvers.starts_with("leap15") {
        return Some("sles".into());
    }
    let mut d = osvers.to_string();
    while !d.is_empty() {
        if netboot.join(&d).is_dir() {
            return Some(d);
        }
        d.pop();
    }
    None
}

/// Test hook: `SOURCE_DATE_EPOCH` (the reproducible-builds variable) fixes the clock packimage
/// stamps injected entries and `TIMESTAMP` with, so two packs of one tree can be compared
/// byte for byte. Unset in production.
fn fixed_epoch() -> Option<i64> {
    std::env::var("SOURCE_DATE_EPOCH").ok()?.trim().parse().ok()
}

fn now() -> i64 {
    if let Some(t) = fixed_epoch() {
        return t;
    }
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn bytes_entry(path: &str, data: Vec<u8>, mode: u32) -> Entry {
    Entry {
        path: path.as_bytes().to_vec(),
        kind: Kind::File {
            size: data.len() as u64,
        },
        mode,
        uid: 0,
        gid: 0,
        mtime: now(),
        mtime_nsec: 0,
        xattrs: Vec::new(),
        hardlink: None,
        ino: 0,
        source: Source::Bytes(data),
    }
}

fn disk_entry(dest: &[u8], src: &Path) -> io::Result<Entry> {
    let md = std::fs::symlink_metadata(src)?;
    let mut e = walk::entry_for(src, dest.to_vec(), &md)?;
    e.hardlink = None;
    Ok(e)
}

/// A random (version 4) UUID, as `uuidgen` prints it. Test hook: `XCAT_IMAGED_TEST_UUID`
/// replaces it (with `SOURCE_DATE_EPOCH`, a repack can then be compared with a full pack).
fn uuid() -> String {
    if let Ok(fixed) = std::env::var("XCAT_IMAGED_TEST_UUID") {
        if !fixed.is_empty() && fixed.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-') {
            return fixed;
        }
    }
    let mut b = [0u8; 16];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .is_err()
    {
        let n = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        b = (n ^ (u128::from(std::process::id()) << 64)).to_le_bytes();
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// `date` as xcatd would print it (C locale, its time zone).
fn timestamp() -> String {
    let args: Vec<String> = match fixed_epoch() {
        Some(t) => vec!["-d".into(), format!("@{t}")],
        None => Vec::new(),
    };
    let mut step = Step::new("date", args);
    if let Ok(tz) = std::env::var("TZ") {
        step.env.push(("TZ".into(), tz));
    }
    proc::run(&step)
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| format!("@{}", now()))
}

/// Single-quotes a value for the `sh`-sourced xcatinfo file.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// What xCAT writes into the tree before packing, as overlay entries.
fn overlay(p: &Plan, host: &mut dyn Host) -> Result<Overlay> {
    let r = &p.rootimg;
    let mut o = Overlay::new();
    let io_fail = |what: &str, e: io::Error| Fail(format!("{what}: {e}"));

    // /xcatpost: the postscripts tree, replacing whatever the image has there (cp -r of the
    // top-level entries, dotfiles skipped; owned by root as cp makes them).
    o.replace_subtree(b"xcatpost");
    let mut xp = bytes_entry("xcatpost", Vec::new(), 0o755);
    xp.kind = Kind::Dir;
    xp.source = Source::None;
    o.put(xp, Merge::Replace);
    let ps = p.installdir.join("postscripts");
    if ps.is_dir() {
        let walker = walkdir::WalkDir::new(&ps)
            .follow_links(false)
            .sort_by(|a, b| a.file_name().cmp(b.file_name()));
        for item in walker.min_depth(1) {
            let item = item.map_err(|e| Fail(format!("Cannot read {}: {e}", ps.display())))?;
            let rel = item
                .path()
                .strip_prefix(&ps)
                .map_err(|_| Fail("postscripts walk left its root".into()))?;
            if item.depth() == 1 && rel.as_os_str().as_bytes().starts_with(b".") {
                continue;
            }
            let mut dest = b"xcatpost/".to_vec();
            dest.extend_from_slice(rel.as_os_str().as_bytes());
            let mut e = disk_entry(&dest, item.path())
                .map_err(|e| io_fail("Cannot read postscripts", e))?;
            e.uid = 0;
            e.gid = 0;
            e.xattrs.clear();
            o.put(e, Merge::Replace);
        }
    }

    // /opt/xcat/xcatinfo: a fresh UUID every pack.
    let info = format!(
        "IMAGENAME={}\nIMAGEUUID={}\nTIMESTAMP={}\n",
        sh_quote(&p.opts.name),
        sh_quote(&uuid()),
        sh_quote(&timestamp())
    );
    o.put(
        bytes_entry("opt/xcat/xcatinfo", info.into_bytes(), 0o644),
        Merge::Replace,
    );

    // /opt/xcat/xcatdsklspost from the postscripts directory, mode 0755.
    let dskls = p.installdir.join("postscripts/xcatdsklspost");
    if dskls.is_file() {
        let mut e = disk_entry(b"opt/xcat/xcatdsklspost", &dskls)
            .map_err(|e| io_fail("Cannot read xcatdsklspost", e))?;
        e.mode = 0o755;
        e.uid = 0;
        e.gid = 0;
        e.xattrs.clear();
        o.put(e, Merge::Replace);
    }

    // Root's line in /etc/shadow, the rest of the file kept.
    if r.join("etc").is_dir() {
        let old = std::fs::read(r.join("etc/shadow")).unwrap_or_default();
        let mut new = format!("root:{}:13880:0:99999:7:::\n", p.shadow_hash).into_bytes();
        for line in old.split_inclusive(|&c| c == b'\n') {
            if !line.starts_with(b"root:") {
                new.extend_from_slice(line);
            }
        }
        o.put(bytes_entry("etc/shadow", new, 0o600), Merge::KeepMetadata);
    }

    // /etc/localtime as a relative link into the image's zoneinfo.
    match &p.timezone {
        Some(tz) => {
            let target = format!("../usr/share/zoneinfo/{tz}");
            if !r.join("usr/share/zoneinfo").join(tz).exists() {
                host.warning(format!(
                    "Unable to set timezone to '{tz}', check this is a valid timezone"
                ));
            }
            let mut e = bytes_entry("etc/localtime", Vec::new(), 0o777);
            e.kind = Kind::Symlink {
                target: target.into_bytes(),
            };
            e.source = Source::None;
            o.put(e, Merge::Replace);
        }
        None => host.info(
            "No timezone defined in site table, skipping timezone /etc/localtime configuration",
        ),
    }
    if p.timezone.is_none() {
        for _ in &p.exlist_files {
            host.info("No timezone defined in site table, skipping timezone exlist configuration");
        }
    }

    // The dracut module's install script from the xCAT installation, if the image has one.
    let install = "usr/lib/dracut/modules.d/97xcat/install";
    if r.join(install).is_file() {
        match &p.dracut_install {
            Some(src) => {
                let data = std::fs::read(src).map_err(|e| io_fail(&format!("Cannot read {}", src.display()), e))?;
                o.put(bytes_entry(install, data, 0o755), Merge::KeepMetadata);
            }
            None => host.info(format!(
                "No xCAT netboot files (install.netboot) found; ./{install} is packed as the image has it"
            )),
        }
    }

    // An rc.sysinit that genimage set aside goes back in place (the backup is excluded).
    let backup = r.join("etc/rc.sysinit.backup");
    if r.join("usr/share/dracut").is_dir() && backup.is_file() {
        let e = disk_entry(b"etc/rc.sysinit", &backup)
            .map_err(|e| io_fail("Cannot read rc.sysinit.backup", e))?;
        o.put(e, Merge::Replace);
    }

    // A tree that liteimg treated: `link` entries go back to their stateless defaults from
    // `.default<file>` (stock moves them aside and copies the defaults in, then back again).
    for file in &p.statelite_links {
        let rel = file.trim_start_matches('/').as_bytes().to_vec();
        o.replace_subtree(&rel);
        let default = r.join(".default").join(file.trim_start_matches('/'));
        if std::fs::symlink_metadata(&default).is_err() {
            host.warning(format!(
                "statelite: {} has no default in .default; it is left out of the image",
                file
            ));
            continue;
        }
        for item in walkdir::WalkDir::new(&default)
            .follow_links(false)
            .sort_by(|a, b| a.file_name().cmp(b.file_name()))
        {
            let item = item.map_err(|e| Fail(format!("Cannot read {}: {e}", default.display())))?;
            let sub = item.path().strip_prefix(&default).unwrap_or(Path::new(""));
            let mut dest = rel.clone();
            if !sub.as_os_str().is_empty() {
                dest.push(b'/');
                dest.extend_from_slice(sub.as_os_str().as_bytes());
            }
            let e = disk_entry(&dest, item.path())
                .map_err(|e| io_fail("Cannot read the statelite defaults", e))?;
            o.put(e, Merge::Replace);
        }
    }

    // Synclists, applied into the stream.
    for list in &p.synclists {
        synclist_into(list, &mut o, host)?;
    }
    Ok(o)
}

/// Expands a shell glob in the last component of `src` (`/home/x/*`), sorted; dotfiles only
/// when the pattern starts with a dot, as the shell does. Without glob characters: `src`.
fn expand_glob(src: &Path) -> io::Result<Vec<PathBuf>> {
    let name = src
        .file_name()
        .map(|n| n.as_bytes().to_vec())
        .unwrap_or_default();
    let parent = src.parent().unwrap_or(Path::new("/"));
    let globby = |b: &[u8]| b.iter().any(|c| matches!(c, b'*' | b'?' | b'['));
    if !globby(&name) {
        return Ok(vec![src.to_path_buf()]);
    }
    if globby(parent.as_os_str().as_bytes()) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "glob characters are only supported in the last component",
        ));
    }
    let mut out = Vec::new();
    for e in std::fs::read_dir(parent)? {
        let e = e?;
        let n = e.file_name();
        let n = n.as_bytes();
        if n.starts_with(b".") && !name.starts_with(b".") {
            continue;
        }
        if exlist::path_glob_match(&name, n) {
            out.push(e.path());
        }
    }
    out.sort();
    Ok(out)
}

/// Applies a synclist's copy lines into the stream, as `xdcp -i` (rsync -Lprogtz) does: links
/// followed, directories recursive, modes, owners and mtimes kept. Node-specific lines and the
/// APPEND/MERGE/EXECUTE sections do not apply to images (xdcp -i ignores them too).
fn synclist_into(list: &synclist::SyncList, o: &mut Overlay, host: &mut dyn Host) -> Result<()> {
    let at = |line: usize| format!("{}:{line}", list.file.display());
    let rel = |p: &Path| -> Vec<u8> {
        let b = p.as_os_str().as_bytes();
        b.strip_prefix(b"/").unwrap_or(b).to_vec()
    };
    for nc in &list.node_copies {
        host.warning(format!(
            "{}: node-specific line ({}) does not apply to an image; skipped",
            at(nc.copy.line),
            nc.noderange
        ));
    }
    if let Some(line) = list.first_section_line {
        host.warning(format!(
            "{}: APPEND, MERGE, EXECUTE and EXECUTEALWAYS sections are not applied to images (xCAT's xdcp -i does not apply them either)",
            at(line)
        ));
    }
    for c in &list.copies {
        let mut sources = Vec::new();
        for s in &c.sources {
            let found = expand_glob(s)
                .map_err(|e| Fail(format!("{}: {}: {e}", at(c.line), s.display())))?;
            if found.is_empty() {
                return Err(Fail(format!(
                    "{}: {} matches no file",
                    at(c.line),
                    s.display()
                )));
            }
            sources.extend(found);
        }
        let into_dir = c.dest_is_dir || sources.len() > 1;
        for src in &sources {
            let contents_only = src.as_os_str().as_bytes().ends_with(b"/");
            let dest = if contents_only || !into_dir {
                c.dest.clone()
            } else {
                c.dest.join(src.file_name().unwrap_or_default())
            };
            let walker = walkdir::WalkDir::new(src)
                .follow_links(true)
                .sort_by(|a, b| a.file_name().cmp(b.file_name()));
            for item in walker {
                let item = item.map_err(|e| Fail(format!("{}: {e}", at(c.line))))?;
                let sub = item.path().strip_prefix(src).unwrap_or(Path::new(""));
                let d = if sub.as_os_str().is_empty() {
                    dest.clone()
                } else {
                    dest.join(sub)
                };
                let md = std::fs::metadata(item.path())
                    .map_err(|e| Fail(format!("{}: {}: {e}", at(c.line), item.path().display())))?;
                let mut e = walk::entry_for(item.path(), rel(&d), &md)
                    .map_err(|e| Fail(format!("{}: {e}", at(c.line))))?;
                e.hardlink = None;
                e.xattrs.clear();
                o.put(e, Merge::Replace);
            }
        }
    }
    Ok(())
}

/// What the pack did, for the summary line.
struct Stats {
    entries: u64,
    input: u64,
    output: u64,
    /// cpio and tar: what the compressor wrote, and the settings it names in its index.
    segments: Option<(compress::Report, String)>,
}

fn execute(p: &Plan, host: &mut dyn Host, cancel: &Cancel) -> Result<()> {
    let started = Instant::now();
    if let Ok(gone) = publish::clean_stale(&p.destdir) {
        for g in gone {
            log::info!("removed stale temp file {}", g.display());
        }
    }
    let overlay = overlay(p, host)?;
    let sel = &p.selection;
    let mut keep = |path: &[u8]| !matches!(sel.decide(path), Decision::Excluded(_));
    let walked = walk::walk(&p.rootimg, &mut keep, &|| cancel.is_cancelled()).map_err(|e| {
        if e.kind() == io::ErrorKind::Interrupted {
            Fail("packimage was interrupted; the previous image is unchanged".into())
        } else {
            Fail(format!("Cannot read the image: {e}"))
        }
    })?;
    if !walked.sockets.is_empty() {
        host.warning(format!(
            "{} sockets skipped (archives cannot hold them), e.g. ./{}",
            walked.sockets.len(),
            String::from_utf8_lossy(&walked.sockets[0])
        ));
    }
    for r in sel.unused_rules() {
        host.warning(format!(
            "{}:{}: exlist pattern {} matched nothing",
            r.file.display(),
            r.line,
            String::from_utf8_lossy(&r.pattern)
        ));
    }
    let entries = inject::merge(walked, overlay, &mut keep, now());
    for path in &p.opts.explain {
        host.info(explain(sel, path, &entries));
    }
    if p.opts.dry_run {
        for e in &entries {
            host.data(String::from_utf8_lossy(&walk::find_path(&e.path)).into_owned());
        }
        host.info(format!(
            "{} entries would be packed; nothing was written (--dry-run)",
            entries.len()
        ));
        return Ok(());
    }
    let input: u64 = entries.iter().map(Entry::size).sum();
    if p.method == Method::Cpio {
        if let Some(big) = entries.iter().find(|e| e.size() >= 1 << 32) {
            return Err(Fail(format!(
                "./{} is 4 GiB or larger; cpio newc cannot store it. Use -m tar or -m squashfs",
                String::from_utf8_lossy(&big.path)
            )));
        }
    }
    check_space(&p.destdir, input, p.method)?;

    host.data(format!("Packing contents of {}", p.rootimg.display()));
    host.info(format!("archive method:{}", p.method.name()));
    if p.method != Method::Squashfs {
        host.info(format!("compress method:{}", p.compress.1));
    }
    let suffix = match (p.method, p.compress.0) {
        (Method::Squashfs, _) => "sfs".to_string(),
        (m, compress::Method::Gzip) => format!("{}.gz", m.name()),
        (m, compress::Method::Xz) => format!("{}.xz", m.name()),
    };
    let file_name = format!("rootimg.{suffix}");
    let mut staged = Staged::create(&p.destdir, &file_name).map_err(|e| Fail(e.to_string()))?;
    let mut progress = Progress::new(entries.len() as u64, input);
    let stats = match p.method {
        Method::Cpio | Method::Tar => {
            let file = staged
                .file()
                .try_clone()
                .map_err(|e| Fail(format!("{e}")))?;
            let copts = compress::Options::new(p.compress.0);
            let reuse = if p.opts.no_cache {
                None
            } else {
                segcache::Reuse::open(&p.destdir, &file_name, &copts.cache_tag()).map(Arc::new)
            };
            if let Some(r) = &reuse {
                log::info!("segment cache: {} segments of the previous image", r.len());
            }
            let comp =
                Compressor::with_cache(BufWriter::with_capacity(1 << 20, file), &copts, reuse)
                    .map_err(|e| Fail(format!("Cannot start the compressor: {e}")))?;
            let out = if p.method == Method::Cpio {
                let mut w = CpioWriter::new(comp);
                write_entries(&mut w, &entries, &mut progress, host, cancel)?;
                let c = *w.warnings();
                if c.xattrs > 0 {
                    host.warning(format!(
                        "{} files have extended attributes ({} file capabilities, {} SELinux labels) that cpio cannot carry; use -m tar to keep them",
                        c.xattrs, c.capabilities, c.selinux
                    ));
                }
                w.into_inner()
            } else {
                let mut w = TarWriter::new(comp);
                write_entries(&mut w, &entries, &mut progress, host, cancel)?;
                w.into_inner()
            };
            let (mut buf, report) = out
                .finish_report()
                .map_err(|e| Fail(format!("Compressing the archive failed: {e}")))?;
            buf.flush()
                .map_err(|e| Fail(format!("Writing {} failed: {e}", staged.target().display())))?;
            drop(buf);
            let output = std::fs::metadata(staged.temp_path())
                .map(|m| m.len())
                .unwrap_or(0);
            Stats {
                entries: entries.len() as u64,
                input,
                output,
                segments: Some((report, copts.cache_tag())),
            }
        }
        Method::Squashfs => squashfs(&entries, &staged, &mut progress, host, cancel)?,
    };
    if cancel.is_cancelled() {
        return Err(Fail(
            "packimage was interrupted; the previous image is unchanged".into(),
        ));
    }
    let published = staged
        .commit(0o644)
        .map_err(|e| Fail(format!("Cannot publish the image: {e}")))?;
    let mut keep_names = vec![file_name.clone()];
    if let (Some(tracker), Method::Cpio) = (&p.opts.tracker, p.method) {
        keep_names.push(format!("{file_name}.metainfo"));
        metainfo(&p.destdir, &file_name, tracker)?;
    }
    let index = stats
        .segments
        .as_ref()
        .map(|(r, tag)| (r.segments.as_slice(), tag.as_str()));
    if let Err(e) = segcache::save(
        &p.destdir,
        &file_name,
        index.map_or("", |i| i.1),
        index.map(|i| i.0),
    ) {
        // Only the next repack's speed depends on it.
        host.warning(format!(
            "Cannot write the segment cache in {}: {e}",
            p.destdir.join(segcache::DIR).display()
        ));
    }
    let keep_refs: Vec<&str> = keep_names.iter().map(String::as_str).collect();
    if let Err(e) = publish::remove_other_formats(&p.destdir, &keep_refs) {
        host.warning(format!(
            "Cannot remove older rootimg files in {}: {e}",
            p.destdir.display()
        ));
    }
    if p.method == Method::Cpio && p.compress.0 == compress::Method::Gzip && stats.input >= 4 << 30
    {
        host.warning("The image expands to more than 4 GiB; some loaders cannot unpack a gzip cpio that large. Consider -m squashfs".to_string());
    }
    let secs = started.elapsed().as_secs_f64();
    let segments = stats.segments.as_ref().map_or(String::new(), |(r, _)| {
        format!(
            "; {} segments, {} reused, {} compressed",
            r.segments.len(),
            r.reused,
            r.compressed
        )
    });
    host.info(format!(
        "Packed {} entries, {:.1} MiB into {} ({:.1} MiB, {:.0}%) in {secs:.1} s{segments}",
        stats.entries,
        stats.input as f64 / 1048576.0,
        published.display(),
        stats.output as f64 / 1048576.0,
        if stats.input > 0 {
            stats.output as f64 * 100.0 / stats.input as f64
        } else {
            0.0
        },
    ));
    Ok(())
}

fn explain(sel: &Selection, path: &str, entries: &[Entry]) -> String {
    let fp = if path == "." || path.starts_with("./") {
        path.to_string()
    } else {
        format!("./{}", path.trim_start_matches('/'))
    };
    let present = entries
        .iter()
        .any(|e| walk::find_path(&e.path) == fp.as_bytes());
    let why = match sel.decide(fp.as_bytes()) {
        Decision::Excluded(r) => format!(
            "excluded by {} at {}:{}",
            String::from_utf8_lossy(&r.pattern),
            r.file.display(),
            r.line
        ),
        Decision::IncludedBack(r) => format!(
            "included back by +{} at {}:{}",
            String::from_utf8_lossy(&r.pattern),
            r.file.display(),
            r.line
        ),
        Decision::Keep | Decision::KeepNoRules => "kept: no exclude pattern matches".to_string(),
    };
    format!(
        "{fp}: {why}{}",
        if present {
            ""
        } else {
            " (not in the archive: not in the image, or its parent is excluded)"
        }
    )
}

fn check_space(dir: &Path, input: u64, method: Method) -> Result<()> {
    let Ok(st) = nix::sys::statvfs::statvfs(dir) else {
        return Ok(());
    };
    let avail = st.blocks_available() * st.fragment_size();
    // A compressed root tree is rarely more than half its size; squashfs about the same.
    let need = match method {
        Method::Squashfs | Method::Cpio | Method::Tar => input / 2,
    };
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

/// Rate-limited sinfo progress.
struct Progress {
    total_entries: u64,
    total_bytes: u64,
    entries: u64,
    bytes: u64,
    started: Instant,
    last: Instant,
}

impl Progress {
    fn new(total_entries: u64, total_bytes: u64) -> Progress {
        let now = Instant::now();
        Progress {
            total_entries,
            total_bytes,
            entries: 0,
            bytes: 0,
            started: now,
            last: now,
        }
    }

    fn step(&mut self, e: &Entry, host: &mut dyn Host) {
        self.entries += 1;
        self.bytes += e.size();
        if self.last.elapsed() < Duration::from_millis(500) {
            return;
        }
        self.last = Instant::now();
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        let rate = self.bytes as f64 / secs;
        let eta = if rate > 0.0 {
            (self.total_bytes.saturating_sub(self.bytes)) as f64 / rate
        } else {
            0.0
        };
        host.sinfo(format!(
            "{}/{} entries, {}/{} MiB, {:.0} MiB/s, ETA {:.0} s",
            self.entries,
            self.total_entries,
            self.bytes >> 20,
            self.total_bytes >> 20,
            rate / 1048576.0,
            eta
        ));
    }
}

fn write_entries(
    w: &mut dyn ArchiveWriter,
    entries: &[Entry],
    progress: &mut Progress,
    host: &mut dyn Host,
    cancel: &Cancel,
) -> Result<()> {
    for e in entries {
        if cancel.is_cancelled() {
            return Err(Fail(
                "packimage was interrupted; the previous image is unchanged".into(),
            ));
        }
        let res = if w.carries_data(e) {
            match &e.source {
                Source::Disk(path) => content::append_from_disk(w, e, path),
                Source::Bytes(b) => w.append(e, &mut &b[..]),
                Source::None => w.append(e, &mut io::empty()),
            }
        } else {
            w.append(e, &mut io::empty())
        };
        res.map_err(|err| {
            Fail(format!(
                "Packing ./{} failed: {err}",
                String::from_utf8_lossy(&e.path)
            ))
        })?;
        progress.step(e, host);
    }
    w.finish_archive()
        .map_err(|err| Fail(format!("Finishing the archive failed: {err}")))
}

/// Streams the entries as tar into mksquashfs (no copy of the tree anywhere).
fn squashfs(
    entries: &[Entry],
    staged: &Staged,
    progress: &mut Progress,
    host: &mut dyn Host,
    cancel: &Cancel,
) -> Result<Stats> {
    let root = entries.first().filter(|e| e.path.is_empty());
    let (mode, uid, gid, mtime) =
        root.map_or((0o755, 0, 0, now()), |r| (r.mode, r.uid, r.gid, r.mtime));
    let args: Vec<std::ffi::OsString> = vec![
        "-".into(),
        staged.temp_path().into(),
        "-tar".into(),
        "-noappend".into(),
        "-quiet".into(),
        "-no-progress".into(),
        "-root-mode".into(),
        format!("{:o}", mode & 0o7777).into(),
        "-root-uid".into(),
        uid.to_string().into(),
        "-root-gid".into(),
        gid.to_string().into(),
        "-root-time".into(),
        mtime.max(0).to_string().into(),
        // mksquashfs sizes its caches from physical memory (a quarter of it by default):
        // bounded, so peak memory does not grow with the machine or the image.
        "-mem".into(),
        "128M".into(),
    ];
    let step = Step::new("mksquashfs", args);
    let mut child = proc::Running::start(&step).map_err(|e| Fail(e.to_string()))?;
    let body: Vec<Entry> = entries
        .iter()
        .filter(|e| !e.path.is_empty())
        .cloned()
        .collect();
    let written = {
        let mut w = TarWriter::new(BufWriter::with_capacity(1 << 20, child.stdin()));
        let r = write_entries(&mut w, &body, progress, host, cancel);
        r.and_then(|()| {
            w.into_inner()
                .flush()
                .map_err(|e| Fail(format!("Feeding mksquashfs failed: {e}")))
        })
    };
    if let Err(f) = written {
        child.stop(Duration::from_secs(5));
        return Err(f);
    }
    child.wait().map_err(|e| Fail(format!("Command {e}")))?;
    let output = std::fs::metadata(staged.temp_path())
        .map(|m| m.len())
        .unwrap_or(0);
    Ok(Stats {
        entries: entries.len() as u64,
        input: entries.iter().map(Entry::size).sum(),
        output,
        segments: None,
    })
}

/// `ctorrent -t` metainfo for the cpio image, written under a temp name and renamed.
fn metainfo(dir: &Path, file_name: &str, tracker: &str) -> Result<()> {
    let final_name = format!("{file_name}.metainfo");
    let tmp = format!(".{final_name}.tmp");
    let _ = std::fs::remove_file(dir.join(&tmp));
    let step = Step::new(
        "ctorrent",
        ["-t", "-u", tracker, "-l", "1048576", "-s", &tmp, file_name],
    )
    .cwd(dir);
    proc::run(&step).map_err(|e| Fail(format!("Making the torrent metainfo failed: {e}")))?;
    std::fs::set_permissions(
        dir.join(&tmp),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .and_then(|()| std::fs::rename(dir.join(&tmp), dir.join(&final_name)))
    .map_err(|e| Fail(format!("Cannot publish {final_name}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_look_like_uuidgen() {
        let u = uuid();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert!(u.chars().all(|c| c == '-' || c.is_ascii_hexdigit()));
        assert_ne!(u, uuid());
    }

    #[test]
    fn quoting_for_sh() {
        assert_eq!(sh_quote("img"), "'img'");
        assert_eq!(sh_quote("a'b"), "'a'\\''b'");
    }

    #[test]
    fn distnames() {
        let t = tempfile::tempdir().unwrap();
        for d in ["rh", "sles", "ubuntu", "centos", "alma"] {
            std::fs::create_dir(t.path().join(d)).unwrap();
        }
        assert_eq!(distname("rhels9.4", t.path()).as_deref(), Some("rh"));
        assert_eq!(distname("alma9", t.path()).as_deref(), Some("alma"));
        assert_eq!(
            distname("centos-stream9", t.path()).as_deref(),
            Some("centos")
        );
        assert_eq!(distname("ubuntu24.04", t.path()).as_deref(), Some("ubuntu"));
        assert_eq!(distname("leap15.5", t.path()).as_deref(), Some("sles"));
        assert_eq!(distname("zzz", t.path()), None);
    }
}
