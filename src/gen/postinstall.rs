//! The admin's postinstall scripts: run as programs, with xCAT's arguments and `IMG_*`
//! environment.
//!
//! Each entry of `linuximage.postinstall` is `script [args...]` (arguments as rh's genimage
//! supports them; ubuntu's takes the whole entry as the path: spec §6 item 12). The script is
//! run directly (it has a shebang), never through a shell, with
//! `<rootimg> <osver> <arch> <profile> [args...]` and `IMG_ARCH`, `IMG_NAME`, `IMG_OSVER`,
//! `IMG_KERNELVERSION`, `IMG_PROFILE`, `IMG_PKGLIST`, `IMG_PKGDIR`, `IMG_OTHERPKGLIST`,
//! `IMG_OTHERPKGDIR`, `IMG_ROOTIMGDIR` (each only when not empty; the last is the rootimg
//! directory, as in xCAT), plus `osimage.environvar`. It runs on the host side in private
//! mount and PID namespaces: a mount it makes (xCAT issue #1936) goes away with it, and so
//! does anything it leaves running. A script that is not executable, or fails, stops the
//! build with its output already shown.
//!
//! It knows the script protocol; not tables or the host.

use super::sandbox::Sandbox;
use super::{step_failure, Build, GenResult, Runner, Script};
use crate::proc::Step;

/// The environment xCAT gives postinstall scripts.
pub fn environment(b: &Build) -> Vec<(String, String)> {
    let rootimg = b.rootimg.display().to_string();
    let pairs = [
        ("IMG_ARCH", Some(b.arch.as_str())),
        ("IMG_NAME", b.name.as_deref()),
        ("IMG_OSVER", Some(b.osver.as_str())),
        ("IMG_KERNELVERSION", b.kernelver.as_deref()),
        ("IMG_PROFILE", Some(b.profile.as_str())),
        ("IMG_PKGLIST", Some(b.pkglist_attr.as_str())),
        ("IMG_PKGDIR", Some(b.pkgdir_attr.as_str())),
        ("IMG_OTHERPKGLIST", b.otherpkglist_attr.as_deref()),
        ("IMG_OTHERPKGDIR", b.otherpkgdir_attr.as_deref()),
        ("IMG_ROOTIMGDIR", Some(rootimg.as_str())),
    ];
    let mut env: Vec<(String, String)> = pairs
        .iter()
        .filter_map(|(k, v)| {
            v.filter(|v| !v.is_empty())
                .map(|v| (k.to_string(), v.to_string()))
        })
        .collect();
    env.push(("HOME".into(), "/root".into()));
    env.extend(b.env.iter().cloned());
    env
}

/// The step for one script.
pub fn step(b: &Build, s: &Script) -> Step {
    let mut args = vec![
        b.rootimg.display().to_string(),
        b.osver.clone(),
        b.arch.clone(),
        b.profile.clone(),
    ];
    args.extend(s.args.iter().cloned());
    let mut step = Step::new(&s.path.display().to_string(), args).isolated(Sandbox::host_side());
    step.env = environment(b);
    step
}

/// Whether a host file is executable by us.
pub fn executable(p: &std::path::Path) -> bool {
    nix::unistd::access(p, nix::unistd::AccessFlags::X_OK).is_ok() && p.is_file()
}

/// Runs every script in order; the first failure stops the build.
pub fn run(r: &mut Runner, b: &Build) -> GenResult<()> {
    for s in &b.postinstall {
        if !executable(&s.path) {
            return super::failed(format!(
                "postinstall script {} is not executable",
                s.path.display()
            ));
        }
        let step = step(b, s);
        let shown = format!("Running postinstall script {}", step.display());
        r.run(&shown, &step, |e| {
            step_failure(
                &format!("postinstall script {} failed", s.path.display()),
                e,
            )
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gen::debian::tests::build;

    #[test]
    fn arguments_and_environment() {
        let mut b = build(&["http://deb.debian.org/debian"]);
        b.kernelver = None;
        b.env = vec![("SITE".into(), "eu".into())];
        let s = Script {
            path: "/opt/post.sh".into(),
            args: vec!["a".into(), "b c".into()],
        };
        let st = step(&b, &s);
        assert_eq!(st.prog, "/opt/post.sh");
        let args: Vec<String> = st
            .args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            args,
            [
                "/nonexistent/img/rootimg",
                "debian12",
                "x86_64",
                "compute",
                "a",
                "b c"
            ]
        );
        let keys: Vec<&str> = st.env.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "IMG_ARCH",
                "IMG_NAME",
                "IMG_OSVER",
                "IMG_PROFILE",
                "IMG_PKGLIST",
                "IMG_PKGDIR",
                "IMG_ROOTIMGDIR",
                "HOME",
                "SITE"
            ]
        );
        assert!(st
            .isolation
            .as_ref()
            .is_some_and(|i| i.pid_namespace && i.chroot.is_none()));
    }
}
