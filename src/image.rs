//! Image names and image directories: the checks every command makes before touching disk.
//!
//! Pure functions on strings and paths (plus `realpath` for the canonical-form check); nothing
//! here reads tables or talks to the host.

use std::path::{Component, Path, PathBuf};

/// Perl's truth for a scalar string: `""` and `"0"` are false. xCAT's plugins test names and
/// option values this way, and compatibility depends on it (e.g. `-o 0` counts as missing).
pub fn perl_true(s: Option<&str>) -> bool {
    !matches!(s, None | Some("") | Some("0"))
}

/// How a name or value is shown in a message: as it is when it is plain text, quoted with
/// escapes when it is empty or holds control characters, so a message never hides what it names.
pub fn shown(s: &str) -> String {
    if s.is_empty() || s.chars().any(char::is_control) {
        format!("{s:?}")
    } else {
        s.to_string()
    }
}

/// Why a name cannot be used as one path component, or `None` when it can.
///
/// A name becomes a directory component (`<tftpdir>/xcat/osimage/<img>`) and, through
/// xCAT's name splitting, several more; `/`, `.`/`..`, NUL and control characters would let it
/// point somewhere else. `"0"` and `""` are refused too: stock rmimage treats them as "no name"
/// and removes the whole netboot tftp tree (xCAT E22).
pub fn component_problem(s: &str) -> Option<&'static str> {
    if !perl_true(Some(s)) {
        Some("it is empty or 0")
    } else if s == "." || s == ".." {
        Some("it is . or ..")
    } else if s.contains('/') {
        Some("it contains /")
    } else if s.chars().any(char::is_control) {
        Some("it contains control characters")
    } else {
        None
    }
}

/// Lexically normalises an absolute directory: repeated and trailing slashes go; `.` and `..`
/// components are refused rather than resolved, because a definition that needs them is not
/// what its admin thinks it is.
pub fn normalize_dir(dir: &str) -> Result<PathBuf, String> {
    if dir.is_empty() {
        return Err("it is empty".into());
    }
    if dir.contains('\0') {
        return Err("it contains a NUL byte".into());
    }
    let p = Path::new(dir);
    if !p.is_absolute() {
        return Err("it is not an absolute path".into());
    }
    let mut out = PathBuf::from("/");
    for c in p.components() {
        match c {
            Component::RootDir => {}
            Component::Normal(n) => out.push(n),
            Component::CurDir | Component::ParentDir => {
                return Err("it contains . or .. components".into());
            }
            Component::Prefix(_) => return Err("it is not a Unix path".into()),
        }
    }
    // `Path::components` silently drops interior `.`; look for it in the raw text too.
    if dir.split('/').any(|c| c == "." || c == "..") {
        return Err("it contains . or .. components".into());
    }
    Ok(out)
}

/// Number of normal components: `/` is 0, `/install` is 1.
pub fn depth(p: &Path) -> usize {
    p.components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .count()
}

/// Checks that `dir` may hold image files that we delete: absolute, normal, not `/` or a
/// top-level directory, and neither equal to nor an ancestor of a protected directory
/// (installdir, tftpdir). The same checks apply to its canonical form when it exists, so a
/// symlink cannot smuggle `/` in (xCAT E26).
pub fn check_image_dir(dir: &Path, protected: &[&Path]) -> Result<(), String> {
    check_lexical(dir, protected)?;
    if let Ok(real) = std::fs::canonicalize(dir) {
        if real != dir {
            let canon_protected: Vec<PathBuf> = protected
                .iter()
                .map(|p| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf()))
                .collect();
            let refs: Vec<&Path> = canon_protected.iter().map(PathBuf::as_path).collect();
            check_lexical(&real, &refs)
                .map_err(|e| format!("it resolves to {}, and {e}", real.display()))?;
        }
    }
    Ok(())
}

fn check_lexical(dir: &Path, protected: &[&Path]) -> Result<(), String> {
    if depth(dir) < 2 {
        return Err(format!("{} is / or a top-level directory", dir.display()));
    }
    for p in protected {
        if *p == dir {
            return Err(format!("it is {} itself", p.display()));
        }
        if p.starts_with(dir) {
            return Err(format!("it would contain {}", p.display()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perl_truth() {
        assert!(!perl_true(None));
        assert!(!perl_true(Some("")));
        assert!(!perl_true(Some("0")));
        assert!(perl_true(Some("00")));
        assert!(perl_true(Some("0.0")));
        assert!(perl_true(Some(" ")));
        assert!(perl_true(Some("img")));
    }

    #[test]
    fn components() {
        assert_eq!(component_problem("rhels9-x86_64-netboot-compute"), None);
        assert!(component_problem("").is_some());
        assert!(component_problem("0").is_some());
        assert!(component_problem("..").is_some());
        assert!(component_problem(".").is_some());
        assert!(component_problem("a/b").is_some());
        assert!(component_problem("a\nb").is_some());
        assert!(component_problem("a\0b").is_some());
        assert_eq!(
            component_problem("a;rm -rf $x"),
            None,
            "shell text is harmless here: no shell"
        );
    }

    #[test]
    fn normalizing() {
        assert_eq!(
            normalize_dir("/install//netboot/x/").unwrap(),
            PathBuf::from("/install/netboot/x")
        );
        assert!(normalize_dir("").is_err());
        assert!(normalize_dir("relative/dir").is_err());
        assert!(normalize_dir("/install/../etc").is_err());
        assert!(normalize_dir("/install/./x").is_err());
        assert!(normalize_dir("/a\0b").is_err());
        assert_eq!(normalize_dir("/").unwrap(), PathBuf::from("/"));
    }

    #[test]
    fn image_dir_checks() {
        let install = Path::new("/install");
        let tftp = Path::new("/tftpboot");
        let prot = [install, tftp];
        assert!(
            check_image_dir(Path::new("/install/netboot/rhels9/x86_64/compute"), &prot).is_ok()
        );
        assert!(check_image_dir(Path::new("/"), &prot).is_err());
        assert!(check_image_dir(Path::new("/usr"), &prot).is_err());
        assert!(check_image_dir(Path::new("/install"), &prot).is_err());
        let deep_install = Path::new("/data/install");
        assert!(check_image_dir(Path::new("/data"), &[deep_install]).is_err());
        assert!(check_image_dir(Path::new("/data/install"), &[deep_install]).is_err());
        assert!(check_image_dir(Path::new("/data/images"), &[deep_install]).is_ok());
    }

    #[test]
    fn symlink_to_root_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let link = t.path().join("img");
        std::os::unix::fs::symlink("/", &link).unwrap();
        let e = check_image_dir(&link, &[]).unwrap_err();
        assert!(e.contains("resolves to /"), "{e}");
    }

    #[test]
    fn shown_quotes_only_odd_text() {
        assert_eq!(shown("img"), "img");
        assert_eq!(shown(""), "\"\"");
        assert_eq!(shown("a\nb"), "\"a\\nb\"");
    }
}
