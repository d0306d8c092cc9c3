//! The front half of every command: read inputs, decode, build the model.
//!
//! `load` is the one place that runs parse → model and decides whether the run may go on:
//! any error diagnostic stops it before a later stage sees a half-valid model.

use crate::diag::{self, Code, Diagnostic, Sink};
use crate::frontend::{self, Object};
use crate::model::build::{BuildOptions, ClusterBuilder, Modelled};
use crate::model::{self, Cluster};
use crate::source::{FieldPath, FileId, Sources};
use std::borrow::Cow;
use std::path::PathBuf;

/// The result of loading inputs: the sources (for rendering), the model, and every
/// diagnostic, warnings included.
pub struct Loaded {
    /// Every file read.
    pub sources: Sources,
    /// The model; only meaningful when `diags` has no error.
    pub cluster: Cluster,
    /// Everything reported about manifests, in order.
    pub diags: Vec<Diagnostic>,
    /// The `.pipe` files of the run, their resolved program and their diagnostics.
    pub pipe: PipeInput,
}

/// The `.pipe` part of a run. Its files (includes too) are in [`Loaded::sources`], and the
/// spans of its program and its diagnostics point there, as the manifests' do.
#[derive(Default)]
pub struct PipeInput {
    /// The resolved program, when every file resolved.
    pub program: Option<policy_lang::resolved::Program>,
    /// Errors and warnings from policy-lang.
    pub diags: Vec<policy_lang::Diagnostic>,
}

impl Loaded {
    /// True when any diagnostic, of manifests or of `.pipe` files, is an error.
    pub fn has_errors(&self) -> bool {
        self.diags.iter().any(Diagnostic::is_error)
            || self
                .pipe
                .diags
                .iter()
                .any(policy_lang::Diagnostic::is_error)
    }

    /// The number of diagnostics of both kinds.
    pub fn diagnostic_count(&self) -> (usize, usize) {
        let errors = self.diags.iter().filter(|d| d.is_error()).count()
            + self.pipe.diags.iter().filter(|d| d.is_error()).count();
        (errors, self.diags.len() + self.pipe.diags.len() - errors)
    }

    /// Renders the diagnostics to standard error, warnings as `display` says, then the
    /// summary lines of [`diag::select`], then the `.pipe` diagnostics (they are few, so
    /// all of them unless quiet, and their errors always).
    pub fn emit_to_stderr_with(&self, display: diag::WarningDisplay) {
        let (shown, lines) = diag::select(&self.diags, display);
        diag::emit_to_stderr(&self.sources, &shown);
        for l in lines {
            eprintln!("{l}");
        }
        let pipe: Vec<policy_lang::Diagnostic> = self
            .pipe
            .diags
            .iter()
            .filter(|d| d.is_error() || display != diag::WarningDisplay::Quiet)
            .cloned()
            .collect();
        // A failure to write to stderr leaves nothing better to report it to.
        let _ = pipec_source::emit_to_stderr(&pipe, self.sources.files());
    }

    /// [`Loaded::emit_to_stderr_with`] as text, without colour, for the manifests'
    /// diagnostics (tests).
    pub fn render_with(&self, display: diag::WarningDisplay) -> String {
        let (shown, lines) = diag::select(&self.diags, display);
        let mut out = diag::emit_to_string(&self.sources, &shown);
        for l in lines {
            out.push_str(&l);
            out.push('\n');
        }
        out
    }

    /// Renders every diagnostic to standard error.
    pub fn emit_to_stderr(&self) {
        diag::emit_to_stderr(&self.sources, &self.diags);
        // A failure to write to stderr leaves nothing better to report it to.
        let _ = pipec_source::emit_to_stderr(&self.pipe.diags, self.sources.files());
    }

    /// Renders every diagnostic without colour.
    pub fn render(&self) -> String {
        let mut out = diag::emit_to_string(&self.sources, &self.diags);
        out.push_str(&pipec_source::render(
            &self.pipe.diags,
            self.sources.files(),
        ));
        out
    }

    /// Every diagnostic, of manifests and of `.pipe` files, as machine-readable records
    /// (`pipec check -o json`), in the order they are rendered.
    pub fn diagnostic_records(&self) -> Vec<DiagnosticRecord> {
        let files = self.sources.files();
        let manifests = self.diags.iter().map(|d| DiagnosticRecord::of(d, files));
        let pipe = self
            .pipe
            .diags
            .iter()
            .map(|d| DiagnosticRecord::of(d, files));
        manifests.chain(pipe).collect()
    }
}

/// One diagnostic as `check -o json` prints it: the shared source layer's record, which
/// both kinds of diagnostics make.
pub use pipec_source::Record as DiagnosticRecord;

/// Reads files and directories and builds the model.
pub fn load(paths: &[PathBuf], options: &BuildOptions) -> Loaded {
    let mut sources = Sources::new();
    let mut sink = Sink::default();
    let files = frontend::read_inputs(paths, &mut sources, &mut sink);
    let mut count = 0usize;
    let mut loaded = load_sources_with(sources, &files, options, sink, |_| count += 1);
    require_something(&mut loaded, &files, count);
    loaded
}

/// A run over paths that read no object and no `.pipe` file is an error, as `kubectl
/// apply -f` says "no objects passed to apply": an empty directory or a misnamed file must
/// not pass `check` as an empty, allow-everything cluster. (A session fed by a watcher may
/// start empty; only path-based runs call this.)
pub fn require_something(loaded: &mut Loaded, files: &[FileId], objects: usize) {
    let has_pipe = files
        .iter()
        .any(|f| loaded.sources.name(*f).ends_with(".pipe"));
    // Any other diagnostic (a skipped kind, an error) already says what the input held.
    let only_empty_files = loaded.diags.iter().all(|d| d.code == Code::EmptyInput);
    if objects > 0 || has_pipe || !only_empty_files {
        return;
    }
    let mut d = Diagnostic::error(Code::NothingToRead, "the inputs hold no Kubernetes object")
        .hint("name manifest files (.yaml, .yml, .json) or directories that hold them; a directory is read one level deep (`-R` reads the whole tree)");
    if let Some(last) = files.last() {
        let end = loaded.sources.text(*last).len();
        d = d.at(
            crate::source::Span::from_range(*last, end..end),
            "no object up to here",
        );
    }
    loaded.diags.push(d);
}

/// Builds the model from sources already in memory (tests, conformance cases).
pub fn load_sources(
    sources: Sources,
    files: &[crate::source::FileId],
    options: &BuildOptions,
    sink: Sink,
) -> Loaded {
    load_sources_with(sources, files, options, sink, |_| {})
}

/// [`load_sources`], showing every decoded object to `on_object` before it is modelled
/// (a compile session keeps them, to model again after a change).
pub fn load_sources_with(
    sources: Sources,
    files: &[crate::source::FileId],
    options: &BuildOptions,
    sink: Sink,
    mut on_object: impl FnMut(&Object),
) -> Loaded {
    let (pipe_files, manifests): (Vec<FileId>, Vec<FileId>) = files
        .iter()
        .partition(|f| sources.name(**f).ends_with(".pipe"));
    // Objects are modelled as they are decoded, so they are never all in memory at once.
    build(sources, &pipe_files, options, sink, |sources, sink, add| {
        let mut mismatched = Vec::new();
        frontend::for_each_object(sources, &manifests, sink, |mut obj| {
            // `kubectl apply -n NS`: a namespaced object that names no namespace is in NS;
            // one that names another namespace is refused, as kubectl refuses it.
            if let Some(ns) = &options.default_namespace {
                if obj.body.namespaced() {
                    let meta = obj.body.metadata_mut();
                    match &meta.namespace {
                        None => meta.namespace = Some(ns.clone()),
                        Some(own) if own != ns => {
                            mismatched.push((obj.span, own.clone()));
                            return;
                        }
                        Some(_) => {}
                    }
                }
            }
            on_object(&obj);
            add.add(obj)
        });
        if let Some(ns) = &options.default_namespace {
            for (span, own) in mismatched {
                let at = sources.locate(span, &FieldPath::parse("metadata.namespace"));
                sink.push(
                    Diagnostic::error(
                        crate::diag::Code::NamespaceMismatch,
                        format!("the object's namespace `{own}` is not the `-n` namespace `{ns}`"),
                    )
                    .at(at, "another namespace")
                    .hint(format!(
                        "kubectl refuses this too; drop `metadata.namespace`, or run without `-n {ns}`"
                    )),
                );
            }
        }
    })
}

/// Models objects decoded earlier (their spans point into `sources`) and the `.pipe`
/// files `pipe_files`: what a compile session does after a change. `objects` pairs each
/// object with what modelling it gave before, if anything ([`ClusterBuilder::add_remembered`]);
/// `remember` receives, by the object's position in `objects`, what to remember of each
/// object modelled anew.
pub fn load_remembered<'o>(
    sources: Sources,
    objects: impl Iterator<Item = (Cow<'o, Object>, Option<&'o Modelled>)>,
    pipe_files: &[FileId],
    options: &BuildOptions,
    mut remember: impl FnMut(usize, Modelled),
) -> Loaded {
    build(
        sources,
        pipe_files,
        options,
        Sink::default(),
        |_, _, add| {
            for (i, (o, memo)) in objects.enumerate() {
                if let Some(m) = add.add_remembered(o, memo) {
                    remember(i, m);
                }
            }
        },
    )
}

/// The model stage: `feed` hands every object to the builder; then the `.pipe` program
/// joins the admin tier and the diagnostics are put in file order.
fn build<'o>(
    sources: Sources,
    pipe_files: &[FileId],
    options: &BuildOptions,
    mut sink: Sink,
    feed: impl FnOnce(&Sources, &mut Sink, &mut ClusterBuilder<'_, 'o>),
) -> Loaded {
    // The model's diagnostics come after the frontend's, as if the stages ran one by one.
    let mut model_sink = Sink::default();
    let mut builder = ClusterBuilder::new(&sources, options, &mut model_sink);
    feed(&sources, &mut sink, &mut builder);
    let mut cluster = builder.finish();
    sink.diags.append(&mut model_sink.diags);
    let mut sources = sources;
    let pipe = load_pipe(&mut sources, pipe_files);
    if let Some(program) = &pipe.program {
        cluster
            .admin_policies
            .extend(model::pipe::program_to_admin_policies(program));
        cluster
            .admin_policies
            .sort_by(|a, b| (a.tier, a.priority, &a.name).cmp(&(b.tier, b.priority, &b.name)));
    }
    sink.diags.extend(model::pipe::priority_clashes(
        &cluster.admin_policies,
        &sources,
    ));
    let mut diags = sink.diags;
    if options.allow_ignored_policies {
        for d in diags
            .iter_mut()
            .filter(|d| d.code == crate::diag::Code::UnenforcedPolicy)
        {
            d.severity = crate::diag::Severity::Warning;
            d.hints.retain(|h| !h.contains("--allow-ignored-policies"));
            d.hints.push(
                "skipped: `--allow-ignored-policies` is set, so verdicts allow more than the cluster does".into(),
            );
        }
    }
    // Stages check kinds in their own order (services after pods, for example); users
    // read diagnostics in file order.
    pipec_source::sort(&mut diags);
    Loaded {
        sources,
        cluster,
        diags,
        pipe,
    }
}

/// Parses and resolves the `.pipe` files of a run. Includes are read from disk relative to
/// the including file (this and `frontend::read_inputs` are the compiler's only reads) and
/// join `sources`, the one file set of the run, which the program's spans point into.
fn load_pipe(sources: &mut Sources, files: &[FileId]) -> PipeInput {
    let mut input = PipeInput::default();
    if files.is_empty() {
        return input;
    }
    let mut loader = |path: &str| {
        let bytes = frontend::read_regular_file(std::path::Path::new(path))?;
        String::from_utf8(bytes).map_err(|_| "not UTF-8 text".to_string())
    };
    match policy_lang::resolve(sources.files_mut(), files, &mut loader) {
        Ok(mut program) => {
            input.diags = std::mem::take(&mut program.warnings);
            input.program = Some(program);
        }
        Err(diags) => input.diags = diags,
    }
    input
}

/// Builds the model from in-memory text, one `(name, text)` per file.
pub fn load_texts(texts: &[(&str, &str)], options: &BuildOptions) -> Loaded {
    let mut sources = Sources::new();
    let files: Vec<_> = texts.iter().map(|(n, t)| sources.add(*n, *t)).collect();
    load_sources(sources, &files, options, Sink::default())
}
