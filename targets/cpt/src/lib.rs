//! pipec's CPT target: node-to-node IPsec as Cilium does it, compiled for the OCTEON 10
//! crypto engine's inline protocol offload (DPDK 22.11 cnxk), with Linux XFRM text for
//! nodes without a CPT.
//!
//! - [`read_keys`] reads Cilium's `kube-system/cilium-ipsec-keys` Secret and the Nodes'
//!   boot IDs from manifests;
//! - [`compile`] builds one node's SA set: per peer an outbound and an inbound SA with the
//!   rte_security session configuration, and an inbound steering rule;
//! - [`diff`] orders the SA operations of a change, make-before-break;
//! - [`CptBackend`] is the target behind pipec's `Backend` seam: a compile session reads
//!   the Secret and the Nodes from its model ([`keys_from_cluster`]) and reports [`SaOps`];
//! - [`esp`] is a software model of the ESP the CPT emits, checked against tshark and scapy.
//!
//! # Keys never leak
//! Keys live in [`SecretBytes`], which prints and serializes as `<redacted N bytes>`. The
//! text and JSON forms, diagnostics and `Debug` output therefore carry no key. Only
//! [`CptArtifact::xfrm_text`] and [`CptArtifact::secgw_text`] are secret-bearing, because
//! `ip xfrm` and ipsec-secgw need the keys: write them with [`write_secret_file`] (mode
//! 0600), never to logs or snapshots.
//!
//! # Diagnostic codes
//! | code | meaning |
//! | --- | --- |
//! | C0001 | the Secret cannot be read: file, YAML/JSON, base64, no `keys`, wrong field count |
//! | C0002 | an algorithm other than `rfc4106(gcm(aes))` (also the auth+enc 5-field form) |
//! | C0003 | a key that is not hex or not 20 bytes (16 key + 4 salt) |
//! | C0004 | an SPI (key id) outside 1..15 |
//! | C0005 | an ICV length other than 128 bits (the cnxk CPT's only GCM ICV) |
//! | C0006 | two keys with one SPI, or two `cilium-ipsec-keys` Secrets |
//! | C0101 | the compiled node is not in the cluster |
//! | C0102 | a node without a `status.nodeInfo.bootID` of 36+ characters (per-pair keys) |
//! | C0103 | the compiled node has no address |
//! | C0104 | SA indexes beyond the inline device's `ipsec_in_max_spi`/`ipsec_out_max_sa` |
//!
//! Any error means nothing is compiled, so nothing is applied.

// Dev-dependencies that the unit tests do not use; the package's integration tests,
// benches or examples do (pipec-dpdk-sys is also an optional dependency, used by the lib
// only with feature `dpdk`).
#[cfg(test)]
use insta as _;
#[cfg(all(test, not(feature = "dpdk")))]
use pipec_dpdk_sys as _;

mod backend;
mod derive;
mod diag;
pub mod esp;
#[cfg(feature = "dpdk")]
pub mod ffi;
mod key;
mod ops;
mod sa;
mod secgw;
mod secret;
mod session;
mod text;
mod xfrm;

use std::io::Write as _;
use std::path::Path;

pub use backend::{explain_line, CptBackend, IpsecArtifact, SaOps, TARGET};
pub use derive::pair_key;
pub use diag::{CptCode, CptDiagnostic};
pub use key::{AeadKey, SecretBytes};
pub use ops::{diff, diff_with_window, SaOp, ROTATION_WINDOW};
pub use sa::{compile, compile_with, CptArtifact, DeviceLimits, Sa, SaDirection, Steering};
pub use secret::{
    keys_from_cluster, parse_keys, read_keys, read_keys_from_texts, GlobalKey, KeySet,
};
pub use session::{SessionConf, REPLAY_WINDOW};

/// Writes secret-bearing text (XFRM or ipsec-secgw configuration) to a new file of mode
/// 0600, so that only its owner can read the keys.
pub fn write_secret_file(path: &Path, text: &str) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    // `mode` applies only to a file this call creates; an existing file keeps its mode
    // unless it is narrowed here, before any key is written.
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    f.write_all(text.as_bytes())
}
