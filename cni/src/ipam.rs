//! The IPAM delegate (host-local from Debian's containernetworking-plugins, or any IPAM
//! plugin), run as the specification's delegation section says: found on `CNI_PATH`, given
//! the same environment and the whole network configuration, its stderr passed through.
//! Debian's host-local speaks up to 1.0.0, so the delegate is asked for its versions first
//! and called with the newest one both speak.

use crate::spec::{self, CniError, Config, Env};
use serde_json::Value;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// The delegate named by the configuration's `ipam.type`.
pub fn delegate(config: &Config, env: &Env) -> Result<PathBuf, CniError> {
    let ty = config
        .ipam
        .as_ref()
        .and_then(|i| i.get("type"))
        .and_then(Value::as_str)
        .ok_or_else(|| CniError::new(spec::INVALID_CONFIG, "missing `ipam.type`"))?;
    if ty.contains('/') || ty.is_empty() {
        return Err(CniError::new(
            spec::INVALID_CONFIG,
            format!("`ipam.type` {ty:?} is not a plugin name"),
        ));
    }
    env.path
        .iter()
        .map(|d| PathBuf::from(d).join(ty))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            CniError::new(
                spec::INVALID_CONFIG,
                format!("failed to find plugin {ty:?} in path {:?}", env.path),
            )
        })
}

/// Runs the delegate with `command`, the environment of this invocation and `config`'s
/// text; its stdout is the answer.
fn run(plugin: &PathBuf, command: &str, env: &Env, config: &Value) -> Result<Value, CniError> {
    let mut child = Command::new(plugin)
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", &env.container_id)
        .env("CNI_NETNS", &env.netns)
        .env("CNI_IFNAME", &env.ifname)
        .env("CNI_PATH", env.path.join(":"))
        .env(
            "CNI_ARGS",
            env.args
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(";"),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| {
            CniError::new(spec::IPAM_FAILED, format!("running {}", plugin.display()))
                .details(e.to_string())
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(config.to_string().as_bytes());
    }
    let out = child.wait_with_output().map_err(|e| {
        CniError::new(spec::IPAM_FAILED, format!("running {}", plugin.display()))
            .details(e.to_string())
    })?;
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    if !out.status.success() {
        let msg = answer["msg"].as_str().unwrap_or("failed").to_string();
        let details = answer["details"].as_str().unwrap_or("").to_string();
        return Err(
            CniError::new(spec::IPAM_FAILED, format!("IPAM {command}: {msg}")).details(details),
        );
    }
    Ok(answer)
}

/// The newest version the delegate and this configuration both speak.
fn common_version(plugin: &PathBuf, config: &Config, env: &Env) -> Result<String, CniError> {
    let answer = run(
        plugin,
        "VERSION",
        env,
        &serde_json::json!({"cniVersion": config.version}),
    )?;
    let theirs: Vec<&str> = answer["supportedVersions"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    spec::VERSIONS
        .iter()
        .rev()
        .filter(|v| spec::at_least(&config.version, v))
        .find(|v| theirs.contains(v))
        .map(|v| v.to_string())
        .ok_or_else(|| {
            CniError::new(
                spec::INCOMPATIBLE_VERSION,
                format!(
                    "the IPAM plugin speaks {theirs:?}, none of which is at most {}",
                    config.version
                ),
            )
        })
}

/// The configuration for the delegate: the whole configuration at `version`.
fn for_delegate(config: &Config, version: &str) -> Value {
    let mut v = config.raw.clone();
    v["cniVersion"] = serde_json::json!(version);
    if let Some(m) = v.as_object_mut() {
        m.remove("prevResult");
    }
    v
}

/// ADD: the addresses and routes the delegate gives (its abbreviated result).
pub fn add(config: &Config, env: &Env) -> Result<Value, CniError> {
    let plugin = delegate(config, env)?;
    let version = common_version(&plugin, config, env)?;
    run(&plugin, "ADD", env, &for_delegate(config, &version))
}

/// DEL: releases what the delegate gave the container (idempotent in the delegate).
pub fn del(config: &Config, env: &Env) -> Result<(), CniError> {
    let plugin = delegate(config, env)?;
    let version = common_version(&plugin, config, env)?;
    run(&plugin, "DEL", env, &for_delegate(config, &version)).map(|_| ())
}

/// CHECK, when the delegate speaks a version with CHECK.
pub fn check(config: &Config, env: &Env) -> Result<(), CniError> {
    let plugin = delegate(config, env)?;
    let version = common_version(&plugin, config, env)?;
    let mut c = for_delegate(config, &version);
    if let Some(prev) = &config.prev_result {
        c["prevResult"] = prev.clone();
    }
    run(&plugin, "CHECK", env, &c).map(|_| ())
}

/// host-local's data directory for the network (`ipam.dataDir`, default
/// `/var/lib/cni/networks`): one file per leased address holding `containerID\r\nifname`.
pub fn lease_dir(config: &Config) -> PathBuf {
    let base = config
        .ipam
        .as_ref()
        .and_then(|i| i.get("dataDir"))
        .and_then(Value::as_str)
        .unwrap_or("/var/lib/cni/networks");
    PathBuf::from(base).join(&config.name)
}

/// The (container id, interface) of every lease host-local holds for the network.
pub fn leases(config: &Config) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir(lease_dir(config)) else {
        return out;
    };
    for entry in dir.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.parse::<std::net::IpAddr>().is_err() {
            continue;
        }
        if let Ok(text) = std::fs::read_to_string(entry.path()) {
            let mut lines = text.split("\r\n");
            let id = lines.next().unwrap_or("").trim().to_string();
            let ifname = lines.next().unwrap_or("eth0").trim().to_string();
            out.push((id, ifname));
        }
    }
    out.sort();
    out.dedup();
    out
}
