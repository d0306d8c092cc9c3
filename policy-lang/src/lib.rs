//! The `.pipe` policy language of pipec: parse, resolve, format and report.
//!
//! A `.pipe` file holds admin-tier `policy` blocks, `target` profiles, `placement` hints
//! and `include`s; docs/pipe-language.md is the language reference. This crate is pure:
//! it knows nothing of Kubernetes manifests, of the match-action graph or of the targets'
//! code, and it does no I/O (includes are read through the caller's [`Loader`]).
//!
//! ```text
//!            parse                 resolve
//!   text ──────────────▶ ast::File ─────────▶ resolved::Program ──▶ compiler (admin tier)
//!    ▲                      │
//!    └──────── format ──────┘        Diagnostic ──render / emit_to_stderr──▶ text
//! ```
//!
//! One function per arrow: [`parse`], [`resolve`], [`format()`], [`render`].
//! Every error of a file is reported in one run: after a syntax error the parser goes on
//! with the next statement or item, the resolver checks everything that parsed, and it
//! collects all diagnostics before it gives up.

#![deny(missing_docs)]
#![cfg_attr(
    not(test),
    warn(
        clippy::panic,
        clippy::print_stdout,
        clippy::todo,
        clippy::dbg_macro,
        clippy::unwrap_used
    )
)]

// Dev-dependencies that the unit tests do not use; the package's integration tests,
// benches or examples do.
#[cfg(test)]
use insta as _;
#[cfg(test)]
use proptest as _;
#[cfg(test)]
use serde_json as _;

pub mod ast;
pub mod diagnostics;
pub mod format;
mod parser;
mod resolve;
pub mod resolved;
pub mod source;
pub mod span;
mod suggest;
pub mod targets;
pub mod vocab;

pub use diagnostics::{emit_to_stderr, render, Code, Diagnostic, Severity};
pub use format::format;
pub use parser::{parse, scan_comments, RawComment};
pub use resolve::resolve;
pub use source::{Loader, MemoryLoader, NoIncludes, SourceSet};
pub use span::{FileId, Span};
pub use suggest::{best_match, edit_distance};

/// Formats source text: parses it and prints it canonically.
///
/// Returns the diagnostics instead when the text does not parse (or has an invalid
/// escape, which formatting would silently change). This is what `pipec fmt` runs; with
/// `--check` the caller compares the result with the input.
pub fn format_source(file: FileId, src: &str) -> Result<String, Vec<Diagnostic>> {
    match parse(file, src) {
        (Some(ast), diags) if !diags.iter().any(Diagnostic::is_error) => Ok(format(&ast)),
        (_, diags) => Err(diags),
    }
}

/// Parses and resolves a single file that may not include others, for quick checks.
pub fn check_source(
    name: &str,
    src: &str,
) -> (SourceSet, Result<resolved::Program, Vec<Diagnostic>>) {
    let mut files = SourceSet::new();
    let id = files.add(name, src);
    let result = resolve(&mut files, &[id], &mut NoIncludes);
    (files, result)
}
