//! The match-action graph (MAG): pipec's target-neutral packet pipeline.
//!
//! # What the graph means
//!
//! A [`Mag`] is a directed acyclic graph of match-action [`Table`]s, like a P4 control
//! block. A packet is a record of [`Field`] values: packet header fields (`in_port`,
//! `eth.type`, `ipv4.src`, ...) and metadata (`meta.endpoint`, `meta.src_identity`, ...).
//! Metadata starts at zero for every packet.
//!
//! **Evaluation order.** A packet enters at [`Mag::start`]. At each table the key fields are
//! read from the packet; the matching entry with the highest priority is chosen, or the
//! table's default action when no entry matches; the chosen action's operations run in
//! order; then the packet follows the edge labelled with that action, or else the table's
//! unlabelled ("any other action") edge. A packet with no edge to follow leaves the graph.
//! An action that drops ([`Op::Drop`]) sets `meta.verdict` to [`verdict::DENY`] and ends
//! evaluation at once.
//!
//! **What an edge implies.** An edge `t1 -a3-> t2` means: after `t1` ran action `a3`, `t2`
//! runs next, and it may read everything `t1` and every earlier table wrote. Edges never
//! form a cycle, so every packet visits each table at most once, and a topological order of
//! the tables is a valid order for a target that runs tables in a fixed sequence.
//!
//! **Reads and writes.** A table reads only its key fields. Its actions write fields with
//! [`Op::Set`] and [`Op::Hash`]; [`Op::CtLookup`] writes `meta.ct_state` (and, for a reply of
//! a translated connection, rewrites the reply's source back to the service address);
//! [`Op::CtCommit`] writes connection state that later packets read through
//! [`Op::CtLookup`]. Header fields are written only by NAT (destination address and port of
//! the first direction, and the reverse on replies). `meta.endpoint` names the local
//! endpoint whose policy applies: the source endpoint until routing, the destination
//! endpoint after it.
//!
//! **Priorities.** A higher number wins. Two entries of one table with the same priority
//! and the same match are an error; overlapping entries of equal priority must have the
//! same action and arguments, which lowering guarantees by making same-priority entries
//! disjoint. Tables whose key is all-exact use priority 0 only.
//!
//! **Ids.** Tables are petgraph nodes ([`TableId`], printed `t3`); actions live in
//! [`Mag::actions`] ([`ActionId`], `a7`); entries are numbered within their table
//! ([`EntryId`], `e41`, `t3.e41` outside the table). Entry numbers follow the canonical
//! order ([`Mag::canonicalize`]), so two equal graphs print the same text.
//!
//! **Provenance.** Each entry points at the rules and objects that made it
//! ([`Provenance`], interned in [`Mag::provenance`]), so explain, trace, counters and flow
//! logs can name the deciding rule.
//!
//! Every consumer takes a [`MagInfo`] from [`validate`] as proof that the graph is
//! well-formed: if `validate` returns `Ok`, no consumer panics on the graph.

pub mod algebra;
pub mod dot;
pub mod interp;
pub mod pipeline;
pub mod text;

use crate::model::{Origin, RuleRef};
use indexmap::IndexSet;
use petgraph::stable_graph::{EdgeIndex, NodeIndex, StableDiGraph};
use petgraph::visit::EdgeRef;
use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

/// A field of the packet record: header fields first, then metadata.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Field {
    /// The port the packet came in on: [`ports::WIRE`], [`ports::HOST`] or an endpoint.
    InPort,
    /// The Ethernet type (0x0800 IPv4, 0x86dd IPv6).
    EthType,
    /// IPv4 source address.
    Ipv4Src,
    /// IPv4 destination address.
    Ipv4Dst,
    /// IPv6 source address.
    Ipv6Src,
    /// IPv6 destination address.
    Ipv6Dst,
    /// IP protocol number.
    IpProto,
    /// Transport source port (0 for protocols without ports).
    L4Sport,
    /// Transport destination port (0 for protocols without ports).
    L4Dport,
    /// TCP flags.
    TcpFlags,
    /// ESP security parameter index.
    EspSpi,
    /// VXLAN network identifier.
    VxlanVni,
    /// Policy identity (class) of the source.
    SrcIdentity,
    /// Policy identity (class) of the destination.
    DstIdentity,
    /// The local endpoint whose policy applies.
    Endpoint,
    /// The service the packet was addressed to.
    Service,
    /// The chosen backend of that service.
    Backend,
    /// Connection-tracking state ([`ct`]).
    CtState,
    /// Packet mark ([`mark`]).
    Mark,
    /// Verdict so far ([`verdict`]).
    Verdict,
    /// Hash of the fields a load-balancing action chose.
    Hash,
    /// Where the packet leaves: [`ports::WIRE`], [`ports::HOST`] or an endpoint.
    OutPort,
    /// The node address a packet to another node is tunnelled to.
    NextHop,
}

/// How a field's value is written in text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldFormat {
    /// Decimal.
    Decimal,
    /// Hexadecimal (`0x0800`).
    Hex,
    /// An IPv4 address.
    Ipv4,
    /// An IPv6 address.
    Ipv6,
}

impl Field {
    /// Every field, in declaration order.
    pub const ALL: [Field; 23] = [
        Field::InPort,
        Field::EthType,
        Field::Ipv4Src,
        Field::Ipv4Dst,
        Field::Ipv6Src,
        Field::Ipv6Dst,
        Field::IpProto,
        Field::L4Sport,
        Field::L4Dport,
        Field::TcpFlags,
        Field::EspSpi,
        Field::VxlanVni,
        Field::SrcIdentity,
        Field::DstIdentity,
        Field::Endpoint,
        Field::Service,
        Field::Backend,
        Field::CtState,
        Field::Mark,
        Field::Verdict,
        Field::Hash,
        Field::OutPort,
        Field::NextHop,
    ];

    /// The text name.
    pub fn name(self) -> &'static str {
        match self {
            Field::InPort => "in_port",
            Field::EthType => "eth.type",
            Field::Ipv4Src => "ipv4.src",
            Field::Ipv4Dst => "ipv4.dst",
            Field::Ipv6Src => "ipv6.src",
            Field::Ipv6Dst => "ipv6.dst",
            Field::IpProto => "ip.proto",
            Field::L4Sport => "l4.sport",
            Field::L4Dport => "l4.dport",
            Field::TcpFlags => "tcp.flags",
            Field::EspSpi => "esp.spi",
            Field::VxlanVni => "vxlan.vni",
            Field::SrcIdentity => "meta.src_identity",
            Field::DstIdentity => "meta.dst_identity",
            Field::Endpoint => "meta.endpoint",
            Field::Service => "meta.service",
            Field::Backend => "meta.backend",
            Field::CtState => "meta.ct_state",
            Field::Mark => "meta.mark",
            Field::Verdict => "meta.verdict",
            Field::Hash => "meta.hash",
            Field::OutPort => "meta.out_port",
            Field::NextHop => "meta.next_hop",
        }
    }

    /// Parses a text name.
    pub fn parse(s: &str) -> Option<Field> {
        Field::ALL.into_iter().find(|f| f.name() == s)
    }

    /// Width in bits.
    pub fn width(self) -> u32 {
        match self {
            Field::InPort | Field::EthType | Field::L4Sport | Field::L4Dport => 16,
            Field::IpProto | Field::TcpFlags | Field::CtState | Field::Verdict => 8,
            Field::Ipv6Src | Field::Ipv6Dst | Field::NextHop => 128,
            Field::VxlanVni => 24,
            _ => 32,
        }
    }

    /// The largest value the field holds.
    pub fn max(self) -> u128 {
        if self.width() == 128 {
            u128::MAX
        } else {
            (1u128 << self.width()) - 1
        }
    }

    /// True for metadata (not carried in the packet's headers).
    pub fn is_metadata(self) -> bool {
        self >= Field::SrcIdentity
    }

    /// How values are written.
    pub fn format(self) -> FieldFormat {
        match self {
            Field::Ipv4Src | Field::Ipv4Dst => FieldFormat::Ipv4,
            Field::Ipv6Src | Field::Ipv6Dst | Field::NextHop => FieldFormat::Ipv6,
            Field::EthType | Field::TcpFlags => FieldFormat::Hex,
            _ => FieldFormat::Decimal,
        }
    }

    /// Writes a value of this field.
    pub fn fmt_value(self, v: u128) -> String {
        match self.format() {
            FieldFormat::Decimal => v.to_string(),
            FieldFormat::Hex => format!("{v:#06x}"),
            FieldFormat::Ipv4 => Ipv4Addr::from(v as u32).to_string(),
            FieldFormat::Ipv6 => ip_text(v),
        }
    }

    /// Reads a value of this field (any format is accepted for any field).
    pub fn parse_value(self, s: &str) -> Option<u128> {
        if let Some(h) = s.strip_prefix("0x") {
            return u128::from_str_radix(h, 16).ok();
        }
        if let Ok(v) = s.parse::<u128>() {
            return Some(v);
        }
        match s.parse::<IpAddr>().ok()? {
            IpAddr::V4(a) if self.format() == FieldFormat::Ipv4 => Some(u32::from(a) as u128),
            ip => Some(ip_value(ip)),
        }
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A 128-bit address value: IPv4 addresses are IPv4-mapped IPv6 (`::ffff:a.b.c.d`), so one
/// field (`meta.next_hop`) can hold either family.
pub fn ip_value(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u128::from(a.to_ipv6_mapped()),
        IpAddr::V6(a) => u128::from(a),
    }
}

/// The address of a 128-bit value (IPv4-mapped values become IPv4).
pub fn value_ip(v: u128) -> IpAddr {
    let a = Ipv6Addr::from(v);
    match a.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(a),
    }
}

fn ip_text(v: u128) -> String {
    value_ip(v).to_string()
}

/// Ethernet types.
pub mod eth {
    /// IPv4.
    pub const IPV4: u128 = 0x0800;
    /// IPv6.
    pub const IPV6: u128 = 0x86dd;
}

/// Values of `in_port` and `meta.out_port`; endpoints use their endpoint number.
pub mod ports {
    /// The node's uplink (other nodes and the outside world).
    pub const WIRE: u128 = 0;
    /// The node's own network stack.
    pub const HOST: u128 = 1;
    /// The first endpoint number.
    pub const FIRST_ENDPOINT: u128 = 2;
}

/// Values of `meta.ct_state`.
pub mod ct {
    /// Not looked up yet.
    pub const NONE: u128 = 0;
    /// First packet of a connection.
    pub const NEW: u128 = 1;
    /// A later packet in the direction that opened the connection.
    pub const ESTABLISHED: u128 = 2;
    /// A packet in the reply direction.
    pub const REPLY: u128 = 3;
}

/// Values of `meta.verdict`.
pub mod verdict {
    /// No decision yet.
    pub const NONE: u128 = 0;
    /// Allowed.
    pub const ALLOW: u128 = 1;
    /// Dropped.
    pub const DENY: u128 = 2;
    /// Allowed at L4 and redirected to the L7 proxy.
    pub const REDIRECT: u128 = 3;
}

/// Bits of `meta.mark`.
pub mod mark {
    /// The connection goes through the L7 proxy.
    pub const L7_REDIRECT: u128 = 0x0200;
}

/// How a key field matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MatchKind {
    /// Equal value.
    Exact,
    /// Longest prefix (at most one per table; priority is the prefix length).
    Lpm,
    /// Value and mask.
    Ternary,
    /// Inclusive range.
    Range,
}

impl MatchKind {
    /// Text name.
    pub fn name(self) -> &'static str {
        match self {
            MatchKind::Exact => "exact",
            MatchKind::Lpm => "lpm",
            MatchKind::Ternary => "ternary",
            MatchKind::Range => "range",
        }
    }

    /// Parses a text name.
    pub fn parse(s: &str) -> Option<MatchKind> {
        [
            MatchKind::Exact,
            MatchKind::Lpm,
            MatchKind::Ternary,
            MatchKind::Range,
        ]
        .into_iter()
        .find(|k| k.name() == s)
    }
}

/// One field of a table key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct KeyField {
    /// The field.
    pub field: Field,
    /// How it matches.
    pub kind: MatchKind,
}

/// How one entry matches one key field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FieldMatch {
    /// Any value (not allowed for exact keys).
    Any,
    /// Exactly this value.
    Exact(u128),
    /// The top `len` bits equal `value`'s (lpm keys).
    Prefix {
        /// Value, with bits past the prefix zero.
        value: u128,
        /// Prefix length in bits.
        len: u8,
    },
    /// `packet & mask == value` (ternary keys).
    Ternary {
        /// Value, with bits outside the mask zero.
        value: u128,
        /// Mask.
        mask: u128,
    },
    /// `lo <= packet <= hi` (range keys).
    Range {
        /// First value.
        lo: u128,
        /// Last value.
        hi: u128,
    },
}

impl FieldMatch {
    /// The ternary match of a prefix of a `width`-bit field.
    pub fn prefix_mask(value: u128, len: u32, width: u32) -> FieldMatch {
        let mask = prefix_mask(len, width);
        FieldMatch::Ternary {
            value: value & mask,
            mask,
        }
    }

    /// Whether a value matches, for a field of `width` bits.
    pub fn matches(&self, v: u128, width: u32) -> bool {
        match *self {
            FieldMatch::Any => true,
            FieldMatch::Exact(x) => v == x,
            FieldMatch::Prefix { value, len } => {
                let m = prefix_mask(u32::from(len), width);
                v & m == value
            }
            FieldMatch::Ternary { value, mask } => v & mask == value,
            FieldMatch::Range { lo, hi } => lo <= v && v <= hi,
        }
    }
}

/// The mask of the top `len` bits of a `width`-bit field.
pub fn prefix_mask(len: u32, width: u32) -> u128 {
    let full = if width >= 128 {
        u128::MAX
    } else {
        (1u128 << width) - 1
    };
    if len == 0 {
        0
    } else if len >= width {
        full
    } else {
        full & !(full >> len)
    }
}

/// An operand of an action operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Operand {
    /// The entry's argument at this index.
    Param(u8),
    /// A constant.
    Const(u128),
}

/// One primitive operation of an action.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// `field = operand`.
    Set {
        /// Written field.
        field: Field,
        /// Value.
        value: Operand,
    },
    /// `into = hash(fields) % modulo`, with pipec's fixed hash (FNV-1a of the values).
    Hash {
        /// Hashed fields.
        fields: Vec<Field>,
        /// Modulus (never zero in a valid graph when it is a constant; a zero argument
        /// gives zero).
        modulo: Operand,
        /// Written field.
        into: Field,
    },
    /// ClientIP session affinity: the load-balancing choice of this action is remembered
    /// per client and reused until the client has been idle for `timeout` seconds (a
    /// Service's `sessionAffinityConfig.clientIP.timeoutSeconds`). A datapath keeps the
    /// memory; the interpreter, which runs each probe on its own, needs none, since the
    /// hash of the client address already gives a client the same choice.
    Affinity {
        /// The idle timeout in seconds (never zero in a valid graph).
        timeout: Operand,
    },
    /// Looks the packet up in connection tracking; sets `meta.ct_state`, and reverse-NATs
    /// replies of translated connections.
    CtLookup,
    /// Records the connection (with its translation) for later packets.
    CtCommit,
    /// Drops the packet: `meta.verdict = deny`, and evaluation ends.
    Drop,
}

/// A parameter of an action: a name and the field whose type it has.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Param {
    /// Name.
    pub name: String,
    /// The field whose width and text format the parameter takes.
    pub ty: Field,
}

/// An action: a named sequence of operations over parameters.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ActionDef {
    /// Name, unique in the graph.
    pub name: String,
    /// Parameters.
    pub params: Vec<Param>,
    /// Operations, run in order.
    pub ops: Vec<Op>,
}

/// An action with its arguments.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ActionCall {
    /// The action.
    pub action: ActionId,
    /// One argument per parameter (shared, as [`Entry`]'s slices are).
    pub args: Arc<[u128]>,
}

/// Where an entry came from.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Provenance {
    /// A policy rule.
    Rule(RuleRef),
    /// An object (pod, service, node, or a policy as a whole).
    Object(Origin),
    /// Something pipec adds on its own, such as "default allow".
    Builtin(String),
}

impl fmt::Display for Provenance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Provenance::Rule(r) => {
                write!(f, "{} {}[{}]", r.origin.display_name(), r.section, r.index)
            }
            Provenance::Object(o) => f.write_str(&o.display_name()),
            Provenance::Builtin(s) => write!(f, "builtin:{s}"),
        }
    }
}

/// Interned provenance records, in the order they were first seen (that order gives the
/// `ProvId`s). Hashed with [`crate::util::FxHasher`]: lowering interns one record per pod
/// and per service, and SipHash over their names was a visible part of its time.
pub type ProvSet = IndexSet<Provenance, std::hash::BuildHasherDefault<crate::util::FxHasher>>;

/// One entry of a table.
///
/// The slices are shared (`Arc`), so that cloning an entry allocates nothing: lowering
/// keeps every entry twice, once in its group (for incremental updates) and once in its
/// table, and a cluster-scale node has a million entries.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Entry {
    /// Priority: higher wins.
    pub priority: u32,
    /// One match per key field.
    pub matches: Arc<[FieldMatch]>,
    /// What to do.
    pub action: ActionCall,
    /// Where the entry came from (indices into [`Mag::provenance`]).
    pub provenance: Arc<[ProvId]>,
}

/// A match-action table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Table {
    /// Name, unique in the graph.
    pub name: String,
    /// Key fields.
    pub key: Vec<KeyField>,
    /// Actions entries may use.
    pub actions: Vec<ActionId>,
    /// What runs when no entry matches.
    pub default_action: ActionCall,
    /// Expected number of entries, for targets that size tables ahead.
    pub size_hint: u32,
    /// Entries, in canonical order once [`Mag::canonicalize`] ran.
    pub entries: Vec<Entry>,
}

/// A graph edge: which table follows which action.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Edge {
    /// The action; `None` means "any action without an edge of its own".
    pub on: Option<ActionId>,
}

/// Id of a table.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TableId(pub NodeIndex<u32>);

/// Id of an action.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ActionId(pub u32);

/// Number of an entry within its table.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EntryId(pub u32);

/// Index of a provenance record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProvId(pub u32);

macro_rules! short_id {
    ($t:ty, $p:literal, $e:expr) => {
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let get: fn(&$t) -> usize = $e;
                write!(f, concat!($p, "{}"), get(self))
            }
        }
        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(self, f)
            }
        }
    };
}
short_id!(TableId, "t", |t| t.0.index());
short_id!(ActionId, "a", |a| a.0 as usize);
short_id!(EntryId, "e", |e| e.0 as usize);

/// The match-action graph of one node.
///
/// Invariants (checked by [`validate`]): the graph is acyclic; every action id, provenance
/// id and edge label is in range; every entry matches its table's key; [`Mag::start`] is a
/// table of the graph.
#[derive(Clone, Debug, Default)]
pub struct Mag {
    /// The node the pipeline is for.
    pub node: String,
    /// Tables and edges.
    pub graph: StableDiGraph<Table, Edge, u32>,
    /// Actions.
    pub actions: Vec<ActionDef>,
    /// Provenance records, interned.
    pub provenance: ProvSet,
    /// The first table.
    pub start: Option<TableId>,
}

impl Mag {
    /// An empty graph for a node.
    pub fn new(node: impl Into<String>) -> Mag {
        Mag {
            node: node.into(),
            ..Mag::default()
        }
    }

    /// Adds an action.
    pub fn add_action(&mut self, name: &str, params: &[(&str, Field)], ops: Vec<Op>) -> ActionId {
        self.actions.push(ActionDef {
            name: name.into(),
            params: params
                .iter()
                .map(|(n, ty)| Param {
                    name: (*n).into(),
                    ty: *ty,
                })
                .collect(),
            ops,
        });
        ActionId(self.actions.len() as u32 - 1)
    }

    /// Adds a table.
    pub fn add_table(&mut self, table: Table) -> TableId {
        TableId(self.graph.add_node(table))
    }

    /// Adds an edge.
    pub fn add_edge(&mut self, from: TableId, on: Option<ActionId>, to: TableId) -> EdgeIndex {
        self.graph.add_edge(from.0, to.0, Edge { on })
    }

    /// Interns a provenance record.
    pub fn prov(&mut self, p: Provenance) -> ProvId {
        ProvId(self.provenance.insert_full(p).0 as u32)
    }

    /// A table.
    pub fn table(&self, id: TableId) -> Option<&Table> {
        self.graph.node_weight(id.0)
    }

    /// A table, for editing.
    pub fn table_mut(&mut self, id: TableId) -> Option<&mut Table> {
        self.graph.node_weight_mut(id.0)
    }

    /// Finds a table by name.
    pub fn table_by_name(&self, name: &str) -> Option<TableId> {
        self.graph
            .node_indices()
            .find(|n| self.graph[*n].name == name)
            .map(TableId)
    }

    /// Table ids in index order.
    pub fn table_ids(&self) -> Vec<TableId> {
        let mut v: Vec<TableId> = self.graph.node_indices().map(TableId).collect();
        v.sort();
        v
    }

    /// An action.
    pub fn action(&self, id: ActionId) -> Option<&ActionDef> {
        self.actions.get(id.0 as usize)
    }

    /// Outgoing edges of a table, sorted by label then target.
    pub fn edges_from(&self, t: TableId) -> Vec<(Option<ActionId>, TableId)> {
        let mut v: Vec<_> = self
            .graph
            .edges(t.0)
            .map(|e| (e.weight().on, TableId(e.target())))
            .collect();
        v.sort();
        v
    }

    /// Total number of entries.
    pub fn entry_count(&self) -> usize {
        self.graph.node_weights().map(|t| t.entries.len()).sum()
    }

    /// Sorts every table's entries into canonical order: priority descending, then match,
    /// then action. Entry numbers are positions in this order.
    pub fn canonicalize(&mut self) {
        for t in self.graph.node_weights_mut() {
            sort_canonical(&mut t.entries);
        }
    }
}

/// The leading part of an entry's place in [`canonical_order`], copied out of the entry:
/// priority, then its first two matches (`None` past the end, as a shorter slice sorts
/// first). Comparing these needs no pointer chasing into the entries' slices.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct SortKey {
    priority: std::cmp::Reverse<u32>,
    first: Option<FieldMatch>,
    second: Option<FieldMatch>,
}

impl SortKey {
    fn of(e: &Entry) -> SortKey {
        SortKey {
            priority: std::cmp::Reverse(e.priority),
            first: e.matches.first().copied(),
            second: e.matches.get(1).copied(),
        }
    }
}

/// Sorts entries into canonical order, exactly as a stable sort by [`canonical_order`]
/// would (equal entries keep their order).
///
/// A table holds up to a million entries whose slices live in separate allocations, so
/// comparing entries directly is a cache miss per comparison. The sort runs on compact keys
/// with the entry's index instead; only keys that tie fall back to the full comparison,
/// and the index breaks the remaining ties, which makes the unstable sort stable.
pub fn sort_canonical(entries: &mut Vec<Entry>) {
    let mut keys: Vec<(SortKey, u32)> = entries
        .iter()
        .enumerate()
        .map(|(i, e)| (SortKey::of(e), i as u32))
        .collect();
    keys.sort_unstable_by(|(ka, ia), (kb, ib)| {
        ka.cmp(kb)
            .then_with(|| canonical_order(&entries[*ia as usize], &entries[*ib as usize]))
            .then_with(|| ia.cmp(ib))
    });
    let mut slots: Vec<Option<Entry>> = std::mem::take(entries).into_iter().map(Some).collect();
    entries.extend(
        keys.iter()
            .filter_map(|(_, i)| slots.get_mut(*i as usize).and_then(Option::take)),
    );
}

/// The canonical order of entries in a table: priority descending, then match, then
/// action.
pub fn canonical_order(a: &Entry, b: &Entry) -> std::cmp::Ordering {
    b.priority
        .cmp(&a.priority)
        .then_with(|| a.matches.cmp(&b.matches))
        .then_with(|| a.action.cmp(&b.action))
}

/// A reason the graph is malformed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    /// No start table, or the start table is missing.
    #[error("the graph has no start table")]
    NoStart,
    /// Two tables share a name.
    #[error("table name `{0}` is used twice")]
    DuplicateTable(String),
    /// Two actions share a name.
    #[error("action name `{0}` is used twice")]
    DuplicateAction(String),
    /// A key names a field twice, or uses lpm on more than one field.
    #[error("table {table}: bad key: {reason}")]
    BadKey {
        /// Table.
        table: TableId,
        /// Why.
        reason: String,
    },
    /// An action id is out of range, or not among the table's actions.
    #[error("{site}: unknown or disallowed action {action}")]
    BadAction {
        /// Where.
        site: String,
        /// The action.
        action: ActionId,
    },
    /// Arguments do not fit the action's parameters.
    #[error("{site}: bad arguments: {reason}")]
    BadArgs {
        /// Where.
        site: String,
        /// Why.
        reason: String,
    },
    /// An action's operation is ill-typed.
    #[error("action {action}: {reason}")]
    BadOp {
        /// The action.
        action: ActionId,
        /// Why.
        reason: String,
    },
    /// An entry's match does not fit its key.
    #[error("{table}.{entry}: {reason}")]
    BadMatch {
        /// Table.
        table: TableId,
        /// Entry.
        entry: EntryId,
        /// Why.
        reason: String,
    },
    /// Two entries of a table have the same priority and match.
    #[error("{table}.{entry}: same priority and match as an earlier entry")]
    DuplicateEntry {
        /// Table.
        table: TableId,
        /// Entry.
        entry: EntryId,
    },
    /// An entry of an all-exact table has a non-zero priority.
    #[error("{table}.{entry}: priority must be 0 in an exact-match table")]
    ExactPriority {
        /// Table.
        table: TableId,
        /// Entry.
        entry: EntryId,
    },
    /// A provenance id is out of range.
    #[error("{table}.{entry}: unknown provenance")]
    BadProvenance {
        /// Table.
        table: TableId,
        /// Entry.
        entry: EntryId,
    },
    /// Two edges leave a table on the same action, or an edge's action is not the table's.
    #[error("table {table}: bad edge: {reason}")]
    BadEdge {
        /// Table.
        table: TableId,
        /// Why.
        reason: String,
    },
    /// The graph has a cycle through this table.
    #[error("the graph has a cycle through {0}")]
    Cycle(TableId),
}

/// What validation learnt: the proof that a graph is well-formed, and lookups built once.
#[derive(Clone, Debug)]
pub struct MagInfo {
    /// Tables in a topological order.
    pub order: Vec<TableId>,
    /// Per table: the next table for each action, and for "any other action".
    pub next: BTreeMap<TableId, (BTreeMap<ActionId, TableId>, Option<TableId>)>,
    /// The start table.
    pub start: TableId,
    /// The default pipeline's tables, resolved by name ([`pipeline`]).
    pub pipeline: pipeline::Pipeline,
}

impl MagInfo {
    /// The table that follows `action` in `table`, if any.
    pub fn next_table(&self, table: TableId, action: ActionId) -> Option<TableId> {
        let (by_action, other) = self.next.get(&table)?;
        by_action.get(&action).copied().or(*other)
    }
}

fn check_call(mag: &Mag, site: &str, call: &ActionCall) -> Result<(), ValidationError> {
    let Some(def) = mag.action(call.action) else {
        return Err(ValidationError::BadAction {
            site: site.into(),
            action: call.action,
        });
    };
    if def.params.len() != call.args.len() {
        return Err(ValidationError::BadArgs {
            site: site.into(),
            reason: format!(
                "{} takes {} arguments, got {}",
                def.name,
                def.params.len(),
                call.args.len()
            ),
        });
    }
    for (p, a) in def.params.iter().zip(call.args.iter()) {
        if *a > p.ty.max() {
            return Err(ValidationError::BadArgs {
                site: site.into(),
                reason: format!("{} = {a} does not fit {}", p.name, p.ty),
            });
        }
    }
    Ok(())
}

fn check_match(key: KeyField, m: &FieldMatch) -> Result<(), String> {
    let max = key.field.max();
    let width = key.field.width();
    let ok = match (key.kind, m) {
        (MatchKind::Exact, FieldMatch::Exact(v)) => *v <= max,
        (MatchKind::Lpm, FieldMatch::Any) => true,
        (MatchKind::Lpm, FieldMatch::Prefix { value, len }) => {
            u32::from(*len) <= width && *value & !prefix_mask(u32::from(*len), width) == 0
        }
        (MatchKind::Ternary, FieldMatch::Any) => true,
        (MatchKind::Ternary, FieldMatch::Ternary { value, mask }) => {
            *mask <= max && value & !mask == 0
        }
        (MatchKind::Range, FieldMatch::Any) => true,
        (MatchKind::Range, FieldMatch::Range { lo, hi }) => lo <= hi && *hi <= max,
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{m:?} does not fit {} {}",
            key.field,
            key.kind.name()
        ))
    }
}

/// Checks a graph. A cheap structural pass (ids, names, edges) runs first, then typing
/// (keys, matches, arguments, priorities), then acyclicity.
///
/// Contract: if this returns `Ok`, every consumer that takes the [`MagInfo`] (the
/// interpreter, the printer, the partitioner) returns a result and never panics.
pub fn validate(mag: &Mag) -> Result<MagInfo, ValidationError> {
    let start = mag
        .start
        .filter(|s| mag.table(*s).is_some())
        .ok_or(ValidationError::NoStart)?;
    let mut names = HashSet::new();
    for a in &mag.actions {
        if !names.insert(a.name.as_str()) {
            return Err(ValidationError::DuplicateAction(a.name.clone()));
        }
    }
    for (i, a) in mag.actions.iter().enumerate() {
        let id = ActionId(i as u32);
        let bad = |reason: String| ValidationError::BadOp { action: id, reason };
        let check_operand = |o: &Operand, field: Field| match o {
            Operand::Param(p) => match a.params.get(*p as usize) {
                None => Err(bad(format!("no parameter {p}"))),
                Some(param) if param.ty.width() > field.width() => Err(bad(format!(
                    "parameter {} is wider than {field}",
                    param.name
                ))),
                Some(_) => Ok(()),
            },
            Operand::Const(c) if *c > field.max() => Err(bad(format!("{c} does not fit {field}"))),
            Operand::Const(_) => Ok(()),
        };
        for op in &a.ops {
            match op {
                Op::Set { field, value } => check_operand(value, *field)?,
                Op::Hash {
                    fields,
                    modulo,
                    into,
                } => {
                    if fields.is_empty() {
                        return Err(bad("hash of no fields".into()));
                    }
                    check_operand(modulo, *into)?;
                }
                Op::Affinity { timeout } => {
                    if *timeout == Operand::Const(0) {
                        return Err(bad("affinity with a zero timeout".into()));
                    }
                    check_operand(timeout, Field::Hash)?;
                }
                Op::CtLookup | Op::CtCommit | Op::Drop => {}
            }
        }
    }
    let mut tnames = HashSet::new();
    let mut next = BTreeMap::new();
    for tid in mag.table_ids() {
        let t = &mag.graph[tid.0];
        if !tnames.insert(t.name.as_str()) {
            return Err(ValidationError::DuplicateTable(t.name.clone()));
        }
        let mut by_action = BTreeMap::new();
        let mut other = None;
        for (on, to) in mag.edges_from(tid) {
            match on {
                None if other.is_some() => {
                    return Err(ValidationError::BadEdge {
                        table: tid,
                        reason: "two default edges".into(),
                    })
                }
                None => other = Some(to),
                Some(a) => {
                    if !t.actions.contains(&a) && t.default_action.action != a {
                        return Err(ValidationError::BadEdge {
                            table: tid,
                            reason: format!("{a} is not an action of the table"),
                        });
                    }
                    if by_action.insert(a, to).is_some() {
                        return Err(ValidationError::BadEdge {
                            table: tid,
                            reason: format!("two edges on {a}"),
                        });
                    }
                }
            }
        }
        next.insert(tid, (by_action, other));
    }
    // Typing: keys, actions, entries.
    for tid in mag.table_ids() {
        let t = &mag.graph[tid.0];
        let mut fields = HashSet::new();
        for k in &t.key {
            if !fields.insert(k.field) {
                return Err(ValidationError::BadKey {
                    table: tid,
                    reason: format!("{} appears twice", k.field),
                });
            }
        }
        if t.key.iter().filter(|k| k.kind == MatchKind::Lpm).count() > 1 {
            return Err(ValidationError::BadKey {
                table: tid,
                reason: "more than one lpm field".into(),
            });
        }
        for a in &t.actions {
            if mag.action(*a).is_none() {
                return Err(ValidationError::BadAction {
                    site: tid.to_string(),
                    action: *a,
                });
            }
        }
        check_call(mag, &format!("{tid} default"), &t.default_action)?;
        let mut seen: HashSet<(u32, &[FieldMatch])> = HashSet::with_capacity(t.entries.len());
        for (i, e) in t.entries.iter().enumerate() {
            let eid = EntryId(i as u32);
            check_entry(mag, tid, t, eid, e)?;
            if !seen.insert((e.priority, &e.matches)) {
                return Err(ValidationError::DuplicateEntry {
                    table: tid,
                    entry: eid,
                });
            }
        }
    }
    let order = petgraph::algo::toposort(&mag.graph, None)
        .map_err(|c| ValidationError::Cycle(TableId(c.node_id())))?
        .into_iter()
        .map(TableId)
        .collect();
    let pipeline = pipeline::Pipeline::resolve(mag);
    Ok(MagInfo {
        order,
        next,
        start,
        pipeline,
    })
}

/// The checks of one entry `eid` of table `tid` that read only the entry and the graph's
/// structure (its key, the table's actions, the action definitions, the provenance list).
fn check_entry(
    mag: &Mag,
    tid: TableId,
    t: &Table,
    eid: EntryId,
    e: &Entry,
) -> Result<(), ValidationError> {
    let site = || format!("{tid}.{eid}");
    if e.matches.len() != t.key.len() {
        return Err(ValidationError::BadMatch {
            table: tid,
            entry: eid,
            reason: format!("{} matches for {} key fields", e.matches.len(), t.key.len()),
        });
    }
    for (k, m) in t.key.iter().zip(e.matches.iter()) {
        check_match(*k, m).map_err(|reason| ValidationError::BadMatch {
            table: tid,
            entry: eid,
            reason,
        })?;
    }
    if !t.actions.contains(&e.action.action) {
        return Err(ValidationError::BadAction {
            site: site(),
            action: e.action.action,
        });
    }
    check_call(mag, &site(), &e.action)?;
    let all_exact = t.key.iter().all(|k| k.kind == MatchKind::Exact);
    if all_exact && e.priority != 0 {
        return Err(ValidationError::ExactPriority {
            table: tid,
            entry: eid,
        });
    }
    if e.provenance
        .iter()
        .any(|p| p.0 as usize >= mag.provenance.len())
    {
        return Err(ValidationError::BadProvenance {
            table: tid,
            entry: eid,
        });
    }
    Ok(())
}

/// [`validate`] of a graph that differs from one already validated only by the entries
/// `added` (and entries removed): its tables, keys, actions and edges are the validated
/// graph's, so its [`MagInfo`] is too, and only the added entries are checked, each
/// against its neighbours for a duplicate. The tables must be in [`canonical_order`], as
/// lowering keeps them (an incremental lowering's fast paths change entries only).
pub fn validate_added(mag: &Mag, added: &[(TableId, Entry)]) -> Result<(), ValidationError> {
    for (tid, e) in added {
        let Some(t) = mag.table(*tid) else {
            return Err(ValidationError::BadEdge {
                table: *tid,
                reason: "an entry was added to a table the graph does not have".into(),
            });
        };
        // The entries of the same priority and matches are adjacent in canonical order.
        fn key(x: &Entry) -> (std::cmp::Reverse<u32>, &[FieldMatch]) {
            (std::cmp::Reverse(x.priority), &x.matches)
        }
        let lo = t.entries.partition_point(|x| key(x) < key(e));
        let hi = t.entries.partition_point(|x| key(x) <= key(e));
        let eid = EntryId(lo as u32);
        check_entry(mag, *tid, t, eid, e)?;
        if hi - lo > 1 {
            return Err(ValidationError::DuplicateEntry {
                table: *tid,
                entry: eid,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_print_short() {
        assert_eq!(format!("{:?}", TableId(NodeIndex::new(3))), "t3");
        assert_eq!(format!("{}", ActionId(7)), "a7");
        assert_eq!(format!("{:?}", EntryId(41)), "e41");
    }

    /// The key sort must give exactly the stable sort's order, including for entries that
    /// tie on the key (equal first two matches), tie completely (differ only in
    /// provenance), or have matches of different lengths.
    #[test]
    fn key_sort_equals_the_stable_sort() {
        let e = |priority: u32, matches: &[u128], arg: u128, prov: u32| Entry {
            priority,
            matches: matches.iter().map(|v| FieldMatch::Exact(*v)).collect(),
            action: ActionCall {
                action: ActionId(0),
                args: Arc::new([arg]),
            },
            provenance: Arc::new([ProvId(prov)]),
        };
        let mut entries = Vec::new();
        for i in 0..200u32 {
            let v = u128::from(i * 7919 % 13);
            entries.push(e(i % 3, &[v % 2, v % 3, v], u128::from(i % 2), i));
            entries.push(e(i % 3, &[v % 2], 0, i));
            entries.push(e(i % 3, &[v % 2, v % 3, v], u128::from(i % 2), 1000 + i));
        }
        let mut stable = entries.clone();
        stable.sort_by(canonical_order);
        sort_canonical(&mut entries);
        assert_eq!(entries, stable);
    }

    #[test]
    fn prefix_masks() {
        assert_eq!(prefix_mask(0, 16), 0);
        assert_eq!(prefix_mask(16, 16), 0xffff);
        assert_eq!(prefix_mask(12, 16), 0xfff0);
        assert_eq!(prefix_mask(24, 32), 0xffff_ff00);
        assert_eq!(prefix_mask(128, 128), u128::MAX);
    }

    /// A pass test starts from the MAG's text form ([`text::text_to_mag`]), as cranelift's
    /// filetests do, so the graph under test reads as it prints.
    #[test]
    fn cycles_and_bad_entries_are_rejected() {
        let graph = |t1_edge: &str, t0_entry: &str| {
            let text = format!(
                "mag node n
start t0
action a0 pass() {{}}
table t0 x
  key in_port:exact
  actions a0
  default a0()
  size 1
  edge * -> t1
{t0_entry}table t1 y
  key in_port:exact
  actions a0
  default a0()
  size 1
{t1_edge}"
            );
            text::text_to_mag(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
        };
        assert!(validate(&graph("", "")).is_ok());
        let cycle = graph("  edge * -> t0\n", "");
        assert!(matches!(validate(&cycle), Err(ValidationError::Cycle(_))));
        // An entry that matches nothing on its exact key field.
        let any = graph("", "  e0 p1 -> a0()\n");
        insta::assert_snapshot!(validate(&any).unwrap_err(), @"t0.e0: Any does not fit in_port exact");
    }

    /// The check of added entries finds what a whole validation finds in them: a
    /// duplicate of an entry the table has, and an entry that does not fit its key.
    #[test]
    fn added_entries_are_checked_like_the_whole_graph() {
        let text = "mag node n
start t0
action a0 pass() {}
table t0 x
  key in_port:exact
  actions a0
  default a0()
  size 3
  e0 p0 in_port=1 -> a0()
  e1 p0 in_port=2 -> a0()
";
        let base = text::text_to_mag(text).unwrap_or_else(|e| panic!("{e}"));
        assert!(validate(&base).is_ok());
        let t0 = base.table_ids()[0];
        let add = |e: Entry| {
            let mut mag = base.clone();
            let table = mag.table_mut(t0).expect("t0");
            table.entries.push(e.clone());
            table.entries.sort_by(canonical_order);
            (mag, vec![(t0, e)])
        };
        let template = base.table(t0).expect("t0").entries[0].clone();
        let entry = |m: FieldMatch| Entry {
            matches: Arc::new([m]),
            ..template.clone()
        };
        // A new entry of its own.
        let (mag, added) = add(entry(FieldMatch::Exact(3)));
        assert_eq!(validate_added(&mag, &added), Ok(()));
        assert!(validate(&mag).is_ok());
        // A second entry of priority 0 matching in_port 2.
        let (mag, added) = add(entry(FieldMatch::Exact(2)));
        assert!(matches!(
            validate_added(&mag, &added),
            Err(ValidationError::DuplicateEntry { .. })
        ));
        assert!(matches!(
            validate(&mag),
            Err(ValidationError::DuplicateEntry { .. })
        ));
        // An entry that matches any port on an exact key.
        let (mag, added) = add(entry(FieldMatch::Any));
        assert_eq!(
            validate_added(&mag, &added).map_err(|e| e.to_string()),
            validate(&mag).map(|_| ()).map_err(|e| e.to_string())
        );
        assert!(validate_added(&mag, &added).is_err());
    }
}
