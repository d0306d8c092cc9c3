//! Strict field checking for types that ignore unknown fields.
//!
//! k8s-openapi's types skip fields they do not know, which turns a typo such as
//! `spec.podSelectr` into a missing field with a default (`podSelector: {}` selects every
//! pod). kubectl's strict validation refuses such objects, and so does pipec: this module
//! drives a type's `Deserialize` over a JSON value and records every mapping key that the
//! type's `deserialize_struct` does not list among its fields.
//!
//! The walk follows the type, not the value: a key is checked only against the struct that
//! reads it, and the free-form maps (`labels`, `annotations`, `data`) are never checked.

use crate::source::{FieldPath, PathSeg};
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::Value;
use std::cell::RefCell;
use std::rc::Rc;

/// A key the type does not read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownField {
    /// The path of the unknown key, ending in the key itself.
    pub path: FieldPath,
    /// The fields the enclosing struct reads.
    pub expected: &'static [&'static str],
}

impl UnknownField {
    /// The message serde's `deny_unknown_fields` would give, so that one classifier turns
    /// both into the same diagnostic (with a "did you mean").
    pub fn message(&self) -> String {
        let key = match self.path.0.last() {
            Some(PathSeg::Key(k)) => k.as_str(),
            _ => "",
        };
        let list = self
            .expected
            .iter()
            .map(|f| format!("`{f}`"))
            .collect::<Vec<_>>()
            .join(", ");
        format!("unknown field `{key}`, expected one of {list}")
    }
}

/// The first key of `value` (in document order) that `T` does not read, if any. Type
/// errors are not reported here: the normal decode reports them.
pub fn first_unknown_field<'de, T: Deserialize<'de>>(value: &'de Value) -> Option<UnknownField> {
    let found = Rc::new(RefCell::new(None));
    let walker = Strict {
        value,
        path: Vec::new(),
        found: found.clone(),
    };
    let _ = T::deserialize(walker);
    found.take()
}

type Found = Rc<RefCell<Option<UnknownField>>>;

/// A value being decoded, where it is, and where to record the first unknown key.
struct Strict<'de> {
    value: &'de Value,
    path: Vec<PathSeg>,
    found: Found,
}

impl<'de> Strict<'de> {
    fn child(&self, value: &'de Value, seg: PathSeg) -> Strict<'de> {
        let mut path = self.path.clone();
        path.push(seg);
        Strict {
            value,
            path,
            found: self.found.clone(),
        }
    }

    fn note_unknown(&self, fields: &'static [&'static str]) {
        let Value::Object(map) = self.value else {
            return;
        };
        if self.found.borrow().is_some() {
            return;
        }
        if let Some(key) = map.keys().find(|k| !fields.contains(&k.as_str())) {
            let mut path = self.path.clone();
            path.push(PathSeg::Key(key.clone()));
            *self.found.borrow_mut() = Some(UnknownField {
                path: FieldPath(path),
                expected: fields,
            });
        }
    }

    fn visit_object<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, serde_json::Error> {
        match self.value {
            Value::Object(map) => visitor.visit_map(StrictMap {
                entries: map.iter(),
                value: None,
                parent: self,
            }),
            Value::Array(items) => visitor.visit_seq(StrictSeq {
                items: items.iter().enumerate(),
                parent: self,
            }),
            other => other.deserialize_any(visitor),
        }
    }
}

/// Hands the methods the walk does not need to look into to the plain value.
macro_rules! to_value {
    ($($method:ident)*) => {
        $(fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
            self.value.$method(visitor)
        })*
    };
}

impl<'de> Deserializer<'de> for Strict<'de> {
    type Error = serde_json::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        self.visit_object(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        match self.value {
            Value::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        match self.value {
            Value::Object(_) => {
                self.note_unknown(fields);
                self.visit_object(visitor)
            }
            other => other.deserialize_struct(name, fields, visitor),
        }
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        match self.value {
            Value::Object(_) => self.visit_object(visitor),
            other => other.deserialize_map(visitor),
        }
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        match self.value {
            Value::Array(_) => self.visit_object(visitor),
            other => other.deserialize_seq(visitor),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.value.deserialize_tuple(len, visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.value.deserialize_tuple_struct(name, len, visitor)
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.value.deserialize_unit_struct(name, visitor)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.value.deserialize_enum(name, variants, visitor)
    }

    to_value! {
        deserialize_bool deserialize_i8 deserialize_i16 deserialize_i32 deserialize_i64
        deserialize_u8 deserialize_u16 deserialize_u32 deserialize_u64 deserialize_f32
        deserialize_f64 deserialize_char deserialize_str deserialize_string deserialize_bytes
        deserialize_byte_buf deserialize_unit deserialize_identifier deserialize_ignored_any
    }
}

struct StrictMap<'de> {
    entries: serde_json::map::Iter<'de>,
    value: Option<(&'de String, &'de Value)>,
    parent: Strict<'de>,
}

impl<'de> MapAccess<'de> for StrictMap<'de> {
    type Error = serde_json::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Self::Error> {
        let Some((key, value)) = self.entries.next() else {
            return Ok(None);
        };
        self.value = Some((key, value));
        seed.deserialize(de::value::BorrowedStrDeserializer::new(key))
            .map(Some)
    }

    fn next_value_seed<S: DeserializeSeed<'de>>(
        &mut self,
        seed: S,
    ) -> Result<S::Value, Self::Error> {
        let Some((key, value)) = self.value.take() else {
            return Err(de::Error::custom("a map value was read before its key"));
        };
        seed.deserialize(self.parent.child(value, PathSeg::Key(key.clone())))
    }
}

struct StrictSeq<'de> {
    items: std::iter::Enumerate<std::slice::Iter<'de, Value>>,
    parent: Strict<'de>,
}

impl<'de> SeqAccess<'de> for StrictSeq<'de> {
    type Error = serde_json::Error;

    fn next_element_seed<S: DeserializeSeed<'de>>(
        &mut self,
        seed: S,
    ) -> Result<Option<S::Value>, Self::Error> {
        match self.items.next() {
            Some((i, value)) => seed
                .deserialize(self.parent.child(value, PathSeg::Index(i)))
                .map(Some),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::networking::v1::NetworkPolicy;

    #[test]
    fn a_misspelt_field_is_found_with_its_path() {
        let v = serde_json::json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "a", "labels": {"anything": "goes"}},
            "spec": {"podSelectr": {}, "ingress": [{"from": [{"podSelector": {"matchLabel": {}}}]}]}
        });
        let u = first_unknown_field::<NetworkPolicy>(&v).expect("an unknown field");
        assert_eq!(u.path.to_string(), "spec.podSelectr");
        assert!(u.expected.contains(&"podSelector"));
    }

    #[test]
    fn nested_unknown_fields_are_found() {
        let v = serde_json::json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "a"},
            "spec": {"podSelector": {}, "ingress": [{"from": [{"podSelector": {"matchLabel": {}}}]}]}
        });
        let u = first_unknown_field::<NetworkPolicy>(&v).expect("an unknown field");
        assert_eq!(
            u.path.to_string(),
            "spec.ingress[0].from[0].podSelector.matchLabel"
        );
    }

    #[test]
    fn free_form_maps_and_known_fields_pass() {
        let v = serde_json::json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "a", "annotations": {"x/y": "z"}, "labels": {"a": ""}},
            "spec": {"podSelector": {"matchLabels": {"any-key": "v"}}, "policyTypes": ["Ingress"],
                     "ingress": [{"ports": [{"port": "http"}, {"port": 80, "endPort": 90}]}]}
        });
        assert_eq!(first_unknown_field::<NetworkPolicy>(&v), None);
    }
}
