//! doctor on prepared XCATROOT layouts (complete, missing plugin, stale plugin, no stock
//! plugins, site key cases): through the library with a scripted probe, so the verdict does not
//! depend on this machine's tools, and through the real binary, which must change nothing.

use crate::util::{bin, cmd_exists, skip, Dir, Output};
use std::path::{Path, PathBuf};
use std::process::Command;
use xcat_imaged::doctor::{self, Options, Probe, SiteValue, Status};
use xcat_imaged::install::{BRIDGE, PLUGIN};

/// A machine with exactly the programs, space and engine answer a test asks for.
struct Fake {
    programs: Vec<&'static str>,
    site: Vec<(&'static str, &'static str)>,
    free: u64,
    engine: Result<String, String>,
}

impl Fake {
    /// Every tool, plenty of space, an engine of this version, an empty site table.
    fn all() -> Fake {
        Fake {
            programs: vec![
                "dnf",
                "yum",
                "zypper",
                "debootstrap",
                "mksquashfs",
                "ctorrent",
                "scp",
                "tar",
                "gzip",
                "cpio",
                "xz",
            ],
            site: Vec::new(),
            free: 100 << 30,
            engine: Ok(format!(
                "xcat-imaged {} (protocol v1)",
                env!("CARGO_PKG_VERSION")
            )),
        }
    }
}

impl Probe for Fake {
    fn find_program(&self, name: &str) -> Option<PathBuf> {
        self.programs
            .contains(&name)
            .then(|| PathBuf::from(format!("/usr/bin/{name}")))
    }
    fn site_value(&self, _db: &Path, key: &str) -> Result<Option<String>, String> {
        Ok(self
            .site
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.to_string()))
    }
    fn free_bytes(&self, _dir: &Path) -> std::io::Result<u64> {
        Ok(self.free)
    }
    fn engine_version(&self, _engine: &Path) -> Result<String, String> {
        self.engine.clone()
    }
}

/// What a layout holds.
#[derive(Clone, Copy)]
struct Parts {
    plugin: bool,
    bridge: bool,
    engine: bool,
    stock: bool,
}

const COMPLETE: Parts = Parts {
    plugin: true,
    bridge: true,
    engine: true,
    stock: true,
};

/// An XCATROOT under `d` (`xcat/`) with xcatd, the stock plugins and ours as `parts` says; a
/// SQLite directory (`cfg/`) with a site table file the fake probe answers for.
fn layout(d: &Dir, parts: Parts) -> PathBuf {
    let root = d.path().join("xcat");
    d.write("xcat/sbin/xcatd", "#!/usr/bin/perl\n");
    std::fs::create_dir_all(root.join("lib/perl/xCAT_plugin")).expect("mkdir");
    if parts.stock {
        for (f, _) in doctor::STOCK_PLUGINS {
            d.write(&format!("xcat/lib/perl/xCAT_plugin/{f}"), "1;\n");
        }
    }
    if parts.plugin {
        d.write("xcat/lib/perl/xCAT_plugin/imaged.pm", PLUGIN);
    }
    if parts.bridge {
        d.write("xcat/lib/perl/xCAT/Imaged.pm", BRIDGE);
    }
    if parts.engine {
        std::fs::create_dir_all(root.join("sbin")).expect("mkdir");
        std::fs::copy(bin(), root.join("sbin/xcat-imaged")).expect("copy engine");
    }
    d.write("cfg/site.sqlite", "");
    root
}

fn options(d: &Dir, root: &Path) -> Options {
    Options {
        xcatroot: root.to_path_buf(),
        xcatcfg: Some(format!("SQLite:{}", d.path().join("cfg").display())),
        site_imagehandler: None,
        installdir: Some(d.install()),
    }
}

fn texts(r: &doctor::Report, status: Status) -> Vec<String> {
    r.with(status).map(|l| l.text.clone()).collect()
}

fn printed(r: &doctor::Report) -> String {
    let mut out = Vec::new();
    r.write_to(&mut out).expect("write");
    String::from_utf8(out).expect("utf-8")
}

#[test]
fn doctor_complete_layout_is_ready() {
    let d = Dir::new();
    let root = layout(&d, COMPLETE);
    let mut fake = Fake::all();
    fake.site = vec![("imagehandler", "imaged")];
    let r = doctor::inspect(&options(&d, &root), &fake);
    let text = printed(&r);
    assert!(r.is_ready(), "{text}");
    assert!(texts(&r, Status::Missing).is_empty(), "{text}");
    assert!(texts(&r, Status::Warning).is_empty(), "{text}");
    let v = env!("CARGO_PKG_VERSION");
    for want in [
        format!("ready:   xcatd's plugin directory {}/lib/perl/xCAT_plugin\n", root.display()),
        format!(
            "ready:   plugin {}/lib/perl/xCAT_plugin/imaged.pm (version {v}, the same as this program's copy)\n",
            root.display()
        ),
        format!(
            "ready:   bridge {}/lib/perl/xCAT/Imaged.pm (version {v}, the same as this program's copy)\n",
            root.display()
        ),
        format!(
            "ready:   engine {}/sbin/xcat-imaged (xcat-imaged {v} (protocol v1))\n",
            root.display()
        ),
        "ready:   xCAT's own plugins genimage.pm, packimage.pm, rmimage.pm, imgport.pm".to_string(),
        "ready:   site.imagehandler=imaged (from ".to_string(),
        "to switch back: chtab -d key=imagehandler site\n".to_string(),
        format!("ready:   installdir {} (--installdir): 100.0 GiB free\n", d.install().display()),
        "ready:   packimage -m squashfs: mksquashfs (/usr/bin/mksquashfs)\n".to_string(),
        "Ready: everything xcat-imaged needs is in place.\n".to_string(),
    ] {
        assert!(text.contains(&want), "{want:?} not in\n{text}");
    }
    assert!(text.starts_with(&format!(
        "xcat-imaged {v} doctor: XCATROOT {}\n",
        root.display()
    )));
    assert_eq!(r.site.value, SiteValue::Set("imaged".into()));
}

#[test]
fn doctor_missing_plugin() {
    let d = Dir::new();
    let root = layout(
        &d,
        Parts {
            plugin: false,
            ..COMPLETE
        },
    );
    let mut fake = Fake::all();
    fake.site = vec![("imagehandler", "imaged")];
    let r = doctor::inspect(&options(&d, &root), &fake);
    assert!(!r.is_ready());
    let missing = texts(&r, Status::Missing);
    assert_eq!(missing.len(), 2, "{missing:#?}");
    assert_eq!(
        missing[0],
        format!(
            "plugin {}/lib/perl/xCAT_plugin/imaged.pm: not installed; run \"xcat-imaged install-plugin\" or reinstall the xcat-imaged package",
            root.display()
        )
    );
    // The key still points at the plugin: xcatd fails the four commands until rescanplugins.
    assert!(
        missing[1].starts_with("site.imagehandler=imaged (from "),
        "{}",
        missing[1]
    );
    assert!(
        missing[1].contains("Cannot find the perl module"),
        "{}",
        missing[1]
    );
    assert!(printed(&r).ends_with("Not ready: 2 missing.\n"));
}

#[test]
fn doctor_stale_plugin() {
    let d = Dir::new();
    let root = layout(&d, COMPLETE);
    let v = env!("CARGO_PKG_VERSION");
    let old = PLUGIN.replace(&format!("our $VERSION = '{v}';"), "our $VERSION = '0.0.9';");
    assert_ne!(old, PLUGIN);
    d.write("xcat/lib/perl/xCAT_plugin/imaged.pm", &old);
    // Same version number, different text: still not the copy this program would install.
    d.write(
        "xcat/lib/perl/xCAT/Imaged.pm",
        &format!("{BRIDGE}\n# edited\n"),
    );
    let r = doctor::inspect(&options(&d, &root), &Fake::all());
    assert!(!r.is_ready());
    let missing = texts(&r, Status::Missing);
    assert_eq!(
        missing,
        [
            format!(
                "plugin {}/lib/perl/xCAT_plugin/imaged.pm: version 0.0.9, this program's copy is version {v}; run \"xcat-imaged install-plugin\" or reinstall the xcat-imaged package",
                root.display()
            ),
            format!(
                "bridge {}/lib/perl/xCAT/Imaged.pm: version {v} but not the same file as this program's copy; run \"xcat-imaged install-plugin\" or reinstall the xcat-imaged package",
                root.display()
            ),
        ]
    );
}

#[test]
fn doctor_no_stock_plugins() {
    let d = Dir::new();
    let root = layout(
        &d,
        Parts {
            stock: false,
            ..COMPLETE
        },
    );
    let r = doctor::inspect(&options(&d, &root), &Fake::all());
    assert!(!r.is_ready());
    let missing = texts(&r, Status::Missing);
    assert_eq!(missing.len(), 4, "{missing:#?}");
    let imgport = missing
        .iter()
        .find(|l| l.contains("imgport.pm"))
        .expect("imgport line");
    assert!(imgport.contains("imgimport always runs there"), "{imgport}");
    // Unset key: the stock plugins would run the commands, which is why they must be there.
    let notes = texts(&r, Status::Note);
    assert!(
        notes.iter().any(|n| n.starts_with("site.imagehandler is not set (from ")
            && n.ends_with("to switch to xcat-imaged: rescanplugins; chtab key=imagehandler site.value=imaged")),
        "{notes:#?}"
    );
}

#[test]
fn doctor_nothing_installed() {
    let d = Dir::new();
    let root = d.path().join("no-xcat");
    let r = doctor::inspect(&options(&d, &root), &Fake::all());
    let missing = texts(&r, Status::Missing);
    assert!(
        missing[0].starts_with("xcatd's plugin directory "),
        "{missing:#?}"
    );
    assert!(missing[0].contains("is xCAT installed"), "{missing:#?}");
    // directory, xcatd, plugin, bridge, engine, four stock plugins
    assert_eq!(missing.len(), 9, "{missing:#?}");
}

#[test]
fn doctor_site_key_cases() {
    let d = Dir::new();
    let root = layout(&d, COMPLETE);
    let run = |value: Option<&str>, table: Vec<(&'static str, &'static str)>| {
        let mut o = options(&d, &root);
        o.site_imagehandler = value.map(str::to_string);
        let mut fake = Fake::all();
        fake.site = table;
        doctor::inspect(&o, &fake)
    };
    // The admin's value wins over the table.
    let r = run(Some("imaged"), vec![("imagehandler", "other")]);
    assert_eq!(r.site.source, "--site-imagehandler");
    assert!(r.is_ready());
    // A value naming no plugin breaks the four commands while our plugin registers the key.
    let r = run(Some("imagd"), vec![]);
    let missing = texts(&r, Status::Missing);
    assert_eq!(missing.len(), 1, "{missing:#?}");
    assert!(missing[0].starts_with(
        "site.imagehandler=imagd (from --site-imagehandler), but there is no such plugin in "
    ));
    // Another real plugin: allowed, and said.
    d.write("xcat/lib/perl/xCAT_plugin/otherimg.pm", "1;\n");
    let r = run(None, vec![("imagehandler", "otherimg")]);
    assert!(r.is_ready());
    assert!(texts(&r, Status::Note)
        .iter()
        .any(|n| n.contains("the four commands go to otherimg.pm, not to xcat-imaged")));
    // Empty means unset, as in xcatd.
    let r = run(Some(""), vec![]);
    assert_eq!(r.site.value, SiteValue::Unset);
    // A database server is not read: unknown, and how to pass the value instead.
    let mut o = options(&d, &root);
    o.xcatcfg = Some("mysql:dbname=xcatdb;host=mn|xcatadmin|secret".into());
    let r = doctor::inspect(&o, &Fake::all());
    assert!(matches!(r.site.value, SiteValue::Unknown(_)));
    let text = printed(&r);
    assert!(
        text.contains("site.imagehandler: unknown, the tables are in a mysql database, which doctor does not read; pass --site-imagehandler \"$(gettab key=imagehandler site.value)\""),
        "{text}"
    );
    assert!(
        !text.contains("secret"),
        "no password in the report:\n{text}"
    );
    assert_eq!(doctor::enabled(&o, &Fake::all()).0, 2);
}

#[test]
fn doctor_tools_and_space() {
    let d = Dir::new();
    let root = layout(&d, COMPLETE);
    let o = options(&d, &root);
    // Optional tools missing: notes only.
    let mut fake = Fake::all();
    fake.programs
        .retain(|p| !["mksquashfs", "ctorrent", "dnf", "yum", "zypper"].contains(p));
    fake.free = 2 << 30;
    let r = doctor::inspect(&o, &fake);
    assert!(r.is_ready(), "{}", printed(&r));
    let notes = texts(&r, Status::Note);
    assert!(
        notes.contains(
            &"packimage -m squashfs: mksquashfs not found (nothing else needs it)".to_string()
        ),
        "{notes:#?}"
    );
    assert!(
        notes.contains(
            &"genimage (RHEL-family images): dnf or yum not found (nothing else needs it)"
                .to_string()
        ),
        "{notes:#?}"
    );
    let warnings = texts(&r, Status::Warning);
    assert_eq!(warnings.len(), 1, "{warnings:#?}");
    assert!(warnings[0].contains("only 2.0 GiB free"), "{warnings:#?}");
    assert!(printed(&r).contains("Ready (1 warning): everything xcat-imaged needs is in place.\n"));
    // No package manager at all, no tar: genimage and imgimport cannot work.
    fake.programs
        .retain(|p| !["debootstrap", "tar"].contains(p));
    let r = doctor::inspect(&o, &fake);
    let missing = texts(&r, Status::Missing);
    assert_eq!(missing.len(), 2, "{missing:#?}");
    assert!(missing[0].starts_with("imgimport (xCAT's plugin): tar not found in "));
    assert!(missing[1].starts_with("genimage: no package manager found"));
    // An engine from another build speaking another protocol.
    let mut fake = Fake::all();
    fake.engine = Ok("xcat-imaged 9.9.9 (protocol v2)".into());
    let r = doctor::inspect(&o, &fake);
    assert!(texts(&r, Status::Missing)[0].contains("speaks protocol v2"));
    fake.engine = Ok("xcat-imaged 9.9.9 (protocol v1)".into());
    let r = doctor::inspect(&o, &fake);
    assert!(r.is_ready());
    assert!(
        texts(&r, Status::Warning)[0].contains("xcat-imaged 9.9.9 (protocol v1), this program is ")
    );
}

/// The real binary: installed with install-plugin, then checked; it must leave the tree alone.
#[test]
fn doctor_binary_reports_and_changes_nothing() {
    let d = Dir::new();
    let root = layout(
        &d,
        Parts {
            plugin: false,
            bridge: false,
            engine: false,
            ..COMPLETE
        },
    );
    let doctor_cmd = |extra: &[&str]| {
        let mut c = Command::new(bin());
        c.arg("doctor")
            .arg("--xcatroot")
            .arg(&root)
            .arg("--installdir")
            .arg(d.install())
            .args(extra)
            .env(
                "XCATCFG",
                format!("SQLite:{}", d.path().join("nodb").display()),
            );
        Output::of(c)
    };
    let before = d.tree(d.path());
    let o = doctor_cmd(&["--site-imagehandler", ""]);
    assert_eq!(o.code, 1, "{}{}", o.stdout, o.stderr);
    assert!(o.stdout.contains("missing: plugin "), "{}", o.stdout);
    assert_eq!(d.tree(d.path()), before, "doctor changed the layout");

    let mut c = Command::new(bin());
    c.arg("install-plugin").arg("--xcatroot").arg(&root);
    assert_eq!(Output::of(c).code, 0);
    let before = d.tree(d.path());
    let o = doctor_cmd(&["--site-imagehandler=imaged"]);
    assert_eq!(d.tree(d.path()), before, "doctor changed the layout");
    assert!(
        o.stdout.contains(&format!(
            "ready:   engine {}/sbin/xcat-imaged (xcat-imaged {} (protocol v1))\n",
            root.display(),
            env!("CARGO_PKG_VERSION")
        )),
        "{}",
        o.stdout
    );
    assert!(
        o.stdout
            .contains("ready:   site.imagehandler=imaged (from --site-imagehandler)"),
        "{}",
        o.stdout
    );
    // Tools depend on this machine; the exit status must agree with the lines either way.
    let ready = !o.stdout.lines().any(|l| l.starts_with("missing:"));
    assert_eq!(o.code, if ready { 0 } else { 1 }, "{}", o.stdout);

    let o = doctor_cmd(&["--bogus"]);
    assert_eq!(o.code, 1);
    assert!(
        o.stderr
            .starts_with("Error: unknown argument --bogus\nusage: xcat-imaged doctor"),
        "{}",
        o.stderr
    );
}

/// The site table read for real, as xCAT keeps it (`<dir>/site.sqlite`), through XCATCFG.
#[test]
fn doctor_binary_reads_the_site_table() {
    if !cmd_exists("sqlite3") && skip("sqlite3 not installed") {
        return;
    }
    let d = Dir::new();
    let root = layout(&d, COMPLETE);
    let db = d.path().join("cfg/site.sqlite");
    std::fs::remove_file(&db).expect("rm placeholder");
    let sql = format!(
        "CREATE TABLE site (key VARCHAR(128) NOT NULL, value TEXT, comments TEXT, disable TEXT, PRIMARY KEY (key)); \
         INSERT INTO site VALUES ('installdir', '{}', NULL, NULL);",
        d.install().display()
    );
    let sqlite = |sql: &str| {
        let st = Command::new("sqlite3")
            .arg(&db)
            .arg(sql)
            .status()
            .expect("sqlite3");
        assert!(st.success());
    };
    sqlite(&sql);
    let run = |args: &[&str]| {
        let mut c = Command::new(bin());
        c.arg("doctor").arg("--xcatroot").arg(&root).args(args).env(
            "XCATCFG",
            format!("SQLite:{}", d.path().join("cfg").display()),
        );
        Output::of(c)
    };
    let o = run(&["--enabled"]);
    assert_eq!(o.code, 1, "{}{}", o.stdout, o.stderr);
    assert_eq!(
        o.stdout,
        format!(
            "not enabled: site.imagehandler is not set (from {})\n",
            db.display()
        )
    );
    let o = run(&[]);
    assert!(
        o.stdout.contains(&format!(
            "ready:   installdir {} (site.installdir, {}): ",
            d.install().display(),
            db.display()
        )),
        "{}",
        o.stdout
    );
    sqlite("INSERT INTO site VALUES ('imagehandler', 'imaged', NULL, NULL);");
    let before = std::fs::read(&db).expect("read db");
    let o = run(&["--enabled"]);
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    assert_eq!(
        o.stdout,
        format!(
            "enabled: site.imagehandler=imaged (from {})\n",
            db.display()
        )
    );
    let o = run(&[]);
    assert!(
        o.stdout
            .contains("ready:   site.imagehandler=imaged (from "),
        "{}",
        o.stdout
    );
    assert_eq!(
        std::fs::read(&db).expect("read db"),
        before,
        "the table is read only"
    );
    // A disabled row does not count, as in xCAT.
    sqlite("UPDATE site SET disable = 'yes' WHERE key = 'imagehandler';");
    assert_eq!(run(&["--enabled"]).code, 1);
}
