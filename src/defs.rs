//! Reads and writes xCAT stanza definitions files (what `lsdef -z` prints and `mkdef -z`
//! reads) and answers xCAT table calls from the objects in them, the way standalone mode needs.
//!
//! This module knows nothing of the host, the wire protocol or the image commands: the only
//! type it shares with the rest of the engine is [`Row`].
//!
//! # The format
//!
//! As `lsdef -z` writes it (`xCAT-server/lib/xcat/plugins/DBobjectdefs.pm`, `defls`):
//!
//! ```text
//! # <xCAT data object stanza file>
//!
//! rhels8.8.0-x86_64-netboot-compute:
//!     objtype=osimage
//!     imagetype=linux
//!     pkglist=/opt/xcat/share/xcat/netboot/rh/compute.rhels8.x86_64.pkglist
//! ```
//!
//! One header comment, then per object a blank line, `name:`, `objtype=<type>` and the set
//! attributes sorted by name, each indented four spaces; values are written raw, unquoted.
//! Reading follows `xCAT::DBobjUtils::readFileInput` (`perl-xCAT/xCAT/DBobjUtils.pm`):
//! blank lines and lines starting with `#` (after whitespace) are skipped; a line ending in `:`
//! names an object (everything before that colon, trimmed); any other line with `=` is
//! `attr=value`, split at the first `=`, both sides trimmed, then one leading `"` and one
//! trailing `"` (with the whitespace next to them) are removed; indentation is optional.
//! A stanza named `default-<type>` gives defaults that are copied into each later object of
//! that type when its `objtype=` line is read (later lines override them). Every object needs
//! an `objtype=` line, as `mkdef -z` does ("No type was provided for object").
//!
//! Where mkdef silently skips what it cannot read, [`Defs::parse`] fails with the line number:
//! a line that is neither kind, an attribute before any object, a duplicate attribute, an
//! unknown objtype, a duplicate object of the same type, a second site object, an `osimage`
//! attribute that defspec does not know or that the object's `imagetype` does not allow
//! (mkdef refuses those too). One deliberate difference: a line with `=` that ends in `:`
//! (`net=fd59::`, as lsdef prints IPv6 networks) is an attribute here, where mkdef takes it for
//! a broken object name and drops the stanza; [`Defs::to_stanza`] quotes a value that ends in
//! `:` or starts or ends with `"` (`attr="value:"`), so mkdef reads our output back exactly.
//! An empty value (`attr=`, what `lsdef -i attr -z` prints for unset ones) means "not set".
//!
//! # The table view
//!
//! Following `%defspec` in `perl-xCAT/xCAT/Schema.pm`:
//!
//! * `osimage`, `linuximage`, `winimage`, `nimimage`, keyed by `imagename`, are the
//!   `objtype=osimage` objects. Column `c` of table `t` is the attribute whose `tabentry` is
//!   `t.c` and whose `only_if => 'imagetype=…'` (if any) matches the object's `imagetype` the
//!   way `getobjdefs` matches it (`/\bvalue\b/`, case-sensitive): e.g. `linuximage.comments` is
//!   `usercomment` for linux images, `nimimage.comments` is `usercomment` for NIM ones.
//!   Columns no attribute maps to (`osimage.comments`, `*.disable`, `winimage.comments`,
//!   `nimimage.res_group`) are always absent and cannot be set.
//! * `site`, keyed by `key` with column `value`, is the attributes of the one `objtype=site`
//!   object (lsdef names it `clustersite`); `comments`/`disable` are not representable.
//! * `passwd` is this module's extension, below.
//!
//! Calls behave like `xCAT::Table`'s: `getAttribs` returns the first matching row that has at
//! least one asked column set, with only those columns; key values compare exactly, an empty
//! key value matches an unset column; `getAllAttribsWhere` ANDs its conditions and drops rows
//! with none of the asked columns (unless `ALL`); rows whose `disable` is set to anything but
//! `0`/`no` are invisible to both; `setAttribs` updates every matching row or inserts one, but
//! inserts nothing when every value is empty; an empty value unsets; `delEntries` of a missing
//! row is fine. Unknown tables and columns are errors.
//!
//! # Extension: `passwd` objects
//!
//! lsdef has no object type for the `passwd` table, so a definitions file may hold objects
//! with `objtype=passwd` and the table's columns as attributes: `key` (required), `username`,
//! `password`, `cryptmethod`, `authdomain`, `comments`, `disable`. The object name is free
//! (e.g. `system-root`); `(key, username)` must be unique. xCAT's `mkdef -z` does not know
//! this type.
//!
//! # Where xCAT was unclear, what we chose
//!
//! * A missing `imagetype` counts as `linux`. xCAT itself is not consistent: `getobjdefs`
//!   (DBobjUtils.pm) shows no `only_if` attribute then, `chdef` of a new osimage defaults it to
//!   `NIM` (DBobjectdefs.pm `defch`), `mkdef` with `provmethod` defaults it to `linux`
//!   (`parse_attr_for_osimage`), and xCAT's Linux image commands read `linuximage` without
//!   looking at it. For an engine of Linux image commands, linux is the useful default.
//! * A `linuximage`/`winimage`/`nimimage` row exists when the osimage object does, its
//!   imagetype selects the table, and at least one attribute maps to it. That is what
//!   `mkdef -z` of this file would create: `setobjdefs` writes a table only for attributes it
//!   was given, and `setAttribs` skips blank rows.
//! * Deleting the `osimage` row removes the whole object (as `rmdef` does: lsdef stops listing
//!   it, and a file cannot keep its linuximage row on its own). Deleting a `linuximage` row
//!   removes the attributes mapped to it. Deleting with no keys at all is refused.
//! * `table_set` on `linuximage` for a missing image creates it with `imagetype` unset; on
//!   `winimage`/`nimimage` with `imagetype` `windows`/`NIM`, or its columns would have no home.
//!   A set that leaves an attribute outside every table (e.g. `imagetype=windows` on an image
//!   with a `pkglist`) is refused, so every object stays writable and readable.
//! * `=~`/`!~` are SQL `LIKE`/`NOT LIKE` in `xCAT::Table::buildWhereClause`, not regexes: we
//!   match `%` and `_`, ASCII case-insensitively, as SQLite does; `<`, `<=`, `>`, `>=` compare
//!   strings. An unset column matches no condition (SQL NULL), except `attr==` (empty value).
//! * Objects of other xCAT types (node, network, …) are kept and written back, but no table
//!   call sees them. The same name may be used by objects of different types.

use crate::protocol::Row;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// The first line `lsdef -z` prints.
const HEADER: &str = "# <xCAT data object stanza file>";
/// The indentation `lsdef -z` puts before each attribute.
const INDENT: &str = "    ";
/// What an osimage without `imagetype` counts as (see the module doc).
const DEFAULT_IMAGETYPE: &str = "linux";

/// xCAT's object types (`%defspec` in Schema.pm) and our `passwd`.
const OBJTYPES: &[&str] = &[
    "node",
    "osimage",
    "network",
    "route",
    "group",
    "site",
    "policy",
    "monitoring",
    "notification",
    "eventlog",
    "auditlog",
    "boottarget",
    "kit",
    "kitrepo",
    "kitcomponent",
    "rack",
    "osdistro",
    "osdistroupdate",
    "zone",
    "zvmivp",
    "firmware",
    "taskstate",
    "pdu",
    "passwd",
];

/// One entry of `@{ $defspec{osimage}->{'attrs'} }`.
struct AttrMap {
    /// `attr_name`
    attr: &'static str,
    /// Table of `tabentry`.
    table: &'static str,
    /// Column of `tabentry`.
    column: &'static str,
    /// The `imagetype` value of `only_if => 'imagetype=…'`, if any.
    only_if: Option<&'static str>,
}

const fn m(
    attr: &'static str,
    table: &'static str,
    column: &'static str,
    only_if: Option<&'static str>,
) -> AttrMap {
    AttrMap {
        attr,
        table,
        column,
        only_if,
    }
}

const LINUX: Option<&str> = Some("linux");
const WINDOWS: Option<&str> = Some("windows");
const NIM: Option<&str> = Some("NIM");

/// The osimage defspec in Schema.pm order, without the object key `imagename`
/// (`osimage.imagename`), which is the object name.
const OSIMAGE_ATTRS: &[AttrMap] = &[
    m("groups", "osimage", "groups", None),
    m("imagetype", "osimage", "imagetype", None),
    m("description", "osimage", "description", None),
    m("provmethod", "osimage", "provmethod", None),
    m("osdistroname", "osimage", "osdistroname", None),
    m("osupdatename", "osimage", "osupdatename", None),
    m("cfmdir", "osimage", "cfmdir", None),
    m("rootfstype", "osimage", "rootfstype", LINUX),
    m("nfsrootopts", "osimage", "nfsrootopts", LINUX),
    m("profile", "osimage", "profile", None),
    m("osname", "osimage", "osname", None),
    m("osvers", "osimage", "osvers", None),
    m("osarch", "osimage", "osarch", None),
    m("synclists", "osimage", "synclists", None),
    m("postscripts", "osimage", "postscripts", None),
    m("postbootscripts", "osimage", "postbootscripts", None),
    m("serverrole", "osimage", "serverrole", None),
    m("isdeletable", "osimage", "isdeletable", None),
    m("kitcomponents", "osimage", "kitcomponents", None),
    m("template", "linuximage", "template", LINUX),
    m("boottarget", "linuximage", "boottarget", LINUX),
    m("addkcmdline", "linuximage", "addkcmdline", LINUX),
    m("pkglist", "linuximage", "pkglist", LINUX),
    m("pkgdir", "linuximage", "pkgdir", LINUX),
    m("otherpkglist", "linuximage", "otherpkglist", LINUX),
    m("otherpkgdir", "linuximage", "otherpkgdir", LINUX),
    m("exlist", "linuximage", "exlist", LINUX),
    m("postinstall", "linuximage", "postinstall", LINUX),
    m("rootimgdir", "linuximage", "rootimgdir", LINUX),
    m("kerneldir", "linuximage", "kerneldir", LINUX),
    m("nodebootif", "linuximage", "nodebootif", LINUX),
    m("otherifce", "linuximage", "otherifce", LINUX),
    m("netdrivers", "linuximage", "netdrivers", LINUX),
    m("kernelver", "linuximage", "kernelver", LINUX),
    m("krpmver", "linuximage", "krpmver", LINUX),
    m("permission", "linuximage", "permission", LINUX),
    m("dump", "linuximage", "dump", LINUX),
    m("crashkernelsize", "linuximage", "crashkernelsize", LINUX),
    m("partitionfile", "linuximage", "partitionfile", LINUX),
    m("driverupdatesrc", "linuximage", "driverupdatesrc", LINUX),
    m("usercomment", "linuximage", "comments", LINUX),
    m("template", "winimage", "template", WINDOWS),
    m("installto", "winimage", "installto", WINDOWS),
    m("partitionfile", "winimage", "partitionfile", WINDOWS),
    m("winpepath", "winimage", "winpepath", WINDOWS),
    m("nimtype", "nimimage", "nimtype", NIM),
    m("nimmethod", "nimimage", "nimmethod", NIM),
    m("lpp_source", "nimimage", "lpp_source", NIM),
    m("spot", "nimimage", "spot", NIM),
    m("root", "nimimage", "root", NIM),
    m("dump", "nimimage", "dump", NIM),
    m("configdump", "nimimage", "configdump", NIM),
    m("paging", "nimimage", "paging", NIM),
    m("resolv_conf", "nimimage", "resolv_conf", NIM),
    m("image_data", "nimimage", "image_data", NIM),
    m("tmp", "nimimage", "tmp", NIM),
    m("home", "nimimage", "home", NIM),
    m("shared_home", "nimimage", "shared_home", NIM),
    m("shared_root", "nimimage", "shared_root", NIM),
    m("script", "nimimage", "script", NIM),
    m("fb_script", "nimimage", "fb_script", NIM),
    m("bosinst_data", "nimimage", "bosinst_data", NIM),
    m("installp_bundle", "nimimage", "installp_bundle", NIM),
    m("otherpkgs", "nimimage", "otherpkgs", NIM),
    m("mksysb", "nimimage", "mksysb", NIM),
    m("usercomment", "nimimage", "comments", NIM),
    m("environvar", "osimage", "environvar", None),
];

/// Columns of xCAT's osimage table (Schema.pm), in schema order.
pub const OSIMAGE_COLUMNS: &[&str] = &[
    "imagename",
    "groups",
    "profile",
    "imagetype",
    "description",
    "provmethod",
    "rootfstype",
    "nfsrootopts",
    "osdistroname",
    "osupdatename",
    "cfmdir",
    "osname",
    "osvers",
    "osarch",
    "synclists",
    "postscripts",
    "postbootscripts",
    "serverrole",
    "isdeletable",
    "kitcomponents",
    "environvar",
    "comments",
    "disable",
];

/// Columns of xCAT's linuximage table (Schema.pm), in schema order.
pub const LINUXIMAGE_COLUMNS: &[&str] = &[
    "imagename",
    "template",
    "boottarget",
    "addkcmdline",
    "pkglist",
    "pkgdir",
    "otherpkglist",
    "otherpkgdir",
    "exlist",
    "postinstall",
    "rootimgdir",
    "kerneldir",
    "nodebootif",
    "otherifce",
    "netdrivers",
    "kernelver",
    "krpmver",
    "permission",
    "dump",
    "crashkernelsize",
    "partitionfile",
    "driverupdatesrc",
    "comments",
    "disable",
];

/// Columns of the `passwd` table, which are also the attributes of `passwd` objects.
const PASSWD_COLS: &[&str] = &[
    "key",
    "username",
    "password",
    "cryptmethod",
    "authdomain",
    "comments",
    "disable",
];

/// How a table's rows come from objects.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// One row per `osimage` object (`osimage`, `linuximage`, `winimage`, `nimimage`).
    Image,
    /// One row per attribute of the site object.
    Site,
    /// One row per `passwd` object.
    Passwd,
}

/// A table a definitions file can answer for, with its Schema.pm `keys` and `cols`.
struct TableSpec {
    name: &'static str,
    kind: Kind,
    keys: &'static [&'static str],
    cols: &'static [&'static str],
}

const TABLES: &[TableSpec] = &[
    TableSpec {
        name: "osimage",
        kind: Kind::Image,
        keys: &["imagename"],
        cols: OSIMAGE_COLUMNS,
    },
    TableSpec {
        name: "linuximage",
        kind: Kind::Image,
        keys: &["imagename"],
        cols: LINUXIMAGE_COLUMNS,
    },
    TableSpec {
        name: "winimage",
        kind: Kind::Image,
        keys: &["imagename"],
        cols: &[
            "imagename",
            "template",
            "installto",
            "partitionfile",
            "winpepath",
            "comments",
            "disable",
        ],
    },
    TableSpec {
        name: "nimimage",
        kind: Kind::Image,
        keys: &["imagename"],
        cols: &[
            "imagename",
            "nimtype",
            "lpp_source",
            "spot",
            "root",
            "dump",
            "paging",
            "resolv_conf",
            "tmp",
            "home",
            "shared_home",
            "res_group",
            "nimmethod",
            "script",
            "bosinst_data",
            "installp_bundle",
            "mksysb",
            "fb_script",
            "shared_root",
            "otherpkgs",
            "image_data",
            "configdump",
            "comments",
            "disable",
        ],
    },
    TableSpec {
        name: "site",
        kind: Kind::Site,
        keys: &["key"],
        cols: &["key", "value", "comments", "disable"],
    },
    TableSpec {
        name: "passwd",
        kind: Kind::Passwd,
        keys: &["key", "username"],
        cols: PASSWD_COLS,
    },
];

/// One object of a stanza file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    /// The object name, the `name:` line.
    pub name: String,
    /// The `objtype=` value, e.g. `osimage`, `site` or `passwd`.
    pub objtype: String,
    /// The set attributes (never empty values), without `objtype`.
    pub attrs: BTreeMap<String, String>,
}

impl Object {
    fn new(name: &str, objtype: &str) -> Object {
        Object {
            name: name.to_string(),
            objtype: objtype.to_string(),
            attrs: BTreeMap::new(),
        }
    }
}

/// A parsed definitions file; keeps objects in file order.
///
/// Every object in it can be written by [`Defs::to_stanza`] and read back unchanged.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Defs {
    objects: Vec<Object>,
}

/// Why a definitions file could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefsError {
    /// The 1-based line the problem is on.
    pub line: usize,
    /// What is wrong.
    pub msg: String,
}

impl fmt::Display for DefsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.msg)
    }
}

impl std::error::Error for DefsError {}

fn err<T>(line: usize, msg: impl Into<String>) -> Result<T, DefsError> {
    Err(DefsError {
        line,
        msg: msg.into(),
    })
}

/// Perl's `\s`.
fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0B' | '\x0C')
}

fn trim(s: &str) -> &str {
    s.trim_matches(is_space)
}

/// The value as `readFileInput` keeps it: trimmed, then `s/^\s*"\s*//; s/\s*"\s*$//`.
fn decode_value(raw: &str) -> String {
    let v = trim(raw);
    let v = match v.strip_prefix('"') {
        Some(rest) => rest.trim_start_matches(is_space),
        None => v,
    };
    let v = match v.strip_suffix('"') {
        Some(rest) => rest.trim_end_matches(is_space),
        None => v,
    };
    v.to_string()
}

/// The value as written after `attr=`; `decode_value(encode_value(v)) == v` for every value
/// [`check_value`] accepts.
fn encode_value(v: &str) -> String {
    if v.starts_with('"') || v.ends_with('"') || v.ends_with(':') {
        format!("\"{v}\"")
    } else {
        v.to_string()
    }
}

/// `^default-([^-]+)$`: the type a defaults stanza is for.
fn default_stanza_type(name: &str) -> Option<&str> {
    name.strip_prefix("default-")
        .filter(|t| !t.is_empty() && !t.contains('-'))
}

/// Whether `name` can be written as a `name:` line and read back as the same object.
fn check_object_name(name: &str) -> Result<(), String> {
    let bad = if name.is_empty() {
        Some("it is empty")
    } else if name.contains('\n') || name.contains('=') {
        Some("it contains a line break or '='")
    } else if trim(name) != name {
        Some("it starts or ends with whitespace")
    } else if name.starts_with('#') {
        Some("it starts with '#', which makes a comment")
    } else if name == "default" || default_stanza_type(name).is_some() {
        Some("mkdef -z reads such a stanza as defaults")
    } else {
        None
    };
    match bad {
        Some(why) => Err(format!(
            "object name {name:?} cannot be written to a definitions file: {why}"
        )),
        None => Ok(()),
    }
}

/// Whether `attr` can be written as the name part of an `attr=value` line.
fn check_attr_name(attr: &str) -> Result<(), String> {
    let bad = if attr.is_empty() {
        Some("it is empty")
    } else if attr.contains('\n') || attr.contains('=') {
        Some("it contains a line break or '='")
    } else if trim(attr) != attr {
        Some("it starts or ends with whitespace")
    } else if attr.starts_with('#') {
        Some("it starts with '#', which makes a comment")
    } else if attr == "objtype" {
        Some("objtype is the object's type")
    } else {
        None
    };
    match bad {
        Some(why) => Err(format!(
            "attribute name {attr:?} cannot be written to a definitions file: {why}"
        )),
        None => Ok(()),
    }
}

/// Whether a value given to `table_set` can be written and read back unchanged.
fn check_value(table: &str, col: &str, v: &str) -> Result<(), String> {
    if v.contains('\n') {
        return Err(format!(
            "{table}.{col}: a value with a line break cannot be written to a definitions file"
        ));
    }
    if trim(v) != v {
        return Err(format!(
            "{table}.{col}: mkdef -z trims leading and trailing whitespace, so {v:?} cannot be \
             written to a definitions file"
        ));
    }
    Ok(())
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// `hay =~ /\bword\b/` for a `word` made of word characters.
fn contains_word(hay: &str, word: &str) -> bool {
    !word.is_empty()
        && hay.match_indices(word).any(|(i, _)| {
            let before = hay[..i].chars().next_back();
            let after = hay[i + word.len()..].chars().next();
            !before.is_some_and(is_word_char) && !after.is_some_and(is_word_char)
        })
}

/// The object's `imagetype`, or what a missing one counts as.
fn imagetype(o: &Object) -> &str {
    o.attrs
        .get("imagetype")
        .map_or(DEFAULT_IMAGETYPE, String::as_str)
}

fn describe_imagetype(o: &Object) -> String {
    match o.attrs.get("imagetype") {
        Some(t) => format!("imagetype={t}"),
        None => format!("imagetype unset (counts as {DEFAULT_IMAGETYPE})"),
    }
}

/// Whether the defspec entry applies to an object of this imagetype (its `only_if`).
fn applies(map: &AttrMap, imagetype: &str) -> bool {
    map.only_if.is_none_or(|v| contains_word(imagetype, v))
}

/// Whether `attr` is an osimage attribute a file may give with a value.
fn check_osimage_attr_name(attr: &str) -> Result<(), String> {
    if attr == "imagename" {
        Err("imagename is the object name of an osimage, not an attribute".to_string())
    } else if OSIMAGE_ATTRS.iter().any(|m| m.attr == attr) {
        Ok(())
    } else {
        Err(format!(
            "{attr} is not an osimage attribute (Schema.pm defspec)"
        ))
    }
}

fn check_passwd_attr_name(attr: &str) -> Result<(), String> {
    if PASSWD_COLS.contains(&attr) {
        Ok(())
    } else {
        Err(format!(
            "{attr} is not a passwd attribute (they are the passwd table's columns: {})",
            PASSWD_COLS.join(", ")
        ))
    }
}

/// What one object must satisfy on its own; the error names the attribute at fault, if any.
fn check_object(o: &Object) -> Result<(), (Option<String>, String)> {
    match o.objtype.as_str() {
        "osimage" => {
            let it = imagetype(o);
            for attr in o.attrs.keys() {
                check_osimage_attr_name(attr).map_err(|e| (Some(attr.clone()), e))?;
                let maps: Vec<&AttrMap> = OSIMAGE_ATTRS.iter().filter(|m| m.attr == attr).collect();
                if !maps.iter().any(|m| applies(m, it)) {
                    let need: Vec<&str> = maps.iter().filter_map(|m| m.only_if).collect();
                    return Err((
                        Some(attr.clone()),
                        format!(
                            "osimage {}: attribute {attr} is kept only when imagetype is {} \
                             (Schema.pm only_if), but it has {}",
                            o.name,
                            need.join(" or "),
                            describe_imagetype(o)
                        ),
                    ));
                }
            }
        }
        "passwd" => {
            for attr in o.attrs.keys() {
                check_passwd_attr_name(attr).map_err(|e| (Some(attr.clone()), e))?;
            }
            if !o.attrs.contains_key("key") {
                return Err((
                    None,
                    format!(
                        "passwd object {} needs a key attribute (the passwd table's key column)",
                        o.name
                    ),
                ));
            }
        }
        _ => {}
    }
    Ok(())
}

/// What `new` may not share with the objects before it.
fn conflict(before: &[Object], new: &Object) -> Option<String> {
    for o in before {
        if o.objtype == new.objtype && o.name == new.name {
            return Some(format!(
                "{} object {} is defined twice",
                new.objtype, new.name
            ));
        }
        if o.objtype == "site" && new.objtype == "site" {
            return Some(format!(
                "a second site object ({}, after {}); the site table is one object, which lsdef \
                 calls clustersite",
                new.name, o.name
            ));
        }
        if o.objtype == "passwd"
            && new.objtype == "passwd"
            && o.attrs.get("key") == new.attrs.get("key")
            && o.attrs.get("username") == new.attrs.get("username")
        {
            return Some(format!(
                "passwd objects {} and {} have the same key and username, the passwd table's key",
                o.name, new.name
            ));
        }
    }
    None
}

fn first_conflict(objects: &[Object]) -> Option<String> {
    (0..objects.len()).find_map(|i| conflict(&objects[..i], &objects[i]))
}

/// An object (or defaults) stanza being read.
struct Stanza {
    name: String,
    line: usize,
    /// `Some(type)` for a `default-<type>` stanza.
    default_for: Option<String>,
    objtype: Option<(String, usize)>,
    /// Values as read, empty ones included (they unset).
    attrs: BTreeMap<String, String>,
    /// The line each attribute came from (its own or a default's).
    lines: BTreeMap<String, usize>,
    /// Attributes the stanza itself gave.
    explicit: BTreeSet<String>,
}

type Defaults = BTreeMap<String, BTreeMap<String, (String, usize)>>;

impl Stanza {
    fn add(
        &mut self,
        attr: &str,
        val: String,
        line: usize,
        defaults: &Defaults,
    ) -> Result<(), DefsError> {
        if attr.is_empty() {
            return err(line, "attribute line with no attribute name");
        }
        if attr == "objtype" {
            if val.is_empty() {
                return err(line, format!("objtype of {} has no value", self.name));
            }
            if let Some(t) = &self.default_for {
                if *t != val {
                    return err(
                        line,
                        format!("objtype={val} in the defaults stanza for {t}"),
                    );
                }
                return Ok(());
            }
            if self.objtype.is_some() {
                return err(line, format!("objtype is given twice for {}", self.name));
            }
            if !OBJTYPES.contains(&val.as_str()) {
                return err(
                    line,
                    format!(
                        "unknown objtype {val:?}; xCAT's object types are {} (passwd is this \
                         engine's extension)",
                        OBJTYPES[..OBJTYPES.len() - 1].join(", ")
                    ),
                );
            }
            // As readFileInput: the defaults land now and overwrite what came before.
            if let Some(d) = defaults.get(&val) {
                for (k, (v, l)) in d {
                    self.attrs.insert(k.clone(), v.clone());
                    self.lines.insert(k.clone(), *l);
                }
            }
            self.objtype = Some((val, line));
            return Ok(());
        }
        if !self.explicit.insert(attr.to_string()) {
            return err(
                line,
                format!("attribute {attr} is given twice for {}", self.name),
            );
        }
        self.attrs.insert(attr.to_string(), val);
        self.lines.insert(attr.to_string(), line);
        Ok(())
    }

    fn finish(self, defs: &mut Defs, defaults: &mut Defaults) -> Result<(), DefsError> {
        if let Some(t) = self.default_for {
            if !OBJTYPES.contains(&t.as_str()) {
                return err(
                    self.line,
                    format!("defaults stanza for unknown objtype {t:?}"),
                );
            }
            let d = defaults.entry(t).or_default();
            for (k, v) in self.attrs {
                let l = self.lines.get(&k).copied().unwrap_or(self.line);
                d.insert(k, (v, l));
            }
            return Ok(());
        }
        let Some((objtype, _)) = self.objtype else {
            return err(
                self.line,
                format!(
                    "object {} has no objtype= line (mkdef -z: \"No type was provided for \
                     object\")",
                    self.name
                ),
            );
        };
        let line_of = |attr: &Option<String>| {
            attr.as_ref()
                .and_then(|a| self.lines.get(a).copied())
                .unwrap_or(self.line)
        };
        // Attribute names are checked even when their value is empty.
        for (attr, v) in &self.attrs {
            let known = match objtype.as_str() {
                "osimage" if v.is_empty() && attr == "imagename" => Ok(()),
                "osimage" => check_osimage_attr_name(attr),
                "passwd" => check_passwd_attr_name(attr),
                _ => Ok(()),
            };
            if let Err(e) = known {
                return err(line_of(&Some(attr.clone())), e);
            }
        }
        let mut obj = Object::new(&self.name, &objtype);
        obj.attrs = self
            .attrs
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if let Err((attr, e)) = check_object(&obj) {
            return err(line_of(&attr), e);
        }
        if let Some(e) = conflict(&defs.objects, &obj) {
            return err(self.line, e);
        }
        defs.objects.push(obj);
        Ok(())
    }
}

/// Where a table row comes from, so set and delete can change it.
enum Origin {
    /// The object at this index.
    Object(usize),
    /// This attribute of the site object at this index.
    SiteAttr(usize, String),
}

/// The row of an `Image` table for an osimage object, if it has one.
fn image_row(o: &Object, table: &str) -> Option<Row> {
    let it = imagetype(o);
    let mut row = Row::new();
    row.insert("imagename".to_string(), o.name.clone());
    let mut mapped = 0;
    for map in OSIMAGE_ATTRS
        .iter()
        .filter(|m| m.table == table && applies(m, it))
    {
        if let Some(v) = o.attrs.get(map.attr) {
            row.insert(map.column.to_string(), v.clone());
            mapped += 1;
        }
    }
    (table == "osimage" || mapped > 0).then_some(row)
}

fn table_spec(table: &str) -> Result<&'static TableSpec, String> {
    TABLES.iter().find(|t| t.name == table).ok_or_else(|| {
        let names: Vec<&str> = TABLES.iter().map(|t| t.name).collect();
        format!(
            "table {table} is not available in a definitions file (it answers for {})",
            names.join(", ")
        )
    })
}

impl TableSpec {
    fn check_column(&self, col: &str, role: &str) -> Result<(), String> {
        if self.cols.contains(&col) {
            Ok(())
        } else {
            Err(format!(
                "table {} has no column {col:?} (given as {role})",
                self.name
            ))
        }
    }
}

/// `getAttribs`' key match: exact, an empty value matching an unset column.
fn keys_match(row: &Row, keys: &Row) -> bool {
    keys.iter().all(|(k, v)| {
        if v.is_empty() {
            !row.contains_key(k)
        } else {
            row.get(k) == Some(v)
        }
    })
}

/// xCAT::Table skips rows whose `disable` is set and not one of `0`, `no` (any case).
fn is_disabled(row: &Row) -> bool {
    row.get("disable")
        .is_some_and(|d| !matches!(d.as_str(), "0" | "no" | "NO" | "No" | "nO"))
}

/// The asked columns that are set; `None` when none is (xCAT returns no row then).
fn project(row: &Row, attrs: &[String]) -> Option<Row> {
    let out: Row = attrs
        .iter()
        .filter_map(|a| row.get(a).map(|v| (a.clone(), v.clone())))
        .collect();
    (!out.is_empty()).then_some(out)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    Like,
    NotLike,
    Le,
    Lt,
    Ge,
    Gt,
}

/// One condition of `getAllAttribsWhere`'s array form.
struct Cond {
    col: String,
    op: Op,
    val: String,
}

impl Cond {
    /// As `xCAT::Table::buildWhereClause`: the operators are tried in its order, each must
    /// come before any other `=` except `!~`, and `=~`/`!~` lose one `/` at each end.
    fn parse(s: &str) -> Result<Cond, String> {
        const ORDER: &[(&str, Op, bool)] = &[
            ("==", Op::Eq, true),
            ("=~", Op::Like, true),
            ("!=", Op::Ne, true),
            ("!~", Op::NotLike, false),
            ("<=", Op::Le, true),
            ("<", Op::Lt, true),
            (">=", Op::Ge, true),
            (">", Op::Gt, true),
        ];
        for &(tok, op, anchored) in ORDER {
            let Some(i) = s.find(tok) else { continue };
            if anchored && s[..i].contains('=') {
                continue;
            }
            let mut val = &s[i + tok.len()..];
            if matches!(op, Op::Like | Op::NotLike) {
                val = val.strip_prefix('/').unwrap_or(val);
                val = val.strip_suffix('/').unwrap_or(val);
            }
            return Ok(Cond {
                col: s[..i].to_string(),
                op,
                val: val.to_string(),
            });
        }
        Err(format!(
            "unsupported condition {s:?}: use attr==val, attr!=val, attr=~pattern, \
             attr!~pattern, attr<val, attr<=val, attr>val or attr>=val"
        ))
    }

    fn holds(&self, row: &Row) -> bool {
        let Some(v) = row.get(&self.col) else {
            // SQL NULL compares with nothing; an empty value stands for '' as well.
            return self.op == Op::Eq && self.val.is_empty();
        };
        let (v, w) = (v.as_str(), self.val.as_str());
        match self.op {
            Op::Eq => v == w,
            Op::Ne => v != w,
            Op::Like => like(w, v),
            Op::NotLike => !like(w, v),
            Op::Le => v <= w,
            Op::Lt => v < w,
            Op::Ge => v >= w,
            Op::Gt => v > w,
        }
    }
}

/// SQL `text LIKE pattern` as SQLite does it: `%` any run, `_` one character, ASCII letters
/// case-insensitive, no escape character.
fn like(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == '%' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && (p[pi] == '_' || p[pi].eq_ignore_ascii_case(&t[ti])) {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '%')
}

fn set_or_unset(attrs: &mut BTreeMap<String, String>, attr: &str, val: &str) {
    if val.is_empty() {
        attrs.remove(attr);
    } else {
        attrs.insert(attr.to_string(), val.to_string());
    }
}

impl Defs {
    /// An empty definitions file.
    pub fn new() -> Defs {
        Defs::default()
    }

    /// Reads a definitions file in `mkdef -z` stanza format (see the module doc); errors carry
    /// the line number.
    pub fn parse(text: &str) -> Result<Defs, DefsError> {
        let mut defs = Defs::default();
        let mut defaults = Defaults::new();
        let mut cur: Option<Stanza> = None;
        for (i, raw) in text.split('\n').enumerate() {
            let line = i + 1;
            let t = trim(raw);
            if t.is_empty() || t.starts_with('#') {
                continue;
            }
            // A line with '=' is an attribute even when it ends with ':' (`net=fd59::`, which
            // lsdef prints for IPv6 networks and mkdef -z misreads as a bad object name).
            if let (None, Some(head)) = (t.find('='), t.strip_suffix(':')) {
                if let Some(s) = cur.take() {
                    s.finish(&mut defs, &mut defaults)?;
                }
                let name = trim(head);
                if name.is_empty() {
                    return err(line, "object name line without a name");
                }
                if name == "default" {
                    return err(
                        line,
                        "the object name 'default' is reserved: mkdef -z reads its attributes \
                         as defaults",
                    );
                }
                cur = Some(Stanza {
                    name: name.to_string(),
                    line,
                    default_for: default_stanza_type(name).map(str::to_string),
                    objtype: None,
                    attrs: BTreeMap::new(),
                    lines: BTreeMap::new(),
                    explicit: BTreeSet::new(),
                });
            } else if let Some(eq) = t.find('=') {
                let Some(s) = cur.as_mut() else {
                    return err(line, "attribute line before any object name line (`name:`)");
                };
                s.add(trim(&t[..eq]), decode_value(&t[eq + 1..]), line, &defaults)?;
            } else {
                return err(
                    line,
                    format!(
                        "{t:?} is neither an object name line (`name:`) nor an attribute line \
                         (`attr=value`)"
                    ),
                );
            }
        }
        if let Some(s) = cur.take() {
            s.finish(&mut defs, &mut defaults)?;
        }
        Ok(defs)
    }

    /// Writes the objects in `lsdef -z` style, in their order; `parse(to_stanza(d)) == d`.
    pub fn to_stanza(&self) -> String {
        let mut out = String::new();
        out.push_str(HEADER);
        out.push('\n');
        for o in &self.objects {
            out.push('\n');
            out.push_str(&o.name);
            out.push_str(":\n");
            out.push_str(INDENT);
            out.push_str("objtype=");
            out.push_str(&o.objtype);
            out.push('\n');
            for (k, v) in &o.attrs {
                out.push_str(INDENT);
                out.push_str(k);
                out.push('=');
                out.push_str(&encode_value(v));
                out.push('\n');
            }
        }
        out
    }

    /// The objects, in file order (new ones last).
    pub fn objects(&self) -> &[Object] {
        &self.objects
    }

    fn site_index(&self) -> Option<usize> {
        self.objects.iter().position(|o| o.objtype == "site")
    }

    /// The table's rows, each with where it comes from; disabled ones included.
    fn rows(&self, spec: &TableSpec) -> Vec<(Origin, Row)> {
        match spec.kind {
            Kind::Image => self
                .objects
                .iter()
                .enumerate()
                .filter(|(_, o)| o.objtype == "osimage")
                .filter_map(|(i, o)| image_row(o, spec.name).map(|r| (Origin::Object(i), r)))
                .collect(),
            Kind::Site => match self.site_index() {
                Some(i) => self.objects[i]
                    .attrs
                    .iter()
                    .map(|(k, v)| {
                        let row: Row = [
                            ("key".to_string(), k.clone()),
                            ("value".to_string(), v.clone()),
                        ]
                        .into_iter()
                        .collect();
                        (Origin::SiteAttr(i, k.clone()), row)
                    })
                    .collect(),
                None => Vec::new(),
            },
            Kind::Passwd => self
                .objects
                .iter()
                .enumerate()
                .filter(|(_, o)| o.objtype == "passwd")
                .map(|(i, o)| (Origin::Object(i), o.attrs.clone()))
                .collect(),
        }
    }

    /// `getAttribs(keys, attrs)`: the first row matching `keys` (any columns; an empty value
    /// matches an unset column) that has one of `attrs` set, with only the set ones.
    /// `Ok(None)` when there is none. Tables and columns follow Schema.pm's defspec for the
    /// osimage and site objects (see the module doc).
    pub fn table_get(
        &self,
        table: &str,
        keys: &Row,
        attrs: &[String],
    ) -> Result<Option<Row>, String> {
        let spec = table_spec(table)?;
        for k in keys.keys() {
            spec.check_column(k, "key")?;
        }
        for a in attrs {
            if a == "ALL" {
                return Err(format!(
                    "table {table}: getAttribs takes column names; ALL is for table_list"
                ));
            }
            spec.check_column(a, "attribute")?;
        }
        Ok(self
            .rows(spec)
            .into_iter()
            .filter(|(_, r)| !is_disabled(r) && keys_match(r, keys))
            .find_map(|(_, r)| project(&r, attrs)))
    }

    /// `getAllAttribsWhere(filter, attrs)`: every row meeting all of `filter`
    /// (`attr==val`, `attr!=val`, `attr=~pattern`, `attr!~pattern` as SQL LIKE, and `<`, `<=`,
    /// `>`, `>=`), with the asked columns, or all of them when `attrs` starts with `ALL`.
    /// Rows with none of the asked columns set are left out, as xCAT does. No condition at
    /// all lists every row.
    pub fn table_list(
        &self,
        table: &str,
        filter: &[String],
        attrs: &[String],
    ) -> Result<Vec<Row>, String> {
        let spec = table_spec(table)?;
        let conds = filter
            .iter()
            .map(|f| Cond::parse(f).map_err(|e| format!("table {table}: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        for c in &conds {
            spec.check_column(&c.col, "filter")?;
        }
        let all = attrs.first().is_some_and(|a| a == "ALL");
        if !all {
            for a in attrs {
                spec.check_column(a, "attribute")?;
            }
        }
        Ok(self
            .rows(spec)
            .into_iter()
            .map(|(_, r)| r)
            .filter(|r| !is_disabled(r) && conds.iter().all(|c| c.holds(r)))
            .filter_map(|r| if all { Some(r) } else { project(&r, attrs) })
            .collect())
    }

    /// `setAttribs(keys, values)`: updates the rows matching `keys` (only the table's key
    /// columns) or inserts one, creating the object it lives in; an empty value unsets.
    /// Nothing is inserted when every value is empty. On error nothing changes.
    pub fn table_set(&mut self, table: &str, keys: &Row, values: &Row) -> Result<(), String> {
        let spec = table_spec(table)?;
        for k in keys.keys() {
            if !spec.keys.contains(&k.as_str()) {
                return Err(format!(
                    "table {table}: {k} is not a key column (the keys are {})",
                    spec.keys.join(", ")
                ));
            }
        }
        for (c, v) in keys {
            check_value(table, c, v)?;
        }
        for (c, v) in values {
            spec.check_column(c, "value")?;
            check_value(table, c, v)?;
        }
        let mut next = self.objects.clone();
        match spec.kind {
            Kind::Image => set_image(&mut next, spec, keys, values)?,
            Kind::Site => set_site(&mut next, keys, values)?,
            Kind::Passwd => set_passwd(&mut next, spec, keys, values)?,
        }
        if let Some(e) = first_conflict(&next) {
            return Err(format!("table {table}: {e}"));
        }
        self.objects = next;
        Ok(())
    }

    /// `delEntries(keys)`: deletes the rows matching `keys` (any columns). The `osimage` row
    /// takes its whole object with it; a `linuximage`, `winimage` or `nimimage` row takes the
    /// attributes mapped to that table; a site row its attribute; a passwd row its object.
    /// Deleting what is not there is fine; deleting with no keys is refused.
    pub fn table_delete(&mut self, table: &str, keys: &Row) -> Result<(), String> {
        let spec = table_spec(table)?;
        if keys.is_empty() {
            return Err(format!(
                "table {table}: refusing to delete every row; give the keys of the rows to delete"
            ));
        }
        for k in keys.keys() {
            spec.check_column(k, "key")?;
        }
        let hits: Vec<Origin> = self
            .rows(spec)
            .into_iter()
            .filter(|(_, r)| keys_match(r, keys))
            .map(|(o, _)| o)
            .collect();
        let mut drop = BTreeSet::new();
        for hit in hits {
            match hit {
                Origin::Object(i) if spec.kind == Kind::Image && spec.name != "osimage" => {
                    if let Some(o) = self.objects.get_mut(i) {
                        let it = imagetype(o).to_string();
                        for map in OSIMAGE_ATTRS
                            .iter()
                            .filter(|m| m.table == spec.name && applies(m, &it))
                        {
                            o.attrs.remove(map.attr);
                        }
                    }
                }
                Origin::Object(i) => {
                    drop.insert(i);
                }
                Origin::SiteAttr(i, key) => {
                    if let Some(o) = self.objects.get_mut(i) {
                        o.attrs.remove(&key);
                    }
                }
            }
        }
        let mut i = 0;
        self.objects.retain(|_| {
            let keep = !drop.contains(&i);
            i += 1;
            keep
        });
        Ok(())
    }

    /// `get_site_attribute(key)`: the attribute of the site object.
    pub fn site_get(&self, key: &str) -> Option<String> {
        self.site_index()
            .and_then(|i| self.objects[i].attrs.get(key).cloned())
    }
}

fn set_image(
    objects: &mut Vec<Object>,
    spec: &TableSpec,
    keys: &Row,
    values: &Row,
) -> Result<(), String> {
    let table = spec.name;
    let Some(name) = keys.get("imagename").filter(|n| !n.is_empty()) else {
        return Err(format!(
            "table {table}: setting a row needs the imagename key"
        ));
    };
    if values.get("imagename").is_some_and(|v| v != name) {
        return Err(format!(
            "table {table}: renaming image {name} through imagename is not supported"
        ));
    }
    let idx = objects
        .iter()
        .position(|o| o.objtype == "osimage" && o.name == *name);
    let mut obj = match idx {
        Some(i) => objects[i].clone(),
        None => {
            if values.iter().all(|(c, v)| v.is_empty() || c == "imagename") {
                return Ok(()); // setAttribs does not insert blank rows
            }
            check_object_name(name).map_err(|e| format!("table {table}: {e}"))?;
            let mut o = Object::new(name, "osimage");
            match table {
                "winimage" => set_or_unset(&mut o.attrs, "imagetype", "windows"),
                "nimimage" => set_or_unset(&mut o.attrs, "imagetype", "NIM"),
                _ => {}
            }
            o
        }
    };
    // imagetype first: it decides where the other columns go.
    if table == "osimage" {
        if let Some(v) = values.get("imagetype") {
            set_or_unset(&mut obj.attrs, "imagetype", v);
        }
    }
    for (col, val) in values {
        if col == "imagename" || (table == "osimage" && col == "imagetype") {
            continue;
        }
        let Some(map) = OSIMAGE_ATTRS
            .iter()
            .find(|m| m.table == table && m.column == col)
        else {
            return Err(format!(
                "column {table}.{col} has no osimage attribute in Schema.pm's defspec, so a \
                 definitions file cannot hold it"
            ));
        };
        if !applies(map, imagetype(&obj)) {
            return Err(format!(
                "osimage {name} has {}; column {table}.{col} (attribute {}) is kept only when \
                 imagetype is {}",
                describe_imagetype(&obj),
                map.attr,
                map.only_if.unwrap_or_default()
            ));
        }
        set_or_unset(&mut obj.attrs, map.attr, val);
    }
    check_object(&obj).map_err(|(_, e)| format!("table {table}: {e}"))?;
    match idx {
        Some(i) => objects[i] = obj,
        None => objects.push(obj),
    }
    Ok(())
}

fn set_site(objects: &mut Vec<Object>, keys: &Row, values: &Row) -> Result<(), String> {
    let Some(key) = keys.get("key").filter(|k| !k.is_empty()) else {
        return Err("table site: setting a row needs the key key".to_string());
    };
    check_attr_name(key).map_err(|e| format!("table site: {e}"))?;
    let mut value = None;
    for (col, v) in values {
        match col.as_str() {
            "key" if v == key => {}
            "key" => {
                return Err(format!(
                    "table site: renaming site key {key} through key is not supported"
                ))
            }
            "value" => value = Some(v.as_str()),
            _ => {
                return Err(format!(
                    "column site.{col} has no site attribute, so a definitions file cannot hold \
                     it"
                ))
            }
        }
    }
    let Some(value) = value else {
        return Ok(());
    };
    let i = match objects.iter().position(|o| o.objtype == "site") {
        Some(i) => i,
        None if value.is_empty() => return Ok(()),
        None => {
            objects.push(Object::new("clustersite", "site"));
            objects.len() - 1
        }
    };
    set_or_unset(&mut objects[i].attrs, key, value);
    Ok(())
}

fn set_passwd(
    objects: &mut Vec<Object>,
    spec: &TableSpec,
    keys: &Row,
    values: &Row,
) -> Result<(), String> {
    // setAttribs without keys always inserts.
    let hits: Vec<usize> = objects
        .iter()
        .enumerate()
        .filter(|(_, o)| o.objtype == "passwd" && !keys.is_empty() && keys_match(&o.attrs, keys))
        .map(|(i, _)| i)
        .collect();
    if hits.is_empty() {
        if values.values().all(String::is_empty) {
            return Ok(()); // setAttribs does not insert blank rows
        }
        let mut attrs = BTreeMap::new();
        for (c, v) in keys.iter().chain(values) {
            set_or_unset(&mut attrs, c, v);
        }
        let mut o = Object::new(&passwd_name(objects, &attrs), "passwd");
        o.attrs = attrs;
        check_object(&o).map_err(|(_, e)| format!("table {}: {e}", spec.name))?;
        objects.push(o);
    } else {
        for i in hits {
            for (c, v) in values {
                set_or_unset(&mut objects[i].attrs, c, v);
            }
            check_object(&objects[i]).map_err(|(_, e)| format!("table {}: {e}", spec.name))?;
        }
    }
    Ok(())
}

/// A free name for a new passwd object: `<key>-<username>`, `<key>`, or `passwd-<n>`.
fn passwd_name(objects: &[Object], attrs: &BTreeMap<String, String>) -> String {
    let taken = |n: &str| objects.iter().any(|o| o.objtype == "passwd" && o.name == n);
    let key = attrs.get("key").map_or("", String::as_str);
    let base = match attrs.get("username") {
        Some(u) => format!("{key}-{u}"),
        None => key.to_string(),
    };
    if check_object_name(&base).is_ok() && !taken(&base) {
        return base;
    }
    let mut n = 1usize;
    loop {
        let name = format!("passwd-{n}");
        if !taken(&name) {
            return name;
        }
        n += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../tests/data/defs/example.stanza");
    const NETBOOT: &str = "rhels8.8.0-x86_64-netboot-compute";
    const INSTALL: &str = "rhels8.8.0-x86_64-install-compute";

    fn row(pairs: &[(&str, &str)]) -> Row {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn cols(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn example() -> Defs {
        match Defs::parse(EXAMPLE) {
            Ok(d) => d,
            Err(e) => panic!("example does not parse: {e}"),
        }
    }

    fn parse(text: &str) -> Defs {
        match Defs::parse(text) {
            Ok(d) => d,
            Err(e) => panic!("does not parse: {e}\n{text}"),
        }
    }

    fn parse_err(text: &str) -> DefsError {
        match Defs::parse(text) {
            Ok(d) => panic!("parsed but should not: {d:?}"),
            Err(e) => e,
        }
    }

    fn img(name: &str) -> Row {
        row(&[("imagename", name)])
    }

    const MIXED: &str = "\
# <xCAT data object stanza file>

win2019:
    objtype=osimage
    imagetype=windows
    installto=0:1
    osvers=win2019
    partitionfile=/install/custom/win2019.part
    template=/opt/xcat/share/xcat/install/windows/win2019.tmpl
    winpepath=winboot/winpe1

aix71-spot:
    objtype=osimage
    dump=aix71_dump
    imagetype=NIM
    lpp_source=aix71_lpp
    nimtype=diskless
    spot=aix71_spot
    usercomment=built from 7100-05

bare:
    objtype=osimage
    pkglist=/tmp/bare.pkglist
    rootfstype=ramdisk
";

    const PASSWD: &str = "\
# <xCAT data object stanza file>

system-root:
    objtype=passwd
    cryptmethod=sha512
    key=system
    password=$6$salt$hash
    username=root

ipmi:
    objtype=passwd
    key=ipmi
    password=PASSW0RD
    username=ADMIN

old-hmc:
    objtype=passwd
    disable=1
    key=hmc
    password=abc123
    username=hscroot
";

    #[test]
    fn parses_lsdef_output() {
        let d = example();
        let names: Vec<(&str, &str)> = d
            .objects()
            .iter()
            .map(|o| (o.name.as_str(), o.objtype.as_str()))
            .collect();
        assert_eq!(
            names,
            [
                (INSTALL, "osimage"),
                (NETBOOT, "osimage"),
                ("clustersite", "site")
            ]
        );
        let net = &d.objects()[1];
        assert_eq!(net.attrs.len(), 19);
        assert!(!net.attrs.contains_key("objtype"));
        assert_eq!(
            net.attrs.get("addkcmdline").map(String::as_str),
            Some("quiet console=ttyS0,115200n8 R::crashkernel=256M")
        );
        assert_eq!(
            net.attrs.get("usercomment").map(String::as_str),
            Some("nightly compute image; owner=hpc-team")
        );
        assert_eq!(d.objects()[2].attrs.len(), 39);
    }

    #[test]
    fn round_trips_byte_for_byte() {
        let d = example();
        assert_eq!(d.to_stanza(), EXAMPLE);
        assert_eq!(parse(&d.to_stanza()), d);
        for text in [MIXED, PASSWD] {
            let d = parse(text);
            assert_eq!(d.to_stanza(), text);
            assert_eq!(parse(&d.to_stanza()), d);
        }
    }

    #[test]
    fn empty_defs_write_only_the_header() {
        let d = Defs::new();
        assert_eq!(d.to_stanza(), "# <xCAT data object stanza file>\n");
        assert_eq!(parse(&d.to_stanza()), d);
        assert!(parse("").objects().is_empty());
    }

    #[test]
    fn concatenated_lsdef_outputs_parse() {
        // `lsdef -t osimage -z; lsdef -t site -z` has two header lines.
        let text = EXAMPLE.replacen(
            "\nclustersite:",
            "# <xCAT data object stanza file>\n\nclustersite:",
            1,
        );
        assert_eq!(parse(&text), example());
    }

    #[test]
    fn osimage_columns() {
        let d = example();
        let all: Vec<String> = table_spec("osimage")
            .map(|t| t.cols.iter().map(|c| c.to_string()).collect())
            .unwrap_or_default();
        let got = d.table_get("osimage", &img(NETBOOT), &all);
        let want = row(&[
            ("imagename", NETBOOT),
            ("imagetype", "linux"),
            ("osarch", "x86_64"),
            ("osdistroname", "rhels8.8.0-x86_64"),
            ("osname", "Linux"),
            ("osvers", "rhels8.8.0"),
            ("postscripts", "syslog,remoteshell,syncfiles"),
            ("profile", "compute"),
            ("provmethod", "netboot"),
            ("synclists", "/install/custom/netboot/rh/compute.synclist"),
        ]);
        assert_eq!(got, Ok(Some(want)));
    }

    #[test]
    fn linuximage_columns() {
        let d = example();
        let got = d.table_get(
            "linuximage",
            &img(NETBOOT),
            &cols(&[
                "imagename",
                "pkglist",
                "pkgdir",
                "otherpkglist",
                "otherpkgdir",
                "exlist",
                "postinstall",
                "rootimgdir",
                "addkcmdline",
                "permission",
                "comments",
                "template",
                "kernelver",
                "disable",
            ]),
        );
        let want = row(&[
            ("imagename", NETBOOT),
            (
                "pkglist",
                "/opt/xcat/share/xcat/netboot/rh/compute.rhels8.x86_64.pkglist",
            ),
            (
                "pkgdir",
                "/install/rhels8.8.0/x86_64,/install/updates/rhels8.8.0/x86_64",
            ),
            (
                "otherpkglist",
                "/install/custom/netboot/rh/compute.rhels8.x86_64.otherpkgs.pkglist",
            ),
            ("otherpkgdir", "/install/post/otherpkgs/rhels8.8.0/x86_64"),
            (
                "exlist",
                "/opt/xcat/share/xcat/netboot/rh/compute.rhels8.x86_64.exlist",
            ),
            (
                "postinstall",
                "/opt/xcat/share/xcat/netboot/rh/compute.rhels8.x86_64.postinstall",
            ),
            ("rootimgdir", "/install/netboot/rhels8.8.0/x86_64/compute"),
            (
                "addkcmdline",
                "quiet console=ttyS0,115200n8 R::crashkernel=256M",
            ),
            ("permission", "755"),
            ("comments", "nightly compute image; owner=hpc-team"),
        ]);
        assert_eq!(got, Ok(Some(want)));
        // The linux partitionfile/template of the install image.
        let got = d.table_get(
            "linuximage",
            &img(INSTALL),
            &cols(&["template", "partitionfile"]),
        );
        assert_eq!(
            got,
            Ok(Some(row(&[
                (
                    "template",
                    "/opt/xcat/share/xcat/install/rh/compute.rhels8.tmpl"
                ),
                ("partitionfile", "s:/install/custom/partition/rhels8.sh"),
            ])))
        );
    }

    #[test]
    fn winimage_only_for_windows() {
        let d = parse(MIXED);
        let got = d.table_get(
            "winimage",
            &img("win2019"),
            &cols(&[
                "template",
                "installto",
                "partitionfile",
                "winpepath",
                "comments",
            ]),
        );
        assert_eq!(
            got,
            Ok(Some(row(&[
                (
                    "template",
                    "/opt/xcat/share/xcat/install/windows/win2019.tmpl"
                ),
                ("installto", "0:1"),
                ("partitionfile", "/install/custom/win2019.part"),
                ("winpepath", "winboot/winpe1"),
            ])))
        );
        assert_eq!(
            d.table_get(
                "linuximage",
                &img("win2019"),
                &cols(&["imagename", "template"])
            ),
            Ok(None)
        );
        assert_eq!(
            d.table_get("winimage", &img("rhels"), &cols(&["imagename"])),
            Ok(None)
        );
        let d = example();
        assert_eq!(
            d.table_get("winimage", &img(INSTALL), &cols(&["imagename", "template"])),
            Ok(None)
        );
    }

    #[test]
    fn nimimage_only_for_nim() {
        let d = parse(MIXED);
        let got = d.table_get(
            "nimimage",
            &img("aix71-spot"),
            &cols(&[
                "spot",
                "lpp_source",
                "nimtype",
                "dump",
                "comments",
                "res_group",
            ]),
        );
        assert_eq!(
            got,
            Ok(Some(row(&[
                ("spot", "aix71_spot"),
                ("lpp_source", "aix71_lpp"),
                ("nimtype", "diskless"),
                ("dump", "aix71_dump"),
                ("comments", "built from 7100-05"),
            ])))
        );
        // usercomment/dump of a NIM image are not linuximage columns.
        assert_eq!(
            d.table_get(
                "linuximage",
                &img("aix71-spot"),
                &cols(&["comments", "dump"])
            ),
            Ok(None)
        );
        assert_eq!(
            d.table_get("nimimage", &img(NETBOOT), &cols(&["imagename"])),
            Ok(None)
        );
    }

    #[test]
    fn missing_imagetype_counts_as_linux() {
        let d = parse(MIXED);
        assert_eq!(
            d.table_get("linuximage", &img("bare"), &cols(&["pkglist"])),
            Ok(Some(row(&[("pkglist", "/tmp/bare.pkglist")])))
        );
        // rootfstype is only_if imagetype=linux, too.
        assert_eq!(
            d.table_get("osimage", &img("bare"), &cols(&["imagetype", "rootfstype"])),
            Ok(Some(row(&[("rootfstype", "ramdisk")])))
        );
        assert_eq!(
            d.table_get("osimage", &img("win2019"), &cols(&["rootfstype"])),
            Ok(None)
        );
    }

    #[test]
    fn imagetype_matches_as_a_word() {
        let d = parse("a:\n objtype=osimage\n imagetype=linux,foo\n pkglist=/p\n");
        assert_eq!(
            d.table_get("linuximage", &img("a"), &cols(&["pkglist"])),
            Ok(Some(row(&[("pkglist", "/p")])))
        );
        let e = parse_err("a:\n objtype=osimage\n imagetype=Linux\n pkglist=/p\n");
        assert_eq!(e.line, 4);
        assert!(e.msg.contains("only when imagetype is linux"), "{e}");
        let e = parse_err("a:\n objtype=osimage\n imagetype=linuxish\n pkglist=/p\n");
        assert_eq!(e.line, 4);
    }

    #[test]
    fn get_semantics() {
        let d = example();
        // Only the asked columns, unset ones absent.
        assert_eq!(
            d.table_get(
                "linuximage",
                &img(NETBOOT),
                &cols(&["kernelver", "permission"])
            ),
            Ok(Some(row(&[("permission", "755")])))
        );
        // A row with none of the asked columns is no row, as getAttribs answers.
        assert_eq!(
            d.table_get("linuximage", &img(NETBOOT), &cols(&["kernelver"])),
            Ok(None)
        );
        assert_eq!(d.table_get("linuximage", &img(NETBOOT), &[]), Ok(None));
        // Missing image.
        assert_eq!(
            d.table_get("osimage", &img("nope"), &cols(&["imagename"])),
            Ok(None)
        );
        // Keys may be any columns; the first match is returned.
        assert_eq!(
            d.table_get(
                "osimage",
                &row(&[("profile", "compute")]),
                &cols(&["imagename"])
            ),
            Ok(Some(img(INSTALL)))
        );
        assert_eq!(
            d.table_get(
                "osimage",
                &row(&[("profile", "compute"), ("provmethod", "netboot")]),
                &cols(&["imagename"])
            ),
            Ok(Some(img(NETBOOT)))
        );
        // An empty key value matches an unset column.
        assert_eq!(
            d.table_get("linuximage", &row(&[("exlist", "")]), &cols(&["imagename"])),
            Ok(Some(img(INSTALL)))
        );
    }

    #[test]
    fn unknown_tables_and_columns_are_errors() {
        let d = example();
        let e = d.table_get("nodetype", &img(NETBOOT), &cols(&["os"]));
        assert!(
            e.as_ref()
                .is_err_and(|e| e.contains("table nodetype is not available")),
            "{e:?}"
        );
        assert!(d.table_list("networks", &[], &cols(&["ALL"])).is_err());
        let e = d.table_get("linuximage", &img(NETBOOT), &cols(&["pkglists"]));
        assert!(e.is_err_and(|e| e.contains("pkglists")));
        let e = d.table_get("osimage", &row(&[("name", "x")]), &cols(&["imagename"]));
        assert!(e.is_err_and(|e| e.contains("\"name\"")));
        assert!(d
            .table_get("osimage", &img(NETBOOT), &cols(&["ALL"]))
            .is_err());
        let mut d = d;
        assert!(d.table_delete("nodelist", &row(&[("node", "n1")])).is_err());
        assert!(d
            .table_set(
                "nodelist",
                &row(&[("node", "n1")]),
                &row(&[("groups", "all")])
            )
            .is_err());
    }

    #[test]
    fn list_filters() {
        let d = example();
        let names = |filter: &[&str]| -> Result<Vec<String>, String> {
            d.table_list("osimage", &cols(filter), &cols(&["imagename"]))
                .map(|rows| {
                    rows.iter()
                        .filter_map(|r| r.get("imagename").cloned())
                        .collect()
                })
        };
        let both = vec![INSTALL.to_string(), NETBOOT.to_string()];
        assert_eq!(names(&[]), Ok(both.clone()));
        assert_eq!(
            names(&["provmethod==netboot"]),
            Ok(vec![NETBOOT.to_string()])
        );
        assert_eq!(
            names(&["provmethod!=netboot"]),
            Ok(vec![INSTALL.to_string()])
        );
        assert_eq!(
            names(&["imagename=~%netboot%"]),
            Ok(vec![NETBOOT.to_string()])
        );
        assert_eq!(names(&["imagename=~/RHELS8%/"]), Ok(both.clone()));
        assert_eq!(
            names(&["imagename!~%netboot%"]),
            Ok(vec![INSTALL.to_string()])
        );
        assert_eq!(names(&["osvers=~rhels8._._"]), Ok(both.clone()));
        assert_eq!(
            names(&["profile==compute", "provmethod==install"]),
            Ok(vec![INSTALL.to_string()])
        );
        assert_eq!(
            names(&["provmethod>install"]),
            Ok(vec![NETBOOT.to_string()])
        );
        assert_eq!(
            names(&["provmethod<=install"]),
            Ok(vec![INSTALL.to_string()])
        );
        // Unset columns match no comparison (SQL NULL) but `==` with nothing.
        assert_eq!(names(&["postscripts!=x"]), Ok(vec![NETBOOT.to_string()]));
        assert_eq!(names(&["postscripts=="]), Ok(vec![INSTALL.to_string()]));
        assert!(names(&["provmethod"]).is_err_and(|e| e.contains("unsupported condition")));
        assert!(names(&["nosuch==1"]).is_err_and(|e| e.contains("nosuch")));
    }

    #[test]
    fn list_columns() {
        let d = example();
        // Rows without any asked column are left out.
        assert_eq!(
            d.table_list("linuximage", &[], &cols(&["postinstall"])),
            Ok(vec![row(&[(
                "postinstall",
                "/opt/xcat/share/xcat/netboot/rh/compute.rhels8.x86_64.postinstall"
            )])])
        );
        let all = d.table_list("linuximage", &cols(&["imagename=="]), &cols(&["ALL"]));
        assert_eq!(all, Ok(vec![]));
        let all = d.table_list(
            "linuximage",
            &cols(&[&format!("imagename=={INSTALL}")]),
            &cols(&["ALL"]),
        );
        assert_eq!(
            all.map(|rows| rows.iter().map(|r| r.len()).collect::<Vec<_>>()),
            Ok(vec![6])
        );
        // An osimage without linux attributes has no linuximage row.
        let d = parse("a:\n objtype=osimage\n imagetype=linux\n provmethod=netboot\n");
        assert_eq!(d.table_list("linuximage", &[], &cols(&["ALL"])), Ok(vec![]));
        assert_eq!(
            d.table_list("osimage", &[], &cols(&["ALL"])),
            Ok(vec![row(&[
                ("imagename", "a"),
                ("imagetype", "linux"),
                ("provmethod", "netboot")
            ])])
        );
    }

    #[test]
    fn set_creates_and_updates() {
        let mut d = example();
        let r = d.table_set(
            "osimage",
            &img("new-img"),
            &row(&[
                ("imagetype", "linux"),
                ("provmethod", "netboot"),
                ("profile", ""),
            ]),
        );
        assert_eq!(r, Ok(()));
        let o = &d.objects()[3];
        assert_eq!(
            (o.name.as_str(), o.objtype.as_str()),
            ("new-img", "osimage")
        );
        assert_eq!(
            o.attrs,
            row(&[("imagetype", "linux"), ("provmethod", "netboot")])
        );
        // Update, and an empty value unsets.
        assert_eq!(
            d.table_set(
                "linuximage",
                &img(NETBOOT),
                &row(&[("kernelver", "4.18.0-477.el8.x86_64"), ("permission", "")])
            ),
            Ok(())
        );
        let net = &d.objects()[1];
        assert_eq!(
            net.attrs.get("kernelver").map(String::as_str),
            Some("4.18.0-477.el8.x86_64")
        );
        assert!(!net.attrs.contains_key("permission"));
        // comments is usercomment.
        assert_eq!(
            d.table_set(
                "linuximage",
                &img(NETBOOT),
                &row(&[("comments", "rebuilt")])
            ),
            Ok(())
        );
        assert_eq!(
            d.objects()[1].attrs.get("usercomment").map(String::as_str),
            Some("rebuilt")
        );
        assert_eq!(parse(&d.to_stanza()), d);
    }

    #[test]
    fn set_linuximage_on_missing_image_creates_it() {
        let mut d = Defs::new();
        assert_eq!(
            d.table_set(
                "linuximage",
                &img("fresh"),
                &row(&[("rootimgdir", "/install/netboot/x/fresh")])
            ),
            Ok(())
        );
        let o = &d.objects()[0];
        assert_eq!(o.objtype, "osimage");
        assert!(!o.attrs.contains_key("imagetype"));
        assert_eq!(
            d.table_get("linuximage", &img("fresh"), &cols(&["rootimgdir"])),
            Ok(Some(row(&[("rootimgdir", "/install/netboot/x/fresh")])))
        );
        assert_eq!(
            d.table_get("osimage", &img("fresh"), &cols(&["imagename"])),
            Ok(Some(img("fresh")))
        );
        assert_eq!(
            d.to_stanza(),
            "# <xCAT data object stanza file>\n\nfresh:\n    objtype=osimage\n    \
             rootimgdir=/install/netboot/x/fresh\n"
        );
        // winimage on a missing image makes it a windows one.
        assert_eq!(
            d.table_set("winimage", &img("w"), &row(&[("winpepath", "winboot/w")])),
            Ok(())
        );
        assert_eq!(
            d.objects()[1].attrs.get("imagetype").map(String::as_str),
            Some("windows")
        );
        assert_eq!(
            d.table_set("nimimage", &img("n"), &row(&[("spot", "s1")])),
            Ok(())
        );
        assert_eq!(
            d.objects()[2].attrs.get("imagetype").map(String::as_str),
            Some("NIM")
        );
    }

    #[test]
    fn blank_set_inserts_nothing() {
        let mut d = Defs::new();
        assert_eq!(
            d.table_set("linuximage", &img("x"), &row(&[("pkglist", "")])),
            Ok(())
        );
        assert_eq!(d.table_set("osimage", &img("x"), &Row::new()), Ok(()));
        assert_eq!(
            d.table_set("site", &row(&[("key", "k")]), &row(&[("value", "")])),
            Ok(())
        );
        assert_eq!(
            d.table_set(
                "passwd",
                &row(&[("key", "system")]),
                &row(&[("password", "")])
            ),
            Ok(())
        );
        assert!(d.objects().is_empty());
    }

    #[test]
    fn set_errors_change_nothing() {
        let mut d = example();
        let before = d.clone();
        let check = |r: Result<(), String>, what: &str| match r {
            Err(e) => assert!(e.contains(what), "{e} lacks {what}"),
            Ok(()) => panic!("accepted, expected error about {what}"),
        };
        check(
            d.table_set("osimage", &img(NETBOOT), &row(&[("nosuch", "1")])),
            "nosuch",
        );
        check(
            d.table_set("osimage", &img(NETBOOT), &row(&[("comments", "c")])),
            "osimage.comments",
        );
        check(
            d.table_set("linuximage", &img(NETBOOT), &row(&[("disable", "1")])),
            "linuximage.disable",
        );
        check(
            d.table_set(
                "osimage",
                &row(&[("imagename", NETBOOT), ("profile", "compute")]),
                &row(&[("osarch", "ppc64le")]),
            ),
            "profile is not a key column",
        );
        check(
            d.table_set("osimage", &Row::new(), &row(&[("osarch", "ppc64le")])),
            "needs the imagename key",
        );
        check(
            d.table_set("linuximage", &img(NETBOOT), &row(&[("pkglist", "a\nb")])),
            "line break",
        );
        check(
            d.table_set("linuximage", &img(NETBOOT), &row(&[("pkglist", " /a")])),
            "whitespace",
        );
        check(
            d.table_set("winimage", &img(NETBOOT), &row(&[("winpepath", "w")])),
            "only when imagetype is windows",
        );
        // Would leave pkglist etc. outside every table.
        check(
            d.table_set("osimage", &img(NETBOOT), &row(&[("imagetype", "windows")])),
            "only when imagetype is linux",
        );
        check(
            d.table_set("osimage", &img("bad=name"), &row(&[("osarch", "x")])),
            "cannot be written",
        );
        check(
            d.table_set("osimage", &img(NETBOOT), &row(&[("imagename", "other")])),
            "renaming",
        );
        check(
            d.table_set("site", &row(&[("key", "k")]), &row(&[("comments", "c")])),
            "site.comments",
        );
        check(
            d.table_set("site", &Row::new(), &row(&[("value", "v")])),
            "needs the key key",
        );
        assert_eq!(d, before);
        // Changing imagetype is fine when nothing would be orphaned.
        let mut d = parse(MIXED);
        assert!(d
            .table_set(
                "osimage",
                &img("aix71-spot"),
                &row(&[("imagetype", "linux")])
            )
            .is_err());
        assert_eq!(
            d.table_set(
                "osimage",
                &img("bare"),
                &row(&[("imagetype", "linux"), ("osvers", "rhels9.2")])
            ),
            Ok(())
        );
    }

    #[test]
    fn delete_semantics() {
        let mut d = example();
        // A linuximage row takes only its attributes.
        assert_eq!(d.table_delete("linuximage", &img(NETBOOT)), Ok(()));
        let net = &d.objects()[1];
        assert_eq!(net.name, NETBOOT);
        assert!(!net.attrs.contains_key("pkglist"));
        assert!(!net.attrs.contains_key("usercomment"));
        assert_eq!(
            net.attrs.get("provmethod").map(String::as_str),
            Some("netboot")
        );
        assert_eq!(
            d.table_get("linuximage", &img(NETBOOT), &cols(&["imagename"])),
            Ok(None)
        );
        assert_eq!(
            d.table_get("osimage", &img(NETBOOT), &cols(&["imagename"])),
            Ok(Some(img(NETBOOT)))
        );
        // The osimage row takes the object.
        assert_eq!(d.table_delete("osimage", &img(NETBOOT)), Ok(()));
        assert_eq!(d.objects().len(), 2);
        assert!(d.objects().iter().all(|o| o.name != NETBOOT));
        // Missing rows are fine.
        assert_eq!(d.table_delete("osimage", &img(NETBOOT)), Ok(()));
        assert_eq!(d.table_delete("winimage", &img(INSTALL)), Ok(()));
        assert_eq!(d.objects().len(), 2);
        // No keys at all is refused.
        assert!(d.table_delete("osimage", &Row::new()).is_err());
        assert!(d.table_delete("osimage", &row(&[("nosuch", "x")])).is_err());
        assert_eq!(parse(&d.to_stanza()), d);
    }

    #[test]
    fn delete_of_nim_and_windows_rows() {
        let mut d = parse(MIXED);
        assert_eq!(d.table_delete("nimimage", &img("aix71-spot")), Ok(()));
        assert_eq!(d.objects()[1].attrs, row(&[("imagetype", "NIM")]));
        assert_eq!(
            d.table_delete("winimage", &row(&[("winpepath", "winboot/winpe1")])),
            Ok(())
        );
        assert_eq!(
            d.objects()[0].attrs,
            row(&[("imagetype", "windows"), ("osvers", "win2019")])
        );
    }

    #[test]
    fn site_table() {
        let mut d = example();
        assert_eq!(d.site_get("installdir").as_deref(), Some("/install"));
        assert_eq!(
            d.site_get("tftpflags").as_deref(),
            Some("-v -l -s /tftpboot -m /etc/tftpmapping.rules")
        );
        assert_eq!(d.site_get("nosuch"), None);
        assert_eq!(
            d.table_get("site", &row(&[("key", "master")]), &cols(&["value"])),
            Ok(Some(row(&[("value", "10.0.0.1")])))
        );
        assert_eq!(
            d.table_get("site", &row(&[("key", "nosuch")]), &cols(&["value"])),
            Ok(None)
        );
        assert_eq!(
            d.table_list("site", &cols(&["key=~xcat%port"]), &cols(&["key", "value"])),
            Ok(vec![
                row(&[("key", "xcatdport"), ("value", "3001")]),
                row(&[("key", "xcatiport"), ("value", "3002")]),
            ])
        );
        assert_eq!(
            d.table_set(
                "site",
                &row(&[("key", "nfsdir")]),
                &row(&[("value", "/install")])
            ),
            Ok(())
        );
        assert_eq!(d.site_get("nfsdir").as_deref(), Some("/install"));
        assert_eq!(
            d.table_set(
                "site",
                &row(&[("key", "master")]),
                &row(&[("value", "10.0.0.2")])
            ),
            Ok(())
        );
        assert_eq!(d.site_get("master").as_deref(), Some("10.0.0.2"));
        assert_eq!(
            d.table_set("site", &row(&[("key", "master")]), &row(&[("value", "")])),
            Ok(())
        );
        assert_eq!(d.site_get("master"), None);
        assert_eq!(
            d.table_delete("site", &row(&[("key", "installdir")])),
            Ok(())
        );
        assert_eq!(d.site_get("installdir"), None);
        assert_eq!(d.objects().len(), 3);
        assert!(d
            .table_set("site", &row(&[("key", "objtype")]), &row(&[("value", "x")]))
            .is_err());
        assert_eq!(parse(&d.to_stanza()), d);
    }

    #[test]
    fn site_set_creates_clustersite() {
        let mut d = Defs::new();
        assert_eq!(d.site_get("installdir"), None);
        assert_eq!(
            d.table_set(
                "site",
                &row(&[("key", "installdir")]),
                &row(&[("value", "/install")])
            ),
            Ok(())
        );
        assert_eq!(d.objects()[0].name, "clustersite");
        assert_eq!(d.objects()[0].objtype, "site");
        assert_eq!(d.site_get("installdir").as_deref(), Some("/install"));
    }

    #[test]
    fn passwd_extension() {
        let mut d = parse(PASSWD);
        assert_eq!(
            d.table_get(
                "passwd",
                &row(&[("key", "system"), ("username", "root")]),
                &cols(&["password", "cryptmethod"])
            ),
            Ok(Some(row(&[
                ("password", "$6$salt$hash"),
                ("cryptmethod", "sha512")
            ])))
        );
        assert_eq!(
            d.table_get(
                "passwd",
                &row(&[("key", "ipmi")]),
                &cols(&["username", "password"])
            ),
            Ok(Some(row(&[
                ("username", "ADMIN"),
                ("password", "PASSW0RD")
            ])))
        );
        // Disabled rows are invisible to get and list.
        assert_eq!(
            d.table_get("passwd", &row(&[("key", "hmc")]), &cols(&["password"])),
            Ok(None)
        );
        assert_eq!(
            d.table_list("passwd", &[], &cols(&["key"])),
            Ok(vec![row(&[("key", "system")]), row(&[("key", "ipmi")])])
        );
        // Set updates the matching row...
        assert_eq!(
            d.table_set(
                "passwd",
                &row(&[("key", "ipmi"), ("username", "ADMIN")]),
                &row(&[("password", "n3w")])
            ),
            Ok(())
        );
        assert_eq!(
            d.objects()[1].attrs.get("password").map(String::as_str),
            Some("n3w")
        );
        // ... or creates an object named after key and username.
        assert_eq!(
            d.table_set(
                "passwd",
                &row(&[("key", "switch"), ("username", "admin")]),
                &row(&[("password", "sw"), ("authdomain", "lab")])
            ),
            Ok(())
        );
        let o = &d.objects()[3];
        assert_eq!(
            (o.name.as_str(), o.objtype.as_str()),
            ("switch-admin", "passwd")
        );
        assert_eq!(
            o.attrs,
            row(&[
                ("authdomain", "lab"),
                ("key", "switch"),
                ("password", "sw"),
                ("username", "admin")
            ])
        );
        assert_eq!(parse(&d.to_stanza()), d);
        // Only key and username are keys; columns are checked.
        assert!(d
            .table_set(
                "passwd",
                &row(&[("password", "x")]),
                &row(&[("comments", "c")])
            )
            .is_err());
        assert!(d
            .table_set("passwd", &row(&[("key", "x")]), &row(&[("pin", "1")]))
            .is_err());
        assert!(d
            .table_set("passwd", &Row::new(), &row(&[("password", "p")]))
            .is_err_and(|e| e.contains("needs a key")));
        // Delete removes the object.
        assert_eq!(
            d.table_delete("passwd", &row(&[("key", "system"), ("username", "root")])),
            Ok(())
        );
        assert!(d.objects().iter().all(|o| o.name != "system-root"));
        assert_eq!(d.table_delete("passwd", &row(&[("key", "nosuch")])), Ok(()));
    }

    #[test]
    fn passwd_parse_errors() {
        let e = parse_err("p:\n objtype=passwd\n username=root\n");
        assert_eq!(e.line, 1);
        assert!(e.msg.contains("needs a key"), "{e}");
        let e = parse_err("p:\n objtype=passwd\n key=system\n pin=1\n");
        assert_eq!(e.line, 4);
        let e = parse_err(
            "a:\n objtype=passwd\n key=system\n username=root\n\nb:\n objtype=passwd\n \
             key=system\n username=root\n",
        );
        assert_eq!(e.line, 6);
        assert!(e.msg.contains("same key and username"), "{e}");
    }

    #[test]
    fn parse_errors_carry_line_numbers() {
        let cases: &[(&str, usize, &str)] = &[
            ("# c\n    objtype=osimage\n", 2, "before any object"),
            ("a:\n    objtype=osimage\n    just words\n", 3, "neither"),
            (
                "a:\n    objtype=osimage\n\na:\n    objtype=osimage\n",
                4,
                "defined twice",
            ),
            (
                "a:\n    osarch=x86_64\n\nb:\n    objtype=osimage\n",
                1,
                "no objtype",
            ),
            ("a:\n    objtype=osimge\n", 2, "unknown objtype"),
            ("a:\n    objtype=\n", 2, "no value"),
            ("a:\n    objtype=osimage\n    objtype=osimage\n", 3, "twice"),
            (
                "a:\n    objtype=osimage\n    pkglists=/p\n",
                3,
                "not an osimage attribute",
            ),
            (
                "a:\n    objtype=osimage\n    osarch=x\n    osarch=y\n",
                4,
                "given twice",
            ),
            (
                "a:\n    objtype=osimage\n    imagetype=windows\n    pkglist=/p\n",
                4,
                "only when imagetype is linux",
            ),
            (
                "a:\n    objtype=osimage\n    winpepath=w\n",
                3,
                "imagetype unset (counts as linux)",
            ),
            (
                "a:\n    objtype=osimage\n    imagename=b\n",
                3,
                "object name",
            ),
            ("default:\n    objtype=osimage\n", 1, "reserved"),
            ("  :\n", 1, "without a name"),
            ("a:\n    objtype=osimage\n    =x\n", 3, "no attribute name"),
            (
                "s1:\n    objtype=site\n    master=a\n\ns2:\n    objtype=site\n",
                5,
                "second site object",
            ),
            ("default-bogus:\n    x=1\n", 1, "unknown objtype"),
        ];
        for (text, line, what) in cases {
            let e = parse_err(text);
            assert_eq!(e.line, *line, "{text:?}: {e}");
            assert!(e.msg.contains(what), "{text:?}: {e} lacks {what}");
            assert_eq!(e.to_string(), format!("line {}: {}", e.line, e.msg));
        }
    }

    #[test]
    fn reading_follows_read_file_input() {
        let text = "# comment\r\n\
                    \r\n\
                    img1 :  \r\n\
                    objtype = osimage\r\n\
                    \t  addkcmdline = \"console=tty0 quiet\"  \r\n\
                    # a comment inside\r\n\
                    osvers=rhels8 # not a comment\r\n\
                    profile=\r\n\
                    imagename=\r\n\
                    provmethod=\"netboot\r\n";
        let d = parse(text);
        let o = &d.objects()[0];
        assert_eq!(o.name, "img1");
        assert_eq!(
            o.attrs,
            row(&[
                ("addkcmdline", "console=tty0 quiet"),
                ("osvers", "rhels8 # not a comment"),
                ("provmethod", "netboot"),
            ])
        );
        // A value may end in ':' (mkdef -z would misread the line; we do not).
        let d = parse("a:\n objtype=osimage\n addkcmdline=foo:\n");
        assert_eq!(d.objects()[0].attrs, row(&[("addkcmdline", "foo:")]));
        // Object names may hold colons (IPv6 network names): all before the last one.
        let d = parse("fd59::/64:\n objtype=network\n net=fd59::\n");
        assert_eq!(d.objects()[0].name, "fd59::/64");
        assert_eq!(d.objects()[0].attrs, row(&[("net", "fd59::")]));
        // Same name, different types: both kept.
        let d = parse("c1:\n objtype=node\n groups=all\n\nc1:\n objtype=osimage\n");
        assert_eq!(d.objects().len(), 2);
        assert_eq!(
            d.table_list("osimage", &[], &cols(&["imagename"])),
            Ok(vec![img("c1")])
        );
    }

    #[test]
    fn default_stanzas() {
        let text = "\
default-osimage:
    osarch=x86_64
    profile=compute

a:
    profile=service
    objtype=osimage
    osvers=rhels8

b:
    objtype=osimage
    profile=login
    osarch=
";
        let d = parse(text);
        // As readFileInput: defaults land at objtype= and overwrite what came before it.
        assert_eq!(
            d.objects()[0].attrs,
            row(&[
                ("osarch", "x86_64"),
                ("osvers", "rhels8"),
                ("profile", "compute")
            ])
        );
        assert_eq!(d.objects()[1].attrs, row(&[("profile", "login")]));
        assert_eq!(d.objects().len(), 2);
        assert_eq!(parse(&d.to_stanza()), d);
        let e = parse_err("default-osimage:\n    pkglists=x\n\na:\n    objtype=osimage\n");
        assert_eq!(e.line, 2);
    }

    #[test]
    fn awkward_values_round_trip() {
        let mut d = Defs::new();
        let values = [
            "\"quoted\"",
            "\"",
            "ends:",
            "a \"b\" c",
            "x \"",
            "\" x",
            "k=v w=z",
            "#notacomment",
            "tab\tinside",
            "nfs:///var/crash",
            "a\r b",
        ];
        for (i, v) in values.iter().enumerate() {
            let name = format!("img{i}");
            assert_eq!(
                d.table_set("linuximage", &img(&name), &row(&[("addkcmdline", v)])),
                Ok(())
            );
        }
        let text = d.to_stanza();
        let back = parse(&text);
        assert_eq!(back, d, "{text}");
        for (i, v) in values.iter().enumerate() {
            assert_eq!(
                back.table_get(
                    "linuximage",
                    &img(&format!("img{i}")),
                    &cols(&["addkcmdline"])
                ),
                Ok(Some(row(&[("addkcmdline", v)])))
            );
        }
        assert!(text.contains("    addkcmdline=\"ends:\"\n"));
        assert!(text.contains("    addkcmdline=\"\"quoted\"\"\n"));
        assert!(text.contains("    addkcmdline=k=v w=z\n"));
    }

    #[test]
    fn every_read_value_is_written_back_exactly() {
        // All raw values up to 5 characters over the characters that matter to the reader.
        let alphabet = ['a', '"', ' ', ':', '=', '#', '\t'];
        let mut raws = vec![String::new()];
        for _ in 0..5 {
            let longer: Vec<String> = raws
                .iter()
                .filter(|r| r.chars().count() == raws.last().map_or(0, |l| l.chars().count()))
                .flat_map(|r| alphabet.iter().map(move |c| format!("{r}{c}")))
                .collect();
            raws.extend(longer);
        }
        for raw in &raws {
            let v = decode_value(raw);
            if v.is_empty() {
                continue;
            }
            assert_eq!(check_value("t", "c", &v), Ok(()), "{raw:?} -> {v:?}");
            assert_eq!(decode_value(&encode_value(&v)), v, "{raw:?}");
            let text = format!("o:\n    objtype=site\n    k={raw}\n");
            let d = parse(&text);
            assert_eq!(d.site_get("k").as_deref(), Some(v.as_str()), "{raw:?}");
            assert_eq!(parse(&d.to_stanza()), d, "{raw:?}");
        }
    }

    #[test]
    fn like_matcher() {
        assert!(like("abc", "ABC"));
        assert!(like("a%", "a"));
        assert!(like("%b%", "abc"));
        assert!(like("a_c", "abc"));
        assert!(!like("a_c", "ac"));
        assert!(like("%", ""));
        assert!(!like("", "a"));
        assert!(like("%a%a%", "banana"));
        assert!(!like("%x%", "banana"));
        assert!(like(
            "rhels8%-netboot-%",
            "rhels8.8.0-x86_64-netboot-compute"
        ));
    }

    #[test]
    fn condition_parsing_follows_build_where_clause() {
        let c = |s: &str| Cond::parse(s).map(|c| (c.col, c.op, c.val));
        assert_eq!(c("a==b==c").ok(), Some(("a".into(), Op::Eq, "b==c".into())));
        assert_eq!(c("a=~/x%/").ok(), Some(("a".into(), Op::Like, "x%".into())));
        assert_eq!(c("a!=b").ok(), Some(("a".into(), Op::Ne, "b".into())));
        assert_eq!(c("a!~b").ok(), Some(("a".into(), Op::NotLike, "b".into())));
        assert_eq!(c("a<=b").ok(), Some(("a".into(), Op::Le, "b".into())));
        assert_eq!(c("a>b").ok(), Some(("a".into(), Op::Gt, "b".into())));
        assert!(c("a=b").is_err());
    }

    #[test]
    fn opaque_objects_are_kept() {
        let text = "\
# <xCAT data object stanza file>

cn1:
    objtype=node
    groups=compute,all
    mgt=ipmi
    os=rhels8.8.0
";
        let d = parse(text);
        assert_eq!(d.to_stanza(), text);
        assert_eq!(d.table_list("osimage", &[], &cols(&["ALL"])), Ok(vec![]));
    }
}
