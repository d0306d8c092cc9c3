//! `.pipe` policies join the admin tier: the `.pipe` form of the AdminNetworkPolicy of
//! conformance case anp-01 must give the case's expected verdict for every probe.

use pipec::conformance::{available_engines, run_case, Case};

fn shared(path: &str) -> String {
    let full = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/conformance/").to_string() + path;
    std::fs::read_to_string(&full)
        .unwrap_or_else(|e| panic!("{full}: {e} (CI clones the repository beside shared/)"))
}

#[test]
fn anp_01_written_in_pipe_gives_every_expected_verdict() {
    let text = shared("anp-01-ingress-tcp-rule-order-original.yaml");
    let mut case: Case = serde_yaml::from_str(&text).expect("case parses");
    let original = run_case("anp-01", &case, &available_engines());
    assert_eq!(original.failed, 0, "{}", original.lines.join("\n"));
    let pipe = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/anp-01.pipe"
    ))
    .expect("example");
    case.policies.clear();
    case.pipe_policies = vec![pipe];
    let report = run_case("anp-01.pipe", &case, &available_engines());
    assert_eq!(report.failed, 0, "{}", report.lines.join("\n"));
    assert_eq!(report.passed, original.passed, "the same probes ran");
    assert!(report.passed >= case.probes.len());
}

#[test]
fn a_pipe_deny_changes_the_verdict_so_the_test_above_can_fail() {
    let text = shared("anp-01-ingress-tcp-rule-order-original.yaml");
    let mut case: Case = serde_yaml::from_str(&text).expect("case parses");
    case.policies.clear();
    case.pipe_policies = vec![r#"policy "block-all" priority 1 {
  subject namespaces { kubernetes.io/metadata.name = "network-policy-conformance-gryffindor" };
  ingress deny "all" from namespaces {};
}
"#
    .to_string()];
    let report = run_case("deny.pipe", &case, &available_engines());
    assert!(
        report.failed > 0,
        "a deny-all policy must break the allow probes"
    );
}
