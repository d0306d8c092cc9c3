//! Diagnostic: unknown-match-kind
//!
//! Fires when a target's `kinds` (or `remove kinds`) names a match kind other than
//! `exact`, `lpm`, `ternary` and `range`.
//!
//! Fix: use one of these names (the hint gives the closest).

use super::{Code, Diagnostic};
use crate::ast::Word;
use crate::suggest::best_match;
use crate::vocab::MATCH_KINDS;

/// Makes the diagnostic for `word`.
pub(crate) fn new(word: &Word) -> Diagnostic {
    Diagnostic::new(
        Code::UnknownMatchKind,
        format!("unknown match kind `{}`", word.text),
        word.span,
        "expected `exact`, `lpm`, `ternary` or `range`",
    )
    .suggest(best_match(&word.text, MATCH_KINDS.iter().copied()))
}

#[cfg(test)]
mod tests {
    use crate::diagnostics::test_support::expect;
    use crate::diagnostics::Code;

    #[test]
    fn suggests_the_closest_kind() {
        let d = expect("target \"t\" { kinds ternery; }\n", Code::UnknownMatchKind);
        assert_eq!(d[0].hints, vec!["did you mean `ternary`?".to_string()]);
    }
}
