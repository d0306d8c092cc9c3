//! Key material that redacts itself.
//!
//! Every key and salt pipec handles lives in a [`SecretBytes`]. Its `Debug`, `Display` and
//! `Serialize` print only the length, so a key cannot reach a log, a snapshot, `explain`,
//! an error or the JSON form by accident. The only ways to the bytes are [`SecretBytes::expose`]
//! and the secret-bearing writers ([`crate::xfrm`], [`crate::secgw`]), which the tools that
//! need keys read from files of mode 0600.

use serde::Serialize;

pub use pipec::secret::SecretBytes;

/// An AES-GCM key as RFC 4106 keys it: the cipher key followed by a 4-byte salt.
#[derive(Clone, PartialEq, Eq, Debug, Serialize)]
pub struct AeadKey {
    /// Key then salt; the salt is the last [`SALT_LEN`] bytes.
    pub material: SecretBytes,
}

/// RFC 4106's salt length.
pub(crate) const SALT_LEN: usize = 4;

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
