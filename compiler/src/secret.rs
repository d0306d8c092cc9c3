//! Bytes that redact themselves: Secret values and key material.
//!
//! A [`SecretBytes`] prints, debugs and serializes as `<redacted N bytes>`, so a Secret's
//! value cannot reach a log, a snapshot, `explain`, an error or a JSON form by accident.
//! The frontend keeps every Secret value in one; the only way to the bytes is
//! [`SecretBytes::expose`], which the targets that need keys call.

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

/// Lower-case hex of bytes (for secret-bearing writers, which must write to 0600 files).
pub fn hex(bytes: &[u8]) -> String {
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
