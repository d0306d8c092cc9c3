//! The manifests directory source: what changed in a directory since the last look, as
//! session events per file.
//!
//! A file is the unit of change: when a manifest file now reads differently, its objects are
//! upserted and the objects that left it are deleted; a removed file deletes every object it
//! held. A file whose text does not decode is reported and changes nothing, so the last good
//! state of its objects stays applied until the file is fixed. `.pipe` files are policy
//! programs and become `PipeUpsert`/`PipeDelete`.

use pipec::session::{object_keys, Event, ObjectKey};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// One file's change, ready to apply.
#[derive(Clone, Debug)]
pub struct FileChange {
    /// The file.
    pub path: PathBuf,
    /// The events that bring the session to the file's new text.
    pub events: Vec<Event>,
    /// The keys the file holds once the events are applied.
    keys: Vec<ObjectKey>,
    /// The text, `None` when the file was removed.
    text: Option<String>,
}

impl FileChange {
    /// The file's new text (`None` for a removal).
    pub fn text(&self) -> Option<&str> {
        self.text.as_deref()
    }
}

/// A file whose text cannot be read or decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadFile {
    /// The file.
    pub path: PathBuf,
    /// The rendered diagnostics (or the I/O error).
    pub message: String,
}

/// What one look at the directory found.
#[derive(Debug, Default)]
pub struct Scan {
    /// Files whose change can be applied.
    pub changes: Vec<FileChange>,
    /// Files that changed but do not decode.
    pub bad: Vec<BadFile>,
}

/// A watched manifests directory and what the session holds of each file.
#[derive(Debug)]
pub struct ManifestDir {
    dir: PathBuf,
    /// The text of each file the session holds, and the keys of its objects.
    applied: BTreeMap<PathBuf, (String, Vec<ObjectKey>)>,
    /// The last text seen of files that did not decode, so that they are reported once per
    /// change rather than on every look.
    rejected: BTreeMap<PathBuf, String>,
}

fn is_manifest(p: &Path) -> bool {
    p.extension()
        .is_some_and(|x| x == "yaml" || x == "yml" || x == "json")
}

fn is_pipe(p: &Path) -> bool {
    p.extension().is_some_and(|x| x == "pipe")
}

impl ManifestDir {
    /// A directory none of whose files is applied yet.
    pub fn new(dir: &Path) -> ManifestDir {
        ManifestDir {
            dir: dir.to_path_buf(),
            applied: BTreeMap::new(),
            rejected: BTreeMap::new(),
        }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The files of the directory (not recursive, as `kubectl apply -f DIR`), in name order.
    fn list(&self) -> std::io::Result<Vec<PathBuf>> {
        let mut out: Vec<PathBuf> = std::fs::read_dir(&self.dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && (is_manifest(p) || is_pipe(p)))
            // Editors write `.name.swp` and the like; hidden files are never inputs.
            .filter(|p| {
                !p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with('.'))
            })
            .collect();
        out.sort();
        Ok(out)
    }

    /// Compares the directory with what is applied.
    pub fn scan(&mut self) -> std::io::Result<Scan> {
        let files = self.list()?;
        let present: BTreeSet<&PathBuf> = files.iter().collect();
        let mut scan = Scan::default();
        for path in &files {
            let text = match std::fs::read_to_string(path) {
                Ok(t) => t,
                Err(e) => {
                    scan.bad.push(BadFile {
                        path: path.clone(),
                        message: format!("cannot read {}: {e}", path.display()),
                    });
                    continue;
                }
            };
            if self.applied.get(path).is_some_and(|(t, _)| *t == text)
                || self.rejected.get(path) == Some(&text)
            {
                continue;
            }
            match self.change(path, text.clone()) {
                Ok(c) => {
                    self.rejected.remove(path);
                    scan.changes.push(c);
                }
                Err(message) => {
                    self.rejected.insert(path.clone(), text);
                    scan.bad.push(BadFile {
                        path: path.clone(),
                        message,
                    });
                }
            }
        }
        let gone: Vec<PathBuf> = self
            .applied
            .keys()
            .filter(|p| !present.contains(p))
            .cloned()
            .collect();
        for path in gone {
            scan.changes.push(self.removal(&path));
        }
        self.rejected.retain(|p, _| present.contains(p));
        Ok(scan)
    }

    fn change(&self, path: &Path, text: String) -> Result<FileChange, String> {
        let source = path.display().to_string();
        if is_pipe(path) {
            return Ok(FileChange {
                path: path.to_path_buf(),
                events: vec![Event::PipeUpsert {
                    path: source,
                    text: text.clone(),
                }],
                keys: Vec::new(),
                text: Some(text),
            });
        }
        let keys = object_keys(&source, &text)?;
        let old: &[ObjectKey] = self.applied.get(path).map_or(&[], |(_, k)| k);
        let mut events: Vec<Event> = old
            .iter()
            .filter(|k| keys.binary_search(k).is_err())
            .cloned()
            .map(Event::Delete)
            .collect();
        if !keys.is_empty() {
            events.push(Event::Upsert {
                source,
                text: text.clone(),
            });
        }
        Ok(FileChange {
            path: path.to_path_buf(),
            events,
            keys,
            text: Some(text),
        })
    }

    fn removal(&self, path: &Path) -> FileChange {
        let events = if is_pipe(path) {
            vec![Event::PipeDelete {
                path: path.display().to_string(),
            }]
        } else {
            self.applied
                .get(path)
                .map(|(_, keys)| keys.iter().cloned().map(Event::Delete).collect())
                .unwrap_or_default()
        };
        FileChange {
            path: path.to_path_buf(),
            events,
            keys: Vec::new(),
            text: None,
        }
    }

    /// Records that `change` is applied.
    pub fn applied(&mut self, change: FileChange) {
        match change.text {
            Some(t) => {
                self.applied.insert(change.path, (t, change.keys));
            }
            None => {
                self.applied.remove(&change.path);
            }
        }
    }

    /// Records that the session refused `change`: it is reported until the file changes.
    pub fn refused(&mut self, change: &FileChange) {
        if let Some(t) = &change.text {
            self.rejected.insert(change.path.clone(), t.clone());
        }
    }
}
