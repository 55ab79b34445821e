//! The exlist grammar and the file selection packimage makes from it.
//!
//! An osimage's `linuximage.exlist` names files of patterns that decide which paths of the
//! root tree go into the archive. This module reads those files, expands `#INCLUDE:file#`,
//! and decides each path exactly as the union of xCAT's two `find` runs would
//! (`packimage.pm` l.324-394 and `include_file` l.712-734; spec §3.5, §3.6). It is pure: it
//! knows neither the host, nor xCAT tables, nor any archive format; the only files it opens
//! are exlist files (through [`read_exlist`]) and, for [`timezone_includes`], symlinks inside
//! the image.
//!
//! # Grammar (kept from xCAT)
//!
//! * Each line is one pattern. A comment runs from the first `#` (and the whitespace before
//!   it) to the end of the line, so `#` can never be part of a pattern. Blank and
//!   whitespace-only lines are skipped.
//! * A leading `+` makes an **include** pattern (the `+` is removed); anything else is an
//!   **exclude** pattern, with one leading `-` removed if present.
//! * `#INCLUDE:path#` is replaced by the lines of `path`, recursively. The path is one or
//!   more bytes other than `#`, `^` and newline. A relative path is resolved against the
//!   directory of the **top-level** exlist file, also inside nested includes (as xCAT does).
//! * Patterns are GNU `find -path` globs ([`path_glob_match`]) matched against `./rel/path`
//!   (the root itself is `.`): `*` matches `/` too, so `./usr/share/doc*` excludes the
//!   directory and everything below it, while `./dir` without `*` excludes only the directory
//!   entry and keeps its children. An absolute pattern (`/usr/share/doc`) or one ending in `/`
//!   never matches; [`Rule::lint`] says so.
//! * Patterns of all exlist files form one selection, plus five built-in statelite excludes
//!   ([`STATELITE_EXCLUDES`]) and the time-zone includes (§3.5). A path is kept iff no exclude
//!   pattern matches it **or** any include pattern matches it, whatever the order of the lines
//!   ([`Selection::decide`]). Include-back also overrides the built-in excludes, because
//!   xCAT's include `find` never applies them.
//!
//! # Deliberate deviations from xCAT (spec §7)
//!
//! * **E13, whitespace.** xCAT keeps leading and trailing whitespace and a trailing `\r` in
//!   top-level lines, so such patterns silently never match. Here leading whitespace (before
//!   and after the `+`/`-` sign) and trailing whitespace including `\r` are trimmed, so a
//!   Windows-edited or sloppily indented exlist works. No path starts with whitespace, so the
//!   leading trim can only make a dead pattern live. A trailing space that is escaped (`\ `)
//!   is kept, so a name ending in a space can still be written.
//! * **`..` in a pattern.** A pattern with a `..` component (`../etc/*`, `+./a/../../x`) is
//!   an error naming the file and line. The walk's paths never contain `..`, so xCAT keeps
//!   such a line as a pattern that silently matches nothing; whoever wrote it meant a path
//!   outside the image, which an exlist can never select.
//! * **E13, missing files.** A missing or unreadable exlist or `#INCLUDE:` file is an error
//!   ([`ExlistError`], with the file and line of the directive) instead of silently
//!   contributing nothing (xCAT turns it into `#INCLUDEBAD:...#`, a comment).
//! * **E13, attribute.** [`split_exlist_attr`] trims whitespace around each comma-separated
//!   name and drops empty ones; xCAT tries to open `" b.exlist"`.
//! * **E12, cycles.** An include cycle is an error naming the chain, and nesting deeper than
//!   [`MAX_INCLUDE_DEPTH`] is an error; xCAT loops forever. So is more than [`MAX_INCLUDES`]
//!   expansions in all (files that each include the next twice; found by fuzzing).
//! * **E12, joined lines.** xCAT splices the included text into the line without a trailing
//!   newline, so text after a directive (or a second directive on the same line) is glued to
//!   the last included line, and text before it to the first one. Here every include
//!   contributes whole lines: the text before a directive, each included line, and the text
//!   after it are separate lines.
//! * **Directives inside comments.** A directive is recognised only where a comment could
//!   start, i.e. when no other `#` precedes it in what is left of the line, so
//!   `# old: #INCLUDE:x#` and `##INCLUDE:x#` are plain comments. xCAT expands those too and
//!   swallows the first included line into the comment.
//! * **Include path.** Whitespace around the path in `#INCLUDE: path #` is trimmed (xCAT's
//!   two-argument `open` trims only trailing whitespace).
//! * **Time zone (E11).** The time-zone include lines are extra rules, not text appended to
//!   each file (xCAT glues them to the last line of a file without a final newline). They are
//!   resolved inside the image: absolute symlinks are taken relative to the image root, `..`
//!   never climbs above it, and every symlink on the way is included, not only the first link
//!   and the final target. xCAT resolves on the host with `abs_path` and a substring of
//!   `rootimg_dir`'s length, which is garbage when the image path contains a symlink.
//!   Glob characters in these paths are escaped, since they name literal files.
//! * **E14, duplicates.** Each path gets one decision, so a path matched by an include and by
//!   no exclude is archived once, not twice.
//! * **E5.** Patterns are used verbatim with no shell in between, so a `'` in a pattern
//!   works instead of breaking the quoting.
//! * **Locale.** Matching is byte-wise, like glibc `fnmatch` in the C locale. xCAT's `find`
//!   ran in xcatd's locale; under UTF-8 its `?` matches one character, not one byte.

use std::collections::VecDeque;
use std::ffi::OsStr;
use std::fmt;
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

/// The exclusions packimage always adds after all exlist files (`packimage.pm` l.385).
pub const STATELITE_EXCLUDES: [&[u8]; 5] = [
    b"./etc/init.d/statelite",
    b"./etc/rc.sysinit.backup",
    b"./.statelite*",
    b"./.default*",
    b"./.statebackup*",
];

/// How deeply `#INCLUDE:` directives may nest before [`parse_exlist`] gives up.
pub const MAX_INCLUDE_DEPTH: usize = 32;

/// How many `#INCLUDE:` expansions one top-level exlist may make in all. Depth alone does not
/// bound the work: files that each include the next one twice expand 2^depth times.
pub const MAX_INCLUDES: usize = 1024;

/// Where a [`Rule`] comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleOrigin {
    /// A line of an exlist file; [`Rule::file`] and [`Rule::line`] say which.
    Exlist,
    /// An include added for `site.timezone` ([`timezone_includes`]).
    Timezone,
    /// One of the built-in [`STATELITE_EXCLUDES`].
    Statelite,
}

/// One pattern line after parsing, with where it came from (for `--explain` and errors).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// `true` for a `+` include-back line, `false` for an exclude line.
    pub include: bool,
    /// The `find -path` glob, without its `+`/`-` sign.
    pub pattern: Vec<u8>,
    /// The exlist (or included) file the line is in; empty for built-in rules.
    pub file: PathBuf,
    /// 1-based line number in [`Rule::file`]; 0 for built-in rules.
    pub line: usize,
    /// Whether this is an exlist line or a rule packimage adds itself.
    pub origin: RuleOrigin,
}

impl Rule {
    /// Why this pattern can never match a path of the walk, if it cannot.
    ///
    /// The semantics stay those of xCAT (the rule is kept and simply matches nothing); this
    /// is for a warning.
    pub fn lint(&self) -> Option<&'static str> {
        let p = &self.pattern;
        if p.is_empty() {
            return Some("empty pattern; it matches nothing");
        }
        if p[0] == b'/' {
            return Some(
                "absolute paths never match: patterns are matched against ./relative/paths; \
                 write e.g. ./usr/share/doc*",
            );
        }
        if p.ends_with(b"/") {
            return Some(
                "a pattern ending in / never matches (find -path); drop the slash, \
                 e.g. ./usr/share/doc*",
            );
        }
        if !Glob::new(p).can_match_walk_path() {
            return Some(
                "this pattern can never match: paths look like ./dir/file (start it with ./)",
            );
        }
        None
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pat = String::from_utf8_lossy(&self.pattern);
        let sign = if self.include { "+" } else { "" };
        match self.origin {
            RuleOrigin::Exlist => {
                write!(f, "{}:{}: {}{}", self.file.display(), self.line, sign, pat)
            }
            RuleOrigin::Timezone => write!(f, "site.timezone include +{pat}"),
            RuleOrigin::Statelite => write!(f, "built-in statelite exclude {pat}"),
        }
    }
}

/// A problem reading an exlist: the file, the line (0 for the file as a whole) and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExlistError {
    /// The file the problem is in.
    pub file: PathBuf,
    /// 1-based line of the offending directive, or 0 when the file itself is the problem.
    pub line: usize,
    /// What went wrong.
    pub msg: String,
}

impl fmt::Display for ExlistError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file.display(), self.msg)
        } else {
            write!(f, "{}:{}: {}", self.file.display(), self.line, self.msg)
        }
    }
}

impl std::error::Error for ExlistError {}

/// Splits `linuximage.exlist` on `,`, trimming whitespace around each name and dropping empty
/// names (deliberate fix of E13: xCAT trims nothing).
pub fn split_exlist_attr(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Reads one top-level exlist file, expanding `#INCLUDE:path#`, and returns its rules in order.
///
/// Relative include paths are resolved against the top-level file's directory (as xCAT does,
/// also in nested includes). A cycle, nesting deeper than [`MAX_INCLUDE_DEPTH`], or a missing
/// or unreadable file is an error here, unlike xCAT, which loops forever on a cycle (E12) and
/// silently drops a file it cannot open (E13).
pub fn read_exlist(path: &Path) -> Result<Vec<Rule>, ExlistError> {
    let text = std::fs::read(path).map_err(|e| ExlistError {
        file: path.to_path_buf(),
        line: 0,
        msg: format!("cannot read exlist: {e}"),
    })?;
    parse_exlist(&text, path, &mut |p| std::fs::read(p))
}

/// Parses exlist text (the grammar of the module doc) that came from `file`.
///
/// `read_file` reads included files, so tests can use an in-memory file system; paths given
/// to it are already resolved against `file`'s directory.
pub fn parse_exlist(
    text: &[u8],
    file: &Path,
    read_file: &mut dyn FnMut(&Path) -> io::Result<Vec<u8>>,
) -> Result<Vec<Rule>, ExlistError> {
    let mut parser = Parser {
        base: file.parent().map(Path::to_path_buf).unwrap_or_default(),
        read_file,
        stack: vec![normalize(file)],
        rules: Vec::new(),
        includes: 0,
    };
    parser.text(text, file)?;
    Ok(parser.rules)
}

struct Parser<'a> {
    /// Directory of the top-level file: relative includes resolve against it.
    base: PathBuf,
    read_file: &'a mut dyn FnMut(&Path) -> io::Result<Vec<u8>>,
    /// Files being expanded, outermost first (lexically normalised), for cycle detection.
    stack: Vec<PathBuf>,
    rules: Vec<Rule>,
    /// `#INCLUDE:` expansions so far, against [`MAX_INCLUDES`].
    includes: usize,
}

impl Parser<'_> {
    fn text(&mut self, text: &[u8], file: &Path) -> Result<(), ExlistError> {
        for (i, raw) in text.split(|&b| b == b'\n').enumerate() {
            self.line(raw, file, i + 1)?;
        }
        Ok(())
    }

    /// One physical line: split around `#INCLUDE:` directives, the rest is pattern or comment.
    fn line(&mut self, raw: &[u8], file: &Path, line: usize) -> Result<(), ExlistError> {
        let mut rest = raw;
        loop {
            let Some(hash) = rest.iter().position(|&b| b == b'#') else {
                return self.segment(rest, file, line);
            };
            // Text before the `#` is a line of its own, whether a directive or a comment follows.
            self.segment(&rest[..hash], file, line)?;
            match directive(&rest[hash..]) {
                Some((path, len)) => {
                    self.include(path, file, line)?;
                    rest = &rest[hash + len..];
                }
                None => return Ok(()), // a comment: the rest of the line is dropped
            }
        }
    }

    /// A piece of a line with no `#` in it: trim it and turn it into a rule unless blank.
    fn segment(&mut self, seg: &[u8], file: &Path, line: usize) -> Result<(), ExlistError> {
        let seg = trim(seg);
        if seg.is_empty() {
            return Ok(());
        }
        let (include, pat) = match seg[0] {
            b'+' => (true, &seg[1..]),
            b'-' => (false, &seg[1..]),
            _ => (false, seg),
        };
        let pattern = trim_start(pat).to_vec();
        if pattern.split(|&b| b == b'/').any(|c| c == b"..") {
            return Err(ExlistError {
                file: file.to_path_buf(),
                line,
                msg: format!(
                    "pattern {} has a .. component; exlist patterns match paths inside the \
                     image (./dir/file) and cannot reach outside it",
                    String::from_utf8_lossy(&pattern)
                ),
            });
        }
        self.rules.push(Rule {
            include,
            pattern,
            file: file.to_path_buf(),
            line,
            origin: RuleOrigin::Exlist,
        });
        Ok(())
    }

    fn include(&mut self, raw: &[u8], file: &Path, line: usize) -> Result<(), ExlistError> {
        let err = |msg: String| ExlistError {
            file: file.to_path_buf(),
            line,
            msg,
        };
        let name = trim_start(raw);
        let end = name
            .iter()
            .rposition(|&b| !is_space(b))
            .map_or(0, |i| i + 1);
        let name = &name[..end];
        if name.is_empty() {
            return Err(err("empty path in #INCLUDE:#".into()));
        }
        let name = Path::new(OsStr::from_bytes(name));
        let path = if name.is_absolute() {
            name.to_path_buf()
        } else {
            self.base.join(name)
        };
        let norm = normalize(&path);
        if let Some(i) = self.stack.iter().position(|p| *p == norm) {
            let chain: Vec<String> = self.stack[i..]
                .iter()
                .chain(std::iter::once(&norm))
                .map(|p| p.display().to_string())
                .collect();
            return Err(err(format!("#INCLUDE: cycle: {}", chain.join(" -> "))));
        }
        self.includes += 1;
        if self.includes > MAX_INCLUDES {
            return Err(err(format!(
                "#INCLUDE: more than {MAX_INCLUDES} includes in all (at {}); files may include \
                 each other, but not this often",
                path.display()
            )));
        }
        if self.stack.len() > MAX_INCLUDE_DEPTH {
            return Err(err(format!(
                "#INCLUDE: nested more than {MAX_INCLUDE_DEPTH} levels deep at {}",
                path.display()
            )));
        }
        let text = (self.read_file)(&path).map_err(|e| {
            err(format!(
                "cannot read #INCLUDE: file {}: {e}",
                path.display()
            ))
        })?;
        self.stack.push(norm);
        self.text(&text, &path)?;
        self.stack.pop();
        Ok(())
    }
}

/// If `s` (which starts with `#`) starts with a directive `#INCLUDE:<path>#`, its path and
/// length. The path is one or more bytes other than `#`, `^` and newline, as in xCAT's regex.
fn directive(s: &[u8]) -> Option<(&[u8], usize)> {
    const TAG: &[u8] = b"#INCLUDE:";
    let body = s.strip_prefix(TAG)?;
    let end = body
        .iter()
        .position(|&b| matches!(b, b'#' | b'^' | b'\n'))?;
    (end > 0 && body[end] == b'#').then(|| (&body[..end], TAG.len() + end + 1))
}

/// Perl's `\s` on a byte string: space, `\t`, `\n`, vertical tab, form feed, `\r`.
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

fn trim_start(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|&b| !is_space(b)).unwrap_or(s.len());
    &s[start..]
}

/// Trims leading whitespace and trailing whitespace, except a trailing whitespace byte escaped
/// by an odd number of backslashes.
fn trim(s: &[u8]) -> &[u8] {
    let s = trim_start(s);
    let mut end = s.len();
    while end > 0 && is_space(s[end - 1]) {
        let backslashes = s[..end - 1]
            .iter()
            .rev()
            .take_while(|&&b| b == b'\\')
            .count();
        if backslashes % 2 == 1 {
            break;
        }
        end -= 1;
    }
    &s[..end]
}

/// Lexical normalisation for cycle detection: drops `.` components and doubled slashes.
fn normalize(p: &Path) -> PathBuf {
    p.components()
        .filter(|c| !matches!(c, Component::CurDir))
        .collect()
}

/// What decided a path, so `--explain` can say which rule did it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision<'a> {
    /// Kept: no exclude rule matched, but an include rule did (redundantly; xCAT listed such
    /// a path twice, E14). The include rule is in [`Selection::explain`].
    Keep,
    /// Kept: no rule matched the path at all.
    KeepNoRules,
    /// Left out: this exclude rule (the first matching one, in order) matched and no include
    /// rule did.
    Excluded(&'a Rule),
    /// Kept although an exclude rule matched, because this include rule (the first matching
    /// one, in order) brings it back. The exclude rule is in [`Selection::explain`].
    IncludedBack(&'a Rule),
}

impl Decision<'_> {
    /// Whether the path goes into the archive.
    pub fn is_kept(&self) -> bool {
        !matches!(self, Decision::Excluded(_))
    }
}

/// Both rules that bear on a path, for `--explain`: the first matching exclude rule and the
/// first matching include rule, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Explanation<'a> {
    /// The first exclude rule matching the path, if any.
    pub exclude: Option<&'a Rule>,
    /// The first include rule matching the path, if any.
    pub include: Option<&'a Rule>,
}

/// The combined selection of all exlist files plus the built-in statelite excludes and the
/// time-zone include lines.
///
/// [`Selection::decide`] may be called from several threads at once.
#[derive(Debug)]
pub struct Selection {
    rules: Vec<Rule>,
    globs: Vec<Glob>,
    excludes: Vec<usize>,
    includes: Vec<usize>,
    used: Vec<AtomicBool>,
}

impl Selection {
    /// Combines exlist rules (in their order), the time-zone include patterns (from
    /// [`timezone_includes`]) and the built-in [`STATELITE_EXCLUDES`], in that order.
    pub fn new(rules: Vec<Rule>, timezone_includes: Vec<Vec<u8>>) -> Selection {
        let mut rules = rules;
        rules.extend(timezone_includes.into_iter().map(|pattern| Rule {
            include: true,
            pattern,
            file: PathBuf::new(),
            line: 0,
            origin: RuleOrigin::Timezone,
        }));
        rules.extend(STATELITE_EXCLUDES.iter().map(|p| Rule {
            include: false,
            pattern: p.to_vec(),
            file: PathBuf::new(),
            line: 0,
            origin: RuleOrigin::Statelite,
        }));
        let globs = rules.iter().map(|r| Glob::new(&r.pattern)).collect();
        let (includes, excludes) = (0..rules.len()).partition(|&i| rules[i].include);
        let used = rules.iter().map(|_| AtomicBool::new(false)).collect();
        Selection {
            rules,
            globs,
            excludes,
            includes,
            used,
        }
    }

    /// All rules in order: exlist rules, time-zone includes, statelite excludes.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The position in [`Selection::rules`] of a rule returned by [`Selection::decide`], e.g.
    /// to count bytes per rule.
    pub fn rule_index(&self, rule: &Rule) -> Option<usize> {
        self.rules.iter().position(|r| std::ptr::eq(r, rule))
    }

    /// Decides a path given as `./rel/path` bytes (the root is `.`): kept iff no exclude rule
    /// matches it, or any include rule matches it. That is exactly the union of xCAT's two
    /// `find` runs, each path listed once.
    ///
    /// Every rule that has not matched anything yet is tried too, for [`Selection::unused_rules`].
    pub fn decide(&self, path: &[u8]) -> Decision<'_> {
        let exclude = self.first_match(&self.excludes, path, true);
        let include = self.first_match(&self.includes, path, true);
        match (exclude, include) {
            (None, None) => Decision::KeepNoRules,
            (None, Some(_)) => Decision::Keep,
            (Some(e), None) => Decision::Excluded(&self.rules[e]),
            (Some(_), Some(i)) => Decision::IncludedBack(&self.rules[i]),
        }
    }

    /// The first exclude and the first include rule matching `path`. Unlike
    /// [`Selection::decide`] this does not count towards [`Selection::unused_rules`].
    pub fn explain(&self, path: &[u8]) -> Explanation<'_> {
        let rule = |set: &[usize]| self.first_match(set, path, false).map(|i| &self.rules[i]);
        Explanation {
            exclude: rule(&self.excludes),
            include: rule(&self.includes),
        }
    }

    /// The first rule of `set` matching `path`. With `track`, also marks every not-yet-used
    /// rule of `set` that matches, which means trying those even after the first match.
    fn first_match(&self, set: &[usize], path: &[u8], track: bool) -> Option<usize> {
        let mut first = None;
        for &i in set {
            let used = !track || self.used[i].load(Ordering::Relaxed);
            if first.is_some() && used {
                continue;
            }
            if self.globs[i].matches(path) {
                if !used {
                    self.used[i].store(true, Ordering::Relaxed);
                }
                first.get_or_insert(i);
                if !track {
                    break;
                }
            }
        }
        first
    }

    /// Exlist rules that never matched any path passed to [`Selection::decide`] so far (for a
    /// warning). Built-in and time-zone rules are not reported.
    pub fn unused_rules(&self) -> Vec<&Rule> {
        self.rules
            .iter()
            .zip(&self.used)
            .filter(|(r, u)| r.origin == RuleOrigin::Exlist && !u.load(Ordering::Relaxed))
            .map(|(r, _)| r)
            .collect()
    }
}

/// The include patterns for `site.timezone` (§3.5): `./usr/share/zoneinfo/<tz>` and, when the
/// zone file is reached through symlinks, every symlink on the way and the real file.
///
/// Symlinks are resolved inside the image: an absolute target is relative to `rootimg`, `..`
/// stops at the image root, and nothing outside `rootimg` is looked at (deliberate fix of
/// E11, see the module doc). A `tz` that is absolute or contains `..` is not resolved. Glob
/// characters are escaped, so each pattern matches exactly its path. An empty `tz` gives no
/// patterns.
pub fn timezone_includes(rootimg: &Path, tz: &str) -> Vec<Vec<u8>> {
    if tz.is_empty() {
        return Vec::new();
    }
    let literal = [b"./usr/share/zoneinfo/".as_slice(), tz.as_bytes()].concat();
    let mut out = vec![glob_escape(&literal)];
    let tz_path = Path::new(tz);
    if tz_path.is_absolute() || tz_path.components().any(|c| c == Component::ParentDir) {
        return out;
    }
    let rel = [b"usr/share/zoneinfo/".as_slice(), tz.as_bytes()].concat();
    let (links, real) = resolve_in_root(rootimg, &rel);
    for p in links.into_iter().chain(real) {
        let walk_path = [b"./".as_slice(), &p].concat();
        let pat = glob_escape(&walk_path);
        if walk_path != literal && !out.contains(&pat) {
            out.push(pat);
        }
    }
    out
}

/// Resolves `rel` (relative to `root`) the way a process chrooted to `root` would. Returns the
/// symlinks passed on the way and, if every component exists, the resolved path, all as
/// root-relative byte paths (`usr/share/...`).
fn resolve_in_root(root: &Path, rel: &[u8]) -> (Vec<Vec<u8>>, Option<Vec<u8>>) {
    const MAX_LINKS: usize = 40; // Linux's limit for one lookup
    let mut todo: VecDeque<Vec<u8>> = rel.split(|&b| b == b'/').map(<[u8]>::to_vec).collect();
    let mut cur: Vec<Vec<u8>> = Vec::new();
    let mut links = Vec::new();
    let mut hops = 0;
    while let Some(c) = todo.pop_front() {
        match c.as_slice() {
            b"" | b"." => continue,
            b".." => {
                cur.pop();
                continue;
            }
            _ => {}
        }
        cur.push(c);
        let joined = cur.join(&b'/');
        let on_disk = root.join(OsStr::from_bytes(&joined));
        let Ok(meta) = std::fs::symlink_metadata(&on_disk) else {
            return (links, None);
        };
        if !meta.file_type().is_symlink() {
            continue;
        }
        hops += 1;
        let Ok(target) = std::fs::read_link(&on_disk) else {
            return (links, None);
        };
        if hops > MAX_LINKS {
            return (links, None);
        }
        links.push(joined);
        cur.pop();
        let target = target.into_os_string().into_vec();
        if target.first() == Some(&b'/') {
            cur.clear();
        }
        for part in target.split(|&b| b == b'/').rev() {
            todo.push_front(part.to_vec());
        }
    }
    (links, Some(cur.join(&b'/')))
}

/// Escapes the glob characters `*`, `?`, `[` and `\` so the pattern matches only `s` itself.
fn glob_escape(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    for &b in s {
        if matches!(b, b'*' | b'?' | b'[' | b'\\') {
            out.push(b'\\');
        }
        out.push(b);
    }
    out
}

/// GNU `find -path` glob match, i.e. glibc `fnmatch(pattern, path, 0)` in the C locale.
///
/// `*` matches any sequence including `/`, `?` any one byte including `/`, `[...]` a set with
/// `!`/`^` negation, ranges, `[:class:]`, `[=c=]` and `[.c.]`, and `\` escapes the next byte;
/// a leading `.` is not special and the pattern must match the whole path. Bytes, not
/// characters. glibc's corner cases are reproduced too: an unterminated `[` is a literal `[`,
/// a trailing `\` or an unknown class name makes the pattern match nothing, a reversed range
/// is empty. The pattern ends at a NUL byte, as a C string would.
///
/// Checked against glibc 2.36 (`fnmatch`, and GNU find 4.9 in the tests). glibc before the fix
/// for its bug 28792 rejects a few unterminated sets, such as `[[`, that 2.36 takes literally.
pub fn path_glob_match(pattern: &[u8], path: &[u8]) -> bool {
    Glob::new(pattern).matches(path)
}

/// Sentinel in a bracket table: this byte does not match.
const NO: u32 = u32::MAX;

/// What the pattern does at one byte position.
#[derive(Debug, Clone)]
enum Step {
    /// The end of the pattern: the path must be used up.
    Accept,
    /// `*`: consume any byte and stay, or move on without consuming.
    Star,
    /// `?`: consume any one byte.
    Any,
    /// A literal byte, then continue at the position given.
    Lit(u8, u32),
    /// Nothing can match from here (a trailing `\`).
    Never,
    /// A bracket expression: for each byte, where to continue, or [`NO`].
    Set(Box<[u32; 256]>),
}

/// A compiled pattern: a small NFA whose states are byte positions in the pattern. Matching
/// simulates all states at once, so it is linear in the path whatever the pattern.
#[derive(Debug, Clone)]
struct Glob {
    /// Indexed by pattern position; `None` where no match can ever be.
    steps: Vec<Option<Step>>,
    /// Bytes every match must start with (the pattern's leading literals), to reject fast.
    prefix: Vec<u8>,
}

impl Glob {
    fn new(pattern: &[u8]) -> Glob {
        let p = match pattern.iter().position(|&b| b == 0) {
            Some(n) => &pattern[..n],
            None => pattern,
        };
        let mut steps: Vec<Option<Step>> = vec![None; p.len() + 1];
        let mut todo = vec![0usize];
        while let Some(pos) = todo.pop() {
            if steps[pos].is_some() {
                continue;
            }
            let step = if pos == p.len() {
                Step::Accept
            } else {
                match p[pos] {
                    b'*' => {
                        todo.push(pos + 1);
                        Step::Star
                    }
                    b'?' => {
                        todo.push(pos + 1);
                        Step::Any
                    }
                    b'\\' if pos + 1 == p.len() => Step::Never,
                    b'\\' => {
                        todo.push(pos + 2);
                        Step::Lit(p[pos + 1], (pos + 2) as u32)
                    }
                    b'[' => {
                        let mut table = Box::new([NO; 256]);
                        for b in 0..=255u8 {
                            if let Some(next) = bracket(p, pos, b) {
                                table[b as usize] = next as u32;
                                todo.push(next);
                            }
                        }
                        Step::Set(table)
                    }
                    c => {
                        todo.push(pos + 1);
                        Step::Lit(c, (pos + 1) as u32)
                    }
                }
            };
            steps[pos] = Some(step);
        }
        let mut prefix = Vec::new();
        let mut pos = 0;
        while let Some(Step::Lit(c, next)) = &steps[pos] {
            prefix.push(*c);
            pos = *next as usize;
        }
        Glob { steps, prefix }
    }

    fn matches(&self, s: &[u8]) -> bool {
        if !s.starts_with(&self.prefix) {
            return false;
        }
        if self.steps.len() <= 128 {
            self.run::<u128>(s)
        } else {
            self.run::<BigSet>(s)
        }
    }

    /// Adds `pos` and, through `*` (which may match nothing), the positions after it.
    fn add<S: StateSet>(&self, set: &mut S, mut pos: usize) {
        loop {
            set.insert(pos);
            match self.steps[pos] {
                Some(Step::Star) => pos += 1,
                _ => return,
            }
        }
    }

    fn run<S: StateSet>(&self, s: &[u8]) -> bool {
        let n = self.steps.len();
        let mut cur = S::empty(n);
        self.add(&mut cur, 0);
        for &b in s {
            let mut next = S::empty(n);
            let mut any = false;
            for pos in cur.iter(n) {
                let to = match &self.steps[pos] {
                    Some(Step::Star) => pos,
                    Some(Step::Any) => pos + 1,
                    Some(Step::Lit(c, to)) if *c == b => *to as usize,
                    Some(Step::Set(t)) if t[b as usize] != NO => t[b as usize] as usize,
                    _ => continue,
                };
                self.add(&mut next, to);
                any = true;
            }
            if !any {
                return false;
            }
            cur = next;
        }
        cur.contains(n - 1)
    }

    /// Where the automaton can go from `pos` on byte `b` (at most one place, or staying put).
    fn step(&self, pos: usize, b: u8) -> Option<usize> {
        match self.steps[pos].as_ref()? {
            Step::Star => Some(pos),
            Step::Any => Some(pos + 1),
            Step::Lit(c, to) if *c == b => Some(*to as usize),
            Step::Set(t) if t[b as usize] != NO => Some(t[b as usize] as usize),
            _ => None,
        }
    }

    /// Whether some path the walk can produce matches: `.` or `./name(/name)*` with non-empty
    /// names and no NUL. Exact: a search of the product with that path language.
    fn can_match_walk_path(&self) -> bool {
        // Path-language states: 0 start, 1 after "." (accepting), 2 after a '/', 3 in a name
        // (accepting).
        let lang = |q: u8, b: u8| -> Option<u8> {
            match (q, b) {
                (_, 0) => None,
                (0, b'.') => Some(1),
                (1 | 3, b'/') => Some(2),
                (2, b'/') => None,
                (2 | 3, _) => Some(3),
                _ => None,
            }
        };
        let n = self.steps.len();
        let mut seen = vec![[false; 4]; n];
        let mut todo = Vec::new();
        let push = |pos: usize, q: u8, seen: &mut Vec<[bool; 4]>, todo: &mut Vec<(usize, u8)>| {
            let mut pos = pos;
            loop {
                if !seen[pos][q as usize] {
                    seen[pos][q as usize] = true;
                    todo.push((pos, q));
                }
                match self.steps[pos] {
                    Some(Step::Star) => pos += 1,
                    _ => break,
                }
            }
        };
        push(0, 0, &mut seen, &mut todo);
        while let Some((pos, q)) = todo.pop() {
            if pos == n - 1 && (q == 1 || q == 3) {
                return true;
            }
            for b in 1..=255u8 {
                if let (Some(to), Some(q2)) = (self.step(pos, b), lang(q, b)) {
                    push(to, q2, &mut seen, &mut todo);
                }
            }
        }
        false
    }
}

/// A set of pattern positions.
trait StateSet {
    fn empty(n: usize) -> Self;
    fn insert(&mut self, i: usize);
    fn contains(&self, i: usize) -> bool;
    fn iter(&self, n: usize) -> impl Iterator<Item = usize>;
}

impl StateSet for u128 {
    fn empty(_: usize) -> Self {
        0
    }
    fn insert(&mut self, i: usize) {
        *self |= 1 << i;
    }
    fn contains(&self, i: usize) -> bool {
        *self & (1 << i) != 0
    }
    fn iter(&self, _: usize) -> impl Iterator<Item = usize> {
        let mut bits = *self;
        std::iter::from_fn(move || {
            if bits == 0 {
                return None;
            }
            let i = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            Some(i)
        })
    }
}

/// A position set for patterns longer than 127 bytes.
struct BigSet(Vec<u64>);

impl StateSet for BigSet {
    fn empty(n: usize) -> Self {
        BigSet(vec![0; n.div_ceil(64)])
    }
    fn insert(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }
    fn contains(&self, i: usize) -> bool {
        self.0[i / 64] & (1 << (i % 64)) != 0
    }
    fn iter(&self, n: usize) -> impl Iterator<Item = usize> {
        (0..n).filter(|&i| self.contains(i))
    }
}

/// Whether byte `b` belongs to the C-locale class `name`; `None` for an unknown class.
fn in_class(name: &[u8], b: u8) -> Option<bool> {
    Some(match name {
        b"alnum" => b.is_ascii_alphanumeric(),
        b"alpha" => b.is_ascii_alphabetic(),
        b"blank" => b == b' ' || b == b'\t',
        b"cntrl" => b.is_ascii_control(),
        b"digit" => b.is_ascii_digit(),
        b"graph" => b.is_ascii_graphic(),
        b"lower" => b.is_ascii_lowercase(),
        b"print" => b.is_ascii_graphic() || b == b' ',
        b"punct" => b.is_ascii_punctuation(),
        b"space" => matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r'),
        b"upper" => b.is_ascii_uppercase(),
        b"xdigit" => b.is_ascii_hexdigit(),
        _ => return None,
    })
}

/// Whether glibc takes `c` as part of a class name in `[:name:]`: `a` to `y`. (glibc tests
/// `c < 'a' || c >= 'z'`, so a `z` makes it a plain `[` instead.)
fn class_name_byte(c: u8) -> bool {
    (b'a'..=b'y').contains(&c)
}

/// glibc's limit on a class name inside `[:...:]`.
const CLASS_NAME_MAX: usize = 256;

/// How a `[:` inside a set reads.
enum ClassScan {
    /// `[:name:]`, and the position after it.
    Name(Vec<u8>, usize),
    /// A byte outside `a`-`y` came first: the `[` is an ordinary byte.
    NotAName,
    /// The name reached glibc's length limit: the pattern is ill-formed.
    TooLong,
}

/// The outcome of the bracket expression opening at `p[open] == b'['` for the path byte `b`:
/// the pattern position to continue at, or `None` for no match.
///
/// This follows glibc's behaviour in the C locale, including its corner cases (checked against
/// `fnmatch` and GNU find): the set is scanned item by item; an unknown class name met before
/// a match, a malformed `[.x.]`, or a `\` at the end makes it fail; running off the end of the
/// pattern without a match turns the `[` into a literal; after a match the rest of the set is
/// skipped with slightly different rules (a malformed `[=` there fails).
fn bracket(p: &[u8], open: usize, b: u8) -> Option<usize> {
    // Reads the pattern like a C string: 0 past the end.
    let at = |i: usize| p.get(i).copied().unwrap_or(0);
    // Scans a `[.sym.]` whose `.` is at `dot`; returns (symbol byte, position after `.]`).
    let collating = |dot: usize| -> Option<(u8, usize)> {
        let mut j = dot;
        loop {
            j += 1;
            match at(j) {
                b'.' if at(j + 1) == b']' => break,
                0 => return None,
                _ => {}
            }
        }
        (j - dot == 2).then(|| (p[dot + 1], j + 2))
    };

    // How glibc reads `[:name:]` whose `:` is at `colon`.
    let class_name = |colon: usize| -> ClassScan {
        let mut name = Vec::new();
        let mut j = colon;
        loop {
            if name.len() == CLASS_NAME_MAX {
                return ClassScan::TooLong;
            }
            j += 1;
            let ch = at(j);
            if ch == b':' && at(j + 1) == b']' {
                return ClassScan::Name(name, j + 2);
            }
            if !class_name_byte(ch) {
                return ClassScan::NotAName;
            }
            name.push(ch);
        }
    };
    // Whether an ordinary byte whose successor is at `i` starts a range.
    let range_follows = |i: usize| at(i) == b'-' && at(i + 1) != 0 && at(i + 1) != b']';

    let mut i = open + 1;
    let negated = matches!(at(i), b'!' | b'^');
    if negated {
        i += 1;
    }
    // `c` is the current item's first byte and `i` the position after it.
    let mut c = at(i);
    i += 1;
    let matched_at: usize = 'scan: loop {
        // An ordinary item: its byte, and whether a range may follow (glibc decides that
        // differently after a collating symbol). Classes and equivalences are handled here.
        let (start, is_range) = if c == b'\\' {
            let e = at(i);
            if e == 0 {
                return None;
            }
            i += 1;
            (e, range_follows(i))
        } else if c == b'[' && at(i) == b':' {
            match class_name(i) {
                ClassScan::TooLong => return None,
                ClassScan::NotAName => (b'[', range_follows(i)),
                ClassScan::Name(name, after) => {
                    if in_class(&name, b)? {
                        break 'scan after;
                    }
                    c = at(after);
                    i = after + 1;
                    if c == b']' {
                        return negated.then_some(i);
                    }
                    continue;
                }
            }
        } else if c == b'['
            && at(i) == b'='
            && at(i + 1) != 0
            && at(i + 2) == b'='
            && at(i + 3) == b']'
        {
            let ch = at(i + 1);
            i += 4;
            if b == ch {
                break 'scan i;
            }
            c = at(i);
            i += 1;
            if c == b']' {
                return negated.then_some(i);
            }
            continue;
        } else if c == 0 {
            // Unterminated: the `[` is an ordinary byte and matching goes on after it.
            return (b == b'[').then_some(open + 1);
        } else if c == b'[' && at(i) == b'.' {
            let (sym, after) = collating(i)?;
            i = after;
            (sym, at(i) == b'-' && at(i + 1) != 0)
        } else {
            // An ordinary byte; also a `[` that opens no well-formed `[=c=]`.
            (c, range_follows(i))
        };
        if !is_range && b == start {
            break 'scan i;
        }
        c = at(i);
        i += 1;
        if c == b'-' && at(i) != b']' {
            let mut end = at(i);
            i += 1;
            if end == b'[' && at(i) == b'.' {
                let (sym, after) = collating(i)?;
                end = sym;
                i = after;
            } else {
                if end == b'\\' {
                    end = at(i);
                    i += 1;
                }
                if end == 0 {
                    return None;
                }
            }
            if start <= b && b <= end {
                break 'scan i;
            }
            c = at(i);
            i += 1;
        }
        if c == b']' {
            // End of the set without a match.
            return negated.then_some(i);
        }
    };

    // Matched: skip the rest of the set.
    let mut i = matched_at;
    loop {
        let c = at(i);
        i += 1;
        match c {
            b']' => break,
            // glibc >= 2.36 (bug 28792): an unterminated set is a literal `[` here too.
            0 => return (b == b'[').then_some(open + 1),
            b'\\' => {
                if at(i) == 0 {
                    return None;
                }
                i += 1;
            }
            b'[' if at(i) == b':' => {
                let start = i;
                let mut j = i;
                let mut count = 0;
                loop {
                    j += 1;
                    count += 1;
                    if count == CLASS_NAME_MAX {
                        return None;
                    }
                    if at(j) == b':' && at(j + 1) == b']' {
                        i = j + 2;
                        break;
                    }
                    if !class_name_byte(at(j)) {
                        i = start;
                        break;
                    }
                }
            }
            b'[' if at(i) == b'=' => {
                if at(i + 1) == 0 || at(i + 2) != b'=' || at(i + 3) != b']' {
                    return None;
                }
                i += 4;
            }
            b'[' if at(i) == b'.' => {
                let mut j = i;
                loop {
                    j += 1;
                    match at(j) {
                        0 => return None,
                        b'.' if at(j + 1) == b']' => break,
                        _ => {}
                    }
                }
                i = j + 2;
            }
            _ => {}
        }
    }
    (!negated).then_some(i)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, BTreeSet};
    use std::process::Command;

    const STOCK: &[u8] = include_bytes!("../../tests/data/exlist/compute.rhels9.x86_64.exlist");
    const STOCK_NAME: &str = "/opt/xcat/share/xcat/netboot/rh/compute.rhels9.x86_64.exlist";

    /// An in-memory file system for includes.
    fn mem_fs(files: &[(&str, &str)]) -> impl FnMut(&Path) -> io::Result<Vec<u8>> {
        let map: BTreeMap<PathBuf, Vec<u8>> = files
            .iter()
            .map(|(p, t)| (PathBuf::from(p), t.as_bytes().to_vec()))
            .collect();
        move |p: &Path| {
            map.get(p)
                .cloned()
                .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "No such file or directory"))
        }
    }

    fn no_includes(p: &Path) -> io::Result<Vec<u8>> {
        panic!("unexpected include of {}", p.display())
    }

    fn parse(text: &str) -> Vec<Rule> {
        parse_exlist(
            text.as_bytes(),
            Path::new("/x/top.exlist"),
            &mut no_includes,
        )
        .unwrap()
    }

    /// (sign, pattern) pairs, `+` for includes and `-` for excludes.
    fn pats(rules: &[Rule]) -> Vec<String> {
        rules
            .iter()
            .map(|r| {
                let sign = if r.include { '+' } else { '-' };
                format!("{sign}{}", String::from_utf8_lossy(&r.pattern))
            })
            .collect()
    }

    fn origin(r: &Rule) -> (String, usize) {
        (r.file.display().to_string(), r.line)
    }

    fn m(p: &str, s: &str) -> bool {
        path_glob_match(p.as_bytes(), s.as_bytes())
    }

    // ----- grammar -------------------------------------------------------------------------

    #[test]
    fn patterns_with_dotdot_components_are_errors() {
        for (text, line) in [
            ("./tmp*\n../etc*\n", 2),
            ("+./../../etc/shadow\n", 1),
            ("  -./usr/..   # up\n", 1),
        ] {
            let e = parse_exlist(
                text.as_bytes(),
                Path::new("/x/top.exlist"),
                &mut no_includes,
            )
            .unwrap_err();
            assert_eq!(e.line, line, "{text:?}");
            assert!(e.msg.contains("has a .. component"), "{e}");
        }
        // `..` inside a name is not a component.
        assert_eq!(pats(&parse("./a..b*\n+./..x\n")), ["-./a..b*", "+./..x"]);
    }

    #[test]
    fn stock_exlist_parses_line_by_line() {
        let rules = parse_exlist(STOCK, Path::new(STOCK_NAME), &mut no_includes).unwrap();
        assert_eq!(rules.len(), 34);
        assert_eq!(rules.iter().filter(|r| r.include).count(), 7);
        assert_eq!(
            pats(&rules[..3]),
            ["-./boot*", "-./usr/include*", "-./usr/lib/locale*"]
        );
        assert_eq!(pats(&rules[17..18]), ["+./usr/share/i18n/en_US*"]);
        assert_eq!(origin(&rules[17]), (STOCK_NAME.to_string(), 18));
        assert_eq!(pats(&rules[33..]), ["-./tmp*"]);
        assert!(rules.iter().all(|r| r.origin == RuleOrigin::Exlist));
        for r in &rules {
            assert_eq!(r.lint(), None, "{r}");
        }
    }

    #[test]
    fn stock_exlist_decisions() {
        let rules = parse_exlist(STOCK, Path::new(STOCK_NAME), &mut no_includes).unwrap();
        let sel = Selection::new(rules, Vec::new());
        let line_of = |d: Decision<'_>| match d {
            Decision::Excluded(r) | Decision::IncludedBack(r) => Some(r.line),
            _ => None,
        };
        let ex = |p: &str| {
            let d = sel.decide(p.as_bytes());
            assert!(matches!(d, Decision::Excluded(_)), "{p}: {d:?}");
            line_of(d).unwrap()
        };
        let back = |p: &str| {
            let d = sel.decide(p.as_bytes());
            assert!(matches!(d, Decision::IncludedBack(_)), "{p}: {d:?}");
            line_of(d).unwrap()
        };
        assert_eq!(ex("./boot"), 1);
        assert_eq!(ex("./boot/vmlinuz-5.14"), 1);
        assert_eq!(ex("./usr/share/doc/bash/README"), 15);
        assert_eq!(ex("./usr/share/man"), 13); // line 13, not its duplicate on line 27
        assert_eq!(ex("./usr/share/locale/de/LC_MESSAGES/x.mo"), 20);
        assert_eq!(ex("./usr/share/zoneinfo/UTC"), 31);
        assert_eq!(ex("./tmpfiles.d"), 34); // `*` is not limited to one component
        assert_eq!(back("./usr/share/locale/en_US/LC_MESSAGES/x.mo"), 21);
        assert_eq!(back("./usr/share/locale/locale.alias"), 23);
        assert_eq!(back("./usr/lib/locale/C.utf8/LC_CTYPE"), 26);
        assert_eq!(back("./usr/share/i18n/en_US"), 18);
        // `./usr/share/locale/*` does not match the directory itself.
        assert_eq!(sel.decide(b"./usr/share/locale"), Decision::KeepNoRules);
        assert_eq!(sel.decide(b"."), Decision::KeepNoRules);
        assert_eq!(sel.decide(b"./usr/bin/ls"), Decision::KeepNoRules);
        let e = sel.explain(b"./usr/share/locale/C/x");
        assert_eq!(e.exclude.unwrap().line, 20);
        assert_eq!(e.include.unwrap().line, 22);
    }

    #[test]
    fn comments_and_blank_lines() {
        let rules = parse(
            "# a comment\n\
             ./a* # trailing comment\n\
             ./b#no space before\n\
             \x20  \t\n\
             \n\
             \x20   # indented comment\n\
             ./c*\t#\ttab\n\
             +./d#\n",
        );
        assert_eq!(pats(&rules), ["-./a*", "-./b", "-./c*", "+./d"]);
        assert_eq!(
            rules.iter().map(|r| r.line).collect::<Vec<_>>(),
            [2, 3, 7, 8]
        );
    }

    #[test]
    fn signs() {
        let rules = parse("+./in*\n-./out*\n./plain\n--./dash\n+-./x\n-+./y\n+\n-\n");
        assert_eq!(
            pats(&rules),
            ["+./in*", "-./out*", "-./plain", "--./dash", "+-./x", "-+./y", "+", "-"]
        );
        assert_eq!(rules[6].lint(), Some("empty pattern; it matches nothing"));
        assert!(rules[3].lint().is_some(), "-./dash can never match");
    }

    #[test]
    fn crlf_and_trailing_whitespace_are_trimmed_e13() {
        let rules = parse("./a*\r\n+./b* \t\r\n./c\r\n");
        assert_eq!(pats(&rules), ["-./a*", "+./b*", "-./c"]);
        let sel = Selection::new(rules, Vec::new());
        assert!(matches!(sel.decide(b"./a/x"), Decision::Excluded(_)));
        assert!(matches!(sel.decide(b"./c"), Decision::Excluded(_)));
    }

    #[test]
    fn leading_whitespace_is_trimmed_around_the_sign_e13() {
        let rules = parse("  ./a*\n\t+./b*\n+  ./c*\n -  ./d*\n");
        assert_eq!(pats(&rules), ["-./a*", "+./b*", "+./c*", "-./d*"]);
    }

    #[test]
    fn escaped_trailing_space_is_kept() {
        let rules = parse("./name\\ \n./two\\\\ \n");
        assert_eq!(pats(&rules), ["-./name\\ ", "-./two\\\\"]);
        assert!(m("./name\\ ", "./name "));
        assert!(!m("./name\\ ", "./name"));
    }

    #[test]
    fn split_attr_trims_and_drops_empty_e13() {
        assert_eq!(
            split_exlist_attr(" /a.exlist, /b.exlist ,,\t/c.exlist,"),
            ["/a.exlist", "/b.exlist", "/c.exlist"]
        );
        assert!(split_exlist_attr("").is_empty());
        assert!(split_exlist_attr(" , ").is_empty());
    }

    // ----- #INCLUDE: -----------------------------------------------------------------------

    #[test]
    fn include_expands_in_place_with_origins() {
        let mut fs = mem_fs(&[("/x/inc.exlist", "./i1*\n\n+./i2*   \n")]);
        let text = b"./before*\n#INCLUDE:inc.exlist#\n./after*\n";
        let rules = parse_exlist(text, Path::new("/x/top.exlist"), &mut fs).unwrap();
        assert_eq!(
            pats(&rules),
            ["-./before*", "-./i1*", "+./i2*", "-./after*"]
        );
        let origins: Vec<_> = rules.iter().map(origin).collect();
        assert_eq!(
            origins,
            [
                ("/x/top.exlist".into(), 1),
                ("/x/inc.exlist".into(), 1),
                ("/x/inc.exlist".into(), 3),
                ("/x/top.exlist".into(), 3)
            ]
        );
    }

    #[test]
    fn nested_relative_include_resolves_against_the_top_level_directory() {
        // As in xCAT: sub/a.exlist's "b.exlist" means /top/b.exlist, not /top/sub/b.exlist.
        let mut fs = mem_fs(&[
            ("/top/sub/a.exlist", "./a*\n#INCLUDE:b.exlist#\n"),
            ("/top/b.exlist", "./b*\n#INCLUDE:/abs/c.exlist#\n"),
            ("/abs/c.exlist", "./c*\n"),
            ("/top/sub/b.exlist", "./WRONG\n"),
        ]);
        let rules = parse_exlist(
            b"#INCLUDE:sub/a.exlist#\n",
            Path::new("/top/main.exlist"),
            &mut fs,
        )
        .unwrap();
        assert_eq!(pats(&rules), ["-./a*", "-./b*", "-./c*"]);
        assert_eq!(origin(&rules[2]), ("/abs/c.exlist".into(), 1));
    }

    #[test]
    fn include_of_a_relative_top_level_file() {
        let mut fs = mem_fs(&[("inc.exlist", "./i\n")]);
        let rules =
            parse_exlist(b"#INCLUDE:inc.exlist#", Path::new("top.exlist"), &mut fs).unwrap();
        assert_eq!(pats(&rules), ["-./i"]);
    }

    #[test]
    fn text_around_a_directive_stays_separate_lines_e12() {
        let mut fs = mem_fs(&[("/x/a", "./a1\n./a2\n"), ("/x/b", "./b1\n./b2")]);
        let rules = parse_exlist(
            b"./pre* #INCLUDE:a##INCLUDE:b# ./post*\n#INCLUDE:b#./glued\n",
            Path::new("/x/top"),
            &mut fs,
        )
        .unwrap();
        assert_eq!(
            pats(&rules),
            [
                "-./pre*", "-./a1", "-./a2", "-./b1", "-./b2", "-./post*", "-./b1", "-./b2",
                "-./glued"
            ]
        );
    }

    #[test]
    fn empty_include_contributes_nothing() {
        let mut fs = mem_fs(&[("/x/empty", "\n  \n# only a comment\n")]);
        let rules = parse_exlist(b"#INCLUDE:empty#\n./a\n", Path::new("/x/t"), &mut fs).unwrap();
        assert_eq!(pats(&rules), ["-./a"]);
    }

    #[test]
    fn directive_inside_a_comment_is_not_expanded() {
        let rules =
            parse("# old: #INCLUDE:gone.exlist#\n##INCLUDE:gone.exlist#\n./a # #INCLUDE:gone#\n");
        assert_eq!(pats(&rules), ["-./a"]);
    }

    #[test]
    fn things_that_are_not_directives_are_comments() {
        // `^` is not allowed in the path; an empty path or a missing closing `#` is no
        // directive either (all as xCAT's regex).
        let rules = parse("#INCLUDE:a^b#\n#INCLUDE:#\n#INCLUDE:nohash\n#include:lower#\n./x\n");
        assert_eq!(pats(&rules), ["-./x"]);
    }

    #[test]
    fn include_path_is_trimmed() {
        let mut fs = mem_fs(&[("/x/inc", "./i\n")]);
        let rules = parse_exlist(b"#INCLUDE:  inc \t#\n", Path::new("/x/t"), &mut fs).unwrap();
        assert_eq!(pats(&rules), ["-./i"]);
        let e = parse_exlist(b"./a\n#INCLUDE:   #\n", Path::new("/x/t"), &mut fs).unwrap_err();
        assert_eq!((e.line, e.msg.as_str()), (2, "empty path in #INCLUDE:#"));
    }

    #[test]
    fn missing_include_is_an_error_with_file_and_line_e13() {
        let mut fs = mem_fs(&[("/x/a", "./a\n\n#INCLUDE:missing.exlist#\n")]);
        let e = parse_exlist(b"#INCLUDE:a#\n", Path::new("/x/top"), &mut fs).unwrap_err();
        assert_eq!(e.file, Path::new("/x/a"));
        assert_eq!(e.line, 3);
        assert_eq!(
            e.to_string(),
            "/x/a:3: cannot read #INCLUDE: file /x/missing.exlist: No such file or directory"
        );
    }

    #[test]
    fn include_cycle_is_an_error_e12() {
        let mut fs = mem_fs(&[
            ("/x/a", "./a\n#INCLUDE:b#\n"),
            ("/x/b", "./b\n\n#INCLUDE:./a#\n"),
        ]);
        let e = parse_exlist(b"#INCLUDE:a#\n", Path::new("/x/top"), &mut fs).unwrap_err();
        assert_eq!((e.file.as_path(), e.line), (Path::new("/x/b"), 3));
        assert_eq!(e.msg, "#INCLUDE: cycle: /x/a -> /x/b -> /x/a");
        // Including the top-level file itself.
        let mut fs = mem_fs(&[]);
        let e = parse_exlist(b"\n#INCLUDE:top#", Path::new("/x/top"), &mut fs).unwrap_err();
        assert_eq!(e.to_string(), "/x/top:2: #INCLUDE: cycle: /x/top -> /x/top");
    }

    #[test]
    fn diamond_includes_are_not_cycles() {
        let mut fs = mem_fs(&[
            ("/x/a", "#INCLUDE:c#\n"),
            ("/x/b", "#INCLUDE:c#\n"),
            ("/x/c", "./c\n"),
        ]);
        let rules =
            parse_exlist(b"#INCLUDE:a#\n#INCLUDE:b#\n", Path::new("/x/t"), &mut fs).unwrap();
        assert_eq!(pats(&rules), ["-./c", "-./c"]);
    }

    #[test]
    fn include_depth_is_limited() {
        let names: Vec<String> = (0..=MAX_INCLUDE_DEPTH + 1)
            .map(|i| format!("/x/f{i}"))
            .collect();
        let texts: Vec<String> = (0..=MAX_INCLUDE_DEPTH + 1)
            .map(|i| format!("#INCLUDE:f{}#\n", i + 1))
            .collect();
        let files: Vec<(&str, &str)> = names
            .iter()
            .zip(&texts)
            .map(|(n, t)| (n.as_str(), t.as_str()))
            .collect();
        let mut fs = mem_fs(&files);
        let e = parse_exlist(b"#INCLUDE:f0#", Path::new("/x/top"), &mut fs).unwrap_err();
        assert!(e.msg.contains("nested more than 32 levels"), "{e}");
    }

    #[test]
    fn includes_in_all_are_limited() {
        // Each file includes the next twice: 2^14 expansions at depth 14, well within the depth.
        let names: Vec<String> = (0..=14).map(|i| format!("/x/f{i}")).collect();
        let texts: Vec<String> = (0..=14)
            .map(|i| {
                if i == 14 {
                    "./tmp*\n".to_string()
                } else {
                    format!("#INCLUDE:f{0}#\n#INCLUDE:f{0}#\n", i + 1)
                }
            })
            .collect();
        let files: Vec<(&str, &str)> = names
            .iter()
            .zip(&texts)
            .map(|(n, t)| (n.as_str(), t.as_str()))
            .collect();
        let mut fs = mem_fs(&files);
        let e = parse_exlist(b"#INCLUDE:f0#", Path::new("/x/top"), &mut fs).unwrap_err();
        assert!(e.msg.contains("more than 1024 includes in all"), "{e}");
        // Many different includes side by side stay fine.
        let mut fs = mem_fs(&files[14..]);
        let text = "#INCLUDE:f14#\n".repeat(1000);
        assert_eq!(
            parse_exlist(text.as_bytes(), Path::new("/x/top"), &mut fs)
                .unwrap()
                .len(),
            1000
        );
    }

    #[test]
    fn read_exlist_from_disk() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("top.exlist"),
            "./a*\n#INCLUDE:inc.exlist#\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("inc.exlist"), "+./a/keep\n").unwrap();
        let rules = read_exlist(&dir.path().join("top.exlist")).unwrap();
        assert_eq!(pats(&rules), ["-./a*", "+./a/keep"]);
        assert_eq!(rules[1].file, dir.path().join("inc.exlist"));

        let missing = dir.path().join("nope.exlist");
        let e = read_exlist(&missing).unwrap_err();
        assert_eq!(e.line, 0);
        assert!(
            e.to_string()
                .starts_with(&format!("{}: cannot read exlist: ", missing.display())),
            "{e}"
        );
    }

    // ----- lint ----------------------------------------------------------------------------

    fn lint(p: &str) -> Option<&'static str> {
        Rule {
            include: false,
            pattern: p.as_bytes().to_vec(),
            file: PathBuf::new(),
            line: 1,
            origin: RuleOrigin::Exlist,
        }
        .lint()
    }

    #[test]
    fn lint_flags_patterns_that_never_match() {
        assert!(lint("/usr/share/doc")
            .unwrap()
            .starts_with("absolute paths never match"));
        assert!(lint("/usr/share/doc*")
            .unwrap()
            .contains("./usr/share/doc*"));
        assert!(lint("./usr/share/doc/").unwrap().contains("ending in /"));
        assert!(lint("*/").unwrap().contains("ending in /"));
        assert!(lint("usr/share/doc*").unwrap().contains("start it with ./"));
        assert!(lint(".//usr").is_some());
        assert!(lint("./a\\").is_some(), "trailing backslash");
        assert!(lint("./[[:nope:]]").is_some(), "unknown class");
        assert!(lint("").is_some());
        for ok in [
            ".",
            "./x",
            "*",
            "?/x",
            "*.rpm",
            "./usr/share/doc*",
            "[.]/x",
            "./a[/]b",
        ] {
            assert_eq!(lint(ok), None, "{ok}");
        }
    }

    // ----- glob semantics ------------------------------------------------------------------

    #[test]
    fn star_matches_across_slashes() {
        assert!(m("./usr/share/doc*", "./usr/share/doc"));
        assert!(m("./usr/share/doc*", "./usr/share/doc/bash/README"));
        assert!(m("./usr/share/doc*", "./usr/share/docbook"));
        assert!(m("*", "."));
        assert!(m("*", "./a/b/c"));
        assert!(m("*/b", "./a/b"));
        assert!(m("./*/c", "./a/b/c"));
        assert!(m("**", "./x"));
        assert!(!m("./usr/share/doc*", "./usr/share"));
    }

    #[test]
    fn whole_path_must_match_and_dir_without_star_is_only_the_dir() {
        assert!(m("./dir", "./dir"));
        assert!(!m("./dir", "./dir/child"));
        assert!(!m("./dir", "./dirx"));
        assert!(!m("dir", "./dir"));
        assert!(!m("./usr/share/doc/", "./usr/share/doc"));
        assert!(!m("/usr/share/doc", "./usr/share/doc"));
        let sel = Selection::new(parse("./dir\n"), Vec::new());
        assert!(!sel.decide(b"./dir").is_kept());
        assert!(sel.decide(b"./dir/child").is_kept());
    }

    #[test]
    fn question_mark_is_one_byte_including_slash_and_dot() {
        assert!(m("./a?b", "./a/b"));
        assert!(m("./a?b", "./a.b"));
        assert!(!m("./a?b", "./ab"));
        assert!(!m("./a?b", "./a//b"));
        assert!(
            path_glob_match(b"./?", b"./\xc3"),
            "first byte of a two-byte char"
        );
        assert!(!m("./?", "./\u{e9}"), "bytes, not characters");
        assert!(m("./??", "./\u{e9}"));
        assert!(m("?", "."));
    }

    #[test]
    fn leading_dot_is_not_special() {
        assert!(m("./*", "./.hidden"));
        assert!(m("./?hidden", "./.hidden"));
        assert!(m("./[.]hidden", "./.hidden"));
        assert!(m("*", "./.statelite/x"));
    }

    #[test]
    fn bracket_sets() {
        assert!(m("./[abc]", "./b"));
        assert!(!m("./[abc]", "./d"));
        assert!(m("./[a-c]x", "./bx"));
        assert!(!m("./[a-c]x", "./dx"));
        assert!(m("./[!a-c]", "./d"));
        assert!(m("./[^a-c]", "./d"));
        assert!(!m("./[^a-c]", "./a"));
        assert!(m("./[!a]", "./^"));
        assert!(m("./x[/]y", "./x/y"), "a set may match /");
        assert!(m("./[]a]", "./]"), "] first is literal");
        assert!(m("./[!]a]", "./b"));
        assert!(!m("./[!]a]", "./]"));
        assert!(m("./[a-]", "./-"), "- last is literal");
        assert!(m("./[-a]", "./-"), "- first is literal");
        assert!(m("./[--0]", "./."), "range from -");
        assert!(!m("./[z-a]", "./m"), "reversed range is empty");
        assert!(m("./[z-ab]", "./b"), "and does not spoil the set");
        assert!(m("./[a-b-c]", "./-"));
        assert!(m("./perl[0-9]/[0-9.]*/x", "./perl5/5.32.1/x"));
        assert!(
            path_glob_match(b"./[\xc3]?", "./\u{e9}".as_bytes()),
            "high bytes are single bytes"
        );
    }

    #[test]
    fn bracket_classes_equivalences_and_collating_symbols() {
        assert!(m("./[[:digit:]]", "./7"));
        assert!(!m("./[[:digit:]]", "./a"));
        assert!(m("./[[:alpha:][:digit:]]", "./a"));
        assert!(m("./[![:alnum:]]", "./_"));
        assert!(m("./[[:space:]]", "./\t"));
        assert!(m("./[[:upper:]]", "./Q"));
        assert!(m("./[[:digit:]-z]", "./-"), "- after a class is literal");
        assert!(
            !m("./[[:nope:]]", "./n"),
            "an unknown class matches nothing"
        );
        assert!(
            m("./[a[:nope:]]", "./a"),
            "unless something before it matched (glibc)"
        );
        assert!(
            m("./[[:ALPHA:]]", "./A]"),
            "not a class name: plain [ : A L P H"
        );
        assert!(m("./[[=a=]]", "./a"));
        assert!(m("./[[.-.]a]", "./-"));
        assert!(m("./[[.a.]-c]", "./b"));
        assert!(
            !m("./[[.ab.]]", "./a"),
            "multi-byte collating names are invalid in C"
        );
    }

    #[test]
    fn escapes() {
        assert!(m("./a\\*b", "./a*b"));
        assert!(!m("./a\\*b", "./axb"));
        assert!(m("./a\\?", "./a?"));
        assert!(m("./\\[x]", "./[x]"));
        assert!(m("./\\a", "./a"));
        assert!(m("./[\\]]", "./]"));
        assert!(m("./[a\\-z]", "./-"));
        assert!(!m("./[a\\-z]", "./m"));
        assert!(!m("./a\\", "./a\\"), "a trailing backslash never matches");
        assert!(!m("./a\\", "./a"));
    }

    #[test]
    fn unterminated_brackets_are_literal() {
        assert!(m("./a[b", "./a[b"));
        assert!(!m("./a[b", "./ab"));
        assert!(m("./[", "./["));
        assert!(m("./[[", "./[["), "glibc 2.36, bug 28792");
        assert!(m("./[!", "./[!"));
        assert!(m("./[]", "./[]"));
        assert!(m("./[\\]", "./[]"));
    }

    #[test]
    fn nul_ends_the_pattern() {
        assert!(path_glob_match(b"./a\0junk", b"./a"));
    }

    #[test]
    fn long_patterns_use_the_big_state_set() {
        let long = format!("./{}*", "a".repeat(200));
        assert!(m(&long, &format!("./{}/x", "a".repeat(200))));
        assert!(!m(&long, &format!("./{}", "a".repeat(199))));
        let stars = "*a".repeat(80);
        assert!(m(&stars, &"a".repeat(80)));
        assert!(!m(&stars, &"a".repeat(79)));
    }

    // ----- selection -----------------------------------------------------------------------

    #[test]
    fn statelite_builtins() {
        let sel = Selection::new(Vec::new(), Vec::new());
        for p in [
            "./etc/init.d/statelite",
            "./etc/rc.sysinit.backup",
            "./.statelite",
            "./.statelite/tmpfs/x",
            "./.default",
            "./.defaults",
            "./.statebackup/etc/fstab",
        ] {
            match sel.decide(p.as_bytes()) {
                Decision::Excluded(r) => {
                    assert_eq!(r.origin, RuleOrigin::Statelite);
                    assert!(
                        r.to_string().starts_with("built-in statelite exclude ./"),
                        "{r}"
                    );
                }
                d => panic!("{p}: {d:?}"),
            }
        }
        for p in [
            ".",
            "./etc/init.d/statelite2",
            "./etc/init.d",
            "./x/.statelite",
        ] {
            assert_eq!(sel.decide(p.as_bytes()), Decision::KeepNoRules, "{p}");
        }
        assert!(
            sel.unused_rules().is_empty(),
            "built-ins are never reported"
        );
    }

    #[test]
    fn include_back_wins_whatever_the_order_and_beats_builtins() {
        let sel = Selection::new(parse("+./a/keep*\n./a*\n+./.statelite/keep\n"), Vec::new());
        assert!(matches!(sel.decide(b"./a/drop"), Decision::Excluded(r) if r.line == 2));
        assert!(matches!(sel.decide(b"./a/keep/x"), Decision::IncludedBack(r) if r.line == 1));
        assert!(
            matches!(sel.decide(b"./.statelite/keep"), Decision::IncludedBack(r) if r.line == 3)
        );
        assert!(!sel.decide(b"./.statelite/other").is_kept());
        let e = sel.explain(b"./.statelite/keep");
        assert_eq!(e.exclude.unwrap().origin, RuleOrigin::Statelite);
        assert_eq!(e.include.unwrap().line, 3);
    }

    #[test]
    fn a_path_is_decided_once_e14() {
        // xCAT's two find runs list ./b twice: once as not excluded, once as included.
        let sel = Selection::new(parse("./a*\n+./b\n"), Vec::new());
        assert_eq!(sel.decide(b"./b"), Decision::Keep);
        assert!(Decision::Keep.is_kept() && Decision::KeepNoRules.is_kept());
        assert!(Decision::IncludedBack(&sel.rules()[1]).is_kept());
    }

    #[test]
    fn first_matching_rule_is_reported_and_indexable() {
        let sel = Selection::new(parse("./x*\n./x/y*\n"), Vec::new());
        let Decision::Excluded(r) = sel.decide(b"./x/y/z") else {
            panic!()
        };
        assert_eq!(r.line, 1);
        assert_eq!(sel.rule_index(r), Some(0));
        let other = r.clone();
        assert_eq!(sel.rule_index(&other), None, "only rules of this selection");
        // Both matched, so neither is unused.
        assert!(sel.unused_rules().is_empty());
    }

    #[test]
    fn unused_rules_are_reported_in_order() {
        let sel = Selection::new(
            parse("./a*\n./never*\n+./a/b\n+./never/x\n+./c\n"),
            Vec::new(),
        );
        for p in [".", "./a", "./a/b", "./c"] {
            sel.decide(p.as_bytes());
        }
        let unused: Vec<usize> = sel.unused_rules().iter().map(|r| r.line).collect();
        assert_eq!(unused, [2, 4]);
        // explain does not count.
        sel.explain(b"./never/x");
        assert_eq!(sel.unused_rules().len(), 2);
    }

    #[test]
    fn selection_is_shareable_between_threads() {
        fn sync<T: Sync + Send>() {}
        sync::<Selection>();
        let sel = Selection::new(parse("./a*\n"), Vec::new());
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| assert!(!sel.decide(b"./a").is_kept()));
            }
        });
        assert!(sel.unused_rules().is_empty());
    }

    #[test]
    fn rule_display() {
        let rules = parse("./a\n+./b\n");
        assert_eq!(rules[0].to_string(), "/x/top.exlist:1: ./a");
        assert_eq!(rules[1].to_string(), "/x/top.exlist:2: +./b");
        let sel = Selection::new(Vec::new(), vec![b"./usr/share/zoneinfo/UTC".to_vec()]);
        assert_eq!(
            sel.rules()[0].to_string(),
            "site.timezone include +./usr/share/zoneinfo/UTC"
        );
        let e = ExlistError {
            file: "/f".into(),
            line: 4,
            msg: "m".into(),
        };
        assert_eq!(e.to_string(), "/f:4: m");
    }

    // ----- time zone -----------------------------------------------------------------------

    fn tz_image() -> tempfile::TempDir {
        use std::os::unix::fs::symlink;
        let img = tempfile::tempdir().unwrap();
        let r = img.path();
        let zi = r.join("usr/share/zoneinfo");
        std::fs::create_dir_all(zi.join("America")).unwrap();
        std::fs::create_dir_all(zi.join("US")).unwrap();
        std::fs::create_dir_all(zi.join("posix")).unwrap();
        std::fs::write(zi.join("America/New_York"), "TZif").unwrap();
        std::fs::write(zi.join("UTC"), "TZif").unwrap();
        std::fs::write(zi.join("Weird[1]*"), "TZif").unwrap();
        symlink("../America/New_York", zi.join("US/Eastern")).unwrap();
        // A chain: posix/Zulu -> ../Zulu -> UTC
        symlink("UTC", zi.join("Zulu")).unwrap();
        symlink("../Zulu", zi.join("posix/Zulu")).unwrap();
        // An absolute link: resolved inside the image, never on the host.
        std::fs::create_dir_all(r.join("opt/xcattest-tz")).unwrap();
        std::fs::write(r.join("opt/xcattest-tz/Real"), "TZif").unwrap();
        symlink("/opt/xcattest-tz/Real", zi.join("Abs")).unwrap();
        // A link that tries to climb out of the image.
        std::fs::create_dir_all(r.join("etc")).unwrap();
        std::fs::write(r.join("etc/tz-inside"), "TZif").unwrap();
        symlink("../../../../../../../../etc/tz-inside", zi.join("Climb")).unwrap();
        symlink("nowhere", zi.join("Dangling")).unwrap();
        symlink("Loop", zi.join("Loop")).unwrap();
        img
    }

    fn tz(img: &Path, zone: &str) -> Vec<String> {
        timezone_includes(img, zone)
            .into_iter()
            .map(|p| String::from_utf8(p).unwrap())
            .collect()
    }

    #[test]
    fn timezone_plain_file() {
        let img = tz_image();
        assert_eq!(
            tz(img.path(), "America/New_York"),
            ["./usr/share/zoneinfo/America/New_York"]
        );
        assert!(tz(img.path(), "").is_empty());
    }

    #[test]
    fn timezone_link_and_target() {
        let img = tz_image();
        assert_eq!(
            tz(img.path(), "US/Eastern"),
            [
                "./usr/share/zoneinfo/US/Eastern",
                "./usr/share/zoneinfo/America/New_York"
            ]
        );
    }

    #[test]
    fn timezone_intermediate_links_e11() {
        let img = tz_image();
        assert_eq!(
            tz(img.path(), "posix/Zulu"),
            [
                "./usr/share/zoneinfo/posix/Zulu",
                "./usr/share/zoneinfo/Zulu",
                "./usr/share/zoneinfo/UTC"
            ]
        );
    }

    #[test]
    fn timezone_absolute_link_resolves_inside_the_image_e11() {
        let img = tz_image();
        assert_eq!(
            tz(img.path(), "Abs"),
            ["./usr/share/zoneinfo/Abs", "./opt/xcattest-tz/Real"]
        );
        assert_eq!(
            tz(img.path(), "Climb"),
            ["./usr/share/zoneinfo/Climb", "./etc/tz-inside"]
        );
    }

    #[test]
    fn timezone_through_a_symlinked_zoneinfo_directory() {
        use std::os::unix::fs::symlink;
        let img = tempfile::tempdir().unwrap();
        let r = img.path();
        std::fs::create_dir_all(r.join("usr/lib/zoneinfo/Europe")).unwrap();
        std::fs::write(r.join("usr/lib/zoneinfo/Europe/Paris"), "TZif").unwrap();
        std::fs::create_dir_all(r.join("usr/share")).unwrap();
        symlink("../lib/zoneinfo", r.join("usr/share/zoneinfo")).unwrap();
        assert_eq!(
            tz(r, "Europe/Paris"),
            [
                "./usr/share/zoneinfo/Europe/Paris",
                "./usr/share/zoneinfo",
                "./usr/lib/zoneinfo/Europe/Paris"
            ]
        );
        // The image root may itself be reached through a symlink (E11: /install -> /data).
        let outer = tempfile::tempdir().unwrap();
        symlink(r, outer.path().join("rootimg")).unwrap();
        assert_eq!(
            tz(r, "Europe/Paris"),
            tz(&outer.path().join("rootimg"), "Europe/Paris")
        );
    }

    #[test]
    fn timezone_odd_cases() {
        let img = tz_image();
        let p = img.path();
        // Glob characters are escaped so the include matches only that file.
        let w = tz(p, "Weird[1]*");
        assert_eq!(w, ["./usr/share/zoneinfo/Weird\\[1]\\*"]);
        assert!(m(&w[0], "./usr/share/zoneinfo/Weird[1]*"));
        assert!(!m(&w[0], "./usr/share/zoneinfo/Weird1x"));
        // A dangling link: the link itself; a loop: just the literal.
        assert_eq!(tz(p, "Dangling"), ["./usr/share/zoneinfo/Dangling"]);
        assert_eq!(tz(p, "Loop"), ["./usr/share/zoneinfo/Loop"]);
        assert_eq!(tz(p, "No/Such"), ["./usr/share/zoneinfo/No/Such"]);
        // Not resolved at all.
        assert_eq!(
            tz(p, "../../../etc/passwd"),
            ["./usr/share/zoneinfo/../../../etc/passwd"]
        );
        assert_eq!(tz(p, "/etc/passwd"), ["./usr/share/zoneinfo//etc/passwd"]);
        // Doubled slashes: the walk path is added (xCAT's abs_path normalises too).
        assert_eq!(
            tz(p, "America//New_York"),
            [
                "./usr/share/zoneinfo/America//New_York",
                "./usr/share/zoneinfo/America/New_York"
            ]
        );
    }

    #[test]
    fn timezone_includes_beat_the_stock_zoneinfo_exclude() {
        let img = tz_image();
        let rules = parse_exlist(STOCK, Path::new(STOCK_NAME), &mut no_includes).unwrap();
        let sel = Selection::new(rules, timezone_includes(img.path(), "US/Eastern"));
        for keep in [
            "./usr/share/zoneinfo/US/Eastern",
            "./usr/share/zoneinfo/America/New_York",
        ] {
            match sel.decide(keep.as_bytes()) {
                Decision::IncludedBack(r) => assert_eq!(r.origin, RuleOrigin::Timezone),
                d => panic!("{keep}: {d:?}"),
            }
        }
        for drop in [
            "./usr/share/zoneinfo/UTC",
            "./usr/share/zoneinfo/US",
            "./usr/share/zoneinfo",
        ] {
            assert!(!sel.decide(drop.as_bytes()).is_kept(), "{drop}");
        }
    }

    // ----- differential tests against GNU find ---------------------------------------------

    /// Creates `paths` (relative; a trailing `/` makes a directory) under a temp dir.
    fn tree(paths: &[&[u8]]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for p in paths {
            let full = dir.path().join(OsStr::from_bytes(p));
            if p.ends_with(b"/") {
                std::fs::create_dir_all(&full).unwrap();
            } else {
                std::fs::create_dir_all(full.parent().unwrap()).unwrap();
                std::fs::write(&full, b"x").unwrap();
            }
        }
        dir
    }

    /// Runs `find . <args> -print0` in `dir` (argument vector, no shell, C locale).
    fn find(dir: &Path, args: &[Vec<u8>]) -> BTreeSet<Vec<u8>> {
        let out = Command::new("find")
            .arg(".")
            .args(args.iter().map(|a| OsStr::from_bytes(a)))
            .arg("-print0")
            .current_dir(dir)
            .env("LC_ALL", "C")
            .env_remove("POSIXLY_CORRECT")
            .output()
            .expect("GNU find must be installed for this test");
        assert!(
            out.status.success(),
            "find {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
            .split(|&b| b == 0)
            .filter(|s| !s.is_empty())
            .map(<[u8]>::to_vec)
            .collect()
    }

    fn show(set: &BTreeSet<Vec<u8>>) -> Vec<String> {
        set.iter()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .collect()
    }

    const WEIRD: &[&[u8]] = &[
        b"w/a[b",
        b"w/a]b",
        b"w/a*b",
        b"w/a?b",
        b"w/a\\b",
        b"w/a!b",
        b"w/a^b",
        b"w/a-b",
        b"w/a b",
        b"w/a.b",
        b"w/ab",
        b"w/abc",
        b"w/b",
        b"w/z",
        b"w/[",
        b"w/]",
        b"w/-dash",
        b"w/.hidden",
        b"w/x:y",
        b"w/x=y",
        b"w/\xff\xfe",
        b"w/\xc3\xa9",
        b"w/UPPER",
        b"w/123",
        b"w/tab\there",
        b"w/nl\nname",
        b"w/trailing ",
        b"w/c.d/e",
        b"w/c.d/f/g",
        b"w/empty/",
        b"w/[x]",
        b"w/[[",
        b"w/a[:b",
    ];

    const STOCK_TREE: &[&[u8]] = &[
        b"boot/vmlinuz",
        b"usr/include/stdio.h",
        b"usr/bin/ls",
        b"usr/lib/locale/C.utf8/LC_CTYPE",
        b"usr/lib/locale/en_US.utf8/LC_CTYPE",
        b"usr/lib/locale/de_DE.utf8/LC_CTYPE",
        b"usr/lib/locale/locale-archive",
        b"usr/lib64/perl5/Encode/JP.pm",
        b"usr/lib64/perl5/Encode/JP/H2Z.pm",
        b"usr/lib64/perl5/Encode/Byte.pm",
        b"usr/share/man/man1/ls.1.gz",
        b"usr/share/doc/bash/README",
        b"usr/share/i18n/locales/en_US",
        b"usr/share/i18n/charmaps/UTF-8.gz",
        b"usr/share/locale/en_US/LC_MESSAGES/x.mo",
        b"usr/share/locale/de/LC_MESSAGES/x.mo",
        b"usr/share/locale/C/x",
        b"usr/share/locale/locale.alias",
        b"usr/share/zoneinfo/America/New_York",
        b"usr/share/zoneinfo/UTC",
        b"usr/share/vim/vim74/doc/help.txt",
        b"lib/kbd/keymaps/i386/qwerty/us.map.gz",
        b"lib/kbd/keymaps/mac/all/x",
        b"lib/kbd/keymaps/sun/y",
        b"tmp/a",
        b"tmpx",
        b"var/lib/yum/history",
        b"var/cache/man/index.db",
        b"etc/passwd",
        b"etc/init.d/statelite",
        b"etc/init.d/statelite2",
        b"etc/rc.sysinit.backup",
        b".statelite/tmpfs/x",
        b".default",
        b".defaults/y",
        b".statebackup/etc/fstab",
    ];

    /// Hand-picked patterns: every construct and glibc corner case seen in the glob tests.
    const PATTERNS: &[&[u8]] = &[
        b".",
        b"*",
        b"./*",
        b"./w",
        b"./w/*",
        b"./w*",
        b"*/w",
        b"./w/a*",
        b"./w/a?b",
        b"./w/?",
        b"./w/??",
        b"./w/a[b",
        b"./w/a[[]b",
        b"./w/a[]]b",
        b"./w/a[!b]b",
        b"./w/a[^b]b",
        b"./w/a[!]]b",
        b"./w/a[*?]b",
        b"./w/a\\*b",
        b"./w/a\\?b",
        b"./w/a\\\\b",
        b"./w/a\\b",
        b"./w/a[\\]]b",
        b"./w/a[a-c]*",
        b"./w/a[z-a]b",
        b"./w/a[--/]b",
        b"./w/a[-]b",
        b"./w/a[b-]",
        b"./w/[[:upper:]]*",
        b"./w/[[:digit:]]*",
        b"./w/*[[:space:]]*",
        b"./w/*[[:punct:]]b",
        b"./w/[![:alnum:]]*",
        b"./w/[[:nope:]]*",
        b"./w/a[[:nope:]b]*",
        b"./w/a[b[:nope:]]*",
        b"./w/a[[=b=]]",
        b"./w/a[[.b.]]",
        b"./w/a[[.b.]-c]",
        b"./w/a[[.bc.]]",
        b"./w/[[:ALPHA:]]*",
        b"./w/a[:b",
        b"./w/a[[:]b",
        b"./w/\\[*",
        b"./w/[[]*",
        b"./w/[[",
        b"./w/[",
        b"./w/]",
        b"./w/[]]",
        b"./w/[]",
        b"./w/\\",
        b"./w/a\\",
        b"./w/*\\",
        b"./w/.*",
        b"./w/[.]*",
        b"./w/*.*",
        b"./w/\xff*",
        b"./w/[\xc3]*",
        b"./w/\xc3\xa9",
        b"./w/*\n*",
        b"./w/*\t*",
        b"./w/* ",
        b"./w/c.d",
        b"./w/c.d*",
        b"./w/c.d/*",
        b"./w/c.d/",
        b"/w/c.d",
        b"w/*",
        b"*/f/*",
        b"*e*",
        b"./w/x[:=]y",
        b"./w/[!a-z]*",
        b"./w/[a-z][a-z][a-z]",
        b"*[[:cntrl:]]*",
        b"./boot*",
        b"./usr/share/locale/*",
        b"./tmp*",
        b"./.statelite*",
        b"./etc/init.d/statelite",
        b"./usr/lib*/perl*/Encode/JP*",
        b"./usr/share/vim/vim[0-9][0-9]/doc*",
    ];

    fn universe(dir: &Path) -> BTreeSet<Vec<u8>> {
        find(dir, &[])
    }

    #[test]
    fn glob_matches_gnu_find_path_pattern_by_pattern() {
        let paths: Vec<&[u8]> = WEIRD.iter().chain(STOCK_TREE).copied().collect();
        let dir = tree(&paths);
        let all = universe(dir.path());
        assert!(all.len() > 80, "{}", all.len());
        let mut matched_something = 0;
        for pat in PATTERNS {
            let pat = pat.to_vec();
            let want = find(dir.path(), &[b"-path".to_vec(), pat.clone()]);
            let got: BTreeSet<Vec<u8>> = all
                .iter()
                .filter(|p| path_glob_match(&pat, p))
                .cloned()
                .collect();
            assert_eq!(
                show(&got),
                show(&want),
                "pattern {:?}",
                String::from_utf8_lossy(&pat)
            );
            matched_something += usize::from(!want.is_empty());
        }
        assert!(matched_something > 50, "{matched_something}");
    }

    /// A tiny deterministic generator, so the random patterns are the same on every run.
    struct XorShift(u64);
    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
            xs[(self.next() % xs.len() as u64) as usize]
        }
    }

    #[test]
    fn glob_matches_gnu_find_on_random_patterns() {
        let paths: Vec<&[u8]> = WEIRD.iter().chain(STOCK_TREE).copied().collect();
        let dir = tree(&paths);
        let all = universe(dir.path());
        let heads: &[&[u8]] = &[b"./w/", b"*", b"./", b"./w/a", b"", b"./usr/"];
        let atoms: &[&[u8]] = &[
            b"*",
            b"?",
            b"[",
            b"]",
            b"!",
            b"^",
            b"-",
            b"\\",
            b"a",
            b"b",
            b"c",
            b".",
            b"/",
            b":",
            b"=",
            b"[:alpha:]",
            b"[:digit:]",
            b"[:foo:]",
            b"[=a=]",
            b"[.b.]",
            b"[.",
            b"[:",
            b"[=",
            b"A",
            b"1",
            b" ",
            b"\xff",
            b"share",
            b"locale",
            b"e",
        ];
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        let mut nonempty = 0;
        for _ in 0..250 {
            let mut pat = rng.pick(heads).to_vec();
            for _ in 0..(rng.next() % 5) {
                pat.extend_from_slice(rng.pick(atoms));
            }
            if rng.next().is_multiple_of(2) {
                pat.push(b'*');
            }
            let want = find(dir.path(), &[b"-path".to_vec(), pat.clone()]);
            let got: BTreeSet<Vec<u8>> = all
                .iter()
                .filter(|p| path_glob_match(&pat, p))
                .cloned()
                .collect();
            assert_eq!(
                show(&got),
                show(&want),
                "pattern {:?}",
                String::from_utf8_lossy(&pat)
            );
            nonempty += usize::from(!want.is_empty());
        }
        assert!(nonempty > 40, "{nonempty}");
    }

    /// The selection must be exactly xCAT's `find . -xdev ! -path E1 -a ! -path E2 ...` plus
    /// `find . -xdev -path I1 -o -path I2 ...`.
    fn assert_selection_matches_find(dir: &Path, sel: &Selection) {
        let all = universe(dir);
        let mut ex_args = vec![b"-xdev".to_vec()];
        let mut in_args = vec![b"-xdev".to_vec(), b"(".to_vec()];
        for r in sel.rules() {
            if r.include {
                if in_args.len() > 2 {
                    in_args.push(b"-o".to_vec());
                }
                in_args.extend([b"-path".to_vec(), r.pattern.clone()]);
            } else {
                if ex_args.len() > 1 {
                    ex_args.push(b"-a".to_vec());
                }
                ex_args.extend([b"!".to_vec(), b"-path".to_vec(), r.pattern.clone()]);
            }
        }
        in_args.push(b")".to_vec());
        let mut want = find(dir, &ex_args);
        if in_args.len() > 3 {
            want.extend(find(dir, &in_args));
        }
        let got: BTreeSet<Vec<u8>> = all
            .iter()
            .filter(|p| sel.decide(p).is_kept())
            .cloned()
            .collect();
        assert_eq!(show(&got), show(&want));
        assert!(got.len() < all.len(), "something must be excluded");
    }

    #[test]
    fn stock_selection_matches_gnu_find() {
        let img = tree(STOCK_TREE);
        let rules = parse_exlist(STOCK, Path::new(STOCK_NAME), &mut no_includes).unwrap();
        let sel = Selection::new(
            rules,
            vec![b"./usr/share/zoneinfo/America/New_York".to_vec()],
        );
        assert_selection_matches_find(img.path(), &sel);
        let kept = |p: &str| sel.decide(p.as_bytes()).is_kept();
        assert!(kept("./usr/share/zoneinfo/America/New_York"));
        assert!(
            !kept("./usr/share/zoneinfo/America"),
            "parents are the walker's business"
        );
        // Stock lines that match nothing in this tree, including the stock typo `kdb`.
        let unused: Vec<String> = sel
            .unused_rules()
            .iter()
            .map(|r| String::from_utf8_lossy(&r.pattern).into_owned())
            .collect();
        assert!(
            unused.contains(&"./lib/kdb/keymaps/include*".to_string()),
            "{unused:?}"
        );
        assert!(!unused.contains(&"./boot*".to_string()));
    }

    #[test]
    fn tricky_selection_matches_gnu_find() {
        let paths: Vec<&[u8]> = WEIRD.iter().chain(STOCK_TREE).copied().collect();
        let dir = tree(&paths);
        let text = "./w/*\n\
                    +./w/a*\n\
                    ./w/a[!b]b\n\
                    -./w\n\
                    +*[[:digit:]]*\n\
                    ./usr*\n\
                    +./usr/share/locale/[!d]*\n\
                    ./w/a\\\\b\n\
                    +./.statelite/tmpfs\n\
                    +./w/c.d\n\
                    ./etc/*\n\
                    +./etc/init.d/statelite\n";
        let sel = Selection::new(parse(text), Vec::new());
        assert_selection_matches_find(dir.path(), &sel);
        // Without any include line, only the exclude run exists.
        let sel = Selection::new(parse("./w*\n./usr/share/*\n"), Vec::new());
        assert_selection_matches_find(dir.path(), &sel);
        // Without any rule, only the built-ins apply.
        assert_selection_matches_find(dir.path(), &Selection::new(Vec::new(), Vec::new()));
    }
}
