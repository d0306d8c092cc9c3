//! Shared fixtures.

use std::path::PathBuf;

use pipec::model::Cluster;
use pipec_cpt::KeySet;

/// The crate's directory.
pub(crate) fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The starwars example plus the three IPsec nodes.
pub(crate) fn cluster() -> Cluster {
    let paths = vec![
        root().join("../../examples/starwars"),
        root().join("tests/fixtures/ipsec"),
    ];
    let loaded = pipec::driver::load(&paths, &Default::default());
    assert!(
        loaded.diags.iter().all(|d| !d.is_error()),
        "{:?}",
        loaded.diags
    );
    loaded.cluster
}

/// Keys from a Secret fixture plus the nodes' boot IDs.
pub(crate) fn keys(secret: &str) -> KeySet {
    let paths = vec![
        root().join("tests/fixtures/ipsec"),
        root().join("tests/fixtures/secrets").join(secret),
    ];
    match pipec_cpt::read_keys(&paths) {
        Ok(Some(k)) => k,
        other => panic!("{other:?}"),
    }
}

/// Whether a test tool must be present (CI) rather than skipped.
pub(crate) fn required() -> bool {
    std::env::var_os("CI").is_some()
}

/// Whether a program runs.
pub(crate) fn have(cmd: &str, arg: &str) -> bool {
    std::process::Command::new(cmd)
        .arg(arg)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A scratch directory.
pub(crate) fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("pipec-cpt-{}-{name}", std::process::id()));
    let _ = std::fs::create_dir_all(&d);
    d
}
