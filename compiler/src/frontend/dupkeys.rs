//! Duplicate keys in JSON.
//!
//! serde_json, and k8s-openapi's decoders on top of it, keep the last of two equal keys
//! without a word, so `{"podSelector": {...}, "podSelector": {}}` would mean the second.
//! kubectl's strict decoding refuses such objects ("duplicate field"), and so does pipec.
//! The check is one pass over the text at serde_json's speed; only the keys of the mapping
//! being read are kept.

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;

/// The first key that appears twice in one JSON object of `text`, and the byte offset just
/// after its second occurrence. `None` when there is none, or when the text is not JSON
/// (the normal decode reports that).
pub(super) fn first_duplicate(text: &str) -> Option<(String, usize)> {
    let mut de = serde_json::Deserializer::from_str(text);
    let err = match Walk.deserialize(&mut de) {
        Ok(()) => return None,
        Err(e) => e,
    };
    if !err.is_data() {
        return None;
    }
    let message = err.to_string();
    let key = message
        .strip_prefix("duplicate key `")?
        .rsplit_once("` at line ")?
        .0
        .to_string();
    Some((key, offset(text, err.line(), err.column())))
}

fn offset(text: &str, line: usize, column: usize) -> usize {
    let start: usize = text
        .split_inclusive('\n')
        .take(line.saturating_sub(1))
        .map(str::len)
        .sum();
    (start + column).min(text.len())
}

/// Walks any JSON value and fails on the first object with a key seen twice.
struct Walk;

impl<'de> DeserializeSeed<'de> for Walk {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Walk {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen: HashSet<Cow<'de, str>> = HashSet::new();
        while let Some(key) = map.next_key_seed(Key)? {
            if seen.contains(&key) {
                return Err(de::Error::custom(format!("duplicate key `{key}`")));
            }
            seen.insert(key);
            map.next_value_seed(Walk)?;
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Walk)?.is_some() {}
        Ok(())
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
}

/// A key, borrowed from the text unless it has escapes.
struct Key;

impl<'de> DeserializeSeed<'de> for Key {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_twice_in_one_object_is_found() {
        let text = "{\"spec\": {\"a\": 1,\n \"podSelector\": {\"x\": 1}, \"podSelector\": {}}}";
        let (key, at) = first_duplicate(text).expect("a duplicate");
        assert_eq!(key, "podSelector");
        assert!(
            text[..at].trim_end().ends_with("\"podSelector\""),
            "{}",
            &text[..at]
        );
        assert!(text[..at].matches("podSelector").count() == 2);
    }

    #[test]
    fn equal_keys_in_different_objects_are_fine() {
        let text = r#"[{"a": {"a": 1}}, {"a": [{"a": 2}, {"a": 3}]}]"#;
        assert_eq!(first_duplicate(text), None);
    }

    #[test]
    fn escaped_keys_are_compared_by_value() {
        assert!(first_duplicate(r#"{"a": 1, "\u0061": 2}"#).is_some());
    }

    #[test]
    fn syntax_errors_are_left_to_the_decoder() {
        assert_eq!(first_duplicate(r#"{"a": 1,"#), None);
    }
}
