//! Bad input: every file in `bad_input/` is loaded, and its rendered diagnostics are
//! snapshotted (`snapshots/bad_input/<stem>.snap`).
//!
//! Each case starts with a `#` comment saying what is wrong (JSON cases have a sibling
//! `.md`). A case whose name contains `-warn-` must give warnings and no error; every other
//! case must give at least one error. Lines of the form `# option: pod-cidr=10.0.0.0/30`
//! (or `service-cidr`, `allow-ignored-policies=true`, `namespace=NS`) set build options for that case.

use pipec::diag::{self, Severity};
use pipec::driver;
use pipec::model::build::BuildOptions;
use std::path::{Path, PathBuf};

/// The case files, sorted, as paths relative to the crate root (so that rendered file
/// names are the same on every machine).
fn cases() -> Vec<PathBuf> {
    let dir = Path::new("tests/it/bad_input");
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("bad_input directory")
        .map(|e| e.expect("directory entry").path())
        .filter(|p| {
            p.extension()
                .is_some_and(|e| e == "yaml" || e == "yml" || e == "json")
        })
        .collect();
    out.sort();
    out
}

/// Reads `# option: key=value` lines; the file may not be UTF-8, so bytes are read.
fn options(path: &Path) -> BuildOptions {
    let mut o = BuildOptions::default();
    let bytes = std::fs::read(path).expect("case file");
    let text = String::from_utf8_lossy(&bytes);
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("# option: ") else {
            continue;
        };
        match rest.split_once('=') {
            Some(("pod-cidr", v)) => o.pod_cidr = v.trim().parse().expect("pod-cidr option"),
            Some(("service-cidr", v)) => {
                o.service_cidr = v.trim().parse().expect("service-cidr option")
            }
            Some(("namespace", v)) => o.default_namespace = Some(v.trim().to_string()),
            Some(("allow-ignored-policies", v)) => {
                o.allow_ignored_policies = v.trim().parse().expect("a boolean")
            }
            _ => panic!("{}: unknown option line `{line}`", path.display()),
        }
    }
    o
}

/// The case file and the files its `# also: NAME` lines add (such as a `.pipe` file), named
/// relative to the case's directory.
fn inputs(path: &Path) -> Vec<PathBuf> {
    let bytes = std::fs::read(path).expect("case file");
    let text = String::from_utf8_lossy(&bytes);
    let dir = path.parent().expect("case directory");
    let mut out = vec![path.to_path_buf()];
    out.extend(
        text.lines()
            .filter_map(|l| l.strip_prefix("# also: "))
            .map(|name| dir.join(name.trim())),
    );
    out
}

/// Loads one case and checks the properties every diagnostic must have.
fn check(path: &Path) -> String {
    let loaded = driver::load(&inputs(path), &options(path));
    let name = path.display();
    let warn_only = path
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.contains("-warn-"));
    let errors: Vec<_> = loaded.diags.iter().filter(|d| d.is_error()).collect();
    if warn_only {
        assert!(errors.is_empty(), "{name}: a warning case gave errors");
        assert!(
            loaded.diags.iter().any(|d| d.severity == Severity::Warning),
            "{name}: no warning"
        );
    } else {
        assert!(!errors.is_empty(), "{name}: no error reported");
    }
    for d in &loaded.diags {
        assert!(!d.code.as_str().is_empty(), "{name}: empty code");
        assert!(!d.message.is_empty(), "{name}: empty message");
        let Some(primary) = &d.primary else {
            panic!("{name}: `{}` has no primary span", d.message);
        };
        let lc = loaded
            .sources
            .line_col(primary.span.file, primary.span.start as usize);
        assert!(lc.line > 0, "{name}: `{}` points at line 0", d.message);
        if d.is_error() {
            assert!(!d.hints.is_empty(), "{name}: `{}` has no hint", d.message);
        }
    }
    diag::emit_to_string(&loaded.sources, &loaded.diags)
}

#[test]
fn bad_input() {
    let cases = cases();
    assert!(cases.len() >= 35, "only {} bad-input cases", cases.len());
    for path in cases {
        let rendered = check(&path);
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .expect("UTF-8 file name")
            .to_string();
        // insta resolves `input_file` against the workspace root, so give it in full.
        let input = Path::new(env!("CARGO_MANIFEST_DIR")).join(&path);
        insta::with_settings!({
            input_file => &input,
            snapshot_path => "snapshots/bad_input",
            prepend_module_to_snapshot => false,
            omit_expression => true,
        }, {
            insta::assert_snapshot!(stem, rendered);
        });
    }
}

/// Every error code that manifests can trigger appears in some case.
#[test]
fn every_code_has_a_case() {
    use pipec::diag::Code;
    let mut seen = std::collections::BTreeSet::new();
    for path in cases() {
        let loaded = driver::load(&inputs(&path), &options(&path));
        seen.extend(loaded.diags.iter().map(|d| d.code));
    }
    // Not reachable from manifest files: an unreadable path is not a file one can commit,
    // and these warnings belong to later stages that do not exist yet.
    let unreachable = [Code::PodWithoutIp, Code::L7Redirect];
    let missing: Vec<_> = Code::ALL
        .iter()
        .filter(|c| !seen.contains(c) && !unreachable.contains(c))
        .map(|c| c.as_str())
        .collect();
    assert!(
        missing.is_empty(),
        "codes without a bad-input case: {missing:?}"
    );
}

/// One bad item of a `kubectl get -o json` List is reported, and the good items are read.
#[test]
fn a_bad_list_item_does_not_hide_the_good_ones() {
    let path = PathBuf::from("tests/it/bad_input/53-kubectl-list-one-bad.json");
    let loaded = driver::load(std::slice::from_ref(&path), &BuildOptions::default());
    let errors = loaded.diags.iter().filter(|d| d.is_error()).count();
    assert_eq!(errors, 1);
    let names: Vec<&str> = loaded
        .cluster
        .services
        .iter()
        .map(|s| s.name.as_str())
        .collect();
    assert_eq!(names, ["db", "web"]);
}

/// Errors in different documents of one stream are all reported, in file order.
#[test]
fn every_document_of_a_stream_is_checked() {
    let path = PathBuf::from("tests/it/bad_input/46-multi-document-errors.yaml");
    let loaded = driver::load(std::slice::from_ref(&path), &BuildOptions::default());
    let lines: Vec<usize> = loaded
        .diags
        .iter()
        .filter(|d| d.is_error())
        .filter_map(|d| d.primary.as_ref())
        .map(|p| {
            loaded
                .sources
                .line_col(p.span.file, p.span.start as usize)
                .line
        })
        .collect();
    assert_eq!(lines, [14, 26, 45]);
}

/// A UTF-8 byte-order mark, as some editors write it, is dropped as kubectl drops it, in
/// YAML and in JSON.
#[test]
fn a_byte_order_mark_is_accepted() {
    let dir = std::env::temp_dir().join(format!("pipec-bom-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let files = [
        (
            "a.yaml",
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n",
        ),
        (
            "b.json",
            r#"{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "b"}}"#,
        ),
    ];
    let mut paths = Vec::new();
    for (name, text) in files {
        let path = dir.join(name);
        let mut bytes = b"\xef\xbb\xbf".to_vec();
        bytes.extend_from_slice(text.as_bytes());
        std::fs::write(&path, bytes).expect("write case");
        paths.push(path);
    }
    let loaded = driver::load(&paths, &BuildOptions::default());
    assert!(loaded.diags.is_empty(), "{:?}", loaded.diags);
    let names: Vec<&str> = loaded
        .cluster
        .namespaces
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(names, ["a", "b"]);
}

/// A diagnostic in a very long line (a minified dump, a one-line flow mapping) shows a
/// window of the line around the label, with the true line and column, and a message that
/// quotes a huge value is cut: the output stays small whatever the input (issue 18, item 6).
#[test]
fn a_long_line_is_shown_in_part() {
    let labels: Vec<String> = (0..20_000).map(|i| format!("k{i}: v{i}")).collect();
    let text = format!(
        "{{apiVersion: v1, kind: Namespace, metadata: {{name: a, labels: {{{}, bad: \"{}\"}}}}}}\n",
        labels.join(", "),
        "x ".repeat(50_000)
    );
    let loaded = driver::load_texts(&[("long.yaml", &text)], &BuildOptions::default());
    let out = diag::emit_to_string(&loaded.sources, &loaded.diags);
    assert!(out.contains("error[E0105]"), "{out}");
    assert!(out.contains("shown in part"), "{out}");
    let column = text.find("\"x x").expect("value") + 1;
    assert!(out.contains(&format!("long.yaml:1:{column}")), "{out}");
    assert!(out.len() < 3000, "{} bytes of output", out.len());
}
