//! Services from the wire: clients outside the node reach a Service on its node port, its
//! load-balancer IP, its external IP and its cluster IP through `from_wire`, with real
//! packets and `BPF_PROG_TEST_RUN`. The maps are compiled from manifests through the MAG, as
//! the daemon compiles them.
//!
//! What each test can catch: a frontend `from_wire` does not translate (the packet keeps
//! the frontend as its destination), a reply `from_pod` does not reverse-NAT (it leaves
//! from the backend's address), a source rewritten before the backend's ingress policy (the
//! allowed client would be denied, the denied one allowed), affinity that does not hold
//! for outside clients, and the wire-only rows of a traffic policy leaking to pods or
//! missing from the wire.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::PathBuf;

use pipec::driver;
use pipec::lower;
use pipec::mag;
use pipec::model::build::BuildOptions;
use pipec_ebpf::datapath::{RunResult, TC_ACT_OK, TC_ACT_SHOT};
use pipec_ebpf::packet::{self, L4, TCP_ACK, TCP_SYN};
use pipec_ebpf::{mag_to_ebpf, EbpfArtifact, Program};
use pipec_ebpf_common as c;

use crate::common::TestDatapath;

const LO: u32 = 1;

/// One node (172.18.0.2) with two dual-stack web pods; `web` is a LoadBalancer Service
/// with a node port, a load-balancer IP and an external IP, whose pods admit only
/// 192.0.2.0/24 and 2001:db8:2::/48; `sticky` is a NodePort Service with ClientIP affinity
/// on the same pods; `web6` is `web` in IPv6.
const MANIFEST: &str = r#"
apiVersion: v1
kind: Node
metadata: {name: n1}
status: {addresses: [{type: InternalIP, address: 172.18.0.2}]}
---
apiVersion: v1
kind: Pod
metadata: {name: web-1, namespace: default, labels: {app: web}}
spec: {nodeName: n1, containers: [{name: c, ports: [{containerPort: 8080}]}]}
status: {podIP: 10.244.1.10, podIPs: [{ip: 10.244.1.10}, {ip: "fd00:244:1::10"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: web-2, namespace: default, labels: {app: web}}
spec: {nodeName: n1, containers: [{name: c, ports: [{containerPort: 8080}]}]}
status: {podIP: 10.244.1.11, podIPs: [{ip: 10.244.1.11}, {ip: "fd00:244:1::11"}]}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  type: LoadBalancer
  clusterIP: 10.96.0.30
  externalIPs: [198.51.100.10]
  externalTrafficPolicy: Local
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080, nodePort: 30080}]
status: {loadBalancer: {ingress: [{ip: 203.0.113.10}]}}
---
apiVersion: v1
kind: Service
metadata: {name: sticky, namespace: default}
spec:
  type: NodePort
  clusterIP: 10.96.0.31
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080, nodePort: 30081}]
  sessionAffinity: ClientIP
---
apiVersion: v1
kind: Service
metadata: {name: web6, namespace: default}
spec:
  type: LoadBalancer
  ipFamilies: [IPv6]
  clusterIPs: ["fd00:96::32"]
  externalIPs: ["2001:db8:100::10"]
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080, nodePort: 30082}]
status: {loadBalancer: {ingress: [{ip: "2001:db8:113::10"}]}}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-from-partners, namespace: default}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
  - from: [{ipBlock: {cidr: 192.0.2.0/24}}, {ipBlock: {cidr: "2001:db8:2::/48"}}]
    ports: [{port: 8080, protocol: TCP}]
"#;

const PARTNER: &str = "192.0.2.7";
const STRANGER: &str = "198.18.0.9";

/// The frontends of `web` an outside client can use: node port, load-balancer IP,
/// external IP, cluster IP.
const WEB_FRONTENDS: [(&str, u16); 4] = [
    ("172.18.0.2", 30080),
    ("203.0.113.10", 80),
    ("198.51.100.10", 80),
    ("10.96.0.30", 80),
];

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn web_backends() -> BTreeSet<(IpAddr, u16)> {
    BTreeSet::from([(ip("10.244.1.10"), 8080), (ip("10.244.1.11"), 8080)])
}

/// The manifest compiled through a session (manifest → MAG → eBPF maps), endpoints on
/// loopback, where test runs happen.
fn artifact() -> EbpfArtifact {
    crate::common::loopback_artifact("wire.yaml", MANIFEST)
}

fn syn(client: &str, sport: u16, (dst, dport): (&str, u16)) -> Vec<u8> {
    let l4 = L4::Tcp {
        sport,
        dport,
        flags: TCP_SYN,
    };
    packet::build(ip(client), ip(dst), l4)
}

fn run(dp: &TestDatapath, prog: Program, frame: &[u8]) -> RunResult {
    dp.run(prog, frame, LO, 0).expect("test run")
}

/// Sends a SYN from the wire and answers it from the backend it reached: checks that the
/// SYN was translated to a backend with the client's address kept, and that the SYN-ACK
/// leaves from the frontend. Returns the backend.
fn connect_and_reply(
    dp: &TestDatapath,
    client: &str,
    sport: u16,
    fe: (&str, u16),
) -> (IpAddr, u16) {
    let r = run(dp, Program::FromWire, &syn(client, sport, fe));
    assert_eq!(r.verdict, TC_ACT_OK, "{client} to {fe:?}");
    assert!(
        packet::checksums_ok(&r.packet),
        "the DNAT kept the checksums right"
    );
    let p = packet::parse(&r.packet).expect("a packet");
    assert_eq!(
        (p.src, p.sport),
        (ip(client), sport),
        "the backend sees the original client"
    );
    assert_eq!(
        r.mark & c::MARK_MAGIC_MASK,
        c::MARK_POLICY_DONE,
        "from_wire ran the ingress checks of the local backend"
    );
    let backend = (p.dst, p.dport);
    let reply = L4::Tcp {
        sport: p.dport,
        dport: sport,
        flags: TCP_SYN | TCP_ACK,
    };
    let r = run(
        dp,
        Program::FromPod,
        &packet::build(p.dst, ip(client), reply),
    );
    assert_eq!(r.verdict, TC_ACT_OK, "the reply of {client} to {fe:?}");
    assert!(
        packet::checksums_ok(&r.packet),
        "the reverse NAT kept the checksums right"
    );
    let back = packet::parse(&r.packet).expect("a reply");
    assert_eq!(
        ((back.src, back.sport), (back.dst, back.dport)),
        ((ip(fe.0), fe.1), (ip(client), sport)),
        "the reply leaves from the frontend the client sent to"
    );
    backend
}

#[test]
fn every_frontend_reaches_a_backend_from_the_wire_and_the_reply_leaves_from_it() {
    let art = artifact();
    let mut dp = TestDatapath::load("wire_frontends");
    dp.write(&art).expect("write the maps");
    for (i, fe) in WEB_FRONTENDS.into_iter().enumerate() {
        let mut reached = BTreeSet::new();
        for j in 0..16u16 {
            reached.insert(connect_and_reply(
                &dp,
                PARTNER,
                42000 + 100 * i as u16 + j,
                fe,
            ));
        }
        // Maglev spreads 16 connections over both backends (the hash is deterministic).
        assert_eq!(reached, web_backends(), "{fe:?}");
    }
}

#[test]
fn a_client_the_backend_does_not_admit_is_denied_after_the_dnat() {
    let art = artifact();
    let mut dp = TestDatapath::load("wire_denied");
    dp.write(&art).expect("write the maps");
    for fe in WEB_FRONTENDS {
        let r = run(&dp, Program::FromWire, &syn(STRANGER, 43000, fe));
        assert_eq!(r.verdict, TC_ACT_SHOT, "{STRANGER} to {fe:?}");
    }
}

#[test]
fn client_ip_affinity_holds_for_a_client_on_the_wire() {
    let art = artifact();
    let mut dp = TestDatapath::load("wire_affinity");
    dp.write(&art).expect("write the maps");
    let sticky = ("172.18.0.2", 30081);
    let reached: BTreeSet<_> = (0..16u16)
        .map(|j| connect_and_reply(&dp, PARTNER, 44000 + j, sticky))
        .collect();
    assert_eq!(reached.len(), 1, "one client, one backend: {reached:?}");
    // The same 16 connections to the Service without affinity spread (previous test), so
    // the one backend here is the affinity's doing, not the hash's.
    dp.flush_state().expect("flush");
    let spread: BTreeSet<_> = (0..16u16)
        .map(|j| connect_and_reply(&dp, PARTNER, 44000 + j, ("172.18.0.2", 30080)))
        .collect();
    assert_eq!(spread, web_backends());
}

/// `examples/traffic-policy`: `web` has `internalTrafficPolicy` and
/// `externalTrafficPolicy: Local`, endpoints web-1 on n1 and web-2 on n2, none on n3.
fn traffic_policy_artifact(node: &str) -> EbpfArtifact {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/traffic-policy");
    let loaded = driver::load(&[dir], &BuildOptions::default());
    assert!(!loaded.has_errors(), "{}", loaded.render());
    let lowered = lower::cluster_to_mag(&loaded.cluster, Some(node));
    let info = mag::validate(lowered.mag()).unwrap();
    let mut art = mag_to_ebpf(lowered.mag(), &info).unwrap();
    art.bind_interfaces(|_| Some(LO));
    art
}

/// Where 32 SYNs from `client` to `dst:port` go through `prog`: the translated
/// destinations, or `None` for a dropped one.
fn destinations(
    dp: &TestDatapath,
    prog: Program,
    client: &str,
    fe: (&str, u16),
) -> BTreeSet<Option<(IpAddr, u16)>> {
    (0..32u16)
        .map(|i| {
            let r = run(dp, prog, &syn(client, 41000 + i, fe));
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
fn traffic_policies_give_the_wire_its_own_rows() {
    let art = traffic_policy_artifact("n1");
    let cluster_ip = ("10.96.0.10", 80);
    assert_eq!(
        art.wire_services
            .keys()
            .map(|f| (f.addr, f.port))
            .collect::<Vec<_>>(),
        [(ip(cluster_ip.0), cluster_ip.1)],
        "the cluster IP's row for the wire goes to wire_services\n{art}"
    );
    let mut dp = TestDatapath::load("wire_tp_n1");
    dp.write(&art).expect("write the maps");
    let web1 = Some((ip("10.244.1.5"), 8080));
    let web2 = Some((ip("10.244.2.5"), 8080));
    // internalTrafficPolicy: Local binds this node's pods, not an outside client, which
    // keeps every endpoint (the reference does not know its node).
    assert_eq!(
        destinations(&dp, Program::FromPod, "10.244.1.9", cluster_ip),
        BTreeSet::from([web1])
    );
    assert_eq!(
        destinations(&dp, Program::FromWire, "192.0.2.1", cluster_ip),
        BTreeSet::from([web1, web2])
    );
    // externalTrafficPolicy: Local: this node's node port reaches this node's endpoint.
    assert_eq!(
        destinations(&dp, Program::FromWire, "192.0.2.1", ("172.18.0.1", 30080)),
        BTreeSet::from([web1])
    );
    // A connection balanced to web-2 on n2 is left to routing: no ingress checks here, no
    // mark, the client's address kept.
    let to_remote = (0..32u16)
        .map(|i| {
            run(
                &dp,
                Program::FromWire,
                &syn("192.0.2.1", 41000 + i, cluster_ip),
            )
        })
        .find(|r| packet::parse(&r.packet).map(|p| (p.dst, p.dport)) == web2)
        .expect("some connection goes to web-2");
    assert_eq!(to_remote.mark, 0);
    assert_eq!(
        packet::parse(&to_remote.packet).unwrap().src,
        ip("192.0.2.1")
    );
}

#[test]
fn a_node_without_local_endpoints_drops_its_node_port_from_the_wire() {
    let art = traffic_policy_artifact("n3");
    let mut dp = TestDatapath::load("wire_tp_n3");
    dp.write(&art).expect("write the maps");
    assert_eq!(
        destinations(&dp, Program::FromWire, "192.0.2.1", ("172.18.0.3", 30080)),
        BTreeSet::from([None])
    );
}

#[test]
fn ipv6_frontends_from_the_wire_translate_both_ways_and_keep_the_client() {
    let art = artifact();
    let mut dp = TestDatapath::load("wire_ipv6");
    dp.write(&art).expect("write the maps");
    let backends = BTreeSet::from([(ip("fd00:244:1::10"), 8080), (ip("fd00:244:1::11"), 8080)]);
    for (i, fe) in [
        ("2001:db8:113::10", 80),
        ("2001:db8:100::10", 80),
        ("fd00:96::32", 80),
    ]
    .into_iter()
    .enumerate()
    {
        let reached: BTreeSet<_> = (0..16u16)
            .map(|j| connect_and_reply(&dp, "2001:db8:2::7", 45000 + 100 * i as u16 + j, fe))
            .collect();
        assert_eq!(reached, backends, "{fe:?}");
        let r = run(&dp, Program::FromWire, &syn("2001:db8:9::9", 45900, fe));
        assert_eq!(
            r.verdict, TC_ACT_SHOT,
            "a client outside the ipBlock, to {fe:?}"
        );
    }
}
