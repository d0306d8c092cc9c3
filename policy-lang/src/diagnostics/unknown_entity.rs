//! Diagnostic: unknown-entity
//!
//! Fires when `entity NAME` names no Cilium entity. The entities are `world`, `cluster`,
//! `host`, `remote-node`, `kube-apiserver`, `all`, `health`, `init`, `unmanaged`,
//! `ingress`, `world-ipv4` and `world-ipv6`.
//!
//! Fix: use one of these names (the hint gives the closest).

use super::{Code, Diagnostic};
use crate::ast::Word;
use crate::suggest::best_match;
use crate::vocab::ENTITIES;

/// Makes the diagnostic for `word`.
pub(crate) fn new(word: &Word) -> Diagnostic {
    Diagnostic::new(
        Code::UnknownEntity,
        format!("unknown entity `{}`", word.text),
        word.span,
        "not a Cilium entity",
    )
    .suggest(best_match(&word.text, ENTITIES.iter().copied()))
    .note(format!("the entities are {}", crate::vocab::list(ENTITIES)))
}

#[cfg(test)]
mod tests {
    use crate::diagnostics::test_support::expect;
    use crate::diagnostics::Code;

    #[test]
    fn suggests_the_closest_entity() {
        let d = expect(
            "policy \"p\" priority 1 { subject namespaces {}; egress allow to entity wrold; }\n",
            Code::UnknownEntity,
        );
        assert_eq!(d[0].hints, vec!["did you mean `world`?".to_string()]);
    }
}
