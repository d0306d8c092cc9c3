//! End to end: pods as network namespaces joined by veth pairs to a node namespace, the
//! programs attached to the node side of each veth, and real TCP and UDP traffic from
//! `std::net` sockets in threads that entered a pod's namespace with `setns`.
//!
//! Every test builds its own namespaces (named after the process and a counter) and a
//! guard deletes them when the test ends, pass or fail.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::Duration;

use pipec_ebpf::artifact::{
    Action, Backend, Endpoint, Frontend, PolicyDecision, PolicyDirection, PolicyMatch, Prefix,
    Service,
};
use pipec_ebpf::{maglev, Attachment, EbpfArtifact, Program};
use pipec_netns::{enter_netns, in_netns, PodNet};

use crate::common::TestDatapath;

const POD_A: &str = "10.200.0.1";
const POD_B: &str = "10.200.0.2";
const VIP: &str = "10.96.0.10";

/// Three namespaces: a node and two pods, each pod behind a veth pair (`veth0`, `veth1`
/// on the node's side); deleted on drop.
struct Topology {
    net: PodNet,
}

impl Topology {
    fn new() -> Self {
        let tag = pipec_netns::unique_tag();
        let mut net = PodNet::new(&format!("pn-node-{tag}"));
        let pods = [format!("pn-a-{tag}"), format!("pn-b-{tag}")];
        for (i, (pod, addr)) in pods.iter().zip([POD_A, POD_B]).enumerate() {
            net.add_pod(pod, &format!("veth{i}"), addr);
        }
        Topology { net }
    }

    /// The node's namespace.
    fn node(&self) -> &str {
        &self.net.node
    }

    /// Pod `i`'s namespace.
    fn pod(&self, i: usize) -> &str {
        &self.net.pods[i].ns
    }

    /// The ifindex of the node side of pod `i`'s veth.
    fn host_ifindex(&self, i: usize) -> u32 {
        self.net.ifindex(&format!("veth{i}"))
    }
}

/// The programs attached to both veths, detached (inside the node namespace) on drop.
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

fn addr(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A may open TCP and UDP to anything; B accepts TCP 8080 and UDP 5353 from A and denies
/// TCP 9090 and UDP 5354; B opens nothing. Services: VIP:80/TCP → B:8080,
/// VIP:53/UDP → B:5353.
fn artifact(topo: &Topology) -> EbpfArtifact {
    let mut a = EbpfArtifact::default();
    a.endpoints.insert(
        addr(POD_A),
        Endpoint {
            id: 1,
            ifindex: topo.host_ifindex(0),
            identity: 1001,
        },
    );
    a.endpoints.insert(
        addr(POD_B),
        Endpoint {
            id: 2,
            ifindex: topo.host_ifindex(1),
            identity: 1002,
        },
    );
    a.ipcache.insert(
        Prefix {
            addr: addr(POD_A),
            len: 32,
        },
        1001,
    );
    a.ipcache.insert(
        Prefix {
            addr: addr(POD_B),
            len: 32,
        },
        1002,
    );
    let mut rule = |endpoint, direction, identity, protocol, port: Option<u16>, action, cookie| {
        let m = PolicyMatch {
            endpoint,
            direction,
            identity,
            protocol: Some(protocol),
            port: port.map(|p| (p, 16)),
        };
        a.policy.insert(m, PolicyDecision { action, cookie });
    };
    rule(1, PolicyDirection::Egress, 0, 6, None, Action::Allow, 1);
    rule(1, PolicyDirection::Egress, 0, 17, None, Action::Allow, 2);
    rule(
        2,
        PolicyDirection::Ingress,
        1001,
        6,
        Some(8080),
        Action::Allow,
        3,
    );
    rule(
        2,
        PolicyDirection::Ingress,
        1001,
        17,
        Some(5353),
        Action::Allow,
        4,
    );
    rule(
        2,
        PolicyDirection::Ingress,
        0,
        6,
        Some(9090),
        Action::Deny,
        5,
    );
    a.backends.insert(
        1,
        Backend {
            addr: addr(POD_B),
            port: 8080,
        },
    );
    a.backends.insert(
        2,
        Backend {
            addr: addr(POD_B),
            port: 5353,
        },
    );
    a.services.insert(
        Frontend {
            addr: addr(VIP),
            protocol: 6,
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
            addr: addr(VIP),
            protocol: 17,
            port: 53,
        },
        Service {
            id: 2,
            affinity_timeout: None,
            maglev: maglev::table(&[2], 251),
        },
    );
    a
}

fn setup(dp: &mut TestDatapath, topo: &Topology) -> Attached {
    dp.write(&artifact(topo)).expect("write maps");
    let node = topo.node().to_string();
    let links = in_netns(&node, || {
        let mut links = Vec::new();
        for iface in ["veth0", "veth1"] {
            for prog in [Program::FromPod, Program::ToPod] {
                links.push(
                    dp.attach(prog, iface)
                        .unwrap_or_else(|e| panic!("attach {prog:?} to {iface}: {e}")),
                );
            }
        }
        links
    });
    Attached { node, links }
}

/// Serves one TCP connection in pod B: answers with the peer address it saw.
fn tcp_server(topo: &Topology, port: u16) -> std::sync::mpsc::Receiver<()> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let ns = topo.pod(1).to_string();
    std::thread::spawn(move || {
        enter_netns(&ns);
        let l = TcpListener::bind(("0.0.0.0", port)).unwrap();
        ready_tx.send(()).unwrap();
        if let Ok((mut s, peer)) = l.accept() {
            let mut buf = [0u8; 4];
            let _ = s.set_read_timeout(Some(Duration::from_secs(3)));
            if s.read_exact(&mut buf).is_ok() {
                let _ = s.write_all(format!("pong {}", peer.ip()).as_bytes());
            }
        }
    });
    ready_rx
}

/// Connects from pod A, sends "ping" and returns the answer and the peer address A saw.
fn tcp_client(topo: &Topology, to: &str, port: u16) -> std::io::Result<(String, SocketAddr)> {
    in_netns(topo.pod(0), || {
        let dst = SocketAddr::new(addr(to), port);
        let mut s = TcpStream::connect_timeout(&dst, Duration::from_millis(1500))?;
        s.set_read_timeout(Some(Duration::from_secs(3)))?;
        s.write_all(b"ping")?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok((out, s.peer_addr()?))
    })
}

#[test]
fn tcp_allowed_connects_and_denied_does_not() {
    crate::common::require_root();
    let topo = Topology::new();
    let mut dp = TestDatapath::load("e2e-tcp");
    let _attached = setup(&mut dp, &topo);

    tcp_server(&topo, 8080).recv().unwrap();
    let (answer, _) = tcp_client(&topo, POD_B, 8080).expect("the allowed connection works");
    assert_eq!(answer, format!("pong {POD_A}"), "data both ways, no SNAT");

    tcp_server(&topo, 9090).recv().unwrap();
    let denied = tcp_client(&topo, POD_B, 9090);
    assert!(denied.is_err(), "policy denies TCP 9090: {denied:?}");
    // B may not open connections, not even to A's listening port.
    let c = dp.counters().unwrap();
    assert!(
        c.get(&3).is_some_and(|v| v.packets >= 3),
        "the allow rule counted the flow: {c:?}"
    );
    assert!(
        c.get(&5).is_some_and(|v| v.packets >= 1),
        "the deny rule counted the SYN: {c:?}"
    );
}

#[test]
fn udp_allowed_passes_and_denied_does_not() {
    crate::common::require_root();
    let topo = Topology::new();
    let mut dp = TestDatapath::load("e2e-udp");
    let _attached = setup(&mut dp, &topo);

    // Allowed: a request and its reply (the reply is allowed by conntrack only).
    let (tx, rx) = std::sync::mpsc::channel();
    let ns_b = topo.pod(1).to_string();
    let server = std::thread::spawn(move || {
        in_netns(&ns_b, || {
            let s = UdpSocket::bind("0.0.0.0:5353").unwrap();
            let denied = UdpSocket::bind("0.0.0.0:5354").unwrap();
            s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
            denied
                .set_read_timeout(Some(Duration::from_millis(800)))
                .unwrap();
            tx.send(()).unwrap();
            let mut buf = [0u8; 64];
            let (n, peer) = s.recv_from(&mut buf).expect("the allowed datagram arrives");
            s.send_to(&buf[..n], peer).unwrap();
            denied.recv_from(&mut buf).is_ok()
        })
    });
    rx.recv().unwrap();
    let (reply, from) = in_netns(topo.pod(0), || {
        let c = UdpSocket::bind("0.0.0.0:0").unwrap();
        c.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        c.send_to(b"hello", (POD_B, 5353)).unwrap();
        c.send_to(b"blocked", (POD_B, 5354)).unwrap();
        let mut buf = [0u8; 64];
        let (n, from) = c.recv_from(&mut buf).expect("the reply arrives");
        (buf[..n].to_vec(), from)
    });
    assert_eq!(reply, b"hello");
    assert_eq!(from, SocketAddr::new(addr(POD_B), 5353));
    assert!(
        !server.join().unwrap(),
        "the denied datagram must not arrive"
    );
}

#[test]
fn cluster_ip_reaches_a_backend_and_replies_come_from_the_vip() {
    crate::common::require_root();
    let topo = Topology::new();
    let mut dp = TestDatapath::load("e2e-svc");
    let _attached = setup(&mut dp, &topo);

    // TCP: the handshake only completes if the SYN-ACK comes back from VIP:80.
    tcp_server(&topo, 8080).recv().unwrap();
    let (answer, peer) = tcp_client(&topo, VIP, 80).expect("the ClusterIP connection works");
    assert_eq!(
        answer,
        format!("pong {POD_A}"),
        "the backend sees the client's address"
    );
    assert_eq!(peer, SocketAddr::new(addr(VIP), 80));

    // UDP: the reply's source is the VIP, as the client's socket reports it.
    let (tx, rx) = std::sync::mpsc::channel();
    let ns_b = topo.pod(1).to_string();
    let server = std::thread::spawn(move || {
        in_netns(&ns_b, || {
            let s = UdpSocket::bind("0.0.0.0:5353").unwrap();
            s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
            tx.send(()).unwrap();
            let mut buf = [0u8; 64];
            let (n, peer) = s
                .recv_from(&mut buf)
                .expect("the datagram reaches the backend");
            s.send_to(&buf[..n], peer).unwrap();
        })
    });
    rx.recv().unwrap();
    let from = in_netns(topo.pod(0), || {
        let c = UdpSocket::bind("0.0.0.0:0").unwrap();
        c.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        c.send_to(b"query", (VIP, 53)).unwrap();
        let mut buf = [0u8; 64];
        c.recv_from(&mut buf).expect("the reply arrives").1
    });
    server.join().unwrap();
    assert_eq!(
        from,
        SocketAddr::new(addr(VIP), 53),
        "reverse NAT of the reply"
    );
}

/// The node address whose node ports the wire test uses.
const NODE_IP: &str = "172.18.0.2";

/// The wire test's maps: pod A's veth stands for the uplink (A is a client outside the
/// node, in no map), pod B is the only endpoint. B admits the world on TCP 8080 and denies
/// TCP 9090; node ports NODE_IP:30080 → B:8080 and NODE_IP:30090 → B:9090.
fn wire_artifact(topo: &Topology) -> EbpfArtifact {
    let mut a = EbpfArtifact::default();
    a.endpoints.insert(
        addr(POD_B),
        Endpoint {
            id: 2,
            ifindex: topo.host_ifindex(1),
            identity: 1002,
        },
    );
    a.ipcache.insert(
        Prefix {
            addr: addr(POD_B),
            len: 32,
        },
        1002,
    );
    for (port, action, cookie) in [(8080, Action::Allow, 1), (9090, Action::Deny, 2)] {
        let m = PolicyMatch {
            endpoint: 2,
            direction: PolicyDirection::Ingress,
            identity: 0,
            protocol: Some(6),
            port: Some((port, 16)),
        };
        a.policy.insert(m, PolicyDecision { action, cookie });
    }
    for (id, node_port, port) in [(1, 30080, 8080), (2, 30090, 9090)] {
        a.backends.insert(
            id,
            Backend {
                addr: addr(POD_B),
                port,
            },
        );
        let fe = Frontend {
            addr: addr(NODE_IP),
            protocol: 6,
            port: node_port,
        };
        let svc = Service {
            id,
            affinity_timeout: None,
            maglev: maglev::table(&[id], 251),
        };
        a.services.insert(fe, svc);
    }
    a
}

/// `from_wire`/`to_wire` on pod A's veth (the uplink), `from_pod`/`to_pod` on pod B's.
fn setup_wire(dp: &mut TestDatapath, topo: &Topology) -> Attached {
    dp.write(&wire_artifact(topo)).expect("write maps");
    let node = topo.node().to_string();
    let links = in_netns(&node, || {
        let progs = [
            ("veth0", Program::FromWire),
            ("veth0", Program::ToWire),
            ("veth1", Program::FromPod),
            ("veth1", Program::ToPod),
        ];
        progs
            .into_iter()
            .map(|(iface, prog)| {
                dp.attach(prog, iface)
                    .unwrap_or_else(|e| panic!("attach {prog:?} to {iface}: {e}"))
            })
            .collect()
    });
    Attached { node, links }
}

/// A client outside the node connects to a node port with the real kernel stack on both
/// ends: the handshake completes only if `from_wire` translates the SYN to the backend and
/// `from_pod` gives the SYN-ACK the node port's address back; the backend's ingress policy
/// sees the client's own address, and denies the other node port's backend port.
#[test]
fn a_node_port_from_the_wire_connects_and_replies_come_from_the_node_port() {
    crate::common::require_root();
    let topo = Topology::new();
    let mut dp = TestDatapath::load("e2e-wire");
    let _attached = setup_wire(&mut dp, &topo);

    tcp_server(&topo, 8080).recv().unwrap();
    let (answer, peer) = tcp_client(&topo, NODE_IP, 30080).expect("the node port connection works");
    assert_eq!(
        answer,
        format!("pong {POD_A}"),
        "the backend sees the client's own address"
    );
    assert_eq!(peer, SocketAddr::new(addr(NODE_IP), 30080));

    tcp_server(&topo, 9090).recv().unwrap();
    let denied = tcp_client(&topo, NODE_IP, 30090);
    assert!(denied.is_err(), "B's policy denies TCP 9090: {denied:?}");
    let c = dp.counters().unwrap();
    assert!(
        c.get(&2).is_some_and(|v| v.packets >= 1),
        "the deny rule counted the translated SYN: {c:?}"
    );
}
