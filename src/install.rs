//! `xcat-imaged install-plugin`: puts the engine, the xcatd plugin and the bridge into an xCAT
//! installation and says how to switch them on and off.
//!
//! The Perl files are embedded at build time from `plugin/` and `perl-shim/lib/`, so the files
//! in the repository are the one source of truth.

use crate::fs::atomic::write_atomic;
use std::io::Write;
use std::path::{Path, PathBuf};

/// `plugin/imaged.pm`, the xcatd plugin.
pub const PLUGIN: &str = include_str!("../plugin/imaged.pm");
/// `perl-shim/lib/xCAT/Imaged.pm`, the bridge.
pub const BRIDGE: &str = include_str!("../perl-shim/lib/xCAT/Imaged.pm");

/// What gets installed where, relative to XCATROOT.
fn layout(root: &Path) -> [(PathBuf, u32); 3] {
    [
        (root.join("sbin/xcat-imaged"), 0o755),
        (root.join("lib/perl/xCAT_plugin/imaged.pm"), 0o644),
        (root.join("lib/perl/xCAT/Imaged.pm"), 0o644),
    ]
}

/// Runs `install-plugin [--xcatroot DIR]`; returns the exit code.
pub fn run(args: &[String]) -> i32 {
    let mut out = std::io::stdout();
    let mut err = std::io::stderr();
    match install(args, &mut out) {
        Ok(()) => 0,
        Err(e) => {
            let _ = writeln!(err, "Error: {e}");
            1
        }
    }
}

fn install(args: &[String], out: &mut dyn Write) -> Result<(), String> {
    let root = match args {
        [] => std::env::var("XCATROOT").unwrap_or_else(|_| "/opt/xcat".into()),
        [flag, dir] if flag == "--xcatroot" => dir.clone(),
        [one] if one.starts_with("--xcatroot=") => one["--xcatroot=".len()..].to_string(),
        _ => return Err("usage: xcat-imaged install-plugin [--xcatroot DIR]".into()),
    };
    let root = PathBuf::from(root);
    let plugins = root.join("lib/perl/xCAT_plugin");
    if !plugins.is_dir() {
        return Err(format!(
            "{} is not an xCAT installation: {} is missing",
            root.display(),
            plugins.display()
        ));
    }
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
    let engine = std::fs::read(&exe).map_err(|e| format!("cannot read {}: {e}", exe.display()))?;
    let [bin, plugin, bridge] = layout(&root);
    for ((path, mode), data) in [
        (bin, engine.as_slice()),
        (plugin, PLUGIN.as_bytes()),
        (bridge, BRIDGE.as_bytes()),
    ] {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        write_atomic(&path, data, mode)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        // write_atomic keeps an existing file's mode; the engine must stay executable.
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(mode))
            .map_err(|e| format!("cannot chmod {}: {e}", path.display()))?;
        let _ = writeln!(out, "Installed {}", path.display());
    }
    let _ = writeln!(
        out,
        "To let xcat-imaged handle genimage, packimage, imgexport and rmimage:\n    rescanplugins\n    \
         chtab key=imagehandler site.value=imaged\nTo give them back to xCAT's own plugins:\n    \
         chtab -d key=imagehandler site"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn installs_into_an_xcatroot() {
        let t = tempfile::tempdir().unwrap();
        let mut out = Vec::new();
        let e = install(
            &["--xcatroot".into(), t.path().display().to_string()],
            &mut out,
        )
        .unwrap_err();
        assert!(e.contains("is not an xCAT installation"), "{e}");
        std::fs::create_dir_all(t.path().join("lib/perl/xCAT_plugin")).unwrap();
        install(
            &["--xcatroot".into(), t.path().display().to_string()],
            &mut out,
        )
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("chtab key=imagehandler site.value=imaged"),
            "{text}"
        );
        assert_eq!(
            std::fs::read_to_string(t.path().join("lib/perl/xCAT_plugin/imaged.pm")).unwrap(),
            PLUGIN
        );
        assert_eq!(
            std::fs::read_to_string(t.path().join("lib/perl/xCAT/Imaged.pm")).unwrap(),
            BRIDGE
        );
        let md = std::fs::metadata(t.path().join("sbin/xcat-imaged")).unwrap();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&md.permissions()) & 0o777,
            0o755
        );
        assert!(PLUGIN.contains("site:imagehandler"));
    }
}
