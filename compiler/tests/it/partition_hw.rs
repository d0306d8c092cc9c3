//! Engine `hw` (the hardware flow table first, the MAG for what it passes) against the
//! reference: the shared conformance suite, and random clusters where every packet the
//! hardware drops must be one the reference denies.

use crate::mag_gen;
use pipec::backend::octeon_cn10k_profile;
use pipec::conformance::{run_paths, Engine, Reference};
use pipec::hwmodel::Tcam;
use pipec::lower;
use pipec::mag;
use pipec::model::{PodId, Protocol};
use pipec::partition::{engine::HwEngine, mag_to_plan};
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
        let plan = mag_to_plan(lowered.mag(), &info, std::slice::from_ref(&profile));
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
