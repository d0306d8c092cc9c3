//! `pipec-cni`: see the crate documentation of `pipec_cni`.

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
