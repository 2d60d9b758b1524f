//! A YAML/JSON value tree that remembers the line of every node, so a config
//! error can point at the line the user has to fix.
//!
//! serde-saphyr parses; `Spanned` gives each node's location. JSON is read by
//! the same parser (it is YAML 1.2 flow syntax), so `.json` files get lines too.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

/// One node of the document with the (1-based) line it starts on; 0 = unknown
/// (a node legate synthesised, e.g. while translating a v2 construct).
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub value: Value,
    pub line: u64,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    /// Keys keep their order; a duplicate key is a parse error (see `visit_map`).
    Map(Vec<(Key, Node)>),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Key {
    pub name: String,
    pub line: u64,
}

impl Node {
    pub fn new(value: Value) -> Node {
        Node { value, line: 0 }
    }

    pub fn str(s: impl Into<String>) -> Node {
        Node::new(Value::Str(s.into()))
    }

    pub fn map(entries: Vec<(&str, Node)>) -> Node {
        Node::new(Value::Map(
            entries
                .into_iter()
                .map(|(k, v)| {
                    (
                        Key {
                            name: k.to_string(),
                            line: 0,
                        },
                        v,
                    )
                })
                .collect(),
        ))
    }

    pub fn as_map(&self) -> Option<&Vec<(Key, Node)>> {
        match &self.value {
            Value::Map(m) => Some(m),
            _ => None,
        }
    }

    pub fn as_map_mut(&mut self) -> Option<&mut Vec<(Key, Node)>> {
        match &mut self.value {
            Value::Map(m) => Some(m),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The value under `key` in a mapping.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.as_map()?.iter().find(|(k, _)| k.name == key).map(|(_, v)| v)
    }

    pub fn get_mut(&mut self, key: &str) -> Option<&mut Node> {
        self.as_map_mut()?
            .iter_mut()
            .find(|(k, _)| k.name == key)
            .map(|(_, v)| v)
    }

    /// Removes `key` from a mapping and returns its key and value.
    pub fn remove(&mut self, key: &str) -> Option<(Key, Node)> {
        let map = self.as_map_mut()?;
        let i = map.iter().position(|(k, _)| k.name == key)?;
        Some(map.remove(i))
    }

    /// Sets `key` (replacing an existing value) in a mapping.
    pub fn insert(&mut self, key: Key, value: Node) {
        if let Some(map) = self.as_map_mut() {
            match map.iter_mut().find(|(k, _)| k.name == key.name) {
                Some(slot) => slot.1 = value,
                None => map.push((key, value)),
            }
        }
    }

    /// What kind of YAML value this is, for "expected X, found Y" messages.
    pub fn kind(&self) -> &'static str {
        match self.value {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Int(_) => "an integer",
            Value::Float(_) => "a number",
            Value::Str(_) => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }
}

/// A parse failure with the parser's own description (it includes the line).
#[derive(Debug)]
pub struct ParseError(pub String);

/// Parses YAML (or JSON) text into a node tree. An empty document is an empty map.
pub fn parse(text: &str) -> Result<Node, ParseError> {
    if text.trim().is_empty() {
        return Ok(Node::new(Value::Map(Vec::new())));
    }
    let spanned: Spanned<Value> = serde_saphyr::from_str(text).map_err(|e| ParseError(e.to_string()))?;
    Ok(Node {
        value: spanned.value,
        line: spanned.referenced.line(),
    })
}

/// [`parse`] with room for `max_nodes` nodes instead of the parser's
/// default 250,000 (a guard against alias bombs, which the other limits
/// still enforce). For documents that are large by design, such as the
/// control-plane mock's 10,000-cluster snapshots.
pub fn parse_with_max_nodes(text: &str, max_nodes: usize) -> Result<Node, ParseError> {
    if text.trim().is_empty() {
        return Ok(Node::new(Value::Map(Vec::new())));
    }
    let options = serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_nodes: max_nodes,
            // Each node is a start and an end event, plus a few per document.
            max_events: max_nodes.saturating_mul(4),
        },
    };
    let spanned: Spanned<Value> =
        serde_saphyr::from_str_with_options(text, options).map_err(|e| ParseError(e.to_string()))?;
    Ok(Node {
        value: spanned.value,
        line: spanned.referenced.line(),
    })
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = Spanned::<Value>::deserialize(d)?;
        Ok(Node {
            value: s.value,
            line: s.referenced.line(),
        })
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Int(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Int(v.into()))
    }
    fn visit_i128<E>(self, v: i128) -> Result<Value, E> {
        Ok(Value::Int(v))
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Value, E> {
        i128::try_from(v)
            .map(Value::Int)
            .map_err(|_| E::custom("integer too large"))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Float(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::Str(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::Str(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        Value::deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(n) = seq.next_element::<Node>()? {
            items.push(n);
        }
        Ok(Value::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut entries: Vec<(Key, Node)> = Vec::new();
        while let Some(k) = map.next_key::<Node>()? {
            let name = match k.value {
                Value::Str(s) => s,
                Value::Int(i) => i.to_string(),
                Value::Bool(b) => b.to_string(),
                Value::Float(f) => f.to_string(),
                _ => {
                    return Err(de::Error::custom(format!(
                        "line {}: a mapping key must be a scalar",
                        k.line
                    )))
                }
            };
            let v = map.next_value::<Node>()?;
            if entries.iter().any(|(e, _)| e.name == name) {
                return Err(de::Error::custom(format!(
                    "line {}: duplicate key `{name}`",
                    k.line
                )));
            }
            entries.push((Key { name, line: k.line }, v));
        }
        Ok(Value::Map(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_kept_for_nested_nodes() {
        let n = parse("a:\n  b: 1\n  c:\n  - x\n  - 0.25s\n").unwrap();
        let a = n.get("a").unwrap();
        assert_eq!(a.get("b").unwrap().line, 2);
        assert_eq!(a.get("b").unwrap().value, Value::Int(1));
        let Value::Seq(items) = &a.get("c").unwrap().value else {
            panic!("seq")
        };
        assert_eq!(items[1].line, 5);
        assert_eq!(items[1].value, Value::Str("0.25s".into()));
    }

    #[test]
    fn json_parses_with_lines() {
        let n = parse("{\n \"a\": {\"b\": true},\n \"c\": null\n}").unwrap();
        assert_eq!(n.get("a").unwrap().get("b").unwrap().value, Value::Bool(true));
        assert_eq!(n.get("c").unwrap().value, Value::Null);
    }

    #[test]
    fn duplicate_keys_are_rejected() {
        assert!(parse("a: 1\na: 2\n").is_err());
    }

    #[test]
    fn bad_yaml_is_an_error_not_a_panic() {
        for text in ["a: [1, 2", "a: b: c", "- a\nb: 1", "a: \"x"] {
            assert!(parse(text).is_err(), "{text:?}");
        }
    }
}
