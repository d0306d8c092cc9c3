//! Fuzz target: any bytes, read as a YAML file and as a JSON file, go through the frontend
//! (syntax, strict fields, aliases) and the model without a panic, and their diagnostics
//! render; input the model accepts goes on through identities and the MAG of its node.
//!
//! Run with `cargo +nightly fuzz run manifests fuzz/corpus/manifests -- -max_total_time=60`.
//! A crash found here is copied into `fuzz/corpus/manifests/`, where the stable test
//! `compiler/tests/it/fuzz_manifests.rs` replays it.

#![no_main]

use libfuzzer_sys::fuzz_target;
use pipec::driver;
use pipec::model::build::BuildOptions;

fuzz_target!(|data: &[u8]| {
    // Larger inputs only slow the fuzzer down; the size bound is tested elsewhere.
    if data.len() > 64 * 1024 {
        return;
    }
    let text = String::from_utf8_lossy(data);
    for name in ["fuzz.yaml", "fuzz.json"] {
        let loaded = driver::load_texts(&[(name, &text)], &BuildOptions::default());
        let _ = loaded.render();
        let _ = loaded.diagnostic_records();
        if !loaded.has_errors() {
            let lowered = pipec::lower::cluster_to_mag(&loaded.cluster, None);
            // A model that checks must lower to a valid graph (`check` is a gate).
            pipec::mag::validate(lowered.mag()).expect("an accepted model lowers to a valid MAG");
        }
    }
});
