//! What the two RPM backends (dnf for the RHEL family, zypper for SLES) share: the build's
//! work directory outside the image, the rpm database location, rpm queries, repository
//! discovery in pkgdir and otherpkgdir, and the masks that keep a kernel package from
//! building its own initrd while the image is made.
//!
//! The rpm database: the build host's rpm reads the host's macros even with `--root`, and
//! Debian's rpm keeps its database in `~/.rpmdb`, so an install would put the image's
//! database in `<rootimg>/root/.rpmdb` where no node looks. Every dnf, zypper and rpm run of
//! a build therefore gets `HOME=<work>/home`, whose `.rpmmacros` says
//! `%_dbpath /var/lib/rpm` (the path EL and SLES use), and queries pass `--dbpath` too.
//!
//! It knows rpm, repository layouts and kernel-install; not tables or the host.

use super::pkglist::PackageList;
use super::sandbox::Sandbox;
use super::tree::{Kind, Tree};
use super::Build;
use crate::proc::{self, Step};
use std::io;
use std::path::{Path, PathBuf};

/// Where the image's rpm database lives.
pub const DBPATH: &str = "/var/lib/rpm";

/// The build-time directory beside the image (`<rootimgdir>/.genimage-rpm.<pid>`): the
/// HOME with `.rpmmacros`, the dnf configuration, zypper's log. Removed when dropped.
pub struct Work {
    dir: PathBuf,
}

impl Work {
    /// Creates the work directory in `destdir`, removing what a killed earlier run left.
    pub fn create(destdir: &Path) -> io::Result<Work> {
        for e in std::fs::read_dir(destdir)?.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if n.starts_with(".genimage-rpm.") {
                let _ = crate::fs::remove::remove_tree(&e.path(), &|| false);
            }
        }
        let dir = destdir.join(format!(".genimage-rpm.{}", std::process::id()));
        std::fs::create_dir(&dir)?;
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
        let w = Work { dir };
        std::fs::create_dir(w.home())?;
        std::fs::write(w.home().join(".rpmmacros"), format!("%_dbpath {DBPATH}\n"))?;
        Ok(w)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// HOME for rpm, dnf and zypper.
    pub fn home(&self) -> PathBuf {
        self.dir.join("home")
    }
}

impl Drop for Work {
    fn drop(&mut self) {
        let _ = crate::fs::remove::remove_tree(&self.dir, &|| false);
    }
}

/// The environment of every package-tool run: HOME (the rpm database macro), the engine's
/// proxy settings, `osimage.environvar`, then the pass's `#ENV:` pairs.
pub fn tool_env(work: &Work, b: &Build, pass_env: &[(String, String)]) -> Vec<(String, String)> {
    let mut env = vec![("HOME".to_string(), work.home().display().to_string())];
    for k in [
        "http_proxy",
        "https_proxy",
        "ftp_proxy",
        "no_proxy",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "NO_PROXY",
    ] {
        if let Ok(v) = std::env::var(k) {
            env.push((k.to_string(), v));
        }
    }
    env.extend(b.env.iter().cloned());
    env.extend(pass_env.iter().cloned());
    env
}

/// A host program working on the image (with the image's proc, sys and dev mounted in its
/// own namespaces), and how it is announced: the pass's `#ENV:` pairs, then the command.
pub fn tool_step(
    sandbox: &Sandbox,
    prog: &str,
    args: Vec<String>,
    env: Vec<(String, String)>,
    shown_env: &[(String, String)],
) -> (String, Step) {
    let mut step = Step::new(prog, args).isolated(sandbox.image_mounts());
    step.env = env;
    let mut shown = String::new();
    for (k, v) in shown_env {
        shown.push_str(&format!("{k}={v} "));
    }
    shown.push_str(&step.display());
    (shown, step)
}

/// A repository: (id or alias, URL).
pub type Repo = (String, String);

/// The repositories of pkgdir, with notes for the admin.
pub type Repos = (Vec<Repo>, Vec<String>);

/// Whether `s` names a remote repository.
pub fn is_url(s: &str) -> bool {
    ["http://", "https://", "ftp://"]
        .iter()
        .any(|p| s.starts_with(p))
}

/// Every directory under `dir` (itself included) that holds `repodata/`, sorted; as
/// xCAT's rh genimage finds repositories in a copycds tree.
pub fn find_repos(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = walkdir::WalkDir::new(dir)
        .follow_links(true)
        .max_depth(8)
        .into_iter()
        .filter_entry(|e| e.file_name() != "repodata")
        .flatten()
        .filter(|e| e.file_type().is_dir() && e.path().join("repodata").is_dir())
        .map(|e| e.path().to_path_buf())
        .collect();
    out.sort();
    out
}

/// Whether `root` holds an rpm database (a system to update in place).
pub fn has_rpmdb(root: &Path) -> bool {
    ["var/lib/rpm", "usr/lib/sysimage/rpm"].iter().any(|d| {
        ["rpmdb.sqlite", "Packages", "Packages.db"]
            .iter()
            .any(|f| root.join(d).join(f).is_file())
    })
}

/// `rpm --root <root> --dbpath /var/lib/rpm <args>` run by the host's rpm (read-only
/// queries), in private namespaces.
pub fn query(root: &Path, args: &[&str]) -> Option<String> {
    if !has_rpmdb(root) {
        return None;
    }
    let mut a = vec![
        "--root".to_string(),
        root.display().to_string(),
        "--dbpath".into(),
        DBPATH.into(),
    ];
    a.extend(args.iter().map(|s| s.to_string()));
    proc::run(&Step::new("rpm", a).isolated(Sandbox::host_side())).ok()
}

/// The installed `VERSION-RELEASE` of `package` in `root`.
pub fn installed_version(root: &Path, package: &str) -> Option<String> {
    query(root, &["-q", "--qf", "%{VERSION}-%{RELEASE}\\n", package])
        .and_then(|o| o.lines().next().map(str::to_string))
        .filter(|v| !v.is_empty())
}

/// One otherpkgs repository: the pass it serves, its id, its URL, whether it is a plain
/// directory of RPMs (no `repodata/`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtherRepo {
    /// Pass number of the otherpkglist.
    pub pass: u32,
    /// Repository id / alias.
    pub id: String,
    /// `file:///...` or a remote URL.
    pub url: String,
    /// A directory without repository metadata.
    pub plaindir: bool,
}

/// The otherpkgdir entries: (at most one local directory, URLs).
pub fn split_otherpkgdir(b: &Build) -> Result<(Option<PathBuf>, Vec<String>), String> {
    let mut local = None;
    let mut urls = Vec::new();
    for e in b
        .otherpkgdir
        .iter()
        .map(|e| e.trim())
        .filter(|e| !e.is_empty())
    {
        if is_url(e) {
            urls.push(e.trim_end_matches('/').to_string());
        } else if local.replace(PathBuf::from(e)).is_some() {
            return Err("genimage: at most only 1 local dir in otherpkgdir is supported.".into());
        }
    }
    Ok((local, urls))
}

/// The repositories of every otherpkglist pass: per pass, per directory key, the local
/// `<otherpkgdir>/<key>` and `<url>/<key>` for each remote otherpkgdir entry (xCAT's rh
/// scheme; zypper uses the local ones only). Ids are `<prefix><n>`, numbered from 1.
pub fn other_repos(b: &Build, prefix: &str, with_urls: bool) -> Result<Vec<OtherRepo>, String> {
    let (local, urls) = split_otherpkgdir(b)?;
    let mut out = Vec::new();
    let mut n = 0;
    for (pass, p) in &b.otherpkglist.passes {
        for (key, _) in &p.install {
            if key.starts_with('/') || key.split('/').any(|c| c == "..") {
                return Err(format!(
                    "otherpkglist entry directory {key} must be relative to otherpkgdir, without .."
                ));
            }
            let mut add = |url: String, plaindir: bool| {
                n += 1;
                out.push(OtherRepo {
                    pass: *pass,
                    id: format!("{prefix}{n}"),
                    url,
                    plaindir,
                });
            };
            if with_urls {
                for u in &urls {
                    add(
                        if key == "." {
                            u.clone()
                        } else {
                            format!("{u}/{key}")
                        },
                        false,
                    );
                }
            }
            if let Some(dir) = &local {
                let d = if key == "." {
                    dir.clone()
                } else {
                    dir.join(key)
                };
                if d.is_dir() {
                    let plain = !d.join("repodata/repomd.xml").is_file();
                    add(format!("file://{}", d.display()), plain);
                }
            }
        }
    }
    Ok(out)
}

/// Names of a list's passes that are package groups / patterns (`@name`).
pub fn groups(list: &PackageList) -> Vec<String> {
    list.passes
        .values()
        .flat_map(|p| p.all_names())
        .filter(|n| n.starts_with('@'))
        .collect()
}

/// kernel-install plugins that build an initrd when a kernel package is installed (EL8+,
/// Fedora, SLES 16). Masked with a `/dev/null` link in `/etc/kernel/install.d` while the
/// packages are installed, since genimage builds its two initrds itself.
const KERNEL_HOOKS: &[&str] = &["50-dracut.install", "51-dracut-rescue.install"];

/// Masks the kernel-install dracut plugins that the image does not mask itself; returns
/// the masks made (for [`unmask_kernel_hooks`]).
pub fn mask_kernel_hooks(tree: &Tree) -> io::Result<Vec<String>> {
    tree.mkdir_all("etc/kernel/install.d", 0o755)?;
    let mut made = Vec::new();
    for h in KERNEL_HOOKS {
        let p = format!("etc/kernel/install.d/{h}");
        if tree.kind(&p)?.is_none() {
            tree.symlink("/dev/null", &p)?;
            made.push(p);
        }
    }
    Ok(made)
}

/// Removes the masks [`mask_kernel_hooks`] made (only links to `/dev/null`).
pub fn unmask_kernel_hooks(tree: &Tree, made: &[String]) -> io::Result<()> {
    for p in made {
        if tree.kind(p)? == Some(Kind::Symlink) {
            let target = std::fs::read_link(tree.root().join(p)).unwrap_or_default();
            if target == Path::new("/dev/null") {
                tree.remove(p)?;
            }
        }
    }
    for d in ["etc/kernel/install.d", "etc/kernel"] {
        if tree.list(d)?.is_empty() {
            let _ = tree.rmdir(d);
        }
    }
    Ok(())
}

/// The directories and files every RPM-based install needs before the first package:
/// the database directory (so rpm and libzypp put the database there), `/tmp` and
/// `/var/tmp` for scriptlets, and xCAT's dummy fstab line for rpm scriptlets to see.
pub fn skeleton(tree: &Tree) -> io::Result<()> {
    tree.mkdir_all(DBPATH.trim_start_matches('/'), 0o755)?;
    for d in ["tmp", "var/tmp"] {
        tree.mkdir_all(d, 0o1777)?;
    }
    tree.mkdir_all("etc", 0o755)?;
    let fstab = tree.read("etc/fstab")?.unwrap_or_default();
    if fstab.is_empty() {
        tree.write(
            "etc/fstab",
            b"#Dummy fstab for rpm postscripts to see\n",
            0o644,
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gen::debian::tests::build;
    use crate::gen::pkglist::Pass;

    #[test]
    fn repositories_in_a_copycds_tree() {
        let t = tempfile::tempdir().unwrap();
        for d in [
            "BaseOS/repodata",
            "AppStream/repodata",
            "images",
            "x/y/z/repodata",
        ] {
            std::fs::create_dir_all(t.path().join(d)).unwrap();
        }
        assert_eq!(
            find_repos(t.path()),
            [
                t.path().join("AppStream"),
                t.path().join("BaseOS"),
                t.path().join("x/y/z")
            ]
        );
        assert!(find_repos(&t.path().join("images")).is_empty());
        assert!(is_url("http://x") && is_url("ftp://x") && !is_url("/x"));
    }

    #[test]
    fn otherpkgs_repositories_per_pass() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("xcat/repodata")).unwrap();
        std::fs::write(t.path().join("xcat/repodata/repomd.xml"), "").unwrap();
        std::fs::create_dir_all(t.path().join("plain")).unwrap();
        let mut b = build(&[]);
        b.otherpkgdir = vec![t.path().display().to_string(), "http://m/other/".into()];
        let mut p1 = Pass::default();
        p1.install.push(("xcat".into(), vec!["a".into()]));
        let mut p2 = Pass::default();
        p2.install.push(("plain".into(), vec!["b".into()]));
        p2.install.push(("missing".into(), vec!["c".into()]));
        b.otherpkglist.passes.insert(1, p1);
        b.otherpkglist.passes.insert(2, p2);
        let r = other_repos(&b, "otherpkgs", true).unwrap();
        let got: Vec<(u32, &str, &str, bool)> = r
            .iter()
            .map(|o| (o.pass, o.id.as_str(), o.url.as_str(), o.plaindir))
            .collect();
        let x = format!("file://{}/xcat", t.path().display());
        let p = format!("file://{}/plain", t.path().display());
        assert_eq!(
            got,
            [
                (1, "otherpkgs1", "http://m/other/xcat", false),
                (1, "otherpkgs2", x.as_str(), false),
                (2, "otherpkgs3", "http://m/other/plain", false),
                (2, "otherpkgs4", p.as_str(), true),
                (2, "otherpkgs5", "http://m/other/missing", false),
            ]
        );
        let r = other_repos(&b, "otherpkg", false).unwrap();
        assert_eq!(r.len(), 2);
        b.otherpkgdir.push("/second".into());
        assert!(other_repos(&b, "o", true)
            .unwrap_err()
            .contains("at most only 1 local dir"));
    }

    #[test]
    fn kernel_hook_masks_come_and_go() {
        let t = tempfile::tempdir().unwrap();
        let tree = Tree::open(t.path()).unwrap();
        std::fs::create_dir_all(t.path().join("etc/kernel/install.d")).unwrap();
        // The image's own mask of the rescue plugin stays.
        std::os::unix::fs::symlink(
            "/dev/null",
            t.path()
                .join("etc/kernel/install.d/51-dracut-rescue.install"),
        )
        .unwrap();
        let made = mask_kernel_hooks(&tree).unwrap();
        assert_eq!(made, ["etc/kernel/install.d/50-dracut.install"]);
        unmask_kernel_hooks(&tree, &made).unwrap();
        assert_eq!(
            tree.list("etc/kernel/install.d").unwrap(),
            ["51-dracut-rescue.install"]
        );
        std::fs::remove_file(
            t.path()
                .join("etc/kernel/install.d/51-dracut-rescue.install"),
        )
        .unwrap();
        let made = mask_kernel_hooks(&tree).unwrap();
        assert_eq!(made.len(), 2);
        unmask_kernel_hooks(&tree, &made).unwrap();
        assert!(!t.path().join("etc/kernel").exists());
    }

    #[test]
    fn skeleton_and_work_dir() {
        let t = tempfile::tempdir().unwrap();
        let tree = Tree::open(t.path()).unwrap();
        skeleton(&tree).unwrap();
        assert!(t.path().join("var/lib/rpm").is_dir());
        assert!(!has_rpmdb(t.path()));
        std::fs::write(t.path().join("var/lib/rpm/rpmdb.sqlite"), "").unwrap();
        assert!(has_rpmdb(t.path()));
        assert_eq!(
            std::fs::read_to_string(t.path().join("etc/fstab")).unwrap(),
            "#Dummy fstab for rpm postscripts to see\n"
        );
        let w = Work::create(t.path()).unwrap();
        let p = w.path().to_path_buf();
        assert_eq!(
            std::fs::read_to_string(w.home().join(".rpmmacros")).unwrap(),
            "%_dbpath /var/lib/rpm\n"
        );
        drop(w);
        assert!(!p.exists());
    }
}
