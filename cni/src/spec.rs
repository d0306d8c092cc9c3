//! The CNI contract as the specification writes it (containernetworking/cni `SPEC.md`, 1.0.0
//! and 1.1.0; 0.4.0 for older runtimes): versions, the environment, the network
//! configuration, errors and their codes, and the result's shape per version.

use serde_json::{json, Value};
use std::collections::BTreeMap;

/// The versions pipec-cni speaks, oldest first.
pub const VERSIONS: [&str; 3] = ["0.4.0", "1.0.0", "1.1.0"];

/// A CNI error: the code, the message and details, printed as the specification's error
/// object. Codes 1–11 are the specification's; 100 and up are pipec-cni's own
/// (`docs/cni.md` lists them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CniError {
    /// The code.
    pub code: u32,
    /// A short message.
    pub msg: String,
    /// More detail.
    pub details: String,
}

/// Incompatible CNI version.
pub const INCOMPATIBLE_VERSION: u32 = 1;
/// Unsupported field in the network configuration.
pub const UNSUPPORTED_FIELD: u32 = 2;
/// Invalid necessary environment variables.
pub const INVALID_ENV: u32 = 4;
/// I/O failure.
pub const IO_FAILURE: u32 = 5;
/// Failed to decode content.
pub const DECODE: u32 = 6;
/// Invalid network config.
pub const INVALID_CONFIG: u32 = 7;
/// Try again later.
pub const TRY_AGAIN_LATER: u32 = 11;
/// STATUS: the plugin cannot service ADD.
pub const NOT_AVAILABLE: u32 = 50;
/// The interface the runtime asked for already exists in the container.
pub const INTERFACE_EXISTS: u32 = 100;
/// Setting up the pod's link failed (the `ip` command's message is in the details).
pub const LINK_FAILED: u32 = 101;
/// The IPAM delegate failed (its error is in the details).
pub const IPAM_FAILED: u32 = 102;
/// pipecd refused the pod (its reason is in the details).
pub const REFUSED: u32 = 103;

impl CniError {
    /// An error with a code and a message.
    pub fn new(code: u32, msg: impl Into<String>) -> CniError {
        CniError {
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }

    /// The same error with details.
    pub fn details(mut self, details: impl Into<String>) -> CniError {
        self.details = details.into();
        self
    }

    /// The error object (`cniVersion` is the request's, when it could be read).
    pub fn to_json(&self, version: &str) -> Value {
        let mut v = json!({"cniVersion": version, "code": self.code, "msg": self.msg});
        if !self.details.is_empty() {
            v["details"] = json!(self.details);
        }
        v
    }
}

/// The command a runtime runs the plugin with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// Add the container to the network.
    Add,
    /// Remove it.
    Del,
    /// Check it is as ADD left it.
    Check,
    /// The versions the plugin speaks.
    Version,
    /// Whether the plugin can service ADD (1.1.0).
    Status,
    /// Release what belongs to attachments that no longer exist (1.1.0).
    Gc,
}

impl Command {
    fn parse(s: &str) -> Option<Command> {
        Some(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "VERSION" => Command::Version,
            "STATUS" => Command::Status,
            "GC" => Command::Gc,
            _ => return None,
        })
    }

    /// The variables the specification makes required for the command.
    fn required(self) -> &'static [&'static str] {
        match self {
            Command::Add | Command::Check => {
                &["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"]
            }
            Command::Del => &["CNI_CONTAINERID", "CNI_IFNAME", "CNI_PATH"],
            Command::Gc => &["CNI_PATH"],
            Command::Version | Command::Status => &[],
        }
    }
}

/// The `CNI_*` environment of one invocation.
#[derive(Clone, Debug, Default)]
pub struct Env {
    /// `CNI_COMMAND`.
    pub command: Option<Command>,
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `CNI_NETNS`: a path.
    pub netns: String,
    /// `CNI_IFNAME`.
    pub ifname: String,
    /// `CNI_PATH`: where delegates are found.
    pub path: Vec<String>,
    /// `CNI_ARGS`, as `K=V` pairs.
    pub args: BTreeMap<String, String>,
}

impl Env {
    /// Reads the environment through `get`; a missing or unknown command and missing
    /// variables are code 4 naming them.
    pub fn read(get: impl Fn(&str) -> Option<String>) -> Result<Env, CniError> {
        let command = get("CNI_COMMAND").unwrap_or_default();
        let Some(c) = Command::parse(&command) else {
            return Err(CniError::new(
                INVALID_ENV,
                format!("unknown CNI_COMMAND `{command}`"),
            ));
        };
        let missing: Vec<&str> = c
            .required()
            .iter()
            .copied()
            .filter(|v| get(v).is_none_or(|x| x.is_empty()))
            .collect();
        if !missing.is_empty() {
            return Err(CniError::new(
                INVALID_ENV,
                format!("required env variables [{}] missing", missing.join(",")),
            ));
        }
        let args = get("CNI_ARGS")
            .unwrap_or_default()
            .split(';')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Ok(Env {
            command: Some(c),
            container_id: get("CNI_CONTAINERID").unwrap_or_default(),
            netns: get("CNI_NETNS").unwrap_or_default(),
            ifname: get("CNI_IFNAME").unwrap_or_default(),
            path: get("CNI_PATH")
                .unwrap_or_default()
                .split(':')
                .filter(|p| !p.is_empty())
                .map(str::to_string)
                .collect(),
            args,
        })
    }
}

/// pipec-cni's network configuration (the fields it reads; the rest is passed to the IPAM
/// delegate unchanged, as the specification asks).
#[derive(Clone, Debug)]
pub struct Config {
    /// The version the runtime asked for.
    pub version: String,
    /// The network's name.
    pub name: String,
    /// Where pipecd is: `unix:PATH` on one machine, `https://HOST:PORT` across the host↔DPU
    /// link (with `tls`).
    pub pipecd: String,
    /// The client side of the mutually authenticated channel (`tls`: `ca`, `cert`, `key`,
    /// and `serverName` when it differs from the URL's host).
    pub tls: Option<(pipec_proto::TlsFiles, Option<String>)>,
    /// How long ADD waits for pipecd to have the pod's policy in place.
    pub timeout_ms: u32,
    /// The pod interface's MTU.
    pub mtu: u32,
    /// Where pipec-cni keeps the deletions pipecd has not heard of yet.
    pub state_dir: String,
    /// The IPAM section (`type` names the delegate).
    pub ipam: Option<Value>,
    /// The previous plugin's result (chained mode).
    pub prev_result: Option<Value>,
    /// The whole configuration, for the delegate.
    pub raw: Value,
}

/// Reads the configuration from stdin's bytes: bad JSON is code 6, a missing name or a
/// field of the wrong type code 7, an unsupported version code 1.
pub fn parse_config(bytes: &[u8]) -> Result<Config, CniError> {
    let raw: Value = serde_json::from_slice(bytes).map_err(|e| {
        CniError::new(DECODE, "the network configuration is not JSON").details(e.to_string())
    })?;
    if !raw.is_object() {
        return Err(CniError::new(
            DECODE,
            "the network configuration is not a JSON object",
        ));
    }
    let version = string_field(&raw, "cniVersion")?.unwrap_or_else(|| "0.4.0".into());
    if !VERSIONS.contains(&version.as_str()) {
        return Err(CniError::new(
            INCOMPATIBLE_VERSION,
            format!(
                "incompatible CNI versions: config is \"{version}\", plugin supports {VERSIONS:?}"
            ),
        ));
    }
    let Some(name) = string_field(&raw, "name")? else {
        return Err(CniError::new(INVALID_CONFIG, "missing network name"));
    };
    let number = |key: &str, default: u32| -> Result<u32, CniError> {
        match raw.get(key) {
            None => Ok(default),
            Some(v) => v
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| {
                    CniError::new(
                        INVALID_CONFIG,
                        format!("`{key}` must be a whole number, not {v}"),
                    )
                }),
        }
    };
    let mtu = number("mtu", 1500)?;
    if !(576..=65535).contains(&mtu) {
        return Err(CniError::new(
            INVALID_CONFIG,
            format!("`mtu` {mtu} is outside 576..=65535"),
        ));
    }
    let pipecd =
        string_field(&raw, "pipecd")?.unwrap_or_else(|| pipec_proto::DEFAULT_ADDRESS.to_string());
    let tls = tls_config(&raw)?;
    if pipecd.starts_with("https://") && tls.is_none() {
        return Err(CniError::new(
            INVALID_CONFIG,
            "`pipecd` is an https:// address: the channel needs `tls` (ca, cert, key)",
        ));
    }
    if !pipecd.starts_with("https://") && !pipecd.starts_with("unix:") {
        return Err(CniError::new(
            INVALID_CONFIG,
            format!("`pipecd` {pipecd:?} is neither unix:PATH nor https://HOST:PORT"),
        ));
    }
    Ok(Config {
        tls,
        pipecd,
        timeout_ms: number("timeoutMs", 10_000)?,
        mtu,
        state_dir: string_field(&raw, "stateDir")?.unwrap_or_else(|| "/var/lib/pipec-cni".into()),
        ipam: raw.get("ipam").cloned(),
        prev_result: raw.get("prevResult").cloned().filter(|v| !v.is_null()),
        version,
        name,
        raw,
    })
}

/// The `tls` section: every file named, or code 7 naming what is missing.
fn tls_config(raw: &Value) -> Result<Option<(pipec_proto::TlsFiles, Option<String>)>, CniError> {
    let Some(tls) = raw.get("tls").filter(|t| !t.is_null()) else {
        return Ok(None);
    };
    let file = |key: &str| -> Result<std::path::PathBuf, CniError> {
        string_field(tls, key)?
            .map(std::path::PathBuf::from)
            .ok_or_else(|| CniError::new(INVALID_CONFIG, format!("`tls.{key}` is missing")))
    };
    Ok(Some((
        pipec_proto::TlsFiles {
            ca: file("ca")?,
            cert: file("cert")?,
            key: file("key")?,
        },
        string_field(tls, "serverName")?,
    )))
}

fn string_field(v: &Value, key: &str) -> Result<Option<String>, CniError> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(CniError::new(
            INVALID_CONFIG,
            format!("`{key}` must be a string, not {other}"),
        )),
    }
}

/// Whether version `a` is at least `b` (both of [`VERSIONS`] or a delegate's list).
pub fn at_least(a: &str, b: &str) -> bool {
    let parse = |s: &str| -> Vec<u32> { s.split('.').filter_map(|p| p.parse().ok()).collect() };
    parse(a) >= parse(b)
}

/// A result in the shape of `version`: 0.4.0 results name each IP's `version`; 1.0.0 and
/// later do not.
pub fn shape_result(mut result: Value, version: &str) -> Value {
    result["cniVersion"] = json!(version);
    if let Some(ips) = result.get_mut("ips").and_then(Value::as_array_mut) {
        for ip in ips {
            let v6 = ip["address"].as_str().is_some_and(|a| a.contains(':'));
            if at_least(version, "1.0.0") {
                if let Some(m) = ip.as_object_mut() {
                    m.remove("version");
                }
            } else {
                ip["version"] = json!(if v6 { "6" } else { "4" });
            }
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> Result<Env, CniError> {
        let map: BTreeMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Env::read(|k| map.get(k).cloned())
    }

    #[test]
    fn missing_variables_are_code_4_and_named() {
        let e = env(&[("CNI_COMMAND", "ADD"), ("CNI_IFNAME", "eth0")]).unwrap_err();
        assert_eq!(e.code, INVALID_ENV);
        assert_eq!(
            e.msg,
            "required env variables [CNI_CONTAINERID,CNI_NETNS,CNI_PATH] missing"
        );
        let e = env(&[("CNI_COMMAND", "FROB")]).unwrap_err();
        assert_eq!((e.code, e.msg.as_str()), (4, "unknown CNI_COMMAND `FROB`"));
        // DEL does not need the namespace.
        let ok = env(&[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "c"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/opt/cni/bin"),
            (
                "CNI_ARGS",
                "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web",
            ),
        ])
        .unwrap();
        assert_eq!(ok.args["K8S_POD_NAME"], "web");
    }

    #[test]
    fn configurations_are_checked_with_the_specifications_codes() {
        assert_eq!(parse_config(b"{").unwrap_err().code, DECODE);
        assert_eq!(parse_config(b"[]").unwrap_err().code, DECODE);
        assert_eq!(
            parse_config(br#"{"cniVersion":"1.0.0"}"#).unwrap_err().msg,
            "missing network name"
        );
        assert_eq!(
            parse_config(br#"{"cniVersion":"9.9.9","name":"n"}"#)
                .unwrap_err()
                .code,
            INCOMPATIBLE_VERSION
        );
        assert_eq!(
            parse_config(br#"{"cniVersion":"1.0.0","name":"n","mtu":"big"}"#)
                .unwrap_err()
                .code,
            INVALID_CONFIG
        );
        let c = parse_config(br#"{"cniVersion":"1.1.0","name":"n","mtu":9000}"#).unwrap();
        assert_eq!((c.mtu, c.version.as_str()), (9000, "1.1.0"));
    }

    #[test]
    fn results_take_the_shape_of_their_version() {
        let r =
            json!({"ips": [{"address": "10.0.0.2/24", "version": "4"}, {"address": "fd00::2/64"}]});
        let old = shape_result(r.clone(), "0.4.0");
        assert_eq!(old["ips"][1]["version"], "6");
        let new = shape_result(r, "1.0.0");
        assert!(new["ips"][0].get("version").is_none());
        assert_eq!(new["cniVersion"], "1.0.0");
    }
}
