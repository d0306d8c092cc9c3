//! The SA set of one node: an outbound and an inbound SA per peer node, with the
//! rte_security session configuration of each and the inbound steering rule.
//!
//! Mode: ESP **tunnel** mode with the node addresses as outer addresses, because that is
//! what Cilium's XFRM states use (`ipSecNewState`), so a pipec node and a Cilium node
//! exchange identical packets; ESN on and a 1024-packet replay window, Cilium's values.
//!
//! SPIs: Cilium gives every peer the same SPI (the key id), but the cnxk 22.11 driver
//! refuses two sessions with one SPI on a port in either direction. So each session is
//! created with a unique SA index as its SPI and then `rte_security_session_update`d to the
//! real SPI (devarg `custom_sa_act=1`); inbound ESP is steered per peer by an NPC rule
//! (`ipv4 src is <peer> / esp`) whose SECURITY action uses ALG0 with `sa_xor`, so that
//! `SPI XOR (sa_hi<<16 | sa_lo)` is that peer's SA index. The index is
//! `base + 3 * peer ordinal + SPI mod 3`: consecutive key ids (1..15, wrapping 15→1) differ
//! mod 3, so old and new SAs of a rotation never share a slot.

use std::collections::BTreeMap;
use std::net::IpAddr;

use pipec::model::Cluster;
use serde::Serialize;

use crate::derive::{pair_key, BOOT_ID_LEN};
use crate::diag::{CptCode, CptDiagnostic};
use crate::key::AeadKey;
use crate::secret::KeySet;
use crate::session::SessionConf;

/// Which way an SA protects traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SaDirection {
    /// Encrypts traffic to the peer (rte_security egress).
    Outbound,
    /// Decrypts traffic from the peer (rte_security ingress).
    Inbound,
}

/// The cnxk inline device's SA index limits (its devargs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct DeviceLimits {
    /// `ipsec_in_min_spi` (driver default 0).
    pub in_min_spi: u32,
    /// `ipsec_in_max_spi` (driver default 255).
    pub in_max_spi: u32,
    /// `ipsec_out_max_sa` (driver default 4096).
    pub out_max_sa: u32,
}

impl Default for DeviceLimits {
    fn default() -> Self {
        Self {
            in_min_spi: 0,
            in_max_spi: 255,
            out_max_sa: 4096,
        }
    }
}

impl DeviceLimits {
    /// Limits wide enough for `peers` peer nodes (what the node's devargs must say).
    pub fn for_peers(peers: usize) -> Self {
        let need = u32::try_from(peers * 3).unwrap_or(u32::MAX);
        Self {
            in_min_spi: 0,
            in_max_spi: need.max(255),
            out_max_sa: need.max(4096),
        }
    }
}

/// One security association.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Sa {
    /// Outbound or inbound.
    pub direction: SaDirection,
    /// The peer node's name.
    pub peer: String,
    /// The on-wire SPI (the key id).
    pub spi: u32,
    /// Outer source address.
    pub src: IpAddr,
    /// Outer destination address.
    pub dst: IpAddr,
    /// The cnxk SA index the session is created with before its SPI is updated.
    pub sa_index: u32,
    /// Key and salt (derived per pair where the Secret asks); redacted when printed.
    pub key: AeadKey,
    /// The rte_security session configuration.
    pub session: SessionConf,
}

/// The inbound steering rule for one peer: NPC match and SECURITY action conf.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Steering {
    /// The peer node.
    pub peer: String,
    /// Outer source address matched.
    pub src: IpAddr,
    /// The SPI this rule maps.
    pub spi: u32,
    /// `rte_pmd_cnxk_sec_action.sa_index` (the slot).
    pub sa_index: u32,
    /// `sa_hi` with ALG0 and `sa_xor`.
    pub sa_hi: u16,
    /// `sa_lo`.
    pub sa_lo: u16,
}

/// One node's compiled CPT configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CptArtifact {
    /// The node compiled for.
    pub node: String,
    /// Its outer address.
    pub address: IpAddr,
    /// The SPI in use.
    pub spi: u32,
    /// The devargs the node's inline device needs.
    pub limits: DeviceLimits,
    /// SAs sorted by (direction, peer, spi).
    pub sas: Vec<Sa>,
    /// Inbound steering rules sorted by (peer, spi).
    pub steering: Vec<Steering>,
    /// Peers left out, with why (no address of the node's family).
    pub skipped: BTreeMap<String, String>,
}

/// Compiles the SA set of `node` with the cnxk default device limits.
pub fn compile(
    cluster: &Cluster,
    node: &str,
    keys: &KeySet,
) -> Result<CptArtifact, Vec<CptDiagnostic>> {
    compile_with(cluster, node, keys, DeviceLimits::default())
}

/// Compiles the SA set of `node` for a device configured with `limits`.
pub fn compile_with(
    cluster: &Cluster,
    node: &str,
    keys: &KeySet,
    limits: DeviceLimits,
) -> Result<CptArtifact, Vec<CptDiagnostic>> {
    let Some(local) = cluster.nodes.iter().find(|n| n.name == node) else {
        return Err(vec![CptDiagnostic::new(
            CptCode::C0101,
            node,
            "no such node in the cluster",
        )]);
    };
    let Some(&address) = local.addresses.first() else {
        return Err(vec![CptDiagnostic::new(
            CptCode::C0103,
            node,
            "the node has no address",
        )]);
    };
    let global = keys.current_key();
    let spi = u32::from(global.spi);
    let mut diags = Vec::new();
    let local_boot = boot_id(keys, node, global.per_pair, &mut diags);
    let mut art = CptArtifact {
        node: node.to_string(),
        address,
        spi,
        limits,
        sas: Vec::new(),
        steering: Vec::new(),
        skipped: BTreeMap::new(),
    };
    let peers = cluster.nodes.iter().filter(|n| n.name != node);
    for (ordinal, peer) in peers.enumerate() {
        let Some(&peer_addr) = peer
            .addresses
            .iter()
            .find(|a| a.is_ipv4() == address.is_ipv4())
        else {
            art.skipped
                .insert(peer.name.clone(), "no address of the node's family".into());
            continue;
        };
        let peer_boot = boot_id(keys, &peer.name, global.per_pair, &mut diags);
        let index = index_of(limits.in_min_spi, ordinal, spi);
        // The peer's highest slot must fit too, or a later rotation could not be made.
        let top = index_of(limits.in_min_spi, ordinal, 2);
        if top > limits.in_max_spi || top > limits.out_max_sa {
            diags.push(CptDiagnostic::new(
                CptCode::C0104,
                &peer.name,
                format!("SA index {top} is beyond ipsec_in_max_spi={} / ipsec_out_max_sa={}; raise the devargs", limits.in_max_spi, limits.out_max_sa),
            ));
            continue;
        }
        let (out_key, in_key) = if global.per_pair {
            let (lb, pb) = (
                local_boot.as_deref().unwrap_or(""),
                peer_boot.as_deref().unwrap_or(""),
            );
            if lb.len() < BOOT_ID_LEN || pb.len() < BOOT_ID_LEN {
                continue;
            }
            (
                pair_key(&global.key.material, address, peer_addr, lb, pb),
                pair_key(&global.key.material, peer_addr, address, pb, lb),
            )
        } else {
            (global.key.material.clone(), global.key.material.clone())
        };
        for (direction, key, src, dst) in [
            (SaDirection::Outbound, out_key, address, peer_addr),
            (SaDirection::Inbound, in_key, peer_addr, address),
        ] {
            let key = AeadKey { material: key };
            let session = SessionConf::new(direction, spi, src, dst);
            art.sas.push(Sa {
                direction,
                peer: peer.name.clone(),
                spi,
                src,
                dst,
                sa_index: index,
                key,
                session,
            });
        }
        let xor = spi ^ index;
        art.steering.push(Steering {
            peer: peer.name.clone(),
            src: peer_addr,
            spi,
            sa_index: index,
            sa_hi: (xor >> 16) as u16,
            sa_lo: (xor & 0xffff) as u16,
        });
    }
    if !diags.is_empty() {
        return Err(diags);
    }
    art.sas
        .sort_by(|a, b| (a.direction, &a.peer, a.spi).cmp(&(b.direction, &b.peer, b.spi)));
    art.steering
        .sort_by(|a, b| (&a.peer, a.spi).cmp(&(&b.peer, b.spi)));
    Ok(art)
}

/// The SA slot of a peer for an SPI; see the module docs.
pub(crate) fn index_of(base: u32, ordinal: usize, spi: u32) -> u32 {
    let ordinal = u32::try_from(ordinal).unwrap_or(u32::MAX / 4);
    base.saturating_add(ordinal.saturating_mul(3))
        .saturating_add(spi % 3)
}

fn boot_id(
    keys: &KeySet,
    node: &str,
    needed: bool,
    diags: &mut Vec<CptDiagnostic>,
) -> Option<String> {
    let b = keys.boot_ids.get(node).cloned();
    if needed && b.as_ref().is_none_or(|b| b.len() < BOOT_ID_LEN) {
        diags.push(CptDiagnostic::new(
            CptCode::C0102,
            node,
            format!("per-pair keys need the node's status.nodeInfo.bootID (at least {BOOT_ID_LEN} characters)"),
        ));
    }
    b
}
