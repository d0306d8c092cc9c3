//! Diagnostics: the catalog of stable codes of `.pipe` input.
//!
//! Every diagnostic the crate can emit has a code (`P0001`, ...) that never changes
//! meaning, a kebab-case name, and a module here named after it. The module's doc says
//! when it fires and how to fix the input; its tests show one input that triggers it.
//! Codes are never reused: a retired diagnostic keeps its number.
//!
//! The [`Diagnostic`] type, its labels and the renderer are the shared source layer's
//! (`pipec-source`), which the manifest diagnostics of the `pipec` library use too.
//! Rendering happens only at the edge: [`render`] gives plain text for tests and
//! [`emit_to_stderr`] writes coloured output for the CLI.

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

/// A span with a message, pointing into the source: the shared source layer's.
pub use pipec_source::Label;

/// The shared renderer: [`render`] gives plain text for tests and [`emit_to_stderr`] writes
/// coloured output for the CLI.
pub use pipec_source::{emit_to_stderr, render, sort};

/// A problem found in `.pipe` input: a code of this catalogue, a message, labels, notes and
/// hints. The type is the shared source layer's, so the driver renders `.pipe` and manifest
/// diagnostics alike; every `.pipe` diagnostic has a primary place.
pub type Diagnostic = pipec_source::Diagnostic<Code>;

impl pipec_source::Code for Code {
    fn as_str(self) -> &'static str {
        Code::as_str(self)
    }

    fn severity(self) -> Severity {
        Code::severity(self)
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    //! Helpers for the per-diagnostic unit tests.

    use super::*;
    use crate::source::{MemoryLoader, SourceSet};

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
