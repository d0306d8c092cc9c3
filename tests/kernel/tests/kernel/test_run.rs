//! Real packets through the loaded programs with `BPF_PROG_TEST_RUN`, on hand-filled maps.
//!
//! Test runs happen on the loopback device (ifindex 1), so the endpoints of this fixture
//! live there: anti-spoof accepts their packets from it.

use std::net::IpAddr;

use pipec_ebpf::artifact::{
    Action, Backend, Endpoint, Frontend, PolicyDecision, PolicyDirection, PolicyMatch, Prefix,
    Service,
};
use pipec_ebpf::datapath::{TC_ACT_OK, TC_ACT_SHOT};
use pipec_ebpf::packet::{self, L4, TCP_ACK, TCP_SYN};
use pipec_ebpf::{maglev, EbpfArtifact, Program};
use pipec_ebpf_common as c;

use crate::common::TestDatapath;

const LO: u32 = 1;
const TCP: u8 = 6;
const UDP: u8 = 17;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn rule(
    a: &mut EbpfArtifact,
    endpoint: u32,
    direction: PolicyDirection,
    identity: u32,
    l4: Option<(u8, Option<u16>)>,
    action: Action,
    cookie: u64,
) {
    let m = PolicyMatch {
        endpoint,
        direction,
        identity,
        protocol: l4.map(|(p, _)| p),
        port: l4.and_then(|(_, port)| port.map(|p| (p, 16))),
    };
    a.policy.insert(m, PolicyDecision { action, cookie });
}

/// Pod A (10.0.0.1, fd00::1, endpoint 1, identity 1001) may send anything TCP/UDP/ICMP.
/// Pod B (10.0.0.2, fd00::2, endpoint 2, identity 1002) accepts TCP 80 and UDP 53 and ICMP
/// from A, redirects TCP 81 to a proxy, and denies TCP 22 from anyone (even though an
/// allow for A names it: deny wins); B may open nothing itself.
/// Services: 10.96.0.10:80 and [fd00:96::10]:80 → B:80.
fn fixture() -> EbpfArtifact {
    let mut a = EbpfArtifact::default();
    for (addr, id, identity) in [
        ("10.0.0.1", 1, 1001),
        ("fd00::1", 1, 1001),
        ("10.0.0.2", 2, 1002),
        ("fd00::2", 2, 1002),
    ] {
        a.endpoints.insert(
            ip(addr),
            Endpoint {
                id,
                ifindex: LO,
                identity,
            },
        );
    }
    // An endpoint on another interface: its address must not be usable from loopback.
    a.endpoints.insert(
        ip("10.0.0.9"),
        Endpoint {
            id: 9,
            ifindex: 999_999,
            identity: 1009,
        },
    );
    for (p, len, id) in [
        ("10.0.0.1", 32, 1001),
        ("10.0.0.2", 32, 1002),
        ("fd00::1", 128, 1001),
        ("fd00::2", 128, 1002),
        ("10.0.0.0", 8, 16_777_217),
    ] {
        a.ipcache.insert(Prefix { addr: ip(p), len }, id);
    }
    use PolicyDirection::*;
    rule(&mut a, 1, Egress, 0, Some((TCP, None)), Action::Allow, 0x10);
    rule(&mut a, 1, Egress, 0, Some((UDP, None)), Action::Allow, 0x11);
    rule(&mut a, 1, Egress, 0, Some((1, None)), Action::Allow, 0x12);
    rule(&mut a, 1, Egress, 0, Some((58, None)), Action::Allow, 0x13);
    rule(
        &mut a,
        2,
        Ingress,
        1001,
        Some((TCP, Some(80))),
        Action::Allow,
        0x20,
    );
    rule(
        &mut a,
        2,
        Ingress,
        1001,
        Some((TCP, Some(81))),
        Action::Redirect { proxy_port: 15001 },
        0x21,
    );
    rule(
        &mut a,
        2,
        Ingress,
        0,
        Some((TCP, Some(22))),
        Action::Deny,
        0x22,
    );
    rule(
        &mut a,
        2,
        Ingress,
        1001,
        Some((TCP, Some(22))),
        Action::Allow,
        0x23,
    );
    rule(
        &mut a,
        2,
        Ingress,
        1001,
        Some((UDP, Some(53))),
        Action::Allow,
        0x24,
    );
    rule(
        &mut a,
        2,
        Ingress,
        1001,
        Some((1, None)),
        Action::Allow,
        0x25,
    );
    a.backends.insert(
        1,
        Backend {
            addr: ip("10.0.0.2"),
            port: 80,
        },
    );
    a.backends.insert(
        2,
        Backend {
            addr: ip("fd00::2"),
            port: 80,
        },
    );
    a.services.insert(
        Frontend {
            addr: ip("10.96.0.10"),
            protocol: TCP,
            port: 80,
        },
        Service {
            id: 1,
            affinity_timeout: None,
            maglev: maglev::table(&[1], 251),
        },
    );
    a.services.insert(
        Frontend {
            addr: ip("fd00:96::10"),
            protocol: TCP,
            port: 80,
        },
        Service {
            id: 2,
            affinity_timeout: None,
            maglev: maglev::table(&[2], 251),
        },
    );
    a
}

fn loaded(tag: &str) -> TestDatapath {
    let mut dp = TestDatapath::load(tag);
    dp.write(&fixture()).expect("write the fixture");
    dp
}

fn tcp(sport: u16, dport: u16, flags: u8) -> L4 {
    L4::Tcp {
        sport,
        dport,
        flags,
    }
}

fn verdict(dp: &TestDatapath, prog: Program, src: &str, dst: &str, l4: L4) -> i32 {
    dp.run(prog, &packet::build(ip(src), ip(dst), l4), LO, 0)
        .expect("test run")
        .verdict
}

#[test]
fn policy_allows_and_denies_ipv4() {
    let mut dp = loaded("policy4");
    assert_eq!(
        verdict(
            &dp,
            Program::FromPod,
            "10.0.0.1",
            "10.0.0.2",
            tcp(40000, 80, TCP_SYN)
        ),
        TC_ACT_OK
    );
    assert_eq!(
        verdict(
            &dp,
            Program::ToPod,
            "10.0.0.1",
            "10.0.0.2",
            tcp(40000, 80, TCP_SYN)
        ),
        TC_ACT_OK
    );
    // No entry for port 8080: default deny.
    assert_eq!(
        verdict(
            &dp,
            Program::ToPod,
            "10.0.0.1",
            "10.0.0.2",
            tcp(40001, 8080, TCP_SYN)
        ),
        TC_ACT_SHOT
    );
    // The wildcard deny on 22 beats the specific allow.
    assert_eq!(
        verdict(
            &dp,
            Program::ToPod,
            "10.0.0.1",
            "10.0.0.2",
            tcp(40002, 22, TCP_SYN)
        ),
        TC_ACT_SHOT
    );
    // B may open nothing.
    assert_eq!(
        verdict(
            &dp,
            Program::FromPod,
            "10.0.0.2",
            "10.0.0.1",
            tcp(40003, 80, TCP_SYN)
        ),
        TC_ACT_SHOT
    );
    // UDP 53 is allowed from A only: another source (identity world) is denied.
    assert_eq!(
        verdict(
            &dp,
            Program::ToPod,
            "10.0.0.1",
            "10.0.0.2",
            L4::Udp {
                sport: 5353,
                dport: 53
            }
        ),
        TC_ACT_OK
    );
    assert_eq!(
        verdict(
            &dp,
            Program::ToPod,
            "192.0.2.1",
            "10.0.0.2",
            L4::Udp {
                sport: 5353,
                dport: 53
            }
        ),
        TC_ACT_SHOT
    );

    let counters = dp.counters().unwrap();
    assert_eq!(
        counters.get(&0x20).map(|c| c.packets),
        Some(1),
        "{counters:?}"
    );
    assert_eq!(
        counters.get(&0x22).map(|c| c.packets),
        Some(1),
        "{counters:?}"
    );
    let events = dp.events().unwrap();
    let denied_22 = events
        .iter()
        .find(|e| e.cookie == 0x22)
        .expect("a flow event for the deny rule");
    assert_eq!(
        (
            denied_22.verdict,
            denied_22.reason,
            denied_22.remote_identity
        ),
        (c::VERDICT_DENIED, c::REASON_POLICY, 1001)
    );
    assert_eq!(u16::from_be(denied_22.dport), 22);
    assert!(events
        .iter()
        .any(|e| e.verdict == c::VERDICT_ALLOWED && e.cookie == 0x20));
    assert!(events
        .iter()
        .any(|e| e.reason == c::REASON_NO_ENTRY && e.endpoint_id == 2));
}

#[test]
fn anti_spoof_drops_foreign_sources() {
    let dp = loaded("spoof");
    // Not an endpoint at all.
    assert_eq!(
        verdict(
            &dp,
            Program::FromPod,
            "10.0.0.77",
            "10.0.0.2",
            tcp(1, 80, TCP_SYN)
        ),
        TC_ACT_SHOT
    );
    // An endpoint, but of another interface.
    assert_eq!(
        verdict(
            &dp,
            Program::FromPod,
            "10.0.0.9",
            "10.0.0.2",
            tcp(1, 80, TCP_SYN)
        ),
        TC_ACT_SHOT
    );
    // Non-IP traffic (ARP) passes.
    let mut arp = packet::build(ip("10.0.0.1"), ip("10.0.0.2"), tcp(1, 2, 0));
    arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
    assert_eq!(
        dp.run(Program::FromPod, &arp, LO, 0).unwrap().verdict,
        TC_ACT_OK
    );
}

#[test]
fn redirect_marks_for_the_proxy() {
    let dp = loaded("redirect");
    let r = dp
        .run(
            Program::ToPod,
            &packet::build(ip("10.0.0.1"), ip("10.0.0.2"), tcp(40000, 81, TCP_SYN)),
            LO,
            0,
        )
        .unwrap();
    assert_eq!(r.verdict, TC_ACT_OK);
    assert_eq!(r.mark, (15001 << 16) | c::MARK_TO_PROXY);
}

fn service_roundtrip(client: &str, vip: &str, backend: &str) {
    let dp = loaded("svc");
    let syn = packet::build(ip(client), ip(vip), tcp(40000, 80, TCP_SYN));
    let r = dp.run(Program::FromPod, &syn, LO, 0).unwrap();
    assert_eq!(r.verdict, TC_ACT_OK);
    let p = packet::parse(&r.packet).unwrap();
    assert_eq!(
        (p.src, p.dst, p.sport, p.dport),
        (ip(client), ip(backend), 40000, 80),
        "DNAT to the backend"
    );
    assert!(packet::checksums_ok(&r.packet), "checksums after DNAT");
    // The backend's ingress sees the DNATed packet.
    assert_eq!(
        dp.run(Program::ToPod, &r.packet, LO, 0).unwrap().verdict,
        TC_ACT_OK
    );

    // The reply leaves the backend (allowed as a reply though B may open nothing) ...
    let reply = packet::build(ip(backend), ip(client), tcp(80, 40000, TCP_SYN | TCP_ACK));
    assert_eq!(
        dp.run(Program::FromPod, &reply, LO, 0).unwrap().verdict,
        TC_ACT_OK
    );
    // ... and reaches the client from the VIP.
    let r = dp.run(Program::ToPod, &reply, LO, 0).unwrap();
    assert_eq!(r.verdict, TC_ACT_OK);
    let p = packet::parse(&r.packet).unwrap();
    assert_eq!(
        (p.src, p.dst, p.sport, p.dport),
        (ip(vip), ip(client), 80, 40000),
        "reverse NAT"
    );
    assert!(
        packet::checksums_ok(&r.packet),
        "checksums after reverse NAT"
    );

    // Later packets of the flow keep their backend; conntrack saw the reply.
    let ack = packet::build(ip(client), ip(vip), tcp(40000, 80, TCP_ACK));
    let r = dp.run(Program::FromPod, &ack, LO, 0).unwrap();
    assert_eq!(packet::parse(&r.packet).unwrap().dst, ip(backend));
    let ct = dp.conntrack().unwrap();
    let egress = ct
        .iter()
        .find(|(k, _)| k.direction == c::DIR_EGRESS && k.dport == 80u16.to_be())
        .expect("an egress conntrack entry");
    assert_eq!(egress.1.state, c::CT_ESTABLISHED);
    assert_ne!(egress.1.rev_nat, 0);
    assert!(ct.iter().any(|(k, _)| k.direction == c::DIR_SERVICE));
}

#[test]
fn service_dnat_and_reverse_nat_ipv4() {
    service_roundtrip("10.0.0.1", "10.96.0.10", "10.0.0.2");
}

#[test]
fn service_dnat_and_reverse_nat_ipv6() {
    service_roundtrip("fd00::1", "fd00:96::10", "fd00::2");
}

#[test]
fn policy_ipv6() {
    let dp = loaded("policy6");
    assert_eq!(
        verdict(
            &dp,
            Program::FromPod,
            "fd00::1",
            "fd00::2",
            tcp(40000, 80, TCP_SYN)
        ),
        TC_ACT_OK
    );
    assert_eq!(
        verdict(
            &dp,
            Program::ToPod,
            "fd00::1",
            "fd00::2",
            tcp(40000, 80, TCP_SYN)
        ),
        TC_ACT_OK
    );
    assert_eq!(
        verdict(
            &dp,
            Program::ToPod,
            "fd00::1",
            "fd00::2",
            tcp(40000, 443, TCP_SYN)
        ),
        TC_ACT_SHOT
    );
    assert_eq!(
        verdict(
            &dp,
            Program::ToPod,
            "fd00::1",
            "fd00::2",
            tcp(40001, 22, TCP_SYN)
        ),
        TC_ACT_SHOT
    );
    // ICMPv6 echo: B has no ICMPv6 entry.
    assert_eq!(
        verdict(
            &dp,
            Program::ToPod,
            "fd00::1",
            "fd00::2",
            L4::Echo {
                id: 9,
                reply: false
            }
        ),
        TC_ACT_SHOT
    );
}

#[test]
fn conntrack_replies_icmp_and_gc() {
    let dp = loaded("ct");
    // A pings B: allowed both ways, the echo reply by conntrack only.
    let req = L4::Echo {
        id: 7,
        reply: false,
    };
    let rep = L4::Echo { id: 7, reply: true };
    assert_eq!(
        verdict(&dp, Program::FromPod, "10.0.0.1", "10.0.0.2", req),
        TC_ACT_OK
    );
    assert_eq!(
        verdict(&dp, Program::ToPod, "10.0.0.1", "10.0.0.2", req),
        TC_ACT_OK
    );
    assert_eq!(
        verdict(&dp, Program::FromPod, "10.0.0.2", "10.0.0.1", rep),
        TC_ACT_OK
    );
    assert_eq!(
        verdict(&dp, Program::ToPod, "10.0.0.2", "10.0.0.1", rep),
        TC_ACT_OK
    );
    // An unsolicited echo reply opens nothing.
    assert_eq!(
        verdict(
            &dp,
            Program::FromPod,
            "10.0.0.2",
            "10.0.0.1",
            L4::Echo { id: 8, reply: true }
        ),
        TC_ACT_SHOT
    );

    // UDP reply from B to A after A's query.
    let q = L4::Udp {
        sport: 5353,
        dport: 53,
    };
    let a = L4::Udp {
        sport: 53,
        dport: 5353,
    };
    assert_eq!(
        verdict(&dp, Program::FromPod, "10.0.0.1", "10.0.0.2", q),
        TC_ACT_OK
    );
    assert_eq!(
        verdict(&dp, Program::ToPod, "10.0.0.1", "10.0.0.2", q),
        TC_ACT_OK
    );
    assert_eq!(
        verdict(&dp, Program::FromPod, "10.0.0.2", "10.0.0.1", a),
        TC_ACT_OK
    );

    // Nothing has expired yet; an hour from now (past the UDP and ICMP lifetimes) it has.
    assert_eq!(dp.gc_conntrack(None).unwrap(), 0);
    let entries = dp.conntrack().unwrap().len();
    assert!(entries >= 4, "{entries} conntrack entries");
    let hour = 3_600_000_000_000;
    let now = pipec_ebpf::sys::monotonic_ns();
    assert_eq!(dp.gc_conntrack(Some(now + hour)).unwrap(), entries);
    // Without its conntrack entry the reply is a new flow from B, which may open nothing.
    assert_eq!(
        verdict(&dp, Program::FromPod, "10.0.0.2", "10.0.0.1", a),
        TC_ACT_SHOT
    );
}

#[test]
fn tcp_states_follow_the_handshake() {
    let dp = loaded("tcpstate");
    let state = |dp: &TestDatapath| {
        dp.conntrack()
            .unwrap()
            .into_iter()
            .find(|(k, _)| k.direction == c::DIR_EGRESS && k.protocol == TCP)
            .map(|(_, v)| v.state)
    };
    verdict(
        &dp,
        Program::FromPod,
        "10.0.0.1",
        "10.0.0.2",
        tcp(41000, 80, TCP_SYN),
    );
    assert_eq!(state(&dp), Some(c::CT_SYN_SENT));
    verdict(
        &dp,
        Program::ToPod,
        "10.0.0.2",
        "10.0.0.1",
        tcp(80, 41000, TCP_SYN | TCP_ACK),
    );
    assert_eq!(state(&dp), Some(c::CT_ESTABLISHED));
    verdict(
        &dp,
        Program::FromPod,
        "10.0.0.1",
        "10.0.0.2",
        tcp(41000, 80, packet::TCP_FIN | TCP_ACK),
    );
    assert_eq!(state(&dp), Some(c::CT_CLOSING));
    verdict(
        &dp,
        Program::ToPod,
        "10.0.0.2",
        "10.0.0.1",
        tcp(80, 41000, packet::TCP_FIN | TCP_ACK),
    );
    assert_eq!(state(&dp), Some(c::CT_CLOSED));
}

#[test]
fn affinity_keeps_a_client_on_one_backend() {
    let mut dp = TestDatapath::load("affinity");
    let mut a = fixture();
    a.backends.insert(
        3,
        Backend {
            addr: ip("10.0.0.3"),
            port: 8080,
        },
    );
    a.services.insert(
        Frontend {
            addr: ip("10.96.0.11"),
            protocol: TCP,
            port: 80,
        },
        Service {
            id: 3,
            affinity_timeout: Some(10800),
            maglev: maglev::table(&[1, 3], 251),
        },
    );
    dp.write(&a).unwrap();
    let mut seen = std::collections::BTreeSet::new();
    for sport in 30000..30032 {
        let r = dp
            .run(
                Program::FromPod,
                &packet::build(ip("10.0.0.1"), ip("10.96.0.11"), tcp(sport, 80, TCP_SYN)),
                LO,
                0,
            )
            .unwrap();
        let p = packet::parse(&r.packet).unwrap();
        seen.insert((p.dst, p.dport));
    }
    assert_eq!(seen.len(), 1, "one backend for one client: {seen:?}");

    // Without affinity, Maglev spreads 32 connections over both backends.
    a.services
        .get_mut(&Frontend {
            addr: ip("10.96.0.11"),
            protocol: TCP,
            port: 80,
        })
        .unwrap()
        .affinity_timeout = None;
    dp.write(&a).unwrap();
    let mut seen = std::collections::BTreeSet::new();
    for sport in 31000..31032 {
        let r = dp
            .run(
                Program::FromPod,
                &packet::build(ip("10.0.0.1"), ip("10.96.0.11"), tcp(sport, 80, TCP_SYN)),
                LO,
                0,
            )
            .unwrap();
        seen.insert(packet::parse(&r.packet).unwrap().dst);
    }
    assert_eq!(seen.len(), 2, "{seen:?}");
}

#[test]
fn writes_apply_diffs_entry_by_entry() {
    let mut dp = TestDatapath::load("diff");
    let a = fixture();
    let first = dp.write(&a).unwrap();
    assert_eq!(first.deletes, 0);
    assert!(
        first.batches > 0,
        "hash and LPM upserts are batched: {first:?}"
    );
    assert_eq!(first.upserts, a.entries().len());
    let mut b = a.clone();
    b.policy.retain(|_, d| d.cookie != 0x20);
    b.ipcache.insert(
        Prefix {
            addr: ip("10.1.0.0"),
            len: 16,
        },
        4242,
    );
    let second = dp.write(&b).unwrap();
    assert_eq!((second.upserts, second.deletes), (1, 1));
    assert_eq!(dp.read_entries().unwrap(), b.entries());
    // With the allow rule gone, port 80 is default-deny.
    assert_eq!(
        verdict(
            &dp,
            Program::ToPod,
            "10.0.0.1",
            "10.0.0.2",
            tcp(40000, 80, TCP_SYN)
        ),
        TC_ACT_SHOT
    );
}

#[test]
fn wire_side_runs_ingress_once_and_clears_marks() {
    let dp = loaded("wire");
    let from_a = packet::build(ip("10.0.0.1"), ip("10.0.0.2"), tcp(42000, 80, TCP_SYN));
    let r = dp.run(Program::FromWire, &from_a, LO, 0).unwrap();
    assert_eq!(r.verdict, TC_ACT_OK);
    assert_eq!(
        r.mark,
        c::MARK_POLICY_DONE,
        "from_wire marks what it already judged"
    );
    // to_pod trusts the mark and clears it.
    let r = dp
        .run(Program::ToPod, &from_a, LO, c::MARK_POLICY_DONE)
        .unwrap();
    assert_eq!((r.verdict, r.mark), (TC_ACT_OK, 0));
    // The world may not reach B; traffic for non-local addresses is not from_wire's business.
    assert_eq!(
        verdict(
            &dp,
            Program::FromWire,
            "192.0.2.1",
            "10.0.0.2",
            tcp(1, 80, TCP_SYN)
        ),
        TC_ACT_SHOT
    );
    assert_eq!(
        verdict(
            &dp,
            Program::FromWire,
            "192.0.2.1",
            "192.0.2.2",
            tcp(1, 80, TCP_SYN)
        ),
        TC_ACT_OK
    );
    // No pipec mark leaves on the wire.
    let r = dp
        .run(
            Program::ToWire,
            &from_a,
            LO,
            (15001 << 16) | c::MARK_TO_PROXY,
        )
        .unwrap();
    assert_eq!((r.verdict, r.mark), (TC_ACT_OK, 0));
}

/// The CPT hand-over: with remote pod prefixes in the `ipsec` map, `to_wire` marks a local
/// pod's packet to a remote pod with the peer's id; the host's own packets, packets to
/// addresses outside the map (a remote node, the world) and every packet once the map is
/// empty (IPsec off) leave unmarked.
#[test]
fn to_wire_hands_remote_pod_traffic_to_the_cpt() {
    let mut dp = loaded("ipsec");
    let mut a = fixture();
    // Node 2 (peer 2) holds 10.2.0.0/24 and fd00:2::/64; a pod outside its CIDR is a host entry.
    for (addr, len, peer) in [
        ("10.2.0.0", 24, 2),
        ("fd00:2::", 64, 2),
        ("10.9.9.9", 32, 3),
    ] {
        a.ipsec.insert(
            Prefix {
                addr: ip(addr),
                len,
            },
            peer,
        );
    }
    dp.write(&a).expect("write");
    let mark = |dp: &TestDatapath, src: &str, dst: &str, before: u32| {
        let pkt = packet::build(ip(src), ip(dst), tcp(40000, 80, TCP_SYN));
        let r = dp.run(Program::ToWire, &pkt, LO, before).expect("test run");
        assert_eq!(r.verdict, TC_ACT_OK, "to_wire never drops");
        r.mark
    };
    assert_eq!(
        mark(&dp, "10.0.0.1", "10.2.0.7", 0),
        c::MARK_ENCRYPT | (2 << 16)
    );
    assert_eq!(
        mark(&dp, "fd00::1", "fd00:2::7", 0),
        c::MARK_ENCRYPT | (2 << 16)
    );
    assert_eq!(
        mark(&dp, "10.0.0.2", "10.9.9.9", 0),
        c::MARK_ENCRYPT | (3 << 16)
    );
    // A stale proxy mark is replaced, not combined.
    assert_eq!(
        mark(
            &dp,
            "10.0.0.1",
            "10.2.0.7",
            (15001 << 16) | c::MARK_TO_PROXY
        ),
        c::MARK_ENCRYPT | (2 << 16)
    );
    // Not a local pod (the host), or not a remote pod: no hand-over.
    assert_eq!(mark(&dp, "192.168.50.1", "10.2.0.7", 0), 0);
    assert_eq!(mark(&dp, "10.0.0.1", "192.168.50.2", 0), 0);
    assert_eq!(mark(&dp, "10.0.0.1", "10.3.0.7", 0), 0);
    // IPsec off: the map is emptied and nothing is marked any more.
    a.ipsec.clear();
    dp.write(&a).expect("write");
    assert_eq!(mark(&dp, "10.0.0.1", "10.2.0.7", 0), 0);
}

/// The ipcache is split: host entries in the `ipcache_host` hash map, other prefixes in the
/// `ipcache` LPM trie. A /32 in the hash map wins over the /24 of the trie that covers it,
/// another address of the /24 gets the /24's identity, and deleting the host entry falls
/// back to the /24.
#[test]
fn host_entries_in_the_hash_map_win_over_covering_prefixes() {
    use pipec_ebpf::artifact::{ipcache_host_key, ipcache_key, MapName, MapOp};
    use pipec_ebpf::sys::bytes_of;
    let mut dp = TestDatapath::load("iphost");
    let mut a = fixture();
    // Every packet is judged as a new flow (no conntrack entry lets a later one through).
    a.config.flags = c::CONFIG_NO_CT_CREATE | c::CONFIG_NO_EVENTS;
    // B accepts TCP 80 from identity 5001 (the host) only, TCP 81 from 5002 (the /24) only.
    rule(
        &mut a,
        2,
        PolicyDirection::Ingress,
        5001,
        Some((TCP, Some(80))),
        Action::Allow,
        0x51,
    );
    rule(
        &mut a,
        2,
        PolicyDirection::Ingress,
        5002,
        Some((TCP, Some(81))),
        Action::Allow,
        0x52,
    );
    let host = Prefix {
        addr: ip("192.168.7.7"),
        len: 32,
    };
    let net = Prefix {
        addr: ip("192.168.7.0"),
        len: 24,
    };
    a.ipcache.insert(host, 5001);
    a.ipcache.insert(net, 5002);
    dp.write(&a).unwrap();
    let entries = dp.read_entries().unwrap();
    let host_key = bytes_of(&ipcache_host_key(host.addr)).to_vec();
    let net_key = bytes_of(&ipcache_key(&net)).to_vec();
    assert!(entries.contains_key(&(MapName::IpcacheHost, host_key.clone())));
    assert!(entries.contains_key(&(MapName::Ipcache, net_key)));
    let host_in_trie = (MapName::Ipcache, bytes_of(&ipcache_key(&host)).to_vec());
    assert!(!entries.contains_key(&host_in_trie));
    // A new TCP connection from the wire to B (10.0.0.2) on `dport`; `run6` to B's IPv6
    // address.
    let to = |dp: &TestDatapath, src: &str, dst: &str, dport: u16| {
        verdict(dp, Program::FromWire, src, dst, tcp(40000, dport, TCP_SYN))
    };
    let run = |dp: &TestDatapath, src: &str, dport: u16| to(dp, src, "10.0.0.2", dport);
    let run6 = |dp: &TestDatapath, src: &str, dport: u16| to(dp, src, "fd00::2", dport);
    // The host: identity 5001 (allowed on 80, not on 81).
    assert_eq!(run(&dp, "192.168.7.7", 80), TC_ACT_OK);
    assert_eq!(run(&dp, "192.168.7.7", 81), TC_ACT_SHOT);
    // Another address of the /24: identity 5002.
    assert_eq!(run(&dp, "192.168.7.8", 80), TC_ACT_SHOT);
    assert_eq!(run(&dp, "192.168.7.8", 81), TC_ACT_OK);
    // Deleting the host entry (one delete, from the hash map) falls back to the /24.
    let mut b = a.clone();
    b.ipcache.remove(&host);
    let ops = b.diff(&a);
    assert_eq!(
        ops,
        vec![MapOp::Delete {
            map: MapName::IpcacheHost,
            key: host_key.clone()
        }]
    );
    dp.apply(&ops).unwrap();
    assert_eq!(run(&dp, "192.168.7.7", 80), TC_ACT_SHOT);
    assert_eq!(run(&dp, "192.168.7.7", 81), TC_ACT_OK);
    assert_eq!(dp.read_entries().unwrap(), b.entries());

    // The same for IPv6: a /128 in the hash map inside a /64 of the trie.
    let host6 = Prefix {
        addr: ip("fd00:7::7"),
        len: 128,
    };
    let mut c6 = b.clone();
    c6.ipcache.insert(host6, 5001);
    c6.ipcache.insert(
        Prefix {
            addr: ip("fd00:7::"),
            len: 64,
        },
        5002,
    );
    dp.write(&c6).unwrap();
    assert_eq!(run6(&dp, "fd00:7::7", 80), TC_ACT_OK);
    assert_eq!(run6(&dp, "fd00:7::7", 81), TC_ACT_SHOT);
    assert_eq!(run6(&dp, "fd00:7::8", 80), TC_ACT_SHOT);
    assert_eq!(run6(&dp, "fd00:7::8", 81), TC_ACT_OK);
    let mut d6 = c6.clone();
    d6.ipcache.remove(&host6);
    dp.write(&d6).unwrap();
    assert_eq!(run6(&dp, "fd00:7::7", 80), TC_ACT_SHOT);
    assert_eq!(run6(&dp, "fd00:7::7", 81), TC_ACT_OK);

    // An in-place upgrade: maps pinned before the split hold host entries in the trie.
    // `write` diffs against what the maps hold, so it moves the /32 into the hash map
    // (upserts before deletes: no moment without it) and removes it from the trie, where
    // it would otherwise outlive the pod's removal.
    let value = a.entries()[&(MapName::IpcacheHost, host_key.clone())].clone();
    dp.write(&b).unwrap();
    dp.apply(&[MapOp::Upsert {
        map: MapName::Ipcache,
        key: host_in_trie.1.clone(),
        value,
    }])
    .unwrap();
    assert_eq!(run(&dp, "192.168.7.7", 80), TC_ACT_OK);
    let stats = dp.write(&a).unwrap();
    assert_eq!((stats.upserts, stats.deletes), (1, 1));
    assert_eq!(dp.read_entries().unwrap(), a.entries());
    assert_eq!(run(&dp, "192.168.7.7", 80), TC_ACT_OK);
    dp.write(&b).unwrap();
    assert_eq!(run(&dp, "192.168.7.7", 80), TC_ACT_SHOT);
    assert_eq!(run(&dp, "192.168.7.7", 81), TC_ACT_OK);
}
