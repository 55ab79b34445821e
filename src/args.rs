//! Parses command arguments exactly as Perl's Getopt::Long 2.52 `GetOptions` does, driven by a
//! table of Getopt::Long spec strings, so the image commands accept and reject what xCAT does.
//!
//! It knows nothing about xCAT tables, images or the host: it only turns argument vectors
//! into option values, leftover arguments and Getopt::Long's warning texts.
//!
//! Arguments are character strings (as xcatd hands them over after decoding its XML request),
//! so bundles split and names fold case per character. Getopt::Long's other defaults are
//! modelled too: `+` starts an option like `--` does (`getopt_compat`), and the environment
//! has no `POSIXLY_CORRECT`.

use std::collections::{BTreeMap, VecDeque};

/// Getopt::Long::Configure settings that matter to us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// `bundling`: `-abc` is `-a -b -c`, single-character options are case-sensitive, and
    /// a value option in a bundle takes the rest of the bundle (`-ofoo`).
    pub bundling: bool,
    /// `pass_through`: unknown or unusable options stay in [`Parsed::rest`] without a warning.
    pub pass_through: bool,
    /// `permute`: non-options may come before, between and after options (otherwise the
    /// first non-option ends option processing, as `require_order` does).
    pub permute: bool,
    /// `ignore_case`: option names match regardless of case (except single-character names
    /// under bundling).
    pub ignore_case: bool,
    /// `auto_abbrev`: long options may be abbreviated to any unique prefix.
    pub auto_abbrev: bool,
}

impl Config {
    /// What the stock xCAT plugins packimage, rmimage and genimage run under: bundling +
    /// pass_through (permute, ignore_case, auto_abbrev stay at their defaults = on).
    pub const XCAT_PASS_THROUGH: Config = Config {
        bundling: true,
        pass_through: true,
        permute: true,
        ignore_case: true,
        auto_abbrev: true,
    };

    /// What imgport.pm (imgexport) runs under: bundling + no_pass_through.
    pub const XCAT_NO_PASS_THROUGH: Config = Config {
        bundling: true,
        pass_through: false,
        permute: true,
        ignore_case: true,
        auto_abbrev: true,
    };
}

/// Result of one GetOptions call.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Parsed {
    /// Every value given to each option, in order, keyed by the spec's first name
    /// (flags record `"1"`, as Getopt::Long stores 1).
    values: BTreeMap<String, Vec<String>>,
    /// What remains in `@ARGV` afterwards: non-options, passed-through options and, under
    /// pass_through, a `--` with everything after it.
    pub rest: Vec<String>,
    /// The texts Getopt::Long would `warn`, without their trailing newline.
    pub warnings: Vec<String>,
    /// GetOptions' return value: true when no option was in error.
    pub ok: bool,
}

impl Parsed {
    /// Whether the option with this key was given at least once.
    pub fn flag(&self, key: &str) -> bool {
        self.values.get(key).is_some_and(|v| !v.is_empty())
    }

    /// The last value of the `=s` option with this key (what its scalar holds), if given.
    pub fn str(&self, key: &str) -> Option<&str> {
        self.values
            .get(key)
            .and_then(|v| v.last())
            .map(String::as_str)
    }

    /// Every value of the `=s@` option with this key, in order (empty if never given). For
    /// an `=s` option it is every value given, of which Perl's scalar keeps only the last.
    pub fn list(&self, key: &str) -> &[String] {
        self.values.get(key).map_or(&[], Vec::as_slice)
    }
}

/// What an option does with its occurrences.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// No suffix: a flag, set to 1.
    Flag,
    /// `=s`: a mandatory string value; the last one wins.
    Str,
    /// `=s@`: a mandatory string value, every one collected.
    List,
}

/// One parsed spec string.
#[derive(Debug)]
struct Spec {
    /// The first name, as written: the key of the option's values.
    key: String,
    kind: Kind,
}

/// The option table: every name (case-folded where Getopt::Long folds it) to its spec.
#[derive(Debug)]
struct Table {
    specs: Vec<Spec>,
    /// Sorted, like Getopt::Long's `sort(keys %opctl)`.
    names: BTreeMap<String, usize>,
}

/// Perl's `lc` on a character string: per-character full lowercase, no context rules.
fn lc(s: &str) -> String {
    s.chars().flat_map(char::to_lowercase).collect()
}

/// The name under which Getopt::Long files `name`: lowercased when ignoring case, except a
/// single-character name under bundling.
fn stored_name(name: &str, cfg: Config) -> String {
    if cfg.ignore_case && !(cfg.bundling && name.chars().count() == 1) {
        lc(name)
    } else {
        name.to_string()
    }
}

impl Table {
    /// Builds the table; panics on a spec outside the supported subset.
    fn new(specs: &[&str], cfg: Config) -> Table {
        let mut table = Table {
            specs: Vec::with_capacity(specs.len()),
            names: BTreeMap::new(),
        };
        for &spec in specs {
            let (names, kind) = if let Some(n) = spec.strip_suffix("=s@") {
                (n, Kind::List)
            } else if let Some(n) = spec.strip_suffix("=s") {
                (n, Kind::Str)
            } else {
                (spec, Kind::Flag)
            };
            let names: Vec<&str> = names.split('|').collect();
            let first = names[0];
            let mut first_chars = first.chars();
            let first_ok = first_chars
                .next()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
                && first_chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            assert!(
                first_ok,
                "invalid Getopt::Long spec {spec:?}: the first name must be a word \
                 (letters, digits, '_', then also '-'); the supported suffixes are none \
                 (flag), \"=s\" and \"=s@\""
            );
            let index = table.specs.len();
            for name in &names {
                assert!(
                    !name.is_empty()
                        && !name
                            .chars()
                            .any(|c| "!+=:@%{}".contains(c) || c.is_whitespace()),
                    "invalid Getopt::Long spec {spec:?}: bad option name {name:?} (the \
                     supported suffixes are none (flag), \"=s\" and \"=s@\")"
                );
                let stored = stored_name(name, cfg);
                let clash = table.names.insert(stored.clone(), index);
                assert!(
                    clash.is_none(),
                    "invalid Getopt::Long spec {spec:?}: option name {stored:?} is already taken"
                );
            }
            table.specs.push(Spec {
                key: first.to_string(),
                kind,
            });
        }
        table
    }
}

/// What looking up one argument found.
enum Found {
    /// Not an option (or, under pass_through, an option we leave alone).
    NotOption,
    /// An option in error; its warning has been recorded.
    Error,
    /// The option with this spec index got this value.
    Value(usize, String),
}

/// Splits an argument into its option starter and the rest, if it starts an option.
fn split_starter(arg: &str) -> Option<(&'static str, &str)> {
    for starter in ["--", "-", "+"] {
        if let Some(body) = arg.strip_prefix(starter) {
            return Some((starter, body));
        }
    }
    None
}

/// Looks up the option `arg` (taking its value from `argv` when needed), like FindOption.
fn find_option(
    table: &Table,
    cfg: Config,
    arg: &str,
    argv: &mut VecDeque<String>,
    warnings: &mut Vec<String>,
) -> Found {
    let Some((starter, body)) = split_starter(arg) else {
        return Found::NotOption;
    };
    if arg == "-" {
        return Found::NotOption;
    }

    // `--name=value` (and, without bundling, `-name=value` and `+name=value`): the `=` must
    // not be the name's first character.
    let mut opt = body.to_string();
    let mut optarg: Option<String> = None;
    if starter == "--" || !cfg.bundling {
        if let Some((pos, _)) = body.char_indices().skip(1).find(|&(_, c)| c == '=') {
            opt = body[..pos].to_string();
            optarg = Some(body[pos + 1..].to_string());
        }
    }

    // The rest of a bundle, still to be processed.
    let mut rest: Option<String> = None;
    let tryopt: String;
    if cfg.bundling && starter == "-" {
        let mut chars = opt.chars();
        tryopt = chars.next().map(String::from).unwrap_or_default();
        let remainder = chars.as_str();
        if !remainder.is_empty() {
            rest = Some(remainder.to_string());
        }
    } else if cfg.auto_abbrev && !opt.is_empty() {
        if cfg.ignore_case {
            opt = lc(&opt);
        }
        let mut hits: Vec<String> = table
            .names
            .keys()
            .filter(|n| n.starts_with(opt.as_str()))
            .cloned()
            .collect();
        let exact = hits.contains(&opt);
        if hits.len() > 1 && !exact {
            let mut specs: Vec<usize> = hits.iter().map(|h| table.names[h]).collect();
            specs.sort_unstable();
            specs.dedup();
            if specs.len() != 1 {
                if cfg.pass_through {
                    return Found::NotOption;
                }
                warnings.push(format!("Option {opt} is ambiguous ({})", hits.join(", ")));
                return Found::Error;
            }
            // All hits are names of one option: continue with its first name.
            hits = vec![table.specs[specs[0]].key.clone()];
        }
        tryopt = match hits.as_slice() {
            [hit] if *hit != opt => stored_name(hit, cfg),
            _ => opt.clone(),
        };
    } else if cfg.ignore_case {
        tryopt = lc(&opt);
    } else {
        tryopt = opt.clone();
    }

    let Some(&index) = table.names.get(&tryopt) else {
        if cfg.pass_through {
            return Found::NotOption;
        }
        // Complain about one character of a bundle and go on with the others.
        let mut shown = opt;
        if cfg.bundling && starter.len() == 1 {
            shown = shown.chars().next().map(String::from).unwrap_or_default();
            if let Some(rest) = rest {
                argv.push_front(format!("{starter}{rest}"));
            }
        }
        warnings.push(if shown.is_empty() {
            format!("Missing option after {starter}")
        } else {
            format!("Unknown option: {shown}")
        });
        return Found::Error;
    };
    let opt = tryopt;

    match table.specs[index].kind {
        Kind::Flag => {
            if optarg.is_some() {
                if cfg.pass_through {
                    return Found::NotOption;
                }
                warnings.push(format!("Option {opt} does not take an argument"));
                return Found::Error;
            }
            if let Some(rest) = rest {
                argv.push_front(format!("{starter}{rest}"));
            }
            Found::Value(index, "1".to_string())
        }
        Kind::Str | Kind::List => {
            let missing = match &optarg {
                Some(value) => value.is_empty(),
                None => rest.is_none() && argv.is_empty(),
            };
            if missing {
                if cfg.pass_through {
                    return Found::NotOption;
                }
                warnings.push(format!("Option {opt} requires an argument"));
                return Found::Error;
            }
            // A mandatory string takes anything, even `--` or something like an option.
            let value = rest.or(optarg).or_else(|| argv.pop_front());
            Found::Value(index, value.unwrap_or_default())
        }
    }
}

/// Parses `args` like `GetOptions(specs...)` with `@ARGV = args` under `cfg`. `rest` is what
/// remains in @ARGV afterwards; `warnings` are the texts Getopt::Long would warn (e.g.
/// "Unknown option: x"), `ok` is GetOptions' return value.
///
/// `specs` use Getopt::Long syntax restricted to `name|alias|...` followed by nothing (a
/// flag), `=s` (a string) or `=s@` (strings collected into a list, like `=s` linked to an
/// array). Values are keyed by the spec's first name as written.
///
/// # Panics
///
/// On a spec outside that subset, or a name used twice: that is a programmer error.
pub fn parse(specs: &[&str], cfg: Config, args: &[String]) -> Parsed {
    let table = Table::new(specs, cfg);
    let mut argv: VecDeque<String> = args.iter().cloned().collect();
    let mut parsed = Parsed::default();
    let mut errors = 0usize;
    // Non-options and passed-through options, in order.
    let mut ret: Vec<String> = Vec::new();

    while let Some(arg) = argv.pop_front() {
        if arg == "--" {
            if cfg.pass_through {
                ret.push(arg);
            }
            break;
        }
        match find_option(&table, cfg, &arg, &mut argv, &mut parsed.warnings) {
            Found::Value(index, value) => {
                let key = &table.specs[index].key;
                parsed.values.entry(key.clone()).or_default().push(value);
            }
            Found::Error => errors += 1,
            Found::NotOption if cfg.permute => ret.push(arg),
            Found::NotOption => {
                // require_order: stop here, leaving this argument and all after it.
                argv.push_front(arg);
                parsed.rest = argv.into();
                parsed.ok = errors == 0;
                return parsed;
            }
        }
    }

    // Getopt::Long restores what it set aside only under permute or pass_through (without
    // either nothing is ever set aside).
    if !ret.is_empty() && (cfg.permute || cfg.pass_through) {
        ret.extend(argv);
        parsed.rest = ret;
    } else {
        parsed.rest = argv.into();
    }
    parsed.ok = errors == 0;
    parsed
}

#[cfg(test)]
mod tests {
    use super::*;

    const RMIMAGE: &[&str] = &["o=s", "a=s", "p=s", "h|help", "V|verbose", "xcatdef"];
    const PACKIMAGE: &[&str] = &[
        "profile|p=s",
        "arch|a=s",
        "osver|o=s",
        "method|m=s",
        "compress|c=s",
        "tracker=s",
        "nosyncfiles",
        "help|h",
        "version|v",
    ];
    const GENIMAGE: &[&str] = &[
        "a=s",
        "p=s",
        "o=s",
        "n=s",
        "i=s",
        "r=s",
        "l=s",
        "t=s",
        "k=s",
        "g=s",
        "m=s",
        "kerneldir=s",
        "permission=s",
        "interactive",
        "onlyinitrd",
        "tempfile=s",
        "dryrun",
        "ignorekernelchk",
        "noupdate",
    ];
    const IMGEXPORT: &[&str] = &[
        "h|?|help",
        "p|postscripts=s",
        "e|extra=s@",
        "R|remotehost=s",
        "v|verbose",
    ];
    /// Not a stock list: names that share prefixes, for ambiguity.
    const AMBIGUOUS: &[&str] = &["verbose", "version=s", "vx|vxfoo"];
    /// Not a stock list: aliases that share a prefix and a single uppercase name alone.
    const ALIASES: &[&str] = &["R|remote|rem=s", "Q", "quiet|quietly"];

    const PT: Config = Config::XCAT_PASS_THROUGH;
    const NPT: Config = Config::XCAT_NO_PASS_THROUGH;
    /// Getopt::Long's defaults (no bundling, no pass_through).
    const PLAIN: Config = Config {
        bundling: false,
        pass_through: false,
        permute: true,
        ignore_case: true,
        auto_abbrev: true,
    };
    /// bundling + pass_through + require_order.
    const ORDER_PT: Config = Config {
        permute: false,
        ..Config::XCAT_PASS_THROUGH
    };
    /// bundling + require_order.
    const ORDER_NPT: Config = Config {
        permute: false,
        ..Config::XCAT_NO_PASS_THROUGH
    };
    /// bundling + no_ignore_case + no_auto_abbrev.
    const STRICT: Config = Config {
        ignore_case: false,
        auto_abbrev: false,
        ..Config::XCAT_NO_PASS_THROUGH
    };

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    /// One line describing a result: values in spec order (`key` for a flag, `key="v"` for
    /// a string, `key=["a", "b"]` for a list), then `rest=[..]`, `warn=[..]` if any, and
    /// `ok` or `FAIL`.
    fn render(
        specs: &[&str],
        value: impl Fn(&str, Kind) -> Option<String>,
        rest: &[String],
        warnings: &[String],
        ok: bool,
    ) -> String {
        let table = Table::new(specs, PLAIN_FOR_KINDS);
        let mut parts: Vec<String> = table
            .specs
            .iter()
            .filter_map(|s| value(&s.key, s.kind))
            .collect();
        parts.push(format!("rest={rest:?}"));
        if !warnings.is_empty() {
            parts.push(format!("warn={warnings:?}"));
        }
        parts.push(if ok { "ok" } else { "FAIL" }.to_string());
        parts.join(" ")
    }

    /// Used only to read spec kinds; case folding is irrelevant there, so pick the config
    /// under which no two stock names collide.
    const PLAIN_FOR_KINDS: Config = Config {
        ignore_case: false,
        ..PLAIN
    };

    fn render_parsed(specs: &[&str], p: &Parsed) -> String {
        render(
            specs,
            |key, kind| match kind {
                Kind::Flag => p.flag(key).then(|| key.to_string()),
                Kind::Str => p.str(key).map(|v| format!("{key}={v:?}")),
                Kind::List => {
                    let l = p.list(key);
                    (!l.is_empty()).then(|| format!("{key}={l:?}"))
                }
            },
            &p.rest,
            &p.warnings,
            p.ok,
        )
    }

    /// Runs a table of `(args, expected rendering)` and reports every mismatch at once.
    fn check(specs: &[&str], cfg: Config, cases: &[Case]) {
        let mut failures = Vec::new();
        for (args, want) in cases {
            let got = render_parsed(specs, &parse(specs, cfg, &strings(args)));
            if got != *want {
                failures.push(format!("args {args:?}\n   want {want}\n    got {got}"));
            }
        }
        assert!(failures.is_empty(), "\n{}", failures.join("\n"));
    }

    /// `(args, expected rendering)`, see [`render`].
    type Case = (&'static [&'static str], &'static str);

    const RMIMAGE_PASS_THROUGH: &[Case] = &[
        (&["-v", "img"], r#"rest=["-v", "img"] ok"#),
        (&["-x", "img"], r#"rest=["-x", "img"] ok"#),
        (&["img", "-x"], r#"rest=["img", "-x"] ok"#),
        (&["img", "--xcat"], r#"xcatdef rest=["img"] ok"#),
        (&["--x", "img"], r#"xcatdef rest=["img"] ok"#),
        (&["--Verbose", "--HELP"], r#"h V rest=[] ok"#),
        (&["--verb", "--he", "--h"], r#"h V rest=[] ok"#),
        (&["-V", "-h"], r#"h V rest=[] ok"#),
        (&["-Vh"], r#"h V rest=[] ok"#),
        (&["-o"], r#"rest=["-o"] ok"#),
        (&["-V", "-o"], r#"V rest=["-o"] ok"#),
        (&["-Vo"], r#"V rest=["-o"] ok"#),
        (
            &["-o", "x", "-a", "y", "-p", "z"],
            r#"o="x" a="y" p="z" rest=[] ok"#,
        ),
        (&["-ox", "-ay", "-pz"], r#"o="x" a="y" p="z" rest=[] ok"#),
        (&["-Vox"], r#"o="x" V rest=[] ok"#),
        (&["-oV"], r#"o="V" rest=[] ok"#),
        (&["-o=x"], r#"o="=x" rest=[] ok"#),
        (&["-o", "-x"], r#"o="-x" rest=[] ok"#),
        (&["-o", "--"], r#"o="--" rest=[] ok"#),
        (&["-o", ""], r#"o="" rest=[] ok"#),
        (&["-o", "a", "-o", "b"], r#"o="b" rest=[] ok"#),
        (&["--o=x", "--a", "y"], r#"o="x" a="y" rest=[] ok"#),
        (&["--o="], r#"rest=["--o="] ok"#),
        (&["--xcatdef=1"], r#"rest=["--xcatdef=1"] ok"#),
        (&["--xcatdef="], r#"rest=["--xcatdef="] ok"#),
        (&["-help"], r#"h rest=["-elp"] ok"#),
        (&["-xV"], r#"rest=["-xV"] ok"#),
        (&["-Vx"], r#"V rest=["-x"] ok"#),
        (
            &["a", "-V", "b", "--", "-h", "c"],
            r#"V rest=["a", "b", "--", "-h", "c"] ok"#,
        ),
        (&["--", "-h"], r#"rest=["--", "-h"] ok"#),
        (&["-", "-V"], r#"V rest=["-"] ok"#),
        (&["", "img"], r#"rest=["", "img"] ok"#),
        (&["+v", "+xcat", "+V"], r#"V xcatdef rest=[] ok"#),
        (
            &["+xcatdef=1", "+", "+foo"],
            r#"rest=["+xcatdef=1", "+", "+foo"] ok"#,
        ),
        (&["---V"], r#"rest=["---V"] ok"#),
        (&["-Vé", "é"], r#"V rest=["-é", "é"] ok"#),
    ];

    const RMIMAGE_NO_PASS_THROUGH: &[Case] = &[
        (
            &["-v", "img"],
            r#"rest=["img"] warn=["Unknown option: v"] FAIL"#,
        ),
        (
            &["-help"],
            r#"h rest=[] warn=["Unknown option: e", "Unknown option: l", "Option p requires an argument"] FAIL"#,
        ),
        (
            &["-xyV"],
            r#"V rest=[] warn=["Unknown option: x", "Unknown option: y"] FAIL"#,
        ),
        (
            &["--x=1"],
            r#"rest=[] warn=["Option xcatdef does not take an argument"] FAIL"#,
        ),
        (&["--Foo"], r#"rest=[] warn=["Unknown option: foo"] FAIL"#),
        (
            &["--foo=bar"],
            r#"rest=[] warn=["Unknown option: foo"] FAIL"#,
        ),
        (&["+Foo"], r#"rest=[] warn=["Unknown option: f"] FAIL"#),
        (&["+"], r#"rest=[] warn=["Missing option after +"] FAIL"#),
        (&["--="], r#"rest=[] warn=["Unknown option: ="] FAIL"#),
        (&["---x"], r#"rest=[] warn=["Unknown option: -x"] FAIL"#),
        (
            &["-É", "--É"],
            r#"rest=[] warn=["Unknown option: É", "Unknown option: é"] FAIL"#,
        ),
        (
            &["-o", "img", "-a"],
            r#"o="img" rest=[] warn=["Option a requires an argument"] FAIL"#,
        ),
        (&["a", "--", "-V", "b"], r#"rest=["a", "-V", "b"] ok"#),
        (&["--"], r#"rest=[] ok"#),
    ];

    const PACKIMAGE_PASS_THROUGH: &[Case] = &[
        (
            &[
                "-p", "compute", "-a", "x86_64", "-o", "rhels8", "-m", "cpio",
            ],
            r#"profile="compute" arch="x86_64" osver="rhels8" method="cpio" rest=[] ok"#,
        ),
        (&["-czstd", "img"], r#"compress="zstd" rest=["img"] ok"#),
        (
            &["--comp", "pigz", "--track=t"],
            r#"compress="pigz" tracker="t" rest=[] ok"#,
        ),
        (&["--profile="], r#"rest=["--profile="] ok"#),
        (&["--Profile=x", "--P=y"], r#"profile="y" rest=[] ok"#),
        (&["-P", "x"], r#"rest=["-P", "x"] ok"#),
        (
            &["--nosync", "-hv"],
            r#"nosyncfiles help version rest=[] ok"#,
        ),
        (&["--ver", "--v"], r#"version rest=[] ok"#),
        (&["-vp"], r#"version rest=["-p"] ok"#),
        (
            &["img", "--method", "squashfs"],
            r#"method="squashfs" rest=["img"] ok"#,
        ),
    ];

    const GENIMAGE_PASS_THROUGH: &[Case] = &[
        (&["--i", "x"], r#"i="x" rest=[] ok"#),
        (
            &["--in", "--ig", "--no", "--d"],
            r#"interactive dryrun ignorekernelchk noupdate rest=[] ok"#,
        ),
        (
            &["--o", "rhels8", "--on"],
            r#"o="rhels8" onlyinitrd rest=[] ok"#,
        ),
        (
            &["--kern", "/k", "--perm=755", "--te", "/t"],
            r#"kerneldir="/k" permission="755" tempfile="/t" rest=[] ok"#,
        ),
        (
            &["-n", "e1000,ixgbe", "-i", "eth0", "-r", "eth1"],
            r#"n="e1000,ixgbe" i="eth0" r="eth1" rest=[] ok"#,
        ),
        (
            &[
                "-k",
                "5.14",
                "-g",
                "8",
                "-l",
                "4G",
                "-t",
                "tmpfs",
                "-m",
                "statelite",
                "img",
            ],
            r#"l="4G" t="tmpfs" k="5.14" g="8" m="statelite" rest=["img"] ok"#,
        ),
        (
            &["--dryrun=yes", "--interactive"],
            r#"interactive rest=["--dryrun=yes"] ok"#,
        ),
        (&["-dryrun"], r#"rest=["-dryrun"] ok"#),
    ];

    const IMGEXPORT_NO_PASS_THROUGH: &[Case] = &[
        (&["img", "img.tgz"], r#"rest=["img", "img.tgz"] ok"#),
        (&["-?"], r#"h rest=[] ok"#),
        (&["--?", "--he"], r#"h rest=[] ok"#),
        (&["-help"], r#"h e=["lp"] rest=[] ok"#),
        (
            &["-e", "a", "-eb", "--extra=c", "--ex", "d", "img"],
            r#"e=["a", "b", "c", "d"] rest=["img"] ok"#,
        ),
        (&["-R", "h1", "--R=h2", "--r", "h3"], r#"R="h3" rest=[] ok"#),
        (
            &["-r", "h"],
            r#"rest=["h"] warn=["Unknown option: r"] FAIL"#,
        ),
        (&["-V"], r#"rest=[] warn=["Unknown option: V"] FAIL"#),
        (&["--VERBOSE", "--Verb"], r#"v rest=[] ok"#),
        (&["-vpscript"], r#"p="script" v rest=[] ok"#),
        (
            &["-p"],
            r#"rest=[] warn=["Option p requires an argument"] FAIL"#,
        ),
        (
            &["--extra="],
            r#"rest=[] warn=["Option extra requires an argument"] FAIL"#,
        ),
        (&["--post", "-v"], r#"p="-v" rest=[] ok"#),
        (&["-e", "", "-e", "é"], r#"e=["", "é"] rest=[] ok"#),
        (
            &["--x", "img", "--hel=1"],
            r#"rest=["img"] warn=["Unknown option: x", "Option help does not take an argument"] FAIL"#,
        ),
    ];

    const AMBIGUOUS_NPT: &[Case] = &[
        (
            &["--ver", "--v"],
            r#"rest=[] warn=["Option ver is ambiguous (verbose, version)", "Option v is ambiguous (verbose, version, vx, vxfoo)"] FAIL"#,
        ),
        (&["--verb", "--vers=1"], r#"verbose version="1" rest=[] ok"#),
        (&["--vxf", "--vx"], r#"vx rest=[] ok"#),
    ];

    const AMBIGUOUS_PT: &[Case] = &[(&["--ver", "--v", "--vx"], r#"vx rest=["--ver", "--v"] ok"#)];

    const ALIASES_NPT: &[Case] = &[
        (&["--re", "x"], r#"R="x" rest=[] ok"#),
        (&["--quiet"], r#"quiet rest=[] ok"#),
        (&["--Q"], r#"quiet rest=[] ok"#),
        (&["-Q"], r#"Q rest=[] ok"#),
        (&["-q"], r#"rest=[] warn=["Unknown option: q"] FAIL"#),
    ];

    const WITHOUT_BUNDLING: &[Case] = &[
        (&["-Vé"], r#"rest=[] warn=["Unknown option: vé"] FAIL"#),
        (&["-verb", "-v", "-xcat"], r#"V xcatdef rest=[] ok"#),
        (&["-o=x", "-p", "1"], r#"o="x" p="1" rest=[] ok"#),
        (
            &["-h=3"],
            r#"rest=[] warn=["Option h does not take an argument"] FAIL"#,
        ),
        (&["-hV"], r#"rest=[] warn=["Unknown option: hv"] FAIL"#),
        (&["+o=x"], r#"o="x" rest=[] ok"#),
    ];

    const REQUIRE_ORDER_NPT: &[Case] = &[
        (&["-V", "img", "-h"], r#"V rest=["img", "-h"] ok"#),
        (
            &["-x", "-V", "img"],
            r#"V rest=["img"] warn=["Unknown option: x"] FAIL"#,
        ),
        (&["--", "-V"], r#"rest=["-V"] ok"#),
    ];

    const REQUIRE_ORDER_PT: &[Case] = &[
        (&["-V", "-x", "-h"], r#"V rest=["-x", "-h"] ok"#),
        (&["-h", "--", "-V"], r#"h rest=["--", "-V"] ok"#),
    ];

    const CASE_SENSITIVE_WITHOUT_ABBREVIATION: &[Case] = &[
        (&["--xcatdef", "--help"], r#"h xcatdef rest=[] ok"#),
        (&["--xcat"], r#"rest=[] warn=["Unknown option: xcat"] FAIL"#),
        (&["--HELP"], r#"rest=[] warn=["Unknown option: HELP"] FAIL"#),
        (&["+Help"], r#"rest=[] warn=["Unknown option: H"] FAIL"#),
    ];

    /// Every expectation table above, with its spec list and config; the differential test
    /// also runs all of them through real Getopt::Long.
    const EXPECTATIONS: &[(&[&str], Config, &[Case])] = &[
        (RMIMAGE, PT, RMIMAGE_PASS_THROUGH),
        (RMIMAGE, NPT, RMIMAGE_NO_PASS_THROUGH),
        (PACKIMAGE, PT, PACKIMAGE_PASS_THROUGH),
        (GENIMAGE, PT, GENIMAGE_PASS_THROUGH),
        (IMGEXPORT, NPT, IMGEXPORT_NO_PASS_THROUGH),
        (AMBIGUOUS, NPT, AMBIGUOUS_NPT),
        (AMBIGUOUS, PT, AMBIGUOUS_PT),
        (ALIASES, NPT, ALIASES_NPT),
        (RMIMAGE, PLAIN, WITHOUT_BUNDLING),
        (RMIMAGE, ORDER_NPT, REQUIRE_ORDER_NPT),
        (RMIMAGE, ORDER_PT, REQUIRE_ORDER_PT),
        (RMIMAGE, STRICT, CASE_SENSITIVE_WITHOUT_ABBREVIATION),
    ];

    #[test]
    fn stock_spec_lists_are_valid() {
        for specs in [RMIMAGE, PACKIMAGE, GENIMAGE, IMGEXPORT, AMBIGUOUS, ALIASES] {
            for cfg in [PT, NPT, PLAIN, STRICT] {
                let table = Table::new(specs, cfg);
                assert_eq!(table.specs.len(), specs.len());
            }
        }
    }

    #[test]
    fn keys_and_kinds_come_from_the_spec() {
        let table = Table::new(IMGEXPORT, NPT);
        let got: Vec<(&str, Kind)> = table
            .specs
            .iter()
            .map(|s| (s.key.as_str(), s.kind))
            .collect();
        assert_eq!(
            got,
            [
                ("h", Kind::Flag),
                ("p", Kind::Str),
                ("e", Kind::List),
                ("R", Kind::Str),
                ("v", Kind::Flag)
            ]
        );
        let table = Table::new(PACKIMAGE, PT);
        assert_eq!(table.specs[0].key, "profile");
        assert_eq!(table.names["p"], 0);
        assert_eq!(table.names["h"], 7);
        // Under bundling single-character names keep their case; long ones are folded.
        let table = Table::new(RMIMAGE, PT);
        assert!(table.names.contains_key("V") && !table.names.contains_key("v"));
        let table = Table::new(&["Foo|B"], PLAIN);
        assert!(table.names.contains_key("foo") && table.names.contains_key("b"));
    }

    #[test]
    #[should_panic(expected = "invalid Getopt::Long spec \"x=i\"")]
    fn integer_spec_is_refused() {
        parse(&["x=i"], PT, &[]);
    }

    #[test]
    #[should_panic(expected = "invalid Getopt::Long spec \"v!\"")]
    fn negatable_spec_is_refused() {
        parse(&["v!"], PT, &[]);
    }

    #[test]
    #[should_panic(expected = "invalid Getopt::Long spec \"|x\"")]
    fn empty_first_name_is_refused() {
        parse(&["|x"], PT, &[]);
    }

    #[test]
    #[should_panic(expected = "invalid Getopt::Long spec \"a||b\"")]
    fn empty_alias_is_refused() {
        parse(&["a||b"], PT, &[]);
    }

    #[test]
    #[should_panic(expected = "invalid Getopt::Long spec \"--foo\"")]
    fn prefixed_spec_is_refused() {
        parse(&["--foo"], PT, &[]);
    }

    #[test]
    #[should_panic(expected = "invalid Getopt::Long spec \"o=s\": option name \"o\" is already")]
    fn duplicate_name_is_refused() {
        parse(&["o", "o=s"], PT, &[]);
    }

    #[test]
    #[should_panic(expected = "option name \"v\" is already taken")]
    fn names_colliding_after_case_folding_are_refused() {
        parse(&["V|verbose", "v"], PLAIN, &[]);
    }

    #[test]
    fn accessors() {
        let p = parse(
            IMGEXPORT,
            NPT,
            &strings(&["-v", "-p", "a", "-pb", "-e", "x", "-ey", "img"]),
        );
        assert!(p.flag("v") && !p.flag("h"));
        assert!(p.flag("p"), "a given string option counts as given");
        assert_eq!(p.str("p"), Some("b"));
        assert_eq!(p.str("R"), None);
        assert_eq!(p.list("e"), ["x", "y"]);
        assert!(p.list("nosuchkey").is_empty());
        assert_eq!(p.str("v"), Some("1"), "a flag holds 1, as in Perl");
        assert_eq!(p.rest, ["img"]);
        assert!(p.ok && p.warnings.is_empty());
        let empty = parse(RMIMAGE, PT, &[]);
        assert!(empty.ok && empty.rest.is_empty() && !empty.flag("h"));
    }

    #[test]
    fn rmimage_pass_through() {
        check(RMIMAGE, PT, RMIMAGE_PASS_THROUGH);
    }

    #[test]
    fn rmimage_no_pass_through() {
        check(RMIMAGE, NPT, RMIMAGE_NO_PASS_THROUGH);
    }

    #[test]
    fn packimage_pass_through() {
        check(PACKIMAGE, PT, PACKIMAGE_PASS_THROUGH);
    }

    #[test]
    fn genimage_pass_through() {
        check(GENIMAGE, PT, GENIMAGE_PASS_THROUGH);
    }

    #[test]
    fn imgexport_no_pass_through() {
        check(IMGEXPORT, NPT, IMGEXPORT_NO_PASS_THROUGH);
    }

    #[test]
    fn ambiguous_prefixes() {
        check(AMBIGUOUS, NPT, AMBIGUOUS_NPT);
        check(AMBIGUOUS, PT, AMBIGUOUS_PT);
        // Several names of one option are not ambiguous; a lone uppercase single-character
        // name cannot be reached with `--` under bundling.
        check(ALIASES, NPT, ALIASES_NPT);
    }

    #[test]
    fn without_bundling() {
        check(RMIMAGE, PLAIN, WITHOUT_BUNDLING);
    }

    #[test]
    fn require_order() {
        check(RMIMAGE, ORDER_NPT, REQUIRE_ORDER_NPT);
        check(RMIMAGE, ORDER_PT, REQUIRE_ORDER_PT);
    }

    #[test]
    fn case_sensitive_without_abbreviation() {
        check(RMIMAGE, STRICT, CASE_SENSITIVE_WITHOUT_ABBREVIATION);
    }

    /// Real Getopt::Long, fed cases as JSON on stdin; answers one result per case.
    const PERL_SCRIPT: &str = r#"
use strict; use warnings; use Getopt::Long; use JSON::PP;
my $cases = JSON::PP->new->utf8->decode(do { local $/; <STDIN> });
my @out;
for my $c (@$cases) {
    my $cfg = $c->{cfg};
    Getopt::Long::Configure("default",
        map { ($cfg->{$_} ? "" : "no_") . $_ }
            qw(bundling pass_through permute ignore_case auto_abbrev));
    my (@go, %store);
    for my $s (@{$c->{specs}}) {
        my ($key) = $s =~ /^([^|=]*)/;
        my $spec = $s;
        # "e|extra=s@" is how we write imgport.pm's 'e|extra=s' => \@extra.
        if ($spec =~ s/\@$//) { my @a; $store{$key} = \@a; push @go, $spec, \@a; }
        else { my $v; $store{$key} = \$v; push @go, $spec, \$v; }
    }
    my @w;
    # Getopt::Long ends each warning with one newline: drop that one only.
    local $SIG{__WARN__} = sub { my $m = shift; $m =~ s/\n\z//; push @w, $m };
    @ARGV = @{$c->{args}};
    my $ok = eval { GetOptions(@go) } ? JSON::PP::true : JSON::PP::false;
    my %vals;
    for my $k (keys %store) {
        my $r = $store{$k};
        $vals{$k} = ref($r) eq 'ARRAY' ? [@$r] : (defined $$r ? "$$r" : undef);
    }
    push @out, { values => \%vals, rest => [@ARGV], warnings => \@w, ok => $ok,
                 died => "$@" };
}
print JSON::PP->new->utf8->canonical->encode(\@out);
"#;

    fn cfg_json(cfg: Config) -> serde_json::Value {
        serde_json::json!({
            "bundling": cfg.bundling,
            "pass_through": cfg.pass_through,
            "permute": cfg.permute,
            "ignore_case": cfg.ignore_case,
            "auto_abbrev": cfg.auto_abbrev,
        })
    }

    /// Renders Perl's answer for one case the way [`render_parsed`] renders ours.
    fn render_perl(specs: &[&str], answer: &serde_json::Value) -> String {
        let strs = |v: &serde_json::Value| -> Vec<String> {
            v.as_array()
                .map(|a| {
                    a.iter()
                        .map(|s| s.as_str().expect("string").to_string())
                        .collect()
                })
                .unwrap_or_default()
        };
        let values = &answer["values"];
        let died = answer["died"].as_str().unwrap_or_default();
        assert!(died.is_empty(), "Perl died: {died}");
        render(
            specs,
            |key, kind| {
                let v = &values[key];
                match kind {
                    Kind::Flag => (!v.is_null()).then(|| key.to_string()),
                    Kind::Str => v.as_str().map(|s| format!("{key}={s:?}")),
                    Kind::List => {
                        let l = strs(v);
                        (!l.is_empty()).then(|| format!("{key}={l:?}"))
                    }
                }
            },
            &strs(&answer["rest"]),
            &strs(&answer["warnings"]),
            answer["ok"].as_bool().expect("ok is a boolean"),
        )
    }

    /// One differential case: spec list, config, arguments, expected rendering if stated.
    type DiffCase = (
        &'static [&'static str],
        Config,
        &'static [&'static str],
        Option<&'static str>,
    );

    /// Argument vectors for the differential test, per spec list and config, with what we
    /// expect where an expectation table states it.
    fn differential_cases() -> Vec<DiffCase> {
        let mut cases: Vec<DiffCase> = Vec::new();
        let rm: &[&[&str]] = &[
            &["-v", "img"],
            &["-x", "img"],
            &["img", "-x"],
            &["--xcat", "img"],
            &["--x", "img"],
            &["--Verbose", "--HELP"],
            &["-o"],
            &["-Vo"],
            &["-Vox", "-ay", "-p", "z"],
            &["-oV"],
            &["-o=x"],
            &["-o", "-x"],
            &["-o", "--"],
            &["-o", ""],
            &["-o", "a", "-o", "b"],
            &["--o=", "img"],
            &["--xcatdef=1"],
            &["--xcatdef=", "img"],
            &["-help"],
            &["-xV", "-Vx"],
            &["-xyV"],
            &["a", "-V", "b", "--", "-h", "c"],
            &["--", "--"],
            &["-", "-V", "-"],
            &["", "img", ""],
            &["+v", "+xcat", "+V", "+xcatdef=1", "+", "+Foo"],
            &["---V", "--=", "--=x"],
            &["-Vé", "é", "--É", "-É"],
            &["--foo=bar", "--FOO"],
            &["img", "-o", "img2", "-a"],
            &["-o", "a b\n", "-p\tq", "--a=x=y"],
            &["-\n", "--\n", "-o\n"],
        ];
        let pack: &[&[&str]] = &[
            &[
                "-p", "compute", "-a", "x86_64", "-o", "rhels8", "-m", "cpio",
            ],
            &["-czstd", "img"],
            &["--comp", "pigz", "--track=t"],
            &["--profile=", "x"],
            &["--Profile=x", "--P=y", "-P", "z"],
            &["--nosync", "-hv", "--ver", "--v"],
            &["-vp"],
            &["--method", "-", "--tracker", "-x"],
            &["--tracker=x=y", "-c=z", "--=p", "-p=", "-p", "="],
        ];
        let gen: &[&[&str]] = &[
            &["--i", "x", "--in", "--ig", "--no", "--d"],
            &["--o", "rhels8", "--on", "--onlyinitrd=1"],
            &["--kern", "/k", "--perm=755", "--te", "/t", "img"],
            &[
                "-n",
                "e1000,ixgbe",
                "-i",
                "eth0",
                "-r",
                "eth1",
                "-k",
                "5.14",
            ],
            &["-dryrun", "--dryrun", "--DRY"],
            &["-ao", "x", "-g"],
        ];
        let exp: &[&[&str]] = &[
            &["img", "img.tgz"],
            &["-?", "--?", "--he"],
            &["-help"],
            &["-e", "a", "-eb", "--extra=c", "--ex", "d", "img"],
            &["-R", "h1", "--R=h2", "--r", "h3", "-r", "h4"],
            &["-V", "--VERBOSE", "--Verb"],
            &["-vpscript", "-p"],
            &["--extra=", "--post", "-v"],
            &["-e", "", "-e", "é", "-eé"],
            &["--x", "img", "--hel=1", "--", "-v"],
            &["+e", "x", "+p=y", "+"],
            &["---", "-", "--", "-x"],
        ];
        let amb: &[&[&str]] = &[
            &["--ver", "--v", "--vx"],
            &["--verb", "--vers=1", "--vxf"],
            &["--VER", "x"],
        ];
        let aliases: &[&[&str]] = &[
            &["--re", "x", "--rem=y", "--quiet", "--Q", "-Q", "-q", "--q"],
            &["-R", "a", "-Rb", "--Remote", "c"],
        ];
        for &args in rm {
            for cfg in [PT, NPT, PLAIN, ORDER_PT, ORDER_NPT, STRICT] {
                cases.push((RMIMAGE, cfg, args, None));
            }
        }
        for &args in pack {
            for cfg in [PT, NPT] {
                cases.push((PACKIMAGE, cfg, args, None));
            }
        }
        for &args in gen {
            for cfg in [PT, NPT, ORDER_PT] {
                cases.push((GENIMAGE, cfg, args, None));
            }
        }
        for &args in exp {
            for cfg in [NPT, PT, ORDER_NPT, STRICT] {
                cases.push((IMGEXPORT, cfg, args, None));
            }
        }
        for &args in amb {
            for cfg in [NPT, PT, PLAIN] {
                cases.push((AMBIGUOUS, cfg, args, None));
            }
        }
        for &args in aliases {
            for cfg in [NPT, PT, STRICT] {
                cases.push((ALIASES, cfg, args, None));
            }
        }
        for &(specs, cfg, table) in EXPECTATIONS {
            for &(args, want) in table {
                cases.push((specs, cfg, args, Some(want)));
            }
        }
        cases
    }

    #[test]
    #[allow(clippy::print_stderr)]
    fn matches_real_getopt_long() {
        use std::io::Write;
        use std::process::{Command, Stdio};

        let cases = differential_cases();
        let input: Vec<serde_json::Value> = cases
            .iter()
            .map(|(specs, cfg, args, _)| {
                serde_json::json!({ "specs": specs, "cfg": cfg_json(*cfg), "args": args })
            })
            .collect();
        let child = Command::new("perl")
            .arg("-e")
            .arg(PERL_SCRIPT)
            .env_remove("POSIXLY_CORRECT")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn();
        let mut child = match child {
            Ok(child) => child,
            Err(e) => {
                eprintln!("skipping matches_real_getopt_long: cannot run perl: {e}");
                return;
            }
        };
        let json = serde_json::to_vec(&input).expect("cases encode");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(&json)
            .expect("write cases to perl");
        let out = child.wait_with_output().expect("perl runs");
        assert!(
            out.status.success(),
            "perl failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let answers: Vec<serde_json::Value> =
            serde_json::from_slice(&out.stdout).expect("perl answers JSON");
        assert_eq!(answers.len(), cases.len());

        let mut failures = Vec::new();
        for ((specs, cfg, args, want), answer) in cases.iter().zip(&answers) {
            let ours = render_parsed(specs, &parse(specs, *cfg, &strings(args)));
            let perl = render_perl(specs, answer);
            if ours != perl || want.is_some_and(|want| want != perl) {
                failures.push(format!(
                    "specs {specs:?} cfg {cfg:?} args {args:?}\n  perl {perl}\n  ours {ours}\n  want {}",
                    want.unwrap_or("(not stated)")
                ));
            }
        }
        assert!(
            failures.is_empty(),
            "{} of {} cases differ from Getopt::Long:\n{}",
            failures.len(),
            cases.len(),
            failures.join("\n")
        );
        assert!(cases.len() >= 40);
    }
}
