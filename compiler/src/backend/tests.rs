//! Unit tests of the backend contract: lookup, profiles, capability checks, diff order.

use super::*;

struct Dummy(Profile);

#[derive(Debug)]
struct DummyArtifact(Vec<(String, String)>);

impl Artifact for DummyArtifact {
    fn target(&self) -> &str {
        "dummy"
    }
    fn text(&self) -> String {
        self.0.iter().map(|(_, t)| format!("{t}\n")).collect()
    }
    fn json(&self) -> serde_json::Value {
        serde_json::json!(self.0)
    }
    fn items(&self) -> Vec<(String, String)> {
        self.0.clone()
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

impl Backend for Dummy {
    fn name(&self) -> &str {
        "dummy"
    }
    fn profile(&self) -> &Profile {
        &self.0
    }
    fn compile(&self, input: &CompileInput<'_>) -> Result<Box<dyn Artifact>, Unsupported> {
        let slice = plan_slice(input);
        for r in &slice.rules {
            self.0.check_rule(r)?;
        }
        Ok(Box::new(DummyArtifact(
            slice
                .rules
                .iter()
                .map(|r| (format!("r{}", r.id), format!("{:?}", r.actions)))
                .collect(),
        )))
    }
}

fn rule(id: u32, matches: Vec<HwMatch>, actions: Vec<HwAction>) -> HwRule {
    HwRule {
        id,
        port: 0,
        direction: Direction::Ingress,
        level: 0,
        matches,
        actions,
        origin: String::new(),
    }
}

#[test]
fn lookup_distinguishes_disabled_and_unknown() {
    let available: Vec<Box<dyn Backend>> = vec![Box::new(Dummy(Profile::default()))];
    assert_eq!(lookup(&available, "dummy").unwrap().name(), "dummy");
    assert_eq!(
        lookup(&available, "octeon-cn10k").err().unwrap(),
        LookupError::Disabled {
            name: "octeon-cn10k".into(),
            feature: "rte_flow".into()
        }
    );
    let err = lookup(&available, "octeon-cn10").err().unwrap();
    assert_eq!(
        err.to_string(),
        "unknown target octeon-cn10 (did you mean octeon-cn10k?)"
    );
}

#[test]
fn default_capabilities_can_do_nothing() {
    let p = Profile {
        name: "empty".into(),
        ..Profile::default()
    };
    let r = rule(
        1,
        vec![HwMatch::exact(PacketField::Ipv4Dst, 1)],
        vec![HwAction::Drop],
    );
    let err = p.check_rule(&r).unwrap_err();
    assert_eq!(err.reason.code(), "field-not-matchable");
    let r = rule(2, vec![], vec![HwAction::Drop]);
    assert_eq!(
        p.check_rule(&r).unwrap_err().reason.code(),
        "action-not-supported"
    );
    let r = rule(3, vec![], vec![]);
    assert_eq!(
        p.check_rule(&r).unwrap_err().reason.code(),
        "priority-level"
    );
}

#[test]
fn cn10k_profile_matches_the_default_mkex() {
    let p = octeon_cn10k_profile();
    let ok = |m: HwMatch| p.check_match(&m).is_ok();
    assert!(ok(HwMatch::ternary(
        PacketField::Ipv4Src,
        0x0a00_00ff,
        0xff00_00ff
    )));
    assert!(ok(HwMatch::ternary(PacketField::L4Dport, 30000, 0xfff0)));
    assert!(ok(HwMatch::exact(PacketField::IpProto, 6)));
    assert!(!ok(HwMatch::exact(PacketField::IpProto, 47)));
    assert!(!ok(HwMatch::prefix(PacketField::Ipv6Src, 1, 64)));
    assert!(!ok(HwMatch::exact(PacketField::EspSpi, 5)));
    assert!(!ok(HwMatch::exact(PacketField::VxlanVni, 5)));
    assert!(!ok(HwMatch::exact(PacketField::TcpFlags, 2)));
    assert!(!ok(HwMatch::exact(PacketField::IcmpType, 8)));
    let egress_mark = HwRule {
        direction: Direction::Egress,
        ..rule(1, vec![], vec![HwAction::Mark { id: 1 }])
    };
    assert_eq!(
        p.check_rule(&egress_mark).unwrap_err().to_string(),
        "target octeon-cn10k cannot take this: action mark is not supported on egress"
    );
    let big_mark = rule(1, vec![], vec![HwAction::Mark { id: 0xFFFE }]);
    assert_eq!(
        p.check_rule(&big_mark).unwrap_err().reason.code(),
        "argument-out-of-range"
    );
}

#[test]
fn diff_is_make_before_break() {
    let b = Dummy(Profile::default());
    let old = DummyArtifact(vec![
        ("r1".into(), "a".into()),
        ("r2".into(), "b".into()),
        ("r3".into(), "c".into()),
    ]);
    let new = DummyArtifact(vec![
        ("r2".into(), "b2".into()),
        ("r3".into(), "c".into()),
        ("r4".into(), "d".into()),
    ]);
    let ops = b.diff(Some(&old), &new);
    let deltas = &ops.as_any().downcast_ref::<Deltas>().unwrap().deltas;
    let ops: Vec<(DeltaOp, String)> = deltas.iter().map(|d| (d.op, d.key.clone())).collect();
    assert_eq!(
        ops,
        vec![
            (DeltaOp::Add, "r4".to_string()),
            (DeltaOp::Modify, "r2".to_string()),
            (DeltaOp::Remove, "r1".to_string()),
        ]
    );
}

#[test]
fn targets_text_lists_profiles() {
    insta::assert_snapshot!(targets_text(&builtin_profiles()));
}

/// The public surface of the backend module, one declaration a line: out-of-tree
/// backends implement this, so any change to it shows up in review as a snapshot diff.
#[test]
fn public_api() {
    let files = [
        ("mod.rs", include_str!("mod.rs")),
        ("profile.rs", include_str!("profile.rs")),
        ("slice.rs", include_str!("slice.rs")),
        // A backend crate also drives a session in its tests and runs the conformance
        // harness; their surfaces are part of what a backend relies on.
        ("session.rs", include_str!("../session.rs")),
        ("conformance.rs", include_str!("../conformance.rs")),
    ];
    let mut api = String::new();
    for (name, text) in files {
        let mut depth_in_tests = false;
        let mut in_trait = false;
        for line in text.lines() {
            if line.starts_with("pub trait") {
                in_trait = true;
            } else if line.starts_with('}') {
                in_trait = false;
            }
            let t = line.trim_start();
            if t.starts_with("mod tests") || t.starts_with("#[cfg(test)]") {
                depth_in_tests = true;
            }
            if depth_in_tests {
                continue;
            }
            let trait_fn = in_trait && t.starts_with("fn ");
            if trait_fn || (t.starts_with("pub ") && !t.starts_with("pub(")) {
                let decl = t.trim_end_matches(['{', ' ']).trim_end();
                api.push_str(&format!("{name}: {decl}\n"));
            }
        }
    }
    insta::assert_snapshot!(api);
}

/// A backend whose `check_rule` accepts everything while its profile cannot match IPv4
/// destinations: the kind of mistake `check_declared` exists for.
struct Lying(Profile);

impl Backend for Lying {
    fn name(&self) -> &str {
        &self.0.name
    }
    fn profile(&self) -> &Profile {
        &self.0
    }
    fn check_rule(&self, _: &HwRule) -> Result<(), Unsupported> {
        Ok(())
    }
    fn compile(&self, input: &CompileInput<'_>) -> Result<Box<dyn Artifact>, Unsupported> {
        Dummy(self.0.clone()).compile(input)
    }
}

fn lying_profile() -> Profile {
    let mut p = octeon_cn10k_profile();
    p.name = "lying".into();
    p.caps.fields.remove("ipv4.dst");
    p
}

#[test]
fn a_backend_that_takes_more_than_its_profile_declares_is_caught() {
    let b = Lying(lying_profile());
    let rules = vec![
        rule(
            7,
            vec![HwMatch::prefix(PacketField::Ipv4Dst, 0x0a00_0001, 32)],
            vec![HwAction::Drop],
        ),
        rule(
            8,
            vec![HwMatch::prefix(PacketField::Ipv4Src, 0x0a00_0001, 32)],
            vec![HwAction::Drop],
        ),
    ];
    let v = profile_violations(&b, &rules);
    assert_eq!(v.len(), 1, "{v:?}");
    assert_eq!(
        v[0].to_string(),
        "target lying accepts rule r7 (), but its profile does not declare it: field ipv4.dst is not matchable"
    );
    assert!(check_declared(&b, &rules[1]).is_ok());
}

#[test]
fn the_session_never_places_an_undeclared_rule() {
    use crate::session::{Hardware, Session, SessionOptions};
    let dir =
        std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/starwars"));
    let options = SessionOptions {
        hardware: Some(Hardware::Profile(Box::new(lying_profile()))),
        ..SessionOptions::default()
    };
    let factory = |p: Option<&Profile>| -> Vec<Box<dyn Backend>> {
        vec![Box::new(Lying(p.cloned().unwrap_or_default()))]
    };
    let s = Session::load(&[dir], options, &factory).unwrap_or_else(|e| panic!("{e}"));
    let plan = s.plan().expect("a plan");
    assert!(
        plan.slice
            .rules
            .iter()
            .all(|r| r.get(PacketField::Ipv4Dst).is_none()),
        "no placed rule matches ipv4.dst"
    );
    // The refusals name the violation, so explain shows why those entries stay in eBPF.
    let report = crate::partition::explain::report(plan, s.mag(), s.sources());
    let text = crate::partition::explain::to_text(&report);
    assert!(
        text.contains("its profile does not declare it: field ipv4.dst"),
        "{text}"
    );
}
