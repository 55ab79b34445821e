//! Getopt::Long-compatible argument parsing with each command's real option table. Arguments
//! are the input split at NUL bytes. Invariants: parsing is deterministic, never yields more
//! leftover arguments than it was given, leftovers are input arguments (or tails of bundles)
//! unchanged, and with no argument that looks like an option everything is left over, in order.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xcat_imaged::args::{self, Config};
use xcat_imaged::commands::{genimage, imgexport, packimage, rmimage};

/// Each command's real option table and configuration.
const TABLES: &[(&[&str], Config)] = &[
    (rmimage::SPECS, Config::XCAT_PASS_THROUGH),
    (packimage::SPECS, Config::XCAT_PASS_THROUGH),
    (imgexport::SPECS, Config::XCAT_NO_PASS_THROUGH),
    (genimage::SPECS, Config::XCAT_PASS_THROUGH),
];

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let argv: Vec<String> = if text.is_empty() {
        Vec::new()
    } else {
        text.split('\0').map(str::to_string).collect()
    };
    let (specs, cfg) = TABLES[sel as usize % TABLES.len()];
    let p = args::parse(specs, cfg, &argv);
    assert_eq!(p, args::parse(specs, cfg, &argv), "deterministic");
    assert!(p.rest.len() <= argv.len());
    for r in &p.rest {
        // Under bundling + pass_through, Getopt::Long leaves the rest of a bundle after an
        // unknown character as a new argument: the starter, then the bundle's tail (real Perl
        // turns "-hh-xc" into "--xc").
        let from_bundle = ["--", "-", "+"].iter().any(|st| {
            r.strip_prefix(st)
                .is_some_and(|tail| argv.iter().any(|a| a.ends_with(tail)))
        });
        assert!(
            argv.contains(r) || from_bundle,
            "leftover {r:?} is not an input argument or the tail of one"
        );
    }
    if !p.ok {
        assert!(!p.warnings.is_empty(), "a failed parse says why");
    }
    if argv
        .iter()
        .all(|a| !a.starts_with('-') && !a.starts_with('+'))
    {
        assert_eq!(p.rest, argv);
        assert!(p.ok && p.warnings.is_empty());
    }
});
