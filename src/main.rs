//! `xcat-imaged`: picks a mode (serve, a standalone command, install-plugin, doctor), builds
//! the host and hands the request to `commands::run`. No command logic lives here.

use std::io::Write;
use std::process::ExitCode;
use xcat_imaged::cancel::Cancel;
use xcat_imaged::commands::{self, COMMANDS};
use xcat_imaged::defs::Defs;
use xcat_imaged::host::local::LocalHost;
use xcat_imaged::host::{stdio, Host};
use xcat_imaged::protocol::{Request, VERSION};

const USAGE: &str = "\
Usage:
    xcat-imaged serve
        One request over stdin/stdout (protocol v1); run by the xcatd plugin.
    xcat-imaged <genimage|packimage|imgexport|rmimage> <args...> --defs FILE
        Run a command without xcatd, with definitions from FILE (lsdef -z stanza format).
    xcat-imaged install-plugin [--xcatroot DIR]
        Install the engine, the xcatd plugin and the bridge into an xCAT installation.
    xcat-imaged doctor [--xcatroot DIR] [--site-imagehandler VALUE] [--installdir DIR] [--enabled]
        Check an installation: say what is ready and what is missing (changes nothing).
    xcat-imaged --version | --help";

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let mut argv = Vec::new();
    for a in std::env::args_os().skip(1) {
        match a.into_string() {
            Ok(s) => argv.push(s),
            Err(a) => return fail(&format!("argument {a:?} is not valid UTF-8")),
        }
    }
    let Some(mode) = argv.first().cloned() else {
        say(USAGE);
        return ExitCode::from(1);
    };
    match mode.as_str() {
        "serve" if argv.len() == 1 => serve(),
        "serve" => fail("serve takes no arguments"),
        "install-plugin" => exit(xcat_imaged::install::run(&argv[1..])),
        "doctor" => exit(xcat_imaged::doctor::run(&argv[1..])),
        "--version" | "-V" | "version" => {
            say(&format!(
                "xcat-imaged {} (protocol v{VERSION})",
                env!("CARGO_PKG_VERSION")
            ));
            ExitCode::SUCCESS
        }
        "--help" | "-h" | "help" => {
            say(USAGE);
            ExitCode::SUCCESS
        }
        cmd if COMMANDS.contains(&cmd) => standalone(cmd, &argv[1..]),
        other => fail(&format!(
            "unknown mode \"{}\"\n{USAGE}",
            other.escape_default()
        )),
    }
}

fn say(text: &str) {
    let _ = writeln!(std::io::stdout(), "{text}");
}

fn fail(text: &str) -> ExitCode {
    let _ = writeln!(std::io::stderr(), "Error: {text}");
    ExitCode::from(1)
}

/// The client's exit status is the OR of the errorcodes; keep a failure non-zero in 8 bits.
fn exit(code: i32) -> ExitCode {
    match code {
        0 => ExitCode::SUCCESS,
        c if c & 0xff == 0 => ExitCode::from(1),
        c => ExitCode::from((c & 0xff) as u8),
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("cannot start the tokio runtime")
}

/// SIGINT and SIGTERM (xcatd signals the process group when the client aborts) mean cancel.
fn watch_signals(cancel: &Cancel) {
    use tokio::signal::unix::{signal, SignalKind};
    for kind in [SignalKind::interrupt(), SignalKind::terminate()] {
        let cancel = cancel.clone();
        match signal(kind) {
            Ok(mut s) => {
                tokio::spawn(async move {
                    while s.recv().await.is_some() {
                        log::info!("signal {kind:?}: cancelling");
                        cancel.cancel();
                    }
                });
            }
            Err(e) => log::error!("cannot watch signal {kind:?}: {e}"),
        }
    }
}

fn serve() -> ExitCode {
    let rt = runtime();
    let cancel = Cancel::new();
    let code = rt.block_on(async {
        watch_signals(&cancel);
        stdio::serve(tokio::io::stdin(), tokio::io::stdout(), cancel.clone()).await
    });
    // tokio's stdin reader may sit in a blocking read; don't wait for it.
    rt.shutdown_background();
    exit(code)
}

/// Splits `--defs FILE` / `--defs=FILE` out of the command's arguments.
fn take_defs(args: &[String]) -> (Option<String>, Vec<String>) {
    let mut defs = None;
    let mut rest = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--defs" {
            defs = it.next().cloned();
        } else if let Some(v) = a.strip_prefix("--defs=") {
            defs = Some(v.to_string());
        } else {
            rest.push(a.clone());
        }
    }
    (defs, rest)
}

fn standalone(command: &str, args: &[String]) -> ExitCode {
    let (defs_path, args) = take_defs(args);
    let Some(defs_path) = defs_path else {
        return fail("standalone mode needs --defs FILE (osimage and site definitions in lsdef -z stanza format)");
    };
    let text = match std::fs::read_to_string(&defs_path) {
        Ok(t) => t,
        Err(e) => return fail(&format!("cannot read {defs_path}: {e}")),
    };
    let defs = match Defs::parse(&text) {
        Ok(d) => d,
        Err(e) => return fail(&format!("{defs_path}: {e}")),
    };
    let environment = std::env::vars()
        .filter(|(k, _)| k.starts_with("XCAT_"))
        .collect();
    let req = Request {
        v: VERSION,
        command: command.to_string(),
        args,
        cwd: std::env::current_dir()
            .ok()
            .map(|d| d.to_string_lossy().into_owned()),
        user: std::env::var("USER").ok(),
        clienttype: Some("cli".to_string()),
        environment: Some(environment),
        xcatroot: std::env::var("XCATROOT").ok(),
    };
    let rt = runtime();
    let cancel = Cancel::new();
    let code = rt.block_on(async {
        watch_signals(&cancel);
        let cancel = cancel.clone();
        let work = tokio::task::spawn_blocking(move || {
            let mut host = LocalHost::new(
                defs,
                Some(defs_path.into()),
                Box::new(std::io::stdout()),
                Box::new(std::io::stderr()),
            );
            commands::run(&req, &mut host, &cancel);
            host.errorcode()
        });
        work.await.unwrap_or(1)
    });
    rt.shutdown_background();
    exit(code)
}
