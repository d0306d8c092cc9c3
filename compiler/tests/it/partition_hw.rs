//! Engine `hw` (the hardware flow table first, the MAG for what it passes) against the
//! reference: the shared conformance suite, and random clusters where every packet the
//! hardware drops must be one the reference denies.

use crate::mag_gen;
use pipec::backend::octeon_cn10k_profile;
use pipec::conformance::{run_paths, Engine, Reference};
use pipec::engine::hw::HwEngine;
use pipec::engine::hwmodel::Tcam;
use pipec::lower;
use pipec::mag;
use pipec::model::{PodId, Protocol};
use pipec::partition::hints::{Hint, PlacementHint, Resource, Subject};
use pipec::partition::mag_to_plan;
use pipec::semantics::{Destination, Peer, Probe};
use proptest::prelude::*;
use std::path::PathBuf;

#[test]
fn shared_conformance_suite_passes_with_engine_hw() {
    let dir = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/conformance"
    ));
    let engines: Vec<Box<dyn Engine>> = vec![Box::new(Reference), Box::new(HwEngine::default())];
    let report = run_paths(&[dir], &engines).expect("cases are readable");
    assert!(report.passed > 100, "{}", report.summary());
    assert_eq!(report.failed, 0, "{}", report.lines.join("\n"));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]
    #[test]
    fn hardware_drops_only_what_the_reference_denies(s in mag_gen::spec(6)) {
        let cluster = mag_gen::load(&s);
        let lowered = lower::cluster_to_mag(&cluster, None);
        let info = mag::validate(lowered.mag()).expect("valid");
        let profile = octeon_cn10k_profile();
        let plan = mag_to_plan(lowered.mag(), &info, &profile, &[]);
        prop_assert!(plan.usage.levels <= profile.caps.priority_levels);
        prop_assert!(Tcam::load(&plan.slice, profile.caps.priority_levels, None).is_ok());
        let reference = Reference.prepare(&cluster).expect("reference");
        let hw = HwEngine::default().prepare(&cluster).expect("hw");
        for a in 0..cluster.pods.len() {
            for b in 0..cluster.pods.len() {
                for (protocol, port) in [(Protocol::Tcp, 80), (Protocol::Tcp, 8080), (Protocol::Udp, 53)] {
                    let probe = Probe {
                        from: Peer::Pod(PodId(a as u32)),
                        to: Destination::Pod(PodId(b as u32)),
                        protocol,
                        port: Some(port),
                    };
                    let h = hw.evaluate(&probe);
                    if h.reason.contains("hardware") {
                        let r = reference.evaluate(&probe);
                        prop_assert_eq!(r.allowed, Some(false), "hardware dropped {:?}: {}", probe, r.reason);
                    }
                }
            }
        }
    }
}

/// The Star Wars example on a flow table of `limit` entries, with `hints`.
fn starwars_plan(limit: u64, hints: &[PlacementHint]) -> pipec::partition::Plan {
    let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/starwars"));
    let loaded = pipec::driver::load(&[dir], &pipec::model::build::BuildOptions::default());
    assert!(!loaded.has_errors());
    let lowered = lower::cluster_to_mag(&loaded.cluster, None);
    let info = mag::validate(lowered.mag()).expect("valid");
    let mut profile = octeon_cn10k_profile();
    profile.budget.entries = Some(profile.budget.reserved_entries + limit);
    mag_to_plan(lowered.mag(), &info, &profile, hints)
}

fn reserve(policy: &str, amount: u32) -> PlacementHint {
    PlacementHint {
        subject: Subject::Policy(policy.into()),
        hint: Hint::Reserve {
            target: "octeon-cn10k".into(),
            resource: Resource::Entries,
            amount,
        },
    }
}

/// The sources of the entries placed in hardware.
fn placed_origins(plan: &pipec::partition::Plan) -> Vec<String> {
    plan.placements
        .iter()
        .filter(|p| p.target == pipec::partition::Target::Hardware)
        .map(|p| plan.origin(p).to_string())
        .collect()
}

#[test]
fn reserved_entries_go_to_their_subject_only() {
    // Without a hint, three entries go to the highest-ranked entries, some of them the
    // built-in default allows.
    let plain = starwars_plan(3, &[]);
    assert!(plain.usage.entries > 0 && plain.usage.entries <= 3);
    assert!(plain.usage.reserved.is_empty());
    // All three reserved for rule1: only rule1's entries are in hardware.
    let plan = starwars_plan(3, &[reserve("rule1", 3)]);
    let origins = placed_origins(&plan);
    assert!(!origins.is_empty());
    assert!(origins.iter().all(|o| o.contains("rule1")), "{origins:?}");
    assert!(plan.usage.entries <= 3);
    let r = &plan.usage.reserved[0];
    assert_eq!((r.entries, r.used), (3, plan.usage.entries));
    assert!(r.hint.contains("rule1"), "{}", r.hint);
    // A reservation nobody uses stays free: the others cannot take it.
    let plan = starwars_plan(3, &[reserve("no-such-policy", 3)]);
    assert_eq!(plan.usage.entries, 0);
    assert_eq!(plan.usage.reserved[0].used, 0);
    assert!(plan.left_out.len() >= plain.left_out.len());
    // One of three reserved: the subject's entries use at most that one, the others at
    // most the two left.
    let plan = starwars_plan(3, &[reserve("rule1", 1)]);
    assert!(plan.usage.reserved[0].used <= 1);
    assert!(plan.usage.entries <= 3);
    let text = pipec::partition::plan_to_text(&plan);
    assert!(text.contains("reserved "), "{text}");
}
