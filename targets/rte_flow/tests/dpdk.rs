//! Tests of the C structures and the apply path against the system DPDK (feature `dpdk`):
//! EAL with `--no-huge --no-pci --vdev net_null0`.

#![cfg(feature = "dpdk")]

// Dependencies of the package that this target does not use itself; they serve its
// other targets. `unused_crate_dependencies` checks every target against all of them.
use insta as _;
use pipec as _;
use pipec_dpdk_sys as _;
use rustc_hash as _;
use serde as _;
use serde_json as _;
use thiserror as _;

use pipec_rte_flow::ffi::{apply, CRule, Eal};
use pipec_rte_flow::fixtures::{cnxk_slice, syntax_rules};
use pipec_rte_flow::RteFlowBackend;

fn eal() -> &'static Eal {
    let prefix = format!("pipec-dpdk-test-{}", std::process::id());
    Eal::init(&[
        "pipec-test",
        "-l",
        "0",
        "--no-huge",
        "--no-pci",
        "-m",
        "128",
        "--file-prefix",
        &prefix,
        "--vdev",
        "net_null0",
        "--log-level",
        "lib.eal:error",
    ])
    .expect("EAL starts without hugepages")
}

#[test]
fn rules_round_trip_through_rte_flow_conv() {
    for rule in syntax_rules() {
        let c = CRule::new(&rule);
        let back = c
            .round_trip(rule.port)
            .expect("rte_flow_conv copies the rule");
        assert_eq!(back, rule);
    }
    let art = RteFlowBackend::default()
        .lower_slice(&cnxk_slice())
        .unwrap();
    for r in &art.rules {
        let back = CRule::new(&r.rule).round_trip(r.rule.port).unwrap();
        assert_eq!(back, r.rule);
    }
}

#[test]
fn refusals_go_back_to_ebpf_with_the_reason() {
    let port = eal().port("net_null0").expect("the vdev is a port");
    let art = RteFlowBackend::default()
        .lower_slice(&cnxk_slice())
        .unwrap();
    let report = apply(port, &art);
    // net_null has no flow operations: every rule is refused with ENOSYS.
    assert!(report.installed.is_empty());
    assert_eq!(report.back_to_ebpf.len(), art.rules.len());
    let (_, first) = &report.back_to_ebpf[0];
    assert_eq!(first.reason.code(), "device");
    assert_eq!(
        first.to_string(),
        "target octeon-cn10k cannot take this: device refused (ENOSYS): Function not implemented"
    );
}
