//! The source and diagnostic layer that pipec's two diagnostic stacks share: the manifest
//! diagnostics of the `pipec` library and the `.pipe` diagnostics of `policy-lang`.
//!
//! It holds what does not depend on a language: file ids and byte spans ([`FileId`],
//! [`Span`]), the set of source files of a run ([`SourceSet`], which codespan-reporting
//! renders from), how bad a diagnostic is ([`Severity`]), and the renderer of diagnostics
//! in very long lines ([`window`]). Each stack keeps its own code catalogue.

pub mod set;
pub mod span;
pub mod window;

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
