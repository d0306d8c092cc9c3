//! A wildcard deny that a named remote's allow outranks (a `.pipe` policy: ops may reach
//! SSH, every remote is denied it) cannot be a wildcard entry in the datapath, or its deny
//! would win over the allow. Codegen leaves it out and writes the deny for every identity
//! the rules do not name instead; real packets show each remote gets its verdict.

use std::net::IpAddr;

use pipec_ebpf::datapath::{TC_ACT_OK, TC_ACT_SHOT};
use pipec_ebpf::packet::{self, L4, TCP_SYN};
use pipec_ebpf::Program;

use crate::common::{loopback_artifact_of, TestDatapath};

const MANIFEST: &str = "\
apiVersion: v1
kind: Namespace
metadata: {name: prod, labels: {team: prod}}
---
apiVersion: v1
kind: Namespace
metadata: {name: ops, labels: {team: ops}}
---
apiVersion: v1
kind: Namespace
metadata: {name: dev, labels: {team: dev}}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: prod, labels: {app: web}}
spec: {containers: [{name: c, ports: [{containerPort: 22}]}]}
status: {podIP: 10.244.0.10, podIPs: [{ip: 10.244.0.10}]}
---
apiVersion: v1
kind: Pod
metadata: {name: admin, namespace: ops, labels: {app: admin}}
spec: {containers: [{name: c}]}
status: {podIP: 10.244.0.20, podIPs: [{ip: 10.244.0.20}]}
---
apiVersion: v1
kind: Pod
metadata: {name: tool, namespace: dev, labels: {app: tool}}
spec: {containers: [{name: c}]}
status: {podIP: 10.244.0.30, podIPs: [{ip: 10.244.0.30}]}
";

const PIPE: &str = "\
policy \"ssh\" priority 10 {
  subject namespaces { team = \"prod\" };
  ingress allow \"ops-ssh\" from namespaces { team = \"ops\" } ports tcp 22;
  ingress deny \"no-ssh\" from entity all ports tcp 22;
}
";

fn ip(s: &str) -> IpAddr {
    s.parse().expect("an address")
}

/// The verdict of `to_pod` (where the destination's ingress policy runs) on a SYN.
fn ingress(dp: &TestDatapath, src: &str, dst: &str, l4: L4) -> i32 {
    dp.run(Program::ToPod, &packet::build(ip(src), ip(dst), l4), 1, 0)
        .expect("test run")
        .verdict
}

fn syn(sport: u16, dport: u16) -> L4 {
    L4::Tcp {
        sport,
        dport,
        flags: TCP_SYN,
    }
}

#[test]
fn a_named_allow_outranks_a_deny_for_every_remote() {
    let artifact = loopback_artifact_of(&[("cluster.yaml", MANIFEST), ("ssh.pipe", PIPE)]);
    let web = artifact.endpoints[&ip("10.244.0.10")].id;
    let explicit_denies: Vec<u32> = artifact
        .policy
        .iter()
        .filter(|(m, d)| {
            m.endpoint == web && d.action == pipec_ebpf::artifact::Action::Deny && m.identity != 0
        })
        .map(|(m, _)| m.identity)
        .collect();
    assert!(
        !explicit_denies.is_empty(),
        "the deny is written per identity, not as a wildcard"
    );
    let mut dp = TestDatapath::load("conflict");
    dp.write(&artifact).expect("write");
    let web = "10.244.0.10";
    let cases = [
        ("ops reaches SSH", "10.244.0.20", syn(40000, 22), TC_ACT_OK),
        (
            "dev is denied SSH",
            "10.244.0.30",
            syn(40001, 22),
            TC_ACT_SHOT,
        ),
        ("dev reaches HTTP", "10.244.0.30", syn(40002, 80), TC_ACT_OK),
        (
            "the world is denied SSH",
            "192.0.2.1",
            syn(40003, 22),
            TC_ACT_SHOT,
        ),
        (
            "the world reaches HTTP",
            "192.0.2.1",
            syn(40004, 80),
            TC_ACT_OK,
        ),
        (
            "dev's UDP passes",
            "10.244.0.30",
            L4::Udp {
                sport: 40005,
                dport: 22,
            },
            TC_ACT_OK,
        ),
    ];
    for (what, src, l4, want) in cases {
        assert_eq!(ingress(&dp, src, web, l4), want, "{what}");
    }
}
