use super::*;
use proptest::prelude::*;
use std::net::Ipv4Addr;

/// Port 0 is the uplink (PF 1), port 1 the SDP PF toward the host (PF 2), ports 2..10 its
/// VFs 0..8: the pods `p0`..`p7`.
fn ports() -> Ports {
    let mut pf_func: BTreeMap<u16, u16> = [(0, 1 << 10), (1, 2 << 10)].into_iter().collect();
    for vf in 0..8u16 {
        pf_func.insert(2 + vf, (2 << 10) | (vf + 1));
    }
    Ports { pf_func }
}

fn config(free_entries: u64, free_counters: u64) -> Config {
    Config {
        semantics: ForwardSemantics::SamePf,
        ports: ports(),
        free_entries,
        free_counters,
        idle_ticks: 3,
        hard_lifetime_ticks: 5,
        min_bytes: 0,
    }
}

fn pod_ip(pod: u16) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 0, 10 + pod as u8)
}

/// A TCP connection from pod `a` to pod `b` (both on this node).
fn conn(a: u16, b: u16, sport: u16) -> Connection {
    Connection {
        tuple: FiveTuple {
            src: pod_ip(a),
            dst: pod_ip(b),
            proto: 6,
            sport,
            dport: 8080,
        },
        src_pod: format!("default/p{a}"),
        dst_pod: Some(format!("default/p{b}")),
        src_port: 2 + a,
        dst_port: 2 + b,
        dnat: false,
    }
}

/// A policy that denies the listed (client, server) pod pairs: the property tests check
/// that the module honours whatever `Verdicts` says, so any verdict function will do.
#[derive(Clone, Debug, Default)]
struct DenyPairs(BTreeSet<(String, String)>);

impl Verdicts for DenyPairs {
    fn allows(&self, c: &Connection) -> bool {
        let dst = c.dst_pod.clone().unwrap_or_default();
        !self.0.contains(&(c.src_pod.clone(), dst))
    }
}

#[test]
fn a_pod_to_pod_connection_gets_two_entries_that_forward_to_the_sibling_vf() {
    let mut o = Offloader::new(config(100, 10));
    o.established(conn(0, 1, 40000), 1000);
    let b = o.tick();
    assert!(b.remove.is_empty());
    assert_eq!(b.install.len(), 2);
    assert_eq!(b.install[0].port, 2);
    assert_eq!(b.install[0].action, HwActionKey::Vf(1));
    assert!(b.install[0].counted);
    assert_eq!(b.install[1].port, 3);
    assert_eq!(b.install[1].action, HwActionKey::Vf(0));
    assert_eq!(b.install[1].tuple, conn(0, 1, 40000).tuple.reverse());
}

#[test]
fn dnat_and_uplink_connections_stay_in_software_on_22_11() {
    let mut o = Offloader::new(config(100, 10));
    let mut svc = conn(0, 1, 1);
    svc.dnat = true;
    assert_eq!(o.stays(&svc), Some(Stays::NeedsRewrite));
    let mut remote = conn(0, 1, 2);
    remote.dst_pod = None;
    remote.dst_port = 0;
    assert_eq!(o.stays(&remote), Some(Stays::Unreachable));
    o.established(svc, 1 << 20);
    o.established(remote.clone(), 1 << 20);
    assert!(o.tick().install.is_empty());
    // From 23.07 PORT_ID crosses PFs: the remote connection can be finished in hardware.
    let mut c = config(100, 10);
    c.semantics = ForwardSemantics::AnyPort;
    let o = Offloader::new(c);
    assert_eq!(o.stays(&remote), None);
    let e = o.entries_of(&remote, false).unwrap();
    assert_eq!(e[0].action, HwActionKey::PortId(0));
    assert_eq!(e[1].action, HwActionKey::PortId(2));
}

#[test]
fn candidates_are_ranked_by_bytes_within_the_free_entries_and_counters() {
    let mut o = Offloader::new(config(4, 1));
    o.established(conn(0, 1, 1), 10);
    o.established(conn(0, 1, 2), 30);
    o.established(conn(0, 1, 3), 20);
    let b = o.tick();
    let sports: Vec<u16> = b.install.iter().step_by(2).map(|e| e.tuple.sport).collect();
    assert_eq!(sports, vec![2, 3]);
    assert_eq!(o.counters_used(), 1);
    assert!(b.install[0].counted && !b.install[2].counted);
}

#[test]
fn a_counted_connection_ages_out_when_its_counter_stops_and_an_uncounted_one_by_lifetime() {
    let mut o = Offloader::new(config(100, 1));
    o.established(conn(0, 1, 1), 100);
    o.established(conn(0, 1, 2), 50);
    o.tick(); // both installed at tick 1; sport 1 holds the counter.
    for n in 1..=6u64 {
        o.counter(conn(0, 1, 1).tuple, n * 10);
        let b = o.tick();
        let gone: Vec<u16> = b.remove.iter().step_by(2).map(|e| e.tuple.sport).collect();
        // The uncounted one, installed at tick 1, goes back to software at tick 6: its hard
        // lifetime is 5 ticks.
        assert_eq!(gone, if n == 5 { vec![2] } else { vec![] }, "tick {n}");
    }
    // The counted one stops counting and leaves after 3 idle ticks.
    let removed: usize = (0..3).map(|_| o.tick().remove.len()).sum();
    assert_eq!(removed, 2);
    assert!(!o.is_offloaded(conn(0, 1, 1).tuple));
}

#[test]
fn an_expired_connection_returns_only_after_new_activity() {
    let mut o = Offloader::new(config(100, 0));
    o.established(conn(0, 1, 1), 100);
    o.tick();
    let removed: usize = (0..5).map(|_| o.tick().remove.len()).sum();
    assert_eq!(removed, 2);
    assert!(o.tick().install.is_empty());
    o.established(conn(0, 1, 1), 500);
    assert_eq!(o.tick().install.len(), 2);
}

#[test]
fn a_policy_change_that_denies_removes_the_entries_in_its_batch() {
    let mut o = Offloader::new(config(100, 10));
    o.established(conn(0, 1, 1), 100);
    o.established(conn(2, 1, 1), 100);
    o.tick();
    let deny = DenyPairs([("default/p0".into(), "default/p1".into())].into());
    let b = o.policy_changed(&deny);
    assert_eq!(b.remove.len(), 2);
    assert!(b
        .remove
        .iter()
        .all(|e| e.tuple.src == pod_ip(0) || e.tuple.dst == pod_ip(0)));
    assert!(o.is_offloaded(conn(2, 1, 1).tuple));
}

#[derive(Clone, Debug)]
enum Op {
    Established(u16, u16, u16, u64),
    Activity(u16, u16, u16, u64),
    Counter(u16, u16, u16, u64),
    Tick,
    Deny(u16, u16),
    AllowAll,
    PodDeleted(u16),
    Plan(u64, u64),
    Closed(u16, u16, u16),
}

fn op() -> impl Strategy<Value = Op> {
    let pod = 0..8u16;
    let sport = 1..4u16;
    prop_oneof![
        (pod.clone(), pod.clone(), sport.clone(), 0..10_000u64)
            .prop_map(|(a, b, s, n)| Op::Established(a, b, s, n)),
        (pod.clone(), pod.clone(), sport.clone(), 0..10_000u64)
            .prop_map(|(a, b, s, n)| Op::Activity(a, b, s, n)),
        (pod.clone(), pod.clone(), sport.clone(), 0..100u64)
            .prop_map(|(a, b, s, n)| Op::Counter(a, b, s, n)),
        Just(Op::Tick),
        Just(Op::Tick),
        (pod.clone(), pod.clone()).prop_map(|(a, b)| Op::Deny(a, b)),
        Just(Op::AllowAll),
        pod.clone().prop_map(Op::PodDeleted),
        (0..40u64, 0..6u64).prop_map(|(e, c)| Op::Plan(e, c)),
        (pod.clone(), pod, sport).prop_map(|(a, b, s)| Op::Closed(a, b, s)),
    ]
}

/// Applies a batch the way pipecd does: removals first, then installs.
fn apply(table: &mut BTreeSet<Entry>, b: &Batch) {
    for e in &b.remove {
        assert!(
            table.remove(e),
            "removing an entry that is not installed: {e:?}"
        );
    }
    for e in &b.install {
        assert!(table.insert(e.clone()), "installing an entry twice: {e:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn after_any_events_no_entry_forwards_a_denied_connection_and_budgets_hold(
        ops in prop::collection::vec(op(), 1..60)
    ) {
        let (mut free_entries, mut free_counters) = (20u64, 3u64);
        let mut o = Offloader::new(config(free_entries, free_counters));
        let mut policy = DenyPairs::default();
        let mut table: BTreeSet<Entry> = BTreeSet::new();
        let mut deleted: BTreeSet<u16> = BTreeSet::new();
        for op in ops {
            let batch = match op {
                Op::Established(a, b, s, n) => {
                    // The conntrack reports only connections the policy in force allows,
                    // between pods that exist.
                    let c = conn(a, b, s);
                    if policy.allows(&c) && !deleted.contains(&a) && !deleted.contains(&b) {
                        o.established(c, n);
                    }
                    Batch::default()
                }
                Op::Activity(a, b, s, n) => { o.activity(conn(a, b, s).tuple, n); Batch::default() }
                Op::Counter(a, b, s, n) => { o.counter(conn(a, b, s).tuple, n); Batch::default() }
                Op::Tick => o.tick(),
                Op::Deny(a, b) => {
                    policy.0.insert((format!("default/p{a}"), format!("default/p{b}")));
                    o.policy_changed(&policy)
                }
                Op::AllowAll => { policy = DenyPairs::default(); o.policy_changed(&policy) }
                Op::PodDeleted(p) => {
                    deleted.insert(p);
                    let b = o.pod_deleted(&format!("default/p{p}"));
                    // Every entry of the pod is in this first batch.
                    let ip = pod_ip(p);
                    prop_assert!(table.iter().filter(|e| e.tuple.src == ip || e.tuple.dst == ip)
                        .all(|e| b.remove.contains(e)));
                    b
                }
                Op::Plan(e, c) => {
                    free_entries = e;
                    free_counters = c;
                    o.plan_changed(e, c)
                }
                Op::Closed(a, b, s) => o.closed(conn(a, b, s).tuple),
            };
            prop_assert!(batch.install.is_empty() || !matches!(op, Op::Deny(..) | Op::PodDeleted(_)));
            apply(&mut table, &batch);
            let expect: BTreeSet<Entry> = o.entries().into_iter().collect();
            prop_assert_eq!(&table, &expect);
            prop_assert!(o.entries_used() <= free_entries);
            prop_assert!(o.counters_used() <= free_counters.min(512));
            prop_assert_eq!(table.len() as u64, o.entries_used());
            for e in &table {
                let a = e.tuple.src.octets()[3] as u16 - 10;
                let b = e.tuple.dst.octets()[3] as u16 - 10;
                let (c, s) = if e.tuple.dport == 8080 { (a, b) } else { (b, a) };
                let fwd = conn(c, s, if e.tuple.dport == 8080 { e.tuple.sport } else { e.tuple.dport });
                prop_assert!(policy.allows(&fwd), "entry {:?} forwards a denied connection", e);
                prop_assert!(!deleted.contains(&a) && !deleted.contains(&b));
            }
        }
    }
}

/// Two pods `p0` (10.0.0.10) and `p1` (10.0.0.11) in `default`, and optionally a policy that
/// isolates `p1` for ingress (no rule: everything into it is denied).
fn cluster(isolate_p1: bool) -> pipec::model::Cluster {
    let mut yaml = String::new();
    for (i, ip) in [(0, "10.0.0.10"), (1, "10.0.0.11")] {
        yaml.push_str(&format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p{i}\n  namespace: default\n  labels: {{app: p{i}}}\nspec:\n  containers:\n  - name: c\nstatus:\n  podIP: {ip}\n---\n"
        ));
    }
    if isolate_p1 {
        yaml.push_str("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: isolate\n  namespace: default\nspec:\n  podSelector:\n    matchLabels: {app: p1}\n  policyTypes: [Ingress]\n");
    }
    let options = pipec::model::build::BuildOptions {
        pod_cidr: "10.0.0.0/16".parse().unwrap(),
        ..Default::default()
    };
    let loaded = pipec::driver::load_texts(&[("c.yaml", &yaml)], &options);
    assert!(!loaded.has_errors(), "{:?}", loaded.diags);
    loaded.cluster
}

#[test]
fn the_reference_semantics_decides_which_offloaded_connections_a_new_policy_removes() {
    let open = cluster(false);
    let isolated = cluster(true);
    let mut o = Offloader::new(config(100, 10));
    let c = conn(0, 1, 40000);
    assert!(ReferenceVerdicts::new(&open).allows(&c));
    o.established(c.clone(), 1000);
    assert_eq!(o.tick().install.len(), 2);
    assert!(o
        .policy_changed(&ReferenceVerdicts::new(&open))
        .remove
        .is_empty());
    let b = o.policy_changed(&ReferenceVerdicts::new(&isolated));
    assert_eq!(b.remove.len(), 2);
    assert!(!o.is_offloaded(c.tuple));
}
