//! The source and diagnostic layer that pipec's two diagnostic stacks share: the manifest
//! diagnostics of the `pipec` library and the `.pipe` diagnostics of `policy-lang`.
//!
//! It holds what does not depend on a language: file ids and byte spans ([`FileId`],
//! [`Span`]), the set of source files of a run ([`SourceSet`], which codespan-reporting
//! renders from), how bad a diagnostic is ([`Severity`]), the [`Diagnostic`] type with its
//! [`Label`]s, and the one renderer ([`render()`], [`emit_to_stderr`], the JSON [`Record`],
//! and [`window`] for very long lines). Each stack keeps its own code catalogue, a type
//! that implements [`Code`].

pub mod diagnostic;
pub mod path;
pub mod render;
pub mod set;
pub mod span;
pub mod window;
pub mod yaml;

pub use diagnostic::{sort, Code, Diagnostic, Label};
pub use path::{FieldPath, PathSeg};
pub use render::{emit_to_stderr, render, Record};
pub use set::{LineCol, SourceFile, SourceSet};
pub use span::{FileId, Span};

use serde::Serialize;

/// How bad a diagnostic is. The order is by badness: a warning sorts before an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Severity {
    /// The input is used; part of it is ignored or probably not what was meant.
    Warning,
    /// The input cannot be used; the run fails.
    Error,
}

impl Severity {
    /// The word a rendered diagnostic starts with (`error`, `warning`).
    pub fn word(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        }
    }
}
