//! Malformed Secrets get coded diagnostics and no key set.

use pipec_cpt::{read_keys_from_texts, CptCode};

fn secret(keys: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: cilium-ipsec-keys, namespace: kube-system}}\nstringData:\n  keys: \"{keys}\"\n"
    )
}

fn codes(keys: &str) -> Vec<CptCode> {
    let text = secret(keys);
    match read_keys_from_texts(&[("s.yaml", &text)]) {
        Err(d) => d.iter().map(|d| d.code).collect(),
        Ok(k) => panic!("accepted: {k:?}"),
    }
}

const KEY: &str = "00112233445566778899aabbccddeeff01020304";

#[test]
fn bad_secrets_are_coded() {
    assert_eq!(codes(&format!("3 cbc(aes) {KEY} 128")), [CptCode::C0002]);
    assert_eq!(
        codes(&format!("3 hmac(sha256) {KEY} cbc(aes) {KEY}")),
        [CptCode::C0002]
    );
    assert_eq!(
        codes("3 rfc4106(gcm(aes)) 0011223344 128"),
        [CptCode::C0003]
    );
    assert_eq!(
        codes("3 rfc4106(gcm(aes)) zz112233445566778899aabbccddeeff01020304 128"),
        [CptCode::C0003]
    );
    assert_eq!(
        codes(&format!("16 rfc4106(gcm(aes)) {KEY} 128")),
        [CptCode::C0004]
    );
    assert_eq!(
        codes(&format!("0+ rfc4106(gcm(aes)) {KEY} 128")),
        [CptCode::C0004]
    );
    assert_eq!(
        codes(&format!("3 rfc4106(gcm(aes)) {KEY} 96")),
        [CptCode::C0005]
    );
    assert_eq!(
        codes(&format!(
            "3 rfc4106(gcm(aes)) {KEY} 128\\n3 rfc4106(gcm(aes)) {KEY} 128"
        )),
        [CptCode::C0006]
    );
    assert_eq!(codes("3 rfc4106(gcm(aes))"), [CptCode::C0001]);
}

#[test]
fn two_secrets_and_missing_keys() {
    let s = secret(&format!("3 rfc4106(gcm(aes)) {KEY} 128"));
    let both = format!("{s}---\n{s}");
    let d = read_keys_from_texts(&[("s.yaml", &both)]).expect_err("two Secrets");
    assert_eq!(d[0].code, CptCode::C0006);
    assert!(d[0].at.starts_with("s.yaml:7"), "{}", d[0].at);
    let none = "apiVersion: v1\nkind: Secret\nmetadata: {name: cilium-ipsec-keys, namespace: kube-system}\n";
    assert_eq!(
        read_keys_from_texts(&[("s.yaml", none)]).expect_err("no keys")[0].code,
        CptCode::C0001
    );
    let other = "apiVersion: v1\nkind: Secret\nmetadata: {name: other, namespace: kube-system}\n";
    assert_eq!(read_keys_from_texts(&[("s.yaml", other)]), Ok(None));
}

#[test]
fn compile_errors_are_coded() {
    let c = crate::common::cluster();
    let k = crate::common::keys("keys-3.yaml");
    let e = pipec_cpt::compile(&c, "no-such-node", &k).expect_err("unknown node");
    assert_eq!(e[0].code, CptCode::C0101);
    let mut no_boot = k.clone();
    no_boot.boot_ids.remove("node-b");
    let e = pipec_cpt::compile(&c, "node-a", &no_boot).expect_err("no boot id");
    assert_eq!(e[0].code, CptCode::C0102);
    let tight = pipec_cpt::DeviceLimits {
        in_min_spi: 0,
        in_max_spi: 3,
        out_max_sa: 4096,
    };
    let e = pipec_cpt::compile_with(&c, "node-a", &k, tight).expect_err("range");
    assert_eq!(e[0].code, CptCode::C0104);
}
