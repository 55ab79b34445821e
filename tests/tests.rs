//! One integration binary; each module tests one area with the real `xcat-imaged` binary.

// Helpers: temp management-node layout, standalone and serve runners.
mod util;

// rmimage in standalone mode: messages, errors, what is removed, safety refusals.
mod rmimage;

// rmimage with real mounts in a private mount namespace (root only).
mod rmimage_mounts;

// packimage in standalone mode: formats extracted by the node's tools, injection, publish.
mod packimage;

// packimage's segment cache: byte-identical repacks, multi-member decoding, damaged caches,
// squashfs without temp files, rmimage removing the cache.
mod packimage_cache;

// serve mode: the protocol from the bridge's side.
mod protocol;

// doctor: installation checks on prepared XCATROOT layouts; changes nothing.
mod doctor;

// imgexport: the §7 bundle and its variants, extracted and compared; serve-mode tables.
mod imgexport;

// genimage for real: a minimal Debian image from the host's mirror (root and network), an
// interrupted build, --onlyinitrd with an xCAT dracut module, packimage of the result.
mod genimage;

// genimage for RHEL-family (dnf) and SLES (zypper) images with the real package managers and
// tiny RPMs built by the test: passes, groups/patterns, otherpkgs, scriptlets, the rpm
// database, post files, an interrupt in a scriptlet, a missing package, the dry run.
mod genimage_rpm;

// Fault injection: SIGKILL at many points of packimage (every format), imgexport and
// genimage; a full destination (tmpfs in a private mount namespace); unreadable and changing
// files. Prints `faults:` summary lines.
mod faults;

// Bad input as one table: protocol lines, arguments, hostile names and definitions; each a
// clear error and an unchanged tree, standalone and over serve.
mod bad_input;

// No shell: the sources (engine, plugin, bridge) and, under strace, what really runs.
mod no_shell;

// The example image boots under QEMU (TCG, no network) from each packimage format through a
// loader doing what xCAT's xcatroot does; its initrd-stateless.gz starts dracut (root only).
mod boot;
