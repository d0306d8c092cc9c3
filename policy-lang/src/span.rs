//! Source locations: file ids and byte spans, from the source layer that pipec's
//! manifest diagnostics share (`pipec-source`).

pub use pipec_source::{FileId, Span};
