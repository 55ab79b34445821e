//! The four commands. Each turns arguments into a plan, checks it, then runs it against a host.
//!
//! This is the only layer that talks to the [`Host`]; the modules below it get paths and values.

pub mod genimage;
pub mod imgexport;
pub mod packimage;
pub mod rmimage;

use crate::cancel::Cancel;
use crate::host::{Host, HostError, HostExt};
use crate::protocol::Request;

/// The commands xcatd may hand to the engine.
pub const COMMANDS: &[&str] = &["genimage", "packimage", "imgexport", "rmimage"];

/// Runs one request to completion. Every outcome is reported through `host`; the caller reads
/// the final errorcode from [`Host::errorcode`].
pub fn run(req: &Request, host: &mut dyn Host, cancel: &Cancel) {
    log::info!("{} {:?}", req.command, req.args);
    match req.command.as_str() {
        "rmimage" => rmimage::run(&req.args, host, cancel),
        "packimage" => packimage::run(&req.args, req.xcatroot.as_deref(), host, cancel),
        "imgexport" => imgexport::run(
            &req.args,
            req.cwd.as_deref(),
            req.xcatroot.as_deref(),
            host,
            cancel,
        ),
        "genimage" => genimage::run(&req.args, req.xcatroot.as_deref(), host, cancel),
        other => host.error(format!(
            "xcat-imaged: unknown command \"{}\"; it handles {}",
            other.escape_default(),
            COMMANDS.join(", ")
        )),
    }
}

/// A failure that ends a command: the text of one error with errorcode 1. Every command
/// returns it from its inner function and reports it once at the top.
pub(crate) struct Fail(pub(crate) String);

impl From<HostError> for Fail {
    fn from(e: HostError) -> Fail {
        Fail(e.to_string())
    }
}
