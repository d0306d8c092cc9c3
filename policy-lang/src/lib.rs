//! The `.pipe` policy language (placeholder until its issue lands).
