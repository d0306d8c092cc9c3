//! Incremental lowering: one model change → the new MAG and its entry-level diff.
