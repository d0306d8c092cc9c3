//! Connection offload: which established connections get exact 5-tuple entries in the
//! cnxk flow table that finish their packets in hardware, and when those entries go.
//!
//! The module is a deterministic state machine. pipecd feeds it the eBPF conntrack's
//! events (a connection established and allowed, its byte and packet counts), the counter
//! values it polls from the device, clock ticks, and policy, pod and plan changes; each call
//! returns a [`Batch`] of entries to remove and entries to install. pipecd applies the
//! removals first and waits for them to complete before it applies anything else (the new
//! policy in the eBPF maps, the install list), so no entry forwards a connection that the
//! policy in force denies.
//!
//! The hardware facts it designs around (`shared/reference/octeon-cnxk.md` §1.4 and
//! `shared/reference/runtime-cni-ipsec.md` §6): cnxk in DPDK 22.11 cannot rewrite headers, so
//! a connection that was DNATed (a Service connection) stays in software; it has no AGE
//! action, so activity is read from COUNT, which counts packets only and of which the SoC has
//! 512; entries come out of the same 8192 MCAM entries as the policy plan; and `VF` /
//! `PORT_ID` reach only the rule port's own PF in 22.11 (`npc_parse_actions`, roc_npc.c), so
//! only pod-to-pod connections between two VFs of the host-facing SDP PF can be finished
//! there. The allow/deny decision is the compiler's reference semantics
//! ([`pipec::semantics::evaluate`]) through [`Verdicts`]; this module holds no policy logic.

use pipec::backend::{HwAction, HwRule, PortDirection};
use pipec::engine::hwmodel::{ForwardSemantics, Ports, OFFLOAD_LEVEL};
use std::collections::{BTreeMap, BTreeSet};

/// An IPv4 5-tuple as the conntrack reports it (the default cnxk key holds no full IPv6
/// address, so only IPv4 connections can be offloaded): the flow-table model's, so that an
/// entry pipecd makes and one engine `hw` runs are keyed alike.
pub use pipec::engine::hwmodel::FiveTuple;

/// A connection the eBPF conntrack saw established and allowed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Connection {
    /// The original direction's tuple (after any DNAT the datapath did).
    pub tuple: FiveTuple,
    /// The client pod (`namespace/name`).
    pub src_pod: String,
    /// The server pod, when the destination is a pod of this node.
    pub dst_pod: Option<String>,
    /// The ethdev port the client's packets arrive on (its VF).
    pub src_port: u16,
    /// The ethdev port the server's packets arrive on (its VF, or the uplink).
    pub dst_port: u16,
    /// Whether the datapath rewrote the destination (a Service connection).
    pub dnat: bool,
}

/// Why a connection stays in software: what [`Offloader::stays`] finds of the connection
/// itself, and what the driver learns from the conntrack and the policy in force (one list,
/// so that `/status` and the metrics name what the offloader decided).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stays {
    /// It was DNATed (a Service connection): cnxk cannot rewrite headers, so the
    /// translation must stay in eBPF.
    NeedsRewrite,
    /// The forwarding action cannot reach the peer's port from the rule's port on this
    /// DPDK release (22.11: the uplink is another PF than the pods' SDP PF).
    Unreachable,
    /// The policy in force denies it (the conntrack still carries it as established).
    Denied,
    /// Its packets go to the L7 proxy, which runs in software.
    Proxied,
    /// IPv6: the default MKEX key holds no full IPv6 address.
    Ipv6,
}

impl Stays {
    /// The name in `/status` and in the metrics' `reason` label.
    pub fn name(self) -> &'static str {
        match self {
            Stays::NeedsRewrite => "needs_rewrite",
            Stays::Unreachable => "unreachable",
            Stays::Denied => "denied",
            Stays::Proxied => "proxied",
            Stays::Ipv6 => "ipv6",
        }
    }

    /// Every reason, in the order the status lists them.
    pub const ALL: [Stays; 5] = [
        Stays::NeedsRewrite,
        Stays::Unreachable,
        Stays::Denied,
        Stays::Proxied,
        Stays::Ipv6,
    ];
}

/// Allow or deny of a connection under the policy in force.
pub trait Verdicts {
    /// Whether the policy allows `conn` (both the client's egress and the server's ingress).
    fn allows(&self, conn: &Connection) -> bool;
}

/// [`Verdicts`] from the compiler's reference semantics over the cluster in force.
pub struct ReferenceVerdicts<'c> {
    ctx: pipec::semantics::Context<'c>,
}

impl<'c> ReferenceVerdicts<'c> {
    /// The verdicts of `cluster`'s policies.
    pub fn new(cluster: &'c pipec::model::Cluster) -> ReferenceVerdicts<'c> {
        ReferenceVerdicts {
            ctx: pipec::semantics::Context::new(cluster),
        }
    }
}

impl Verdicts for ReferenceVerdicts<'_> {
    fn allows(&self, conn: &Connection) -> bool {
        use pipec::model::Protocol;
        use pipec::semantics::{evaluate, Destination, Peer, Probe};
        let Some(protocol) = [Protocol::Tcp, Protocol::Udp, Protocol::Sctp]
            .into_iter()
            .find(|p| p.number() == conn.tuple.proto)
        else {
            return false;
        };
        let probe = Probe {
            from: Peer::External(conn.tuple.src.into()),
            to: Destination::Ip(conn.tuple.dst.into()),
            protocol,
            port: Some(conn.tuple.dport),
        };
        evaluate(&self.ctx, &probe).allowed() == Some(true)
    }
}

/// One flow-table entry of an offloaded connection (one direction).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Entry {
    /// The direction's tuple.
    pub tuple: FiveTuple,
    /// The port the rule is created on (where that direction's packets arrive).
    pub port: u16,
    /// The forwarding action.
    pub action: HwActionKey,
    /// Whether the entry holds one of the SoC's counters.
    pub counted: bool,
}

/// A forwarding action in an orderable form.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum HwActionKey {
    /// `vf id N`.
    Vf(u16),
    /// `port_id id N`.
    PortId(u16),
}

impl Entry {
    /// The entry as a hardware rule at level 0 (ahead of the policy plan's marks: the
    /// connection was already judged allowed), for the flow-table model and the rte_flow
    /// backend.
    pub fn rule(&self, id: u32) -> HwRule {
        let t = self.tuple;
        let mut actions = Vec::new();
        if self.counted {
            actions.push(HwAction::Count);
        }
        actions.push(match self.action {
            HwActionKey::Vf(vf) => HwAction::Vf { vf },
            HwActionKey::PortId(port) => HwAction::PortId { port },
        });
        HwRule {
            id,
            port: self.port,
            direction: PortDirection::Ingress,
            level: OFFLOAD_LEVEL,
            matches: t.matches(),
            actions,
            origin: format!(
                "connection offload {}:{} -> {}:{}",
                t.src, t.sport, t.dst, t.dport
            ),
        }
    }
}

/// What pipecd applies, in this order: every removal (and waits for it), then the installs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Batch {
    /// Entries to destroy first.
    pub remove: Vec<Entry>,
    /// Entries to create after the removals are done.
    pub install: Vec<Entry>,
}

/// Settings of the offload logic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// The forwarding semantics of the DPDK release.
    pub semantics: ForwardSemantics,
    /// The device's ports and their pf_func.
    pub ports: Ports,
    /// Flow-table entries the policy plan leaves free.
    pub free_entries: u64,
    /// Counters the policy plan leaves free.
    pub free_counters: u64,
    /// Ticks without a counter increase after which a counted connection is idle and
    /// returns to software.
    pub idle_ticks: u64,
    /// Ticks after which an uncounted connection returns to software (no activity signal).
    pub hard_lifetime_ticks: u64,
    /// Bytes a connection must have carried in software before it is a candidate: tiny
    /// connections finish before their entries land and would only churn the table.
    pub min_bytes: u64,
}

/// An offloaded connection.
#[derive(Clone, Debug)]
struct Offloaded {
    conn: Connection,
    counted: bool,
    installed: u64,
    last_count: u64,
    last_active: u64,
}

/// A connection in software that may be offloaded.
#[derive(Clone, Debug)]
struct Candidate {
    conn: Connection,
    bytes: u64,
}

/// The offload state of one node.
#[derive(Debug)]
pub struct Offloader {
    config: Config,
    now: u64,
    offloaded: BTreeMap<FiveTuple, Offloaded>,
    candidates: BTreeMap<FiveTuple, Candidate>,
    /// Connections returned to software by their hard lifetime: re-offloaded only after
    /// the conntrack reports new activity.
    expired: BTreeSet<FiveTuple>,
}

impl Offloader {
    /// An empty state.
    pub fn new(config: Config) -> Offloader {
        Offloader {
            config,
            now: 0,
            offloaded: BTreeMap::new(),
            candidates: BTreeMap::new(),
            expired: BTreeSet::new(),
        }
    }

    /// Entries installed (two per connection).
    pub fn entries_used(&self) -> u64 {
        2 * self.offloaded.len() as u64
    }

    /// Counters held (one per counted connection, on its original direction).
    pub fn counters_used(&self) -> u64 {
        self.offloaded.values().filter(|o| o.counted).count() as u64
    }

    /// Connections waiting in software as candidates (below `min_bytes`, or no entry free).
    pub fn candidates_len(&self) -> u64 {
        self.candidates.len() as u64
    }

    /// Whether the connection of `tuple` (original direction) is a candidate.
    pub fn is_candidate(&self, tuple: FiveTuple) -> bool {
        self.candidates.contains_key(&tuple)
    }

    /// The pods (`namespace/name`) of the offloaded connections, either end.
    pub fn pods(&self) -> BTreeSet<String> {
        self.offloaded
            .values()
            .flat_map(|o| std::iter::once(o.conn.src_pod.clone()).chain(o.conn.dst_pod.clone()))
            .filter(|p| !p.is_empty())
            .collect()
    }

    /// The settings in force (free entries and counters as the last plan left them).
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Whether the connection of `tuple` (either direction) is offloaded.
    pub fn is_offloaded(&self, tuple: FiveTuple) -> bool {
        self.offloaded.contains_key(&tuple) || self.offloaded.contains_key(&tuple.reverse())
    }

    /// Every installed entry, in a stable order.
    pub fn entries(&self) -> Vec<Entry> {
        self.offloaded
            .values()
            .flat_map(|o| self.entries_of(&o.conn, o.counted).unwrap_or_default())
            .collect()
    }

    /// The installed entries of the connection of `tuple` (original direction), if any.
    pub fn entries_of_connection(&self, tuple: FiveTuple) -> Vec<Entry> {
        self.offloaded
            .get(&tuple)
            .and_then(|o| self.entries_of(&o.conn, o.counted))
            .unwrap_or_default()
    }

    /// Why a connection must stay in software, if it must.
    pub fn stays(&self, conn: &Connection) -> Option<Stays> {
        if conn.dnat {
            return Some(Stays::NeedsRewrite);
        }
        if self.entries_of(conn, false).is_none() {
            return Some(Stays::Unreachable);
        }
        None
    }

    /// The conntrack saw `conn` established and allowed, with `bytes` so far.
    pub fn established(&mut self, conn: Connection, bytes: u64) {
        if self.stays(&conn).is_some() || self.is_offloaded(conn.tuple) {
            return;
        }
        self.expired.remove(&conn.tuple);
        self.candidates
            .insert(conn.tuple, Candidate { conn, bytes });
    }

    /// The conntrack's byte count of a connection still in software.
    pub fn activity(&mut self, tuple: FiveTuple, bytes: u64) {
        if let Some(c) = self.candidates.get_mut(&tuple) {
            c.bytes = c.bytes.max(bytes);
        }
    }

    /// The connection closed (FIN/RST seen in software, or the conntrack entry timed out).
    pub fn closed(&mut self, tuple: FiveTuple) -> Batch {
        self.candidates.remove(&tuple);
        self.expired.remove(&tuple);
        Batch {
            remove: self.take(&[tuple]),
            install: Vec::new(),
        }
    }

    /// A polled counter value of the connection whose original tuple is `tuple`.
    pub fn counter(&mut self, tuple: FiveTuple, packets: u64) {
        let now = self.now;
        if let Some(o) = self.offloaded.get_mut(&tuple) {
            if packets > o.last_count {
                o.last_count = packets;
                o.last_active = now;
            }
        }
    }

    /// One clock tick: age entries out, then fill the free entries with the best
    /// candidates.
    pub fn tick(&mut self) -> Batch {
        self.now += 1;
        let aged = self.aged();
        for t in &aged {
            if let Some(o) = self.offloaded.get(t) {
                if !o.counted {
                    // Still possibly active: it goes back to software, and the conntrack's
                    // next report makes it a candidate again.
                    self.expired.insert(*t);
                }
            }
        }
        let remove = self.take(&aged);
        let install = self.fill();
        Batch { remove, install }
    }

    /// The connections whose entries age out now.
    fn aged(&self) -> Vec<FiveTuple> {
        let c = &self.config;
        self.offloaded
            .iter()
            .filter(|(_, o)| {
                if o.counted {
                    self.now - o.last_active >= c.idle_ticks
                } else {
                    self.now - o.installed >= c.hard_lifetime_ticks
                }
            })
            .map(|(t, _)| *t)
            .collect()
    }

    /// The policy in force changes to `verdicts`: every offloaded connection it denies is
    /// removed (pipecd applies this batch before the new policy), and candidates it denies
    /// are forgotten.
    pub fn policy_changed(&mut self, verdicts: &dyn Verdicts) -> Batch {
        let denied: Vec<FiveTuple> = self
            .offloaded
            .iter()
            .filter(|(_, o)| !verdicts.allows(&o.conn))
            .map(|(t, _)| *t)
            .collect();
        self.candidates.retain(|_, c| verdicts.allows(&c.conn));
        Batch {
            remove: self.take(&denied),
            install: Vec::new(),
        }
    }

    /// A pod is deleted: its connections' entries are removed in this first batch.
    pub fn pod_deleted(&mut self, pod: &str) -> Batch {
        let of_pod = |c: &Connection| c.src_pod == pod || c.dst_pod.as_deref() == Some(pod);
        let gone: Vec<FiveTuple> = self
            .offloaded
            .iter()
            .filter(|(_, o)| of_pod(&o.conn))
            .map(|(t, _)| *t)
            .collect();
        self.candidates.retain(|_, c| !of_pod(&c.conn));
        Batch {
            remove: self.take(&gone),
            install: Vec::new(),
        }
    }

    /// The policy plan changed its use of the table: the lowest-value connections are
    /// removed until the offload fits in what is left.
    pub fn plan_changed(&mut self, free_entries: u64, free_counters: u64) -> Batch {
        self.config.free_entries = free_entries;
        self.config.free_counters = free_counters;
        let mut order: Vec<(u64, FiveTuple)> = self
            .offloaded
            .iter()
            .map(|(t, o)| (o.last_count, *t))
            .collect();
        order.sort();
        let mut remove = Vec::new();
        for (_, t) in order {
            if self.entries_used() <= free_entries && self.counters_used() <= free_counters {
                break;
            }
            remove.extend(self.take(&[t]));
        }
        Batch {
            remove,
            install: Vec::new(),
        }
    }

    /// Removes the connections of `tuples` and returns their entries.
    fn take(&mut self, tuples: &[FiveTuple]) -> Vec<Entry> {
        let mut out = Vec::new();
        for t in tuples {
            let key = if self.offloaded.contains_key(t) {
                *t
            } else {
                t.reverse()
            };
            if let Some(o) = self.offloaded.remove(&key) {
                out.extend(self.entries_of(&o.conn, o.counted).unwrap_or_default());
            }
        }
        out
    }

    /// Installs the best candidates the free entries and counters allow: ranked by bytes
    /// seen in software (the best predictor of a long flow that the conntrack has), ties by
    /// tuple so the order is deterministic.
    fn fill(&mut self) -> Vec<Entry> {
        let mut ranked: Vec<(u64, FiveTuple)> = self
            .candidates
            .values()
            .filter(|c| c.bytes >= self.config.min_bytes && !self.expired.contains(&c.conn.tuple))
            .map(|c| (c.bytes, c.conn.tuple))
            .collect();
        ranked.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        let mut install = Vec::new();
        for (_, t) in ranked {
            if self.entries_used() + 2 > self.config.free_entries {
                break;
            }
            let cand = self.candidates.remove(&t).expect("ranked from candidates");
            let counted = self.counters_used() < self.config.free_counters;
            install.extend(self.entries_of(&cand.conn, counted).unwrap_or_default());
            let now = self.now;
            self.offloaded.insert(
                t,
                Offloaded {
                    conn: cand.conn,
                    counted,
                    installed: now,
                    last_count: 0,
                    last_active: now,
                },
            );
        }
        install
    }

    /// The two entries of a connection, or `None` when a direction cannot be forwarded on
    /// this release.
    fn entries_of(&self, conn: &Connection, counted: bool) -> Option<Vec<Entry>> {
        let fwd = self.forward(conn.src_port, conn.dst_port)?;
        let rev = self.forward(conn.dst_port, conn.src_port)?;
        Some(vec![
            Entry {
                tuple: conn.tuple,
                port: conn.src_port,
                action: fwd,
                counted,
            },
            Entry {
                tuple: conn.tuple.reverse(),
                port: conn.dst_port,
                action: rev,
                counted: false,
            },
        ])
    }

    /// The action on a rule of port `from` that delivers to port `to`, if one does on this
    /// release: `VF` within a PF, `PORT_ID` across PFs (23.07 and later).
    fn forward(&self, from: u16, to: u16) -> Option<HwActionKey> {
        // A connection between two addresses of one port would have to hairpin.
        if from == to {
            return None;
        }
        let action = pipec::engine::offload::forward_action(
            &self.config.ports,
            from,
            to,
            self.config.semantics,
        )?;
        match action {
            HwAction::Vf { vf } => Some(HwActionKey::Vf(vf)),
            HwAction::PortId { port } => Some(HwActionKey::PortId(port)),
            _ => None,
        }
    }
}

pub mod driver;

#[cfg(test)]
mod tests;
