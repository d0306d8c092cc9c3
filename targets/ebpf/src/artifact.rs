//! The eBPF artifact: the complete content of the datapath's maps, as typed data.
//!
//! `EbpfArtifact` is what codegen produces and what the loader writes. It is
//! deterministic (every collection is a `BTreeMap`), has a stable text form for snapshot
//! tests ([`std::fmt::Display`]), lowers to raw map entries ([`EbpfArtifact::entries`]),
//! and diffs against an older artifact into ordered map operations
//! ([`EbpfArtifact::diff`]): every upsert before any delete, and within each, maps in an
//! order where nothing refers to an entry that is not there yet (backends before the
//! Maglev slots that name them, services after both; policy before the endpoints it
//! covers, so a new pod is default-deny until its table is in place).

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use pipec_ebpf_common as c;

use crate::sys::bytes_of;

/// A traffic direction, seen from the local endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PolicyDirection {
    /// Traffic the endpoint sends.
    Egress,
    /// Traffic the endpoint receives.
    Ingress,
}

impl PolicyDirection {
    fn raw(self) -> u8 {
        match self {
            PolicyDirection::Egress => c::DIR_EGRESS,
            PolicyDirection::Ingress => c::DIR_INGRESS,
        }
    }
}

/// An address prefix of the ipcache.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Prefix {
    /// The address; bits past `len` should be zero (the kernel ignores them).
    pub addr: IpAddr,
    /// Prefix length in bits.
    pub len: u8,
}

impl Prefix {
    /// Whether the prefix is a single host (IPv4 /32, IPv6 /128): such entries go to the
    /// `ipcache_host` hash map, every other prefix to the `ipcache` LPM trie.
    pub fn is_host(&self) -> bool {
        match self.addr {
            IpAddr::V4(_) => self.len == 32,
            IpAddr::V6(_) => self.len == 128,
        }
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// A local endpoint (pod).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// Endpoint id, the key of its policy entries.
    pub id: u32,
    /// Interface its packets arrive on (host side of its veth); anti-spoof checks it.
    pub ifindex: u32,
    /// Its security identity.
    pub identity: u32,
}

/// The key of one resolved policy entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PolicyMatch {
    /// The local endpoint.
    pub endpoint: u32,
    /// The policy direction the rule belongs to.
    pub direction: PolicyDirection,
    /// Remote identity; 0 is any identity.
    pub identity: u32,
    /// IP protocol, or any.
    pub protocol: Option<u8>,
    /// Destination port prefix `(port, bits)`, or any port. Only with a protocol.
    pub port: Option<(u16, u8)>,
}

/// What a policy entry decides.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Action {
    /// Allow the flow.
    Allow,
    /// Drop the flow; wins over allows of the wildcard lookup.
    Deny,
    /// Allow at L4 and redirect to the L7 proxy on this port.
    Redirect {
        /// The proxy's port.
        proxy_port: u16,
    },
}

/// The value of one resolved policy entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PolicyDecision {
    /// The action.
    pub action: Action,
    /// Provenance cookie of the deciding rule (counters and flow events use it).
    pub cookie: u64,
}

/// A service frontend: where clients send.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Frontend {
    /// ClusterIP, node address, load-balancer or external IP.
    pub addr: IpAddr,
    /// IP protocol.
    pub protocol: u8,
    /// Frontend port.
    pub port: u16,
}

/// A service frontend's load-balancing state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    /// Service id (unique per frontend): Maglev, affinity and reverse-NAT key.
    pub id: u32,
    /// ClientIP affinity timeout in seconds, if the service has affinity.
    pub affinity_timeout: Option<u32>,
    /// The Maglev lookup table: backend id per slot. Empty when there is no backend.
    pub maglev: Vec<u32>,
}

/// A service backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backend {
    /// Backend address.
    pub addr: IpAddr,
    /// Backend (target) port.
    pub port: u16,
}

/// The complete content of the datapath's maps.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EbpfArtifact {
    /// Conntrack lifetimes and flags.
    pub config: c::Config,
    /// Local endpoints by address.
    pub endpoints: BTreeMap<IpAddr, Endpoint>,
    /// Address prefix to identity: the logical ipcache. [`EbpfArtifact::entries`] writes
    /// its host entries ([`Prefix::is_host`]) to `ipcache_host`, the rest to `ipcache`.
    pub ipcache: BTreeMap<Prefix, u32>,
    /// The resolved policy decision table.
    pub policy: BTreeMap<PolicyMatch, PolicyDecision>,
    /// Service frontends, for packets from pods and from the wire alike.
    pub services: BTreeMap<Frontend, Service>,
    /// Service frontends whose balancing differs for packets from the wire (the MAG's
    /// `service_lb` rows for sending endpoint 0). `from_wire` looks a frontend up here
    /// first and in `services` on a miss; `from_pod` never reads them. Service ids are
    /// unique across both maps.
    pub wire_services: BTreeMap<Frontend, Service>,
    /// Backends by id.
    pub backends: BTreeMap<u32, Backend>,
    /// What each rule cookie stands for (the provenance of the deciding rules), so that
    /// counters and flow events can name their rule. Not written to the kernel.
    pub cookies: BTreeMap<u64, String>,
    /// Remote pod prefixes to their node's peer id, for the CPT hand-over in `to_wire`;
    /// empty unless the cluster has the IPsec key Secret.
    pub ipsec: BTreeMap<Prefix, u32>,
}

/// The maps an artifact fills, in the order upserts are applied (deletes: reversed).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MapName {
    /// `config`.
    Config,
    /// `backends`.
    Backends,
    /// `maglev`.
    Maglev,
    /// `revnat`.
    Revnat,
    /// `services`.
    Services,
    /// `wire_services`: the frontends balanced differently for packets from the wire.
    WireServices,
    /// `ipcache`: the ipcache's prefixes that are not host entries (LPM trie).
    Ipcache,
    /// `ipcache_host`: the ipcache's host entries, IPv4 /32 and IPv6 /128 (hash map).
    IpcacheHost,
    /// `policy`.
    Policy,
    /// `ipsec`: remote pod prefixes to their node's peer id (LPM trie).
    Ipsec,
    /// `endpoints`.
    Endpoints,
}

impl MapName {
    /// Every map an artifact fills.
    pub const ALL: [MapName; 11] = [
        MapName::Config,
        MapName::Backends,
        MapName::Maglev,
        MapName::Revnat,
        MapName::Services,
        MapName::WireServices,
        MapName::Ipcache,
        MapName::IpcacheHost,
        MapName::Policy,
        MapName::Ipsec,
        MapName::Endpoints,
    ];

    /// How many entries the map holds by default, as `bpf/pipec.h` declares it (a test
    /// reads the header and compares); [`crate::sizes::MapSizes`] sets others.
    pub fn capacity(self) -> u64 {
        match self {
            MapName::Config => 1,
            MapName::Endpoints => 16_384,
            MapName::IpcacheHost | MapName::Ipcache => 524_288,
            MapName::Ipsec => 65_536,
            MapName::Policy => 262_144,
            MapName::Services | MapName::WireServices => 65_536,
            MapName::Backends => 65_536,
            MapName::Maglev => 1_048_576,
            MapName::Revnat => 65_536,
        }
    }

    /// The map called `name` in the object.
    pub fn named(name: &str) -> Option<MapName> {
        MapName::ALL.into_iter().find(|m| m.as_str() == name)
    }

    /// The map's name in the object (and under the pin directory).
    pub fn as_str(self) -> &'static str {
        match self {
            MapName::Config => "config",
            MapName::Backends => "backends",
            MapName::Maglev => "maglev",
            MapName::Revnat => "revnat",
            MapName::Services => "services",
            MapName::WireServices => "wire_services",
            MapName::Ipcache => "ipcache",
            MapName::IpcacheHost => "ipcache_host",
            MapName::Policy => "policy",
            MapName::Ipsec => "ipsec",
            MapName::Endpoints => "endpoints",
        }
    }
}

/// One map operation of a diff, on raw key and value bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MapOp {
    /// Create or replace an entry.
    Upsert {
        /// The map.
        map: MapName,
        /// Key bytes.
        key: Vec<u8>,
        /// Value bytes.
        value: Vec<u8>,
    },
    /// Remove an entry.
    Delete {
        /// The map.
        map: MapName,
        /// Key bytes.
        key: Vec<u8>,
    },
}

impl fmt::Display for MapOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hex = crate::backend::hex;
        match self {
            MapOp::Upsert { map, key, value } => {
                write!(f, "upsert {} {} = {}", map.as_str(), hex(key), hex(value))
            }
            MapOp::Delete { map, key } => write!(f, "delete {} {}", map.as_str(), hex(key)),
        }
    }
}

/// Raw map content: `(map, key bytes) -> value bytes`.
pub type MapEntries = BTreeMap<(MapName, Vec<u8>), Vec<u8>>;

/// The 16-byte form and family of an address.
pub fn raw_addr(addr: IpAddr) -> ([u8; 16], u8) {
    match addr {
        IpAddr::V4(a) => (c::v4_addr(a.octets()), c::AF_INET),
        IpAddr::V6(a) => (a.octets(), c::AF_INET6),
    }
}

/// The `policy` map key of a match.
pub fn policy_key(m: &PolicyMatch) -> c::PolicyKey {
    let mut prefixlen = c::POLICY_PREFIX_FIXED;
    let mut protocol = 0;
    let mut dport = 0u16;
    if let Some(p) = m.protocol {
        protocol = p;
        prefixlen += 8;
        if let Some((port, bits)) = m.port {
            let bits = bits.min(16);
            let mask = if bits == 0 {
                0
            } else {
                u16::MAX << (16 - bits)
            };
            dport = (port & mask).to_be();
            prefixlen += u32::from(bits);
        }
    }
    c::PolicyKey {
        prefixlen,
        endpoint_id: m.endpoint,
        identity: m.identity,
        direction: m.direction.raw(),
        protocol,
        dport,
    }
}

/// The `policy` map value of a decision.
pub fn policy_value(d: &PolicyDecision) -> c::PolicyValue {
    let (action, proxy_port) = match d.action {
        Action::Allow => (c::ACTION_ALLOW, 0),
        Action::Deny => (c::ACTION_DENY, 0),
        Action::Redirect { proxy_port } => (c::ACTION_REDIRECT, proxy_port),
    };
    c::PolicyValue {
        cookie: d.cookie,
        action,
        pad: 0,
        proxy_port,
        pad2: 0,
    }
}

/// The `ipcache` map key of a prefix.
pub fn ipcache_key(p: &Prefix) -> c::IpcacheKey {
    let (addr, family) = raw_addr(p.addr);
    c::IpcacheKey {
        prefixlen: c::IPCACHE_PREFIX_FIXED + u32::from(p.len),
        family,
        pad: [0; 3],
        addr,
    }
}

/// The `ipcache_host` map key of a host address.
pub fn ipcache_host_key(a: IpAddr) -> c::IpcacheHostKey {
    let (addr, family) = raw_addr(a);
    c::IpcacheHostKey {
        family,
        pad: [0; 3],
        addr,
    }
}

/// The `services` map key of a frontend.
pub fn service_key(f: &Frontend) -> c::ServiceKey {
    let (addr, family) = raw_addr(f.addr);
    c::ServiceKey {
        addr,
        family,
        protocol: f.protocol,
        port: f.port.to_be(),
    }
}

/// The `endpoints` map key of an address.
pub fn endpoint_key(a: IpAddr) -> c::EndpointKey {
    let (addr, family) = raw_addr(a);
    c::EndpointKey {
        addr,
        family,
        pad: [0; 3],
    }
}

fn put<K: aya::Pod, V: aya::Pod>(out: &mut MapEntries, map: MapName, k: &K, v: &V) {
    out.insert((map, bytes_of(k).to_vec()), bytes_of(v).to_vec());
}

/// The entries of one frontend: its row in `map` (`services` or `wire_services`), its
/// reverse-NAT address and its Maglev slots, the last two keyed by its service id.
fn put_service(out: &mut MapEntries, map: MapName, f: &Frontend, s: &Service) {
    let v = c::ServiceValue {
        service_id: s.id,
        maglev_size: s.maglev.len() as u32,
        flags: if s.affinity_timeout.is_some() {
            c::SVC_AFFINITY
        } else {
            0
        },
        affinity_timeout: s.affinity_timeout.unwrap_or(0),
    };
    put(out, map, &service_key(f), &v);
    let (addr, family) = raw_addr(f.addr);
    let rn = c::RevnatValue {
        addr,
        family,
        pad: 0,
        port: f.port.to_be(),
    };
    put(out, MapName::Revnat, &s.id, &rn);
    for (slot, backend) in s.maglev.iter().enumerate() {
        let k = c::MaglevKey {
            service_id: s.id,
            slot: slot as u32,
        };
        put(out, MapName::Maglev, &k, backend);
    }
}

impl EbpfArtifact {
    /// The raw content of every map.
    pub fn entries(&self) -> MapEntries {
        let mut out = MapEntries::new();
        put(&mut out, MapName::Config, &0u32, &self.config);
        for (a, e) in &self.endpoints {
            put_endpoint(&mut out, a, e);
        }
        for (p, id) in &self.ipcache {
            put_ipcache(&mut out, p, id);
        }
        for (m, d) in &self.policy {
            put(&mut out, MapName::Policy, &policy_key(m), &policy_value(d));
        }
        for (p, peer) in &self.ipsec {
            put_ipsec(&mut out, p, peer);
        }
        for (id, b) in &self.backends {
            put_backend(&mut out, id, b);
        }
        for (map, services) in [
            (MapName::Services, &self.services),
            (MapName::WireServices, &self.wire_services),
        ] {
            for (f, s) in services {
                put_service(&mut out, map, f, s);
            }
        }
        out
    }

    /// How many entries each map holds, counted from the items without writing them out
    /// (the same counts as [`entries`](Self::entries) gives, at a cost per item kind).
    pub fn map_sizes(&self) -> BTreeMap<MapName, u64> {
        let n = |x: usize| x as u64;
        let hosts = self.ipcache.keys().filter(|p| p.is_host()).count();
        let frontends = self.services.len() + self.wire_services.len();
        let slots: usize = self
            .services
            .values()
            .chain(self.wire_services.values())
            .map(|s| s.maglev.len())
            .sum();
        [
            (MapName::Config, 1),
            (MapName::Endpoints, n(self.endpoints.len())),
            (MapName::IpcacheHost, n(hosts)),
            (MapName::Ipcache, n(self.ipcache.len() - hosts)),
            (MapName::Policy, n(self.policy.len())),
            (MapName::Ipsec, n(self.ipsec.len())),
            (MapName::Backends, n(self.backends.len())),
            (MapName::Services, n(self.services.len())),
            (MapName::WireServices, n(self.wire_services.len())),
            (MapName::Revnat, n(frontends)),
            (MapName::Maglev, n(slots)),
        ]
        .into_iter()
        .filter(|(_, count)| *count > 0)
        .collect()
    }

    /// The operations that turn the maps of `old` into those of `self`: upserts in
    /// [`MapName`] order, then deletes in reverse order (make before break).
    ///
    /// Only the items (an endpoint, a prefix, a policy row, a frontend with its Maglev
    /// slots, ...) that differ between the two artifacts are written out as raw entries
    /// and diffed: the result is [`diff_entries`] of both artifacts' [`entries`](Self::entries),
    /// because every item writes keys no other item writes (service ids are unique across
    /// both service maps), at a cost that grows with the change, not with the maps.
    pub fn diff(&self, old: &EbpfArtifact) -> Vec<MapOp> {
        let (mut before, mut after) = (MapEntries::new(), MapEntries::new());
        put(&mut before, MapName::Config, &0u32, &old.config);
        put(&mut after, MapName::Config, &0u32, &self.config);
        changed(
            &old.endpoints,
            &self.endpoints,
            &mut before,
            &mut after,
            put_endpoint,
        );
        changed(
            &old.ipcache,
            &self.ipcache,
            &mut before,
            &mut after,
            put_ipcache,
        );
        changed(
            &old.policy,
            &self.policy,
            &mut before,
            &mut after,
            |out, m, d| put(out, MapName::Policy, &policy_key(m), &policy_value(d)),
        );
        changed(&old.ipsec, &self.ipsec, &mut before, &mut after, put_ipsec);
        changed(
            &old.backends,
            &self.backends,
            &mut before,
            &mut after,
            put_backend,
        );
        for (map, old_map, new_map) in [
            (MapName::Services, &old.services, &self.services),
            (
                MapName::WireServices,
                &old.wire_services,
                &self.wire_services,
            ),
        ] {
            changed(old_map, new_map, &mut before, &mut after, |out, f, s| {
                put_service(out, map, f, s)
            });
        }
        diff_entries(&before, &after)
    }
}

/// Writes the raw entries of every item that differs between `old` and `new` (by key and
/// value): the old item's into `before`, the new one's into `after`. Both maps are walked
/// once, side by side in key order.
fn changed<K: Ord, V: PartialEq>(
    old: &BTreeMap<K, V>,
    new: &BTreeMap<K, V>,
    before: &mut MapEntries,
    after: &mut MapEntries,
    put_item: impl Fn(&mut MapEntries, &K, &V),
) {
    let mut rest = old.iter().peekable();
    for (k, v) in new {
        while let Some((ok, ov)) = rest.next_if(|(ok, _)| *ok < k) {
            put_item(before, ok, ov);
        }
        match rest.next_if(|(ok, _)| *ok == k) {
            Some((_, ov)) if ov == v => {}
            Some((ok, ov)) => {
                put_item(before, ok, ov);
                put_item(after, k, v);
            }
            None => put_item(after, k, v),
        }
    }
    for (ok, ov) in rest {
        put_item(before, ok, ov);
    }
}

fn put_endpoint(out: &mut MapEntries, a: &IpAddr, e: &Endpoint) {
    let v = c::EndpointValue {
        endpoint_id: e.id,
        ifindex: e.ifindex,
        identity: e.identity,
        flags: 0,
    };
    put(out, MapName::Endpoints, &endpoint_key(*a), &v);
}

/// Host entries go to the hash map, the other prefixes to the LPM trie: a host entry is
/// the longest prefix of its address, so the datapath's "hash first, trie on a miss" finds
/// the same identity as one longest-prefix match over both.
fn put_ipcache(out: &mut MapEntries, p: &Prefix, id: &u32) {
    let v = c::IpcacheValue {
        identity: *id,
        flags: 0,
    };
    if p.is_host() {
        put(out, MapName::IpcacheHost, &ipcache_host_key(p.addr), &v);
    } else {
        put(out, MapName::Ipcache, &ipcache_key(p), &v);
    }
}

fn put_ipsec(out: &mut MapEntries, p: &Prefix, peer: &u32) {
    let v = c::IpsecValue {
        peer: *peer,
        flags: 0,
    };
    put(out, MapName::Ipsec, &ipcache_key(p), &v);
}

fn put_backend(out: &mut MapEntries, id: &u32, b: &Backend) {
    let (addr, family) = raw_addr(b.addr);
    let v = c::BackendValue {
        addr,
        family,
        flags: 0,
        port: b.port.to_be(),
    };
    put(out, MapName::Backends, id, &v);
}

/// The operations that turn `old` into `new` (see [`EbpfArtifact::diff`]). Both maps are
/// walked once, side by side in key order, so no key is copied to be looked up.
pub fn diff_entries(old: &MapEntries, new: &MapEntries) -> Vec<MapOp> {
    let upsert = |(map, key): &(MapName, Vec<u8>), value: &Vec<u8>| MapOp::Upsert {
        map: *map,
        key: key.clone(),
        value: value.clone(),
    };
    let delete = |(map, key): &(MapName, Vec<u8>)| MapOp::Delete {
        map: *map,
        key: key.clone(),
    };
    let mut ops = Vec::new();
    let mut deletes = Vec::new();
    let mut before = old.iter().peekable();
    for (k, v) in new {
        while let Some((ok, _)) = before.next_if(|(ok, _)| *ok < k) {
            deletes.push(delete(ok));
        }
        match before.next_if(|(ok, _)| *ok == k) {
            Some((_, ov)) if ov == v => {}
            _ => ops.push(upsert(k, v)),
        }
    }
    deletes.extend(before.map(|(ok, _)| delete(ok)));
    deletes.reverse();
    ops.extend(deletes);
    ops
}

fn proto_name(p: u8) -> String {
    match p {
        1 => "icmp".into(),
        6 => "tcp".into(),
        17 => "udp".into(),
        58 => "icmpv6".into(),
        132 => "sctp".into(),
        other => format!("proto{other}"),
    }
}

/// One frontend's lines of the text form: `WORD proto addr:port id=.. maglev=..` and its
/// Maglev slots, 32 to a line.
fn write_service(
    f: &mut fmt::Formatter<'_>,
    word: &str,
    fe: &Frontend,
    s: &Service,
) -> fmt::Result {
    let addr = match fe.addr {
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) => format!("[{a}]"),
    };
    let affinity = match s.affinity_timeout {
        Some(t) => format!(" affinity=clientip/{t}s"),
        None => String::new(),
    };
    writeln!(
        f,
        "{word} {} {addr}:{} id={}{affinity} maglev={}",
        proto_name(fe.protocol),
        fe.port,
        s.id,
        s.maglev.len()
    )?;
    for (i, chunk) in s.maglev.chunks(32).enumerate() {
        let slots: Vec<String> = chunk.iter().map(u32::to_string).collect();
        writeln!(f, "  maglev[{}..] {}", i * 32, slots.join(" "))?;
    }
    Ok(())
}

impl fmt::Display for EbpfArtifact {
    /// The stable text form: one line per entry, in map and key order.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cfg = &self.config;
        writeln!(
            f,
            "config ct_tcp_syn={} ct_tcp_established={} ct_tcp_closing={} ct_udp={} ct_sctp={} ct_icmp={} ct_other={} flags={:#x}",
            cfg.ct_tcp_syn, cfg.ct_tcp_established, cfg.ct_tcp_closing, cfg.ct_udp, cfg.ct_sctp, cfg.ct_icmp, cfg.ct_other, cfg.flags
        )?;
        for (a, e) in &self.endpoints {
            writeln!(
                f,
                "endpoint {a} id={} ifindex={} identity={}",
                e.id, e.ifindex, e.identity
            )?;
        }
        for (p, id) in &self.ipcache {
            writeln!(f, "ipcache {p} identity={id}")?;
        }
        for (m, d) in &self.policy {
            let dir = match m.direction {
                PolicyDirection::Egress => "egress",
                PolicyDirection::Ingress => "ingress",
            };
            let remote = if m.identity == 0 {
                "any".to_string()
            } else {
                m.identity.to_string()
            };
            let l4 = match (m.protocol, m.port) {
                (None, _) => "any".to_string(),
                (Some(p), None) => proto_name(p),
                (Some(p), Some((port, bits))) => format!("{}/{port}/{bits}", proto_name(p)),
            };
            let action = match d.action {
                Action::Allow => "allow".to_string(),
                Action::Deny => "deny".to_string(),
                Action::Redirect { proxy_port } => format!("redirect proxy_port={proxy_port}"),
            };
            writeln!(
                f,
                "policy ep={} {dir} remote={remote} {l4} -> {action} cookie={:#x}",
                m.endpoint, d.cookie
            )?;
        }
        for (id, b) in &self.backends {
            let addr = match b.addr {
                IpAddr::V4(a) => a.to_string(),
                IpAddr::V6(a) => format!("[{a}]"),
            };
            writeln!(f, "backend {id} {addr}:{}", b.port)?;
        }
        for (word, services) in [
            ("service", &self.services),
            ("wire-service", &self.wire_services),
        ] {
            for (fe, s) in services {
                write_service(f, word, fe, s)?;
            }
        }
        for (p, peer) in &self.ipsec {
            writeln!(f, "ipsec {p} peer={peer}")?;
        }
        for (cookie, what) in &self.cookies {
            writeln!(f, "cookie {cookie:#x} {what}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// The side-by-side walk gives what a lookup of each key gives: every changed or
        /// new entry upserted in key order, then every gone key deleted in reverse order.
        #[test]
        fn diff_is_the_lookup_diff(
            old in proptest::collection::btree_map((0u8..3, proptest::collection::vec(0u8..4, 1..3)), proptest::collection::vec(0u8..3, 1..2), 0..24),
            new in proptest::collection::btree_map((0u8..3, proptest::collection::vec(0u8..4, 1..3)), proptest::collection::vec(0u8..3, 1..2), 0..24),
        ) {
            let names = [MapName::Endpoints, MapName::Ipcache, MapName::Policy];
            let maps = |m: &BTreeMap<(u8, Vec<u8>), Vec<u8>>| -> MapEntries {
                m.iter().map(|((n, k), v)| ((names[*n as usize], k.clone()), v.clone())).collect()
            };
            let (old, new) = (maps(&old), maps(&new));
            let mut expected: Vec<MapOp> = new
                .iter()
                .filter(|(k, v)| old.get(*k) != Some(*v))
                .map(|((map, key), value)| MapOp::Upsert { map: *map, key: key.clone(), value: value.clone() })
                .collect();
            let gone: Vec<MapOp> = old
                .keys()
                .filter(|k| !new.contains_key(*k))
                .rev()
                .map(|(map, key)| MapOp::Delete { map: *map, key: key.clone() })
                .collect();
            expected.extend(gone);
            proptest::prop_assert_eq!(diff_entries(&old, &new), expected);
        }
    }

    /// The sizes counted from the items are those of the raw entries.
    #[test]
    fn map_sizes_count_what_entries_writes() {
        for n in [0, 3] {
            let a = sample(n);
            let mut counts: BTreeMap<MapName, u64> = BTreeMap::new();
            for (map, _) in a.entries().keys() {
                *counts.entry(*map).or_default() += 1;
            }
            assert_eq!(a.map_sizes(), counts);
        }
    }

    /// Each map's capacity is the one `bpf/pipec.h` creates it with.
    #[test]
    fn capacities_are_the_headers() {
        let header = include_str!("../bpf/pipec.h");
        for map in MapName::ALL {
            let declared = header
                .lines()
                .filter_map(|l| l.trim().strip_prefix("PIPEC_MAP("))
                .map(|rest| rest.split(',').map(str::trim).collect::<Vec<_>>())
                .find(|fields| fields[0] == map.as_str())
                .and_then(|fields| fields.get(4)?.parse::<u64>().ok());
            assert_eq!(declared, Some(map.capacity()), "{}", map.as_str());
        }
    }

    /// An artifact with some of every map, varied by `n`: the items of two values of `n`
    /// overlap, differ and are missing on either side.
    fn sample(n: u32) -> EbpfArtifact {
        let mut a = EbpfArtifact::default();
        a.config.ct_tcp_established = 100 + n % 2;
        for i in n..n + 6 {
            let addr: IpAddr = format!("10.0.0.{i}").parse().unwrap();
            a.endpoints.insert(
                addr,
                Endpoint {
                    id: i,
                    ifindex: 10 + i,
                    identity: 256 + i % 3 + n % 2,
                },
            );
            a.ipcache.insert(Prefix { addr, len: 32 }, 256 + i % 3);
            a.ipcache.insert(
                Prefix {
                    addr: format!("10.{i}.0.0").parse().unwrap(),
                    len: 16,
                },
                300 + n,
            );
            a.policy.insert(
                PolicyMatch {
                    endpoint: i,
                    direction: PolicyDirection::Ingress,
                    identity: 256 + i % 3,
                    protocol: Some(6),
                    port: Some((80, 16)),
                },
                PolicyDecision {
                    action: if (i + n).is_multiple_of(2) {
                        Action::Allow
                    } else {
                        Action::Deny
                    },
                    cookie: u64::from(i),
                },
            );
            a.backends.insert(
                i,
                Backend {
                    addr,
                    port: 8080 + (n % 2) as u16,
                },
            );
        }
        for (k, map) in [(0u32, &mut a.services), (1, &mut a.wire_services)] {
            for f in 0..3u32 {
                let frontend = Frontend {
                    addr: format!("10.96.{k}.{}", f + n % 2).parse().unwrap(),
                    protocol: 6,
                    port: 80,
                };
                // A slot or two move between backends as `n` changes.
                let maglev = (0..31).map(|slot| n + (slot + n) % 5).collect();
                map.insert(
                    frontend,
                    Service {
                        id: 1 + k * 10 + f,
                        affinity_timeout: (f == 1).then_some(30 + n),
                        maglev,
                    },
                );
            }
        }
        a
    }

    /// The item-wise diff is the diff of both artifacts' raw entries, op for op.
    #[test]
    fn the_item_diff_equals_the_raw_diff() {
        for (x, y) in [(0, 1), (1, 0), (0, 3), (2, 2), (0, 4)] {
            let (old, new) = (sample(x), sample(y));
            let raw = diff_entries(&old.entries(), &new.entries());
            assert_eq!(new.diff(&old), raw, "from sample {x} to sample {y}");
            assert_eq!(raw.is_empty(), x == y);
        }
    }

    #[test]
    fn diff_upserts_before_deletes() {
        let mut old = EbpfArtifact::default();
        old.ipcache.insert(
            Prefix {
                addr: "10.0.0.0".parse().unwrap(),
                len: 24,
            },
            256,
        );
        let mut new = EbpfArtifact::default();
        new.ipcache.insert(
            Prefix {
                addr: "10.0.1.0".parse().unwrap(),
                len: 24,
            },
            257,
        );
        let ops = new.diff(&old);
        assert_eq!(ops.len(), 2);
        assert!(matches!(
            ops[0],
            MapOp::Upsert {
                map: MapName::Ipcache,
                ..
            }
        ));
        assert!(matches!(
            ops[1],
            MapOp::Delete {
                map: MapName::Ipcache,
                ..
            }
        ));
        assert!(new.diff(&new).is_empty());
    }

    #[test]
    fn host_entries_go_to_the_hash_map() {
        let mut a = EbpfArtifact::default();
        for (p, len, id) in [
            ("10.0.0.1", 32, 1),
            ("10.0.0.0", 24, 2),
            ("fd00::1", 128, 3),
            ("fd00::", 64, 4),
            ("0.0.0.0", 0, 5),
        ] {
            a.ipcache.insert(
                Prefix {
                    addr: p.parse().unwrap(),
                    len,
                },
                id,
            );
        }
        let e = a.entries();
        let in_map = |m: MapName| e.keys().filter(|(n, _)| *n == m).count();
        assert_eq!(in_map(MapName::IpcacheHost), 2);
        assert_eq!(in_map(MapName::Ipcache), 3);
        let host = ipcache_host_key("10.0.0.1".parse().unwrap());
        let value = c::IpcacheValue {
            identity: 1,
            flags: 0,
        };
        assert_eq!(
            e.get(&(MapName::IpcacheHost, bytes_of(&host).to_vec())),
            Some(&bytes_of(&value).to_vec())
        );
    }
}
