//! The host↔DPU channel over TCP with mutual TLS: pipecd (model datapath, on loopback)
//! serves the CNI service with a certificate of a development CA made by
//! `deploy/tls/dev-ca.sh`; pipec-cni with the CA's client certificate gets through; a client
//! without a certificate, with one of another CA, or trusting another CA is refused.

// Dependencies of the package that this target does not use itself; they serve its
// other targets. `unused_crate_dependencies` checks every target against all of them.
use pipec as _;
use pipec_cni as _;
use pipec_netns as _;
use serde as _;

use serde_json::{json, Value};
use std::io::Write as _;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/tls/dev-ca.sh");
const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/ipsec");

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

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port")
}

fn make_ca(dir: &Path) {
    let out = Command::new("bash")
        .arg(SCRIPT)
        .arg(dir)
        .output()
        .expect("run dev-ca.sh");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn start(dir: &Path, port: u16) -> Daemon {
    std::fs::create_dir_all(dir.join("m")).expect("scratch");
    for f in ["cluster.yaml", "ipsec-keys.yaml"] {
        std::fs::copy(Path::new(EXAMPLE).join(f), dir.join("m").join(f)).expect("copy");
    }
    let ca = dir.join("ca1");
    let child = Command::new(Path::new(env!("CARGO_BIN_EXE_pipec-cni")).with_file_name("pipecd"))
        .arg("--manifests")
        .arg(dir.join("m"))
        .args([
            "--node",
            "node-a",
            "--datapath",
            "model",
            "--metrics-addr",
            "127.0.0.1:0",
        ])
        .args(["--cni-listen", &format!("127.0.0.1:{port}")])
        .arg("--tls-cert")
        .arg(ca.join("pipecd.pem"))
        .arg("--tls-key")
        .arg(ca.join("pipecd.key"))
        .arg("--tls-client-ca")
        .arg(ca.join("ca.pem"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("log")).expect("log"))
        .spawn()
        .expect("start pipecd (built beside pipec-cni by cargo test --workspace)");
    let d = Daemon {
        dir: dir.to_path_buf(),
        child,
    };
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "pipecd did not listen: {}",
            std::fs::read_to_string(dir.join("log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    d
}

/// `pipec-cni` STATUS with `tls` (1.1.0): 0 when the channel authenticates.
fn status(port: u16, tls: Value) -> (i32, Value) {
    let config = json!({
        "cniVersion": "1.1.0", "name": "pipec", "type": "pipec-cni",
        "pipecd": format!("https://127.0.0.1:{port}"), "tls": tls,
    });
    let mut child = Command::new(env!("CARGO_BIN_EXE_pipec-cni"))
        .env_clear()
        .env("CNI_COMMAND", "STATUS")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run pipec-cni");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(config.to_string().as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("wait");
    (
        out.status.code().unwrap_or(-1),
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null),
    )
}

fn files(dir: &Path, ca: &str, client_ca: &str) -> Value {
    json!({
        "ca": dir.join(ca).join("ca.pem"),
        "cert": dir.join(client_ca).join("pipec-cni.pem"),
        "key": dir.join(client_ca).join("pipec-cni.key"),
    })
}

#[test]
fn only_clients_of_the_ca_get_through_and_only_to_the_cas_server() {
    let dir = std::env::temp_dir().join(format!("pipec-cni-tls-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    make_ca(&dir.join("ca1"));
    make_ca(&dir.join("ca2"));
    let port = free_port();
    let _d = start(&dir, port);

    let (code, out) = status(port, files(&dir, "ca1", "ca1"));
    assert_eq!(code, 0, "{out}");

    // A client certificate of another CA: refused.
    let (code, out) = status(port, files(&dir, "ca1", "ca2"));
    assert_eq!((code, out["code"].as_u64()), (1, Some(50)), "{out}");
    // A client that trusts another CA refuses pipecd's certificate.
    let (code, out) = status(port, files(&dir, "ca2", "ca2"));
    assert_eq!((code, out["code"].as_u64()), (1, Some(50)), "{out}");
    assert!(
        out["details"]
            .as_str()
            .unwrap_or("")
            .contains("certificate"),
        "{out}"
    );

    // A client without a certificate: the handshake or the first call fails.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let refused = rt.block_on(async {
        let ca = std::fs::read(dir.join("ca1/ca.pem")).expect("ca");
        let tls = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(ca));
        let endpoint = tonic::transport::Endpoint::from_shared(format!("https://127.0.0.1:{port}"))
            .expect("url")
            .tls_config(tls)
            .expect("tls");
        match endpoint.connect().await {
            Err(_) => true,
            Ok(channel) => {
                let mut c = pipec_proto::v1::cni_client::CniClient::new(channel);
                c.check(pipec_proto::v1::CheckRequest {
                    container_id: "x".into(),
                    ifname: "eth0".into(),
                })
                .await
                .is_err()
            }
        }
    });
    assert!(refused, "a client without a certificate was served");
    let _ = std::fs::remove_dir_all(&dir);
}
