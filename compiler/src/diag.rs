//! Diagnostics: what the user did wrong, where, and how to fix it.
//!
//! Stages return [`Diagnostic`] values with stable codes and spans; only the edge (the CLI,
//! or a test) renders them, with the shared source layer's renderer (`pipec-source`), which
//! renders policy-lang's diagnostics too. The catalogue of codes is in [`Code`]: a code
//! never changes meaning once released, so scripts may match on it.

use crate::source::Sources;

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

/// A place in the input with a few words on it: the shared source layer's.
pub use pipec_source::Label;

/// One problem found in the input: the shared source layer's type with a code of this
/// catalogue, so the driver renders manifest and `.pipe` diagnostics alike.
pub type Diagnostic = pipec_source::Diagnostic<Code>;

impl pipec_source::Code for Code {
    fn as_str(self) -> &'static str {
        Code::as_str(self)
    }

    /// A manifest code has no fixed severity (`--allow-ignored-policies` makes E0124 a
    /// warning); its letter says the usual one.
    fn severity(self) -> Severity {
        if Code::as_str(self).starts_with('W') {
            Severity::Warning
        } else {
            Severity::Error
        }
    }
}

/// Renders diagnostics without colour, as tests and logs want them.
pub fn emit_to_string(sources: &Sources, diags: &[Diagnostic]) -> String {
    pipec_source::render(diags, sources.files())
}

/// Renders diagnostics to standard error, in colour where the terminal supports it.
pub fn emit_to_stderr(sources: &Sources, diags: &[Diagnostic]) {
    // A failure to write to stderr leaves nothing better to report it to.
    let _ = pipec_source::emit_to_stderr(diags, sources.files());
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
    use crate::source::Span;

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
