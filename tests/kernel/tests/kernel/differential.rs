//! Differential: random clusters (pipec's `testgen` generator) and every probe between
//! their pods and services, and from clients outside the cluster to the pods, the cluster
//! IPs and the node ports, judged three ways: the eBPF datapath (real packets through the
//! loaded programs), the MAG interpreter, and the reference semantics. The verdicts must
//! agree, and a service connection must reach one of the reference's candidates. Where the
//! reference's verdict depends on which backend a service connection reaches, the eBPF
//! datapath and the MAG may pick different backends (each hashes the 5-tuple its own way);
//! each is then judged by the reference's verdict for its own backend.

use pipec::engine::mag::{Conn, From, Prober as MagEngine, To};
use pipec::mag::interp::Verdict as MagVerdict;
use pipec::model::{Cluster, Protocol};
use pipec::semantics::{self, Context, Destination, Peer, Probe};
use pipec::testgen;
use pipec_ebpf::engine::EbpfEvaluator;
use proptest::prelude::*;
use std::net::IpAddr;

/// Every probe of a cluster: pod to pod on the generated ports, pod to service.
fn probes(c: &Cluster) -> Vec<Probe> {
    let mut out = Vec::new();
    let pods: Vec<_> = c.pod_ids().collect();
    for &a in &pods {
        for &b in &pods {
            for (protocol, port) in [
                (Protocol::Tcp, Some(80)),
                (Protocol::Tcp, Some(8080)),
                (Protocol::Tcp, Some(8050)),
                (Protocol::Udp, Some(53)),
                (Protocol::Icmp, None),
            ] {
                out.push(Probe {
                    from: Peer::Pod(a),
                    to: Destination::Pod(b),
                    protocol,
                    port,
                });
            }
        }
        for s in 0..c.services.len() {
            out.push(Probe {
                from: Peer::Pod(a),
                to: Destination::Service {
                    service: pipec::model::ServiceId(s as u32),
                    port: 80,
                },
                protocol: Protocol::Tcp,
                port: Some(80),
            });
        }
        // An address outside the cluster.
        out.push(Probe {
            from: Peer::Pod(a),
            to: Destination::Ip("192.0.2.7".parse().unwrap()),
            protocol: Protocol::Tcp,
            port: Some(443),
        });
    }
    out.extend(wire_probes(c));
    out
}

/// Clients outside the cluster, as the generator's ipBlock rules see them: one in
/// 192.168.0.0/16 (and in 0.0.0.0/0 less 10.0.0.0/8), one in the `world` peers'
/// 203.0.113.0/24, one in the excepted 10.0.0.0/8.
const WIRE_CLIENTS: [&str; 3] = ["192.168.1.7", "203.0.113.5", "10.1.2.3"];

/// Probes from the wire: each outside client to every pod, to every service's cluster IP,
/// and to the node port of every NodePort service on the node's address. They run through
/// `from_wire`, which balances services and checks the ingress policy of the backend with
/// the client's own address.
fn wire_probes(c: &Cluster) -> Vec<Probe> {
    let mut out = Vec::new();
    let tcp = |from: &str, to: Destination, port: u16| Probe {
        from: Peer::External(from.parse().unwrap()),
        to,
        protocol: Protocol::Tcp,
        port: Some(port),
    };
    for client in WIRE_CLIENTS {
        for p in c.pod_ids() {
            out.push(tcp(client, Destination::Pod(p), 80));
        }
        for (i, svc) in c.services.iter().enumerate() {
            let service = pipec::model::ServiceId(i as u32);
            out.push(tcp(client, Destination::Service { service, port: 80 }, 80));
            let node_ports = svc.ports.iter().filter_map(|sp| sp.node_port);
            let node_addrs = c.nodes.iter().flat_map(|n| n.addresses.iter().copied());
            for (addr, port) in node_addrs.flat_map(|a| node_ports.clone().map(move |p| (a, p))) {
                out.push(tcp(client, Destination::Ip(addr), port));
            }
        }
    }
    out
}

fn conn(p: &Probe) -> Conn {
    Conn {
        from: match p.from {
            Peer::Pod(x) => From::Pod(x),
            Peer::External(ip) => From::External(ip),
        },
        to: match p.to {
            Destination::Pod(x) => To::Pod(x),
            Destination::Ip(ip) => To::Ip(ip),
            Destination::Service { service, port } => To::Service(service, port),
        },
        protocol: p.protocol,
        port: p.port,
    }
}

/// Checks one cluster; returns the number of probes compared.
fn check(c: &Cluster) -> Result<usize, TestCaseError> {
    let ctx = Context::new(c);
    let ebpf = EbpfEvaluator::new(c, false).map_err(TestCaseError::fail)?;
    let mut n = 0;
    for p in probes(c) {
        let reference = semantics::evaluate(&ctx, &p);
        // A fresh MAG engine per probe: its conntrack would otherwise let a probe pass as
        // the reply of an earlier one (ICMP tuples have no ports), as the eBPF engine's
        // flushed conntrack does not.
        let m = MagEngine::new(c)
            .connect(&conn(&p))
            .map_err(TestCaseError::fail)?;
        let e = ebpf.run_probe(&p);
        let mag_allowed = m.verdict != MagVerdict::Deny;
        if let Some(r) = reference.allowed() {
            prop_assert_eq!(
                mag_allowed,
                r,
                "{:?}: MAG {:?}, reference {}",
                p,
                m.verdict,
                reference.reason
            );
            prop_assert_eq!(
                e.allowed,
                Some(mag_allowed),
                "{:?}: ebpf {:?} ({}), MAG {:?}\n{}",
                p,
                e.allowed,
                e.reason,
                m.verdict,
                ebpf.artifact()
            );
        } else {
            // The verdict depends on the backend, and the datapath hashes the 5-tuple with
            // its own hash, so it may pick another candidate than the MAG interpreter:
            // each engine is judged by the reference's verdict for the backend it chose.
            // A denied connection reports no backend; then some candidate must be denied.
            let verdict_for = |to: Option<(IpAddr, u16)>| {
                to.and_then(|(ip, port)| {
                    reference
                        .paths
                        .iter()
                        .find(|x| x.dst_ip == ip && x.dst_port == Some(port))
                        .map(|x| x.verdict.is_allowed())
                })
            };
            let some_denied = reference.paths.iter().any(|x| !x.verdict.is_allowed());
            if let Some(r) = verdict_for(m.dnat) {
                prop_assert_eq!(
                    mag_allowed,
                    r,
                    "{:?}: MAG {:?} via {:?}",
                    p,
                    m.verdict,
                    m.dnat
                );
            }
            match (e.allowed, verdict_for(e.delivered)) {
                (Some(true), Some(r)) => prop_assert!(
                    r,
                    "{:?}: ebpf allowed to {:?}, which the reference denies\n{}",
                    p,
                    e.delivered,
                    ebpf.artifact()
                ),
                (Some(false), _) => prop_assert!(
                    some_denied,
                    "{:?}: ebpf denied, but the reference allows every candidate",
                    p
                ),
                (got, _) => prop_assert!(
                    false,
                    "{:?}: ebpf {:?} ({}) for a backend-dependent verdict\n{}",
                    p,
                    got,
                    e.reason,
                    ebpf.artifact()
                ),
            }
        }
        if let (Some(res), Some((ip, port))) = (&reference.service, e.delivered) {
            prop_assert!(
                res.candidates.iter().any(|c| c.ip == ip && c.port == port),
                "{:?}: eBPF delivered to {}:{}, not a candidate of {:?}",
                p,
                ip,
                port,
                res.candidates
            );
        }
        n += 1;
    }
    Ok(n)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn ebpf_equals_mag_equals_reference(s in testgen::spec(6)) {
        crate::common::require_root();
        let c = testgen::load(&s);
        check(&c)?;
    }
}

#[test]
fn starwars_differential() {
    crate::common::require_root();
    let c = crate::codegen::starwars();
    let n = check(&c).unwrap();
    assert!(n > 10);
}
