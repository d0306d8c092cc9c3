//! Service backends: from EndpointSlices, legacy Endpoints, or the Service's selector.
//!
//! EndpointSlices win when any exist for a Service (they are what kube-proxy and Cilium
//! read); a legacy Endpoints object is used next; otherwise the selector is matched against
//! the model's pods, as the EndpointSlice controller would, with each target port resolved
//! on each pod (a pod without the named port does not serve that port).

use super::*;
use crate::diag::{Code, Diagnostic, Sink};
use crate::source::{FieldPath, Sources};
use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::discovery::v1 as discovery;
use std::collections::BTreeMap;

type Located<'a, T> = (&'a Box<T>, super::build::At<'a>);

/// Fills `backends` and `backend_source` of every service.
pub(super) fn resolve(
    sources: &Sources,
    cluster: &mut Cluster,
    slices: &[Located<'_, discovery::EndpointSlice>],
    endpoints: &[Located<'_, core::Endpoints>],
    sink: &mut Sink,
) {
    let pod_by_ip: crate::util::FxHashMap<IpAddr, PodId> = cluster
        .pods
        .iter()
        .enumerate()
        .filter(|(_, p)| !p.host_network)
        .flat_map(|(i, p)| p.ips.iter().map(move |ip| (*ip, PodId(i as u32))))
        .collect();
    let mut from_slices: BTreeMap<(String, String), Vec<ServiceEndpoint>> = BTreeMap::new();
    let mut slice_label: BTreeMap<(String, String), crate::source::Span> = BTreeMap::new();
    for (slice, at) in slices {
        let ns = slice
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let Some(svc) = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("kubernetes.io/service-name"))
            .cloned()
        else {
            sink.push(
                Diagnostic::warning(Code::UnknownReference, "EndpointSlice has no `kubernetes.io/service-name` label and belongs to no Service")
                    .at(sources.locate_key(at.span, &FieldPath::parse("metadata")), "no service-name label")
                    .hint("add the label `kubernetes.io/service-name: <service>`"),
            );
            continue;
        };
        if slice.address_type == "FQDN" {
            continue;
        }
        let ports = slice_ports(slice.ports.as_deref().unwrap_or(&[]));
        // Only the object's span is kept: locating the label re-reads the object's text,
        // which is worth paying only for the rare slice whose Service is missing.
        slice_label
            .entry((ns.clone(), svc.clone()))
            .or_insert(at.span);
        let list = from_slices.entry((ns, svc)).or_default();
        for (i, ep) in slice.endpoints.iter().enumerate() {
            let cond = ep.conditions.clone().unwrap_or_default();
            let ready = cond.ready.unwrap_or(true);
            for (j, addr) in ep.addresses.iter().enumerate() {
                let Ok(ip) = addr.parse::<IpAddr>() else {
                    sink.push(
                        Diagnostic::error(
                            Code::InvalidCidr,
                            format!("endpoint address `{addr}` is not an IP address"),
                        )
                        .at(
                            sources.locate(
                                at.span,
                                &FieldPath::parse(&format!("endpoints[{i}].addresses[{j}]")),
                            ),
                            "not an IP",
                        )
                        .hint("an endpoint address of an IPv4 or IPv6 slice is an IP address"),
                    );
                    continue;
                };
                list.push(ServiceEndpoint {
                    ip,
                    pod: pod_by_ip.get(&ip).copied(),
                    node: ep.node_name.clone(),
                    ready,
                    serving: cond.serving.unwrap_or(ready),
                    terminating: cond.terminating.unwrap_or(false),
                    ports: ports.clone(),
                });
            }
        }
    }
    let mut from_endpoints: BTreeMap<(String, String), Vec<ServiceEndpoint>> = BTreeMap::new();
    for (eps, _) in endpoints {
        let ns = eps
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let name = eps.metadata.name.clone().unwrap_or_default();
        let list = from_endpoints.entry((ns, name)).or_default();
        for subset in eps.subsets.iter().flatten() {
            let ports: Vec<EndpointPort> = subset
                .ports
                .iter()
                .flatten()
                .filter_map(|p| {
                    let port = u16::try_from(p.port).ok()?;
                    Some(EndpointPort {
                        name: p.name.clone(),
                        port,
                        protocol: Protocol::parse(p.protocol.as_deref().unwrap_or("TCP"))?,
                    })
                })
                .collect();
            for (addrs, ready) in [
                (&subset.addresses, true),
                (&subset.not_ready_addresses, false),
            ] {
                for a in addrs.iter().flatten() {
                    let Ok(ip) = a.ip.parse::<IpAddr>() else {
                        continue;
                    };
                    list.push(ServiceEndpoint {
                        ip,
                        pod: pod_by_ip.get(&ip).copied(),
                        node: a.node_name.clone(),
                        ready,
                        serving: ready,
                        terminating: false,
                        ports: ports.clone(),
                    });
                }
            }
        }
    }
    for i in 0..cluster.services.len() {
        let key = (
            cluster.services[i].namespace.clone(),
            cluster.services[i].name.clone(),
        );
        let (mut backends, source) = if let Some(b) = from_slices.remove(&key) {
            (b, BackendSource::EndpointSlices)
        } else if let Some(b) = from_endpoints.remove(&key) {
            (b, BackendSource::Endpoints)
        } else if cluster.services[i].selector.is_some() {
            (
                selector_backends(cluster, &cluster.services[i]),
                BackendSource::Selector,
            )
        } else {
            (Vec::new(), BackendSource::None)
        };
        backends.sort_by_key(|b| b.ip);
        backends.dedup_by(|a, b| a.ip == b.ip);
        let svc = &mut cluster.services[i];
        svc.backends = backends;
        svc.backend_source = source;
    }
    for ((ns, name), _) in from_slices {
        let mut d = Diagnostic::warning(
            Code::UnknownReference,
            format!("EndpointSlices name Service {ns}/{name}, which is not defined"),
        )
        .hint("add the Service, or remove the slices");
        if let Some(object) = slice_label.get(&(ns, name)) {
            let label = FieldPath(vec![
                crate::source::PathSeg::Key("metadata".into()),
                crate::source::PathSeg::Key("labels".into()),
                crate::source::PathSeg::Key("kubernetes.io/service-name".into()),
            ]);
            d = d.at(sources.locate(*object, &label), "no Service of this name");
        }
        sink.push(d);
    }
}

fn slice_ports(ports: &[discovery::EndpointPort]) -> Vec<EndpointPort> {
    ports
        .iter()
        .filter_map(|p| {
            let port = u16::try_from(p.port?).ok()?;
            let protocol = Protocol::parse(p.protocol.as_deref().unwrap_or("TCP"))?;
            Some(EndpointPort {
                name: p.name.clone().filter(|n| !n.is_empty()),
                port,
                protocol,
            })
        })
        .collect()
}

fn selector_backends(cluster: &Cluster, svc: &Service) -> Vec<ServiceEndpoint> {
    let Some(selector) = &svc.selector else {
        return Vec::new();
    };
    let selector = Selector::from_labels(selector.clone());
    cluster
        .pods
        .iter()
        .enumerate()
        // Host-network pods are endpoints too, at their node's address (the
        // EndpointSlice controller lists `status.podIPs`, which are the host IPs).
        .filter(|(_, p)| p.namespace == svc.namespace && selector.matches(&p.labels))
        .flat_map(|(i, pod)| {
            let ports: Vec<EndpointPort> = svc
                .ports
                .iter()
                .filter_map(|sp| {
                    let port = match &sp.target {
                        PortRef::Number(n) => *n,
                        PortRef::Name(name) => pod.named_port(name, sp.protocol)?,
                    };
                    Some(EndpointPort {
                        name: sp.name.clone(),
                        port,
                        protocol: sp.protocol,
                    })
                })
                .collect();
            pod.ips.iter().map(move |ip| ServiceEndpoint {
                ip: *ip,
                pod: Some(PodId(i as u32)),
                node: pod.node.clone(),
                ready: true,
                serving: true,
                terminating: false,
                ports: ports.clone(),
            })
        })
        .collect()
}
