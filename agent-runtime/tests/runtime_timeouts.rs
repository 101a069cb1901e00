//! The agent time limits and the stream heartbeat through the real `fastagentic` binary, with
//! the slow built-in echo agent (`--echo-delay-ms`) and the memory store: a limit that fires
//! answers 504 `agent_timeout` naming it (or ends a begun stream with that `event: error`), the
//! run is recorded `failed` with the same text, and a quiet stream carries `: keep-alive`
//! comments. No Redis or PostgreSQL needed.
// Tests fail by panicking; expect/unwrap are the assertions here.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod runtime_support;

use std::time::{Duration, Instant};

use runtime_support::{Server, get};
use serde_json::{Value, json};

/// The echo agent's delay in these tests: far above every limit that should fire.
const SLOW_ECHO_MS: &str = "4000";

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// POSTs `{"message", "run_id"}` to `path`; status, instance header and body text.
async fn post(s: &Server, path: &str, message: &str, run_id: &str) -> (u16, String, String) {
    let r = client()
        .post(format!("http://127.0.0.1:{}{path}", s.port))
        .json(&json!({"message": message, "run_id": run_id}))
        .send()
        .await
        .expect("request");
    let instance = r
        .headers()
        .get("x-fastagentic-instance")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (
        r.status().as_u16(),
        instance,
        r.text().await.unwrap_or_default(),
    )
}

fn json_of(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| panic!("not JSON: {text}"))
}

/// The record of `run_id`, once it is no longer `running`.
fn finished_run(s: &Server, run_id: &str) -> Value {
    runtime_support::poll(Duration::from_secs(10), || {
        let r = get(s.port, &format!("/runs/{run_id}")).ok()?;
        let record = r.json();
        (r.status == 200 && record["status"] != "running").then_some(record)
    })
    .unwrap_or_else(|| panic!("run {run_id} did not finish"))
}

/// The data of the stream's `event: error`.
fn error_event(body: &str) -> Value {
    let data = body
        .split("\n\n")
        .find(|event| event.lines().any(|l| l == "event: error"))
        .and_then(|event| event.lines().find_map(|l| l.strip_prefix("data: ")))
        .unwrap_or_else(|| panic!("no event: error in {body:?}"));
    json_of(data)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_answer_is_a_504_naming_the_first_byte_limit_and_a_failed_run() {
    let s = Server::start(
        &[
            "--echo-delay-ms",
            SLOW_ECHO_MS,
            "--agent-first-byte-timeout",
            "0.5",
            "--instance-id",
            "pod-timeouts",
        ],
        &[],
    );
    let started = Instant::now();
    let (status, instance, body) = post(&s, "/chat", "hi", "slow-chat").await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "gave up at 0.5 s"
    );
    assert_eq!(status, 504, "{body}");
    assert_eq!(instance, "pod-timeouts");
    let message = "no first byte from the agent within 0.5 s (--agent-first-byte-timeout)";
    let answer = json_of(&body);
    assert_eq!(
        (&answer["error"], &answer["message"], &answer["run_id"]),
        (
            &json!("agent_timeout"),
            &json!(message),
            &json!("slow-chat")
        ),
        "{answer}"
    );
    let record = finished_run(&s, "slow-chat");
    assert_eq!(record["status"], "failed", "{record}");
    assert_eq!(
        record["error"],
        format!("agent_timeout: {message}"),
        "{record}"
    );

    // `--agent-timeout` alone still bounds the wait: it is the first-byte limit's default.
    let s = Server::start(
        &["--echo-delay-ms", SLOW_ECHO_MS, "--agent-timeout", "0.5"],
        &[],
    );
    let (status, _, body) = post(&s, "/chat", "hi", "slow-default").await;
    assert_eq!(status, 504, "{body}");
    assert!(body.contains("0.5 s"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_begun_stream_ends_with_the_error_of_the_limit_that_fired() {
    // Four words over 4 s: a chunk a second, so the idle limit fires after the first chunk.
    let s = Server::start(
        &[
            "--echo-delay-ms",
            SLOW_ECHO_MS,
            "--stream-idle-timeout",
            "0.5",
            "--stream-heartbeat",
            "0",
        ],
        &[],
    );
    let (status, _, body) = post(&s, "/chat/stream", "one two three four", "idle").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#"data: {"delta":"one "}"#), "{body}");
    assert!(!body.contains("two"), "{body}");
    assert!(!body.contains(": keep-alive"), "heartbeat off: {body}");
    let message = "no chunk from the agent for 0.5 s (--stream-idle-timeout)";
    assert_eq!(
        error_event(&body),
        json!({"error": "agent_timeout", "message": message, "run_id": "idle"})
    );
    let record = finished_run(&s, "idle");
    assert_eq!(record["status"], "failed", "{record}");
    assert_eq!(record["error"], format!("agent_timeout: {message}"));

    // The run limit ends a stream whose every chunk is in time.
    let s = Server::start(
        &["--echo-delay-ms", "3000", "--run-max-duration", "1.5"],
        &[],
    );
    let (status, _, body) = post(&s, "/chat/stream", "a b c d e f", "long").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("delta"), "chunks came until then: {body}");
    let event = error_event(&body);
    assert_eq!(event["error"], "agent_timeout", "{event}");
    assert_eq!(
        event["message"],
        "the run did not finish within 1.5 s (--run-max-duration)"
    );
    assert_eq!(finished_run(&s, "long")["status"], "failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_stream_sends_keep_alive_comments() {
    let s = Server::start(&["--echo-delay-ms", "2500", "--stream-heartbeat", "1"], &[]);
    let (status, _, body) = post(&s, "/chat/stream", "hello", "quiet").await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.lines().any(|l| l == ": keep-alive"),
        "a comment line while the agent was quiet: {body:?}"
    );
    assert!(body.contains(r#"data: {"delta":"hello"}"#), "{body}");
    assert!(body.contains("event: done"), "{body}");
    assert_eq!(finished_run(&s, "quiet")["status"], "completed");
}
