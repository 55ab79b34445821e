//! The pkglist grammar. The input is several files separated by NUL bytes, named `/p/0.pkglist`
//! (the top-level list), `/p/1.pkglist`, ...; `#INCLUDE:` may name them, `$V` expands to `1`.
//! Invariants: parsing terminates (a file including itself is a cycle error, not a loop), every
//! file it reports reading exists, names are non-empty and never contain `,`, and passes are
//! numbered from 1.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::{Path, PathBuf};
use xcat_imaged::gen::pkglist;

fuzz_target!(|data: &[u8]| {
    let files: Vec<String> = data
        .split(|&b| b == 0)
        .map(|f| String::from_utf8_lossy(f).into_owned())
        .collect();
    let index = |p: &Path| -> Option<usize> {
        p.to_str()?
            .strip_prefix("/p/")?
            .strip_suffix(".pkglist")?
            .parse()
            .ok()
            .filter(|&n: &usize| n < files.len())
    };
    let read = |p: &Path| -> std::io::Result<String> {
        match index(p) {
            Some(n) => Ok(files[n].clone()),
            None => Err(std::io::Error::from(std::io::ErrorKind::NotFound)),
        }
    };
    let env = |k: &str| (k == "V").then(|| "1".to_string());
    let Ok(list) = pkglist::parse_with(&[PathBuf::from("/p/0.pkglist")], &env, &read) else {
        return;
    };
    for f in &list.files {
        assert!(
            index(f).is_some(),
            "reported a file that was never there: {f:?}"
        );
    }
    for (&n, pass) in &list.passes {
        assert!(n >= 1);
        for name in pass
            .all_names()
            .iter()
            .chain(&pass.pre_remove)
            .chain(&pass.post_remove)
        {
            assert!(!name.is_empty() && !name.contains(','), "{name:?}");
        }
    }
});
