//! What survives a restart besides the pinned maps: the identity numbers the session handed
//! out, so that an identity in use keeps its number (peers and in-flight packets hold it),
//! the pods the CNI wired, and the SA removals that wait for a rotation window to pass.
//!
//! Every file is written whole and atomically: a temporary file in the same directory is
//! written, flushed to disk, renamed over the old file, and the directory is flushed, so
//! that a `kill -9` or a power loss at any point leaves either the old or the new content,
//! never a torn file.

use pipec::model::{IdentityPins, Labels};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// The state directory.
#[derive(Clone, Debug)]
pub struct StateDir(PathBuf);

/// The file form of [`IdentityPins`] (label sets cannot be JSON object keys).
#[derive(Serialize, Deserialize)]
struct PinsFile {
    numbers: Vec<(Labels, u32)>,
    retired: BTreeSet<u32>,
}

/// An inbound SA whose removal waits for the end of its rotation window. It names the SA
/// only (no key material), and the deadline is wall-clock time, as a monotonic instant
/// means nothing to the next process.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PendingRemoval {
    /// The peer node.
    pub peer: String,
    /// The SA's SPI.
    pub spi: u32,
    /// When the SA is to go, in milliseconds since the Unix epoch.
    pub due_unix_ms: u64,
}

impl StateDir {
    /// Creates the directory (mode 0700) if needed.
    pub fn open(dir: &Path) -> anyhow::Result<StateDir> {
        use std::os::unix::fs::DirBuilderExt as _;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| anyhow::anyhow!("creating --state-dir {}: {e}", dir.display()))?;
        Ok(StateDir(dir.to_path_buf()))
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }

    fn pins_path(&self) -> PathBuf {
        self.0.join("identity-pins.json")
    }

    /// Reads a state file; `None` when it does not exist (a first start).
    fn read(&self, name: &str) -> anyhow::Result<Option<String>> {
        let path = self.0.join(name);
        match std::fs::read_to_string(&path) {
            Ok(t) => Ok(Some(t)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => anyhow::bail!("reading {}: {e}", path.display()),
        }
    }

    /// Replaces a state file atomically and durably (see the module documentation).
    fn write_atomic(&self, name: &str, bytes: &[u8]) -> anyhow::Result<()> {
        use std::os::unix::fs::OpenOptionsExt as _;
        let path = self.0.join(name);
        let tmp = self.0.join(format!(".{name}.tmp"));
        let context =
            |what: &str, e: std::io::Error| anyhow::anyhow!("{what} {}: {e}", path.display());
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| context("writing", e))?;
        f.write_all(bytes).map_err(|e| context("writing", e))?;
        // The data must be on disk before the rename makes it the file: otherwise a power
        // loss after the rename can leave an empty or partial file under the real name.
        f.sync_all().map_err(|e| context("flushing", e))?;
        drop(f);
        std::fs::rename(&tmp, &path).map_err(|e| context("renaming onto", e))?;
        // The rename is a change of the directory, durable only once the directory is.
        std::fs::File::open(&self.0)
            .and_then(|d| d.sync_all())
            .map_err(|e| context("flushing the directory of", e))?;
        Ok(())
    }

    /// The pins written by the last run, or none.
    pub fn read_pins(&self) -> anyhow::Result<IdentityPins> {
        let Some(text) = self.read("identity-pins.json")? else {
            return Ok(IdentityPins::default());
        };
        let f: PinsFile = serde_json::from_str(&text).map_err(|e| {
            anyhow::anyhow!("{} is not a pins file: {e}", self.pins_path().display())
        })?;
        Ok(IdentityPins {
            numbers: f.numbers.into_iter().collect(),
            retired: f.retired,
        })
    }

    /// Writes the pins atomically, so that a kill at any point leaves either the old or the
    /// new pins.
    pub fn write_pins(&self, pins: &IdentityPins) -> anyhow::Result<()> {
        let f = PinsFile {
            numbers: pins.numbers.iter().map(|(l, n)| (l.clone(), *n)).collect(),
            retired: pins.retired.clone(),
        };
        self.write_atomic("identity-pins.json", &serde_json::to_vec(&f)?)
    }
}

impl StateDir {
    /// The pod attachments the CNI reported and the last run kept, or none.
    pub fn read_attachments(&self) -> anyhow::Result<Vec<crate::cni::Attachment>> {
        match self.read("attachments.json")? {
            Some(t) => serde_json::from_str(&t).map_err(|e| {
                anyhow::anyhow!(
                    "{} is not an attachments file: {e}",
                    self.0.join("attachments.json").display()
                )
            }),
            None => Ok(Vec::new()),
        }
    }

    /// Writes the attachments atomically, as [`StateDir::write_pins`] does.
    pub fn write_attachments(&self, list: &[crate::cni::Attachment]) -> anyhow::Result<()> {
        self.write_atomic("attachments.json", &serde_json::to_vec(list)?)
    }

    /// The SA removals the last run had not carried out yet, or none.
    pub fn read_pending(&self) -> anyhow::Result<Vec<PendingRemoval>> {
        match self.read("pending-removals.json")? {
            Some(t) => serde_json::from_str(&t).map_err(|e| {
                anyhow::anyhow!(
                    "{} is not a pending-removals file: {e}",
                    self.0.join("pending-removals.json").display()
                )
            }),
            None => Ok(Vec::new()),
        }
    }

    /// Writes the pending SA removals atomically, as [`StateDir::write_pins`] does.
    pub fn write_pending(&self, list: &[PendingRemoval]) -> anyhow::Result<()> {
        self.write_atomic("pending-removals.json", &serde_json::to_vec(list)?)
    }
}
