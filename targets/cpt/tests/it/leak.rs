//! Keys never leak: every key-free output of the examples is searched for every global and
//! derived key, as hex (both cases, with and without colons) and as raw bytes.

use std::os::unix::fs::PermissionsExt as _;

use pipec_cpt::{compile, diff, read_keys_from_texts, KeySet};

use crate::common::{cluster, keys, scratch};

fn needles(k: &KeySet, arts: &[&pipec_cpt::CptArtifact]) -> Vec<Vec<u8>> {
    let mut keys: Vec<&[u8]> = k.keys.values().map(|g| g.key.material.expose()).collect();
    for a in arts {
        keys.extend(a.sas.iter().map(|s| s.key.material.expose()));
    }
    let mut out = Vec::new();
    for key in keys {
        // The 16-byte cipher key and the whole key‖salt, in every spelling.
        for part in [&key[..16], key] {
            let hex: String = part.iter().map(|b| format!("{b:02x}")).collect();
            let colon: Vec<String> = part.iter().map(|b| format!("{b:02x}")).collect();
            out.push(hex.clone().into_bytes());
            out.push(hex.to_uppercase().into_bytes());
            out.push(colon.join(":").into_bytes());
            out.push(part.to_vec());
        }
    }
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn no_output_carries_a_key() {
    let c = cluster();
    let (k3, k4) = (keys("keys-3.yaml"), keys("keys-4.yaml"));
    let a3 = compile(&c, "node-a", &k3).expect("a3");
    let a4 = compile(&c, "node-a", &k4).expect("a4");
    let b3 = compile(&c, "node-b", &k3).expect("b3");
    let ops = diff(&a3, &a4);
    let mut outputs: Vec<String> = vec![
        a3.text(),
        a4.text(),
        b3.text(),
        a3.json().to_string(),
        serde_json::to_string_pretty(&b3.json()).unwrap_or_default(),
        format!("{a3:?}"),
        format!("{a3:#?}"),
        format!("{k3:?}"),
        format!("{k4:#?}"),
        serde_json::to_string(&k3).unwrap_or_default(),
        format!("{ops:?}"),
        serde_json::to_string(&ops).unwrap_or_default(),
        pipec::backend::Artifact::items(&a3)
            .iter()
            .map(|(a, b)| format!("{a}{b}"))
            .collect(),
    ];
    outputs.extend(ops.iter().map(ToString::to_string));
    // Errors about a line that holds a key must not quote the key.
    let bad = [
        "3+ rfc4106(gcm(aes)) 5d1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c 96",
        "3+ cbc(aes) 5d1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c 128",
        "99 rfc4106(gcm(aes)) 5d1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c 128",
        "3+ rfc4106(gcm(aes)) 5d1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d 128",
    ];
    for line in bad {
        let text = format!(
            "kind: Secret\nmetadata: {{name: cilium-ipsec-keys, namespace: kube-system}}\nstringData: {{keys: \"{line}\"}}\n"
        );
        let d = read_keys_from_texts(&[("bad.yaml", &text)]).expect_err("rejected");
        outputs.extend(d.iter().map(|d| format!("{d} {d:?}")));
    }
    let needles = needles(&k3, &[&a3, &b3]);
    let needles4 = needles_of(&k4, &a4);
    for out in &outputs {
        for n in needles.iter().chain(&needles4) {
            assert!(!contains(out.as_bytes(), n), "a key leaked into: {out}");
        }
    }
    // The secret-bearing forms do carry the keys, and go to files of mode 0600.
    let xfrm = a3.xfrm_text();
    assert!(a3
        .sas
        .iter()
        .all(|s| xfrm.contains(&s.key.material.expose_hex())));
    let f = scratch("leak").join("xfrm.sh");
    pipec_cpt::write_secret_file(&f, &xfrm).expect("write");
    let mode = std::fs::metadata(&f).expect("meta").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let _ = std::fs::remove_dir_all(scratch("leak"));
}

fn needles_of(k: &KeySet, a: &pipec_cpt::CptArtifact) -> Vec<Vec<u8>> {
    needles(k, &[a])
}
