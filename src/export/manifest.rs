//! `manifest.xml` exactly as xCAT's imgexport writes it, and in the forms its imgimport reads.
//!
//! Stock imgexport serialises a Perl hash with XML::Simple 2.25:
//! `XMLout($attrs, RootName => 'xcatimage', NoAttr => 1, XMLDecl => '<?xml version="1.0"?>')`.
//! [`to_xml`] reproduces that output byte for byte for the value shapes a manifest has
//! (checked against the real XML::Simple where it is installed):
//!
//! * the declaration line, then `<xcatimage>`; two spaces of indentation per level; every
//!   value is an element (never an attribute); each scalar is `<key>value</key>` on a line;
//! * keys in Perl's plain string order, except that a key named `name`, else `key`, else `id`
//!   comes first (XML::Simple's `sorted_keys` with the default `KeyAttr`);
//! * `&`, `<`, `>` and `"` escaped, nothing else;
//! * an array becomes repeated elements; a non-root hash whose values are all hashes is
//!   "unfolded" into repeated elements, each with a `<name>` child holding its key first;
//! * an empty hash is `<key></key>`.
//!
//! [`Value::Element`] is a hash written as nested elements without that unfolding: it is the
//! form a single kit, kit repository or kit component needs (see [`kit_section`]), because
//! XMLin reads one unfolded element back as a flat hash and the real imgimport then dies.
//!
//! This module knows nothing of tables, files or hosts: it turns a tree of strings into text.

use std::collections::BTreeMap;

/// A manifest value, shaped like the Perl data XML::Simple is given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// A string.
    Scalar(String),
    /// An array: repeated elements of the parent's name.
    List(Vec<Value>),
    /// A hash, written the way XML::Simple writes one (unfolded when all its values are hashes
    /// and it is not the root).
    Map(BTreeMap<String, Value>),
    /// A hash written as nested elements, never unfolded.
    Element(BTreeMap<String, Value>),
}

impl Value {
    /// A scalar.
    pub fn scalar(s: impl Into<String>) -> Value {
        Value::Scalar(s.into())
    }

    /// A hash of scalars from a table row (XML::Simple never sees empty columns: the table
    /// layer drops them, and so must the caller).
    pub fn row(row: &BTreeMap<String, String>) -> Value {
        Value::Map(
            row.iter()
                .map(|(k, v)| (k.clone(), Value::Scalar(v.clone())))
                .collect(),
        )
    }
}

/// The XML declaration stock imgexport asks for.
pub const XML_DECL: &str = "<?xml version=\"1.0\"?>";
/// The root element's name.
pub const ROOT: &str = "xcatimage";

/// XML::Simple's default `KeyAttr`, in the order `sorted_keys` tries it.
const KEY_ATTRS: [&str; 3] = ["name", "key", "id"];

/// Serialises `root` as `XMLout` does with the options of stock imgexport.
pub fn to_xml(root: &BTreeMap<String, Value>) -> String {
    let mut out = String::with_capacity(4096);
    out.push_str(XML_DECL);
    out.push('\n');
    write_hash(&mut out, root, ROOT, "");
    out
}

/// `escape_value`: `&`, `<`, `>`, `"`.
pub fn escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            c => o.push(c),
        }
    }
    o
}

/// Whether `s` can be an element name that XML::Simple writes and XML::Parser reads back as a
/// plain hash key: an ASCII letter or `_` first, then letters, digits, `.`, `-`, `_`.
pub fn is_xml_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
}

/// Why a value cannot go into a manifest that imgimport reads back unchanged, if it cannot:
/// XML 1.0 forbids most control characters (XML::Simple writes them and the parser then
/// rejects the whole file), and a carriage return comes back as a line feed.
pub fn value_problem(s: &str) -> Option<&'static str> {
    if s.chars()
        .any(|c| (c.is_control() && c != '\t' && c != '\n') || c == '\u{FFFE}' || c == '\u{FFFF}')
    {
        Some("it contains control characters, which XML cannot carry")
    } else {
        None
    }
}

/// The section for kits, kit repositories or kit components (`kit`, `kitrepo`, `kitcomp`),
/// keyed by name, in a form the real imgimport reads back as `{name => row}`:
///
/// * two or more entries: stock's form (a hash of hashes, unfolded with `<name>` first);
/// * one entry whose name is an XML name: the nested form `<kit><NAME>…</NAME></kit>`;
/// * one entry with any other name: the entry twice in stock's form, which XMLin folds into
///   one hash entry (it only warns about the duplicate in the daemon's log).
///
/// `None` for no entries (the key is then left out, as stock does).
pub fn kit_section(entries: &BTreeMap<String, BTreeMap<String, String>>) -> Option<Value> {
    match entries.len() {
        0 => None,
        1 => {
            let (name, row) = entries.iter().next()?;
            if is_xml_name(name) {
                let mut m = BTreeMap::new();
                m.insert(name.clone(), Value::row(row));
                Some(Value::Element(m))
            } else {
                let mut m: BTreeMap<String, Value> = row
                    .iter()
                    .map(|(k, v)| (k.clone(), Value::Scalar(v.clone())))
                    .collect();
                m.insert("name".to_string(), Value::Scalar(name.clone()));
                Some(Value::List(vec![Value::Map(m.clone()), Value::Map(m)]))
            }
        }
        _ => Some(Value::Map(
            entries
                .iter()
                .map(|(k, row)| (k.clone(), Value::row(row)))
                .collect(),
        )),
    }
}

/// `sorted_keys`: the first of `name`, `key`, `id` present, then the rest in string order.
fn sorted_keys(m: &BTreeMap<String, Value>) -> Vec<&String> {
    let first = KEY_ATTRS
        .iter()
        .find_map(|k| m.get_key_value(*k).map(|(k, _)| k));
    let mut keys: Vec<&String> = first.into_iter().collect();
    keys.extend(m.keys().filter(|k| Some(*k) != first));
    keys
}

/// `hash_to_array`: a hash whose values are all hashes becomes an array of hashes, sorted by
/// key, each with `name => key` added; `None` when some value is not a hash.
fn unfold(m: &BTreeMap<String, Value>) -> Option<Vec<Value>> {
    let mut out = Vec::with_capacity(m.len());
    for (k, v) in m {
        let (Value::Map(inner) | Value::Element(inner)) = v else {
            return None;
        };
        let mut h = inner.clone();
        // `{ name => $key, %$value }`: a `name` in the value wins.
        h.entry("name".to_string())
            .or_insert_with(|| Value::Scalar(k.clone()));
        out.push(Value::Map(h));
    }
    Some(out)
}

/// `value_to_xml` for a named, non-root value.
fn write_value(out: &mut String, v: &Value, name: &str, indent: &str) {
    match v {
        Value::Scalar(s) => scalar_line(out, s, name, indent),
        Value::Map(m) => match (!m.is_empty()).then(|| unfold(m)).flatten() {
            Some(items) => write_list(out, &items, name, indent),
            None => write_hash(out, m, name, indent),
        },
        Value::Element(m) => write_hash(out, m, name, indent),
        Value::List(items) => write_list(out, items, name, indent),
    }
}

fn scalar_line(out: &mut String, s: &str, name: &str, indent: &str) {
    out.push_str(indent);
    out.push('<');
    out.push_str(name);
    out.push('>');
    out.push_str(&escape(s));
    out.push_str("</");
    out.push_str(name);
    out.push_str(">\n");
}

fn write_list(out: &mut String, items: &[Value], name: &str, indent: &str) {
    for item in items {
        match item {
            Value::Scalar(s) => scalar_line(out, s, name, indent),
            Value::Map(_) | Value::Element(_) => write_value(out, item, name, indent),
            Value::List(_) => {
                out.push_str(indent);
                out.push('<');
                out.push_str(name);
                out.push_str(">\n");
                write_value(out, item, "anon", &format!("{indent}  "));
                out.push_str(indent);
                out.push_str("</");
                out.push_str(name);
                out.push_str(">\n");
            }
        }
    }
}

fn write_hash(out: &mut String, m: &BTreeMap<String, Value>, name: &str, indent: &str) {
    out.push_str(indent);
    out.push('<');
    out.push_str(name);
    if m.is_empty() {
        out.push_str("></");
        out.push_str(name);
        out.push_str(">\n");
        return;
    }
    let inner = format!("{indent}  ");
    let mut nested = String::new();
    // XML::Simple tests whether any key was written, not whether it wrote text: a key whose
    // value is an empty array still makes `<name>` a container.
    let mut written = 0usize;
    for k in sorted_keys(m) {
        // XML::Simple skips keys starting with '-'.
        if k.starts_with('-') {
            continue;
        }
        if let Some(v) = m.get(k) {
            write_value(&mut nested, v, k, &inner);
            written += 1;
        }
    }
    if written == 0 {
        out.push_str(" />\n");
        return;
    }
    out.push_str(">\n");
    out.push_str(&nested);
    out.push_str(indent);
    out.push_str("</");
    out.push_str(name);
    out.push_str(">\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, Value)]) -> BTreeMap<String, Value> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    fn s(v: &str) -> Value {
        Value::scalar(v)
    }

    fn row(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// The §7 fixture of the spec: the exact bytes the real imgexport wrote.
    #[test]
    fn the_reference_manifest() {
        let dir = "/install/netboot/rhels8.6.0/x86_64/compute";
        let lists = "/opt/xcat/share/xcat/netboot/rh/compute.rhels8.x86_64";
        let root = map(&[
            ("kernel", s(&format!("{dir}/kernel"))),
            (
                "linuximage",
                Value::row(&row(&[
                    ("exlist", &format!("{lists}.exlist")),
                    ("imagename", "rhels8.6.0-x86_64-netboot-compute"),
                    ("otherpkgdir", "/install/post/otherpkgs/rhels8.6.0/x86_64"),
                    ("pkgdir", "/install/rhels8.6.0/x86_64"),
                    ("pkglist", &format!("{lists}.pkglist")),
                    ("postinstall", &format!("{lists}.postinstall")),
                    ("rootimgdir", dir),
                ])),
            ),
            (
                "osimage",
                Value::row(&row(&[
                    ("imagename", "rhels8.6.0-x86_64-netboot-compute"),
                    ("imagetype", "linux"),
                    ("osarch", "x86_64"),
                    ("osdistroname", "rhels8.6.0-x86_64"),
                    ("osname", "Linux"),
                    ("osvers", "rhels8.6.0"),
                    ("profile", "compute"),
                    ("provmethod", "netboot"),
                ])),
            ),
            ("ramdisk", s(&format!("{dir}/initrd-stateless.gz"))),
            ("rootimg", s(&format!("{dir}/rootimg.cpio.gz"))),
        ]);
        let want = "<?xml version=\"1.0\"?>
<xcatimage>
  <kernel>/install/netboot/rhels8.6.0/x86_64/compute/kernel</kernel>
  <linuximage>
    <exlist>/opt/xcat/share/xcat/netboot/rh/compute.rhels8.x86_64.exlist</exlist>
    <imagename>rhels8.6.0-x86_64-netboot-compute</imagename>
    <otherpkgdir>/install/post/otherpkgs/rhels8.6.0/x86_64</otherpkgdir>
    <pkgdir>/install/rhels8.6.0/x86_64</pkgdir>
    <pkglist>/opt/xcat/share/xcat/netboot/rh/compute.rhels8.x86_64.pkglist</pkglist>
    <postinstall>/opt/xcat/share/xcat/netboot/rh/compute.rhels8.x86_64.postinstall</postinstall>
    <rootimgdir>/install/netboot/rhels8.6.0/x86_64/compute</rootimgdir>
  </linuximage>
  <osimage>
    <imagename>rhels8.6.0-x86_64-netboot-compute</imagename>
    <imagetype>linux</imagetype>
    <osarch>x86_64</osarch>
    <osdistroname>rhels8.6.0-x86_64</osdistroname>
    <osname>Linux</osname>
    <osvers>rhels8.6.0</osvers>
    <profile>compute</profile>
    <provmethod>netboot</provmethod>
  </osimage>
  <ramdisk>/install/netboot/rhels8.6.0/x86_64/compute/initrd-stateless.gz</ramdisk>
  <rootimg>/install/netboot/rhels8.6.0/x86_64/compute/rootimg.cpio.gz</rootimg>
</xcatimage>
";
        assert_eq!(to_xml(&root), want);
    }

    #[test]
    fn shapes() {
        let root = map(&[
            (
                "extra",
                Value::List(vec![
                    Value::Map(map(&[("src", s("/a")), ("dest", s("/b"))])),
                    Value::Map(map(&[("src", s("/c&d")), ("dest", s("<\"'>"))])),
                ]),
            ),
            (
                "rawimagefiles",
                Value::Map(map(&[(
                    "files",
                    Value::List(vec![s("/x.img"), s("/y.img")]),
                )])),
            ),
            ("empty", Value::Map(BTreeMap::new())),
            (
                "kit",
                Value::Map(map(&[
                    (
                        "k2",
                        Value::Map(map(&[("kitdir", s("/k2")), ("basename", s("b"))])),
                    ),
                    ("k1", Value::Map(map(&[("kitdir", s("/k1"))]))),
                ])),
            ),
        ]);
        let want = "<?xml version=\"1.0\"?>
<xcatimage>
  <empty></empty>
  <extra>
    <dest>/b</dest>
    <src>/a</src>
  </extra>
  <extra>
    <dest>&lt;&quot;'&gt;</dest>
    <src>/c&amp;d</src>
  </extra>
  <kit>
    <name>k1</name>
    <kitdir>/k1</kitdir>
  </kit>
  <kit>
    <name>k2</name>
    <basename>b</basename>
    <kitdir>/k2</kitdir>
  </kit>
  <rawimagefiles>
    <files>/x.img</files>
    <files>/y.img</files>
  </rawimagefiles>
</xcatimage>
";
        assert_eq!(to_xml(&root), want);
    }

    #[test]
    fn kit_sections() {
        let mut one = BTreeMap::new();
        one.insert(
            "mykit-1.0-x86_64".to_string(),
            row(&[
                ("kitname", "mykit-1.0-x86_64"),
                ("kitdir", "/install/kits/mykit-1.0-x86_64"),
            ]),
        );
        let root = map(&[("kit", kit_section(&one).unwrap())]);
        assert_eq!(
            to_xml(&root),
            "<?xml version=\"1.0\"?>\n<xcatimage>\n  <kit>\n    <mykit-1.0-x86_64>\n      <kitdir>/install/kits/mykit-1.0-x86_64</kitdir>\n      <kitname>mykit-1.0-x86_64</kitname>\n    </mykit-1.0-x86_64>\n  </kit>\n</xcatimage>\n"
        );
        let mut odd = BTreeMap::new();
        odd.insert("1kit".to_string(), row(&[("kitdir", "/k")]));
        let root = map(&[("kit", kit_section(&odd).unwrap())]);
        assert_eq!(
            to_xml(&root),
            "<?xml version=\"1.0\"?>\n<xcatimage>\n  <kit>\n    <name>1kit</name>\n    <kitdir>/k</kitdir>\n  </kit>\n  <kit>\n    <name>1kit</name>\n    <kitdir>/k</kitdir>\n  </kit>\n</xcatimage>\n"
        );
        assert!(kit_section(&BTreeMap::new()).is_none());
        one.insert("other".to_string(), row(&[("kitdir", "/o")]));
        assert!(matches!(kit_section(&one), Some(Value::Map(_))));
    }

    #[test]
    fn names_and_values() {
        assert!(is_xml_name("rhels-kit_1.0"));
        assert!(is_xml_name("_x"));
        assert!(!is_xml_name("1kit"));
        assert!(!is_xml_name("a:b"));
        assert!(!is_xml_name(""));
        assert!(!is_xml_name("a b"));
        assert!(value_problem("a\tb\nc").is_none());
        assert!(value_problem("a\rb").is_some());
        assert!(value_problem("a\u{1}b").is_some());
        assert_eq!(escape("a&<>\"'"), "a&amp;&lt;&gt;&quot;'");
    }

    /// Differential check against the real XML::Simple, when perl has it.
    #[test]
    fn agrees_with_xml_simple() {
        use std::io::Write;
        use std::process::{Command, Stdio};
        let probe = Command::new("perl")
            .args(["-MXML::Simple", "-MJSON::PP", "-e", "1"])
            .stderr(Stdio::null())
            .status();
        if !probe.is_ok_and(|s| s.success()) {
            return;
        }
        // Perl side: each case is a JSON hash; arrays and hashes map one to one.
        let script = r#"
use strict; use warnings; use XML::Simple; use JSON::PP;
my $cases = JSON::PP->new->utf8->decode(do { local $/; <STDIN> });
binmode STDOUT;
for my $c (@$cases) {
    my $xml = XML::Simple->new(RootName => 'xcatimage');
    my $out = $xml->XMLout($c, noattr => 1, xmldecl => '<?xml version="1.0"?>');
    utf8::encode($out) if utf8::is_utf8($out);
    print length($out), "\n", $out;
}
"#;
        fn json(v: &Value) -> serde_json::Value {
            match v {
                Value::Scalar(s) => serde_json::Value::String(s.clone()),
                Value::List(l) => serde_json::Value::Array(l.iter().map(json).collect()),
                Value::Map(m) | Value::Element(m) => {
                    serde_json::Value::Object(m.iter().map(|(k, v)| (k.clone(), json(v))).collect())
                }
            }
        }
        let mut cases: Vec<BTreeMap<String, Value>> = Vec::new();
        let mut x: u64 = 99;
        let mut rnd = |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        let keys = [
            "osimage",
            "linuximage",
            "name",
            "key",
            "id",
            "kit",
            "zeta",
            "Alpha",
            "a_b",
            "extra",
            "files",
            "kernel",
        ];
        let texts = [
            "/install/x",
            "a&b",
            "<tag>",
            "q\"uote",
            "it's",
            "caf\u{e9}",
            "0",
            " sp ",
        ];
        fn gen(
            rnd: &mut dyn FnMut(u64) -> u64,
            depth: u32,
            keys: &[&str],
            texts: &[&str],
        ) -> Value {
            let pick = if depth == 0 { 0 } else { rnd(4) };
            match pick {
                0 | 1 => Value::scalar(texts[rnd(texts.len() as u64) as usize]),
                2 => Value::List(
                    (0..1 + rnd(3))
                        .map(|_| {
                            if rnd(2) == 0 {
                                Value::scalar(texts[rnd(texts.len() as u64) as usize])
                            } else {
                                gen_map(rnd, depth - 1, keys, texts)
                            }
                        })
                        .collect(),
                ),
                _ => gen_map(rnd, depth - 1, keys, texts),
            }
        }
        fn gen_map(
            rnd: &mut dyn FnMut(u64) -> u64,
            depth: u32,
            keys: &[&str],
            texts: &[&str],
        ) -> Value {
            let mut m = BTreeMap::new();
            let all_maps = rnd(3) == 0;
            for _ in 0..rnd(4) {
                let k = keys[rnd(keys.len() as u64) as usize].to_string();
                let v = if all_maps {
                    gen_map(rnd, depth.saturating_sub(1), keys, texts)
                } else {
                    gen(rnd, depth, keys, texts)
                };
                m.insert(k, v);
            }
            Value::Map(m)
        }
        for _ in 0..300 {
            if let Value::Map(m) = gen_map(&mut rnd, 3, &keys, &texts) {
                cases.push(m);
            }
        }
        let input =
            serde_json::Value::Array(cases.iter().map(|c| json(&Value::Map(c.clone()))).collect());
        let mut child = Command::new("perl")
            .args(["-e", script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.to_string().as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        let mut rest = &out.stdout[..];
        for c in &cases {
            let nl = rest.iter().position(|&b| b == b'\n').unwrap();
            let len: usize = std::str::from_utf8(&rest[..nl]).unwrap().parse().unwrap();
            let perl = std::str::from_utf8(&rest[nl + 1..nl + 1 + len]).unwrap();
            rest = &rest[nl + 1 + len..];
            assert_eq!(to_xml(c), perl, "case {c:?}");
        }
    }
}
