//! Trace-driven benchmark of connection offload (issue 15, item 5).
//!
//! A node of a `gencluster` cluster (its pods, their policies) carries a synthetic trace of
//! TCP connections from its pods to pods of the whole cluster (those of other nodes through
//! the uplink), run under the DPDK 22.11 and 23.07 cnxk profiles' forwarding reach. Flow sizes follow the web-search workload of the DCTCP
//! paper (Alizadeh et al., SIGCOMM 2010) as the pFabric paper (Alizadeh et al., SIGCOMM 2013)
//! uses it. Every connection is judged by the compiler's reference semantics (a denied one
//! never carries data); a share of them reaches its server through a Service (DNAT). The
//! trace runs in 1 ms ticks through pipecd's offload logic (`pipec_runtime::offload`) and the
//! flow-table model (`engine::hwmodel`): a packet is finished in hardware when the model
//! delivers it on the peer's port, otherwise it reaches the cores.
//!
//! Run: `cargo run --release -p pipec-runtime --example offload_bench -- [flows] [seed] [ticks]`.

// The package's dependencies that this example does not use.
use anyhow as _;
use aya as _;
use base64 as _;
use clap as _;
use futures as _;
use ipnet as _;
use kube as _;
use mimalloc as _;
use notify as _;
use pipec_cpt as _;
use pipec_ebpf as _;
use pipec_ebpf_common as _;
use pipec_netns as _;
use pipec_proto as _;
use pipec_rte_flow as _;
use proptest as _;
use serde as _;
use serde_json as _;
use serde_yaml as _;
use tokio as _;
use tokio_stream as _;
use tonic as _;
use tracing as _;
use tracing_subscriber as _;

use pipec::backend::PlanSlice;
use pipec::backend::OCTEON_CN10K_2307;
use pipec::engine::hwmodel::{Fate, ForwardSemantics, HwPacket, Ports, Tcam};
use pipec::engine::offload::{Layout, UPLINK_PORT};
use pipec::model::{Cluster, PodId, Protocol};
use pipec::semantics::{evaluate, Context, Destination, Peer, Probe};
use pipec::session::no_backends;
use pipec_runtime::offload::driver::free_of;
use pipec_runtime::offload::{Config, Connection, Entry, FiveTuple, Offloader};

/// The DPDK 22.11 profile's name.
const OCTEON_CN10K: &str = "octeon-cn10k";
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

/// The web-search flow-size CDF (DCTCP, SIGCOMM 2010, as used by pFabric, SIGCOMM 2013):
/// (size in 1460-byte segments, cumulative probability).
const WEB_SEARCH: &[(f64, f64)] = &[
    (6.0, 0.0),
    (6.0, 0.15),
    (13.0, 0.2),
    (19.0, 0.3),
    (33.0, 0.4),
    (53.0, 0.53),
    (133.0, 0.6),
    (667.0, 0.7),
    (1333.0, 0.8),
    (3333.0, 0.9),
    (6667.0, 0.97),
    (20000.0, 1.0),
];

/// Segment size in bytes.
const MSS: u64 = 1460;
/// Data segments a connection sends per 1 ms tick: about 1 Gbit/s.
const SEGMENTS_PER_TICK: u64 = 85;
/// Share of connections opened to a Service (DNATed by eBPF).
const SERVICE_SHARE: f64 = 0.3;
/// The flow entries and counters the node's real policy plan under `profile` leaves to
/// connection offload (the profile's `offload_entries`, the headroom of a plan from
/// scratch, and whatever else the plan does not fill), and the entries the plan uses.
fn room(cluster: &Cluster, node: &str, profile: &str) -> (u64, u64, u64) {
    let options = pipec::session::SessionOptions {
        node: Some(node.to_string()),
        hardware: Some(pipec::session::Hardware::Named(profile.to_string())),
        ..Default::default()
    };
    let session = pipec::session::Session::from_cluster(cluster, options, &no_backends)
        .expect("the node's session loads");
    let plan = session.plan().expect("a hardware plan");
    let profile = session.profile().expect("a hardware profile");
    let (entries, counters) = free_of(profile, plan.usage.entries, plan.usage.counters);
    (entries, counters, plan.usage.entries)
}

/// A seeded generator (SplitMix64), so every run prints the same figures.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// A flow size in segments drawn from the CDF by inverse transform, interpolating linearly
/// between the published points.
fn flow_segments(rng: &mut Rng) -> u64 {
    let u = rng.unit();
    for w in WEB_SEARCH.windows(2) {
        let ((s0, p0), (s1, p1)) = (w[0], w[1]);
        if u <= p1 && p1 > p0 {
            return (s0 + (s1 - s0) * (u - p0) / (p1 - p0)).round().max(1.0) as u64;
        }
    }
    WEB_SEARCH[WEB_SEARCH.len() - 1].0 as u64
}

/// One connection of the trace.
#[derive(Clone, Debug)]
struct Flow {
    start: u64,
    /// The server is a pod of another node, reached through the uplink.
    remote: bool,
    conn: Connection,
    /// Data segments client to server.
    segments: u64,
    sent: u64,
}

/// How a run chooses what to offload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Everything in software (the cores run the whole datapath, as k8s-cni-offload does).
    Software,
    /// Today's placement: the table marks packets allowed and hands them to eBPF.
    MarksOnly,
    /// Install every new allowed connection while entries last; never age or rank.
    EveryNew,
    /// pipecd's offload logic.
    Offload,
}

/// Packets and bytes of one kind of traffic, and how many of each were finished in hardware.
#[derive(Debug, Default)]
struct Share {
    packets: u64,
    bytes: u64,
    hw_packets: u64,
    hw_bytes: u64,
}

impl Share {
    fn add(&mut self, packets: u64, bytes: u64, hw: bool) {
        self.packets += packets;
        self.bytes += bytes;
        if hw {
            self.hw_packets += packets;
            self.hw_bytes += bytes;
        }
    }
}

/// The figures of one run.
#[derive(Debug, Default)]
struct Report {
    packets: u64,
    bytes: u64,
    hw_packets: u64,
    hw_bytes: u64,
    direct_packets: u64,
    direct_bytes: u64,
    direct_hw_packets: u64,
    direct_hw_bytes: u64,
    local: Share,
    remote: Share,
    max_entries: u64,
    max_counters: u64,
    sw_packets_of_offloaded: Vec<u64>,
}

/// A pod of the cluster with an IPv4 address, and its VF port on the benchmarked node's
/// device when it runs there.
#[derive(Clone, Copy, Debug)]
struct Peer4 {
    id: PodId,
    ip: Ipv4Addr,
    local_port: Option<u16>,
}

/// Every pod of the cluster with an IPv4 address (host-network pods are the nodes' own
/// stacks, not pods with a VF), with the port `layout` gives it on the benchmarked node.
fn cluster_pods(cluster: &Cluster, layout: &Layout) -> Vec<Peer4> {
    cluster
        .pod_ids()
        .filter_map(|id| {
            let p = cluster.pod(id);
            let ip = p.ips.iter().find_map(|ip| match ip {
                IpAddr::V4(a) => Some(*a),
                IpAddr::V6(_) => None,
            })?;
            (!p.host_network).then_some(Peer4 {
                id,
                ip,
                local_port: layout.port_of_pod(id),
            })
        })
        .collect()
}

/// The port a client connects to on `pod`: its first declared TCP port, else 80.
fn server_port(cluster: &Cluster, pod: PodId) -> u16 {
    let p = cluster.pod(pod);
    p.ports
        .iter()
        .find(|c| c.protocol == Protocol::Tcp)
        .map_or(80, |c| c.port)
}

/// The allowed connections of the trace, arrivals spread over `ticks`. Clients are the
/// node's pods; servers are drawn from every pod of the cluster, so a connection to a pod of
/// another node leaves by the uplink, as much of a real node's traffic does.
fn trace(cluster: &Cluster, pods: &[Peer4], flows: usize, seed: u64, ticks: u64) -> Vec<Flow> {
    let ctx = Context::new(cluster);
    let mut rng = Rng(seed);
    let clients: Vec<&Peer4> = pods.iter().filter(|p| p.local_port.is_some()).collect();
    let mut out = Vec::new();
    for i in 0..flows {
        // Applications talk to the peers their policies let them reach: a connection's
        // pair is drawn again (up to 200 times) until the reference allows it.
        let Some((a, b, dport)) = (0..200).find_map(|_| {
            let (a, b) = (
                clients[rng.below(clients.len())],
                &pods[rng.below(pods.len())],
            );
            let dport = server_port(cluster, b.id);
            let probe = Probe {
                from: Peer::Pod(a.id),
                to: Destination::Pod(b.id),
                protocol: Protocol::Tcp,
                port: Some(dport),
            };
            (a.id != b.id && evaluate(&ctx, &probe).allowed() == Some(true))
                .then_some((a, b, dport))
        }) else {
            continue;
        };
        let dnat = rng.unit() < SERVICE_SHARE;
        let segments = flow_segments(&mut rng);
        let start = i as u64 * ticks / flows as u64;
        out.push(Flow {
            start,
            remote: b.local_port.is_none(),
            conn: Connection {
                tuple: FiveTuple {
                    src: a.ip,
                    dst: b.ip,
                    proto: 6,
                    sport: 10_000 + (i % 50_000) as u16,
                    dport,
                },
                src_pod: a.id.0.to_string(),
                dst_pod: b.local_port.map(|_| b.id.0.to_string()),
                src_port: a.local_port.unwrap_or(UPLINK_PORT),
                dst_port: b.local_port.unwrap_or(UPLINK_PORT),
                dnat,
            },
            segments,
            sent: 0,
        });
    }
    out
}

/// The flow table holding `entries`, loaded into the model.
fn table(entries: &[Entry]) -> Tcam {
    let rules = entries
        .iter()
        .enumerate()
        .map(|(i, e)| e.rule(i as u32))
        .collect();
    let slice = PlanSlice {
        target: "octeon-cn10k".into(),
        rules,
    };
    Tcam::load(&slice, 32, Some(8192)).expect("exact entries never overlap")
}

/// The header fields of a packet of `t`.
fn packet(t: FiveTuple) -> HwPacket {
    use pipec::backend::PacketField as F;
    [
        (F::Ipv4Src, u32::from(t.src).into()),
        (F::Ipv4Dst, u32::from(t.dst).into()),
        (F::IpProto, t.proto.into()),
        (F::L4Sport, t.sport.into()),
        (F::L4Dport, t.dport.into()),
    ]
    .into_iter()
    .collect()
}

fn run(
    mode: Mode,
    flows: &[Flow],
    ports: &Ports,
    sem: ForwardSemantics,
    (free_entries, free_counters): (u64, u64),
) -> Report {
    let mut o = Offloader::new(Config {
        semantics: sem,
        ports: ports.clone(),
        free_entries,
        free_counters: if mode == Mode::EveryNew {
            0
        } else {
            free_counters
        },
        idle_ticks: 3,
        // Far beyond the trace for the baseline: it never ages.
        hard_lifetime_ticks: if mode == Mode::EveryNew { u64::MAX } else { 50 },
        min_bytes: if mode == Mode::Offload { 20 * MSS } else { 0 },
    });
    let mut flows = flows.to_vec();
    let mut r = Report::default();
    let mut active: Vec<usize> = Vec::new();
    let mut next = 0;
    let mut sw_before: BTreeMap<usize, u64> = BTreeMap::new();
    for now in 0.. {
        while next < flows.len() && flows[next].start <= now {
            active.push(next);
            next += 1;
        }
        if active.is_empty() && next >= flows.len() {
            break;
        }
        let mut done = Vec::new();
        for &i in &active {
            let f = &mut flows[i];
            let first = f.sent == 0;
            let data = (f.segments - f.sent).min(SEGMENTS_PER_TICK);
            f.sent += data;
            // One ACK per two segments; the handshake's three packets in the first tick and
            // the FIN exchange's four in the last, all in software for a new connection.
            let acks = data.div_ceil(2);
            let extra = if first { 3 } else { 0 } + if f.sent == f.segments { 4 } else { 0 };
            // The exact entries of different connections never overlap, so the table's
            // answer for this connection's packets is that of its own two entries: the model
            // is loaded with those (loading all of them each tick would cost the model's
            // quadratic same-level overlap check on thousands of rules).
            let own = o.entries_of_connection(f.conn.tuple);
            let fwd_hw = !own.is_empty()
                && matches!(
                    table(&own).fate(f.conn.src_port, &packet(f.conn.tuple), ports, sem),
                    Fate::Delivered { port } if port == f.conn.dst_port
                )
                && matches!(
                    table(&own).fate(f.conn.dst_port, &packet(f.conn.tuple.reverse()), ports, sem),
                    Fate::Delivered { port } if port == f.conn.src_port
                );
            let pkts = data + acks + extra;
            let bytes = data * MSS + (acks + extra) * 64;
            r.packets += pkts;
            r.bytes += bytes;
            let direct = !f.conn.dnat;
            if direct {
                r.direct_packets += pkts;
                r.direct_bytes += bytes;
                let kind = if f.remote {
                    &mut r.remote
                } else {
                    &mut r.local
                };
                kind.add(pkts, bytes, fwd_hw);
            }
            if fwd_hw {
                r.hw_packets += pkts;
                r.hw_bytes += bytes;
                if direct {
                    r.direct_hw_packets += pkts;
                    r.direct_hw_bytes += bytes;
                }
                o.counter(f.conn.tuple, f.sent);
            } else {
                *sw_before.entry(i).or_default() += pkts;
                if mode == Mode::Offload || mode == Mode::EveryNew {
                    if first {
                        o.established(f.conn.clone(), data * MSS);
                    } else {
                        o.activity(f.conn.tuple, f.sent * MSS);
                    }
                }
            }
            if f.sent == f.segments {
                done.push(i);
            }
        }
        for i in &done {
            if !o.is_offloaded(flows[*i].conn.tuple) || mode == Mode::EveryNew {
                let _ = o.closed(flows[*i].conn.tuple);
            }
        }
        active.retain(|i| !done.contains(i));
        if mode == Mode::Offload || mode == Mode::EveryNew {
            let before: Vec<_> = active
                .iter()
                .filter(|i| !o.is_offloaded(flows[**i].conn.tuple))
                .copied()
                .collect();
            let _ = o.tick();
            for i in before {
                if o.is_offloaded(flows[i].conn.tuple) {
                    r.sw_packets_of_offloaded
                        .push(sw_before.get(&i).copied().unwrap_or(0));
                }
            }
            r.max_entries = r.max_entries.max(o.entries_used());
            r.max_counters = r.max_counters.max(o.counters_used());
        }
    }
    r
}

fn pct(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        100.0 * a as f64 / b as f64
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let flows: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(20_000);
    let seed: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1);
    // Arrivals are spread evenly over this many 1 ms ticks: fewer ticks, more concurrent
    // connections competing for the table.
    let ticks: u64 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(2000);
    let spec = gencluster::Spec {
        pretty: false,
        ..gencluster::Spec::small()
    };
    let text = gencluster::generate(&spec);
    let loaded = pipec::driver::load_texts(&[("cluster.json", &text)], &Default::default());
    let cluster = loaded.cluster;
    let node = cluster
        .nodes
        .first()
        .map(|n| n.name.clone())
        .expect("gencluster makes nodes");
    let layout = Layout::of_node(&cluster, &node);
    let pods = cluster_pods(&cluster, &layout);
    let trace = trace(&cluster, &pods, flows, seed, ticks);
    let remote = trace.iter().filter(|f| f.remote).count();
    println!(
        "node {node} of gencluster --small (seed {}): {} pods with a VF, {} pods on other nodes, {} policies in the cluster",
        spec.seed,
        layout.pod_count(),
        pods.len() - layout.pod_count(),
        cluster.network_policies.len()
    );
    println!(
        "trace: {flows} connections (seed {seed}) arriving over {ticks} ms, {} between pairs the reference allows ({remote} to pods of other nodes), {:.0} % through a Service; web-search sizes; 1 Gbit/s per flow; 1 ms ticks",
        trace.len(),
        100.0 * SERVICE_SHARE
    );
    let rooms: Vec<(u64, u64, u64)> = [OCTEON_CN10K, OCTEON_CN10K_2307]
        .into_iter()
        .map(|p| room(&cluster, &node, p))
        .collect();
    for (p, (e, c, plan)) in [OCTEON_CN10K, OCTEON_CN10K_2307].iter().zip(&rooms) {
        println!(
            "budget under {p}: the node's plan uses {plan} entries and leaves {e} entries and {c} counters to offload"
        );
    }
    println!(
        "{:<24} {:<9} {:>8} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>7} {:>8} {:>12}",
        "profile",
        "mode",
        "pkts hw",
        "bytes hw",
        "p2p pkts",
        "p2p bytes",
        "local pk",
        "local by",
        "remote pk",
        "remote by",
        "entries",
        "counters",
        "sw pkts p50/p90"
    );
    for ((profile, sem), (free_entries, free_counters, _)) in [
        ("octeon-cn10k (22.11)", ForwardSemantics::SamePf),
        ("octeon-cn10k-dpdk23.07", ForwardSemantics::AnyPort),
    ]
    .into_iter()
    .zip(rooms)
    {
        for mode in [
            Mode::Software,
            Mode::MarksOnly,
            Mode::EveryNew,
            Mode::Offload,
        ] {
            let mut r = run(
                mode,
                &trace,
                &layout.ports,
                sem,
                (free_entries, free_counters),
            );
            r.sw_packets_of_offloaded.sort_unstable();
            let q = |p: f64| {
                let v = &r.sw_packets_of_offloaded;
                if v.is_empty() {
                    0
                } else {
                    v[((v.len() - 1) as f64 * p) as usize]
                }
            };
            println!(
                "{:<24} {:<9} {:>7.1}% {:>7.1}% {:>8.1}% {:>8.1}% {:>8.1}% {:>8.1}% {:>8.1}% {:>8.1}% {:>7} {:>8} {:>7}/{}",
                profile,
                format!("{mode:?}"),
                pct(r.hw_packets, r.packets),
                pct(r.hw_bytes, r.bytes),
                pct(r.direct_hw_packets, r.direct_packets),
                pct(r.direct_hw_bytes, r.direct_bytes),
                pct(r.local.hw_packets, r.local.packets),
                pct(r.local.hw_bytes, r.local.bytes),
                pct(r.remote.hw_packets, r.remote.packets),
                pct(r.remote.hw_bytes, r.remote.bytes),
                r.max_entries,
                r.max_counters,
                q(0.5),
                q(0.9)
            );
        }
    }
}
