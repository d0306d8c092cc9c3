//! `pipec explain` on the Star Wars example (its `--emit rte_flow|testpmd|plan` are in the
//! stage matrix, `cli/tests/stages.rs`), and every emitted `flow` line fed to `dpdk-testpmd`
//! (required when `PIPEC_REQUIRE_TESTPMD` is set, skipped otherwise when testpmd is missing).

// Dependencies of the package that this target does not use itself; they serve its
// other targets. `unused_crate_dependencies` checks every target against all of them.
use anyhow as _;
use clap as _;
use clap_complete as _;
use ipnet as _;
use mimalloc as _;
use pipec as _;
use pipec_cpt as _;
use pipec_ebpf as _;
use pipec_proto as _;
use policy_lang as _;
use proptest as _;
use serde as _;
use serde_json as _;
use serde_yaml as _;
use tempfile as _;
use tokio as _;
use tonic as _;

use std::process::Command;

fn pipec(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_pipec"))
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .args(args)
        .output()
        .expect("run pipec");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn explain_starwars() {
    insta::assert_snapshot!(pipec(&["explain", "examples/starwars"]));
    insta::assert_snapshot!(pipec(&["explain", "examples/starwars", "--rule", "t9.e6"]));
}

/// The `flow` lines of `pipec compile ARGS --emit testpmd`.
fn flow_lines(args: &[&str]) -> Vec<String> {
    let mut all = vec!["compile"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--emit", "testpmd"]);
    pipec(&all)
        .lines()
        .filter(|l| l.starts_with("flow "))
        .map(str::to_string)
        .collect()
}

/// Every `flow` line emitted for the examples (with their `.pipe` files and targets) and
/// for a generated cluster (`gencluster --small`: 1500 pods, 100 Services, 100 policies;
/// the full scale takes too long for CI), fed to one `dpdk-testpmd --no-huge --no-pci
/// --vdev net_null0` run: none may be rejected by testpmd's parser ("Bad arguments").
#[test]
fn every_emitted_flow_line_reaches_the_pmd() {
    use pipec_rte_flow::oracle;
    if !oracle::testpmd_available() {
        assert!(
            std::env::var("PIPEC_REQUIRE_TESTPMD").as_deref() != Ok("1"),
            "PIPEC_REQUIRE_TESTPMD=1 but dpdk-testpmd is missing (Debian package `dpdk`)"
        );
        return;
    }
    let dir = std::env::temp_dir().join(format!("pipec-testpmd-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let small = dir.join("small.json");
    let file = std::fs::File::create(&small).expect("create");
    gencluster::write_to(&gencluster::Spec::small(), std::io::BufWriter::new(file))
        .expect("generate");
    let small = small.to_str().expect("utf-8 path");
    let sets: Vec<(String, Vec<String>)> = [
        vec!["examples/starwars"],
        vec!["examples/starwars", "examples/anp-01.pipe"],
        vec![
            "examples/starwars",
            "examples/cluster-guard.pipe",
            "examples/targets.pipe",
            "--target",
            "cn10k-no-rss",
        ],
        vec![small],
    ]
    .iter()
    .map(|args| (args.join(" "), flow_lines(args)))
    .collect();
    let _ = std::fs::remove_dir_all(&dir);
    for (name, lines) in &sets {
        assert!(!lines.is_empty(), "{name}: no flow lines");
    }
    let (_, small_lines) = sets.last().expect("the generated set");
    assert!(
        small_lines.len() > 50,
        "the generated cluster gives only {} flow lines",
        small_lines.len()
    );
    let lines: Vec<String> = sets.iter().flat_map(|(_, l)| l.iter().cloned()).collect();
    let answers = oracle::run(&lines).expect("testpmd runs");
    assert_eq!(answers.len(), lines.len());
    for a in &answers {
        assert!(
            matches!(a.verdict, oracle::Verdict::ReachedPmd(_)),
            "{} -> {:?}",
            a.command,
            a.verdict
        );
    }
}
