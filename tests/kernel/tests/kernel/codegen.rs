//! `mag_to_ebpf` on the Star Wars example: the snapshot of its map contents, and the same
//! decisions as the MAG for tiefighter and xwing through the loaded programs.

use std::path::PathBuf;

use pipec::driver;
use pipec::lower;
use pipec::mag;
use pipec::model::build::BuildOptions;
use pipec::model::Cluster;
use pipec_ebpf::mag_to_ebpf;

/// The Star Wars example's model.
pub(crate) fn starwars() -> Cluster {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/starwars");
    let loaded = driver::load(&[dir], &BuildOptions::default());
    assert!(!loaded.has_errors(), "{}", loaded.render());
    loaded.cluster
}

#[test]
fn starwars_artifact_snapshot() {
    let cluster = starwars();
    let lowered = lower::cluster_to_mag(&cluster, None);
    let info = mag::validate(lowered.mag()).unwrap();
    let art = mag_to_ebpf(lowered.mag(), &info).unwrap();
    insta::assert_snapshot!("starwars_ebpf", art.to_string());
    // Deterministic: a second compile prints the same text.
    let again = mag_to_ebpf(lowered.mag(), &info).unwrap();
    assert_eq!(again.to_string(), art.to_string());
}

#[test]
fn a_mag_that_is_not_the_node_pipeline_is_unsupported() {
    let mut m = mag::Mag::new("n");
    let a = m.add_action("pass", &[], vec![]);
    let t = m.add_table(mag::Table {
        name: "classify".into(),
        key: vec![],
        actions: vec![a],
        default_action: mag::ActionCall {
            action: a,
            args: std::sync::Arc::new([]),
        },
        size_hint: 1,
        entries: vec![],
    });
    m.start = Some(t);
    let info = mag::validate(&m).unwrap();
    let err = mag_to_ebpf(&m, &info).unwrap_err();
    assert_eq!(
        err.to_string(),
        "target ebpf cannot take this: src_ipcache: the table is missing (not the default node pipeline)"
    );
}
