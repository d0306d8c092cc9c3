//! Diagnostics: the catalog of stable codes, the [`Diagnostic`] type, and rendering.
//!
//! Every diagnostic the crate can emit has a code (`P0001`, ...) that never changes
//! meaning, a kebab-case name, and a module here named after it. The module's doc says
//! when it fires and how to fix the input; its tests show one input that triggers it.
//! Codes are never reused: a retired diagnostic keeps its number.
//!
//! Rendering happens only at the edge: [`render`] gives plain text for tests and
//! [`emit_to_stderr`] writes coloured output for the CLI.

use crate::source::SourceSet;
use crate::span::Span;
use codespan_reporting::diagnostic as cs;
use codespan_reporting::term;
use serde::Serialize;

macro_rules! catalog {
    ($( $variant:ident = $code:literal, $name:literal, $module:ident, $sev:ident; )*) => {
        $( pub mod $module; )*

        /// The stable code of a diagnostic.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
        pub enum Code {
            $(
                #[doc = concat!("`", $code, "` ", $name)]
                $variant,
            )*
        }

        impl Code {
            /// Every code, in numeric order.
            pub const ALL: &'static [Code] = &[$(Code::$variant),*];

            /// The stable code, such as `P0001`.
            pub fn as_str(self) -> &'static str {
                match self { $(Code::$variant => $code,)* }
            }

            /// The kebab-case name, such as `syntax-error`.
            pub fn name(self) -> &'static str {
                match self { $(Code::$variant => $name,)* }
            }

            /// The severity it is reported with.
            pub fn severity(self) -> Severity {
                match self { $(Code::$variant => Severity::$sev,)* }
            }
        }
    };
}

catalog! {
    SyntaxError = "P0001", "syntax-error", syntax_error, Error;
    InvalidEscape = "P0002", "invalid-escape", invalid_escape, Error;
    InvalidNumber = "P0003", "invalid-number", invalid_number, Error;
    DuplicateDefinition = "P0004", "duplicate-definition", duplicate_definition, Error;
    UnknownEntity = "P0005", "unknown-entity", unknown_entity, Error;
    InvalidCidr = "P0006", "invalid-cidr", invalid_cidr, Error;
    CidrHostBits = "P0007", "cidr-host-bits", cidr_host_bits, Warning;
    ExceptOutsideCidr = "P0008", "except-outside-cidr", except_outside_cidr, Error;
    InvalidPort = "P0009", "invalid-port", invalid_port, Error;
    InvalidNamedPort = "P0010", "invalid-named-port", invalid_named_port, Error;
    InvalidLabel = "P0011", "invalid-label", invalid_label, Error;
    MissingSubject = "P0012", "missing-subject", missing_subject, Error;
    DuplicateClause = "P0013", "duplicate-clause", duplicate_clause, Error;
    WrongPeerDirection = "P0014", "wrong-peer-direction", wrong_peer_direction, Error;
    RuleWithoutPeers = "P0015", "rule-without-peers", rule_without_peers, Error;
    PriorityOutOfRange = "P0016", "priority-out-of-range", priority_out_of_range, Error;
    SharedPriority = "P0017", "shared-priority", shared_priority, Warning;
    UnknownField = "P0018", "unknown-field", unknown_field, Error;
    UnknownAction = "P0019", "unknown-action", unknown_action, Error;
    UnknownPreset = "P0020", "unknown-preset", unknown_preset, Error;
    InvalidMask = "P0021", "invalid-mask", invalid_mask, Error;
    UnknownPolicy = "P0022", "unknown-policy", unknown_policy, Error;
    UnknownTarget = "P0023", "unknown-target", unknown_target, Error;
    IncludeFailed = "P0024", "include-failed", include_failed, Error;
    IncludeCycle = "P0025", "include-cycle", include_cycle, Error;
    InvalidServiceName = "P0026", "invalid-service-name", invalid_service_name, Error;
    DuplicateRuleName = "P0027", "duplicate-rule-name", duplicate_rule_name, Warning;
    UnknownMatchKind = "P0028", "unknown-match-kind", unknown_match_kind, Error;
    UnknownProtocol = "P0029", "unknown-protocol", unknown_protocol, Error;
    UnknownRuleAction = "P0030", "unknown-rule-action", unknown_rule_action, Error;
    RemoveAbsent = "P0031", "remove-absent", remove_absent, Warning;
    ConflictingPlacement = "P0032", "conflicting-placement", conflicting_placement, Error;
    ReserveOverCapacity = "P0033", "reserve-over-capacity", reserve_over_capacity, Error;
    InvalidPriorityLevels = "P0034", "invalid-priority-levels", invalid_priority_levels, Error;
    UnknownResource = "P0035", "unknown-resource", unknown_resource, Error;
    EmptyName = "P0036", "empty-name", empty_name, Error;
    ProtocolAsPortName = "P0037", "protocol-as-port-name", protocol_as_port_name, Error;
    ExceptCoversCidr = "P0038", "except-covers-cidr", except_covers_cidr, Error;
    ContradictorySelector = "P0039", "contradictory-selector", contradictory_selector, Error;
}

/// How bad a diagnostic is: the shared source layer's order (a warning before an error).
pub use pipec_source::Severity;

/// A span with a message, pointing into the source.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Label {
    /// Where.
    pub span: Span,
    /// What about it (may be empty).
    pub message: String,
}

/// A problem found in `.pipe` input: a stable code, a message, labels and hints.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    /// The stable code.
    pub code: Code,
    /// Error or warning.
    pub severity: Severity,
    /// The headline.
    pub message: String,
    /// The main place.
    pub primary: Label,
    /// Other places that explain it.
    pub secondary: Vec<Label>,
    /// Facts that explain it.
    pub notes: Vec<String>,
    /// What to do about it, such as "did you mean `world`?".
    pub help: Vec<String>,
}

impl Diagnostic {
    /// Makes a diagnostic with its code's severity.
    pub fn new(
        code: Code,
        message: impl Into<String>,
        span: Span,
        label: impl Into<String>,
    ) -> Diagnostic {
        Diagnostic {
            code,
            severity: code.severity(),
            message: message.into(),
            primary: Label {
                span,
                message: label.into(),
            },
            secondary: Vec::new(),
            notes: Vec::new(),
            help: Vec::new(),
        }
    }

    /// Adds a secondary label.
    pub fn with_label(mut self, span: Span, message: impl Into<String>) -> Diagnostic {
        self.secondary.push(Label {
            span,
            message: message.into(),
        });
        self
    }

    /// Adds a note.
    pub fn with_note(mut self, note: impl Into<String>) -> Diagnostic {
        self.notes.push(note.into());
        self
    }

    /// Adds a hint.
    pub fn with_help(mut self, help: impl Into<String>) -> Diagnostic {
        self.help.push(help.into());
        self
    }

    /// Adds "did you mean `x`?" when there is a suggestion.
    pub fn with_suggestion(self, suggestion: Option<&str>) -> Diagnostic {
        match suggestion {
            Some(s) => self.with_help(format!("did you mean `{s}`?")),
            None => self,
        }
    }

    /// Whether it rejects the input.
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    fn to_codespan(&self) -> cs::Diagnostic<crate::span::FileId> {
        let severity = match self.severity {
            Severity::Error => cs::Severity::Error,
            Severity::Warning => cs::Severity::Warning,
        };
        let mut labels =
            vec![
                cs::Label::primary(self.primary.span.file, self.primary.span.range())
                    .with_message(&self.primary.message),
            ];
        labels.extend(
            self.secondary.iter().map(|l| {
                cs::Label::secondary(l.span.file, l.span.range()).with_message(&l.message)
            }),
        );
        let notes = self
            .notes
            .iter()
            .map(|n| format!("note: {n}"))
            .chain(self.help.iter().map(|h| format!("help: {h}")))
            .collect();
        cs::Diagnostic::new(severity)
            .with_code(self.code.as_str())
            .with_message(pipec_source::window::clip(&self.message))
            .with_labels(labels)
            .with_notes(notes)
    }
}

/// `d` rendered with a window of its line when that line is very long
/// ([`pipec_source::window`]); `None` otherwise.
fn long_line_text(d: &Diagnostic, files: &SourceSet) -> Option<String> {
    let file = files.get(d.primary.span.file)?;
    let at = files.line_col(d.primary.span);
    let mut notes: Vec<String> = d
        .secondary
        .iter()
        .map(|l| {
            let lc = files.line_col(l.span);
            format!(
                "note: {} at {}:{}:{}",
                l.message,
                files.name(l.span.file),
                lc.line,
                lc.column
            )
        })
        .collect();
    notes.extend(d.notes.iter().map(|n| format!("note: {n}")));
    notes.extend(d.help.iter().map(|h| format!("help: {h}")));
    pipec_source::window::long_line(&pipec_source::window::Snippet {
        severity: d.severity.word(),
        code: d.code.as_str(),
        message: &d.message,
        file: &file.name,
        text: &file.text,
        span: d.primary.span.range(),
        line: at.line as usize,
        column: at.column as usize,
        label: &d.primary.message,
        notes,
    })
}

/// Renders diagnostics as plain text (no colour), one after the other.
pub fn render(diags: &[Diagnostic], files: &SourceSet) -> String {
    let config = term::Config::default();
    let mut out = String::new();
    for d in diags {
        if let Some(text) = long_line_text(d, files) {
            out.push_str(&text);
            continue;
        }
        if term::emit_to_string(&mut out, &config, files, &d.to_codespan()).is_err() {
            out.push_str(&format!(
                "{}[{}]: {}\n",
                d.severity.word(),
                d.code.as_str(),
                d.message
            ));
        }
    }
    out
}

/// Writes diagnostics to standard error, in colour when it is a terminal that wants it.
pub fn emit_to_stderr(diags: &[Diagnostic], files: &SourceSet) -> std::io::Result<()> {
    use term::termcolor::{ColorChoice, StandardStream};
    // termcolor's `Auto` looks only at TERM and NO_COLOR; escape codes must not reach a
    // file or a pipe, so the terminal check is made here.
    let choice = if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        ColorChoice::Auto
    } else {
        ColorChoice::Never
    };
    let stream = StandardStream::stderr(choice);
    let mut lock = stream.lock();
    let styles = term::Styles::default();
    let mut writer = term::StylesWriter::new(&mut lock, &styles);
    let config = term::Config::default();
    for d in diags {
        if let Some(text) = long_line_text(d, files) {
            std::io::Write::write_all(&mut writer, text.as_bytes())?;
            continue;
        }
        term::emit_to_write_style(&mut writer, &config, files, &d.to_codespan())
            .map_err(std::io::Error::other)?;
    }
    Ok(())
}

/// Sorts diagnostics by file and position (stable for equal positions), for deterministic output.
pub fn sort(diags: &mut [Diagnostic]) {
    diags.sort_by_key(|d| (d.primary.span.file, d.primary.span.start));
}

#[cfg(test)]
pub(crate) mod test_support {
    //! Helpers for the per-diagnostic unit tests.

    use super::*;
    use crate::source::MemoryLoader;

    /// Parses and resolves one file called `test.pipe` and returns every diagnostic.
    pub(crate) fn check(src: &str) -> Vec<Diagnostic> {
        let mut files = SourceSet::new();
        let id = files.add("test.pipe", src);
        match crate::resolve(&mut files, &[id], &mut MemoryLoader::default()) {
            Ok(p) => p.warnings,
            Err(d) => d,
        }
    }

    /// The diagnostics of `src` with `code`; panics (failing the test) if there is none.
    pub(crate) fn expect(src: &str, code: Code) -> Vec<Diagnostic> {
        let all = check(src);
        let found: Vec<_> = all.iter().filter(|d| d.code == code).cloned().collect();
        assert!(!found.is_empty(), "expected {code:?}, got {all:#?}");
        found
    }
}

/// The shared long-line renderer (`pipec_source::window`) on `.pipe` diagnostics.
#[cfg(test)]
mod long_line {
    /// Issue 18, item 6: a thousand broken statements on one line give diagnostics of a
    /// window each, not the whole line each time.
    #[test]
    fn a_pipe_file_with_one_long_line_renders_small() {
        let text = format!(
            "policy \"p\" priority 1 {{ subject namespaces {{}}; {} }}",
            "ingress allow frm entity all; ".repeat(1000)
        );
        let mut files = crate::SourceSet::new();
        let id = files.add("long.pipe", text.clone());
        let (_, diags) = crate::parse(id, &text);
        assert!(!diags.is_empty());
        let out = crate::render(&diags, &files);
        assert!(out.contains("shown in part"), "{out}");
        assert!(
            out.len() < diags.len() * 1000,
            "{} bytes for {} diagnostics",
            out.len(),
            diags.len()
        );
    }
}
