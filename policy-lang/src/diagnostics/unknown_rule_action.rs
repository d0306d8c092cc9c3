//! Diagnostic: unknown-rule-action
//!
//! Fires when the word after `ingress`/`egress` is not a rule action: `allow`, `deny`,
//! `pass`, `log` or `redirect-to-proxy`.
//!
//! Fix: use one of these (the hint gives the closest).

use super::{Code, Diagnostic};
use crate::ast::Word;
use crate::suggest::best_match;
use crate::vocab::RULE_ACTIONS;

/// Makes the diagnostic for `word`.
pub(crate) fn new(word: &Word) -> Diagnostic {
    Diagnostic::new(
        Code::UnknownRuleAction,
        format!("unknown rule action `{}`", word.text),
        word.span,
        "not a rule action",
    )
    .suggest(best_match(&word.text, RULE_ACTIONS.iter().copied()))
    .note(format!(
        "the rule actions are {}",
        crate::vocab::list(RULE_ACTIONS)
    ))
}

#[cfg(test)]
mod tests {
    use crate::diagnostics::test_support::expect;
    use crate::diagnostics::Code;

    #[test]
    fn suggests_the_closest_action() {
        let d = expect(
            "policy \"p\" priority 1 { subject namespaces {}; ingress alow from entity all; }\n",
            Code::UnknownRuleAction,
        );
        assert_eq!(d[0].hints, vec!["did you mean `allow`?".to_string()]);
    }
}
