//! `pipec fmt [--check] FILE...`: canonical formatting of `.pipe` files.
//!
//! Formatting is all or nothing per run: every file is formatted in memory first, and files
//! are written only when all of them parsed, each through a temporary file and a rename, so
//! an error never leaves a file half-written.
//!
//! Writing keeps what the user set up: a symbolic link is followed and its target
//! rewritten (the link stays a link); the file's permissions are kept; a file with other hard
//! links is rewritten in place, since a rename would give this name a new inode and leave
//! the other names with the old text. The temporary file is created exclusively with an
//! unpredictable name beside the target (so no other user can plant or race it) and is
//! removed if anything fails.

use clap::Args;
use policy_lang::{FileId, SourceSet};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Arguments of `pipec fmt`.
#[derive(Args, Debug)]
pub(crate) struct FmtArgs {
    /// `.pipe` files to format in place.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Change nothing; exit 1 and name the files that are not formatted.
    #[arg(long)]
    check: bool,
}

/// Runs `pipec fmt`.
pub(crate) fn run(args: &FmtArgs) -> anyhow::Result<ExitCode> {
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
    write_file(path, text).map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))
}

fn write_file(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::MetadataExt as _;
    // The file a symbolic link names is the one to rewrite; the link itself stays.
    let target = std::fs::canonicalize(path)?;
    let meta = std::fs::metadata(&target)?;
    if meta.nlink() > 1 {
        // Other names share this inode: only an in-place write keeps them in step. The text
        // is complete in memory, so the window is the write itself.
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&target)?;
        f.write_all(text.as_bytes())?;
        return f.sync_all();
    }
    let dir = target.parent().unwrap_or(Path::new("."));
    let name = target
        .file_name()
        .map_or_else(|| "pipe".into(), |n| n.to_string_lossy().into_owned());
    // O_EXCL with a random suffix; dropped (and so deleted) on any error below.
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".fmt-tmp")
        .tempfile_in(dir)?;
    tmp.write_all(text.as_bytes())?;
    tmp.as_file().set_permissions(meta.permissions())?;
    tmp.as_file().sync_all()?;
    tmp.persist(&target).map_err(|e| e.error)?;
    Ok(())
}
