//! `pipec trace` on the Star Wars example: the text a network engineer reads.

use pipec::driver;
use pipec::model::build::BuildOptions;
use pipec::semantics::{evaluate, Context};
use pipec::trace::{parse_probe, report_to_text, trace_report};

fn example(files: &[&str]) -> driver::Loaded {
    let texts: Vec<(String, String)> = files
        .iter()
        .map(|f| {
            let path = format!("{}/../examples/{f}", env!("CARGO_MANIFEST_DIR"));
            let text = std::fs::read_to_string(&path).expect("example is readable");
            (format!("examples/{f}"), text)
        })
        .collect();
    let refs: Vec<(&str, &str)> = texts
        .iter()
        .map(|(n, t)| (n.as_str(), t.as_str()))
        .collect();
    let loaded = driver::load_texts(&refs, &BuildOptions::default());
    assert!(!loaded.has_errors(), "the example has errors");
    loaded
}

fn trace(loaded: &driver::Loaded, from: &str) -> String {
    let probe =
        parse_probe(&loaded.cluster, from, "svc:default/deathstar", "80/TCP").expect("valid probe");
    let outcome = evaluate(&Context::new(&loaded.cluster), &probe);
    report_to_text(&trace_report(
        &loaded.sources,
        &loaded.cluster,
        &probe,
        &outcome,
    ))
}

#[test]
fn starwars_l3() {
    let loaded = example(&["starwars/app.yaml", "starwars/policy.yaml"]);
    insta::assert_snapshot!("starwars_tiefighter", trace(&loaded, "default/tiefighter"));
    insta::assert_snapshot!("starwars_xwing", trace(&loaded, "default/xwing"));
}

#[test]
fn starwars_l7() {
    let loaded = example(&["starwars/app.yaml", "starwars/l7/policy-l7.yaml"]);
    let text = trace(&loaded, "default/tiefighter");
    assert!(text.contains("REDIRECT (L7 HTTP)"), "{text}");
    insta::assert_snapshot!("starwars_l7_tiefighter", text);
}
