//! The pkglist / otherpkglist grammar of xCAT's `imgutils::get_package_names` (spec §4), parsed
//! into install passes.
//!
//! It reads list files and knows the grammar: comments, `#INCLUDE:file#` (recursive, with a
//! cycle check), `#NEW_INSTALL_LIST#`, `#ENV:NAME=value#`, `-pkg` / `--pkg` removals and
//! `dir/pkg` keys. It knows nothing about package managers, tables or the host: what a name
//! means (`@group`, a pattern) is the backend's business.
//!
//! # Compatible
//!
//! * A list attribute is a comma-separated list of files, each parsed on its own (its pass
//!   counter starts at 1); passes with the same number are merged, in file order.
//! * Per line: the newline and trailing whitespace go; empty lines and comment lines (`#...`)
//!   go, except the directives `#INCLUDE:<path>#`, `#NEW_INSTALL_LIST#` and `#ENV:<text>#`.
//! * Lines are joined with commas and split again, so `vim,emacs` on one line is two entries,
//!   and an include may sit anywhere in a line (several times, too); its lines become entries.
//! * Entries: `--name` is removed after the pass's install, `-name` before it (the basename is
//!   taken after the dashes); `#NEW_INSTALL_LIST#` starts the next pass; `#ENV:<text>#` adds
//!   to the pass's environment; any other `#...` is ignored; anything else is
//!   `dirname(entry)` → `basename(entry)` (`.` for a plain name).
//! * `$VAR` and `${VAR}` in include paths are expanded from the given environment.
//!
//! # Deliberately different (spec §6 items 10, 11, 19)
//!
//! * Leading whitespace is ignored like trailing whitespace, on lines and on entries: an
//!   indented `#NEW_INSTALL_LIST#` or `-pkg` means what it says (xCAT makes the first a
//!   package name that silently truncates the install command, the second an option).
//! * A relative include is resolved against the directory of the file that includes it (xCAT:
//!   always the top-level file's directory).
//! * An include cycle is an error naming the chain (xCAT loops forever).
//! * An unknown variable in an include path is an error (xCAT leaves `$VAR` as written).
//! * `#ENV:` text is parsed into `NAME=value` pairs (simple `'...'` / `"..."` quoting), to be
//!   passed as environment variables, never spliced into a command line; anything that is not
//!   such a pair is an error.
//! * A top-level file that cannot be read is an error (xCAT skips it silently; the plugin
//!   checks readability first in image mode).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// Includes nest at most this deep (a cycle is caught before; this bounds pathological trees).
const MAX_DEPTH: usize = 32;

/// Files read for one top-level list in all: depth alone does not bound the work (files that
/// each include the next one twice are read 2^depth times).
const MAX_READS: usize = 1024;

/// One install transaction of a list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pass {
    /// Names to install per key (`dirname` of the entry; `.` for plain names), keys in the
    /// order first seen, names in list order.
    pub install: Vec<(String, Vec<String>)>,
    /// Names to remove before the install (`-name`).
    pub pre_remove: Vec<String>,
    /// Names to remove after the install (`--name`).
    pub post_remove: Vec<String>,
    /// `NAME=value` pairs from `#ENV:...#`, in order.
    pub env: Vec<(String, String)>,
}

impl Pass {
    /// Every name to install, keys merged, in order.
    pub fn all_names(&self) -> Vec<String> {
        self.install
            .iter()
            .flat_map(|(_, n)| n.iter().cloned())
            .collect()
    }

    /// Whether the pass has nothing to do.
    pub fn is_empty(&self) -> bool {
        self.install.iter().all(|(_, n)| n.is_empty())
            && self.pre_remove.is_empty()
            && self.post_remove.is_empty()
    }

    fn add(&mut self, key: &str, name: String) {
        match self.install.iter_mut().find(|(k, _)| k == key) {
            Some((_, names)) => names.push(name),
            None => self.install.push((key.to_string(), vec![name])),
        }
    }
}

/// A parsed list: its passes in ascending order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PackageList {
    /// Pass number (from 1) to pass.
    pub passes: BTreeMap<u32, Pass>,
    /// Every file read (top-level and included), for messages and the plan.
    pub files: Vec<PathBuf>,
}

impl PackageList {
    /// Whether no pass has anything to do.
    pub fn is_empty(&self) -> bool {
        self.passes.values().all(Pass::is_empty)
    }
}

/// Why a list cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListError {
    /// A file could not be read (top-level, or an include: xCAT's `#INCLUDEBAD#`).
    Unreadable {
        /// The file as resolved.
        path: PathBuf,
        /// Who included it (`None` for a top-level file).
        from: Option<PathBuf>,
        /// The reason.
        reason: String,
    },
    /// An include chain comes back to a file already being read.
    Cycle(Vec<PathBuf>),
    /// Includes nest deeper than [`MAX_DEPTH`].
    TooDeep(PathBuf),
    /// More than [`MAX_READS`] files read for one top-level list (the top-level file).
    TooMany(PathBuf),
    /// `$NAME` in an include path is not set.
    UnknownVariable {
        /// The variable.
        name: String,
        /// The include text.
        include: String,
        /// The file holding it.
        file: PathBuf,
    },
    /// `#ENV:...#` text that is not `NAME=value` pairs.
    BadEnv {
        /// The text between `#ENV:` and `#`.
        text: String,
        /// What is wrong.
        reason: String,
    },
}

impl fmt::Display for ListError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListError::Unreadable { path, from, reason } => {
                write!(f, "cannot open {}", path.display())?;
                if let Some(from) = from {
                    write!(f, " (included from {})", from.display())?;
                }
                write!(f, ": {reason}")
            }
            ListError::Cycle(chain) => {
                let names: Vec<String> = chain.iter().map(|p| p.display().to_string()).collect();
                write!(f, "#INCLUDE cycle: {}", names.join(" -> "))
            }
            ListError::TooDeep(p) => write!(
                f,
                "#INCLUDE nesting deeper than {MAX_DEPTH} levels at {}",
                p.display()
            ),
            ListError::TooMany(p) => write!(
                f,
                "#INCLUDE: more than {MAX_READS} files read for {}; lists may include each \
                 other, but not this often",
                p.display()
            ),
            ListError::UnknownVariable {
                name,
                include,
                file,
            } => write!(
                f,
                "#INCLUDE:{include}# in {}: ${name} is not set",
                file.display()
            ),
            ListError::BadEnv { text, reason } => write!(f, "#ENV:{text}#: {reason}"),
        }
    }
}

impl std::error::Error for ListError {}

/// Splits a list attribute (`a.pkglist,b.pkglist`) into file names; empty items dropped.
pub fn split_files(attr: &str) -> Vec<PathBuf> {
    attr.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(PathBuf::from)
        .collect()
}

/// Reads a text file as lines; invalid UTF-8 is replaced, never fatal.
fn read_text(path: &Path) -> std::io::Result<String> {
    let bytes = std::fs::read(path)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// Parses every file of `files` (already split) with `env` for include paths.
pub fn parse_files(
    files: &[PathBuf],
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<PackageList, ListError> {
    parse_with(files, env, &read_text)
}

/// [`parse_files`] with the file reader given, so tests and the fuzz target
/// (`fuzz/fuzz_targets/pkglist_parser.rs`) can parse lists from memory.
pub fn parse_with(
    files: &[PathBuf],
    env: &dyn Fn(&str) -> Option<String>,
    read: &dyn Fn(&Path) -> std::io::Result<String>,
) -> Result<PackageList, ListError> {
    let mut list = PackageList::default();
    for file in files {
        let mut stack = Vec::new();
        let mut reads = 0;
        let flat = expand(
            file,
            None,
            &mut stack,
            env,
            read,
            &mut list.files,
            &mut reads,
        )
        .map_err(|e| match e {
            ListError::TooMany(_) => ListError::TooMany(file.clone()),
            e => e,
        })?;
        tokens_into(&flat, &mut list)?;
    }
    Ok(list)
}

/// Whether a (trimmed) line survives the comment filter.
fn keep_line(line: &str) -> bool {
    if line.is_empty() {
        return false;
    }
    if !line.starts_with('#') {
        return true;
    }
    directive(line, "#INCLUDE:").is_some()
        || line.starts_with("#NEW_INSTALL_LIST#")
        || directive(line, "#ENV:").is_some()
}

/// `#TAG:<text>#` at the start of `s`: the text (non-empty, without `#` or `^`).
fn directive<'a>(s: &'a str, tag: &str) -> Option<&'a str> {
    let rest = s.strip_prefix(tag)?;
    let end = rest.find('#')?;
    let body = &rest[..end];
    (!body.is_empty() && !body.contains(['^', '\n'])).then_some(body)
}

/// Reads `file`, filters its lines and replaces its includes, recursively; returns its entries
/// joined with commas, as xCAT's flat string.
fn expand(
    file: &Path,
    from: Option<&Path>,
    stack: &mut Vec<PathBuf>,
    env: &dyn Fn(&str) -> Option<String>,
    read: &dyn Fn(&Path) -> std::io::Result<String>,
    seen: &mut Vec<PathBuf>,
    reads: &mut usize,
) -> Result<String, ListError> {
    *reads += 1;
    if *reads > MAX_READS {
        return Err(ListError::TooMany(file.to_path_buf()));
    }
    let key = std::fs::canonicalize(file).unwrap_or_else(|_| file.to_path_buf());
    if stack.contains(&key) {
        let mut chain = stack.clone();
        chain.push(key);
        return Err(ListError::Cycle(chain));
    }
    if stack.len() >= MAX_DEPTH {
        return Err(ListError::TooDeep(file.to_path_buf()));
    }
    let text = read(file).map_err(|e| ListError::Unreadable {
        path: file.to_path_buf(),
        from: from.map(Path::to_path_buf),
        reason: e.to_string(),
    })?;
    if !seen.iter().any(|p| p == file) {
        seen.push(file.to_path_buf());
    }
    stack.push(key);
    let dir = file.parent().unwrap_or(Path::new("."));
    let mut lines = Vec::new();
    for raw in text.lines() {
        let line = raw.trim();
        if !keep_line(line) {
            continue;
        }
        lines.push(replace_includes(
            line, file, dir, stack, env, read, seen, reads,
        )?);
    }
    stack.pop();
    Ok(lines.join(","))
}

/// Replaces every `#INCLUDE:<path>#` in a line with the included file's entries.
#[allow(clippy::too_many_arguments)] // the recursion's state, threaded through two functions
fn replace_includes(
    line: &str,
    file: &Path,
    dir: &Path,
    stack: &mut Vec<PathBuf>,
    env: &dyn Fn(&str) -> Option<String>,
    read: &dyn Fn(&Path) -> std::io::Result<String>,
    seen: &mut Vec<PathBuf>,
    reads: &mut usize,
) -> Result<String, ListError> {
    let mut out = String::new();
    let mut rest = line;
    while let Some(i) = rest.find("#INCLUDE:") {
        let after = &rest[i..];
        match directive(after, "#INCLUDE:") {
            Some(body) => {
                out.push_str(&rest[..i]);
                let path = expand_vars(body, env).map_err(|name| ListError::UnknownVariable {
                    name,
                    include: body.to_string(),
                    file: file.to_path_buf(),
                })?;
                let path = PathBuf::from(path.trim());
                let path = if path.is_absolute() {
                    path
                } else {
                    dir.join(path)
                };
                out.push_str(&expand(&path, Some(file), stack, env, read, seen, reads)?);
                rest = &after["#INCLUDE:".len() + body.len() + 1..];
            }
            None => {
                out.push_str(&rest[..i + 1]);
                rest = &rest[i + 1..];
            }
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Expands `$NAME` and `${NAME}` (NAME is `\w+`); an unset name is the error.
pub fn expand_vars(s: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let (name, used) = if let Some(inner) = after.strip_prefix('{') {
            match inner.find('}') {
                Some(end) if end > 0 && inner[..end].chars().all(word) => (&inner[..end], end + 2),
                _ => ("", 0),
            }
        } else {
            let end = after.find(|c: char| !word(c)).unwrap_or(after.len());
            (&after[..end], end)
        };
        if name.is_empty() {
            out.push('$');
            rest = after;
            continue;
        }
        out.push_str(&env(name).ok_or_else(|| name.to_string())?);
        rest = &after[used..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Perl's `basename` / `dirname` for an entry (trailing slashes ignored).
fn split_entry(entry: &str) -> (String, String) {
    let t = entry.trim_end_matches('/');
    let t = if t.is_empty() { entry } else { t };
    match t.rfind('/') {
        Some(0) => ("/".into(), t[1..].to_string()),
        Some(i) => (
            t[..i].trim_end_matches('/').to_string(),
            t[i + 1..].to_string(),
        ),
        None => (".".into(), t.to_string()),
    }
}

fn basename(entry: &str) -> String {
    split_entry(entry).1
}

/// Splits `#ENV:` text into `NAME=value` pairs, with `'...'` and `"..."` quoting.
pub fn parse_env(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' | '"' => {
                in_word = true;
                let mut closed = false;
                for d in chars.by_ref() {
                    if d == c {
                        closed = true;
                        break;
                    }
                    cur.push(d);
                }
                if !closed {
                    return Err(format!("unterminated {c} quote"));
                }
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    let mut pairs = Vec::new();
    for w in words {
        let Some((k, v)) = w.split_once('=') else {
            return Err(format!("{w} is not NAME=value"));
        };
        let valid = !k.is_empty()
            && !k.starts_with(|c: char| c.is_ascii_digit())
            && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(format!("{k} is not a variable name"));
        }
        pairs.push((k.to_string(), v.to_string()));
    }
    if pairs.is_empty() {
        return Err("no NAME=value in it".into());
    }
    Ok(pairs)
}

/// Splits one file's flat string into entries and files them into passes.
fn tokens_into(flat: &str, list: &mut PackageList) -> Result<(), ListError> {
    let mut pass = 1u32;
    for tok in flat.split(',') {
        let tok = tok.trim();
        if tok.is_empty() {
            continue;
        }
        if let Some(name) = tok.strip_prefix("--") {
            let n = basename(name.trim());
            if !n.is_empty() {
                list.passes.entry(pass).or_default().post_remove.push(n);
            }
        } else if let Some(name) = tok.strip_prefix('-') {
            let n = basename(name.trim());
            if !n.is_empty() {
                list.passes.entry(pass).or_default().pre_remove.push(n);
            }
        } else if tok.starts_with("#NEW_INSTALL_LIST#") {
            pass += 1;
        } else if let Some(text) = directive(tok, "#ENV:") {
            let pairs = parse_env(text).map_err(|reason| ListError::BadEnv {
                text: text.to_string(),
                reason,
            })?;
            list.passes.entry(pass).or_default().env.extend(pairs);
        } else if tok.starts_with('#') {
            // Other comments (text after a directive's closing #, say) are ignored.
        } else {
            let (key, name) = split_entry(tok);
            if !name.is_empty() {
                list.passes.entry(pass).or_default().add(&key, name);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// Parses `top` from an in-memory file set; `env` for include paths.
    fn parse(
        files: &[(&str, &str)],
        top: &str,
        env: &[(&str, &str)],
    ) -> Result<PackageList, ListError> {
        let files: HashMap<PathBuf, String> = files
            .iter()
            .map(|(p, t)| (PathBuf::from(p), t.to_string()))
            .collect();
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        parse_with(&split_files(top), &|k| env.get(k).cloned(), &|p| {
            files
                .get(p)
                .cloned()
                .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound))
        })
    }

    #[test]
    fn files_read_in_all_are_limited() {
        let names: Vec<String> = (0..=14).map(|i| format!("/p/{i}.pkglist")).collect();
        let texts: Vec<String> = (0..=14)
            .map(|i| {
                if i == 14 {
                    "bash\n".to_string()
                } else {
                    format!("#INCLUDE:{0}.pkglist#\n#INCLUDE:{0}.pkglist#\n", i + 1)
                }
            })
            .collect();
        let files: Vec<(&str, &str)> = names
            .iter()
            .zip(&texts)
            .map(|(n, t)| (n.as_str(), t.as_str()))
            .collect();
        let e = parse(&files, "/p/0.pkglist", &[]).unwrap_err();
        assert_eq!(e, ListError::TooMany(PathBuf::from("/p/0.pkglist")));
        assert!(e.to_string().contains("more than 1024 files read"), "{e}");
        let l = parse(&files[13..], "/p/13.pkglist", &[]).unwrap();
        assert_eq!(names_of(&l), ["bash", "bash"]);
    }

    fn names_of(l: &PackageList) -> Vec<String> {
        l.passes.values().flat_map(Pass::all_names).collect()
    }

    fn names(l: &PackageList, pass: u32) -> Vec<String> {
        l.passes.get(&pass).map(Pass::all_names).unwrap_or_default()
    }

    #[test]
    fn plain_names_comments_and_blank_lines() {
        let l = parse(
            &[(
                "/p/a.pkglist",
                "# a comment\nbash\n\n   \nnfs-common   \n#another\nvim,emacs\n",
            )],
            "/p/a.pkglist",
            &[],
        )
        .unwrap();
        assert_eq!(names(&l, 1), ["bash", "nfs-common", "vim", "emacs"]);
        assert_eq!(l.passes.len(), 1);
        assert_eq!(l.files, [PathBuf::from("/p/a.pkglist")]);
    }

    #[test]
    fn new_install_list_starts_passes() {
        let l = parse(
            &[(
                "/p/a",
                "a\n#NEW_INSTALL_LIST#\nb\n#NEW_INSTALL_LIST# trailing text\nc\n",
            )],
            "/p/a",
            &[],
        )
        .unwrap();
        assert_eq!(names(&l, 1), ["a"]);
        assert_eq!(names(&l, 2), ["b"]);
        assert_eq!(names(&l, 3), ["c"]);
    }

    #[test]
    fn leading_whitespace_is_ignored_deliberately() {
        // xCAT: "  #NEW_INSTALL_LIST#" becomes a package that comments out the rest of the
        // shell command, "  -foo" an option. Here both mean what they say.
        let l = parse(
            &[("/p/a", "  a\n  #NEW_INSTALL_LIST#\n  -foo\n\tb\n")],
            "/p/a",
            &[],
        )
        .unwrap();
        assert_eq!(names(&l, 1), ["a"]);
        assert_eq!(names(&l, 2), ["b"]);
        assert_eq!(l.passes[&2].pre_remove, ["foo"]);
    }

    #[test]
    fn removals_before_and_after() {
        let l = parse(
            &[("/p/a", "-ntp\n--ibm-java2-jre\nx\n-dir/sub/pkg\n")],
            "/p/a",
            &[],
        )
        .unwrap();
        let p = &l.passes[&1];
        assert_eq!(p.pre_remove, ["ntp", "pkg"]);
        assert_eq!(p.post_remove, ["ibm-java2-jre"]);
        assert_eq!(p.all_names(), ["x"]);
    }

    #[test]
    fn keys_are_dirnames() {
        let l = parse(
            &[(
                "/p/o",
                "xcat/xcat-core/xCATsn\npe/IBM_pe_license\nplain\nxcat/xcat-core/other\n",
            )],
            "/p/o",
            &[],
        )
        .unwrap();
        assert_eq!(
            l.passes[&1].install,
            [
                (
                    "xcat/xcat-core".to_string(),
                    vec!["xCATsn".to_string(), "other".to_string()]
                ),
                ("pe".to_string(), vec!["IBM_pe_license".to_string()]),
                (".".to_string(), vec!["plain".to_string()]),
            ]
        );
    }

    #[test]
    fn env_directives() {
        let l = parse(
            &[("/p/a", "#ENV:ACCEPT_LICENSE=yes#\nx\n#ENV:A=1 B=\"two words\" C='3'#\n#NEW_INSTALL_LIST#\n#ENV:D=4#\n")],
            "/p/a",
            &[],
        )
        .unwrap();
        let kv = |k: &str, v: &str| (k.to_string(), v.to_string());
        assert_eq!(
            l.passes[&1].env,
            [
                kv("ACCEPT_LICENSE", "yes"),
                kv("A", "1"),
                kv("B", "two words"),
                kv("C", "3")
            ]
        );
        assert_eq!(l.passes[&2].env, [kv("D", "4")]);
        assert!(l.passes[&2].install.is_empty());
        let e = parse(&[("/p/a", "#ENV:rm -rf /#\n")], "/p/a", &[]).unwrap_err();
        assert!(matches!(e, ListError::BadEnv { .. }), "{e}");
        let e = parse(&[("/p/a", "#ENV:1X=2#\n")], "/p/a", &[]).unwrap_err();
        assert!(e.to_string().contains("not a variable name"), "{e}");
    }

    #[test]
    fn includes_relative_to_the_including_file() {
        let l = parse(
            &[
                ("/top/a", "first\n#INCLUDE:sub/b#\nlast\n"),
                ("/top/sub/b", "b1\n# comment in include\n#INCLUDE:c#\n"),
                // Relative to /top/sub (xCAT would look in /top).
                ("/top/sub/c", "c1,c2\n"),
            ],
            "/top/a",
            &[],
        )
        .unwrap();
        assert_eq!(names(&l, 1), ["first", "b1", "c1", "c2", "last"]);
        assert_eq!(
            l.files,
            [
                PathBuf::from("/top/a"),
                PathBuf::from("/top/sub/b"),
                PathBuf::from("/top/sub/c")
            ]
        );
    }

    #[test]
    fn includes_anywhere_in_a_line_and_passes_inside() {
        let l = parse(
            &[
                ("/t/a", "x,#INCLUDE:/t/b#,y #INCLUDE:/t/c# z\n"),
                ("/t/b", "b1\n#NEW_INSTALL_LIST#\nb2\n"),
                ("/t/c", "c1\n"),
            ],
            "/t/a",
            &[],
        )
        .unwrap();
        // Flat: "x,b1,#NEW_INSTALL_LIST#,b2,y c1 z"
        assert_eq!(names(&l, 1), ["x", "b1"]);
        assert_eq!(names(&l, 2), ["b2", "y c1 z"]);
    }

    #[test]
    fn include_paths_expand_variables() {
        let files = [
            (
                "/t/a",
                "#INCLUDE:/custom/${SITE}/more.lst#\n#INCLUDE:/custom/$SITE/x#\n",
            ),
            ("/custom/eu/more.lst", "m\n"),
            ("/custom/eu/x", "x\n"),
        ];
        let l = parse(&files, "/t/a", &[("SITE", "eu")]).unwrap();
        assert_eq!(names(&l, 1), ["m", "x"]);
        let e = parse(&files, "/t/a", &[]).unwrap_err();
        assert_eq!(
            e,
            ListError::UnknownVariable {
                name: "SITE".into(),
                include: "/custom/${SITE}/more.lst".into(),
                file: "/t/a".into()
            }
        );
    }

    #[test]
    fn unreadable_includes_and_files() {
        let e = parse(&[("/t/a", "x\n#INCLUDE:missing#\n")], "/t/a", &[]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "cannot open /t/missing (included from /t/a): entity not found"
        );
        let e = parse(&[], "/t/none", &[]).unwrap_err();
        assert!(matches!(e, ListError::Unreadable { from: None, .. }), "{e}");
    }

    #[test]
    fn include_cycles_are_errors() {
        let e = parse(
            &[("/t/a", "#INCLUDE:b#\n"), ("/t/b", "x\n#INCLUDE:/t/a#\n")],
            "/t/a",
            &[],
        )
        .unwrap_err();
        assert_eq!(e.to_string(), "#INCLUDE cycle: /t/a -> /t/b -> /t/a");
        let e = parse(&[("/t/self", "#INCLUDE:self#\n")], "/t/self", &[]).unwrap_err();
        assert!(matches!(e, ListError::Cycle(_)));
        // Including the same file twice (no cycle) is fine.
        let l = parse(
            &[("/t/a", "#INCLUDE:c#\n#INCLUDE:c#\n"), ("/t/c", "c\n")],
            "/t/a",
            &[],
        )
        .unwrap();
        assert_eq!(names(&l, 1), ["c", "c"]);
    }

    #[test]
    fn several_files_merge_by_pass() {
        let l = parse(
            &[
                ("/t/a", "a1\n#NEW_INSTALL_LIST#\na2\n"),
                ("/t/b", "b1\n#NEW_INSTALL_LIST#\nb2\n"),
            ],
            "/t/a, /t/b,",
            &[],
        )
        .unwrap();
        assert_eq!(names(&l, 1), ["a1", "b1"]);
        assert_eq!(names(&l, 2), ["a2", "b2"]);
    }

    #[test]
    fn groups_patterns_and_other_comments() {
        let l = parse(
            &[(
                "/t/a",
                "@Core\n@^minimal-environment\nvim*\n#not a directive\n#INCLUDEX#\n",
            )],
            "/t/a",
            &[],
        )
        .unwrap();
        assert_eq!(names(&l, 1), ["@Core", "@^minimal-environment", "vim*"]);
    }

    #[test]
    fn malformed_directives_are_comments() {
        // "#INCLUDE:#" (empty path) and "#ENV:" without its closing # are plain comments.
        let l = parse(&[("/t/a", "#INCLUDE:#\n#ENV:A=1\nx\n")], "/t/a", &[]).unwrap();
        assert_eq!(names(&l, 1), ["x"]);
        assert!(l.passes[&1].env.is_empty());
    }

    #[test]
    fn variables() {
        let env = |k: &str| (k == "A").then(|| "1".to_string());
        assert_eq!(expand_vars("x$A/${A}y$", &env).unwrap(), "x1/1y$");
        assert_eq!(expand_vars("${}", &env).unwrap(), "${}");
        assert_eq!(expand_vars("$B", &env).unwrap_err(), "B");
    }

    #[test]
    fn entries_split_like_perl() {
        assert_eq!(split_entry("a/b/c"), ("a/b".into(), "c".into()));
        assert_eq!(split_entry("c"), (".".into(), "c".into()));
        assert_eq!(split_entry("a/c/"), ("a".into(), "c".into()));
        assert_eq!(split_entry("/c"), ("/".into(), "c".into()));
    }
}
