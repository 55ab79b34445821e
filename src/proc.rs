//! The one place that starts programs: argument vectors, a clean environment, own process group.
//!
//! A program call is a value ([`Step`]); it never goes through a shell. Children get stdin from
//! a pipe or `/dev/null`, a fixed `PATH`, and their own process group so the engine decides when
//! they stop (cancel: TERM, a grace period, KILL). Nothing here knows xCAT.
//!
//! A step may be [isolated](Isolation): between fork and exec the child enters a private mount
//! namespace (and optionally new PID and UTS namespaces), makes the mounts and nodes it was
//! given and changes root. That work happens only in the child, with raw async-signal-safe
//! system calls on strings prepared before the fork, so no thread of the engine ever changes
//! namespace. Nothing here knows what an image is; callers say what to mount where.

use std::collections::VecDeque;
use std::ffi::{CString, OsString};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// `PATH` for children and for finding programs.
pub const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Keeps this much of a child's stderr for error messages.
const STDERR_KEEP: usize = 8 * 1024;

/// A program call: the program and its argument list, with where and how to run it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// Program name (looked up in [`PATH`]) or path.
    pub prog: String,
    /// Arguments, not including the program name.
    pub args: Vec<OsString>,
    /// Working directory; `/` when not set.
    pub cwd: Option<PathBuf>,
    /// Environment besides `PATH` and `LC_ALL=C`.
    pub env: Vec<(String, String)>,
    /// Namespaces, mounts and root the child is started in; `None` runs it as is.
    pub isolation: Option<Isolation>,
}

impl Step {
    /// A step running `prog` with `args`.
    pub fn new<I, S>(prog: &str, args: I) -> Step
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        Step {
            prog: prog.into(),
            args: args.into_iter().map(Into::into).collect(),
            cwd: None,
            env: Vec::new(),
            isolation: None,
        }
    }

    /// Adds one environment variable.
    pub fn env(mut self, key: &str, value: &str) -> Step {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// Starts the program isolated as `iso` says. With a new root, the program is looked up
    /// in [`PATH`] inside that root (by the child, after the change of root), and the working
    /// directory is its `/`.
    pub fn isolated(mut self, iso: Isolation) -> Step {
        self.isolation = Some(iso);
        self
    }

    /// Sets the working directory.
    pub fn cwd(mut self, dir: &Path) -> Step {
        self.cwd = Some(dir.to_path_buf());
        self
    }

    /// How the step reads in messages: the program and its arguments.
    pub fn display(&self) -> String {
        let mut s = self.prog.clone();
        for a in &self.args {
            s.push(' ');
            s.push_str(&a.to_string_lossy());
        }
        s
    }

    fn command(&self, stdin: Stdio) -> io::Result<Command> {
        let chrooted = self.isolation.as_ref().is_some_and(|i| i.chroot.is_some());
        let prog = if chrooted {
            // Found by execvp in the child, in the new root, with the PATH set below.
            PathBuf::from(&self.prog)
        } else {
            find_program(&self.prog).ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("{} not found in {PATH}", self.prog),
                )
            })?
        };
        let mut c = Command::new(prog);
        c.args(&self.args)
            .env_clear()
            .env("PATH", PATH)
            .env("LC_ALL", "C")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir(self.cwd.as_deref().unwrap_or(Path::new("/")))
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        if let Some(iso) = &self.isolation {
            let prepared = iso.prepare()?;
            // SAFETY: the closure only makes async-signal-safe system calls on data prepared
            // before the fork (no allocation, no locks); see `Prepared::enter`.
            unsafe {
                c.pre_exec(move || prepared.enter());
            }
        }
        Ok(c)
    }
}

/// A step that failed: how it ended and the end of what it wrote to stderr.
#[derive(Debug)]
pub struct StepError {
    /// The step, as [`Step::display`] shows it.
    pub step: String,
    /// Why: a start failure, an exit status or a signal.
    pub how: String,
    /// The last part of its stderr, trimmed.
    pub stderr: String,
}

impl std::fmt::Display for StepError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "\"{}\" {}", self.step, self.how)?;
        if !self.stderr.is_empty() {
            write!(f, ": {}", self.stderr)?;
        }
        Ok(())
    }
}

impl std::error::Error for StepError {}

/// Finds a program in [`PATH`] (or checks a given path), as `type -p` would.
pub fn find_program(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let ok = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if name.contains('/') {
        let p = PathBuf::from(name);
        return ok(&p).then_some(p);
    }
    PATH.split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| ok(p))
}

/// Spawns, retrying briefly on ETXTBSY: a program written just before (a postinstall script,
/// a copied binary) is still open for writing in any child another thread forked meanwhile,
/// until that child execs; the kernel refuses to run it in that window.
fn spawn(c: &mut Command) -> io::Result<Child> {
    let mut tries = 0;
    loop {
        match c.spawn() {
            Err(e) if e.raw_os_error() == Some(nix::libc::ETXTBSY) && tries < 50 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

/// A running step whose stdin we write.
pub struct Running {
    step: String,
    child: Child,
    stdin: Option<ChildStdin>,
    out: Option<std::thread::JoinHandle<Vec<u8>>>,
    err: Option<std::thread::JoinHandle<Vec<u8>>>,
}

fn drain(mut r: impl Read + Send + 'static, keep: usize) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut kept = Vec::new();
        let mut buf = [0u8; 8192];
        while let Ok(n) = r.read(&mut buf) {
            if n == 0 {
                break;
            }
            kept.extend_from_slice(&buf[..n]);
            if kept.len() > 2 * keep {
                kept.drain(..kept.len() - keep);
            }
        }
        if kept.len() > keep {
            kept.drain(..kept.len() - keep);
        }
        kept
    })
}

fn how(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("failed with exit status {c}"),
        (None, Some(s)) => format!("was killed by signal {s}"),
        _ => "failed".to_string(),
    }
}

impl Running {
    /// Starts `step` with a pipe on stdin.
    pub fn start(step: &Step) -> Result<Running, StepError> {
        let shown = step.display();
        let fail = |e: io::Error| StepError {
            step: shown.clone(),
            how: format!("could not be started ({e})"),
            stderr: String::new(),
        };
        let mut child = spawn(&mut step.command(Stdio::piped()).map_err(fail)?).map_err(fail)?;
        let out = child.stdout.take().map(|o| drain(o, STDERR_KEEP));
        let err = child.stderr.take().map(|e| drain(e, STDERR_KEEP));
        Ok(Running {
            step: shown,
            stdin: child.stdin.take(),
            child,
            out,
            err,
        })
    }

    /// The child's stdin.
    pub fn stdin(&mut self) -> &mut ChildStdin {
        self.stdin.as_mut().expect("stdin is open until wait")
    }

    /// Closes stdin, waits for the child and checks its exit status.
    pub fn wait(mut self) -> Result<String, StepError> {
        drop(self.stdin.take());
        let status = self.child.wait();
        let out = self
            .out
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        let err = self
            .err
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        let stderr = String::from_utf8_lossy(&err).trim().to_string();
        match status {
            Ok(s) if s.success() => Ok(String::from_utf8_lossy(&out).into_owned()),
            Ok(s) => Err(StepError {
                step: self.step.clone(),
                how: how(s),
                stderr,
            }),
            Err(e) => Err(StepError {
                step: self.step.clone(),
                how: format!("could not be waited for ({e})"),
                stderr,
            }),
        }
    }

    /// Like [`Running::wait`], but polls `cancelled` while the child runs; when it turns
    /// true the child is stopped as [`Running::stop`] does (TERM, `grace`, KILL) and the
    /// result is an error saying so.
    pub fn wait_unless(
        mut self,
        cancelled: &dyn Fn() -> bool,
        grace: Duration,
    ) -> Result<String, StepError> {
        drop(self.stdin.take());
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) | Err(_) => return self.wait(),
                Ok(None) if cancelled() => {
                    let step = self.step.clone();
                    self.stop(grace);
                    return Err(StepError {
                        step,
                        how: "was stopped (cancelled)".to_string(),
                        stderr: String::new(),
                    });
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// Stops the child's process group: TERM, up to `grace` to exit, then KILL; reaps it.
    pub fn stop(mut self, grace: Duration) {
        use nix::sys::signal::{killpg, Signal};
        drop(self.stdin.take());
        let pgid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = killpg(pgid, Signal::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                let _ = killpg(pgid, Signal::SIGKILL);
                wait_group_gone(pgid, Duration::from_secs(5));
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = killpg(pgid, Signal::SIGKILL);
        let _ = self.child.wait();
        wait_group_gone(pgid, Duration::from_secs(5));
    }
}

/// Waits until no process is left in the process group (children of the child that were
/// reparented elsewhere, an isolated step's init, all already sent SIGKILL), up to `limit`.
/// It only looks: once the group is empty its id may be reused, so nothing is sent here.
fn wait_group_gone(pgid: nix::unistd::Pid, limit: Duration) {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if nix::sys::signal::killpg(pgid, None).is_err() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // Last line of defence: never leave a child running or unreaped.
        if let Ok(None) = self.child.try_wait() {
            let pgid = nix::unistd::Pid::from_raw(self.child.id() as i32);
            let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
            let _ = self.child.wait();
        }
    }
}

/// Runs a step to completion with stdin from `/dev/null`; returns its stdout.
pub fn run(step: &Step) -> Result<String, StepError> {
    let mut r = Running::start(step)?;
    drop(r.stdin.take());
    r.wait()
}

/// One line a running step wrote, as [`run_streaming`] hands it over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// A line of its stdout.
    Stdout(String),
    /// A line of its stderr.
    Stderr(String),
}

/// Longest line handed over; the rest of a longer one is dropped.
const LINE_MAX: usize = 16 * 1024;
/// How many of the last stderr lines a [`StepError`] of [`run_streaming`] carries.
const TAIL_LINES: usize = 10;

/// What a terminal would show of a line: the part after its last carriage return.
fn shown_line(raw: &[u8]) -> String {
    let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
    let last = raw.rsplit(|&b| b == b'\r').next().unwrap_or(raw);
    let cut = &last[..last.len().min(LINE_MAX)];
    String::from_utf8_lossy(cut).into_owned()
}

fn lines_to(
    mut r: impl Read + Send + 'static,
    tx: mpsc::Sender<Line>,
    wrap: fn(String) -> Line,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut pending: Vec<u8> = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            let n = match r.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            pending.extend_from_slice(&buf[..n]);
            while let Some(i) = pending.iter().position(|&b| b == b'\n') {
                let line = shown_line(&pending[..i]);
                pending.drain(..=i);
                if tx.send(wrap(line)).is_err() {
                    return;
                }
            }
            if pending.len() > 4 * LINE_MAX {
                // A line without end: hand over what we have.
                let line = shown_line(&pending);
                pending.clear();
                if tx.send(wrap(line)).is_err() {
                    return;
                }
            }
        }
        if !pending.is_empty() {
            let _ = tx.send(wrap(shown_line(&pending)));
        }
    })
}

/// Runs `step` to completion with stdin from `/dev/null`, handing each line of its stdout and
/// stderr to `on_line` as it comes (in arrival order; a carriage-return progress line is
/// handed over as it last looked). Between lines, and at least every 100 ms, `stop` is asked
/// whether to stop: then the child's process group is stopped (TERM, 5 s, KILL) and the step
/// fails with "was stopped". The error of a failed step carries its last stderr lines.
pub fn run_streaming(
    step: &Step,
    on_line: &mut dyn FnMut(Line),
    stop: &dyn Fn() -> bool,
) -> Result<(), StepError> {
    let shown = step.display();
    let fail = |e: io::Error| StepError {
        step: shown.clone(),
        how: format!("could not be started ({e})"),
        stderr: String::new(),
    };
    let mut child = spawn(&mut step.command(Stdio::null()).map_err(fail)?).map_err(fail)?;
    let (tx, rx) = mpsc::channel::<Line>();
    let readers = [
        child
            .stdout
            .take()
            .map(|o| lines_to(o, tx.clone(), Line::Stdout)),
        child
            .stderr
            .take()
            .map(|e| lines_to(e, tx.clone(), Line::Stderr)),
    ];
    drop(tx);
    let mut tail: VecDeque<String> = VecDeque::new();
    let mut exited: Option<(ExitStatus, Instant)> = None;
    loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(line) => {
                if let Line::Stderr(s) = &line {
                    if tail.len() == TAIL_LINES {
                        tail.pop_front();
                    }
                    tail.push_back(s.clone());
                }
                on_line(line);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        if stop() {
            let r = Running {
                step: shown.clone(),
                child,
                stdin: None,
                out: None,
                err: None,
            };
            r.stop(Duration::from_secs(5));
            return Err(StepError {
                step: shown,
                how: "was stopped".into(),
                stderr: tail.into_iter().collect::<Vec<_>>().join("\n"),
            });
        }
        if exited.is_none() {
            if let Ok(Some(s)) = child.try_wait() {
                exited = Some((s, Instant::now()));
            }
        }
        // Something the child left behind holds its output open: stop listening.
        if exited.is_some_and(|(_, t)| t.elapsed() > Duration::from_secs(2)) {
            break;
        }
    }
    let status = match exited {
        Some((s, _)) => Ok(s),
        None => child.wait(),
    };
    if exited.is_none() {
        for r in readers.into_iter().flatten() {
            let _ = r.join();
        }
    }
    let stderr = tail.into_iter().collect::<Vec<_>>().join("\n");
    match status {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(StepError {
            step: shown,
            how: how(s),
            stderr,
        }),
        Err(e) => Err(StepError {
            step: shown,
            how: format!("could not be waited for ({e})"),
            stderr,
        }),
    }
}

/// Flags of a fresh mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MountFlags {
    /// `ro`
    pub readonly: bool,
    /// `nosuid`
    pub nosuid: bool,
    /// `nodev`
    pub nodev: bool,
    /// `noexec`
    pub noexec: bool,
}

impl MountFlags {
    fn bits(self) -> nix::libc::c_ulong {
        use nix::libc::{MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_RDONLY};
        let mut b = 0;
        if self.readonly {
            b |= MS_RDONLY;
        }
        if self.nosuid {
            b |= MS_NOSUID;
        }
        if self.nodev {
            b |= MS_NODEV;
        }
        if self.noexec {
            b |= MS_NOEXEC;
        }
        b
    }
}

/// A mount an isolated child makes in its private mount namespace. Paths are host paths, seen
/// before the change of root; the caller makes sure targets exist and are what it means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountSpec {
    /// A new instance of a filesystem: `mount -t <fstype> -o <data> <source> <target>`.
    Fresh {
        /// Filesystem type (`proc`, `sysfs`, `tmpfs`, `devpts`).
        fstype: String,
        /// Source name shown in mountinfo.
        source: String,
        /// Mount point.
        target: PathBuf,
        /// Filesystem options (`mode=755`).
        data: String,
        /// Generic flags.
        flags: MountFlags,
    },
    /// A bind mount of one directory or file (not recursive).
    Bind {
        /// What is shown.
        source: PathBuf,
        /// Where.
        target: PathBuf,
        /// Remounted read-only right after.
        readonly: bool,
    },
}

/// A filesystem entry an isolated child makes during its setup (on a fresh `/dev`, say).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeSpec {
    /// A directory (an existing one is fine).
    Dir {
        /// Host path.
        path: PathBuf,
        /// Permission bits.
        mode: u32,
    },
    /// A character device.
    CharDev {
        /// Host path.
        path: PathBuf,
        /// Permission bits (set exactly, not masked by the umask).
        mode: u32,
        /// Device major number.
        major: u64,
        /// Device minor number.
        minor: u64,
    },
    /// A symbolic link at `path` pointing to `target`.
    Symlink {
        /// Link text.
        target: PathBuf,
        /// Host path of the link.
        path: PathBuf,
    },
}

/// One setup operation of an isolated child, done in order after the namespaces are made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Setup {
    /// A mount.
    Mount(MountSpec),
    /// A filesystem entry (on a filesystem mounted by an earlier operation, say).
    Node(NodeSpec),
}

/// Where and how an isolated child runs: always a private mount namespace (nothing it mounts
/// is seen outside, and all of it goes when its last process ends); optionally a new PID
/// namespace whose init is the program (when it ends, for whatever reason, every process it
/// started is killed), a new UTS namespace with its own host name, mounts and entries, and a
/// new root. The child also dies (SIGKILL) when the engine dies.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Isolation {
    /// Start the program as init of a new PID namespace.
    pub pid_namespace: bool,
    /// Host name in a new UTS namespace.
    pub hostname: Option<String>,
    /// Mounts and entries, in order.
    pub setup: Vec<Setup>,
    /// New root directory (the child then starts in its `/`).
    pub chroot: Option<PathBuf>,
}

fn cstr(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

fn cstring(s: &str) -> io::Result<CString> {
    CString::new(s)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "text contains a NUL byte"))
}

/// A mount as system-call arguments.
struct PMount {
    source: Option<CString>,
    target: CString,
    fstype: Option<CString>,
    data: Option<CString>,
    flags: nix::libc::c_ulong,
    /// Flags of a second mount call (read-only remount of a bind), if any.
    remount: Option<nix::libc::c_ulong>,
}

enum PNode {
    Dir(CString, nix::libc::mode_t),
    Char(CString, nix::libc::mode_t, nix::libc::dev_t),
    Symlink(CString, CString),
}

enum POp {
    Mount(PMount),
    Node(PNode),
}

/// An [`Isolation`] turned into C strings and flags before the fork.
struct Prepared {
    parent: nix::libc::pid_t,
    pid_ns: bool,
    hostname: Option<CString>,
    ops: Vec<POp>,
    chroot: Option<CString>,
}

impl Isolation {
    fn prepare(&self) -> io::Result<Prepared> {
        use nix::libc::{MS_BIND, MS_RDONLY, MS_REMOUNT};
        let mut ops = Vec::new();
        for op in &self.setup {
            ops.push(match op {
                Setup::Mount(MountSpec::Fresh {
                    fstype,
                    source,
                    target,
                    data,
                    flags,
                }) => POp::Mount(PMount {
                    source: Some(cstring(source)?),
                    target: cstr(target)?,
                    fstype: Some(cstring(fstype)?),
                    data: Some(cstring(data)?),
                    flags: flags.bits(),
                    remount: None,
                }),
                Setup::Mount(MountSpec::Bind {
                    source,
                    target,
                    readonly,
                }) => POp::Mount(PMount {
                    source: Some(cstr(source)?),
                    target: cstr(target)?,
                    fstype: None,
                    data: None,
                    flags: MS_BIND,
                    remount: readonly.then_some(MS_REMOUNT | MS_BIND | MS_RDONLY),
                }),
                Setup::Node(NodeSpec::Dir { path, mode }) => {
                    POp::Node(PNode::Dir(cstr(path)?, *mode as _))
                }
                Setup::Node(NodeSpec::CharDev {
                    path,
                    mode,
                    major,
                    minor,
                }) => POp::Node(PNode::Char(
                    cstr(path)?,
                    *mode as _,
                    nix::libc::makedev(*major as _, *minor as _),
                )),
                Setup::Node(NodeSpec::Symlink { target, path }) => {
                    POp::Node(PNode::Symlink(cstr(target)?, cstr(path)?))
                }
            });
        }
        Ok(Prepared {
            parent: std::process::id() as nix::libc::pid_t,
            pid_ns: self.pid_namespace,
            hostname: self.hostname.as_deref().map(cstring).transpose()?,
            ops,
            chroot: self.chroot.as_deref().map(cstr).transpose()?,
        })
    }
}

/// Writes to fd 2 without allocating.
fn raw_write(b: &[u8]) {
    // SAFETY: write(2) on a valid buffer; a failure is ignored.
    unsafe {
        nix::libc::write(2, b.as_ptr().cast(), b.len());
    }
}

/// Reports a failed setup step on stderr (which the engine reads) and ends the child with 125.
fn die(what: &[u8], path: Option<&CString>) -> ! {
    // SAFETY: errno location and _exit are async-signal-safe.
    let errno = unsafe { *nix::libc::__errno_location() };
    raw_write(b"xcat-imaged sandbox: ");
    raw_write(what);
    if let Some(p) = path {
        raw_write(b" ");
        raw_write(p.as_bytes());
    }
    raw_write(b" failed: errno ");
    let mut digits = [0u8; 12];
    let mut i = digits.len();
    let mut n = errno.unsigned_abs();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 || i == 0 {
            break;
        }
    }
    raw_write(&digits[i..]);
    raw_write(b"\n");
    // SAFETY: ends the child without running any destructor.
    unsafe { nix::libc::_exit(125) }
}

impl Prepared {
    /// Runs in the child between fork and exec. Only raw system calls on prepared data.
    fn enter(&self) -> io::Result<()> {
        use nix::libc::{self, c_ulong};
        // SAFETY: every call below is async-signal-safe and works on memory prepared before
        // the fork; the child is single-threaded.
        unsafe {
            // The engine's handlers (tokio's) must not run in the child.
            for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT] {
                libc::signal(sig, libc::SIG_DFL);
            }
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as c_ulong, 0, 0, 0) != 0 {
                die(b"prctl", None);
            }
            if libc::getppid() != self.parent {
                libc::_exit(125);
            }
            let mut flags = libc::CLONE_NEWNS;
            if self.pid_ns {
                flags |= libc::CLONE_NEWPID;
            }
            if self.hostname.is_some() {
                flags |= libc::CLONE_NEWUTS;
            }
            if libc::unshare(flags) != 0 {
                die(b"unshare", None);
            }
            let root = c"/";
            if libc::mount(
                std::ptr::null(),
                root.as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ) != 0
            {
                die(b"making / private", None);
            }
            if let Some(h) = &self.hostname {
                if libc::sethostname(h.as_ptr(), h.as_bytes().len()) != 0 {
                    die(b"sethostname", None);
                }
            }
            if self.pid_ns {
                match libc::fork() {
                    -1 => die(b"fork", None),
                    0 => {
                        // Init of the new PID namespace: dies with its supervisor.
                        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as c_ulong, 0, 0, 0)
                            != 0
                        {
                            die(b"prctl", None);
                        }
                    }
                    pid => supervise(pid),
                }
            }
            for op in &self.ops {
                match op {
                    POp::Mount(m) => mount_one(m),
                    POp::Node(n) => node_one(n),
                }
            }
            if let Some(r) = &self.chroot {
                if libc::chroot(r.as_ptr()) != 0 {
                    die(b"chroot", Some(r));
                }
                if libc::chdir(root.as_ptr()) != 0 {
                    die(b"chdir /", None);
                }
            }
        }
        Ok(())
    }
}

/// One prepared mount, in the child.
unsafe fn mount_one(m: &PMount) {
    use nix::libc;
    let opt = |c: &Option<CString>| c.as_ref().map_or(std::ptr::null(), |c| c.as_ptr());
    if libc::mount(
        opt(&m.source),
        m.target.as_ptr(),
        opt(&m.fstype),
        m.flags,
        opt(&m.data).cast(),
    ) != 0
    {
        die(b"mount on", Some(&m.target));
    }
    if let Some(f) = m.remount {
        if libc::mount(
            std::ptr::null(),
            m.target.as_ptr(),
            std::ptr::null(),
            f,
            std::ptr::null(),
        ) != 0
        {
            die(b"read-only remount of", Some(&m.target));
        }
    }
}

/// One prepared entry, in the child.
unsafe fn node_one(n: &PNode) {
    use nix::libc;
    match n {
        PNode::Dir(p, mode) => {
            if libc::mkdir(p.as_ptr(), *mode) != 0 && *libc::__errno_location() != libc::EEXIST {
                die(b"mkdir", Some(p));
            }
            if libc::chmod(p.as_ptr(), *mode) != 0 {
                die(b"chmod", Some(p));
            }
        }
        PNode::Char(p, mode, dev) => {
            if libc::mknod(p.as_ptr(), libc::S_IFCHR | *mode, *dev) != 0 {
                die(b"mknod", Some(p));
            }
            if libc::chmod(p.as_ptr(), *mode) != 0 {
                die(b"chmod", Some(p));
            }
        }
        PNode::Symlink(t, p) => {
            if libc::symlink(t.as_ptr(), p.as_ptr()) != 0 {
                die(b"symlink", Some(p));
            }
        }
    }
}

/// The child that made the namespaces waits for the namespace's init and ends as it ended.
/// Its descriptors go first, so the engine's pipes (std's exec-status pipe among them) see
/// their end when the init execs or exits.
unsafe fn supervise(pid: nix::libc::pid_t) -> ! {
    use nix::libc;
    if libc::syscall(
        libc::SYS_close_range,
        3 as libc::c_uint,
        libc::c_uint::MAX,
        0,
    ) != 0
    {
        for fd in 3..4096 {
            libc::close(fd);
        }
    }
    let mut status: libc::c_int = 0;
    loop {
        let r = libc::waitpid(pid, &mut status, 0);
        if r == pid {
            break;
        }
        if r == -1 && *libc::__errno_location() != libc::EINTR {
            libc::_exit(126);
        }
    }
    if libc::WIFEXITED(status) {
        libc::_exit(libc::WEXITSTATUS(status));
    }
    if libc::WIFSIGNALED(status) {
        let sig = libc::WTERMSIG(status);
        libc::signal(sig, libc::SIG_DFL);
        libc::kill(libc::getpid(), sig);
        libc::_exit(128 + sig);
    }
    libc::_exit(126)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn runs_with_an_argument_vector() {
        let out = run(&Step::new("echo", ["a b", "$HOME", ";", "`x`"])).unwrap();
        assert_eq!(out, "a b $HOME ; `x`\n", "no shell interprets anything");
    }

    #[test]
    fn failures_carry_status_and_stderr() {
        let e = run(&Step::new("ls", ["/definitely/not/here"])).unwrap_err();
        assert!(e.how.contains("exit status 2"), "{e}");
        assert!(e.stderr.contains("No such file"), "{e}");
        let e = run(&Step::new("no-such-program-xyz", Vec::<String>::new())).unwrap_err();
        assert!(e.how.contains("could not be started"), "{e}");
    }

    #[test]
    fn stdin_pipe_and_clean_env() {
        let mut r = Running::start(&Step::new("cat", Vec::<String>::new())).unwrap();
        r.stdin().write_all(b"hello").unwrap();
        assert_eq!(r.wait().unwrap(), "hello");
        let out = run(&Step::new("env", Vec::<String>::new())).unwrap();
        let mut vars: Vec<&str> = out.lines().collect();
        vars.sort();
        let path = format!("PATH={PATH}");
        assert_eq!(vars, ["LC_ALL=C", path.as_str()]);
    }

    #[test]
    fn stop_kills_the_group() {
        let r = Running::start(&Step::new("sleep", ["30"])).unwrap();
        let t = Instant::now();
        r.stop(Duration::from_secs(5));
        assert!(t.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn wait_unless_cancelled() {
        let r = Running::start(&Step::new("echo", ["done"])).unwrap();
        assert_eq!(
            r.wait_unless(&|| false, Duration::from_secs(1)).unwrap(),
            "done\n"
        );
        let r = Running::start(&Step::new("sleep", ["30"])).unwrap();
        let t = Instant::now();
        let e = r
            .wait_unless(
                &|| t.elapsed() > Duration::from_millis(200),
                Duration::from_secs(5),
            )
            .unwrap_err();
        assert!(e.how.contains("cancelled"), "{e}");
        assert!(t.elapsed() < Duration::from_secs(5));
        let r = Running::start(&Step::new("false", Vec::<String>::new())).unwrap();
        assert!(r.wait_unless(&|| false, Duration::from_secs(1)).is_err());
    }

    #[test]
    fn finds_programs() {
        assert!(find_program("ls").is_some());
        assert!(find_program("no-such-program-xyz").is_none());
        assert!(find_program("/bin/ls").is_some());
    }
    #[test]
    fn streams_lines_and_progress() {
        let t = tempfile::tempdir().unwrap();
        let f = t.path().join("out");
        std::fs::write(&f, "one\ntwo 10%\rtwo 100%\r\nno newline").unwrap();
        let mut got = Vec::new();
        run_streaming(
            &Step::new("cat", [f.as_os_str()]),
            &mut |l| got.push(l),
            &|| false,
        )
        .unwrap();
        assert_eq!(
            got,
            [
                Line::Stdout("one".into()),
                Line::Stdout("two 100%".into()),
                Line::Stdout("no newline".into())
            ]
        );
        let e = run_streaming(
            &Step::new("ls", ["/definitely/not/here"]),
            &mut |_| {},
            &|| false,
        )
        .unwrap_err();
        assert!(
            e.how.contains("exit status 2") && e.stderr.contains("No such file"),
            "{e}"
        );
    }

    #[test]
    fn streaming_stops_when_asked() {
        let t = Instant::now();
        let e = run_streaming(&Step::new("sleep", ["30"]), &mut |_| {}, &|| {
            t.elapsed() > Duration::from_millis(300)
        })
        .unwrap_err();
        assert_eq!(e.how, "was stopped");
        assert!(t.elapsed() < Duration::from_secs(5));
    }

    fn root() -> bool {
        if nix::unistd::geteuid().is_root() {
            return true;
        }
        let _ = std::io::stderr().write_all(b"SKIPPED: isolation tests need root\n");
        false
    }

    fn mounts_under(dir: &Path) -> usize {
        let m = crate::fs::mountinfo::read().unwrap();
        crate::fs::mountinfo::under(&m, dir).len()
    }

    #[test]
    fn isolated_mounts_stay_in_the_child() {
        if !root() {
            return;
        }
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().canonicalize().unwrap();
        std::fs::create_dir(dir.join("proc")).unwrap();
        let iso = Isolation {
            pid_namespace: true,
            hostname: Some("imgbuild".into()),
            setup: vec![Setup::Mount(MountSpec::Fresh {
                fstype: "proc".into(),
                source: "proc".into(),
                target: dir.join("proc"),
                data: String::new(),
                flags: MountFlags {
                    nosuid: true,
                    nodev: true,
                    noexec: true,
                    ..MountFlags::default()
                },
            })],
            chroot: None,
        };
        let out =
            run(&Step::new("readlink", [dir.join("proc/self")]).isolated(iso.clone())).unwrap();
        assert_eq!(
            out.trim(),
            "1",
            "the program is init of its own PID namespace"
        );
        let out = run(&Step::new("hostname", Vec::<String>::new()).isolated(iso)).unwrap();
        assert_eq!(out.trim(), "imgbuild");
        assert_eq!(mounts_under(&dir), 0, "nothing is mounted in our namespace");
    }

    #[test]
    fn isolated_chroot_with_dev_nodes_and_readonly_bind() {
        if !root() || find_program("busybox").is_none() {
            return;
        }
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().canonicalize().unwrap();
        for d in ["bin", "dev", "ro", "src"] {
            std::fs::create_dir(dir.join(d)).unwrap();
        }
        std::fs::copy(find_program("busybox").unwrap(), dir.join("bin/busybox")).unwrap();
        std::os::unix::fs::symlink("busybox", dir.join("bin/cat")).unwrap();
        std::os::unix::fs::symlink("busybox", dir.join("bin/touch")).unwrap();
        std::fs::write(dir.join("src/marker"), "bound\n").unwrap();
        let iso = Isolation {
            pid_namespace: true,
            hostname: None,
            setup: vec![
                Setup::Mount(MountSpec::Fresh {
                    fstype: "tmpfs".into(),
                    source: "tmpfs".into(),
                    target: dir.join("dev"),
                    data: "mode=755".into(),
                    flags: MountFlags::default(),
                }),
                Setup::Mount(MountSpec::Bind {
                    source: dir.join("src"),
                    target: dir.join("ro"),
                    readonly: true,
                }),
                Setup::Node(NodeSpec::CharDev {
                    path: dir.join("dev/null"),
                    mode: 0o666,
                    major: 1,
                    minor: 3,
                }),
            ],
            chroot: Some(dir.clone()),
        };
        let out =
            run(&Step::new("cat", ["/ro/marker", "/dev/null"]).isolated(iso.clone())).unwrap();
        assert_eq!(out, "bound\n");
        let e = run(&Step::new("touch", ["/ro/new"]).isolated(iso)).unwrap_err();
        assert!(e.stderr.contains("Read-only"), "{e}");
        assert!(
            !dir.join("dev/null").exists(),
            "the node was made on the child's tmpfs"
        );
        assert_eq!(mounts_under(&dir), 0);
    }

    #[test]
    fn isolation_failures_say_what_failed() {
        if !root() {
            return;
        }
        let iso = Isolation {
            setup: vec![Setup::Mount(MountSpec::Bind {
                source: "/definitely/not/here".into(),
                target: "/definitely/not/there".into(),
                readonly: false,
            })],
            ..Isolation::default()
        };
        let e = run(&Step::new("true", Vec::<String>::new()).isolated(iso)).unwrap_err();
        assert!(e.how.contains("125"), "{e}");
        assert!(
            e.stderr
                .contains("mount on /definitely/not/there failed: errno 2"),
            "{e}"
        );
    }
}
