//! The one place that starts programs: argument vectors, a clean environment, own process group.
//!
//! A program call is a value ([`Step`]); it never goes through a shell. Children get stdin from
//! a pipe or `/dev/null`, a fixed `PATH`, and their own process group so the engine decides when
//! they stop (cancel: TERM, a grace period, KILL). Nothing here knows xCAT.

use std::ffi::OsString;
use std::io::{self, Read};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
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
        }
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
        let prog = find_program(&self.prog).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("{} not found in {PATH}", self.prog),
            )
        })?;
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
        let mut child = step
            .command(Stdio::piped())
            .map_err(fail)?
            .spawn()
            .map_err(fail)?;
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
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = killpg(pgid, Signal::SIGKILL);
        let _ = self.child.wait();
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
    fn finds_programs() {
        assert!(find_program("ls").is_some());
        assert!(find_program("no-such-program-xyz").is_none());
        assert!(find_program("/bin/ls").is_some());
    }
}
