//! One integration binary; each module tests one area with the real `xcat-imaged` binary.

// Helpers: temp management-node layout, standalone and serve runners.
mod util;

// rmimage in standalone mode: messages, errors, what is removed, safety refusals.
mod rmimage;

// rmimage with real mounts in a private mount namespace (root only).
mod rmimage_mounts;

// packimage in standalone mode: formats extracted by the node's tools, injection, publish.
mod packimage;

// serve mode: the protocol from the bridge's side.
mod protocol;
