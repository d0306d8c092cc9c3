//! `pipecd --kubeconfig` against a local HTTP server that answers as the Kubernetes API
//! server does (no API server can be installed here). The real kube-rs client of the daemon
//! lists and watches; the server replays, per resource, list answers and watch streams in the
//! API server's wire format: `*List` objects whose items lack `kind`, watch lines with ADDED,
//! MODIFIED, DELETED, BOOKMARK and ERROR (a `410 Gone`), a stream cut in the middle of a line,
//! 404 for CRDs that are not installed, and a slow list. The objects are those of
//! `examples/ipsec`, stamped as the server stamps them (uid, resourceVersion, managedFields).

// Dependencies of the package that this target does not use itself; they serve its
// other targets. `unused_crate_dependencies` checks every target against all of them.
use anyhow as _;
use aya as _;
use clap as _;
use futures as _;
use gencluster as _;
use ipnet as _;
use kube as _;
use mimalloc as _;
use notify as _;
use pipec_cpt as _;
use pipec_ebpf as _;
use pipec_ebpf_common as _;
use pipec_netns as _;
use pipec_proto as _;
use pipec_rte_flow as _;
use tokio as _;
use tokio_stream as _;
use tonic as _;
use tracing as _;
use tracing_subscriber as _;
// The offload unit tests' and the offload benchmark's dev-dependencies.
use gencluster as _;
use proptest as _;

use pipec::session::{Hardware, Session, SessionOptions};
use pipec_runtime::daemon::backends;
use pipec_runtime::device::expected_dump;
use pipec_runtime::state::StateDir;
use serde_json::{json, Value};
use std::collections::{BTreeMap, VecDeque};
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/ipsec");

/// How a watch answer ends.
#[derive(Clone, Copy, Debug)]
enum End {
    /// The server ends the stream cleanly (a watch timeout).
    Close,
    /// The connection drops in the middle of a line.
    Cut,
    /// The stream stays open until the test ends.
    Hold,
}

#[derive(Clone, Debug)]
struct Watch {
    lines: Vec<Value>,
    end: End,
}

/// What the server answers for one resource path.
#[derive(Clone, Debug, Default)]
struct Script {
    /// List answers in turn (the last one repeats); `None`: 404, as for a CRD that is not
    /// installed.
    lists: VecDeque<Option<Value>>,
    /// Watch answers in turn; when they run out, a stream that stays open.
    watches: VecDeque<Watch>,
    /// How long the first list answer is held back.
    delay: Duration,
    /// The first list answer is also held back until a request line containing this text
    /// has been received.
    after: Option<&'static str>,
}

/// The replaying server: a thread per connection, stopped on drop.
struct Replay {
    port: u16,
    stop: Arc<AtomicBool>,
    /// Every request line (`GET /api/v1/pods?... HTTP/1.1`), in order.
    requests: Arc<Mutex<Vec<String>>>,
    /// When each path's first list was answered.
    answered: Arc<Mutex<BTreeMap<String, Instant>>>,
}

impl Replay {
    fn start(scripts: BTreeMap<String, Script>) -> Replay {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("addr").port();
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let answered = Arc::new(Mutex::new(BTreeMap::new()));
        let scripts = Arc::new(Mutex::new(scripts));
        let (s, r, a) = (stop.clone(), requests.clone(), answered.clone());
        std::thread::spawn(move || {
            // Bounded: at most 10 minutes, or until the test drops the server.
            let end = Instant::now() + Duration::from_secs(600);
            while !s.load(Ordering::Relaxed) && Instant::now() < end {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let (s, r, a, sc) = (s.clone(), r.clone(), a.clone(), scripts.clone());
                        std::thread::spawn(move || serve(conn, &sc, &r, &a, &s));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Replay {
            port,
            stop,
            requests,
            answered,
        }
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().expect("lock").clone()
    }
}

impl Drop for Replay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn serve(
    conn: TcpStream,
    scripts: &Mutex<BTreeMap<String, Script>>,
    requests: &Mutex<Vec<String>>,
    answered: &Mutex<BTreeMap<String, Instant>>,
    stop: &AtomicBool,
) {
    let _ = conn.set_nonblocking(false);
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    let mut reader = BufReader::new(conn.try_clone().expect("clone"));
    let mut conn = conn;
    // kube-rs keeps connections alive: answer requests on this connection until it closes.
    for _ in 0..1000 {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut header = String::new();
        while reader.read_line(&mut header).unwrap_or(0) > 2 {
            header.clear();
        }
        requests.lock().expect("lock").push(line.trim().to_string());
        let target = line.split_whitespace().nth(1).unwrap_or("").to_string();
        let (path, query) = target.split_once('?').unwrap_or((&target, ""));
        let watching = query.split('&').any(|p| p == "watch=true");
        let step = {
            let mut scripts = scripts.lock().expect("lock");
            scripts.get_mut(path).map(|s| {
                if watching {
                    Err(s.watches.pop_front())
                } else {
                    let hold = (std::mem::take(&mut s.delay), s.after.take());
                    let answer = if s.lists.len() > 1 {
                        s.lists.pop_front().flatten()
                    } else {
                        s.lists.front().cloned().flatten()
                    };
                    Ok((hold, answer))
                }
            })
        };
        let kept = match step {
            None | Some(Ok((_, None))) => send(&mut conn, "404 Not Found", &not_found(path)),
            Some(Ok(((delay, after), Some(list)))) => {
                std::thread::sleep(delay);
                // Bounded: at most 60 s, then the answer goes and the test fails on its
                // own assertions.
                let end = Instant::now() + Duration::from_secs(60);
                while let Some(text) = after {
                    let seen = requests
                        .lock()
                        .expect("lock")
                        .iter()
                        .any(|r| r.contains(text));
                    if seen || Instant::now() > end {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                answered
                    .lock()
                    .expect("lock")
                    .entry(path.to_string())
                    .or_insert_with(Instant::now);
                send(&mut conn, "200 OK", &list)
            }
            Some(Err(watch)) => {
                stream(
                    &mut conn,
                    watch.unwrap_or(Watch {
                        lines: Vec::new(),
                        end: End::Hold,
                    }),
                    stop,
                );
                false
            }
        };
        if !kept {
            return;
        }
    }
}

fn send(conn: &mut TcpStream, status: &str, body: &Value) -> bool {
    let body = body.to_string();
    write!(
        conn,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .is_ok()
}

fn stream(conn: &mut TcpStream, watch: Watch, stop: &AtomicBool) {
    let _ = write!(
        conn,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    for line in &watch.lines {
        let l = format!("{line}\n");
        let _ = write!(conn, "{:x}\r\n{l}\r\n", l.len());
        let _ = conn.flush();
        std::thread::sleep(Duration::from_millis(30));
    }
    match watch.end {
        End::Close => {
            let _ = write!(conn, "0\r\n\r\n");
        }
        End::Cut => {
            let _ = write!(
                conn,
                "40\r\n{{\"type\":\"ADDED\",\"object\":{{\"kind\":\"Po"
            );
            let _ = conn.flush();
            let _ = conn.shutdown(std::net::Shutdown::Both);
        }
        End::Hold => {
            for _ in 0..6000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

fn not_found(path: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": format!("the server could not find the requested resource ({path})"),
           "reason": "NotFound", "details": {}, "code": 404})
}

/// The objects of the example, by kind.
fn example() -> BTreeMap<String, Vec<Value>> {
    let mut out: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for f in ["cluster.yaml", "ipsec-keys.yaml"] {
        let text = std::fs::read_to_string(Path::new(EXAMPLE).join(f)).expect("example");
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let mut v: Value = serde::Deserialize::deserialize(doc).expect("yaml");
            stored(&mut v);
            let kind = v["kind"].as_str().expect("kind").to_string();
            out.entry(kind).or_default().push(v);
        }
    }
    out
}

/// The server stores a Secret's `stringData` base64-encoded in `data`, and answers with that.
fn stored(o: &mut Value) {
    use base64::Engine as _;
    let Some(string_data) = o.as_object_mut().and_then(|m| m.remove("stringData")) else {
        return;
    };
    let data: serde_json::Map<String, Value> = string_data
        .as_object()
        .expect("stringData")
        .iter()
        .map(|(k, v)| {
            let v = v.as_str().expect("a string");
            (
                k.clone(),
                json!(base64::engine::general_purpose::STANDARD.encode(v)),
            )
        })
        .collect();
    o["data"] = Value::Object(data);
}

/// The object as the API server stores it at `rv`.
fn stamped(mut o: Value, rv: u64) -> Value {
    let name = o["metadata"]["name"].as_str().unwrap_or("").to_string();
    let api_version = o["apiVersion"].clone();
    let m = &mut o["metadata"];
    m["resourceVersion"] = json!(rv.to_string());
    m["uid"] = json!(format!("00000000-0000-4000-8000-{:012x}", fnv(&name)));
    m["creationTimestamp"] = json!("2026-12-01T10:00:00Z");
    m["managedFields"] = json!([{"manager": "kubectl", "operation": "Update",
        "apiVersion": api_version, "time": format!("2026-12-01T10:00:{:02}Z", rv % 60),
        "fieldsType": "FieldsV1", "fieldsV1": {"f:metadata": {}}}]);
    o
}

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf29ce484222325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
    }) & 0xffff_ffff_ffff
}

/// A `*List` answer: items without `kind` and `apiVersion`, as the server sends them.
fn list(kind: &str, api_version: &str, items: &[Value], rv: u64) -> Value {
    let items: Vec<Value> = items
        .iter()
        .map(|o| {
            let mut o = stamped(o.clone(), rv);
            if let Some(m) = o.as_object_mut() {
                m.remove("kind");
                m.remove("apiVersion");
            }
            o
        })
        .collect();
    json!({"kind": format!("{kind}List"), "apiVersion": api_version,
           "metadata": {"resourceVersion": rv.to_string()}, "items": items})
}

fn event(kind: &str, o: &Value, rv: u64) -> Value {
    json!({"type": kind, "object": stamped(o.clone(), rv)})
}

fn bookmark(rv: u64) -> Value {
    json!({"type": "BOOKMARK", "object": {"kind": "Pod", "apiVersion": "v1",
           "metadata": {"resourceVersion": rv.to_string()}}})
}

fn gone(rv: u64) -> Value {
    json!({"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1", "metadata": {},
           "status": "Failure", "message": format!("too old resource version: {rv} (400)"),
           "reason": "Expired", "code": 410}})
}

fn web_pod(n: u32, app: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": format!("web-{n}"), "namespace": "shop", "labels": {"app": app}},
           "spec": {"nodeName": "node-a", "containers": [{"name": "s", "image": "nginx",
                    "ports": [{"containerPort": 80, "protocol": "TCP"}]}]},
           "status": {"podIP": format!("10.10.1.{}", 100 + n),
                      "podIPs": [{"ip": format!("10.10.1.{}", 100 + n)}]}})
}

fn web_service() -> Value {
    json!({"apiVersion": "v1", "kind": "Service",
           "metadata": {"name": "web", "namespace": "shop"},
           "spec": {"selector": {"app": "web"}, "clusterIP": "10.96.0.80",
                    "ports": [{"name": "http", "port": 80, "targetPort": 80, "protocol": "TCP"}]}})
}

/// The scripts: the example's objects, and a history of the pods.
fn scripts() -> (BTreeMap<String, Script>, Vec<Value>) {
    let ex = example();
    let pods = &ex["Pod"];
    let (client, server) = (&pods[0], &pods[1]);
    let one = |v: Value| VecDeque::from([Some(v)]);
    let mut s: BTreeMap<String, Script> = BTreeMap::new();
    s.insert(
        "/api/v1/namespaces".into(),
        Script {
            lists: one(list("Namespace", "v1", &ex["Namespace"], 90)),
            ..Script::default()
        },
    );
    s.insert(
        "/api/v1/nodes".into(),
        Script {
            lists: one(list("Node", "v1", &ex["Node"], 91)),
            ..Script::default()
        },
    );
    // The Services' list is slow: the first apply must wait for it. It is answered only
    // once the pods' relist after the 410 is complete (pipecd then watches from the
    // relist's version 400, which it does only after folding the relist's end), so that the
    // first apply always compiles the relisted state from scratch. Without this the relist
    // (after a jittered back-off of 0.8 to 1.6 s) raced the slow list: when it lost, the
    // relist was applied incrementally, and an incremental plan may compress the flow
    // rules less well than a fresh one (partition/incremental.rs says so and bounds it), so
    // the state was right but not byte-equal to the fresh compile the test compares with.
    s.insert(
        "/api/v1/services".into(),
        Script {
            lists: one(list("Service", "v1", &[web_service()], 92)),
            delay: Duration::from_millis(1500),
            // Only the pods' watch after the relist asks from version 400.
            after: Some("resourceVersion=400"),
            ..Script::default()
        },
    );
    s.insert(
        "/apis/discovery.k8s.io/v1/endpointslices".into(),
        Script {
            lists: one(list("EndpointSlice", "discovery.k8s.io/v1", &[], 93)),
            ..Script::default()
        },
    );
    s.insert(
        "/apis/networking.k8s.io/v1/networkpolicies".into(),
        Script {
            lists: one(list(
                "NetworkPolicy",
                "networking.k8s.io/v1",
                &ex["NetworkPolicy"],
                94,
            )),
            ..Script::default()
        },
    );
    for anp in ["adminnetworkpolicies", "baselineadminnetworkpolicies"] {
        let kind = if anp.starts_with("admin") {
            "AdminNetworkPolicy"
        } else {
            "BaselineAdminNetworkPolicy"
        };
        s.insert(
            format!("/apis/policy.networking.k8s.io/v1alpha1/{anp}"),
            Script {
                lists: one(list(kind, "policy.networking.k8s.io/v1alpha1", &[], 95)),
                ..Script::default()
            },
        );
    }
    // Cilium's CRDs are not installed: every list is a 404 (and no script is needed, since
    // an unknown path is a 404).
    s.insert(
        "/api/v1/namespaces/kube-system/secrets".into(),
        Script {
            lists: one(list("Secret", "v1", &ex["Secret"], 96)),
            ..Script::default()
        },
    );
    // The pods' history: a list; a watch that adds two pods, bookmarks and is cut; a watch
    // (from the bookmark) that deletes one, relabels the other and ends with 410 Gone; a
    // relist in which `server` is gone too (deleted while nobody watched) and web-3 is new.
    let final_pods = vec![client.clone(), web_pod(1, "web"), web_pod(3, "web")];
    s.insert(
        "/api/v1/pods".into(),
        Script {
            lists: VecDeque::from([
                Some(list("Pod", "v1", &[client.clone(), server.clone()], 100)),
                Some(list("Pod", "v1", &final_pods, 400)),
            ]),
            watches: VecDeque::from([
                Watch {
                    lines: vec![
                        event("ADDED", &web_pod(1, "server"), 110),
                        event("ADDED", &web_pod(2, "server"), 120),
                        bookmark(150),
                    ],
                    end: End::Cut,
                },
                Watch {
                    lines: vec![
                        event("DELETED", &web_pod(2, "server"), 160),
                        event("MODIFIED", &web_pod(1, "web"), 170),
                        gone(170),
                    ],
                    end: End::Close,
                },
            ]),
            ..Script::default()
        },
    );
    let mut objects: Vec<Value> = Vec::new();
    for kind in ["Namespace", "Node", "NetworkPolicy", "Secret"] {
        objects.extend(ex[kind].iter().cloned());
    }
    objects.push(web_service());
    objects.extend(final_pods);
    (s, objects)
}

struct Daemon {
    dir: PathBuf,
    port: u16,
    child: Child,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Daemon {
    fn start(api_port: u16) -> Daemon {
        let dir = std::env::temp_dir().join(format!("pipecd-api-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch");
        let kubeconfig = dir.join("kubeconfig");
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\ncurrent-context: replay\n\
                 clusters: [{{name: replay, cluster: {{server: 'http://127.0.0.1:{api_port}'}}}}]\n\
                 users: [{{name: pipecd, user: {{token: replay-token}}}}]\n\
                 contexts: [{{name: replay, context: {{cluster: replay, user: pipecd}}}}]\n"
            ),
        )
        .expect("kubeconfig");
        let port = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_pipecd"))
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(["--node", "node-a", "--datapath", "model", "--metrics-addr"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("--state-dir")
            .arg(dir.join("state"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("log")).expect("log"))
            .spawn()
            .expect("start pipecd");
        Daemon { dir, port, child }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }

    /// What a fresh compile of `objects` gives, numbered with the daemon's identity numbers.
    fn expected(&self, objects: &[Value]) -> String {
        let pins = StateDir::open(&self.dir.join("state"))
            .and_then(|s| s.read_pins())
            .expect("pins");
        let options = SessionOptions {
            node: Some("node-a".into()),
            hardware: Some(Hardware::Named("octeon-cn10k".into())),
            pins,
            ..SessionOptions::default()
        };
        let texts: Vec<(String, String)> = objects
            .iter()
            .enumerate()
            .map(|(i, o)| (format!("object-{i}.json"), o.to_string()))
            .collect();
        let refs: Vec<(&str, &str)> = texts
            .iter()
            .map(|(n, t)| (n.as_str(), t.as_str()))
            .collect();
        let s = Session::load_texts(&refs, options, &backends).unwrap_or_else(|e| panic!("{e}"));
        expected_dump(&s).expect("dump")
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// GET on loopback: the status line's code and the body.
fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    let code = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, body.to_string()))
}

/// Polls `ok` every 20 ms for at most 30 s.
fn wait(d: &Daemon, what: &str, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    for _ in 0..1500 {
        if ok() {
            return;
        }
        if start.elapsed() > Duration::from_secs(30) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("pipecd did not reach {what}; log:\n{}", d.log());
}

#[test]
fn pipecd_follows_the_api_through_bookmarks_a_cut_stream_and_a_410_relist() {
    let (scripts, objects) = scripts();
    let api = Replay::start(scripts);
    let d = Daemon::start(api.port);

    // Ready only once every initial list is in, the slow Services' one included.
    let mut not_ready_seen = false;
    let mut ready_at = None;
    wait(&d, "readiness", || match get(d.port, "/readyz") {
        Some((200, _)) => {
            ready_at = Some(Instant::now());
            true
        }
        Some((503, _)) => {
            not_ready_seen = true;
            false
        }
        _ => false,
    });
    assert!(not_ready_seen, "ready before the slow list was answered");
    let services_listed = api.answered.lock().expect("lock")["/api/v1/services"];
    assert!(
        ready_at.expect("ready") >= services_listed,
        "the first apply did not wait for every initial list"
    );

    // The daemon ends at the relisted state, equal to a fresh compile of it.
    let mut last = String::new();
    wait(&d, "the relisted state", || {
        last = get(d.port, "/debug/state").map(|b| b.1).unwrap_or_default();
        last == d.expected(&objects)
    });
    assert!(
        last.contains("sa outbound node-b"),
        "the Secret was read:\n{last}"
    );

    // What the client asked: bookmarks, the resume from the bookmark after the cut, the
    // relist after the 410, and only the one Secret.
    let requests = api.requests();
    let pods: Vec<&String> = requests
        .iter()
        .filter(|r| r.starts_with("GET /api/v1/pods"))
        .collect();
    let watches: Vec<&&String> = pods.iter().filter(|r| r.contains("watch=true")).collect();
    let lists = pods.len() - watches.len();
    assert!(lists >= 2, "no relist after the 410: {pods:#?}");
    assert!(watches.len() >= 3, "{pods:#?}");
    assert!(watches[0].contains("resourceVersion=100"), "{pods:#?}");
    assert!(
        watches[1].contains("resourceVersion=150"),
        "the resume after the cut did not start from the bookmark: {pods:#?}"
    );
    assert!(watches[2].contains("resourceVersion=400"), "{pods:#?}");
    assert!(watches
        .iter()
        .all(|w| w.contains("allowWatchBookmarks=true")));
    let secrets: Vec<&String> = requests.iter().filter(|r| r.contains("secrets")).collect();
    assert!(!secrets.is_empty());
    assert!(
        secrets.iter().all(
            |r| r.starts_with("GET /api/v1/namespaces/kube-system/secrets?")
                && r.contains("fieldSelector=metadata.name%3Dcilium-ipsec-keys")
        ),
        "{secrets:#?}"
    );

    // Status and metrics say what happened; no key reaches the log.
    let status: Value =
        serde_json::from_str(&get(d.port, "/status").expect("status").1).expect("json");
    assert_eq!(status["api"]["synced"], json!(true), "{status}");
    let not_served = status["api"]["kinds_not_served"].to_string();
    for k in ["CiliumNetworkPolicy", "CiliumIdentity", "CiliumEndpoint"] {
        assert!(not_served.contains(k), "{status}");
    }
    let metrics = get(d.port, "/metrics").expect("metrics").1;
    let errors: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("pipecd_watch_errors_total "))
        .and_then(|v| v.parse().ok())
        .expect("pipecd_watch_errors_total");
    assert!(errors >= 5, "the 404s and the 410 are counted: {metrics}");
    let key = "5d1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c";
    assert!(
        std::fs::read_to_string(Path::new(EXAMPLE).join("ipsec-keys.yaml"))
            .expect("keys")
            .contains(key)
    );
    assert!(!d.log().contains(key), "a key reached the log");
}
