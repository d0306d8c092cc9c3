//! The same SAs as Linux XFRM states and policies (`ip xfrm` commands), Cilium's way, for
//! nodes without a CPT. **Secret-bearing**: the states carry the keys, so this text is for
//! a file of mode 0600 (see [`crate::write_secret_file`]) and never for logs or snapshots.

use std::fmt::Write as _;

use crate::sa::{CptArtifact, SaDirection};
use crate::session::REPLAY_WINDOW;

impl CptArtifact {
    /// `ip xfrm state/policy add` lines. Contains keys.
    pub fn xfrm_text(&self) -> String {
        let mut out = String::new();
        for sa in &self.sas {
            // Cilium's states: tunnel mode, ESP, ESN with a 1024 window, rfc4106 with the
            // key‖salt as one hex string and a 128-bit ICV.
            let _ = writeln!(
                out,
                "ip xfrm state add src {} dst {} proto esp spi 0x{:08x} reqid 1 mode tunnel replay-window {REPLAY_WINDOW} flag esn aead 'rfc4106(gcm(aes))' 0x{} 128",
                sa.src, sa.dst, sa.spi, sa.key.material.expose_hex()
            );
        }
        for sa in self
            .sas
            .iter()
            .filter(|s| s.direction == SaDirection::Outbound)
        {
            let host = if sa.dst.is_ipv4() { 32 } else { 128 };
            let _ = writeln!(
                out,
                "ip xfrm policy add src {}/{host} dst {}/{host} dir out tmpl src {} dst {} proto esp spi 0x{:08x} reqid 1 mode tunnel",
                sa.src, sa.dst, sa.src, sa.dst, sa.spi
            );
        }
        out
    }
}
