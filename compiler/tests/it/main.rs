//! The integration tests of pipec: one binary, one module per subject.

mod conformance;
mod semantics_props;
mod trace;
