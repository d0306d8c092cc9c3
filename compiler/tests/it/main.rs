//! The one integration test binary of pipec: each module is one suite.

mod bad_error_messages;
mod diagnostics;
mod snapshots;
