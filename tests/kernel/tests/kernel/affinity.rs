//! ClientIP session affinity keeps a Service's own `timeoutSeconds`: a Service with
//! `timeoutSeconds: 30`, compiled through the session (manifest → MAG → eBPF maps), and real
//! SYNs through `from_pod`. A client idle for 29 s keeps its backend; idle for 31 s, it is
//! forgotten and balanced again (it would be remembered for 3 hours with the default).
//!
//! Waiting 30 s in a test is too slow, so the test ages the client's entry instead: it
//! moves the entry's `last_used` back on the same `CLOCK_MONOTONIC` clock the programs read
//! with `bpf_ktime_get_ns`. To see "forgotten", the Maglev table is then pointed at the
//! other backend, so a fresh choice differs from the remembered one.

use std::net::IpAddr;

use pipec_ebpf::artifact::{raw_addr, Frontend};
use pipec_ebpf::datapath::TC_ACT_OK;
use pipec_ebpf::packet::{self, L4, TCP_SYN};
use pipec_ebpf::{sys, EbpfArtifact, Program};
use pipec_ebpf_common as c;

use crate::common::TestDatapath;

const LO: u32 = 1;

const MANIFEST: &str = "
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: default, labels: {app: client}}
spec: {containers: [{name: c}]}
status: {podIP: 10.244.0.5}
---
apiVersion: v1
kind: Pod
metadata: {name: web-1, namespace: default, labels: {app: web}}
spec: {containers: [{name: c, ports: [{containerPort: 8080}]}]}
status: {podIP: 10.244.0.11}
---
apiVersion: v1
kind: Pod
metadata: {name: web-2, namespace: default, labels: {app: web}}
spec: {containers: [{name: c, ports: [{containerPort: 8080}]}]}
status: {podIP: 10.244.0.12}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  clusterIP: 10.96.0.20
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
  sessionAffinity: ClientIP
  sessionAffinityConfig: {clientIP: {timeoutSeconds: 30}}
";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn artifact() -> EbpfArtifact {
    crate::common::loopback_artifact("web.yaml", MANIFEST)
}

/// The backend address one SYN from the client goes to.
fn backend_of(dp: &TestDatapath, sport: u16) -> IpAddr {
    let l4 = L4::Tcp {
        sport,
        dport: 80,
        flags: TCP_SYN,
    };
    let r = dp
        .run(
            Program::FromPod,
            &packet::build(ip("10.244.0.5"), ip("10.96.0.20"), l4),
            LO,
            0,
        )
        .expect("test run");
    assert_eq!(r.verdict, TC_ACT_OK);
    packet::parse(&r.packet).expect("a packet").dst
}

/// Moves the client's affinity entry back so that it was last used `idle_s` seconds ago.
fn age_client(dp: &TestDatapath, service_id: u32, idle_s: u64) {
    let fd = dp.map_fd("affinity").expect("the affinity map");
    let (addr, family) = raw_addr(ip("10.244.0.5"));
    let key = c::AffinityKey {
        service_id,
        family,
        pad: [0; 3],
        addr,
    };
    let mut v = c::AffinityValue::default();
    assert!(
        sys::map_lookup(fd, sys::bytes_of(&key), sys::bytes_of_mut(&mut v)).unwrap(),
        "the client has an affinity entry"
    );
    v.last_used = sys::monotonic_ns() - idle_s * 1_000_000_000;
    sys::map_update(fd, sys::bytes_of(&key), sys::bytes_of(&v), 0).unwrap();
}

#[test]
fn a_thirty_second_timeout_forgets_an_idle_client_after_thirty_seconds() {
    let mut art = artifact();
    let fe = Frontend {
        addr: ip("10.96.0.20"),
        protocol: 6,
        port: 80,
    };
    let svc = art
        .services
        .get(&fe)
        .expect("the service's frontend")
        .clone();
    assert_eq!(
        svc.affinity_timeout,
        Some(30),
        "the Service's timeoutSeconds reaches the maps"
    );
    let mut dp = TestDatapath::load("affinity_timeout");
    dp.write(&art).unwrap();
    let first = backend_of(&dp, 42000);
    // Every slot now names the other backend: only the client's memory leads to `first`.
    let other = art
        .backends
        .iter()
        .find(|(_, b)| b.addr != first)
        .map(|(id, _)| *id)
        .expect("two backends");
    let s = art.services.get_mut(&fe).unwrap();
    s.maglev = vec![other; s.maglev.len()];
    dp.write(&art).unwrap();
    age_client(&dp, svc.id, 29);
    assert_eq!(
        backend_of(&dp, 42001),
        first,
        "idle 29 s: the client is remembered"
    );
    age_client(&dp, svc.id, 31);
    let again = backend_of(&dp, 42002);
    assert_ne!(
        again, first,
        "idle 31 s: the client is forgotten and balanced again"
    );
}
