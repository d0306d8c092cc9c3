//! The front half of every command: read inputs, decode, build the model.
//!
//! `load` is the one place that runs parse → model and decides whether the run may go on:
//! any error diagnostic stops it before a later stage sees a half-valid model.

use crate::diag::{Diagnostic, Sink};
use crate::frontend;
use crate::model::build::{BuildOptions, ClusterBuilder};
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
    // Objects are modelled as they are decoded, so they are never all in memory at once.
    // The model's diagnostics come after the frontend's, as if the stages ran one by one.
    let mut model_sink = Sink::default();
    let mut builder = ClusterBuilder::new(&sources, options, &mut model_sink);
    frontend::for_each_object(&sources, files, &mut sink, |obj| builder.add(obj));
    let cluster = builder.finish();
    sink.diags.append(&mut model_sink.diags);
    Loaded {
        sources,
        cluster,
        diags: sink.diags,
    }
}

/// Builds the model from in-memory text, one `(name, text)` per file.
pub fn load_texts(texts: &[(&str, &str)], options: &BuildOptions) -> Loaded {
    let mut sources = Sources::new();
    let files: Vec<_> = texts.iter().map(|(n, t)| sources.add(*n, *t)).collect();
    load_sources(sources, &files, options, Sink::default())
}
