//! The compressor stage of packimage: turns the archive byte stream into the `.gz` or `.xz`
//! file nodes boot from, in-process and on all cores, where xCAT pipes through `pigz -c`,
//! `gzip -c` or `xz -c`.
//!
//! It only sees bytes: it knows nothing about the host, xCAT tables, the archive format
//! (cpio or tar) or where the output goes.
//!
//! # Segments
//!
//! The input is cut into segments at content-defined points ([`super::chunk`]: a gear hash
//! of the bytes, so the same archive always gives the same segments and a change moves only
//! the cuts near it). Each segment is compressed on its own, on a worker thread, into a
//! complete gzip member (libdeflate; 10-byte header with no name, MTIME 0, OS 3 = Unix;
//! deflate data; CRC32 and ISIZE) or a complete xz stream (liblzma's single-threaded
//! encoder at the preset, CRC64 check, as `xz` writes), and the pieces are written to
//! `inner` strictly in input order. RFC 1952 allows a gzip file to be a series of members
//! and the xz format a series of streams: `gzip -cd`, `zcat`, `tar -z`/`-J`, `pigz -d`,
//! `xz -d`, busybox `gunzip` and `unxz` and the kernel's initramfs unpacker decode them as one
//! stream (in Rust only `MultiGzDecoder` does; `GzDecoder` stops after the first member).
//!
//! Sizes: gzip segments are 1-4 MiB (about 2 MiB on average): 18 bytes and a restarted
//! 32 KiB window each, still smaller than `pigz -6`. xz segments are 8-32 MiB (about 16 MiB):
//! each restarts the 8 MiB dictionary, which costs ratio on small segments (measured in
//! docs/performance.md).
//!
//! Because every segment is compressed alone, its compressed bytes depend only on its own
//! bytes and the settings: not on the thread count, on thread timing, on how the input was
//! split into `write` calls, or on whether they were compressed now or copied from the
//! previous image by the segment cache ([`super::segcache`]), which is how a repack can
//! reuse unchanged segments and still be byte-identical to a full pack.
//!
//! # Threads and memory
//!
//! `threads` workers take segments from one shared queue (`Mutex<Receiver>` over a bounded
//! `sync_channel`), one writer thread reorders the finished pieces by sequence number and
//! writes them to `inner`, and the caller's thread only copies input into segments (finding
//! the cuts as it goes). Memory is bounded by a fixed pool of slots: a slot travels caller →
//! worker → writer → back to the caller, so no more than the pool's segments (each at most
//! the maximum segment size, plus its output) exist at once, whatever the input size and
//! however slow `inner` is. gzip has 2 slots per thread; xz has one slot per thread (at least
//! 2), because each xz worker also holds its encoder (about 94 MiB at preset 6) and a segment
//! of up to 32 MiB: compressing one takes seconds and filling the next milliseconds, so an
//! extra slot would buy little and cost up to 32 MiB more (measured in docs/performance.md).
//!
//! # Errors and dropping
//!
//! An error from a worker or from `inner` is returned by the next `write`, `flush` or
//! `finish`, and every call after it fails the same way: the output is unusable from then on.
//! Dropping a compressor without [`Compressor::finish`] abandons the output: workers stop
//! after their current segment and are joined, the writer thread is detached (it may be
//! blocked in `inner`) and exits at its next step without writing anything more.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};

use liblzma::stream::{Action, Check, Status, Stream};

use super::chunk::{Chunker, Sizes};
use super::segcache::{self, Record, Reuse};

/// gzip segment sizes: 1 MiB minimum, about 1 MiB more on average, 4 MiB at most.
pub const GZIP_SEGMENTS: Sizes = Sizes {
    min: 1 << 20,
    bits: 20,
    max: 4 << 20,
};

/// xz segment sizes: 8 MiB minimum, about 8 MiB more on average, 32 MiB at most.
pub const XZ_SEGMENTS: Sizes = Sizes {
    min: 8 << 20,
    bits: 23,
    max: 32 << 20,
};

/// The default level for both methods, as `gzip`, `pigz` and `xz` use.
pub const DEFAULT_LEVEL: u32 = 6;

/// Offset of the OS byte in a gzip header; libdeflate writes 255 (unknown), gzip on Unix 3.
const GZIP_OS_OFFSET: usize = 9;
const GZIP_OS_UNIX: u8 = 3;

/// Which compressor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// gzip (RFC 1952), as a series of independently compressed members.
    Gzip,
    /// xz (the `.xz` container with LZMA2 and CRC64), as a series of streams.
    Xz,
}

/// What to compress with and how hard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// The compressor.
    pub method: Method,
    /// Gzip: libdeflate level 1-12 (6 is gzip's default; 10-12 are libdeflate's slow,
    /// strongest levels). Xz: preset 0-9 (6 is the default; no "extreme" variants).
    pub level: u32,
    /// Worker threads, at least 1.
    pub threads: usize,
}

impl Options {
    /// `method` at [`DEFAULT_LEVEL`] with one thread per available core
    /// (`std::thread::available_parallelism`, which honours affinity and cgroup quotas).
    pub fn new(method: Method) -> Options {
        Options {
            method,
            level: DEFAULT_LEVEL,
            threads: thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }

    /// Names everything that decides the compressed bytes of a segment (method, level,
    /// segment rules, library versions), so a segment cache made with other settings is
    /// never used.
    pub fn cache_tag(&self) -> String {
        let (name, s, lib) = match self.method {
            Method::Gzip => ("gzip", GZIP_SEGMENTS, "libdeflater-1.26"),
            Method::Xz => ("xz", XZ_SEGMENTS, "liblzma-0.4.9"),
        };
        format!(
            "{name} level {} segments {}/{}/{} gear 1 {lib}",
            self.level, s.min, s.bits, s.max
        )
    }
}

/// Segment sizes; fixed in production, smaller in tests so that many segments stay cheap.
#[derive(Debug, Clone, Copy)]
struct Tuning {
    gzip: Sizes,
    xz: Sizes,
}

const TUNING: Tuning = Tuning {
    gzip: GZIP_SEGMENTS,
    xz: XZ_SEGMENTS,
};

/// What a finished compressor did.
#[derive(Debug, Default, Clone)]
pub struct Report {
    /// Every segment written, in file order (the index the segment cache keeps).
    pub segments: Vec<Record>,
    /// Segments copied from the previous image.
    pub reused: u64,
    /// Segments compressed now.
    pub compressed: u64,
}

/// A `Write` that compresses into `inner`; [`Compressor::finish`] flushes everything and
/// returns `inner`.
///
/// `flush` does not end a segment or wait for the workers: that would make the output depend
/// on how often a caller flushes. It only reports a pending error. Everything reaches
/// `inner` by `finish`.
pub struct Compressor<W: Write + Send + 'static> {
    engine: Engine<W>,
    bytes_in: u64,
    /// The first error, replayed by every later call.
    failed: Option<(io::ErrorKind, String)>,
}

impl<W: Write + Send + 'static> Compressor<W> {
    /// Starts a compressor writing into `inner`. Fails with `InvalidInput` for a level out of
    /// range for the method or zero threads, or with the error of starting the threads.
    pub fn new(inner: W, opts: &Options) -> io::Result<Self> {
        Compressor::with_tuning(inner, opts, TUNING, None)
    }

    /// Like [`Compressor::new`], copying segments the previous image already holds from
    /// `reuse` instead of compressing them (the output is the same bytes either way).
    pub fn with_cache(inner: W, opts: &Options, reuse: Option<Arc<Reuse>>) -> io::Result<Self> {
        Compressor::with_tuning(inner, opts, TUNING, reuse)
    }

    fn with_tuning(
        inner: W,
        opts: &Options,
        tuning: Tuning,
        reuse: Option<Arc<Reuse>>,
    ) -> io::Result<Self> {
        if opts.threads == 0 {
            return Err(invalid("compressor threads must be at least 1"));
        }
        let codec = match opts.method {
            Method::Gzip => {
                let lvl = i32::try_from(opts.level)
                    .ok()
                    .filter(|l| (1..=12).contains(l))
                    .and_then(|l| libdeflater::CompressionLvl::new(l).ok())
                    .ok_or_else(|| invalid(&format!("gzip level {} is not in 1-12", opts.level)))?;
                Codec::Gzip(lvl)
            }
            Method::Xz => {
                if opts.level > 9 {
                    return Err(invalid(&format!("xz preset {} is not in 0-9", opts.level)));
                }
                Codec::Xz(opts.level)
            }
        };
        let sizes = match opts.method {
            Method::Gzip => tuning.gzip,
            Method::Xz => tuning.xz,
        };
        let engine = Engine::new(inner, codec, sizes, opts.threads, reuse)?;
        Ok(Compressor {
            engine,
            bytes_in: 0,
            failed: None,
        })
    }

    /// Compresses what is left, waits for every segment to be written, flushes `inner` and
    /// returns it. An empty input still gives a valid, empty stream (one empty gzip member or
    /// an empty xz stream).
    pub fn finish(self) -> io::Result<W> {
        self.finish_report().map(|(w, _)| w)
    }

    /// [`Compressor::finish`], also returning what was written.
    pub fn finish_report(self) -> io::Result<(W, Report)> {
        self.replay()?;
        self.engine.finish(self.bytes_in)
    }

    /// Uncompressed bytes accepted so far.
    pub fn bytes_in(&self) -> u64 {
        self.bytes_in
    }

    /// The first error again, if there was one.
    fn replay(&self) -> io::Result<()> {
        match &self.failed {
            Some((kind, msg)) => Err(io::Error::new(*kind, msg.clone())),
            None => Ok(()),
        }
    }

    fn record<T>(&mut self, r: io::Result<T>) -> io::Result<T> {
        if let Err(e) = &r {
            if self.failed.is_none() {
                self.failed = Some((e.kind(), e.to_string()));
            }
        }
        r
    }

    /// Largest number of segments between submission and being written, ever.
    #[cfg(test)]
    fn max_in_flight(&self) -> usize {
        self.engine.shared.max_in_flight.load(Ordering::SeqCst)
    }

    /// Slots allocated so far.
    #[cfg(test)]
    fn slots_made(&self) -> usize {
        self.engine.slots_made
    }
}

impl<W: Write + Send + 'static> Write for Compressor<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.replay()?;
        let r = self.engine.write(buf);
        let n = self.record(r)?;
        self.bytes_in += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.replay()?;
        let r = self.engine.check();
        self.record(r)
    }
}

fn invalid(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg.to_string())
}

/// How a worker compresses one segment.
#[derive(Clone, Copy)]
enum Codec {
    Gzip(libdeflater::CompressionLvl),
    Xz(u32),
}

/// One segment's buffers; the pool holds a fixed number of them.
struct Slot {
    input: Vec<u8>,
    output: Vec<u8>,
    key: segcache::Key,
    crc: u32,
    reused: bool,
}

struct Job {
    seq: u64,
    slot: Slot,
}

struct Done {
    seq: u64,
    slot: Slot,
    /// `Ok` when `slot.output` holds the compressed segment.
    result: io::Result<()>,
}

/// State shared by the caller, the workers and the writer.
struct Shared {
    /// Set together with `error`; lets `write` check for failure without a lock.
    failed: AtomicBool,
    error: Mutex<Option<io::Error>>,
    /// The compressor was dropped without `finish`: stop working.
    abort: AtomicBool,
    /// Segments submitted and not yet written to `inner`.
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

impl Shared {
    fn set_error(&self, e: io::Error) {
        let mut slot = self.error.lock().unwrap_or_else(PoisonError::into_inner);
        if slot.is_none() && !self.failed.load(Ordering::SeqCst) {
            *slot = Some(e);
        }
        self.failed.store(true, Ordering::SeqCst);
    }

    /// The recorded error (once), else a generic one.
    fn take_error(&self) -> io::Error {
        let mut slot = self.error.lock().unwrap_or_else(PoisonError::into_inner);
        slot.take()
            .unwrap_or_else(|| io::Error::other("compressor threads stopped unexpectedly"))
    }
}

type WriterResult<W> = Option<(W, Report)>;

struct Engine<W: Write + Send + 'static> {
    chunker: Chunker,
    max_segment: usize,
    /// The segment being filled by `write`.
    current: Option<Slot>,
    /// Sequence number of the next segment submitted (= segments submitted so far).
    next_seq: u64,
    slots_made: usize,
    max_slots: usize,
    /// `None` once `finish` or `drop` closed the queue.
    jobs: Option<SyncSender<Job>>,
    /// Slots the writer has finished with.
    free: Receiver<Slot>,
    workers: Vec<JoinHandle<()>>,
    /// `None` once finished (then `drop` has nothing to do).
    writer: Option<JoinHandle<WriterResult<W>>>,
    shared: Arc<Shared>,
}

impl<W: Write + Send + 'static> Engine<W> {
    fn new(
        inner: W,
        codec: Codec,
        sizes: Sizes,
        threads: usize,
        reuse: Option<Arc<Reuse>>,
    ) -> io::Result<Self> {
        let max_slots = match codec {
            Codec::Gzip(_) => threads.saturating_mul(2),
            Codec::Xz(_) => threads,
        }
        .max(2);
        let shared = Arc::new(Shared {
            failed: AtomicBool::new(false),
            error: Mutex::new(None),
            abort: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
        });
        // Every channel can hold every slot, so no send ever blocks: the only wait in the
        // pipeline is the caller's for a free slot, and the workers' for a job.
        let (job_tx, job_rx) = sync_channel::<Job>(max_slots);
        let (done_tx, done_rx) = sync_channel::<Done>(max_slots);
        let (free_tx, free_rx) = sync_channel::<Slot>(max_slots);
        let job_rx = Arc::new(Mutex::new(job_rx));
        let mut workers = Vec::with_capacity(threads);
        for i in 0..threads {
            let (jobs, done) = (Arc::clone(&job_rx), done_tx.clone());
            let worker_shared = Arc::clone(&shared);
            let reuse = reuse.clone();
            let handle = thread::Builder::new()
                .name(format!("compress-{i}"))
                .spawn(move || worker(&jobs, &done, &worker_shared, codec, reuse.as_deref()));
            match handle {
                Ok(h) => workers.push(h),
                Err(e) => {
                    // Dropping the senders lets the workers already started exit.
                    shared.abort.store(true, Ordering::SeqCst);
                    return Err(e);
                }
            }
        }
        drop(done_tx);
        let writer_shared = Arc::clone(&shared);
        let writer = thread::Builder::new()
            .name("compress-writer".to_string())
            .spawn(move || writer(inner, &done_rx, &free_tx, &writer_shared));
        let writer = match writer {
            Ok(h) => h,
            Err(e) => {
                shared.abort.store(true, Ordering::SeqCst);
                return Err(e);
            }
        };
        let chunker = Chunker::new(sizes);
        Ok(Engine {
            chunker,
            max_segment: sizes.max.max(sizes.min).max(64),
            current: None,
            next_seq: 0,
            slots_made: 0,
            max_slots,
            jobs: Some(job_tx),
            free: free_rx,
            workers,
            writer: Some(writer),
            shared,
        })
    }

    /// The first error of a worker or of the writer, if any.
    fn check(&self) -> io::Result<()> {
        if self.shared.failed.load(Ordering::SeqCst) {
            Err(self.shared.take_error())
        } else {
            Ok(())
        }
    }

    /// A slot to fill: a returned one, a new one while the pool is not full, else wait.
    fn acquire(&mut self) -> io::Result<Slot> {
        let slot = match self.free.try_recv() {
            Ok(s) => s,
            Err(_) if self.slots_made < self.max_slots => {
                self.slots_made += 1;
                Slot {
                    input: Vec::with_capacity(self.max_segment.min(4 << 20)),
                    output: Vec::new(),
                    key: [0; 32],
                    crc: 0,
                    reused: false,
                }
            }
            // Fails only once the writer has stopped, after an error.
            Err(_) => self.free.recv().map_err(|_| self.shared.take_error())?,
        };
        let mut slot = slot;
        slot.input.clear();
        Ok(slot)
    }

    /// Hands the current segment to the workers.
    fn submit(&mut self) -> io::Result<()> {
        let Some(slot) = self.current.take() else {
            return Ok(());
        };
        let seq = self.next_seq;
        self.next_seq += 1;
        let n = self.shared.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.shared.max_in_flight.fetch_max(n, Ordering::SeqCst);
        let sent = match &self.jobs {
            Some(jobs) => jobs.send(Job { seq, slot }).is_ok(),
            None => false,
        };
        if sent {
            Ok(())
        } else {
            // Every worker has exited, which happens only after the writer stopped.
            Err(self.shared.take_error())
        }
    }

    fn write(&mut self, mut buf: &[u8]) -> io::Result<usize> {
        self.check()?;
        let total = buf.len();
        while !buf.is_empty() {
            let slot = match self.current.take() {
                Some(slot) => slot,
                None => self.acquire()?,
            };
            let slot = self.current.insert(slot);
            match self.chunker.cut(buf) {
                Some(n) => {
                    slot.input.extend_from_slice(&buf[..n]);
                    buf = &buf[n..];
                    self.submit()?;
                }
                None => {
                    slot.input.extend_from_slice(buf);
                    buf = &[];
                }
            }
        }
        Ok(total)
    }

    fn finish(mut self, bytes_in: u64) -> io::Result<(W, Report)> {
        self.check()?;
        if self.next_seq == 0 && self.current.is_none() {
            // Empty input: one empty member or stream, which every decoder accepts (an empty
            // file is rejected by some).
            self.current = Some(self.acquire()?);
        }
        self.submit()?;
        drop(self.jobs.take());
        for w in self.workers.drain(..) {
            // Workers catch panics per segment, so a join error is not expected.
            if w.join().is_err() {
                self.shared
                    .set_error(io::Error::other("compressor worker thread panicked"));
            }
        }
        let inner = match self.writer.take().map(JoinHandle::join) {
            Some(Ok(inner)) => inner,
            _ => {
                self.shared
                    .set_error(io::Error::other("compressor writer thread panicked"));
                None
            }
        };
        self.check()?;
        let (inner, report) = inner.ok_or_else(|| self.shared.take_error())?;
        log::debug!(
            "compressor: {bytes_in} bytes in {} segments ({} reused, {} compressed)",
            self.next_seq,
            report.reused,
            report.compressed
        );
        Ok((inner, report))
    }
}

impl<W: Write + Send + 'static> Drop for Engine<W> {
    fn drop(&mut self) {
        if self.writer.is_none() {
            return; // finished, or never started
        }
        self.shared.abort.store(true, Ordering::SeqCst);
        self.current = None;
        drop(self.jobs.take());
        // Each worker stops after at most the segment it is compressing.
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
        // The writer may be blocked in `inner.write`; detach it. It sees `abort` or the
        // closed channel at its next step and drops `inner`.
        drop(self.writer.take());
    }
}

fn worker(
    jobs: &Mutex<Receiver<Job>>,
    done: &SyncSender<Done>,
    shared: &Shared,
    codec: Codec,
    reuse: Option<&Reuse>,
) {
    let mut deflate = match codec {
        Codec::Gzip(lvl) => catch_unwind(|| libdeflater::Compressor::new(lvl)).ok(),
        Codec::Xz(_) => None,
    };
    loop {
        let job = jobs.lock().unwrap_or_else(PoisonError::into_inner).recv();
        let Ok(Job { seq, mut slot }) = job else {
            return; // queue closed: finished or dropped
        };
        if shared.abort.load(Ordering::SeqCst) {
            return;
        }
        // Every job must produce a `Done`, or the writer would wait for it for ever.
        let result = catch_unwind(AssertUnwindSafe(|| {
            slot.key = segcache::key(&slot.input);
            slot.reused =
                reuse.is_some_and(|r| r.fetch(&slot.key, slot.input.len(), &mut slot.output));
            if !slot.reused {
                match codec {
                    Codec::Gzip(_) => match deflate.as_mut() {
                        Some(c) => gzip_member(c, &slot.input, &mut slot.output)?,
                        None => {
                            return Err(io::Error::other("cannot allocate a libdeflate compressor"))
                        }
                    },
                    Codec::Xz(preset) => xz_stream(preset, &slot.input, &mut slot.output)?,
                }
            }
            slot.crc = libdeflater::crc32(&slot.output);
            Ok(())
        }))
        .unwrap_or_else(|_| Err(io::Error::other("compressor worker panicked")));
        if result.is_err() {
            deflate = None; // do not trust its state again
        }
        if done.send(Done { seq, slot, result }).is_err() {
            return; // the writer has stopped
        }
    }
}

/// Compresses `input` into `out` as one gzip member with the OS byte set to Unix.
fn gzip_member(c: &mut libdeflater::Compressor, input: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
    let bound = c.gzip_compress_bound(input.len());
    out.clear();
    out.resize(bound, 0);
    let n = c
        .gzip_compress(input, out)
        .map_err(|e| io::Error::other(format!("gzip: {e}")))?;
    out.truncate(n);
    out[GZIP_OS_OFFSET] = GZIP_OS_UNIX;
    Ok(())
}

/// Compresses `input` into `out` as one complete xz stream (preset, CRC64), the bytes
/// `xz -<preset> -T1` writes for the same input.
fn xz_stream(preset: u32, input: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
    let mut stream = Stream::new_easy_encoder(preset, Check::Crc64)?;
    out.clear();
    out.reserve(input.len() / 3 + (64 << 10));
    let mut pos = 0usize;
    loop {
        if out.capacity() - out.len() < 32 << 10 {
            out.reserve(out.len().max(1 << 20));
        }
        let before = stream.total_in();
        let status = stream.process_vec(&input[pos..], out, Action::Finish)?;
        pos += usize::try_from(stream.total_in() - before).unwrap_or(0);
        if status == Status::StreamEnd {
            return Ok(());
        }
    }
}

/// Writes segments in sequence order; returns `inner` and the report after the last one,
/// or `None` after an error (recorded in `shared`) or an abort.
fn writer<W: Write>(
    mut inner: W,
    done: &Receiver<Done>,
    free: &SyncSender<Slot>,
    shared: &Shared,
) -> WriterResult<W> {
    let mut pending: BTreeMap<u64, Done> = BTreeMap::new();
    let mut next = 0u64;
    let mut report = Report::default();
    while let Ok(d) = done.recv() {
        pending.insert(d.seq, d);
        while let Some(Done { slot, result, .. }) = pending.remove(&next) {
            if shared.abort.load(Ordering::SeqCst) {
                return None;
            }
            if let Err(e) = result.and_then(|()| inner.write_all(&slot.output)) {
                shared.set_error(e);
                return None; // dropping `free` and `done` wakes the caller and the workers
            }
            report.segments.push(Record {
                key: slot.key,
                len: slot.input.len() as u64,
                clen: slot.output.len() as u64,
                crc: slot.crc,
            });
            if slot.reused {
                report.reused += 1;
            } else {
                report.compressed += 1;
            }
            next += 1;
            shared.in_flight.fetch_sub(1, Ordering::SeqCst);
            // Never blocks (capacity = pool size); fails only if the caller is gone.
            let _ = free.send(slot);
        }
    }
    if shared.abort.load(Ordering::SeqCst) {
        return None;
    }
    if !pending.is_empty() {
        shared.set_error(io::Error::other("compressor: a segment went missing"));
        return None;
    }
    match inner.flush() {
        Ok(()) => Some((inner, report)),
        Err(e) => {
            shared.set_error(e);
            None
        }
    }
}

#[cfg(test)]
#[allow(clippy::print_stderr)]
mod tests {
    use super::*;
    use std::path::{Path, PathBuf};
    use std::process::{Command, Stdio};
    use std::sync::mpsc;
    use std::time::{Duration, Instant};

    const SMALL: Tuning = Tuning {
        gzip: Sizes {
            min: 16 << 10,
            bits: 15,
            max: 64 << 10,
        },
        xz: Sizes {
            min: 64 << 10,
            bits: 16,
            max: 256 << 10,
        },
    };

    fn gz(threads: usize) -> Options {
        Options {
            method: Method::Gzip,
            level: 6,
            threads,
        }
    }

    fn xz(threads: usize, level: u32) -> Options {
        Options {
            method: Method::Xz,
            level,
            threads,
        }
    }

    /// xorshift64*: deterministic, incompressible enough.
    fn random(seed: u64, len: usize) -> Vec<u8> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
        }
        out.truncate(len);
        out
    }

    /// Text-like data that compresses well but not trivially.
    fn text(len: usize) -> Vec<u8> {
        let words = [
            "root",
            "bin",
            "/usr/lib64",
            "xcat",
            "netboot",
            "rootimg",
            "cpio",
            " ",
            "\n",
        ];
        let mut out = Vec::with_capacity(len + 32);
        let mut i = 0usize;
        while out.len() < len {
            out.extend_from_slice(words[(i * 7 + i / 13) % words.len()].as_bytes());
            if i.is_multiple_of(11) {
                out.extend_from_slice(format!("{i}").as_bytes());
            }
            i += 1;
        }
        out.truncate(len);
        out
    }

    fn compress_with(data: &[u8], opts: &Options, tuning: Tuning, chunk: usize) -> Vec<u8> {
        let mut c = Compressor::with_tuning(Vec::new(), opts, tuning, None).unwrap();
        for piece in data.chunks(chunk.max(1)) {
            c.write_all(piece).unwrap();
        }
        assert_eq!(c.bytes_in(), data.len() as u64);
        c.finish().unwrap()
    }

    /// Where the segments of `data` end, by the chunker alone.
    fn segment_ends(data: &[u8], sizes: Sizes) -> Vec<usize> {
        let mut c = Chunker::new(sizes);
        let mut ends = Vec::new();
        let mut pos = 0;
        while let Some(n) = c.cut(&data[pos..]) {
            pos += n;
            ends.push(pos);
        }
        if pos < data.len() || data.is_empty() {
            ends.push(data.len());
        }
        ends
    }

    fn compress(data: &[u8], opts: &Options) -> Vec<u8> {
        compress_with(data, opts, TUNING, 1 << 20)
    }

    /// What one block must become: libdeflate's member with OS = Unix.
    fn reference_member(block: &[u8]) -> Vec<u8> {
        let mut c = libdeflater::Compressor::new(libdeflater::CompressionLvl::new(6).unwrap());
        let mut out = vec![0; c.gzip_compress_bound(block.len())];
        let n = c.gzip_compress(block, &mut out).unwrap();
        out.truncate(n);
        out[9] = 3;
        out
    }

    fn reference_members(data: &[u8], ends: &[usize]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut start = 0;
        for &end in ends {
            out.extend(reference_member(&data[start..end]));
            start = end;
        }
        assert_eq!(start, data.len());
        out
    }

    fn have(tool: &str) -> bool {
        std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
    }

    fn temp() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }

    /// Runs `argv` + `file` and returns its stdout; panics unless it succeeds.
    fn run(argv: &[&str], file: &Path) -> Vec<u8> {
        let out = Command::new(argv[0])
            .args(&argv[1..])
            .arg(file)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{argv:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    fn gzip_decoders() -> Vec<Vec<&'static str>> {
        let mut d = vec![vec!["gzip", "-cd"], vec!["zcat"]];
        if have("pigz") {
            d.push(vec!["pigz", "-dc"]);
        } else {
            eprintln!("pigz not installed; skipped");
        }
        if have("busybox") {
            d.push(vec!["busybox", "gunzip", "-c"]);
        } else {
            eprintln!("busybox not installed; skipped");
        }
        d
    }

    fn check_gzip_tools(dir: &Path, name: &str, compressed: &[u8], data: &[u8]) {
        let file = dir.join(format!("{name}.gz"));
        std::fs::write(&file, compressed).unwrap();
        for argv in gzip_decoders() {
            let got = run(&argv, &file);
            assert!(
                got == data,
                "{argv:?} on {name}: {} bytes back, {} expected",
                got.len(),
                data.len()
            );
        }
        run(&["gzip", "-t"], &file);
    }

    fn check_xz_tools(dir: &Path, name: &str, compressed: &[u8], data: &[u8]) {
        let file = dir.join(format!("{name}.xz"));
        std::fs::write(&file, compressed).unwrap();
        let got = run(&["xz", "-dc"], &file);
        assert!(
            got == data,
            "xz -dc on {name}: {} bytes back, {} expected",
            got.len(),
            data.len()
        );
        run(&["xz", "-t"], &file);
        if have("busybox") {
            assert!(
                run(&["busybox", "xz", "-dc"], &file) == data,
                "busybox xz -dc on {name}"
            );
        }
        // The check must be CRC64, as `xz` writes it (MtStreamBuilder defaults to none).
        let list = String::from_utf8(run(&["xz", "--robot", "--list"], &file)).unwrap();
        let totals = list.lines().find(|l| l.starts_with("totals")).unwrap();
        assert!(totals.split('\t').any(|f| f == "CRC64"), "{name}: {totals}");
    }

    #[test]
    fn gzip_header_is_unix_no_name_no_mtime() {
        let out = compress(b"x", &gz(2));
        assert_eq!(&out[..10], &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3]);
        assert_eq!(&out[out.len() - 4..], &1u32.to_le_bytes());
        assert_eq!(out, reference_member(b"x"));
    }

    #[test]
    fn gzip_round_trips_through_tools() {
        let dir = temp();
        let block = GZIP_SEGMENTS.max;
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("empty", Vec::new()),
            ("one-byte", vec![0x42]),
            ("one-block-random", random(1, block)),
            ("one-block-text", text(block)),
            ("many-blocks-random", random(2, 3 * block + 12345)),
            ("many-blocks-text", text(4 * block + 1)),
            ("zeros", vec![0; 2 * block + 7]),
        ];
        for (name, data) in &cases {
            let out = compress(data, &gz(2));
            let ends = segment_ends(data, GZIP_SEGMENTS);
            assert!(
                out == reference_members(data, &ends),
                "{name}: unexpected member layout"
            );
            check_gzip_tools(dir.path(), name, &out, data);
        }
        // Highly compressible input really is compressed.
        let zeros = &cases[6].1;
        assert!(compress(zeros, &gz(2)).len() < zeros.len() / 100);
    }

    #[test]
    fn gzip_small_segments_through_tools_and_resync() {
        let dir = temp();
        let data = [random(3, 300_000), text(500_000), random(4, 77)].concat();
        let out = compress_with(&data, &gz(3), SMALL, 9_999);
        let ends = segment_ends(&data, SMALL.gzip);
        assert!(ends.len() > 10, "{ends:?}");
        assert!(out == reference_members(&data, &ends));
        check_gzip_tools(dir.path(), "small-segments", &out, &data);
        // A change in the middle: the members before it and most after it stay the same.
        let mut changed = data.clone();
        changed.splice(400_000..400_003, b"a changed file".iter().copied());
        let out2 = compress_with(&changed, &gz(3), SMALL, 4096);
        check_gzip_tools(dir.path(), "changed", &out2, &changed);
        let members = |d: &[u8], e: &[usize]| -> Vec<Vec<u8>> {
            let mut s = 0;
            e.iter()
                .map(|&x| {
                    let m = reference_member(&d[s..x]);
                    s = x;
                    m
                })
                .collect()
        };
        let a = members(&data, &ends);
        let b = members(&changed, &segment_ends(&changed, SMALL.gzip));
        let differ = b.iter().filter(|m| !a.contains(m)).count();
        assert!(differ <= 3, "{differ} of {} members changed", b.len());
    }

    #[test]
    fn gzip_is_deterministic() {
        let data = [text(700_000), random(5, 400_000), text(300_000)].concat();
        let reference = compress_with(&data, &gz(1), SMALL, 1 << 20);
        for threads in [1, 2, 4] {
            for chunk in [1, 7, 4096, 65_536, 1 << 20] {
                if chunk == 1 && threads != 2 {
                    continue; // a million one-byte writes once is enough
                }
                let out = compress_with(&data, &gz(threads), SMALL, chunk);
                assert!(out == reference, "threads {threads}, chunk {chunk}");
            }
        }
        // Default block size too.
        let big = [text(3 << 20), random(6, 2 << 20)].concat();
        let one = compress(&big, &gz(1));
        assert!(compress(&big, &gz(2)) == one);
        assert!(compress(&big, &gz(4)) == one);
    }

    #[test]
    fn flush_never_cuts() {
        let data = text((3 << 20) + 5);
        let plain = compress(&data, &gz(2));
        let mut c = Compressor::new(Vec::new(), &gz(2)).unwrap();
        c.flush().unwrap();
        c.write_all(&data[..1000]).unwrap();
        c.flush().unwrap();
        c.write_all(&data[1000..]).unwrap();
        c.flush().unwrap();
        assert!(c.finish().unwrap() == plain);
    }

    #[test]
    fn tar_stream_lists_with_tar() {
        let dir = temp();
        let src = dir.path().join("tree");
        std::fs::create_dir_all(src.join("etc/sub")).unwrap();
        std::fs::write(src.join("etc/hosts"), b"127.0.0.1 localhost\n").unwrap();
        std::fs::write(src.join("etc/sub/big"), random(7, 300_000)).unwrap();
        std::fs::write(src.join("readme"), text(100_000)).unwrap();
        let tar = Command::new("tar")
            .args(["-cf", "-", "-C"])
            .arg(&src)
            .arg(".")
            .output()
            .unwrap();
        assert!(tar.status.success());
        let tarball = dir.path().join("plain.tar");
        std::fs::write(&tarball, &tar.stdout).unwrap();
        let expected = run(&["tar", "-tf"], &tarball);
        assert!(String::from_utf8_lossy(&expected).contains("./etc/sub/big"));

        let gz_file = dir.path().join("t.tar.gz");
        std::fs::write(&gz_file, compress_with(&tar.stdout, &gz(2), SMALL, 512)).unwrap();
        assert_eq!(run(&["tar", "-tzf"], &gz_file), expected);
        let xz_file = dir.path().join("t.tar.xz");
        std::fs::write(&xz_file, compress_with(&tar.stdout, &xz(2, 1), SMALL, 512)).unwrap();
        assert_eq!(run(&["tar", "-tJf"], &xz_file), expected);
    }

    #[test]
    fn xz_round_trips_through_tools() {
        let dir = temp();
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("empty", Vec::new()),
            ("one-byte", vec![0x42]),
            ("random", random(8, 700_000)),
            ("text", text(1_500_000)),
        ];
        for (name, data) in &cases {
            for threads in [1, 2] {
                // Preset 6 with the default segments: one stream for inputs this small.
                let out = compress_with(data, &xz(threads, 6), TUNING, 100_000);
                check_xz_tools(dir.path(), &format!("{name}-t{threads}"), &out, data);
            }
        }
        // Several streams encoded in parallel (preset 0, small segments).
        let data = [text(600_000), random(9, 500_000), text(300_000)].concat();
        let out = compress_with(&data, &xz(3, 0), SMALL, 65_536);
        check_xz_tools(dir.path(), "multi-block", &out, &data);
        let list = String::from_utf8(run(
            &["xz", "--robot", "--list"],
            &dir.path().join("multi-block.xz"),
        ))
        .unwrap();
        let streams: usize = list
            .lines()
            .find(|l| l.starts_with("totals"))
            .unwrap()
            .split('\t')
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(streams, segment_ends(&data, SMALL.xz).len(), "{list}");
        assert!(streams >= 5, "{list}");
    }

    #[test]
    fn xz_bytes_are_one_xz_encoder_stream_per_segment() {
        let data = [text(400_000), random(10, 300_000)].concat();
        let mut expected = Vec::new();
        let mut start = 0;
        for end in segment_ends(&data, SMALL.xz) {
            let stream = Stream::new_easy_encoder(6, Check::Crc64).unwrap();
            let mut enc = liblzma::write::XzEncoder::new_stream(Vec::new(), stream);
            enc.write_all(&data[start..end]).unwrap();
            expected.extend(enc.finish().unwrap());
            start = end;
        }
        for threads in [1, 2] {
            assert!(
                compress_with(&data, &xz(threads, 6), SMALL, 10_000) == expected,
                "threads {threads}"
            );
        }
    }

    #[test]
    fn invalid_options_are_rejected() {
        for opts in [
            Options { level: 0, ..gz(1) },
            Options { level: 13, ..gz(1) },
            Options {
                threads: 0,
                ..gz(1)
            },
            Options {
                level: 10,
                ..xz(1, 6)
            },
            Options {
                threads: 0,
                ..xz(1, 6)
            },
        ] {
            let err = Compressor::new(Vec::new(), &opts).err().unwrap();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{opts:?}");
        }
        let o = Options::new(Method::Xz);
        assert_eq!((o.level, o.method), (6, Method::Xz));
        assert!(o.threads >= 1);
        for level in [1, 12] {
            let out = compress(b"hello hello hello", &Options { level, ..gz(1) });
            assert!(out.len() > 18);
        }
    }

    #[test]
    fn compressor_is_send() {
        fn assert_send<T: Send>() {}
        assert_send::<Compressor<Vec<u8>>>();
        assert_send::<Compressor<std::fs::File>>();
    }

    /// Accepts `limit` bytes, then fails; optionally fails on flush instead.
    #[derive(Debug)]
    struct Failing {
        written: usize,
        limit: usize,
        fail_flush: bool,
    }

    impl Write for Failing {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.written >= self.limit {
                return Err(io::Error::new(
                    io::ErrorKind::StorageFull,
                    "disk full (test)",
                ));
            }
            let n = buf.len().min(self.limit - self.written);
            self.written += n;
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            if self.fail_flush {
                Err(io::Error::other("flush failed (test)"))
            } else {
                Ok(())
            }
        }
    }

    fn failing(limit: usize) -> Failing {
        Failing {
            written: 0,
            limit,
            fail_flush: false,
        }
    }

    /// Writes `data` in 64 KiB pieces; returns where the first error came from.
    fn feed_until_error(mut c: Compressor<Failing>, data: &[u8]) -> (&'static str, io::Error) {
        for piece in data.chunks(65_536) {
            if let Err(e) = c.write_all(piece) {
                // Sticky: everything after fails the same way.
                let again = c.write(b"more").unwrap_err();
                assert_eq!((again.kind(), again.to_string()), (e.kind(), e.to_string()));
                assert!(c.flush().is_err());
                assert!(c.finish().is_err());
                return ("write", e);
            }
        }
        ("finish", c.finish().unwrap_err())
    }

    #[test]
    fn inner_errors_surface() {
        let data = random(11, 4 << 20);
        // gzip, many blocks: the error comes back from a later write.
        let c = Compressor::with_tuning(failing(100_000), &gz(2), SMALL, None).unwrap();
        let (from, e) = feed_until_error(c, &data);
        assert_eq!(
            (from, e.kind()),
            ("write", io::ErrorKind::StorageFull),
            "{e}"
        );
        // gzip, everything in one block: from finish.
        let c = Compressor::new(failing(1000), &gz(2)).unwrap();
        let (from, e) = feed_until_error(c, &data[..100_000]);
        assert_eq!(
            (from, e.kind()),
            ("finish", io::ErrorKind::StorageFull),
            "{e}"
        );
        // A failing flush of `inner` fails finish.
        let mut c = Compressor::new(
            Failing {
                fail_flush: true,
                ..failing(usize::MAX)
            },
            &gz(1),
        )
        .unwrap();
        c.write_all(b"abc").unwrap();
        assert!(c.finish().unwrap_err().to_string().contains("flush failed"));
        // xz: from write, and from finish.
        for threads in [1, 2] {
            let c = Compressor::with_tuning(failing(1000), &xz(threads, 0), SMALL, None).unwrap();
            let (from, e) = feed_until_error(c, &data);
            assert_eq!(
                (from, e.kind()),
                ("write", io::ErrorKind::StorageFull),
                "{e}"
            );
            // Nothing is written before the end, so the stream header fails in finish.
            let c = Compressor::new(failing(0), &xz(threads, 6)).unwrap();
            let (from, e) = feed_until_error(c, &[]);
            assert_eq!(
                (from, e.kind()),
                ("finish", io::ErrorKind::StorageFull),
                "{e}"
            );
        }
    }

    /// A sink whose writes never return (until the test process exits).
    struct Stuck;

    impl Write for Stuck {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            loop {
                thread::sleep(Duration::from_secs(3600));
            }
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// Runs `f` on a thread and fails the test if it takes longer than 30 s.
    fn within_timeout(what: &str, f: impl FnOnce() + Send + 'static) {
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            f();
            let _ = tx.send(());
        });
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(()) => {}
            Err(e) => panic!("{what}: did not return ({e:?})"),
        }
    }

    #[test]
    fn dropping_without_finish_does_not_hang() {
        let data = Arc::new(random(12, 3 << 20));
        let d = Arc::clone(&data);
        within_timeout("gzip, Vec sink", move || {
            let mut c = Compressor::with_tuning(Vec::new(), &gz(2), SMALL, None).unwrap();
            c.write_all(&d).unwrap();
            drop(c);
        });
        let d = Arc::clone(&data);
        within_timeout("gzip, stuck sink", move || {
            let mut c = Compressor::with_tuning(Stuck, &gz(2), SMALL, None).unwrap();
            // The writer is stuck on the first member, so writes stop once 2 × threads
            // segments exist; write less than that (segments are at least 16 KiB here).
            c.write_all(&d[..2 * (16 << 10)]).unwrap();
            thread::sleep(Duration::from_millis(50));
            drop(c);
        });
        let d = Arc::clone(&data);
        within_timeout("gzip, after an error", move || {
            let mut c = Compressor::with_tuning(failing(10), &gz(2), SMALL, None).unwrap();
            let _ = c.write_all(&d);
            drop(c);
        });
        within_timeout("gzip, nothing written", || {
            drop(Compressor::new(Vec::new(), &gz(4)).unwrap())
        });
        for threads in [1, 2] {
            let d = Arc::clone(&data);
            within_timeout("xz", move || {
                let mut c = Compressor::new(Vec::new(), &xz(threads, 6)).unwrap();
                c.write_all(&d).unwrap();
                let start = Instant::now();
                drop(c);
                eprintln!("xz drop with {threads} threads took {:?}", start.elapsed());
            });
        }
    }

    /// Counts bytes and sleeps on every write.
    struct Slow {
        bytes: Arc<AtomicUsize>,
        writes: Arc<AtomicUsize>,
        delay: Duration,
    }

    impl Write for Slow {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            thread::sleep(self.delay);
            self.bytes.fetch_add(buf.len(), Ordering::SeqCst);
            self.writes.fetch_add(1, Ordering::SeqCst);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn memory_stays_bounded_with_a_slow_sink() {
        let threads = 2;
        let bound = 2 * threads;
        let (bytes, writes) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let sink = Slow {
            bytes: Arc::clone(&bytes),
            writes: Arc::clone(&writes),
            delay: Duration::from_millis(20),
        };
        let mut c = Compressor::new(sink, &gz(threads)).unwrap();
        let piece = text(1 << 20);
        let total = 200usize << 20;
        let mut max_seen = 0;
        for _ in 0..total / piece.len() {
            c.write_all(&piece).unwrap();
            max_seen = max_seen.max(c.max_in_flight());
            assert!(c.slots_made() <= bound);
        }
        assert_eq!(c.bytes_in(), total as u64);
        let max = c.max_in_flight();
        assert!(max <= bound, "{max} blocks in flight, bound {bound}");
        // The sink is the bottleneck, so the bound was actually reached.
        assert_eq!(max, bound);
        c.finish().unwrap();
        assert!(writes.load(Ordering::SeqCst) >= 40);
        assert!(bytes.load(Ordering::SeqCst) > 0);
        eprintln!(
            "max in flight {max_seen} (bound {bound}), {} members",
            writes.load(Ordering::SeqCst)
        );
    }

    // -----------------------------------------------------------------------------------
    // Measurement: cargo test --release --lib pack::compress -- --ignored --nocapture

    /// About `limit` bytes of real file contents from /usr/lib and /usr/share (read only),
    /// in sorted path order, with the offset where each file ends.
    fn sample(limit: usize) -> (Vec<u8>, Vec<usize>) {
        let mut data = Vec::with_capacity(limit + (16 << 20));
        let mut ends = Vec::new();
        for root in ["/usr/lib", "/usr/share"] {
            let walk = walkdir::WalkDir::new(root)
                .follow_links(false)
                .sort_by_file_name();
            for entry in walk.into_iter().filter_map(Result::ok) {
                if data.len() >= limit {
                    return (data, ends);
                }
                if !entry.file_type().is_file()
                    || entry.metadata().map_or(true, |m| m.len() > 16 << 20)
                {
                    continue;
                }
                if let Ok(bytes) = std::fs::read(entry.path()) {
                    data.extend_from_slice(&bytes);
                    ends.push(data.len());
                }
            }
        }
        (data, ends)
    }

    /// User + system CPU seconds of this process and its waited-for children.
    fn cpu_seconds() -> (f64, f64) {
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
        let fields: Vec<f64> = stat
            .rsplit_once(')')
            .unwrap()
            .1
            .split_whitespace()
            .map(|f| f.parse().unwrap_or(0.0))
            .collect();
        // Fields 14-17 of stat (utime stime cutime cstime), counted after the `)`; USER_HZ is 100.
        (
            (fields[11] + fields[12]) / 100.0,
            (fields[13] + fields[14]) / 100.0,
        )
    }

    /// CPU seconds all processes on the machine spent busy so far (/proc/stat, USER_HZ 100).
    fn machine_busy() -> f64 {
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let line = stat.lines().next().unwrap_or_default();
        let f: Vec<f64> = line
            .split_whitespace()
            .skip(1)
            .map(|x| x.parse().unwrap_or(0.0))
            .collect();
        // user nice system idle iowait irq softirq steal: all but idle and iowait.
        let busy: f64 = f
            .iter()
            .take(8)
            .enumerate()
            .filter(|(i, _)| *i != 3 && *i != 4)
            .map(|(_, v)| v)
            .sum();
        busy / 100.0
    }

    /// `others` is the CPU time the rest of the machine used meanwhile: wall times are only
    /// meaningful when it is near zero.
    fn report(what: &str, input: usize, output: u64, wall: Duration, cpu: f64, others: f64) {
        let mib = input as f64 / (1 << 20) as f64;
        eprintln!(
            "{what:<44} {output:>11} B  ratio {:.4}  wall {:>6.2} s  {:>6.1} MiB/s  cpu {:>6.2} s  {:>5.1} MiB/cpu-s  others {:>6.2} cpu-s",
            output as f64 / input as f64,
            wall.as_secs_f64(),
            mib / wall.as_secs_f64(),
            cpu,
            mib / cpu,
            others.max(0.0),
        );
    }

    fn ours(dir: &Path, name: &str, data: &[u8], opts: &Options, tuning: Tuning) -> PathBuf {
        let path = dir.join(name);
        let file = std::fs::File::create(&path).unwrap();
        let (cpu0, _) = cpu_seconds();
        let busy0 = machine_busy();
        let start = Instant::now();
        let mut c = Compressor::with_tuning(
            io::BufWriter::with_capacity(1 << 20, file),
            opts,
            tuning,
            None,
        )
        .unwrap();
        c.write_all(data).unwrap();
        c.finish().unwrap().into_inner().unwrap().sync_data().ok();
        let wall = start.elapsed();
        let (cpu1, _) = cpu_seconds();
        let others = machine_busy() - busy0 - (cpu1 - cpu0);
        let len = std::fs::metadata(&path).unwrap().len();
        let s = match opts.method {
            Method::Gzip => tuning.gzip,
            Method::Xz => tuning.xz,
        };
        let label = format!(
            "ours {name} t{} segments {}-{} KiB",
            opts.threads,
            s.min >> 10,
            s.max >> 10
        );
        report(&label, data.len(), len, wall, cpu1 - cpu0, others);
        path
    }

    fn tool(dir: &Path, argv: &[&str], input: &Path, data_len: usize) -> PathBuf {
        let path = dir.join(argv.join("_").replace(['-', ' '], ""));
        let out = std::fs::File::create(&path).unwrap();
        let (_, c0) = cpu_seconds();
        let busy0 = machine_busy();
        let start = Instant::now();
        let status = Command::new(argv[0])
            .args(&argv[1..])
            .arg(input)
            .stdout(out)
            .status()
            .unwrap();
        let wall = start.elapsed();
        let (_, c1) = cpu_seconds();
        let others = machine_busy() - busy0 - (c1 - c0);
        assert!(status.success(), "{argv:?}");
        report(
            &argv.join(" "),
            data_len,
            std::fs::metadata(&path).unwrap().len(),
            wall,
            c1 - c0,
            others,
        );
        path
    }

    /// The sample, written to a file for the command-line tools.
    fn measurement_input(dir: &Path) -> (Vec<u8>, Vec<usize>, PathBuf) {
        let (data, ends) = sample(300 << 20);
        let input = dir.join("sample");
        std::fs::write(&input, &data).unwrap();
        eprintln!(
            "input: {} bytes ({:.1} MiB) from {} files of /usr/lib, /usr/share; {} cores",
            data.len(),
            data.len() as f64 / (1 << 20) as f64,
            ends.len(),
            thread::available_parallelism().map_or(1, |n| n.get())
        );
        (data, ends, input)
    }

    #[test]
    #[ignore = "measurement: ~300 MiB, about a minute; run with --release --ignored --nocapture"]
    fn measure_gzip() {
        let dir = temp();
        let (data, _, input) = measurement_input(dir.path());
        let mut files = Vec::new();
        for threads in [1, 2] {
            let name = format!("gzip-t{threads}");
            files.push(ours(dir.path(), &name, &data, &gz(threads), TUNING));
        }
        let one = std::fs::read(&files[0]).unwrap();
        assert!(
            std::fs::read(&files[1]).unwrap() == one,
            "threads 1 and 2 differ"
        );
        tool(
            dir.path(),
            &["pigz", "-6", "-p", "2", "-c"],
            &input,
            data.len(),
        );
        tool(dir.path(), &["gzip", "-6", "-c"], &input, data.len());
        for f in &files {
            assert!(run(&["gzip", "-cd"], f) == data);
        }
    }

    #[test]
    #[ignore = "measurement: ~300 MiB, about 8 minutes; run with --release --ignored --nocapture"]
    fn measure_xz() {
        let dir = temp();
        let (data, _, input) = measurement_input(dir.path());
        let ours_t2 = ours(dir.path(), "xz-t2", &data, &xz(2, 6), TUNING);
        tool(dir.path(), &["xz", "-6", "-T1", "-c"], &input, data.len());
        assert!(run(&["xz", "-dc"], &ours_t2) == data);
    }
}
