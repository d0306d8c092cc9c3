//! Network namespaces for the tests that send real packets.
//!
//! A [`PodNet`] is a node namespace and one namespace per pod. Each pod's `eth0` is one end
//! of a veth pair whose other end is in the node namespace, as the DPU-side end of a pod's
//! VF is on a DPU. The pod routes everything through `169.254.1.1`, the address every
//! node-side end holds (the layout Calico and Cilium use), and the node has a `/32` route
//! to each pod, forwards between them and does no reverse-path filtering. Every namespace
//! is deleted when the `PodNet` is dropped, whether the test passed or not.
//!
//! The tests' own threads stay in the test's namespace: [`in_netns`] runs a closure on a
//! thread that entered a namespace, so traffic goes only to namespaces the test made.
//! Everything here needs root.
#![allow(unsafe_code, reason = "setns(2) has no safe wrapper in std")]

use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// Runs `ip` (iproute2) with `args`; panics with what it printed when it fails.
pub fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("run ip (iproute2)");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A tag no other call in any process running now returns, `{pid}-{n}`: namespace names
/// built from it do not collide between tests running at once.
pub fn unique_tag() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Runs `f` on a thread that entered the network namespace `ns` (named, under
/// `/run/netns`) and returns what it returned; the calling thread stays where it is.
pub fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            enter_netns(ns);
            f()
        })
        .join()
        .expect("a thread in a network namespace panicked")
    })
}

/// Moves the calling thread into the network namespace `ns`; for threads that outlive a
/// call (a server the test talks to), where [`in_netns`] does not fit.
pub fn enter_netns(ns: &str) {
    let file = std::fs::File::open(format!("/run/netns/{ns}"))
        .unwrap_or_else(|e| panic!("open the network namespace {ns}: {e}"));
    // SAFETY: a valid namespace file descriptor; setns changes only this thread's network
    // namespace, and the file stays open for the call.
    let r = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(r, 0, "setns into {ns}: {}", std::io::Error::last_os_error());
}

/// Deletes the network namespace `ns` if it exists, saying nothing either way.
pub fn delete_netns(ns: &str) {
    let _ = Command::new("ip")
        .args(["netns", "del", ns])
        .stderr(Stdio::null())
        .status();
}

/// The address of every node-side end of a pod's veth, the pods' default gateway.
pub const GATEWAY: &str = "169.254.1.1";

/// One pod of a [`PodNet`].
#[derive(Clone, Debug)]
pub struct Pod {
    /// The pod's network namespace.
    pub ns: String,
    /// The node-side end of its veth, in the node namespace.
    pub host_if: String,
    /// Its IPv4 address, on its `eth0`.
    pub addr: String,
}

/// A node namespace and pod namespaces behind veth pairs (see the crate documentation),
/// deleted on drop.
#[derive(Debug)]
pub struct PodNet {
    /// The node's network namespace.
    pub node: String,
    /// The pods, in the order they were added.
    pub pods: Vec<Pod>,
}

impl PodNet {
    /// The node namespace `node`, with loopback up, forwarding on and reverse-path
    /// filtering off; a namespace left with that name by an earlier run is deleted first.
    pub fn new(node: &str) -> PodNet {
        delete_netns(node);
        ip(&["netns", "add", node]);
        // From here on a failure deletes what exists.
        let net = PodNet {
            node: node.to_string(),
            pods: Vec::new(),
        };
        ip(&["-n", node, "link", "set", "lo", "up"]);
        // Set before any veth exists, so that `default` reaches every interface too.
        for sysctl in [
            "net.ipv4.ip_forward=1",
            "net.ipv4.conf.all.rp_filter=0",
            "net.ipv4.conf.default.rp_filter=0",
        ] {
            ip(&["netns", "exec", node, "sysctl", "-qw", sysctl]);
        }
        net
    }

    /// Adds the pod namespace `ns` with the IPv4 address `addr`; its veth's node-side end
    /// is `host_if`.
    pub fn add_pod(&mut self, ns: &str, host_if: &str, addr: &str) {
        delete_netns(ns);
        ip(&["netns", "add", ns]);
        self.pods.push(Pod {
            ns: ns.to_string(),
            host_if: host_if.to_string(),
            addr: addr.to_string(),
        });
        let n = self.node.as_str();
        ip(&[
            "-n", n, "link", "add", host_if, "type", "veth", "peer", "name", "eth0", "netns", ns,
        ]);
        ip(&[
            "-n",
            n,
            "addr",
            "add",
            &format!("{GATEWAY}/32"),
            "dev",
            host_if,
        ]);
        ip(&["-n", n, "link", "set", host_if, "up"]);
        ip(&[
            "-n",
            n,
            "route",
            "add",
            &format!("{addr}/32"),
            "dev",
            host_if,
        ]);
        ip(&["-n", ns, "link", "set", "lo", "up"]);
        ip(&[
            "-n",
            ns,
            "addr",
            "add",
            &format!("{addr}/32"),
            "dev",
            "eth0",
        ]);
        ip(&["-n", ns, "link", "set", "eth0", "up"]);
        ip(&["-n", ns, "route", "add", GATEWAY, "dev", "eth0"]);
        ip(&[
            "-n", ns, "route", "add", "default", "via", GATEWAY, "dev", "eth0",
        ]);
    }

    /// The interface index of `iface` in the node namespace.
    pub fn ifindex(&self, iface: &str) -> u32 {
        let out = Command::new("ip")
            .args(["-n", &self.node, "-o", "link", "show", iface])
            .output()
            .expect("run ip (iproute2)");
        let text = String::from_utf8_lossy(&out.stdout);
        text.split(':')
            .next()
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("the ifindex of {iface} in {}: {text}", self.node))
    }
}

impl Drop for PodNet {
    fn drop(&mut self) {
        // Deleting a pod's namespace deletes its veth pair, both ends.
        for pod in &self.pods {
            delete_netns(&pod.ns);
        }
        delete_netns(&self.node);
    }
}
