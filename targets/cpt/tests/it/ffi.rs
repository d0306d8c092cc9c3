//! The real DPDK structs (feature `dpdk`): every field pipec sets reads back as the SA and
//! its typed session configuration say, and the key pointer holds the SA's cipher key.

use pipec_cpt::ffi::CSession;
use pipec_dpdk_sys::sys;

use crate::common::{cluster, keys};

#[test]
fn session_structs_match_the_typed_configuration() {
    let art = pipec_cpt::compile(&cluster(), "node-a", &keys("keys-3.yaml")).expect("compiles");
    for sa in &art.sas {
        let s = CSession::new(sa);
        assert_eq!(
            s.conf.action_type,
            sys::RTE_SECURITY_ACTION_TYPE_INLINE_PROTOCOL
        );
        assert_eq!(s.conf.protocol, sys::RTE_SECURITY_PROTOCOL_IPSEC);
        assert!(std::ptr::eq(s.conf.crypto_xform, &*s.xform));
        let ip = s.ipsec();
        assert_eq!(ip.spi, sa.spi);
        assert_eq!(ip.salt.to_ne_bytes(), sa.key.salt());
        assert_eq!(ip.proto, sys::RTE_SECURITY_IPSEC_SA_PROTO_ESP);
        assert_eq!(ip.mode, sys::RTE_SECURITY_IPSEC_SA_MODE_TUNNEL);
        assert_eq!(ip.options.esn(), 1);
        assert_eq!(ip.replay_win_sz, sa.session.replay_win_sz);
        let dir = match sa.direction {
            pipec_cpt::SaDirection::Inbound => sys::RTE_SECURITY_IPSEC_SA_DIR_INGRESS,
            pipec_cpt::SaDirection::Outbound => sys::RTE_SECURITY_IPSEC_SA_DIR_EGRESS,
        };
        assert_eq!(ip.direction, dir);
        assert_eq!(ip.tunnel.type_, sys::RTE_SECURITY_IPSEC_TUNNEL_IPV4);
        let a = s.aead();
        assert_eq!(a.algo, sys::RTE_CRYPTO_AEAD_AES_GCM);
        assert_eq!(
            (a.key.length, a.iv.length, a.digest_length, a.aad_length),
            (16, 12, 16, 12)
        );
        assert_eq!(s.key_bytes(), sa.key.cipher_key());
        assert!(!format!("{s:?}").contains(&sa.key.material.expose_hex()[..8]));
    }
}
