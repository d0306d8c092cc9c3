//! `examples/ipsec` through the binary: `--emit cpt` and `--emit xfrm`, and no output of
//! any command carries a key. The keys searched for are the ones `--emit xfrm` writes (the
//! derived per-pair keys) plus the Secret's own key.

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
use serde_json as _;
use serde_yaml as _;
use tempfile as _;
use tokio as _;
use tonic as _;

use std::os::unix::fs::PermissionsExt as _;
use std::process::{Command, Output};

const EXAMPLE: &str = "examples/ipsec";
const GLOBAL_KEY: &str = "5d1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c";

fn pipec(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pipec"))
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .args(args)
        .output()
        .expect("run pipec")
}

fn ok(args: &[&str]) -> Vec<u8> {
    let out = pipec(args);
    assert!(
        out.status.success(),
        "pipec {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    [out.stdout, out.stderr].concat()
}

/// The keys of the xfrm file: the hex after `0x` on every `aead` line.
fn xfrm_keys(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.split("aead 'rfc4106(gcm(aes))' 0x").nth(1))
        .filter_map(|rest| rest.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

fn spellings(hex: &str) -> Vec<Vec<u8>> {
    let bytes: Vec<u8> = (0..hex.len() / 2)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex"))
        .collect();
    let cipher = &hex[..32];
    vec![
        hex.as_bytes().to_vec(),
        hex.to_uppercase().into_bytes(),
        cipher.as_bytes().to_vec(),
        bytes[..16].to_vec(),
    ]
}

/// Runs `--emit xfrm` into a scratch file; returns what pipec said, the file's text and
/// its mode.
fn emit_xfrm(tag: &str) -> (Vec<u8>, String, u32) {
    let dir = std::env::temp_dir().join(format!("pipec-ipsec-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("xfrm.sh");
    let path = file.to_str().expect("utf-8");
    let said = ok(&[
        "compile",
        "--emit",
        "xfrm",
        "--node",
        "node-a",
        EXAMPLE,
        "--secret-file",
        path,
    ]);
    let text = std::fs::read_to_string(&file).expect("written");
    let mode = std::fs::metadata(&file).expect("meta").permissions().mode() & 0o777;
    std::fs::remove_dir_all(&dir).expect("clean up");
    (said, text, mode)
}

#[test]
fn xfrm_goes_to_a_0600_file_only() {
    let (said, text, mode) = emit_xfrm("mode");
    assert_eq!(mode, 0o600);
    let keys = xfrm_keys(&text);
    assert_eq!(keys.len(), 4, "two peers, both directions: {text}");
    for k in &keys {
        assert!(!String::from_utf8_lossy(&said).contains(k.as_str()));
    }
    let refused = pipec(&["compile", "--emit", "xfrm", "--node", "node-a", EXAMPLE]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(refused.stdout.is_empty());
}

#[test]
fn no_command_prints_a_key() {
    let mut keys = xfrm_keys(&emit_xfrm("leak").1);
    keys.push(GLOBAL_KEY.to_string());
    let mut runs: Vec<Vec<&str>> = Vec::new();
    for emit in [
        "model",
        "identities",
        "mag",
        "dot",
        "ebpf",
        "plan",
        "rte_flow",
        "testpmd",
        "cpt",
    ] {
        for format in ["text", "json", "yaml"] {
            runs.push(vec![
                "compile", "--emit", emit, "-o", format, "--node", "node-a", EXAMPLE,
            ]);
        }
    }
    runs.push(vec!["explain", "--node", "node-a", EXAMPLE]);
    runs.push(vec!["explain", "--node", "node-a", "-o", "json", EXAMPLE]);
    runs.push(vec!["check", EXAMPLE]);
    runs.push(vec![
        "trace",
        EXAMPLE,
        "--from",
        "shop/client",
        "--to",
        "shop/server",
        "--port",
        "80",
    ]);
    for run in &runs {
        let out = pipec(run);
        let all = [out.stdout, out.stderr].concat();
        for k in &keys {
            for needle in spellings(k) {
                assert!(
                    !all.windows(needle.len()).any(|w| w == needle.as_slice()),
                    "pipec {run:?} printed a key"
                );
            }
        }
    }
}

/// The eBPF side of the hand-over agrees with the CPT: `to_wire`'s peer id `p` is the peer
/// whose SA slot the CPT numbers from ordinal `p - 1`.
#[test]
fn ebpf_peer_ids_name_the_cpt_peers() {
    let ebpf = String::from_utf8(ok(&[
        "compile", "--emit", "ebpf", "--node", "node-a", EXAMPLE,
    ]))
    .expect("utf-8");
    let routes: Vec<&str> = ebpf.lines().filter(|l| l.starts_with("ipsec ")).collect();
    assert_eq!(
        routes,
        ["ipsec 10.10.2.0/24 peer=1", "ipsec 10.10.3.0/24 peer=2"],
        "node-b and node-c's pod CIDRs"
    );
    let cpt = String::from_utf8(ok(&[
        "compile", "--emit", "cpt", "--node", "node-a", EXAMPLE,
    ]))
    .expect("utf-8");
    // SPI 3: slot = 3 * ordinal + 3 mod 3.
    assert!(
        cpt.contains("sa_index 0 alg0") && cpt.contains("# peer node-b spi 3"),
        "{cpt}"
    );
    assert!(
        cpt.contains("sa_index 3 alg0") && cpt.contains("# peer node-c spi 3"),
        "{cpt}"
    );
    // Without the Secret, IPsec is off on both sides.
    let off = String::from_utf8(ok(&[
        "compile",
        "--emit",
        "ebpf",
        "--node",
        "node-a",
        "examples/ipsec/cluster.yaml",
    ]))
    .expect("utf-8");
    assert!(!off.contains("\nipsec "), "{off}");
    let off = String::from_utf8(ok(&[
        "compile",
        "--emit",
        "cpt",
        "--node",
        "node-a",
        "examples/ipsec/cluster.yaml",
    ]))
    .expect("utf-8");
    assert!(off.contains("IPsec is off"), "{off}");
}
