//! The bad-input corpus (issue 18): hundreds of malformed, hostile and borderline inputs,
//! each with its expected class, run through the real binary as a user would.
//!
//! Each file of `tests/corpus/` holds many cases. A case starts with a header line
//!
//! ```text
//! #### NAME => EXPECT
//! ```
//!
//! and runs to the next header. `NAME` ending in `.json` makes the case a JSON file;
//! otherwise it is YAML. `EXPECT` is `ok` (no diagnostic at all) or the diagnostic codes the
//! case must give, exactly (the set of distinct codes of every error and warning, such as
//! `E0102` or `W0008 W0002`). A case whose codes are all warnings is accepted with warnings.
//!
//! For every case: `pipec check -o json` answers within the time limit, under a memory
//! limit, without a panic, with exit 1 exactly when an error is reported. For every case
//! that `check` accepts, every `compile --emit` stage and `explain` succeed as well (`check`
//! is a gate, item 5). `PIPEC_CORPUS_ONLY=NAME` runs one case; `PIPEC_CORPUS_SHOW=1` prints
//! each case's codes.

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

mod support;

use std::collections::BTreeSet;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::STAGES;

/// What one run may take: far above what a small input needs (tens of milliseconds), low
/// enough that a hang fails the test instead of stalling CI.
const TIME_LIMIT: Duration = Duration::from_secs(30);

/// Address space per run: a blow-up (gigabytes for a small input) fails instead of
/// swapping the machine.
const MEMORY_LIMIT: &str = "--as=4294967296";

/// One case of the corpus.
struct Case {
    file: String,
    name: String,
    expect: BTreeSet<String>,
    text: String,
}

/// Every case of every corpus file, in file then position order.
fn cases() -> Vec<Case> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("tests/corpus")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "cases"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for path in files {
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&path).expect("corpus file is UTF-8");
        let mut current: Option<Case> = None;
        for line in text.split_inclusive('\n') {
            if let Some(header) = line.strip_prefix("#### ") {
                out.extend(current.take());
                let (name, expect) = header
                    .trim_end()
                    .split_once(" => ")
                    .unwrap_or_else(|| panic!("{file}: bad header `{}`", line.trim_end()));
                let expect = match expect.trim() {
                    "ok" => BTreeSet::new(),
                    codes => codes.split_whitespace().map(str::to_string).collect(),
                };
                current = Some(Case {
                    file: file.clone(),
                    name: name.trim().to_string(),
                    expect,
                    text: String::new(),
                });
            } else if let Some(c) = current.as_mut() {
                c.text.push_str(line);
            } else {
                assert!(
                    line.trim().is_empty() || line.starts_with('#'),
                    "{file}: text before the first case"
                );
            }
        }
        out.extend(current);
    }
    out
}

/// The output of one bounded run.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs pipec with `args` under the time and memory limits.
fn pipec(args: &[&str]) -> Run {
    let mut child = Command::new("prlimit")
        .arg(MEMORY_LIMIT)
        .arg("--")
        .arg(env!("CARGO_BIN_EXE_pipec"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run prlimit (util-linux) and pipec");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if start.elapsed() > TIME_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("pipec {args:?} ran longer than {TIME_LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    Run {
        code: status.code(),
        stdout: out.join().expect("stdout reader"),
        stderr: err.join().expect("stderr reader"),
    }
}

/// Failures of one case, one line each.
fn run_case(case: &Case, dir: &Path) -> Vec<String> {
    let ext = if case.name.ends_with(".json") {
        ""
    } else {
        ".yaml"
    };
    let path = dir.join(format!("{}{ext}", case.name));
    std::fs::write(&path, &case.text).expect("write case");
    let path = path.to_str().expect("UTF-8 path");
    let id = format!("{}: {}", case.file, case.name);
    let run = pipec(&["check", "-o", "json", path]);
    let mut failures = Vec::new();
    if run.stderr.contains("panicked") || run.code.is_none() {
        failures.push(format!(
            "{id}: check crashed ({:?}): {}",
            run.code, run.stderr
        ));
        return failures;
    }
    let report: serde_json::Value = match serde_json::from_str(&run.stdout) {
        Ok(v) => v,
        Err(e) => {
            failures.push(format!(
                "{id}: check -o json printed no JSON ({e}): {}",
                run.stderr
            ));
            return failures;
        }
    };
    let diags = report["diagnostics"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let codes: BTreeSet<String> = diags
        .iter()
        .filter_map(|d| d["code"].as_str().map(str::to_string))
        .collect();
    let errors = diags.iter().filter(|d| d["severity"] == "error").count();
    if std::env::var_os("PIPEC_CORPUS_SHOW").is_some() {
        let found: Vec<&str> = codes.iter().map(String::as_str).collect();
        eprintln!(
            "{id} => {}",
            if found.is_empty() {
                "ok".to_string()
            } else {
                found.join(" ")
            }
        );
        for d in &diags {
            eprintln!(
                "    {} {}:{} {}",
                d["code"], d["line"], d["column"], d["message"]
            );
        }
    }
    if codes != case.expect {
        failures.push(format!(
            "{id}: expected {:?}, got {:?}: {}",
            case.expect,
            codes,
            diags
                .iter()
                .map(|d| format!("{} {}", d["code"], d["message"]))
                .collect::<Vec<_>>()
                .join("; ")
        ));
    }
    for d in &diags {
        if d["line"].as_u64().unwrap_or(0) == 0 {
            failures.push(format!("{id}: {} has no line", d["message"]));
        }
    }
    let want = if errors > 0 { 1 } else { 0 };
    if run.code != Some(want) {
        failures.push(format!(
            "{id}: check exited {:?} with {errors} error(s)",
            run.code
        ));
    }
    if errors == 0 {
        let mut runs: Vec<(String, Run)> = STAGES
            .iter()
            .map(|s| {
                (
                    format!("compile --emit {s}"),
                    pipec(&["compile", "--emit", s, path]),
                )
            })
            .collect();
        runs.push(("explain".into(), pipec(&["explain", path])));
        for (what, r) in runs {
            if r.code != Some(0) {
                failures.push(format!(
                    "{id}: check accepted it, but `{what}` exited {:?}: {}",
                    r.code,
                    r.stderr.lines().take(6).collect::<Vec<_>>().join(" | ")
                ));
            }
        }
    }
    failures
}

#[test]
fn every_case_gets_its_expected_class_and_nothing_crashes() {
    let cases = cases();
    let only = std::env::var("PIPEC_CORPUS_ONLY").ok();
    if only.is_none() {
        assert!(cases.len() >= 300, "only {} corpus cases", cases.len());
    }
    let mut names = BTreeSet::new();
    for c in &cases {
        assert!(
            names.insert(c.name.clone()),
            "case name {} is used twice",
            c.name
        );
    }
    let dir = std::env::temp_dir().join(format!("pipec-corpus-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let mut failures = Vec::new();
    let mut ran = 0;
    for case in &cases {
        if only.as_deref().is_some_and(|o| o != case.name) {
            continue;
        }
        ran += 1;
        failures.extend(run_case(case, &dir));
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(ran > 0, "no case ran");
    assert!(
        failures.is_empty(),
        "{} of {ran} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
