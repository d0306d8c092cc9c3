//! The rendered table: its stable text, and real `nft` accepts it.

// Dependencies of the package that this target does not use itself; they serve its
// other targets. `unused_crate_dependencies` checks every target against all of them.
use libc as _;
use serde_json as _;
use serde_yaml as _;

use pipec::backend::{Backend, Profile};
use pipec::session::{Session, SessionOptions};
use pipec_backend_nftables::{NftBackend, TARGET};
use std::path::PathBuf;
use std::process::Command;

fn nft_only(_: Option<&Profile>) -> Vec<Box<dyn Backend>> {
    vec![Box::new(NftBackend::default())]
}

/// A session over `examples/ipsec/cluster.yaml` for node-a, with the nftables backend only.
fn session() -> Session {
    let dir = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../ipsec/cluster.yaml"
    ));
    let options = SessionOptions {
        node: Some("node-a".into()),
        ..SessionOptions::default()
    };
    Session::load(&[dir], options, &nft_only).unwrap_or_else(|e| panic!("{e}"))
}

fn script() -> String {
    let s = session();
    let text = s
        .artifact(TARGET)
        .expect("target")
        .expect("compiles")
        .text();
    text
}

#[test]
fn the_table_text_is_stable() {
    insta::assert_snapshot!(script());
}

/// A network namespace of the test's own, deleted by name when dropped (also when the
/// test panics).
struct Netns(String);

impl Netns {
    fn new(what: &str) -> Netns {
        let name = format!("pipec-nft-{what}-{}", std::process::id());
        let ok = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .expect("ip");
        assert!(ok.success(), "ip netns add {name}");
        Netns(name)
    }

    /// Runs `nft ARGS` in the namespace, with `stdin` as its input; its stdout, or the
    /// error it printed.
    fn nft(&self, args: &[&str], stdin: &str) -> Result<String, String> {
        use std::io::Write as _;
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.0, "nft"])
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| format!("nft: {e}"))?;
        if let Some(mut i) = child.stdin.take() {
            i.write_all(stdin.as_bytes()).map_err(|e| e.to_string())?;
        }
        let out = child.wait_with_output().map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// `nft --check` in a namespace of the test's own (it needs root and nftables; CI has both).
#[test]
#[cfg_attr(
    not(feature = "root-tests"),
    ignore = "needs root and network namespaces: run with --features root-tests"
)]
fn nft_accepts_the_table() {
    if !pipec_root() {
        return;
    }
    let ns = Netns::new("render");
    ns.nft(&["-c", "-f", "-"], &script())
        .unwrap_or_else(|e| panic!("{e}"));
}

/// `examples/starwars` without its L7 rules: the deathstar Service (two backends) and an
/// L3/L4 CiliumNetworkPolicy, on the synthetic node that holds every pod.
fn starwars() -> String {
    let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../starwars"));
    let s = Session::load(
        &[dir.join("app.yaml"), dir.join("policy.yaml")],
        SessionOptions::default(),
        &nft_only,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let text = s
        .artifact(TARGET)
        .expect("target")
        .unwrap_or_else(|e| panic!("{e}"))
        .text();
    text
}

/// Services: a verdict map from frontend to a chain that DNATs by the MAG's Maglev slots.
#[test]
fn services_are_dnat_by_maglev_slot() {
    let text = starwars();
    insta::assert_snapshot!(text);
    if pipec_root() {
        let ns = Netns::new("services");
        ns.nft(&["-c", "-f", "-"], &text)
            .unwrap_or_else(|e| panic!("{e}"));
    }
}

/// A policy with a name of 245 characters (Kubernetes allows 253): its rules' comments are
/// cut to the 128 bytes nftables takes, and nft loads the table.
#[test]
fn long_names_fit_the_comment_limit() {
    use pipec::session::Event;
    let mut s = session();
    // Four labels of 60 characters and one of 1: a valid DNS subdomain name.
    let label = "x".repeat(60);
    let name = format!("{label}.{label}.{label}.{label}.x");
    assert_eq!(name.len(), 245);
    let policy = format!(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: {name}, namespace: shop}}\nspec:\n  podSelector: {{}}\n  ingress:\n  - ports:\n    - {{port: 8080, protocol: TCP}}\n"
    );
    s.apply(&[Event::Upsert {
        source: "long.yaml".into(),
        text: policy,
    }])
    .unwrap_or_else(|e| panic!("{e}"));
    let text = s
        .artifact(TARGET)
        .expect("target")
        .unwrap_or_else(|e| panic!("{e}"))
        .text();
    assert!(text.contains(&name[..40]), "the policy is rendered");
    for line in text.lines() {
        if let Some((_, c)) = line.split_once("comment \"") {
            assert!(c.trim_end_matches('"').len() <= 128, "{line}");
        }
    }
    if pipec_root() {
        let ns = Netns::new("long");
        ns.nft(&["-c", "-f", "-"], &text)
            .unwrap_or_else(|e| panic!("{e}"));
    }
}

/// Whether to check the rendered table with real `nft` as well: only with the `root-tests`
/// feature (plain `cargo test` needs no root), and then root and nft must be there.
fn pipec_root() -> bool {
    if !cfg!(feature = "root-tests") {
        return false;
    }
    let root = std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"));
    let nft = Command::new("nft").arg("--version").output().is_ok();
    assert!(root && nft, "the nft checks need root and nftables");
    true
}

/// Through a session, as the runtime drives a backend: a policy change is one atomic table
/// replace; a change that leaves the table alone is no operation.
#[test]
fn a_policy_change_is_one_atomic_replace() {
    use pipec::session::Event;
    use pipec_backend_nftables::{NftOp, NftOps};
    let mut s = session();
    let deny_all = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny, namespace: shop}\nspec:\n  podSelector: {}\n  policyTypes: [Egress]\n";
    let c = s
        .apply(&[Event::Upsert {
            source: "deny.yaml".into(),
            text: deny_all.into(),
        }])
        .unwrap_or_else(|e| panic!("{e}"));
    let ops = c
        .ops(TARGET)
        .expect("nftables")
        .as_any()
        .downcast_ref::<NftOps>()
        .expect("NftOps");
    assert_eq!(ops.ops.len(), 1);
    let NftOp::ReplaceTable { script } = &ops.ops[0];
    assert!(script.starts_with("add table inet pipec\ndelete table inet pipec\n"));
    assert!(
        !script.contains("return comment \"builtin:default allow\""),
        "egress is isolated now"
    );
    // The same script replaces a table that is there: real nft takes it on a live table
    // (the first load) and again on the table it replaced, and what is listed afterwards is
    // the new table (its isolated egress chains), not the old one.
    if pipec_root() {
        let ns = Netns::new("replace");
        ns.nft(&["-f", "-"], &crate::script())
            .unwrap_or_else(|e| panic!("{e}"));
        let before = ns
            .nft(&["list", "table", "inet", "pipec"], "")
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            before.contains("return comment \"builtin:default allow\""),
            "the old table allows egress: {before}"
        );
        for _ in 0..2 {
            ns.nft(&["-f", "-"], script)
                .unwrap_or_else(|e| panic!("{e}"));
        }
        let listed = ns
            .nft(&["list", "table", "inet", "pipec"], "")
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            !listed.contains("return comment \"builtin:default allow\""),
            "{listed}"
        );
        assert!(listed.contains("chain egress_"), "{listed}");
        let tables = ns
            .nft(&["list", "tables"], "")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(tables.trim(), "table inet pipec", "exactly one table");
    }
    let c = s
        .apply(&[Event::Upsert {
            source: "deny.yaml".into(),
            text: deny_all.into(),
        }])
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(c.ops(TARGET).expect("nftables").is_empty());
}
