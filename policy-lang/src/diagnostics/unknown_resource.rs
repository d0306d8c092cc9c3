//! Diagnostic: unknown-resource
//!
//! Fires when `reserve N RESOURCE ...` names a resource other than `entries`,
//! `counters` and `sas`.
//!
//! Fix: use one of these (the hint gives the closest).

use super::{Code, Diagnostic};
use crate::ast::Word;
use crate::suggest::best_match;
use crate::vocab::RESOURCES;

/// Makes the diagnostic for `word`.
pub(crate) fn new(word: &Word) -> Diagnostic {
    Diagnostic::new(
        Code::UnknownResource,
        format!("unknown resource `{}`", word.text),
        word.span,
        "expected `entries`, `counters` or `sas`",
    )
    .suggest(best_match(&word.text, RESOURCES.iter().copied()))
}

#[cfg(test)]
mod tests {
    use crate::diagnostics::test_support::expect;
    use crate::diagnostics::Code;

    #[test]
    fn suggests_entries() {
        let d = expect(
            "placement { reserve 10 entires on \"ebpf\" for table \"ct\"; }\n",
            Code::UnknownResource,
        );
        assert_eq!(d[0].hints, vec!["did you mean `entries`?".to_string()]);
    }
}
