//! Diagnostic: unknown-action
//!
//! Fires when a target's `actions` (or `remove actions`) names an action that is not in
//! the vocabulary: `allow`, `drop`, `count`, `mark`, `redirect`, `dnat`, `snat`,
//! `encrypt`, `decrypt`, `vlan_push`, `vlan_pop`, `queue`, `rss`, `jump`.
//!
//! Fix: use one of these names (the hint gives the closest).

use super::{Code, Diagnostic};
use crate::ast::Word;
use crate::suggest::best_match;
use crate::vocab::{list, ACTIONS};

/// Makes the diagnostic for `word`.
pub(crate) fn new(word: &Word) -> Diagnostic {
    Diagnostic::new(
        Code::UnknownAction,
        format!("unknown action `{}`", word.text),
        word.span,
        "not a target action",
    )
    .suggest(best_match(&word.text, ACTIONS.iter().copied()))
    .note(format!("the actions are {}", list(ACTIONS)))
}

#[cfg(test)]
mod tests {
    use crate::diagnostics::test_support::expect;
    use crate::diagnostics::Code;

    #[test]
    fn suggests_the_closest_action() {
        let d = expect("target \"t\" { actions encrpyt; }\n", Code::UnknownAction);
        assert_eq!(d[0].hints, vec!["did you mean `encrypt`?".to_string()]);
    }
}
