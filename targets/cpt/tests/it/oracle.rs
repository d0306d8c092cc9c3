//! The ESP oracles. For every SA pipec emits, packets sealed by pipec's ESP model with the
//! SA's key, salt and SPI are decrypted and verified by tshark (without ESN, which tshark
//! cannot verify) and by scapy (with ESN, as the SA is configured), and packets scapy seals
//! are opened by pipec's model; a wrong key or salt must fail. The `ip xfrm` text's keys are
//! checked by the same oracle. Missing tools fail the test when `CI` is set.

use std::io::Write as _;
use std::process::{Command, Stdio};

use pipec_cpt::esp::{open, pcap, seal, udp4};
use pipec_cpt::{compile, AeadKey, CptArtifact, Sa, SecretBytes};

use crate::common::{cluster, have, keys, required, scratch};

const PY: &str = "/usr/bin/python3";
const DATA: &[u8] = b"pipec-cpt oracle payload";

fn artifact() -> CptArtifact {
    compile(&cluster(), "node-a", &keys("keys-3.yaml")).expect("compiles")
}

fn v4(ip: std::net::IpAddr) -> [u8; 4] {
    match ip {
        std::net::IpAddr::V4(v) => v.octets(),
        std::net::IpAddr::V6(_) => panic!("the fixture is IPv4"),
    }
}

/// The outer packet pipec's model of the CPT emits for an SA.
fn sealed(sa: &Sa, key: &AeadKey, seq: u64, esn: bool) -> Vec<u8> {
    let inner = udp4([10, 1, 0, 1], [10, 2, 0, 1], 4000, 5000, DATA);
    let esp = seal(
        key,
        sa.spi,
        seq,
        esn,
        [1, 2, 3, 4, 5, 6, 7, (seq & 0xff) as u8],
        &inner,
    )
    .expect("seal");
    pipec_cpt::esp::ipv4(v4(sa.src), v4(sa.dst), 50, &esp)
}

fn tamper(key: &AeadKey, byte: usize) -> AeadKey {
    let mut m = key.material.expose().to_vec();
    m[byte] ^= 1;
    AeadKey {
        material: SecretBytes::new(m),
    }
}

fn tool(name: &str, probe: &[&str]) -> bool {
    let ok = have(probe[0], probe[1]);
    if !ok && required() {
        panic!("{name} is required under CI but is missing");
    }
    if !ok {
        eprintln!("skipping: {name} missing");
    }
    ok
}

/// tshark's verdict on one packet: (icv_good, decrypted UDP payload hex).
fn tshark(sa: &Sa, key: &AeadKey, packet: Vec<u8>) -> (String, String) {
    let dir = scratch("tshark");
    let file = dir.join(format!("{:?}-{}.pcap", sa.direction, sa.peer));
    std::fs::write(&file, pcap(&[packet])).expect("pcap");
    let uat = format!(
        "uat:esp_sa:\"IPv4\",\"{}\",\"{}\",\"0x{:08x}\",\"AES-GCM with 16 octet ICV [RFC4106]\",\"0x{}\",\"NULL\",\"\"",
        sa.src,
        sa.dst,
        sa.spi,
        key.material.expose_hex()
    );
    let out = Command::new("tshark")
        .args(["-n", "-r"])
        .arg(&file)
        .args([
            "-o",
            "esp.enable_encryption_decode:TRUE",
            "-o",
            "esp.enable_authentication_check:TRUE",
            "-o",
            &uat,
        ])
        .args([
            "-T",
            "fields",
            "-e",
            "esp.icv_good",
            "-e",
            "udp.payload",
            "-e",
            "data.data",
        ])
        .output()
        .expect("tshark runs");
    let _ = std::fs::remove_dir_all(&dir);
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let mut f = text.split('\t');
    let good = f.next().unwrap_or_default().to_string();
    let payload = f.filter(|s| !s.is_empty()).collect::<Vec<_>>().join(",");
    (good, payload)
}

#[test]
fn tshark_decrypts_and_verifies_every_sa() {
    if !tool("tshark", &["tshark", "--version"]) {
        return;
    }
    let art = artifact();
    let hex: String = DATA.iter().map(|b| format!("{b:02x}")).collect();
    for sa in &art.sas {
        let (good, payload) = tshark(sa, &sa.key, sealed(sa, &sa.key, 7, false));
        assert_eq!(good, "1", "{:?} {}: ICV must verify", sa.direction, sa.peer);
        assert!(payload.contains(&hex), "decrypted payload: {payload}");
        // The same packet against a wrong key and a wrong salt: the ICV fails.
        for byte in [0, 19] {
            let (good, payload) = tshark(sa, &tamper(&sa.key, byte), sealed(sa, &sa.key, 7, false));
            assert_ne!(good, "1", "wrong byte {byte} must not verify");
            assert!(!payload.contains(&hex));
        }
    }
}

fn scapy(req: serde_json::Value) -> (bool, String) {
    let mut child = Command::new(PY)
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/scapy_esp.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python runs");
    // Keys go over stdin, never on a command line.
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(req.to_string().as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("scapy");
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    match text.strip_prefix("ok ") {
        Some(rest) if out.status.success() => (true, rest.to_string()),
        _ => (
            false,
            format!("{text} {}", String::from_utf8_lossy(&out.stderr)),
        ),
    }
}

fn req(sa: &Sa, key: &AeadKey, op: &str, esn: bool) -> serde_json::Value {
    serde_json::json!({
        "op": op, "spi": sa.spi, "key": key.material.expose_hex(), "src": sa.src.to_string(),
        "dst": sa.dst.to_string(), "esn": esn, "seq": 5,
    })
}

fn scapy_present() -> bool {
    tool("python3", &[PY, "--version"]) && {
        let ok = Command::new(PY)
            .args(["-c", "import scapy.layers.ipsec"])
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(ok || !required(), "python3-scapy is required under CI");
        ok
    }
}

#[test]
fn scapy_verifies_pipec_esn_packets_and_pipec_opens_scapys() {
    if !scapy_present() {
        return;
    }
    let art = artifact();
    let hex: String = DATA.iter().map(|b| format!("{b:02x}")).collect();
    for sa in &art.sas {
        assert!(sa.session.esn);
        // pipec → scapy, with ESN as configured.
        let pkt: String = sealed(sa, &sa.key, 5, true)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let mut r = req(sa, &sa.key, "decrypt", true);
        r["packet"] = pkt.clone().into();
        assert_eq!(
            scapy(r),
            (true, hex.clone()),
            "{:?} {}",
            sa.direction,
            sa.peer
        );
        for byte in [3, 18] {
            let mut r = req(sa, &tamper(&sa.key, byte), "decrypt", true);
            r["packet"] = pkt.clone().into();
            assert!(!scapy(r).0, "a wrong key or salt byte {byte} must fail");
        }
        // scapy → pipec.
        let mut r = req(sa, &sa.key, "encrypt", true);
        r["data"] = hex.clone().into();
        let (ok, out) = scapy(r);
        assert!(ok, "{out}");
        let bytes: Vec<u8> = (0..out.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&out[i..i + 2], 16).unwrap_or(0))
            .collect();
        let inner = open(&sa.key, &bytes[20..], true, 0).expect("pipec opens scapy's packet");
        assert!(inner.ends_with(DATA));
        assert!(open(&tamper(&sa.key, 17), &bytes[20..], true, 0).is_err());
        assert!(
            open(&sa.key, &bytes[20..], false, 0).is_err(),
            "ESN is in the AAD"
        );
    }
}

/// The `ip xfrm` text carries the same keys: each state line's key, taken from the text,
/// opens what scapy seals for that state's SPI and addresses.
#[test]
fn xfrm_text_keys_pass_the_oracle() {
    let art = artifact();
    let text = art.xfrm_text();
    let states: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("ip xfrm state add "))
        .collect();
    assert_eq!(states.len(), art.sas.len());
    for (line, sa) in states.iter().zip(&art.sas) {
        let w: Vec<&str> = line.split_whitespace().collect();
        let at = |k: &str| {
            w.iter()
                .position(|x| *x == k)
                .map(|i| w[i + 1])
                .expect("field")
        };
        assert_eq!(at("src"), sa.src.to_string());
        assert_eq!(at("dst"), sa.dst.to_string());
        assert_eq!(at("spi"), format!("0x{:08x}", sa.spi));
        assert_eq!(at("mode"), "tunnel");
        assert!(line.contains("flag esn") && line.contains("replay-window 1024"));
        let hex = w[w.len() - 2].trim_start_matches("0x");
        assert_eq!(w[w.len() - 1], "128");
        let key = AeadKey {
            material: SecretBytes::new(
                (0..hex.len())
                    .step_by(2)
                    .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap_or(0))
                    .collect(),
            ),
        };
        assert!(open(&key, &sealed(sa, &sa.key, 9, true)[20..], true, 0).is_ok());
        if scapy_present() {
            let mut r = req(sa, &key, "decrypt", true);
            r["packet"] = sealed(sa, &sa.key, 5, true)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
                .into();
            assert!(scapy(r).0);
        }
    }
    assert_eq!(
        text.lines()
            .filter(|l| l.starts_with("ip xfrm policy add "))
            .count(),
        art.sas.len() / 2
    );
}
