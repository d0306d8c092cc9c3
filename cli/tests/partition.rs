//! `pipec explain` and `--emit rte_flow|testpmd` on the Star Wars example: snapshots, and
//! every emitted `flow` line fed to `dpdk-testpmd` (required when `PIPEC_REQUIRE_TESTPMD`
//! is set, skipped otherwise when testpmd is missing).

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

#[test]
fn emit_rte_flow_and_testpmd_starwars() {
    insta::assert_snapshot!(pipec(&[
        "compile",
        "examples/starwars",
        "--emit",
        "rte_flow"
    ]));
    insta::assert_snapshot!(pipec(&[
        "compile",
        "examples/starwars",
        "--emit",
        "testpmd"
    ]));
    insta::assert_snapshot!(pipec(&["compile", "examples/starwars", "--emit", "plan"]));
}

#[test]
fn every_emitted_flow_line_reaches_the_pmd() {
    use pipec_rte_flow::oracle;
    if !oracle::testpmd_available() {
        assert!(
            std::env::var_os("PIPEC_REQUIRE_TESTPMD").is_none(),
            "dpdk-testpmd is required but missing"
        );
        return;
    }
    let text = pipec(&["compile", "examples/starwars", "--emit", "testpmd"]);
    let lines: Vec<String> = text
        .lines()
        .filter(|l| l.starts_with("flow "))
        .map(str::to_string)
        .collect();
    assert!(!lines.is_empty());
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
