//! Printing results: tables for people, JSON or YAML for machines.

use crate::Format;
use serde::Serialize;

/// Prints `value` in the requested format; `text` renders the human form.
#[allow(
    clippy::print_stdout,
    reason = "printing the artifact is this function's job"
)]
pub fn print<T: Serialize>(
    format: Format,
    value: &T,
    text: impl FnOnce() -> String,
) -> anyhow::Result<()> {
    let out = match format {
        Format::Text => text(),
        Format::Json => serde_json::to_string_pretty(value)? + "\n",
        Format::Yaml => serde_yaml::to_string(value)?,
    };
    print!("{out}");
    Ok(())
}
