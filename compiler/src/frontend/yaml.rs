//! A YAML reader that keeps the byte span of every node.
//!
//! serde's YAML support loses positions, and diagnostics need `file:line:column` for any
//! field. This module reads YAML (and so JSON, which is YAML 1.2 flow syntax) into a small
//! tree of [`Node`]s with spans, converts nodes to `serde_json::Value` for typed decoding,
//! and finds the span of a field path again when a later stage reports a problem there.

use crate::source::{FieldPath, PathSeg};
use std::ops::Range;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// A YAML node with the byte range it covers.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// What the node holds.
    pub kind: NodeKind,
    /// Byte range in the text the node was read from.
    pub span: Range<usize>,
}

/// The content of a [`Node`].
#[derive(Clone, Debug, PartialEq)]
pub enum NodeKind {
    /// A scalar and whether it was quoted (quoted scalars are always strings).
    Scalar(String, bool),
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping, keys in document order.
    Map(Vec<(Node, Node)>),
    /// An alias to an anchor that is not supported by Kubernetes tooling either.
    Alias,
}

/// A YAML syntax error at a byte offset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyntaxError {
    /// Byte offset of the error.
    pub offset: usize,
    /// What the scanner expected or found.
    pub message: String,
}

/// One document of a stream.
#[derive(Clone, Debug, PartialEq)]
pub struct Document {
    /// The root node; `None` for an empty document.
    pub root: Option<Node>,
    /// Byte range of the document's content.
    pub span: Range<usize>,
    /// Keys that appear twice in one mapping, which YAML forbids: (first, again).
    pub duplicate_keys: Vec<(Range<usize>, Range<usize>)>,
}

/// Maps the parser's character offsets to byte offsets.
struct Offsets {
    /// Byte offset of each character, or empty when the text is ASCII.
    bytes: Vec<usize>,
    len: usize,
}

impl Offsets {
    fn new(text: &str) -> Offsets {
        let bytes = if text.is_ascii() {
            Vec::new()
        } else {
            text.char_indices().map(|(b, _)| b).collect()
        };
        Offsets {
            bytes,
            len: text.len(),
        }
    }

    fn byte(&self, char_index: usize) -> usize {
        if self.bytes.is_empty() {
            char_index.min(self.len)
        } else {
            self.bytes.get(char_index).copied().unwrap_or(self.len)
        }
    }
}

enum Frame {
    Seq(usize, Vec<Node>),
    Map(usize, Vec<(Node, Node)>, Option<Node>),
}

struct Builder<'a> {
    offsets: &'a Offsets,
    text: &'a str,
    stack: Vec<Frame>,
    docs: Vec<Document>,
    doc_start: usize,
    root: Option<Node>,
    duplicate_keys: Vec<(Range<usize>, Range<usize>)>,
}

impl Builder<'_> {
    fn finish(&mut self, node: Node) {
        match self.stack.last_mut() {
            None => self.root = Some(node),
            Some(Frame::Seq(_, items)) => items.push(node),
            Some(Frame::Map(_, entries, key)) => match key.take() {
                None => *key = Some(node),
                Some(k) => {
                    if let Some((first, _)) = entries
                        .iter()
                        .find(|(e, _)| e.as_str().is_some() && e.as_str() == k.as_str())
                    {
                        self.duplicate_keys
                            .push((first.span.clone(), k.span.clone()));
                    }
                    entries.push((k, node))
                }
            },
        }
    }

    /// The end of a collection: one past its closing bracket when it is a flow collection
    /// (the end event's mark is on the bracket), else the end of its last child.
    fn collection_end(&self, start: usize, last_child_end: Option<usize>, at: usize) -> usize {
        let closes = matches!(self.text.as_bytes().get(at), Some(b']' | b'}'));
        let end = match (closes, last_child_end) {
            (true, _) => at + 1,
            (false, Some(e)) => e,
            (false, None) => at,
        };
        end.max(start).min(self.text.len())
    }

    fn scalar_end(&self, start: usize, value: &str, style: TScalarStyle) -> usize {
        match style {
            TScalarStyle::Plain => start + value.len(),
            TScalarStyle::SingleQuoted | TScalarStyle::DoubleQuoted => {
                // Quoted scalars may contain escapes, so the closing quote is searched for.
                let quote = if style == TScalarStyle::SingleQuoted {
                    '\''
                } else {
                    '"'
                };
                let rest = self.text.get(start + 1..).unwrap_or("");
                let mut escaped = false;
                for (i, c) in rest.char_indices() {
                    if quote == '"' && c == '\\' && !escaped {
                        escaped = true;
                        continue;
                    }
                    if c == quote && !escaped {
                        return start + 1 + i + 1;
                    }
                    escaped = false;
                }
                start + value.len() + 2
            }
            _ => start + value.len().max(1),
        }
    }
}

impl MarkedEventReceiver for Builder<'_> {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        let at = self.offsets.byte(mark.index());
        match ev {
            Event::DocumentStart => {
                self.doc_start = at;
                self.root = None;
            }
            Event::DocumentEnd => {
                let end = self
                    .root
                    .as_ref()
                    .map(|r| r.span.end)
                    .unwrap_or(at)
                    .max(self.doc_start);
                let start = self
                    .root
                    .as_ref()
                    .map(|r| r.span.start)
                    .unwrap_or(self.doc_start);
                self.docs.push(Document {
                    root: self.root.take(),
                    span: start..end,
                    duplicate_keys: std::mem::take(&mut self.duplicate_keys),
                });
            }
            Event::Scalar(value, style, _, _) => {
                let end = self.scalar_end(at, &value, style).min(self.text.len());
                let quoted = style != TScalarStyle::Plain;
                self.finish(Node {
                    kind: NodeKind::Scalar(value, quoted),
                    span: at..end,
                });
            }
            Event::Alias(_) => self.finish(Node {
                kind: NodeKind::Alias,
                span: at..at + 1,
            }),
            Event::SequenceStart(..) => self.stack.push(Frame::Seq(at, Vec::new())),
            Event::MappingStart(..) => self.stack.push(Frame::Map(at, Vec::new(), None)),
            Event::SequenceEnd | Event::MappingEnd => {
                let node = match self.stack.pop() {
                    Some(Frame::Seq(start, items)) => {
                        let end = self.collection_end(start, items.last().map(|n| n.span.end), at);
                        Node {
                            kind: NodeKind::Seq(items),
                            span: start..end,
                        }
                    }
                    Some(Frame::Map(start, entries, _)) => {
                        // A block mapping's start event is marked where the parser learnt
                        // that the first key is a key (its `:`), so the key's own start is
                        // the true start.
                        let start = entries
                            .first()
                            .map(|(k, _)| k.span.start.min(start))
                            .unwrap_or(start);
                        let end =
                            self.collection_end(start, entries.last().map(|(_, v)| v.span.end), at);
                        Node {
                            kind: NodeKind::Map(entries),
                            span: start..end,
                        }
                    }
                    None => return,
                };
                self.finish(node);
            }
            Event::Nothing | Event::StreamStart | Event::StreamEnd => {}
        }
    }
}

/// Reads every document of a YAML stream.
pub fn parse_stream(text: &str) -> Result<Vec<Document>, SyntaxError> {
    let offsets = Offsets::new(text);
    let mut builder = Builder {
        offsets: &offsets,
        text,
        stack: Vec::new(),
        docs: Vec::new(),
        doc_start: 0,
        root: None,
        duplicate_keys: Vec::new(),
    };
    let mut parser = Parser::new_from_str(text);
    parser.load(&mut builder, true).map_err(|e| SyntaxError {
        offset: offsets.byte(e.marker().index()),
        message: e.info().to_string(),
    })?;
    Ok(builder.docs)
}

impl Node {
    /// The value at `key` when this node is a mapping.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.kind {
            NodeKind::Map(entries) => entries
                .iter()
                .find(|(k, _)| k.as_str() == Some(key))
                .map(|(_, v)| v),
            _ => None,
        }
    }

    /// The text of a scalar node.
    pub fn as_str(&self) -> Option<&str> {
        match &self.kind {
            NodeKind::Scalar(s, _) => Some(s),
            _ => None,
        }
    }

    /// Converts the node to a JSON value with the YAML 1.2 core schema: plain `null`, `~`
    /// and empty scalars are null, `true`/`false` booleans, numbers numbers, the rest strings.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value;
        match &self.kind {
            NodeKind::Scalar(s, true) => Value::String(s.clone()),
            NodeKind::Scalar(s, false) => plain_scalar(s),
            NodeKind::Alias => Value::Null,
            NodeKind::Seq(items) => Value::Array(items.iter().map(Node::to_json).collect()),
            NodeKind::Map(entries) => {
                let mut map = serde_json::Map::new();
                for (k, v) in entries {
                    let key = match &k.kind {
                        NodeKind::Scalar(s, _) => s.clone(),
                        _ => k.to_json().to_string(),
                    };
                    map.insert(key, v.to_json());
                }
                Value::Object(map)
            }
        }
    }

    /// Finds the node at `path`, or the deepest ancestor that exists.
    pub fn find(&self, path: &FieldPath) -> &Node {
        let mut node = self;
        for seg in &path.0 {
            let next = match (seg, &node.kind) {
                (PathSeg::Key(k), NodeKind::Map(_)) => node.get(k),
                (PathSeg::Index(i), NodeKind::Seq(items)) => items.get(*i),
                _ => None,
            };
            match next {
                Some(n) => node = n,
                None => break,
            }
        }
        node
    }

    /// Finds the key node of the last path segment when it is a mapping key, which is the
    /// better place to point at for "field X is wrong".
    pub fn find_key(&self, path: &FieldPath) -> Option<&Node> {
        let (last, parent) = path.0.split_last()?;
        let PathSeg::Key(key) = last else { return None };
        let parent = self.find(&FieldPath(parent.to_vec()));
        match &parent.kind {
            NodeKind::Map(entries) => entries
                .iter()
                .find(|(k, _)| k.as_str() == Some(key))
                .map(|(k, _)| k),
            _ => None,
        }
    }
}

fn plain_scalar(s: &str) -> serde_json::Value {
    use serde_json::Value;
    match s {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        _ => {}
    }
    if let Ok(i) = s.parse::<i64>() {
        return Value::from(i);
    }
    if let Some(hex) = s.strip_prefix("0x") {
        if let Ok(i) = i64::from_str_radix(hex, 16) {
            return Value::from(i);
        }
    }
    let looks_numeric = s
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_digit() || b == b'-' || b == b'+' || b == b'.');
    if looks_numeric {
        if let Ok(f) = s.parse::<f64>() {
            if f.is_finite() {
                return Value::from(f);
            }
        }
    }
    Value::String(s.to_string())
}

/// Finds the byte range of the field at `path` in `text`, a single YAML or JSON document.
///
/// A path to a mapping entry gives the span of its value; a missing part of the path gives
/// the deepest parent that exists. `None` when the text no longer parses.
pub fn locate(text: &str, path: &FieldPath) -> Option<Range<usize>> {
    let docs = parse_stream(text).ok()?;
    let root = docs.into_iter().find_map(|d| d.root)?;
    Some(root.find(path).span.clone())
}

/// Like [`locate`], but a path that ends in a mapping key gives the span of the key
/// itself, the place to point at for "this field is unknown" or "this field is wrong".
pub fn locate_key(text: &str, path: &FieldPath) -> Option<Range<usize>> {
    let docs = parse_stream(text).ok()?;
    let root = docs.into_iter().find_map(|d| d.root)?;
    Some(
        root.find_key(path)
            .unwrap_or_else(|| root.find(path))
            .span
            .clone(),
    )
}

/// True when the field at `path` is written in `text` (a single document), as opposed to
/// defaulted by the decoder.
pub fn exists(text: &str, path: &FieldPath) -> bool {
    let Ok(docs) = parse_stream(text) else {
        return false;
    };
    let Some(mut node) = docs.into_iter().find_map(|d| d.root) else {
        return false;
    };
    for seg in &path.0 {
        let next = match (seg, &node.kind) {
            (PathSeg::Key(k), NodeKind::Map(_)) => node.get(k).cloned(),
            (PathSeg::Index(i), NodeKind::Seq(items)) => items.get(*i).cloned(),
            _ => None,
        };
        match next {
            Some(n) => node = n,
            None => return false,
        }
    }
    true
}

impl Node {
    /// True for a plain empty or `null` scalar, what an empty YAML document holds.
    pub fn is_null(&self) -> bool {
        matches!(&self.kind, NodeKind::Scalar(s, false) if matches!(s.as_str(), "" | "~" | "null" | "Null" | "NULL"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_point_at_values() {
        let text = "a: 1\nb:\n  - x: 'q'\n    y: true\n";
        let docs = parse_stream(text).unwrap();
        let root = docs[0].root.as_ref().unwrap();
        let y = root.find(&FieldPath::parse("b[0].y"));
        assert_eq!(&text[y.span.clone()], "true");
        let x = root.find(&FieldPath::parse("b[0].x"));
        assert_eq!(&text[x.span.clone()], "'q'");
        assert_eq!(
            root.to_json(),
            serde_json::json!({"a": 1, "b": [{"x": "q", "y": true}]})
        );
    }

    #[test]
    fn multi_document_streams_keep_each_span() {
        let text = "kind: A\n---\nkind: B\n";
        let docs = parse_stream(text).unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(&text[docs[1].span.clone()], "kind: B");
    }

    #[test]
    fn json_is_read_with_spans() {
        let text = r#"{"spec": {"ports": [{"port": 80}, {"port": "x"}]}}"#;
        let r = locate(text, &FieldPath::parse("spec.ports[1].port")).unwrap();
        assert_eq!(&text[r], "\"x\"");
    }

    #[test]
    fn non_ascii_offsets_are_bytes() {
        let text = "é: 1\nb: zz\n";
        let r = locate(text, &FieldPath::parse("b")).unwrap();
        assert_eq!(&text[r], "zz");
    }

    #[test]
    fn block_mappings_start_at_their_first_key() {
        let text = "a:\n  b: 1\n  c: {}\n  d: [x, y]\n";
        let docs = parse_stream(text).unwrap();
        let root = docs[0].root.as_ref().unwrap();
        let a = root.find(&FieldPath::parse("a"));
        assert_eq!(&text[a.span.clone()], "b: 1\n  c: {}\n  d: [x, y]");
        let c = root.find(&FieldPath::parse("a.c"));
        assert_eq!(&text[c.span.clone()], "{}");
    }

    #[test]
    fn duplicate_keys_are_found() {
        let text = "a: 1\nb:\n  c: 1\n  c: 2\n";
        let docs = parse_stream(text).unwrap();
        let dups = &docs[0].duplicate_keys;
        assert_eq!(dups.len(), 1);
        assert_eq!(&text[dups[0].1.clone()], "c");
        assert_eq!(&text[dups[0].0.clone()], "c");
        assert!(dups[0].0.start < dups[0].1.start);
    }

    #[test]
    fn keys_are_located() {
        let text = "a:\n  bad key: 1\n";
        let r = locate_key(text, &FieldPath::parse("a.bad key")).unwrap();
        assert_eq!(&text[r], "bad key");
    }

    #[test]
    fn syntax_errors_have_offsets() {
        let err = parse_stream("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(err.offset > 0, "{err:?}");
    }
}
