//! The testpmd oracle: every `flow create` line the code generator writes must parse in
//! Debian's `dpdk-testpmd` 22.11 and reach the PMD (net_null answers ENOSYS).
//!
//! Skipped with a message when `dpdk-testpmd` is not installed, unless
//! `PIPEC_REQUIRE_TESTPMD=1` (CI sets it), which turns the skip into a failure.

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
