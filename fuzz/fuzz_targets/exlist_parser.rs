//! The exlist parser and the path selection. The input is several files separated by NUL
//! bytes: the first is the top-level exlist `/x/top.exlist`, the others `/x/1.exlist`,
//! `/x/2.exlist`, ... for `#INCLUDE:` (relative or absolute). Invariants: parsing terminates
//! (cycles and depth are errors), no pattern holds `#` or a newline, no pattern reaches
//! outside the image (`..` components are refused), a pattern starting with `/` matches no
//! walk path, and for patterns without brackets the glob matcher agrees with a plain
//! backtracking fnmatch.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::{Path, PathBuf};
use xcat_imaged::pack::exlist::{self, Selection};

/// fnmatch(pattern, path, 0) for patterns without `[`: `*` any run, `?` one byte, `\` escapes.
fn naive(p: &[u8], s: &[u8]) -> bool {
    match p.split_first() {
        None => s.is_empty(),
        Some((b'*', rest)) => (0..=s.len()).any(|i| naive(rest, &s[i..])),
        Some((b'?', rest)) => !s.is_empty() && naive(rest, &s[1..]),
        Some((b'\\', rest)) => match rest.split_first() {
            None => false,
            Some((c, rest)) => s.first() == Some(c) && naive(rest, &s[1..]),
        },
        Some((c, rest)) => s.first() == Some(c) && naive(rest, &s[1..]),
    }
}

fuzz_target!(|data: &[u8]| {
    let files: Vec<&[u8]> = data.split(|&b| b == 0).collect();
    let top = PathBuf::from("/x/top.exlist");
    let mut read = |p: &Path| -> std::io::Result<Vec<u8>> {
        let name = p.to_string_lossy();
        let n: Option<usize> = name
            .strip_prefix("/x/")
            .and_then(|s| s.strip_suffix(".exlist"))
            .and_then(|s| s.parse().ok());
        match n.and_then(|n| files.get(n)) {
            Some(f) => Ok(f.to_vec()),
            None => Err(std::io::Error::from(std::io::ErrorKind::NotFound)),
        }
    };
    let Ok(rules) = exlist::parse_exlist(files[0], &top, &mut read) else {
        return;
    };
    // Probe paths: the walk's form `./...`, from the input's last file.
    let probe: Vec<u8> = [b"./".as_slice(), files[files.len() - 1]].concat();
    for r in &rules {
        assert!(!r.pattern.contains(&b'#') && !r.pattern.contains(&b'\n'));
        assert!(
            !r.pattern.split(|&b| b == b'/').any(|c| c == b".."),
            "a pattern with a .. component was accepted: {r}"
        );
        if r.pattern.first() == Some(&b'/') {
            assert!(!exlist::path_glob_match(&r.pattern, &probe));
            assert!(!exlist::path_glob_match(&r.pattern, b"."));
        }
        // The reference is exponential in the number of stars: compare where it is cheap.
        let stars = r.pattern.iter().filter(|&&b| b == b'*').count();
        if !r.pattern.contains(&b'[')
            && !r.pattern.contains(&0)
            && r.pattern.len() < 64
            && stars <= 4
        {
            let short = &probe[..probe.len().min(32)];
            assert_eq!(
                exlist::path_glob_match(&r.pattern, short),
                naive(&r.pattern, short),
                "glob {:?} on {:?}",
                String::from_utf8_lossy(&r.pattern),
                String::from_utf8_lossy(short)
            );
        }
    }
    let sel = Selection::new(rules, Vec::new());
    let d = sel.decide(&probe);
    assert_eq!(
        d.is_kept(),
        sel.decide(&probe).is_kept(),
        "decisions are stable"
    );
    let e = sel.explain(&probe);
    assert_eq!(d.is_kept(), e.exclude.is_none() || e.include.is_some());
});
