//! The SLES backend (sles, and leap15 which xCAT maps to it): the host's zypper installs
//! into the image with `--root`, as xCAT's sles genimage does (spec §3.4.3).
//!
//! * Every call is `zypper --root <rootimg> --non-interactive --no-gpg-checks
//!   --gpg-auto-import-keys …`, with `ZYPP_LOGFILE` in the build's work directory (else every
//!   call appends to the host's `/var/log/zypper.log`) and the HOME whose `.rpmmacros` puts
//!   the rpm database in `/var/lib/rpm`, which is also created before the first package.
//! * Repositories: each pkgdir entry as `<osver>-<n>` (its `1/` and `2/` media, or the
//!   `Product-SLES`, `Module-Basesystem`, `Module-Legacy` repositories of a SLE 15 tree, as
//!   xCAT adds them), kerneldir with `-k`, then `refresh`. Stale `<osver>-*` and `otherpkg*`
//!   repositories of an earlier run are removed first.
//! * Passes: `install -l --no-recommends` per pkglist pass, `@name` entries as
//!   `install -l --no-recommends -t pattern`; removals (`remove`) before / after the pass, in
//!   the base pkglist too. `-k` swaps `kernel` for `kernel-default-<v>` and
//!   `kernel-default-base-<v>` (v = krpmver, else kernelver).
//! * otherpkgs per pass: its directories as `otherpkg<n>` (`-t plaindir` where there is no
//!   `repodata/repomd.xml`), refresh, removals, install, removals, `update` unless
//!   `--noupdate`; the otherpkgs repositories are removed at the end (they point at the
//!   management node's directories).
//! * Exit status 104 ("capability not found": a package or pattern that is in no
//!   repository) is a failure here. xCAT's genimage counts it as success, so a typo in a
//!   pkglist, or a repository zypper skipped, gave an image without the package and no error.
//! * The kernel package's own initrd run is suppressed: SUSE's `regenerate-initrd-posttrans`
//!   runs `$DRACUT` (set to `/usr/bin/true` while packages are installed), and kernel-install's
//!   dracut plugins are masked as for dnf.
//!
//! It knows zypper and the SLES layout; not tables, the host or the protocol.

use super::rpm::{self, OtherRepo, Work};
use super::sandbox::Sandbox;
use super::tree::Tree;
use super::{step_failure, Backend, Build, GenError, GenResult, Runner};
use crate::proc::StepError;
use std::path::{Path, PathBuf};

/// The SLES backend.
#[derive(Debug, Clone, Copy)]
pub struct Zypper;

/// What `$DRACUT` is while packages are installed (see the module text).
const NO_DRACUT: &str = "/usr/bin/true";

/// The global options of every call (the three after `--root` are dropped by xCAT only
/// with `--interactive`, which this engine refuses).
fn global(root: &str) -> Vec<String> {
    [
        "--root",
        root,
        "--non-interactive",
        "--no-gpg-checks",
        "--gpg-auto-import-keys",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// The pkgdir (and kerneldir) repositories: (alias, URL) and notes.
pub fn base_repos(b: &Build) -> Result<rpm::Repos, String> {
    let mut repos = Vec::new();
    let mut notes = Vec::new();
    let mut i = 0;
    let file = |p: &Path| format!("file:{}", p.display());
    for e in &b.pkgdir {
        if rpm::is_url(e) {
            repos.push((format!("{}-{i}", b.osver), e.clone()));
            i += 1;
            continue;
        }
        let dir = PathBuf::from(e);
        if !dir.is_dir() {
            notes.push(format!("The specified pkgdir {e} does not exist!"));
            continue;
        }
        let ddir = if dir.join("1").is_dir() {
            dir.join("1")
        } else {
            dir.clone()
        };
        let modules = ["Product-SLES", "Module-Basesystem", "Module-Legacy"];
        if modules.iter().all(|m| ddir.join(m).is_dir()) {
            for m in modules {
                repos.push((format!("{}-{i}-{m}", b.osver), file(&ddir.join(m))));
            }
        } else {
            repos.push((format!("{}-{i}", b.osver), file(&ddir)));
            i += 1;
            if dir.join("2").is_dir() {
                repos.push((format!("{}-{i}", b.osver), file(&dir.join("2"))));
                i += 1;
            }
        }
    }
    if b.kernelver.is_some() {
        if !b.kerneldir.is_dir() {
            return Err(format!(
                "Cannot find the directory for the kernel at {}.",
                b.kerneldir.display()
            ));
        }
        repos.push((format!("{}-kernel", b.osver), file(&b.kerneldir)));
    }
    if repos.is_empty() {
        return Err(format!(
            "Need {}/{}/{}/ available from a system that has ran copycds on {} {} or a repository URL in pkgdir",
            b.installdir.display(),
            b.osver,
            b.arch,
            b.osver,
            b.arch
        ));
    }
    Ok((repos, notes))
}

/// A pass's names split into (packages, patterns), `-k` applied to the kernel.
pub fn split_names(b: &Build, names: Vec<String>) -> (Vec<String>, Vec<String>) {
    let v = b.krpmver.as_ref().or(b.kernelver.as_ref());
    let mut pkgs = Vec::new();
    let mut patterns = Vec::new();
    for n in names {
        if let Some(p) = n.strip_prefix('@') {
            patterns.push(p.to_string());
            continue;
        }
        match v {
            Some(v) if n == "kernel" => {
                pkgs.push(format!("kernel-default-{v}"));
                pkgs.push(format!("kernel-default-base-{v}"));
            }
            Some(v) if n == "kernel-ppc64" => {
                pkgs.push(format!("kernel-ppc64-{v}"));
                pkgs.push(format!("kernel-ppc64-base-{v}"));
            }
            Some(v) if n.starts_with("kernel") => pkgs.push(format!("{n}-{v}")),
            _ => pkgs.push(n),
        }
    }
    (pkgs, patterns)
}

/// The `addrepo` arguments of an otherpkgs repository.
fn addrepo_args(o: &OtherRepo) -> Vec<String> {
    let mut a = vec!["addrepo".to_string()];
    if o.plaindir {
        a.extend(["-t".to_string(), "plaindir".to_string()]);
    }
    // zypper wants file:/abs/path; OtherRepo URLs are file:///abs/path.
    a.push(o.url.replacen("file://", "file:", 1));
    a.push(o.id.clone());
    a
}

/// How a failed install reads; exit 104 explained.
fn install_failure(what: &str, e: &StepError) -> String {
    let mut t = step_failure(&format!("zypper invocation failed ({what})"), e);
    if e.how.ends_with("exit status 104") {
        t.push_str("\nExit status 104: a package or pattern was not found in any repository. xCAT's genimage counts this as success (and builds an image without it); this engine does not: fix the list or the repositories.");
    }
    t
}

struct Cmd<'a> {
    b: &'a Build,
    sandbox: &'a Sandbox,
    work: &'a Work,
    root: String,
}

impl Cmd<'_> {
    fn env(&self, pass_env: &[(String, String)]) -> Vec<(String, String)> {
        let mut env = rpm::tool_env(self.work, self.b, pass_env);
        env.push((
            "ZYPP_LOGFILE".into(),
            self.work.path().join("zypper.log").display().to_string(),
        ));
        env.push(("DRACUT".into(), NO_DRACUT.into()));
        env
    }

    fn run(
        &self,
        r: &mut Runner,
        args: Vec<String>,
        env: &[(String, String)],
        what: &dyn Fn(&StepError) -> String,
    ) -> GenResult<()> {
        let mut a = global(&self.root);
        a.extend(args);
        let (shown, step) = rpm::tool_step(self.sandbox, "zypper", a, self.env(env), env);
        r.run(&shown, &step, what)
    }

    fn run_warn(
        &self,
        r: &mut Runner,
        args: Vec<String>,
        env: &[(String, String)],
        what: &str,
    ) -> GenResult<()> {
        match self.run(r, args, env, &|e| step_failure(what, e)) {
            Err(GenError::Failed(t)) => {
                r.warning(t);
                Ok(())
            }
            other => other,
        }
    }

    fn install(
        &self,
        r: &mut Runner,
        pkgs: &[String],
        patterns: &[String],
        env: &[(String, String)],
    ) -> GenResult<()> {
        let base = ["install", "-l", "--no-recommends"];
        if !pkgs.is_empty() {
            let mut a: Vec<String> = base.iter().map(|s| s.to_string()).collect();
            a.extend(pkgs.iter().cloned());
            let what = format!("installing {}", pkgs.join(" "));
            self.run(r, a, env, &|e| install_failure(&what, e))?;
        }
        if !patterns.is_empty() {
            let mut a: Vec<String> = base.iter().map(|s| s.to_string()).collect();
            a.extend(["-t".to_string(), "pattern".to_string()]);
            a.extend(patterns.iter().cloned());
            let what = format!("installing the patterns {}", patterns.join(" "));
            self.run(r, a, env, &|e| install_failure(&what, e))?;
        }
        Ok(())
    }

    fn remove(&self, r: &mut Runner, names: &[String], env: &[(String, String)]) -> GenResult<()> {
        if names.is_empty() {
            return Ok(());
        }
        let mut a = vec!["remove".to_string()];
        a.extend(names.iter().cloned());
        self.run_warn(r, a, env, "Removing packages failed")
    }
}

impl Zypper {
    fn steps(
        &self,
        r: &mut Runner,
        c: &Cmd,
        tree: &Tree,
        base: &[(String, String)],
        other: &[OtherRepo],
    ) -> GenResult<()> {
        let b = c.b;
        let check = |r: &mut Runner| -> GenResult<()> {
            c.sandbox.check_no_mounts().map_err(GenError::Failed)?;
            r.check()
        };
        // What an earlier run added (xCAT: rm -rf repos.d/<osver>-*.repo, rr otherpkg*).
        for n in tree.list("etc/zypp/repos.d")? {
            let ours = n.ends_with(".repo")
                && (n.starts_with(&format!("{}-", b.osver)) || n.starts_with("otherpkg"));
            if ours {
                tree.remove(&format!("etc/zypp/repos.d/{n}"))?;
            }
        }
        for (alias, url) in base {
            let url = url.clone();
            c.run(
                r,
                vec!["addrepo".into(), url.clone(), alias.clone()],
                &[],
                &|e| step_failure(&format!("Cannot add the repository {url}"), e),
            )?;
        }
        c.run(r, vec!["refresh".into()], &[], &|e| {
            step_failure("Cannot refresh the repositories", e)
        })?;
        check(r)?;
        for pass in b.pkglist.passes.values() {
            c.remove(r, &pass.pre_remove, &pass.env)?;
            let (pkgs, patterns) = split_names(b, pass.all_names());
            c.install(r, &pkgs, &patterns, &pass.env)?;
            c.remove(r, &pass.post_remove, &pass.env)?;
            check(r)?;
        }
        let mut added: Vec<String> = Vec::new();
        for (n, pass) in &b.otherpkglist.passes {
            for alias in added.drain(..) {
                c.run_warn(
                    r,
                    vec!["removerepo".into(), alias],
                    &[],
                    "Cannot remove a repository",
                )?;
            }
            for o in other.iter().filter(|o| o.pass == *n) {
                let url = o.url.clone();
                c.run(r, addrepo_args(o), &[], &|e| {
                    step_failure(&format!("Cannot add the repository {url}"), e)
                })?;
                added.push(o.id.clone());
            }
            c.run(r, vec!["refresh".into()], &[], &|e| {
                step_failure("Cannot refresh the repositories", e)
            })?;
            c.remove(r, &pass.pre_remove, &pass.env)?;
            let (pkgs, patterns) = split_names(b, pass.all_names());
            if pkgs.is_empty() && patterns.is_empty() {
                r.info("No Packages marked for install");
            }
            c.install(r, &pkgs, &patterns, &pass.env)?;
            c.remove(r, &pass.post_remove, &pass.env)?;
            if !b.noupdate {
                let a = ["update", "-l", "--no-recommends"]
                    .iter()
                    .map(|s| s.to_string())
                    .collect();
                c.run_warn(r, a, &pass.env, "Updating the packages failed")?;
            }
            check(r)?;
        }
        for alias in added {
            c.run_warn(
                r,
                vec!["removerepo".into(), alias],
                &[],
                "Cannot remove a repository",
            )?;
        }
        check(r)
    }
}

impl Backend for Zypper {
    fn tool(&self) -> &'static str {
        "zypper"
    }

    fn plan(&self, b: &Build) -> Result<Vec<String>, String> {
        let host = super::debian::host_machine();
        if b.arch != host {
            return Err(format!(
                "Building {} images on this {host} management node is not supported by this engine (no qemu-user emulation yet)",
                b.arch
            ));
        }
        let mut lines = Vec::new();
        if b.onlyinitrd {
            return Ok(lines);
        }
        if crate::proc::find_program("zypper").is_none() {
            return Err("zypper is not installed on this management node (apt-get install zypper on Debian)".into());
        }
        let (base, notes) = base_repos(b)?;
        let other = rpm::other_repos(b, "otherpkg", false)?;
        lines.extend(notes);
        if rpm::has_rpmdb(&b.rootimg) {
            lines.push(format!(
                "{} holds an rpm database: it is updated in place",
                b.rootimg.display()
            ));
        }
        let z = format!(
            "ZYPP_LOGFILE=<work>/zypper.log HOME=<work>/home zypper {}",
            global(&b.rootimg.display().to_string()).join(" ")
        );
        lines.push("rpm database: /var/lib/rpm in the image (created first; HOME/.rpmmacros: %_dbpath /var/lib/rpm)".into());
        lines.push(format!(
            "kernel packages run DRACUT={NO_DRACUT}; kernel-install's dracut plugins are masked"
        ));
        for (alias, url) in &base {
            lines.push(format!("{z} addrepo {url} {alias}"));
        }
        lines.push(format!("{z} refresh"));
        let env_shown = |env: &[(String, String)]| -> String {
            env.iter().map(|(k, v)| format!("{k}={v} ")).collect()
        };
        let install_lines =
            |lines: &mut Vec<String>, tag: &str, pkgs: &[String], pats: &[String], env: &str| {
                if !pkgs.is_empty() {
                    lines.push(format!(
                        "{tag}: {env}{z} install -l --no-recommends {}",
                        pkgs.join(" ")
                    ));
                }
                if !pats.is_empty() {
                    lines.push(format!(
                        "{tag}: {env}{z} install -l --no-recommends -t pattern {}",
                        pats.join(" ")
                    ));
                }
            };
        for (n, pass) in &b.pkglist.passes {
            let env = env_shown(&pass.env);
            let tag = format!("pass {n}");
            if !pass.pre_remove.is_empty() {
                lines.push(format!(
                    "{tag}: {env}{z} remove {}",
                    pass.pre_remove.join(" ")
                ));
            }
            let (pkgs, pats) = split_names(b, pass.all_names());
            install_lines(&mut lines, &tag, &pkgs, &pats, &env);
            if !pass.post_remove.is_empty() {
                lines.push(format!(
                    "{tag}: {env}{z} remove {}",
                    pass.post_remove.join(" ")
                ));
            }
        }
        for (n, pass) in &b.otherpkglist.passes {
            let env = env_shown(&pass.env);
            let tag = format!("otherpkgs pass {n}");
            for o in other.iter().filter(|o| o.pass == *n) {
                lines.push(format!("{tag}: {z} {}", addrepo_args(o).join(" ")));
            }
            lines.push(format!("{tag}: {z} refresh"));
            if !pass.pre_remove.is_empty() {
                lines.push(format!(
                    "{tag}: {env}{z} remove {}",
                    pass.pre_remove.join(" ")
                ));
            }
            let (pkgs, pats) = split_names(b, pass.all_names());
            install_lines(&mut lines, &tag, &pkgs, &pats, &env);
            if !pass.post_remove.is_empty() {
                lines.push(format!(
                    "{tag}: {env}{z} remove {}",
                    pass.post_remove.join(" ")
                ));
            }
            if !b.noupdate {
                lines.push(format!("{tag}: {env}{z} update -l --no-recommends"));
            }
        }
        if !other.is_empty() {
            lines.push(format!("{z} removerepo <the otherpkg repositories>"));
        }
        lines.push("exit status 104 (package not found) is a failure".into());
        Ok(lines)
    }

    fn is_bootstrapped(&self, root: &Path) -> bool {
        rpm::has_rpmdb(root)
    }

    fn bootstrap(&self, r: &mut Runner, _b: &Build, root: &Path) -> GenResult<()> {
        r.info(format!(
            "Creating the rpm database directory {} in {}",
            rpm::DBPATH,
            root.display()
        ));
        rpm::skeleton(&Tree::open(root)?)?;
        Ok(())
    }

    fn packages(&self, r: &mut Runner, b: &Build, root: &Path) -> GenResult<()> {
        let (base, notes) = base_repos(b).map_err(GenError::Failed)?;
        for n in notes {
            r.info(n);
        }
        let other = rpm::other_repos(b, "otherpkg", false).map_err(GenError::Failed)?;
        let tree = Tree::open(root)?;
        rpm::skeleton(&tree)?;
        if tree.read("etc/passwd")?.is_none() {
            // As xCAT: packages' scriptlets look up root before any passwd package came.
            tree.write("etc/passwd", b"root:x:0:0:root:/root:/bin/bash\n", 0o644)?;
        }
        let work = Work::create(&b.destdir)?;
        let sandbox = Sandbox::new(root)?;
        sandbox.prepare()?;
        let c = Cmd {
            b,
            sandbox: &sandbox,
            work: &work,
            root: sandbox.root().display().to_string(),
        };
        let masks = rpm::mask_kernel_hooks(&tree)?;
        let res = self.steps(r, &c, &tree, &base, &other);
        let unmasked = rpm::unmask_kernel_hooks(&tree, &masks);
        let mounts = sandbox.check_no_mounts();
        res?;
        unmasked?;
        mounts.map_err(GenError::Failed)
    }

    fn installed_version(&self, root: &Path, package: &str) -> Option<String> {
        rpm::installed_version(root, package)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gen::debian::tests::build;

    #[test]
    fn repositories_as_xcat_adds_them() {
        let t = tempfile::tempdir().unwrap();
        let media = t.path().join("media");
        std::fs::create_dir_all(media.join("1")).unwrap();
        std::fs::create_dir_all(media.join("2")).unwrap();
        let sle15 = t.path().join("sle15/1");
        for m in ["Product-SLES", "Module-Basesystem", "Module-Legacy"] {
            std::fs::create_dir_all(sle15.join(m)).unwrap();
        }
        let mut b = build(&[
            &media.display().to_string(),
            &t.path().join("sle15").display().to_string(),
            "http://m/sles",
            "/nonexistent/x",
        ]);
        b.osver = "sles15.5".into();
        let (repos, notes) = base_repos(&b).unwrap();
        let aliases: Vec<&str> = repos.iter().map(|(a, _)| a.as_str()).collect();
        assert_eq!(
            aliases,
            [
                "sles15.5-0",
                "sles15.5-1",
                "sles15.5-2-Product-SLES",
                "sles15.5-2-Module-Basesystem",
                "sles15.5-2-Module-Legacy",
                "sles15.5-2"
            ]
        );
        assert_eq!(repos[0].1, format!("file:{}/1", media.display()));
        assert_eq!(repos[5].1, "http://m/sles");
        assert!(notes[0].contains("/nonexistent/x does not exist"));
        b.pkgdir = vec!["/nonexistent/y".into()];
        assert!(base_repos(&b).unwrap_err().starts_with("Need "));
    }

    #[test]
    fn patterns_and_kernel_names() {
        let mut b = build(&[]);
        let names = vec!["@base".to_string(), "kernel".into(), "vim".into()];
        assert_eq!(
            split_names(&b, names.clone()),
            (
                vec!["kernel".to_string(), "vim".into()],
                vec!["base".to_string()]
            )
        );
        b.kernelver = Some("5.14.21-150500.55.39".into());
        assert_eq!(
            split_names(&b, names).0,
            [
                "kernel-default-5.14.21-150500.55.39",
                "kernel-default-base-5.14.21-150500.55.39",
                "vim"
            ]
        );
        let o = OtherRepo {
            pass: 1,
            id: "otherpkg1".into(),
            url: "file:///srv/o".into(),
            plaindir: true,
        };
        assert_eq!(
            addrepo_args(&o),
            ["addrepo", "-t", "plaindir", "file:/srv/o", "otherpkg1"]
        );
    }

    #[test]
    fn exit_104_is_explained() {
        let e = StepError {
            step: "zypper install x".into(),
            how: "failed with exit status 104".into(),
            stderr: "No provider of 'x' found.".into(),
        };
        let t = install_failure("installing x", &e);
        assert!(
            t.starts_with("zypper invocation failed (installing x)"),
            "{t}"
        );
        assert!(t.contains("xCAT's genimage counts this as success"));
    }
}
