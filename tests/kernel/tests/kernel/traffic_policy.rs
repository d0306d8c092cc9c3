//! Service traffic policies in the kernel: `examples/traffic-policy` (a NodePort service
//! with `externalTrafficPolicy` and `internalTrafficPolicy` Local, endpoints web-1 on n1 and
//! web-2 on n2, none on n3) compiled from each node's MAG, and real SYNs from a pod of the
//! node through `from_pod`. A node reaches only its own endpoint, and a node without one
//! drops.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::PathBuf;

use pipec::driver;
use pipec::lower;
use pipec::mag;
use pipec::model::build::BuildOptions;
use pipec::model::Cluster;
use pipec_ebpf::artifact::Frontend;
use pipec_ebpf::datapath::{TC_ACT_OK, TC_ACT_SHOT};
use pipec_ebpf::packet::{self, L4, TCP_SYN};
use pipec_ebpf::{mag_to_ebpf, EbpfArtifact, Program};

use crate::common::TestDatapath;

const LO: u32 = 1;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn cluster() -> Cluster {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/traffic-policy");
    let loaded = driver::load(&[dir], &BuildOptions::default());
    assert!(!loaded.has_errors(), "{}", loaded.render());
    loaded.cluster
}

/// The artifact of one node's MAG, every endpoint on loopback (where test runs happen).
fn artifact(c: &Cluster, node: &str) -> EbpfArtifact {
    let lowered = lower::cluster_to_mag(c, Some(node));
    let info = mag::validate(lowered.mag()).unwrap();
    let mut art = mag_to_ebpf(lowered.mag(), &info).unwrap();
    art.bind_interfaces(|_| Some(LO));
    art
}

/// Where `from_pod` sends SYNs from `client` to `dst:port` on 32 source ports: the
/// translated destinations, or `None` for a connection it drops.
fn destinations(
    dp: &TestDatapath,
    client: &str,
    dst: &str,
    port: u16,
) -> BTreeSet<Option<(IpAddr, u16)>> {
    (0..32u16)
        .map(|i| {
            let l4 = L4::Tcp {
                sport: 41000 + i,
                dport: port,
                flags: TCP_SYN,
            };
            let r = dp
                .run(
                    Program::FromPod,
                    &packet::build(ip(client), ip(dst), l4),
                    LO,
                    0,
                )
                .expect("test run");
            match r.verdict {
                TC_ACT_OK => {
                    let p = packet::parse(&r.packet).expect("a packet");
                    Some((p.dst, p.dport))
                }
                v => {
                    assert_eq!(v, TC_ACT_SHOT);
                    None
                }
            }
        })
        .collect()
}

#[test]
fn a_node_reaches_only_its_own_endpoints() {
    let c = cluster();
    let art = artifact(&c, "n1");
    // One shared service entry per frontend; the cluster IP's row for the wire (every
    // endpoint) is in wire_services, which from_pod never reads (see `wire`).
    let frontends: Vec<&Frontend> = art.services.keys().collect();
    assert_eq!(frontends.len(), 2, "{art}");
    assert_eq!(art.wire_services.len(), 1, "{art}");
    let mut dp = TestDatapath::load("tplocal_n1");
    dp.write(&art).expect("write the maps");
    let web1 = BTreeSet::from([Some((ip("10.244.1.5"), 8080))]);
    // internalTrafficPolicy: Local, from client-n1 to the cluster IP.
    assert_eq!(destinations(&dp, "10.244.1.9", "10.96.0.10", 80), web1);
    // externalTrafficPolicy: Local, from client-n1 to its node's node port.
    assert_eq!(destinations(&dp, "10.244.1.9", "172.18.0.1", 30080), web1);
}

#[test]
fn a_node_without_endpoints_drops() {
    let c = cluster();
    let art = artifact(&c, "n3");
    let mut dp = TestDatapath::load("tplocal_n3");
    dp.write(&art).expect("write the maps");
    let dropped = BTreeSet::from([None]);
    assert_eq!(destinations(&dp, "10.244.3.9", "10.96.0.10", 80), dropped);
    assert_eq!(
        destinations(&dp, "10.244.3.9", "172.18.0.3", 30080),
        dropped
    );
}
