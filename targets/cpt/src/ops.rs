//! Make-before-break SA operations between two compilations of one node.
//!
//! Rotation follows Cilium: a node first installs inbound SAs for the new SPI, then
//! advertises that SPI; it switches its outbound SA to a peer only once that peer
//! advertises the new SPI too (Cilium's `get_min_encrypt_key`: nobody sends an SPI its peer
//! has not announced), and removes the old inbound SAs only after the rotation window
//! (Cilium's `ipsec-key-rotation-duration`, 5 minutes by default). The runtime carries out
//! the operations in order, waiting where an operation says so.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::Serialize;

use crate::sa::{CptArtifact, Sa, SaDirection};

/// Cilium's default key rotation window.
pub const ROTATION_WINDOW: Duration = Duration::from_secs(300);

/// One SA operation. Printing it never shows a key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "op")]
pub enum SaOp {
    /// Create an inbound session (and its steering rule) for a peer.
    AddInbound {
        /// Peer node.
        peer: String,
        /// SPI.
        spi: u32,
        /// SA slot.
        sa_index: u32,
    },
    /// Replace a session whose SPI stays but whose key or endpoints changed (a boot ID or
    /// address change); like Cilium, not atomic: packets in between are dropped, not leaked.
    Replace {
        /// Which way the SA protects traffic.
        direction: SaDirection,
        /// Peer node.
        peer: String,
        /// SPI.
        spi: u32,
    },
    /// Publish that this node accepts `spi` inbound from every peer.
    AdvertiseSpi {
        /// The SPI now accepted.
        spi: u32,
    },
    /// Create an outbound session to a new peer.
    AddOutbound {
        /// Peer node.
        peer: String,
        /// SPI.
        spi: u32,
        /// SA slot.
        sa_index: u32,
    },
    /// Switch a peer's outbound session to the new SPI once the peer advertises it.
    SwitchOutbound {
        /// Peer node.
        peer: String,
        /// Old SPI.
        from: u32,
        /// New SPI; waits for the peer to advertise it.
        to: u32,
    },
    /// Remove the outbound session to a peer that left.
    RemoveOutbound {
        /// Peer node.
        peer: String,
        /// SPI.
        spi: u32,
    },
    /// Remove an inbound session, `after` this long (the rotation window; zero for a peer
    /// that left).
    RemoveInbound {
        /// Peer node.
        peer: String,
        /// SPI.
        spi: u32,
        /// Delay before removal.
        #[serde(with = "secs")]
        after: Duration,
    },
}

mod secs {
    use std::time::Duration;

    use serde::Serializer;

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_secs())
    }
}

impl fmt::Display for SaOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SaOp::AddInbound {
                peer,
                spi,
                sa_index,
            } => write!(f, "add inbound {peer} spi {spi} sa_index {sa_index}"),
            SaOp::Replace {
                direction,
                peer,
                spi,
            } => write!(f, "replace {direction:?} {peer} spi {spi}"),
            SaOp::AdvertiseSpi { spi } => write!(f, "advertise spi {spi}"),
            SaOp::AddOutbound {
                peer,
                spi,
                sa_index,
            } => write!(f, "add outbound {peer} spi {spi} sa_index {sa_index}"),
            SaOp::SwitchOutbound { peer, from, to } => write!(
                f,
                "switch outbound {peer} spi {from} -> {to} when {peer} advertises {to}"
            ),
            SaOp::RemoveOutbound { peer, spi } => write!(f, "remove outbound {peer} spi {spi}"),
            SaOp::RemoveInbound { peer, spi, after } => write!(
                f,
                "remove inbound {peer} spi {spi} after {}s",
                after.as_secs()
            ),
        }
    }
}

type Keyed<'a> = BTreeMap<(SaDirection, &'a str, u32), &'a Sa>;

fn keyed(a: &CptArtifact) -> Keyed<'_> {
    a.sas
        .iter()
        .map(|s| ((s.direction, s.peer.as_str(), s.spi), s))
        .collect()
}

/// The ordered operations that turn `old` into `new` without losing packets.
pub fn diff(old: &CptArtifact, new: &CptArtifact) -> Vec<SaOp> {
    diff_with_window(old, new, ROTATION_WINDOW)
}

/// [`diff`] with an explicit rotation window.
pub fn diff_with_window(old: &CptArtifact, new: &CptArtifact, window: Duration) -> Vec<SaOp> {
    let (o, n) = (keyed(old), keyed(new));
    let mut ops = Vec::new();
    for (k, s) in &n {
        if k.0 == SaDirection::Inbound && !o.contains_key(k) {
            ops.push(SaOp::AddInbound {
                peer: s.peer.clone(),
                spi: s.spi,
                sa_index: s.sa_index,
            });
        }
    }
    for (k, s) in &n {
        if let Some(prev) = o.get(k) {
            if prev.key != s.key
                || prev.src != s.src
                || prev.dst != s.dst
                || prev.sa_index != s.sa_index
            {
                ops.push(SaOp::Replace {
                    direction: s.direction,
                    peer: s.peer.clone(),
                    spi: s.spi,
                });
            }
        }
    }
    if new.spi != old.spi {
        ops.push(SaOp::AdvertiseSpi { spi: new.spi });
    }
    let old_out: BTreeMap<&str, u32> = old
        .sas
        .iter()
        .filter(|s| s.direction == SaDirection::Outbound)
        .map(|s| (s.peer.as_str(), s.spi))
        .collect();
    let new_out: BTreeMap<&str, &Sa> = new
        .sas
        .iter()
        .filter(|s| s.direction == SaDirection::Outbound)
        .map(|s| (s.peer.as_str(), s))
        .collect();
    for (peer, s) in &new_out {
        match old_out.get(peer) {
            None => ops.push(SaOp::AddOutbound {
                peer: peer.to_string(),
                spi: s.spi,
                sa_index: s.sa_index,
            }),
            Some(&from) if from != s.spi => ops.push(SaOp::SwitchOutbound {
                peer: peer.to_string(),
                from,
                to: s.spi,
            }),
            Some(_) => {}
        }
    }
    for (peer, &spi) in &old_out {
        if !new_out.contains_key(peer) {
            ops.push(SaOp::RemoveOutbound {
                peer: peer.to_string(),
                spi,
            });
        }
    }
    let new_peers: std::collections::BTreeSet<&str> =
        new.sas.iter().map(|s| s.peer.as_str()).collect();
    for (k, s) in &o {
        if k.0 == SaDirection::Inbound && !n.contains_key(k) {
            // A peer that left cannot send any more: remove at once. An old SPI of a
            // remaining peer is kept for the window, as packets with it may be in flight.
            let after = if new_peers.contains(k.1) {
                window
            } else {
                Duration::ZERO
            };
            ops.push(SaOp::RemoveInbound {
                peer: s.peer.clone(),
                spi: s.spi,
                after,
            });
        }
    }
    ops
}
