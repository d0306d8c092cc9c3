//! Engine `hw` with connection offload, on the random clusters of the hardware tests
//! (`partition_hw::hw_specs`), under both cnxk profiles: DPDK 22.11 finishes connections
//! between two pods of one node, 23.07 also those that cross the uplink.
//!
//! Every probe runs once, so that the entries of every allowed connection the hardware can
//! finish are installed at once (the engine keeps them, as pipecd does while a connection
//! is active). Then, with all of them in the flow tables:
//!
//! - (a) every probe's first packet and reply keep the reference verdict, and no packet is
//!   finished by an entry: an exact entry never captures another connection's packet;
//! - (b) each offloaded connection's later packets, in both directions, arrive on the port
//!   its entry is on and are delivered to the port the entry names;
//! - (c) a later packet that meets a plan rule of the entry's own level instead is counted
//!   and reported, not failed: the device's order within a level is undefined, and plan
//!   rules are moving off level 0. A plan rule of a higher-priority level than the entry's
//!   that takes an offloaded packet fails the test.

use crate::mag_differential::{probes, same};
use crate::mag_gen;
use crate::partition_hw::{hw_specs, reference_verdict};
use pipec::backend::{octeon_cn10k_2307_profile, octeon_cn10k_profile, Profile};
use pipec::engine::hw::{captured, Hit, HwEngine, HwEvaluator, LaterPacket, OffloadRun, Probed};
use pipec::engine::hwmodel::{Fate, OFFLOAD_LEVEL};
use pipec::mag::interp::Verdict as MagVerdict;
use pipec::model::Cluster;
use pipec::semantics::{self, Probe, Verdict};
use proptest::prelude::*;
use std::cell::RefCell;
use std::cmp::Ordering;
use std::collections::BTreeMap;

/// What one profile's runs counted.
#[derive(Clone, Copy, Debug, Default)]
struct Counted {
    /// Connections whose entries were installed.
    offloaded: usize,
    /// Of those, connections whose entries sit on two nodes (through the uplink).
    across_nodes: usize,
    /// Later packets the hardware finished where the entry says.
    finished: usize,
    /// Later packets a plan rule of the entry's own level took instead (c).
    shadowed: usize,
}

impl Counted {
    fn add(&mut self, o: Counted) {
        self.offloaded += o.offloaded;
        self.across_nodes += o.across_nodes;
        self.finished += o.finished;
        self.shadowed += o.shadowed;
    }
}

/// (a): the probe's first packet has the reference verdict, the reply of an allowed one is
/// not denied, and no entry finished either.
fn check_verdict(ctx: &semantics::Context<'_>, probe: &Probe, p: &Probed) -> Result<(), String> {
    let Some(first) = &p.first else {
        return Ok(());
    };
    let expected = reference_verdict(ctx, probe, first);
    if !same(expected, first.verdict) {
        return Err(format!(
            "{probe:?}: the reference says {expected:?}, with every entry installed the first packet is {:?} ({})",
            first.verdict, p.verdict.reason
        ));
    }
    let reply_denied = p
        .reply
        .as_ref()
        .is_some_and(|r| r.verdict == MagVerdict::Deny);
    if expected != Verdict::Deny && reply_denied {
        return Err(format!(
            "{probe:?}: the reply of an allowed connection is denied ({})",
            p.verdict.reason
        ));
    }
    let caught = [Some(first), p.reply.as_ref()]
        .into_iter()
        .flatten()
        .flat_map(captured)
        .collect::<Vec<_>>();
    if !caught.is_empty() {
        return Err(format!(
            "{probe:?}: an offload entry finished a packet of this connection's first exchange on {caught:?}"
        ));
    }
    Ok(())
}

/// (b) and (c) for one later packet: `Ok(true)` finished by its entry, `Ok(false)` taken by
/// a plan rule of the entry's own level.
fn check_packet(probe: &Probe, run: &OffloadRun, p: &LaterPacket) -> Result<bool, String> {
    let entry = run
        .later
        .entries
        .iter()
        .find(|e| e.node == p.node && e.direction == p.direction);
    let fail = |why: &str| {
        Err(format!(
            "{probe:?}: {why}: {p:?}; entries: {:?}",
            run.later.entries
        ))
    };
    let Some(entry) = entry else {
        return fail("a later packet crosses a node where it has no entry");
    };
    if entry.port != p.port {
        return fail("the later packet arrives on another port than its entry's");
    }
    // The entries sit at `OFFLOAD_LEVEL`; compared by `Ordering`, the check stays right
    // when that level or the plan's levels change.
    match p.hit {
        Hit::Entry { .. } if p.finished() => Ok(true),
        Hit::Entry { .. } => fail("the entry does not deliver the packet to its port"),
        Hit::Plan { level, .. } => match level.cmp(&OFFLOAD_LEVEL) {
            Ordering::Less => {
                fail("a plan rule of a higher-priority level takes the offloaded packet")
            }
            Ordering::Equal if p.fate != Fate::Dropped => Ok(false),
            _ => fail("a plan rule, not the entry, decides the packet"),
        },
        Hit::Nothing => fail("the packet meets no rule: the entry is not on its port"),
    }
}

/// (b) and (c) for one offloaded connection, with every entry installed; `keeps_level_0`
/// when the profile keeps level 0 from the plan for offload entries.
fn check_run(
    hw: &HwEvaluator<'_>,
    probe: &Probe,
    run: &OffloadRun,
    keeps_level_0: bool,
) -> Result<Counted, String> {
    if !run.refused.is_empty() {
        return Err(format!("{probe:?}: entries refused: {:?}", run.refused));
    }
    let packets = hw.send_later(run);
    let mut n = Counted {
        offloaded: 1,
        ..Counted::default()
    };
    let nodes = run.later.entries.iter().map(|e| e.node.as_str());
    n.across_nodes = usize::from(nodes.collect::<std::collections::BTreeSet<_>>().len() > 1);
    for e in &run.later.entries {
        let sent = packets
            .iter()
            .any(|p| p.node == e.node && p.direction == e.direction);
        if !sent {
            return Err(format!(
                "{probe:?}: no later packet reached the entry {}",
                e.text()
            ));
        }
    }
    for p in &packets {
        if check_packet(probe, run, p)? {
            n.finished += 1;
        } else if keeps_level_0 {
            // The profile keeps level 0 from the plan for offload entries, so no plan rule
            // may take a packet an entry matches.
            return Err(format!(
                "{probe:?}: a plan rule took a later packet from its offload entry although the plan leaves level {OFFLOAD_LEVEL} to offload"
            ));
        } else {
            n.shadowed += 1;
        }
    }
    Ok(n)
}

/// Runs every probe of a cluster twice under `profile`, then checks (a), (b) and (c).
fn check_offload(cluster: &Cluster, profile: Profile) -> Result<Counted, String> {
    let keeps_level_0 = profile.plan_levels().start > OFFLOAD_LEVEL;
    let hw = HwEngine { profile }.evaluator(cluster);
    let ctx = semantics::Context::new(cluster);
    let probes = probes(cluster);
    let mut runs = Vec::new();
    for probe in &probes {
        let p = hw.probe(probe);
        if let Some(run) = p.offload.filter(|r| r.later.in_hardware) {
            runs.push((*probe, run));
        }
    }
    for probe in &probes {
        check_verdict(&ctx, probe, &hw.probe(probe))?;
    }
    let mut n = Counted::default();
    for (probe, run) in &runs {
        n.add(check_run(&hw, probe, run, keeps_level_0)?);
    }
    Ok(n)
}

/// Random clusters under both profiles, with every offloadable connection's entries
/// installed at once. The runner is explicit, so the test can fail when the generator stops
/// producing connections the hardware finishes, on one node and across the uplink; its
/// seed is fixed, so that the clusters, and those counts, are the same on every run.
#[test]
fn offloaded_connections_are_finished_in_hardware_and_capture_nothing_else() {
    let config = ProptestConfig {
        cases: 24,
        source_file: Some(file!()),
        ..ProptestConfig::default()
    };
    // A fixed seed: with a random one, 24 clusters sometimes held no connection across
    // the uplink (CI saw it once), and the count below failed for the generator's luck,
    // not for what it checks.
    let rng = proptest::test_runner::TestRng::deterministic_rng(
        proptest::test_runner::RngAlgorithm::ChaCha,
    );
    let mut runner = proptest::test_runner::TestRunner::new_with_rng(config, rng);
    let totals: RefCell<BTreeMap<String, Counted>> = RefCell::default();
    let result = runner.run(&hw_specs(), |s| {
        let c = mag_gen::load(&s);
        for profile in [octeon_cn10k_profile(), octeon_cn10k_2307_profile()] {
            let name = profile.name.clone();
            let n = check_offload(&c, profile).map_err(|e| {
                TestCaseError::fail(format!(
                    "{name}: {e}\n--- input ---\n{}",
                    mag_gen::to_yaml(&s)
                ))
            })?;
            totals.borrow_mut().entry(name).or_default().add(n);
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let totals = totals.into_inner();
    for (profile, t) in &totals {
        eprintln!(
            "connection offload under {profile}: {} connections offloaded ({} across nodes), {} later packets finished in hardware, {} shadowed by a plan rule of the entry's level {OFFLOAD_LEVEL}",
            t.offloaded, t.across_nodes, t.finished, t.shadowed
        );
    }
    let old = totals[octeon_cn10k_profile().name.as_str()];
    let new = totals[octeon_cn10k_2307_profile().name.as_str()];
    assert!(old.offloaded > 20, "{old:?}");
    assert!(new.offloaded > old.offloaded, "{new:?} {old:?}");
    assert!(new.across_nodes > 0, "{new:?}");
}
