//! `pipec fmt [--check] FILE...`: canonical formatting of `.pipe` files.
//!
//! Formatting is all or nothing per run: every file is formatted in memory first, and files
//! are written only when all of them parsed, each through a temporary file and a rename, so
//! an error never leaves a file half-written.

use clap::Args;
use policy_lang::{FileId, SourceSet};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Arguments of `pipec fmt`.
#[derive(Args, Debug)]
pub struct FmtArgs {
    /// `.pipe` files to format in place.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Change nothing; exit 1 and name the files that are not formatted.
    #[arg(long)]
    check: bool,
}

/// Runs `pipec fmt`.
pub fn run(args: &FmtArgs) -> anyhow::Result<ExitCode> {
    let mut sources = SourceSet::new();
    let mut formatted = Vec::new();
    let mut failed = false;
    for path in &args.files {
        let bytes = pipec::frontend::read_regular_file(path)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
        let text = String::from_utf8(bytes)
            .map_err(|_| anyhow::anyhow!("cannot read {}: not UTF-8 text", path.display()))?;
        let id: FileId = sources.add(path.display().to_string(), text.clone());
        match policy_lang::format_source(id, &text) {
            Ok(out) => formatted.push((path, text, out)),
            Err(diags) => {
                policy_lang::emit_to_stderr(&diags, &sources)?;
                failed = true;
            }
        }
    }
    if failed {
        eprintln!("fmt: nothing was written because some files have errors");
        return Ok(ExitCode::from(1));
    }
    let changed: Vec<_> = formatted
        .iter()
        .filter(|(_, before, after)| before != after)
        .collect();
    if args.check {
        for (path, _, _) in &changed {
            crate::output::outln(&format!("would reformat {}", path.display()))?;
        }
        return Ok(if changed.is_empty() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        });
    }
    for (path, _, after) in changed {
        write_atomically(path, after)?;
        crate::output::outln(&format!("formatted {}", path.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}

fn write_atomically(path: &Path, text: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("pipe.fmt-tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}
