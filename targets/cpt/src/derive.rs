//! Cilium's per-node-pair key derivation.
//!
//! Source: cilium/cilium `pkg/datapath/linux/ipsec/ipsec_linux.go`, `computeNodeIPsecKey`
//! and `deriveNodeIPsecKey`: the pair key is SHA-256 of `global key ‖ source node IP ‖
//! destination node IP ‖ source boot ID[:36] ‖ destination boot ID[:36]`, truncated to the
//! global key's length (SHA-512 for keys longer than 32 bytes). IPv4 addresses are taken as
//! 4 bytes (`canonicalIP`). For an AEAD key the whole key‖salt is derived, so the salt is the
//! last four derived bytes. A node's OUT SA to B uses `derive(A, B)`, its IN SA from B uses
//! `derive(B, A)`, so A's outbound key is B's inbound key; reimplemented here, not copied.

use std::net::IpAddr;

use sha2::{Digest, Sha256, Sha512};

use crate::key::SecretBytes;

/// Boot IDs are cut to this many characters, as Cilium does (a UUID's length).
pub(crate) const BOOT_ID_LEN: usize = 36;

/// The IP as Cilium feeds it to the hash: 4 bytes for IPv4 (also when v4-mapped), else 16.
fn canonical(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.octets().to_vec(),
            None => v6.octets().to_vec(),
        },
    }
}

/// The per-pair key for traffic from `src` to `dst`. The boot IDs must have at least
/// [`BOOT_ID_LEN`] bytes (checked by the caller, which reports C0102).
pub fn pair_key(
    global: &SecretBytes,
    src: IpAddr,
    dst: IpAddr,
    src_boot: &str,
    dst_boot: &str,
) -> SecretBytes {
    let g = global.expose();
    let mut input = Vec::with_capacity(g.len() + 32 + 2 * BOOT_ID_LEN);
    input.extend_from_slice(g);
    input.extend_from_slice(&canonical(src));
    input.extend_from_slice(&canonical(dst));
    input.extend_from_slice(&src_boot.as_bytes()[..BOOT_ID_LEN]);
    input.extend_from_slice(&dst_boot.as_bytes()[..BOOT_ID_LEN]);
    let hash = if g.len() <= 32 {
        Sha256::digest(&input).to_vec()
    } else {
        Sha512::digest(&input).to_vec()
    };
    SecretBytes::new(hash[..g.len()].to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A vector computed independently with Python's hashlib over the same concatenation
    /// (`sha256(bytes(20*[1]) + bytes([10,0,0,1]) + bytes([10,0,0,2]) + b"a"*36 + b"b"*36)[:20]`).
    #[test]
    fn matches_an_independent_sha256() {
        let k = pair_key(
            &SecretBytes::new(vec![1; 20]),
            "10.0.0.1".parse().unwrap_or(IpAddr::from([0, 0, 0, 0])),
            "10.0.0.2".parse().unwrap_or(IpAddr::from([0, 0, 0, 0])),
            &"a".repeat(36),
            &"b".repeat(40),
        );
        assert_eq!(k.expose_hex(), EXPECTED);
    }

    const EXPECTED: &str = "f000497c610a530bbe5ee4352317ae219de86166";
}
