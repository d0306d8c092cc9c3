//! The shared conformance cases through the nftables backend, with real packets: per case,
//! a node network namespace that routes between one namespace per pod, the rendered table
//! loaded there with `nft -f`, servers on every port a pod listens on, and each probe a real
//! TCP connection or UDP exchange from the source pod's namespace. It runs through pipec's
//! harness (`pipec::conformance::check_engine`), as any backend crate would.

#![allow(unsafe_code, reason = "setns(2) has no safe wrapper in std")]

use pipec::backend::{Backend, Profile, Reason};
use pipec::conformance::{check_engine, Engine, EngineVerdict, Evaluator};
use pipec::model::{Cluster, Protocol};
use pipec::semantics::{Destination, Peer, Probe};
use pipec::session::{Session, SessionOptions};
use pipec_backend_nftables::{render_policy, NftBackend};
use std::io::{Read as _, Write as _};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd as _;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

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
        // No SCTP or ICMP servers: those probes are not run (see `cannot_judge`).
        _ => {
            let _ = tx.send(());
        }
    });
    let _ = rx.recv_timeout(Duration::from_secs(5));
    handle
}

fn probe_tcp(ns: &str, to: SocketAddr) -> bool {
    in_netns(ns, move || {
        TcpStream::connect_timeout(&to, WAIT)
            .and_then(|mut s| {
                s.set_read_timeout(Some(WAIT))?;
                let mut b = [0u8; 2];
                s.read_exact(&mut b)
            })
            .is_ok()
    })
    .join()
    .unwrap_or(false)
}

fn probe_udp(ns: &str, to: SocketAddr) -> bool {
    in_netns(ns, move || {
        let s = UdpSocket::bind("0.0.0.0:0")?;
        s.set_read_timeout(Some(WAIT))?;
        s.send_to(b"probe", to)?;
        let mut buf = [0u8; 16];
        s.recv_from(&mut buf).map(|(n, _)| &buf[..n] == b"probe")
    })
    .join()
    .ok()
    .and_then(Result::ok)
    .unwrap_or(false)
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
        match render_policy(session.mag()) {
            Ok(a) => Ok(Box::new(NftEval {
                cluster,
                topo: Some(Topology::new(cluster, &a.script)?),
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
    fn endpoints(&self, probe: &Probe) -> Option<(&str, IpAddr)> {
        let topo = self.topo.as_ref()?;
        let Peer::Pod(from) = probe.from else {
            return None;
        };
        let from = self
            .cluster
            .pod(from)
            .ips
            .iter()
            .copied()
            .find(IpAddr::is_ipv4)?;
        let to = match probe.to {
            Destination::Pod(p) => self
                .cluster
                .pod(p)
                .ips
                .iter()
                .copied()
                .find(IpAddr::is_ipv4)?,
            Destination::Ip(ip) => topo.netns_of(ip).map(|_| ip)?,
            Destination::Service { .. } => return None,
        };
        topo.netns_of(to)?;
        Some((topo.netns_of(from)?, to))
    }
}

impl Evaluator for NftEval<'_> {
    fn evaluate(&self, probe: &Probe) -> EngineVerdict {
        let Some((ns, to)) = self.endpoints(probe) else {
            return EngineVerdict {
                allowed: None,
                reason: "not runnable".into(),
            };
        };
        let port = probe.port.unwrap_or(0);
        let allowed = match probe.protocol {
            Protocol::Tcp => probe_tcp(ns, SocketAddr::new(to, port)),
            Protocol::Udp => probe_udp(ns, SocketAddr::new(to, port)),
            _ => false,
        };
        EngineVerdict {
            allowed: Some(allowed),
            reason: if allowed { "answered" } else { "no answer" }.into(),
        }
    }

    fn cannot_judge(&self, probe: &Probe) -> Option<String> {
        if let Some(why) = &self.skip {
            return Some(format!("the backend does not render this case: {why}"));
        }
        match probe.protocol {
            Protocol::Tcp | Protocol::Udp => {}
            Protocol::Sctp => {
                return Some(
                    "the kernel here has no SCTP, so no real SCTP packet can be sent".into(),
                )
            }
            other => return Some(format!("{other:?} probes are not run by this harness")),
        }
        if matches!(probe.to, Destination::Service { .. }) {
            return Some("Services are not rendered by this backend".into());
        }
        if self.endpoints(probe).is_none() {
            return Some("only IPv4 pod-to-pod probes run in this topology".into());
        }
        None
    }
}

fn usable() -> bool {
    let root = std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"));
    let tools = ["nft", "ip"].iter().all(|t| {
        Command::new(t).arg("-V").output().is_ok()
            || Command::new(t).arg("--version").output().is_ok()
    });
    if !(root && tools) {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run this as root with nftables and iproute2"
        );
        eprintln!("skipped: needs root, nft and ip");
    }
    root && tools
}

#[test]
fn the_shared_cases_pass_with_real_packets() {
    if !usable() {
        return;
    }
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
    for line in &report.lines {
        eprintln!("{line}");
    }
    eprintln!("{}, {} skipped", report.summary(), report.skipped);
    // The reference and nftables both judged most probes; every skip has its reason above.
    assert!(
        report.passed >= 300,
        "too few checks ran: {}",
        report.summary()
    );
}
