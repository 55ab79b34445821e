//! The streaming bundle writer: archive members go straight from their source files into one
//! gzip-compressed POSIX tar, with no staging copy.
//!
//! The output is what `tar zxf` (and so xCAT's imgimport) reads: a tar stream written by
//! [`TarWriter`], compressed as a series of gzip members (RFC 1952 allows any number; `gzip
//! -d`, `zcat` and GNU tar read them as one stream). Members whose content is already
//! compressed (a `rootimg.cpio.gz`, an initrd, a squashfs) are not deflated again: they go
//! into *stored* gzip members (deflate block type 0: the bytes as they are, with their CRC32),
//! everything else through the block-parallel [`Compressor`] at the requested level. The
//! writer switches between the two at member boundaries; each switch ends one run of gzip
//! members and starts the next, so the file stays a valid gzip stream throughout.
//!
//! Optionally every regular member's content and the finished bundle itself are hashed with
//! SHA-256 as they stream by, for the `--checksum` sidecar.
//!
//! It knows nothing of hosts, tables or xCAT's manifest: it gets [`Entry`] values, readers
//! and a flag saying whether to store; the caller decides names, order and what counts as
//! compressed (see [`looks_compressed`]).

use super::sha256::Sha256;
use crate::pack::compress::{self, Compressor};
use crate::pack::entry::{ArchiveWriter, Entry};
use crate::pack::tar::TarWriter;
use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::rc::Rc;

/// Largest stored deflate block (its length field is 16 bits).
const STORED_BLOCK: usize = 65535;

/// Gzip header of a stored member: no name, MTIME 0, XFL 0, OS 3 (Unix), as libdeflate's
/// members get from the compressor.
const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3];

/// Whether the first bytes of a file say that its content is already compressed: gzip, xz,
/// zstd, bzip2, lz4 frames and squashfs images (whose blocks are compressed).
pub fn looks_compressed(head: &[u8]) -> bool {
    const MAGICS: &[&[u8]] = &[
        &[0x1f, 0x8b],                         // gzip
        &[0xfd, b'7', b'z', b'X', b'Z', 0x00], // xz
        &[0x28, 0xb5, 0x2f, 0xfd],             // zstd
        b"BZh",                                // bzip2
        &[0x04, 0x22, 0x4d, 0x18],             // lz4 frame
        b"hsqs",                               // squashfs (little-endian superblock)
    ];
    MAGICS.iter().any(|m| head.starts_with(m))
}

/// How the bundle is compressed and what is hashed.
#[derive(Debug, Clone)]
pub struct Options {
    /// Gzip level (libdeflate 1-12) for members that are not stored.
    pub level: u32,
    /// Compressor threads.
    pub threads: usize,
    /// Hash every regular member and the whole output with SHA-256.
    pub checksums: bool,
}

impl Default for Options {
    /// Level 6 (gzip's default, what stock's `tar czf` uses), one thread per core, no hashes.
    fn default() -> Self {
        let c = compress::Options::new(compress::Method::Gzip);
        Options {
            level: c.level,
            threads: c.threads,
            checksums: false,
        }
    }
}

/// What the writer produced besides the bytes.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// Uncompressed tar bytes (headers, data, padding).
    pub tar_bytes: u64,
    /// Of those, bytes that went into stored gzip members.
    pub stored_bytes: u64,
    /// Bytes written to the output.
    pub output_bytes: u64,
    /// SHA-256 of the output, with [`Options::checksums`].
    pub output_sha256: Option<[u8; 32]>,
    /// Member name (as `tar -t` lists it, without the leading `./`) and SHA-256 of its content,
    /// for every regular member in archive order, with [`Options::checksums`].
    pub members: Vec<(Vec<u8>, [u8; 32])>,
}

/// Writes a bundle into `W`; [`BundleWriter::finish`] ends the archive and returns `W`.
///
/// After an error the output is unusable; drop the writer (and discard what it wrote).
pub struct BundleWriter<W: Write + Send + 'static> {
    tar: TarWriter<SinkHandle<W>>,
    sink: Rc<RefCell<Sink<W>>>,
    checksums: bool,
    members: Vec<(Vec<u8>, [u8; 32])>,
}

impl<W: Write + Send + 'static> BundleWriter<W> {
    /// A writer into `inner`. Nothing is written before the first member.
    pub fn new(inner: W, opts: &Options) -> io::Result<Self> {
        // Check the level now rather than at the first deflated member.
        if !(1..=12).contains(&opts.level) || opts.threads == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "gzip level {} / {} threads cannot be used",
                    opts.level, opts.threads
                ),
            ));
        }
        let out = Counted {
            inner,
            bytes: 0,
            sha: opts.checksums.then(Sha256::new),
        };
        let sink = Rc::new(RefCell::new(Sink {
            stage: Stage::Idle(out),
            level: opts.level,
            threads: opts.threads,
            tar_bytes: 0,
            stored_bytes: 0,
            store_next: false,
        }));
        Ok(BundleWriter {
            tar: TarWriter::new(SinkHandle(Rc::clone(&sink))),
            sink,
            checksums: opts.checksums,
            members: Vec::new(),
        })
    }

    /// Appends one member. `data` must yield exactly `entry.size()` bytes for a regular file
    /// (and is not read otherwise); `store` puts the member into stored gzip members instead
    /// of deflating it.
    pub fn append(&mut self, entry: &Entry, data: &mut dyn Read, store: bool) -> io::Result<()> {
        self.sink.borrow_mut().want(store)?;
        if self.checksums && self.tar.carries_data(entry) {
            let mut hashing = Hashing {
                inner: data,
                sha: Sha256::new(),
            };
            self.tar.append(entry, &mut hashing)?;
            self.members
                .push((entry.path.clone(), hashing.sha.finish()));
        } else {
            self.tar.append(entry, data)?;
        }
        Ok(())
    }

    /// Uncompressed tar bytes written so far.
    pub fn tar_bytes(&self) -> u64 {
        self.sink.borrow().tar_bytes
    }

    /// Writes the end of the archive, ends the last gzip member and returns `inner` (flushed)
    /// with what was written.
    pub fn finish(mut self) -> io::Result<(W, Summary)> {
        self.sink.borrow_mut().want(false)?;
        self.tar.finish_archive()?;
        drop(self.tar);
        let sink = Rc::try_unwrap(self.sink)
            .map_err(|_| io::Error::other("bundle writer still shared"))?
            .into_inner();
        let (tar_bytes, stored_bytes) = (sink.tar_bytes, sink.stored_bytes);
        let mut out = sink.stage.end()?;
        out.inner.flush()?;
        Ok((
            out.inner,
            Summary {
                tar_bytes,
                stored_bytes,
                output_bytes: out.bytes,
                output_sha256: out.sha.map(Sha256::finish),
                members: self.members,
            },
        ))
    }
}

/// A reader that hashes what it yields.
struct Hashing<'a> {
    inner: &'a mut dyn Read,
    sha: Sha256,
}

impl Read for Hashing<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.sha.update(&buf[..n]);
        Ok(n)
    }
}

/// The output: counts and (optionally) hashes every byte on its way to `inner`. It travels
/// between the stages (and into the compressor's writer thread, where it is used alone).
struct Counted<W> {
    inner: W,
    bytes: u64,
    sha: Option<Sha256>,
}

impl<W: Write> Write for Counted<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes += n as u64;
        if let Some(sha) = &mut self.sha {
            sha.update(&buf[..n]);
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Which kind of gzip members the tar bytes are going into.
enum Stage<W: Write + Send + 'static> {
    /// Between runs: the output, waiting for the next run.
    Idle(Counted<W>),
    /// Deflating with the block-parallel compressor.
    Deflate(Compressor<Counted<W>>),
    /// Storing.
    Store(Stored<Counted<W>>),
    /// After an error while switching: nothing more can be written.
    Broken,
}

impl<W: Write + Send + 'static> Stage<W> {
    /// Ends the current run and gives the output back.
    fn end(self) -> io::Result<Counted<W>> {
        match self {
            Stage::Idle(out) => Ok(out),
            Stage::Deflate(c) => c.finish(),
            Stage::Store(s) => s.finish(),
            Stage::Broken => Err(io::Error::other(
                "the bundle output is unusable after an earlier error",
            )),
        }
    }
}

struct Sink<W: Write + Send + 'static> {
    stage: Stage<W>,
    level: u32,
    threads: usize,
    tar_bytes: u64,
    stored_bytes: u64,
    /// Whether the next run, once it starts, stores.
    store_next: bool,
}

impl<W: Write + Send + 'static> Sink<W> {
    /// Makes the next bytes go into stored (`true`) or deflated members; ends the current
    /// run when it is of the other kind. The new run starts lazily, at the first byte.
    fn want(&mut self, store: bool) -> io::Result<()> {
        let switch = match &self.stage {
            Stage::Deflate(_) => store,
            Stage::Store(_) => !store,
            Stage::Idle(_) => false,
            Stage::Broken => true,
        };
        if switch {
            let stage = std::mem::replace(&mut self.stage, Stage::Broken);
            self.stage = Stage::Idle(stage.end()?);
        }
        self.store_next = store;
        Ok(())
    }
}

/// A `Write` handle shared by the tar writer and the bundle writer, which switches stages
/// between members.
struct SinkHandle<W: Write + Send + 'static>(Rc<RefCell<Sink<W>>>);

impl<W: Write + Send + 'static> Write for SinkHandle<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut sink = self.0.borrow_mut();
        let sink = &mut *sink;
        if let Stage::Idle(_) = sink.stage {
            let Stage::Idle(out) = std::mem::replace(&mut sink.stage, Stage::Broken) else {
                return Err(io::Error::other("bundle output lost"));
            };
            sink.stage = if sink.store_next {
                Stage::Store(Stored::new(out))
            } else {
                let opts = compress::Options {
                    method: compress::Method::Gzip,
                    level: sink.level,
                    threads: sink.threads,
                };
                Stage::Deflate(Compressor::new(out, &opts)?)
            };
        }
        let n = match &mut sink.stage {
            Stage::Deflate(c) => c.write(buf)?,
            Stage::Store(s) => {
                let n = s.write(buf)?;
                sink.stored_bytes += n as u64;
                n
            }
            Stage::Idle(_) | Stage::Broken => {
                return Err(io::Error::other(
                    "the bundle output is unusable after an earlier error",
                ))
            }
        };
        sink.tar_bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.0.borrow_mut().stage {
            Stage::Deflate(c) => c.flush(),
            Stage::Store(s) => s.inner.flush(),
            Stage::Idle(out) => out.flush(),
            Stage::Broken => Err(io::Error::other(
                "the bundle output is unusable after an earlier error",
            )),
        }
    }
}

/// One stored gzip member: the bytes in deflate blocks of type 0, then CRC32 and length.
/// Nothing at all is written when no byte was.
struct Stored<W: Write> {
    inner: W,
    buf: Vec<u8>,
    crc: libdeflater::Crc,
    len: u64,
    started: bool,
}

impl<W: Write> Stored<W> {
    fn new(inner: W) -> Stored<W> {
        Stored {
            inner,
            buf: Vec::with_capacity(STORED_BLOCK),
            crc: libdeflater::Crc::new(),
            len: 0,
            started: false,
        }
    }

    /// Writes the buffered bytes as one stored block.
    fn block(&mut self, last: bool) -> io::Result<()> {
        if !self.started {
            self.inner.write_all(&GZIP_HEADER)?;
            self.started = true;
        }
        let n = u16::try_from(self.buf.len())
            .map_err(|_| io::Error::other("stored deflate block too long"))?;
        let mut head = [0u8; 5];
        head[0] = u8::from(last); // BFINAL, BTYPE 00
        head[1..3].copy_from_slice(&n.to_le_bytes());
        head[3..5].copy_from_slice(&(!n).to_le_bytes());
        self.inner.write_all(&head)?;
        self.inner.write_all(&self.buf)?;
        self.buf.clear();
        Ok(())
    }

    fn finish(mut self) -> io::Result<W> {
        if self.len == 0 && !self.started {
            return Ok(self.inner);
        }
        self.block(true)?;
        self.inner.write_all(&self.crc.sum().to_le_bytes())?;
        // ISIZE is the length modulo 2^32 (RFC 1952).
        self.inner.write_all(&(self.len as u32).to_le_bytes())?;
        Ok(self.inner)
    }
}

impl<W: Write> Write for Stored<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = (STORED_BLOCK - self.buf.len()).min(buf.len());
        self.buf.extend_from_slice(&buf[..n]);
        self.crc.update(&buf[..n]);
        self.len += n as u64;
        if self.buf.len() == STORED_BLOCK {
            self.block(false)?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pack::entry::{Kind, Source};
    use std::process::{Command, Stdio};

    fn file_entry(path: &str, size: u64) -> Entry {
        Entry {
            path: path.as_bytes().to_vec(),
            kind: Kind::File { size },
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: 1_700_000_000,
            mtime_nsec: 0,
            xattrs: Vec::new(),
            hardlink: None,
            ino: 0,
            source: Source::None,
        }
    }

    fn dir_entry(path: &str) -> Entry {
        Entry {
            kind: Kind::Dir,
            mode: 0o755,
            ..file_entry(path, 0)
        }
    }

    fn noise(n: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    fn gunzip(data: &[u8]) -> Vec<u8> {
        use std::io::Write as _;
        let mut child = Command::new("gzip")
            .arg("-cd")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let input = data.to_vec();
        let feeder = std::thread::spawn(move || stdin.write_all(&input));
        let out = child.wait_with_output().unwrap();
        feeder.join().unwrap().unwrap();
        assert!(out.status.success(), "gzip -cd failed");
        out.stdout
    }

    #[test]
    fn stored_members_decode() {
        for n in [0usize, 1, 65534, 65535, 65536, 200_000] {
            let data = noise(n, n as u64 + 7);
            let mut s = Stored::new(Vec::new());
            s.write_all(&data).unwrap();
            let out = s.finish().unwrap();
            if n == 0 {
                assert!(out.is_empty(), "nothing for no bytes");
                continue;
            }
            assert_eq!(gunzip(&out), data, "length {n}");
            // 5 bytes per 64 KiB block, 18 bytes of header and trailer.
            let blocks = n / STORED_BLOCK + 1;
            assert_eq!(out.len(), n + 18 + 5 * blocks, "length {n}");
        }
    }

    #[test]
    fn mixed_runs_make_one_tar() {
        let t = tempfile::tempdir().unwrap();
        let compressible = b"hello bundle\n".repeat(50_000);
        let compressed = {
            let mut c = libdeflater::Compressor::new(libdeflater::CompressionLvl::default());
            let mut out = vec![0u8; c.gzip_compress_bound(compressible.len())];
            let n = c.gzip_compress(&compressible, &mut out).unwrap();
            out.truncate(n);
            out
        };
        assert!(looks_compressed(&compressed));
        assert!(!looks_compressed(&compressible));
        let random = noise(300_000, 3);
        let opts = Options {
            level: 6,
            threads: 2,
            checksums: true,
        };
        let mut w = BundleWriter::new(Vec::new(), &opts).unwrap();
        w.append(&dir_entry("img"), &mut io::empty(), false)
            .unwrap();
        w.append(
            &file_entry("img/a.txt", compressible.len() as u64),
            &mut &compressible[..],
            false,
        )
        .unwrap();
        w.append(
            &file_entry("img/b.gz", compressed.len() as u64),
            &mut &compressed[..],
            true,
        )
        .unwrap();
        w.append(
            &file_entry("img/c.bin", random.len() as u64),
            &mut &random[..],
            true,
        )
        .unwrap();
        w.append(&file_entry("img/d.txt", 3), &mut &b"end"[..], false)
            .unwrap();
        let (out, summary) = w.finish().unwrap();
        assert_eq!(summary.output_bytes, out.len() as u64);
        assert_eq!(summary.output_sha256, Some(Sha256::digest(&out)));
        assert_eq!(summary.members.len(), 4);
        assert_eq!(summary.members[2].0, b"img/c.bin");
        assert_eq!(summary.members[2].1, Sha256::digest(&random));
        assert!(summary.stored_bytes >= (compressed.len() + random.len()) as u64);
        // The compressible member was deflated, the others stored.
        assert!(
            (out.len() as u64) < summary.tar_bytes - compressible.len() as u64 / 2,
            "{} vs {}",
            out.len(),
            summary.tar_bytes
        );
        let tarball = gunzip(&out);
        assert_eq!(tarball.len() as u64, summary.tar_bytes);
        let path = t.path().join("b.tgz");
        std::fs::write(&path, &out).unwrap();
        let x = t.path().join("x");
        std::fs::create_dir(&x).unwrap();
        let st = Command::new("tar")
            .arg("zxf")
            .arg(&path)
            .current_dir(&x)
            .status()
            .unwrap();
        assert!(st.success());
        assert_eq!(std::fs::read(x.join("img/a.txt")).unwrap(), compressible);
        assert_eq!(std::fs::read(x.join("img/b.gz")).unwrap(), compressed);
        assert_eq!(std::fs::read(x.join("img/c.bin")).unwrap(), random);
        assert_eq!(std::fs::read(x.join("img/d.txt")).unwrap(), b"end");
    }

    #[test]
    fn a_short_member_fails_and_poisons() {
        let mut w = BundleWriter::new(Vec::new(), &Options::default()).unwrap();
        let err = w
            .append(&file_entry("x", 10), &mut &b"short"[..], false)
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
        assert!(w
            .append(&file_entry("y", 1), &mut &b"y"[..], false)
            .is_err());
        assert!(w.finish().is_err());
    }

    #[test]
    fn bad_options_are_refused() {
        let o = Options {
            level: 0,
            ..Options::default()
        };
        assert!(BundleWriter::new(Vec::new(), &o).is_err());
        let o = Options {
            threads: 0,
            ..Options::default()
        };
        assert!(BundleWriter::new(Vec::new(), &o).is_err());
    }
}
