//! The set of source files of one compilation, and the loader that reads includes.
//!
//! The crate does no I/O of its own: the caller adds the root files to a [`SourceSet`] and
//! hands [`crate::resolve`] a [`Loader`] that reads the files named by `include`. The set
//! itself is the shared source layer's (`pipec-source`).

pub use pipec_source::{LineCol, SourceFile, SourceSet};
use std::collections::BTreeMap;

/// Reads the files named by `include` statements.
///
/// The path given is already joined to the directory of the including file and
/// normalised (no `.` or `..` parts where they can be removed). The loader returns the
/// text, or an error message that becomes part of a diagnostic.
pub trait Loader {
    /// Reads one file.
    fn load(&mut self, path: &str) -> Result<String, String>;
}

impl<F: FnMut(&str) -> Result<String, String>> Loader for F {
    fn load(&mut self, path: &str) -> Result<String, String> {
        self(path)
    }
}

/// A loader over files held in memory, for tests and for tools that already read them.
#[derive(Clone, Debug, Default)]
pub struct MemoryLoader {
    /// The files by path.
    pub files: BTreeMap<String, String>,
}

impl MemoryLoader {
    /// Makes a loader over the given `(path, text)` pairs.
    pub fn new<P: Into<String>, T: Into<String>>(files: impl IntoIterator<Item = (P, T)>) -> Self {
        MemoryLoader {
            files: files
                .into_iter()
                .map(|(p, t)| (p.into(), t.into()))
                .collect(),
        }
    }
}

impl Loader for MemoryLoader {
    fn load(&mut self, path: &str) -> Result<String, String> {
        self.files
            .get(path)
            .cloned()
            .ok_or_else(|| "no such file".to_string())
    }
}

/// A loader that refuses every include, for single-file checks.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoIncludes;

impl Loader for NoIncludes {
    fn load(&mut self, _path: &str) -> Result<String, String> {
        Err("includes are not available here".to_string())
    }
}

/// Joins an include path to the directory of the including file, lexically.
///
/// `a/b.pipe` including `../c/d.pipe` gives `c/d.pipe`; an absolute include stays as it is.
pub fn join_include(including: &str, include: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    let absolute;
    if include.starts_with('/') {
        absolute = true;
    } else {
        absolute = including.starts_with('/');
        parts.extend(including.split('/').filter(|p| !p.is_empty()));
        parts.pop();
    }
    for part in include.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if matches!(parts.last(), Some(p) if *p != "..") {
                    parts.pop();
                } else if !absolute {
                    parts.push("..");
                }
            }
            p => parts.push(p),
        }
    }
    let joined = parts.join("/");
    if absolute {
        format!("/{joined}")
    } else {
        joined
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_is_lexical() {
        assert_eq!(join_include("a/b.pipe", "c.pipe"), "a/c.pipe");
        assert_eq!(join_include("a/b.pipe", "../c/d.pipe"), "c/d.pipe");
        assert_eq!(join_include("b.pipe", "../c.pipe"), "../c.pipe");
        assert_eq!(join_include("/x/b.pipe", "./c.pipe"), "/x/c.pipe");
        assert_eq!(join_include("a/b.pipe", "/etc/c.pipe"), "/etc/c.pipe");
    }
}
