//! The one renderer of diagnostics: as text with excerpts of the source (codespan-reporting,
//! or [`crate::window`] for a very long line), and as the records `pipec check -o json`
//! prints.
//!
//! Stages return diagnostics; only the edge (the CLI, or a test) calls these functions.

use crate::diagnostic::{Code, Diagnostic};
use crate::set::SourceSet;
use crate::window;
use codespan_reporting::diagnostic as cs;
use codespan_reporting::term;
use serde::Serialize;

/// Renders diagnostics without colour, one after the other, as tests and logs want them.
pub fn render<C: Code>(diags: &[Diagnostic<C>], files: &SourceSet) -> String {
    let config = term::Config::default();
    let mut out = String::new();
    for d in diags {
        if let Some(text) = long_line_text(d, files) {
            out.push_str(&text);
            continue;
        }
        if let Ok(text) = term::emit_into_string(&config, files, &to_codespan(d)) {
            out.push_str(&text);
        } else {
            out.push_str(&fallback(d));
        }
    }
    out
}

/// Renders diagnostics to standard error, in colour when it is a terminal that wants it.
/// The error is one of writing to standard error.
pub fn emit_to_stderr<C: Code>(diags: &[Diagnostic<C>], files: &SourceSet) -> std::io::Result<()> {
    use std::io::{IsTerminal as _, Write as _};
    use term::termcolor::{ColorChoice, StandardStream};
    // termcolor's `Auto` looks at TERM and NO_COLOR but not at whether stderr is a
    // terminal, so a redirected stderr would get escape codes.
    let choice = if std::io::stderr().is_terminal() {
        ColorChoice::Auto
    } else {
        ColorChoice::Never
    };
    let stream = StandardStream::stderr(choice);
    let mut lock = stream.lock();
    let config = term::Config::default();
    for d in diags {
        if let Some(text) = long_line_text(d, files) {
            lock.write_all(text.as_bytes())?;
            continue;
        }
        if term::emit_to_write_style(&mut lock, &config, files, &to_codespan(d)).is_err() {
            lock.write_all(fallback(d).as_bytes())?;
        }
    }
    Ok(())
}

/// The first line of a diagnostic alone. Rendering fails only when a span lies outside its
/// file, which would be a bug in the stage that made it; the message is still worth
/// showing then.
fn fallback<C: Code>(d: &Diagnostic<C>) -> String {
    format!(
        "{}[{}]: {}\n",
        d.severity.word(),
        d.code.as_str(),
        d.message
    )
}

/// The lines after the excerpt: the notes, then the hints.
fn trailer<C>(d: &Diagnostic<C>) -> impl Iterator<Item = String> + '_ {
    let notes = d.notes.iter().map(|n| format!("note: {n}"));
    notes.chain(d.hints.iter().map(|h| format!("help: {h}")))
}

fn to_codespan<C: Code>(d: &Diagnostic<C>) -> cs::Diagnostic<crate::FileId> {
    let severity = match d.severity {
        crate::Severity::Error => cs::Severity::Error,
        crate::Severity::Warning => cs::Severity::Warning,
    };
    let primary = d
        .primary
        .iter()
        .map(|l| cs::Label::primary(l.span.file, l.span.range()).with_message(&l.message));
    let secondary = d
        .secondary
        .iter()
        .map(|l| cs::Label::secondary(l.span.file, l.span.range()).with_message(&l.message));
    cs::Diagnostic::new(severity)
        .with_code(d.code.as_str())
        .with_message(window::clip(&d.message))
        .with_labels(primary.chain(secondary).collect())
        .with_notes(trailer(d).collect())
}

/// A diagnostic whose primary label lies in a very long line, rendered with a window of
/// that line; `None` for every other diagnostic. Secondary labels are named by place.
fn long_line_text<C: Code>(d: &Diagnostic<C>, files: &SourceSet) -> Option<String> {
    let primary = d.primary.as_ref()?;
    let file = files.get(primary.span.file)?;
    let at = files.line_col(primary.span);
    let mut notes: Vec<String> = d
        .secondary
        .iter()
        .map(|l| format!("note: {} at {}", l.message, place(files, l.span)))
        .collect();
    notes.extend(trailer(d));
    window::long_line(&window::Snippet {
        severity: d.severity.word(),
        code: d.code.as_str(),
        message: &d.message,
        file: &file.name,
        text: &file.text,
        span: primary.span.range(),
        line: at.line as usize,
        column: at.column as usize,
        label: &primary.message,
        notes,
    })
}

/// `file:line:column` of the start of a span.
fn place(files: &SourceSet, span: crate::Span) -> String {
    let lc = files.line_col(span);
    format!("{}:{}:{}", files.name(span.file), lc.line, lc.column)
}

/// One diagnostic as `pipec check -o json` prints it: stable code, severity, message,
/// place and hints.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Record {
    /// The stable code (`E0102`, `P0003`).
    pub code: String,
    /// `error` or `warning`.
    pub severity: &'static str,
    /// What is wrong.
    pub message: String,
    /// The file, when the diagnostic has a place.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// The line, from 1 (0: no place).
    pub line: usize,
    /// The column in characters, from 1 (0: no place).
    pub column: usize,
    /// What was expected or how to fix it, then the notes.
    pub hints: Vec<String>,
}

impl Record {
    /// The record of `d`, whose spans point into `files`.
    pub fn of<C: Code>(d: &Diagnostic<C>, files: &SourceSet) -> Record {
        let (file, line, column) = match &d.primary {
            Some(l) => {
                let lc = files.line_col(l.span);
                let name = files.name(l.span.file).to_string();
                (Some(name), lc.line as usize, lc.column as usize)
            }
            None => (None, 0, 0),
        };
        Record {
            code: d.code.as_str().to_string(),
            severity: d.severity.word(),
            message: d.message.clone(),
            file,
            line,
            column,
            hints: d.hints.iter().chain(&d.notes).cloned().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Severity, Span};

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    struct TestCode;

    impl Code for TestCode {
        fn as_str(self) -> &'static str {
            "X0001"
        }
        fn severity(self) -> Severity {
            Severity::Error
        }
    }

    #[test]
    fn notes_come_before_hints_and_secondary_labels_are_drawn() {
        let mut files = SourceSet::new();
        let file = files.add("a.txt", "one two\nthree\n");
        let d = Diagnostic::new(TestCode, "bad two", Span::new(file, 4, 7), "here")
            .also(Span::new(file, 8, 13), "because of this")
            .hint("write one")
            .note("two is taken");
        assert_eq!(
            render(std::slice::from_ref(&d), &files),
            "error[X0001]: bad two\n  ┌─ a.txt:1:5\n  │\n1 │ one two\n  │     ^^^ here\n2 │ three\n  │ ----- because of this\n  │\n  = note: two is taken\n  = help: write one\n\n"
        );
        let record = Record::of(&d, &files);
        assert_eq!((record.line, record.column), (1, 5));
        assert_eq!(record.hints, vec!["write one", "two is taken"]);
    }

    #[test]
    fn a_diagnostic_without_a_place_has_no_file_in_its_record() {
        let files = SourceSet::new();
        let d = Diagnostic::warning(TestCode, "nothing");
        let record = Record::of(&d, &files);
        assert_eq!(
            (record.file, record.line, record.severity),
            (None, 0, "warning")
        );
    }
}
