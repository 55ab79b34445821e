//! Filesystem primitives: mount table, confined removal, atomic writes.
//!
//! Nothing here knows about xCAT tables or the host; callers pass paths and get typed results.

pub mod atomic;
pub mod mountinfo;
pub mod remove;
