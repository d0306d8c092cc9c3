//! Service traffic policies (`examples/traffic-policy`): a NodePort service with
//! `externalTrafficPolicy: Local` and `internalTrafficPolicy: Local`, endpoints on nodes n1
//! and n2, none on n3. The reference and the MAG must agree on every connection, and the
//! MAG must only ever choose a backend the reference lists.

use pipec::engine::mag::{conn_of_probe, Outcome, Prober};
use pipec::mag::interp::Verdict as MagVerdict;
use pipec::model::Cluster;
use pipec::semantics::{evaluate, Context, Outcome as Reference};
use pipec::trace::parse_probe;
use std::collections::BTreeSet;
use std::net::IpAddr;

fn cluster() -> Cluster {
    let dir =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/traffic-policy");
    let loaded = pipec::driver::load(&[dir], &Default::default());
    assert!(!loaded.has_errors(), "{:?}", loaded.diags);
    loaded.cluster
}

/// The reference's outcome and the MAG's outcomes of `connections` connections (each from
/// its own source port, so Maglev spreads them).
fn run(
    c: &Cluster,
    from: &str,
    to: &str,
    port: &str,
    connections: usize,
) -> (Reference, Vec<Outcome>) {
    let probe = parse_probe(c, from, to, port).expect("valid probe");
    let reference = evaluate(&Context::new(c), &probe);
    let mut engine = Prober::new(c);
    let conn = conn_of_probe(c, &probe);
    let mag = (0..connections)
        .map(|_| engine.connect(&conn).expect("the MAG runs"))
        .collect();
    (reference, mag)
}

fn candidates(r: &Reference) -> BTreeSet<(IpAddr, u16)> {
    r.service
        .iter()
        .flat_map(|s| s.candidates.iter().map(|c| (c.ip, c.port)))
        .collect()
}

fn chosen(mag: &[Outcome]) -> BTreeSet<(IpAddr, u16)> {
    mag.iter().filter_map(|o| o.dnat).collect()
}

fn web(n: u8) -> (IpAddr, u16) {
    (format!("10.244.{n}.5").parse().unwrap(), 8080)
}

/// Asserts that the connections are dropped by both, the MAG at its service table.
fn assert_dropped(reference: &Reference, mag: &[Outcome], node: &str) {
    assert_eq!(reference.allowed(), Some(false), "{}", reference.reason);
    assert!(
        reference
            .reason
            .contains(&format!("no ready endpoints on node {node}")),
        "{}",
        reference.reason
    );
    for o in mag {
        assert_eq!(o.verdict, MagVerdict::Deny);
        let (n, t) = o.traces.last().expect("the MAG ran");
        assert_eq!(n, node);
        // The service row of the node-local table drops it, and says why.
        let last = t.hits.last().expect("a table dropped it");
        let why: Vec<String> = last.provenance.iter().map(|p| p.to_string()).collect();
        assert!(
            why.iter()
                .any(|w| w.ends_with(&format!("Local: only endpoints on node {node}"))),
            "{why:?}"
        );
    }
}

/// Asserts that both allow, and that the MAG chose exactly the local endpoints.
fn assert_local(reference: &Reference, mag: &[Outcome], local: &[(IpAddr, u16)]) {
    let local: BTreeSet<_> = local.iter().copied().collect();
    assert_eq!(reference.allowed(), Some(true), "{}", reference.reason);
    assert_eq!(candidates(reference), local);
    assert!(mag.iter().all(|o| o.verdict == MagVerdict::Allow));
    assert_eq!(chosen(mag), local);
}

#[test]
fn node_port_without_a_local_endpoint_drops() {
    let c = cluster();
    let (reference, mag) = run(&c, "ip:192.0.2.1", "ip:172.18.0.3", "30080/TCP", 8);
    assert_dropped(&reference, &mag, "n3");
}

#[test]
fn node_port_with_local_endpoints_reaches_only_them() {
    let c = cluster();
    for (node, ip, n) in [("n1", "ip:172.18.0.1", 1), ("n2", "ip:172.18.0.2", 2)] {
        let (reference, mag) = run(&c, "ip:192.0.2.1", ip, "30080/TCP", 32);
        assert_local(&reference, &mag, &[web(n)]);
        assert!(mag.iter().all(|o| o.traces[0].0 == node));
    }
}

#[test]
fn cluster_ip_from_a_pod_reaches_its_nodes_endpoints_only() {
    let c = cluster();
    let (reference, mag) = run(&c, "default/client-n1", "svc:default/web", "80/TCP", 32);
    assert_local(&reference, &mag, &[web(1)]);
    let (reference, mag) = run(&c, "default/client-n3", "svc:default/web", "80/TCP", 8);
    assert_dropped(&reference, &mag, "n3");
}

#[test]
fn cluster_ip_from_outside_keeps_every_endpoint() {
    // The reference does not know which node an outside client reaches a cluster IP on,
    // so internalTrafficPolicy filters nothing; the MAG's wire rows keep the cluster-wide
    // table.
    let c = cluster();
    let (reference, mag) = run(&c, "ip:192.0.2.1", "svc:default/web", "80/TCP", 32);
    assert_local(&reference, &mag, &[web(1), web(2)]);
}
