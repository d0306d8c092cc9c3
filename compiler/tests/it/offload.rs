//! Connection offload as `pipec trace` reports it: which connections' later packets the
//! hardware finishes under each cnxk profile, and why the others stay in software. Every
//! answer that says "in hardware" is replayed through the flow-table model: the entries it
//! names, loaded as exact 5-tuple rules, must deliver both directions to the right port.
//! Engine `hw` does the same inside its run of a probe: it installs the entries beside the
//! policy plan, on the device's ports, and sends the later packets through the flow tables.

use pipec::backend::{octeon_cn10k_2307_profile, octeon_cn10k_profile, Profile};
use pipec::backend::{HwAction, HwMatch, HwRule, PacketField, PlanSlice, PortDirection};
use pipec::driver;
use pipec::engine::hw::{Hit, HwEngine};
use pipec::engine::hwmodel::{Fate, HwPacket, Tcam};
use pipec::engine::offload::{later_packets, semantics_of, Later, Layout, Stays};
use pipec::model::build::BuildOptions;
use pipec::semantics::{evaluate, Context};
use pipec::trace::parse_probe;
use std::net::IpAddr;

const CLUSTER: &str = r#"
apiVersion: v1
kind: Node
metadata: {name: n1}
spec: {podCIDR: 10.244.1.0/24}
status: {addresses: [{type: InternalIP, address: 172.18.0.2}]}
---
apiVersion: v1
kind: Node
metadata: {name: n2}
spec: {podCIDR: 10.244.2.0/24}
status: {addresses: [{type: InternalIP, address: 172.18.0.3}]}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: default, labels: {role: client}}
spec: {nodeName: n1, containers: [{name: c, image: c}]}
status: {podIP: 10.244.1.10}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: default, labels: {app: web}}
spec: {nodeName: n1, containers: [{name: c, image: nginx, ports: [{containerPort: 80}]}]}
status: {podIP: 10.244.1.11}
---
apiVersion: v1
kind: Pod
metadata: {name: far, namespace: default, labels: {app: web}}
spec: {nodeName: n2, containers: [{name: c, image: nginx, ports: [{containerPort: 80}]}]}
status: {podIP: 10.244.2.20}
---
apiVersion: v1
kind: Pod
metadata: {name: stranger, namespace: default, labels: {role: stranger}}
spec: {nodeName: n1, containers: [{name: c, image: c}]}
status: {podIP: 10.244.1.12}
---
apiVersion: v1
kind: Pod
metadata: {name: exporter, namespace: default, labels: {app: exporter}}
spec: {nodeName: n1, hostNetwork: true, containers: [{name: c, image: e}]}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  clusterIP: 10.96.0.80
  selector: {app: web}
  ports: [{port: 80, targetPort: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: web-headless, namespace: default}
spec:
  clusterIP: None
  selector: {app: web}
  ports: [{port: 80, targetPort: 80}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-from-clients, namespace: default}
spec:
  podSelector: {matchLabels: {app: web}}
  policyTypes: [Ingress]
  ingress:
    - from:
        - podSelector: {matchLabels: {role: client}}
        - ipBlock: {cidr: 203.0.113.0/24}
"#;

fn loaded() -> driver::Loaded {
    let loaded = driver::load_texts(&[("offload.yaml", CLUSTER)], &BuildOptions::default());
    assert!(!loaded.has_errors(), "the cluster has errors");
    loaded
}

/// The later-packets answer of every path of one probe, under `profile`.
fn later(
    loaded: &driver::Loaded,
    profile: &Profile,
    from: &str,
    to: &str,
    port: &str,
) -> Vec<Later> {
    let cluster = &loaded.cluster;
    let probe = parse_probe(cluster, from, to, port).expect("valid probe");
    let outcome = evaluate(&Context::new(cluster), &probe);
    assert!(!outcome.paths.is_empty(), "{from} -> {to} has a path");
    let dnat = outcome
        .service
        .as_ref()
        .is_some_and(|s| !cluster.service(s.service).cluster_ips.is_empty());
    outcome
        .paths
        .iter()
        .map(|p| later_packets(cluster, profile, &probe, dnat, p))
        .collect()
}

fn one(loaded: &driver::Loaded, profile: &Profile, from: &str, to: &str, port: &str) -> Later {
    let mut all = later(loaded, profile, from, to, port);
    assert_eq!(all.len(), 1, "{from} -> {to}: one path");
    all.remove(0)
}

fn ip(loaded: &driver::Loaded, pod: &str) -> IpAddr {
    let (ns, name) = pod.split_once('/').expect("ns/name");
    let id = loaded.cluster.find_pod(ns, name).expect("pod exists");
    loaded.cluster.pod(id).ip().expect("pod has an address")
}

/// Loads each node's entries of `l` as exact 5-tuple rules into the flow-table model and
/// checks that a packet of each direction, received on the entry's port, is delivered on
/// the entry's out port, and that the original direction leaves where the reply arrives.
fn replay(
    loaded: &driver::Loaded,
    profile: &Profile,
    l: &Later,
    src: IpAddr,
    dst: IpAddr,
    dport: u16,
) {
    let sem = semantics_of(profile).expect("the profile forwards");
    let sport = 40_000u16;
    let mut nodes: Vec<&str> = l.entries.iter().map(|e| e.node.as_str()).collect();
    nodes.dedup();
    for node in nodes {
        let layout = Layout::of_node(&loaded.cluster, node);
        let entries: Vec<_> = l.entries.iter().filter(|e| e.node == node).collect();
        assert_eq!(entries.len(), 2, "two entries on {node}: {entries:?}");
        let tuple = |dir: &str| match dir {
            "original" => (src, dst, sport, dport),
            _ => (dst, src, dport, sport),
        };
        let rules: Vec<HwRule> = entries
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let (s, d, sp, dp) = tuple(e.direction);
                HwRule {
                    id: i as u32,
                    port: e.port,
                    direction: PortDirection::Ingress,
                    level: 0,
                    matches: exact(s, d, sp, dp)
                        .into_iter()
                        .map(|(f, v)| HwMatch::exact(f, v))
                        .collect(),
                    actions: vec![HwAction::Count, e.action.clone()],
                    origin: "offload test".to_string(),
                }
            })
            .collect();
        let slice = PlanSlice {
            target: profile.name.clone(),
            rules,
        };
        let tcam = Tcam::load(&slice, 3, Some(8192)).expect("the entries load");
        for e in &entries {
            let (s, d, sp, dp) = tuple(e.direction);
            let packet: HwPacket = exact(s, d, sp, dp).into_iter().collect();
            assert_eq!(
                tcam.fate(e.port, &packet, &layout.ports, sem),
                Fate::Delivered { port: e.out_port },
                "{}",
                e.text()
            );
            // A packet of another connection is not finished by these entries.
            let other: HwPacket = exact(s, d, sp + 1, dp).into_iter().collect();
            assert_eq!(
                tcam.fate(e.port, &other, &layout.ports, sem),
                Fate::Software { skb_mark: 0 }
            );
        }
        assert_eq!(entries[0].port, entries[1].out_port, "{entries:?}");
        assert_eq!(entries[1].port, entries[0].out_port, "{entries:?}");
    }
}

fn exact(s: IpAddr, d: IpAddr, sp: u16, dp: u16) -> Vec<(PacketField, u128)> {
    let v4 = |a: IpAddr| match a {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(_) => panic!("IPv4 only"),
    };
    vec![
        (PacketField::Ipv4Src, v4(s)),
        (PacketField::Ipv4Dst, v4(d)),
        (PacketField::IpProto, 6),
        (PacketField::L4Sport, sp.into()),
        (PacketField::L4Dport, dp.into()),
    ]
}

#[test]
fn pod_to_pod_on_one_node_is_finished_in_hardware_on_both_releases() {
    let loaded = loaded();
    for profile in [octeon_cn10k_profile(), octeon_cn10k_2307_profile()] {
        let l = one(&loaded, &profile, "default/client", "default/web", "80/TCP");
        assert!(l.in_hardware, "{}", l.text());
        assert_eq!(l.stays, None);
        assert!(l.entries.iter().all(|e| e.node == "n1"), "{:?}", l.entries);
        replay(
            &loaded,
            &profile,
            &l,
            ip(&loaded, "default/client"),
            ip(&loaded, "default/web"),
            80,
        );
    }
}

#[test]
fn pod_to_a_remote_pod_needs_dpdk_2307() {
    let loaded = loaded();
    let l = one(
        &loaded,
        &octeon_cn10k_profile(),
        "default/client",
        "default/far",
        "80/TCP",
    );
    assert!(!l.in_hardware);
    assert!(
        matches!(&l.stays, Some(Stays::Unreachable { to: 0, .. })),
        "{}",
        l.text()
    );
    let profile = octeon_cn10k_2307_profile();
    let l = one(&loaded, &profile, "default/client", "default/far", "80/TCP");
    assert!(l.in_hardware, "{}", l.text());
    // Two entries on the client's node and two on the server's.
    assert_eq!(l.entries.len(), 4, "{:?}", l.entries);
    replay(
        &loaded,
        &profile,
        &l,
        ip(&loaded, "default/client"),
        ip(&loaded, "default/far"),
        80,
    );
}

#[test]
fn from_outside_the_cluster_needs_dpdk_2307() {
    let loaded = loaded();
    let l = one(
        &loaded,
        &octeon_cn10k_profile(),
        "ip:203.0.113.7",
        "default/web",
        "80/TCP",
    );
    assert!(
        matches!(&l.stays, Some(Stays::Unreachable { from: 0, .. })),
        "{}",
        l.text()
    );
    let profile = octeon_cn10k_2307_profile();
    let l = one(&loaded, &profile, "ip:203.0.113.7", "default/web", "80/TCP");
    assert!(l.in_hardware, "{}", l.text());
    replay(
        &loaded,
        &profile,
        &l,
        "203.0.113.7".parse().expect("address"),
        ip(&loaded, "default/web"),
        80,
    );
}

#[test]
fn service_connections_stay_in_software_but_headless_ones_do_not() {
    let loaded = loaded();
    for profile in [octeon_cn10k_profile(), octeon_cn10k_2307_profile()] {
        let paths = later(
            &loaded,
            &profile,
            "default/client",
            "svc:default/web",
            "80/TCP",
        );
        assert_eq!(paths.len(), 2, "two backends");
        for l in &paths {
            assert_eq!(l.stays, Some(Stays::NeedsRewrite), "{}", l.text());
        }
        // The headless Service's name leads straight to the pods' addresses: no rewrite.
        let paths = later(
            &loaded,
            &profile,
            "default/client",
            "svc:default/web-headless",
            "80/TCP",
        );
        assert!(
            paths.iter().any(|l| l.in_hardware),
            "the local backend is finished in hardware: {paths:?}"
        );
    }
}

#[test]
fn what_stays_in_software_and_why() {
    let loaded = loaded();
    let p = octeon_cn10k_2307_profile();
    let stays = |from: &str, to: &str, port: &str| one(&loaded, &p, from, to, port).stays;
    assert_eq!(
        stays("default/stranger", "default/web", "80/TCP"),
        Some(Stays::Denied)
    );
    assert_eq!(
        stays("default/client", "default/stranger", "ICMP"),
        Some(Stays::NoPorts)
    );
    assert_eq!(
        stays("default/exporter", "default/client", "80/TCP"),
        Some(Stays::HostNetwork)
    );
    assert_eq!(
        stays("ip:172.18.0.3", "default/client", "80/TCP"),
        Some(Stays::HostNetwork)
    );
    assert_eq!(
        stays("ip:198.51.100.1", "ip:198.51.100.2", "80/TCP"),
        Some(Stays::NoNode)
    );
    // A profile without a forwarding action finishes nothing.
    let mut plain = octeon_cn10k_profile();
    plain
        .caps
        .ingress_actions
        .retain(|a| !matches!(a, pipec::backend::ActionKind::ForwardSamePf));
    let l = one(&loaded, &plain, "default/client", "default/web", "80/TCP");
    assert_eq!(l.stays, Some(Stays::NoForwarding));
}

/// `profile` with room for no plan rule: the flow tables hold only offload entries.
fn without_plan(mut profile: Profile) -> Profile {
    profile.budget.entries = Some(profile.budget.reserved_entries);
    profile
}

/// Engine `hw`'s run of one TCP 80 connection: the later packets it sent after installing
/// the connection's entries, one line each.
fn sent_later(loaded: &driver::Loaded, profile: Profile, from: &str, to: &str) -> Vec<String> {
    let cluster = &loaded.cluster;
    let hw = HwEngine { profile }.evaluator(cluster);
    let probe = parse_probe(cluster, from, to, "80/TCP").expect("valid probe");
    let p = hw.probe(&probe);
    assert_eq!(p.verdict.allowed, Some(true), "{}", p.verdict.reason);
    let run = p
        .offload
        .expect("an allowed connection is offered to offload");
    assert!(run.refused.is_empty(), "{:?}", run.refused);
    for l in &run.packets {
        let entry = run
            .later
            .entries
            .iter()
            .find(|e| e.node == l.node && e.direction == l.direction)
            .expect("an entry of the packet's node and direction");
        assert_eq!(l.port, entry.port, "{l:?} arrives on its entry's port");
    }
    run.packets
        .iter()
        .map(|l| match l.hit {
            Hit::Entry { .. } => format!("{} {} on {}: {:?}", l.node, l.direction, l.port, l.fate),
            other => format!("{} {} on {}: {other:?}", l.node, l.direction, l.port),
        })
        .collect()
}

/// Engine `hw` installs an allowed connection's entries on the device ports pipecd would
/// (n1's VFs in pod order: client 2, stranger 3, web 4), looks its later packets up on the
/// device port of the port they arrive by, and the entries deliver them.
#[test]
fn engine_hw_finishes_the_later_packets_of_an_offloaded_connection() {
    let loaded = loaded();
    for profile in [octeon_cn10k_profile(), octeon_cn10k_2307_profile()] {
        let lines = sent_later(
            &loaded,
            without_plan(profile),
            "default/client",
            "default/web",
        );
        assert_eq!(
            lines,
            [
                "n1 original on 2: Delivered { port: 4 }",
                "n1 reply on 4: Delivered { port: 2 }"
            ]
        );
    }
    let profile = without_plan(octeon_cn10k_2307_profile());
    let lines = sent_later(&loaded, profile.clone(), "default/client", "default/far");
    assert_eq!(
        lines,
        [
            "n1 original on 2: Delivered { port: 0 }",
            "n2 original on 0: Delivered { port: 2 }",
            "n2 reply on 2: Delivered { port: 0 }",
            "n1 reply on 0: Delivered { port: 2 }"
        ]
    );
    let lines = sent_later(&loaded, profile, "ip:203.0.113.7", "default/web");
    assert_eq!(
        lines,
        [
            "n1 original on 0: Delivered { port: 4 }",
            "n1 reply on 4: Delivered { port: 0 }"
        ]
    );
}

/// With the policy plan loaded, its marks sit at the entries' level 0 today and overlap
/// them: the model lets the plan rule win (the device's order is undefined), so the later
/// packets go to software, marked allowed, as before offload. A denied connection is offered
/// nothing.
#[test]
fn engine_hw_lets_a_same_level_plan_mark_take_the_later_packets() {
    let loaded = loaded();
    let lines = sent_later(
        &loaded,
        octeon_cn10k_profile(),
        "default/client",
        "default/web",
    );
    assert_eq!(lines.len(), 2, "{lines:?}");
    for l in &lines {
        let shadowed = l.contains("Plan {") && l.contains("level: 0 }");
        assert!(shadowed || l.contains("Delivered"), "{l}");
    }
    let cluster = &loaded.cluster;
    let hw = HwEngine::default().evaluator(cluster);
    let probe = parse_probe(cluster, "default/stranger", "default/web", "80/TCP").expect("probe");
    let p = hw.probe(&probe);
    assert_eq!(p.verdict.allowed, Some(false), "{}", p.verdict.reason);
    assert!(p.offload.is_none());
}
