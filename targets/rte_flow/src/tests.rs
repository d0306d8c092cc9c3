//! Unit tests: lowering, the cnxk checks, text and JSON forms, diff.

use super::*;
use crate::fixtures::{cnxk_slice, syntax_rules};
use pipec::backend::{HwMatch, PacketField, PortDirection};

#[test]
fn cnxk_slice_lowers_to_testpmd_text() {
    let art = RteFlowBackend::default()
        .lower_slice(&cnxk_slice())
        .unwrap();
    insta::assert_snapshot!(art.testpmd_text());
}

#[test]
fn cnxk_slice_lowers_to_json() {
    let art = RteFlowBackend::default()
        .lower_slice(&cnxk_slice())
        .unwrap();
    insta::assert_json_snapshot!(art.json());
}

#[test]
fn json_round_trips() {
    for r in syntax_rules() {
        let text = serde_json::to_string(&r).unwrap();
        let back: FlowRule = serde_json::from_str(&text).unwrap();
        assert_eq!(back, r);
    }
}

fn hw(matches: Vec<HwMatch>, actions: Vec<HwAction>) -> HwRule {
    HwRule {
        id: 1,
        port: 0,
        direction: PortDirection::Ingress,
        level: 0,
        matches,
        actions,
        origin: String::new(),
    }
}

fn refusal(rule: HwRule) -> String {
    RteFlowBackend::default()
        .lower_rule(&rule)
        .unwrap_err()
        .reason
        .to_string()
}

#[test]
fn cnxk_refuses_what_the_default_key_lacks() {
    use PacketField::*;
    let tcp = HwMatch::exact(IpProto, 6);
    let v4 = HwMatch::exact(EthType, 0x0800);
    assert_eq!(
        refusal(hw(
            vec![HwMatch::prefix(Ipv6Src, 1 << 120, 8)],
            vec![HwAction::Drop]
        )),
        "field ipv6.src is not matchable"
    );
    assert_eq!(
        refusal(hw(
            vec![v4, tcp, HwMatch::exact(TcpFlags, 2)],
            vec![HwAction::Drop]
        )),
        "field tcp.flags is not matchable"
    );
    assert_eq!(
        refusal(hw(
            vec![v4, HwMatch::exact(EspSpi, 5)],
            vec![HwAction::Drop]
        )),
        "field esp.spi is not matchable"
    );
    assert_eq!(
        refusal(hw(
            vec![v4, HwMatch::exact(IpProto, 47)],
            vec![HwAction::Drop]
        )),
        "field ip.proto cannot be matched with value 47"
    );
    assert_eq!(
        refusal(hw(vec![tcp, HwMatch::exact(L4Dport, 80)], vec![HwAction::Drop])),
        "not one device rule: a transport match without an address family (split the rule by family)"
    );
    assert_eq!(
        refusal(hw(vec![], vec![HwAction::Drop, HwAction::Mark { id: 1 }])),
        "actions: DROP may only be combined with COUNT"
    );
    assert_eq!(
        refusal(hw(
            vec![],
            vec![HwAction::Queue { index: 0 }, HwAction::Drop]
        )),
        "actions: more than one fate action (DROP, QUEUE, RSS, SECURITY, VF, PORT_ID)"
    );
    assert_eq!(
        refusal(hw(vec![], vec![HwAction::Mark { id: 1 }, HwAction::Flag])),
        "actions: MARK and FLAG are mutually exclusive"
    );
    let mut deep = hw(vec![], vec![HwAction::Drop]);
    deep.level = 3;
    assert_eq!(
        refusal(deep.clone()),
        "priority level 3 needs more than the 3 levels"
    );
    assert!(RteFlowBackend::default()
        .with_levels(32)
        .lower_rule(&deep)
        .is_ok());
}

#[test]
fn cnxk_refuses_items_and_actions_outside_the_driver() {
    let p = pipec::backend::octeon_cn10k_profile();
    let reasons: Vec<String> = syntax_rules()
        .iter()
        .map(|r| match cnxk::check_rule(&p, 32, r) {
            Ok(()) => "ok".to_string(),
            Err(e) => e.reason.to_string(),
        })
        .collect();
    insta::assert_debug_snapshot!(reasons);
}

#[test]
fn budgets_are_enforced() {
    let mut slice = cnxk_slice();
    let rss = slice.rules[6].clone();
    for i in 0..7 {
        let mut r = rss.clone();
        r.id = 100 + i;
        r.matches
            .push(HwMatch::exact(PacketField::L4Dport, u128::from(i)));
        r.matches.sort();
        slice.rules.push(r);
    }
    let err = RteFlowBackend::default().lower_slice(&slice).unwrap_err();
    assert_eq!(
        err.reason.to_string(),
        "RSS rules per port budget of 7 is used up"
    );
}

#[test]
fn diff_destroys_stale_rules_before_creating_new_ones() {
    let b = RteFlowBackend::default();
    let old = b.lower_slice(&cnxk_slice()).unwrap();
    let mut s = cnxk_slice();
    s.rules[0].actions = vec![HwAction::Mark { id: 9 }];
    s.rules.remove(1);
    let new = b.lower_slice(&s).unwrap();
    let ops = b.diff(Some(&old), &new);
    let ops = &ops.as_any().downcast_ref::<FlowOps>().unwrap().ops;
    let kinds: Vec<&str> = ops
        .iter()
        .map(|op| match op {
            FlowOp::Destroy { .. } => "destroy",
            FlowOp::Create { .. } => "create",
        })
        .collect();
    // The first rule's action changed (destroy + create) and the second is gone (destroy).
    assert_eq!(kinds, vec!["destroy", "destroy", "create"]);
    let FlowOp::Create { rule, .. } = &ops[2] else {
        unreachable!("the last operation is the create")
    };
    assert_eq!(
        rule.id,
        cnxk_slice().rules[0].id,
        "the re-created rule is the one that changed"
    );
    // Applying the operations to the old rule set gives the new one.
    let mut device: std::collections::BTreeSet<String> =
        old.rules.iter().map(|r| rule_key(&r.rule)).collect();
    for op in ops {
        match op {
            FlowOp::Destroy { key } => assert!(device.remove(key)),
            FlowOp::Create { key, .. } => assert!(device.insert(key.clone())),
        }
    }
    let want: std::collections::BTreeSet<String> =
        new.rules.iter().map(|r| rule_key(&r.rule)).collect();
    assert_eq!(device, want);
}

/// A backend that remembers its earlier compiles lowers and diffs as a fresh one does,
/// over a run of slices where rules change, leave, come back and move between levels, and
/// after a slice it has not seen for more than one compile (whose memo entries are gone).
#[test]
fn a_remembering_backend_lowers_and_diffs_as_a_fresh_one() {
    let base = cnxk_slice();
    let mut slices = vec![base.clone()];
    let mut s = base.clone();
    s.rules[0].actions = vec![HwAction::Mark { id: 9 }];
    s.rules.remove(1);
    slices.push(s.clone());
    s.rules[0].level += 1;
    slices.push(s);
    slices.push(base.clone());
    slices.push(PlanSlice::default());
    slices.push(base);
    let memo = RteFlowBackend::default();
    let mut before: Option<RteFlowArtifact> = None;
    for (i, slice) in slices.iter().enumerate() {
        let fresh = RteFlowBackend::default();
        let got = memo.lower_slice(slice).expect("lowers");
        let want = fresh.lower_slice(slice).expect("lowers");
        assert_eq!(got, want, "slice {i}");
        let ops = |b: &RteFlowBackend| {
            let old = before.as_ref().map(|a| a as &dyn Artifact);
            let ops = b.diff(old, &got);
            ops.as_any()
                .downcast_ref::<FlowOps>()
                .expect("flow ops")
                .clone()
        };
        assert_eq!(ops(&memo), ops(&fresh), "slice {i}");
        before = Some(got);
    }
}

#[test]
fn the_oracle_gives_testpmd_one_device_per_port_and_renumbers_beyond_its_limit() {
    use crate::oracle::{command_port, with_ports, OracleError, MAX_PORTS};
    let line = |p: u16| format!("flow create {p} ingress pattern eth / end actions drop / end");
    assert_eq!(command_port(&line(22)), Some(22));
    assert_eq!(command_port("quit"), None);
    // Ports below the limit run as written, on devices 0..=max.
    let (sent, devices) = with_ports(&[line(0), line(22)]).unwrap();
    assert_eq!((sent, devices), (vec![line(0), line(22)], 23));
    // A port beyond it: the distinct ports, renumbered in order.
    let (sent, devices) = with_ports(&[line(40), line(0), line(77), line(40)]).unwrap();
    assert_eq!(devices, 3);
    assert_eq!(sent, vec![line(1), line(0), line(2), line(1)]);
    let many: Vec<String> = (0..=MAX_PORTS).map(|p| line(p * 2)).collect();
    assert!(matches!(
        with_ports(&many),
        Err(OracleError::TooManyPorts(33))
    ));
}
