//! Test helpers: a temp directory laid out like a management node, and runners for the real
//! binary in standalone mode and in serve mode (with this test acting as the bridge).

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use xcat_imaged::defs::Defs;
use xcat_imaged::protocol::{self, Call, FromShim, Reply, Request, ToShim};

/// The engine under test.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_xcat-imaged"))
}

/// Whether we are root (mount tests need it).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Whether a program is on PATH.
pub fn cmd_exists(prog: &str) -> bool {
    Command::new(prog)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// Prints why a test did nothing; returns true so callers can `if skip(..) { return }`.
#[allow(clippy::print_stderr)]
pub fn skip(why: &str) -> bool {
    eprintln!("SKIPPED: {why}");
    true
}

/// A temp directory with `install/`, `tftpboot/`, `locks/` and a definitions file.
pub struct Dir {
    _tmp: Option<tempfile::TempDir>,
    root: PathBuf,
}

impl Dir {
    pub fn new() -> Dir {
        let tmp = tempfile::Builder::new()
            .prefix("xcat-imaged-test")
            .tempdir()
            .expect("tempdir");
        let root = tmp.path().canonicalize().expect("canonical tempdir");
        for d in ["install", "tftpboot", "locks"] {
            std::fs::create_dir_all(root.join(d)).expect("mkdir");
        }
        Dir {
            _tmp: Some(tmp),
            root,
        }
    }

    /// The same layout in an existing directory that outlives the test (a developer's
    /// persistent fixture); created if missing, never removed.
    pub fn at(dir: &Path) -> Dir {
        for d in ["install", "tftpboot", "locks"] {
            std::fs::create_dir_all(dir.join(d)).expect("mkdir");
        }
        let root = dir.canonicalize().expect("canonical dir");
        Dir { _tmp: None, root }
    }

    pub fn path(&self) -> &Path {
        &self.root
    }
    pub fn install(&self) -> PathBuf {
        self.root.join("install")
    }
    pub fn tftp(&self) -> PathBuf {
        self.root.join("tftpboot")
    }
    pub fn locks(&self) -> PathBuf {
        self.root.join("locks")
    }
    pub fn defs_path(&self) -> PathBuf {
        self.root.join("defs.stanza")
    }

    /// Writes a file (parents created).
    pub fn write(&self, rel: &str, data: &str) -> PathBuf {
        let p = self.root.join(rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(&p, data).expect("write");
        p
    }

    /// Writes the definitions file: a site object pointing at our dirs, then `objects`.
    pub fn defs(&self, objects: &str) {
        self.defs_with_site(&[], objects);
    }

    /// Like [`Dir::defs`], with more site attributes.
    pub fn defs_with_site(&self, site: &[(&str, &str)], objects: &str) {
        let mut extra = String::new();
        for (k, v) in site {
            extra.push_str(&format!("    {k}={v}\n"));
        }
        let text = format!(
            "# <xCAT data object stanza file>\n\nclustersite:\n    objtype=site\n    installdir={}\n    tftpdir={}\n{extra}\n{}",
            self.install().display(),
            self.tftp().display(),
            objects
        );
        std::fs::write(self.defs_path(), text).expect("write defs");
    }

    pub fn read_defs(&self) -> Defs {
        Defs::parse(&std::fs::read_to_string(self.defs_path()).expect("read defs"))
            .expect("parse defs")
    }

    /// Creates a generated image in `dir`: a small rootimg tree, kernel, initrds, archives.
    pub fn image(&self, dir: &Path) {
        let r = dir.join("rootimg");
        for d in ["etc", "usr/bin", "var/log", "dev", "proc"] {
            std::fs::create_dir_all(r.join(d)).expect("mkdir");
        }
        std::fs::write(r.join("etc/hostname"), "node\n").expect("write");
        std::fs::write(r.join("usr/bin/tool"), "#!/bin/false\n").expect("write");
        let _ = std::fs::remove_file(r.join("bin"));
        std::os::unix::fs::symlink("usr/bin", r.join("bin")).expect("symlink");
        for f in [
            "kernel",
            "initrd-stateless.gz",
            "initrd-statelite.gz",
            "rootimg.cpio.gz",
            "rootimg.tar.xz",
        ] {
            std::fs::write(dir.join(f), f).expect("write");
        }
    }

    /// The tree of `rel` as sorted relative paths, for before/after comparisons.
    pub fn tree(&self, rel: &Path) -> Vec<String> {
        let mut out = Vec::new();
        fn walk(base: &Path, p: &Path, out: &mut Vec<String>) {
            let Ok(rd) = std::fs::read_dir(p) else { return };
            for e in rd.flatten() {
                let path = e.path();
                out.push(
                    path.strip_prefix(base)
                        .expect("prefix")
                        .display()
                        .to_string(),
                );
                if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    walk(base, &path, out);
                }
            }
        }
        walk(rel, rel, &mut out);
        out.sort();
        out
    }

    /// A command running the engine standalone against this directory.
    pub fn command(&self, cmd: &str, args: &[&str]) -> Command {
        let mut c = Command::new(bin());
        c.arg(cmd).args(args).arg("--defs").arg(self.defs_path());
        c.env("XCAT_IMAGED_LOCK_DIR", self.locks())
            .current_dir(&self.root);
        c
    }

    /// Runs a command standalone.
    pub fn run(&self, cmd: &str, args: &[&str]) -> Output {
        Output::of(self.command(cmd, args))
    }
}

/// A finished process.
#[derive(Debug)]
pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn of(mut c: Command) -> Output {
        let o = c.output().expect("run engine");
        Output {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    /// Stdout lines, with `sinfo` progress (text ended by `\r`) left out.
    pub fn lines(&self) -> Vec<&str> {
        self.stdout
            .lines()
            .map(|l| l.rsplit('\r').next().unwrap_or(l))
            .collect()
    }
}

/// A request as the bridge would send it.
pub fn request(command: &str, args: &[&str]) -> Request {
    Request {
        v: 1,
        command: command.into(),
        args: args.iter().map(|s| s.to_string()).collect(),
        cwd: Some("/".into()),
        user: Some("root".into()),
        clienttype: Some("cli".into()),
        environment: None,
        xcatroot: None,
    }
}

/// The engine in serve mode, with this test as the bridge.
pub struct Served {
    pub child: Child,
    stdin: Option<std::process::ChildStdin>,
    stdout: BufReader<std::process::ChildStdout>,
}

impl Served {
    pub fn start(lockdir: &Path) -> Served {
        let mut child = Command::new(bin())
            .arg("serve")
            .env("XCAT_IMAGED_LOCK_DIR", lockdir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn engine");
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        Served {
            child,
            stdin,
            stdout,
        }
    }

    pub fn send_raw(&mut self, line: &[u8]) {
        let w = self.stdin.as_mut().expect("stdin open");
        w.write_all(line).expect("write");
        w.flush().expect("flush");
    }

    pub fn send(&mut self, msg: &impl serde::Serialize) {
        let w = self.stdin.as_mut().expect("stdin open");
        protocol::write_line(w, msg).expect("write line");
    }

    pub fn take_stdin(&mut self) -> Option<std::process::ChildStdin> {
        self.stdin.take()
    }

    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// The next message, or None at EOF.
    pub fn next(&mut self) -> Option<ToShim> {
        let mut line = String::new();
        if self.stdout.read_line(&mut line).expect("read") == 0 {
            return None;
        }
        Some(protocol::decode(line.trim_end().as_bytes()).expect("engine wrote a valid line"))
    }

    /// Reads to `done`, answering calls with `answer`. Returns (messages, calls, done code).
    pub fn finish(&mut self, mut answer: impl FnMut(&Call) -> Reply) -> Transcript {
        let mut t = Transcript::default();
        while let Some(m) = self.next() {
            match m {
                ToShim::Call { id, call } => {
                    let mut reply = answer(&call);
                    reply.id = id;
                    t.calls.push(call);
                    self.send(&FromShim::Reply(reply));
                }
                ToShim::Done { errorcode } => {
                    t.done = Some(errorcode);
                    assert!(self.next().is_none(), "nothing may follow done");
                }
                other => t.messages.push(other),
            }
        }
        let status = self.child.wait().expect("wait");
        t.exit = status.code();
        t
    }
}

/// What a served session produced.
#[derive(Debug, Default)]
pub struct Transcript {
    pub messages: Vec<ToShim>,
    pub calls: Vec<Call>,
    pub done: Option<i32>,
    pub exit: Option<i32>,
}

impl Transcript {
    pub fn infos(&self) -> Vec<&str> {
        self.messages
            .iter()
            .filter_map(|m| match m {
                ToShim::Info { text } => Some(text.as_str()),
                _ => None,
            })
            .collect()
    }
    pub fn errors(&self) -> Vec<(&str, i32)> {
        self.messages
            .iter()
            .filter_map(|m| match m {
                ToShim::Error { text, errorcode } => Some((text.as_str(), *errorcode)),
                _ => None,
            })
            .collect()
    }
}

/// Answers calls from a definitions file, as the real bridge answers them from xCAT's tables.
pub fn answer_from(defs: &mut Defs) -> impl FnMut(&Call) -> Reply + '_ {
    move |call| {
        let r: Result<serde_json::Value, String> = match call.clone() {
            Call::TableGet { table, keys, attrs } => defs
                .table_get(&table, &keys, &attrs)
                .map(|r| serde_json::to_value(r).expect("json")),
            Call::TableList {
                table,
                filter,
                attrs,
            } => defs
                .table_list(&table, &filter, &attrs)
                .map(|r| serde_json::to_value(r).expect("json")),
            Call::TableSet {
                table,
                keys,
                values,
            } => defs
                .table_set(&table, &keys, &values)
                .map(|()| serde_json::Value::Null),
            Call::TableDelete { table, keys } => defs
                .table_delete(&table, &keys)
                .map(|()| serde_json::Value::Null),
            Call::SiteGet { key } => Ok(defs
                .site_get(&key)
                .map_or(serde_json::Value::Null, serde_json::Value::String)),
            Call::SystemPassword {} => Ok(serde_json::Value::Null),
        };
        match r {
            Ok(v) => Reply {
                id: 0,
                ok: true,
                result: Some(v),
                error: None,
            },
            Err(e) => Reply {
                id: 0,
                ok: false,
                result: None,
                error: Some(e),
            },
        }
    }
}

/// The mirror of the host's apt sources (read at test time), else deb.debian.org.
pub fn host_mirror() -> String {
    let mut texts = Vec::new();
    if let Ok(rd) = std::fs::read_dir("/etc/apt/sources.list.d") {
        for e in rd.flatten() {
            if e.path().extension().is_some_and(|x| x == "sources") {
                texts.push(std::fs::read_to_string(e.path()).unwrap_or_default());
            }
        }
    }
    for t in &texts {
        for l in t.lines() {
            if let Some(uris) = l.strip_prefix("URIs:") {
                for u in uris.split_whitespace() {
                    if u.starts_with("http") && u.trim_end_matches('/').ends_with("/debian") {
                        return u.trim_end_matches('/').to_string();
                    }
                }
            }
        }
    }
    let list = std::fs::read_to_string("/etc/apt/sources.list").unwrap_or_default();
    for l in list.lines() {
        let w: Vec<&str> = l.split_whitespace().collect();
        if w.first() == Some(&"deb") {
            if let Some(u) = w.iter().find(|u| u.starts_with("http")) {
                if u.trim_end_matches('/').ends_with("/debian") {
                    return u.trim_end_matches('/').to_string();
                }
            }
        }
    }
    "http://deb.debian.org/debian".into()
}

/// Whether a TCP connection to the URL's host (port 80 unless given) opens within 5 s.
pub fn reachable(url: &str) -> bool {
    let host = url
        .split("://")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .unwrap_or("");
    let addr = if host.contains(':') {
        host.to_string()
    } else {
        format!("{host}:80")
    };
    std::net::ToSocketAddrs::to_socket_addrs(&addr)
        .ok()
        .and_then(|mut a| a.next())
        .is_some_and(|a| {
            std::net::TcpStream::connect_timeout(&a, std::time::Duration::from_secs(5)).is_ok()
        })
}

/// Mounts at or under `dir` in any process's mount table, with the pid.
pub fn mounts_anywhere_under(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let pid = e.file_name().to_string_lossy().into_owned();
        if !pid.chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        let Ok(text) = std::fs::read(e.path().join("mountinfo")) else {
            continue;
        };
        let Ok(mounts) = xcat_imaged::fs::mountinfo::parse(&text) else {
            continue;
        };
        for m in xcat_imaged::fs::mountinfo::under(&mounts, dir) {
            found.push(format!("pid {pid}: {}", m.mount_point.display()));
        }
    }
    found
}

/// The member names of a gzip'd cpio (the kernel unpacks what `cpio -t` lists).
pub fn cpio_names(archive: &Path) -> Vec<String> {
    let mut gz = std::process::Command::new("gzip")
        .arg("-cd")
        .arg(archive)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut c = std::process::Command::new("cpio");
    c.args(["-t", "--quiet"]).stdin(gz.stdout.take().unwrap());
    let o = Output::of(c);
    assert!(
        gz.wait().unwrap().success(),
        "{} is not gzip",
        archive.display()
    );
    assert_eq!(o.code, 0, "{} is not a cpio: {o:?}", archive.display());
    o.stdout
        .lines()
        .map(|l| l.trim_start_matches("./").to_string())
        .collect()
}
