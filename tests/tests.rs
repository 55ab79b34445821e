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

// doctor: installation checks on prepared XCATROOT layouts; changes nothing.
mod doctor;

// imgexport: the §7 bundle and its variants, extracted and compared; serve-mode tables.
mod imgexport;

// genimage for real: a minimal Debian image from the host's mirror (root and network), an
// interrupted build, --onlyinitrd with an xCAT dracut module, packimage of the result.
mod genimage;

// The example image boots under QEMU (TCG, no network) from each packimage format through a
// loader doing what xCAT's xcatroot does; its initrd-stateless.gz starts dracut (root only).
mod boot;
