//! Coded diagnostics of the CPT target.
//!
//! Codes are stable and documented in the crate docs (`lib.rs`). No message carries key
//! bytes: messages name the Secret, the line of the key and what is wrong, never the value.

use std::fmt;

use serde::Serialize;

/// A stable diagnostic code of the CPT target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum CptCode {
    /// C0001: the Secret cannot be read (file, YAML/JSON, base64, missing `keys`, field count).
    C0001,
    /// C0002: an algorithm other than `rfc4106(gcm(aes))`.
    C0002,
    /// C0003: a key that is not 20 bytes (16 key + 4 salt) or not hex.
    C0003,
    /// C0004: an SPI (key id) outside 1..15.
    C0004,
    /// C0005: an ICV length other than 128 bits.
    C0005,
    /// C0006: two keys with one SPI, or two `cilium-ipsec-keys` Secrets.
    C0006,
    /// C0101: the compiled node is not in the cluster.
    C0101,
    /// C0102: a node without a boot ID of at least 36 characters (per-pair keys need it).
    C0102,
    /// C0103: the compiled node has no address.
    C0103,
    /// C0104: the SA indexes do not fit the cnxk inline device's configured range.
    C0104,
}

/// One coded diagnostic.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CptDiagnostic {
    /// The stable code.
    pub code: CptCode,
    /// `file:line` or a node name: where.
    pub at: String,
    /// What is wrong, in words; never a key.
    pub message: String,
}

impl CptDiagnostic {
    /// Makes one.
    pub fn new(code: CptCode, at: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            code,
            at: at.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for CptDiagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "error[{:?}]: {}: {}", self.code, self.at, self.message)
    }
}

impl std::error::Error for CptDiagnostic {}
