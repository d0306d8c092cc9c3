//! The CPT target in a compile session: the Secret is an object like any other, so a
//! rotation, a malformed Secret and a deleted Secret are events, and SA operations come back
//! in the session's `Changes`.

use pipec::backend::{Backend, Profile};
use pipec::session::{Event, ObjectKey, Session, SessionOptions};
use pipec_cpt::{diff, CptBackend, IpsecArtifact, SaOp, SaOps, TARGET};

use crate::common::{keys, root};

fn cpt_only(_: Option<&Profile>) -> Vec<Box<dyn Backend>> {
    vec![Box::new(CptBackend::default())]
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).expect("fixture")
}

fn session(secret: &str) -> Session {
    let nodes = read("tests/fixtures/ipsec/nodes.yaml");
    let secret = read(&format!("tests/fixtures/secrets/{secret}"));
    let options = SessionOptions {
        node: Some("node-a".into()),
        ..SessionOptions::default()
    };
    Session::load_texts(
        &[("nodes.yaml", &nodes), ("secret.yaml", &secret)],
        options,
        &cpt_only,
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

fn sa_set(s: &Session) -> Option<pipec_cpt::CptArtifact> {
    let art = s.artifact(TARGET).expect("target").expect("compiles");
    let art = art.as_any().downcast_ref::<IpsecArtifact>().expect("type");
    art.sa_set.clone()
}

fn upsert(name: &str, text: String) -> Event {
    Event::Upsert {
        source: name.into(),
        text,
    }
}

#[test]
fn the_session_compiles_what_the_manifest_reader_compiles() {
    let s = session("keys-3.yaml");
    let from_session = sa_set(&s).expect("the Secret turns IPsec on");
    let cluster = crate::common::cluster();
    let direct = pipec_cpt::compile(&cluster, "node-a", &keys("keys-3.yaml")).expect("compiles");
    assert_eq!(from_session.sas, direct.sas);
    assert_eq!(from_session.steering, direct.steering);
    // Per-pair keys differ per peer and direction, so equal SAs mean equal derivation.
    assert_eq!(from_session.sas.len(), 4);
}

#[test]
fn a_secret_change_rotates_make_before_break() {
    let mut s = session("keys-3.yaml");
    let before = sa_set(&s).expect("on");
    let changes = s
        .apply(&[upsert(
            "watch:Secret",
            read("tests/fixtures/secrets/keys-4.yaml"),
        )])
        .unwrap_or_else(|e| panic!("{e}"));
    let after = sa_set(&s).expect("on");
    assert_eq!((before.spi, after.spi), (3, 4));
    let ops = changes.ops(TARGET).expect("cpt changes");
    let ops = &ops.as_any().downcast_ref::<SaOps>().expect("SaOps").ops;
    assert_eq!(ops, &diff(&before, &after));
    // Every peer accepts SPI 4 before it is advertised; no outbound switch before that;
    // the old inbound SAs go last and only after the window.
    let pos = |f: &dyn Fn(&SaOp) -> bool| ops.iter().position(f);
    let last_add = ops
        .iter()
        .rposition(|o| matches!(o, SaOp::AddInbound { spi: 4, .. }))
        .expect("adds");
    let advertise = pos(&|o| matches!(o, SaOp::AdvertiseSpi { spi: 4 })).expect("advertise");
    let first_switch = pos(&|o| matches!(o, SaOp::SwitchOutbound { .. })).expect("switch");
    let first_remove = pos(&|o| matches!(o, SaOp::RemoveInbound { .. })).expect("remove");
    assert!(last_add < advertise && advertise < first_switch && first_switch < first_remove);
    for o in ops {
        if let SaOp::RemoveInbound { spi, after, .. } = o {
            assert_eq!(*spi, 3);
            assert_eq!(*after, pipec_cpt::ROTATION_WINDOW);
        }
    }
    assert!(
        changes.text().contains("advertise spi 4"),
        "{}",
        changes.text()
    );
}

#[test]
fn a_malformed_secret_is_rejected_and_nothing_changes() {
    let mut s = session("keys-3.yaml");
    let before = sa_set(&s);
    let bad = read("tests/fixtures/secrets/keys-3.yaml").replace(" 128\"", " 96\"");
    let err = s
        .apply(&[upsert("watch:Secret", bad)])
        .expect_err("ICV 96 is refused");
    let text = err.to_string();
    assert!(text.contains("C0005"), "{text}");
    assert_eq!(sa_set(&s), before, "the last good SA set stays");
    assert_eq!(s.generation(), 0);
}

#[test]
fn deleting_the_secret_turns_ipsec_off_and_removes_every_sa() {
    let mut s = session("keys-3.yaml");
    let changes = s
        .apply(&[Event::Delete(ObjectKey::new(
            "Secret",
            "kube-system",
            "cilium-ipsec-keys",
        ))])
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(sa_set(&s), None);
    let ops = &changes
        .ops(TARGET)
        .expect("cpt")
        .as_any()
        .downcast_ref::<SaOps>()
        .expect("SaOps")
        .ops;
    let removed = ops
        .iter()
        .filter(|o| matches!(o, SaOp::RemoveInbound { .. } | SaOp::RemoveOutbound { .. }))
        .count();
    assert_eq!((removed, ops.len()), (4, 4), "{ops:?}");
    let text = s.artifact(TARGET).expect("t").expect("c").text();
    assert!(text.contains("IPsec is off"), "{text}");
}

#[test]
fn a_session_that_loaded_a_bad_secret_recovers_when_it_is_fixed() {
    let nodes = read("tests/fixtures/ipsec/nodes.yaml");
    let bad = read("tests/fixtures/secrets/keys-3.yaml").replace("3+", "16+");
    let options = SessionOptions {
        node: Some("node-a".into()),
        ..SessionOptions::default()
    };
    let mut s = Session::load_texts(
        &[("nodes.yaml", &nodes), ("secret.yaml", &bad)],
        options,
        &cpt_only,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let refusal = s.artifact(TARGET).expect("t").expect_err("SPI 16");
    assert!(refusal.to_string().contains("C0004"), "{refusal}");
    let changes = s
        .apply(&[upsert(
            "watch:Secret",
            read("tests/fixtures/secrets/keys-3.yaml"),
        )])
        .unwrap_or_else(|e| panic!("{e}"));
    // The device held nothing, so everything is added.
    let text = changes.ops(TARGET).expect("cpt").text();
    assert_eq!(text.matches("add inbound").count(), 2, "{text}");
    assert_eq!(text.matches("add outbound").count(), 2, "{text}");
    assert!(text.contains("advertise spi 3"), "{text}");
}

#[test]
fn the_model_and_diagnostics_never_show_a_secret_value() {
    let s = session("keys-3.yaml");
    let key = "5d1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c";
    let debug = format!("{:?} {:#?}", s.cluster(), s.cluster().secrets);
    assert!(
        !debug.contains(key) && !debug.contains("5d1a2b3c"),
        "{debug}"
    );
    let json = serde_json::to_string(s.cluster()).expect("json");
    assert!(!json.contains("5d1a2b3c"), "{json}");
    // A value that is not base64: the frontend's error names the field, not the value.
    let nodes = read("tests/fixtures/ipsec/nodes.yaml");
    let bad = "apiVersion: v1\nkind: Secret\nmetadata: {name: x, namespace: kube-system}\ndata:\n  keys: \"not-base64!!5d1a2b3c\"\n";
    let err = Session::load_texts(
        &[("nodes.yaml", &nodes), ("secret.yaml", bad)],
        SessionOptions::default(),
        &cpt_only,
    )
    .expect_err("not base64");
    let text = err.to_string();
    assert!(text.contains("data.keys"), "{text}");
    assert!(
        !text.contains("5d1a2b3c") && !text.contains("not-base64"),
        "{text}"
    );
}
