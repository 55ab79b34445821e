//! One archive member as plain data: what the walk found or what packimage injects.
//!
//! Writers (cpio, tar, squashfs) take entries and never look at the disk themselves except
//! to read a file's content from [`Entry::source`].

use std::path::PathBuf;

/// What kind of member an entry is, with the data that kind needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A regular file of `size` bytes.
    File {
        /// Length of the content in bytes.
        size: u64,
    },
    /// A directory.
    Dir,
    /// A symbolic link to `target` (raw bytes, not resolved).
    Symlink {
        /// The link's target as stored.
        target: Vec<u8>,
    },
    /// A character device.
    CharDev {
        /// Device major number.
        major: u32,
        /// Device minor number.
        minor: u32,
    },
    /// A block device.
    BlockDev {
        /// Device major number.
        major: u32,
        /// Device minor number.
        minor: u32,
    },
    /// A named pipe.
    Fifo,
}

/// Where a regular file's content comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// No content (directories, links, devices, FIFOs).
    None,
    /// A file on disk, opened when the entry is written.
    Disk(PathBuf),
    /// Bytes made by packimage (xcatinfo, shadow, ...).
    Bytes(Vec<u8>),
}

/// Membership of a regular file in a hard-link group, counted among the selected entries only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HardLink {
    /// Identifies the group; equal for all members. Also the inode number writers store.
    pub group: u64,
    /// How many members the group has in this archive (the archive's link count).
    pub count: u32,
    /// 0-based position of this member within the group, in archive order.
    pub index: u32,
}

/// One archive member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Path relative to the root, as raw bytes, without a leading `./` or `/`; the root itself
    /// is the empty path. Writers add their own prefix (`./` for cpio and tar).
    pub path: Vec<u8>,
    /// Type and type-specific data.
    pub kind: Kind,
    /// Permission bits including setuid, setgid and sticky (`st_mode & 0o7777`).
    pub mode: u32,
    /// Numeric owner.
    pub uid: u32,
    /// Numeric group.
    pub gid: u32,
    /// Modification time, seconds since the epoch.
    pub mtime: i64,
    /// Nanoseconds part of the modification time.
    pub mtime_nsec: u32,
    /// Extended attributes (all namespaces, `security.selinux` and `security.capability`
    /// included), sorted by name.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// Hard-link group, for regular files with more than one selected link.
    pub hardlink: Option<HardLink>,
    /// Inode number to store: unique per entry, shared within a hard-link group.
    pub ino: u64,
    /// Where the content of a regular file is read from.
    pub source: Source,
}

impl Entry {
    /// The `st_mode` file-type bits for this entry's kind.
    pub fn type_bits(&self) -> u32 {
        match self.kind {
            Kind::File { .. } => 0o100000,
            Kind::Dir => 0o040000,
            Kind::Symlink { .. } => 0o120000,
            Kind::CharDev { .. } => 0o020000,
            Kind::BlockDev { .. } => 0o060000,
            Kind::Fifo => 0o010000,
        }
    }

    /// Full `st_mode`: type bits and permission bits.
    pub fn st_mode(&self) -> u32 {
        self.type_bits() | (self.mode & 0o7777)
    }

    /// Content length: the file size for regular files, 0 otherwise.
    pub fn size(&self) -> u64 {
        match self.kind {
            Kind::File { size } => size,
            _ => 0,
        }
    }
}

/// A sink for archive members. `walk` and `inject` produce entries; cpio and tar implement
/// this, so neither side learns the other's format.
pub trait ArchiveWriter {
    /// Whether this member's content is stored with it. True for regular files, except that
    /// hard-link groups store their content once: on the last member in cpio newc (as GNU
    /// cpio does), on the first in tar. Callers pass `std::io::empty()` when this is false,
    /// so they never open a file whose bytes would not be written.
    fn carries_data(&self, entry: &Entry) -> bool {
        matches!(entry.kind, Kind::File { .. })
    }
    /// Appends one member. When [`ArchiveWriter::carries_data`] is true, `data` must yield
    /// exactly `entry.size()` bytes; writers check the length and fail on a mismatch (a file
    /// that changed while being packed) rather than write a corrupt archive.
    fn append(&mut self, entry: &Entry, data: &mut dyn std::io::Read) -> std::io::Result<()>;
    /// Writes the trailer. Called once, after the last member.
    fn finish_archive(&mut self) -> std::io::Result<()>;
}
