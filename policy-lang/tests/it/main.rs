//! The one integration test binary of policy-lang: each module is one suite. One binary
//! links once, where a binary per suite would link the crate and its dependencies again
//! for each.

mod bad_error_messages;
mod fuzz_corpus;
mod language;
