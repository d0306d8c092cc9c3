//! Diagnostics: what the user did wrong, where, and how to fix it.
//!
//! Stages return [`Diagnostic`] values with stable codes and spans; only the edge (the CLI,
//! or a test) renders them, with codespan-reporting. The catalogue of codes is in
//! [`Code`]: a code never changes meaning once released, so scripts may match on it.

use crate::source::{FileId, Sources, Span};
use codespan_reporting::diagnostic as cs;
use codespan_reporting::term;
use codespan_reporting::term::termcolor::{ColorChoice, StandardStream};

/// How bad a diagnostic is: the shared source layer's, which policy-lang's diagnostics use
/// too (a warning sorts before an error).
pub use pipec_source::Severity;

macro_rules! codes {
    ($($name:ident = $code:literal, $doc:literal;)*) => {
        /// The catalogue of diagnostic codes. Each code keeps its meaning forever.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum Code { $(#[doc = $doc] $name,)* }

        impl Code {
            /// The stable text form, such as `E0101`.
            pub fn as_str(self) -> &'static str {
                match self { $(Code::$name => $code,)* }
            }

            /// A one-line description, as listed in `docs/diagnostics.md`.
            pub fn describe(self) -> &'static str {
                match self { $(Code::$name => $doc,)* }
            }

            /// Every code, in catalogue order.
            pub const ALL: &'static [Code] = &[$(Code::$name,)*];
        }
    };
}

codes! {
    Io = "E0001", "an input file or directory cannot be read";
    YamlSyntax = "E0002", "the file is not valid YAML";
    JsonSyntax = "E0003", "the file is not valid JSON";
    NotAnObject = "E0004", "a document is not a Kubernetes object (a mapping with apiVersion and kind)";
    NothingToRead = "E0005", "the inputs hold no object and no `.pipe` file";
    MissingField = "E0101", "a required field is missing";
    WrongType = "E0102", "a field has the wrong type or an unknown value";
    InvalidName = "E0103", "a name is not a valid DNS label or subdomain";
    DuplicateObject = "E0104", "the same object is defined twice";
    InvalidLabel = "E0105", "a label key or value is malformed";
    InvalidSelector = "E0106", "a label selector is malformed (operator, values)";
    InvalidCidr = "E0107", "a CIDR or IP address is malformed";
    CidrExcept = "E0108", "an ipBlock except entry is not inside its cidr";
    PortRange = "E0109", "a port number is out of range";
    EndPort = "E0110", "endPort is invalid (smaller than port, or without a numeric port)";
    UnknownProtocol = "E0111", "a protocol is not TCP, UDP or SCTP (or ANY where Cilium allows it)";
    InvalidAction = "E0112", "an admin policy rule action is not Allow, Deny or Pass";
    InvalidPriority = "E0113", "an AdminNetworkPolicy priority is out of range";
    UnknownReference = "E0114", "an object refers to something that does not exist";
    InvalidEntity = "E0115", "a Cilium entity name is unknown";
    InvalidPortName = "E0116", "a named port is not a valid IANA service name";
    AddressConflict = "E0117", "two objects claim the same IP address";
    InvalidService = "E0118", "a Service is inconsistent (ports, type, IPs)";
    InvalidIdentity = "E0119", "a CiliumIdentity is malformed";
    BaselineName = "E0120", "a BaselineAdminNetworkPolicy is not named `default`";
    PodCidrExhausted = "E0121", "the pod CIDR has no room for the expanded workloads";
    PipePriorityClash = "E0122", "a `.pipe` policy has the priority of another admin-tier policy";
    MisspeltKind = "E0123", "an object's kind is not a kind of its API group but is close to one pipec reads";
    UnenforcedPolicy = "E0124", "an object of a network-policy kind or version pipec does not enforce (a warning with `--allow-ignored-policies`)";
    NamespaceMismatch = "E0125", "an object names another namespace than `-n` gives (as `kubectl apply -n` refuses it)";
    UnknownKind = "W0001", "an object of a kind pipec does not model is skipped";
    IgnoredField = "W0002", "a field is accepted but has no effect in pipec";
    NoNamespace = "W0003", "a namespaced object refers to a namespace that is not defined";
    PodWithoutIp = "W0004", "a pod has no IP and is left out of the datapath";
    L7Redirect = "W0005", "an L7 rule is enforced at L4 and redirected to the proxy";
    EmptyInput = "W0006", "an input file holds no objects";
    SamePriority = "W0007", "two AdminNetworkPolicies have one priority, so their order is undefined";
    CidrHostBits = "W0008", "a CIDR has host bits set and is read as its network";
}

/// A secondary label: another place that explains the problem.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Label {
    /// Where.
    pub span: Span,
    /// What is there.
    pub message: String,
}

/// One problem found in the input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// Stable code.
    pub code: Code,
    /// Error or warning.
    pub severity: Severity,
    /// What is wrong, in one sentence.
    pub message: String,
    /// Where it is wrong, and a few words on what was found there.
    pub primary: Option<Label>,
    /// Other places that help to understand it.
    pub secondary: Vec<Label>,
    /// What was expected, or how to fix it.
    pub hints: Vec<String>,
}

impl Diagnostic {
    /// An error with `code` and `message`.
    pub fn error(code: Code, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            code,
            severity: Severity::Error,
            message: message.into(),
            primary: None,
            secondary: Vec::new(),
            hints: Vec::new(),
        }
    }

    /// A warning with `code` and `message`.
    pub fn warning(code: Code, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::error(code, message)
        }
    }

    /// Sets the primary location.
    pub fn at(mut self, span: Span, label: impl Into<String>) -> Diagnostic {
        self.primary = Some(Label {
            span,
            message: label.into(),
        });
        self
    }

    /// Adds a secondary location.
    pub fn also(mut self, span: Span, label: impl Into<String>) -> Diagnostic {
        self.secondary.push(Label {
            span,
            message: label.into(),
        });
        self
    }

    /// Adds a hint.
    pub fn hint(mut self, hint: impl Into<String>) -> Diagnostic {
        self.hints.push(hint.into());
        self
    }

    /// True for errors.
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    fn to_codespan(&self) -> cs::Diagnostic<FileId> {
        let base = match self.severity {
            Severity::Error => cs::Diagnostic::error(),
            Severity::Warning => cs::Diagnostic::warning(),
        };
        let mut labels = Vec::new();
        if let Some(p) = &self.primary {
            labels.push(cs::Label::primary(p.span.file, p.span.range()).with_message(&p.message));
        }
        for s in &self.secondary {
            labels.push(cs::Label::secondary(s.span.file, s.span.range()).with_message(&s.message));
        }
        base.with_code(self.code.as_str())
            .with_message(pipec_source::window::clip(&self.message))
            .with_labels(labels)
            .with_notes(self.hints.iter().map(|h| format!("help: {h}")).collect())
    }
}

/// Renders diagnostics without colour, as tests and logs want them.
pub fn emit_to_string(sources: &Sources, diags: &[Diagnostic]) -> String {
    let config = term::Config::default();
    let mut out = String::new();
    for d in diags {
        // Rendering fails only when a span lies outside its file, which would be a bug in the
        // stage that made it; the message alone is still worth showing then.
        if let Some(text) = long_line_text(sources, d) {
            out.push_str(&text);
            continue;
        }
        match term::emit_into_string(&config, sources.files(), &d.to_codespan()) {
            Ok(text) => out.push_str(&text),
            Err(_) => out.push_str(&format!(
                "{}[{}]: {}\n",
                severity_word(d),
                d.code.as_str(),
                d.message
            )),
        }
    }
    out
}

/// Renders diagnostics to standard error, in colour where the terminal supports it.
pub fn emit_to_stderr(sources: &Sources, diags: &[Diagnostic]) {
    // termcolor's `Auto` looks at TERM and NO_COLOR but not at whether stderr is a terminal,
    // so a redirected stderr would get escape codes.
    use std::io::IsTerminal;
    let choice = if std::io::stderr().is_terminal() {
        ColorChoice::Auto
    } else {
        ColorChoice::Never
    };
    let stream = StandardStream::stderr(choice);
    let mut lock = stream.lock();
    let config = term::Config::default();
    for d in diags {
        if let Some(text) = long_line_text(sources, d) {
            use std::io::Write as _;
            let _ = lock.write_all(text.as_bytes());
            continue;
        }
        if term::emit_to_write_style(&mut lock, &config, sources.files(), &d.to_codespan()).is_err()
        {
            eprintln!("{}[{}]: {}", severity_word(d), d.code.as_str(), d.message);
        }
    }
}

/// Which warnings a run shows (errors are always shown in full).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WarningDisplay {
    /// Every warning in full (`pipec check`, whose job is to list every problem).
    All,
    /// The first [`WARNINGS_SHOWN_PER_CODE`] warnings of each code in full, then one line
    /// per code counting the rest (the commands that go on to compile or trace).
    #[default]
    Summary,
    /// No warnings (`-q`).
    Quiet,
}

/// How many warnings of one code [`WarningDisplay::Summary`] shows in full.
pub const WARNINGS_SHOWN_PER_CODE: usize = 3;

/// The diagnostics to render under `display`, in their order, and the summary lines of
/// what is not rendered: per code, how many more warnings there are; and, unless quiet,
/// what `--allow-ignored-policies` skipped (E0124 as warnings), counted per message.
pub fn select(diags: &[Diagnostic], display: WarningDisplay) -> (Vec<Diagnostic>, Vec<String>) {
    let mut shown = Vec::new();
    let mut per_code: std::collections::BTreeMap<Code, usize> = Default::default();
    for d in diags {
        if d.is_error() || display == WarningDisplay::All {
            shown.push(d.clone());
            continue;
        }
        if display == WarningDisplay::Quiet {
            continue;
        }
        let n = per_code.entry(d.code).or_default();
        *n += 1;
        if *n <= WARNINGS_SHOWN_PER_CODE {
            shown.push(d.clone());
        }
    }
    let mut lines: Vec<String> = per_code
        .into_iter()
        .filter(|(_, n)| *n > WARNINGS_SHOWN_PER_CODE)
        .map(|(code, n)| {
            format!(
                "warning[{}]: {} more like the above not shown ({}); `pipec check` lists every one, `-q` hides warnings",
                code.as_str(),
                n - WARNINGS_SHOWN_PER_CODE,
                code.describe()
            )
        })
        .collect();
    if display != WarningDisplay::Quiet {
        let mut ignored: std::collections::BTreeMap<&str, usize> = Default::default();
        for d in diags
            .iter()
            .filter(|d| d.code == Code::UnenforcedPolicy && !d.is_error())
        {
            *ignored.entry(d.message.as_str()).or_default() += 1;
        }
        if !ignored.is_empty() {
            let total: usize = ignored.values().sum();
            lines.push(format!(
                "note: ignored {total} policy object{} pipec does not enforce; verdicts allow more than the cluster does:",
                if total == 1 { "" } else { "s" }
            ));
            lines.extend(ignored.into_iter().map(|(m, n)| format!("  {n} × {m}")));
        }
    }
    (shown, lines)
}

/// A diagnostic whose primary label lies in a very long line, rendered with a window of
/// that line (the shared source layer's [`pipec_source::window`], which both diagnostic stacks use);
/// `None` for every other diagnostic. Secondary labels are named by place.
fn long_line_text(sources: &Sources, d: &Diagnostic) -> Option<String> {
    let primary = d.primary.as_ref()?;
    let at = sources.line_col(primary.span.file, primary.span.start as usize);
    let mut notes: Vec<String> = d
        .secondary
        .iter()
        .map(|s| {
            let lc = sources.line_col(s.span.file, s.span.start as usize);
            format!(
                "note: {} at {}:{}:{}",
                s.message,
                sources.name(s.span.file),
                lc.line,
                lc.column
            )
        })
        .collect();
    notes.extend(d.hints.iter().map(|h| format!("help: {h}")));
    pipec_source::window::long_line(&pipec_source::window::Snippet {
        severity: severity_word(d),
        code: d.code.as_str(),
        message: &d.message,
        file: sources.name(primary.span.file),
        text: sources.text(primary.span.file),
        span: primary.span.range(),
        line: at.line,
        column: at.column,
        label: &primary.message,
        notes,
    })
}

fn severity_word(d: &Diagnostic) -> &'static str {
    d.severity.word()
}

/// Collects diagnostics during a stage, so that a run reports every problem, not the first.
#[derive(Default, Debug)]
pub struct Sink {
    /// Everything reported so far, in order.
    pub diags: Vec<Diagnostic>,
}

impl Sink {
    /// Records a diagnostic.
    pub fn push(&mut self, d: Diagnostic) {
        self.diags.push(d);
    }

    /// True if any error was recorded.
    pub fn has_errors(&self) -> bool {
        self.diags.iter().any(Diagnostic::is_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The catalogue in `docs/diagnostics.md` has a section for every code, so that it
    /// cannot drift from [`Code::ALL`].
    #[test]
    fn every_code_is_in_the_catalogue() {
        let doc = include_str!("../../docs/diagnostics.md");
        let missing: Vec<&str> = Code::ALL
            .iter()
            .map(|c| c.as_str())
            .filter(|c| !doc.contains(&format!("### {c} ")))
            .collect();
        assert!(missing.is_empty(), "docs/diagnostics.md lacks {missing:?}");
    }

    #[test]
    fn codes_are_unique_and_well_formed() {
        let mut seen = std::collections::BTreeSet::new();
        for c in Code::ALL {
            let s = c.as_str();
            assert!(seen.insert(s), "{s} is used twice");
            assert_eq!(s.len(), 5, "{s}");
            assert!(s.starts_with('E') || s.starts_with('W'), "{s}");
        }
    }

    #[test]
    fn rendering_has_code_position_and_help() {
        let mut sources = Sources::new();
        let file = sources.add("a.yaml", "kind: Pod\nport: 70000\n");
        let d = Diagnostic::error(Code::PortRange, "port 70000 is out of range")
            .at(Span::from_range(file, 16..21), "out of range")
            .hint("a port is a number from 1 to 65535");
        insta::assert_snapshot!(emit_to_string(&sources, &[d]), @r"
        error[E0109]: port 70000 is out of range
          ┌─ a.yaml:2:7
          │
        2 │ port: 70000
          │       ^^^^^ out of range
          │
          = help: a port is a number from 1 to 65535
        ");
    }
}
