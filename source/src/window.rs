//! Diagnostics in very long lines: a minified JSON dump or a one-line flow mapping can be a
//! hundred megabytes on one line, and a `.pipe` file can hold thousands of statements on
//! one. codespan-reporting prints every labelled line whole, so such a diagnostic is
//! rendered here instead, with a window of the line around its label and the true line and
//! column; and a message that quotes a huge value is cut. Both pipec's manifest
//! diagnostics and policy-lang's use this one renderer.

use std::fmt::Write as _;
use std::ops::Range;

/// Lines longer than this (in bytes) are shown as a window around the label.
pub const LONG_LINE: usize = 400;

/// Characters of context shown on each side of a label in a long line.
const CONTEXT: usize = 60;

/// Characters of the label itself shown at most.
const LABEL: usize = 80;

/// Characters of a message kept when it is rendered.
const MESSAGE: usize = 300;

/// `message`, cut to a few hundred characters (and saying how long it was).
pub fn clip(message: &str) -> String {
    let kept = chars_of(message, MESSAGE, false);
    if kept.len() < message.len() {
        format!("{kept}… ({} bytes in all)", message.len())
    } else {
        message.to_string()
    }
}

/// Up to `n` characters of `s` from its start (`from_end`: from its end).
fn chars_of(s: &str, n: usize, from_end: bool) -> &str {
    if from_end {
        let skip = s.chars().count().saturating_sub(n);
        let at = s.char_indices().nth(skip).map_or(s.len(), |(i, _)| i);
        &s[at..]
    } else {
        let at = s.char_indices().nth(n).map_or(s.len(), |(i, _)| i);
        &s[..at]
    }
}

/// `i`, moved down to a character boundary of `text` (a span from a faulty stage must not
/// make rendering panic).
fn boundary(text: &str, i: usize) -> usize {
    let mut i = i.min(text.len());
    while !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// The byte range of the line of `text` that holds `offset`.
fn line_around(text: &str, offset: usize) -> Range<usize> {
    let offset = boundary(text, offset);
    let start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let end = text[offset..].find('\n').map_or(text.len(), |i| offset + i);
    start..end
}

/// One diagnostic to render, with its primary label's place.
pub struct Snippet<'a> {
    /// `error` or `warning`.
    pub severity: &'a str,
    /// The stable code.
    pub code: &'a str,
    /// The message.
    pub message: &'a str,
    /// The file's name, as diagnostics show it.
    pub file: &'a str,
    /// The file's whole text.
    pub text: &'a str,
    /// The primary label's byte range in `text`.
    pub span: Range<usize>,
    /// The primary label's line and column, from 1.
    pub line: usize,
    /// See `line`.
    pub column: usize,
    /// The primary label's message.
    pub label: &'a str,
    /// Lines after the snippet, each already prefixed (`note: ...`, `help: ...`);
    /// secondary labels are given here by place.
    pub notes: Vec<String>,
}

/// The diagnostic rendered with a window of its primary label's line, or `None` when that
/// line is not long (then codespan-reporting renders it as usual).
pub fn long_line(s: &Snippet<'_>) -> Option<String> {
    let line = line_around(s.text, s.span.start);
    if line.len() <= LONG_LINE {
        return None;
    }
    let start = boundary(s.text, s.span.start.max(line.start));
    let end = boundary(s.text, s.span.end.clamp(start, line.end));
    let (before, label, after) = (
        s.text.get(line.start..start)?,
        s.text.get(start..end)?,
        s.text.get(end..line.end)?,
    );
    let before = chars_of(before, CONTEXT, true);
    let shown = chars_of(label, LABEL, false);
    let after = chars_of(after, CONTEXT, false);
    let lead = if line.start + before.len() < start {
        "…"
    } else {
        ""
    };
    let trail = if after.len() < line.end - end {
        "…"
    } else {
        ""
    };
    let cut = if shown.len() < label.len() { "…" } else { "" };
    let number = s.line.to_string();
    let gutter = " ".repeat(number.len());
    let mut out = String::new();
    let _ = writeln!(out, "{}[{}]: {}", s.severity, s.code, clip(s.message));
    let _ = writeln!(
        out,
        "{gutter} ┌─ {}:{}:{} (a line of {} bytes, shown in part)",
        s.file,
        s.line,
        s.column,
        line.len()
    );
    let _ = writeln!(out, "{gutter} │");
    let _ = writeln!(out, "{number} │ {lead}{before}{shown}{cut}{after}{trail}");
    let pad = lead.chars().count() + before.chars().count();
    let carets = (shown.chars().count() + cut.chars().count()).max(1);
    let _ = writeln!(
        out,
        "{gutter} │ {}{} {}",
        " ".repeat(pad),
        "^".repeat(carets),
        clip(s.label)
    );
    let _ = writeln!(out, "{gutter} │");
    for n in &s.notes {
        let _ = writeln!(out, "{gutter} = {}", clip(n));
    }
    let _ = writeln!(out);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_line_is_windowed_and_a_short_one_is_left_to_codespan() {
        let text = format!("{}BAD{}\n", "a ".repeat(1000), " b".repeat(1000));
        let at = text.find("BAD").expect("label");
        fn snippet(text: &str, at: usize) -> Snippet<'_> {
            Snippet {
                severity: "error",
                code: "X0001",
                message: "bad",
                file: "f",
                text,
                span: at..at + 3,
                line: 1,
                column: at + 1,
                label: "here",
                notes: vec!["help: fix it".into()],
            }
        }
        let out = long_line(&snippet(&text, at)).expect("windowed");
        assert!(out.contains(&format!("f:1:{}", at + 1)), "{out}");
        assert!(
            out.contains("…a a BAD b b…") || out.contains("a BAD b"),
            "{out}"
        );
        assert!(out.len() < 600, "{out}");
        assert!(long_line(&snippet("a BAD b\n", 2)).is_none());
    }

    #[test]
    fn a_huge_message_is_cut() {
        let m = "x".repeat(10_000);
        let c = clip(&m);
        assert!(c.len() < 400 && c.ends_with("(10000 bytes in all)"), "{c}");
        assert_eq!(clip("short"), "short");
    }
}
