//! Benchmarks of the eBPF datapath (root): per-packet cost with `BPF_PROG_TEST_RUN` next to
//! the bare map lookups the same packet needs, at two ipcache sizes, and the map-update
//! rate of applying a diff, batched and entry by entry.
//!
//! `cargo run --release -p pipec-ebpf --example bench [-- --repeat N]`; prints Markdown.
//! The packet programs run with `CONFIG_NO_CT_CREATE | CONFIG_NO_EVENTS`, so every run
//! is a first packet taking the whole new-flow path (service LB, both conntrack lookups,
//! ipcache, both policy lookups, counters); the established path is measured apart.
//!
//! The ipcache is two maps: host entries (/32, /128) in the `ipcache_host` hash map, the
//! other prefixes in the `ipcache` LPM trie; the datapath and the "lookups only" baseline
//! both look the hash map up first and the trie on a miss. The "allowed" packets go to a
//! host entry (one hash lookup), "allowed, dst in a /24" to an address only a /24 covers
//! (a hash miss, then the trie).

// Dependencies of the package that this target does not use itself; they serve its
// other targets. `unused_crate_dependencies` checks every target against all of them.
use aya as _;
use ipnet as _;
use libc as _;
use object as _;
use pipec as _;
use proptest as _;
use serde_json as _;
use thiserror as _;

use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use pipec_ebpf::artifact::{
    Action, Backend, Endpoint, Frontend, MapName, MapOp, PolicyDecision, PolicyDirection,
    PolicyMatch, Prefix, Service,
};
use pipec_ebpf::datapath::{scratch_pin_dir, Baseline, Baselines, TC_ACT_OK, TC_ACT_SHOT};
use pipec_ebpf::packet::{self, L4, TCP_SYN};
use pipec_ebpf::{maglev, sys, Datapath, EbpfArtifact, Program};
use pipec_ebpf_common as c;

const CLIENT: [u8; 4] = [10, 0, 0, 1];

fn v4(o: [u8; 4]) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(o))
}

/// An artifact with `n` ipcache prefixes (half /32, half /24) over 1000 identities, an
/// egress table for the client allowing TCP 80 to every identity and denying TCP 22.
fn artifact(n: u32) -> EbpfArtifact {
    let mut a = EbpfArtifact::default();
    a.config.flags = c::CONFIG_NO_CT_CREATE | c::CONFIG_NO_EVENTS;
    a.endpoints.insert(
        v4(CLIENT),
        Endpoint {
            id: 1,
            ifindex: 1,
            identity: 256,
        },
    );
    for i in 0..n {
        let (addr, len) = if i % 2 == 0 {
            let h = i / 2 + 2;
            ([10, (h >> 16) as u8, (h >> 8) as u8, h as u8], 32)
        } else {
            let h = i / 2;
            ([11 + (h >> 16) as u8, (h >> 8) as u8, h as u8, 0], 24)
        };
        a.ipcache.insert(
            Prefix {
                addr: v4(addr),
                len,
            },
            256 + i % 1000,
        );
    }
    for id in 256..1256 {
        let m = PolicyMatch {
            endpoint: 1,
            direction: PolicyDirection::Egress,
            identity: id,
            protocol: Some(6),
            port: Some((80, 16)),
        };
        a.policy.insert(
            m,
            PolicyDecision {
                action: Action::Allow,
                cookie: u64::from(id),
            },
        );
    }
    let deny = PolicyMatch {
        endpoint: 1,
        direction: PolicyDirection::Egress,
        identity: 0,
        protocol: Some(6),
        port: Some((22, 16)),
    };
    a.policy.insert(
        deny,
        PolicyDecision {
            action: Action::Deny,
            cookie: 1,
        },
    );
    a.backends.insert(
        1,
        Backend {
            addr: v4([10, 0, 0, 3]),
            port: 80,
        },
    );
    a.services.insert(
        Frontend {
            addr: v4([10, 96, 0, 10]),
            protocol: 6,
            port: 80,
        },
        Service {
            id: 1,
            affinity_timeout: None,
            maglev: maglev::table(&[1], maglev::DEFAULT_SIZE),
        },
    );
    a
}

fn best_of(runs: usize, mut f: impl FnMut() -> u32) -> u32 {
    (0..runs).map(|_| f()).min().unwrap_or(0)
}

fn main() {
    let mut repeat = 1_000_000u32;
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--repeat") {
        repeat = args
            .get(i + 1)
            .and_then(|s| s.parse().ok())
            .expect("--repeat N");
    }
    println!("## Per-packet cost (BPF_PROG_TEST_RUN, repeat {repeat}, best of 3, ns/packet)\n");
    println!("| ipcache entries | packet | pipeline | lookups only | ratio |");
    println!("|---:|---|---:|---:|---:|");
    let dst = v4([10, 0, 0, 9]); // a /32 of the ipcache (identity 263)
    let allowed = packet::build(
        v4(CLIENT),
        dst,
        L4::Tcp {
            sport: 40000,
            dport: 80,
            flags: TCP_SYN,
        },
    );
    let denied = packet::build(
        v4(CLIENT),
        dst,
        L4::Tcp {
            sport: 40000,
            dport: 22,
            flags: TCP_SYN,
        },
    );
    let allowed_net = packet::build(
        v4(CLIENT),
        v4([11, 0, 1, 5]), // only the /24 11.0.1.0/24 covers it (identity 259)
        L4::Tcp {
            sport: 40000,
            dport: 80,
            flags: TCP_SYN,
        },
    );
    let service = packet::build(
        v4(CLIENT),
        v4([10, 96, 0, 10]),
        L4::Tcp {
            sport: 40000,
            dport: 80,
            flags: TCP_SYN,
        },
    );
    for n in [1_000u32, 150_000] {
        let dir = scratch_pin_dir("bench");
        let mut dp = Datapath::load(Some(&dir)).expect("load the datapath (run as root)");
        let baselines = Baselines::load(&dir).expect("load the baselines");
        let a = artifact(n);
        dp.write(&a).expect("write maps");
        // The service's backend must be in the ipcache and allowed, like a real pod.
        let mut a2 = a.clone();
        a2.ipcache.insert(
            Prefix {
                addr: v4([10, 0, 0, 3]),
                len: 32,
            },
            300,
        );
        dp.write(&a2).expect("write maps");
        for (name, pkt, expect, base) in [
            ("allowed", &allowed, TC_ACT_OK, Baseline::Policy),
            (
                "allowed, dst in a /24",
                &allowed_net,
                TC_ACT_OK,
                Baseline::Policy,
            ),
            ("denied", &denied, TC_ACT_SHOT, Baseline::Policy),
            ("service (DNAT)", &service, TC_ACT_OK, Baseline::Service),
        ] {
            let r = dp.run(Program::FromPod, pkt, 1, 0).expect("run");
            assert_eq!(r.verdict, expect, "{name}: unexpected verdict");
            let full = best_of(3, || {
                dp.time(Program::FromPod, pkt, 1, repeat).expect("time")
            });
            let bare = best_of(3, || baselines.time(base, pkt, repeat).expect("time"));
            println!(
                "| {n} | {name} | {full} | {bare} | {:.2}x |",
                f64::from(full) / f64::from(bare.max(1))
            );
        }
        // The established path: conntrack on, the first run creates the entry.
        let mut est = a2.clone();
        est.config.flags = c::CONFIG_NO_EVENTS;
        dp.write(&est).expect("write config");
        dp.run(Program::FromPod, &allowed, 1, 0).expect("run");
        let t = best_of(3, || {
            dp.time(Program::FromPod, &allowed, 1, repeat)
                .expect("time")
        });
        println!("| {n} | allowed, established (conntrack hit) | {t} | – | – |");
        let _ = dp.unpin();
    }

    println!("\n## Map-update rate (applying a diff, one thread)\n");
    println!("| map | entries | batched (BPF_MAP_UPDATE_BATCH) | one syscall per entry |");
    println!("|---|---:|---:|---:|");
    let dir = scratch_pin_dir("bench-upd");
    let mut dp = Datapath::load(Some(&dir)).expect("load");
    // A hash map without preallocation: the Maglev slots of 200 services of 1021 slots (204,200 entries).
    let mut a = EbpfArtifact::default();
    for s in 0..200u32 {
        let fe = Frontend {
            addr: v4([10, 96, (s >> 8) as u8, s as u8]),
            protocol: 6,
            port: 80,
        };
        a.services.insert(
            fe,
            Service {
                id: s + 1,
                affinity_timeout: None,
                maglev: maglev::table(&[s * 3 + 1, s * 3 + 2, s * 3 + 3], maglev::DEFAULT_SIZE),
            },
        );
    }
    rate(
        &mut dp,
        "maglev (hash, no prealloc)",
        &a,
        &[MapName::Maglev],
    );
    // A preallocated hash map: 60,000 backends.
    let mut h = EbpfArtifact::default();
    for i in 0..60_000u32 {
        h.backends.insert(
            i + 1,
            Backend {
                addr: v4([10, 128 + (i >> 16) as u8, (i >> 8) as u8, i as u8]),
                port: 8080,
            },
        );
    }
    rate(
        &mut dp,
        "backends (hash, preallocated)",
        &h,
        &[MapName::Backends],
    );
    // The ipcache: 150,000 prefixes, half /32 (to the ipcache_host hash map), half /24
    // (to the ipcache LPM trie); each map alone, then both as one diff (the maps are
    // emptied between the rows, so every row inserts into an empty map).
    let b = EbpfArtifact {
        ipcache: artifact(150_000).ipcache,
        ..Default::default()
    };
    let rows: [(&str, &[MapName]); 3] = [
        (
            "ipcache host entries /32 → ipcache_host (hash, preallocated)",
            &[MapName::IpcacheHost],
        ),
        (
            "ipcache prefixes /24 → ipcache (LPM trie)",
            &[MapName::Ipcache],
        ),
        (
            "ipcache, all 150,000 (both maps, one diff)",
            &[MapName::IpcacheHost, MapName::Ipcache],
        ),
    ];
    for (name, maps) in rows {
        rate(&mut dp, name, &b, maps);
        let clear: Vec<MapOp> = EbpfArtifact::default()
            .diff(&b)
            .into_iter()
            .filter(|op| matches!(op, MapOp::Delete { map, .. } if maps.contains(map)))
            .collect();
        dp.apply(&clear).expect("clear the ipcache");
    }
    let _ = dp.unpin();
}

/// The rate of applying the upserts of `a` into `maps`: batched with [`Datapath::apply`],
/// then again (over the same entries) with one `BPF_MAP_UPDATE_ELEM` per entry.
fn rate(dp: &mut Datapath, name: &str, a: &EbpfArtifact, maps: &[MapName]) {
    let ops: Vec<MapOp> = a
        .diff(&EbpfArtifact::default())
        .into_iter()
        .filter(|op| matches!(op, MapOp::Upsert { map: m, .. } if maps.contains(m)))
        .collect();
    let n = ops.len();
    let t = Instant::now();
    let stats = dp.apply(&ops).expect("apply");
    let batched = n as f64 / t.elapsed().as_secs_f64();
    assert!(stats.batches > 0);
    let t = Instant::now();
    for op in &ops {
        if let MapOp::Upsert { map, key, value } = op {
            let fd = dp.map_fd(map.as_str()).expect("fd");
            sys::map_update(fd, key, value, sys::BPF_ANY).expect("update");
        }
    }
    let single = n as f64 / t.elapsed().as_secs_f64();
    println!(
        "| {name} | {n} | {:.2} M/s | {:.2} M/s |",
        batched / 1e6,
        single / 1e6
    );
}
