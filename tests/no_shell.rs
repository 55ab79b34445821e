//! No shell, ever: a static check of the sources (engine, plugin, bridge) and a dynamic check
//! of what the engine and the bridge really execute.
//!
//! Static: no Rust code starts a shell (`Command::new("sh")`, `Step::new("bash")`, a shell
//! followed by `"-c"`), in the engine or its tests, and outside `src/proc.rs` no engine code
//! (test modules aside) uses `std::process::Command` or another way to start a program; the
//! Perl plugin and bridge use no `system`, backticks, `qx`, `readpipe`, piped `open`, `open2`/
//! `open3`, and `exec` only in its block form `exec { $prog } @argv`, which never uses a shell.
//!
//! Dynamic: packimage (cpio, tar and, when installed, squashfs), imgexport, rmimage and
//! genimage --dryrun run on a temp management node under `strace -f -e trace=execve,execveat`,
//! and the bridge relays packimage and rmimage to the real engine the same way; no process in
//! any of those trees may execute a shell. Children of the engine get a fixed PATH from
//! src/proc.rs (`/usr/local/sbin:...`), so a PATH of the test's own would not reach them:
//! besides strace, recording `sh`, `bash` and `dash` wrappers come first in the engine's PATH
//! and, as root, are bind-mounted over `/usr/local/sbin` (the first directory of that fixed
//! PATH) in a private mount namespace, where a child's PATH lookup of a shell finds them first.

use crate::util::{cmd_exists, is_root, skip, Dir};
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

const SHELLS: &[&str] = &[
    "sh", "bash", "dash", "ash", "zsh", "ksh", "mksh", "csh", "tcsh", "fish", "busybox",
];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn files(dir: &Path, ext: &str, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<PathBuf> = rd.map(|e| e.expect("entry").path()).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            files(&p, ext, out);
        } else if p.extension().is_some_and(|e| e == ext) {
            out.push(p);
        }
    }
}

/// The code of a Rust file without its test modules (`#[cfg(test)]`, attributes, then a `mod`
/// block, removed up to its closing brace).
fn non_test_part(text: &str) -> String {
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let mut out = String::new();
    let mut i = 0;
    while i < lines.len() {
        if lines[i].trim_end() == "#[cfg(test)]" {
            let mut j = i + 1;
            while j < lines.len() && lines[j].trim_start().starts_with("#[") {
                j += 1;
            }
            if j < lines.len() && lines[j].contains("mod ") && lines[j].trim_end().ends_with('{') {
                let rest: String = lines[j..].concat();
                let skip = block_len(&rest);
                let mut consumed = 0;
                while j < lines.len() && consumed < skip {
                    consumed += lines[j].len();
                    j += 1;
                }
                i = j;
                continue;
            }
        }
        out.push_str(lines[i]);
        i += 1;
    }
    out
}

/// The length of `text` up to and including the `}` that closes its first `{`, skipping
/// strings, raw strings, char literals and comments.
fn block_len(text: &str) -> usize {
    let b = text.as_bytes();
    let (mut i, mut depth) = (0, 0i32);
    while i < b.len() {
        match b[i] {
            b'/' if b.get(i + 1) == Some(&b'/') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'r' if matches!(b.get(i + 1), Some(b'"') | Some(b'#'))
                && (i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_')) =>
            {
                let mut j = i + 1;
                let mut hashes = 0;
                while b.get(j) == Some(&b'#') {
                    hashes += 1;
                    j += 1;
                }
                if b.get(j) == Some(&b'"') {
                    let close: Vec<u8> = std::iter::once(b'"')
                        .chain(std::iter::repeat_n(b'#', hashes))
                        .collect();
                    let body = &text[j + 1..];
                    i = j
                        + 1
                        + body
                            .find(std::str::from_utf8(&close).expect("ascii"))
                            .unwrap_or(body.len())
                        + close.len()
                        - 1;
                }
            }
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    if b[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
            }
            b'\'' if b.get(i + 2) == Some(&b'\'') => i += 2,
            b'\'' if b.get(i + 1) == Some(&b'\\') && b.get(i + 3) == Some(&b'\'') => i += 3,
            b'{' => depth += 1,
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    return i + 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    b.len()
}

/// Where a Rust text starts a shell: a program literal that is a shell, directly after
/// `Command::new(` or `Step::new(` (optionally a path to it), or a shell literal followed by
/// `"-c"` in a list.
fn rust_shell_spawns(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    let is_shell = |lit: &str| {
        let base = lit.rsplit('/').next().unwrap_or(lit);
        SHELLS.contains(&base)
    };
    for (n, line) in text.lines().enumerate() {
        let compact: String = line.split_whitespace().collect();
        for opener in ["Command::new(\"", "Step::new(\"", "Command::new(r\""] {
            let mut rest = compact.as_str();
            while let Some(i) = rest.find(opener) {
                let after = &rest[i + opener.len()..];
                let lit = after.split('"').next().unwrap_or("");
                if is_shell(lit) {
                    found.push(format!("line {}: {}", n + 1, line.trim()));
                }
                rest = after;
            }
        }
        for sh in SHELLS {
            for form in [format!("\"{sh}\",\"-c\""), format!("/{sh}\",\"-c\"")] {
                if compact.contains(&form) {
                    found.push(format!("line {}: {}", n + 1, line.trim()));
                }
            }
        }
    }
    found
}

/// Ways to start a program that bypass src/proc.rs.
fn rust_spawners(text: &str) -> Vec<String> {
    const PATTERNS: &[&str] = &[
        "process::Command",
        "Command::new(",
        "libc::system(",
        "libc::popen(",
        "unistd::execv",
        "unistd::execve",
        "unistd::fork(",
        "libc::fork(",
        "posix_spawn",
    ];
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim_start().starts_with("//"))
        .filter(|(_, l)| PATTERNS.iter().any(|p| l.contains(p)))
        .map(|(n, l)| format!("line {}: {}", n + 1, l.trim()))
        .collect()
}

/// Perl code without POD and comments (a `#` at the start or after whitespace, outside of
/// the few places a `#` means something else in these files).
fn perl_code(text: &str) -> String {
    let mut out = String::new();
    let mut pod = false;
    for line in text.lines() {
        if line.starts_with('=') {
            pod = !line.starts_with("=cut");
            continue;
        }
        if pod || line.starts_with("__END__") {
            if line.starts_with("__END__") {
                break;
            }
            continue;
        }
        let mut code = line;
        let bytes = line.as_bytes();
        for (i, &b) in bytes.iter().enumerate() {
            if b == b'#' && (i == 0 || bytes[i - 1] == b' ' || bytes[i - 1] == b'\t') {
                code = &line[..i];
                break;
            }
        }
        out.push_str(code);
        out.push('\n');
    }
    out
}

fn perl_shell_uses(code: &str) -> Vec<String> {
    let mut found = Vec::new();
    for (n, line) in code.lines().enumerate() {
        let mut bad = Vec::new();
        let words: Vec<&str> = line
            .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
            .collect();
        for w in [
            "system",
            "qx",
            "readpipe",
            "open2",
            "open3",
            "IPC::Open2",
            "IPC::Open3",
            "IPC::Run",
            "IPC::Cmd",
        ] {
            if words.contains(&w) {
                bad.push(w);
            }
        }
        if line.contains('`') {
            bad.push("backticks");
        }
        if let Some(i) = line.find("exec ") {
            let before_ok = i == 0 || !line.as_bytes()[i - 1].is_ascii_alphanumeric();
            if before_ok && !line[i + 5..].trim_start().starts_with('{') {
                bad.push("exec without { PROGRAM } (a single string goes through a shell)");
            }
        }
        if words.contains(&"open") {
            // A mode or a two-argument open with a pipe runs a command (through a shell when it
            // is one string).
            let quoted: Vec<&str> = line.split(['\'', '"']).skip(1).step_by(2).collect();
            if quoted.iter().any(|q| q.contains('|')) {
                bad.push("open with a pipe");
            }
        }
        if !bad.is_empty() {
            found.push(format!(
                "line {}: {} ({})",
                n + 1,
                line.trim(),
                bad.join(", ")
            ));
        }
    }
    found
}

#[test]
fn sources_start_no_shell() {
    let root = repo();
    let mut problems = Vec::new();
    let mut rust = Vec::new();
    for d in ["src", "tests", "fuzz/fuzz_targets"] {
        files(&root.join(d), "rs", &mut rust);
    }
    assert!(rust.len() > 40, "found the Rust sources: {}", rust.len());
    for f in &rust {
        let text = std::fs::read_to_string(f).expect("read");
        let rel = f.strip_prefix(&root).expect("prefix").display().to_string();
        if rel == "tests/no_shell.rs" {
            continue; // This file names the shells it looks for.
        }
        for p in rust_shell_spawns(&text) {
            problems.push(format!("{rel}: starts a shell: {p}"));
        }
        if rel.starts_with("src/") && rel != "src/proc.rs" {
            for p in rust_spawners(&non_test_part(&text)) {
                problems.push(format!("{rel}: starts a program outside src/proc.rs: {p}"));
            }
        }
    }
    let mut perl = Vec::new();
    files(&root.join("plugin"), "pm", &mut perl);
    files(&root.join("perl-shim/lib"), "pm", &mut perl);
    assert!(perl.len() >= 2, "found the plugin and the bridge: {perl:?}");
    let mut execs = 0;
    for f in &perl {
        let code = perl_code(&std::fs::read_to_string(f).expect("read"));
        execs += code.matches("exec {").count();
        for p in perl_shell_uses(&code) {
            problems.push(format!("{}: {p}", f.display()));
        }
    }
    assert!(
        execs >= 1,
        "the bridge starts the engine with exec {{ $engine }}"
    );
    assert!(
        problems.is_empty(),
        "shell use found:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_static_check_finds_what_it_looks_for() {
    // Each detector on text that has the problem, so the check above cannot pass by being blind.
    assert_eq!(
        rust_shell_spawns("let c = Command::new(\"sh\").arg(x);").len(),
        1
    );
    assert_eq!(rust_shell_spawns("Step::new( \"/bin/bash\", [a])").len(), 1);
    assert_eq!(
        rust_shell_spawns("let v = [\"dash\", \"-c\", &cmd];").len(),
        1
    );
    assert!(rust_shell_spawns("Step::new(\"shellcheck\", [a]); [\"gzip\", \"-c\"]").is_empty());
    assert_eq!(
        rust_spawners("use std::process::Command;\nlet c = Command::new(p);").len(),
        2
    );
    assert_eq!(
        non_test_part(
            "fn a() {}\n#[cfg(test)]\n#[allow(x)]\npub(crate) mod kit {\n let s = \"}\"; let c = '{';\n Command::new(x) }\nfn b() { Command::new(y) }\n"
        ),
        "fn a() {}\nfn b() { Command::new(y) }\n"
    );
    for bad in [
        "system(\"rm -rf $dir\");",
        "my $x = `ls $dir`;",
        "my $x = qx{ls};",
        "exec \"$engine serve\";",
        "open(my $fh, \"ls $d |\") or die;",
        "open my $fh, '-|', \"ls $d\";",
        "my $pid = open3($in, $out, $err, $cmd);",
    ] {
        assert_eq!(perl_shell_uses(&perl_code(bad)).len(), 1, "{bad}");
    }
    for good in [
        "exec { $engine } $engine, 'serve';",
        "open my $fh, '<', $file or die;  # not a | pipe",
        "my $n = $#list; # system",
        "=head1 system\n\nqx and `backticks` in POD\n\n=cut\nmy $ok = 1;",
    ] {
        assert!(perl_shell_uses(&perl_code(good)).is_empty(), "{good}");
    }
}

// ---- dynamic ----------------------------------------------------------------------------

/// Recording wrappers named like the shells: each appends its name and arguments to `log`,
/// then runs the real shell with them (never reached when nothing calls a shell).
fn wrappers(dir: &Path, log: &Path) {
    std::fs::create_dir_all(dir).expect("mkdir");
    for sh in ["sh", "bash", "dash"] {
        let real = ["/bin", "/usr/bin"]
            .iter()
            .map(|d| Path::new(d).join(sh))
            .find(|p| p.exists())
            .unwrap_or_else(|| PathBuf::from("/bin/sh"));
        let text = format!(
            "#!/usr/bin/perl\nopen my $l, '>>', '{}' or die;\nprint {{$l}} join(' ', '{sh}', @ARGV), \"\\n\";\nclose $l;\nexec {{ '{}' }} '{sh}', @ARGV;\n",
            log.display(),
            real.display()
        );
        let p = dir.join(sh);
        std::fs::write(&p, text).expect("write wrapper");
        std::fs::set_permissions(&p, PermissionsExt::from_mode(0o755)).expect("chmod");
    }
}

/// As root: a private mount namespace in which the wrappers are `/usr/local/sbin`, the first
/// directory of the PATH src/proc.rs gives children.
fn wrappers_first_for_children(c: &mut Command, dir: &Path) {
    if !is_root() {
        return;
    }
    let src = CString::new(dir.as_os_str().as_bytes()).expect("no NUL");
    let target =
        CString::new(xcat_imaged::proc::PATH.split(':').next().expect("a dir")).expect("no NUL");
    // SAFETY: only async-signal-safe system calls on strings made before the fork.
    unsafe {
        c.pre_exec(move || {
            use nix::libc::{mount, unshare, CLONE_NEWNS, MS_BIND, MS_PRIVATE, MS_REC};
            let null = std::ptr::null();
            let slash = c"/";
            if unshare(CLONE_NEWNS) != 0
                || mount(null, slash.as_ptr(), null, MS_REC | MS_PRIVATE, null.cast()) != 0
                || mount(src.as_ptr(), target.as_ptr(), null, MS_BIND, null.cast()) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// One execve seen by strace: the program path and its argv.
#[derive(Debug)]
struct Exec {
    path: String,
    argv: String,
}

fn parse_strace(log: &str) -> Vec<Exec> {
    log.lines()
        .filter(|l| l.contains("execve(") || l.contains("execveat("))
        .filter(|l| !l.contains("ENOENT")) // PATH lookups that found nothing
        .filter_map(|l| {
            let start = l.find('"')? + 1;
            let end = start + l[start..].find('"')?;
            let argv = l[end..]
                .find('[')
                .and_then(|a| {
                    l[end + a..]
                        .find(']')
                        .map(|b| l[end + a..end + a + b + 1].to_string())
                })
                .unwrap_or_default();
            Some(Exec {
                path: l[start..end].to_string(),
                argv,
            })
        })
        .collect()
}

fn shell_execs(execs: &[Exec]) -> Vec<&Exec> {
    execs
        .iter()
        .filter(|e| {
            let base = e.path.rsplit('/').next().unwrap_or(&e.path);
            let arg0 = e
                .argv
                .trim_start_matches('[')
                .trim_start_matches('"')
                .split('"')
                .next()
                .unwrap_or("");
            let arg0 = arg0.rsplit('/').next().unwrap_or(arg0);
            SHELLS.contains(&base) || SHELLS.contains(&arg0)
        })
        .collect()
}

struct Traced {
    code: i32,
    stdout: String,
    stderr: String,
    execs: Vec<Exec>,
    wrapped: String,
}

/// Runs `argv` under strace with the wrappers first in PATH (and, as root, first in the
/// children's fixed PATH).
fn traced(d: &Dir, argv: &[&str], env: &[(&str, String)]) -> Traced {
    let wdir = d.path().join("shell-wrappers");
    let wlog = d.path().join("shell-wrappers.log");
    let slog = d.path().join("strace.log");
    wrappers(&wdir, &wlog);
    let mut c = Command::new("strace");
    c.args([
        "-f",
        "-qq",
        "-s",
        "256",
        "-e",
        "trace=execve,execveat",
        "-o",
    ])
    .arg(&slog)
    .arg("--")
    .args(argv)
    .env(
        "PATH",
        format!(
            "{}:{}",
            wdir.display(),
            std::env::var("PATH").unwrap_or_default()
        ),
    )
    .env("XCAT_IMAGED_LOCK_DIR", d.locks())
    .env("XCATROOT", d.path().join("no-xcat"))
    .env_remove("RUST_LOG")
    .current_dir(d.path());
    for (k, v) in env {
        c.env(k, v);
    }
    wrappers_first_for_children(&mut c, &wdir);
    let o = c.output().expect("run strace");
    let log = std::fs::read_to_string(&slog).unwrap_or_default();
    Traced {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        execs: parse_strace(&log),
        wrapped: std::fs::read_to_string(&wlog).unwrap_or_default(),
    }
}

/// Whether strace can trace here. In CI it must: the guard may not skip itself away there.
fn strace_works() -> bool {
    let ok = cmd_exists("strace")
        && Command::new("strace")
            .args(["-qq", "-e", "trace=execve", "-o", "/dev/null", "true"])
            .status()
            .is_ok_and(|s| s.success());
    assert!(
        ok || std::env::var("CI").as_deref() != Ok("true"),
        "CI needs strace for the no-shell guard (Debian package strace, scripts/deps)"
    );
    ok
}

/// A management node with a complete image `img` (tree, kernel, initrds, postscripts, exlist,
/// a synclist) and a Debian image `deb` for genimage --dryrun.
fn node() -> Dir {
    let d = Dir::new();
    let dir = d.install().join("netboot/rhels9/x86_64/compute");
    d.image(&dir);
    d.write("install/postscripts/xcatdsklspost", "#!/bin/sh\n");
    d.write("lists/compute.exlist", "./usr/share/doc*\n");
    d.write("lists/compute.pkglist", "bash\n");
    d.write("lists/deb.pkglist", "systemd-sysv\n");
    d.write("sync/hosts", "127.0.0.1 localhost\n");
    d.write(
        "lists/compute.synclist",
        &format!("{} -> /etc/hosts\n", d.path().join("sync/hosts").display()),
    );
    std::fs::create_dir_all(d.tftp().join("xcat/osimage/img")).expect("mkdir");
    let r = d.path().display();
    d.defs(&format!(
        "img:\n    objtype=osimage\n    imagetype=linux\n    osarch=x86_64\n    osvers=rhels9\n    profile=compute\n    provmethod=netboot\n    rootimgdir={}\n    exlist={r}/lists/compute.exlist\n    pkglist={r}/lists/compute.pkglist\n    synclists={r}/lists/compute.synclist\n\ndeb:\n    objtype=osimage\n    imagetype=linux\n    osarch=x86_64\n    osvers=debian12\n    profile=compute\n    provmethod=netboot\n    pkglist={r}/lists/deb.pkglist\n    pkgdir=http://deb.debian.org/debian\n\n",
        dir.display()
    ));
    d
}

fn assert_no_shell(what: &str, t: &Traced) {
    let shells = shell_execs(&t.execs);
    assert!(
        shells.is_empty() && t.wrapped.is_empty(),
        "{what} executed a shell: {shells:?} wrappers: {:?}\nall execs: {:?}",
        t.wrapped,
        t.execs
    );
}

#[test]
fn the_dynamic_check_sees_a_shell() {
    if !strace_works() {
        skip("strace is not installed or cannot trace here");
        return;
    }
    // `env sh /dev/null` finds the wrapper through PATH; strace sees both execs.
    let d = Dir::new();
    let t = traced(&d, &["env", "sh", "/dev/null"], &[]);
    assert_eq!(t.code, 0, "{}", t.stderr);
    assert!(t.wrapped.starts_with("sh /dev/null"), "{:?}", t.wrapped);
    assert!(shell_execs(&t.execs).len() >= 2, "{:?}", t.execs);
}

#[test]
#[allow(clippy::print_stderr)]
fn engine_and_bridge_start_no_shell() {
    if !strace_works() {
        skip("strace is not installed or cannot trace here");
        return;
    }
    let bin = crate::util::bin();
    let bin = bin.to_str().expect("utf-8 path");
    let d = node();
    let defs = d.defs_path().display().to_string();
    let mut runs: Vec<(&str, Vec<&str>)> = vec![
        (
            "packimage cpio",
            vec![bin, "packimage", "img", "--defs", &defs],
        ),
        (
            "packimage tar xz",
            vec![
                bin,
                "packimage",
                "img",
                "-m",
                "tar",
                "-c",
                "xz",
                "--defs",
                &defs,
            ],
        ),
        (
            "imgexport",
            vec![bin, "imgexport", "img", "bundle.tgz", "--defs", &defs],
        ),
        (
            "genimage --dryrun",
            vec![bin, "genimage", "deb", "--dryrun", "--defs", &defs],
        ),
    ];
    if xcat_imaged::proc::find_program("mksquashfs").is_some() {
        runs.push((
            "packimage squashfs",
            vec![bin, "packimage", "img", "-m", "squashfs", "--defs", &defs],
        ));
    }
    runs.push((
        "rmimage --xcatdef",
        vec![bin, "rmimage", "img", "--xcatdef", "--defs", &defs],
    ));
    let mut programs = std::collections::BTreeSet::new();
    for (what, argv) in &runs {
        let t = traced(&d, argv, &[]);
        assert_eq!(t.code, 0, "{what}: {}\n{}", t.stdout, t.stderr);
        assert!(
            t.execs.first().is_some_and(|e| e.path == bin),
            "{what}: strace saw the engine start: {:?}",
            t.execs
        );
        assert_no_shell(what, &t);
        programs.extend(t.execs.iter().skip(1).map(|e| e.path.clone()));
    }
    assert!(
        d.path().join("bundle.tgz").is_file(),
        "imgexport wrote its bundle"
    );
    // The engine starts real programs (date for xcatinfo, mksquashfs), and strace saw them.
    assert!(
        !programs.is_empty(),
        "no child execs seen: tracing does not reach children"
    );

    // The bridge: packimage and rmimage relayed to the real engine, tables from the double.
    let b = node();
    let dir = b.install().join("netboot/rhels9/x86_64/compute");
    let tables = serde_json::json!({
        "site": [
            {"key": "installdir", "value": b.install().display().to_string()},
            {"key": "tftpdir", "value": b.tftp().display().to_string()},
        ],
        "osimage": [{"imagename": "img", "osvers": "rhels9", "osarch": "x86_64",
                     "profile": "compute", "provmethod": "netboot", "imagetype": "linux"}],
        "linuximage": [{"imagename": "img", "rootimgdir": dir.display().to_string()}],
    });
    let tables_path = b.write("tables.json", &tables.to_string());
    let script = repo().join("tests/data/no_shell/bridge.pl");
    let script = script.to_str().expect("utf-8 path");
    let env = [
        ("XCAT_TEST_TABLES", tables_path.display().to_string()),
        ("XCAT_IMAGED_ENGINE", bin.to_string()),
    ];
    for (what, argv) in [
        (
            "bridge packimage",
            vec!["perl", script, "packimage", "img", "-m", "tar"],
        ),
        ("bridge rmimage", vec!["perl", script, "rmimage", "img"]),
    ] {
        let t = traced(&b, &argv, &env);
        assert_eq!(t.code, 0, "{what}: {}\n{}", t.stdout, t.stderr);
        assert!(!t.stdout.contains("\"error\""), "{what}: {}", t.stdout);
        assert!(
            t.execs.iter().any(|e| e.path == bin),
            "{what}: the bridge started the engine: {:?}",
            t.execs
        );
        assert_no_shell(what, &t);
        programs.extend(t.execs.iter().map(|e| e.path.clone()));
    }
    assert!(
        !dir.join("rootimg").exists(),
        "the bridge's rmimage removed the image"
    );
    eprintln!(
        "no shell: {} traced runs; programs executed: {:?}",
        runs.len() + 2,
        programs
    );
}
