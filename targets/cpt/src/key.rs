//! Key material that redacts itself.
//!
//! Every key and salt pipec handles lives in a [`SecretBytes`]. Its `Debug`, `Display` and
//! `Serialize` print only the length, so a key cannot reach a log, a snapshot, `explain`,
//! an error or the JSON form by accident. The only ways to the bytes are [`SecretBytes::expose`]
//! and the secret-bearing writers ([`crate::xfrm`], [`crate::secgw`]), which the tools that
//! need keys read from files of mode 0600.

use std::fmt;

use serde::{Serialize, Serializer};

/// Bytes that must never be printed: a Cilium global key or a derived per-pair key.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretBytes(Vec<u8>);

impl SecretBytes {
    /// Wraps bytes.
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    /// The bytes themselves, for the crypto and the secret-bearing writers only.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// How many bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no bytes.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The bytes as lower-case hex, for the secret-bearing writers only.
    pub fn expose_hex(&self) -> String {
        hex(&self.0)
    }
}

/// Lower-case hex of bytes.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        // Writing to a String cannot fail.
        let _ = write!(out, "{b:02x}");
    }
    out
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<redacted {} bytes>", self.0.len())
    }
}

impl fmt::Display for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl Serialize for SecretBytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("<redacted {} bytes>", self.0.len()))
    }
}

/// An AES-GCM key as RFC 4106 keys it: the cipher key followed by a 4-byte salt.
#[derive(Clone, PartialEq, Eq, Debug, Serialize)]
pub struct AeadKey {
    /// Key then salt; the salt is the last [`SALT_LEN`] bytes.
    pub material: SecretBytes,
}

/// RFC 4106's salt length.
pub const SALT_LEN: usize = 4;

impl AeadKey {
    /// The cipher key (all but the salt).
    pub fn cipher_key(&self) -> &[u8] {
        let m = self.material.expose();
        &m[..m.len() - SALT_LEN]
    }

    /// The salt (the last four bytes).
    pub fn salt(&self) -> [u8; SALT_LEN] {
        let m = self.material.expose();
        let mut s = [0; SALT_LEN];
        s.copy_from_slice(&m[m.len() - SALT_LEN..]);
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_everywhere() {
        let k = SecretBytes::new(vec![0xab; 20]);
        for s in [
            format!("{k:?}"),
            format!("{k}"),
            serde_json::to_string(&k).unwrap_or_default(),
        ] {
            assert!(!s.contains("abab"), "{s}");
            assert!(s.contains("redacted 20 bytes"), "{s}");
        }
    }
}
