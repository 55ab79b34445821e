//! Packing a root tree into the archives nodes boot from.
//!
//! select (exlist) → walk → inject → archive writer (cpio, tar) → compressor (segments, segment cache)
//! → publish.
//! Nothing here knows the host, the protocol or xCAT tables; `commands::packimage` wires it.

pub mod chunk;
pub mod compress;
pub mod content;
pub mod cpio;
pub mod entry;
pub mod exlist;
pub mod inject;
pub mod publish;
pub mod segcache;
pub mod synclist;
pub mod tar;
pub mod walk;
