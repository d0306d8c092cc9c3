//! The pod's link: a veth pair, one end moved into the pod's network namespace with its
//! addresses, routes and MTU, the other left on pipecd's side, where the datapath attaches.
//! (On a DPU node the pod's end is the SR-IOV/SDP VF that Marvell's k8s-cni-offload moves
//! into the pod, and pipecd's end its representor.) Done with iproute2's `ip` and
//! util-linux's `nsenter`, as an administrator would; a step that fails undoes the steps
//! before it, so nothing half-made is left.
//!
//! Routing is point to point, as Cilium and Calico do it: the pod holds its address as a
//! host address (/32, /128) and its default route goes through 169.254.1.1 on its link, a
//! neighbour entry that names the host end's MAC address; the host routes each pod address
//! to its host end with a neighbour entry for the pod's MAC. No ARP is needed either way,
//! and every packet a pod sends or receives crosses its host end, where pipecd's programs
//! are attached. The host forwards between pods (`net.ipv4.ip_forward=1`).

use crate::spec::{self, CniError};
use serde_json::Value;
use std::process::Command;

/// The pod's gateway: a link-local address nothing owns; a neighbour entry in the pod
/// names the host end's MAC address for it.
pub const GATEWAY: &str = "169.254.1.1";

/// The host end's name for a container's interface: stable (DEL computes it again without
/// any state) and at most 15 bytes, as Linux requires.
pub fn host_name(container_id: &str, ifname: &str) -> String {
    format!(
        "pc{:012x}",
        fnv(&format!("{container_id}/{ifname}")) & 0xffff_ffff_ffff
    )
}

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn run(args: &[&str]) -> Result<String, String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("{}: {e}", args[0]))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "`{}`: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn ip(args: &[&str]) -> Result<String, String> {
    let mut all = vec!["ip"];
    all.extend_from_slice(args);
    run(&all)
}

fn ip_in(netns: &str, args: &[&str]) -> Result<String, String> {
    let net = format!("--net={netns}");
    let mut all = vec!["nsenter", net.as_str(), "ip"];
    all.extend_from_slice(args);
    run(&all)
}

/// Whether `netns` names a network namespace that can be entered.
pub fn netns_exists(netns: &str) -> bool {
    std::path::Path::new(netns).exists() && ip_in(netns, &["link", "show", "dev", "lo"]).is_ok()
}

/// Whether the namespace has an interface named `ifname`.
pub fn exists_in(netns: &str, ifname: &str) -> bool {
    ip_in(netns, &["link", "show", "dev", ifname]).is_ok()
}

/// The MAC address of an interface (`ip -j link show`).
fn mac(netns: Option<&str>, ifname: &str) -> String {
    let args = ["-j", "link", "show", "dev", ifname];
    let out = match netns {
        Some(n) => ip_in(n, &args),
        None => ip(&args),
    };
    out.ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        .and_then(|v| v[0]["address"].as_str().map(str::to_string))
        .unwrap_or_default()
}

/// What [`setup`] made.
#[derive(Clone, Debug)]
pub struct Link {
    /// The host end.
    pub host: String,
    /// The host end's MAC address.
    pub host_mac: String,
    /// The pod end's MAC address.
    pub pod_mac: String,
}

/// Makes the pair and configures both ends. `addresses` are `ADDR/LEN` as IPAM gives them.
pub fn setup(
    netns: &str,
    ifname: &str,
    host: &str,
    addresses: &[String],
    mtu: u32,
) -> Result<Link, CniError> {
    let fail = |e: String| {
        let _ = ip(&["link", "del", host]);
        CniError::new(spec::LINK_FAILED, "setting up the pod's link failed").details(e)
    };
    let tmp = format!("pt{}", &host[2..]);
    let mtu = mtu.to_string();
    ip(&[
        "link", "add", host, "mtu", &mtu, "type", "veth", "peer", "name", &tmp, "mtu", &mtu,
    ])
    .map_err(|e| CniError::new(spec::LINK_FAILED, "making the veth pair failed").details(e))?;
    ip(&["link", "set", &tmp, "netns", netns]).map_err(fail)?;
    ip_in(netns, &["link", "set", &tmp, "name", ifname]).map_err(fail)?;
    ip_in(netns, &["link", "set", ifname, "up"]).map_err(fail)?;
    let host_mac = mac(None, host);
    let mut v4 = false;
    for a in addresses {
        ip_in(netns, &["addr", "add", &host_prefix(a), "dev", ifname]).map_err(fail)?;
        v4 |= !a.contains(':');
    }
    if v4 {
        ip_in(
            netns,
            &["route", "add", GATEWAY, "dev", ifname, "scope", "link"],
        )
        .map_err(fail)?;
        ip_in(
            netns,
            &[
                "neigh",
                "replace",
                GATEWAY,
                "lladdr",
                &host_mac,
                "dev",
                ifname,
                "nud",
                "permanent",
            ],
        )
        .map_err(fail)?;
        ip_in(
            netns,
            &["route", "add", "default", "via", GATEWAY, "dev", ifname],
        )
        .map_err(fail)?;
        std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")
            .map_err(|e| fail(format!("net.ipv4.ip_forward: {e}")))?;
    }
    ip(&["link", "set", host, "up"]).map_err(fail)?;
    let pod_mac = mac(Some(netns), ifname);
    for a in addresses {
        let route = host_prefix(a);
        let addr = a.split('/').next().unwrap_or(a);
        ip(&["route", "replace", &route, "dev", host]).map_err(fail)?;
        ip(&[
            "neigh",
            "replace",
            addr,
            "lladdr",
            &pod_mac,
            "dev",
            host,
            "nud",
            "permanent",
        ])
        .map_err(fail)?;
    }
    Ok(Link {
        host: host.to_string(),
        host_mac,
        pod_mac,
    })
}

/// The address as a host prefix (`10.0.0.5/24` → `10.0.0.5/32`).
fn host_prefix(a: &str) -> String {
    let addr = a.split('/').next().unwrap_or(a);
    if addr.contains(':') {
        format!("{addr}/128")
    } else {
        format!("{addr}/32")
    }
}

/// Removes the pair (deleting one end deletes both, and the host routes with it); nothing
/// to remove is not an error.
pub fn teardown(host: &str) -> Result<(), CniError> {
    match ip(&["link", "del", host]) {
        Ok(_) => Ok(()),
        Err(e) if e.contains("Cannot find device") || e.contains("does not exist") => Ok(()),
        Err(e) => {
            Err(CniError::new(spec::LINK_FAILED, "removing the pod's link failed").details(e))
        }
    }
}

/// Whether the pod end still has `address` (`ADDR/LEN` as IPAM gave it), for CHECK.
pub fn has_address(netns: &str, ifname: &str, address: &str) -> bool {
    let want = host_prefix(address);
    ip_in(netns, &["-o", "addr", "show", "dev", ifname])
        .is_ok_and(|t| t.split_whitespace().any(|w| w == want))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_are_stable_distinct_and_short() {
        let a = host_name("abc", "eth0");
        assert_eq!(a, host_name("abc", "eth0"));
        assert_ne!(a, host_name("abc", "eth1"));
        assert_ne!(a, host_name("abd", "eth0"));
        assert!(a.len() <= 15, "{a}");
    }
}
