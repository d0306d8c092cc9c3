//! Connections through the MAG of the Star Wars example (its text is in the stage matrix,
//! `cli/tests/stages.rs`).

use pipec::driver;
use pipec::engine::mag::{Conn, From, Prober, To};
use pipec::mag::interp::Verdict;
use pipec::model::build::BuildOptions;
use pipec::model::{Cluster, Protocol};
use std::path::PathBuf;

fn starwars() -> Cluster {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/starwars");
    let loaded = driver::load(&[dir], &BuildOptions::default());
    assert!(!loaded.has_errors(), "{:?}", loaded.diags);
    loaded.cluster
}

#[test]
fn only_the_empire_lands() {
    let cluster = starwars();
    let tie = cluster.find_pod("default", "tiefighter").unwrap();
    let xwing = cluster.find_pod("default", "xwing").unwrap();
    let svc = cluster.find_service("default", "deathstar").unwrap();
    let mut engine = Prober::new(&cluster);
    let conn = |from| Conn {
        from: From::Pod(from),
        to: To::Service(svc, 80),
        protocol: Protocol::Tcp,
        port: Some(80),
    };
    let ok = engine.connect(&conn(tie)).unwrap();
    assert_eq!(ok.verdict, Verdict::Allow);
    let (ip, port) = ok.dnat.unwrap();
    assert!(ip.to_string().starts_with("10.244.0."));
    assert_eq!(port, 80);
    let reply = engine.reply(&ok).unwrap();
    assert_eq!(reply.verdict, Verdict::Allow);
    // The reply leaves with the service address as its source.
    assert_eq!(reply.traces[0].1.packet.src().to_string(), "10.96.0.50");
    let denied = engine.connect(&conn(xwing)).unwrap();
    assert_eq!(denied.verdict, Verdict::Deny);
    let t = denied.traces[0]
        .1
        .to_text(engine.node("local").unwrap().mag());
    assert!(t.contains("CiliumNetworkPolicy/default/rule1"), "{t}");
}
