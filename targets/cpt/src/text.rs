//! The key-free text and JSON forms of a [`CptArtifact`] (`pipec compile --emit cpt`), and
//! its `pipec::backend::Artifact` implementation.

use std::any::Any;
use std::fmt::Write as _;

use crate::sa::{CptArtifact, Sa, Steering};

impl CptArtifact {
    /// The stable text form. It never contains key material.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let l = &self.limits;
        let _ = writeln!(
            out,
            "# cpt node {} address {} spi {}",
            self.node, self.address, self.spi
        );
        let _ = writeln!(
            out,
            "devargs custom_sa_act=1,ipsec_in_min_spi={},ipsec_in_max_spi={},ipsec_out_max_sa={}",
            l.in_min_spi, l.in_max_spi, l.out_max_sa
        );
        for sa in &self.sas {
            out.push_str(&sa_line(sa));
            out.push('\n');
        }
        for st in &self.steering {
            out.push_str(&steering_line(st));
            out.push('\n');
        }
        for (peer, why) in &self.skipped {
            let _ = writeln!(out, "skipped {peer}: {why}");
        }
        out
    }

    /// The JSON form; keys appear as `<redacted N bytes>`.
    pub fn json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }

    /// Items keyed stably across compilations, for the generic delta.
    pub fn items(&self) -> Vec<(String, String)> {
        let sas = self.sas.iter().map(|s| {
            (
                format!("sa/{:?}/{}/{}", s.direction, s.peer, s.spi),
                sa_line(s),
            )
        });
        let st = self
            .steering
            .iter()
            .map(|s| (format!("steer/{}/{}", s.peer, s.spi), steering_line(s)));
        sas.chain(st).collect()
    }
}

/// One SA as text: everything but the key.
pub(crate) fn sa_line(sa: &Sa) -> String {
    let c = &sa.session;
    format!(
        "sa {dir:?} peer {peer} spi {spi} sa_index {idx} {src} -> {dst} inline-protocol esp tunnel aes-gcm-128 icv {icv} iv {iv} aad {aad} esn {esn} replay {rw} key <redacted> salt <redacted>",
        dir = sa.direction,
        peer = sa.peer,
        spi = sa.spi,
        idx = sa.sa_index,
        src = sa.src,
        dst = sa.dst,
        icv = c.digest_length,
        iv = c.iv_length,
        aad = c.aad_length,
        esn = if c.esn { "on" } else { "off" },
        rw = c.replay_win_sz,
    )
}

fn steering_line(s: &Steering) -> String {
    format!(
        "steer ingress pattern eth / {fam} src is {src} / esp / end actions security sa_index {idx} alg0 sa_xor sa_hi 0x{hi:04x} sa_lo 0x{lo:04x} / end  # peer {peer} spi {spi}",
        fam = if s.src.is_ipv4() { "ipv4" } else { "ipv6" },
        src = s.src,
        idx = s.sa_index,
        hi = s.sa_hi,
        lo = s.sa_lo,
        peer = s.peer,
        spi = s.spi,
    )
}

impl pipec::backend::Artifact for CptArtifact {
    fn target(&self) -> &str {
        "cpt"
    }
    fn text(&self) -> String {
        CptArtifact::text(self)
    }
    fn json(&self) -> serde_json::Value {
        CptArtifact::json(self)
    }
    fn items(&self) -> Vec<(String, String)> {
        CptArtifact::items(self)
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}
