//! `xcat-imaged doctor`: inspects an xCAT installation and says, in plain lines, what the engine
//! needs that is ready and what is missing. It only reads; it never changes a file or a table.
//!
//! The checks are functions of [`Options`] (the XCATROOT and where the tables are, so tests can
//! point them at a prepared layout) and a [`Probe`] (programs on the PATH, site table values, free
//! space, the installed engine's version), so everything that depends on the machine can be
//! replaced in tests. Nothing here runs an image command.

use crate::image::shown;
use crate::install::{BRIDGE, PLUGIN};
use crate::proc::{self, Step};
use crate::protocol::VERSION;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The site key the plugin registers the four commands under (`site:imagehandler`).
pub const SITE_KEY: &str = "imagehandler";
/// The value of [`SITE_KEY`] that selects this engine: the plugin's module name.
pub const MODULE: &str = "imaged";
/// xCAT's own plugins for the image commands, and what each one serves.
pub const STOCK_PLUGINS: [(&str, &str); 4] = [
    ("genimage.pm", "genimage"),
    ("packimage.pm", "packimage"),
    ("rmimage.pm", "rmimage"),
    ("imgport.pm", "imgexport and imgimport"),
];
/// Below this much free space in installdir, doctor warns (a packed image is a few GiB, and
/// packimage writes the new archive next to the old one before it replaces it).
pub const LOW_SPACE: u64 = 10 << 30;
/// xCAT's default installdir when the site table has none.
pub const DEFAULT_INSTALLDIR: &str = "/install";

const FIX_FILES: &str = "run \"xcat-imaged install-plugin\" or reinstall the xcat-imaged package";
const ENABLE: &str = "rescanplugins; chtab key=imagehandler site.value=imaged";
const DISABLE: &str = "chtab -d key=imagehandler site";
const ASK_XCAT: &str = "pass --site-imagehandler \"$(gettab key=imagehandler site.value)\"";

/// What to inspect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// XCATROOT: the plugins are in `lib/perl/xCAT_plugin` under it, the engine in `sbin`.
    pub xcatroot: PathBuf,
    /// Where xCAT's tables are, in XCATCFG form (see [`xcatcfg`]); `None` when unknown.
    pub xcatcfg: Option<String>,
    /// site.imagehandler as the admin gave it (`--site-imagehandler`); `""` means unset.
    pub site_imagehandler: Option<String>,
    /// installdir as the admin gave it (`--installdir`).
    pub installdir: Option<PathBuf>,
}

/// The parts of the machine the checks look at.
pub trait Probe {
    /// Where a program is, found the way the commands find it.
    fn find_program(&self, name: &str) -> Option<PathBuf>;
    /// A value of the SQLite site table in the file `db`; `Ok(None)` when the key has no enabled row.
    fn site_value(&self, db: &Path, key: &str) -> Result<Option<String>, String>;
    /// Bytes an unprivileged writer can still use in the filesystem of `dir`.
    fn free_bytes(&self, dir: &Path) -> io::Result<u64>;
    /// What `ENGINE --version` prints (first line).
    fn engine_version(&self, engine: &Path) -> Result<String, String>;
}

/// The real machine: [`proc::find_program`], the site table read with Perl's DBD::SQLite (what
/// xCAT itself uses) or else the `sqlite3` program, `statvfs`, and running the engine.
pub struct System;

impl Probe for System {
    fn find_program(&self, name: &str) -> Option<PathBuf> {
        proc::find_program(name)
    }

    fn site_value(&self, db: &Path, key: &str) -> Result<Option<String>, String> {
        read_site_perl(db, key)
            .or_else(|perl| read_site_sqlite3(db, key).map_err(|cli| format!("{perl}; {cli}")))
    }

    fn free_bytes(&self, dir: &Path) -> io::Result<u64> {
        let st = nix::sys::statvfs::statvfs(dir).map_err(io::Error::from)?;
        #[allow(clippy::unnecessary_cast)] // the field types differ between targets
        let free = st.blocks_available() as u64 * st.fragment_size() as u64;
        Ok(free)
    }

    fn engine_version(&self, engine: &Path) -> Result<String, String> {
        let out = proc::run(&Step::new(&engine.to_string_lossy(), ["--version"]))
            .map_err(|e| e.to_string())?;
        Ok(out.lines().next().unwrap_or("").trim().to_string())
    }
}

/// Site values are read for these keys only; they go into SQL text for the `sqlite3` program.
fn checked_key(key: &str) -> Result<&str, String> {
    if !key.is_empty() && key.bytes().all(|b| b.is_ascii_lowercase()) {
        Ok(key)
    } else {
        Err(format!("not a site key doctor reads: {}", shown(key)))
    }
}

/// The table file as a program argument: never taken for an option.
fn db_arg(db: &Path) -> PathBuf {
    if db.is_absolute() {
        db.to_path_buf()
    } else {
        Path::new(".").join(db)
    }
}

/// Like xCAT's `getAttribs`: rows whose `disable` column is set do not count.
const ENABLED_ROW: &str = "(disable IS NULL OR disable IN ('', '0', 'no', 'NO', 'No', 'nO'))";

/// The program `perl` runs to read one site value: the file and the key come in as arguments,
/// the answer goes out as `=VALUE` or `-` (no row).
const PERL_SITE: &str = r#"use strict; use warnings; use DBI; use DBD::SQLite;
my ($db, $key, $where) = @ARGV;
my $h = DBI->connect("dbi:SQLite:dbname=$db", "", "", { RaiseError => 1, PrintError => 0, sqlite_open_flags => DBD::SQLite::OPEN_READONLY() });
my @row = $h->selectrow_array("SELECT value FROM site WHERE key = ? AND $where", undef, $key);
print @row ? "=" . ($row[0] // "") . "\n" : "-\n";
"#;

/// Reads a site value with Perl's DBI and DBD::SQLite, read-only.
pub fn read_site_perl(db: &Path, key: &str) -> Result<Option<String>, String> {
    let key = checked_key(key)?;
    if db.to_string_lossy().contains(';') {
        return Err("perl: a ';' in the table path would end the DBI data source".into());
    }
    let out = proc::run(&Step::new(
        "perl",
        [
            "-e".into(),
            PERL_SITE.into(),
            db_arg(db).into_os_string(),
            key.into(),
            ENABLED_ROW.into(),
        ],
    ))
    .map_err(|e| format!("perl DBD::SQLite: {e}"))?;
    match out.lines().next() {
        Some("-") => Ok(None),
        Some(l) if l.starts_with('=') => Ok(Some(l[1..].to_string())),
        _ => Err(format!(
            "perl DBD::SQLite: unexpected answer {}",
            shown(&out)
        )),
    }
}

/// Reads a site value with the `sqlite3` program, read-only.
pub fn read_site_sqlite3(db: &Path, key: &str) -> Result<Option<String>, String> {
    let key = checked_key(key)?;
    let sql = format!(
        "SELECT '=' || ifnull(value, '') FROM site WHERE key = '{key}' AND {ENABLED_ROW} LIMIT 1;"
    );
    let out = proc::run(&Step::new(
        "sqlite3",
        [
            "-readonly".into(),
            "-batch".into(),
            "-bail".into(),
            "-noheader".into(),
            "-list".into(),
            "-cmd".into(),
            ".timeout 3000".into(),
            db_arg(db).into_os_string(),
            sql.into(),
        ],
    ))
    .map_err(|e| format!("sqlite3: {e}"))?;
    Ok(out
        .lines()
        .next()
        .and_then(|l| l.strip_prefix('='))
        .map(str::to_string))
}

/// XCATCFG as xCAT's `get_xcatcfg` finds it: the environment, else the first line of
/// `/etc/xcat/cfgloc`, else `SQLite:/opt/xcat/cfg` or `SQLite:/etc/xcat` when that directory
/// exists. A value without a colon names a SQLite directory.
pub fn xcatcfg(
    env: Option<&str>,
    cfgloc: Option<&str>,
    is_dir: &dyn Fn(&Path) -> bool,
) -> Option<String> {
    let mut v = env.unwrap_or("").to_string();
    if v.is_empty() {
        v = cfgloc
            .and_then(|c| c.lines().next())
            .unwrap_or("")
            .to_string();
    }
    if v.is_empty() {
        if is_dir(Path::new("/opt/xcat/cfg")) {
            v = "SQLite:/opt/xcat/cfg".into();
        } else if is_dir(Path::new("/etc/xcat")) {
            v = "SQLite:/etc/xcat".into();
        } else {
            return None;
        }
    }
    if !v.contains(':') {
        v = format!("SQLite:{v}");
    }
    Some(v)
}

/// Where xCAT keeps its tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// One SQLite file per table in this directory (`site.sqlite`).
    Sqlite(PathBuf),
    /// A database server; the word before the colon (`mysql`, `Pg`, `DB2`).
    Server(String),
}

/// The backend an XCATCFG value names.
pub fn backend(xcatcfg: &str) -> Backend {
    match xcatcfg.split_once(':') {
        Some(("SQLite", dir)) => Backend::Sqlite(PathBuf::from(dir)),
        Some((kind, _)) => Backend::Server(kind.to_string()),
        None => Backend::Sqlite(PathBuf::from(xcatcfg)),
    }
}

/// A site value as doctor knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SiteValue {
    /// The key has a non-empty value.
    Set(String),
    /// No row, or an empty value (xcatd treats both as unset).
    Unset,
    /// Could not be read, and why.
    Unknown(String),
}

/// A site value and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Site {
    /// The value.
    pub value: SiteValue,
    /// Where it came from, for the report (`--site-imagehandler`, a table file...).
    pub source: String,
}

/// Reads one site value from the tables `opts` points at.
pub fn site_value(opts: &Options, probe: &dyn Probe, key: &str) -> Site {
    let unknown = |why: String, source: &str| Site {
        value: SiteValue::Unknown(why),
        source: source.to_string(),
    };
    let Some(cfg) = &opts.xcatcfg else {
        return unknown(
            "no xCAT configuration found (no XCATCFG, no /etc/xcat/cfgloc, no /etc/xcat)".into(),
            "",
        );
    };
    match backend(cfg) {
        Backend::Server(kind) => unknown(
            format!("the tables are in a {kind} database, which doctor does not read"),
            cfg,
        ),
        Backend::Sqlite(dir) => {
            let db = dir.join("site.sqlite");
            let source = db.display().to_string();
            if !db.is_file() {
                return unknown(format!("{source} does not exist"), &source);
            }
            let value = match probe.site_value(&db, key) {
                Ok(Some(v)) if !v.is_empty() => SiteValue::Set(v),
                Ok(_) => SiteValue::Unset,
                Err(e) => SiteValue::Unknown(format!("cannot read {source}: {e}")),
            };
            Site { value, source }
        }
    }
}

/// site.imagehandler: the admin's `--site-imagehandler`, else the site table.
pub fn imagehandler(opts: &Options, probe: &dyn Probe) -> Site {
    match &opts.site_imagehandler {
        Some(v) => Site {
            value: if v.is_empty() {
                SiteValue::Unset
            } else {
                SiteValue::Set(v.clone())
            },
            source: "--site-imagehandler".into(),
        },
        None => site_value(opts, probe, SITE_KEY),
    }
}

/// How one line of the report counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Present and usable.
    Ready,
    /// Needed and absent or unusable: the report is not ready.
    Missing,
    /// Usable, but worth a look (low space, a different engine version).
    Warning,
    /// Information: optional tools, which handler is selected, what could not be read.
    Note,
}

impl Status {
    fn label(self) -> &'static str {
        match self {
            Status::Ready => "ready:",
            Status::Missing => "missing:",
            Status::Warning => "warning:",
            Status::Note => "note:",
        }
    }
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// How it counts.
    pub status: Status,
    /// What it says, without the status word.
    pub text: String,
}

/// What doctor found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The XCATROOT inspected.
    pub xcatroot: PathBuf,
    /// The lines, in the order they print.
    pub lines: Vec<Line>,
    /// site.imagehandler.
    pub site: Site,
}

impl Report {
    /// Whether nothing needed is missing.
    pub fn is_ready(&self) -> bool {
        !self.lines.iter().any(|l| l.status == Status::Missing)
    }

    /// The lines with a given status.
    pub fn with(&self, status: Status) -> impl Iterator<Item = &Line> {
        self.lines.iter().filter(move |l| l.status == status)
    }

    /// Prints the report: a header, one line per finding, a summary.
    pub fn write_to(&self, out: &mut dyn Write) -> io::Result<()> {
        writeln!(
            out,
            "xcat-imaged {} doctor: XCATROOT {}",
            env!("CARGO_PKG_VERSION"),
            self.xcatroot.display()
        )?;
        for l in &self.lines {
            writeln!(out, "{:<9}{}", l.status.label(), l.text)?;
        }
        let missing = self.with(Status::Missing).count();
        let warnings = self.with(Status::Warning).count();
        let warned = match warnings {
            0 => String::new(),
            1 => " (1 warning)".into(),
            n => format!(" ({n} warnings)"),
        };
        if missing == 0 {
            writeln!(
                out,
                "Ready{warned}: everything xcat-imaged needs is in place."
            )
        } else {
            writeln!(out, "Not ready: {missing} missing{warned}.")
        }
    }
}

/// `our $VERSION = '...';` of a Perl module.
pub fn perl_version(text: &str) -> Option<&str> {
    text.lines().find_map(|l| {
        let rest = l.trim_start().strip_prefix("our $VERSION")?;
        let rest = rest.trim_start().strip_prefix('=')?.trim_start();
        let q = rest.chars().next().filter(|c| *c == '\'' || *c == '"')?;
        let rest = &rest[1..];
        rest.find(q).map(|end| &rest[..end])
    })
}

/// `xcat-imaged X (protocol vN)` into its version and protocol number.
pub fn parse_version(line: &str) -> Option<(&str, u32)> {
    let rest = line.strip_prefix("xcat-imaged ")?;
    let (v, p) = rest.split_once(" (protocol v")?;
    let p = p.strip_suffix(')')?.parse().ok()?;
    Some((v, p))
}

fn ready(text: String) -> Line {
    Line {
        status: Status::Ready,
        text,
    }
}
fn missing(text: String) -> Line {
    Line {
        status: Status::Missing,
        text,
    }
}
fn warning(text: String) -> Line {
    Line {
        status: Status::Warning,
        text,
    }
}
fn note(text: String) -> Line {
    Line {
        status: Status::Note,
        text,
    }
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// An installed Perl file against this program's embedded copy.
fn perl_file(what: &str, path: &Path, embedded: &str) -> Line {
    let ours = perl_version(embedded).unwrap_or("?");
    match std::fs::read(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => missing(format!(
            "{what} {}: not installed; {FIX_FILES}",
            path.display()
        )),
        Err(e) => missing(format!("{what} {}: cannot read it: {e}", path.display())),
        Ok(bytes) if bytes == embedded.as_bytes() => ready(format!(
            "{what} {} (version {ours}, the same as this program's copy)",
            path.display()
        )),
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let theirs = perl_version(&text).map_or("unknown".to_string(), shown);
            let how = if theirs == ours {
                format!("version {theirs} but not the same file as this program's copy")
            } else {
                format!("version {theirs}, this program's copy is version {ours}")
            };
            missing(format!("{what} {}: {how}; {FIX_FILES}", path.display()))
        }
    }
}

fn engine_line(engine: &Path, probe: &dyn Probe) -> Line {
    let shown_path = engine.display();
    if !engine.exists() {
        return missing(format!("engine {shown_path}: not installed; {FIX_FILES}"));
    }
    if !is_executable(engine) {
        return missing(format!(
            "engine {shown_path}: not an executable file; {FIX_FILES}"
        ));
    }
    let ours = env!("CARGO_PKG_VERSION");
    match probe.engine_version(engine) {
        Err(e) => missing(format!("engine {shown_path}: does not run: {e}")),
        Ok(line) => match parse_version(&line) {
            None => missing(format!(
                "engine {shown_path}: \"--version\" printed {}, not an xcat-imaged version",
                shown(&line)
            )),
            Some((_, p)) if p != VERSION => missing(format!(
                "engine {shown_path}: speaks protocol v{p}, the plugin and bridge of this program need v{VERSION}; {FIX_FILES}"
            )),
            Some((v, _)) if v != ours => warning(format!(
                "engine {shown_path}: {line}, this program is {ours}; {FIX_FILES} if that is not what you want"
            )),
            Some(_) => ready(format!("engine {shown_path} ({line})")),
        },
    }
}

fn stock_lines(plugins: &Path) -> Vec<Line> {
    let absent: Vec<&(&str, &str)> = STOCK_PLUGINS
        .iter()
        .filter(|(f, _)| !plugins.join(f).is_file())
        .collect();
    if absent.is_empty() {
        let names: Vec<&str> = STOCK_PLUGINS.iter().map(|(f, _)| *f).collect();
        return vec![ready(format!(
            "xCAT's own plugins {} (imgimport always runs there, and switching back needs them)",
            names.join(", ")
        ))];
    }
    absent
        .into_iter()
        .map(|(f, serves)| {
            let why = if *f == "imgport.pm" {
                "imgimport always runs there, and imgexport after switching back"
            } else {
                "switching back needs it"
            };
            missing(format!(
                "xCAT's own {} ({serves}): not in {}; {why} (reinstall xCAT-server)",
                f,
                plugins.display()
            ))
        })
        .collect()
}

fn site_line(site: &Site, plugins: &Path) -> Line {
    let from = if site.source.is_empty() {
        String::new()
    } else {
        format!(" (from {})", site.source)
    };
    let ours_installed = plugins.join(format!("{MODULE}.pm")).is_file();
    match &site.value {
        SiteValue::Unset => note(format!(
            "site.imagehandler is not set{from}: xCAT's own plugins run genimage, packimage, imgexport and rmimage; to switch to xcat-imaged: {ENABLE}"
        )),
        SiteValue::Unknown(why) => note(format!(
            "site.imagehandler: unknown, {why}; {ASK_XCAT}"
        )),
        SiteValue::Set(v) if v == MODULE && ours_installed => ready(format!(
            "site.imagehandler={MODULE}{from}: genimage, packimage, imgexport and rmimage go to xcat-imaged; to switch back: {DISABLE}"
        )),
        SiteValue::Set(v) if v == MODULE => missing(format!(
            "site.imagehandler={MODULE}{from} but {MODULE}.pm is not installed: xcatd answers the four commands with \"Cannot find the perl module\" until rescanplugins; switch back with {DISABLE}, or install the plugin"
        )),
        SiteValue::Set(v) => {
            let plain = !v.is_empty()
                && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            let module = plugins.join(format!("{v}.pm"));
            if plain && module.is_file() {
                note(format!(
                    "site.imagehandler={v}{from}: the four commands go to {v}.pm, not to xcat-imaged; to use xcat-imaged: chtab key=imagehandler site.value={MODULE}"
                ))
            } else if ours_installed {
                missing(format!(
                    "site.imagehandler={}{from}, but there is no such plugin in {}: xcatd answers genimage, packimage, imgexport and rmimage with \"Cannot find the perl module\"; fix it with {DISABLE} (xCAT's plugins) or chtab key=imagehandler site.value={MODULE}",
                    shown(v),
                    plugins.display()
                ))
            } else {
                note(format!(
                    "site.imagehandler={}{from} names no plugin, and no plugin registers it: xCAT's own plugins keep the commands",
                    shown(v)
                ))
            }
        }
    }
}

fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / f64::from(1u32 << 30))
}

fn installdir_line(opts: &Options, probe: &dyn Probe) -> Line {
    let (dir, from) = match &opts.installdir {
        Some(d) => (d.clone(), "--installdir".to_string()),
        None => {
            let site = site_value(opts, probe, "installdir");
            match site.value {
                SiteValue::Set(v) => (
                    PathBuf::from(v),
                    format!("site.installdir, {}", site.source),
                ),
                SiteValue::Unset => (
                    PathBuf::from(DEFAULT_INSTALLDIR),
                    "xCAT's default: site.installdir is not set".into(),
                ),
                SiteValue::Unknown(_) => (
                    PathBuf::from(DEFAULT_INSTALLDIR),
                    "xCAT's default: site.installdir could not be read; pass --installdir".into(),
                ),
            }
        }
    };
    let shown_dir = dir.display();
    if !dir.is_dir() {
        return missing(format!(
            "installdir {shown_dir} ({from}): not a directory; every image command works in it"
        ));
    }
    match probe.free_bytes(&dir) {
        Err(e) => warning(format!(
            "installdir {shown_dir} ({from}): cannot tell the free space: {e}"
        )),
        Ok(free) if free < LOW_SPACE => warning(format!(
            "installdir {shown_dir} ({from}): only {} free; genimage writes a whole root tree and packimage a new archive next to the old one",
            gib(free)
        )),
        Ok(free) => ready(format!(
            "installdir {shown_dir} ({from}): {} free",
            gib(free)
        )),
    }
}

/// A program some command runs on this node, and when.
struct Need {
    /// Who runs it and for what: "packimage -m squashfs".
    what: &'static str,
    /// Any one of these will do.
    programs: &'static [&'static str],
    /// Missing means not ready (otherwise only the option or image kind in `what` is affected).
    required: bool,
}

/// What the commands run on the management node. The engine writes cpio, tar, gzip and xz
/// itself; dracut runs inside the image (`chroot <rootimg> dracut`), not from this node.
const NEEDS: &[Need] = &[
    Need {
        what: "genimage (RHEL-family images)",
        programs: &["dnf", "yum"],
        required: false,
    },
    Need {
        what: "genimage (SLES images)",
        programs: &["zypper"],
        required: false,
    },
    Need {
        what: "genimage (Debian and Ubuntu images)",
        programs: &["debootstrap"],
        required: false,
    },
    Need {
        what: "packimage -m squashfs",
        programs: &["mksquashfs"],
        required: false,
    },
    Need {
        what: "packimage --tracker",
        programs: &["ctorrent"],
        required: false,
    },
    Need {
        what: "imgexport -R user@host",
        programs: &["scp"],
        required: false,
    },
    Need {
        what: "imgimport (xCAT's plugin)",
        programs: &["tar"],
        required: true,
    },
    Need {
        what: "imgimport (xCAT's plugin), .tgz bundles",
        programs: &["gzip"],
        required: true,
    },
    Need {
        what: "imgimport of statelite bundles, xCAT's own packimage",
        programs: &["cpio"],
        required: false,
    },
    Need {
        what: "imgimport -n of xz bundles, xCAT's own packimage -c xz",
        programs: &["xz"],
        required: false,
    },
];

fn tool_lines(probe: &dyn Probe) -> Vec<Line> {
    let mut lines = Vec::new();
    let mut package_managers = 0;
    for need in NEEDS {
        let found = need
            .programs
            .iter()
            .find_map(|p| probe.find_program(p).map(|path| (*p, path)));
        let names = need.programs.join(" or ");
        match found {
            Some((p, path)) => {
                if need.what.starts_with("genimage") {
                    package_managers += 1;
                }
                lines.push(ready(format!("{}: {p} ({})", need.what, path.display())));
            }
            None if need.required => lines.push(missing(format!(
                "{}: {names} not found in {}",
                need.what,
                proc::PATH
            ))),
            None => lines.push(note(format!(
                "{}: {names} not found (nothing else needs it)",
                need.what
            ))),
        }
    }
    if package_managers == 0 {
        lines.push(missing(
            "genimage: no package manager found (dnf or yum, zypper, debootstrap): it cannot build any image here"
                .into(),
        ));
    }
    let dracut = match probe.find_program("dracut") {
        Some(p) => format!("found at {}", p.display()),
        None => "not found".into(),
    };
    lines.push(note(format!(
        "genimage: dracut is {dracut} here; genimage runs the image's own dracut inside the image, so this node needs none"
    )));
    lines
}

/// Inspects the installation `opts` points at.
pub fn inspect(opts: &Options, probe: &dyn Probe) -> Report {
    let root = &opts.xcatroot;
    let plugins = root.join("lib/perl/xCAT_plugin");
    let mut lines = Vec::new();
    if plugins.is_dir() {
        lines.push(ready(format!(
            "xcatd's plugin directory {}",
            plugins.display()
        )));
    } else {
        lines.push(missing(format!(
            "xcatd's plugin directory {}: not found; is xCAT installed with XCATROOT={}?",
            plugins.display(),
            root.display()
        )));
    }
    let xcatd = root.join("sbin/xcatd");
    lines.push(if xcatd.is_file() {
        ready(format!("xcatd {}", xcatd.display()))
    } else {
        missing(format!("xcatd {}: not found", xcatd.display()))
    });
    lines.push(perl_file(
        "plugin",
        &plugins.join(format!("{MODULE}.pm")),
        PLUGIN,
    ));
    lines.push(perl_file(
        "bridge",
        &root.join("lib/perl/xCAT/Imaged.pm"),
        BRIDGE,
    ));
    lines.push(engine_line(&root.join("sbin/xcat-imaged"), probe));
    lines.extend(stock_lines(&plugins));
    let site = imagehandler(opts, probe);
    lines.push(site_line(&site, &plugins));
    lines.push(installdir_line(opts, probe));
    lines.extend(tool_lines(probe));
    Report {
        xcatroot: root.clone(),
        lines,
        site,
    }
}

/// `--enabled`: 0 when site.imagehandler selects xcat-imaged, 1 when it does not, 2 when it
/// cannot be read; with one line saying which.
pub fn enabled(opts: &Options, probe: &dyn Probe) -> (i32, String) {
    let site = imagehandler(opts, probe);
    match site.value {
        SiteValue::Set(v) if v == MODULE => (
            0,
            format!("enabled: site.imagehandler={MODULE} (from {})", site.source),
        ),
        SiteValue::Set(v) => (
            1,
            format!(
                "not enabled: site.imagehandler={} (from {})",
                shown(&v),
                site.source
            ),
        ),
        SiteValue::Unset => (
            1,
            format!(
                "not enabled: site.imagehandler is not set (from {})",
                site.source
            ),
        ),
        SiteValue::Unknown(why) => (2, format!("unknown: {why}; {ASK_XCAT}")),
    }
}

const USAGE: &str = "usage: xcat-imaged doctor [--xcatroot DIR] [--site-imagehandler VALUE] [--installdir DIR] [--enabled]";

/// The parsed command line.
#[derive(Debug, Default)]
struct Args {
    xcatroot: Option<String>,
    site: Option<String>,
    installdir: Option<String>,
    enabled: bool,
    help: bool,
}

fn parse(args: &[String]) -> Result<Args, String> {
    let mut a = Args::default();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n, Some(v.to_string())),
            _ => (arg.as_str(), None),
        };
        let mut value = |slot: &mut Option<String>| -> Result<(), String> {
            let v = match inline.clone() {
                Some(v) => v,
                None => it
                    .next()
                    .cloned()
                    .ok_or_else(|| format!("{name} needs a value\n{USAGE}"))?,
            };
            *slot = Some(v);
            Ok(())
        };
        match name {
            "--xcatroot" => value(&mut a.xcatroot)?,
            "--site-imagehandler" => value(&mut a.site)?,
            "--installdir" => value(&mut a.installdir)?,
            "--enabled" if inline.is_none() => a.enabled = true,
            "-h" | "--help" if inline.is_none() => a.help = true,
            _ => return Err(format!("unknown argument {}\n{USAGE}", shown(arg))),
        }
    }
    Ok(a)
}

/// Options for this machine: XCATROOT, XCATCFG and `/etc/xcat/cfgloc` as xCAT reads them.
fn options(a: Args) -> Options {
    let xcatroot = a
        .xcatroot
        .or_else(|| std::env::var("XCATROOT").ok().filter(|v| !v.is_empty()))
        .unwrap_or_else(|| "/opt/xcat".into());
    let env = std::env::var("XCATCFG").ok();
    let cfgloc = std::fs::read_to_string("/etc/xcat/cfgloc").ok();
    Options {
        xcatroot: PathBuf::from(xcatroot),
        xcatcfg: xcatcfg(env.as_deref(), cfgloc.as_deref(), &|p: &Path| p.is_dir()),
        site_imagehandler: a.site,
        installdir: a.installdir.map(PathBuf::from),
    }
}

/// Runs `doctor ARGS`, printing to `out` and `err`; returns the exit status.
pub fn run_with(
    args: &[String],
    probe: &dyn Probe,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> i32 {
    let a = match parse(args) {
        Ok(a) => a,
        Err(e) => {
            let _ = writeln!(err, "Error: {e}");
            return 1;
        }
    };
    if a.help {
        let _ = writeln!(out, "{USAGE}");
        return 0;
    }
    let enabled_only = a.enabled;
    let opts = options(a);
    if enabled_only {
        let (code, line) = enabled(&opts, probe);
        let _ = writeln!(out, "{line}");
        return code;
    }
    let report = inspect(&opts, probe);
    if let Err(e) = report.write_to(out) {
        let _ = writeln!(err, "Error: cannot write the report: {e}");
        return 1;
    }
    i32::from(!report.is_ready())
}

/// Runs `doctor ARGS` on this machine; returns the exit status.
pub fn run(args: &[String]) -> i32 {
    run_with(args, &System, &mut io::stdout(), &mut io::stderr())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xcatcfg_like_get_xcatcfg() {
        let none = |_: &Path| false;
        let etc = |p: &Path| p == Path::new("/etc/xcat");
        assert_eq!(
            xcatcfg(Some("mysql:dbname=xcatdb;host=mn|u|p"), None, &none).as_deref(),
            Some("mysql:dbname=xcatdb;host=mn|u|p")
        );
        assert_eq!(
            xcatcfg(Some(""), Some("Pg:dbname=xcat\n"), &none).as_deref(),
            Some("Pg:dbname=xcat")
        );
        assert_eq!(
            xcatcfg(None, None, &etc).as_deref(),
            Some("SQLite:/etc/xcat")
        );
        assert_eq!(
            xcatcfg(None, None, &|_: &Path| true).as_deref(),
            Some("SQLite:/opt/xcat/cfg")
        );
        assert_eq!(
            xcatcfg(None, Some("/var/xcatdb"), &none).as_deref(),
            Some("SQLite:/var/xcatdb")
        );
        assert_eq!(xcatcfg(None, None, &none), None);
        assert_eq!(
            backend("SQLite:/etc/xcat"),
            Backend::Sqlite("/etc/xcat".into())
        );
        assert_eq!(backend("mysql:dbname=x"), Backend::Server("mysql".into()));
    }

    #[test]
    fn versions() {
        assert_eq!(
            perl_version("package X;\nour $VERSION = '0.1.0';\n"),
            Some("0.1.0")
        );
        assert_eq!(perl_version("our $VERSION=\"2\";"), Some("2"));
        assert_eq!(perl_version("my $VERSION = 1;"), None);
        assert_eq!(perl_version(PLUGIN), Some(env!("CARGO_PKG_VERSION")));
        assert_eq!(perl_version(BRIDGE), Some(env!("CARGO_PKG_VERSION")));
        assert_eq!(
            parse_version("xcat-imaged 0.1.0 (protocol v1)"),
            Some(("0.1.0", 1))
        );
        assert_eq!(parse_version("something else"), None);
    }

    #[test]
    fn arguments() {
        let a = parse(&[
            "--xcatroot=/x".into(),
            "--site-imagehandler".into(),
            "".into(),
        ])
        .unwrap();
        assert_eq!(a.xcatroot.as_deref(), Some("/x"));
        assert_eq!(a.site.as_deref(), Some(""));
        assert!(parse(&["--installdir".into()])
            .unwrap_err()
            .contains("needs a value"));
        assert!(parse(&["--enabled=1".into()]).is_err());
        assert!(parse(&["extra".into()])
            .unwrap_err()
            .contains("unknown argument"));
        assert!(checked_key("installdir").is_ok());
        assert!(checked_key("x' OR 1=1 --").is_err());
    }

    /// Both readers against one table made by whichever tool is there.
    #[test]
    fn reads_the_sqlite_site_table() {
        let Some(_) = proc::find_program("sqlite3") else {
            return;
        };
        let t = tempfile::tempdir().unwrap();
        let db = t.path().join("site.sqlite");
        proc::run(&Step::new(
            "sqlite3",
            [
                db.clone().into_os_string(),
                "CREATE TABLE site (key VARCHAR(128) NOT NULL, value TEXT, comments TEXT, disable TEXT, PRIMARY KEY (key)); \
                 INSERT INTO site VALUES ('imagehandler', 'imaged', NULL, NULL); \
                 INSERT INTO site VALUES ('installdir', '/srv/install', NULL, 'yes'); \
                 INSERT INTO site VALUES ('empty', NULL, NULL, '0');"
                    .into(),
            ],
        ))
        .unwrap();
        let before = std::fs::read(&db).unwrap();
        type Reader = fn(&Path, &str) -> Result<Option<String>, String>;
        let mut readers: Vec<Reader> = vec![read_site_sqlite3];
        if read_site_perl(&db, "imagehandler").is_ok() {
            readers.push(read_site_perl);
        }
        for read in readers {
            assert_eq!(
                read(&db, "imagehandler").unwrap().as_deref(),
                Some("imaged")
            );
            assert_eq!(read(&db, "installdir").unwrap(), None, "disabled row");
            assert_eq!(read(&db, "nosuchkey").unwrap(), None);
            assert_eq!(read(&db, "empty").unwrap().as_deref(), Some(""));
        }
        assert!(read_site_sqlite3(&t.path().join("none.sqlite"), "imagehandler").is_err());
        assert_eq!(std::fs::read(&db).unwrap(), before, "read-only");
    }
}
