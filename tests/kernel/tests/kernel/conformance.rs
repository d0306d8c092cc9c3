//! The whole shared conformance suite through the `ebpf` engine: every probe as real
//! packets through the loaded programs (first packet and reply), zero failures.

use std::path::PathBuf;

use pipec::conformance::{run_paths, Engine};
use pipec_ebpf::EbpfEngine;

#[test]
fn shared_conformance_passes_on_ebpf() {
    crate::common::require_root();
    let dir = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/conformance"
    ));
    assert!(
        dir.is_dir(),
        "the shared conformance suite is missing at {}",
        dir.display()
    );
    let engines: Vec<Box<dyn Engine>> = vec![Box::new(EbpfEngine)];
    let report = run_paths(&[dir], &engines).unwrap();
    assert_eq!(report.failed, 0, "{}", report.lines.join("\n"));
    assert!(
        report.passed >= 100,
        "too few checks ran: {}",
        report.summary()
    );
}
