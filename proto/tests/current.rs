//! The committed generated code is what `tonic-prost-build` makes of `proto/pipec.proto`.

// Dependencies of the package that this target does not use itself; they serve its
// other targets. `unused_crate_dependencies` checks every target against all of them.
use hyper_util as _;
use pipec_proto as _;
use prost as _;
use tokio as _;
use tokio_stream as _;
use tonic as _;
use tonic_prost as _;
use tower as _;

use std::path::Path;

#[test]
fn the_generated_code_is_current() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    if std::process::Command::new("protoc")
        .arg("--version")
        .output()
        .is_err()
    {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must have protoc (.ci/run installs protobuf-compiler)"
        );
        eprintln!("skipped: no protoc on PATH");
        return;
    }
    let out = std::env::temp_dir().join(format!("pipec-proto-{}", std::process::id()));
    std::fs::create_dir_all(&out).expect("scratch");
    tonic_prost_build::configure()
        .out_dir(&out)
        .emit_rerun_if_changed(false)
        .compile_protos(&[root.join("proto/pipec.proto")], &[root.join("proto")])
        .expect("protoc");
    let fresh = std::fs::read_to_string(out.join("pipec.v1.rs")).expect("generated");
    let _ = std::fs::remove_dir_all(&out);
    let committed_path = root.join("src/pipec.v1.rs");
    if std::env::var_os("PIPEC_BLESS").is_some() {
        std::fs::write(&committed_path, &fresh).expect("write");
    }
    let committed = std::fs::read_to_string(&committed_path).expect("committed");
    assert!(
        committed == fresh,
        "src/pipec.v1.rs is stale: PIPEC_BLESS=1 cargo test -p pipec-proto"
    );
}
