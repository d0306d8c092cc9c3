//! Diagnostic: duplicate-definition
//!
//! Fires when two policies or two targets have the same name (across all included files),
//! or when a target takes the name of a built-in preset. Names are how placement hints,
//! `trace` and `explain` refer to them, so they must be unique.
//!
//! Fix: rename one of them.

use super::{Code, Diagnostic};
use crate::span::Span;

/// Makes the diagnostic for a second `kind` (policy, target) called `name`.
pub(crate) fn new(kind: &str, name: &str, span: Span, first: Span) -> Diagnostic {
    Diagnostic::new(
        Code::DuplicateDefinition,
        format!("{kind} `{name}` is defined more than once"),
        span,
        "defined again here",
    )
    .also(first, "first defined here")
}

/// Makes the diagnostic for a target that takes the name of a built-in preset.
pub(crate) fn shadows_preset(name: &str, span: Span) -> Diagnostic {
    Diagnostic::new(
        Code::DuplicateDefinition,
        format!("target `{name}` has the name of a built-in preset"),
        span,
        "this name is taken by a preset",
    )
    .hint(format!(
        "to change the preset, write `target \"my-{name}\" extends \"{name}\" {{ ... }}`"
    ))
}

#[cfg(test)]
mod tests {
    use crate::diagnostics::test_support::expect;
    use crate::diagnostics::Code;

    #[test]
    fn fires_on_two_policies_with_one_name() {
        let src = "policy \"a\" priority 1 { subject namespaces {}; ingress allow from entity all; }\n\
                   policy \"a\" priority 2 { subject namespaces {}; ingress allow from entity all; }\n";
        let d = expect(src, Code::DuplicateDefinition);
        assert_eq!(d[0].secondary.len(), 1);
    }

    #[test]
    fn fires_on_a_target_named_like_a_preset() {
        expect("target \"ebpf\" { entries 1; }\n", Code::DuplicateDefinition);
    }
}
