//! The one integration test binary of policy-lang: each module is one suite. One binary
//! links once, where a binary per suite would link the crate and its dependencies again
//! for each.

// Dependencies of the package that this target does not use itself; they serve its
// other targets. `unused_crate_dependencies` checks every target against all of them.
use ipnet as _;
use pest as _;
use pest_derive as _;
use pipec_source as _;
use serde as _;

mod bad_error_messages;
mod fuzz_corpus;
mod language;
