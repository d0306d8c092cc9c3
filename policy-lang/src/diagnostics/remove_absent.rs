//! Diagnostic: remove-absent (warning)
//!
//! Fires when `remove match|kinds|actions NAME;` names something the target does not
//! have at that point (not in its preset, nor added earlier in the block). The statement
//! does nothing.
//!
//! Fix: remove the statement, or check the preset's list with the resolved profile.

use super::{Code, Diagnostic};
use crate::ast::Word;

/// Makes the diagnostic for `word`, absent from the `what` list.
pub(crate) fn new(word: &Word, what: &str) -> Diagnostic {
    Diagnostic::new(
        Code::RemoveAbsent,
        format!("`{}` is not among the target's {what}", word.text),
        word.span,
        "nothing to remove",
    )
}

#[cfg(test)]
mod tests {
    use crate::diagnostics::test_support::expect;
    use crate::diagnostics::Code;

    #[test]
    fn warns_on_removing_absent_field() {
        expect(
            "target \"t\" extends \"octeon-cn10k\" { remove match ipv6.src; }\n",
            Code::RemoveAbsent,
        );
    }
}
