//! `pipecd` as it runs: started by its own process id, driven by writing into its manifests
//! directory, checked through its HTTP endpoints against a fresh compile of the same state.

// Dependencies of the package that this target does not use itself; they serve its
// other targets. `unused_crate_dependencies` checks every target against all of them.
use anyhow as _;
use aya as _;
use base64 as _;
use clap as _;
use futures as _;
use gencluster as _;
use ipnet as _;
use kube as _;
use mimalloc as _;
use notify as _;
use pipec_cpt as _;
use pipec_ebpf_common as _;
use pipec_proto as _;
use pipec_rte_flow as _;
use serde as _;
use serde_yaml as _;
use tokio as _;
use tokio_stream as _;
use tonic as _;
use tracing as _;
use tracing_subscriber as _;
// The offload unit tests' and the offload benchmark's dev-dependencies.
use gencluster as _;
use proptest as _;

use pipec::session::{Hardware, Session, SessionOptions};
use pipec_netns::{enter_netns, in_netns};
use pipec_runtime::daemon::backends;
use pipec_runtime::device::expected_dump;
use pipec_runtime::state::StateDir;
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/ipsec");

/// A test's scratch directory and daemon, removed and stopped (by pid) on drop.
struct Run {
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
    bpffs: Option<PathBuf>,
    /// The network namespace the daemon runs in (`ip netns exec`), when not the test's.
    netns: Option<String>,
}

impl Run {
    fn new(tag: &str) -> Run {
        let dir = std::env::temp_dir().join(format!("pipecd-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("m")).expect("scratch dir");
        for f in ["cluster.yaml", "ipsec-keys.yaml"] {
            std::fs::copy(Path::new(EXAMPLE).join(f), dir.join("m").join(f)).expect("copy");
        }
        Run {
            dir,
            port: free_port(),
            child: None,
            bpffs: None,
            netns: None,
        }
    }

    fn manifests(&self) -> PathBuf {
        self.dir.join("m")
    }

    fn start(&mut self, extra: &[&str]) {
        // `ip netns exec` executes the daemon in place (no fork), so the child's pid is the
        // daemon's and stopping it by pid stops the daemon.
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, env!("CARGO_BIN_EXE_pipecd")]);
                c
            }
            None => Command::new(env!("CARGO_BIN_EXE_pipecd")),
        };
        cmd.arg("--manifests")
            .arg(self.manifests())
            .args(["--node", "node-a", "--metrics-addr"])
            .arg(format!("127.0.0.1:{}", self.port))
            .arg("--state-dir")
            .arg(self.dir.join("state"))
            .args(extra)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.dir.join("log")).expect("log"));
        self.child = Some(cmd.spawn().expect("start pipecd"));
        self.wait("the first full state", |r| {
            r.get("/readyz").is_some_and(|b| b == "ready\n")
        });
    }

    /// Sends `signal` (a `kill` signal name) to the daemon by its pid.
    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("a running pipecd").id();
        let st = Command::new("kill")
            .args([&format!("-{signal}"), &pid.to_string()])
            .status()
            .expect("kill");
        assert!(st.success(), "kill -{signal} {pid}");
    }

    /// Waits at most `bound` for the daemon to exit; its exit code and how long it took.
    fn wait_exit(&mut self, bound: Duration) -> (Option<i32>, Duration) {
        let start = Instant::now();
        let child = self.child.as_mut().expect("a running pipecd");
        for _ in 0..10_000 {
            if let Some(st) = child.try_wait().expect("try_wait") {
                self.child = None;
                return (st.code(), start.elapsed());
            }
            if start.elapsed() > bound {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        panic!("pipecd did not exit within {bound:?}; log:\n{}", self.log());
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }

    /// Polls `ok` every 20 ms for at most 20 s.
    fn wait(&self, what: &str, ok: impl Fn(&Run) -> bool) {
        let start = Instant::now();
        for _ in 0..1000 {
            if ok(self) {
                return;
            }
            if start.elapsed() > Duration::from_secs(20) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("pipecd did not reach {what}; log:\n{}", self.log());
    }

    /// Writes a file atomically (a rename), as the daemon asks.
    fn write(&self, name: &str, text: &str) {
        let tmp = self.manifests().join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).expect("write");
        std::fs::rename(&tmp, self.manifests().join(name)).expect("rename");
    }

    /// GET on the daemon's loopback, in its network namespace ([`get`]).
    fn get(&self, path: &str) -> Option<String> {
        get_in(self.netns.as_deref(), self.port, path)
    }

    fn status(&self) -> serde_json::Value {
        self.get("/status")
            .and_then(|b| serde_json::from_str(&b).ok())
            .unwrap_or(serde_json::Value::Null)
    }

    fn generation(&self) -> u64 {
        self.status()["generation"].as_u64().unwrap_or(0)
    }

    /// What a fresh compile of the directory (without `skip`) gives, numbered with the
    /// identity numbers the daemon kept.
    fn expected(&self, skip: &[&str]) -> String {
        let pins = StateDir::open(&self.dir.join("state"))
            .and_then(|s| s.read_pins())
            .expect("pins");
        let options = SessionOptions {
            node: Some("node-a".into()),
            hardware: Some(Hardware::Named("octeon-cn10k".into())),
            pins,
            ..SessionOptions::default()
        };
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.manifests())
            .expect("dir")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
                !name.starts_with('.') && !skip.contains(&name)
            })
            .collect();
        files.sort();
        let s = Session::load(&files, options, &backends).unwrap_or_else(|e| panic!("{e}"));
        expected_dump(&s).expect("dump")
    }

    fn state(&self) -> String {
        self.get("/debug/state").expect("/debug/state")
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        self.kill9();
        if let Some(b) = &self.bpffs {
            let _ = std::fs::remove_dir_all(b);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// GET on loopback: the status code, whether the daemon served an earlier answer again
/// (an apply held its state), and the body.
fn answer(port: u16, path: &str) -> Option<(u16, bool, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    let code = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, head.contains("X-Pipecd-Stale-Ms"), body.to_string()))
}

/// GET on loopback; the body of a 200 answer that reflects the daemon's current state.
/// The metrics and status endpoints never wait for an apply (they serve their last answer
/// again, or 503 before the first one), so this asks again, every 20 ms for at most 10 s,
/// until an answer is current; `None` when none is.
fn get(port: u16, path: &str) -> Option<String> {
    get_in(None, port, path)
}

/// [`get`] from a thread in the network namespace `ns` (the test's own when `None`).
fn get_in(ns: Option<&str>, port: u16, path: &str) -> Option<String> {
    let start = Instant::now();
    for _ in 0..500 {
        let got = match ns {
            Some(ns) => in_netns(ns, || answer(port, path)),
            None => answer(port, path),
        };
        match got {
            Some((200, false, body)) => return Some(body),
            Some((503, _, _)) if matches!(path, "/metrics" | "/status") => {}
            Some((200, true, _)) => {}
            _ => return None,
        }
        if start.elapsed() > Duration::from_secs(10) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

const POD: &str = "apiVersion: v1
kind: Pod
metadata: {name: web-NAME, namespace: shop, labels: {app: server}}
spec:
  nodeName: node-a
  containers: [{name: s, image: nginx, ports: [{containerPort: 80, protocol: TCP}]}]
status: {podIP: 10.10.1.ADDR, podIPs: [{ip: 10.10.1.ADDR}]}
";

fn pod(n: u32) -> String {
    POD.replace("NAME", &n.to_string())
        .replace("ADDR", &(100 + n).to_string())
}

#[test]
fn the_model_datapath_follows_the_directory_and_keeps_the_last_good_state() {
    let mut run = Run::new("model");
    run.start(&["--datapath", "model"]);
    assert_eq!(run.state(), run.expected(&[]));
    let metrics = get(run.port, "/metrics").expect("/metrics");
    assert!(metrics.contains("pipecd_ready 1"), "{metrics}");
    assert!(
        metrics.contains("pipecd_entries{target=\"cpt\",table=\"sas\"} 4"),
        "{metrics}"
    );

    // A pod on this node, then more in the same file, then the file removed.
    let g = run.generation();
    run.write("pods.yaml", &pod(1));
    run.wait("the pod applied", |r| r.generation() > g);
    assert_eq!(run.state(), run.expected(&[]));
    let g = run.generation();
    run.write("pods.yaml", &format!("{}---\n{}", pod(2), pod(3)));
    run.wait("the pods replaced", |r| r.generation() > g);
    assert_eq!(run.state(), run.expected(&[]));
    assert!(
        !run.state().contains(&hex_v4([10, 10, 1, 101])),
        "web-1 left the file"
    );

    // A file that does not parse changes nothing and is reported.
    let before = run.state();
    run.write(
        "broken.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: x\n",
    );
    run.wait("the bad file reported", |r| {
        r.status()["bad_files"]
            .as_object()
            .is_some_and(|m| !m.is_empty())
    });
    assert_eq!(run.state(), before, "the last good state stays");
    let metrics = get(run.port, "/metrics").expect("/metrics");
    assert!(metrics.contains("pipecd_bad_sources 1"), "{metrics}");
    // A file the API server would reject (a port out of range) is refused the same way.
    run.write(
        "badport.yaml",
        &pod(4).replace("containerPort: 80", "containerPort: 70000"),
    );
    run.wait("the refused file reported", |r| {
        r.status()["bad_files"]
            .as_object()
            .is_some_and(|m| m.len() == 2)
    });
    assert_eq!(run.state(), before);

    // Fixing it applies it.
    let g = run.generation();
    run.write("broken.yaml", &pod(5));
    run.wait("the fixed file applied", |r| r.generation() > g);
    assert_eq!(run.state(), run.expected(&["badport.yaml"]));

    // A key rotation: new SAs in, the old inbound ones kept for the window.
    let keys = std::fs::read_to_string(run.manifests().join("ipsec-keys.yaml")).expect("keys");
    let g = run.generation();
    run.write(
        "ipsec-keys.yaml",
        &keys.replace("3+ rfc4106(gcm(aes)) 5d", "4+ rfc4106(gcm(aes)) 6d"),
    );
    run.wait("the rotation applied", |r| r.generation() > g);
    let state = run.state();
    for line in [
        "sa inbound node-b 3",
        "sa inbound node-b 4",
        "sa outbound node-b 4",
    ] {
        assert!(state.contains(line), "{line}:\n{state}");
    }
    assert!(!state.contains("sa outbound node-b 3"), "{state}");
    assert!(!run.log().contains("6d1a2b3c"), "a key reached the log");

    // The removed file's pods go.
    let g = run.generation();
    std::fs::remove_file(run.manifests().join("pods.yaml")).expect("rm");
    run.wait("the removal applied", |r| r.generation() > g);
    let ebpf = |s: &str| {
        s.lines()
            .filter(|l| l.starts_with("ebpf "))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(ebpf(&run.state()), ebpf(&run.expected(&["badport.yaml"])));
}

/// With `--ebpf-map-entries` sizing the `endpoints` map to one more entry than the
/// directory needs, one more pod is applied and the next is refused whole: the reason names
/// the map and the flag, the last good state stays, and a larger map takes both.
#[test]
fn a_state_that_overfills_an_ebpf_map_is_refused_and_the_flag_sizes_it() {
    let mut run = Run::new("mapsize");
    let endpoints = |state: &str| {
        state
            .lines()
            .filter(|l| l.starts_with("ebpf endpoints "))
            .count()
    };
    let room = endpoints(&run.expected(&[])) + 1;
    let flag = format!("endpoints={room}");
    run.start(&["--datapath", "model", "--ebpf-map-entries", &flag]);
    let g = run.generation();
    run.write("pod-1.yaml", &pod(1));
    run.wait("the first pod applied", |r| r.generation() > g);
    assert_eq!(endpoints(&run.state()), room, "the map is full");
    let metrics = get(run.port, "/metrics").expect("/metrics");
    let line = format!("pipecd_entries{{target=\"ebpf\",table=\"endpoints\"}} {room}\n");
    assert!(metrics.contains(&line), "{line} in:\n{metrics}");
    let before = run.state();
    run.write("pod-2.yaml", &pod(2));
    run.wait("the second pod refused", |r| {
        r.status()["bad_files"]
            .as_object()
            .is_some_and(|m| !m.is_empty())
    });
    let status = run.status();
    let why = status["bad_files"].to_string();
    assert!(
        why.contains("`endpoints` map entries")
            && why.contains(&format!("{} needed", room + 1))
            && why.contains("--ebpf-map-entries endpoints=N"),
        "{why}"
    );
    assert_eq!(run.state(), before, "nothing of the refused pod is applied");
    let metrics = get(run.port, "/metrics").expect("/metrics");
    assert!(metrics.contains("pipecd_bad_sources 1"), "{metrics}");
    run.kill9();

    // A bad size is refused at start, naming what is wrong.
    let out = Command::new(env!("CARGO_BIN_EXE_pipecd"))
        .args(["--manifests", "/nonexistent", "--node", "node-a"])
        .args(["--datapath", "model", "--ebpf-map-entries", "polcy=10"])
        .output()
        .expect("pipecd");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("`polcy` is not a datapath map"), "{err}");

    // Restarted with room for both, the daemon applies both.
    run.start(&[
        "--datapath",
        "model",
        "--ebpf-map-entries",
        "endpoints=1024",
    ]);
    assert_eq!(run.state(), run.expected(&[]));
    assert_eq!(endpoints(&run.state()), room + 1);
}

/// EAL's runtime directory of a file prefix, removed on drop: EAL leaves it behind when its
/// process ends. DPDK 22.11 puts it under /var/run/dpdk for root, else under
/// $XDG_RUNTIME_DIR/dpdk, or /tmp/dpdk without that variable.
#[cfg(feature = "dpdk")]
struct EalDir(PathBuf);

#[cfg(feature = "dpdk")]
impl EalDir {
    fn of(prefix: &str) -> EalDir {
        let root = std::fs::read_to_string("/proc/self/status")
            .unwrap_or_default()
            .lines()
            .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"));
        let base = match (root, std::env::var_os("XDG_RUNTIME_DIR")) {
            (true, _) => PathBuf::from("/var/run"),
            (false, Some(dir)) => PathBuf::from(dir),
            (false, None) => PathBuf::from("/tmp"),
        };
        EalDir(base.join("dpdk").join(prefix))
    }
}

#[cfg(feature = "dpdk")]
impl Drop for EalDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The lines of a `/debug/state` dump that start with `kind `, without it.
#[cfg(feature = "dpdk")]
fn lines_of<'s>(state: &'s str, kind: &str) -> std::collections::BTreeSet<&'s str> {
    state
        .lines()
        .filter_map(|l| l.strip_prefix(kind).and_then(|l| l.strip_prefix(' ')))
        .collect()
}

/// A single-thread runtime and a channel to the daemon's control socket, connected within
/// 10 s, for the tests that call the daemon as the CLI and the CNI plugin do.
fn control(socket: &Path) -> (tokio::runtime::Runtime, tonic::transport::Channel) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let channel = rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(10), pipec_proto::connect(socket))
            .await
            .expect("the control socket answers in time")
            .expect("connect to the control socket")
    });
    (rt, channel)
}

/// `pipec explain --live` (text) over the daemon's control socket.
#[cfg(feature = "dpdk")]
fn explain_live(socket: &Path) -> String {
    use pipec_proto::v1::control_client::ControlClient;
    use pipec_proto::v1::{ExplainRequest, Format};
    let (rt, channel) = control(socket);
    rt.block_on(async {
        let mut client = ControlClient::new(channel);
        let call = client.explain(ExplainRequest {
            rule: String::new(),
            format: Format::Text as i32,
        });
        tokio::time::timeout(Duration::from_secs(20), call)
            .await
            .expect("explain answers in time")
            .expect("explain")
            .into_inner()
            .output
    })
}

/// The hardware flow table on a real DPDK port: pipecd with `--hw-port net_null0` sends the
/// session's rte_flow operations through `rte_flow_create`/`rte_flow_destroy` (the `dpdk`
/// feature's FFI). What the port accepts is in the dump as `flow` lines (pipecd lists the
/// keys it holds a real handle for) and what it refuses as `refused` lines with the errno:
/// together they are exactly the rules of `--emit rte_flow` of the same state, none both,
/// while the eBPF maps hold the whole pipeline. net_null in DPDK 22.11 has no flow
/// operations (its dev_ops set no `flow_ops_get`, so `rte_flow_ops_get` fails with ENOSYS,
/// as targets/rte_flow/tests/dpdk.rs found), so on this port every rule is refused: the
/// test shows the refusal path end to end, in status, metrics and `explain --live`.
#[cfg(feature = "dpdk")]
#[test]
fn a_dpdk_port_holds_what_it_accepts_and_what_it_refuses_stays_in_ebpf() {
    // Declared before the run, so that it is dropped after the daemon is stopped.
    let prefix = format!("pipecd-dpdk-{}", std::process::id());
    let _eal_dir = EalDir::of(&prefix);
    let mut run = Run::new("dpdk");
    let socket = run.dir.join("control.sock");
    let control = format!("unix:{}", socket.display());
    // A file prefix of its own, so that this EAL shares no runtime files with another
    // test's; without hugepages and PCI, EAL needs no device and no root.
    let eal = format!(
        "-l 0 --no-huge --no-pci -m 128 --file-prefix {prefix} --vdev net_null0 --log-level lib.eal:error"
    );
    run.start(&[
        "--datapath",
        "model",
        "--control",
        &control,
        "--hw-port",
        "net_null0",
        "--dpdk-args",
        &eal,
    ]);

    // Every create the port saw so far: each refused one is counted once.
    let mut created: u64 = 0;
    let mut last_wanted: std::collections::BTreeSet<String> = Default::default();
    let check = |run: &Run, created: &mut u64, last: &mut std::collections::BTreeSet<String>| {
        let state = run.state();
        let expected = run.expected(&[]);
        assert_eq!(
            lines_of(&state, "ebpf"),
            lines_of(&expected, "ebpf"),
            "the eBPF maps hold the whole pipeline"
        );
        let wanted = lines_of(&expected, "flow");
        assert!(
            !wanted.is_empty(),
            "the state has hardware rules:\n{expected}"
        );
        let held = lines_of(&state, "flow");
        let refused: std::collections::BTreeMap<&str, &str> = lines_of(&state, "refused")
            .into_iter()
            .map(|l| l.rsplit_once(' ').expect("refused KEY ERRNO"))
            .collect();
        let mut together: std::collections::BTreeSet<&str> = held.clone();
        together.extend(refused.keys());
        assert_eq!(together, wanted, "held and refused are the emitted rules");
        assert!(held.iter().all(|k| !refused.contains_key(k)), "none both");
        // net_null has no flow operations at all.
        assert!(held.is_empty(), "{state}");
        assert!(refused.values().all(|e| *e == "ENOSYS"), "{state}");

        let status = run.status();
        let hw = &status["hardware"];
        assert_eq!(hw["port"], "net_null0", "{status}");
        assert_eq!(hw["held"], held.len(), "{status}");
        let listed = hw["refused"].as_object().expect("refused");
        assert_eq!(listed.len(), refused.len(), "{status}");
        for (key, r) in listed {
            assert_eq!(r["errno"], "ENOSYS", "{key}: {r}");
            assert_eq!(r["message"], "Function not implemented", "{key}: {r}");
        }

        // A change creates only the rules that are new to it, so each rule wanted for the
        // first time was one refused create more.
        let wanted: std::collections::BTreeSet<String> =
            wanted.iter().map(|k| (*k).to_string()).collect();
        *created += wanted.difference(last).count() as u64;
        *last = wanted;
        let metrics = get(run.port, "/metrics").expect("/metrics");
        let line = format!("pipecd_device_refusals_total{{errno=\"ENOSYS\"}} {created}");
        assert!(metrics.contains(&line), "{line}:\n{metrics}");

        let explain = explain_live(&socket);
        let summary = format!(
            "device refusals: {} hardware rules decided in eBPF (ENOSYS {})",
            refused.len(),
            refused.len()
        );
        assert!(explain.contains(&summary), "{summary}:\n{explain}");
        assert!(
            explain.contains("device refused (ENOSYS): Function not implemented"),
            "{explain}"
        );
    };
    check(&run, &mut created, &mut last_wanted);
    // EAL pins the thread that starts it to its main lcore (`-l 0`); pipecd starts it on a
    // thread of its own, so that the daemon's threads keep the cores they were given.
    let allowed = |status: &str| {
        status
            .lines()
            .find(|l| l.starts_with("Cpus_allowed_list:"))
            .map(str::to_string)
    };
    let pid = run.child.as_ref().expect("a running pipecd").id();
    let own = std::fs::read_to_string("/proc/self/status").expect("own status");
    let daemon = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("pipecd status");
    assert_eq!(
        allowed(&daemon),
        allowed(&own),
        "pipecd's main thread is not pinned"
    );
    assert!(
        run.log().contains("the port refused a flow rule"),
        "{}",
        run.log()
    );

    // Pods on this node bring rules of their own; removing them destroys theirs.
    for pods in [format!("{}---\n{}", pod(1), pod(2)), pod(3)] {
        let g = run.generation();
        run.write("pods.yaml", &pods);
        run.wait("the pods applied", |r| r.generation() > g);
        check(&run, &mut created, &mut last_wanted);
    }
    // The pods' rules came through the session's operations (`Device::apply`), not only the
    // first reconciliation.
    let first = lines_of(&run.expected(&["pods.yaml"]), "flow").len() as u64;
    assert!(
        created > first,
        "the pods brought hardware rules of their own"
    );
    let g = run.generation();
    std::fs::remove_file(run.manifests().join("pods.yaml")).expect("rm");
    run.wait("the removal applied", |r| r.generation() > g);
    check(&run, &mut created, &mut last_wanted);
}

/// A pod with a label set of its own, so that each one is a new identity (and a new pin to
/// write).
fn labelled_pod(n: u32) -> String {
    pod(n).replace(
        "labels: {app: server}",
        &format!("labels: {{app: server, burst: b{n}}}"),
    )
}

/// SIGTERM in the middle of a burst of changes: pipecd finishes or abandons the apply in
/// progress within the bound, persists its state and exits 0; the state files it leaves
/// load, and a restart on them reconciles to the directory.
#[test]
fn sigterm_during_a_burst_stops_within_the_bound_with_loadable_state() {
    let mut run = Run::new("sigterm");
    run.start(&["--datapath", "model"]);
    // The first pod is applied before the burst, so that the pins it gets must be kept.
    let g = run.generation();
    run.write("pod-1.yaml", &labelled_pod(1));
    run.wait("the first pod applied", |r| r.generation() > g);
    let mut sent = None;
    for n in 2..=120u32 {
        run.write(&format!("pod-{n}.yaml"), &labelled_pod(n));
        if n == 40 {
            run.signal("TERM");
            sent = Some(Instant::now());
        }
    }
    let sent = sent.expect("the signal was sent");
    let (code, _) = run.wait_exit(Duration::from_secs(20));
    let took = sent.elapsed();
    eprintln!("stopped {took:?} after SIGTERM; log:\n{}", run.log());
    assert_eq!(code, Some(0), "log:\n{}", run.log());
    // The daemon's bound is 5 s; the margin is for the process to be reaped and seen.
    assert!(
        took <= pipec_runtime::shutdown::BOUND + Duration::from_secs(1),
        "stopping took {took:?}; log:\n{}",
        run.log()
    );
    let log = run.log();
    assert!(
        log.contains("stopped; the state is persisted") || log.contains("abandoned"),
        "{log}"
    );
    // Every state file loads, and the pins name identities of the burst's pods (which were
    // applied before the signal arrived).
    let state = StateDir::open(&run.dir.join("state")).expect("state dir");
    let pins = state.read_pins().expect("the pins load");
    assert!(
        pins.numbers
            .keys()
            .any(|l| format!("{l:?}").contains("b1\"")),
        "{pins:?}"
    );
    state.read_attachments().expect("the attachments load");

    // A restart on the same state comes up with the pins it left and reconciles to the
    // whole directory, the files written after the signal included.
    run.start(&["--datapath", "model"]);
    assert_eq!(run.state(), run.expected(&[]));
    assert!(
        run.state().contains(&hex_v4([10, 10, 1, 220])),
        "the last pod"
    );
}

fn hex_v4(o: [u8; 4]) -> String {
    o.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn an_unknown_node_is_an_error_naming_close_matches() {
    let mut run = Run::new("node");
    let err = run.refused_start(&["--node", "node-x"]);
    assert!(err.contains("did you mean node-a?"), "{err}");
}

impl Run {
    /// Starts pipecd on the model datapath with `args` (`--node` among them) and expects
    /// it to refuse them: it must exit 1 within 20 s (stopped by pid otherwise). Returns
    /// its log.
    fn refused_start(&mut self, args: &[&str]) -> String {
        let child = Command::new(env!("CARGO_BIN_EXE_pipecd"))
            .arg("--manifests")
            .arg(self.manifests())
            .args(["--datapath", "model", "--metrics-addr"])
            .arg(format!("127.0.0.1:{}", self.port))
            .args(args)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.dir.join("log")).expect("log"))
            .spawn()
            .expect("start pipecd");
        self.child = Some(child);
        assert_eq!(self.wait_exit(Duration::from_secs(20)).0, Some(1));
        self.log()
    }
}

/// `--hw-profile` chooses the hardware profile: the default is DPDK 22.11's, whose
/// connection offload forwards only within the SDP PF; `octeon-cn10k-dpdk23.07` forwards
/// to any port, and `/status` says which; an unknown name stops pipecd at start.
#[test]
fn the_hardware_profile_is_chosen_by_flag() {
    let mut run = Run::new("profile-default");
    run.start(&["--datapath", "model"]);
    let s = run.status();
    assert_eq!(s["hardware"]["profile"], "octeon-cn10k", "{s}");
    assert_eq!(s["offload"]["forwarding"], "same_pf", "{s}");
    // The profile keeps 1,024 entries from the plan for connection offload; they are free
    // beside the plan's own room.
    assert_eq!(s["offload"]["kept_from_the_plan"], 1024, "{s}");
    let free = s["offload"]["free_entries"].as_u64().expect("free entries");
    assert!(free >= 1024, "{s}");
    drop(run);

    let mut run = Run::new("profile-reserve");
    run.start(&["--datapath", "model", "--offload-reserve", "0"]);
    let s = run.status();
    assert_eq!(s["offload"]["kept_from_the_plan"], 0, "{s}");
    drop(run);

    let mut run = Run::new("profile-2307");
    run.start(&[
        "--datapath",
        "model",
        "--hw-profile",
        "octeon-cn10k-dpdk23.07",
    ]);
    let s = run.status();
    assert_eq!(s["hardware"]["profile"], "octeon-cn10k-dpdk23.07", "{s}");
    assert_eq!(s["offload"]["forwarding"], "any_port", "{s}");
    drop(run);

    let mut run = Run::new("profile-unknown");
    let err = run.refused_start(&["--node", "node-a", "--hw-profile", "octeon-cn9k"]);
    assert!(err.contains("unknown target octeon-cn9k"), "{err}");
    let mut run = Run::new("profile-reserve-too-big");
    let err = run.refused_start(&["--node", "node-a", "--offload-reserve", "9000"]);
    assert!(err.contains("--offload-reserve 9000 is more than"), "{err}");
}

/// The kernel datapath tests run only with the `root-tests` feature (plain `cargo test`
/// needs no root); asked for, they fail loudly without root rather than pass unrun.
fn require_root() {
    let root = std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"));
    assert!(root, "the kernel datapath tests need root");
}

/// With no size asked for and no maps pinned, the kernel datapath creates its maps with
/// the first state: a state with more backends than the default map holds gets a map a
/// quarter larger, rounded up to a power of two, as the kernel reports it; a restart
/// reuses the pinned maps with that size.
#[test]
#[cfg_attr(
    not(feature = "root-tests"),
    ignore = "needs root and bpffs: run with --features root-tests"
)]
fn the_first_state_sizes_new_kernel_maps_and_a_restart_keeps_them() {
    use pipec_ebpf::artifact::{Backend, MapName};
    use pipec_runtime::device::Device;
    require_root();
    let pins = PathBuf::from(format!("/sys/fs/bpf/pipecd-sizes-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&pins);
    let needed = MapName::Backends.capacity() as u32 + 4_000;
    let mut state = pipec_ebpf::EbpfArtifact::default();
    for id in 1..=needed {
        let addr = std::net::IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + id));
        state.backends.insert(id, Backend { addr, port: 80 });
    }
    let roomy = (u64::from(needed) * 5 / 4).next_power_of_two();
    let mut d = Device::kernel_sized_by_state(&pins, None).expect("a device");
    assert!(
        !pins.join("backends").exists(),
        "no map before the first state"
    );
    let sizes = d.size_for(&state).expect("the maps are created");
    assert_eq!(sizes.map(|s| s.get(MapName::Backends)), Some(roomy));
    assert!(pins.join("backends").exists(), "the maps are pinned");
    drop(d);
    let again = Device::kernel_sized_by_state(&pins, None).expect("the pinned maps");
    let held = again.map_sizes().clone();
    drop(again);
    let _ = std::fs::remove_dir_all(&pins);
    assert_eq!(
        held.get(MapName::Backends),
        roomy,
        "the kernel's size, read back"
    );
    assert_eq!(held.get(MapName::Policy), MapName::Policy.capacity());
}

/// `kill -9` during operation, a change while the daemon is down, a restart: the pinned
/// maps carry the old state while it is down, and the restart applies only the difference.
#[test]
#[cfg_attr(
    not(feature = "root-tests"),
    ignore = "needs root and network namespaces: run with --features root-tests"
)]
fn the_kernel_datapath_survives_kill_9_and_reconciles_only_the_difference() {
    require_root();
    let mut run = Run::new("kernel");
    let bpffs = PathBuf::from(format!("/sys/fs/bpf/pipecd-test-{}", std::process::id()));
    run.bpffs = Some(bpffs.clone());
    let bpffs_arg = bpffs.to_str().expect("utf-8").to_string();
    let links = Veths::new(&format!("pcdk-{}", std::process::id()), &["pcw", "pcp"]);
    let (wire, port) = (links.host("pcw"), links.host("pcp"));
    let kernel = [
        "--datapath",
        "kernel",
        "--bpffs",
        &bpffs_arg,
        "--wire",
        &wire,
    ];
    run.start(&kernel);
    assert_eq!(run.state(), run.expected(&[]));
    // No size asked for: the first state created the maps, with the defaults it fits in.
    let metrics = get(run.port, "/metrics").expect("/metrics");
    let line = format!(
        "pipecd_ebpf_map_capacity{{map=\"policy\"}} {}\n",
        pipec_ebpf::artifact::MapName::Policy.capacity()
    );
    assert!(metrics.contains(&line), "{line} in:\n{metrics}");
    let filters = filters_of(&wire);
    assert_eq!(filter_count(&filters, "from_wire"), 1, "{filters}");
    assert_eq!(filter_count(&filters, "to_wire"), 1, "{filters}");
    let g = run.generation();
    run.write("pods.yaml", &pod(1));
    run.wait("the pod applied", |r| r.generation() > g);
    let before = run.state();
    assert_eq!(before, run.expected(&[]));
    let counted = entry_counts(run.port);

    run.kill9();
    // While the daemon is down the maps are still pinned with the last state.
    let dp = pipec_ebpf::Datapath::load(Some(&bpffs)).expect("the pinned maps");
    let pinned = dp.read_entries().expect("read");
    // The metrics counted the maps from the artifact they hold: the same as reading them.
    let mut held: std::collections::BTreeMap<&str, usize> = Default::default();
    for (map, _) in pinned.keys() {
        *held.entry(map.as_str()).or_default() += 1;
    }
    for (map, n) in &held {
        let line = format!("pipecd_entries{{target=\"ebpf\",table=\"{map}\"}} {n}");
        assert!(counted.contains(&line), "{line} in {counted:?}");
    }
    let has_pod = pinned
        .keys()
        .any(|(m, k)| m.as_str() == "ipcache_host" && k.windows(4).any(|w| w == [10, 10, 1, 101]));
    assert!(has_pod, "{pinned:?}\n{before}");
    drop(dp);
    run.write("pods.yaml", &format!("{}---\n{}", pod(1), pod(2)));
    std::fs::remove_file(run.dir.join("log")).expect("rm log");
    run.start(&kernel);
    assert_eq!(run.state(), run.expected(&[]));
    // The restart replaced the filters the killed daemon left: one per hook, as before.
    assert_eq!(
        filters_of(&wire).lines().count(),
        filters.lines().count(),
        "before:\n{filters}\nafter:\n{}",
        filters_of(&wire)
    );
    assert_eq!(filter_count(&filters_of(&wire), "from_wire"), 1);
    let log = run.log();
    let line = log
        .lines()
        .find(|l| l.contains("reconciled the device"))
        .unwrap_or_else(|| panic!("{log}"));
    // One pod more: its endpoint, address and policy entries, not the whole state again.
    let ops: usize = line
        .split("map_ops=")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{line}"));
    // Exactly the entries that differ between the pinned state and the new one: nothing
    // was flushed and rewritten.
    let entries = |dump: &str| -> std::collections::BTreeMap<String, String> {
        dump.lines()
            .filter(|l| l.starts_with("ebpf "))
            .filter_map(|l| {
                l.rsplit_once(' ')
                    .map(|(k, v)| (k.to_string(), v.to_string()))
            })
            .collect()
    };
    let (old, new) = (entries(&before), entries(&run.state()));
    let differ = old
        .keys()
        .chain(new.keys())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .filter(|k| old.get(*k) != new.get(*k))
        .count();
    assert!(differ > 0, "the new pod changed something");
    assert_eq!(ops, differ, "{line}");

    // Per-rule counters: a SYN from the client to web-1's port 80, run through the program
    // for packets to a pod by a second loader on the same pinned maps, is counted under the
    // rule that let it in, and `/metrics` names that rule by its provenance.
    let probe = pipec_ebpf::Datapath::load(Some(&bpffs)).expect("the pinned maps");
    let syn = pipec_ebpf::packet::build(
        "10.10.1.10".parse().expect("ip"),
        "10.10.1.101".parse().expect("ip"),
        pipec_ebpf::packet::L4::Tcp {
            sport: 40000,
            dport: 80,
            flags: 0x02,
        },
    );
    let verdict = probe
        .run(pipec_ebpf::Program::ToPod, &syn, 1, 0)
        .expect("test run")
        .verdict;
    drop(probe);
    assert_eq!(verdict, pipec_ebpf::datapath::TC_ACT_OK);
    let rule = format!(
        "{{rule=\"NetworkPolicy/shop/server-from-client ingress[0]\",at=\"{}:56\",",
        run.manifests().join("cluster.yaml").display()
    );
    let counted = |metrics: &str, name: &str| -> Option<u64> {
        metrics
            .lines()
            .find(|l| l.starts_with(name) && l.contains(&rule))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
    };
    let metrics = get(run.port, "/metrics").expect("/metrics");
    assert_eq!(
        counted(&metrics, "pipecd_rule_packets_total{"),
        Some(1),
        "{metrics}"
    );
    // An Ethernet, IPv4 and TCP header and the probe's 12-byte payload.
    assert_eq!(
        counted(&metrics, "pipecd_rule_bytes_total{"),
        Some(66),
        "{metrics}"
    );

    // A pod port the CNI had wired (as the state file of an earlier run records it): every
    // restart attaches the pod programs to it again, replacing the earlier run's filters.
    run.kill9();
    let attachment = serde_json::json!([{
        "container_id": "c-web-1", "ifname": "eth0", "pod_namespace": "shop",
        "pod_name": "web-1", "pod_uid": "", "host_ifname": port, "ips": ["10.10.1.101"],
    }]);
    std::fs::write(
        run.dir.join("state/attachments.json"),
        attachment.to_string(),
    )
    .expect("attachments");
    run.start(&kernel);
    let ports = filters_of(&port);
    assert_eq!(filter_count(&ports, "from_pod"), 1, "{ports}");
    assert_eq!(filter_count(&ports, "to_pod"), 1, "{ports}");
    for round in 0..3 {
        run.kill9();
        run.start(&kernel);
        assert_eq!(
            filters_of(&port).lines().count(),
            ports.lines().count(),
            "round {round}:\n{}",
            filters_of(&port)
        );
        assert_eq!(
            filters_of(&wire).lines().count(),
            filters.lines().count(),
            "round {round}"
        );
    }

    // The counters live in a pinned map: the restarts kept them.
    let metrics = get(run.port, "/metrics").expect("/metrics");
    assert_eq!(
        counted(&metrics, "pipecd_rule_packets_total{"),
        Some(1),
        "{metrics}"
    );

    // SIGTERM: exit 0 within the bound, and the datapath stays: the maps pinned with the
    // last state, the programs attached.
    let before = run.state();
    run.signal("TERM");
    let (code, took) = run.wait_exit(Duration::from_secs(20));
    assert_eq!(code, Some(0), "{}", run.log());
    assert!(
        took <= pipec_runtime::shutdown::BOUND + Duration::from_secs(1),
        "{took:?}"
    );
    assert!(
        run.log().contains("stopped; the state is persisted"),
        "{}",
        run.log()
    );
    assert_eq!(filters_of(&wire).lines().count(), filters.lines().count());
    assert_eq!(filters_of(&port).lines().count(), ports.lines().count());

    // A start that fails (a node the sources do not have) exits 1 and leaves the datapath
    // as it found it too: the wire's filters, which it had already replaced, stay.
    let failing = Command::new(env!("CARGO_BIN_EXE_pipecd"))
        .arg("--manifests")
        .arg(run.manifests())
        .args(["--node", "node-x", "--metrics-addr"])
        .arg(format!("127.0.0.1:{}", run.port))
        .args([
            "--datapath",
            "kernel",
            "--bpffs",
            &bpffs_arg,
            "--wire",
            &wire,
        ])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(run.dir.join("log")).expect("log"))
        .spawn()
        .expect("start pipecd");
    run.child = Some(failing);
    // By pid and bounded in time, should it not stop by itself.
    let (code, _) = run.wait_exit(Duration::from_secs(20));
    assert_eq!(code, Some(1), "{}", run.log());
    assert!(
        run.log().contains("node node-x is not in the cluster"),
        "{}",
        run.log()
    );
    assert_eq!(
        filters_of(&wire).lines().count(),
        filters.lines().count(),
        "{}",
        filters_of(&wire)
    );
    assert_eq!(filters_of(&port).lines().count(), ports.lines().count());
    let dp = pipec_ebpf::Datapath::load(Some(&bpffs)).expect("the pinned maps");
    let pinned = dp.read_entries().expect("read");
    assert!(
        pinned
            .keys()
            .any(|(m, k)| m.as_str() == "ipcache_host"
                && k.windows(4).any(|w| w == [10, 10, 1, 102])),
        "{before}"
    );
    let _ = dp.unpin();
}

/// Veth pairs whose host ends are named `PREFIX` + the test's pid and whose other ends are
/// in a network namespace of the test's own; removed on drop.
struct Veths {
    ns: String,
    hosts: Vec<String>,
}

impl Veths {
    fn new(ns: &str, prefixes: &[&str]) -> Veths {
        pipec_netns::delete_netns(ns);
        pipec_netns::ip(&["netns", "add", ns]);
        let mut v = Veths {
            ns: ns.to_string(),
            hosts: Vec::new(),
        };
        for p in prefixes {
            let host = format!("{p}{}", std::process::id());
            let _ = Command::new("ip")
                .args(["link", "del", &host])
                .stderr(Stdio::null())
                .status();
            pipec_netns::ip(&[
                "link", "add", &host, "type", "veth", "peer", "name", "peer0", "netns", ns,
            ]);
            pipec_netns::ip(&["-n", ns, "link", "set", "peer0", "name", &format!("{p}0")]);
            pipec_netns::ip(&["link", "set", &host, "up"]);
            v.hosts.push(host);
        }
        v
    }

    fn host(&self, prefix: &str) -> String {
        format!("{prefix}{}", std::process::id())
    }
}

impl Drop for Veths {
    fn drop(&mut self) {
        for h in &self.hosts {
            let _ = Command::new("ip").args(["link", "del", h]).status();
        }
        pipec_netns::delete_netns(&self.ns);
    }
}

/// `tc filter show` of one hook, as tc prints it.
fn tc_show(iface: &str, hook: &str) -> String {
    let out = Command::new("tc")
        .args(["filter", "show", "dev", iface, hook])
        .output()
        .expect("tc");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The filters of both hooks of `iface`.
fn filters_of(iface: &str) -> String {
    tc_show(iface, "ingress") + &tc_show(iface, "egress")
}

/// How many filters of the program named `name` a `tc filter show` lists.
fn filter_count(show: &str, name: &str) -> usize {
    show.lines()
        .filter(|l| l.split_whitespace().any(|w| w == name))
        .count()
}

/// A small seeded generator (SplitMix64), so that a failing round can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A policy that lets the pods of one burst label reach the servers on one port.
fn burst_policy(m: u64, from: u64) -> String {
    format!(
        "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: burst-{m}, namespace: shop}}
spec:
  podSelector: {{matchLabels: {{app: server}}}}
  policyTypes: [Ingress]
  ingress:
  - from: [{{podSelector: {{matchLabels: {{burst: b{from}}}}}}}]
    ports: [{{protocol: TCP, port: {}}}]
",
        8000 + m
    )
}

/// One random change of the directory: a pod added, relabelled or removed, or a policy
/// added, changed or removed.
fn random_change(run: &Run, rng: &mut Rng) {
    let n = 1 + rng.below(30) as u32;
    match rng.below(10) {
        0..=4 => run.write(&format!("pod-{n}.yaml"), &labelled_pod(n)),
        5 => run.write(
            &format!("pod-{n}.yaml"),
            &labelled_pod(n).replace("burst: b", &format!("v: v{}, burst: b", rng.below(3))),
        ),
        6 | 7 => {
            let _ = std::fs::remove_file(run.manifests().join(format!("pod-{n}.yaml")));
        }
        8 => run.write(
            &format!("np-{}.yaml", n % 5),
            &burst_policy(u64::from(n % 5), rng.below(30) + 1),
        ),
        _ => {
            let _ = std::fs::remove_file(run.manifests().join(format!("np-{}.yaml", n % 5)));
        }
    }
}

/// The `pipecd_entries` lines of `/metrics`: how many entries each target's table holds,
/// which does not depend on the identity numbers a run handed out.
fn entry_counts(port: u16) -> Vec<String> {
    get(port, "/metrics")
        .expect("/metrics")
        .lines()
        .filter(|l| l.starts_with("pipecd_entries{"))
        .map(str::to_string)
        .collect()
}

/// Rounds of: a burst of random changes, `kill -9` at a random point of it (after a random
/// delay, so that the kill lands inside applies and state writes), the rest of the burst
/// written while the daemon is down, a restart on the same state directory. After every
/// restart the device must equal a fresh compile of the directory with the pins the
/// daemon kept, and at the end its entry counts must equal those of a daemon started fresh
/// (no state) on the final directory.
fn kill_9_rounds(tag: &str, kernel: bool, seed: u64, rounds: u32) {
    let mut rng = Rng(seed);
    let mut run = Run::new(tag);
    let datapath = |r: &Run| -> Vec<String> {
        match &r.bpffs {
            Some(b) => vec![
                "--datapath".into(),
                "kernel".into(),
                "--bpffs".into(),
                b.display().to_string(),
            ],
            None => vec!["--datapath".into(), "model".into()],
        }
    };
    let start = |r: &mut Run| {
        let args = datapath(r);
        r.start(&args.iter().map(String::as_str).collect::<Vec<_>>());
    };
    if kernel {
        run.bpffs = Some(PathBuf::from(format!(
            "/sys/fs/bpf/pipecd-{tag}-{}",
            std::process::id()
        )));
    }
    start(&mut run);
    for round in 0..rounds {
        let changes = 5 + rng.below(20);
        let kill_at = rng.below(changes);
        for i in 0..changes {
            random_change(&run, &mut rng);
            if i == kill_at {
                std::thread::sleep(Duration::from_micros(rng.below(20_000)));
                run.kill9();
                if let Some(b) = &run.bpffs {
                    numbers_are_written_ahead(&run, b, seed, round);
                }
            }
        }
        start(&mut run);
        // Every state file the killed daemon left loads.
        let state = StateDir::open(&run.dir.join("state")).expect("state dir");
        state.read_pins().expect("the pins load");
        state.read_attachments().expect("the attachments load");
        assert_eq!(
            run.state(),
            run.expected(&[]),
            "seed {seed:#x} round {round}; log:\n{}",
            run.log()
        );
    }
    let restarted = entry_counts(run.port);
    let mut fresh = Run::new(&format!("{tag}-fresh"));
    if kernel {
        fresh.bpffs = Some(PathBuf::from(format!(
            "/sys/fs/bpf/pipecd-{tag}-fresh-{}",
            std::process::id()
        )));
    }
    let _ = std::fs::remove_dir_all(fresh.manifests());
    std::fs::create_dir_all(fresh.manifests()).expect("dir");
    for e in std::fs::read_dir(run.manifests()).expect("dir").flatten() {
        let name = e.file_name();
        if !name.to_string_lossy().starts_with('.') {
            std::fs::copy(e.path(), fresh.manifests().join(&name)).expect("copy");
        }
    }
    start(&mut fresh);
    assert!(!restarted.is_empty());
    assert_eq!(entry_counts(fresh.port), restarted, "seed {seed:#x}");
    run.kill9();
    fresh.kill9();
    for b in [&run.bpffs, &fresh.bpffs].into_iter().flatten() {
        if let Ok(dp) = pipec_ebpf::Datapath::load(Some(b)) {
            let _ = dp.unpin();
        }
    }
}

/// Every identity number the killed daemon's pinned maps hold is one the state directory
/// knows (in use or retired), as the pins are written before the device is changed: the
/// restart then gives a live identity its number again.
fn numbers_are_written_ahead(run: &Run, bpffs: &Path, seed: u64, round: u32) {
    let pins = StateDir::open(&run.dir.join("state"))
        .and_then(|s| s.read_pins())
        .expect("the pins load");
    let known: std::collections::BTreeSet<u32> = pins
        .numbers
        .values()
        .copied()
        .chain(pins.retired.iter().copied())
        .collect();
    let dp = pipec_ebpf::Datapath::load(Some(bpffs)).expect("the pinned maps");
    for ((map, key), value) in dp.read_entries().expect("read") {
        if !matches!(map.as_str(), "ipcache" | "ipcache_host") {
            continue;
        }
        let id = u32::from_ne_bytes(value[..4].try_into().expect("an identity"));
        // Pods' identities are numbered from 256 to 65535; below are the reserved ones
        // (world, host, ...) and above the ones derived from an address (nodes, CIDRs),
        // neither of which is pinned.
        assert!(
            !(256..65536).contains(&id) || known.contains(&id),
            "seed {seed:#x} round {round}: {} {key:02x?} holds identity {id}, which the \
             state directory does not know: {pins:?}",
            map.as_str()
        );
    }
}

#[test]
fn kill_9_at_random_points_then_a_restart_reconciles_to_a_fresh_start_model() {
    kill_9_rounds("crash-model", false, 0x5eed_0001, 10);
}

/// The same on the kernel datapath, where the pinned maps keep whatever part of an apply
/// the kill interrupted, so the restart's reconciliation has real work to do.
#[test]
#[cfg_attr(
    not(feature = "root-tests"),
    ignore = "needs root and network namespaces: run with --features root-tests"
)]
fn kill_9_at_random_points_then_a_restart_reconciles_to_a_fresh_start_kernel() {
    require_root();
    kill_9_rounds("crash-kernel", true, 0x5eed_0002, 10);
}

/// A key rotation keeps the old inbound SA for its window (five minutes), as the peer may
/// still send with it. A restart inside the window keeps it too (the removal waits in the
/// state directory, named by peer and SPI, never by key), and carries the removal out when
/// it is due.
#[test]
fn an_sa_removal_waiting_for_its_window_survives_a_restart() {
    let mut run = Run::new("pending");
    run.start(&["--datapath", "model"]);
    let keys = std::fs::read_to_string(run.manifests().join("ipsec-keys.yaml")).expect("keys");
    let g = run.generation();
    run.write(
        "ipsec-keys.yaml",
        &keys.replace("3+ rfc4106(gcm(aes)) 5d", "4+ rfc4106(gcm(aes)) 6d"),
    );
    run.wait("the rotation applied", |r| r.generation() > g);
    assert!(
        run.state().contains("sa inbound node-b 3\n"),
        "{}",
        run.state()
    );
    let state = StateDir::open(&run.dir.join("state")).expect("state dir");
    let pending = state.read_pending().expect("the pending removals load");
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64;
    // One old inbound SA per peer (the key is the cluster's, shared by every peer).
    let names: Vec<(&str, u32)> = pending.iter().map(|p| (p.peer.as_str(), p.spi)).collect();
    assert_eq!(names, [("node-b", 3), ("node-c", 3)], "{pending:?}");
    assert!(
        pending
            .iter()
            .all(|p| p.due_unix_ms > now_ms && p.due_unix_ms <= now_ms + 300_000),
        "{pending:?} at {now_ms}"
    );
    let file = std::fs::read_to_string(run.dir.join("state/pending-removals.json")).expect("file");
    // Neither the old key nor the new one is in it.
    assert!(
        !file.contains("5d1a2b3c") && !file.contains("6d1a2b3c"),
        "{file}"
    );

    // Killed and restarted inside the window: the old SA is still there.
    run.kill9();
    run.start(&["--datapath", "model"]);
    let restarted = run.state();
    for line in [
        "sa inbound node-b 3\n",
        "sa inbound node-c 3\n",
        "sa inbound node-b 4\n",
        "sa outbound node-b 4\n",
    ] {
        assert!(restarted.contains(line), "{line}:\n{restarted}");
    }
    assert_eq!(state.read_pending().expect("pending"), pending);

    // The window made to end four seconds from now (the test cannot wait five
    // minutes): the removal is carried out then, and the file empties. (SIGINT, as ctrl-c
    // sends it, stops pipecd as SIGTERM does.)
    run.signal("INT");
    let (code, _) = run.wait_exit(Duration::from_secs(20));
    assert_eq!(code, Some(0));
    let mut soon = pending.clone();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64;
    for p in &mut soon {
        p.due_unix_ms = now_ms + 4_000;
    }
    state.write_pending(&soon).expect("write");
    run.start(&["--datapath", "model"]);
    assert!(
        run.state().contains("sa inbound node-b 3\n"),
        "{}",
        run.state()
    );
    run.wait("the removal carried out", |r| {
        let s = r.state();
        !s.contains("sa inbound node-b 3\n") && !s.contains("sa inbound node-c 3\n")
    });
    assert!(run.state().contains("sa inbound node-b 4\n"));
    run.wait("the pending file emptied", |_| {
        state.read_pending().is_ok_and(|p| p.is_empty())
    });
    assert!(!run.log().contains("6d1a2b3c"), "a key reached the log");
}

/// SIGTERM before the first full state is loaded (here the API's initial lists never
/// complete, as nothing answers at the API address): pipecd exits 0 and leaves the identity
/// numbers of the last run as they were, rather than the empty session's.
#[test]
fn sigterm_before_the_first_load_keeps_the_last_runs_pins() {
    let mut run = Run::new("early");
    run.start(&["--datapath", "model"]);
    let g = run.generation();
    run.write("pod-1.yaml", &labelled_pod(1));
    run.wait("the pod applied", |r| r.generation() > g);
    run.signal("TERM");
    assert_eq!(run.wait_exit(Duration::from_secs(20)).0, Some(0));
    let pins_file = run.dir.join("state/identity-pins.json");
    let pins = std::fs::read(&pins_file).expect("pins");
    assert!(String::from_utf8_lossy(&pins).contains("b1"));

    // Nothing listens on the API port taken here, so the first load waits for ever.
    let kubeconfig = run.dir.join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: none\n\
             clusters: [{{name: none, cluster: {{server: 'http://127.0.0.1:{}'}}}}]\n\
             users: [{{name: pipecd, user: {{token: t}}}}]\n\
             contexts: [{{name: none, context: {{cluster: none, user: pipecd}}}}]\n",
            free_port()
        ),
    )
    .expect("kubeconfig");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pipecd"));
    cmd.arg("--manifests")
        .arg(run.manifests())
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["--node", "node-a", "--datapath", "model", "--metrics-addr"])
        .arg(format!("127.0.0.1:{}", run.port))
        .arg("--state-dir")
        .arg(run.dir.join("state"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(run.dir.join("log")).expect("log"));
    run.child = Some(cmd.spawn().expect("start pipecd"));
    run.wait("the daemon serving, not ready", |r| {
        get(r.port, "/healthz").is_some() && get(r.port, "/readyz").is_none()
    });
    run.signal("TERM");
    let (code, took) = run.wait_exit(Duration::from_secs(20));
    assert_eq!(code, Some(0), "{}", run.log());
    assert!(took <= pipec_runtime::shutdown::BOUND, "{took:?}");
    assert_eq!(
        String::from_utf8_lossy(&std::fs::read(&pins_file).expect("pins")),
        String::from_utf8_lossy(&pins),
        "the pins file was rewritten"
    );
}

/// SIGTERM while an apply runs longer than the bound (here the first load of 3,000 pods,
/// about 16 s in a debug build on the 2-core test machine): pipecd still exits 0 within the
/// bound. Either it abandons the apply
/// (the usual case here) or, on a machine fast enough to finish the load first, it finishes
/// and persists. The state it leaves loads, and a restart on it (with a small directory, to
/// keep the test short) reconciles. Meanwhile no endpoint waits for the apply: `/healthz`
/// answers, `/readyz` and `/metrics` answer 503 at once.
#[test]
fn sigterm_during_an_apply_longer_than_the_bound_exits_0_within_it() {
    let mut run = Run::new("abandon");
    let mut big = String::new();
    for n in 0..3000u32 {
        let ip = format!("10.10.{}.{}", 100 + n / 250, n % 250 + 1);
        big.push_str(&format!(
            "---\napiVersion: v1\nkind: Pod\n\
             metadata: {{name: big-{n}, namespace: shop, labels: {{app: server, grp: g{}}}}}\n\
             spec: {{nodeName: node-a, containers: [{{name: s, image: nginx}}]}}\n\
             status: {{podIP: {ip}, podIPs: [{{ip: {ip}}}]}}\n",
            n % 300
        ));
    }
    run.write("big.yaml", &big);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pipecd"));
    cmd.arg("--manifests")
        .arg(run.manifests())
        .args(["--node", "node-a", "--datapath", "model", "--metrics-addr"])
        .arg(format!("127.0.0.1:{}", run.port))
        .arg("--state-dir")
        .arg(run.dir.join("state"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(run.dir.join("log")).expect("log"));
    run.child = Some(cmd.spawn().expect("start pipecd"));
    run.wait("serving", |r| r.log().contains("serving /healthz"));
    std::thread::sleep(Duration::from_millis(300));
    // No endpoint waits for the load: liveness answers, readiness says no, and a scrape
    // that needs the daemon's state is refused at once (nothing was served before).
    let asked = Instant::now();
    assert_eq!(get(run.port, "/healthz").as_deref(), Some("ok\n"));
    assert_eq!(answer(run.port, "/readyz").map(|a| a.0), Some(503));
    assert_eq!(answer(run.port, "/metrics").map(|a| a.0), Some(503));
    assert!(
        asked.elapsed() < Duration::from_secs(1),
        "the endpoints took {:?} during the load",
        asked.elapsed()
    );
    assert!(
        !run.log().contains("reconciled the device"),
        "the load was over before the checks; the test needs a larger one"
    );
    run.signal("TERM");
    let (code, took) = run.wait_exit(Duration::from_secs(30));
    let log = run.log();
    assert_eq!(code, Some(0), "{log}");
    assert!(
        took <= pipec_runtime::shutdown::BOUND + Duration::from_secs(1),
        "{took:?}\n{log}"
    );
    let finished = log.contains("reconciled the device") && log.contains("stopped;");
    assert!(finished || log.contains("abandoned"), "{log}");
    let state = StateDir::open(&run.dir.join("state")).expect("state dir");
    state.read_pins().expect("the pins load");
    state.read_attachments().expect("the attachments load");

    std::fs::remove_file(run.manifests().join("big.yaml")).expect("rm");
    run.write("pod-1.yaml", &labelled_pod(1));
    run.start(&["--datapath", "model"]);
    assert_eq!(run.state(), run.expected(&[]));
}

/// The pods' addresses, in the order of [`offload_net`]'s pods (the client, then the
/// server).
const OFFLOAD_IPS: [&str; 2] = ["10.10.1.10", "10.10.1.20"];
/// The node-side interface of each pod.
const OFFLOAD_PORTS: [&str; 2] = ["ofa0", "ofb0"];

/// A node and two pods as network namespaces of the test's own: each pod's `eth0` is a
/// veth whose other end (`ofa0`, `ofb0`) is in the node namespace, where pipecd runs and
/// routes between them. Deleted on drop.
fn offload_net() -> pipec_netns::PodNet {
    let tag = std::process::id();
    let mut net = pipec_netns::PodNet::new(&format!("pcof-node-{tag}"));
    let pods = [format!("pcof-a-{tag}"), format!("pcof-b-{tag}")];
    for ((pod, ip), host) in pods.iter().zip(OFFLOAD_IPS).zip(OFFLOAD_PORTS) {
        net.add_pod(pod, host, ip);
    }
    net
}

/// One TCP connection from the client pod that keeps sending until it is dropped, and the
/// server pod's side of it, which reads and discards. Both threads stop within a bound of
/// their own (60 s) should the drop never come.
struct Talk {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
    /// The client's local port.
    sport: u16,
}

const TALK_BOUND: Duration = Duration::from_secs(60);

impl Talk {
    /// Connects from `client_ns` to `to`:`port` (served in `server_ns` on `listen`), sends
    /// 4000 bytes at once and then 100 bytes every 50 ms.
    fn start(client_ns: &str, server_ns: &str, to: &str, port: u16, listen: u16) -> Talk {
        use std::sync::atomic::{AtomicBool, Ordering};
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (server_ns, s_stop) = (server_ns.to_string(), stop.clone());
        let server = std::thread::spawn(move || {
            enter_netns(&server_ns);
            let l = std::net::TcpListener::bind(("0.0.0.0", listen)).expect("listen");
            ready_tx.send(()).expect("ready");
            // Accepting without blocking, so that a client that never comes does not keep
            // the thread (and the drop that joins it) waiting past the bound.
            l.set_nonblocking(true).expect("nonblocking");
            let start = Instant::now();
            let mut accepted = None;
            for _ in 0..6000 {
                match l.accept() {
                    Ok((s, _)) => {
                        accepted = Some(s);
                        break;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(_) => break,
                }
                if s_stop.load(Ordering::Relaxed) || start.elapsed() > TALK_BOUND {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let Some(mut s) = accepted else {
                return;
            };
            s.set_nonblocking(false).expect("blocking");
            s.set_read_timeout(Some(Duration::from_millis(200)))
                .expect("timeout");
            let mut buf = [0u8; 8192];
            // Each read returns within its 200 ms timeout: 300 reads for the bound, and as
            // many more as data arrives (one read per 50 ms write at least).
            for _ in 0..10_000 {
                if s_stop.load(Ordering::Relaxed) || start.elapsed() > TALK_BOUND {
                    break;
                }
                match s.read(&mut buf) {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                    Err(_) => break,
                }
            }
        });
        ready_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the server listens");
        let (client_ns, c_stop) = (client_ns.to_string(), stop.clone());
        let (port_tx, port_rx) = std::sync::mpsc::channel();
        let dst: std::net::SocketAddr = format!("{to}:{port}").parse().expect("address");
        let client = std::thread::spawn(move || {
            enter_netns(&client_ns);
            let mut s = TcpStream::connect_timeout(&dst, Duration::from_secs(5))
                .unwrap_or_else(|e| panic!("connect to {dst}: {e}"));
            port_tx
                .send(s.local_addr().expect("local address").port())
                .expect("port");
            s.write_all(&[7u8; 4000]).expect("send");
            let start = Instant::now();
            // At most one write per 50 ms for the bound: 1200 writes.
            for _ in 0..1200 {
                if c_stop.load(Ordering::Relaxed) || start.elapsed() > TALK_BOUND {
                    break;
                }
                if s.write_all(&[7u8; 100]).is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        let sport = port_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the client connects");
        Talk {
            stop,
            threads: vec![server, client],
            sport,
        }
    }
}

impl Drop for Talk {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

const OFFLOAD_CLUSTER: &str = "apiVersion: v1
kind: Node
metadata: {name: node-a, labels: {kubernetes.io/hostname: node-a}}
spec: {podCIDR: 10.10.1.0/24}
status:
  addresses: [{type: InternalIP, address: 192.168.50.1}]
---
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {kubernetes.io/metadata.name: shop}}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: shop, labels: {app: client}}
spec:
  nodeName: node-a
  containers: [{name: c, image: busybox}]
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: shop, labels: {app: server}}
spec:
  nodeName: node-a
  containers: [{name: s, image: nginx, ports: [{containerPort: 8080, protocol: TCP}]}]
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  selector: {app: server}
  clusterIP: 10.96.0.50
  ports: [{port: 80, targetPort: 8081, protocol: TCP}]
";

/// The client may reach the server on TCP 8080 and 8081.
const ALLOW_CLIENT: &str = "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: server-from-client, namespace: shop}
spec:
  podSelector: {matchLabels: {app: server}}
  policyTypes: [Ingress]
  ingress:
  - from: [{podSelector: {matchLabels: {app: client}}}]
    ports: [{protocol: TCP, port: 8080}, {protocol: TCP, port: 8081}]
";

/// Nothing may reach the server.
const DENY_ALL: &str = "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: server-from-client, namespace: shop}
spec:
  podSelector: {matchLabels: {app: server}}
  policyTypes: [Ingress]
";

/// The CNI's ADD or DEL of pod `i` of [`offload_net`], over the daemon's control socket.
fn cni(socket: &Path, pod: usize, add: bool) {
    use pipec_proto::v1::cni_client::CniClient;
    use pipec_proto::v1::{AddRequest, Attachment, DelRequest};
    let name = ["client", "web"][pod];
    let (rt, channel) = control(socket);
    rt.block_on(async {
        let mut client = CniClient::new(channel);
        let call = async {
            if add {
                let attachment = Attachment {
                    container_id: format!("c-{name}"),
                    ifname: "eth0".into(),
                    pod_namespace: "shop".into(),
                    pod_name: name.into(),
                    pod_uid: String::new(),
                    host_ifname: OFFLOAD_PORTS[pod].into(),
                    ips: vec![OFFLOAD_IPS[pod].into()],
                };
                client
                    .add(AddRequest {
                        attachment: Some(attachment),
                        timeout_ms: 10_000,
                    })
                    .await
                    .map(|_| ())
            } else {
                let del = DelRequest {
                    container_id: format!("c-{name}"),
                    ifname: "eth0".into(),
                    pod_namespace: "shop".into(),
                    pod_name: name.into(),
                };
                client.del(del).await.map(|_| ())
            }
        };
        tokio::time::timeout(Duration::from_secs(20), call)
            .await
            .expect("the CNI call ends in time")
            .unwrap_or_else(|s| panic!("CNI {} {name}: {s}", if add { "ADD" } else { "DEL" }));
    });
}

/// The `offload` lines of a `/debug/state` dump.
fn offload_lines(state: &str) -> Vec<String> {
    state
        .lines()
        .filter(|l| l.starts_with("offload "))
        .map(str::to_string)
        .collect()
}

/// Connection offload on the kernel datapath: pipecd scans the eBPF conntrack, offloads an
/// established connection between two pods as two exact entries, keeps a Service
/// connection in software and says why, removes the entries when a policy change denies
/// the pair, and removes a deleted pod's entries before its maps change.
#[test]
#[cfg_attr(
    not(feature = "root-tests"),
    ignore = "needs root and network namespaces: run with --features root-tests"
)]
fn connection_offload_follows_the_conntrack_the_policy_and_the_pods() {
    require_root();
    // Declared before the daemon, so that it is dropped after it: the daemon is stopped
    // (by its pid) before its namespace goes.
    let net = offload_net();
    let mut run = Run::new("offload");
    for f in ["cluster.yaml", "ipsec-keys.yaml"] {
        std::fs::remove_file(run.manifests().join(f)).expect("remove the example");
    }
    run.write("cluster.yaml", OFFLOAD_CLUSTER);
    run.write("policy.yaml", ALLOW_CLIENT);
    run.netns = Some(net.node.clone());
    let socket = run.dir.join("control.sock");
    let control = format!("unix:{}", socket.display());
    // The daemon's bpffs is its own: `ip netns exec` gives it a mount namespace of its own,
    // where the datapath mounts bpffs; the pins go with the daemon.
    let bpffs = format!("/sys/fs/bpf/pipecd-offload-{}", std::process::id());
    run.start(&[
        "--datapath",
        "kernel",
        "--bpffs",
        &bpffs,
        "--control",
        &control,
        "--offload-interval-ms",
        "100",
        "--offload-min-bytes",
        "1000",
        // Far longer than the test: a connection leaves the table here only because of
        // what the test does.
        "--offload-idle-passes",
        "600",
    ]);
    cni(&socket, 0, true);
    cni(&socket, 1, true);

    // A direct connection from the client to the server's port 8080.
    let direct = Talk::start(&net.pods[0].ns, &net.pods[1].ns, OFFLOAD_IPS[1], 8080, 8080);
    let tuple = |sport: u16| format!("{}:{sport} -> {}:8080", OFFLOAD_IPS[0], OFFLOAD_IPS[1]);
    run.wait("the direct connection offloaded", |r| {
        r.status()["offload"]["connections"] == 1
    });
    let state = run.state();
    let lines = offload_lines(&state);
    assert_eq!(lines.len(), 2, "{state}");
    // The plan names each pod's port by its endpoint number (2 + the low 16 bits of its
    // address, as the lowering numbers endpoints); the device puts those rules on the
    // pod's VF port, the one its offload entries use.
    let endpoint = |ip: &str| {
        let a: std::net::Ipv4Addr = ip.parse().expect("an IPv4 address");
        (2 + (u32::from(a) & 0xffff) % 65534).to_string()
    };
    let ports = &run.status()["hardware"]["pod_ports"];
    assert_eq!(ports[endpoint(OFFLOAD_IPS[0])], 2, "{ports}");
    assert_eq!(ports[endpoint(OFFLOAD_IPS[1])], 3, "{ports}");
    // The client is on VF 0 (port 2) and the server on VF 1 (port 3): the original
    // direction is matched on the client's port and forwarded to the server's VF with a
    // counter, the reply on the server's port to the client's VF.
    let sport = direct.sport.to_string();
    let forward = lines
        .iter()
        .find(|l| l.starts_with("offload 2 "))
        .unwrap_or_else(|| panic!("{state}"));
    let reply = lines
        .iter()
        .find(|l| l.starts_with("offload 3 "))
        .unwrap_or_else(|| panic!("{state}"));
    for (l, want) in [
        (
            forward,
            [
                "10.10.1.10",
                "10.10.1.20",
                "8080",
                &sport,
                "count",
                "vf id 1",
            ],
        ),
        (
            reply,
            [
                "10.10.1.20",
                "10.10.1.10",
                "8080",
                &sport,
                "vf id 0",
                "ingress",
            ],
        ),
    ] {
        for w in want {
            assert!(l.contains(w), "{w} not in {l}\n{state}");
        }
    }
    assert!(
        !reply.contains("count"),
        "one counter per connection: {reply}"
    );
    let status = run.status();
    assert_eq!(status["offload"]["entries"], 2, "{status}");
    assert_eq!(status["offload"]["counters"], 1, "{status}");
    let metrics = run.get("/metrics").expect("/metrics");
    for line in [
        "pipecd_offload_connections 1",
        "pipecd_offload_entries 2",
        "pipecd_offload_counters 1",
        "pipecd_entries{target=\"hardware\",table=\"offload\"} 2",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line}\n{metrics}");
    }
    assert!(
        run.log().contains("connection offload"),
        "{}\n{}",
        tuple(direct.sport),
        run.log()
    );

    // A connection through the Service: DNATed by eBPF, so it stays in software, and the
    // status and metrics say why.
    // The Service's target port is 8081, a second listener of the same server pod.
    let service = Talk::start(&net.pods[0].ns, &net.pods[1].ns, "10.96.0.50", 80, 8081);
    run.wait(
        "the Service connection counted as staying in software",
        |r| r.status()["offload"]["stays_in_software"]["needs_rewrite"] == 1,
    );
    assert_eq!(run.status()["offload"]["connections"], 1);
    let state = run.state();
    assert_eq!(offload_lines(&state).len(), 2, "{state}");
    assert!(
        !offload_lines(&state)
            .iter()
            .any(|l| l.contains(&service.sport.to_string())),
        "{state}"
    );
    let metrics = run.get("/metrics").expect("/metrics");
    assert!(
        metrics
            .lines()
            .any(|l| l == "pipecd_offload_stays_in_software{reason=\"needs_rewrite\"} 1"),
        "{metrics}"
    );
    drop(service);

    // A policy that denies the pair: the entries go before the new policy reaches the
    // maps, and the connection, which the conntrack still carries, is reported as denied.
    let g = run.generation();
    run.write("policy.yaml", DENY_ALL);
    run.wait("the deny applied", |r| r.generation() > g);
    let state = run.state();
    assert_eq!(offload_lines(&state), Vec::<String>::new(), "{state}");
    assert_eq!(run.status()["offload"]["entries"], 0);
    run.wait("the denied connection reported", |r| {
        r.status()["offload"]["stays_in_software"]["denied"] == 1
    });
    let log = run.log();
    let removed = log
        .find("removed offload entries before the change reaches the device")
        .unwrap_or_else(|| panic!("{log}"));
    let applied = log[removed..]
        .find("applied generation=")
        .map(|i| i + removed);
    assert!(
        applied.is_some(),
        "the removal comes before the apply:\n{log}"
    );

    // Allowed again: the connection, still sending, is offloaded again.
    run.write("policy.yaml", ALLOW_CLIENT);
    run.wait("the connection offloaded again", |r| {
        r.status()["offload"]["connections"] == 1
    });
    assert_eq!(offload_lines(&run.state()).len(), 2);

    // CNI DEL of the server: its entries go first, then its maps.
    let before = run.log().len();
    cni(&socket, 1, false);
    let state = run.state();
    assert_eq!(offload_lines(&state), Vec::<String>::new(), "{state}");
    let log = run.log();
    let tail = &log[before..];
    let first = tail
        .find("removed the deleted pod's offload entries first")
        .unwrap_or_else(|| panic!("{tail}"));
    let applied = tail
        .find("applied generation=")
        .unwrap_or_else(|| panic!("{tail}"));
    assert!(first < applied, "{tail}");
    assert_eq!(run.status()["offload"]["connections"], 0);
    drop(direct);
}
