//! The shared conformance suite through the library, and the runner's own behaviour.

use pipec::conformance::{available_engines, engine_by_name, run_case_text, run_paths};
use std::path::PathBuf;

#[test]
fn shared_conformance_suite_passes() {
    let dir = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/conformance"
    ));
    assert!(
        dir.is_dir(),
        "the conformance suite is missing at {} (the repository is expected beside shared/)",
        dir.display()
    );
    let report = run_paths(&[dir], &available_engines()).expect("cases are readable");
    assert!(
        report.passed > 100,
        "too few checks ran: {}",
        report.summary()
    );
    assert_eq!(
        report.failed,
        0,
        "{}\n{}",
        report.lines.join("\n"),
        report.summary()
    );
}

/// pipec's own cases (`compiler/tests/conformance`, the shared format with upstream
/// citations in each file, and `multi-node/` for clusters of several nodes): every probe on
/// every engine of the library (`reference`, `mag`, `hw`; `ebpf` runs the one-node cases in
/// `cli/tests/cli.rs`), zero failures, and no case skipped.
#[test]
fn own_conformance_cases_pass_on_every_engine() {
    let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/conformance"));
    let files = pipec::conformance::case_files(std::slice::from_ref(&dir)).expect("cases");
    let (mut probes, mut services) = (0, 0);
    for f in &files {
        let text = std::fs::read_to_string(f).expect("readable case");
        let case: pipec::conformance::Case = serde_yaml::from_str(&text).expect("a case");
        assert!(
            text.lines().next().is_some_and(|l| l.starts_with('#')),
            "{} opens with a comment citing its source",
            f.display()
        );
        probes += case.probes.len();
        services += case.service_expectations.len();
    }
    let engines = available_engines();
    let report = run_paths(&[dir], &engines).expect("cases are readable");
    assert_eq!(
        report.failed,
        0,
        "{}\n{}",
        report.lines.join("\n"),
        report.summary()
    );
    assert_eq!(
        report.passed,
        probes * engines.len() + services,
        "every probe ran on every engine: {}",
        report.summary()
    );
}

const CASE: &str = r#"
id: t-01
cluster:
  namespaces:
  - {name: x, labels: {kubernetes.io/metadata.name: x}}
  pods:
  - {namespace: x, name: a, labels: {app: a}, ip: 10.0.0.1, ports: [{name: web, containerPort: 80, protocol: TCP}]}
  - {namespace: x, name: b, labels: {app: b}, ip: 10.0.0.2, ports: []}
  services:
  - {namespace: x, name: web, clusterIP: 10.96.0.1, selector: {app: a}, ports: [{name: http, protocol: TCP, port: 8080, targetPort: web}]}
policies:
- |
  apiVersion: networking.k8s.io/v1
  kind: NetworkPolicy
  metadata: {name: only-b, namespace: x}
  spec:
    podSelector: {matchLabels: {app: a}}
    ingress:
    - from: [{podSelector: {matchLabels: {app: b}}}]
probes:
- {from: x/b, to_service: x/web, port: 8080, protocol: TCP, expect: allow}
- {from: x/b, to: x/a, port: 81, protocol: TCP, expect: allow}
- {from: "ip:192.0.2.1", to: x/a, port: 80, protocol: TCP, expect: allow}
- {from: x/b, to: x/a, port: null, protocol: ICMP, expect: allow}
service_expectations:
- {service: x/web, port: 8080, protocol: TCP, backends: ["x/a:80"]}
- {service: x/web, port: 8080, protocol: TCP, backends: ["x/b:80"]}
"#;

#[test]
fn failures_are_reported_one_line_each() {
    let report = run_case_text(
        "t-01.yaml",
        CASE,
        &[engine_by_name("reference").expect("reference engine")],
    );
    insta::assert_snapshot!(report.lines.join("\n") + "\n" + &report.summary(), @r"
    FAIL t-01: x/b -> x/a 81/TCP: expected allow, got deny (engine reference): nothing listens on port 81/TCP
    FAIL t-01: ip:192.0.2.1 -> x/a 80/TCP: expected allow, got deny (engine reference): ingress denied: isolated for ingress and no rule allows it
    FAIL t-01: service x/web port 8080: expected backends [x/b:80], got [x/a:80]
    3 passed, 3 failed
    ");
}

#[test]
fn a_policy_error_fails_the_case_with_the_diagnostic() {
    let bad = CASE.replace(
        "podSelector: {matchLabels: {app: a}}",
        "podSelector: {matchLabels: {app: 'a b'}}",
    );
    let report = run_case_text(
        "t-01.yaml",
        &bad,
        &[engine_by_name("reference").expect("reference engine")],
    );
    assert_eq!(report.passed, 0);
    assert_eq!(report.failed, 6);
    assert!(
        report.lines[0].contains("t-01.yaml#policies[0]"),
        "{}",
        report.lines[0]
    );
}
