//! The SA set, its text form and the rotation delta.

use std::time::Duration;

use pipec_cpt::{compile, diff, SaDirection, SaOp};

use crate::common::{cluster, keys};

#[test]
fn text_snapshot() {
    let art = compile(&cluster(), "node-a", &keys("keys-3.yaml")).expect("compiles");
    insta::assert_snapshot!(art.text());
}

#[test]
fn pairs_agree_outbound_equals_peer_inbound() {
    let c = cluster();
    let k = keys("keys-3.yaml");
    let a = compile(&c, "node-a", &k).expect("a");
    let b = compile(&c, "node-b", &k).expect("b");
    let a_out = a
        .sas
        .iter()
        .find(|s| s.direction == SaDirection::Outbound && s.peer == "node-b")
        .expect("a->b");
    let b_in = b
        .sas
        .iter()
        .find(|s| s.direction == SaDirection::Inbound && s.peer == "node-a")
        .expect("b<-a");
    assert_eq!(a_out.key, b_in.key);
    assert_eq!((a_out.src, a_out.dst), (b_in.src, b_in.dst));
    let a_in = a
        .sas
        .iter()
        .find(|s| s.direction == SaDirection::Inbound && s.peer == "node-b")
        .expect("a<-b");
    assert_ne!(a_out.key, a_in.key, "per-pair keys differ by direction");
    // Every peer shares the SPI but gets its own SA slot; the steering rule maps it back.
    let idx: std::collections::BTreeSet<u32> = a.sas.iter().map(|s| s.sa_index).collect();
    assert_eq!(idx.len(), 2);
    for st in &a.steering {
        assert_eq!(
            st.spi ^ ((u32::from(st.sa_hi) << 16) | u32::from(st.sa_lo)),
            st.sa_index
        );
    }
}

#[test]
fn rotation_is_make_before_break() {
    let c = cluster();
    let old = compile(&c, "node-a", &keys("keys-3.yaml")).expect("old");
    let new = compile(&c, "node-a", &keys("keys-4.yaml")).expect("new");
    let ops = diff(&old, &new);
    let text: Vec<String> = ops.iter().map(ToString::to_string).collect();
    insta::assert_snapshot!(text.join("\n"));
    let pos = |f: &dyn Fn(&SaOp) -> bool| ops.iter().position(f).expect("present");
    let last_add_in = ops
        .iter()
        .rposition(|o| matches!(o, SaOp::AddInbound { .. }))
        .expect("adds");
    let advertise = pos(&|o| matches!(o, SaOp::AdvertiseSpi { spi: 4 }));
    let first_switch = pos(&|o| matches!(o, SaOp::SwitchOutbound { .. }));
    let first_remove = pos(&|o| matches!(o, SaOp::RemoveInbound { .. }));
    assert!(last_add_in < advertise && advertise < first_switch && first_switch < first_remove);
    assert!(ops.iter().all(
        |o| !matches!(o, SaOp::RemoveInbound { after, .. } if *after < Duration::from_secs(60))
    ));
    // Old and new SAs of one peer use different slots during the window.
    for (o, n) in old.sas.iter().zip(&new.sas) {
        assert_ne!(o.sa_index, n.sa_index);
    }
    assert!(diff(&new, &new).is_empty());
}
