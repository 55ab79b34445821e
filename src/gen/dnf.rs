//! The RHEL-family backend (rhels, centos, rocky, alma, ol, SL, fedora): the host's dnf
//! installs into the image with `--installroot`, as xCAT's rh genimage does for EL8+ (spec
//! §3.1 A).
//!
//! * Repositories: every directory under a local pkgdir entry that holds `repodata/`
//!   (copycds trees have `BaseOS/` and `AppStream/`), each http/ftp entry as given, and
//!   kerneldir with `-k`. They go into xCAT's `genimage.yum.conf` (`[<osver>-<arch>-<n>]`,
//!   `gpgcheck=0`, `skip_if_unavailable=True`), written to the build's work directory beside
//!   the image, never into it, and passed with `-c`; every run has `--disablerepo=*` and one
//!   `--enablerepo=` per repository, so neither the host's nor the image's own repo files
//!   (a `*-release` package's mirrors) are used. `--releasever=<major>` and
//!   `--setopt=module_platform_id=platform:el<major>` (`f<N>` for Fedora) as xCAT passes them.
//! * Passes: one `install` per pkglist pass with its `#ENV:` pairs as environment, `@group`
//!   entries as dnf takes them; `-pkg` / `--pkg` are removed before / after the pass, in the
//!   base pkglist too (xCAT ignores them there: spec §6 item 10); a pass with nothing to
//!   install runs no `install` (xCAT's fails). `-k` swaps `kernel`, `kernel-headers`,
//!   `-devel`, `-bootwrapper`, `-tools` for `<name>-<krpmver or kernelver>`.
//! * otherpkgs: `[otherpkgs<n>]` repositories per pass and directory (local and remote), and
//!   per pass `clean all`, removals, `install`, removals, then `update` unless `--noupdate`
//!   (`--exclude=kernel*` with `-k`); a failing removal or update is a warning, as in xCAT.
//! * The kernel package's own initrd run is suppressed: kernel-install's dracut plugins are
//!   masked while packages are installed (genimage builds its two initrds itself).
//! * After the packages: `clean all` (no package cache in the image), and the distribution's
//!   internet repositories in the image are disabled (xCAT's list, step 18).
//!
//! It knows dnf and the RHEL layout; not tables, the host or the protocol.

use super::rpm::{self, OtherRepo, Work};
use super::sandbox::Sandbox;
use super::tree::Tree;
use super::{step_failure, Backend, Build, GenError, GenResult, Runner};
use std::path::Path;

/// The RHEL-family backend.
#[derive(Debug, Clone, Copy)]
pub struct Dnf;

/// Name of the repository file in the work directory (xCAT's `genimage.<pid>.yum.conf`).
const CONF: &str = "genimage.yum.conf";

/// Repo files of the distributions' internet repositories that xCAT disables in the image.
const INTERNET_REPOS: &[&str] = &[
    "oracle-linux-ol8.repo",
    "oracle-linux-ol9.repo",
    "oracle-linux-ol10.repo",
    "uek-ol8.repo",
    "uek-ol9.repo",
    "uek-ol10.repo",
    "Rocky-AppStream.repo",
    "Rocky-BaseOS.repo",
    "Rocky-Extras.repo",
    "rocky.repo",
    "rocky-extras.repo",
    "CentOS-Base.repo",
    "centos.repo",
    "centos-addons.repo",
    "almalinux-ha.repo",
    "almalinux-nfv.repo",
    "almalinux-plus.repo",
    "almalinux-powertools.repo",
    "almalinux.repo",
    "almalinux-resilientstorage.repo",
    "almalinux-rt.repo",
];

/// The release of an osvers: (major, module platform): `rhels9.4` → (9, `platform:el9`),
/// `fedora40` → (40, `platform:f40`).
pub fn release(osver: &str) -> Option<(u32, String)> {
    let lower = osver.to_ascii_lowercase();
    let fedora = lower.starts_with("fedora");
    let digits: String = lower
        .chars()
        .skip_while(|c| !c.is_ascii_digit())
        .take_while(|c| c.is_ascii_digit())
        .collect();
    let major: u32 = digits.parse().ok()?;
    let platform = if fedora {
        format!("platform:f{major}")
    } else {
        format!("platform:el{major}")
    };
    Some((major, platform))
}

/// The repositories of pkgdir (and kerneldir with `-k`): (id, baseurl) and notes.
pub fn base_repos(b: &Build) -> Result<rpm::Repos, String> {
    let mut urls = Vec::new();
    let mut notes = Vec::new();
    let mut dirs: Vec<&Path> = Vec::new();
    for e in &b.pkgdir {
        if rpm::is_url(e) {
            urls.push(e.clone());
        } else {
            dirs.push(Path::new(e));
        }
    }
    if b.kernelver.is_some() {
        dirs.push(&b.kerneldir);
    }
    for d in dirs {
        let found = rpm::find_repos(d);
        if found.is_empty() {
            notes.push(format!(
                "The repository for {} should be created before running the genimge. Try to run [createrepo {}].",
                d.display(),
                d.display()
            ));
        }
        urls.extend(found.iter().map(|p| format!("file://{}", p.display())));
    }
    if urls.is_empty() {
        return Err(format!(
            "Need {}/{}/{}/ available from a system that has ran copycds on {} {} or correct web repo",
            b.installdir.display(),
            b.osver,
            b.arch,
            b.osver,
            b.arch
        ));
    }
    let repos = urls
        .into_iter()
        .enumerate()
        .map(|(i, u)| (format!("{}-{}-{i}", b.osver, b.arch), u))
        .collect();
    Ok((repos, notes))
}

/// The text of `genimage.yum.conf`.
pub fn conf_text(base: &[(String, String)], other: &[OtherRepo]) -> String {
    let mut t = String::from("# written by xcat-imaged genimage for this build only\n");
    let all = base
        .iter()
        .map(|(i, u)| (i.as_str(), u.as_str()))
        .chain(other.iter().map(|o| (o.id.as_str(), o.url.as_str())));
    for (id, url) in all {
        t.push_str(&format!(
            "[{id}]\nname={id}\nbaseurl={url}\ngpgcheck=0\nskip_if_unavailable=True\n\n"
        ));
    }
    t
}

/// Applies `-k` to the kernel packages of a pass.
pub fn kernel_names(b: &Build, names: Vec<String>) -> Vec<String> {
    let Some(v) = b.krpmver.as_ref().or(b.kernelver.as_ref()) else {
        return names;
    };
    names
        .into_iter()
        .map(|n| {
            let kernelish = matches!(
                n.as_str(),
                "kernel"
                    | "kernel-headers"
                    | "kernel-devel"
                    | "kernel-bootwrapper"
                    | "kernel-tools"
            );
            if kernelish {
                format!("{n}-{v}")
            } else {
                n
            }
        })
        .collect()
}

/// What one build runs dnf with.
struct Cmd<'a> {
    b: &'a Build,
    sandbox: &'a Sandbox,
    work: &'a Work,
    conf: String,
    root: String,
    base_ids: Vec<String>,
}

impl Cmd<'_> {
    /// `dnf -y -c CONF --installroot=ROOT/ --disablerepo=* --enablerepo=… --releasever …`
    fn args(&self, extra_ids: &[&str], verb: &[&str], names: &[String]) -> Vec<String> {
        prefix(self.b, &self.conf, &self.root, &self.base_ids, extra_ids)
            .into_iter()
            .chain(verb.iter().map(|s| s.to_string()))
            .chain(names.iter().cloned())
            .collect()
    }

    fn run(
        &self,
        r: &mut Runner,
        extra_ids: &[&str],
        verb: &[&str],
        names: &[String],
        env: &[(String, String)],
        what: &str,
    ) -> GenResult<()> {
        let (shown, step) = rpm::tool_step(
            self.sandbox,
            "dnf",
            self.args(extra_ids, verb, names),
            rpm::tool_env(self.work, self.b, env),
            env,
        );
        r.run(&shown, &step, |e| step_failure(what, e))
    }

    /// A run whose failure xCAT ignores: a warning.
    fn run_warn(
        &self,
        r: &mut Runner,
        extra_ids: &[&str],
        verb: &[&str],
        names: &[String],
        env: &[(String, String)],
        what: &str,
    ) -> GenResult<()> {
        match self.run(r, extra_ids, verb, names, env, what) {
            Err(GenError::Failed(t)) => {
                r.warning(t);
                Ok(())
            }
            other => other,
        }
    }
}

fn prefix(
    b: &Build,
    conf: &str,
    root: &str,
    base_ids: &[String],
    extra_ids: &[&str],
) -> Vec<String> {
    let mut a = vec![
        "-y".to_string(),
        "-c".into(),
        conf.to_string(),
        format!("--installroot={root}/"),
        "--disablerepo=*".into(),
    ];
    for id in base_ids
        .iter()
        .map(String::as_str)
        .chain(extra_ids.iter().copied())
    {
        a.push(format!("--enablerepo={id}"));
    }
    if let Some((major, platform)) = release(&b.osver) {
        a.push(format!("--releasever={major}"));
        a.push(format!("--setopt=module_platform_id={platform}"));
    }
    a
}

fn env_shown(env: &[(String, String)]) -> String {
    env.iter().map(|(k, v)| format!("{k}={v} ")).collect()
}

impl Dnf {
    fn steps(&self, r: &mut Runner, c: &Cmd, other: &[OtherRepo]) -> GenResult<()> {
        let b = c.b;
        let check = |r: &mut Runner| -> GenResult<()> {
            c.sandbox.check_no_mounts().map_err(GenError::Failed)?;
            r.check()
        };
        for pass in b.pkglist.passes.values() {
            if !pass.pre_remove.is_empty() {
                c.run_warn(
                    r,
                    &[],
                    &["remove"],
                    &pass.pre_remove,
                    &pass.env,
                    "Removing packages failed",
                )?;
            }
            let names = kernel_names(b, pass.all_names());
            if !names.is_empty() {
                c.run(
                    r,
                    &[],
                    &["install"],
                    &names,
                    &pass.env,
                    &format!(
                        "RPM package manager invocation failed (installing {})",
                        names.join(" ")
                    ),
                )?;
            }
            if !pass.post_remove.is_empty() {
                c.run_warn(
                    r,
                    &[],
                    &["remove"],
                    &pass.post_remove,
                    &pass.env,
                    "Removing packages failed",
                )?;
            }
            check(r)?;
        }
        for (n, pass) in &b.otherpkglist.passes {
            let ids: Vec<&str> = other
                .iter()
                .filter(|o| o.pass == *n)
                .map(|o| o.id.as_str())
                .collect();
            c.run(r, &ids, &["clean", "all"], &[], &[], "dnf clean all failed")?;
            if !pass.pre_remove.is_empty() {
                c.run_warn(
                    r,
                    &ids,
                    &["remove"],
                    &pass.pre_remove,
                    &pass.env,
                    "Removing packages failed",
                )?;
            }
            let names = pass.all_names();
            if names.is_empty() {
                r.info("No Packages marked for install");
            } else {
                c.run(
                    r,
                    &ids,
                    &["install"],
                    &names,
                    &pass.env,
                    &format!(
                        "RPM package manager invocation failed (installing {})",
                        names.join(" ")
                    ),
                )?;
            }
            if !pass.post_remove.is_empty() {
                c.run_warn(
                    r,
                    &ids,
                    &["remove"],
                    &pass.post_remove,
                    &pass.env,
                    "Removing packages failed",
                )?;
            }
            if !b.noupdate {
                let verb: &[&str] = if b.kernelver.is_some() {
                    &["--exclude=kernel*", "update"]
                } else {
                    &["update"]
                };
                c.run_warn(
                    r,
                    &ids,
                    verb,
                    &[],
                    &pass.env,
                    "Updating the packages failed",
                )?;
            }
            check(r)?;
        }
        c.run_warn(r, &[], &["clean", "all"], &[], &[], "dnf clean all failed")?;
        check(r)
    }
}

/// Disables the distribution's internet repositories in the image (`enabled=1` → `0`).
fn disable_internet_repos(tree: &Tree) -> std::io::Result<Vec<String>> {
    let mut changed = Vec::new();
    for f in INTERNET_REPOS {
        let p = format!("etc/yum.repos.d/{f}");
        let Some(data) = tree.read(&p)? else { continue };
        let text = String::from_utf8_lossy(&data);
        let new: String = text
            .split_inclusive('\n')
            .map(|l| {
                let compact: String = l.chars().filter(|c| !c.is_whitespace()).collect();
                if compact == "enabled=1" {
                    "enabled=0\n".to_string()
                } else {
                    l.to_string()
                }
            })
            .collect();
        if new != text {
            let mode = tree.lstat(&p)?.map_or(0o644, |(_, st)| st.st_mode & 0o7777);
            tree.write(&p, new.as_bytes(), mode)?;
            changed.push(p);
        }
    }
    Ok(changed)
}

impl Backend for Dnf {
    fn tool(&self) -> &'static str {
        "dnf"
    }

    fn plan(&self, b: &Build) -> Result<Vec<String>, String> {
        let host = super::debian::host_machine();
        let norm = |a: &str| {
            if a == "x86" {
                "i686".to_string()
            } else {
                a.to_string()
            }
        };
        if norm(&b.arch) != host {
            return Err(format!(
                "Building {} images on this {host} management node is not supported by this engine (no qemu-user emulation yet)",
                b.arch
            ));
        }
        let mut lines = Vec::new();
        if b.onlyinitrd {
            return Ok(lines);
        }
        if crate::proc::find_program("dnf").is_none() {
            return Err(
                "dnf is not installed on this management node (apt-get install dnf on Debian)"
                    .into(),
            );
        }
        let (base, notes) = base_repos(b)?;
        let other = rpm::other_repos(b, "otherpkgs", true)?;
        lines.extend(notes);
        if rpm::has_rpmdb(&b.rootimg) {
            lines.push(format!(
                "{} holds an rpm database: it is updated in place",
                b.rootimg.display()
            ));
        }
        let conf = b.destdir.join(".genimage-rpm.<pid>").join(CONF);
        lines.push(format!(
            "repositories ({}, outside the image):",
            conf.display()
        ));
        for l in conf_text(&base, &other)
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            lines.push(format!("  {l}"));
        }
        let ids: Vec<String> = base.iter().map(|(i, _)| i.clone()).collect();
        let root = b.rootimg.display().to_string();
        let show = |extra: &[&str], rest: &str| {
            format!(
                "HOME=<work>/home dnf {} {rest}",
                prefix(b, &conf.display().to_string(), &root, &ids, extra).join(" ")
            )
        };
        lines.push(
            "rpm database: /var/lib/rpm in the image (HOME/.rpmmacros: %_dbpath /var/lib/rpm)"
                .into(),
        );
        lines
            .push("kernel-install's dracut plugins are masked while packages are installed".into());
        for (n, pass) in &b.pkglist.passes {
            let env = env_shown(&pass.env);
            if !pass.pre_remove.is_empty() {
                lines.push(format!(
                    "pass {n}: {env}{}",
                    show(&[], &format!("remove {}", pass.pre_remove.join(" ")))
                ));
            }
            let names = kernel_names(b, pass.all_names());
            if !names.is_empty() {
                lines.push(format!(
                    "pass {n}: {env}{}",
                    show(&[], &format!("install {}", names.join(" ")))
                ));
            }
            if !pass.post_remove.is_empty() {
                lines.push(format!(
                    "pass {n}: {env}{}",
                    show(&[], &format!("remove {}", pass.post_remove.join(" ")))
                ));
            }
        }
        for (n, pass) in &b.otherpkglist.passes {
            let ids: Vec<&str> = other
                .iter()
                .filter(|o| o.pass == *n)
                .map(|o| o.id.as_str())
                .collect();
            let env = env_shown(&pass.env);
            lines.push(format!("otherpkgs pass {n}: {}", show(&ids, "clean all")));
            if !pass.pre_remove.is_empty() {
                lines.push(format!(
                    "otherpkgs pass {n}: {env}{}",
                    show(&ids, &format!("remove {}", pass.pre_remove.join(" ")))
                ));
            }
            lines.push(format!(
                "otherpkgs pass {n}: {env}{}",
                show(&ids, &format!("install {}", pass.all_names().join(" ")))
            ));
            if !pass.post_remove.is_empty() {
                lines.push(format!(
                    "otherpkgs pass {n}: {env}{}",
                    show(&ids, &format!("remove {}", pass.post_remove.join(" ")))
                ));
            }
            if !b.noupdate {
                lines.push(format!("otherpkgs pass {n}: {}", show(&ids, "update")));
            }
        }
        lines.push(show(&[], "clean all"));
        Ok(lines)
    }

    fn is_bootstrapped(&self, root: &Path) -> bool {
        rpm::has_rpmdb(root)
    }

    fn bootstrap(&self, r: &mut Runner, _b: &Build, root: &Path) -> GenResult<()> {
        r.info(format!(
            "Creating the rpm database directory {DB} in {}",
            root.display(),
            DB = rpm::DBPATH
        ));
        rpm::skeleton(&Tree::open(root)?)?;
        Ok(())
    }

    fn packages(&self, r: &mut Runner, b: &Build, root: &Path) -> GenResult<()> {
        let (base, notes) = base_repos(b).map_err(GenError::Failed)?;
        for n in notes {
            r.info(n);
        }
        let other = rpm::other_repos(b, "otherpkgs", true).map_err(GenError::Failed)?;
        let tree = Tree::open(root)?;
        rpm::skeleton(&tree)?;
        let work = Work::create(&b.destdir)?;
        let conf = work.path().join(CONF);
        std::fs::write(&conf, conf_text(&base, &other))?;
        let sandbox = Sandbox::new(root)?;
        sandbox.prepare()?;
        let c = Cmd {
            b,
            sandbox: &sandbox,
            work: &work,
            conf: conf.display().to_string(),
            root: sandbox.root().display().to_string(),
            base_ids: base.iter().map(|(i, _)| i.clone()).collect(),
        };
        let masks = rpm::mask_kernel_hooks(&tree)?;
        let res = self.steps(r, &c, &other);
        let unmasked = rpm::unmask_kernel_hooks(&tree, &masks);
        let mounts = sandbox.check_no_mounts();
        res?;
        unmasked?;
        mounts.map_err(GenError::Failed)?;
        for p in disable_internet_repos(&tree)? {
            r.info(format!(
                "Disabled the internet repositories of {}",
                tree.shown(&p)
            ));
        }
        Ok(())
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
    fn releases() {
        assert_eq!(release("rhels9.4"), Some((9, "platform:el9".into())));
        assert_eq!(release("rocky8.10"), Some((8, "platform:el8".into())));
        assert_eq!(release("alma10"), Some((10, "platform:el10".into())));
        assert_eq!(release("fedora40"), Some((40, "platform:f40".into())));
        assert_eq!(release("centos-stream"), None);
    }

    #[test]
    fn repositories_and_config() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("BaseOS/repodata")).unwrap();
        let mut b = build(&[&t.path().display().to_string(), "http://m/el9/AppStream"]);
        b.osver = "rhels9.4".into();
        let (repos, notes) = base_repos(&b).unwrap();
        assert!(notes.is_empty());
        assert_eq!(
            repos,
            [
                (
                    "rhels9.4-x86_64-0".to_string(),
                    "http://m/el9/AppStream".to_string()
                ),
                (
                    "rhels9.4-x86_64-1".to_string(),
                    format!("file://{}/BaseOS", t.path().display())
                )
            ]
        );
        let text = conf_text(&repos[..1], &[]);
        assert!(text.contains(
            "[rhels9.4-x86_64-0]\nname=rhels9.4-x86_64-0\nbaseurl=http://m/el9/AppStream\ngpgcheck=0\nskip_if_unavailable=True\n"
        ));
        let b2 = build(&["/nonexistent/install/rhels9.4/x86_64"]);
        let e = base_repos(&b2).unwrap_err();
        assert!(
            e.starts_with("Need /nonexistent/debian12/x86_64/ available"),
            "{e}"
        );
        let p = prefix(&b, "/w/c", "/r", &["a".into()], &["o1"]);
        assert_eq!(
            p,
            [
                "-y",
                "-c",
                "/w/c",
                "--installroot=/r/",
                "--disablerepo=*",
                "--enablerepo=a",
                "--enablerepo=o1",
                "--releasever=9",
                "--setopt=module_platform_id=platform:el9"
            ]
        );
    }

    #[test]
    fn kernel_versions() {
        let mut b = build(&[]);
        let names = vec![
            "kernel".to_string(),
            "kernel-devel".into(),
            "kernelx".into(),
            "bash".into(),
        ];
        assert_eq!(kernel_names(&b, names.clone()), names);
        b.kernelver = Some("5.14.0-427.el9.x86_64".into());
        assert_eq!(
            kernel_names(&b, names.clone()),
            [
                "kernel-5.14.0-427.el9.x86_64",
                "kernel-devel-5.14.0-427.el9.x86_64",
                "kernelx",
                "bash"
            ]
        );
        b.krpmver = Some("5.14.0-427.el9".into());
        assert_eq!(kernel_names(&b, names)[0], "kernel-5.14.0-427.el9");
    }

    #[test]
    fn internet_repositories_are_disabled() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("etc/yum.repos.d")).unwrap();
        std::fs::write(
            t.path().join("etc/yum.repos.d/rocky.repo"),
            "[baseos]\nenabled = 1\ngpgcheck=1\n",
        )
        .unwrap();
        std::fs::write(
            t.path().join("etc/yum.repos.d/local.repo"),
            "[l]\nenabled=1\n",
        )
        .unwrap();
        let tree = Tree::open(t.path()).unwrap();
        assert_eq!(
            disable_internet_repos(&tree).unwrap(),
            ["etc/yum.repos.d/rocky.repo"]
        );
        assert_eq!(
            std::fs::read_to_string(t.path().join("etc/yum.repos.d/rocky.repo")).unwrap(),
            "[baseos]\nenabled=0\ngpgcheck=1\n"
        );
        assert_eq!(
            std::fs::read_to_string(t.path().join("etc/yum.repos.d/local.repo")).unwrap(),
            "[l]\nenabled=1\n"
        );
    }
}
