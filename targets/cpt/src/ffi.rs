//! The real DPDK 22.11 `rte_security_session_conf` and AEAD `rte_crypto_sym_xform` of an SA,
//! built through FFI (feature `dpdk`).
//!
//! No software device implements rte_security in 22.11, so a session cannot be created
//! here; what is checked is that the structs DPDK's headers define are filled as the cnxk
//! driver and ipsec-secgw expect (the tests read every field back). [`CSession`] owns the
//! key buffer the transform points at, and clears it when dropped.

#![allow(
    unsafe_code,
    reason = "the FFI boundary to DPDK's session structs: unions and raw key pointers"
)]

use std::net::IpAddr;

use pipec_dpdk_sys::sys;

use crate::sa::{Sa, SaDirection};

/// A session configuration with the crypto transform and key buffer it points at.
pub struct CSession {
    /// `struct rte_security_session_conf`; `crypto_xform` points into `xform`.
    pub conf: sys::rte_security_session_conf,
    /// `struct rte_crypto_sym_xform` (AEAD); `aead.key.data` points into `key`.
    pub xform: Box<sys::rte_crypto_sym_xform>,
    key: Box<[u8]>,
}

impl std::fmt::Debug for CSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "CSession {{ spi: {}, key: <redacted {} bytes> }}",
            self.spi(),
            self.key.len()
        )
    }
}

impl Drop for CSession {
    fn drop(&mut self) {
        // Clear the key copy so it does not linger in freed memory.
        for b in self.key.iter_mut() {
            // SAFETY: `b` is a valid, aligned byte of the boxed slice; the volatile write
            // keeps the compiler from eliding the clearing.
            unsafe { std::ptr::write_volatile(b, 0) };
        }
    }
}

impl CSession {
    /// Builds the structs for an SA.
    pub fn new(sa: &Sa) -> Self {
        let inbound = sa.direction == SaDirection::Inbound;
        let key: Box<[u8]> = sa.key.cipher_key().to_vec().into_boxed_slice();
        let mut xform: Box<sys::rte_crypto_sym_xform> = Box::default();
        xform.type_ = sys::RTE_CRYPTO_SYM_XFORM_AEAD;
        // SAFETY: `aead` is the union member selected by `type_` just set; all its fields
        // are plain data. The key pointer stays valid as long as `key`, which CSession owns
        // next to the transform (a boxed slice does not move when CSession moves).
        unsafe {
            let aead = &mut xform.__bindgen_anon_1.aead;
            aead.op = if inbound {
                sys::RTE_CRYPTO_AEAD_OP_DECRYPT
            } else {
                sys::RTE_CRYPTO_AEAD_OP_ENCRYPT
            };
            aead.algo = sys::RTE_CRYPTO_AEAD_AES_GCM;
            aead.key.data = key.as_ptr();
            aead.key.length = sa.session.key_length;
            aead.iv.length = sa.session.iv_length;
            aead.digest_length = sa.session.digest_length;
            aead.aad_length = sa.session.aad_length;
        }
        let mut conf = sys::rte_security_session_conf {
            action_type: sys::RTE_SECURITY_ACTION_TYPE_INLINE_PROTOCOL,
            protocol: sys::RTE_SECURITY_PROTOCOL_IPSEC,
            ..Default::default()
        };
        // SAFETY: `ipsec` is the union member selected by `protocol`; plain data.
        unsafe {
            let ipsec = &mut conf.__bindgen_anon_1.ipsec;
            // Sessions are created with the SA index as SPI, then updated to the real SPI
            // (custom_sa_act=1), see sa.rs; this is the configuration after the update.
            ipsec.spi = sa.spi;
            // ipsec-secgw copies the salt's four key bytes as they lie in memory.
            ipsec.salt = u32::from_ne_bytes(sa.key.salt());
            ipsec.direction = if inbound {
                sys::RTE_SECURITY_IPSEC_SA_DIR_INGRESS
            } else {
                sys::RTE_SECURITY_IPSEC_SA_DIR_EGRESS
            };
            ipsec.proto = sys::RTE_SECURITY_IPSEC_SA_PROTO_ESP;
            ipsec.mode = sys::RTE_SECURITY_IPSEC_SA_MODE_TUNNEL;
            ipsec.options.set_esn(u32::from(sa.session.esn));
            ipsec.replay_win_sz = sa.session.replay_win_sz;
            set_tunnel(&mut ipsec.tunnel, sa.src, sa.dst, sa.session.tunnel_ttl);
        }
        let mut s = Self { conf, xform, key };
        s.conf.crypto_xform = &mut *s.xform;
        s
    }

    /// The SPI in the configuration.
    pub fn spi(&self) -> u32 {
        // SAFETY: `new` always selects the `ipsec` member.
        unsafe { self.conf.__bindgen_anon_1.ipsec.spi }
    }

    /// The `ipsec` transform, to read back.
    pub fn ipsec(&self) -> &sys::rte_security_ipsec_xform {
        // SAFETY: `new` always selects the `ipsec` member.
        unsafe { &self.conf.__bindgen_anon_1.ipsec }
    }

    /// The AEAD transform, to read back.
    pub fn aead(&self) -> &sys::rte_crypto_aead_xform {
        // SAFETY: `new` always selects the `aead` member.
        unsafe { &self.xform.__bindgen_anon_1.aead }
    }

    /// The key bytes the transform points at (tests only compare them).
    pub fn key_bytes(&self) -> &[u8] {
        let a = self.aead();
        // SAFETY: `data` points at `self.key`, `length` bytes long, alive as `self` is.
        unsafe { std::slice::from_raw_parts(a.key.data, usize::from(a.key.length)) }
    }
}

fn set_tunnel(t: &mut sys::rte_security_ipsec_tunnel_param, src: IpAddr, dst: IpAddr, ttl: u8) {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            t.type_ = sys::RTE_SECURITY_IPSEC_TUNNEL_IPV4;
            // SAFETY: `ipv4` is the member selected by `type_`; addresses are stored in
            // network order as `struct in_addr`.
            unsafe {
                let v4 = &mut t.__bindgen_anon_1.ipv4;
                v4.src_ip.s_addr = u32::from_ne_bytes(s.octets());
                v4.dst_ip.s_addr = u32::from_ne_bytes(d.octets());
                v4.ttl = ttl;
            }
        }
        (s, d) => {
            t.type_ = sys::RTE_SECURITY_IPSEC_TUNNEL_IPV6;
            let (IpAddr::V6(s), IpAddr::V6(d)) = (s, d) else {
                return;
            };
            // SAFETY: `ipv6` is the member selected by `type_`; `in6_addr` holds 16 bytes.
            unsafe {
                let v6 = &mut t.__bindgen_anon_1.ipv6;
                v6.src_addr.__in6_u.__u6_addr8 = s.octets();
                v6.dst_addr.__in6_u.__u6_addr8 = d.octets();
                v6.hlimit = ttl;
            }
        }
    }
}
