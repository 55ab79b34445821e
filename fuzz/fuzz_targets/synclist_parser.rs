//! The synclist parser. The first input line is `osimage.environvar` (`NAME=value,...`), the
//! rest the synclist. Invariants: every destination it accepts stays inside the image
//! (absolute, normalised, no `..`, `.` or empty components), sources are absolute, MERGE
//! targets are the four files, and section data only comes with a section header line.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::{Component, Path};
use xcat_imaged::pack::synclist::{self, MERGE_TARGETS};

fn inside(dest: &Path) {
    assert!(dest.is_absolute(), "{dest:?}");
    let s = dest.to_string_lossy();
    assert!(s == "/" || !s.ends_with('/'), "{dest:?}");
    assert!(!s.contains("//"), "{dest:?}");
    for c in dest.components() {
        assert!(
            matches!(c, Component::RootDir | Component::Normal(_)),
            "{dest:?} has {c:?}"
        );
    }
    assert!(!s.split('/').any(|c| c == ".." || c == "."), "{dest:?}");
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (envline, body) = text.split_once('\n').unwrap_or(("", text));
    let env = synclist::parse_osimage_env(envline);
    let Ok(list) = synclist::parse_synclist_with_env(body, Path::new("/s/x.synclist"), &env) else {
        return;
    };
    for c in list
        .copies
        .iter()
        .chain(list.node_copies.iter().map(|n| &n.copy))
    {
        inside(&c.dest);
        assert!(!c.sources.is_empty());
        assert!(c.sources.iter().all(|s| s.is_absolute()));
        if c.sources.len() > 1 {
            assert!(c.dest_is_dir);
        }
    }
    for a in &list.appends {
        inside(&a.dest);
        assert!(a.source.is_absolute());
    }
    for m in &list.merges {
        assert!(MERGE_TARGETS.iter().any(|t| Path::new(t) == m.dest));
    }
    for s in list.execute.iter().chain(&list.execute_always) {
        assert!(s.is_absolute());
    }
    let sections = !list.appends.is_empty()
        || !list.merges.is_empty()
        || !list.execute.is_empty()
        || !list.execute_always.is_empty();
    if sections {
        assert!(list.first_section_line.is_some());
    }
});
