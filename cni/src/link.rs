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

/// A locally administered MAC address for an interface name: the link's MAC addresses are
/// chosen, not read back, so that both ends can be configured without asking the kernel.
fn mac_for(name: &str, first: u8) -> String {
    let h = fnv(name).to_be_bytes();
    format!(
        "{first:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        h[3], h[4], h[5], h[6], h[7]
    )
}

/// Runs `commands` through one `ip -batch -` (in `netns` when given): one process for many
/// steps, which is most of what setting up a pod costs.
fn batch(netns: Option<&str>, commands: &[String]) -> Result<(), String> {
    use std::io::Write as _;
    let mut cmd = match netns {
        Some(n) => {
            let mut c = Command::new("nsenter");
            c.arg(format!("--net={n}")).arg("ip");
            c
        }
        None => Command::new("ip"),
    };
    let mut child = cmd
        .args(["-batch", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("ip: {e}"))?;
    let script = commands.join("\n") + "\n";
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .map_err(|e| format!("ip -batch: {e}"))?;
    }
    let out = child.wait_with_output().map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`ip -batch` of\n{script}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
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
    let (host_mac, pod_mac) = (mac_for(host, 0x0a), mac_for(host, 0x0e));
    ip(&[
        "link",
        "add",
        host,
        "address",
        &host_mac,
        "mtu",
        &mtu.to_string(),
        "type",
        "veth",
        "peer",
        "name",
        &tmp,
        "address",
        &pod_mac,
        "mtu",
        &mtu.to_string(),
    ])
    .map_err(|e| CniError::new(spec::LINK_FAILED, "making the veth pair failed").details(e))?;
    let v4 = addresses.iter().any(|a| !a.contains(':'));
    if v4 {
        std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")
            .map_err(|e| fail(format!("net.ipv4.ip_forward: {e}")))?;
    }
    // The host end: the pod end moved into the pod, then a route and a neighbour entry per
    // address.
    let mut host_side = vec![
        format!("link set {tmp} netns {netns}"),
        format!("link set {host} up"),
    ];
    for a in addresses {
        let addr = a.split('/').next().unwrap_or(a);
        host_side.push(format!("route replace {} dev {host}", host_prefix(a)));
        host_side.push(format!(
            "neigh replace {addr} lladdr {pod_mac} dev {host} nud permanent"
        ));
    }
    batch(None, &host_side).map_err(fail)?;
    // The pod end: its name, its addresses, the gateway's neighbour entry and the default
    // route.
    let mut pod_side = vec![
        format!("link set {tmp} name {ifname}"),
        format!("link set {ifname} up"),
    ];
    for a in addresses {
        pod_side.push(format!("addr add {} dev {ifname}", host_prefix(a)));
    }
    if v4 {
        pod_side.push(format!("route add {GATEWAY} dev {ifname} scope link"));
        pod_side.push(format!(
            "neigh replace {GATEWAY} lladdr {host_mac} dev {ifname} nud permanent"
        ));
        pod_side.push(format!("route add default via {GATEWAY} dev {ifname}"));
    }
    batch(Some(netns), &pod_side).map_err(fail)?;
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
