//! Building image bundles (imgexport): the manifest, the member layout, the streaming gzip tar
//! and the file it is written to.
//!
//! manifest (XML::Simple-compatible) → layout (names inside the image directory) → bundle
//! (tar → gzip, stored runs for compressed members, optional SHA-256) → output (unnamed file,
//! atomic rename). Nothing here knows the host, the protocol or xCAT tables;
//! `commands::imgexport` reads the definitions and wires these together.

pub mod bundle;
pub mod layout;
pub mod manifest;
pub mod output;
pub mod sha256;
