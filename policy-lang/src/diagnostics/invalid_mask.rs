//! Diagnostic: invalid-mask
//!
//! Fires when the mask kind after a field in `match` is not `exact`, `prefix` or `any`,
//! or when `prefix` is given for a field that is not an address (`ipv4.src`, `ipv4.dst`,
//! `ipv6.src`, `ipv6.dst`): a prefix mask only means something for addresses.
//!
//! Fix: use `exact`, `prefix` (addresses only) or `any` (an arbitrary bit mask).

use super::{Code, Diagnostic};
use crate::ast::Word;
use crate::suggest::best_match;
use crate::vocab::MASKS;

/// Makes the diagnostic for an unknown mask kind `word`.
pub(crate) fn unknown(word: &Word) -> Diagnostic {
    Diagnostic::new(
        Code::InvalidMask,
        format!("unknown mask kind `{}`", word.text),
        word.span,
        "expected `exact`, `prefix` or `any`",
    )
    .suggest(best_match(&word.text, MASKS.iter().copied()))
}

/// Makes the diagnostic for a `prefix` mask on `field`, which is not an address.
pub(crate) fn prefix_on_non_address(mask: &Word, field: &Word) -> Diagnostic {
    Diagnostic::new(
        Code::InvalidMask,
        format!("field `{}` cannot have a prefix mask", field.text),
        mask.span,
        "prefix masks are for addresses",
    )
    .also(field.span, "not an address")
    .hint("use `exact` or `any`")
}

#[cfg(test)]
mod tests {
    use crate::diagnostics::test_support::expect;
    use crate::diagnostics::Code;

    #[test]
    fn fires_on_prefix_port() {
        expect("target \"t\" { match l4.dport prefix; }\n", Code::InvalidMask);
    }

    #[test]
    fn suggests_mask_kind() {
        let d = expect("target \"t\" { match ipv4.src prefx; }\n", Code::InvalidMask);
        assert_eq!(d[0].hints, vec!["did you mean `prefix`?".to_string()]);
    }
}
