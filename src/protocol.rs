//! Wire types of protocol v1 between the Perl bridge and the engine, and line I/O for them.
//!
//! One JSON object per line, UTF-8, `\n`-terminated. This module knows nothing of commands or
//! tables beyond the names of the call methods; `docs/protocol.md` is its prose twin.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{self, BufRead, Write};

/// The protocol version this engine speaks.
pub const VERSION: u32 = 1;

/// Longest line accepted in either direction (bytes, without the newline). Longer input is a
/// protocol error rather than unbounded memory.
pub const MAX_LINE: usize = 4 * 1024 * 1024;

/// A message from the bridge (shim) to the engine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum FromShim {
    /// The first line: what to run.
    Request(Request),
    /// The answer to one `call`.
    Reply(Reply),
}

/// What xcatd asked for, as the bridge saw it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    /// Protocol version; must equal [`VERSION`].
    pub v: u32,
    /// `genimage`, `packimage`, `imgexport` or `rmimage`.
    pub command: String,
    /// Arguments exactly as xcatd passed them, undef entries dropped.
    #[serde(default)]
    pub args: Vec<String>,
    /// The client's working directory (absent for REST and the stock genimage client).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// The authenticated user name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// `cli` or `ws` (REST).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clienttype: Option<String>,
    /// The client's `XCAT_*` environment variables (absent for REST).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<BTreeMap<String, String>>,
    /// The xCAT installation the request came through (`$::XCATROOT`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xcatroot: Option<String>,
}

/// The bridge's answer to a call, as it travels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    /// The id of the call this answers.
    pub id: u64,
    /// True when `result` holds the answer, false when `error` says why there is none.
    pub ok: bool,
    /// The answer (any JSON value; `null` is a valid answer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// Why the call failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Reply {
    /// The reply as a Rust result: `ok` with its result, or the error text.
    pub fn into_result(self) -> Result<Value, String> {
        if self.ok {
            Ok(self.result.unwrap_or(Value::Null))
        } else {
            Err(self
                .error
                .unwrap_or_else(|| "call failed without a reason".to_string()))
        }
    }
}

/// A row of a table: column name to value. Columns that are undef/NULL are absent.
pub type Row = BTreeMap<String, String>;

/// The methods the engine may call on the host. Kept few and generic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "method", content = "params")]
pub enum Call {
    /// `xCAT::Table->getAttribs(keys, attrs)`: the first matching row, or `null`.
    #[serde(rename = "table.get")]
    TableGet {
        /// Table name, e.g. `osimage`.
        table: String,
        /// Key columns and their values.
        keys: Row,
        /// Columns wanted.
        attrs: Vec<String>,
    },
    /// `getAllAttribsWhere(where, attrs)`: every matching row (an array).
    #[serde(rename = "table.list")]
    TableList {
        /// Table name.
        table: String,
        /// Conditions in xCAT's form, ANDed: `attr==val`, `attr!=val`, and `attr=~pat`,
        /// `attr!~pat`, which xCAT turns into SQL LIKE / NOT LIKE (`%`, `_`), not regexes.
        #[serde(rename = "where")]
        filter: Vec<String>,
        /// Columns wanted.
        attrs: Vec<String>,
    },
    /// `setAttribs(keys, values)`: upsert one row. Result `null`.
    #[serde(rename = "table.set")]
    TableSet {
        /// Table name.
        table: String,
        /// Key columns and their values.
        keys: Row,
        /// Columns to set.
        values: Row,
    },
    /// `delEntries(keys)`: delete matching rows. Result `null`.
    #[serde(rename = "table.delete")]
    TableDelete {
        /// Table name.
        table: String,
        /// Key columns and their values.
        keys: Row,
    },
    /// `xCAT::TableUtils->get_site_attribute(key)`: a string or `null`.
    #[serde(rename = "site.get")]
    SiteGet {
        /// The site key, e.g. `installdir`.
        key: String,
    },
    /// `xCAT::PasswordUtils::crypt_system_password()`: the crypted root password or `null`.
    #[serde(rename = "xcat.system_password")]
    SystemPassword {},
}

impl Call {
    /// The method name as it appears on the wire.
    pub fn method(&self) -> &'static str {
        match self {
            Call::TableGet { .. } => "table.get",
            Call::TableList { .. } => "table.list",
            Call::TableSet { .. } => "table.set",
            Call::TableDelete { .. } => "table.delete",
            Call::SiteGet { .. } => "site.get",
            Call::SystemPassword {} => "xcat.system_password",
        }
    }
}

/// A message from the engine to the bridge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ToShim {
    /// Progress or result text, `{info:[text]}`.
    Info {
        /// The text.
        text: String,
    },
    /// Data text, `{data:[text]}`.
    Data {
        /// The text.
        text: String,
    },
    /// A warning, `{warning:[text]}`.
    Warning {
        /// The text.
        text: String,
    },
    /// Transient progress, `{sinfo:[text]}` (the CLI ends it with `\r`).
    Sinfo {
        /// The text.
        text: String,
    },
    /// An error, `{error:[text], errorcode:[n]}`.
    Error {
        /// The text.
        text: String,
        /// Non-zero errorcode.
        errorcode: i32,
    },
    /// A call the bridge answers with a `reply` of the same id.
    Call {
        /// Unique per request, increasing.
        id: u64,
        /// Method and params.
        #[serde(flatten)]
        call: Call,
    },
    /// The last line: the OR of every errorcode sent.
    Done {
        /// 0 on success.
        errorcode: i32,
    },
}

/// Reads one line and decodes it. `Ok(None)` at EOF; a line that is too long, not UTF-8 or not
/// a valid message is `ErrorKind::InvalidData` with a text fit for an error message.
pub fn read_line<T: serde::de::DeserializeOwned>(r: &mut impl BufRead) -> io::Result<Option<T>> {
    match read_raw_line(r)? {
        None => Ok(None),
        Some(line) => decode(&line).map(Some),
    }
}

/// Reads one raw line (without the `\n`), capped at [`MAX_LINE`] bytes.
pub fn read_raw_line(r: &mut impl BufRead) -> io::Result<Option<Vec<u8>>> {
    let mut buf = Vec::new();
    let n = io::Read::take(&mut *r, MAX_LINE as u64 + 1).read_until(b'\n', &mut buf)?;
    if n == 0 {
        return Ok(None);
    }
    if buf.last() == Some(&b'\n') {
        buf.pop();
    } else if buf.len() > MAX_LINE {
        return Err(invalid(format!("line longer than {MAX_LINE} bytes")));
    }
    Ok(Some(buf))
}

/// Decodes one line (without its newline) into a message.
pub fn decode<T: serde::de::DeserializeOwned>(line: &[u8]) -> io::Result<T> {
    let text = std::str::from_utf8(line).map_err(|_| invalid("line is not UTF-8".to_string()))?;
    serde_json::from_str(text).map_err(|e| invalid(format!("malformed message: {e}")))
}

/// Writes one message as one line and flushes.
pub fn write_line<T: Serialize>(w: &mut impl Write, msg: &T) -> io::Result<()> {
    let mut line = serde_json::to_vec(msg).map_err(io::Error::other)?;
    line.push(b'\n');
    w.write_all(&line)?;
    w.flush()
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// Checks the first line of a session and returns the request, or the error text to send.
/// The version is checked before the rest, so a newer shim gets "unsupported version", not a
/// field-by-field complaint.
pub fn parse_request(line: &[u8]) -> Result<Request, String> {
    let value: Value = decode(line).map_err(|e| e.to_string())?;
    let obj = value
        .as_object()
        .ok_or_else(|| "malformed message: not a JSON object".to_string())?;
    match obj.get("type") {
        Some(Value::String(t)) if t == "request" => {}
        Some(Value::String(other)) => {
            return Err(format!(
                "expected a request as the first message, got \"{}\"",
                other.escape_default()
            ))
        }
        Some(other) => {
            return Err(format!(
                "malformed message: \"type\" is {other}, not a string"
            ))
        }
        None => return Err("malformed message: missing \"type\"".to_string()),
    }
    match obj.get("v") {
        Some(Value::Number(n)) if n.as_u64() == Some(u64::from(VERSION)) => {}
        Some(v) => {
            return Err(format!(
                "unsupported protocol version {v}; this engine speaks version {VERSION}"
            ))
        }
        None => return Err("malformed request: missing \"v\"".to_string()),
    }
    match serde_json::from_value::<FromShim>(value) {
        Ok(FromShim::Request(r)) => Ok(r),
        Ok(FromShim::Reply(_)) => Err("expected a request".to_string()),
        Err(e) => Err(format!("malformed request: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line<T: Serialize>(m: &T) -> String {
        let mut v = Vec::new();
        write_line(&mut v, m).unwrap();
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn messages_have_exact_bytes() {
        assert_eq!(
            line(&ToShim::Info { text: "hi".into() }),
            "{\"type\":\"info\",\"text\":\"hi\"}\n"
        );
        assert_eq!(
            line(&ToShim::Error {
                text: "bad".into(),
                errorcode: 1
            }),
            "{\"type\":\"error\",\"text\":\"bad\",\"errorcode\":1}\n"
        );
        assert_eq!(
            line(&ToShim::Done { errorcode: 0 }),
            "{\"type\":\"done\",\"errorcode\":0}\n"
        );
        assert_eq!(
            line(&ToShim::Sinfo { text: "50%".into() }),
            "{\"type\":\"sinfo\",\"text\":\"50%\"}\n"
        );
    }

    #[test]
    fn call_is_flat_on_the_wire() {
        let mut keys = Row::new();
        keys.insert("imagename".into(), "img".into());
        let c = ToShim::Call {
            id: 7,
            call: Call::TableGet {
                table: "osimage".into(),
                keys,
                attrs: vec!["osvers".into()],
            },
        };
        let s = line(&c);
        assert_eq!(
            s,
            "{\"type\":\"call\",\"id\":7,\"method\":\"table.get\",\"params\":{\"table\":\"osimage\",\"keys\":{\"imagename\":\"img\"},\"attrs\":[\"osvers\"]}}\n"
        );
        let back: ToShim = decode(s.trim_end().as_bytes()).unwrap();
        assert_eq!(back, c);
        let pw = line(&ToShim::Call {
            id: 1,
            call: Call::SystemPassword {},
        });
        assert_eq!(
            pw,
            "{\"type\":\"call\",\"id\":1,\"method\":\"xcat.system_password\",\"params\":{}}\n"
        );
    }

    #[test]
    fn request_roundtrip_and_defaults() {
        let r = parse_request(br#"{"type":"request","v":1,"command":"rmimage","args":["img"]}"#)
            .unwrap();
        assert_eq!(r.command, "rmimage");
        assert_eq!(r.args, vec!["img"]);
        assert_eq!(r.cwd, None);
        let full = br#"{"type":"request","v":1,"command":"packimage","args":["img","-m","tar"],"cwd":"/root","user":"root","clienttype":"cli","environment":{"XCAT_FOO":"bar"},"xcatroot":"/opt/xcat"}"#;
        let r = parse_request(full).unwrap();
        assert_eq!(r.environment.unwrap()["XCAT_FOO"], "bar");
        assert_eq!(r.xcatroot.as_deref(), Some("/opt/xcat"));
    }

    #[test]
    fn request_errors_are_clear() {
        let e = parse_request(br#"{"type":"request","v":2,"command":"rmimage"}"#).unwrap_err();
        assert_eq!(
            e,
            "unsupported protocol version 2; this engine speaks version 1"
        );
        let e = parse_request(br#"{"type":"request","command":"rmimage"}"#).unwrap_err();
        assert!(e.contains("missing \"v\""), "{e}");
        let e = parse_request(b"not json").unwrap_err();
        assert!(e.starts_with("malformed message"), "{e}");
        let e = parse_request(br#"{"type":"reply","id":1,"ok":true}"#).unwrap_err();
        assert!(e.contains("expected a request"), "{e}");
        let e = parse_request(br#"{"type":"request","v":1,"command":7}"#).unwrap_err();
        assert!(e.starts_with("malformed request"), "{e}");
        // Unknown fields are ignored so a shim may add optional fields without a version bump.
        assert!(parse_request(br#"{"type":"request","v":1,"command":"x","extra":1}"#).is_ok());
    }

    #[test]
    fn reply_results() {
        let r: FromShim = decode(br#"{"type":"reply","id":3,"ok":true,"result":null}"#).unwrap();
        let FromShim::Reply(r) = r else {
            panic!("not a reply")
        };
        assert_eq!(r.into_result(), Ok(Value::Null));
        let r: FromShim =
            decode(br#"{"type":"reply","id":3,"ok":false,"error":"no table"}"#).unwrap();
        let FromShim::Reply(r) = r else {
            panic!("not a reply")
        };
        assert_eq!(r.into_result(), Err("no table".to_string()));
        let e = decode::<FromShim>(br#"{"type":"nonsense"}"#).unwrap_err();
        assert!(e.to_string().contains("unknown variant"), "{e}");
    }

    #[test]
    fn long_lines_are_refused() {
        let mut big = vec![b'x'; MAX_LINE + 10];
        big.push(b'\n');
        let mut r = io::Cursor::new(big);
        let e = read_raw_line(&mut r).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        let mut r = io::Cursor::new(b"abc\ndef".to_vec());
        assert_eq!(read_raw_line(&mut r).unwrap(), Some(b"abc".to_vec()));
        assert_eq!(read_raw_line(&mut r).unwrap(), Some(b"def".to_vec()));
        assert_eq!(read_raw_line(&mut r).unwrap(), None);
    }
}
