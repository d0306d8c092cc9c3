//! pipec-cni: the CNI plugin on the host. The kubelet's runtime runs it for every pod; it
//! wires the pod (standalone: a veth pair and an address from the IPAM delegate; chained:
//! the interface a previous plugin made) and reports it to pipecd, and ADD returns only once
//! pipecd says the pod's policy is in the datapath: a pod never runs without its policy.
//!
//! - [`spec`]: the contract (versions, environment, configuration, errors, results);
//! - [`ipam`]: the delegate (host-local), its versions and its leases;
//! - [`link`]: the veth pair;
//! - [`channel`]: gRPC to pipecd and the deletions it missed.
//!
//! [`run`] is one invocation: the environment and stdin in, stdout and the exit code out.

// Dev-dependencies that the unit tests do not use; the package's integration tests,
// benches or examples do.
#[cfg(test)]
use pipec as _;
#[cfg(test)]
use pipec_netns as _;

pub mod channel;
pub mod ipam;
pub mod link;
pub mod spec;

use channel::{PendingDel, Pipecd};
use serde_json::{json, Value};
use spec::{CniError, Command, Config, Env};
use std::path::Path;

/// What an invocation prints and how it exits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// stdout: a result, a version answer, or the error object.
    pub stdout: String,
    /// The exit code (0, or 1 with an error object).
    pub code: i32,
}

/// Runs one invocation.
pub fn run(get: impl Fn(&str) -> Option<String>, stdin: &[u8]) -> Outcome {
    // The error object carries the request's version when it can be read.
    let version = serde_json::from_slice::<Value>(stdin)
        .ok()
        .and_then(|v| v["cniVersion"].as_str().map(str::to_string))
        .filter(|v| spec::VERSIONS.contains(&v.as_str()))
        .unwrap_or_else(|| spec::VERSIONS[spec::VERSIONS.len() - 1].to_string());
    match invoke(get, stdin) {
        Ok(Some(v)) => Outcome {
            stdout: v.to_string() + "\n",
            code: 0,
        },
        Ok(None) => Outcome {
            stdout: String::new(),
            code: 0,
        },
        Err(e) => Outcome {
            stdout: e.to_json(&version).to_string() + "\n",
            code: 1,
        },
    }
}

fn invoke(get: impl Fn(&str) -> Option<String>, stdin: &[u8]) -> Result<Option<Value>, CniError> {
    let env = Env::read(get)?;
    let command = env.command.expect("Env::read sets the command");
    if command == Command::Version {
        let asked = serde_json::from_slice::<Value>(stdin)
            .ok()
            .and_then(|v| v["cniVersion"].as_str().map(str::to_string))
            .unwrap_or_else(|| "0.4.0".into());
        return Ok(Some(
            json!({"cniVersion": asked, "supportedVersions": spec::VERSIONS}),
        ));
    }
    let config = spec::parse_config(stdin)?;
    match command {
        Command::Add => add(&config, &env).map(Some),
        Command::Del => del(&config, &env).map(|()| None),
        Command::Check => check(&config, &env).map(|()| None),
        Command::Status => status(&config).map(|()| None),
        Command::Gc => gc(&config, &env).map(|()| None),
        Command::Version => unreachable!("answered above"),
    }
}

/// The `ips[].address` values of a result (`ADDR/LEN`).
fn addresses_of(result: &Value) -> Vec<String> {
    result["ips"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|ip| ip["address"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The pod's namespace and name from `CNI_ARGS`.
fn pod_of(env: &Env) -> Result<(String, String), CniError> {
    match (
        env.args.get("K8S_POD_NAMESPACE"),
        env.args.get("K8S_POD_NAME"),
    ) {
        (Some(ns), Some(name)) if !ns.is_empty() && !name.is_empty() => {
            Ok((ns.clone(), name.clone()))
        }
        _ => Err(CniError::new(
            spec::INVALID_ENV,
            "CNI_ARGS lacks K8S_POD_NAMESPACE and K8S_POD_NAME (pipec-cni wires Kubernetes pods)",
        )),
    }
}

fn add(config: &Config, env: &Env) -> Result<Value, CniError> {
    let (namespace, name) = pod_of(env)?;
    if !link::netns_exists(&env.netns) {
        return Err(CniError::new(
            spec::INVALID_ENV,
            format!("CNI_NETNS {} is not a network namespace", env.netns),
        ));
    }
    // Reach pipecd before anything is allocated: when it is down there is nothing to undo.
    let mut pipecd = Pipecd::connect(config)?;
    let _ = pipecd.replay(Path::new(&config.state_dir));
    let attachment = |host: &str, ips: &[String]| pipec_proto::v1::Attachment {
        container_id: env.container_id.clone(),
        ifname: env.ifname.clone(),
        pod_namespace: namespace.clone(),
        pod_name: name.clone(),
        pod_uid: env.args.get("K8S_POD_UID").cloned().unwrap_or_default(),
        host_ifname: host.to_string(),
        ips: ips
            .iter()
            .map(|a| a.split('/').next().unwrap_or(a).to_string())
            .collect(),
    };
    if let Some(prev) = &config.prev_result {
        return add_chained(config, env, prev, &mut pipecd, &attachment);
    }
    if link::exists_in(&env.netns, &env.ifname) {
        return Err(CniError::new(
            spec::INTERFACE_EXISTS,
            format!(
                "the container already has an interface {} (CNI_IFNAME)",
                env.ifname
            ),
        ));
    }
    let timing = Timing::start();
    let ipam = ipam::add(config, env)?;
    let ipam_done = timing.lap();
    let addresses = addresses_of(&ipam);
    let undo_ipam = |e: CniError| {
        let _ = ipam::del(config, env);
        e
    };
    if addresses.is_empty() {
        return Err(undo_ipam(CniError::new(
            spec::IPAM_FAILED,
            "the IPAM plugin gave no address",
        )));
    }
    let host = link::host_name(&env.container_id, &env.ifname);
    let made =
        link::setup(&env.netns, &env.ifname, &host, &addresses, config.mtu).map_err(undo_ipam)?;
    let link_done = timing.lap();
    if let Err(e) = pipecd.add(attachment(&host, &addresses), config.timeout_ms) {
        // A pod never runs without its policy: the link and the address go.
        let _ = link::teardown(&host);
        return Err(undo_ipam(e));
    }
    timing.report(ipam_done, link_done, timing.lap());
    Ok(result(config, env, &made, &addresses, &ipam))
}

/// Where an ADD's time goes, reported on stderr (which the runtime logs) as one JSON line
/// when `PIPEC_CNI_TIMING` is set: the benchmark in `cni/tests/e2e.rs` reads it.
struct Timing {
    start: std::time::Instant,
    on: bool,
}

impl Timing {
    fn start() -> Timing {
        Timing {
            start: std::time::Instant::now(),
            on: std::env::var_os("PIPEC_CNI_TIMING").is_some(),
        }
    }

    /// Microseconds since the start.
    fn lap(&self) -> u128 {
        self.start.elapsed().as_micros()
    }

    fn report(&self, ipam: u128, link: u128, pipecd: u128) {
        if self.on {
            eprintln!(
                "{}",
                json!({"ipam_us": ipam, "link_us": link - ipam, "pipecd_us": pipecd - link})
            );
        }
    }
}

/// The result of a standalone ADD.
fn result(
    config: &Config,
    env: &Env,
    made: &link::Link,
    addresses: &[String],
    ipam: &Value,
) -> Value {
    let ips: Vec<Value> = addresses
        .iter()
        .map(|a| {
            let mut ip = json!({"address": a, "interface": 1});
            if !a.contains(':') {
                ip["gateway"] = json!(link::GATEWAY);
            }
            ip
        })
        .collect();
    let mut routes = Vec::new();
    if addresses.iter().any(|a| !a.contains(':')) {
        routes.push(json!({"dst": "0.0.0.0/0", "gw": link::GATEWAY}));
    }
    let mut r = json!({
        "interfaces": [
            {"name": made.host, "mac": made.host_mac},
            {"name": env.ifname, "mac": made.pod_mac, "sandbox": env.netns},
        ],
        "ips": ips,
        "routes": routes,
        "dns": ipam.get("dns").cloned().unwrap_or(json!({})),
    });
    if spec::at_least(&config.version, "1.1.0") {
        r["interfaces"][1]["mtu"] = json!(config.mtu);
        r["interfaces"][0]["mtu"] = json!(config.mtu);
    }
    spec::shape_result(r, &config.version)
}

/// ADD after a plugin that made the interface: its result names the pod's addresses and
/// the host end (the interface without a sandbox); pipecd is told, and the result passes
/// through.
fn add_chained(
    config: &Config,
    env: &Env,
    prev: &Value,
    pipecd: &mut Pipecd,
    attachment: &dyn Fn(&str, &[String]) -> pipec_proto::v1::Attachment,
) -> Result<Value, CniError> {
    let interfaces = prev["interfaces"].as_array().cloned().unwrap_or_default();
    let host = interfaces
        .iter()
        .find(|i| i.get("sandbox").is_none_or(|s| s.as_str() == Some("")))
        .and_then(|i| i["name"].as_str())
        .ok_or_else(|| {
            CniError::new(
                spec::INVALID_CONFIG,
                "prevResult names no host-side interface (one without `sandbox`) for pipecd to attach to",
            )
        })?;
    let addresses = addresses_of(prev);
    if addresses.is_empty() {
        return Err(CniError::new(
            spec::INVALID_CONFIG,
            "prevResult has no address",
        ));
    }
    if !link::exists_in(&env.netns, &env.ifname) {
        return Err(CniError::new(
            spec::INVALID_CONFIG,
            format!(
                "prevResult's interface {} is not in the container",
                env.ifname
            ),
        ));
    }
    pipecd.add(attachment(host, &addresses), config.timeout_ms)?;
    Ok(spec::shape_result(prev.clone(), &config.version))
}

fn del(config: &Config, env: &Env) -> Result<(), CniError> {
    let state = Path::new(&config.state_dir);
    let (namespace, name) = pod_of(env).unwrap_or_default();
    let pending = PendingDel {
        container_id: env.container_id.clone(),
        ifname: env.ifname.clone(),
        pod_namespace: namespace,
        pod_name: name,
    };
    // pipecd first: the endpoint leaves the datapath before the address is released.
    match Pipecd::connect(config) {
        Ok(mut p) => {
            let _ = p.replay(state);
            if p.del(&pending).is_err() {
                channel::remember(state, pending)?;
            }
        }
        Err(_) => channel::remember(state, pending)?,
    }
    if config.prev_result.is_none() || config.ipam.is_some() {
        link::teardown(&link::host_name(&env.container_id, &env.ifname))?;
    }
    if config.ipam.is_some() {
        ipam::del(config, env)?;
    }
    Ok(())
}

fn check(config: &Config, env: &Env) -> Result<(), CniError> {
    let mut pipecd = Pipecd::connect(config)?;
    let Some(applied) = pipecd.check(&env.container_id, &env.ifname)? else {
        return Err(CniError::new(
            spec::REFUSED,
            format!(
                "pipecd has no attachment for container {} interface {}",
                env.container_id, env.ifname
            ),
        ));
    };
    if !link::exists_in(&env.netns, &env.ifname) {
        return Err(CniError::new(
            spec::LINK_FAILED,
            format!("the container has no interface {}", env.ifname),
        ));
    }
    let prev = config.prev_result.as_ref().ok_or_else(|| {
        CniError::new(
            spec::INVALID_CONFIG,
            "CHECK needs prevResult (the result of ADD)",
        )
    })?;
    for ip in prev["ips"].as_array().cloned().unwrap_or_default() {
        let a = ip["address"].as_str().unwrap_or("");
        if !link::has_address(&env.netns, &env.ifname, a) {
            return Err(CniError::new(
                spec::LINK_FAILED,
                format!("{} no longer has {a}", env.ifname),
            ));
        }
        let bare = a.split('/').next().unwrap_or(a);
        if !applied.iter().any(|x| x == bare) {
            return Err(CniError::new(
                spec::REFUSED,
                format!("pipecd does not have {bare} for the pod"),
            ));
        }
    }
    if config.ipam.is_some() {
        ipam::check(config, env)?;
    }
    Ok(())
}

fn status(config: &Config) -> Result<(), CniError> {
    if !spec::at_least(&config.version, "1.1.0") {
        return Err(CniError::new(
            spec::INCOMPATIBLE_VERSION,
            "config version does not allow STATUS",
        ));
    }
    // host-local implements no STATUS (its skel answers success or code 3 depending on the
    // release); its readiness is a writable data directory, which ADD checks itself.
    // A round trip, not only a connection: with TLS 1.3 the server judges the client's
    // certificate after the client's handshake is done.
    Pipecd::connect(config)
        .and_then(|mut p| p.check("", "").map(|_| ()))
        .map_err(|e| {
            CniError::new(
                spec::NOT_AVAILABLE,
                "pipecd is not available: ADD cannot be serviced",
            )
            .details(format!("{}: {}", e.msg, e.details))
        })
}

/// GC: every lease host-local holds for an attachment the runtime no longer lists is
/// released (host-local has no GC of its own), with its link and pipecd's endpoint.
fn gc(config: &Config, env: &Env) -> Result<(), CniError> {
    if !spec::at_least(&config.version, "1.1.0") {
        return Err(CniError::new(
            spec::INCOMPATIBLE_VERSION,
            "config version does not allow GC",
        ));
    }
    let listed = config
        .raw
        .get("cni.dev/valid-attachments")
        .or_else(|| config.raw.get("cni.dev/attachments"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let valid: Vec<(String, String)> = listed
        .iter()
        .filter_map(|a| {
            Some((
                a["containerID"].as_str()?.to_string(),
                a["ifname"].as_str()?.to_string(),
            ))
        })
        .collect();
    let mut errors = Vec::new();
    for (id, ifname) in ipam::leases(config) {
        if valid.contains(&(id.clone(), ifname.clone())) {
            continue;
        }
        let stale = Env {
            container_id: id.clone(),
            ifname: ifname.clone(),
            netns: String::new(),
            ..env.clone()
        };
        if let Err(e) = del(config, &stale) {
            errors.push(format!("{id}/{ifname}: {} {}", e.msg, e.details));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(CniError::new(
            spec::IO_FAILURE,
            "GC could not release every stale attachment",
        )
        .details(errors.join("; ")))
    }
}
