//! `pipec status`, `pipec explain --live` and `pipec trace --live` against a running pipecd
//! (started here by its process id on a scratch copy of `examples/ipsec`, model datapath):
//! the live answers equal what the file-based commands print for the same state, follow a
//! change, and the control socket is mode 0600.

// Dependencies of the package that this target does not use itself; they serve its
// other targets. `unused_crate_dependencies` checks every target against all of them.
use anyhow as _;
use clap as _;
use clap_complete as _;
use gencluster as _;
use insta as _;
use ipnet as _;
use mimalloc as _;
use pipec as _;
use pipec_cpt as _;
use pipec_ebpf as _;
use pipec_proto as _;
use pipec_rte_flow as _;
use policy_lang as _;
use proptest as _;
use serde as _;
use serde_yaml as _;
use tempfile as _;
use tokio as _;
use tonic as _;

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/ipsec");

/// pipecd is built beside pipec by `cargo test --workspace` (.ci/run).
fn pipecd() -> PathBuf {
    let path = Path::new(env!("CARGO_BIN_EXE_pipec")).with_file_name("pipecd");
    assert!(
        path.exists(),
        "{} is missing: run the workspace's tests (cargo test --workspace) or cargo build -p pipec-runtime",
        path.display()
    );
    path
}

fn pipec(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pipec"))
        .args(args)
        .output()
        .expect("run pipec")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

struct Daemon {
    dir: PathBuf,
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
    fn start() -> Daemon {
        let dir = std::env::temp_dir().join(format!("pipec-live-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("m")).expect("scratch");
        for f in ["cluster.yaml", "ipsec-keys.yaml"] {
            std::fs::copy(Path::new(EXAMPLE).join(f), dir.join("m").join(f)).expect("copy");
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("port")
            .port();
        let child = Command::new(pipecd())
            .arg("--manifests")
            .arg(dir.join("m"))
            .args(["--node", "node-a", "--datapath", "model", "--metrics-addr"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("--control")
            .arg(format!("unix:{}", dir.join("run/pipecd.sock").display()))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("log")).expect("log"))
            .spawn()
            .expect("start pipecd");
        Daemon { dir, child }
    }

    fn control(&self) -> String {
        format!(
            "--control=unix:{}",
            self.dir.join("run/pipecd.sock").display()
        )
    }

    fn manifests(&self) -> String {
        self.dir.join("m").display().to_string()
    }

    /// Polls `ok` every 50 ms for at most 20 s.
    fn wait(&self, what: &str, ok: impl Fn() -> bool) {
        let start = Instant::now();
        for _ in 0..400 {
            if ok() {
                return;
            }
            if start.elapsed() > Duration::from_secs(20) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let log = std::fs::read_to_string(self.dir.join("log")).unwrap_or_default();
        panic!("pipecd did not reach {what}; log:\n{log}");
    }
}

#[test]
fn live_explain_and_trace_equal_the_file_commands_and_follow_changes() {
    let d = Daemon::start();
    let control = d.control();
    d.wait("readiness", || {
        pipec(&["status", &control]).status.success()
    });

    let socket = d.dir.join("run/pipecd.sock");
    let mode = std::fs::metadata(&socket)
        .expect("socket")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the control socket is mode {mode:o}");

    let status = pipec(&["status", &control, "-o", "json"]);
    let s: serde_json::Value = serde_json::from_slice(&status.stdout).expect("json");
    assert_eq!(s["ready"], serde_json::json!(true), "{s}");
    assert!(stdout(&pipec(&["status", &control])).starts_with("ready:       true\n"));

    let m = d.manifests();
    let files = |args: &[&str]| {
        let mut a = args.to_vec();
        a.extend([m.as_str(), "--node", "node-a"]);
        pipec(&a)
    };
    let live = |args: &[&str]| {
        let mut a = args.to_vec();
        a.extend(["--live", control.as_str()]);
        pipec(&a)
    };
    for args in [
        &["explain"][..],
        &["explain", "-o", "json"],
        &["explain", "-o", "yaml"],
    ] {
        let (f, l) = (files(args), live(args));
        assert!(
            f.status.success() && l.status.success(),
            "{}",
            String::from_utf8_lossy(&l.stderr)
        );
        assert_eq!(stdout(&l), stdout(&f), "pipec {args:?} --live");
    }
    let trace = [
        "trace",
        "--from",
        "shop/client",
        "--to",
        "shop/server",
        "--port",
        "80/TCP",
    ];
    let with_inputs = {
        let mut a = trace.to_vec();
        a.push(m.as_str());
        pipec(&a)
    };
    let l = live(&trace);
    assert_eq!(l.status.code(), with_inputs.status.code());
    assert_eq!(stdout(&l), stdout(&with_inputs));
    assert!(stdout(&l).contains("allow"), "{}", stdout(&l));

    // A change to the running state shows in the live answers.
    let before = stdout(&live(&["explain"]));
    let policy = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n\
        metadata: {name: deny-client, namespace: shop}\n\
        spec: {podSelector: {matchLabels: {app: client}}, policyTypes: [Egress]}\n";
    let tmp = d.dir.join("m/.deny.yaml.tmp");
    std::fs::write(&tmp, policy).expect("write");
    std::fs::rename(&tmp, d.dir.join("m/deny.yaml")).expect("rename");
    d.wait("the change applied", || {
        stdout(&live(&["explain"])) != before
    });
    assert_eq!(stdout(&live(&["explain"])), stdout(&files(&["explain"])));
    let l = live(&trace);
    assert!(stdout(&l).contains("deny"), "{}", stdout(&l));

    // Mistakes are plain errors.
    let out = pipec(&["explain", "--live", &control, m.as_str()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("give no inputs"));
    let out = pipec(&["status", "--control=unix:/nonexistent/pipecd.sock"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach pipecd"));
    let out = pipec(&["explain"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "no inputs and no --live is a usage error"
    );
}
