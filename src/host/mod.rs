//! The host: where messages go and where table calls are answered.
//!
//! Commands talk only to [`Host`]. `stdio` relays over the protocol to the Perl bridge,
//! `local` answers from a stanza definitions file and prints like the xCAT client.

pub mod local;
pub mod stdio;

use crate::protocol::{Call, Row};
use serde_json::Value;
use std::fmt;

/// A user-visible message, as the xCAT callback keys have them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Msg {
    /// `info`
    Info(String),
    /// `data`
    Data(String),
    /// `warning`
    Warning(String),
    /// `sinfo` (transient progress)
    Sinfo(String),
    /// `error` with its non-zero errorcode
    Error(String, i32),
}

/// Why a host call produced no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostError {
    /// The host answered the call with an error.
    Failed {
        /// Wire method name.
        method: &'static str,
        /// The host's reason.
        reason: String,
    },
    /// The answer did not have the expected shape.
    BadResult {
        /// Wire method name.
        method: &'static str,
        /// What was wrong.
        reason: String,
    },
    /// The request was cancelled (signal, or the bridge went away) before the answer came.
    Cancelled,
}

impl fmt::Display for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostError::Failed { method, reason } => write!(f, "{method} failed: {reason}"),
            HostError::BadResult { method, reason } => {
                write!(f, "{method} returned an unexpected result: {reason}")
            }
            HostError::Cancelled => write!(f, "interrupted"),
        }
    }
}

impl std::error::Error for HostError {}

/// Messages out, calls answered. Implementations OR the errorcodes of the errors they send.
pub trait Host {
    /// Sends one message to the user.
    fn send(&mut self, msg: Msg);
    /// Makes one call and waits for its answer.
    fn call(&mut self, call: Call) -> Result<Value, HostError>;
    /// The bitwise OR of every errorcode sent so far.
    fn errorcode(&self) -> i32;
}

/// Typed conveniences over [`Host`], so commands never touch JSON.
pub trait HostExt: Host {
    /// `info` message.
    fn info(&mut self, text: impl Into<String>) {
        self.send(Msg::Info(text.into()));
    }
    /// `data` message.
    fn data(&mut self, text: impl Into<String>) {
        self.send(Msg::Data(text.into()));
    }
    /// `sinfo` (transient progress) message.
    fn sinfo(&mut self, text: impl Into<String>) {
        self.send(Msg::Sinfo(text.into()));
    }
    /// `warning` message.
    fn warning(&mut self, text: impl Into<String>) {
        self.send(Msg::Warning(text.into()));
    }
    /// `error` message with errorcode 1.
    fn error(&mut self, text: impl Into<String>) {
        self.send(Msg::Error(text.into(), 1));
    }
    /// The first row matching `keys`, with the wanted columns that are set.
    fn table_get(
        &mut self,
        table: &str,
        keys: &[(&str, &str)],
        attrs: &[&str],
    ) -> Result<Option<Row>, HostError> {
        let call = Call::TableGet {
            table: table.into(),
            keys: row(keys),
            attrs: strings(attrs),
        };
        let v = self.call(call)?;
        if v.is_null() {
            return Ok(None);
        }
        to_row(v, "table.get").map(Some)
    }
    /// Every row matching all conditions of `filter` (xCAT's `attr==val` form).
    fn table_list(
        &mut self,
        table: &str,
        filter: &[&str],
        attrs: &[&str],
    ) -> Result<Vec<Row>, HostError> {
        let call = Call::TableList {
            table: table.into(),
            filter: strings(filter),
            attrs: strings(attrs),
        };
        match self.call(call)? {
            Value::Null => Ok(Vec::new()),
            Value::Array(rows) => rows.into_iter().map(|r| to_row(r, "table.list")).collect(),
            other => Err(bad("table.list", format!("expected an array, got {other}"))),
        }
    }
    /// Upserts one row.
    fn table_set(
        &mut self,
        table: &str,
        keys: &[(&str, &str)],
        values: &[(&str, &str)],
    ) -> Result<(), HostError> {
        self.call(Call::TableSet {
            table: table.into(),
            keys: row(keys),
            values: row(values),
        })
        .map(drop)
    }
    /// Deletes the rows matching `keys`.
    fn table_delete(&mut self, table: &str, keys: &[(&str, &str)]) -> Result<(), HostError> {
        self.call(Call::TableDelete {
            table: table.into(),
            keys: row(keys),
        })
        .map(drop)
    }
    /// One site attribute; unset and empty are both `None`.
    fn site_get(&mut self, key: &str) -> Result<Option<String>, HostError> {
        match self.call(Call::SiteGet { key: key.into() })? {
            Value::Null => Ok(None),
            Value::String(s) if s.is_empty() => Ok(None),
            Value::String(s) => Ok(Some(s)),
            Value::Number(n) => Ok(Some(n.to_string())),
            other => Err(bad("site.get", format!("expected a string, got {other}"))),
        }
    }
    /// The crypted root password xCAT would put into images, if one is configured.
    fn system_password(&mut self) -> Result<Option<String>, HostError> {
        match self.call(Call::SystemPassword {})? {
            Value::Null => Ok(None),
            Value::String(s) if s.is_empty() => Ok(None),
            Value::String(s) => Ok(Some(s)),
            other => Err(bad(
                "xcat.system_password",
                format!("expected a string, got {other}"),
            )),
        }
    }
}

impl<H: Host + ?Sized> HostExt for H {}

fn row(pairs: &[(&str, &str)]) -> Row {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn bad(method: &'static str, reason: String) -> HostError {
    HostError::BadResult { method, reason }
}

/// Converts a JSON object into a row: strings kept, numbers written out, nulls dropped.
fn to_row(v: Value, method: &'static str) -> Result<Row, HostError> {
    let Value::Object(map) = v else {
        return Err(bad(method, format!("expected an object, got {v}")));
    };
    let mut out = Row::new();
    for (k, v) in map {
        match v {
            Value::Null => {}
            Value::String(s) => {
                out.insert(k, s);
            }
            Value::Number(n) => {
                out.insert(k, n.to_string());
            }
            other => return Err(bad(method, format!("column {k} is {other}, not a string"))),
        }
    }
    Ok(out)
}
