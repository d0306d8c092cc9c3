//! The set of source files of one run.
//!
//! The set does no I/O: its owner reads the files and adds their text.

use crate::span::{FileId, Span};
use codespan_reporting::files::{self, Files};
use std::ops::Range;

/// One source file: its name (a path, as the caller spelt it) and its text.
#[derive(Clone, Debug)]
pub struct SourceFile {
    /// The name shown in diagnostics; includes are resolved relative to it.
    pub name: String,
    /// The text of the file.
    pub text: String,
    line_starts: Vec<usize>,
}

/// All source files of one run, indexed by [`FileId`].
#[derive(Clone, Debug, Default)]
pub struct SourceSet {
    files: Vec<SourceFile>,
}

/// A line and column, both counted from 1, for `file:line:column` displays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LineCol {
    /// The line, from 1.
    pub line: u32,
    /// The column in characters, from 1.
    pub column: u32,
}

impl SourceSet {
    /// Makes an empty set.
    pub fn new() -> SourceSet {
        SourceSet::default()
    }

    /// Adds a file and returns its id.
    pub fn add(&mut self, name: impl Into<String>, text: impl Into<String>) -> FileId {
        let text = text.into();
        let line_starts = files::line_starts(&text).collect();
        let id = FileId(u32::try_from(self.files.len()).unwrap_or(u32::MAX));
        self.files.push(SourceFile {
            name: name.into(),
            text,
            line_starts,
        });
        id
    }

    /// The file with this id, if there is one.
    pub fn get(&self, id: FileId) -> Option<&SourceFile> {
        self.files.get(id.0 as usize)
    }

    /// The id of the file with this name, if it was added.
    pub fn find(&self, name: &str) -> Option<FileId> {
        self.files
            .iter()
            .position(|f| f.name == name)
            .and_then(|i| u32::try_from(i).ok())
            .map(FileId)
    }

    /// The name of a file, or `"<unknown>"`.
    pub fn name(&self, id: FileId) -> &str {
        self.get(id).map_or("<unknown>", |f| f.name.as_str())
    }

    /// The line and column where a span starts.
    pub fn line_col(&self, span: Span) -> LineCol {
        let Some(file) = self.get(span.file) else {
            return LineCol { line: 0, column: 0 };
        };
        let offset = (span.start as usize).min(file.text.len());
        let line = file.line_starts.partition_point(|&s| s <= offset).max(1) - 1;
        let start = file.line_starts[line];
        let column = file
            .text
            .get(start..offset)
            .map_or(0, |s| s.chars().count());
        LineCol {
            line: u32::try_from(line + 1).unwrap_or(u32::MAX),
            column: u32::try_from(column + 1).unwrap_or(u32::MAX),
        }
    }

    /// How many files the set holds.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// True when no file was added.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// The ids of every file, in the order they were added.
    pub fn ids(&self) -> impl Iterator<Item = FileId> + '_ {
        (0..self.files.len()).map(|i| FileId(u32::try_from(i).unwrap_or(u32::MAX)))
    }

    fn file(&self, id: FileId) -> Result<&SourceFile, files::Error> {
        self.get(id).ok_or(files::Error::FileMissing)
    }
}

impl<'a> Files<'a> for SourceSet {
    type FileId = FileId;
    type Name = &'a str;
    type Source = &'a str;

    fn name(&'a self, id: FileId) -> Result<&'a str, files::Error> {
        Ok(self.file(id)?.name.as_str())
    }

    fn source(&'a self, id: FileId) -> Result<&'a str, files::Error> {
        Ok(self.file(id)?.text.as_str())
    }

    fn line_index(&'a self, id: FileId, byte_index: usize) -> Result<usize, files::Error> {
        let file = self.file(id)?;
        Ok(file
            .line_starts
            .partition_point(|&s| s <= byte_index)
            .saturating_sub(1))
    }

    fn line_range(&'a self, id: FileId, line_index: usize) -> Result<Range<usize>, files::Error> {
        let file = self.file(id)?;
        let start = *file
            .line_starts
            .get(line_index)
            .ok_or(files::Error::LineTooLarge {
                given: line_index,
                max: file.line_starts.len().saturating_sub(1),
            })?;
        let end = file
            .line_starts
            .get(line_index + 1)
            .copied()
            .unwrap_or(file.text.len());
        Ok(start..end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_from_one() {
        let mut set = SourceSet::new();
        let id = set.add("x", "ab\ncd");
        assert_eq!(
            set.line_col(Span::new(id, 4, 5)),
            LineCol { line: 2, column: 2 }
        );
    }
}
