//! What survives a restart besides the pinned maps: the identity numbers the session handed
//! out, so that an identity in use keeps its number (peers and in-flight packets hold it).

use pipec::model::{IdentityPins, Labels};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
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

    fn pins_path(&self) -> PathBuf {
        self.0.join("identity-pins.json")
    }

    /// The pins written by the last run, or none.
    pub fn read_pins(&self) -> anyhow::Result<IdentityPins> {
        let path = self.pins_path();
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(IdentityPins::default())
            }
            Err(e) => anyhow::bail!("reading {}: {e}", path.display()),
        };
        let f: PinsFile = serde_json::from_str(&text)
            .map_err(|e| anyhow::anyhow!("{} is not a pins file: {e}", path.display()))?;
        Ok(IdentityPins {
            numbers: f.numbers.into_iter().collect(),
            retired: f.retired,
        })
    }

    /// Writes the pins atomically (a temporary file renamed over the old one), so that a
    /// kill at any point leaves either the old or the new pins.
    pub fn write_pins(&self, pins: &IdentityPins) -> anyhow::Result<()> {
        let f = PinsFile {
            numbers: pins.numbers.iter().map(|(l, n)| (l.clone(), *n)).collect(),
            retired: pins.retired.clone(),
        };
        let tmp = self.0.join(".identity-pins.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec(&f)?)?;
        std::fs::rename(&tmp, self.pins_path())?;
        Ok(())
    }
}

impl StateDir {
    fn attachments_path(&self) -> PathBuf {
        self.0.join("attachments.json")
    }

    /// The pod attachments the CNI reported and the last run kept, or none.
    pub fn read_attachments(&self) -> anyhow::Result<Vec<crate::cni::Attachment>> {
        let path = self.attachments_path();
        match std::fs::read_to_string(&path) {
            Ok(t) => serde_json::from_str(&t)
                .map_err(|e| anyhow::anyhow!("{} is not an attachments file: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => anyhow::bail!("reading {}: {e}", path.display()),
        }
    }

    /// Writes the attachments atomically, as [`StateDir::write_pins`] does.
    pub fn write_attachments(&self, list: &[crate::cni::Attachment]) -> anyhow::Result<()> {
        let tmp = self.0.join(".attachments.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec(list)?)?;
        std::fs::rename(&tmp, self.attachments_path())?;
        Ok(())
    }
}
