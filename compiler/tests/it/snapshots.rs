//! The examples' model and identities, as `pipec compile --emit model|identities` prints
//! them (`snapshots/examples/`).
//!
//! Every directory under `examples/` is one example. A nested directory is a variant of its
//! parent: its inputs are the parent's files, except that a file `X-suffix.yaml` of the
//! variant replaces the parent's `X.yaml` (`starwars/l7/policy-l7.yaml` replaces
//! `starwars/policy.yaml`).

use pipec::driver;
use pipec::identity;
use pipec::model::build::BuildOptions;
use pipec::model::text::cluster_to_text;
use std::path::{Path, PathBuf};

const EXAMPLES: &str = "../examples";

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

/// Every example as (snapshot name, inputs), in name order.
fn examples() -> Vec<(String, Vec<PathBuf>)> {
    let mut out = Vec::new();
    let mut stack = vec![(
        PathBuf::from(EXAMPLES),
        Vec::<PathBuf>::new(),
        String::new(),
    )];
    while let Some((dir, inherited, prefix)) = stack.pop() {
        let mut subdirs: Vec<PathBuf> = std::fs::read_dir(&dir)
            .expect("examples directory")
            .map(|e| e.expect("directory entry").path())
            .filter(|p| p.is_dir())
            .collect();
        subdirs.sort();
        let own = manifests(&dir);
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

fn load(inputs: &[PathBuf]) -> driver::Loaded {
    let loaded = driver::load(inputs, &BuildOptions::default());
    assert!(
        !loaded.has_errors(),
        "{inputs:?}:\n{}",
        pipec::diag::emit_to_string(&loaded.sources, &loaded.diags)
    );
    loaded
}

fn settings(inputs: &[PathBuf]) -> insta::Settings {
    let mut s = insta::Settings::clone_current();
    s.set_snapshot_path("snapshots/examples");
    s.set_prepend_module_to_snapshot(false);
    s.set_omit_expression(true);
    s.set_info(
        &inputs
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>(),
    );
    s
}

#[test]
fn examples_are_found() {
    let names: Vec<String> = examples().into_iter().map(|(n, _)| n).collect();
    assert!(names.contains(&"starwars".to_string()), "{names:?}");
    assert!(names.contains(&"starwars-l7".to_string()), "{names:?}");
}

#[test]
fn example_models() {
    for (name, inputs) in examples() {
        let loaded = load(&inputs);
        settings(&inputs).bind(|| {
            insta::assert_snapshot!(format!("{name}.model"), cluster_to_text(&loaded.cluster));
        });
    }
}

#[test]
fn example_identities() {
    for (name, inputs) in examples() {
        let loaded = load(&inputs);
        let ids = identity::cluster_to_identities(&loaded.cluster, None);
        let text = identity::text::identities_to_text(&loaded.cluster, &ids);
        settings(&inputs).bind(|| {
            insta::assert_snapshot!(format!("{name}.identities"), text);
        });
    }
}

#[test]
fn example_model_json() {
    let inputs = vec![PathBuf::from(format!("{EXAMPLES}/starwars"))];
    let loaded = load(&inputs);
    settings(&inputs).bind(|| {
        insta::assert_json_snapshot!("starwars.model-json", loaded.cluster);
    });
}
