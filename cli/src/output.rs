//! Printing results: tables for people, JSON or YAML for machines.
//!
//! Everything the CLI prints on standard output goes through [`out`], which returns write
//! errors instead of panicking as `print!` does: a reader that goes away (`pipec ... |
//! head`) ends the run quietly with success, as ripgrep and most Unix tools do, and a full
//! disk (`> /dev/full`) is an error that names standard output.

use crate::Format;
use serde::Serialize;
use std::io::Write as _;

/// A failure to write to standard output.
#[derive(Debug)]
pub(crate) struct StdoutError(pub std::io::Error);

impl std::fmt::Display for StdoutError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cannot write to standard output: {}", self.0)
    }
}

impl std::error::Error for StdoutError {}

impl StdoutError {
    /// Whether the reader closed the pipe: not a failure of pipec's.
    pub(crate) fn is_closed_pipe(&self) -> bool {
        self.0.kind() == std::io::ErrorKind::BrokenPipe
    }
}

/// Writes `text` to standard output and flushes it.
pub(crate) fn out(text: &str) -> Result<(), StdoutError> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .map_err(StdoutError)
}

/// Writes `text` and a newline to standard output.
pub(crate) fn outln(text: &str) -> Result<(), StdoutError> {
    out(&format!("{text}\n"))
}

/// Prints `value` in the requested format; `text` renders the human form.
pub(crate) fn print<T: Serialize>(
    format: Format,
    value: &T,
    text: impl FnOnce() -> String,
) -> anyhow::Result<()> {
    let rendered = match format {
        Format::Text => text(),
        Format::Json => serde_json::to_string_pretty(value)? + "\n",
        Format::Yaml => serde_yaml::to_string(value)?,
    };
    out(&rendered)?;
    Ok(())
}

/// Whether `e` is a closed standard output (the run ends quietly with success).
pub(crate) fn is_closed_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<StdoutError>()
            .is_some_and(StdoutError::is_closed_pipe)
            || c.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
