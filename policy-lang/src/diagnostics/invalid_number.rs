//! Diagnostic: invalid-number
//!
//! Fires when a number does not fit where it is used: a priority, a capacity or an
//! amount larger than 4294967295 (`u32`).
//!
//! Fix: use a smaller number; for capacities without bound write `unlimited`.

use super::{Code, Diagnostic};
use crate::ast::Word;

/// Makes the diagnostic for `word`, used as `what`, whose largest value is `max`.
pub(crate) fn new(word: &Word, what: &str, max: u64) -> Diagnostic {
    Diagnostic::new(
        Code::InvalidNumber,
        format!("{what} `{}` is too large", word.text),
        word.span,
        format!("the largest {what} is {max}"),
    )
}

#[cfg(test)]
mod tests {
    use crate::diagnostics::test_support::expect;
    use crate::diagnostics::Code;

    #[test]
    fn fires_on_huge_capacity() {
        let d = expect(
            "target \"t\" { entries 99999999999999999999; }\n",
            Code::InvalidNumber,
        );
        assert!(d[0].message.contains("too large"));
    }
}
