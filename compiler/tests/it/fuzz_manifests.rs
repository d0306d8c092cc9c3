//! The stable-Rust stand-in for the `manifests` fuzz target (issue 18, item 8): every input
//! of the kept corpus (`fuzz/corpus/manifests/`: the examples, the bad-input cases and the
//! CLI's corpus cases), and a few thousand deterministic mutations of them (bytes flipped,
//! lines dropped or repeated, truncations), are read as YAML and as JSON without a panic;
//! their diagnostics render; and whatever the model accepts lowers to a valid MAG. A crash
//! the fuzzer finds is added to the corpus, and so becomes a test here.

use pipec::driver;
use pipec::model::build::BuildOptions;
use std::path::Path;

/// What the fuzz target does with one input.
fn exercise(text: &str) {
    for name in ["fuzz.yaml", "fuzz.json"] {
        let loaded = driver::load_texts(&[(name, text)], &BuildOptions::default());
        let _ = loaded.render();
        let _ = loaded.diagnostic_records();
        if !loaded.has_errors() {
            let lowered = pipec::lower::cluster_to_mag(&loaded.cluster, None);
            if let Err(e) = pipec::mag::validate(lowered.mag()) {
                panic!("an accepted model lowered to an invalid MAG: {e:?}\n--- input ---\n{text}");
            }
        }
    }
}

fn corpus() -> Vec<(String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/manifests");
    let mut out: Vec<(String, String)> = std::fs::read_dir(&dir)
        .expect("the corpus is kept in fuzz/corpus/manifests")
        .map(|e| e.expect("entry").path())
        .map(|p| {
            let bytes = std::fs::read(&p).expect("corpus file");
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                String::from_utf8_lossy(&bytes).into_owned(),
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn corpus_inputs_do_not_panic() {
    let corpus = corpus();
    assert!(
        corpus.len() >= 300,
        "the corpus looks empty: {}",
        corpus.len()
    );
    for (name, text) in &corpus {
        let r = std::panic::catch_unwind(|| exercise(text));
        assert!(r.is_ok(), "corpus input {name} panicked");
    }
}

/// A small deterministic generator (xorshift), so that a failure reproduces exactly.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// One mutation of `text`: the kinds of damage hand edits and bad tools do.
fn mutate(rng: &mut Rng, text: &str) -> String {
    const PIECES: &[&str] = &[
        "{",
        "}",
        "[",
        "]",
        ":",
        "- ",
        "&a ",
        "*a",
        "<<: ",
        "\t",
        "\"",
        "'",
        "---\n",
        "null",
        "-1",
        "99999999999",
        "0x10",
        "~",
        "!!str ",
        "? ",
        "|\n",
        "\u{feff}",
        "\\u0000",
    ];
    let lines: Vec<&str> = text.lines().collect();
    match rng.below(5) {
        0 if !text.is_empty() => {
            let mut bytes = text.as_bytes().to_vec();
            let i = rng.below(bytes.len());
            bytes[i] = PIECES[rng.below(PIECES.len())].as_bytes()[0];
            String::from_utf8_lossy(&bytes).into_owned()
        }
        1 if !lines.is_empty() => {
            let drop = rng.below(lines.len());
            lines
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != drop)
                .map(|(_, l)| format!("{l}\n"))
                .collect()
        }
        2 if !lines.is_empty() => {
            let dup = rng.below(lines.len());
            let mut out = String::new();
            for (i, l) in lines.iter().enumerate() {
                out.push_str(l);
                out.push('\n');
                if i == dup {
                    out.push_str(l);
                    out.push('\n');
                }
            }
            out
        }
        3 => {
            let cut = rng.below(text.len() + 1);
            let cut = (0..=cut)
                .rev()
                .find(|c| text.is_char_boundary(*c))
                .unwrap_or(0);
            text[..cut].to_string()
        }
        _ => {
            let at = rng.below(text.len() + 1);
            let at = (0..=at)
                .rev()
                .find(|c| text.is_char_boundary(*c))
                .unwrap_or(0);
            format!(
                "{}{}{}",
                &text[..at],
                PIECES[rng.below(PIECES.len())],
                &text[at..]
            )
        }
    }
}

#[test]
fn mutated_inputs_do_not_panic() {
    let corpus = corpus();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for round in 0..3000 {
        let (name, seed) = &corpus[rng.below(corpus.len())];
        let mut text = seed.clone();
        for _ in 0..=rng.below(3) {
            text = mutate(&mut rng, &text);
        }
        let r = std::panic::catch_unwind(|| exercise(&text));
        assert!(
            r.is_ok(),
            "round {round}: a mutation of {name} panicked:\n{text}"
        );
    }
}
