//! The stdio host: one request over stdin/stdout with the Perl bridge (`xcat-imaged serve`).
//!
//! It owns stdout (the only writer), reads stdin concurrently with the command, routes replies
//! to waiting calls, and turns signals, stdin EOF and bad lines into cancellation. It knows no
//! command; [`crate::commands::run`] gets a [`Host`] and a [`Cancel`].

use super::{Host, HostError, Msg};
use crate::cancel::Cancel;
use crate::protocol::{self, Call, FromShim, Request, ToShim, MAX_LINE};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, oneshot};

/// Calls waiting for their reply. `closed` is set once stdin can deliver no more replies.
#[derive(Default)]
struct Pending {
    closed: bool,
    waiting: HashMap<u64, oneshot::Sender<Result<Value, String>>>,
}

impl Pending {
    fn close(&mut self) {
        self.closed = true;
        self.waiting.clear();
    }
}

/// The [`Host`] handed to the command (which runs on a blocking thread).
struct StdioHost {
    out: mpsc::UnboundedSender<ToShim>,
    pending: Arc<Mutex<Pending>>,
    next_id: u64,
    /// Shared with the reader, whose protocol errors count too.
    errorcode: Arc<AtomicI32>,
    /// A cancelled request stops waiting for replies.
    cancel: Cancel,
    runtime: tokio::runtime::Handle,
}

impl Host for StdioHost {
    fn send(&mut self, msg: Msg) {
        let m = match msg {
            Msg::Info(text) => ToShim::Info { text },
            Msg::Data(text) => ToShim::Data { text },
            Msg::Warning(text) => ToShim::Warning { text },
            Msg::Sinfo(text) => ToShim::Sinfo { text },
            Msg::Error(text, errorcode) => {
                self.errorcode.fetch_or(errorcode, Ordering::SeqCst);
                ToShim::Error { text, errorcode }
            }
        };
        // A closed writer means stdout is gone; the writer has cancelled already.
        let _ = self.out.send(m);
    }

    fn call(&mut self, call: Call) -> Result<Value, HostError> {
        let method = call.method();
        self.next_id += 1;
        let id = self.next_id;
        let (tx, rx) = oneshot::channel();
        {
            let mut p = self.pending.lock().expect("pending lock poisoned");
            if p.closed {
                return Err(HostError::Cancelled);
            }
            p.waiting.insert(id, tx);
        }
        log::debug!("call {id} {method}");
        if self.out.send(ToShim::Call { id, call }).is_err() {
            return Err(HostError::Cancelled);
        }
        let cancel = self.cancel.clone();
        let answer = self.runtime.block_on(async move {
            tokio::select! {
                r = rx => r.ok(),
                () = cancel.cancelled() => None,
            }
        });
        match answer {
            Some(Ok(v)) => Ok(v),
            Some(Err(reason)) => Err(HostError::Failed { method, reason }),
            None => Err(HostError::Cancelled),
        }
    }

    fn errorcode(&self) -> i32 {
        self.errorcode.load(Ordering::SeqCst)
    }
}

/// Reads one line of at most [`MAX_LINE`] bytes; `Ok(None)` at EOF.
async fn read_line<R: AsyncBufRead + Unpin>(r: &mut R) -> std::io::Result<Option<Vec<u8>>> {
    let mut buf = Vec::new();
    let n = tokio::io::AsyncReadExt::take(&mut *r, MAX_LINE as u64 + 1)
        .read_until(b'\n', &mut buf)
        .await?;
    if n == 0 {
        return Ok(None);
    }
    if buf.last() == Some(&b'\n') {
        buf.pop();
    } else if buf.len() > MAX_LINE {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("line longer than {MAX_LINE} bytes"),
        ));
    }
    Ok(Some(buf))
}

/// Serves one request read from `input`, writing every message to `output`. Returns the
/// errorcode sent in `done`. `cancel` is set on stdin EOF, a bad line, or by the caller
/// (signals); the command then stops and `done` still goes out.
pub async fn serve<R, W>(input: R, output: W, cancel: Cancel) -> i32
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (out_tx, out_rx) = mpsc::unbounded_channel::<ToShim>();
    let writer = tokio::spawn(write_all(output, out_rx, cancel.clone()));
    let mut input = BufReader::new(input);

    let first = match read_line(&mut input).await {
        Ok(Some(line)) => protocol::parse_request(&line),
        Ok(None) => Err("no request: stdin closed before the first line".to_string()),
        Err(e) => Err(format!("cannot read the request: {e}")),
    };
    let code = match first {
        Err(text) => {
            let _ = out_tx.send(ToShim::Error {
                text: format!("xcat-imaged: {text}"),
                errorcode: 1,
            });
            1
        }
        Ok(req) => run_request(req, input, out_tx.clone(), cancel).await,
    };
    let _ = out_tx.send(ToShim::Done { errorcode: code });
    drop(out_tx);
    let _ = writer.await;
    code
}

async fn run_request<R>(
    req: Request,
    input: BufReader<R>,
    out: mpsc::UnboundedSender<ToShim>,
    cancel: Cancel,
) -> i32
where
    R: AsyncRead + Unpin + Send + 'static,
{
    let pending = Arc::new(Mutex::new(Pending::default()));
    let errorcode = Arc::new(AtomicI32::new(0));
    let reader = tokio::spawn(read_replies(
        input,
        pending.clone(),
        out.clone(),
        errorcode.clone(),
        cancel.clone(),
    ));
    let host_cancel = cancel.clone();
    let host_code = errorcode.clone();
    let panic_out = out.clone();
    let runtime = tokio::runtime::Handle::current();
    let work = tokio::task::spawn_blocking(move || {
        let mut host = StdioHost {
            out,
            pending,
            next_id: 0,
            errorcode: host_code,
            cancel: host_cancel.clone(),
            runtime,
        };
        crate::commands::run(&req, &mut host, &host_cancel);
    });
    if let Err(e) = work.await {
        // A panic is a bug; still answer with done instead of dying silently.
        log::error!("command panicked: {e}");
        errorcode.fetch_or(1, Ordering::SeqCst);
        let text =
            "xcat-imaged: internal error (the command panicked; see the engine log)".to_string();
        let _ = panic_out.send(ToShim::Error { text, errorcode: 1 });
    }
    reader.abort();
    errorcode.load(Ordering::SeqCst)
}

/// Reads replies until EOF or a bad line, handing each to its waiting call.
async fn read_replies<R>(
    mut input: BufReader<R>,
    pending: Arc<Mutex<Pending>>,
    out: mpsc::UnboundedSender<ToShim>,
    errorcode: Arc<AtomicI32>,
    cancel: Cancel,
) where
    R: AsyncRead + Unpin + Send + 'static,
{
    let problem = loop {
        let line = match read_line(&mut input).await {
            Ok(Some(line)) => line,
            Ok(None) => break None,
            Err(e) => break Some(format!("cannot read from the bridge: {e}")),
        };
        match protocol::decode::<FromShim>(&line) {
            Ok(FromShim::Reply(reply)) => {
                let id = reply.id;
                let waiter = pending
                    .lock()
                    .expect("pending lock poisoned")
                    .waiting
                    .remove(&id);
                match waiter {
                    Some(tx) => {
                        let _ = tx.send(reply.into_result());
                    }
                    None => break Some(format!("reply for unknown call id {id}")),
                }
            }
            Ok(FromShim::Request(_)) => {
                break Some("a second request on one connection".to_string())
            }
            Err(e) => break Some(e.to_string()),
        }
    };
    if let Some(text) = &problem {
        errorcode.fetch_or(1, Ordering::SeqCst);
        let _ = out.send(ToShim::Error {
            text: format!("xcat-imaged protocol error: {text}"),
            errorcode: 1,
        });
    } else {
        log::info!("stdin closed: cancelling");
    }
    pending.lock().expect("pending lock poisoned").close();
    cancel.cancel();
}

/// The only writer of stdout. A write failure means the bridge is gone: cancel.
async fn write_all<W: AsyncWrite + Unpin>(
    mut w: W,
    mut rx: mpsc::UnboundedReceiver<ToShim>,
    cancel: Cancel,
) {
    while let Some(msg) = rx.recv().await {
        let mut line = match serde_json::to_vec(&msg) {
            Ok(l) => l,
            Err(e) => {
                log::error!("cannot encode {msg:?}: {e}");
                continue;
            }
        };
        line.push(b'\n');
        let res = async {
            w.write_all(&line).await?;
            w.flush().await
        }
        .await;
        if let Err(e) = res {
            log::warn!("writing to the bridge failed: {e}; cancelling");
            cancel.cancel();
            // Keep draining so senders never block on a dead writer.
            while rx.recv().await.is_some() {}
            return;
        }
    }
}
