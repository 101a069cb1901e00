//! Tests of `POST /chat`'s run path and answer body.

use serde_json::json;

use super::*;
use crate::agent::AgentReply;

#[test]
fn answers_carry_the_run_id_and_replay_flag() {
    let reply = AgentReply {
        output: "hi".into(),
        run_id: Some("r".into()),
        extra: serde_json::Map::from_iter([("tokens".to_owned(), json!(3))]),
    };
    let out = StoredOutput::of_reply(&reply, "echo").payload();
    assert_eq!(out, json!({"output": "hi", "agent": "echo", "tokens": 3}));
    assert_eq!(out.json(), r#"{"output":"hi","agent":"echo","tokens":3}"#);
    let body = body_of(&out.to_value(), "r", true);
    assert_eq!(
        body,
        json!({"output": "hi", "agent": "echo", "tokens": 3, "run_id": "r",
               "instance_id": "pod-1", "replayed": true})
    );
}

/// Runs with the memory store and an echo agent that answers after `delay`.
fn echo_runs(delay: std::time::Duration) -> Runs {
    Runs {
        store: Arc::new(crate::store::MemoryRunStore::default()),
        agent: Arc::new(crate::agent::EchoAgent { delay }),
        instance_id: "pod-1".into(),
        counters: Counters::local(),
        wrap_up: Arc::new(watch::Sender::new(false)),
        driving: Arc::default(),
        webhook: None,
    }
}

fn request(run_id: &str) -> AgentRequest {
    let request = json!({"message": "hello", "run_id": run_id});
    serde_json::from_value(request).unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test]
async fn a_chat_is_recorded_when_its_client_goes_away() {
    use std::time::Duration;
    let runs = echo_runs(Duration::from_millis(100));
    let gone = tokio::time::timeout(
        Duration::from_millis(10),
        runs.chat(request("left-early"), None),
    )
    .await;
    assert!(
        gone.is_err(),
        "the client was meant to leave before the answer"
    );
    let id = RunId::parse("left-early").unwrap_or_else(|e| panic!("{e}"));
    let mut status = None;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(10)).await;
        status = runs.store.get(&id).await.ok().flatten().map(|r| r.status);
        if status == Some(crate::store::RunStatus::Completed) {
            break;
        }
    }
    assert_eq!(status, Some(crate::store::RunStatus::Completed));
    // The client's retry is answered from the record.
    let again = runs.chat(request("left-early"), None).await;
    assert!(
        matches!(&again, Ok(a) if a.replayed && a.output.to_value()["output"] == "hello"),
        "{again:?}"
    );
}

#[tokio::test]
async fn a_chat_answers_and_records_its_run() {
    let runs = echo_runs(std::time::Duration::ZERO);
    let answer = runs.chat(request("stays"), None).await;
    assert!(
        matches!(&answer, Ok(a) if !a.replayed && a.run_id == "stays" && a.output.to_value()["output"] == "hello"),
        "{answer:?}"
    );
    let id = RunId::parse("stays").unwrap_or_else(|e| panic!("{e}"));
    let record = runs.store.get(&id).await.ok().flatten();
    assert!(
        matches!(&record, Some(r) if r.status == crate::store::RunStatus::Completed),
        "{record:?}"
    );
}

fn body_of(output: &Value, run_id: &str, replayed: bool) -> Value {
    let body = AnswerBody {
        output: &Payload::of(output),
        run_id,
        instance_id: "pod-1",
        replayed,
    };
    serde_json::to_value(body).unwrap_or_default()
}

#[test]
fn the_runs_own_fields_replace_the_outputs() {
    let out = json!({"output": "hi", "run_id": "agent's", "instance_id": "x", "replayed": 1});
    let body = body_of(&out, "r", false);
    assert_eq!(
        body,
        json!({"output": "hi", "run_id": "r", "instance_id": "pod-1", "replayed": false})
    );
    // The text holds each field once.
    let text = serde_json::to_string(&AnswerBody {
        output: &Payload::of(&out),
        run_id: "r",
        instance_id: "pod-1",
        replayed: false,
    })
    .unwrap_or_default();
    assert_eq!(text.matches("\"run_id\"").count(), 1, "{text}");
    assert_eq!(text.matches("\"replayed\"").count(), 1, "{text}");
}

#[test]
fn an_output_that_is_not_an_object_is_the_output_field() {
    let body = body_of(&json!("plain"), "r", false);
    assert_eq!(
        body,
        json!({"output": "plain", "run_id": "r", "instance_id": "pod-1", "replayed": false})
    );
}

#[test]
fn extra_fields_do_not_replace_the_output_or_the_agent() {
    let reply = AgentReply {
        output: "hi".into(),
        run_id: None,
        extra: serde_json::Map::from_iter([
            ("output".to_owned(), json!("not this")),
            ("agent".to_owned(), json!("nor this")),
            ("score".to_owned(), json!({"a": [1]})),
        ]),
    };
    let out = StoredOutput::of_reply(&reply, "echo").payload();
    assert_eq!(
        out.json(),
        r#"{"output":"hi","agent":"echo","score":{"a":[1]}}"#
    );
}

#[test]
fn answer_fields_keep_escaped_names_and_nested_values() {
    let out = Payload::from_json(r#"{"out\"put": "a\nb", "nested": {"run_id": [1, {"x": null}]}}"#)
        .unwrap_or_else(|e| panic!("{e}"));
    let text = serde_json::to_string(&AnswerBody {
        output: &out,
        run_id: "r",
        instance_id: "pod-1",
        replayed: true,
    })
    .unwrap_or_default();
    let body: Value = serde_json::from_str(&text).unwrap_or_default();
    assert_eq!(
        body,
        json!({"out\"put": "a\nb", "nested": {"run_id": [1, {"x": null}]}, "run_id": "r",
               "instance_id": "pod-1", "replayed": true})
    );
}
