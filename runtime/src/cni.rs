//! Pods the CNI plugin wired on this node: their attachments, kept across restarts, and how
//! one is applied (the pod's port attached, its addresses given to the session, the
//! operations applied) or removed.
//!
//! The order makes a pod default-deny until its policy is in place: the programs are
//! attached to the pod's port first (they drop what comes from or goes to an address with
//! no endpoint), then the endpoint and its policy are applied in one session change. A
//! deletion removes the endpoint before the plugin releases the address, so a reused
//! address never matches its old identity.

use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// One pod interface the CNI reported.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    /// The container (sandbox) id.
    pub container_id: String,
    /// The interface name inside the pod.
    pub ifname: String,
    /// The pod's namespace.
    pub pod_namespace: String,
    /// The pod's name.
    pub pod_name: String,
    /// The pod's UID (empty when the runtime gave none).
    pub pod_uid: String,
    /// The pod's port on this side (a veth's host end, a VF representor).
    pub host_ifname: String,
    /// The pod's addresses.
    pub ips: Vec<IpAddr>,
}

impl Attachment {
    /// The attachment of a request, checked.
    pub fn from_wire(a: pipec_proto::v1::Attachment) -> Result<Attachment, String> {
        let mut ips = Vec::new();
        for ip in &a.ips {
            ips.push(
                ip.parse::<IpAddr>()
                    .map_err(|_| format!("`{ip}` is not an IP address"))?,
            );
        }
        for (field, value) in [
            ("container_id", &a.container_id),
            ("ifname", &a.ifname),
            ("pod_namespace", &a.pod_namespace),
            ("pod_name", &a.pod_name),
            ("host_ifname", &a.host_ifname),
        ] {
            if value.is_empty() {
                return Err(format!("{field} is empty"));
            }
        }
        if ips.is_empty() {
            return Err("the pod has no address".into());
        }
        Ok(Attachment {
            container_id: a.container_id,
            ifname: a.ifname,
            pod_namespace: a.pod_namespace,
            pod_name: a.pod_name,
            pod_uid: a.pod_uid,
            host_ifname: a.host_ifname,
            ips,
        })
    }

    /// The key the daemon keeps it under.
    pub fn key(&self) -> (String, String) {
        (self.container_id.clone(), self.ifname.clone())
    }

    /// The session event that gives the pod its addresses (`forget`: takes them away).
    pub fn event(&self, forget: bool) -> pipec::session::Event {
        pipec::session::Event::PodAddresses {
            namespace: self.pod_namespace.clone(),
            name: self.pod_name.clone(),
            ips: if forget { Vec::new() } else { self.ips.clone() },
        }
    }
}

/// The ifindex of an interface in pipecd's network namespace, `None` when there is no such
/// interface. Asked of the kernel through `ip` rather than read from `/sys/class/net`, which
/// shows the namespace sysfs was mounted in, not necessarily pipecd's.
pub fn ifindex(name: &str) -> Option<u32> {
    let out = std::process::Command::new("ip")
        .args(["-j", "link", "show", "dev", name])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    v[0]["ifindex"].as_u64().and_then(|i| u32::try_from(i).ok())
}
