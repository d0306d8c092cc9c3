//! End to end from the MAG: a cluster's pods as network namespaces joined by veth pairs to
//! a node namespace, the maps compiled by `mag_to_ebpf` (endpoints bound to the node side
//! of each pod's veth), the programs attached, and real TCP and UDP connections for each
//! probe: allowed ones connect and carry data both ways, denied ones do not; a ClusterIP
//! reaches a backend (DNAT) and the reply comes from the VIP (reverse NAT).
//!
//! Cases: examples/starwars and six shared conformance cases.

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use pipec::conformance::{build_cluster, parse_probe, Case};
use pipec::lower;
use pipec::mag;
use pipec::model::{Cluster, PodId, Protocol};
use pipec::semantics::{self, Context, Destination, Peer, Probe};
use pipec_ebpf::{mag_to_ebpf, Attachment, Program};
use pipec_netns::{enter_netns, in_netns, PodNet};

use crate::common::TestDatapath;

/// A node namespace and one namespace per pod with an IPv4 address, deleted on drop.
struct Topology {
    net: PodNet,
    /// Per pod: its namespace and the node side of its veth.
    pods: BTreeMap<PodId, (String, String)>,
}

impl Topology {
    /// Namespaces for every pod with an IPv4 address.
    fn new(cluster: &Cluster) -> Topology {
        let tag = pipec_netns::unique_tag();
        let mut net = PodNet::new(&format!("pm-n-{tag}"));
        let mut pods = BTreeMap::new();
        for (i, p) in cluster.pod_ids().enumerate() {
            let Some(addr) = cluster.pod(p).ips.iter().find(|a| a.is_ipv4()) else {
                continue;
            };
            let (ns, host_if) = (format!("pm-{i}-{tag}"), format!("veth{i}"));
            net.add_pod(&ns, &host_if, &addr.to_string());
            pods.insert(p, (ns, host_if));
        }
        Topology { net, pods }
    }

    /// The node's namespace.
    fn node(&self) -> &str {
        &self.net.node
    }

    fn ifindex(&self, iface: &str) -> u32 {
        self.net.ifindex(iface)
    }
}

/// Programs attached to every pod's veth, detached inside the node namespace on drop.
struct Attached {
    node: String,
    links: Vec<Attachment>,
}

impl Drop for Attached {
    fn drop(&mut self) {
        let links = std::mem::take(&mut self.links);
        in_netns(&self.node.clone(), move || {
            links.into_iter().for_each(Attachment::detach)
        });
    }
}

/// Whether the pod has a server on the port (the case lists what it listens on; a pod
/// that lists nothing listens everywhere).
fn listens(cluster: &Cluster, p: PodId, port: u16, proto: Protocol) -> bool {
    let pod = cluster.pod(p);
    (pod.ports.is_empty() && pod.extra_ports.is_empty())
        || pod
            .ports
            .iter()
            .any(|x| x.port == port && x.protocol == proto)
        || pod.extra_ports.contains(&(port, proto))
}

/// Serves one TCP connection or UDP datagram until `deadline`: answers "pong <peer>".
fn serve(ns: String, port: u16, proto: Protocol, ready: std::sync::mpsc::Sender<()>) {
    enter_netns(&ns);
    let deadline = Instant::now() + Duration::from_millis(1500);
    match proto {
        Protocol::Tcp => {
            let l = TcpListener::bind(("0.0.0.0", port)).unwrap();
            l.set_nonblocking(true).unwrap();
            ready.send(()).unwrap();
            while Instant::now() < deadline {
                match l.accept() {
                    Ok((mut s, peer)) => {
                        s.set_nonblocking(false).unwrap();
                        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                        let mut buf = [0u8; 4];
                        if s.read_exact(&mut buf).is_ok() {
                            let _ = s.write_all(format!("pong {}", peer.ip()).as_bytes());
                        }
                        return;
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5))
                    }
                    Err(e) => panic!("accept: {e}"),
                }
            }
        }
        _ => {
            let s = UdpSocket::bind(("0.0.0.0", port)).unwrap();
            s.set_read_timeout(Some(Duration::from_millis(1500)))
                .unwrap();
            ready.send(()).unwrap();
            let mut buf = [0u8; 64];
            if let Ok((_, peer)) = s.recv_from(&mut buf) {
                let _ = s.send_to(format!("pong {}", peer.ip()).as_bytes(), peer);
            }
        }
    }
}

/// Connects from `ns` to `dst`; returns the answer and where it came from.
fn client(ns: &str, dst: SocketAddr, proto: Protocol) -> std::io::Result<(String, SocketAddr)> {
    in_netns(ns, || match proto {
        Protocol::Tcp => {
            let mut s = TcpStream::connect_timeout(&dst, Duration::from_millis(600))?;
            s.set_read_timeout(Some(Duration::from_secs(2)))?;
            s.write_all(b"ping")?;
            let mut out = String::new();
            s.read_to_string(&mut out)?;
            Ok((out, s.peer_addr()?))
        }
        _ => {
            let c = UdpSocket::bind("0.0.0.0:0")?;
            c.set_read_timeout(Some(Duration::from_millis(700)))?;
            c.send_to(b"ping", dst)?;
            let mut buf = [0u8; 64];
            let (n, from) = c.recv_from(&mut buf)?;
            Ok((String::from_utf8_lossy(&buf[..n]).into_owned(), from))
        }
    })
}

/// Runs every TCP/UDP probe between pods (or to a service) with real sockets; returns
/// how many ran. `expect` gives the expected verdict of a probe.
fn run(cluster: &Cluster, probes: &[(Probe, bool)]) -> usize {
    crate::common::require_root();
    let topo = Topology::new(cluster);
    let lowered = lower::cluster_to_mag(cluster, None);
    let info = mag::validate(lowered.mag()).unwrap();
    let mut art = mag_to_ebpf(lowered.mag(), &info).unwrap();
    // Endpoint ids of the pods, to bind each to its veth.
    let mut by_ep = BTreeMap::new();
    for (p, (_, iface)) in &topo.pods {
        let addr = cluster
            .pod(*p)
            .ips
            .iter()
            .find(|a| a.is_ipv4())
            .copied()
            .unwrap();
        if let Some(e) = art.endpoints.get(&addr) {
            by_ep.insert(e.id, topo.ifindex(iface));
        }
    }
    art.bind_interfaces(|id| by_ep.get(&id).copied());
    let mut dp = TestDatapath::load("e2e-mag");
    dp.write(&art).expect("write maps");
    let node = topo.node().to_string();
    let ifaces: Vec<String> = topo.pods.values().map(|(_, i)| i.clone()).collect();
    let links = in_netns(&node, || {
        let mut links = Vec::new();
        for iface in &ifaces {
            for prog in [Program::FromPod, Program::ToPod] {
                links.push(dp.attach(prog, iface).expect("attach"));
            }
        }
        links
    });
    let _attached = Attached { node, links };
    let ctx = Context::new(cluster);
    let mut ran = 0;
    for (probe, expect) in probes {
        let (Peer::Pod(src), Some(port)) = (probe.from, probe.port) else {
            continue;
        };
        if !matches!(probe.protocol, Protocol::Tcp | Protocol::Udp) {
            continue;
        }
        let Some((src_ns, _)) = topo.pods.get(&src) else {
            continue;
        };
        // Where the connection goes, and the pods that may serve it.
        let outcome = semantics::evaluate(&ctx, probe);
        let (dst, servers): (SocketAddr, Vec<(PodId, u16)>) = match probe.to {
            Destination::Pod(p) => {
                let a = cluster
                    .pod(p)
                    .ips
                    .iter()
                    .find(|a| a.is_ipv4())
                    .copied()
                    .unwrap();
                (SocketAddr::new(a, port), vec![(p, port)])
            }
            Destination::Service { service, port } => {
                let vip = cluster.service(service).cluster_ips[0];
                let res = outcome.service.as_ref().expect("a service resolution");
                let servers = res
                    .candidates
                    .iter()
                    .filter_map(|c| Some((c.pod?, c.port)))
                    .collect();
                (SocketAddr::new(vip, port), servers)
            }
            Destination::Ip(_) => continue,
        };
        let mut threads = Vec::new();
        for (p, sport) in servers {
            if !listens(cluster, p, sport, probe.protocol) {
                continue;
            }
            let (ns, _) = topo.pods[&p].clone();
            let (tx, rx) = std::sync::mpsc::channel();
            let proto = probe.protocol;
            threads.push(std::thread::spawn(move || serve(ns, sport, proto, tx)));
            rx.recv().unwrap();
        }
        let got = client(src_ns, dst, probe.protocol);
        for t in threads {
            t.join().unwrap();
        }
        let src_ip = cluster
            .pod(src)
            .ips
            .iter()
            .find(|a| a.is_ipv4())
            .copied()
            .unwrap();
        match (&got, expect) {
            (Ok((answer, from)), true) => {
                assert_eq!(
                    answer,
                    &format!("pong {src_ip}"),
                    "{probe:?}: data both ways, no SNAT"
                );
                assert_eq!(
                    *from, dst,
                    "{probe:?}: the reply comes from where the client sent (reverse NAT)"
                );
            }
            (Err(_), false) => {}
            _ => panic!(
                "{probe:?}: expected {}, got {got:?}",
                if *expect { "allow" } else { "deny" }
            ),
        }
        ran += 1;
    }
    ran
}

#[test]
fn starwars_tiefighter_lands_and_xwing_does_not() {
    let cluster = crate::codegen::starwars();
    let svc = cluster.find_service("default", "deathstar").unwrap();
    let probe = |who: &str| Probe {
        from: Peer::Pod(cluster.find_pod("default", who).unwrap()),
        to: Destination::Service {
            service: svc,
            port: 80,
        },
        protocol: Protocol::Tcp,
        port: Some(80),
    };
    let n = run(
        &cluster,
        &[(probe("tiefighter"), true), (probe("xwing"), false)],
    );
    assert_eq!(n, 2);
}

fn case(name: &str) {
    let dir = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/conformance"
    ));
    let file = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("the shared conformance suite at {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .is_some_and(|f| f.to_string_lossy().starts_with(&format!("{name}-")))
        })
        .unwrap_or_else(|| panic!("no case {name}"));
    let text = std::fs::read_to_string(&file).unwrap();
    let case: Case = serde_yaml::from_str(&text).unwrap();
    let built = build_cluster(&file.display().to_string(), &case)
        .unwrap_or_else(|e| panic!("{name}: {e:?}"));
    let probes: Vec<(Probe, bool)> = case
        .probes
        .iter()
        .map(|p| (parse_probe(&built.cluster, p).unwrap(), p.expect == "allow"))
        .collect();
    let n = run(&built.cluster, &probes);
    assert!(n > 0, "{name}: no probe ran");
}

#[test]
fn e2e_01_default_deny_ingress() {
    case("e2e-01");
}

#[test]
fn e2e_03_allow_from_podselector_same_ns() {
    case("e2e-03");
}

#[test]
fn e2e_11a_ports_single_policy() {
    case("e2e-11a");
}

#[test]
fn e2e_12_ingress_named_port() {
    case("e2e-12");
}

#[test]
fn e2e_28_udp_ports_from_namespace() {
    case("e2e-28");
}

#[test]
fn anp_01_ingress_tcp_rule_order() {
    case("anp-01");
}
