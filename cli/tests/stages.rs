//! The stage matrix: every stage of every example, as `pipec compile --emit STAGE` prints it
//! (`snapshots/stages/EXAMPLE.STAGE.snap`). A change to any stage shows up here as a
//! snapshot diff, for every example at once.
//!
//! Every directory under `examples/` with manifests is one example. A nested directory is a
//! variant of its parent: its inputs are the parent's files, except that a file
//! `X-suffix.yaml` of the variant replaces the parent's `X.yaml`
//! (`starwars/l7/policy-l7.yaml` replaces `starwars/policy.yaml`). Directories without
//! manifests (`shared/`, the `backend-nftables` crate) are not examples.
//!
//! The stages run through the binary, so the matrix holds exactly the text a user sees;
//! `ebpf` is the eBPF codegen's artifact, which needs no kernel. `cpt` is emitted for the
//! examples that carry Cilium's IPsec key Secret, the only ones with SAs to print.

// Dependencies of the package that this target does not use itself; they serve its
// other targets. `unused_crate_dependencies` checks every target against all of them.
use anyhow as _;
use clap as _;
use clap_complete as _;
use gencluster as _;
use ipnet as _;
use mimalloc as _;
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

mod support;

use pipec::mag::text::{mag_to_text, text_to_mag};
use std::path::{Path, PathBuf};
use std::process::Command;
use support::STAGES;

/// The repository root, where the binary runs, so snapshot paths are relative to it.
const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

fn manifests(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("example directory")
        .map(|e| e.expect("directory entry").path())
        .filter(|p| {
            p.is_file()
                && p.extension()
                    .is_some_and(|e| e == "yaml" || e == "yml" || e == "json")
        })
        .collect();
    out.sort();
    out
}

fn stem(p: &Path) -> String {
    p.file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default()
        .to_string()
}

/// Every example as (snapshot name, inputs relative to the repository root), in name order.
fn examples() -> Vec<(String, Vec<PathBuf>)> {
    let mut out = Vec::new();
    let mut stack = vec![(
        PathBuf::from("examples"),
        Vec::<PathBuf>::new(),
        String::new(),
    )];
    while let Some((dir, inherited, prefix)) = stack.pop() {
        let mut subdirs: Vec<PathBuf> = std::fs::read_dir(Path::new(ROOT).join(&dir))
            .expect("examples directory")
            .map(|e| e.expect("directory entry").path())
            .filter(|p| p.is_dir())
            .map(|p| dir.join(p.file_name().expect("a directory's name")))
            .collect();
        subdirs.sort();
        let own: Vec<PathBuf> = manifests(&Path::new(ROOT).join(&dir))
            .into_iter()
            .map(|p| dir.join(p.file_name().expect("a file's name")))
            .collect();
        let mut inputs: Vec<PathBuf> = inherited
            .into_iter()
            .filter(|p| {
                !own.iter()
                    .any(|o| stem(o).starts_with(&format!("{}-", stem(p))))
            })
            .collect();
        inputs.extend(own);
        if !prefix.is_empty() && !inputs.is_empty() {
            out.push((prefix.clone(), inputs.clone()));
        }
        for sub in subdirs {
            let name = if prefix.is_empty() {
                stem(&sub)
            } else {
                format!("{prefix}-{}", stem(&sub))
            };
            stack.push((sub, inputs.clone(), name));
        }
    }
    out.sort();
    out
}

/// Whether an example has IPsec: one of its inputs is Cilium's IPsec key Secret.
fn has_ipsec(inputs: &[PathBuf]) -> bool {
    inputs.iter().any(|p| {
        std::fs::read_to_string(Path::new(ROOT).join(p))
            .expect("read an example input")
            .contains("name: cilium-ipsec-keys")
    })
}

/// What `pipec compile INPUTS --emit STAGE` prints; the run must succeed.
fn emit(inputs: &[PathBuf], stage: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_pipec"))
        .current_dir(ROOT)
        .arg("compile")
        .args(inputs)
        .args(["--emit", stage])
        .output()
        .expect("run pipec");
    assert!(
        out.status.success(),
        "pipec compile {inputs:?} --emit {stage}:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// The MAG's text form is complete: it parses back ([`text_to_mag`]) into a graph that
/// validates and prints as the same text, so a MAG test can start from text.
fn mag_round_trips(name: &str, text: &str) {
    let parsed = text_to_mag(text).unwrap_or_else(|e| panic!("{name}: the MAG text: {e}"));
    if let Err(e) = pipec::mag::validate(&parsed) {
        panic!("{name}: the parsed MAG is invalid: {e:?}");
    }
    assert_eq!(
        mag_to_text(&parsed),
        text,
        "{name}: the MAG text round trip"
    );
}

#[test]
fn examples_are_found() {
    let names: Vec<String> = examples().into_iter().map(|(n, _)| n).collect();
    for name in ["ipsec", "starwars", "starwars-l7", "traffic-policy"] {
        assert!(names.contains(&name.to_string()), "{name} in {names:?}");
    }
    let ipsec: Vec<String> = examples()
        .into_iter()
        .filter(|(_, inputs)| has_ipsec(inputs))
        .map(|(n, _)| n)
        .collect();
    assert_eq!(ipsec, ["ipsec"]);
}

#[test]
fn every_stage_of_every_example() {
    for (name, inputs) in examples() {
        let mut stages = STAGES.to_vec();
        if has_ipsec(&inputs) {
            stages.push("cpt");
        }
        let mut settings = insta::Settings::clone_current();
        settings.set_snapshot_path("snapshots/stages");
        settings.set_prepend_module_to_snapshot(false);
        settings.set_omit_expression(true);
        settings.set_info(
            &inputs
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>(),
        );
        settings.bind(|| {
            for stage in stages {
                let text = emit(&inputs, stage);
                if stage == "mag" {
                    mag_round_trips(&name, &text);
                }
                insta::assert_snapshot!(format!("{name}.{stage}"), text);
            }
        });
    }
}
