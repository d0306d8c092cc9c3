//! Checks `.pipe` files and prints their diagnostics (a stand-in for `pipec check`).

// Dependencies of the package that this target does not use itself; they serve its
// other targets. `unused_crate_dependencies` checks every target against all of them.
use insta as _;
use ipnet as _;
use pest as _;
use pest_derive as _;
use pipec_source as _;
use proptest as _;
use serde as _;
use serde_json as _;

fn main() {
    for path in std::env::args().skip(1) {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let mut files = policy_lang::SourceSet::new();
        let id = files.add(path.clone(), text);
        let mut loader = |p: &str| std::fs::read_to_string(p).map_err(|e| e.to_string());
        match policy_lang::resolve(&mut files, &[id], &mut loader) {
            Ok(p) => {
                eprint!("{}", policy_lang::render(&p.warnings, &files));
                eprintln!("{path}: ok, {} policies", p.policies.len());
            }
            Err(d) => eprint!("{}", policy_lang::render(&d, &files)),
        }
    }
}
