//! Map key and value layouts shared by pipec's eBPF datapath and its loader.
//!
//! Every type here is the `#[repr(C)]` twin of a struct in `targets/ebpf/bpf/pipec.h`, with
//! the same field names. The `pipec-ebpf` crate checks each of them, field by field, against
//! the BTF of the committed object, so the two sides cannot drift apart silently.
//!
//! Conventions (the same as in the C header):
//! - addresses are `[u8; 16]`: IPv6 as it is, IPv4 in the first four bytes and zeros after,
//!   with a `family` field that is [`AF_INET`] or [`AF_INET6`];
//! - ports (`port`, `sport`, `dport`) are stored in network byte order, so that an LPM
//!   prefix over a port runs from its most significant bit; use the constructors, which
//!   take host-order ports;
//! - explicit `pad` fields make every byte of a key defined, because the kernel hashes and
//!   compares keys as raw bytes.
//!
//! With the `user` feature every type implements `aya::Pod`, for aya's typed maps.
#![no_std]
#![deny(missing_docs)]

/// Address family value of an IPv4 address.
pub const AF_INET: u8 = 4;
/// Address family value of an IPv6 address.
pub const AF_INET6: u8 = 6;

/// Direction: traffic leaving the local endpoint.
pub const DIR_EGRESS: u8 = 0;
/// Direction: traffic entering the local endpoint.
pub const DIR_INGRESS: u8 = 1;
/// Conntrack-only direction: the pre-DNAT tuple of a service flow (remembers the backend).
pub const DIR_SERVICE: u8 = 2;

/// Policy action: allow.
pub const ACTION_ALLOW: u8 = 1;
/// Policy action: deny. Denies win over allows of the wildcard-identity lookup.
pub const ACTION_DENY: u8 = 2;
/// Policy action: allow at L4 and redirect to the L7 proxy (sets the proxy mark).
pub const ACTION_REDIRECT: u8 = 3;

/// Flow event verdict: a new flow was allowed.
pub const VERDICT_ALLOWED: u8 = 1;
/// Flow event verdict: the packet was dropped.
pub const VERDICT_DENIED: u8 = 2;
/// Flow event verdict: a new flow was allowed and redirected to the proxy.
pub const VERDICT_REDIRECTED: u8 = 3;

/// Flow event reason: a policy entry decided.
pub const REASON_POLICY: u32 = 1;
/// Flow event reason: no policy entry matched (default deny).
pub const REASON_NO_ENTRY: u32 = 2;
/// Flow event reason: the source address does not belong to the interface (anti-spoof).
pub const REASON_SPOOF: u32 = 3;
/// Flow event reason: the service has no usable backend.
pub const REASON_NO_BACKEND: u32 = 4;

/// Service flag: sessionAffinity ClientIP.
pub const SVC_AFFINITY: u32 = 1;

/// Reserved identity of addresses outside every ipcache prefix.
pub const IDENTITY_WORLD: u32 = 2;

/// Bits of a [`PolicyKey`] that are always matched exactly: endpoint, identity, direction.
pub const POLICY_PREFIX_FIXED: u32 = 72;
/// Prefix length of a fully specified [`PolicyKey`] (protocol and all 16 port bits).
pub const POLICY_PREFIX_FULL: u32 = 96;
/// Bits of an [`IpcacheKey`] that are always matched exactly: the family and padding.
pub const IPCACHE_PREFIX_FIXED: u32 = 32;

/// `skb->mark` bits that carry pipec's magic.
pub const MARK_MAGIC_MASK: u32 = 0x0f00;
/// Mark of a packet for the L7 proxy; the proxy port is in the upper 16 bits.
pub const MARK_TO_PROXY: u32 = 0x0200;
/// Mark set by `from_wire` so that `to_pod` does not run the ingress pipeline twice.
pub const MARK_POLICY_DONE: u32 = 0x0a00;
/// Mark set by `to_wire` on a packet the CPT encrypts; the peer id is in the upper 16 bits.
pub const MARK_ENCRYPT: u32 = 0x0e00;

/// Conntrack state: a TCP SYN was seen, no reply yet.
pub const CT_SYN_SENT: u8 = 1;
/// Conntrack state: established (or a non-TCP flow).
pub const CT_ESTABLISHED: u8 = 2;
/// Conntrack state: one side sent FIN.
pub const CT_CLOSING: u8 = 3;
/// Conntrack state: both sides sent FIN, or an RST was seen.
pub const CT_CLOSED: u8 = 4;

/// Conntrack flag: a reply was seen.
pub const CT_SEEN_REPLY: u8 = 1;

/// Config flag: evaluate every packet as a new flow and create no conntrack state (for
/// probes that must not see each other's state, and for benchmarks).
pub const CONFIG_NO_CT_CREATE: u32 = 1;
/// Config flag: emit no flow events.
pub const CONFIG_NO_EVENTS: u32 = 2;

/// Key of the `endpoints` hash map: a local endpoint's address.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EndpointKey {
    /// The address (see the crate docs for the IPv4 form).
    pub addr: [u8; 16],
    /// [`AF_INET`] or [`AF_INET6`].
    pub family: u8,
    /// Zero.
    pub pad: [u8; 3],
}

/// Value of the `endpoints` map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EndpointValue {
    /// The endpoint id used in [`PolicyKey::endpoint_id`].
    pub endpoint_id: u32,
    /// The interface the endpoint's packets must arrive on (anti-spoof).
    pub ifindex: u32,
    /// The endpoint's own security identity.
    pub identity: u32,
    /// Reserved, zero.
    pub flags: u32,
}

/// Key of the `ipcache` LPM trie.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IpcacheKey {
    /// [`IPCACHE_PREFIX_FIXED`] plus the address prefix length.
    pub prefixlen: u32,
    /// [`AF_INET`] or [`AF_INET6`].
    pub family: u8,
    /// Zero.
    pub pad: [u8; 3],
    /// The prefix's address.
    pub addr: [u8; 16],
}

/// Key of the `ipcache_host` hash map: an IPv4 /32 or IPv6 /128 host entry of the ipcache
/// (an [`IpcacheKey`] without its prefix length). Every shorter prefix is in the `ipcache`
/// LPM trie; the datapath looks this map up first and the trie on a miss.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IpcacheHostKey {
    /// [`AF_INET`] or [`AF_INET6`].
    pub family: u8,
    /// Zero.
    pub pad: [u8; 3],
    /// The host's address.
    pub addr: [u8; 16],
}

/// Value of the `ipcache` and `ipcache_host` maps.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IpcacheValue {
    /// Security identity of every address in the prefix.
    pub identity: u32,
    /// Reserved, zero.
    pub flags: u32,
}

/// Value of the `ipsec` LPM trie (keyed like `ipcache`): the peer node a remote pod
/// prefix lives on, when IPsec is on.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IpsecValue {
    /// The peer node's 1-based position among the local node's peers in name order (the
    /// CPT target's SA slot order); `to_wire` puts it in the upper 16 bits of the mark.
    pub peer: u32,
    /// Reserved, zero.
    pub flags: u32,
}

/// Key of the `policy` LPM trie: the resolved decision table.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PolicyKey {
    /// [`POLICY_PREFIX_FIXED`], plus 8 when the protocol is given, plus the port prefix.
    pub prefixlen: u32,
    /// The local endpoint.
    pub endpoint_id: u32,
    /// The remote identity; 0 matches any.
    pub identity: u32,
    /// [`DIR_EGRESS`] or [`DIR_INGRESS`].
    pub direction: u8,
    /// IP protocol number.
    pub protocol: u8,
    /// Destination port, network byte order.
    pub dport: u16,
}

/// Value of the `policy` map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PolicyValue {
    /// Provenance cookie of the rule: counters and flow events are keyed by it.
    pub cookie: u64,
    /// [`ACTION_ALLOW`], [`ACTION_DENY`] or [`ACTION_REDIRECT`].
    pub action: u8,
    /// Zero.
    pub pad: u8,
    /// Proxy port for [`ACTION_REDIRECT`], host byte order.
    pub proxy_port: u16,
    /// Zero.
    pub pad2: u32,
}

/// Key of the `services` hash map: a frontend (ClusterIP, NodePort address, ...).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceKey {
    /// The frontend address.
    pub addr: [u8; 16],
    /// [`AF_INET`] or [`AF_INET6`].
    pub family: u8,
    /// IP protocol number.
    pub protocol: u8,
    /// Frontend port, network byte order.
    pub port: u16,
}

/// Value of the `services` map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServiceValue {
    /// Service id: the Maglev table, affinity and reverse-NAT key.
    pub service_id: u32,
    /// Number of slots of the service's Maglev table (0: no backends).
    pub maglev_size: u32,
    /// [`SVC_AFFINITY`] or zero.
    pub flags: u32,
    /// ClientIP affinity timeout in seconds.
    pub affinity_timeout: u32,
}

/// Key of the `maglev` hash map (value: a backend id).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MaglevKey {
    /// The service.
    pub service_id: u32,
    /// The slot, `0..maglev_size`.
    pub slot: u32,
}

/// Value of the `backends` hash map (key: a backend id).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BackendValue {
    /// Backend address.
    pub addr: [u8; 16],
    /// [`AF_INET`] or [`AF_INET6`].
    pub family: u8,
    /// Reserved, zero.
    pub flags: u8,
    /// Backend port, network byte order.
    pub port: u16,
}

/// Key of the `affinity` LRU map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AffinityKey {
    /// The service.
    pub service_id: u32,
    /// [`AF_INET`] or [`AF_INET6`].
    pub family: u8,
    /// Zero.
    pub pad: [u8; 3],
    /// The client address.
    pub addr: [u8; 16],
}

/// Value of the `affinity` map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AffinityValue {
    /// Last use, in `CLOCK_MONOTONIC` nanoseconds.
    pub last_used: u64,
    /// The backend the client sticks to.
    pub backend_id: u32,
    /// Zero.
    pub pad: u32,
}

/// Value of the `revnat` hash map (key: a service id): the frontend replies come from.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RevnatValue {
    /// Frontend address.
    pub addr: [u8; 16],
    /// [`AF_INET`] or [`AF_INET6`].
    pub family: u8,
    /// Zero.
    pub pad: u8,
    /// Frontend port, network byte order.
    pub port: u16,
}

/// Key of the `ct` LRU map: a tuple in the direction of the flow's first packet.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CtKey {
    /// Source address.
    pub saddr: [u8; 16],
    /// Destination address.
    pub daddr: [u8; 16],
    /// Source port (ICMP echo: the identifier), network byte order.
    pub sport: u16,
    /// Destination port (ICMP echo: the identifier), network byte order.
    pub dport: u16,
    /// IP protocol number.
    pub protocol: u8,
    /// [`AF_INET`] or [`AF_INET6`].
    pub family: u8,
    /// [`DIR_EGRESS`], [`DIR_INGRESS`] or [`DIR_SERVICE`].
    pub direction: u8,
    /// Zero.
    pub pad: u8,
}

/// Value of the `ct` map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CtValue {
    /// Creation time, `CLOCK_MONOTONIC` nanoseconds.
    pub created: u64,
    /// Deadline, `CLOCK_MONOTONIC` nanoseconds; the GC deletes entries past it.
    pub expires: u64,
    /// Packets of the flow.
    pub packets: u64,
    /// Bytes of the flow.
    pub bytes: u64,
    /// Cookie of the rule that allowed the flow.
    pub cookie: u64,
    /// Service id to reverse-NAT replies with, or 0.
    pub rev_nat: u32,
    /// Backend chosen for a service flow.
    pub backend_id: u32,
    /// Identity of the remote side.
    pub remote_identity: u32,
    /// Proxy port of a redirected flow, or 0.
    pub proxy_port: u16,
    /// One of the `CT_*` states.
    pub state: u8,
    /// `CT_*` flags.
    pub flags: u8,
}

/// Value of the per-CPU `counters` hash map (key: a rule cookie, `u64`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CounterValue {
    /// Packets.
    pub packets: u64,
    /// Bytes.
    pub bytes: u64,
}

/// A record of the `events` ring buffer: a new flow's verdict, or a drop.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowEvent {
    /// `CLOCK_MONOTONIC` nanoseconds.
    pub timestamp: u64,
    /// Cookie of the deciding rule (0: no rule).
    pub cookie: u64,
    /// Source address.
    pub saddr: [u8; 16],
    /// Destination address.
    pub daddr: [u8; 16],
    /// Source port, network byte order.
    pub sport: u16,
    /// Destination port, network byte order.
    pub dport: u16,
    /// IP protocol number.
    pub protocol: u8,
    /// [`AF_INET`] or [`AF_INET6`].
    pub family: u8,
    /// [`DIR_EGRESS`] or [`DIR_INGRESS`].
    pub direction: u8,
    /// One of the `VERDICT_*` values.
    pub verdict: u8,
    /// The local endpoint (0 when unknown).
    pub endpoint_id: u32,
    /// The remote identity.
    pub remote_identity: u32,
    /// One of the `REASON_*` values.
    pub reason: u32,
    /// Zero.
    pub pad: u32,
}

/// The single entry of the `config` array: conntrack lifetimes (seconds) and flags.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// TCP after a SYN without a reply.
    pub ct_tcp_syn: u32,
    /// Established TCP.
    pub ct_tcp_established: u32,
    /// TCP after a FIN or RST.
    pub ct_tcp_closing: u32,
    /// UDP.
    pub ct_udp: u32,
    /// SCTP.
    pub ct_sctp: u32,
    /// ICMP and ICMPv6.
    pub ct_icmp: u32,
    /// Any other protocol.
    pub ct_other: u32,
    /// `CONFIG_*` flags.
    pub flags: u32,
}

impl Default for Config {
    /// Cilium's default lifetimes.
    fn default() -> Self {
        Config {
            ct_tcp_syn: 60,
            ct_tcp_established: 21600,
            ct_tcp_closing: 10,
            ct_udp: 60,
            ct_sctp: 60,
            ct_icmp: 30,
            ct_other: 60,
            flags: 0,
        }
    }
}

/// The 16-byte address form of an IPv4 address.
pub fn v4_addr(octets: [u8; 4]) -> [u8; 16] {
    let mut a = [0u8; 16];
    a[..4].copy_from_slice(&octets);
    a
}

#[cfg(feature = "user")]
mod pod {
    //! `aya::Pod` for every layout: each is `repr(C)`, `Copy`, and made only of integers
    //! and byte arrays with explicit padding, so any bit pattern is a valid value.
    #![allow(unsafe_code, reason = "aya::Pod is an unsafe marker trait")]
    use super::*;
    macro_rules! pod {
        ($($t:ty),*) => { $(unsafe impl aya::Pod for $t {})* };
    }
    pod!(
        EndpointKey,
        EndpointValue,
        IpcacheKey,
        IpcacheHostKey,
        IpcacheValue,
        IpsecValue,
        PolicyKey,
        PolicyValue,
        ServiceKey,
        ServiceValue,
        MaglevKey,
        BackendValue,
        AffinityKey,
        AffinityValue,
        RevnatValue,
        CtKey,
        CtValue,
        CounterValue,
        FlowEvent,
        Config
    );
}
