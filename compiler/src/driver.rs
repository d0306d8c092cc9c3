//! The front half of every command: read inputs, decode, build the model.
//!
//! `load` is the one place that runs parse → model and decides whether the run may go on:
//! any error diagnostic stops it before a later stage sees a half-valid model.

use crate::diag::{Diagnostic, Sink};
use crate::frontend;
use crate::model::build::{objects_to_cluster, BuildOptions};
use crate::model::Cluster;
use crate::source::Sources;
use std::path::PathBuf;

/// The result of loading inputs: the sources (for rendering), the model, and every
/// diagnostic, warnings included.
pub struct Loaded {
    /// Every file read.
    pub sources: Sources,
    /// The model; only meaningful when `diags` has no error.
    pub cluster: Cluster,
    /// Everything reported, in order.
    pub diags: Vec<Diagnostic>,
}

impl Loaded {
    /// True when any diagnostic is an error.
    pub fn has_errors(&self) -> bool {
        self.diags.iter().any(Diagnostic::is_error)
    }
}

/// Reads files and directories and builds the model.
pub fn load(paths: &[PathBuf], options: &BuildOptions) -> Loaded {
    let mut sources = Sources::new();
    let mut sink = Sink::default();
    let files = frontend::read_inputs(paths, &mut sources, &mut sink);
    load_sources(sources, &files, options, sink)
}

/// Builds the model from sources already in memory (tests, conformance cases).
pub fn load_sources(
    sources: Sources,
    files: &[crate::source::FileId],
    options: &BuildOptions,
    mut sink: Sink,
) -> Loaded {
    let objects = frontend::files_to_objects(&sources, files, &mut sink);
    let cluster = objects_to_cluster(&sources, &objects, options, &mut sink);
    let mut diags = sink.diags;
    // Stages check kinds in their own order (services after pods, for example); users
    // read diagnostics in file order. The sort is stable, and diagnostics without a place
    // come last.
    diags.sort_by_key(|d| match &d.primary {
        Some(p) => (0, p.span.file, p.span.start),
        None => (1, crate::source::FileId(0), 0),
    });
    Loaded {
        sources,
        cluster,
        diags,
    }
}

/// Builds the model from in-memory text, one `(name, text)` per file.
pub fn load_texts(texts: &[(&str, &str)], options: &BuildOptions) -> Loaded {
    let mut sources = Sources::new();
    let files: Vec<_> = texts.iter().map(|(n, t)| sources.add(*n, *t)).collect();
    load_sources(sources, &files, options, Sink::default())
}
