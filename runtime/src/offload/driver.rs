//! pipecd's side of connection offload: where the [`Offloader`]'s inputs come from and
//! what the daemon does with its batches.
//!
//! - **Connections** come from the eBPF conntrack map `ct`, scanned on a timer a page at a
//!   time ([`Driver::scan`]), as Cilium's userspace conntrack GC walks its map: the C
//!   program stays as it is and pays nothing for the offload. One full pass over the map is
//!   one tick of the offload logic. A connection between two pods of this node that is
//!   established, has seen a reply and was not DNATed becomes a candidate; its later passes
//!   report its activity; a connection the pass no longer finds, or finds closing, is
//!   closed.
//! - **Ports** follow the device model of [`pipec::engine::hwmodel::Ports`]: the network
//!   uplink is port 0 (PF 1), the SDP PF that faces the host is port 1 (PF 2), and each
//!   attached pod gets the lowest free VF of the SDP PF, VF `n` being port `2 + n`. So the
//!   DPDK 22.11 forwarding reach (`ForwardSemantics::SamePf`) connects two pods of the node
//!   and never a pod and the uplink.
//! - **Counters**: there is no OCTEON here, so the flow table is a model with no hardware
//!   counters. The model feeds [`Offloader::counter`] with the packet count of the
//!   connection's client-side conntrack entry, which is the model's stand-in for polling
//!   the original direction's NPC counter with `npc_mcam_read_counter`. The conntrack
//!   entry counts both directions where the counter would count one, but both rise exactly
//!   while the connection carries packets, which is all aging asks of them. In the model
//!   the packets still cross the eBPF programs, so the conntrack keeps counting; on the
//!   device the finished packets no longer reach the conntrack and only the polled counter
//!   can say a connection is alive.

use super::{Batch, Config, Connection, FiveTuple, Offloader, ReferenceVerdicts, Stays, Verdicts};
use pipec::backend::Profile;
use pipec::engine::hwmodel::{ForwardSemantics, Ports};
use pipec_ebpf_common as c;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};

pub use pipec::engine::offload::{FIRST_VF_PORT, UPLINK_PORT};

/// The VFs the SDP PF can give pods: as many as the pf_func's function field names
/// (functions 1 to 1023 are VFs 0 to 1022). The real count is the PF's SR-IOV setting.
pub const SDP_VFS: u16 = 1023;

/// The device's ports and their pf_func: the uplink, the SDP PF and every VF it can have.
pub fn device_ports() -> Ports {
    pipec::engine::offload::device_ports(SDP_VFS)
}

/// The forwarding semantics of a hardware profile: `PORT_ID` crosses PFs only where the
/// profile offers `forward_any_port` (DPDK 23.07 and later); a profile without any
/// forwarding action is treated as 22.11's, and the backend refuses the entries it lowers.
pub fn semantics_of(profile: &Profile) -> ForwardSemantics {
    pipec::engine::offload::semantics_of(profile).unwrap_or(ForwardSemantics::SamePf)
}

/// The flow-table entries and counters a plan leaves to connection offload
/// ([`pipec::engine::offload::free_of`]).
pub use pipec::engine::offload::free_of;

/// [`ReferenceVerdicts`] built on first use: indexing the cluster costs in proportion to
/// its size, and a scan or a change that meets no connection to judge should not pay it.
pub struct LazyVerdicts<'c> {
    cluster: &'c pipec::model::Cluster,
    built: std::cell::OnceCell<ReferenceVerdicts<'c>>,
}

impl<'c> LazyVerdicts<'c> {
    /// The verdicts of `cluster`'s policies, indexed when first asked.
    pub fn new(cluster: &'c pipec::model::Cluster) -> LazyVerdicts<'c> {
        LazyVerdicts {
            cluster,
            built: std::cell::OnceCell::new(),
        }
    }
}

impl Verdicts for LazyVerdicts<'_> {
    fn allows(&self, conn: &Connection) -> bool {
        self.built
            .get_or_init(|| ReferenceVerdicts::new(self.cluster))
            .allows(conn)
    }
}

/// The daemon's offload settings (command-line flags of `pipecd`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Conntrack entries read per scan: a scan never holds the daemon for the whole map.
    pub scan_budget: usize,
    /// Passes without a counter increase after which a counted connection goes back to
    /// software.
    pub idle_passes: u64,
    /// Passes after which an uncounted connection goes back to software.
    pub lifetime_passes: u64,
    /// Bytes a connection carries in software before it is a candidate.
    pub min_bytes: u64,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            scan_budget: 16_384,
            idle_passes: 3,
            lifetime_passes: 30,
            // Twenty full segments, as the offload benchmark uses: shorter connections
            // end before their entries would land.
            min_bytes: 20 * 1460,
        }
    }
}

/// A local pod's address: the pod (`namespace/name`) and its port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodPort {
    /// The pod, `namespace/name`.
    pub pod: String,
    /// Its VF's ethdev port.
    pub port: u16,
}

/// A conntrack tuple of either family, in the direction of the connection's first packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct CtTuple {
    family: u8,
    saddr: [u8; 16],
    daddr: [u8; 16],
    sport: u16,
    dport: u16,
    proto: u8,
}

/// The entries of one connection a pass found: the one its client's `from_pod` made
/// (egress) and the one its server's `to_pod` or `from_wire` made (ingress).
#[derive(Clone, Copy, Debug, Default)]
struct Found {
    egress: Option<c::CtValue>,
    ingress: Option<c::CtValue>,
}

/// One pass over the conntrack, possibly over several scans.
#[derive(Debug, Default)]
struct Pass {
    cursor: Option<c::CtKey>,
    found: BTreeMap<CtTuple, Found>,
    scans: usize,
}

/// The conntrack map's `max_entries` (`PIPEC_MAP(ct, …)` in `bpf/pipec.h`).
const CT_ENTRIES: usize = 262_144;

/// The connection offload as pipecd drives it: the [`Offloader`], the pods' ports and
/// the conntrack scan.
#[derive(Debug)]
pub struct Driver {
    offloader: Offloader,
    settings: Settings,
    /// The VF of each attached pod port (by host interface name).
    vfs: BTreeMap<String, u16>,
    pass: Pass,
    /// Packets of each connection handed to the offloader, at the last pass: a
    /// connection that went back to software is offered again only when it carried more.
    known: BTreeMap<FiveTuple, u64>,
    /// The policy verdicts of connections, valid for one session generation.
    verdicts: BTreeMap<FiveTuple, bool>,
    verdicts_generation: u64,
    /// Established connections that stay in software, by reason, at the last full pass.
    stays: BTreeMap<Stays, u64>,
    /// Full passes over the conntrack so far.
    passes: u64,
    /// Whether a conntrack is scanned at all (the kernel datapath).
    source: bool,
}

impl Driver {
    /// The forwarding semantics the driver's entries are made for.
    pub fn semantics(&self) -> ForwardSemantics {
        self.offloader.config().semantics
    }

    /// A driver for a device with `semantics`, before any plan is known (nothing free).
    pub fn new(semantics: ForwardSemantics, settings: Settings) -> Driver {
        let config = Config {
            semantics,
            ports: device_ports(),
            free_entries: 0,
            free_counters: 0,
            idle_ticks: settings.idle_passes,
            hard_lifetime_ticks: settings.lifetime_passes,
            min_bytes: settings.min_bytes,
        };
        Driver {
            offloader: Offloader::new(config),
            settings,
            vfs: BTreeMap::new(),
            pass: Pass::default(),
            known: BTreeMap::new(),
            verdicts: BTreeMap::new(),
            verdicts_generation: 0,
            stays: BTreeMap::new(),
            passes: 0,
            source: false,
        }
    }

    /// The settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The offload logic's state.
    pub fn offloader(&self) -> &Offloader {
        &self.offloader
    }

    /// Gives the pod port `host_ifname` the lowest free VF (the one it has, when it has
    /// one) and returns its ethdev port; `None` when every VF is taken.
    pub fn attach(&mut self, host_ifname: &str) -> Option<u16> {
        if let Some(vf) = self.vfs.get(host_ifname) {
            return Some(FIRST_VF_PORT + vf);
        }
        let used: BTreeSet<u16> = self.vfs.values().copied().collect();
        let vf = (0..SDP_VFS).find(|v| !used.contains(v))?;
        self.vfs.insert(host_ifname.to_string(), vf);
        Some(FIRST_VF_PORT + vf)
    }

    /// Frees the VF of a pod port.
    pub fn detach(&mut self, host_ifname: &str) {
        self.vfs.remove(host_ifname);
    }

    /// The ethdev port of an attached pod port.
    pub fn port_of(&self, host_ifname: &str) -> Option<u16> {
        self.vfs.get(host_ifname).map(|vf| FIRST_VF_PORT + vf)
    }

    /// The flow table refused an entry of the connection of `tuple` (either direction):
    /// the connection goes back to software, and the batch removes whatever of it was
    /// installed.
    pub fn refused(&mut self, tuple: FiveTuple) -> Batch {
        let original = if self.known.contains_key(&tuple) {
            tuple
        } else {
            tuple.reverse()
        };
        self.offloader.closed(original)
    }

    /// A pod is deleted: the batch that removes its connections' entries, to be applied
    /// before its maps go.
    pub fn pod_deleted(&mut self, pod: &str) -> Batch {
        self.offloader.pod_deleted(pod)
    }

    /// The policy in force is about to change to `verdicts`, with the plan leaving
    /// `free` entries and counters and `pods` the local pods: the batch of removals to
    /// apply before anything of the change reaches the device. Connections of a pod that
    /// is no longer there go, those the new policy denies go, and the least active go
    /// when the plan grows.
    pub fn before_change(
        &mut self,
        verdicts: &dyn Verdicts,
        generation: u64,
        free: (u64, u64),
        pods: &BTreeMap<Ipv4Addr, PodPort>,
    ) -> Batch {
        let live: BTreeSet<&str> = pods.values().map(|p| p.pod.as_str()).collect();
        let mut batch = Batch::default();
        for pod in self.offloader.pods() {
            if !live.contains(pod.as_str()) {
                batch.remove.extend(self.offloader.pod_deleted(&pod).remove);
            }
        }
        batch
            .remove
            .extend(self.offloader.policy_changed(verdicts).remove);
        batch
            .remove
            .extend(self.offloader.plan_changed(free.0, free.1).remove);
        self.verdicts.clear();
        self.verdicts_generation = generation;
        batch
    }

    /// Reads the next page of the conntrack; at the end of a pass, feeds the offload logic
    /// what the pass found and advances it one tick. Returns the batch to apply (removals
    /// first). `now_ns` is the datapath's clock (`CLOCK_MONOTONIC`): entries past their
    /// deadline count as gone, as the datapath treats them.
    pub fn scan(
        &mut self,
        dp: &pipec_ebpf::Datapath,
        pods: &BTreeMap<Ipv4Addr, PodPort>,
        verdicts: &dyn Verdicts,
        generation: u64,
        now_ns: u64,
    ) -> anyhow::Result<Batch> {
        self.source = true;
        let (page, more) =
            dp.conntrack_page(self.pass.cursor.as_ref(), self.settings.scan_budget)?;
        self.pass.cursor = page.last().map(|(k, _)| *k);
        self.pass.scans += 1;
        self.take_page(&page, now_ns);
        // The kernel restarts an iteration whose cursor was deleted meanwhile, so under
        // heavy churn a pass could go on for ever; it is cut at twice the scans a full map
        // needs. A connection the cut pass missed is closed, which only sends its packets
        // back to software: the safe side.
        let bound = 2 * CT_ENTRIES.div_ceil(self.settings.scan_budget.max(1)) + 1;
        if more && self.pass.scans < bound {
            return Ok(Batch::default());
        }
        Ok(self.end_pass(pods, verdicts, generation))
    }

    /// Records a page of conntrack entries in the pass.
    fn take_page(&mut self, page: &[(c::CtKey, c::CtValue)], now_ns: u64) {
        for (k, v) in page {
            if v.expires < now_ns {
                continue;
            }
            let t = CtTuple {
                family: k.family,
                saddr: k.saddr,
                daddr: k.daddr,
                sport: u16::from_be(k.sport),
                dport: u16::from_be(k.dport),
                proto: k.protocol,
            };
            let f = self.pass.found.entry(t).or_default();
            match k.direction {
                c::DIR_EGRESS => f.egress = Some(*v),
                c::DIR_INGRESS => f.ingress = Some(*v),
                // The pre-DNAT tuple of a Service connection: its egress entry (after the
                // DNAT) carries the reverse-NAT id the decision needs.
                _ => {}
            }
        }
    }

    /// Ends a pass: every established connection it found is offered, counted or
    /// recorded as staying in software; every connection it no longer found is closed; then
    /// one tick.
    fn end_pass(
        &mut self,
        pods: &BTreeMap<Ipv4Addr, PodPort>,
        verdicts: &dyn Verdicts,
        generation: u64,
    ) -> Batch {
        if generation != self.verdicts_generation {
            self.verdicts.clear();
            self.verdicts_generation = generation;
        }
        let pass = std::mem::take(&mut self.pass);
        let mut stays: BTreeMap<Stays, u64> = BTreeMap::new();
        let mut live: BTreeMap<FiveTuple, u64> = BTreeMap::new();
        let mut seen: BTreeSet<FiveTuple> = BTreeSet::new();
        for (t, f) in &pass.found {
            let entries: Vec<&c::CtValue> = f.egress.iter().chain(f.ingress.iter()).collect();
            if entries
                .iter()
                .any(|v| v.state == c::CT_CLOSING || v.state == c::CT_CLOSED)
            {
                continue;
            }
            // The client's entry when there is one: it is the one that saw the service's
            // DNAT and the one whose packets the original direction's counter stands for.
            let Some(main) = f.egress.or(f.ingress) else {
                continue;
            };
            if main.state != c::CT_ESTABLISHED || main.flags & c::CT_SEEN_REPLY == 0 {
                continue;
            }
            let (src, dst) = match t.family {
                c::AF_INET => (v4(&t.saddr), v4(&t.daddr)),
                _ => {
                    stays
                        .entry(Stays::Ipv6)
                        .and_modify(|n| *n += 1)
                        .or_insert(1);
                    continue;
                }
            };
            let (sp, dp) = (pods.get(&src), pods.get(&dst));
            if sp.is_none() && dp.is_none() {
                // Neither end is a pod of this node: not the node's pod traffic.
                continue;
            }
            let tuple = five(t, src, dst);
            seen.insert(tuple);
            if sp.is_some() && dp.is_some() && (f.egress.is_none() || f.ingress.is_none()) {
                // Between two local pods both programs make an entry; with one of them
                // missing (evicted, or not made yet) the pass cannot tell whether the
                // connection was DNATed, so nothing new is decided about it, and what it
                // had stays as it was until a pass finds both.
                if let Some(p) = self.known.get(&tuple) {
                    live.insert(tuple, *p);
                }
                continue;
            }
            let conn = Connection {
                tuple,
                src_pod: sp.map(|p| p.pod.clone()).unwrap_or_default(),
                dst_pod: dp.map(|p| p.pod.clone()),
                src_port: sp.map_or(UPLINK_PORT, |p| p.port),
                dst_port: dp.map_or(UPLINK_PORT, |p| p.port),
                dnat: entries.iter().any(|v| v.rev_nat != 0),
            };
            let reason = if entries.iter().any(|v| v.proxy_port != 0) {
                Some(Stays::Proxied)
            } else {
                self.offloader.stays(&conn).or_else(|| {
                    let allowed = *self
                        .verdicts
                        .entry(tuple)
                        .or_insert_with(|| verdicts.allows(&conn));
                    (!allowed).then_some(Stays::Denied)
                })
            };
            if let Some(r) = reason {
                stays.entry(r).and_modify(|n| *n += 1).or_insert(1);
                continue;
            }
            let packets = main.packets;
            live.insert(tuple, packets);
            if self.offloader.is_offloaded(tuple) {
                // The model's stand-in for the entry's NPC counter (see the module's
                // documentation).
                self.offloader.counter(tuple, packets);
            } else if self.offloader.is_candidate(tuple) {
                self.offloader.activity(tuple, main.bytes);
            } else if self.known.get(&tuple).is_none_or(|p| packets > *p) {
                // New, or back in software (its lifetime ended, or the policy denied it
                // before) and still carrying packets.
                self.offloader.established(conn, main.bytes);
            }
        }
        let mut batch = Batch::default();
        for t in self.known.keys() {
            if !live.contains_key(t) {
                batch.remove.extend(self.offloader.closed(*t).remove);
            }
        }
        self.known = live;
        // Verdicts are kept for the connections the conntrack still has, so that a long
        // generation under connection churn does not grow the cache without bound.
        self.verdicts.retain(|t, _| seen.contains(t));
        self.stays = stays;
        self.passes += 1;
        let tick = self.offloader.tick();
        batch.remove.extend(tick.remove);
        batch.install = tick.install;
        batch
    }

    /// The offload's status (`/status`).
    pub fn status(&self) -> serde_json::Value {
        let stays: serde_json::Map<String, serde_json::Value> = Stays::ALL
            .iter()
            .map(|r| {
                (
                    r.name().to_string(),
                    self.stays.get(r).copied().unwrap_or(0).into(),
                )
            })
            .collect();
        let o = &self.offloader;
        serde_json::json!({
            "conntrack_scanned": self.source,
            "passes": self.passes,
            "connections": o.entries_used() / 2,
            "entries": o.entries_used(),
            "counters": o.counters_used(),
            "free_entries": o.config().free_entries,
            "free_counters": o.config().free_counters,
            "candidates": o.candidates_len(),
            "stays_in_software": stays,
            "counter_source": "the packet count of the client-side conntrack entry: the flow-table model has no NPC counters",
        })
    }

    /// The offload's Prometheus text.
    pub fn metrics_text(&self) -> String {
        use std::fmt::Write as _;
        let o = &self.offloader;
        let mut out = String::new();
        for (name, help, v) in [
            (
                "pipecd_offload_connections",
                "Connections finished in the hardware flow table (two entries each).",
                o.entries_used() / 2,
            ),
            (
                "pipecd_offload_entries",
                "Flow-table entries of offloaded connections.",
                o.entries_used(),
            ),
            (
                "pipecd_offload_counters",
                "Hardware counters held by offloaded connections.",
                o.counters_used(),
            ),
            (
                "pipecd_offload_free_entries",
                "Flow-table entries the policy plan leaves to connection offload.",
                o.config().free_entries,
            ),
            (
                "pipecd_offload_free_counters",
                "Hardware counters the policy plan leaves to connection offload.",
                o.config().free_counters,
            ),
            (
                "pipecd_offload_candidates",
                "Established connections in software that may be offloaded.",
                o.candidates_len(),
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        }
        let name = "pipecd_offload_stays_in_software";
        let _ = writeln!(
            out,
            "# HELP {name} Established connections that stay in software, by reason, at the last conntrack pass.\n# TYPE {name} gauge"
        );
        for r in Stays::ALL {
            let v = self.stays.get(&r).copied().unwrap_or(0);
            let _ = writeln!(out, "{name}{{reason=\"{}\"}} {v}", r.name());
        }
        let name = "pipecd_offload_passes_total";
        let _ = writeln!(
            out,
            "# HELP {name} Full passes over the eBPF conntrack.\n# TYPE {name} counter\n{name} {}",
            self.passes
        );
        out
    }
}

fn v4(a: &[u8; 16]) -> Ipv4Addr {
    Ipv4Addr::new(a[0], a[1], a[2], a[3])
}

fn five(t: &CtTuple, src: Ipv4Addr, dst: Ipv4Addr) -> FiveTuple {
    FiveTuple {
        src,
        dst,
        proto: t.proto,
        sport: t.sport,
        dport: t.dport,
    }
}

/// The local pods' IPv4 addresses with their pod and port, from the CNI's attachments
/// (`(namespace/name, host interface, addresses)`) and the VFs the driver gave them.
pub fn pod_ports<'a>(
    driver: &Driver,
    attachments: impl Iterator<Item = (String, &'a str, &'a [IpAddr])>,
) -> BTreeMap<Ipv4Addr, PodPort> {
    let mut out = BTreeMap::new();
    for (pod, host, ips) in attachments {
        let Some(port) = driver.port_of(host) else {
            continue;
        };
        for ip in ips {
            if let IpAddr::V4(a) = ip {
                out.insert(
                    *a,
                    PodPort {
                        pod: pod.clone(),
                        port,
                    },
                );
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::offload::{Entry, HwActionKey};

    /// Every entry the offload makes between two pods of the node is one the
    /// `octeon-cn10k` backend accepts: the exact 5-tuple is in the default MKEX key and
    /// COUNT and VF are actions of a VF port in 22.11.
    #[test]
    fn offload_entries_lower_on_the_cn10k_profile() {
        let profile = pipec::backend::octeon_cn10k_profile();
        let mut d = Driver::new(semantics_of(&profile), Settings::default());
        let (a, b) = (d.attach("veth-a").unwrap(), d.attach("veth-b").unwrap());
        assert_eq!((a, b), (FIRST_VF_PORT, FIRST_VF_PORT + 1));
        let backend = pipec_rte_flow::RteFlowBackend::new(profile);
        let tuple = FiveTuple {
            src: Ipv4Addr::new(10, 0, 0, 1),
            dst: Ipv4Addr::new(10, 0, 0, 2),
            proto: 6,
            sport: 40000,
            dport: 80,
        };
        for (e, counted) in [
            (
                Entry {
                    tuple,
                    port: a,
                    action: HwActionKey::Vf(1),
                    counted: true,
                },
                true,
            ),
            (
                Entry {
                    tuple: tuple.reverse(),
                    port: b,
                    action: HwActionKey::Vf(0),
                    counted: false,
                },
                false,
            ),
        ] {
            let flow = backend
                .lower_rule(&e.rule(0))
                .unwrap_or_else(|err| panic!("{e:?}: {err}"));
            let key = pipec_rte_flow::rule_key(&flow);
            assert_eq!(key.contains("count"), counted, "{key}");
            assert!(key.contains("vf"), "{key}");
        }
    }

    /// Pods keep their VF while attached, a detached pod's VF goes to the next pod, and
    /// under 22.11 a pod's VF reaches a sibling VF and not the uplink.
    #[test]
    fn pods_get_the_lowest_free_vf() {
        let mut d = Driver::new(ForwardSemantics::SamePf, Settings::default());
        assert_eq!(d.attach("a"), Some(2));
        assert_eq!(d.attach("b"), Some(3));
        assert_eq!(d.attach("a"), Some(2));
        d.detach("a");
        assert_eq!(d.attach("c"), Some(2));
        let ports = device_ports();
        let vf = pipec::backend::HwAction::Vf { vf: 1 };
        assert_eq!(
            ports.target(2, &vf, ForwardSemantics::SamePf),
            ports.pf_func.get(&3).copied()
        );
        let to_uplink = pipec::backend::HwAction::PortId { port: UPLINK_PORT };
        assert_ne!(
            ports.target(2, &to_uplink, ForwardSemantics::SamePf),
            ports.pf_func.get(&UPLINK_PORT).copied()
        );
        assert_eq!(
            ports.target(2, &to_uplink, ForwardSemantics::AnyPort),
            ports.pf_func.get(&UPLINK_PORT).copied()
        );
    }

    struct Allow(bool);
    impl Verdicts for Allow {
        fn allows(&self, _: &Connection) -> bool {
            self.0
        }
    }

    fn key(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, dir: u8) -> c::CtKey {
        let mut k = c::CtKey {
            sport: sport.to_be(),
            dport: dport.to_be(),
            protocol: 6,
            family: c::AF_INET,
            direction: dir,
            ..c::CtKey::default()
        };
        k.saddr[..4].copy_from_slice(&src);
        k.daddr[..4].copy_from_slice(&dst);
        k
    }

    /// An established TCP entry that has seen its reply, alive for a long while.
    fn est(packets: u64, rev_nat: u32) -> c::CtValue {
        c::CtValue {
            expires: u64::MAX,
            packets,
            bytes: packets * 1000,
            rev_nat,
            state: c::CT_ESTABLISHED,
            flags: c::CT_SEEN_REPLY,
            ..c::CtValue::default()
        }
    }

    const A: [u8; 4] = [10, 0, 0, 1];
    const B: [u8; 4] = [10, 0, 0, 2];
    const WORLD: [u8; 4] = [192, 0, 2, 9];

    /// What a pass decides from the conntrack's entries, without a kernel: a pod-to-pod
    /// connection with both entries is offloaded, a DNATed one, one from the wire, one sent
    /// to the proxy and an IPv6 one stay in software with their reason, one with a single
    /// entry waits; the next pass closes a connection that is closing and one that is gone.
    #[test]
    fn a_pass_offers_counts_and_closes_from_the_conntrack_entries() {
        let settings = Settings {
            min_bytes: 0,
            ..Settings::default()
        };
        let mut d = Driver::new(ForwardSemantics::SamePf, settings);
        assert_eq!((d.attach("a"), d.attach("b")), (Some(2), Some(3)));
        let pods = pod_ports(
            &d,
            [
                ("ns/a".to_string(), "a", &[IpAddr::V4(A.into())][..]),
                ("ns/b".to_string(), "b", &[IpAddr::V4(B.into())][..]),
            ]
            .into_iter(),
        );
        let b = d.before_change(&Allow(true), 1, (100, 10), &pods);
        assert_eq!(b, Batch::default());

        let mut proxied = est(9, 0);
        proxied.proxy_port = 15001;
        let mut v6 = key(A, B, 7, 80, c::DIR_EGRESS);
        v6.family = c::AF_INET6;
        let page = vec![
            (key(A, B, 1000, 80, c::DIR_EGRESS), est(10, 0)),
            (key(A, B, 1000, 80, c::DIR_INGRESS), est(10, 0)),
            // A Service connection: the client's entry carries the reverse-NAT id.
            (key(A, B, 1001, 80, c::DIR_EGRESS), est(10, 7)),
            (key(A, B, 1001, 80, c::DIR_INGRESS), est(10, 0)),
            (key(WORLD, B, 1002, 80, c::DIR_INGRESS), est(10, 0)),
            (key(A, B, 1003, 80, c::DIR_EGRESS), proxied),
            (key(A, B, 1003, 80, c::DIR_INGRESS), proxied),
            (key(A, B, 1004, 80, c::DIR_INGRESS), est(10, 0)),
            (v6, est(10, 0)),
        ];
        d.take_page(&page, 1);
        let batch = d.end_pass(&pods, &Allow(true), 1);
        assert!(batch.remove.is_empty());
        let ports: Vec<(u16, u16)> = batch
            .install
            .iter()
            .map(|e| (e.port, e.tuple.sport))
            .collect();
        assert_eq!(ports, [(2, 1000), (3, 80)]);
        let status = d.status();
        let stays = &status["stays_in_software"];
        assert_eq!(
            (
                &stays["needs_rewrite"],
                &stays["unreachable"],
                &stays["proxied"],
                &stays["ipv6"],
                &stays["denied"]
            ),
            (&1.into(), &1.into(), &1.into(), &1.into(), &0.into()),
            "{status}"
        );
        assert_eq!(status["connections"], 1);

        // The offloaded connection starts closing: the next pass removes its entries.
        let mut closing = est(12, 0);
        closing.state = c::CT_CLOSING;
        d.take_page(
            &[
                (key(A, B, 1000, 80, c::DIR_EGRESS), closing),
                (key(A, B, 1000, 80, c::DIR_INGRESS), closing),
            ],
            1,
        );
        let batch = d.end_pass(&pods, &Allow(true), 1);
        assert_eq!(batch.remove.len(), 2);
        assert!(batch.install.is_empty());
        assert_eq!(d.status()["connections"], 0);
    }

    /// The budget the plan leaves: 8192 entries less the 221 the kernel reserves less the
    /// plan's, 512 counters less the plan's.
    #[test]
    fn free_entries_and_counters_follow_the_profile() {
        let p = pipec::backend::octeon_cn10k_profile();
        assert_eq!(free_of(&p, 100, 10), (8192 - 221 - 100, 502));
        assert_eq!(semantics_of(&p), ForwardSemantics::SamePf);
        let p = pipec::backend::octeon_cn10k_2307_profile();
        assert_eq!(semantics_of(&p), ForwardSemantics::AnyPort);
    }
}
