//! The testpmd oracle: every `flow create` line the code generator writes must parse in
//! Debian's `dpdk-testpmd` 22.11 and reach the PMD (net_null answers ENOSYS).
//!
//! Skipped with a message when `dpdk-testpmd` is not installed, unless
//! `PIPEC_REQUIRE_TESTPMD=1` (CI sets it), which turns the skip into a failure.

use pipec::backend::{Backend as _, HwAction, HwMatch, PacketField, PlanSlice};
use pipec_rte_flow::fixtures::{cnxk_slice, syntax_rules};
use pipec_rte_flow::oracle::{self, Verdict};
use pipec_rte_flow::{testpmd, RteFlowBackend};

fn available() -> bool {
    if oracle::testpmd_available() {
        return true;
    }
    assert!(
        std::env::var("PIPEC_REQUIRE_TESTPMD").as_deref() != Ok("1"),
        "PIPEC_REQUIRE_TESTPMD=1 but dpdk-testpmd is not installed (Debian package `dpdk`)"
    );
    eprintln!("skipped: dpdk-testpmd is not installed (Debian package `dpdk`)");
    false
}

fn assert_all_reach_pmd(lines: &[String]) {
    let answers = oracle::run(lines).expect("testpmd runs");
    let bad: Vec<_> = answers
        .iter()
        .filter(|a| !matches!(a.verdict, Verdict::ReachedPmd(_)))
        .collect();
    assert!(bad.is_empty(), "lines testpmd did not accept: {bad:#?}");
    assert_eq!(answers.len(), lines.len());
}

#[test]
fn every_item_field_form_and_action_parses() {
    if !available() {
        return;
    }
    let lines: Vec<String> = syntax_rules()
        .iter()
        .map(|r| testpmd::flow_create(r).expect("expressible"))
        .collect();
    assert_all_reach_pmd(&lines);
}

#[test]
fn cnxk_backend_output_parses() {
    if !available() {
        return;
    }
    let art = RteFlowBackend::default()
        .lower_slice(&cnxk_slice())
        .unwrap();
    let lines = art.flow_lines();
    // The SECURITY rule has no testpmd form; every other rule has a line.
    assert_eq!(lines.len(), art.rules.len() - 1);
    assert_all_reach_pmd(&lines);
}

#[test]
fn the_oracle_tells_parse_errors_from_pmd_errors() {
    if !available() {
        return;
    }
    let lines = vec![
        "flow create 0 ingress pattern eth / ipv4 bogus / end actions drop / end".to_string(),
        "flow create 0 ingress pattern eth / end actions drop / end".to_string(),
        "flow create 0 ingress pattern eth / ipv4 / esp / end actions security / end".to_string(),
    ];
    let answers = oracle::run(&lines).expect("testpmd runs");
    assert_eq!(answers[0].verdict, Verdict::ParseError);
    assert!(
        matches!(&answers[1].verdict, Verdict::ReachedPmd(m) if m.contains("Function not implemented"))
    );
    assert_eq!(answers[2].verdict, Verdict::ParseError);
}

/// Two pods that accept nothing and may send only TCP 80 to `web`, a Service in front of
/// `web`: their egress policy goes to hardware on their own ports.
const ISOLATED: &str = "\
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: default, labels: {app: client}}
spec: {containers: [{name: c, image: i}]}
status: {podIP: 10.244.0.10}
---
apiVersion: v1
kind: Pod
metadata: {name: b, namespace: default, labels: {app: client}}
spec: {containers: [{name: c, image: i}]}
status: {podIP: 10.244.0.12}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: default, labels: {app: web}}
spec: {containers: [{name: c, image: i, ports: [{containerPort: 80}]}]}
status: {podIP: 10.244.0.11}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec: {selector: {app: web}, ports: [{port: 80}]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: isolate-clients, namespace: default}
spec:
  podSelector: {matchLabels: {app: client}}
  policyTypes: [Ingress, Egress]
  egress:
  - to: [{podSelector: {matchLabels: {app: web}}}]
    ports: [{port: 80}]
";

#[test]
fn rules_on_pods_ports_parse() {
    if !available() {
        return;
    }
    let loaded = pipec::driver::load_texts(&[("isolated.yaml", ISOLATED)], &Default::default());
    assert!(!loaded.has_errors());
    let lowered = pipec::lower::cluster_to_mag(&loaded.cluster, None);
    let info = pipec::mag::validate(lowered.mag()).expect("valid");
    let backend = RteFlowBackend::default();
    let plan = pipec::partition::mag_to_plan(lowered.mag(), &info, backend.profile(), &[]);
    let ports: std::collections::BTreeSet<u16> = plan.slice.rules.iter().map(|r| r.port).collect();
    // The uplink and the two clients' ports.
    assert!(ports.len() >= 3, "{ports:?}");
    let art = backend.lower_slice(&plan.slice).unwrap();
    let lines = art.flow_lines();
    assert_eq!(lines.len(), plan.slice.rules.len());
    assert_all_reach_pmd(&lines);
}

#[test]
fn ports_beyond_testpmds_limit_are_renumbered_and_parse() {
    if !available() {
        return;
    }
    let rule = |port: u16| pipec::backend::HwRule {
        id: u32::from(port),
        port,
        direction: pipec::backend::PortDirection::Ingress,
        level: 0,
        matches: vec![HwMatch::prefix(PacketField::Ipv4Dst, 0x0a00_0000, 8)],
        actions: vec![HwAction::Drop],
        origin: String::new(),
    };
    let slice = PlanSlice {
        target: "octeon-cn10k".into(),
        rules: vec![rule(0), rule(40), rule(700)],
    };
    let lines = RteFlowBackend::default()
        .lower_slice(&slice)
        .unwrap()
        .flow_lines();
    assert!(lines[2].starts_with("flow create 700 "), "{}", lines[2]);
    assert_all_reach_pmd(&lines);
}
