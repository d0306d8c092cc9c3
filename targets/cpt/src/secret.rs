//! Reading Cilium's `cilium-ipsec-keys` Secret (and the Nodes' boot IDs).
//!
//! A compile session reads them from its model ([`keys_from_cluster`]: the frontend keeps
//! Secrets with redacted values); [`read_keys`] reads manifest files directly, looking only
//! for `kind: Secret` named `cilium-ipsec-keys` in `kube-system` and for `kind: Node` (whose
//! `status.nodeInfo.bootID` Cilium mixes into per-pair keys).
//!
//! Key lines follow Cilium's `LoadIPSecKeys`: `key-id algorithm key-hex icv-bits`, where a
//! trailing `+` on the key id asks for per-node-pair keys. Only the AEAD form with
//! `rfc4106(gcm(aes))`, a 20-byte key (16 key + 4 salt) and a 128-bit ICV is accepted,
//! because that is the AES-GCM-128 the cnxk CPT runs inline with a 16-byte ICV.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::Serialize;
use serde_yaml::Value;

use crate::diag::{CptCode, CptDiagnostic};
use crate::key::{AeadKey, SecretBytes};

/// The Secret's name Cilium reads.
pub(crate) const SECRET_NAME: &str = "cilium-ipsec-keys";
/// The Secret's namespace.
pub(crate) const SECRET_NAMESPACE: &str = "kube-system";
/// The only algorithm accepted.
pub(crate) const ALGORITHM: &str = "rfc4106(gcm(aes))";
/// Key plus salt length of AES-GCM-128 in bytes.
pub(crate) const KEY_LEN: usize = 20;

/// One key of the Secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GlobalKey {
    /// The key id, used as the SPI (1..15).
    pub spi: u8,
    /// Whether per-node-pair keys are derived from it (the `+` suffix).
    pub per_pair: bool,
    /// ICV length in bytes.
    pub icv_len: u8,
    /// The pre-shared key and salt; redacted when printed.
    pub key: AeadKey,
    /// `file:line` of the key line.
    pub at: String,
}

/// What the Secret and the Nodes give the CPT target.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct KeySet {
    /// Keys by SPI.
    pub keys: BTreeMap<u8, GlobalKey>,
    /// The SPI in use: the last line of the Secret, as Cilium takes it.
    pub current: u8,
    /// Node boot IDs by node name (`status.nodeInfo.bootID`).
    pub boot_ids: BTreeMap<String, String>,
}

impl KeySet {
    /// The current key.
    pub fn current_key(&self) -> &GlobalKey {
        // `parse_keys` never builds a KeySet whose current SPI has no key.
        &self.keys[&self.current]
    }
}

/// Finds the `cilium-ipsec-keys` Secret and the Nodes' boot IDs in manifest files or
/// directories. `Ok(None)` when there is no such Secret.
pub fn read_keys(paths: &[PathBuf]) -> Result<Option<KeySet>, Vec<CptDiagnostic>> {
    let mut texts = Vec::new();
    let mut diags = Vec::new();
    for p in paths {
        collect(p, &mut texts, &mut diags);
    }
    if !diags.is_empty() {
        return Err(diags);
    }
    let refs: Vec<(&str, &str)> = texts
        .iter()
        .map(|(n, t)| (n.as_str(), t.as_str()))
        .collect();
    read_keys_from_texts(&refs)
}

fn collect(path: &Path, out: &mut Vec<(String, String)>, diags: &mut Vec<CptDiagnostic>) {
    if path.is_dir() {
        let mut entries: Vec<PathBuf> = match std::fs::read_dir(path) {
            Ok(rd) => rd.filter_map(|e| e.ok().map(|e| e.path())).collect(),
            Err(e) => {
                diags.push(CptDiagnostic::new(
                    CptCode::C0001,
                    path.display().to_string(),
                    e.to_string(),
                ));
                return;
            }
        };
        entries.sort();
        for e in entries {
            let manifest = e
                .extension()
                .is_some_and(|x| x == "yaml" || x == "yml" || x == "json");
            if e.is_dir() || manifest {
                collect(&e, out, diags);
            }
        }
        return;
    }
    match std::fs::read_to_string(path) {
        Ok(t) => out.push((path.display().to_string(), t)),
        Err(e) => diags.push(CptDiagnostic::new(
            CptCode::C0001,
            path.display().to_string(),
            e.to_string(),
        )),
    }
}

/// The YAML documents of a file, each with its first line (1-based).
fn documents(text: &str) -> Vec<(usize, String)> {
    let mut docs = Vec::new();
    let mut start = 1;
    let mut cur = String::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim_end() == "---" {
            docs.push((start, std::mem::take(&mut cur)));
            start = i + 2;
        } else {
            cur.push_str(line);
            cur.push('\n');
        }
    }
    docs.push((start, cur));
    docs
}

/// Like [`read_keys`], from texts already read: `(file name, text)` pairs.
pub fn read_keys_from_texts(texts: &[(&str, &str)]) -> Result<Option<KeySet>, Vec<CptDiagnostic>> {
    let mut secrets = Vec::new();
    let mut boot_ids = BTreeMap::new();
    for (name, text) in texts {
        for (line, doc) in documents(text) {
            // Documents the frontend cannot parse are the frontend's to report.
            let Ok(v) = serde_yaml::from_str::<Value>(&doc) else {
                continue;
            };
            let kind = v.get("kind").and_then(Value::as_str);
            let meta = |k: &str| {
                v.get("metadata")
                    .and_then(|m| m.get(k))
                    .and_then(Value::as_str)
            };
            match kind {
                Some("Node") => {
                    let boot = v
                        .get("status")
                        .and_then(|s| s.get("nodeInfo"))
                        .and_then(|n| n.get("bootID"))
                        .and_then(Value::as_str);
                    if let (Some(n), Some(b)) = (meta("name"), boot) {
                        boot_ids.insert(n.to_string(), b.to_string());
                    }
                }
                Some("Secret")
                    if meta("name") == Some(SECRET_NAME)
                        && meta("namespace").unwrap_or("default") == SECRET_NAMESPACE =>
                {
                    secrets.push((format!("{name}:{line}"), doc_line_of_keys(&doc, line), v));
                }
                _ => {}
            }
        }
    }
    match secrets.len() {
        0 => Ok(None),
        1 => {
            let (at, keys_line, v) = &secrets[0];
            let text = secret_keys_text(at, v)?;
            let file = at.rsplit_once(':').map_or(at.as_str(), |(f, _)| f);
            let keys = parse_keys(file, *keys_line, &text)?;
            Ok(Some(KeySet {
                current: keys.1,
                keys: keys.0,
                boot_ids,
            }))
        }
        _ => Err(secrets[1..]
            .iter()
            .map(|(at, _, _)| {
                CptDiagnostic::new(
                    CptCode::C0006,
                    at.clone(),
                    format!("a second {SECRET_NAMESPACE}/{SECRET_NAME} Secret"),
                )
            })
            .collect()),
    }
}

/// Finds the `cilium-ipsec-keys` Secret and the Nodes' boot IDs in a cluster model (what
/// a compile session holds). `Ok(None)` when there is no such Secret: IPsec is off.
pub fn keys_from_cluster(
    cluster: &pipec::model::Cluster,
) -> Result<Option<KeySet>, Vec<CptDiagnostic>> {
    let boot_ids: BTreeMap<String, String> = cluster
        .nodes
        .iter()
        .filter_map(|n| Some((n.name.clone(), n.boot_id.clone()?)))
        .collect();
    let mut found = cluster
        .secrets
        .iter()
        .filter(|s| s.namespace == SECRET_NAMESPACE && s.name == SECRET_NAME);
    let Some(secret) = found.next() else {
        return Ok(None);
    };
    if let Some(second) = found.next() {
        return Err(vec![CptDiagnostic::new(
            CptCode::C0006,
            second.location.clone(),
            format!("a second {SECRET_NAMESPACE}/{SECRET_NAME} Secret"),
        )]);
    }
    // Locations are `file:line:column`; diagnostics name the file and the line of `keys`.
    let location = secret
        .value_locations
        .get("keys")
        .unwrap_or(&secret.location);
    let mut parts = location.rsplitn(3, ':');
    let (_column, line, file) = (parts.next(), parts.next(), parts.next());
    let (file, line) = match (file, line.and_then(|l| l.parse().ok())) {
        (Some(f), Some(l)) => (f, l),
        _ => (location.as_str(), 1),
    };
    let at = format!("{file}:{line}");
    let Some(bytes) = secret.data.get("keys") else {
        return Err(vec![CptDiagnostic::new(
            CptCode::C0001,
            at,
            "the Secret has no `keys` entry in data or stringData",
        )]);
    };
    let text = std::str::from_utf8(bytes.expose()).map_err(|_| {
        vec![CptDiagnostic::new(
            CptCode::C0001,
            at.clone(),
            "data.keys is not UTF-8 text",
        )]
    })?;
    let (keys, current) = parse_keys(file, line, text)?;
    Ok(Some(KeySet {
        keys,
        current,
        boot_ids,
    }))
}

/// The line of the `keys:` entry in a document, for diagnostics.
fn doc_line_of_keys(doc: &str, first: usize) -> usize {
    doc.lines()
        .position(|l| l.trim_start().starts_with("keys:") || l.trim_start().starts_with("\"keys\""))
        .map_or(first, |i| first + i)
}

/// The `keys` entry of the Secret, from `stringData` or base64 `data`.
fn secret_keys_text(at: &str, v: &Value) -> Result<String, Vec<CptDiagnostic>> {
    let err = |m: &str| vec![CptDiagnostic::new(CptCode::C0001, at, m)];
    if let Some(s) = v
        .get("stringData")
        .and_then(|d| d.get("keys"))
        .and_then(Value::as_str)
    {
        return Ok(s.to_string());
    }
    let Some(b64) = v
        .get("data")
        .and_then(|d| d.get("keys"))
        .and_then(Value::as_str)
    else {
        return Err(err("the Secret has no `keys` entry in data or stringData"));
    };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|_| err("data.keys is not base64"))?;
    String::from_utf8(bytes).map_err(|_| err("data.keys is not UTF-8 text"))
}

/// Parses Cilium's key lines. Returns the keys and the current SPI (the last line's).
pub fn parse_keys(
    file: &str,
    first_line: usize,
    text: &str,
) -> Result<(BTreeMap<u8, GlobalKey>, u8), Vec<CptDiagnostic>> {
    let mut keys: BTreeMap<u8, GlobalKey> = BTreeMap::new();
    let mut diags = Vec::new();
    let mut current = None;
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let at = format!("{file}:{} (key line {})", first_line, i + 1);
        match parse_line(&at, line) {
            Ok(k) => {
                if keys.contains_key(&k.spi) {
                    diags.push(CptDiagnostic::new(
                        CptCode::C0006,
                        &at,
                        format!("two keys with SPI {}", k.spi),
                    ));
                    continue;
                }
                current = Some(k.spi);
                keys.insert(k.spi, k);
            }
            Err(d) => diags.push(d),
        }
    }
    match current {
        Some(c) if diags.is_empty() => Ok((keys, c)),
        None if diags.is_empty() => Err(vec![CptDiagnostic::new(
            CptCode::C0001,
            format!("{file}:{first_line}"),
            "the Secret's `keys` has no key line",
        )]),
        _ => Err(diags),
    }
}

fn parse_line(at: &str, line: &str) -> Result<GlobalKey, CptDiagnostic> {
    let d = |c, m: String| CptDiagnostic::new(c, at, m);
    let fields: Vec<&str> = line.split_whitespace().collect();
    if fields.len() == 5 || fields.len() == 6 {
        return Err(d(CptCode::C0002, format!("separate auth and encryption algorithms ({} and {}); only {ALGORITHM} runs on the CPT inline path", fields[1], fields[3])));
    }
    if fields.len() != 4 {
        return Err(d(
            CptCode::C0001,
            format!(
                "a key line has 4 fields `spi algorithm key icv-bits`, this one has {}",
                fields.len()
            ),
        ));
    }
    let (spi_text, per_pair) = match fields[0].strip_suffix('+') {
        Some(s) => (s, true),
        None => (fields[0], false),
    };
    let spi = spi_text
        .parse::<u8>()
        .ok()
        .filter(|s| (1..=15).contains(s))
        .ok_or_else(|| {
            d(
                CptCode::C0004,
                format!("key id `{spi_text}` is not in 1..15"),
            )
        })?;
    if fields[1] != ALGORITHM {
        return Err(d(
            CptCode::C0002,
            format!("algorithm `{}`; only {ALGORITHM} is supported", fields[1]),
        ));
    }
    let key = parse_hex(fields[2]).ok_or_else(|| d(CptCode::C0003, "the key is not hex".into()))?;
    if key.len() != KEY_LEN {
        return Err(d(
            CptCode::C0003,
            format!(
                "the key has {} bytes; AES-GCM-128 needs {KEY_LEN} (16 key + 4 salt)",
                key.len()
            ),
        ));
    }
    let icv: u16 = fields[3].parse().map_err(|_| {
        d(
            CptCode::C0005,
            format!("ICV length `{}` is not a number", fields[3]),
        )
    })?;
    if icv != 128 {
        return Err(d(
            CptCode::C0005,
            format!("ICV length {icv} bits; the cnxk CPT supports 128 only"),
        ));
    }
    Ok(GlobalKey {
        spi,
        per_pair,
        icv_len: 16,
        key: AeadKey {
            material: SecretBytes::new(key),
        },
        at: at.to_string(),
    })
}

fn parse_hex(s: &str) -> Option<Vec<u8>> {
    let s = s.strip_prefix("0x").unwrap_or(s);
    if s.len() & 1 == 1 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}
