//! The rte_security session configuration of one SA as typed data, mirroring DPDK 22.11's
//! `struct rte_security_session_conf` with its `rte_security_ipsec_xform` and the AEAD
//! `rte_crypto_sym_xform`. Key and salt are not here: they stay in the SA's redacted key and
//! are filled in only where the session is created.

use std::net::IpAddr;

use serde::Serialize;

use crate::sa::SaDirection;

/// Cilium's replay window (`ipSecNewState`), a power of two within cnxk's 4096.
pub const REPLAY_WINDOW: u32 = 1024;

/// `rte_security_session_conf` and the crypto transform, minus key material.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SessionConf {
    /// `action_type`: always `RTE_SECURITY_ACTION_TYPE_INLINE_PROTOCOL` (the CPT does ESP).
    pub action_type: &'static str,
    /// `protocol`: `RTE_SECURITY_PROTOCOL_IPSEC`.
    pub protocol: &'static str,
    /// `ipsec.direction`.
    pub direction: &'static str,
    /// `ipsec.proto`: ESP.
    pub proto: &'static str,
    /// `ipsec.mode`: tunnel.
    pub mode: &'static str,
    /// `ipsec.spi` after `rte_security_session_update`.
    pub spi: u32,
    /// `ipsec.options.esn`.
    pub esn: bool,
    /// `ipsec.replay_win_sz` (0 on egress: no replay check there).
    pub replay_win_sz: u32,
    /// `ipsec.tunnel.type` and addresses.
    pub tunnel_src: IpAddr,
    /// Tunnel destination.
    pub tunnel_dst: IpAddr,
    /// `ipsec.tunnel.ipv4.ttl` / `ipv6.hlimit`.
    pub tunnel_ttl: u8,
    /// `crypto_xform.aead.algo`.
    pub aead_algo: &'static str,
    /// `crypto_xform.aead.op`.
    pub aead_op: &'static str,
    /// `aead.key.length` (the salt goes to `ipsec.salt`).
    pub key_length: u16,
    /// `aead.iv.length`.
    pub iv_length: u16,
    /// `aead.digest_length` (ICV).
    pub digest_length: u16,
    /// `aead.aad_length`: 8, plus 4 with ESN (the high sequence bits enter the AAD).
    pub aad_length: u16,
}

impl SessionConf {
    /// The configuration of an SA.
    pub fn new(direction: SaDirection, spi: u32, src: IpAddr, dst: IpAddr) -> Self {
        let inbound = direction == SaDirection::Inbound;
        let esn = true;
        Self {
            action_type: "RTE_SECURITY_ACTION_TYPE_INLINE_PROTOCOL",
            protocol: "RTE_SECURITY_PROTOCOL_IPSEC",
            direction: if inbound {
                "RTE_SECURITY_IPSEC_SA_DIR_INGRESS"
            } else {
                "RTE_SECURITY_IPSEC_SA_DIR_EGRESS"
            },
            proto: "RTE_SECURITY_IPSEC_SA_PROTO_ESP",
            mode: "RTE_SECURITY_IPSEC_SA_MODE_TUNNEL",
            spi,
            esn,
            replay_win_sz: if inbound { REPLAY_WINDOW } else { 0 },
            tunnel_src: src,
            tunnel_dst: dst,
            tunnel_ttl: 64,
            aead_algo: "RTE_CRYPTO_AEAD_AES_GCM",
            aead_op: if inbound {
                "RTE_CRYPTO_AEAD_OP_DECRYPT"
            } else {
                "RTE_CRYPTO_AEAD_OP_ENCRYPT"
            },
            key_length: 16,
            iv_length: 12,
            digest_length: 16,
            aad_length: if esn { 12 } else { 8 },
        }
    }
}
