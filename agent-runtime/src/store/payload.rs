//! A run's request or answer as the store keeps it: its compact JSON text, shared.
//!
//! A record is copied at every step of a run (the store's answers to `begin` and `finish`, a
//! replay), its payloads are not. Kept as text rather than as a parsed tree: one allocation
//! instead of one per object, key and string, which is what a bounded store frees for each run
//! it forgets, and what its byte budget counts. Redis and PostgreSQL write the same text.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use serde_json::value::RawValue;

/// Compact JSON text, valid by construction.
#[derive(Clone)]
pub struct Payload(Arc<RawValue>);

impl Payload {
    /// The JSON of `value`. Serializing a [`Value`] or one of the runtime's request and answer
    /// types cannot fail; a type whose `Serialize` does fail gives `null`.
    pub fn of<T: Serialize + ?Sized>(value: &T) -> Self {
        let raw = serde_json::value::to_raw_value(value).unwrap_or_else(|_| null());
        Self(Arc::from(raw))
    }

    /// `text` if it is JSON (as a store read it back).
    pub fn from_json(text: &str) -> Result<Self, serde_json::Error> {
        let raw: Box<RawValue> = serde_json::from_str(text)?;
        Ok(Self(Arc::from(raw)))
    }

    /// The JSON text.
    pub fn json(&self) -> &str {
        self.0.get()
    }

    /// The JSON as a tree.
    pub fn to_value(&self) -> Value {
        // The text is valid JSON (see the constructors), so this cannot fall back.
        serde_json::from_str(self.json()).unwrap_or(Value::Null)
    }

    /// The JSON as a `T`.
    pub fn parse<'a, T: Deserialize<'a>>(&'a self) -> Result<T, serde_json::Error> {
        serde_json::from_str(self.json())
    }
}

/// `null` as raw JSON.
fn null() -> Box<RawValue> {
    Box::default()
}

impl From<&Value> for Payload {
    fn from(value: &Value) -> Self {
        Self::of(value)
    }
}

impl From<Value> for Payload {
    fn from(value: Value) -> Self {
        Self::of(&value)
    }
}

/// The same JSON (key order and spacing aside).
impl PartialEq for Payload {
    fn eq(&self, other: &Self) -> bool {
        self.json() == other.json() || self.to_value() == other.to_value()
    }
}

impl PartialEq<Value> for Payload {
    fn eq(&self, other: &Value) -> bool {
        self.to_value() == *other
    }
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.json())
    }
}

impl fmt::Display for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.json())
    }
}

impl Serialize for Payload {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Payload {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Box::<RawValue>::deserialize(deserializer).map(|raw| Self(Arc::from(raw)))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn keeps_compact_json_and_compares_as_json() {
        let p = Payload::of(&json!({"message": "hi", "n": [1, 2]}));
        assert_eq!(p.json(), r#"{"message":"hi","n":[1,2]}"#);
        assert_eq!(p, json!({"n": [1, 2], "message": "hi"}));
        let q = Payload::from_json(r#"{ "n": [1, 2], "message": "hi" }"#).expect("json");
        assert_eq!(p, q, "the same JSON, spaced and ordered differently");
        assert_ne!(p, Payload::of(&json!({"message": "hi"})));
        assert!(Payload::from_json("{not json").is_err());
    }

    #[test]
    fn serializes_as_its_json() {
        let record = json!({"input": Payload::of(&json!({"a": 1})), "none": Payload::of(&())});
        assert_eq!(record.to_string(), r#"{"input":{"a":1},"none":null}"#);
        let back: Payload = serde_json::from_str(r#" {"a": [true]} "#).expect("json");
        assert_eq!(back.to_value(), json!({"a": [true]}));
        assert_eq!(back.to_string(), back.json());
    }
}
