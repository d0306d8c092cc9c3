//! Unit tests of the model stage on well-formed input.

use crate::driver::load_texts;
use crate::model::build::BuildOptions;
use crate::model::*;

fn load_ok(texts: &[(&str, &str)]) -> Cluster {
    let loaded = load_texts(texts, &BuildOptions::default());
    let rendered = crate::diag::emit_to_string(&loaded.sources, &loaded.diags);
    assert!(!loaded.has_errors(), "unexpected errors:\n{rendered}");
    loaded.cluster
}

const APP: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {team: a}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
        - name: c
          ports: [{name: http, containerPort: 8080}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db, namespace: shop}
spec:
  replicas: 2
  serviceName: db
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec: {containers: [{name: c}]}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http}]
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: shop}
spec:
  clusterIP: None
  selector: {app: db}
  ports: [{port: 5432}]
"#;

#[test]
fn workloads_expand_into_deterministic_pods_with_ips() {
    let c = load_ok(&[("app.yaml", APP)]);
    let names: Vec<String> = c.pods.iter().map(|p| p.key()).collect();
    assert_eq!(names.len(), 5);
    assert!(names.contains(&"shop/db-0".to_string()) && names.contains(&"shop/db-1".to_string()));
    assert_eq!(
        names.iter().filter(|n| n.starts_with("shop/web-")).count(),
        3
    );
    assert!(
        c.pods.iter().all(|p| p.ips.len() == 1),
        "every expanded pod gets an IP"
    );
    // A second run gives the same names and addresses.
    let again = load_ok(&[("app.yaml", APP)]);
    assert_eq!(c.pods, again.pods);
}

#[test]
fn selector_backends_resolve_named_target_ports_and_headless_services_get_no_ip() {
    let c = load_ok(&[("app.yaml", APP)]);
    let web = c.service(c.find_service("shop", "web").unwrap());
    assert_eq!(web.backend_source, BackendSource::Selector);
    assert_eq!(web.backends.len(), 3);
    assert!(web.backends.iter().all(|b| b.ports[0].port == 8080));
    assert_eq!(
        web.cluster_ips.len(),
        1,
        "a ClusterIP is assigned from the service CIDR"
    );
    let db = c.service(c.find_service("shop", "db").unwrap());
    assert!(db.cluster_ips.is_empty());
}

#[test]
fn kubectl_lists_in_yaml_and_json_give_the_same_model() {
    let yaml = r#"
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Pod
  metadata: {name: a, namespace: x, labels: {app: a}}
  spec: {containers: [{name: c, ports: [{containerPort: 80}]}]}
  status: {podIP: 10.0.0.5}
"#;
    let json = r#"{"apiVersion":"v1","kind":"List","items":[
      {"apiVersion":"v1","kind":"Pod","metadata":{"name":"a","namespace":"x","labels":{"app":"a"}},
       "spec":{"containers":[{"name":"c","ports":[{"containerPort":80}]}]},"status":{"podIP":"10.0.0.5"}}]}"#;
    let a = load_ok(&[("l.yaml", yaml)]);
    let b = load_ok(&[("l.json", json)]);
    let strip = |c: &Cluster| {
        c.pods
            .iter()
            .map(|p| (p.key(), p.ips.clone(), p.labels.clone(), p.ports.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(strip(&a), strip(&b));
    assert_eq!(a.pods[0].ip(), Some("10.0.0.5".parse().unwrap()));
}

#[test]
fn endpoint_slices_win_over_the_selector_and_keep_conditions() {
    let text = r#"
apiVersion: v1
kind: Service
metadata: {name: s, namespace: x}
spec: {clusterIP: 10.96.0.9, selector: {app: a}, ports: [{name: p, port: 80, targetPort: 8080}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: s-1, namespace: x, labels: {kubernetes.io/service-name: s}}
addressType: IPv4
ports: [{name: p, port: 8080, protocol: TCP}]
endpoints:
  - addresses: [10.0.0.1]
    conditions: {ready: true}
  - addresses: [10.0.0.2]
    conditions: {ready: false, serving: true, terminating: true}
"#;
    let c = load_ok(&[("s.yaml", text)]);
    let s = &c.services[0];
    assert_eq!(s.backend_source, BackendSource::EndpointSlices);
    assert_eq!(s.backends.len(), 2);
    assert!(
        s.backends[0].ready
            && !s.backends[1].ready
            && s.backends[1].serving
            && s.backends[1].terminating
    );
    assert_eq!(s.backends[0].ports[0].port, 8080);
}

#[test]
fn pods_of_nodes_with_pod_cidrs_get_addresses_there() {
    let text = r#"
apiVersion: v1
kind: Node
metadata: {name: n1}
spec: {podCIDR: 10.1.7.0/24}
status: {addresses: [{type: InternalIP, address: 192.168.0.7}]}
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent, namespace: kube-system}
spec:
  selector: {matchLabels: {app: agent}}
  template:
    metadata: {labels: {app: agent}}
    spec: {containers: [{name: c}]}
"#;
    let c = load_ok(&[("n.yaml", text)]);
    assert_eq!(c.pods.len(), 1, "one daemon pod per node");
    assert_eq!(c.pods[0].node.as_deref(), Some("n1"));
    let ip = c.pods[0].ip().unwrap();
    assert!(
        "10.1.7.0/24".parse::<ipnet::IpNet>().unwrap().contains(&ip),
        "{ip}"
    );
}

#[test]
fn a_workload_whose_pods_are_listed_is_not_expanded_again() {
    let text = r#"
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db, namespace: x}
spec:
  replicas: 3
  serviceName: db
  selector: {matchLabels: {app: db}}
  template: {metadata: {labels: {app: db}}, spec: {containers: [{name: c}]}}
---
apiVersion: v1
kind: Pod
metadata:
  name: db-0
  namespace: x
  labels: {app: db}
  ownerReferences: [{apiVersion: apps/v1, kind: StatefulSet, name: db, uid: u1}]
spec: {containers: [{name: c}]}
status: {podIP: 10.9.9.9}
"#;
    let c = load_ok(&[("w.yaml", text)]);
    assert_eq!(c.pods.len(), 1);
}

#[test]
fn cilium_policies_get_their_implicit_namespace_and_anps_sort_by_priority() {
    let text = r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: p, namespace: x}
spec:
  endpointSelector: {matchLabels: {app: a}}
  ingress:
    - fromEndpoints: [{matchLabels: {app: b}}, {matchLabels: {k8s:io.kubernetes.pod.namespace: y}}]
---
apiVersion: policy.networking.k8s.io/v1alpha1
kind: AdminNetworkPolicy
metadata: {name: late}
spec:
  priority: 20
  subject: {namespaces: {}}
  ingress: [{action: Deny, from: [{namespaces: {}}]}]
---
apiVersion: policy.networking.k8s.io/v1alpha1
kind: AdminNetworkPolicy
metadata: {name: early}
spec:
  priority: 5
  subject: {namespaces: {}}
  egress: [{action: Pass, to: [{networks: [10.0.0.0/8]}]}]
"#;
    let c = load_ok(&[("p.yaml", text)]);
    let spec = &c.cilium_policies[0].specs[0];
    assert_eq!(
        spec.endpoint_selector
            .match_labels
            .get("k8s:io.kubernetes.pod.namespace")
            .map(String::as_str),
        Some("x")
    );
    let peers = &spec.ingress[0].endpoints;
    assert_eq!(
        peers[0]
            .match_labels
            .get("k8s:io.kubernetes.pod.namespace")
            .map(String::as_str),
        Some("x")
    );
    assert_eq!(
        peers[1]
            .match_labels
            .get("k8s:io.kubernetes.pod.namespace")
            .map(String::as_str),
        Some("y"),
        "an explicit namespace is kept"
    );
    let names: Vec<&str> = c.admin_policies.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["early", "late"]);
}

/// Issue 20, point 8: `ipFamilies`/`ipFamilyPolicy` choose the cluster IPs' families, each
/// from its range (Kubernetes "IPv4/IPv6 dual-stack": SingleStack one family, the first of
/// ipFamilies or the cluster's primary; PreferDualStack both when the cluster has both;
/// RequireDualStack both or an error).
#[test]
fn ip_families_choose_the_cluster_ip_ranges() {
    const SVCS: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: a-v4}
spec: {ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: b-v6}
spec: {ipFamilies: [IPv6], ipFamilyPolicy: SingleStack, ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: c-prefer}
spec: {ipFamilyPolicy: PreferDualStack, ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: d-require-v6-first}
spec: {ipFamilies: [IPv6, IPv4], ipFamilyPolicy: RequireDualStack, ports: [{port: 80}]}
"#;
    let dual = BuildOptions {
        service_cidr_v6: Some("fd00:96::/112".parse().expect("cidr")),
        ..BuildOptions::default()
    };
    let loaded = load_texts(&[("s.yaml", SVCS)], &dual);
    assert!(!loaded.has_errors());
    let ips = |name: &str| -> Vec<String> {
        let c = &loaded.cluster;
        let s = c.find_service("default", name).expect("service");
        c.service(s)
            .cluster_ips
            .iter()
            .map(|ip| ip.to_string())
            .collect()
    };
    assert_eq!(ips("a-v4"), ["10.96.0.1"]);
    assert_eq!(ips("b-v6"), ["fd00:96::1"]);
    assert_eq!(ips("c-prefer"), ["10.96.0.2", "fd00:96::2"]);
    assert_eq!(ips("d-require-v6-first"), ["fd00:96::3", "10.96.0.3"]);
    // Without an IPv6 range: PreferDualStack falls back to one family; an IPv6-only or
    // RequireDualStack Service is a clear error.
    let loaded = load_texts(&[("s.yaml", SVCS)], &BuildOptions::default());
    let errors: Vec<&str> = loaded
        .diags
        .iter()
        .filter(|d| d.is_error())
        .map(|d| d.message.as_str())
        .collect();
    assert_eq!(
        errors,
        [
            "Service default/b-v6 needs an IPv6 cluster IP, but no IPv6 service range is configured",
            "Service default/d-require-v6-first needs an IPv6 cluster IP, but no IPv6 service range is configured",
        ]
    );
    let c = &loaded.cluster;
    let s = c.find_service("default", "c-prefer").expect("service");
    assert_eq!(c.service(s).cluster_ips.len(), 1);
}

/// Issue 20, point 8: NodePort and LoadBalancer ports without `nodePort` get the lowest
/// free port of 30000-32767; LoadBalancers with `allocateLoadBalancerNodePorts: false` none.
#[test]
fn node_ports_are_allocated_deterministically() {
    let c = load_ok(&[(
        "s.yaml",
        r#"
apiVersion: v1
kind: Service
metadata: {name: a}
spec: {type: NodePort, ports: [{name: a, port: 80, nodePort: 30001}, {name: b, port: 81}]}
---
apiVersion: v1
kind: Service
metadata: {name: b}
spec: {type: LoadBalancer, ports: [{name: t, port: 53, protocol: TCP}, {name: u, port: 53, protocol: UDP}]}
---
apiVersion: v1
kind: Service
metadata: {name: c}
spec: {type: LoadBalancer, allocateLoadBalancerNodePorts: false, ports: [{port: 443}]}
---
apiVersion: v1
kind: Service
metadata: {name: d}
spec: {ports: [{port: 80}]}
"#,
    )]);
    let node_ports = |name: &str| -> Vec<Option<u16>> {
        let s = c.find_service("default", name).expect("service");
        c.service(s).ports.iter().map(|p| p.node_port).collect()
    };
    assert_eq!(node_ports("a"), [Some(30001), Some(30000)]);
    assert_eq!(
        node_ports("b"),
        [Some(30002), Some(30002)],
        "TCP and UDP of one port share"
    );
    assert_eq!(node_ports("c"), [None]);
    assert_eq!(node_ports("d"), [None]);
}
