//! Source files and spans.
//!
//! Every input file is kept in a [`Sources`] set for the whole run, so that any later stage
//! can point back at the text that caused a decision. Spans are byte ranges into one file.
//! Locations inside an object (a rule, a field) are not stored eagerly: they are found on
//! demand with [`Sources::locate`], which re-reads only the object's own text. This keeps
//! the fast path (150k pods from one JSON file) free of per-field bookkeeping.
//!
//! File ids, spans and the file set itself are the shared source layer's (`pipec-source`),
//! which policy-lang uses too.

use codespan_reporting::files::Files;
use pipec_source::yaml;
pub use pipec_source::{FieldPath, FileId, PathSeg, SourceSet, Span};

/// A line and column, both counted from 1, as editors show them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct LineCol {
    /// Line number from 1.
    pub line: usize,
    /// Column number from 1, in characters.
    pub column: usize,
}

/// All source files of one run.
#[derive(Default)]
pub struct Sources {
    files: SourceSet,
}

impl Sources {
    /// An empty set.
    pub fn new() -> Sources {
        Sources::default()
    }

    /// Adds a file and returns its id.
    pub fn add(&mut self, name: impl Into<String>, text: impl Into<String>) -> FileId {
        self.files.add(name, text)
    }

    /// The id of the file with this name, if it was added.
    pub fn find(&self, name: &str) -> Option<FileId> {
        self.files.find(name)
    }

    /// How many files the set holds.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// True when no file was added.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The file's text.
    pub fn text(&self, file: FileId) -> &str {
        self.files.get(file).map_or("", |f| f.text.as_str())
    }

    /// The file's name as given on the command line.
    pub fn name(&self, file: FileId) -> &str {
        self.files.name(file)
    }

    /// The file set, which diagnostics are rendered from.
    pub fn files(&self) -> &SourceSet {
        &self.files
    }

    /// The file set, for policy-lang to add the `.pipe` includes it reads.
    pub fn files_mut(&mut self) -> &mut SourceSet {
        &mut self.files
    }

    /// The line and column of a byte offset.
    pub fn line_col(&self, file: FileId, offset: usize) -> LineCol {
        match self.files.location(file, offset) {
            Ok(loc) => LineCol {
                line: loc.line_number,
                column: loc.column_number,
            },
            Err(_) => LineCol { line: 0, column: 0 },
        }
    }

    /// `file:line:column` of the start of a span.
    pub fn position(&self, span: Span) -> String {
        let lc = self.line_col(span.file, span.start as usize);
        format!("{}:{}:{}", self.name(span.file), lc.line, lc.column)
    }

    /// `file:line` of the start of a span, the short form used in tables.
    pub fn file_line(&self, span: Span) -> String {
        let lc = self.line_col(span.file, span.start as usize);
        format!("{}:{}", self.name(span.file), lc.line)
    }

    /// Finds the span of the field at `path` inside the object that `object` covers.
    ///
    /// Returns the deepest part of the path that exists, so a missing field points at its
    /// parent, and the whole object when the text cannot be read again.
    pub fn locate(&self, object: Span, path: &FieldPath) -> Span {
        let text = self.text(object.file);
        let Some(slice) = text.get(object.range()) else {
            return object;
        };
        match yaml::locate(slice, path) {
            Some(r) => Span::from_range(
                object.file,
                object.start as usize + r.start..object.start as usize + r.end,
            ),
            None => object,
        }
    }

    /// True when the field at `path` is written in the object's text.
    pub fn exists(&self, object: Span, path: &FieldPath) -> bool {
        let text = self.text(object.file);
        text.get(object.range())
            .is_some_and(|slice| yaml::exists(slice, path))
    }

    /// Like [`Sources::locate`], but when the path ends in a key that exists, the span of
    /// the key itself: the place for "this field is unknown, misplaced or missing a part".
    pub fn locate_key(&self, object: Span, path: &FieldPath) -> Span {
        let text = self.text(object.file);
        let Some(slice) = text.get(object.range()) else {
            return object;
        };
        match yaml::locate_key(slice, path) {
            Some(r) => Span::from_range(
                object.file,
                object.start as usize + r.start..object.start as usize + r.end,
            ),
            None => object,
        }
    }
}
