//! The diagnostic type that both of pipec's diagnostic stacks build: a stable code, how bad
//! it is, a message, a primary place and other places, notes and hints.
//!
//! The type is generic over the code, so that each stack keeps its own catalogue (the
//! manifest codes `E0101`, … of the `pipec` library, the `.pipe` codes `P0001`, … of
//! policy-lang) and can still match on its codes as an enum.

use crate::span::Span;
use crate::Severity;
use serde::Serialize;

/// A code of one of the catalogues: its stable text and the severity it is usually
/// reported with.
pub trait Code: Copy {
    /// The stable text form, such as `E0101` or `P0001`; it never changes meaning.
    fn as_str(self) -> &'static str;

    /// The severity a diagnostic of this code has when it is made with
    /// [`Diagnostic::new`].
    fn severity(self) -> Severity;
}

/// A place in the source with a few words on what is there.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Label {
    /// Where.
    pub span: Span,
    /// What is there (may be empty).
    pub message: String,
}

/// One problem found in the input.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Diagnostic<C> {
    /// The stable code.
    pub code: C,
    /// Error or warning.
    pub severity: Severity,
    /// What is wrong, in one sentence.
    pub message: String,
    /// Where it is wrong, and a few words on what was found there. Only a problem of the
    /// run as a whole (such as "the inputs hold nothing") has no place.
    pub primary: Option<Label>,
    /// Other places that help to understand it.
    pub secondary: Vec<Label>,
    /// Facts that explain it (rendered as `note: …`).
    pub notes: Vec<String>,
    /// What was expected, or how to fix it (rendered as `help: …`).
    pub hints: Vec<String>,
}

impl<C: Code> Diagnostic<C> {
    /// A diagnostic with its code's usual severity, at `span`.
    pub fn new(
        code: C,
        message: impl Into<String>,
        span: Span,
        label: impl Into<String>,
    ) -> Diagnostic<C> {
        Diagnostic::with_severity(code, code.severity(), message).at(span, label)
    }

    /// An error with `code` and `message`, without a place yet.
    pub fn error(code: C, message: impl Into<String>) -> Diagnostic<C> {
        Diagnostic::with_severity(code, Severity::Error, message)
    }

    /// A warning with `code` and `message`, without a place yet.
    pub fn warning(code: C, message: impl Into<String>) -> Diagnostic<C> {
        Diagnostic::with_severity(code, Severity::Warning, message)
    }

    fn with_severity(code: C, severity: Severity, message: impl Into<String>) -> Diagnostic<C> {
        Diagnostic {
            code,
            severity,
            message: message.into(),
            primary: None,
            secondary: Vec::new(),
            notes: Vec::new(),
            hints: Vec::new(),
        }
    }
}

impl<C> Diagnostic<C> {
    /// Sets the primary place.
    pub fn at(mut self, span: Span, label: impl Into<String>) -> Diagnostic<C> {
        self.primary = Some(Label {
            span,
            message: label.into(),
        });
        self
    }

    /// Adds a secondary place.
    pub fn also(mut self, span: Span, label: impl Into<String>) -> Diagnostic<C> {
        self.secondary.push(Label {
            span,
            message: label.into(),
        });
        self
    }

    /// Adds a note: a fact that explains the problem.
    pub fn note(mut self, note: impl Into<String>) -> Diagnostic<C> {
        self.notes.push(note.into());
        self
    }

    /// Adds a hint: what was expected, or how to fix it.
    pub fn hint(mut self, hint: impl Into<String>) -> Diagnostic<C> {
        self.hints.push(hint.into());
        self
    }

    /// Adds "did you mean `x`?" when there is a suggestion.
    pub fn suggest(self, suggestion: Option<&str>) -> Diagnostic<C> {
        match suggestion {
            Some(s) => self.hint(format!("did you mean `{s}`?")),
            None => self,
        }
    }

    /// True for errors.
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

/// Sorts diagnostics by file and position, as users read them. The sort is stable, so
/// diagnostics at one place keep the order they were found in; those without a place come
/// last.
pub fn sort<C>(diags: &mut [Diagnostic<C>]) {
    diags.sort_by_key(|d| match &d.primary {
        Some(p) => (0, p.span.file, p.span.start),
        None => (1, crate::FileId(0), 0),
    });
}
