//! Benchmark (BENCHMARKS.md): the SA set of one node in a 5,000-node cluster, and the delta
//! of one key rotation, with time and peak memory.
//!
//! `cargo run --release -p pipec-cpt --example cpt_bench [nodes]`
//!
//! Not `bench`: the eBPF target has an example of that name, and two examples of one name
//! in a workspace write one file.

// Dependencies of the package that this target does not use itself; they serve its
// other targets. `unused_crate_dependencies` checks every target against all of them.
use aes_gcm as _;
use base64 as _;
use insta as _;
use pipec_dpdk_sys as _;
use serde as _;
use serde_json as _;
use serde_yaml as _;
use sha2 as _;

use std::fmt::Write as _;
use std::time::Instant;

use pipec_cpt::{compile_with, diff, read_keys_from_texts, DeviceLimits};

fn status(field: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Resets the peak RSS so the next reading covers only what follows (Linux `clear_refs` 5).
fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(5000);
    let mut nodes = String::new();
    for i in 0..n {
        let _ = writeln!(
            nodes,
            "---\napiVersion: v1\nkind: Node\nmetadata: {{name: node-{i:05}}}\nstatus:\n  addresses: [{{type: InternalIP, address: 10.{}.{}.{}}}]\n  nodeInfo: {{bootID: {:08x}-0000-4000-8000-{:012x}}}",
            (i >> 16) & 0xff,
            (i >> 8) & 0xff,
            i & 0xff,
            i,
            i
        );
    }
    let secret = |spi: u8, key: &str| {
        format!("kind: Secret\nmetadata: {{name: cilium-ipsec-keys, namespace: kube-system}}\nstringData: {{keys: \"{spi}+ rfc4106(gcm(aes)) {key} 128\"}}\n")
    };
    let s3 = secret(3, "00112233445566778899aabbccddeeff01020304");
    let s4 = secret(4, "f0e1d2c3b4a5968778695a4b3c2d1e0f10203040");
    let loaded = pipec::driver::load_texts(&[("nodes.yaml", &nodes)], &Default::default());
    let k3 = read_keys_from_texts(&[("nodes.yaml", &nodes), ("s.yaml", &s3)])
        .ok()
        .flatten()
        .expect("keys 3");
    let k4 = read_keys_from_texts(&[("nodes.yaml", &nodes), ("s.yaml", &s4)])
        .ok()
        .flatten()
        .expect("keys 4");
    let limits = DeviceLimits::for_peers(n);
    let node = "node-00000";

    reset_peak();
    let base = status("VmRSS:");
    let t = Instant::now();
    let a3 = compile_with(&loaded.cluster, node, &k3, limits).expect("compile");
    let compile_ms = t.elapsed().as_secs_f64() * 1e3;
    let compile_peak = status("VmHWM:").saturating_sub(base);

    let a4 = compile_with(&loaded.cluster, node, &k4, limits).expect("compile rotated");
    reset_peak();
    let base = status("VmRSS:");
    let t = Instant::now();
    let ops = diff(&a3, &a4);
    let diff_ms = t.elapsed().as_secs_f64() * 1e3;
    let diff_peak = status("VmHWM:").saturating_sub(base);
    let t = Instant::now();
    let text_len = a3.text().len();
    let text_ms = t.elapsed().as_secs_f64() * 1e3;

    println!(
        "nodes {n}: {} SAs, {} steering rules",
        a3.sas.len(),
        a3.steering.len()
    );
    println!("compile one node's SA set: {compile_ms:.1} ms, peak +{compile_peak} KiB");
    println!(
        "rotation delta: {} ops in {diff_ms:.1} ms, peak +{diff_peak} KiB (ops vector {} KiB)",
        ops.len(),
        ops.capacity() * std::mem::size_of::<pipec_cpt::SaOp>() / 1024
    );
    println!("text form: {text_len} bytes in {text_ms:.1} ms");
}
