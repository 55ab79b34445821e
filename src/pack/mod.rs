//! Packing a root tree into the archives nodes boot from.
//!
//! select (exlist) → walk → inject → archive writer (cpio, tar) → compressor → publish.
//! Nothing here knows the host, the protocol or xCAT tables; `commands::packimage` wires it.

pub mod entry;
