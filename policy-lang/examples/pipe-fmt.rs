//! Formats `.pipe` files in place (a stand-in for `pipec fmt` until the CLI has it).
//! With `--check`, only reports the files that are not formatted and exits with 1.

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
    let mut check = false;
    let mut status = 0;
    for arg in std::env::args().skip(1) {
        if arg == "--check" {
            check = true;
            continue;
        }
        let text = std::fs::read_to_string(&arg).unwrap_or_default();
        let mut files = policy_lang::SourceSet::new();
        let id = files.add(arg.clone(), text.clone());
        match policy_lang::format_source(id, &text) {
            Ok(out) if out == text => {}
            Ok(_) if check => {
                eprintln!("{arg}: not formatted");
                status = 1;
            }
            Ok(out) => {
                if let Err(e) = std::fs::write(&arg, out) {
                    eprintln!("{arg}: {e}");
                    status = 1;
                }
            }
            Err(d) => {
                eprint!("{}", policy_lang::render(&d, &files));
                status = 1;
            }
        }
    }
    std::process::exit(status);
}
