//! Service translation: a destination address and port → the candidate backends (DNAT).
//!
//! Spec: the Service concept page and API reference
//! (<https://kubernetes.io/docs/concepts/services-networking/service/>), "Service Internal
//! Traffic Policy", "Virtual IPs and Service Proxies" (traffic policies, KEP-1669
//! terminating endpoints), as kube-proxy and Cilium's load balancer implement them.
//!
//! - **Frontends**: a ClusterIP (any of `clusterIPs`) at a service port; a node address at a
//!   `nodePort` (NodePort and LoadBalancer services); a LoadBalancer ingress IP or an
//!   externalIP at a service port. A pod address is the pod itself; any other address is
//!   not translated. A frontend address without the probed port/protocol drops the
//!   connection (no rule forwards it); ICMP to a frontend is not forwarded.
//! - **Candidates**: the ready endpoints of the address family of the frontend; when none
//!   is ready, the serving-and-terminating ones (KEP-1669). `internalTrafficPolicy: Local`
//!   keeps, for ClusterIP traffic from a pod, only endpoints on the pod's node;
//!   `externalTrafficPolicy: Local` keeps, for NodePort traffic, only endpoints on the node
//!   that received it (for LoadBalancer IPs and externalIPs the receiving node is not known,
//!   and every endpoint stays a candidate). When a node is unknown nothing is filtered.
//!   No candidate left: the connection is rejected ("service has no ready endpoints", as
//!   kube-proxy's REJECT rule).
//! - **Ports**: service port → the endpoint port that serves it, matched by the service port
//!   name and protocol (the EndpointSlice convention; the model resolved named target ports
//!   per pod). An endpoint without that port is not a candidate for it.
//! - **Affinity**: `sessionAffinity: ClientIP` pins a client to the backend first chosen; it
//!   does not change the candidate set, so it is only noted.

use super::{Context, Destination, Peer};
use crate::model::{
    PodId, PortRef, Protocol, Service, ServiceEndpoint, ServiceId, ServicePort, ServiceType,
};
use serde::Serialize;
use std::fmt;
use std::net::IpAddr;

/// The frontend a connection reached a Service on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum Frontend {
    /// A cluster IP.
    ClusterIp(IpAddr),
    /// A headless service reached by name: no virtual IP, the client picks an endpoint.
    Headless,
    /// A node address at a node port.
    NodePort {
        /// The node that received the connection.
        node: String,
        /// Its address.
        ip: IpAddr,
    },
    /// A LoadBalancer ingress IP.
    LoadBalancer(IpAddr),
    /// An externalIP.
    ExternalIp(IpAddr),
}

impl fmt::Display for Frontend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Frontend::ClusterIp(ip) => write!(f, "ClusterIP {ip}"),
            Frontend::Headless => f.write_str("headless (no virtual IP)"),
            Frontend::NodePort { node, ip } => write!(f, "NodePort on node {node} ({ip})"),
            Frontend::LoadBalancer(ip) => write!(f, "LoadBalancer IP {ip}"),
            Frontend::ExternalIp(ip) => write!(f, "externalIP {ip}"),
        }
    }
}

impl Frontend {
    /// The frontend address, when there is one.
    pub fn ip(&self) -> Option<IpAddr> {
        match self {
            Frontend::ClusterIp(ip)
            | Frontend::LoadBalancer(ip)
            | Frontend::ExternalIp(ip)
            | Frontend::NodePort { ip, .. } => Some(*ip),
            Frontend::Headless => None,
        }
    }

    fn is_external(&self) -> bool {
        matches!(
            self,
            Frontend::NodePort { .. } | Frontend::LoadBalancer(_) | Frontend::ExternalIp(_)
        )
    }
}

/// One backend the load balancer may choose.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Candidate {
    /// The backend pod, when the address is a known pod.
    pub pod: Option<PodId>,
    /// Address after DNAT.
    pub ip: IpAddr,
    /// Port after DNAT.
    pub port: u16,
    /// The node the backend runs on.
    pub node: Option<String>,
    /// Whether the endpoint is ready (else serving and terminating).
    pub ready: bool,
}

/// How a Service destination was translated.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ServiceResolution {
    /// The service.
    pub service: ServiceId,
    /// The frontend reached.
    pub frontend: Frontend,
    /// The port the client connected to (the node port for NodePort).
    pub frontend_port: u16,
    /// Protocol.
    pub protocol: Protocol,
    /// The service port.
    pub service_port: u16,
    /// The service port's name.
    pub port_name: Option<String>,
    /// The target port as the Service declares it (number or container port name).
    pub target: PortRef,
    /// The backends the load balancer may choose, sorted by address.
    pub candidates: Vec<Candidate>,
    /// ClientIP session affinity timeout in seconds, when affinity is on.
    pub affinity_timeout: Option<u32>,
    /// What shaped the candidate set (fallbacks, traffic policies, affinity).
    pub notes: Vec<String>,
    /// Why there is no candidate, when there is none.
    pub empty_reason: Option<String>,
}

/// Where a destination leads.
pub(crate) enum Routed {
    /// Straight to an address (a pod's, or one outside the pod network).
    Direct {
        /// The pod with that address (host-network pods included).
        pod: Option<PodId>,
        /// The address.
        ip: IpAddr,
    },
    /// Through a Service.
    Service(ServiceResolution),
    /// Nowhere: the connection is dropped before any policy.
    Unreachable(String),
}

/// Resolves a destination for a connection from `from`.
pub(crate) fn resolve(
    ctx: &Context,
    from: Peer,
    to: &Destination,
    protocol: Protocol,
    port: Option<u16>,
) -> Routed {
    let cluster = ctx.cluster;
    match *to {
        Destination::Pod(p) => match cluster.pod(p).ip() {
            Some(ip) => Routed::Direct { pod: Some(p), ip },
            None => Routed::Unreachable(format!("pod {} has no IP", cluster.pod(p).key())),
        },
        Destination::Service { service, port } => {
            let svc = cluster.service(service);
            let frontend = match svc.cluster_ips.first() {
                Some(ip) => Frontend::ClusterIp(*ip),
                None => Frontend::Headless,
            };
            by_service_port(ctx, from, service, frontend, protocol, Some(port))
        }
        Destination::Ip(ip) => {
            if let Some(p) = ctx.pod_by_ip(ip) {
                return Routed::Direct { pod: Some(p), ip };
            }
            if let Some(routed) = by_frontend_address(ctx, from, ip, protocol, port) {
                return routed;
            }
            if let (Some(node), Some(port)) = (ctx.node_by_ip(ip), port) {
                for (i, svc) in cluster.services.iter().enumerate() {
                    if !matches!(
                        svc.service_type,
                        ServiceType::NodePort | ServiceType::LoadBalancer
                    ) {
                        continue;
                    }
                    if let Some(sp) = svc
                        .ports
                        .iter()
                        .find(|sp| sp.node_port == Some(port) && sp.protocol == protocol)
                    {
                        let frontend = Frontend::NodePort {
                            node: node.to_string(),
                            ip,
                        };
                        return Routed::Service(translate(
                            ctx,
                            from,
                            ServiceId(i as u32),
                            frontend,
                            port,
                            sp,
                        ));
                    }
                }
            }
            let host_pod = cluster
                .pod_ids()
                .find(|p| cluster.pod(*p).ips.contains(&ip));
            Routed::Direct { pod: host_pod, ip }
        }
    }
}

/// A connection to `ip` when it is a Service frontend address (a cluster, load-balancer or
/// external IP), `None` when it is not. Several Services may share a load-balancer or
/// external IP on different ports (MetalLB's `allow-shared-ip`, or one external IP for a
/// web and a mail Service): kube-proxy writes a rule per address, port and protocol, so the
/// connection goes to the Service that has its port, and is dropped only when none of them
/// has it. (The model refuses two Services on one address, port and protocol.)
fn by_frontend_address(
    ctx: &Context,
    from: Peer,
    ip: IpAddr,
    protocol: Protocol,
    port: Option<u16>,
) -> Option<Routed> {
    let mut first_unreachable = None;
    for (i, svc) in ctx.cluster.services.iter().enumerate() {
        if svc.service_type == ServiceType::ExternalName {
            continue;
        }
        let frontend = if svc.cluster_ips.contains(&ip) {
            Frontend::ClusterIp(ip)
        } else if svc.load_balancer_ips.contains(&ip) {
            Frontend::LoadBalancer(ip)
        } else if svc.external_ips.contains(&ip) {
            Frontend::ExternalIp(ip)
        } else {
            continue;
        };
        match by_service_port(ctx, from, ServiceId(i as u32), frontend, protocol, port) {
            Routed::Unreachable(why) => {
                first_unreachable.get_or_insert(Routed::Unreachable(why));
            }
            routed => return Some(routed),
        }
    }
    first_unreachable
}

/// Translates a connection to `frontend` at service port `port`.
fn by_service_port(
    ctx: &Context,
    from: Peer,
    id: ServiceId,
    frontend: Frontend,
    protocol: Protocol,
    port: Option<u16>,
) -> Routed {
    let svc = ctx.cluster.service(id);
    if svc.service_type == ServiceType::ExternalName {
        return Routed::Unreachable(format!(
            "service {} is an ExternalName service (DNS only, no datapath)",
            svc.key()
        ));
    }
    let Some(port) = port.filter(|_| protocol.has_ports()) else {
        return Routed::Unreachable(format!(
            "service {} forwards TCP, UDP and SCTP only; {protocol} to its frontend is dropped",
            svc.key()
        ));
    };
    match svc
        .ports
        .iter()
        .find(|sp| sp.port == port && sp.protocol == protocol)
    {
        Some(sp) => Routed::Service(translate(ctx, from, id, frontend, port, sp)),
        None => Routed::Unreachable(format!(
            "service {} has no port {port}/{protocol}",
            svc.key()
        )),
    }
}

fn translate(
    ctx: &Context,
    from: Peer,
    id: ServiceId,
    frontend: Frontend,
    frontend_port: u16,
    sp: &ServicePort,
) -> ServiceResolution {
    let cluster = ctx.cluster;
    let svc: &Service = cluster.service(id);
    let mut notes = Vec::new();
    let family = frontend.ip().map(|ip| ip.is_ipv6());
    let eligible: Vec<&ServiceEndpoint> = svc
        .backends
        .iter()
        .filter(|b| family.is_none_or(|v6| b.ip.is_ipv6() == v6))
        .collect();
    let mut empty_reason = None;
    let ready: Vec<&ServiceEndpoint> = eligible.iter().copied().filter(|b| b.ready).collect();
    let mut pool = if ready.is_empty() {
        let terminating: Vec<&ServiceEndpoint> = eligible
            .iter()
            .copied()
            .filter(|b| b.serving && b.terminating)
            .collect();
        if !terminating.is_empty() {
            notes.push(
                "no ready endpoint: serving terminating endpoints take the traffic (KEP-1669)"
                    .to_string(),
            );
        }
        terminating
    } else {
        ready
    };
    if pool.is_empty() {
        empty_reason = Some("service has no ready endpoints".to_string());
    }
    let local = if frontend.is_external() && svc.external_local {
        match &frontend {
            Frontend::NodePort { node, .. } => Some(("externalTrafficPolicy: Local", node.clone())),
            _ => {
                notes.push(
                    "externalTrafficPolicy: Local, but the receiving node is not known: every endpoint is a candidate"
                        .to_string(),
                );
                None
            }
        }
    } else if !frontend.is_external() && svc.internal_local {
        let node = match from {
            Peer::Pod(p) => cluster.pod(p).node.clone(),
            Peer::External(_) => None,
        };
        match node {
            Some(n) => Some(("internalTrafficPolicy: Local", n)),
            None => {
                notes.push(
                    "internalTrafficPolicy: Local, but the client's node is not known: every endpoint is a candidate"
                        .to_string(),
                );
                None
            }
        }
    } else {
        None
    };
    if let Some((policy, node)) = &local {
        pool.retain(|b| b.node.as_deref() == Some(node.as_str()));
        notes.push(format!("{policy}: only endpoints on node {node}"));
        if pool.is_empty() && empty_reason.is_none() {
            empty_reason = Some(format!(
                "service has no ready endpoints on node {node} ({policy})"
            ));
        }
    }
    let wanted = sp.name.as_deref().filter(|n| !n.is_empty());
    let mut candidates: Vec<Candidate> = pool
        .iter()
        .filter_map(|b| {
            let ep = b.ports.iter().find(|p| {
                p.name.as_deref().filter(|n| !n.is_empty()) == wanted && p.protocol == sp.protocol
            })?;
            Some(Candidate {
                pod: b.pod,
                ip: b.ip,
                port: ep.port,
                node: b.node.clone(),
                ready: b.ready,
            })
        })
        .collect();
    candidates.sort_by_key(|c| (c.ip, c.port));
    if candidates.is_empty() && empty_reason.is_none() {
        empty_reason = Some(format!(
            "service has no ready endpoints serving port {}",
            sp.name.as_deref().unwrap_or(&sp.port.to_string())
        ));
    }
    if let Some(t) = svc.affinity_timeout {
        notes.push(format!(
            "sessionAffinity: ClientIP ({t}s): a client sticks to its first backend; the candidates are unchanged"
        ));
    }
    ServiceResolution {
        service: id,
        frontend,
        frontend_port,
        protocol: sp.protocol,
        service_port: sp.port,
        port_name: sp.name.clone(),
        target: sp.target.clone(),
        candidates,
        affinity_timeout: svc.affinity_timeout,
        notes,
        empty_reason,
    }
}

/// Resolves `port`/`protocol` of a service reached on its cluster IP (or by name, for a
/// headless service) by a client whose node is unknown: the candidate set, or why the
/// connection goes nowhere.
pub fn resolve_service_port(
    ctx: &Context,
    service: ServiceId,
    port: u16,
    protocol: Protocol,
) -> Result<ServiceResolution, String> {
    let svc = ctx.cluster.service(service);
    let frontend = match svc.cluster_ips.first() {
        Some(ip) => Frontend::ClusterIp(*ip),
        None => Frontend::Headless,
    };
    let client = Peer::External(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
    match by_service_port(ctx, client, service, frontend, protocol, Some(port)) {
        Routed::Service(res) => Ok(res),
        Routed::Unreachable(why) => Err(why),
        Routed::Direct { .. } => Err(format!("{} is not translated", svc.key())),
    }
}

#[cfg(test)]
mod tests {
    use crate::semantics::testutil::{allowed, cluster, describe, eval};

    const NODES_AND_PODS: &str = "apiVersion: v1
kind: Node
metadata: {name: n1}
status: {addresses: [{type: InternalIP, address: 172.18.0.1}]}
---
apiVersion: v1
kind: Node
metadata: {name: n2}
status: {addresses: [{type: InternalIP, address: 172.18.0.2}]}
---
apiVersion: v1
kind: Pod
metadata: {name: web-1, namespace: default, labels: {app: web}}
spec:
  nodeName: n1
  containers: [{name: c, ports: [{name: http, containerPort: 8080}]}]
status: {podIP: 10.244.1.5}
---
apiVersion: v1
kind: Pod
metadata: {name: web-2, namespace: default, labels: {app: web}}
spec:
  nodeName: n2
  containers: [{name: c, ports: [{name: http, containerPort: 8081}]}]
status: {podIP: 10.244.2.5}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: default}
spec:
  nodeName: n1
  containers: [{name: c}]
status: {podIP: 10.244.1.9}
---
";

    fn with_service(spec: &str) -> crate::model::Cluster {
        cluster(&format!(
            "{NODES_AND_PODS}apiVersion: v1
kind: Service
metadata: {{name: web, namespace: default}}
spec:
  selector: {{app: web}}
  clusterIP: 10.96.0.10
  ports: [{{name: http, port: 80, targetPort: http, nodePort: 30080}}]
{spec}"
        ))
    }

    #[test]
    fn cluster_ip_translates_named_target_ports_per_pod() {
        let c = with_service("  type: NodePort\n  sessionAffinity: ClientIP\n");
        insta::assert_snapshot!(describe(&c, &eval(&c, "default/client", "ip:10.96.0.10", "80/TCP")), @r"
        allow: every one of 2 candidates: egress and ingress allow
        service default/web via ClusterIP 10.96.0.10
          candidate default/web-1 10.244.1.5:8080
          candidate default/web-2 10.244.2.5:8081
          note sessionAffinity: ClientIP (10800s): a client sticks to its first backend; the candidates are unchanged
          egress allow [default] no policy isolates the pod for egress
          ingress allow [default] no policy isolates the pod for ingress
          egress allow [default] no policy isolates the pod for egress
          ingress allow [default] no policy isolates the pod for ingress
        ");
        let o = eval(&c, "default/client", "ip:10.96.0.10", "81/TCP");
        assert_eq!(o.reason, "service default/web has no port 81/TCP");
        let o = eval(&c, "ip:192.0.2.1", "ip:172.18.0.2", "30080/TCP");
        assert_eq!(o.paths.len(), 2, "NodePort reaches every backend");
    }

    #[test]
    fn traffic_policies_keep_local_endpoints() {
        let c = with_service(
            "  type: NodePort\n  internalTrafficPolicy: Local\n  externalTrafficPolicy: Local\n",
        );
        let o = eval(&c, "default/client", "svc:default/web", "80/TCP");
        let pods: Vec<_> = o.paths.iter().map(|p| p.dst_port).collect();
        assert_eq!(
            pods,
            vec![Some(8080)],
            "only web-1 is on the client's node n1"
        );
        let o = eval(&c, "ip:192.0.2.1", "ip:172.18.0.2", "30080/TCP");
        let pods: Vec<_> = o.paths.iter().map(|p| p.dst_port).collect();
        assert_eq!(
            pods,
            vec![Some(8081)],
            "only web-2 is on the receiving node n2"
        );
    }

    #[test]
    fn no_endpoints_is_a_reject_and_terminating_endpoints_are_a_fallback() {
        let c = cluster(&format!(
            "{NODES_AND_PODS}apiVersion: v1
kind: Service
metadata: {{name: empty, namespace: default}}
spec:
  clusterIP: 10.96.0.11
  selector: {{app: nobody}}
  ports: [{{port: 80}}]
---
apiVersion: v1
kind: Service
metadata: {{name: draining, namespace: default}}
spec:
  clusterIP: 10.96.0.12
  externalIPs: [198.51.100.7]
  ports: [{{port: 80, targetPort: 8080}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: draining-1
  namespace: default
  labels: {{kubernetes.io/service-name: draining}}
addressType: IPv4
ports: [{{port: 8080, protocol: TCP}}]
endpoints:
- addresses: [10.244.1.5]
  conditions: {{ready: false, serving: true, terminating: true}}
- addresses: [10.244.2.5]
  conditions: {{ready: false, serving: false, terminating: true}}
"
        ));
        let o = eval(&c, "default/client", "svc:default/empty", "80/TCP");
        assert_eq!(o.reason, "service has no ready endpoints");
        assert_eq!(o.allowed(), Some(false));
        let o = eval(&c, "ip:192.0.2.1", "ip:198.51.100.7", "80/TCP");
        assert_eq!(o.paths.len(), 1, "only the serving terminating endpoint");
        assert!(allowed(
            &c,
            "default/client",
            "svc:default/draining",
            "80/TCP"
        ));
    }

    /// Two Services on one load-balancer IP at different ports (MetalLB's shared IPs):
    /// each port goes to its own Service, whichever comes first in the cluster, and only a
    /// port neither has is dropped.
    #[test]
    fn a_shared_frontend_address_goes_to_the_service_with_the_port() {
        let c = with_service(
            "  type: NodePort
  externalIPs: [198.51.100.9]
---
apiVersion: v1
kind: Service
metadata: {name: mail, namespace: default}
spec:
  selector: {app: web}
  clusterIP: 10.96.0.25
  externalIPs: [198.51.100.9]
  ports: [{name: smtp, port: 25, targetPort: 8080}]
",
        );
        for (port, service) in [("80/TCP", "default/web"), ("25/TCP", "default/mail")] {
            let o = eval(&c, "ip:192.0.2.1", "ip:198.51.100.9", port);
            assert_eq!(o.allowed(), Some(true), "{port}: {}", o.reason);
            let text = describe(&c, &o);
            assert!(
                text.contains(&format!("service {service} via")),
                "{port}: {text}"
            );
        }
        let o = eval(&c, "ip:192.0.2.1", "ip:198.51.100.9", "443/TCP");
        assert_eq!(o.allowed(), Some(false));
        assert!(o.reason.ends_with("has no port 443/TCP"), "{}", o.reason);
    }
}
