//! xcat-imaged: xCAT's image commands (genimage, packimage, imgexport, rmimage) as one engine.
//!
//! The binary in `main.rs` only picks a mode; everything else lives in these modules so the
//! integration tests can reach them. Dependencies point one way:
//! `commands → {image, lock, fs}` and `host → protocol`.
#![deny(missing_docs)]

pub mod args;
pub mod cancel;
pub mod commands;
pub mod defs;
pub mod doctor;
pub mod export;
pub mod fs;
pub mod gen;
pub mod host;
pub mod image;
pub mod install;
pub mod lock;
pub mod pack;
pub mod proc;
pub mod protocol;
