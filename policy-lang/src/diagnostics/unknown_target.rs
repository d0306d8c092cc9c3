//! Diagnostic: unknown-target
//!
//! Fires when a placement hint names a target that is neither a built-in preset
//! (`octeon-cn10k`, `ebpf`) nor a `target` block of the program.
//!
//! Fix: correct the name (the hint gives the closest), or define the target.

use super::{Code, Diagnostic};
use crate::ast::Str;
use crate::suggest::best_match;

/// Makes the diagnostic for `name`, given the names of all known targets.
pub(crate) fn new<'a>(name: &Str, known: impl IntoIterator<Item = &'a str>) -> Diagnostic {
    Diagnostic::new(
        Code::UnknownTarget,
        format!("no target is called `{}`", name.value),
        name.span,
        "unknown target",
    )
    .suggest(best_match(&name.value, known))
}

#[cfg(test)]
mod tests {
    use crate::diagnostics::test_support::expect;
    use crate::diagnostics::Code;

    #[test]
    fn suggests_a_preset() {
        let d = expect(
            "placement { exclude table \"ct\" from hardware; pin table \"ct\" on \"epbf\"; }\n",
            Code::UnknownTarget,
        );
        assert_eq!(d[0].hints, vec!["did you mean `ebpf`?".to_string()]);
    }
}
