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
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// How long after its last modification a file's metadata is trusted to stand for its text:
/// a write within the file system's timestamp granularity of the read could leave size and
/// times as they were. Until then the file is read at every look.
const SETTLE: Duration = Duration::from_secs(1);

/// A file's metadata when its text was read, and when that was. Reading every file at
/// every look cost pipecd about 5 ms a step on a directory of 1,600 manifests; a `stat` of
/// each is a tenth of that.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified: SystemTime,
    inode: u64,
    /// The inode's change time, in nanoseconds: a write that restored the modification
    /// time still moves it.
    changed: i128,
    read_at: SystemTime,
}

impl Stamp {
    /// The stamp of a file read at `read_at`, from its metadata taken before the read.
    fn of(meta: &std::fs::Metadata, read_at: SystemTime) -> Option<Stamp> {
        Some(Stamp {
            len: meta.len(),
            modified: meta.modified().ok()?,
            inode: meta.ino(),
            changed: i128::from(meta.ctime()) * 1_000_000_000 + i128::from(meta.ctime_nsec()),
            read_at,
        })
    }

    /// Whether a file whose metadata is now `now` still holds the text read at `self`.
    fn holds(&self, now: &Stamp) -> bool {
        let same = (self.len, self.modified, self.inode, self.changed)
            == (now.len, now.modified, now.inode, now.changed);
        let settled = self
            .modified
            .checked_add(SETTLE)
            .is_some_and(|t| t <= self.read_at);
        same && settled
    }
}

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
    /// The file's metadata when the text was read.
    stamp: Option<Stamp>,
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
    /// Files read; the others' metadata showed them unchanged since they were read.
    pub read: usize,
}

/// A watched manifests directory and what the session holds of each file.
#[derive(Debug)]
pub struct ManifestDir {
    dir: PathBuf,
    /// The text of each file the session holds, the keys of its objects, and the file's
    /// metadata when that text was read.
    applied: BTreeMap<PathBuf, (String, Vec<ObjectKey>, Option<Stamp>)>,
    /// The last text seen of files that did not decode, so that they are reported once per
    /// change rather than on every look, with the file's metadata then.
    rejected: BTreeMap<PathBuf, (String, Option<Stamp>)>,
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
            .filter_map(|e| e.ok())
            // The entry's own type needs no `stat` of the file on most file systems; a
            // link is followed, as a path's `is_file` would.
            .filter(|e| match e.file_type() {
                Ok(t) if t.is_symlink() => e.path().is_file(),
                Ok(t) => t.is_file(),
                Err(_) => false,
            })
            .map(|e| e.path())
            .filter(|p| is_manifest(p) || is_pipe(p))
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
            // The time is taken before the metadata, and both before the read: a write
            // after them shows in the next look's metadata.
            let read_at = SystemTime::now();
            let stamp = std::fs::metadata(path)
                .ok()
                .and_then(|m| Stamp::of(&m, read_at));
            if stamp.is_some_and(|now| self.holds(path, &now)) {
                continue;
            }
            scan.read += 1;
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
            if let Some(applied) = self.applied.get_mut(path).filter(|a| a.0 == text) {
                applied.2 = stamp;
                continue;
            }
            if let Some(rejected) = self.rejected.get_mut(path).filter(|r| r.0 == text) {
                rejected.1 = stamp;
                continue;
            }
            match self.change(path, text.clone()) {
                Ok(mut c) => {
                    self.rejected.remove(path);
                    c.stamp = stamp;
                    scan.changes.push(c);
                }
                Err(message) => {
                    self.rejected.insert(path.clone(), (text, stamp));
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

    /// Whether the text the session holds of `path`, or last refused, was read from the
    /// file as it is now (`now`, its metadata).
    fn holds(&self, path: &Path, now: &Stamp) -> bool {
        let applied = self.applied.get(path).and_then(|a| a.2);
        let rejected = self.rejected.get(path).and_then(|r| r.1);
        [applied, rejected]
            .into_iter()
            .flatten()
            .any(|then| then.holds(now))
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
                stamp: None,
            });
        }
        let keys = object_keys(&source, &text)?;
        let old: &[ObjectKey] = self.applied.get(path).map_or(&[], |(_, k, _)| k);
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
            stamp: None,
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
                .map(|(_, keys, _)| keys.iter().cloned().map(Event::Delete).collect())
                .unwrap_or_default()
        };
        FileChange {
            path: path.to_path_buf(),
            events,
            keys: Vec::new(),
            text: None,
            stamp: None,
        }
    }

    /// Records that `change` is applied.
    pub fn applied(&mut self, change: FileChange) {
        match change.text {
            Some(t) => {
                self.applied
                    .insert(change.path, (t, change.keys, change.stamp));
            }
            None => {
                self.applied.remove(&change.path);
            }
        }
    }

    /// Records that the session refused `change`: it is reported until the file changes.
    pub fn refused(&mut self, change: &FileChange) {
        if let Some(t) = &change.text {
            self.rejected
                .insert(change.path.clone(), (t.clone(), change.stamp));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A fresh directory of its own under the system's temporary directory.
    fn temp_dir() -> PathBuf {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("pipecd-source-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        dir
    }

    fn namespace(name: &str) -> String {
        format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n")
    }

    /// Writes `text` to `path` with a modification time `age` in the past.
    fn write_aged(path: &Path, text: &str, age: Duration) {
        std::fs::write(path, text).expect("write");
        set_modified(path, SystemTime::now() - age);
    }

    fn set_modified(path: &Path, t: SystemTime) {
        let f = std::fs::File::options()
            .write(true)
            .open(path)
            .expect("open");
        f.set_modified(t).expect("set the modification time");
    }

    /// Scans and records every change as applied; returns (files read, changes).
    fn look(dir: &mut ManifestDir) -> (usize, usize) {
        let scan = dir.scan().expect("scan");
        let changes = scan.changes.len();
        for c in scan.changes {
            dir.applied(c);
        }
        (scan.read, changes)
    }

    #[test]
    fn a_settled_file_is_read_once_and_then_known_by_its_metadata() {
        let root = temp_dir();
        write_aged(
            &root.join("a.yaml"),
            &namespace("aa"),
            Duration::from_secs(10),
        );
        let mut dir = ManifestDir::new(&root);
        assert_eq!(look(&mut dir), (1, 1));
        assert_eq!(look(&mut dir), (0, 0));
        // A new file is read; the settled one still is not.
        write_aged(
            &root.join("b.yaml"),
            &namespace("bb"),
            Duration::from_secs(10),
        );
        assert_eq!(look(&mut dir), (1, 1));
        std::fs::remove_dir_all(&root).expect("clean up");
    }

    #[test]
    fn a_fresh_file_is_read_at_every_look_so_a_quick_rewrite_is_seen() {
        let root = temp_dir();
        let path = root.join("a.yaml");
        std::fs::write(&path, namespace("aa")).expect("write");
        let mut dir = ManifestDir::new(&root);
        assert_eq!(look(&mut dir), (1, 1));
        // Within the settling time, a rewrite of the same length (which may keep the
        // modification time on a coarse clock) is still found.
        assert_eq!(look(&mut dir), (1, 0));
        std::fs::write(&path, namespace("bb")).expect("rewrite");
        assert_eq!(look(&mut dir), (1, 1));
        std::fs::remove_dir_all(&root).expect("clean up");
    }

    #[test]
    fn a_rewrite_that_puts_the_modification_time_back_is_seen() {
        let root = temp_dir();
        let path = root.join("a.yaml");
        let then = SystemTime::now() - Duration::from_secs(10);
        std::fs::write(&path, namespace("aa")).expect("write");
        set_modified(&path, then);
        let mut dir = ManifestDir::new(&root);
        assert_eq!(look(&mut dir), (1, 1));
        std::fs::write(&path, namespace("bb")).expect("rewrite");
        set_modified(&path, then);
        let scan = dir.scan().expect("scan");
        assert_eq!(scan.read, 1, "the inode's change time moved");
        assert_eq!(scan.changes.len(), 1);
        assert_eq!(scan.changes[0].text(), Some(namespace("bb").as_str()));
        std::fs::remove_dir_all(&root).expect("clean up");
    }

    #[test]
    fn a_refused_settled_file_is_neither_read_nor_reported_again() {
        let root = temp_dir();
        write_aged(&root.join("bad.yaml"), "kind: [", Duration::from_secs(10));
        let mut dir = ManifestDir::new(&root);
        let scan = dir.scan().expect("scan");
        assert_eq!((scan.read, scan.bad.len()), (1, 1));
        let scan = dir.scan().expect("scan");
        assert_eq!((scan.read, scan.bad.len()), (0, 0));
        std::fs::remove_dir_all(&root).expect("clean up");
    }
}
