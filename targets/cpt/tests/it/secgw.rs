//! DPDK's own ESP path as an oracle: the ipsec-secgw example (22.11 source from Debian's
//! `dpdk-doc`, built here with `make` against `libdpdk-dev`) runs in software mode
//! (`no-offload`, crypto_openssl, two net_tap ports) in a network namespace of its own,
//! driven by the SA text pipec emits for one peer. ESP that pipec's model seals for the
//! inbound SA comes out decrypted; cleartext sent in comes out as ESP that pipec's model
//! opens with the outbound SA; a packet sealed with a wrong salt is dropped. ipsec-secgw
//! runs without `-e`, so this path checks the non-ESN form (scapy checks ESN).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pipec_cpt::esp::{ipv4, open, seal, udp4};
use pipec_cpt::{AeadKey, SaDirection, SecretBytes};

use crate::common::{cluster, keys, required, scratch};

const SRC: &str = "/usr/share/dpdk/examples/ipsec-secgw";

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap_or(0))
        .collect()
}

fn build(dir: &Path) -> Option<PathBuf> {
    let ok = Command::new("cp")
        .args(["-r", SRC])
        .arg(dir.join("src"))
        .status()
        .is_ok_and(|s| s.success())
        && Command::new("make")
            .args(["-s", "-j2"])
            .current_dir(dir.join("src"))
            .status()
            .is_ok_and(|s| s.success());
    ok.then(|| dir.join("src/build/ipsec-secgw"))
}

struct Netns(String, Option<Child>);

impl Drop for Netns {
    fn drop(&mut self) {
        if let Some(mut c) = self.1.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn io(ns: &str, send: &str, sniff: &str, filter: &str, packet: &[u8]) -> Option<Vec<u8>> {
    let mut child = Command::new("ip")
        .args([
            "netns",
            "exec",
            ns,
            "/usr/bin/python3",
            concat!(env!("CARGO_MANIFEST_DIR"), "/tests/secgw_io.py"),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("python runs");
    let req =
        serde_json::json!({"send": send, "sniff": sniff, "filter": filter, "packet": hex(packet)});
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(req.to_string().as_bytes())
        .expect("write");
    let out = String::from_utf8_lossy(&child.wait_with_output().expect("io").stdout)
        .trim()
        .to_string();
    (out != "none" && !out.is_empty()).then(|| unhex(&out))
}

#[test]
fn ipsec_secgw_runs_pipecs_sa_text() {
    let usable = Path::new(SRC).exists()
        && Path::new("/dev/net/tun").exists()
        && crate::common::have("make", "--version");
    if !usable {
        assert!(
            !required(),
            "ipsec-secgw source (dpdk-doc), make and /dev/net/tun are required under CI"
        );
        eprintln!("skipping: no ipsec-secgw source, make or /dev/net/tun");
        return;
    }
    let dir = scratch("secgw");
    let bin = build(&dir).expect("ipsec-secgw builds from Debian's example source");
    let art = pipec_cpt::compile(&cluster(), "node-a", &keys("keys-3.yaml")).expect("compiles");
    let out_sa = art
        .sas
        .iter()
        .find(|s| s.direction == SaDirection::Outbound && s.peer == "node-b")
        .expect("out");
    let in_sa = art
        .sas
        .iter()
        .find(|s| s.direction == SaDirection::Inbound && s.peer == "node-b")
        .expect("in");
    // Policies and routes are the test's; the SA lines are pipec's, unchanged.
    let cfg = format!(
        "sp ipv4 out esp protect {spi} pri 1 dst 10.9.0.0/16 sport 0:65535 dport 0:65535\n\
         sp ipv4 in esp protect {spi} pri 1 dst 10.2.0.0/16 sport 0:65535 dport 0:65535\n\
         {sa}rt ipv4 dst {peer}/32 port 1\nrt ipv4 dst 10.2.0.0/16 port 0\n",
        spi = art.spi,
        sa = art.secgw_text_for("node-b", "no-offload"),
        peer = out_sa.dst,
    );
    let cfg_path = dir.join("secgw.cfg");
    pipec_cpt::write_secret_file(&cfg_path, &cfg).expect("config");
    let ns = format!("pipec-cpt-{}", std::process::id());
    assert!(
        Command::new("ip")
            .args(["netns", "add", &ns])
            .status()
            .is_ok_and(|s| s.success()),
        "netns (root needed)"
    );
    let log = std::fs::File::create(dir.join("secgw.log")).expect("log");
    let child = Command::new("ip")
        .args(["netns", "exec", &ns])
        .arg(&bin)
        .args([
            "--no-huge",
            "-m",
            "1024",
            "--no-pci",
            "-l",
            "0",
            "--vdev",
            "net_tap0,iface=sgp0",
            "--vdev",
            "net_tap1,iface=sgu1",
        ])
        .args([
            "--vdev",
            "crypto_openssl0",
            "--",
            "-p",
            "0x3",
            "-P",
            "-u",
            "0x2",
            "--config",
            "(0,0,0),(1,0,0)",
            "-f",
        ])
        .arg(&cfg_path)
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("ipsec-secgw starts");
    let guard = Netns(ns.clone(), Some(child));
    let start = Instant::now();
    while !std::fs::read_to_string(dir.join("secgw.log"))
        .unwrap_or_default()
        .contains("entering main loop")
    {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "ipsec-secgw did not start: {}",
            std::fs::read_to_string(dir.join("secgw.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    for ifc in ["sgp0", "sgu1"] {
        let _ = Command::new("ip")
            .args(["netns", "exec", &ns, "ip", "link", "set", ifc, "up"])
            .status();
    }
    let v4 = |ip: std::net::IpAddr| match ip {
        std::net::IpAddr::V4(v) => v.octets(),
        std::net::IpAddr::V6(_) => [0; 4],
    };
    let data = b"pipec to ipsec-secgw";
    // Inbound: ESP sealed by pipec's model with the inbound SA → cleartext on the protected port.
    let inner = udp4([10, 1, 0, 1], [10, 2, 0, 1], 4000, 5000, data);
    let esp = seal(&in_sa.key, in_sa.spi, 1, false, [9; 8], &inner).expect("seal");
    let got = io(
        &ns,
        "sgu1",
        "sgp0",
        "udp port 5000",
        &ipv4(v4(in_sa.src), v4(in_sa.dst), 50, &esp),
    );
    assert!(
        got.is_some_and(|p| p.ends_with(data)),
        "ipsec-secgw must decrypt pipec's ESP"
    );
    // A wrong salt: dropped.
    let mut bad = in_sa.key.material.expose().to_vec();
    bad[19] ^= 1;
    let bad = AeadKey {
        material: SecretBytes::new(bad),
    };
    let esp = seal(&bad, in_sa.spi, 2, false, [9; 8], &inner).expect("seal");
    assert!(io(
        &ns,
        "sgu1",
        "sgp0",
        "udp port 5000",
        &ipv4(v4(in_sa.src), v4(in_sa.dst), 50, &esp)
    )
    .is_none());
    // Outbound: cleartext in → ESP out, which pipec's model opens with the outbound SA.
    let clear = udp4([10, 1, 0, 1], [10, 9, 0, 1], 4000, 6000, data);
    let got = io(&ns, "sgp0", "sgu1", "ip proto 50", &clear).expect("ipsec-secgw emits ESP");
    assert_eq!(&got[12..20], &[v4(out_sa.src), v4(out_sa.dst)].concat()[..]);
    let opened = open(&out_sa.key, &got[20..], false, 0).expect("pipec opens ipsec-secgw's ESP");
    assert!(opened.ends_with(data));
    drop(guard);
    let _ = std::fs::remove_dir_all(&dir);
}
