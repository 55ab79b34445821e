//! The image lock: the same lock file and `flock` as xCAT's
//! `xCAT::Utils->acquire_lock_imageop($rootimg_dir)`, so this engine, rh/genimage and any Perl
//! packimage or rmimage still running exclude each other.
//!
//! It knows the lock file's name and contents only; it never knows xCAT tables, the host or the
//! protocol.
//!
//! # Compatibility
//!
//! * **Name.** `R = Cwd::realpath(rootimg_dir)` as Perl computes it (see [`perl_realpath`]): the
//!   path itself if only its last component is missing, undefined if a parent is missing. The
//!   name is `R` with every `/` replaced by `.`, then `.`, then the lowercase hex MD5 of `R`. An
//!   undefined `R` counts as the empty string, so such images all share
//!   `.d41d8cd98f00b204e9800998ecf8427e`.
//! * **File.** `<lock dir>/<name>`, lock dir `/var/lock/xcat` (created with mode 0755 if missing)
//!   or the value of the environment variable `XCAT_IMAGED_LOCK_DIR` when that is set and not
//!   empty (for tests and unprivileged runs; a Perl process only ever uses `/var/lock/xcat`).
//!   Opened `O_CREAT|O_WRONLY|O_CLOEXEC`, mode 0666 minus the umask, then
//!   `flock(LOCK_EX|LOCK_NB)`, then truncated and our PID written with no newline. Two additions
//!   over xCAT, which only make odd files fail instead of being followed or blocking: `O_NOFOLLOW`
//!   and `O_NONBLOCK`, and the file must be a regular file.
//! * **Lifetime.** The lock is held while the [`ImageLock`] lives and released when it is dropped
//!   (the descriptor closes). The file is never unlinked, so its inode stays the same across runs.
//! * **Busy.** The holder's PID is read back from the file (its first line, as Perl's `<$fh>`
//!   reads it; empty if the holder has not written it yet) and the error prints xCAT's exact
//!   message with the path as given, unresolved.

use md5::{Digest, Md5};
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs::{DirBuilder, File, OpenOptions, TryLockError};
use std::io::{self, Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The lock directory xCAT uses.
pub const DEFAULT_LOCK_DIR: &str = "/var/lock/xcat";

/// Environment variable that overrides [`DEFAULT_LOCK_DIR`] for [`acquire`] when set and not
/// empty.
pub const LOCK_DIR_ENV: &str = "XCAT_IMAGED_LOCK_DIR";

/// A held image lock. Dropping it releases the lock; the lock file stays.
#[derive(Debug)]
pub struct ImageLock {
    /// Held only to keep the descriptor, and with it the flock, alive.
    #[allow(dead_code)]
    file: File,
    path: PathBuf,
}

impl ImageLock {
    /// The lock file, `<lock dir>/<lock_name>`.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Why the lock could not be taken.
#[derive(Debug)]
pub enum LockError {
    /// Another process (or another open of the file in this one) holds it.
    Busy {
        /// What the lock file says about the holder: its PID, possibly empty.
        pid: String,
        /// The root image directory as the caller gave it.
        path: PathBuf,
    },
    /// The lock directory or file could not be created, opened, locked or written.
    Io {
        /// The lock directory or lock file.
        path: PathBuf,
        /// What went wrong.
        err: io::Error,
    },
}

impl fmt::Display for LockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LockError::Busy { pid, path } => write!(
                f,
                "failed to acquire lock, seems there is another genimage/packimage/rmimage process {pid} running on root image dir \"{}\"",
                path.display()
            ),
            LockError::Io { path, err } => {
                write!(f, "cannot take the image lock {}: {err}", path.display())
            }
        }
    }
}

impl std::error::Error for LockError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LockError::Busy { .. } => None,
            LockError::Io { err, .. } => Some(err),
        }
    }
}

/// The lock file name for `rootimg_dir`, as xCAT computes it.
///
/// The name is made of the bytes of the resolved path; if those are not UTF-8 this string
/// replaces them with U+FFFD, while [`acquire`] always uses the exact bytes
/// ([`lock_file_name`]).
pub fn lock_name(rootimg_dir: &Path) -> String {
    lock_file_name(rootimg_dir).to_string_lossy().into_owned()
}

/// The lock file name for `rootimg_dir` as raw bytes, exactly as xCAT computes it.
pub fn lock_file_name(rootimg_dir: &Path) -> OsString {
    let resolved = perl_realpath(rootimg_dir).unwrap_or_default();
    name_for_resolved(resolved.as_os_str())
}

/// `R` with `/` replaced by `.`, then `.`, then `md5_hex(R)`.
fn name_for_resolved(resolved: &OsStr) -> OsString {
    let bytes = resolved.as_bytes();
    let digest = Md5::digest(bytes);
    let mut name: Vec<u8> = bytes
        .iter()
        .map(|&b| if b == b'/' { b'.' } else { b })
        .collect();
    name.push(b'.');
    for b in digest.iter() {
        name.extend_from_slice(format!("{b:02x}").as_bytes());
    }
    OsString::from_vec(name)
}

/// The lock directory [`acquire`] uses: `$XCAT_IMAGED_LOCK_DIR` if set and not empty, else
/// [`DEFAULT_LOCK_DIR`].
pub fn lock_dir() -> PathBuf {
    lock_dir_from(std::env::var_os(LOCK_DIR_ENV))
}

fn lock_dir_from(var: Option<OsString>) -> PathBuf {
    match var {
        Some(v) if !v.is_empty() => PathBuf::from(v),
        _ => PathBuf::from(DEFAULT_LOCK_DIR),
    }
}

/// Takes the image lock for `rootimg_dir` without waiting, in [`lock_dir`], like the stock
/// packimage and rmimage plugins.
pub fn acquire(rootimg_dir: &Path) -> Result<ImageLock, LockError> {
    acquire_in(&lock_dir(), rootimg_dir)
}

/// Takes the image lock for `rootimg_dir` without waiting, in `lock_dir` (created with mode 0755,
/// parents included, if missing).
pub fn acquire_in(lock_dir: &Path, rootimg_dir: &Path) -> Result<ImageLock, LockError> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(lock_dir)
        .map_err(|err| LockError::Io {
            path: lock_dir.to_path_buf(),
            err,
        })?;
    let path = lock_dir.join(lock_file_name(rootimg_dir));
    let io_err = |err: io::Error| LockError::Io {
        path: path.clone(),
        err,
    };
    let extra = nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK;
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .mode(0o666)
        .custom_flags(extra)
        .open(&path)
        .map_err(io_err)?;
    if !file.metadata().map_err(io_err)?.is_file() {
        return Err(io_err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "lock file is not a regular file",
        )));
    }
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            drop(file);
            return Err(LockError::Busy {
                pid: read_holder(&path),
                path: rootimg_dir.to_path_buf(),
            });
        }
        Err(TryLockError::Error(err)) => return Err(io_err(err)),
    }
    file.set_len(0).map_err(io_err)?;
    (&file)
        .write_all(std::process::id().to_string().as_bytes())
        .map_err(io_err)?;
    Ok(ImageLock { file, path })
}

/// The first line of the lock file, as Perl's `<$fh>` returns it; empty if unreadable.
fn read_holder(path: &Path) -> String {
    let mut buf = Vec::new();
    let read = OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(path)
        .and_then(|f| f.take(4096).read_to_end(&mut buf));
    if read.is_err() {
        return String::new();
    }
    if let Some(nl) = buf.iter().position(|&b| b == b'\n') {
        buf.truncate(nl + 1);
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// Linux's `PATH_MAX`, the limit Perl's realpath enforces.
const PATH_MAX: usize = 4096;
/// Symlinks Perl's realpath follows before giving up with `ELOOP` (glibc's `MAXSYMLINKS`).
const MAX_SYMLINKS: u32 = 20;

/// `Cwd::realpath` as Perl on Linux computes it (the BSD algorithm in Cwd.xs), `None` where Perl
/// returns undef.
///
/// Components are resolved one by one with `lstat`; `.` and `..` are applied to the resolved
/// prefix; symlinks are followed (at most [`MAX_SYMLINKS`] in all). A missing final component
/// is accepted and kept as it is; a missing earlier one (or a final one followed by `/`) gives
/// `None`, as does any other error. A relative path is resolved against the current directory.
/// The result has no trailing `/`, except for `/` itself.
pub fn perl_realpath(path: &Path) -> Option<PathBuf> {
    let path = path.as_os_str().as_bytes();
    let (mut resolved, mut left): (Vec<u8>, Vec<u8>) = match path.strip_prefix(b"/") {
        Some(rest) => (b"/".to_vec(), rest.to_vec()),
        None => (
            std::env::current_dir().ok()?.into_os_string().into_vec(),
            path.to_vec(),
        ),
    };
    if left.len() >= PATH_MAX || resolved.len() >= PATH_MAX {
        return None;
    }
    let mut symlinks = 0u32;
    while !left.is_empty() {
        let (token, more) = match left.iter().position(|&b| b == b'/') {
            Some(i) => {
                let token = left[..i].to_vec();
                left.drain(..=i);
                (token, true)
            }
            None => (std::mem::take(&mut left), false),
        };
        if resolved.last() != Some(&b'/') {
            resolved.push(b'/');
        }
        if token.is_empty() || token == b"." {
            continue;
        }
        if token == b".." {
            strip_last_component(&mut resolved);
            continue;
        }
        resolved.extend_from_slice(&token);
        if resolved.len() >= PATH_MAX {
            return None;
        }
        let meta = match std::fs::symlink_metadata(OsStr::from_bytes(&resolved)) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound && !more => {
                return Some(PathBuf::from(OsString::from_vec(resolved)));
            }
            Err(_) => return None,
        };
        if !meta.file_type().is_symlink() {
            continue;
        }
        if symlinks > MAX_SYMLINKS {
            return None;
        }
        symlinks += 1;
        let mut target = std::fs::read_link(OsStr::from_bytes(&resolved))
            .ok()?
            .into_os_string()
            .into_vec();
        if target.is_empty() || target.len() >= PATH_MAX {
            return None;
        }
        if target[0] == b'/' {
            resolved = b"/".to_vec();
            target.remove(0);
        } else {
            // Drop the link's own name; resolved keeps its trailing '/'.
            let cut = resolved
                .iter()
                .rposition(|&b| b == b'/')
                .map_or(0, |i| i + 1);
            resolved.truncate(cut.max(1));
        }
        if more {
            if target.last() != Some(&b'/') && !target.is_empty() {
                target.push(b'/');
            }
            target.extend_from_slice(&left);
            if target.len() >= PATH_MAX {
                return None;
            }
        }
        left = target;
    }
    if resolved.len() > 1 && resolved.last() == Some(&b'/') {
        resolved.pop();
    }
    Some(PathBuf::from(OsString::from_vec(resolved)))
}

/// Applies `..` to a resolved prefix that ends in `/`: `/a/b/` becomes `/a/`, `/` stays.
fn strip_last_component(resolved: &mut Vec<u8>) {
    if resolved.len() > 1 {
        resolved.pop(); // the trailing '/'
        let cut = resolved
            .iter()
            .rposition(|&b| b == b'/')
            .map_or(0, |i| i + 1);
        resolved.truncate(cut.max(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader};
    use std::os::unix::fs::symlink;
    use std::process::{Child, Command, Stdio};

    const EXAMPLE: &str = "/install/netboot/rhels9/x86_64/compute/rootimg";

    fn perl() -> Option<PathBuf> {
        ["/usr/bin/perl", "/bin/perl", "/usr/local/bin/perl"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
    }

    #[allow(clippy::print_stderr)]
    fn skip(why: &str) {
        eprintln!("skipped: {why}");
    }

    /// Runs Perl with `script` and `args` (no shell) and splits its output on NUL.
    fn perl_lines(perl: &Path, script: &str, args: &[&OsStr]) -> Vec<Vec<u8>> {
        let out = Command::new(perl)
            .args(["-MCwd", "-MDigest::MD5=md5_hex", "-e", script, "--"])
            .args(args)
            .output()
            .expect("run perl");
        assert!(
            out.status.success(),
            "perl failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut v: Vec<Vec<u8>> = out.stdout.split(|&b| b == 0).map(<[u8]>::to_vec).collect();
        assert_eq!(v.pop().as_deref(), Some(&b""[..]), "output ends in NUL");
        v
    }

    /// xCAT's name computation, written out in Perl: realpath, md5_hex, s/\//./g.
    const PERL_NAME: &str = r#"no warnings; for my $p (@ARGV) { my $f = Cwd::realpath($p); my $m = md5_hex($f); $f =~ s/\//./g; print $f . "." . $m . "\0"; }"#;
    const PERL_REALPATH: &str = r#"no warnings; for my $p (@ARGV) { my $f = Cwd::realpath($p); print defined($f) ? "=" . $f : "undef"; print "\0"; }"#;

    #[test]
    fn example_name_format() {
        // md5 as printed by Perl's md5_hex and by md5sum(1) for the same 46 bytes.
        assert_eq!(
            name_for_resolved(OsStr::new(EXAMPLE)).to_string_lossy(),
            ".install.netboot.rhels9.x86_64.compute.rootimg.10a8ecc8c6822c7a678c4e9297a63eac"
        );
        assert_eq!(
            name_for_resolved(OsStr::new("")).to_string_lossy(),
            ".d41d8cd98f00b204e9800998ecf8427e"
        );
    }

    #[test]
    fn example_name_matches_perl() {
        let Some(perl) = perl() else {
            return skip("perl not found");
        };
        // The name for the literal resolved path, formatted by Perl.
        let lit = perl_lines(
            &perl,
            r#"for my $f (@ARGV) { my $m = md5_hex($f); $f =~ s/\//./g; print $f . "." . $m . "\0"; }"#,
            &[OsStr::new(EXAMPLE)],
        );
        assert_eq!(lit[0], name_for_resolved(OsStr::new(EXAMPLE)).into_vec());
        assert!(lit[0].starts_with(b".install.netboot.rhels9.x86_64.compute.rootimg."));
        // The full computation (realpath included) for this host, whatever exists here.
        let full = perl_lines(&perl, PERL_NAME, &[OsStr::new(EXAMPLE)]);
        assert_eq!(full[0], lock_file_name(Path::new(EXAMPLE)).into_vec());
    }

    #[test]
    fn realpath_and_names_match_perl() {
        let Some(perl) = perl() else {
            return skip("perl not found");
        };
        let tmp = tempfile::tempdir().expect("tempdir");
        let t = std::fs::canonicalize(tmp.path()).expect("canonical");
        std::fs::create_dir_all(t.join("a/b")).expect("mkdir");
        std::fs::write(t.join("file"), b"").expect("write");
        symlink("a", t.join("la")).expect("symlink");
        symlink("a/", t.join("ls")).expect("symlink");
        symlink(t.join("a"), t.join("abs")).expect("symlink");
        symlink("nothere", t.join("dangling")).expect("symlink");
        symlink("missing/x", t.join("dangling2")).expect("symlink");
        symlink("../a", t.join("a/up")).expect("symlink");
        symlink("loop2", t.join("loop1")).expect("symlink");
        symlink("loop1", t.join("loop2")).expect("symlink");
        symlink("a", t.join("c0")).expect("symlink");
        for i in 1..=22 {
            symlink(format!("c{}", i - 1), t.join(format!("c{i}"))).expect("symlink");
        }
        let odd = OsString::from_vec(b"caf\xe9 x".to_vec());
        std::fs::create_dir(t.join(&odd)).expect("mkdir");

        let rel = [
            "a/b",
            "a/b/",
            "a/missing",
            "a/missing/",
            "a/missing/x",
            "la/b",
            "ls",
            "ls/",
            "ls/b",
            "abs/b",
            "dangling",
            "dangling2",
            "file",
            "file/",
            "file/x",
            "file/.",
            "file/..",
            "a/../a/b",
            "/a///b",
            "a/./b",
            "a/b/.",
            "a/b/..",
            "la/..",
            "a/missing/..",
            "a/missing/.",
            "a/up/b",
            "loop1",
            "loop1/x",
            "c19",
            "c20",
            "c21",
            "c22",
            "a/b/../../file/..",
        ];
        let mut paths: Vec<OsString> = rel
            .iter()
            .map(|r| {
                let mut p = t.clone().into_os_string();
                if !r.starts_with('/') {
                    p.push("/");
                }
                p.push(r);
                p
            })
            .collect();
        paths.push(t.join(&odd).join("rootimg").into_os_string());
        // Relative paths resolve against the current directory, which Perl inherits.
        for p in [
            "",
            ".",
            "xcat-imaged-no-such-dir",
            "xcat-imaged-no-such-dir/rootimg",
            "/",
            "//",
            "/..",
            "/../tmp",
            EXAMPLE,
        ] {
            paths.push(OsString::from(p));
        }
        let args: Vec<&OsStr> = paths.iter().map(OsString::as_os_str).collect();

        let want = perl_lines(&perl, PERL_REALPATH, &args);
        let names = perl_lines(&perl, PERL_NAME, &args);
        assert_eq!(want.len(), paths.len());
        let mut undef = 0;
        for ((p, want), name) in paths.iter().zip(&want).zip(&names) {
            let ours = match perl_realpath(Path::new(p)) {
                Some(r) => {
                    let mut v = b"=".to_vec();
                    v.extend_from_slice(r.as_os_str().as_bytes());
                    v
                }
                None => {
                    undef += 1;
                    b"undef".to_vec()
                }
            };
            assert_eq!(
                String::from_utf8_lossy(&ours),
                String::from_utf8_lossy(want),
                "realpath of {p:?}"
            );
            assert_eq!(
                lock_file_name(Path::new(p)).as_bytes(),
                name.as_slice(),
                "lock name of {p:?}"
            );
        }
        // The interesting cases are really there.
        assert!(undef >= 8, "{undef}");
        assert_eq!(
            lock_name(&t.join("a/missing/x")),
            ".d41d8cd98f00b204e9800998ecf8427e"
        );
        let expect_missing_last = name_for_resolved(t.join("a/missing").as_os_str());
        assert_eq!(lock_file_name(&t.join("a/missing")), expect_missing_last);
    }

    #[test]
    fn lock_dir_env() {
        assert_eq!(lock_dir_from(None), Path::new("/var/lock/xcat"));
        assert_eq!(lock_dir_from(Some("".into())), Path::new("/var/lock/xcat"));
        assert_eq!(lock_dir_from(Some("/tmp/x".into())), Path::new("/tmp/x"));
    }

    #[test]
    fn busy_message_is_xcats() {
        let e = LockError::Busy {
            pid: "4242".into(),
            path: PathBuf::from("/install/netboot/x//rootimg"),
        };
        assert_eq!(
            e.to_string(),
            "failed to acquire lock, seems there is another genimage/packimage/rmimage process 4242 running on root image dir \"/install/netboot/x//rootimg\""
        );
    }

    #[test]
    fn second_acquire_in_process_is_busy_and_file_survives() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let locks = tmp.path().join("var/lock/xcat");
        let img = tmp.path().join("img/rootimg");
        std::fs::create_dir_all(&img).expect("mkdir");
        let lock = acquire_in(&locks, &img).expect("first acquire");
        let meta = std::fs::metadata(&locks).expect("lock dir created");
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
            0o755
        );
        assert_eq!(lock.path(), locks.join(lock_file_name(&img)));
        let pid = std::process::id().to_string();
        assert_eq!(std::fs::read(lock.path()).expect("read"), pid.as_bytes());

        // A path naming the same directory differently maps to the same file.
        let alias = tmp.path().join("img/./rootimg/");
        match acquire_in(&locks, &alias) {
            Err(LockError::Busy { pid: p, path }) => {
                assert_eq!(p, pid);
                assert_eq!(path, alias);
            }
            other => panic!("expected Busy, got {other:?}"),
        }
        let lock_path = lock.path().to_path_buf();
        drop(lock);
        assert!(lock_path.exists(), "lock file is never unlinked");
        let again = acquire_in(&locks, &img).expect("free after drop");
        assert_eq!(std::fs::read(again.path()).expect("read"), pid.as_bytes());
    }

    #[test]
    fn stale_longer_pid_is_truncated() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let img = tmp.path().join("rootimg");
        let file = tmp.path().join(lock_file_name(&img));
        std::fs::write(&file, b"99999999999\nmore").expect("write");
        let lock = acquire_in(tmp.path(), &img).expect("acquire");
        assert_eq!(
            std::fs::read(lock.path()).expect("read"),
            std::process::id().to_string().as_bytes()
        );
    }

    #[test]
    fn holder_pid_is_first_line() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let f = tmp.path().join("l");
        std::fs::write(&f, b"123\n456").expect("write");
        assert_eq!(read_holder(&f), "123\n");
        std::fs::write(&f, b"").expect("write");
        assert_eq!(read_holder(&f), "");
        assert_eq!(read_holder(&tmp.path().join("missing")), "");
    }

    #[test]
    fn odd_lock_files_fail_cleanly() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let img = tmp.path().join("rootimg");
        let name = lock_file_name(&img);
        let target = tmp.path().join("target");
        std::fs::write(&target, b"keep").expect("write");
        symlink(&target, tmp.path().join(&name)).expect("symlink");
        match acquire_in(tmp.path(), &img) {
            Err(LockError::Io { path, .. }) => assert_eq!(path, tmp.path().join(&name)),
            other => panic!("expected Io, got {other:?}"),
        }
        assert_eq!(std::fs::read(&target).expect("read"), b"keep");
        std::fs::remove_file(tmp.path().join(&name)).expect("rm");
        nix::unistd::mkfifo(
            &tmp.path().join(&name),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .expect("mkfifo");
        assert!(matches!(
            acquire_in(tmp.path(), &img),
            Err(LockError::Io { .. })
        ));
    }

    /// A Perl process doing what acquire_lock_imageop does: computes the name itself, sysopen,
    /// flock(LOCK_EX|LOCK_NB), truncate, write $$, print "locked", then waits on stdin.
    const PERL_HOLDER: &str = r#"
        use Fcntl qw(:flock O_CREAT O_WRONLY);
        my ($dir, $img) = @ARGV;
        my $f = Cwd::realpath($img); my $m = md5_hex($f); $f =~ s/\//./g;
        sysopen(my $fh, "$dir/$f.$m", O_CREAT | O_WRONLY) or die "sysopen: $!";
        flock($fh, LOCK_EX | LOCK_NB) or do { print "busy\n"; exit 3 };
        truncate $fh, 0; syswrite $fh, $$;
        $| = 1; print "locked\n";
        my $ignored = <STDIN>;
    "#;

    /// A Perl process trying the lock while we hold it: prints "busy <pid in file>" or "got".
    const PERL_TRY: &str = r#"
        use Fcntl qw(:flock O_CREAT O_WRONLY);
        my ($dir, $img) = @ARGV;
        my $f = Cwd::realpath($img); my $m = md5_hex($f); $f =~ s/\//./g;
        sysopen(my $fh, "$dir/$f.$m", O_CREAT | O_WRONLY) or die "sysopen: $!";
        if (flock($fh, LOCK_EX | LOCK_NB)) { print "got\n"; exit 0 }
        open(my $r, "<", "$dir/$f.$m") or die "open: $!"; my $pid = <$r>;
        print "busy $pid\n";
    "#;

    fn spawn_perl(perl: &Path, script: &str, dir: &Path, img: &Path) -> Child {
        Command::new(perl)
            .args(["-MCwd", "-MDigest::MD5=md5_hex", "-e", script, "--"])
            .arg(dir)
            .arg(img)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn perl")
    }

    #[test]
    fn interop_with_perl_holder() {
        let Some(perl) = perl() else {
            return skip("perl not found");
        };
        let tmp = tempfile::tempdir().expect("tempdir");
        let img = tmp.path().join("netboot/rhels9/x86_64/compute/rootimg");
        std::fs::create_dir_all(&img).expect("mkdir");
        let mut child = spawn_perl(&perl, PERL_HOLDER, tmp.path(), &img);
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("read perl");
        assert_eq!(line, "locked\n");
        let result = acquire_in(tmp.path(), &img);
        drop(child.stdin.take()); // let perl exit
        let status = child.wait().expect("wait perl");
        assert!(status.success());
        match result {
            Err(e @ LockError::Busy { .. }) => {
                assert_eq!(
                    e.to_string(),
                    format!(
                        "failed to acquire lock, seems there is another genimage/packimage/rmimage process {} running on root image dir \"{}\"",
                        child.id(),
                        img.display()
                    )
                );
            }
            other => panic!("expected Busy while perl holds the lock, got {other:?}"),
        }
        // Perl has exited, so its flock is gone.
        let lock = acquire_in(tmp.path(), &img).expect("free after perl exits");
        assert_eq!(
            std::fs::read(lock.path()).expect("read"),
            std::process::id().to_string().as_bytes()
        );
    }

    #[test]
    fn interop_perl_sees_our_lock() {
        let Some(perl) = perl() else {
            return skip("perl not found");
        };
        let tmp = tempfile::tempdir().expect("tempdir");
        let img = tmp.path().join("rootimg");
        std::fs::create_dir_all(&img).expect("mkdir");
        let lock = acquire_in(tmp.path(), &img).expect("acquire");
        let out = spawn_perl(&perl, PERL_TRY, tmp.path(), &img)
            .wait_with_output()
            .expect("perl");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!("busy {}\n", std::process::id())
        );
        drop(lock);
        let out = spawn_perl(&perl, PERL_TRY, tmp.path(), &img)
            .wait_with_output()
            .expect("perl");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "got\n");
    }

    #[test]
    fn missing_parent_shares_the_empty_name() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let a = tmp.path().join("no/such/rootimg");
        let b = tmp.path().join("other/missing/rootimg");
        assert_eq!(lock_name(&a), ".d41d8cd98f00b204e9800998ecf8427e");
        let _held = acquire_in(tmp.path(), &a).expect("acquire");
        match acquire_in(tmp.path(), &b) {
            Err(LockError::Busy { path, .. }) => assert_eq!(path, b),
            other => panic!("expected Busy, got {other:?}"),
        }
    }
}
