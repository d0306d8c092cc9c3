//! `pipec-cni`: see the crate documentation of `pipec_cni`.

// Dependencies of the package that this target does not use itself; they serve its
// other targets. `unused_crate_dependencies` checks every target against all of them.
use pipec_proto as _;
use serde as _;
use serde_json as _;
use tokio as _;
use tonic as _;
// Dev-dependencies that the unit tests do not use; the package's integration tests,
// benches or examples do.
#[cfg(test)]
use pipec as _;
#[cfg(test)]
use pipec_netns as _;

use std::io::{Read as _, Write as _};
use std::process::ExitCode;

fn main() -> ExitCode {
    if std::env::var_os("CNI_COMMAND").is_none() {
        // As the reference library does for a person who runs the plugin by hand.
        eprintln!(
            "pipec-cni: a CNI plugin; CNI protocol versions supported: {}",
            pipec_cni::spec::VERSIONS.join(", ")
        );
        return ExitCode::from(1);
    }
    let mut stdin = Vec::new();
    // A runtime always writes the configuration; a read error leaves it empty (code 6).
    let _ = std::io::stdin().take(1 << 20).read_to_end(&mut stdin);
    let out = pipec_cni::run(|k| std::env::var(k).ok(), &stdin);
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(out.stdout.as_bytes());
    let _ = stdout.flush();
    ExitCode::from(u8::try_from(out.code).unwrap_or(1))
}
