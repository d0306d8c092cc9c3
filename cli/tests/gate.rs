//! `check` is a gate: whatever it accepts, every `compile --emit` stage, `explain` and
//! `trace` succeed (issue 18, item 5).
//!
//! Inputs are generated from a small pool of addresses, ports and protocols, so that the
//! collisions that used to pass `check` and then fail in a later stage (two Services on one
//! address, duplicate ports, SCTP and Cilium `ANY` rules on the hardware target) come up
//! often. Each case runs the real binary, as a user would.

// Dependencies of the package that this target does not use itself; they serve its
// other targets. `unused_crate_dependencies` checks every target against all of them.
use anyhow as _;
use clap as _;
use clap_complete as _;
use gencluster as _;
use insta as _;
use ipnet as _;
use mimalloc as _;
use pipec as _;
use pipec_cpt as _;
use pipec_ebpf as _;
use pipec_proto as _;
use pipec_rte_flow as _;
use policy_lang as _;
use serde as _;
use serde_json as _;
use serde_yaml as _;
use tempfile as _;
use tokio as _;
use tonic as _;

use proptest::prelude::*;
use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, Output};

fn pipec(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pipec"))
        .args(args)
        .output()
        .expect("run pipec")
}

/// One generated Service: cluster IP, external IPs, ports (port, protocol, nodePort).
#[derive(Clone, Debug)]
struct Svc {
    cluster_ip: u8,
    external_ip: Option<u8>,
    node_port: bool,
    ports: Vec<(u16, &'static str)>,
}

/// One generated policy: a NetworkPolicy or a Cilium policy with one port rule.
#[derive(Clone, Debug)]
enum Policy {
    Net { port: u16, protocol: &'static str },
    Cilium { port: u16, protocol: &'static str },
}

fn protocol() -> impl Strategy<Value = &'static str> {
    prop_oneof![Just("TCP"), Just("UDP"), Just("SCTP")]
}

fn svc() -> impl Strategy<Value = Svc> {
    (
        0u8..3,
        proptest::option::of(0u8..3),
        any::<bool>(),
        proptest::collection::vec((prop_oneof![Just(80u16), Just(443)], protocol()), 1..3),
    )
        .prop_map(|(cluster_ip, external_ip, node_port, ports)| Svc {
            cluster_ip,
            external_ip,
            node_port,
            ports,
        })
}

fn policy() -> impl Strategy<Value = Policy> {
    let port = prop_oneof![Just(80u16), Just(5000)];
    prop_oneof![
        (port.clone(), protocol()).prop_map(|(port, protocol)| Policy::Net { port, protocol }),
        (port, prop_oneof![Just("TCP"), Just("SCTP"), Just("ANY")])
            .prop_map(|(port, protocol)| Policy::Cilium { port, protocol }),
    ]
}

/// The manifest text of a cluster with two pods, the Services and the policies.
fn manifest(services: &[Svc], policies: &[Policy]) -> String {
    let mut out = String::new();
    for (i, ip) in ["10.0.0.5", "10.0.0.6"].iter().enumerate() {
        let _ = writeln!(
            out,
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: p{i}, namespace: default, labels: {{app: web}}}}\nspec: {{nodeName: n1, containers: [{{name: c, image: x}}]}}\nstatus: {{podIP: {ip}, phase: Running}}\n---"
        );
    }
    for (i, s) in services.iter().enumerate() {
        let kind = if s.node_port { "NodePort" } else { "ClusterIP" };
        let _ = write!(
            out,
            "apiVersion: v1\nkind: Service\nmetadata: {{name: s{i}, namespace: default}}\nspec:\n  type: {kind}\n  clusterIP: 10.96.0.{}\n  selector: {{app: web}}\n",
            10 + s.cluster_ip
        );
        if let Some(e) = s.external_ip {
            let _ = writeln!(out, "  externalIPs: [10.96.0.{}]", 10 + e);
        }
        out.push_str("  ports:\n");
        for (j, (port, protocol)) in s.ports.iter().enumerate() {
            let _ = writeln!(
                out,
                "    - {{name: p{j}, port: {port}, protocol: {protocol}, targetPort: 8080}}"
            );
        }
        out.push_str("---\n");
    }
    for (i, p) in policies.iter().enumerate() {
        let _ = match p {
            Policy::Net { port, protocol } => writeln!(
                out,
                "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: np{i}, namespace: default}}\nspec:\n  podSelector: {{}}\n  ingress: [{{ports: [{{protocol: {protocol}, port: {port}}}]}}]\n---"
            ),
            Policy::Cilium { port, protocol } => writeln!(
                out,
                "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {{name: cnp{i}, namespace: default}}\nspec:\n  endpointSelector: {{}}\n  ingress: [{{toPorts: [{{ports: [{{port: \"{port}\", protocol: {protocol}}}]}}]}}]\n---"
            ),
        };
    }
    out
}

/// Runs one command and fails the case unless it exits 0 without an internal error.
fn must_succeed(args: &[&str], input: &str) -> Result<(), TestCaseError> {
    let out = pipec(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    prop_assert!(
        out.status.success() && !stderr.contains("internal compiler error"),
        "`pipec {}` failed after `check` accepted the input:\n{stderr}\ninput:\n{input}",
        args.join(" ")
    );
    Ok(())
}

fn every_stage(path: &Path, input: &str) -> Result<(), TestCaseError> {
    let file = path.to_str().expect("UTF-8 path");
    for emit in [
        "model",
        "identities",
        "mag",
        "dot",
        "ebpf",
        "plan",
        "rte_flow",
        "testpmd",
    ] {
        must_succeed(&["compile", "--emit", emit, file], input)?;
    }
    must_succeed(&["explain", file], input)?;
    must_succeed(
        &[
            "trace",
            "--from",
            "default/p0",
            "--to",
            "default/p1",
            "--port",
            "80",
            file,
        ],
        input,
    )?;
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn what_check_accepts_every_stage_accepts(
        services in proptest::collection::vec(svc(), 0..4),
        policies in proptest::collection::vec(policy(), 0..3),
    ) {
        let input = manifest(&services, &policies);
        let dir = std::env::temp_dir().join(format!("pipec-gate-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("cluster.yaml");
        std::fs::write(&path, &input).expect("write input");
        let check = pipec(&["check", path.to_str().expect("UTF-8 path")]);
        let stderr = String::from_utf8_lossy(&check.stderr);
        prop_assert!(!stderr.contains("internal compiler error"), "{stderr}");
        prop_assert!(check.status.code() == Some(0) || check.status.code() == Some(1), "{stderr}");
        if check.status.success() {
            every_stage(&path, &input)?;
        }
    }
}
