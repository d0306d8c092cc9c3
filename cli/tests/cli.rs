//! The `pipec` binary as a user runs it: exit codes, where diagnostics point, and the
//! README's main command.

// Dependencies of the package that this target does not use itself; they serve its
// other targets. `unused_crate_dependencies` checks every target against all of them.
use anyhow as _;
use clap as _;
use clap_complete as _;
use gencluster as _;
use insta as _;
use ipnet as _;
use mimalloc as _;
use pipec as _;
use pipec_cpt as _;
use pipec_ebpf as _;
use pipec_proto as _;
use pipec_rte_flow as _;
use policy_lang as _;
use proptest as _;
use serde as _;
use serde_yaml as _;
use tempfile as _;
use tokio as _;
use tonic as _;

use std::process::{Command, Output};

/// Runs the binary from the repository root, as the README does.
fn pipec(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pipec"))
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .args(args)
        .output()
        .expect("run pipec")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

const BAD: &str = "compiler/tests/it/bad_input/14-port-out-of-range.yaml";

#[test]
fn check_exits_1_and_points_at_file_line_column() {
    let out = pipec(&["check", BAD]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains(&format!("┌─ {BAD}:")), "{stderr}");
    assert!(stderr.contains("error[E0109]"), "{stderr}");
    assert!(
        !stderr.contains('\u{1b}'),
        "no colour escapes when stderr is not a terminal"
    );
}

#[test]
fn check_reports_every_file_of_a_run() {
    let out = pipec(&[
        "check",
        BAD,
        "compiler/tests/it/bad_input/11-invalid-cidr.yaml",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("14-port-out-of-range.yaml:"), "{stderr}");
    assert!(stderr.contains("11-invalid-cidr.yaml:"), "{stderr}");
}

#[test]
fn check_accepts_the_example() {
    let out = pipec(&["check", "examples/starwars"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

#[test]
fn the_readme_trace_allows_the_tiefighter_and_denies_the_xwing() {
    let args = |from: &'static str| {
        [
            "trace",
            "examples/starwars",
            "--from",
            from,
            "--to",
            "svc:default/deathstar",
            "--port",
            "80/TCP",
        ]
    };
    let tie = pipec(&args("default/tiefighter"));
    assert_eq!(tie.status.code(), Some(0), "{}", text(&tie.stderr));
    assert!(
        text(&tie.stdout).contains("verdict  ALLOW"),
        "{}",
        text(&tie.stdout)
    );
    let xwing = pipec(&args("default/xwing"));
    assert_eq!(
        xwing.status.code(),
        Some(0),
        "a trace that ran exits 0 whatever the verdict"
    );
    let stdout = text(&xwing.stdout);
    assert!(stdout.contains("verdict  DENY"), "{stdout}");
    assert!(
        stdout.contains("CiliumNetworkPolicy/default/rule1"),
        "{stdout}"
    );
}

#[test]
fn trace_of_a_local_node_port_agrees_on_both_nodes() {
    let args = |node_ip: &'static str| {
        [
            "trace",
            "examples/traffic-policy",
            "--from",
            "ip:192.0.2.1",
            "--to",
            node_ip,
            "--port",
            "30080/TCP",
        ]
    };
    // Node n3 runs no endpoint of the service: externalTrafficPolicy Local drops there.
    let out = pipec(&args("ip:172.18.0.3"));
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains("verdict  DENY: service has no ready endpoints on node n3"),
        "{stdout}"
    );
    assert!(stdout.contains("  verdict: Deny"), "{stdout}");
    // Node n1 runs web-1, the one candidate, and the MAG translates to it.
    let out = pipec(&args("ip:172.18.0.1"));
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("verdict  ALLOW"), "{stdout}");
    assert!(stdout.contains("translated to 10.244.1.5:8080"), "{stdout}");
    assert!(!stdout.contains("DISAGREEMENT"), "{stdout}");
}

#[test]
fn trace_with_an_unknown_pod_is_an_error() {
    let out = pipec(&[
        "trace",
        "examples/starwars",
        "--from",
        "default/nobody",
        "--to",
        "default/xwing",
        "--port",
        "80",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("nobody"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn conformance_passes_the_shared_cases_and_ends_with_the_count_line() {
    let out = pipec(&["conformance", "../shared/conformance"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    let last = stdout.lines().last().unwrap_or_default();
    assert!(last.ends_with(" passed, 0 failed"), "{last}");
}

/// pipec's own conformance cases (issue 20) on the `ebpf` engine: real packets through the
/// loaded programs (needs root, as every kernel test; fails without it).
#[test]
fn own_conformance_cases_pass_on_ebpf() {
    // The cases of `multi-node/` have two nodes; the ebpf engine compiles one node.
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut cases: Vec<String> = std::fs::read_dir(root.join("compiler/tests/conformance"))
        .expect("cases")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    cases.sort();
    assert!(cases.len() >= 4, "{cases:?}");
    let mut args = vec!["conformance", "--engine", "ebpf"];
    args.extend(cases.iter().map(String::as_str));
    let out = pipec(&args);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    let last = stdout.lines().last().unwrap_or_default();
    assert!(last.ends_with(" passed, 0 failed"), "{last}");
    assert!(!last.starts_with("0 passed"), "{last}");
}

/// Issue 20, point 1: one numbering. Every identity number the MAG's policy tables and
/// ipcache use is listed by `--emit identities` (split classes and world per family in
/// their own table), here with two pods of one identity that a named port tells apart.
#[test]
fn every_identity_number_of_the_mag_is_in_emit_identities() {
    let dir = std::env::temp_dir().join(format!("pipec-ids-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("split.yaml");
    std::fs::write(
        &file,
        "apiVersion: v1\nkind: Pod\nmetadata: {name: a, labels: {app: x}}\n\
         spec: {containers: [{name: c, image: x, ports: [{name: http, containerPort: 80}]}]}\n---\n\
         apiVersion: v1\nkind: Pod\nmetadata: {name: b, labels: {app: x}}\n\
         spec: {containers: [{name: c, image: x, ports: [{name: http, containerPort: 8080}]}]}\n---\n\
         apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p}\n\
         spec: {podSelector: {}, egress: [{ports: [{port: http}]}]}\n",
    )
    .expect("write");
    let path = file.to_str().expect("utf-8 path");
    for input in [path, "examples/starwars"] {
        let mag = text(&pipec(&["compile", input, "--emit", "mag"]).stdout);
        let ids = text(&pipec(&["compile", input, "--emit", "identities"]).stdout);
        let listed: std::collections::BTreeSet<&str> = ids
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter(|w| w.chars().all(|c| c.is_ascii_digit()))
            .collect();
        // `meta.src_identity=N` / `meta.dst_identity=N` in policy keys, `(id=N)` in the
        // ipcache tables' actions.
        let used: std::collections::BTreeSet<&str> = mag
            .split("identity=")
            .skip(1)
            .chain(mag.split("(id=").skip(1))
            .filter_map(|r| r.split(|c: char| !c.is_ascii_digit()).next())
            .filter(|n| !n.is_empty())
            .collect();
        for n in &used {
            assert!(
                listed.contains(n),
                "{input}: the MAG uses {n}, --emit identities lists {listed:?}"
            );
        }
        assert!(
            !used.is_empty(),
            "{input}: no identity numbers found in the MAG"
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// Issue 20, point 6: a trace to a headless Service follows each pod its name resolves to,
/// in the reference and in the MAG, and exits 0 (it used to fail with "the destination has
/// no address").
#[test]
fn trace_to_a_headless_service_traces_its_pods() {
    let out = pipec(&[
        "trace",
        "cli/tests/headless.yaml",
        "--from",
        "default/client",
        "--to",
        "svc:default/db",
        "--port",
        "5432",
    ]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("headless (no virtual IP)"), "{stdout}");
    assert!(
        stdout.contains("candidate 2/2 (headless: the client connects to "),
        "{stdout}"
    );
    assert!(!stdout.contains("DISAGREEMENT"), "{stdout}");
    assert!(!stdout.contains("cannot run"), "{stdout}");
}

/// Issue 20, point 4: a policy pipec does not enforce fails the run, with the real reason;
/// `--allow-ignored-policies` goes on, and the commands end with what was ignored.
#[test]
fn an_unenforced_policy_is_an_error_unless_allowed_and_then_summarised() {
    let case = "compiler/tests/it/bad_input/74-calico-policies-are-not-enforced.yaml";
    let out = pipec(&["check", case]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains(
            "error[E0124]: `GlobalNetworkPolicy` of `projectcalico.org/v3` is a Calico policy"
        ),
        "{err}"
    );
    assert!(
        !err.contains("use `apiVersion: networking.k8s.io/v1`"),
        "{err}"
    );
    let out = pipec(&[
        "compile",
        case,
        "--allow-ignored-policies",
        "--emit",
        "model",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains("note: ignored 4 policy objects pipec does not enforce"),
        "{err}"
    );
    assert!(
        err.contains("  1 × `NetworkPolicy` of `projectcalico.org/v3`"),
        "{err}"
    );
}

/// Issue 20, point 9: `-n` places namespace-less objects as `kubectl apply -n` does;
/// repeated warnings are counted after a few, and `-q` hides them; a workload's name
/// given as a pod lists the pods it made.
#[test]
fn kubectl_habits_namespace_quiet_and_workload_pod_names() {
    let dir = std::env::temp_dir().join(format!("pipec-habits-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let mut text_in = String::from(
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n---\n\
         apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: frontend}\n\
         spec:\n  replicas: 2\n  selector: {matchLabels: {app: fe}}\n  template:\n    \
         metadata: {labels: {app: fe}}\n    spec: {containers: [{name: c, image: x}]}\n---\n\
         apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny}\n\
         spec: {podSelector: {}, policyTypes: [Ingress]}\n",
    );
    for i in 0..6 {
        text_in.push_str(&format!(
            "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: c{i}}}\n"
        ));
    }
    let file = dir.join("app.yaml");
    std::fs::write(&file, text_in).expect("write");
    let path = file.to_str().expect("utf-8 path");
    let trace = |extra: &[&str], to: &str| {
        let mut args = vec![
            "trace",
            path,
            "--from",
            "ip:192.0.2.1",
            "--to",
            to,
            "--port",
            "80",
        ];
        args.extend_from_slice(extra);
        pipec(&args)
    };
    // Without -n the deployment and the policy are in `default`.
    let out = trace(&[], "shop/frontend");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("no pod shop/frontend"),
        "{}",
        text(&out.stderr)
    );
    let out = trace(&["-n", "shop"], "shop/frontend");
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("no pod shop/frontend in the input; workload `frontend` made shop/frontend-"),
        "{err}"
    );
    let pod = err
        .split("made ")
        .nth(1)
        .and_then(|r| r.split([',', ' ', '\n']).next())
        .expect("a pod name")
        .to_string();
    let out = trace(&["-n", "shop"], &pod);
    let (stdout, err) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stdout}{err}");
    assert!(
        stdout.contains("DENY"),
        "the -n policy isolates the pod: {stdout}"
    );
    assert_eq!(
        err.matches("warning[W0001]").count(),
        4,
        "3 shown and a count: {err}"
    );
    assert!(
        err.contains("warning[W0001]: 3 more like the above not shown"),
        "{err}"
    );
    let out = trace(&["-n", "shop", "-q"], &pod);
    assert_eq!(text(&out.stderr), "", "-q hides warnings");
    let out = pipec(&["check", path]);
    assert_eq!(
        text(&out.stderr).matches("warning[W0001]").count(),
        6,
        "check lists every one"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn fmt_check_fails_on_unformatted_input_and_leaves_it_alone() {
    let dir = std::env::temp_dir().join(format!("pipec-fmt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("p.pipe");
    let messy = "policy \"a\"   priority 3 {\n subject namespaces {};\n}\n";
    std::fs::write(&file, messy).expect("write");
    let path = file.to_str().expect("utf-8 path");
    let check = pipec(&["fmt", "--check", path]);
    assert_eq!(check.status.code(), Some(1));
    assert_eq!(std::fs::read_to_string(&file).expect("read"), messy);
    let fmt = pipec(&["fmt", path]);
    assert_eq!(fmt.status.code(), Some(0), "{}", text(&fmt.stderr));
    assert_eq!(
        pipec(&["fmt", "--check", path]).status.code(),
        Some(0),
        "formatting is idempotent"
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// `fmt` keeps what the user set up (issue 18, item 7): through a symbolic link the target is
/// rewritten and the link stays; the mode is kept; a file with another hard link is
/// rewritten in place so both names see the new text; no temporary file is left behind;
/// and a file it cannot read is named in the error.
#[test]
fn fmt_keeps_links_mode_and_hard_links() {
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    let dir = std::env::temp_dir().join(format!("pipec-fmt-links-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let messy = "policy \"a\"   priority 3 {\n subject namespaces {};\n}\n";
    let target = dir.join("real.pipe");
    std::fs::write(&target, messy).expect("write");
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o640)).expect("chmod");
    let link = dir.join("link.pipe");
    std::os::unix::fs::symlink(&target, &link).expect("symlink");
    let out = pipec(&["fmt", link.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(std::fs::symlink_metadata(&link)
        .expect("link")
        .file_type()
        .is_symlink());
    let formatted = std::fs::read_to_string(&target).expect("read");
    assert_ne!(formatted, messy, "the link's target was formatted");
    assert_eq!(
        std::fs::metadata(&target)
            .expect("meta")
            .permissions()
            .mode()
            & 0o777,
        0o640
    );

    let first = dir.join("one.pipe");
    let second = dir.join("two.pipe");
    std::fs::write(&first, messy).expect("write");
    std::fs::hard_link(&first, &second).expect("hard link");
    let inode = std::fs::metadata(&first).expect("meta").ino();
    let out = pipec(&["fmt", first.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(std::fs::metadata(&first).expect("meta").ino(), inode);
    assert_eq!(std::fs::read_to_string(&second).expect("read"), formatted);

    let left: Vec<_> = std::fs::read_dir(&dir)
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("fmt-tmp"))
        .collect();
    assert!(left.is_empty(), "temporary files left: {left:?}");

    let missing = dir.join("missing.pipe");
    let out = pipec(&["fmt", missing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("missing.pipe"),
        "{}",
        text(&out.stderr)
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// The DaemonSet of pipecd loads (its RBAC is checked against the daemon's kinds in
/// runtime/tests/deploy.rs).
#[test]
fn the_deploy_manifests_check() {
    let out = pipec(&["check", "deploy/"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

/// Devices and FIFOs are refused before they are read, named directly or by a `.pipe`
/// include: reading `/dev/zero` or a FIFO nobody writes would never end.
#[test]
fn devices_and_fifos_are_refused_at_once() {
    let dir = std::env::temp_dir().join(format!("pipec-fifo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let fifo = dir.join("fifo.yaml");
    let _ = std::fs::remove_file(&fifo);
    let made = Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("run mkfifo");
    assert!(made.success());
    let include = dir.join("inc.pipe");
    std::fs::write(&include, "include \"fifo.yaml\";\n").expect("write include");
    let fifo_arg = fifo.to_str().expect("UTF-8 path");
    let include_arg = include.to_str().expect("UTF-8 path");
    for args in [
        vec!["check", "/dev/zero"],
        vec!["check", fifo_arg],
        vec!["check", include_arg],
        vec!["fmt", "/dev/zero"],
    ] {
        let out = pipec(&args);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains("not a regular file"), "{args:?}: {stderr}");
    }
}

/// kubectl's input habits (issue 18, item 9): `-` reads standard input, a file named twice
/// is read once, and an input with no object at all is an error (E0005), not an empty
/// cluster that allows everything.
#[test]
fn stdin_a_file_named_twice_and_empty_input() {
    use std::io::Write as _;
    let dir = std::env::temp_dir().join(format!("pipec-inputs-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("empty")).expect("temp dir");
    let file = dir.join("ns.yaml");
    let text = "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n";
    std::fs::write(&file, text).expect("write");
    let file = file.to_str().expect("UTF-8");

    let mut child = Command::new(env!("CARGO_BIN_EXE_pipec"))
        .args(["check", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run pipec");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write stdin");
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok: 1 namespaces"));

    let twice = pipec(&["check", file, file]);
    assert!(
        twice.status.success(),
        "{}",
        String::from_utf8_lossy(&twice.stderr)
    );

    let empty = pipec(&["check", "-o", "json", dir.join("empty").to_str().unwrap()]);
    assert_eq!(empty.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&empty.stdout).contains("\"E0005\""));
    let _ = std::fs::remove_dir_all(&dir);
}

/// cilium-cli's and kubectl's habits (issue 18, item 9): shell completion, a version with
/// the commit and targets as JSON, an Examples section in every subcommand's help, and
/// `explain --summary` with the budget and no rule table.
#[test]
fn completion_version_examples_and_explain_summary() {
    for shell in ["bash", "zsh", "fish"] {
        let out = pipec(&["completion", shell]);
        assert!(out.status.success(), "completion {shell}");
        assert!(String::from_utf8_lossy(&out.stdout).contains("explain"));
    }
    assert_eq!(pipec(&["completion", "tcsh"]).status.code(), Some(2));
    let out = pipec(&["version", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("version JSON");
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    assert!(v["commit"].as_str().is_some_and(|c| !c.is_empty()));
    assert!(v["targets"]
        .as_array()
        .is_some_and(|t| t.iter().any(|t| t == "ebpf")));
    for sub in [
        "check",
        "compile",
        "trace",
        "conformance",
        "fmt",
        "explain",
        "targets",
        "status",
        "observe",
        "completion",
        "version",
    ] {
        let help = pipec(&[sub, "--help"]);
        assert!(
            String::from_utf8_lossy(&help.stdout).contains("Examples:"),
            "`pipec {sub} --help` has no Examples section"
        );
    }
    let out = pipec(&["explain", "--summary", "examples/starwars"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("budget of octeon-cn10k:"), "{text}");
    assert!(
        !text.contains("RULE "),
        "the summary has no rule table: {text}"
    );
    assert_eq!(
        pipec(&["compile", "--emit", "nonsense", "x"]).status.code(),
        Some(2)
    );
}

/// kubectl's `-f` and `-R`, and an unknown `--node` is an error naming the close matches
/// (issue 18, item 9).
#[test]
fn filename_recursive_and_unknown_node() {
    let dir = std::env::temp_dir().join(format!("pipec-tree-{}", std::process::id()));
    let deep = dir.join("a/b");
    std::fs::create_dir_all(&deep).expect("temp dir");
    std::fs::write(
        deep.join("ns.yaml"),
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: deep}\n",
    )
    .expect("write");
    let root = dir.to_str().expect("UTF-8");
    assert_eq!(
        pipec(&["check", root]).status.code(),
        Some(1),
        "one level deep"
    );
    let out = pipec(&["check", "-R", "-f", root]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("ok: 1 namespaces"));
    let out = pipec(&[
        "compile",
        "--emit",
        "mag",
        "--node",
        "node-x",
        "examples/ipsec",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("no node node-x in the inputs (did you mean node-a?)"),
        "{}",
        text(&out.stderr)
    );
    std::fs::remove_dir_all(&dir).ok();
}
