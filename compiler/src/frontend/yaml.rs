//! The manifest frontend's side of the span-keeping YAML reader, which lives in the source
//! layer (`pipec_source::yaml`): converting a node to a JSON value for typed decoding, with
//! the YAML 1.2 core schema's scalar types.

pub use pipec_source::yaml::*;

/// Converts a node to a JSON value with the YAML 1.2 core schema: plain `null`, `~`
/// and empty scalars are null, `true`/`false` booleans, numbers numbers, the rest strings.
pub fn to_json(node: &Node) -> serde_json::Value {
    use serde_json::Value;
    match &node.kind {
        NodeKind::Scalar(s, true) => Value::String(s.clone()),
        NodeKind::Scalar(s, false) => plain_scalar(s),
        NodeKind::Seq(items) => Value::Array(items.iter().map(to_json).collect()),
        NodeKind::Map(entries) => {
            let mut map = serde_json::Map::new();
            for (k, v) in entries {
                let key = match &k.kind {
                    NodeKind::Scalar(s, _) => s.clone(),
                    _ => to_json(k).to_string(),
                };
                map.insert(key, to_json(v));
            }
            Value::Object(map)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::FieldPath;

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
            to_json(root),
            serde_json::json!({"a": 1, "b": [{"x": "q", "y": true}]})
        );
    }

    #[test]
    fn aliases_stand_for_their_anchor() {
        let text = "a: &sel {app: web}\nb:\n  matchLabels: *sel\n";
        let docs = parse_stream(text).unwrap();
        let root = docs[0].root.as_ref().unwrap();
        assert_eq!(
            to_json(root),
            serde_json::json!({"a": {"app": "web"}, "b": {"matchLabels": {"app": "web"}}})
        );
    }

    #[test]
    fn merge_keys_add_what_the_mapping_does_not_set() {
        let text = "base: &b {x: 1, y: 2}\nother: &o {y: 3, z: 4}\nm:\n  <<: [*b, *o]\n  x: 9\n";
        let docs = parse_stream(text).unwrap();
        let m = docs[0].root.as_ref().unwrap().find(&FieldPath::parse("m"));
        assert_eq!(to_json(m), serde_json::json!({"x": 9, "y": 2, "z": 4}));
    }
}
