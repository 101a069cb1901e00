//! What a completed run stores as its output, and the body of `POST /chat`'s answer made from
//! it.

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::agent::AgentReply;
use crate::store::Payload;

/// The answer of `POST /chat`.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// The stored output (the agent's answer without the run id).
    pub output: Payload,
    /// The run.
    pub run_id: String,
    /// Served from the store without running the agent.
    pub replayed: bool,
}

/// What a completed run stores as its output: the agent's text as `output`, its name as
/// `agent`, then the backend's extra fields (which do not replace those two).
#[derive(Debug, Clone, Copy)]
pub(super) struct StoredOutput<'a> {
    pub(super) text: &'a str,
    pub(super) agent: &'a str,
    pub(super) extra: Option<&'a serde_json::Map<String, Value>>,
}

impl<'a> StoredOutput<'a> {
    /// The output of `reply`, given by the agent named `agent`.
    pub(super) fn of_reply(reply: &'a AgentReply, agent: &'a str) -> Self {
        Self {
            text: &reply.output,
            agent,
            extra: Some(&reply.extra),
        }
    }

    /// Its JSON, as the store keeps it.
    pub(super) fn payload(&self) -> Payload {
        Payload::of(self)
    }
}

impl Serialize for StoredOutput<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("output", self.text)?;
        map.serialize_entry("agent", self.agent)?;
        for (key, value) in self.extra.into_iter().flatten() {
            if key != "output" && key != "agent" {
                map.serialize_entry(key, value)?;
            }
        }
        map.end()
    }
}

/// The body of `POST /chat`'s answer: the stored output's fields (an output that is not an
/// object is the field `output`) plus the run id, the answering instance and the replay flag,
/// which take the place of output fields of the same names. The output's fields are written
/// as the store holds them, without building a tree of them.
#[derive(Debug, Clone, Copy)]
pub struct AnswerBody<'a> {
    /// The stored output.
    pub output: &'a Payload,
    /// The run.
    pub run_id: &'a str,
    /// The instance answering.
    pub instance_id: &'a str,
    /// Served from the store without running the agent.
    pub replayed: bool,
}

impl Serialize for AnswerBody<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        const OWN: [&str; 3] = ["run_id", "instance_id", "replayed"];
        let mut map = serializer.serialize_map(None)?;
        match serde_json::from_str::<Fields<'_>>(self.output.json()) {
            Ok(Fields(fields)) => {
                for (key, value) in fields.iter().filter(|(k, _)| !OWN.contains(&k.as_ref())) {
                    map.serialize_entry(key.as_ref(), value)?;
                }
            }
            Err(_) => map.serialize_entry("output", self.output)?,
        }
        map.serialize_entry("run_id", self.run_id)?;
        map.serialize_entry("instance_id", self.instance_id)?;
        map.serialize_entry("replayed", &self.replayed)?;
        map.end()
    }
}

/// The fields of a JSON object in order, each value as its text; not an object is an error.
struct Fields<'a>(Vec<(Key<'a>, &'a RawValue)>);

/// A field name, borrowed from the text unless it has escapes.
struct Key<'a>(Cow<'a, str>);

impl AsRef<str> for Key<'_> {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for Fields<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct FieldsVisitor;
        impl<'de> Visitor<'de> for FieldsVisitor {
            type Value = Fields<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields<'de>, A::Error> {
                let mut fields = Vec::with_capacity(map.size_hint().unwrap_or(4));
                while let Some(entry) = map.next_entry()? {
                    fields.push(entry);
                }
                Ok(Fields(fields))
            }
        }
        deserializer.deserialize_map(FieldsVisitor)
    }
}

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}
