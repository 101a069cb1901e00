//! Streams of the `http` backend: server-sent events from `FASTAGENTIC_AGENT_STREAM_URL`.
//!
//! The events the Python FastAgentic package sends from a `stream=True` endpoint are read as it
//! writes them, and plain SSE servers work too:
//!
//! | event | data | becomes |
//! |---|---|---|
//! | `token` | `{"type": "token", "data": {"content": "..."}}`, or any JSON with a string `content`, `delta` or `text`, or plain text | the next chunk |
//! | unnamed (`message`) | plain text, or JSON with a string `content`, `delta` or `text` (the package's own `message` events are skipped: they repeat tokens) | the next chunk |
//! | `done` | anything; when no chunk came before it, the reply text is read from it (`{"type": "done", "data": {"result": ...}}`, a JSON reply as in the `json` format, or plain text) | the end |
//! | `error` | `{"type": "error", "data": {"error": "..."}}`, or text | a 502 `agent_bad_response` naming it |
//! | `data: [DONE]` | | the end |
//! | any other (`tool_call`, `node_start`, `checkpoint`, ...) | | skipped |
//!
//! A stream that ends without `done` is an error (see [`super::event_stream`]): an agent killed
//! halfway must not look like a short answer.

use serde_json::Value;

use super::bad_response;
use super::event_stream::{EventReader, Step, chunks};
use super::http::{ReplyField, UPSTREAM, reply_from};
use super::sse::SseEvent;
use crate::agent::{AgentError, ChunkStream};

/// Reads the events of one stream; remembers whether text came already.
#[derive(Debug)]
pub struct StreamReader {
    reply: ReplyField,
    sent_text: bool,
}

impl StreamReader {
    /// A reader finding a `done` reply at `reply` (as the `json` format does).
    pub fn new(reply: ReplyField) -> Self {
        Self {
            reply,
            sent_text: false,
        }
    }
}

impl EventReader for StreamReader {
    fn on_event(&mut self, event: &SseEvent) -> Result<Step, AgentError> {
        if event.data.trim() == "[DONE]" {
            return Ok(Step::Done(None));
        }
        let json = serde_json::from_str::<Value>(&event.data).ok();
        let step = match event.event.as_str() {
            "token" => Step::Text(match json.as_ref().and_then(text_of) {
                Some(text) => text,
                None if json.is_some() => return Ok(Step::Skip),
                None => event.data.clone(),
            }),
            "message" => match &json {
                Some(v) if v.get("type").and_then(Value::as_str) == Some("message") => Step::Skip,
                Some(v) => text_of(v).map_or(Step::Skip, Step::Text),
                None => Step::Text(event.data.clone()),
            },
            "done" if self.sent_text => Step::Done(None),
            "done" => Step::Done(Some(self.final_text(json, &event.data)?)),
            "error" => {
                let detail = json
                    .as_ref()
                    .and_then(|v| {
                        [
                            &v["data"]["error"],
                            &v["error"],
                            &v["message"],
                            &v["detail"],
                        ]
                        .into_iter()
                        .find_map(|f| f.as_str().map(str::to_owned))
                    })
                    .unwrap_or_else(|| event.data.trim().to_owned());
                return Err(bad_response(
                    UPSTREAM,
                    format!("its stream reported an error: {detail}"),
                ));
            }
            _ => Step::Skip,
        };
        if let Step::Text(text) = &step {
            if text.is_empty() {
                return Ok(Step::Skip);
            }
            self.sent_text = true;
        }
        Ok(step)
    }
}

impl StreamReader {
    /// The reply text carried by a `done` event that came without tokens before it.
    fn final_text(&self, json: Option<Value>, raw: &str) -> Result<String, AgentError> {
        let Some(value) = json else {
            return Ok(raw.to_owned());
        };
        // The package's StreamEvent: {"type": "done", "data": {"result": ...}}.
        let value = match value {
            Value::Object(mut o) if o.get("type").and_then(Value::as_str) == Some("done") => {
                match o.remove("data").map(|mut d| d["result"].take()) {
                    Some(Value::String(text)) => return Ok(text),
                    Some(Value::Null) | None => return Ok(String::new()),
                    Some(other) => other,
                }
            }
            Value::String(text) => return Ok(text),
            other => other,
        };
        reply_from(value, None, &self.reply).map(|reply| reply.output)
    }
}

/// The text of a token-like JSON event: the package's `data.content`, or a top-level
/// `content`, `delta` or `text`.
fn text_of(v: &Value) -> Option<String> {
    [
        &v["data"]["content"],
        &v["content"],
        &v["delta"],
        &v["text"],
    ]
    .into_iter()
    .find_map(|f| f.as_str().map(str::to_owned))
}

/// The chunks of `response`, an event stream (see the module docs).
pub fn stream_events(response: reqwest::Response, reply: ReplyField) -> ChunkStream {
    chunks(UPSTREAM, response, StreamReader::new(reply))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(event: &str, data: &str) -> SseEvent {
        SseEvent {
            event: event.into(),
            data: data.into(),
        }
    }

    fn steps(events: &[SseEvent]) -> Vec<Result<Step, String>> {
        let mut reader = StreamReader::new(ReplyField::Default);
        events
            .iter()
            .map(|e| reader.on_event(e).map_err(|e| e.message))
            .collect()
    }

    #[test]
    fn the_python_packages_events_are_read() {
        let got = steps(&[
            ev("node_start", r#"{"type":"node_start","data":{}}"#),
            ev(
                "token",
                r#"{"type":"token","data":{"content":"Hel"},"run_id":"x","timestamp":1.0}"#,
            ),
            ev(
                "message",
                r#"{"type":"message","data":{"content":"Hello"}}"#,
            ),
            ev("token", r#"{"type":"token","data":{"content":"lo"}}"#),
            ev("done", r#"{"type":"done","data":{"result":"Hello"}}"#),
        ]);
        assert_eq!(
            got,
            [
                Ok(Step::Skip),
                Ok(Step::Text("Hel".into())),
                Ok(Step::Skip),
                Ok(Step::Text("lo".into())),
                Ok(Step::Done(None)),
            ]
        );
    }

    #[test]
    fn a_done_without_tokens_carries_the_reply() {
        for (data, want) in [
            (r#"{"type":"done","data":{"result":"all"}}"#, "all"),
            (r#"{"response":"model dump"}"#, "model dump"),
            ("plain str(result)", "plain str(result)"),
        ] {
            assert_eq!(
                steps(&[ev("done", data)]),
                [Ok(Step::Done(Some(want.into())))],
                "{data}"
            );
        }
        let got = steps(&[ev("done", r#"{"other": 1}"#)]);
        assert!(
            matches!(&got[0], Err(m) if m.contains("\"result\"")),
            "{got:?}"
        );
    }

    #[test]
    fn plain_sse_and_errors() {
        assert_eq!(
            steps(&[
                ev("message", "one "),
                ev("message", r#"{"delta":"two"}"#),
                ev("message", "[DONE]")
            ]),
            [
                Ok(Step::Text("one ".into())),
                Ok(Step::Text("two".into())),
                Ok(Step::Done(None))
            ]
        );
        for data in [
            r#"{"type":"error","data":{"error":"tool failed"}}"#,
            "tool failed",
        ] {
            let got = steps(&[ev("error", data)]);
            assert!(
                matches!(&got[0], Err(m) if m.contains("reported an error: tool failed")),
                "{got:?}"
            );
        }
        assert_eq!(
            steps(&[ev("token", r#"{"type":"token","data":{"content":""}}"#)]),
            [Ok(Step::Skip)]
        );
    }
}
