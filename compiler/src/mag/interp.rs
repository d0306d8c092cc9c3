//! The MAG interpreter: runs one packet through a validated graph, with a simulated
//! connection tracker, and records every table hit with its provenance.
//!
//! It follows the evaluation rules of the [module essay](super) to the letter and nothing
//! else, so that it can be differential-tested against the reference semantics: where the
//! two disagree, either lowering or the semantics is wrong, never the interpreter's own
//! cleverness.

use super::*;
use std::collections::BTreeMap;

/// A packet: one value per [`Field`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Packet(pub [u128; Field::ALL.len()]);

impl Packet {
    /// A packet with every field zero.
    pub fn zero() -> Packet {
        Packet([0; Field::ALL.len()])
    }

    /// A first packet from `src` to `dst` arriving on `in_port`. Both addresses must be of
    /// one family; the source's family wins otherwise.
    pub fn new(
        in_port: u128,
        src: IpAddr,
        dst: IpAddr,
        proto: u8,
        sport: u16,
        dport: u16,
    ) -> Packet {
        let mut p = Packet::zero();
        p.set(Field::InPort, in_port);
        p.set_addrs(src, dst);
        p.set(Field::IpProto, u128::from(proto));
        p.set(Field::L4Sport, u128::from(sport));
        p.set(Field::L4Dport, u128::from(dport));
        if proto == 6 {
            p.set(Field::TcpFlags, 0x02);
        }
        p
    }

    /// A field's value.
    pub fn get(&self, f: Field) -> u128 {
        self.0[f as usize]
    }

    /// Sets a field (truncated to its width).
    pub fn set(&mut self, f: Field, v: u128) {
        self.0[f as usize] = v & f.max();
    }

    fn is_v6(&self) -> bool {
        self.get(Field::EthType) == eth::IPV6
    }

    /// Sets source and destination addresses and the Ethernet type.
    pub fn set_addrs(&mut self, src: IpAddr, dst: IpAddr) {
        match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                self.set(Field::EthType, eth::IPV4);
                self.set(Field::Ipv4Src, u128::from(u32::from(s)));
                self.set(Field::Ipv4Dst, u128::from(u32::from(d)));
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                self.set(Field::EthType, eth::IPV6);
                self.set(Field::Ipv6Src, u128::from(s));
                self.set(Field::Ipv6Dst, u128::from(d));
            }
            _ => self.set(Field::EthType, 0),
        }
    }

    /// The source address.
    pub fn src(&self) -> IpAddr {
        if self.is_v6() {
            IpAddr::V6(Ipv6Addr::from(self.get(Field::Ipv6Src)))
        } else {
            IpAddr::V4(Ipv4Addr::from(self.get(Field::Ipv4Src) as u32))
        }
    }

    /// The destination address.
    pub fn dst(&self) -> IpAddr {
        if self.is_v6() {
            IpAddr::V6(Ipv6Addr::from(self.get(Field::Ipv6Dst)))
        } else {
            IpAddr::V4(Ipv4Addr::from(self.get(Field::Ipv4Dst) as u32))
        }
    }

    fn set_src_addr(&mut self, a: IpAddr) {
        let d = self.dst();
        self.set_addrs(a, d);
    }

    fn tuple(&self) -> Tuple {
        Tuple {
            proto: self.get(Field::IpProto),
            src: ip_value(self.src()),
            sport: self.get(Field::L4Sport),
            dst: ip_value(self.dst()),
            dport: self.get(Field::L4Dport),
        }
    }

    /// The reply to this packet: addresses and ports swapped, metadata cleared.
    pub fn reply(&self, in_port: u128) -> Packet {
        let mut p = Packet::zero();
        p.set(Field::InPort, in_port);
        p.set_addrs(self.dst(), self.src());
        p.set(Field::IpProto, self.get(Field::IpProto));
        p.set(Field::L4Sport, self.get(Field::L4Dport));
        p.set(Field::L4Dport, self.get(Field::L4Sport));
        p
    }
}

/// A connection's 5-tuple (addresses as 128-bit values).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Tuple {
    /// IP protocol.
    pub proto: u128,
    /// Source address.
    pub src: u128,
    /// Source port.
    pub sport: u128,
    /// Destination address.
    pub dst: u128,
    /// Destination port.
    pub dport: u128,
}

impl Tuple {
    fn reversed(self) -> Tuple {
        Tuple {
            proto: self.proto,
            src: self.dst,
            sport: self.dport,
            dst: self.src,
            dport: self.sport,
        }
    }
}

/// The simulated connection tracker: committed connections (after translation), each with
/// the destination the client addressed before DNAT.
#[derive(Clone, Debug, Default)]
pub struct Conntrack {
    /// Connections by their forward tuple → the original destination address and port.
    pub conns: BTreeMap<Tuple, (u128, u128)>,
}

/// The final decision on a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verdict {
    /// Delivered or forwarded.
    Allow,
    /// Dropped.
    Deny,
    /// Allowed and handed to the L7 proxy.
    Redirect,
}

/// One table visited.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hit {
    /// The table.
    pub table: TableId,
    /// The entry that matched; `None` when the default action ran.
    pub entry: Option<EntryId>,
    /// The action that ran.
    pub action: ActionCall,
    /// Provenance of the entry.
    pub provenance: Vec<Provenance>,
}

/// What happened to a packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trace {
    /// Tables visited, in order.
    pub hits: Vec<Hit>,
    /// The decision.
    pub verdict: Verdict,
    /// The destination after translation, when the pipeline translated it.
    pub dnat: Option<(IpAddr, u16)>,
    /// The packet as it leaves.
    pub packet: Packet,
}

impl Trace {
    /// Where the packet leaves: an endpoint number, [`ports::WIRE`] or [`ports::HOST`].
    pub fn out_port(&self) -> u128 {
        self.packet.get(Field::OutPort)
    }

    /// Renders the hits, one per line: each entry by its table and its position there.
    pub fn to_text(&self, mag: &Mag) -> String {
        self.render(mag, true)
    }

    /// Renders the hits, one per line, naming each entry by its table only: for a graph
    /// that holds some pods' rows of a node (`pipec trace`), where a position in a table is
    /// not the position in the node's table.
    pub fn to_text_by_table(&self, mag: &Mag) -> String {
        self.render(mag, false)
    }

    fn render(&self, mag: &Mag, positions: bool) -> String {
        let mut out = String::new();
        for h in &self.hits {
            let name = mag.table(h.table).map(|t| t.name.as_str()).unwrap_or("?");
            let entry = match h.entry {
                Some(e) if positions => format!("{}.{e}", h.table),
                Some(_) => h.table.to_string(),
                None => format!("{} default", h.table),
            };
            let prov: Vec<String> = h.provenance.iter().map(|p| p.to_string()).collect();
            out.push_str(&format!(
                "{entry:<10} {name:<16} {}{}\n",
                text::fmt_call(mag, &h.action),
                if prov.is_empty() {
                    String::new()
                } else {
                    format!(" @ {}", prov.join(" | "))
                }
            ));
        }
        out
    }
}

/// FNV-1a over the values, the hash of [`Op::Hash`].
pub fn hash_values(values: impl IntoIterator<Item = u128>) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for v in values {
        for b in v.to_le_bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

fn lookup<'t>(t: &'t Table, p: &Packet) -> Option<(usize, &'t Entry)> {
    let mut best: Option<(usize, &Entry)> = None;
    for (i, e) in t.entries.iter().enumerate() {
        if best.is_some_and(|(_, b)| b.priority >= e.priority) {
            continue;
        }
        let hit = t
            .key
            .iter()
            .zip(e.matches.iter())
            .all(|(k, m)| m.matches(p.get(k.field), k.field.width()));
        if hit {
            best = Some((i, e));
        }
    }
    best
}

/// Runs packets through one graph, keeping connection state between them.
pub struct Interp<'a> {
    mag: &'a Mag,
    info: &'a MagInfo,
    /// Connection state.
    pub ct: Conntrack,
}

impl<'a> Interp<'a> {
    /// An interpreter with an empty connection tracker.
    pub fn new(mag: &'a Mag, info: &'a MagInfo) -> Interp<'a> {
        Interp {
            mag,
            info,
            ct: Conntrack::default(),
        }
    }

    /// Runs one packet.
    pub fn run(&mut self, mut p: Packet) -> Trace {
        let orig_dst = (ip_value(p.dst()), p.get(Field::L4Dport));
        let mut hits = Vec::new();
        let mut table = Some(self.info.start);
        let mut dropped = false;
        let limit = self.info.order.len() + 1;
        while let Some(tid) = table.take() {
            if hits.len() >= limit {
                break;
            }
            let Some(t) = self.mag.table(tid) else { break };
            let (entry, call, prov) = match lookup(t, &p) {
                Some((i, e)) => (Some(EntryId(i as u32)), &e.action, &e.provenance[..]),
                None => (None, &t.default_action, &[][..]),
            };
            hits.push(Hit {
                table: tid,
                entry,
                action: call.clone(),
                provenance: prov
                    .iter()
                    .filter_map(|id| self.mag.provenance.get_index(id.0 as usize).cloned())
                    .collect(),
            });
            if let Some(def) = self.mag.action(call.action) {
                for op in &def.ops {
                    if self.exec(op, &call.args, &mut p, orig_dst) {
                        dropped = true;
                        break;
                    }
                }
            }
            if dropped {
                break;
            }
            table = self.info.next_table(tid, call.action);
        }
        let post = (ip_value(p.dst()), p.get(Field::L4Dport));
        let verdict = if dropped || p.get(Field::Verdict) == verdict::DENY {
            Verdict::Deny
        } else if p.get(Field::Mark) & mark::L7_REDIRECT != 0
            || p.get(Field::Verdict) == verdict::REDIRECT
        {
            Verdict::Redirect
        } else {
            Verdict::Allow
        };
        Trace {
            hits,
            verdict,
            dnat: (post != orig_dst).then(|| (value_ip(post.0), post.1 as u16)),
            packet: p,
        }
    }

    /// Runs one operation; returns true when the packet is dropped.
    fn exec(&mut self, op: &Op, args: &[u128], p: &mut Packet, orig_dst: (u128, u128)) -> bool {
        let value = |o: &Operand| match o {
            Operand::Param(i) => args.get(*i as usize).copied().unwrap_or(0),
            Operand::Const(c) => *c,
        };
        match op {
            Op::Set { field, value: v } => {
                let v = value(v);
                p.set(*field, v);
            }
            Op::Hash {
                fields,
                modulo,
                into,
            } => {
                let m = value(modulo);
                let h = u128::from(hash_values(fields.iter().map(|f| p.get(*f))));
                p.set(*into, if m == 0 { 0 } else { h % m });
            }
            Op::CtLookup => {
                let t = p.tuple();
                let state = if self.ct.conns.contains_key(&t) {
                    ct::ESTABLISHED
                } else if let Some(&(addr, port)) = self.ct.conns.get(&t.reversed()) {
                    if (addr, port) != (t.src, t.sport) {
                        p.set_src_addr(value_ip(addr));
                        p.set(Field::L4Sport, port);
                    }
                    ct::REPLY
                } else {
                    ct::NEW
                };
                p.set(Field::CtState, state);
            }
            // Each probe runs on its own: the hash of the client address is the memory.
            Op::Affinity { .. } => {}
            Op::CtCommit => {
                if p.get(Field::CtState) == ct::NEW {
                    self.ct.conns.insert(p.tuple(), orig_dst);
                }
            }
            Op::Drop => {
                p.set(Field::Verdict, verdict::DENY);
                return true;
            }
        }
        false
    }
}
