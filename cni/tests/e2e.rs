//! pipec-cni as the kubelet drives it, end to end: a node as a network namespace running
//! pipecd (kernel datapath), three pods created through the plugin binary with the CNI
//! environment (as `cnitool` does) in network namespaces, addresses from Debian's real
//! host-local, NetworkPolicies from pipecd's manifests directory, and real TCP and UDP
//! between the pods checked against the reference semantics. Then a pod deleted: its address
//! released and unreachable; pipecd down: DEL still succeeds and is told to pipecd later;
//! and bad input with the specification's codes and nothing left behind.
//!
//! Needs root and Debian's containernetworking-plugins (`.ci/run` installs it), so the tests
//! run only with `--features root-tests`, and then fail loudly without them.

// Dependencies of the package that this target does not use itself; they serve its
// other targets. `unused_crate_dependencies` checks every target against all of them.
use pipec_cni as _;
use serde as _;
use tonic as _;

use pipec_netns::in_netns;
use serde_json::{json, Value};
use std::io::{Read as _, Write as _};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CNI_PATH: &str = "/usr/lib/cni";
const TCP_PORT: u16 = 8080;
const UDP_PORT: u16 = 8081;

/// These tests run only with the `root-tests` feature (plain `cargo test` needs no root);
/// asked for, they fail loudly without root or host-local rather than pass unrun.
fn ready() {
    let root = std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"));
    let host_local = Path::new(CNI_PATH).join("host-local").exists();
    assert!(
        root && host_local,
        "the CNI end-to-end tests need root and {CNI_PATH}/host-local (containernetworking-plugins)"
    );
}

fn sh(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The test's world: namespaces named after its pid, a scratch directory, pipecd.
struct World {
    tag: String,
    dir: PathBuf,
    bpffs: PathBuf,
    pipecd: Option<Child>,
    pods: Vec<String>,
}

impl World {
    fn new(tag: &str) -> World {
        World::with_pods(tag, &["a", "b", "c"])
    }

    fn with_pods(tag: &str, pods: &[&str]) -> World {
        let tag = format!("{tag}{}", std::process::id());
        let dir = std::env::temp_dir().join(format!("pipec-cni-{tag}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("m")).expect("scratch");
        let w = World {
            bpffs: PathBuf::from(format!("/sys/fs/bpf/pipec-cni-{tag}")),
            tag,
            dir,
            pipecd: None,
            pods: pods.iter().map(|p| p.to_string()).collect(),
        };
        sh(&["ip", "netns", "add", &w.node()]);
        sh(&["ip", "-n", &w.node(), "link", "set", "lo", "up"]);
        for p in pods {
            sh(&["ip", "netns", "add", &w.pod(p)]);
            sh(&["ip", "-n", &w.pod(p), "link", "set", "lo", "up"]);
        }
        w
    }

    fn node(&self) -> String {
        format!("pcn{}", self.tag)
    }

    fn pod(&self, p: &str) -> String {
        format!("pcp{}{p}", self.tag)
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("run/pipecd.sock")
    }

    fn start_pipecd(&mut self) {
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.node()))
            .arg(Path::new(env!("CARGO_BIN_EXE_pipec-cni")).with_file_name("pipecd"))
            .arg("--manifests")
            .arg(self.dir.join("m"))
            .args([
                "--node",
                "node-a",
                "--datapath",
                "kernel",
                "--metrics-addr",
                "127.0.0.1:0",
            ])
            .arg("--bpffs")
            .arg(&self.bpffs)
            .arg("--state-dir")
            .arg(self.dir.join("state"))
            .arg("--control")
            .arg(format!("unix:{}", self.socket().display()))
            .stdout(Stdio::null())
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(self.dir.join("pipecd.log"))
                    .expect("log"),
            )
            .spawn()
            .expect("start pipecd (built beside pipec-cni by cargo test --workspace)");
        self.pipecd = Some(child);
        // Bounded: the control socket appears within 20 s or the test fails with the log.
        let start = Instant::now();
        while !self.socket().exists() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "pipecd's control socket did not appear:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Writes the test cluster (node, namespace, policy, the three pods without addresses)
    /// and starts pipecd on it.
    fn start_with_apps(&mut self) {
        let mut manifests = CLUSTER.to_string();
        for (p, app) in APPS {
            manifests.push_str(&pod_yaml(p, app, None));
        }
        std::fs::write(self.dir.join("m/cluster.yaml"), &manifests).expect("manifests");
        self.start_pipecd();
    }

    fn stop_pipecd(&mut self) {
        if let Some(mut c) = self.pipecd.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_file(self.socket());
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("pipecd.log")).unwrap_or_default()
    }

    fn config(&self) -> Value {
        json!({
            "cniVersion": "1.0.0",
            "name": format!("pipec-{}", self.tag),
            "type": "pipec-cni",
            "pipecd": format!("unix:{}", self.socket().display()),
            "timeoutMs": 20000,
            "stateDir": self.dir.join("cni-state"),
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": "10.77.1.0/24"}]],
                "dataDir": self.dir.join("ipam"),
            }
        })
    }

    fn leases(&self) -> Vec<String> {
        let dir = self.dir.join("ipam").join(format!("pipec-{}", self.tag));
        let mut out: Vec<String> = std::fs::read_dir(dir)
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.parse::<IpAddr>().is_ok())
                    .collect()
            })
            .unwrap_or_default();
        out.sort();
        out
    }

    /// Runs the plugin in the node's namespace with the CNI environment.
    fn cni(&self, command: &str, pod: &str, config: &Value) -> (i32, Value) {
        self.cni_env(command, config, &self.pod_env(pod))
    }

    fn cni_env(&self, command: &str, config: &Value, env: &[(&str, String)]) -> (i32, Value) {
        let (code, out, _) = self.cni_full(command, config, env);
        (code, out)
    }

    /// The plugin's exit code, stdout as JSON and stderr.
    fn cni_full(
        &self,
        command: &str,
        config: &Value,
        env: &[(&str, String)],
    ) -> (i32, Value, String) {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{}", self.node()))
            .arg(env!("CARGO_BIN_EXE_pipec-cni"))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("CNI_COMMAND", command)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("run pipec-cni");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(config.to_string().as_bytes())
            .expect("write config");
        let out = child.wait_with_output().expect("wait");
        let v = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        (
            out.status.code().unwrap_or(-1),
            v,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// The CNI environment of pod `pod`.
    fn pod_env(&self, pod: &str) -> Vec<(&'static str, String)> {
        vec![
            ("CNI_CONTAINERID", format!("ctr-{}-{pod}", self.tag)),
            ("CNI_NETNS", format!("/run/netns/{}", self.pod(pod))),
            ("CNI_IFNAME", "eth0".into()),
            ("CNI_PATH", CNI_PATH.into()),
            (
                "CNI_ARGS",
                format!("IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME={pod};K8S_POD_UID=uid-{pod}"),
            ),
        ]
    }

    fn host_links(&self) -> Vec<String> {
        let out = Command::new("ip")
            .args(["-n", &self.node(), "-o", "link", "show"])
            .output()
            .expect("ip");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap_or(n).to_string())
            .filter(|n| n.starts_with("pc"))
            .collect()
    }
}

impl Drop for World {
    fn drop(&mut self) {
        self.stop_pipecd();
        for p in &self.pods {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.pod(p)])
                .status();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.node()])
            .status();
        let _ = std::fs::remove_dir_all(&self.bpffs);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

const CLUSTER: &str = "apiVersion: v1
kind: Node
metadata: {name: node-a}
spec: {podCIDR: 10.77.1.0/24}
status: {addresses: [{type: InternalIP, address: 192.168.77.1}]}
---
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {kubernetes.io/metadata.name: shop}}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: server-from-client, namespace: shop}
spec:
  podSelector: {matchLabels: {app: server}}
  policyTypes: [Ingress]
  ingress:
  - from: [{podSelector: {matchLabels: {app: client}}}]
    ports: [{protocol: TCP, port: 8080}, {protocol: UDP, port: 8081}]
";

fn pod_yaml(name: &str, app: &str, ip: Option<&str>) -> String {
    let status = ip.map_or(String::new(), |ip| {
        format!("status: {{phase: Running, podIP: {ip}, podIPs: [{{ip: {ip}}}]}}\n")
    });
    format!(
        "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: shop, labels: {{app: {app}}}}}\n\
         spec:\n  nodeName: node-a\n  containers: [{{name: c, image: x, ports: [{{containerPort: {TCP_PORT}}}, {{containerPort: {UDP_PORT}, protocol: UDP}}]}}]\n{status}"
    )
}

const APPS: [(&str, &str); 3] = [("a", "client"), ("b", "server"), ("c", "other")];

/// A TCP and a UDP echo server in a pod, answering until the process ends (bounded: 10
/// minutes).
fn serve(ns: &str, ip: IpAddr) {
    let (tcp, udp) = in_netns(ns, || {
        (
            TcpListener::bind((ip, TCP_PORT)).expect("bind tcp"),
            UdpSocket::bind((ip, UDP_PORT)).expect("bind udp"),
        )
    });
    std::thread::spawn(move || {
        let end = Instant::now() + Duration::from_secs(600);
        for conn in tcp.incoming() {
            if Instant::now() > end {
                break;
            }
            if let Ok(mut c) = conn {
                let _ = c.write_all(b"pong");
            }
        }
    });
    std::thread::spawn(move || {
        let end = Instant::now() + Duration::from_secs(600);
        let mut buf = [0u8; 64];
        while Instant::now() < end {
            if let Ok((_, from)) = udp.recv_from(&mut buf) {
                let _ = udp.send_to(b"pong", from);
            }
        }
    });
}

/// The address of an `ADDR/LEN` result entry.
fn ip_of(address: &str) -> IpAddr {
    address
        .split('/')
        .next()
        .expect("ip")
        .parse()
        .expect("an IP address")
}

/// Echo servers in every pod of [`APPS`], at its address in `ips`.
fn serve_all(w: &World, ips: &[IpAddr]) {
    for (i, (p, _)) in APPS.iter().enumerate() {
        serve(&w.pod(p), ips[i]);
    }
}

/// The next UDP source port of a probe. Each probe is a new flow only if its 5-tuple is
/// new: an ephemeral port the kernel hands out again within the conntrack's UDP lifetime
/// (60 s) continues the earlier flow, which the conntrack carries whatever the policy now
/// says (as Cilium's does), so a run of thousands of probes would meet such reuses. Ports
/// are handed out once per test process, from a range no ephemeral port comes from.
fn next_udp_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    // 10,000..31,999: below the kernel's default ephemeral range (32768..60999).
    10_000 + NEXT.fetch_add(1, Ordering::Relaxed) % 22_000
}

/// Whether a connection from `ns` to `dst` gets an answer.
fn connects(ns: &str, dst: SocketAddr, udp: bool) -> bool {
    in_netns(ns, || {
        if udp {
            let Ok(s) = UdpSocket::bind(("0.0.0.0", next_udp_port())) else {
                return false;
            };
            let _ = s.set_read_timeout(Some(Duration::from_millis(400)));
            let mut buf = [0u8; 16];
            // Two tries: the first datagram may race the neighbour set-up.
            (0..2).any(|_| s.send_to(b"ping", dst).is_ok() && s.recv_from(&mut buf).is_ok())
        } else {
            TcpStream::connect_timeout(&dst, Duration::from_millis(500))
                .and_then(|mut c| {
                    c.set_read_timeout(Some(Duration::from_millis(500)))?;
                    let mut out = String::new();
                    c.read_to_string(&mut out)?;
                    Ok(out == "pong")
                })
                .unwrap_or(false)
        }
    })
}

/// The flow events pipecd streams while `f` runs (plus half a second for the drain).
fn observe_while(socket: &Path, f: impl FnOnce()) -> Vec<pipec_proto::v1::FlowEvent> {
    let socket = socket.to_path_buf();
    let (tx, rx) = std::sync::mpsc::channel();
    let (subscribed_tx, subscribed) = std::sync::mpsc::channel();
    let collector = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let channel = pipec_proto::connect(&socket).await.expect("connect");
            let mut c = pipec_proto::v1::control_client::ControlClient::new(channel);
            let mut stream = c
                .observe(pipec_proto::v1::ObserveRequest::default())
                .await
                .expect("observe")
                .into_inner();
            let _ = subscribed_tx.send(());
            let mut out = Vec::new();
            // Bounded: after 30 s at most. Once told to stop, the collector still drains
            // what pipecd sends until the stream has been quiet for two seconds: under
            // load pipecd forwards the ring buffer's events late, and stopping at the
            // first event after the signal (an unrelated IPv6 router solicitation, say)
            // lost the probes' own events.
            let end = tokio::time::Instant::now() + Duration::from_secs(30);
            let mut stopping = false;
            loop {
                // Before the signal, wake often to see it; after it, wait out a quiet spell.
                let wait = if stopping { 2000 } else { 200 };
                let until = (tokio::time::Instant::now() + Duration::from_millis(wait)).min(end);
                match tokio::time::timeout_at(until, stream.message()).await {
                    Ok(Ok(Some(e))) => out.push(e),
                    Ok(_) => break,
                    Err(_) if stopping || tokio::time::Instant::now() >= end => break,
                    Err(_) => {}
                }
                stopping = stopping || rx.try_recv().is_ok();
            }
            out
        })
    });
    subscribed.recv().expect("subscribed");
    f();
    std::thread::sleep(Duration::from_millis(500));
    let _ = tx.send(());
    collector.join().expect("collector")
}

/// The reference verdict for one probe on the cluster with the pods' addresses.
fn reference(cluster_text: &str, from: &str, to: &str, port: &str) -> bool {
    let loaded = pipec::driver::load_texts(&[("cluster.yaml", cluster_text)], &Default::default());
    assert!(!loaded.has_errors(), "the test's cluster does not load");
    let q = pipec::trace::Query {
        from,
        to,
        port,
        check_listening: false,
    };
    let t = pipec::trace::trace(&loaded.sources, &loaded.cluster, &q).expect("trace");
    match t.report.verdict.as_str() {
        "allow" => true,
        "deny" => false,
        other => panic!("the test's probes have a plain verdict, not {other}"),
    }
}

#[test]
#[cfg_attr(
    not(feature = "root-tests"),
    ignore = "needs root and network namespaces: run with --features root-tests"
)]
fn pods_wired_by_pipec_cni_get_their_policy_before_add_returns() {
    ready();
    let mut w = World::new("e");
    w.start_with_apps();

    // ADD each pod; the result is the specification's.
    let config = w.config();
    let mut ips = Vec::new();
    for (p, _) in APPS {
        let (code, result) = w.cni("ADD", p, &config);
        assert_eq!(code, 0, "ADD {p}: {result}\n{}", w.log());
        assert_eq!(result["cniVersion"], "1.0.0");
        assert_eq!(result["interfaces"][1]["name"], "eth0");
        assert_eq!(
            result["interfaces"][1]["sandbox"],
            format!("/run/netns/{}", w.pod(p))
        );
        assert_eq!(result["ips"][0]["interface"], 1);
        let addr = result["ips"][0]["address"].as_str().expect("an address");
        assert!(
            addr.starts_with("10.77.1.") && addr.ends_with("/24"),
            "{addr}"
        );
        ips.push(ip_of(addr));
    }
    assert_eq!(w.leases().len(), 3);
    serve_all(&w, &ips);

    // Real traffic between every pair, each against the reference verdict.
    let mut with_ips = CLUSTER.to_string();
    for (i, (p, app)) in APPS.iter().enumerate() {
        with_ips.push_str(&pod_yaml(p, app, Some(&ips[i].to_string())));
    }
    let mut checked = 0;
    for (i, (from, _)) in APPS.iter().enumerate() {
        for (j, (to, _)) in APPS.iter().enumerate() {
            if i == j {
                continue;
            }
            for (port, udp) in [(TCP_PORT, false), (UDP_PORT, true)] {
                let proto = if udp { "UDP" } else { "TCP" };
                let want = reference(
                    &with_ips,
                    &format!("shop/{from}"),
                    &format!("shop/{to}"),
                    &format!("{port}/{proto}"),
                );
                let got = connects(&w.pod(from), SocketAddr::new(ips[j], port), udp);
                assert_eq!(got, want, "{from} -> {to} {port}/{proto}\n{}", w.log());
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 12);
    // The policy denies some of them: the datapath is really deciding. `pipec observe`'s
    // stream shows both verdicts, each with the rule that decided it.
    let events = observe_while(&w.socket(), || {
        assert!(!connects(
            &w.pod("c"),
            SocketAddr::new(ips[1], TCP_PORT),
            false
        ));
        assert!(connects(
            &w.pod("a"),
            SocketAddr::new(ips[1], TCP_PORT),
            false
        ));
    });
    let (a, b, c) = (ips[0].to_string(), ips[1].to_string(), ips[2].to_string());
    assert!(
        events
            .iter()
            .any(|e| e.verdict == "denied" && e.source == c && e.destination == b),
        "{events:#?}"
    );
    assert!(
        events.iter().any(|e| e.verdict == "allowed"
            && e.source == a
            && e.destination == b
            && e.rule.contains("server-from-client")),
        "{events:#?}"
    );

    // CHECK with the ADD's result.
    let mut with_prev = config.clone();
    with_prev["prevResult"] =
        json!({"cniVersion": "1.0.0", "ips": [{"address": format!("{}/24", ips[0])}]});
    let (code, out) = w.cni("CHECK", "a", &with_prev);
    assert_eq!(code, 0, "{out}");

    // DEL c: its address is released and no longer reachable; a second DEL succeeds.
    let (code, out) = w.cni("DEL", "c", &config);
    assert_eq!(code, 0, "{out}");
    assert!(
        !w.leases().contains(&ips[2].to_string()),
        "{:?}",
        w.leases()
    );
    assert!(!connects(
        &w.pod("a"),
        SocketAddr::new(ips[2], TCP_PORT),
        false
    ));
    assert_eq!(w.cni("DEL", "c", &config).0, 0, "DEL is idempotent");
    assert_eq!(w.host_links().len(), 2, "{:?}", w.host_links());

    // pipecd down: DEL still succeeds and is remembered; CHECK says try again later;
    // STATUS says ADD cannot be serviced; ADD fails with 11 and leaves nothing behind.
    w.stop_pipecd();
    let (code, out) = w.cni("DEL", "b", &config);
    assert_eq!(code, 0, "{out}");
    let pending =
        std::fs::read_to_string(w.dir.join("cni-state/pending-del.json")).unwrap_or_default();
    assert!(pending.contains(&format!("ctr-{}-b", w.tag)), "{pending}");
    assert_eq!(w.cni("CHECK", "a", &with_prev).1["code"], 11);
    let mut v11 = config.clone();
    v11["cniVersion"] = json!("1.1.0");
    assert_eq!(w.cni("STATUS", "a", &v11).1["code"], 50);
    let leases = w.leases();
    let (code, out) = w.cni("ADD", "c", &config);
    assert_eq!((code, out["code"].as_u64()), (1, Some(11)), "{out}");
    assert_eq!(w.leases(), leases, "no leaked address");
    assert_eq!(
        w.host_links().len(),
        1,
        "no half-made link: {:?}",
        w.host_links()
    );

    // pipecd back: the next invocation tells it the deletion it missed.
    w.start_pipecd();
    let (code, out) = w.cni("ADD", "c", &config);
    let alive = w.pipecd.as_mut().map(|c| c.try_wait());
    assert_eq!(code, 0, "{out}\npipecd: {alive:?}\n{}", w.log());
    let pending =
        std::fs::read_to_string(w.dir.join("cni-state/pending-del.json")).unwrap_or_default();
    assert_eq!(pending.trim(), "[]", "the missed deletion was replayed");

    // GC (1.1.0): leases of attachments the runtime no longer lists are released.
    let mut gc = v11.clone();
    gc["cni.dev/valid-attachments"] =
        json!([{"containerID": format!("ctr-{}-a", w.tag), "ifname": "eth0"}]);
    let (code, out) = w.cni_env("GC", &gc, &[("CNI_PATH", CNI_PATH.into())]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(w.leases(), vec![ips[0].to_string()]);

    // An IPAM failure (host-local refuses CNI_ARGS it does not know unless the runtime
    // says IgnoreUnknown, as containerd does): code 102, nothing left behind.
    let links = w.host_links();
    let mut env = w.pod_env("b");
    env.retain(|(k, _)| *k != "CNI_ARGS");
    env.push((
        "CNI_ARGS",
        "K8S_POD_NAMESPACE=shop;K8S_POD_NAME=ghost".into(),
    ));
    let (code, out) = w.cni_env("ADD", &config, &env);
    assert_eq!((code, out["code"].as_u64()), (1, Some(102)), "{out}");
    assert_eq!(w.leases(), vec![ips[0].to_string()]);
    assert_eq!(w.host_links(), links);
    // A pod whose object pipecd never gets: ADD waits `timeoutMs`, then answers 11 and
    // releases what it made (b's namespace is free again since its DEL).
    let mut short = config.clone();
    short["timeoutMs"] = json!(1000);
    env.retain(|(k, _)| *k != "CNI_ARGS");
    env.push((
        "CNI_ARGS",
        "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=ghost".into(),
    ));
    let (code, out) = w.cni_env("ADD", &short, &env);
    assert_eq!((code, out["code"].as_u64()), (1, Some(11)), "{out}");
    assert_eq!(
        w.leases(),
        vec![ips[0].to_string()],
        "the address was released"
    );
    assert_eq!(w.host_links(), links, "the link was removed");
}

#[test]
#[cfg_attr(
    not(feature = "root-tests"),
    ignore = "needs root and network namespaces: run with --features root-tests"
)]
fn bad_input_gets_the_specifications_codes_and_leaves_nothing() {
    ready();
    let w = World::new("b");
    let config = w.config();
    // VERSION.
    let (code, out) = w.cni("VERSION", "a", &json!({"cniVersion": "1.0.0"}));
    assert_eq!(code, 0);
    assert_eq!(out["supportedVersions"], json!(["0.4.0", "1.0.0", "1.1.0"]));
    // Malformed JSON: 6.
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pipec-cni"));
    cmd.env("CNI_COMMAND", "ADD")
        .env("CNI_CONTAINERID", "x")
        .env("CNI_NETNS", format!("/run/netns/{}", w.pod("a")))
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", CNI_PATH)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    let mut child = cmd.spawn().expect("run");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"{not json")
        .expect("write");
    let out = child.wait_with_output().expect("wait");
    let v: Value = serde_json::from_slice(&out.stdout).expect("an error object");
    assert_eq!((out.status.code(), v["code"].as_u64()), (Some(1), Some(6)));
    // An unsupported version: 1.
    let mut old = config.clone();
    old["cniVersion"] = json!("0.2.0");
    assert_eq!(w.cni("ADD", "a", &old).1["code"], 1);
    // A missing CNI_NETNS: 4, naming it.
    let (_, out) = w.cni_env(
        "ADD",
        &config,
        &[
            ("CNI_CONTAINERID", "x".into()),
            ("CNI_IFNAME", "eth0".into()),
            ("CNI_PATH", CNI_PATH.into()),
        ],
    );
    assert_eq!(out["code"], 4);
    assert!(
        out["msg"].as_str().unwrap_or("").contains("CNI_NETNS"),
        "{out}"
    );
    // A namespace that does not exist: 4.
    let (_, out) = w.cni_env(
        "ADD",
        &config,
        &[
            ("CNI_CONTAINERID", "x".into()),
            ("CNI_NETNS", "/run/netns/no-such-namespace".into()),
            ("CNI_IFNAME", "eth0".into()),
            ("CNI_PATH", CNI_PATH.into()),
            ("CNI_ARGS", "K8S_POD_NAMESPACE=shop;K8S_POD_NAME=a".into()),
        ],
    );
    assert_eq!(out["code"], 4, "{out}");
    // pipecd unreachable: 11, nothing allocated.
    let (_, out) = w.cni("ADD", "a", &config);
    assert_eq!(out["code"], 11, "{out}");
    assert!(w.leases().is_empty());
    assert!(w.host_links().is_empty());
    // STATUS and GC need 1.1.0.
    assert_eq!(w.cni("STATUS", "a", &config).1["code"], 1);
    // DEL of a container nobody knows succeeds.
    assert_eq!(w.cni("DEL", "a", &config).0, 0);
}

/// The benchmark of issue 14 (BENCHMARKS.md): CNI ADD → pod ready with its policy live,
/// over 200 sequential pods and again with 10 in parallel, split into IPAM, link set-up and
/// pipecd's apply. Run as root:
/// `cargo test --release -p pipec-cni --test e2e -- --ignored --nocapture add_latency`.
#[test]
#[ignore = "a benchmark: run by hand, figures in BENCHMARKS.md"]
fn add_latency() {
    ready();
    const PODS: usize = 200;
    let names: Vec<String> = (0..PODS).map(|i| format!("p{i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut w = World::with_pods("x", &refs);
    let mut manifests = CLUSTER.to_string();
    for p in &names {
        manifests.push_str(&pod_yaml(p, "bench", None));
    }
    std::fs::write(w.dir.join("m/cluster.yaml"), &manifests).expect("manifests");
    w.start_pipecd();
    let config = w.config();
    let add = |p: &str| {
        let mut env = w.pod_env(p);
        env.push(("PIPEC_CNI_TIMING", "1".into()));
        let t = Instant::now();
        let (code, out, err) = w.cni_full("ADD", &config, &env);
        let total = t.elapsed().as_micros();
        assert_eq!(code, 0, "{out}\n{err}");
        let parts: Value = err
            .lines()
            .find_map(|l| serde_json::from_str(l).ok())
            .expect("the timing line");
        let us = |k: &str| parts[k].as_u64().expect("a number") as u128;
        [total, us("ipam_us"), us("link_us"), us("pipecd_us")]
    };
    // Warm up pipecd's first load with one pod outside the measurement.
    add(&names[0]);
    let start = Instant::now();
    let sequential: Vec<[u128; 4]> = names[1..].iter().map(|p| add(p)).collect();
    let sequential_rate = sequential.len() as f64 / start.elapsed().as_secs_f64();
    for p in &names {
        assert_eq!(w.cni("DEL", p, &config).0, 0);
    }
    let start = Instant::now();
    let chunks: Vec<Vec<String>> = (0..10)
        .map(|k| names.iter().skip(k).step_by(10).cloned().collect())
        .collect();
    let parallel: Vec<[u128; 4]> = std::thread::scope(|s| {
        let handles: Vec<_> = chunks
            .iter()
            .map(|chunk| s.spawn(|| chunk.iter().map(|p| add(p)).collect::<Vec<_>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("worker"))
            .collect()
    });
    let parallel_rate = parallel.len() as f64 / start.elapsed().as_secs_f64();
    let show = |name: &str, rows: &[[u128; 4]], rate: f64| {
        println!("{name}: {} pods, {rate:.1} pods/s", rows.len());
        for (i, part) in ["total (process)", "ipam", "link", "pipecd apply"]
            .iter()
            .enumerate()
        {
            let mut v: Vec<u128> = rows.iter().map(|r| r[i]).collect();
            v.sort_unstable();
            let q = |f: f64| v[((v.len() - 1) as f64 * f).round() as usize] as f64 / 1000.0;
            println!("  {part:16} p50 {:7.2} ms  p99 {:7.2} ms", q(0.5), q(0.99));
        }
    };
    show("sequential", &sequential, sequential_rate);
    show("10 in parallel", &parallel, parallel_rate);
}

/// The policy states the make-before-break test moves between: the server's ingress from
/// the client only, from everyone (no policy), from nobody.
const STATES: [&str; 3] = [
    "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: server-in, namespace: shop}
spec:
  podSelector: {matchLabels: {app: server}}
  policyTypes: [Ingress]
  ingress:
  - from: [{podSelector: {matchLabels: {app: client}}}]
",
    "",
    "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: server-in, namespace: shop}
spec:
  podSelector: {matchLabels: {app: server}}
  policyTypes: [Ingress]
",
];

/// pipecd's session generation, through its control socket.
fn generation(socket: &Path) -> u64 {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let channel = pipec_proto::connect(socket).await.ok()?;
        let mut c = pipec_proto::v1::control_client::ControlClient::new(channel);
        c.status(pipec_proto::v1::StatusRequest {})
            .await
            .ok()
            .map(|r| r.into_inner().generation)
    })
    .unwrap_or(0)
}

/// While 100 policy changes are applied, probes run between the pods; every probe's result
/// must be the reference verdict of the state before or after a change it overlapped, never
/// anything else (make-before-break).
#[test]
#[cfg_attr(
    not(feature = "root-tests"),
    ignore = "needs root and network namespaces: run with --features root-tests"
)]
fn traffic_sees_no_violation_while_100_changes_apply() {
    ready();
    let mut w = World::new("m");
    // The test's policy lives in its own file; the cluster file keeps no policy.
    let cut = CLUSTER
        .find("---\napiVersion: networking.k8s.io/v1")
        .expect("policy");
    let mut manifests = CLUSTER[..cut].to_string();
    for (p, app) in APPS {
        manifests.push_str(&pod_yaml(p, app, None));
    }
    std::fs::write(w.dir.join("m/cluster.yaml"), &manifests).expect("manifests");
    std::fs::write(w.dir.join("m/policy.yaml"), STATES[0]).expect("policy");
    w.start_pipecd();
    let config = w.config();
    let mut ips = Vec::new();
    for (p, _) in APPS {
        let (code, result) = w.cni("ADD", p, &config);
        assert_eq!(code, 0, "ADD {p}: {result}\n{}", w.log());
        let addr = result["ips"][0]["address"].as_str().expect("address");
        ips.push(ip_of(addr));
    }
    serve_all(&w, &ips);
    // The reference verdict of each probe in each state.
    let probes = [
        ("a", 1usize, false),
        ("c", 1, false),
        ("a", 1, true),
        ("c", 1, true),
    ];
    let verdict: Vec<Vec<bool>> = STATES
        .iter()
        .map(|policy| {
            let mut text = manifests.clone();
            for (i, (p, app)) in APPS.iter().enumerate() {
                text = text.replace(
                    &pod_yaml(p, app, None),
                    &pod_yaml(p, app, Some(&ips[i].to_string())),
                );
            }
            if !policy.is_empty() {
                text.push_str("---\n");
                text.push_str(policy);
            }
            probes
                .iter()
                .map(|(from, to, udp)| {
                    let port = if *udp { "8081/UDP" } else { "8080/TCP" };
                    reference(
                        &text,
                        &format!("shop/{from}"),
                        &format!("shop/{}", APPS[*to].0),
                        port,
                    )
                })
                .collect()
        })
        .collect();
    assert_ne!(
        verdict[1], verdict[2],
        "the states differ, so the probes can tell"
    );

    // The timeline: (state, from) for each change, taken when the change is applied.
    let stop = std::sync::atomic::AtomicBool::new(false);
    // Probes finished so far: the change loop waits for one more after each change, so that
    // every change is probed however fast pipecd applies it (a denied TCP probe waits out
    // its 500 ms timeout, and pipecd applies a policy change in a few ms).
    let probed = std::sync::atomic::AtomicUsize::new(0);
    let t0 = Instant::now();
    let mut timeline: Vec<(usize, Duration, Duration)> = vec![(0, Duration::ZERO, Duration::ZERO)];
    let results = std::thread::scope(|s| {
        let probing = s.spawn(|| {
            let mut out = Vec::new();
            let mut k = 0;
            // Bounded: the change loop ends it, or 5,000 probes.
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && out.len() < 5_000 {
                let (from, to, udp) = probes[k % probes.len()];
                let port = if udp { UDP_PORT } else { TCP_PORT };
                let start = t0.elapsed();
                let got = connects(&w.pod(from), SocketAddr::new(ips[to], port), udp);
                out.push((k % probes.len(), start, t0.elapsed(), got));
                probed.store(out.len(), std::sync::atomic::Ordering::Relaxed);
                k += 1;
            }
            out
        });
        let socket = w.socket();
        for change in 1..=100 {
            let state = change % STATES.len();
            let g = generation(&socket);
            let written = t0.elapsed();
            let tmp = w.dir.join("m/.policy.yaml.tmp");
            std::fs::write(&tmp, STATES[state]).expect("write");
            std::fs::rename(&tmp, w.dir.join("m/policy.yaml")).expect("rename");
            let deadline = Instant::now() + Duration::from_secs(20);
            while generation(&socket) <= g {
                assert!(
                    Instant::now() < deadline,
                    "change {change} not applied\n{}",
                    w.log()
                );
                std::thread::sleep(Duration::from_millis(5));
            }
            timeline.push((state, written, t0.elapsed()));
            // At least one probe ends after this change was applied (bounded: a probe lasts
            // at most about a second).
            let seen = probed.load(std::sync::atomic::Ordering::Relaxed);
            let deadline = Instant::now() + Duration::from_secs(5);
            while probed.load(std::sync::atomic::Ordering::Relaxed) <= seen
                && Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        probing.join().expect("probes")
    });
    // A probe may see any state in force between its start and its end: the state before
    // the last change applied by its start, up to the last change written by its end.
    let mut violations = Vec::new();
    for (probe, start, end, got) in &results {
        let allowed: Vec<usize> = timeline
            .iter()
            .enumerate()
            .filter(|(i, (_, written, _))| {
                let applied_before_start = timeline.get(i + 1).is_none_or(|n| n.2 > *start);
                *written <= *end && applied_before_start
            })
            .map(|(_, (state, _, _))| *state)
            .collect();
        if !allowed.iter().any(|s| verdict[*s][*probe] == *got) {
            violations.push(format!(
                "probe {:?} at {start:?}..{end:?} got {got}, states {allowed:?}",
                probes[*probe]
            ));
        }
    }
    // The change loop waits for a probe to end after each change, so at least one ran per
    // change.
    assert!(results.len() >= 100, "only {} probes ran", results.len());
    assert!(
        violations.is_empty(),
        "{} of {} probes violated:\n{}",
        violations.len(),
        results.len(),
        violations.join("\n")
    );
    println!("{} probes across 100 changes, no violation", results.len());
}

/// Chained after Debian's `ptp` plugin (which makes the veth pair and asks host-local): the
/// previous result names the host end, pipecd attaches there, the result passes through,
/// and the policy decides real traffic as the reference does.
#[test]
#[cfg_attr(
    not(feature = "root-tests"),
    ignore = "needs root and network namespaces: run with --features root-tests"
)]
fn chained_after_ptp_the_policy_holds() {
    ready();
    let mut w = World::new("k");
    w.start_with_apps();
    let ptp = json!({
        "cniVersion": "1.0.0",
        "name": format!("pipec-{}", w.tag),
        "type": "ptp",
        "ipam": {
            "type": "host-local",
            "ranges": [[{"subnet": "10.77.1.0/24"}]],
            "dataDir": w.dir.join("ipam"),
        }
    });
    let mut ips = Vec::new();
    for (p, _) in APPS {
        let env = w.pod_env(p);
        // ptp is run the way pipec-cni is: in the node's namespace with the CNI environment.
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{}", w.node()))
            .arg(Path::new(CNI_PATH).join("ptp"))
            .env("CNI_COMMAND", "ADD")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        for (k, v) in &env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("ptp");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(ptp.to_string().as_bytes())
            .expect("write");
        let out = child.wait_with_output().expect("ptp");
        let prev: Value = serde_json::from_slice(&out.stdout).expect("ptp's result");
        assert!(out.status.success(), "ptp: {prev}");
        let chained = json!({
            "cniVersion": "1.0.0",
            "name": format!("pipec-{}", w.tag),
            "type": "pipec-cni",
            "pipecd": format!("unix:{}", w.socket().display()),
            "stateDir": w.dir.join("cni-state"),
            "prevResult": prev,
        });
        let (code, result) = w.cni_env("ADD", &chained, &env);
        assert_eq!(code, 0, "{result}\n{}", w.log());
        assert_eq!(result["ips"], prev["ips"], "the result passes through");
        let addr = prev["ips"][0]["address"].as_str().expect("address");
        ips.push(ip_of(addr));
    }
    serve_all(&w, &ips);
    assert!(connects(
        &w.pod("a"),
        SocketAddr::new(ips[1], TCP_PORT),
        false
    ));
    assert!(!connects(
        &w.pod("c"),
        SocketAddr::new(ips[1], TCP_PORT),
        false
    ));
    assert!(connects(
        &w.pod("b"),
        SocketAddr::new(ips[2], UDP_PORT),
        true
    ));
}
