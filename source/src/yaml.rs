//! A YAML reader that keeps the byte span of every node: the span-keeping locator.
//!
//! serde's YAML support loses positions, and diagnostics need `file:line:column` for any
//! field. This module reads YAML (and so JSON, which is YAML 1.2 flow syntax) into a small
//! tree of [`Node`]s with spans, and finds the span of a field path again when a later stage
//! reports a problem there ([`locate`], [`locate_key`], [`exists`]). It lives in the source
//! layer so that pointing into a file needs no frontend; the manifest frontend reads
//! objects with it and converts nodes to JSON values for typed decoding.

use crate::path::{FieldPath, PathSeg};
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

/// A collection being read: its start offset, its anchor id (0 for none) and its children.
enum Frame {
    Seq(usize, usize, Vec<Node>),
    /// Start, anchor, entries, the key waiting for its value, and the index of each
    /// scalar key's first entry (so that a duplicate key is found without a scan: a
    /// mapping of 100,000 labels would otherwise take quadratic time).
    Map(
        usize,
        usize,
        Vec<(Node, Node)>,
        Option<Node>,
        rustc_hash::FxHashMap<String, usize>,
    ),
}

/// How many nodes the aliases of one stream may add, beyond one per byte of text. An alias
/// copies its anchor's node, so nested aliases grow exponentially ("billion laughs"); a
/// real manifest that uses aliases stays far below this.
const ALIAS_NODE_BUDGET: usize = 100_000;

struct Builder<'a> {
    offsets: &'a Offsets,
    text: &'a str,
    stack: Vec<Frame>,
    docs: Vec<Document>,
    doc_start: usize,
    root: Option<Node>,
    duplicate_keys: Vec<(Range<usize>, Range<usize>)>,
    /// The node of each anchor id, as YAML resolves an alias to the node its anchor names.
    anchors: std::collections::HashMap<usize, Node>,
    /// Nodes the aliases may still add before the stream is refused.
    alias_budget: usize,
    /// The first problem that makes the stream unreadable although the parser accepted
    /// it: an alias that expands too much, or a merge key that is not a mapping.
    error: Option<SyntaxError>,
}

impl Builder<'_> {
    /// Records `node` under its anchor (if any), then adds it to its parent.
    fn finish_anchored(&mut self, anchor: usize, node: Node) {
        if anchor != 0 {
            self.anchors.insert(anchor, node.clone());
        }
        self.finish(node);
    }

    /// An alias stands for a copy of its anchor's node, as in YAML; the copy counts
    /// against the alias budget so that nested aliases cannot exhaust memory.
    fn alias(&mut self, anchor: usize, at: usize) {
        let Some(node) = self.anchors.get(&anchor).cloned() else {
            self.fail(
                at,
                "an alias refers to an anchor that is not defined before it",
            );
            return;
        };
        let size = node.count();
        if size > self.alias_budget {
            self.fail(
                at,
                "aliases expand to too many nodes (a YAML \"billion laughs\" document?)",
            );
            return;
        }
        self.alias_budget -= size;
        self.finish(node);
    }

    fn fail(&mut self, at: usize, message: &str) {
        if self.error.is_none() {
            self.error = Some(SyntaxError {
                offset: at,
                message: message.to_string(),
            });
        }
    }

    /// Applies YAML merge keys (`<<: *base` or `<<: [*a, *b]`) as Kubernetes' YAML reader
    /// does: the merged mappings add the keys the mapping does not set itself, and of two
    /// merged mappings the earlier one wins.
    fn merge(&mut self, entries: Vec<(Node, Node)>) -> Vec<(Node, Node)> {
        let is_merge = |k: &Node| matches!(&k.kind, NodeKind::Scalar(s, false) if s == "<<");
        if !entries.iter().any(|(k, _)| is_merge(k)) {
            return entries;
        }
        let (merges, mut own): (Vec<_>, Vec<_>) =
            entries.into_iter().partition(|(k, _)| is_merge(k));
        for (key, value) in merges {
            let sources = match value.kind {
                NodeKind::Map(_) => vec![value],
                NodeKind::Seq(items) => items,
                NodeKind::Scalar(..) => vec![value],
            };
            for source in sources {
                let NodeKind::Map(extra) = source.kind else {
                    self.fail(
                        key.span.start,
                        "the value of a merge key `<<` must be a mapping or a list of mappings",
                    );
                    return own;
                };
                for (k, v) in extra {
                    if !own
                        .iter()
                        .any(|(o, _)| o.as_str().is_some() && o.as_str() == k.as_str())
                    {
                        own.push((k, v));
                    }
                }
            }
        }
        own
    }

    fn finish(&mut self, node: Node) {
        match self.stack.last_mut() {
            None => self.root = Some(node),
            Some(Frame::Seq(_, _, items)) => items.push(node),
            Some(Frame::Map(_, _, entries, key, seen)) => match key.take() {
                None => *key = Some(node),
                Some(k) => {
                    if let Some(text) = k.as_str() {
                        match seen.get(text) {
                            Some(&first) => self
                                .duplicate_keys
                                .push((entries[first].0.span.clone(), k.span.clone())),
                            None => {
                                seen.insert(text.to_string(), entries.len());
                            }
                        }
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
            Event::Scalar(value, style, anchor, _) => {
                let end = self.scalar_end(at, &value, style).min(self.text.len());
                let quoted = style != TScalarStyle::Plain;
                let node = Node {
                    kind: NodeKind::Scalar(value, quoted),
                    span: at..end,
                };
                self.finish_anchored(anchor, node);
            }
            Event::Alias(anchor) => self.alias(anchor, at),
            Event::SequenceStart(anchor, _) => self.stack.push(Frame::Seq(at, anchor, Vec::new())),
            Event::MappingStart(anchor, _) => self.stack.push(Frame::Map(
                at,
                anchor,
                Vec::new(),
                None,
                rustc_hash::FxHashMap::default(),
            )),
            Event::SequenceEnd | Event::MappingEnd => {
                let (anchor, node) = match self.stack.pop() {
                    Some(Frame::Seq(start, anchor, items)) => {
                        let end = self.collection_end(start, items.last().map(|n| n.span.end), at);
                        let node = Node {
                            kind: NodeKind::Seq(items),
                            span: start..end,
                        };
                        (anchor, node)
                    }
                    Some(Frame::Map(start, anchor, entries, _, _)) => {
                        // A block mapping's start event is marked where the parser learnt
                        // that the first key is a key (its `:`), so the key's own start is
                        // the true start.
                        let start = entries
                            .first()
                            .map(|(k, _)| k.span.start.min(start))
                            .unwrap_or(start);
                        let end =
                            self.collection_end(start, entries.last().map(|(_, v)| v.span.end), at);
                        let node = Node {
                            kind: NodeKind::Map(self.merge(entries)),
                            span: start..end,
                        };
                        (anchor, node)
                    }
                    None => return,
                };
                self.finish_anchored(anchor, node);
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
        anchors: std::collections::HashMap::new(),
        alias_budget: ALIAS_NODE_BUDGET.saturating_add(text.len()),
        error: None,
    };
    let mut parser = Parser::new_from_str(text);
    parser.load(&mut builder, true).map_err(|e| SyntaxError {
        offset: offsets.byte(e.marker().index()),
        message: e.info().to_string(),
    })?;
    match builder.error {
        Some(e) => Err(e),
        None => Ok(builder.docs),
    }
}

impl Node {
    /// The number of nodes in this tree, keys included.
    pub fn count(&self) -> usize {
        match &self.kind {
            NodeKind::Scalar(..) => 1,
            NodeKind::Seq(items) => 1 + items.iter().map(Node::count).sum::<usize>(),
            NodeKind::Map(entries) => {
                1 + entries
                    .iter()
                    .map(|(k, v)| k.count() + v.count())
                    .sum::<usize>()
            }
        }
    }

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

    #[test]
    fn a_merge_key_on_a_scalar_is_refused() {
        let err = parse_stream("a: &s 1\nm:\n  <<: *s\n").unwrap_err();
        assert!(err.message.contains("merge key"), "{err:?}");
    }

    #[test]
    fn alias_bombs_are_refused() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..12 {
            let p = i - 1;
            text.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        let err = parse_stream(&text).unwrap_err();
        assert!(err.message.contains("too many nodes"), "{err:?}");
    }
}
