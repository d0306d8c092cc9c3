//! Fuzz target: any UTF-8 text goes through parse, format, resolve and render without a
//! panic, and formatting is idempotent whenever the text parses.
//!
//! Run with `cargo +nightly fuzz run parse_resolve fuzz/corpus/parse_resolve -- -max_total_time=60`.
//! A crash found here is copied into `fuzz/corpus/parse_resolve/`, where the stable test
//! `policy-lang/tests/it/fuzz_corpus.rs` replays it.

#![no_main]

use libfuzzer_sys::fuzz_target;
use policy_lang::{format, parse, resolve, FileId, MemoryLoader, SourceSet};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (ast, _) = parse(FileId(0), text);
    if let Some(ast) = ast {
        let once = format(&ast);
        let (again, _) = parse(FileId(0), &once);
        let again = again.expect("formatted output parses");
        assert_eq!(format(&again), once, "format is idempotent");
    }
    let mut files = SourceSet::new();
    let id = files.add("fuzz.pipe", text);
    let mut loader = MemoryLoader::new([(
        "other.pipe",
        "policy \"o\" priority 9 { subject namespaces {}; ingress allow from entity all; }\n",
    )]);
    let diags = match resolve(&mut files, &[id], &mut loader) {
        Ok(p) => p.warnings,
        Err(d) => d,
    };
    let _ = policy_lang::render(&diags, &files);
});
