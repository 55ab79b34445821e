//! The local host for standalone mode: calls answered from a stanza definitions file, messages
//! printed the way the xCAT client prints them.
//!
//! Changes a command makes (`table.set`, `table.delete`) are written back to the file
//! atomically as they happen. It knows no command.

use super::{Host, HostError, Msg};
use crate::defs::Defs;
use crate::fs::atomic::write_atomic;
use crate::protocol::Call;
use serde_json::Value;
use std::io::Write;
use std::path::PathBuf;

/// Answers calls from a [`Defs`] and prints messages like `xCAT::Client::handle_response`:
/// info and data on `out`, `Error: ` and `Warning: ` lines on `err`, sinfo ended by `\r`.
pub struct LocalHost {
    defs: Defs,
    path: Option<PathBuf>,
    out: Box<dyn Write + Send>,
    err: Box<dyn Write + Send>,
    errorcode: i32,
}

impl LocalHost {
    /// A host over `defs`; with `path`, changes are written back there.
    pub fn new(
        defs: Defs,
        path: Option<PathBuf>,
        out: Box<dyn Write + Send>,
        err: Box<dyn Write + Send>,
    ) -> LocalHost {
        LocalHost {
            defs,
            path,
            out,
            err,
            errorcode: 0,
        }
    }

    /// The definitions as they are now (after any changes the command made).
    pub fn defs(&self) -> &Defs {
        &self.defs
    }

    fn save(&self) -> Result<(), String> {
        match &self.path {
            None => Ok(()),
            Some(p) => write_atomic(p, self.defs.to_stanza().as_bytes(), 0o644)
                .map_err(|e| format!("cannot write {}: {e}", p.display())),
        }
    }

    fn answer(&mut self, call: Call) -> Result<Value, String> {
        fn json(v: impl serde::Serialize) -> Result<Value, String> {
            serde_json::to_value(v).map_err(|e| e.to_string())
        }
        match call {
            Call::TableGet { table, keys, attrs } => {
                json(self.defs.table_get(&table, &keys, &attrs)?)
            }
            Call::TableList {
                table,
                filter,
                attrs,
            } => json(self.defs.table_list(&table, &filter, &attrs)?),
            Call::TableSet {
                table,
                keys,
                values,
            } => {
                self.defs.table_set(&table, &keys, &values)?;
                self.save().map(|()| Value::Null)
            }
            Call::TableDelete { table, keys } => {
                self.defs.table_delete(&table, &keys)?;
                self.save().map(|()| Value::Null)
            }
            Call::SiteGet { key } => {
                Ok(self.defs.site_get(&key).map_or(Value::Null, Value::String))
            }
            Call::SystemPassword {} => {
                let mut keys = crate::protocol::Row::new();
                keys.insert("key".into(), "system".into());
                keys.insert("username".into(), "root".into());
                let row = self.defs.table_get("passwd", &keys, &["password".into()])?;
                match row.and_then(|r| r.get("password").cloned()) {
                    None => Ok(Value::Null),
                    // Standalone mode has no crypt(); only a stored hash can be used as is.
                    Some(p) if ["$1$", "$5$", "$6$"].iter().any(|pre| p.starts_with(pre)) => Ok(Value::String(p)),
                    Some(_) => Err("the passwd object for key=system username=root holds a plain-text password; \
                                    standalone mode needs a crypted one ($5$... or $6$...)"
                        .into()),
                }
            }
        }
    }
}

impl Host for LocalHost {
    fn send(&mut self, msg: Msg) {
        // Output errors (a closed pipe) must not abort the command half-way; ignore them.
        let _ = match msg {
            Msg::Info(t) | Msg::Data(t) => writeln!(self.out, "{t}"),
            Msg::Sinfo(t) => write!(self.out, "{t}\r").and_then(|()| self.out.flush()),
            Msg::Warning(t) => writeln!(self.err, "Warning: {t}"),
            Msg::Error(t, code) => {
                self.errorcode |= code;
                writeln!(self.err, "Error: {t}")
            }
        };
    }

    fn call(&mut self, call: Call) -> Result<Value, HostError> {
        let method = call.method();
        self.answer(call)
            .map_err(|reason| HostError::Failed { method, reason })
    }

    fn errorcode(&self) -> i32 {
        self.errorcode
    }
}
