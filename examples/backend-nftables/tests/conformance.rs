//! The shared conformance cases through the nftables backend, with real packets: per case,
//! a node network namespace that routes between one namespace per pod, the rendered table
//! loaded there with `nft -f`, servers on every port a pod listens on, and each probe a real
//! TCP connection or UDP exchange from the source pod's namespace. It runs through pipec's
//! harness (`pipec::conformance::check_engine`), as any backend crate would.

#![allow(unsafe_code, reason = "setns(2) has no safe wrapper in std")]

// Dependencies of the package that this target does not use itself; they serve its
// other targets. `unused_crate_dependencies` checks every target against all of them.
use serde_json as _;

use pipec::backend::{Backend, Profile, Reason};
use pipec::conformance::{check_engine, Engine, EngineVerdict, Evaluator};
use pipec::model::{Cluster, Protocol};
use pipec::semantics::{Destination, Peer, Probe};
use pipec::session::{Session, SessionOptions};
use pipec_backend_nftables::{NftBackend, TARGET};
use std::io::{Read as _, Write as _};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a probe waits for an answer: the namespaces are on one host, so an allowed
/// connection answers in well under a millisecond.
const WAIT: Duration = Duration::from_millis(200);

fn run(args: &[&str]) -> Result<(), String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("{}: {e}", args[0]))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Runs `f` on a thread that entered the network namespace `ns`.
fn in_netns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).expect("open the netns");
        // SAFETY: a valid namespace fd; setns changes only this thread's network namespace.
        let r = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(r, 0, "setns {path}: {}", std::io::Error::last_os_error());
        f()
    })
}

/// One case's namespaces and servers; all removed on drop.
struct Topology {
    node: String,
    pods: Vec<(String, IpAddr)>,
    stop: Arc<AtomicBool>,
    servers: Vec<std::thread::JoinHandle<()>>,
}

impl Topology {
    fn new(cluster: &Cluster, script: &str) -> Result<Topology, String> {
        static N: AtomicU32 = AtomicU32::new(0);
        let tag = format!(
            "{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let mut t = Topology {
            node: format!("pnft-{tag}"),
            pods: Vec::new(),
            stop: Arc::new(AtomicBool::new(false)),
            servers: Vec::new(),
        };
        run(&["ip", "netns", "add", &t.node])?;
        let n = t.node.clone();
        run(&["ip", "-n", &n, "link", "set", "lo", "up"])?;
        run(&[
            "ip",
            "netns",
            "exec",
            &n,
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
        ])?;
        for (i, pod) in cluster.pods.iter().enumerate() {
            let Some(addr) = pod.ips.iter().copied().find(IpAddr::is_ipv4) else {
                continue;
            };
            let ns = format!("pnft-{tag}-{i}");
            run(&["ip", "netns", "add", &ns])?;
            t.pods.push((ns.clone(), addr));
            let host = format!("v{i}");
            let pod_addr = format!("{addr}/32");
            // The node side routes the pod's address to its veth; the pod routes everything
            // to the node through a link-local next hop.
            let node_side: [&[&str]; 4] = [
                &[
                    "link", "add", &host, "type", "veth", "peer", "name", "eth0", "netns", &ns,
                ],
                &["addr", "add", "169.254.1.1/32", "dev", &host],
                &["link", "set", &host, "up"],
                &["route", "add", &pod_addr, "dev", &host],
            ];
            let pod_side: [&[&str]; 5] = [
                &["link", "set", "lo", "up"],
                &["addr", "add", &pod_addr, "dev", "eth0"],
                &["link", "set", "eth0", "up"],
                &["route", "add", "169.254.1.1", "dev", "eth0"],
                &[
                    "route",
                    "add",
                    "default",
                    "via",
                    "169.254.1.1",
                    "dev",
                    "eth0",
                ],
            ];
            for (netns, cmds) in [(&n, &node_side[..]), (&ns, &pod_side[..])] {
                for cmd in cmds {
                    let mut args = vec!["ip", "-n", netns.as_str()];
                    args.extend_from_slice(cmd);
                    run(&args)?;
                }
            }
            let mut ports: Vec<(u16, Protocol)> =
                pod.ports.iter().map(|p| (p.port, p.protocol)).collect();
            ports.extend(pod.extra_ports.iter().copied());
            ports.sort_by_key(|(p, proto)| (*p, proto.number()));
            ports.dedup();
            for (port, proto) in ports {
                t.servers.push(serve(&ns, port, proto, t.stop.clone()));
            }
        }
        let file = std::env::temp_dir().join(format!("pnft-{tag}.nft"));
        std::fs::write(&file, script).map_err(|e| e.to_string())?;
        let loaded = run(&[
            "ip",
            "netns",
            "exec",
            &n,
            "nft",
            "-f",
            file.to_str().unwrap_or(""),
        ]);
        let _ = std::fs::remove_file(&file);
        loaded?;
        Ok(t)
    }

    fn netns_of(&self, addr: IpAddr) -> Option<&str> {
        self.pods
            .iter()
            .find(|(_, a)| *a == addr)
            .map(|(n, _)| n.as_str())
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for s in self.servers.drain(..) {
            let _ = s.join();
        }
        for (ns, _) in &self.pods {
            let _ = run(&["ip", "netns", "del", ns]);
        }
        let _ = run(&["ip", "netns", "del", &self.node]);
    }
}

/// A server in `ns`: TCP accepts and closes, UDP echoes. Each loop wakes every 50 ms to
/// see `stop`, so it ends with the case.
fn serve(
    ns: &str,
    port: u16,
    proto: Protocol,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    let (tx, rx) = std::sync::mpsc::channel();
    let handle = in_netns(ns, move || match proto {
        Protocol::Tcp => {
            let l = TcpListener::bind(("0.0.0.0", port)).expect("bind tcp");
            l.set_nonblocking(true).expect("nonblocking");
            let _ = tx.send(());
            while !stop.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((mut s, _)) => {
                        let _ = s.write_all(b"ok");
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        }
        Protocol::Udp => {
            let s = UdpSocket::bind(("0.0.0.0", port)).expect("bind udp");
            s.set_read_timeout(Some(Duration::from_millis(50)))
                .expect("timeout");
            let _ = tx.send(());
            let mut buf = [0u8; 64];
            while !stop.load(Ordering::Relaxed) {
                if let Ok((n, from)) = s.recv_from(&mut buf) {
                    let _ = s.send_to(&buf[..n], from);
                }
            }
        }
        // No SCTP or ICMP servers: an SCTP probe brings its own raw receiver, and the
        // pod's kernel answers ICMP echoes.
        _ => {
            let _ = tx.send(());
        }
    });
    let _ = rx.recv_timeout(Duration::from_secs(5));
    handle
}

/// What a probe saw: an answer from the destination pod (or its refusal, which also came
/// from the pod, so the first packet got there), or nothing within [`WAIT`].
fn reached(answered: std::io::Result<()>) -> Result<&'static str, String> {
    match answered {
        Ok(()) => Ok("answered"),
        // A RST or an ICMP port unreachable is the pod's own reply: nothing in the node
        // rejects (the table only drops), so the first packet reached the pod.
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            Ok("refused by the pod (nothing listens; the packet got there)")
        }
        Err(_) => Err("no answer".into()),
    }
}

fn probe_tcp(ns: &str, to: SocketAddr) -> Result<&'static str, String> {
    in_netns(ns, move || {
        reached(TcpStream::connect_timeout(&to, WAIT).and_then(|mut s| {
            s.set_read_timeout(Some(WAIT))?;
            let mut b = [0u8; 2];
            s.read_exact(&mut b)
        }))
    })
    .join()
    .map_err(|_| "the probe thread panicked".to_string())?
}

/// A UDP exchange on a connected socket, so that the pod's ICMP port unreachable (when
/// nothing listens) comes back as `ConnectionRefused` instead of being lost.
fn probe_udp(ns: &str, to: SocketAddr) -> Result<&'static str, String> {
    in_netns(ns, move || {
        reached((|| {
            let s = UdpSocket::bind("0.0.0.0:0")?;
            s.connect(to)?;
            s.set_read_timeout(Some(WAIT))?;
            s.send(b"probe")?;
            let mut buf = [0u8; 16];
            let n = s.recv(&mut buf)?;
            if &buf[..n] == b"probe" {
                Ok(())
            } else {
                Err(std::io::Error::other("a wrong answer"))
            }
        })())
    })
    .join()
    .map_err(|_| "the probe thread panicked".to_string())?
}

/// A raw IPv4 socket of `proto` whose reads time out after 50 ms, so every receive loop
/// below wakes up to check its deadline.
fn raw_socket(proto: libc::c_int) -> std::io::Result<OwnedFd> {
    // SAFETY: socket(2) with constant arguments; the result is checked before use.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, proto) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let tv = libc::timeval {
        tv_sec: 0,
        tv_usec: 50_000,
    };
    // SAFETY: a valid socket and a timeval of the size passed.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            std::ptr::from_ref(&tv).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(fd)
}

fn raw_send(fd: &OwnedFd, data: &[u8], to: Ipv4Addr) -> std::io::Result<()> {
    let sa = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(to).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: a valid socket, a buffer of the length passed, a sockaddr_in of its size.
    let n = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            data.as_ptr().cast(),
            data.len(),
            0,
            std::ptr::from_ref(&sa).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Reads packets (IPv4 header included, as raw sockets give them) until `wanted` accepts
/// the payload after the IP header, or [`WAIT`] is over; at most 64 reads.
fn raw_wait(fd: &OwnedFd, wanted: impl Fn(Ipv4Addr, &[u8]) -> bool) -> bool {
    let end = Instant::now() + WAIT;
    let mut buf = [0u8; 2048];
    for _ in 0..64 {
        if Instant::now() >= end {
            break;
        }
        // SAFETY: a valid socket and a buffer of the length passed.
        let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        let Ok(n) = usize::try_from(n) else {
            continue;
        };
        let ihl = usize::from(buf[0] & 0x0f) * 4;
        if n >= 20 && n > ihl {
            let from = Ipv4Addr::new(buf[12], buf[13], buf[14], buf[15]);
            if wanted(from, &buf[ihl..n]) {
                return true;
            }
        }
    }
    false
}

/// CRC-32C (Castagnoli, reflected), the SCTP checksum (RFC 9260 appendix A).
fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0x82f6_3b78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// An SCTP packet with one INIT chunk: the first packet of an association, with a valid
/// checksum so that the node's conntrack sees a well-formed new association.
fn sctp_init(sport: u16, dport: u16, tag: u32) -> Vec<u8> {
    let mut p = Vec::with_capacity(32);
    p.extend_from_slice(&sport.to_be_bytes());
    p.extend_from_slice(&dport.to_be_bytes());
    // The verification tag of an INIT is zero; the checksum is filled in below.
    p.extend_from_slice(&[0; 8]);
    // INIT: type 1, flags 0, length 20, initiate tag, a_rwnd, 1 outbound and 1 inbound
    // stream, initial TSN.
    p.extend_from_slice(&[1, 0, 0, 20]);
    p.extend_from_slice(&tag.to_be_bytes());
    p.extend_from_slice(&65_535u32.to_be_bytes());
    p.extend_from_slice(&[0, 1, 0, 1]);
    p.extend_from_slice(&tag.to_be_bytes());
    // The CRC goes on the wire least significant byte first (as Linux's sctp_compute_cksum).
    let crc = crc32c(&p);
    p[8..12].copy_from_slice(&crc.to_le_bytes());
    p
}

/// An SCTP probe without an SCTP stack (the kernel need not have one): a raw socket in the
/// destination pod waits for the INIT that a raw socket in the source pod sends. Arriving
/// is the verdict, as a probe is the first packet of a connection; SCTP replies are not
/// exercised.
fn probe_sctp(from: &str, to_ns: &str, to: Ipv4Addr, port: u16) -> Result<&'static str, String> {
    static TAG: AtomicU32 = AtomicU32::new(1);
    let tag = std::process::id() ^ TAG.fetch_add(1, Ordering::Relaxed) << 16;
    let (tx, rx) = std::sync::mpsc::channel();
    let receiver = in_netns(to_ns, move || {
        let fd = raw_socket(libc::IPPROTO_SCTP)
            .map_err(|e| format!("raw SCTP socket in the destination: {e}"))?;
        let _ = tx.send(());
        Ok::<bool, String>(raw_wait(&fd, |_, sctp| {
            sctp.len() >= 20
                && sctp[2..4] == port.to_be_bytes()
                && sctp[12] == 1
                && sctp[16..20] == tag.to_be_bytes()
        }))
    });
    if rx.recv_timeout(Duration::from_secs(5)).is_err() {
        return Err(receiver
            .join()
            .map_err(|_| "the SCTP receiver panicked".to_string())?
            .err()
            .unwrap_or_else(|| "the SCTP receiver did not start".into()));
    }
    let packet = sctp_init(40_000 + (tag & 0x3ff) as u16, port, tag);
    in_netns(from, move || {
        raw_socket(libc::IPPROTO_SCTP).and_then(|fd| raw_send(&fd, &packet, to))
    })
    .join()
    .map_err(|_| "the SCTP sender panicked".to_string())?
    .map_err(|e| format!("raw SCTP send: {e}"))?;
    match receiver.join() {
        Ok(Ok(true)) => Ok("the INIT arrived"),
        Ok(Ok(false)) => Err("the INIT did not arrive".into()),
        Ok(Err(e)) => Err(e),
        Err(_) => Err("the SCTP receiver panicked".into()),
    }
}

/// The Internet checksum (RFC 1071) of an ICMP message.
fn inet_checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c.get(1).copied().unwrap_or(0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An ICMP echo from the source pod; the destination pod's kernel answers it.
fn probe_icmp(from: &str, to: Ipv4Addr) -> Result<&'static str, String> {
    static SEQ: AtomicU32 = AtomicU32::new(1);
    let id = (std::process::id() & 0xffff) as u16;
    let seq = SEQ.fetch_add(1, Ordering::Relaxed) as u16;
    in_netns(from, move || {
        let fd = raw_socket(libc::IPPROTO_ICMP).map_err(|e| format!("raw ICMP socket: {e}"))?;
        let mut echo = vec![8, 0, 0, 0];
        echo.extend_from_slice(&id.to_be_bytes());
        echo.extend_from_slice(&seq.to_be_bytes());
        echo.extend_from_slice(b"pipec-probe");
        let sum = inet_checksum(&echo);
        echo[2..4].copy_from_slice(&sum.to_be_bytes());
        raw_send(&fd, &echo, to).map_err(|e| format!("ICMP send: {e}"))?;
        let answered = raw_wait(&fd, |src, icmp| {
            src == to
                && icmp.len() >= 8
                && icmp[0] == 0
                && icmp[4..6] == id.to_be_bytes()
                && icmp[6..8] == seq.to_be_bytes()
        });
        if answered {
            Ok("echo reply")
        } else {
            Err("no echo reply".to_string())
        }
    })
    .join()
    .map_err(|_| "the ICMP probe panicked".to_string())?
}

struct NftEngine;

fn nft_only(_: Option<&Profile>) -> Vec<Box<dyn Backend>> {
    vec![Box::new(NftBackend::default())]
}

impl Engine for NftEngine {
    fn name(&self) -> &'static str {
        "nftables"
    }

    fn prepare<'c>(&self, cluster: &'c Cluster) -> Result<Box<dyn Evaluator + 'c>, String> {
        let session = Session::from_cluster(cluster, SessionOptions::default(), &nft_only)
            .map_err(|e| e.to_string())?;
        // The table as a runtime would get it: the backend's artifact, compiled by the session.
        let compiled = session
            .artifact(TARGET)
            .ok_or("the session has no nftables target")?;
        match compiled {
            Ok(a) => Ok(Box::new(NftEval {
                cluster,
                topo: Some(Topology::new(cluster, &a.text())?),
                skip: None,
            })),
            Err(u) if matches!(u.reason, Reason::Feature { .. }) => Ok(Box::new(NftEval {
                cluster,
                topo: None,
                skip: Some(u.reason.to_string()),
            })),
            Err(u) => Err(u.to_string()),
        }
    }
}

struct NftEval<'c> {
    cluster: &'c Cluster,
    topo: Option<Topology>,
    skip: Option<String>,
}

impl NftEval<'_> {
    /// The source pod's namespace, and where the probe goes: the destination pod's
    /// namespace (`None` for a Service, whose backend the node picks) and the address and
    /// port to send to (a Service's cluster IP and service port).
    fn endpoints(&self, probe: &Probe) -> Option<(&str, Option<&str>, SocketAddr)> {
        let topo = self.topo.as_ref()?;
        let Peer::Pod(from) = probe.from else {
            return None;
        };
        let v4 = |ips: &[IpAddr]| ips.iter().copied().find(IpAddr::is_ipv4);
        let from = topo.netns_of(v4(&self.cluster.pod(from).ips)?)?;
        let port = probe.port.unwrap_or(0);
        match probe.to {
            Destination::Pod(p) => {
                let to = v4(&self.cluster.pod(p).ips)?;
                Some((from, Some(topo.netns_of(to)?), SocketAddr::new(to, port)))
            }
            Destination::Ip(ip) => {
                Some((from, Some(topo.netns_of(ip)?), SocketAddr::new(ip, port)))
            }
            Destination::Service { service, port } => {
                let vip = v4(&self.cluster.services[service.0 as usize].cluster_ips)?;
                Some((from, None, SocketAddr::new(vip, port)))
            }
        }
    }
}

impl Evaluator for NftEval<'_> {
    fn evaluate(&self, probe: &Probe) -> EngineVerdict {
        let Some((from, to_ns, to)) = self.endpoints(probe) else {
            return EngineVerdict {
                allowed: None,
                reason: "not runnable".into(),
            };
        };
        let v4 = match to.ip() {
            IpAddr::V4(a) => a,
            IpAddr::V6(_) => Ipv4Addr::UNSPECIFIED,
        };
        let seen = match (probe.protocol, to_ns) {
            (Protocol::Tcp, _) => probe_tcp(from, to),
            (Protocol::Udp, _) => probe_udp(from, to),
            (Protocol::Sctp, Some(to_ns)) => probe_sctp(from, to_ns, v4, to.port()),
            (Protocol::Icmp, Some(_)) => probe_icmp(from, v4),
            (_, None) => Err("not runnable".into()),
        };
        match seen {
            Ok(how) => EngineVerdict {
                allowed: Some(true),
                reason: how.into(),
            },
            Err(why) => EngineVerdict {
                allowed: Some(false),
                reason: why,
            },
        }
    }

    fn cannot_judge(&self, probe: &Probe) -> Option<String> {
        if let Some(why) = &self.skip {
            return Some(format!("the backend does not render this case: {why}"));
        }
        let Some((_, to_ns, _)) = self.endpoints(probe) else {
            return Some(
                "only probes from IPv4 pods to pods or Service cluster IPs run in this topology (no outside clients)"
                    .into(),
            );
        };
        if to_ns.is_none() && !matches!(probe.protocol, Protocol::Tcp | Protocol::Udp) {
            // Raw SCTP and ICMP probes need a receiver or a reply that knows the backend.
            return Some(format!(
                "{:?} probes to a Service are not run (the node picks the backend)",
                probe.protocol
            ));
        }
        None
    }
}

/// These tests run only with the `root-tests` feature (plain `cargo test` needs no root);
/// asked for, they fail loudly without root, nft or ip rather than pass unrun.
fn usable() {
    let root = std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"));
    let tools = ["nft", "ip"].iter().all(|t| {
        Command::new(t).arg("-V").output().is_ok()
            || Command::new(t).arg("--version").output().is_ok()
    });
    assert!(
        root && tools,
        "these tests need root, nftables and iproute2"
    );
}

#[test]
#[cfg_attr(
    not(feature = "root-tests"),
    ignore = "needs root and network namespaces: run with --features root-tests"
)]
fn the_shared_cases_pass_with_real_packets() {
    usable();
    let dir = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/conformance"
    ));
    assert!(
        dir.is_dir(),
        "the shared cases are missing at {}",
        dir.display()
    );
    let report = check_engine(&[dir], Box::new(NftEngine)).unwrap_or_else(|e| panic!("{e}"));
    let result = format!(
        "{}, {} skipped\n{}",
        report.summary(),
        report.skipped,
        report.lines.join("\n")
    );
    eprintln!("{result}");
    // The counts and every skip with its reason are pinned: a probe that stops running
    // (a pass turning into a skip) fails here, as a wrong verdict fails `check_engine`.
    insta::assert_snapshot!(result);
}

/// The probes themselves, against two fixed tables: a node that drops every forwarded
/// packet stops every kind of probe, one that forwards everything lets every kind through,
/// whether the pod listens on the port (80) or refuses it (81). Without this control a
/// probe that never sends anything would pass every `deny`.
#[test]
#[cfg_attr(
    not(feature = "root-tests"),
    ignore = "needs root and network namespaces: run with --features root-tests"
)]
fn probes_see_what_the_node_does() {
    usable();
    let file = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/conformance/e2e-19-ingress-protocol-only-port-omitted.yaml"
    );
    let text = std::fs::read_to_string(file).expect("the shared case");
    let case: pipec::conformance::Case = serde_yaml::from_str(&text).expect("a case");
    let built = pipec::conformance::build_cluster(file, &case).unwrap_or_else(|e| panic!("{e:?}"));
    for (policy, expect) in [("drop", false), ("accept", true)] {
        let script = format!(
            "table inet control {{\n\tchain forward {{\n\t\ttype filter hook forward priority filter; policy {policy};\n\t}}\n}}\n"
        );
        let topo = Topology::new(&built.cluster, &script).unwrap_or_else(|e| panic!("{e}"));
        let (from, _) = &topo.pods[0];
        let (to_ns, to) = &topo.pods[1];
        let IpAddr::V4(v4) = *to else {
            panic!("an IPv4 pod")
        };
        let mut seen = Vec::new();
        for port in [80, 81] {
            let at = SocketAddr::new(*to, port);
            seen.push((format!("tcp {port}"), probe_tcp(from, at)));
            seen.push((format!("udp {port}"), probe_udp(from, at)));
            seen.push((format!("sctp {port}"), probe_sctp(from, to_ns, v4, port)));
        }
        seen.push(("icmp".into(), probe_icmp(from, v4)));
        for (what, got) in &seen {
            assert_eq!(got.is_ok(), expect, "policy {policy}: {what}: {got:?}");
        }
    }
}

#[test]
fn the_sctp_checksum_is_crc32c() {
    // The check value of CRC-32C (RFC 3720 B.4 and every CRC catalogue).
    assert_eq!(crc32c(b"123456789"), 0xe306_9283);
}
