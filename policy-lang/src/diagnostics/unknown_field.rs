//! Diagnostic: unknown-field
//!
//! Fires when a target's `match` (or `remove match`) names a field that is not in the
//! vocabulary. The packet fields are `in_port`, `eth.type`, `ipv4.src`, `ipv4.dst`,
//! `ipv6.src`, `ipv6.dst`, `ip.proto`, `l4.sport`, `l4.dport`, `tcp.flags`, `esp.spi`,
//! `vxlan.vni`; the metadata fields are `src_identity`, `dst_identity`, `endpoint`,
//! `service`, `backend`, `ct_state`, `mark`, `verdict`.
//!
//! Fix: use one of these names (the hint gives the closest).

use super::{Code, Diagnostic};
use crate::ast::Word;
use crate::suggest::best_match;
use crate::vocab::{list, FIELDS};

/// Makes the diagnostic for `word`.
pub(crate) fn new(word: &Word) -> Diagnostic {
    Diagnostic::new(
        Code::UnknownField,
        format!("unknown field `{}`", word.text),
        word.span,
        "not a matchable field",
    )
    .suggest(best_match(&word.text, FIELDS.iter().copied()))
    .note(format!("the fields are {}", list(FIELDS)))
}

#[cfg(test)]
mod tests {
    use crate::diagnostics::test_support::expect;
    use crate::diagnostics::Code;

    #[test]
    fn suggests_the_closest_field() {
        let d = expect(
            "target \"t\" extends \"octeon-cn10k\" { match esp.sip; }\n",
            Code::UnknownField,
        );
        assert_eq!(d[0].hints, vec!["did you mean `esp.spi`?".to_string()]);
    }
}
