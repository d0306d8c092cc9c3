//! DPDK `ipsec-secgw` SA configuration (`sa` lines, doc/guides/sample_app_ug/ipsec_secgw.rst
//! of 22.11). **Secret-bearing**: `aead_key` is key‖salt as the app wants it, so this text is
//! for a file of mode 0600 only.
//!
//! ipsec-secgw names an SA by its SPI, one per direction; with per-pair keys every peer
//! shares the SPI, so the configuration is per peer: [`CptArtifact::secgw_text_for`].

use std::fmt::Write as _;

use crate::sa::CptArtifact;

impl CptArtifact {
    /// The `sa in`/`sa out` lines of every peer (each peer's pair of lines is a separate
    /// ipsec-secgw instance's configuration when SPIs are shared). Contains keys.
    pub fn secgw_text(&self) -> String {
        let mut peers: Vec<&str> = self.sas.iter().map(|s| s.peer.as_str()).collect();
        peers.dedup();
        peers
            .iter()
            .map(|p| self.secgw_text_for(p, "no-offload"))
            .collect()
    }

    /// The `sa` lines for one peer with an offload `type` (`no-offload` for the software
    /// path, `inline-protocol-offload port_id 0` on cnxk). Contains keys.
    pub fn secgw_text_for(&self, peer: &str, offload: &str) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "# peer {peer}");
        for sa in self.sas.iter().filter(|s| s.peer == peer) {
            let dir = match sa.direction {
                crate::sa::SaDirection::Outbound => "out",
                crate::sa::SaDirection::Inbound => "in",
            };
            let key: Vec<String> = sa
                .key
                .material
                .expose()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            let mode = if sa.src.is_ipv4() {
                "ipv4-tunnel"
            } else {
                "ipv6-tunnel"
            };
            let _ = writeln!(
                out,
                "sa {dir} {} aead_algo aes-128-gcm aead_key {} mode {mode} src {} dst {} type {offload}",
                sa.spi,
                key.join(":"),
                sa.src,
                sa.dst
            );
        }
        out
    }
}
