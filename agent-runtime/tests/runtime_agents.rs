//! The `http` and `openai` agent backends through the real `fastagentic` binary, against local
//! upstreams: success, upstream down (502), upstream slow (504), streaming over SSE, and the
//! API key in no log line (the binary runs with `FASTAGENTIC_LOG_LEVEL=trace`). No Redis or
//! PostgreSQL needed: runs go to the memory store.
// Tests fail by panicking; expect/unwrap are the assertions here.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod runtime_support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, header};
use axum::response::IntoResponse;
use axum::routing::post;
use axum::{Json, Router};
use futures::StreamExt;
use runtime_support::Server;
use serde_json::{Value, json};

const KEY: &str = "sk-test-Zq9SECRETkey0123456789";
const SLOW: Duration = Duration::from_secs(3);

async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

fn closed_port_url() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("http://127.0.0.1:{port}")
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

async fn send(s: &Server, path: &str, message: &str) -> (u16, String) {
    let r = client()
        .post(format!("http://127.0.0.1:{}{path}", s.port))
        .json(&json!({"message": message}))
        .send()
        .await
        .expect("request");
    (r.status().as_u16(), r.text().await.unwrap_or_default())
}

fn json_of(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| panic!("not JSON: {text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn http_backend_through_the_binary() {
    let upstream = serve(Router::new().route(
        "/agent",
        post(|Json(body): Json<Value>| async move {
            let message = body["message"].as_str().unwrap_or_default().to_owned();
            if message == "slow" {
                tokio::time::sleep(SLOW).await;
            }
            Json(json!({"output": format!("upstream: {message}"), "run_id_seen": body["run_id"]}))
        }),
    ))
    .await;
    let url = format!("{upstream}/agent");
    let s = Server::start(
        &[
            "--agent",
            "http",
            "--agent-url",
            &url,
            "--agent-timeout",
            "1",
        ],
        &[],
    );
    let (st, body) = send(&s, "/chat", "hi").await;
    assert_eq!(st, 200, "{body}");
    let v = json_of(&body);
    assert_eq!(v["output"], "upstream: hi");
    assert_eq!(v["agent"], "http");
    assert_eq!(
        v["run_id_seen"], v["run_id"],
        "the upstream sees the run id: {v}"
    );

    let t = std::time::Instant::now();
    let (st, body) = send(&s, "/chat", "slow").await;
    assert_eq!(st, 504, "{body}");
    assert_eq!(json_of(&body)["error"], "agent_timeout");
    assert!(
        t.elapsed() < SLOW,
        "gave up after the agent timeout: {:?}",
        t.elapsed()
    );

    let (st, body) = send(&s, "/chat/stream", "streamed words").await;
    assert_eq!(st, 200, "{body}");
    assert!(body.contains("upstream: streamed words"), "{body}");
    assert!(body.contains("event: done"), "{body}");

    let down = Server::start(
        &[
            "--agent",
            "http",
            "--agent-url",
            &format!("{}/agent", closed_port_url()),
        ],
        &[],
    );
    let (st, body) = send(&down, "/chat", "hi").await;
    assert_eq!(st, 502, "{body}");
    assert_eq!(json_of(&body)["error"], "agent_unavailable");
    let (st, _) = send(&down, "/chat/stream", "hi").await;
    assert_eq!(st, 502);
}

#[derive(Default)]
struct Seen {
    authorizations: Vec<String>,
}

fn openai_upstream(seen: Arc<Mutex<Seen>>) -> Router {
    let completions = move |headers: HeaderMap, Json(body): Json<Value>| {
        let seen = Arc::clone(&seen);
        async move {
            seen.lock().unwrap().authorizations.push(
                headers
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned(),
            );
            let content = body["messages"]
                .as_array()
                .and_then(|m| m.last())
                .and_then(|m| m["content"].as_str())
                .unwrap_or_default()
                .to_owned();
            if content == "slow" {
                tokio::time::sleep(SLOW).await;
            }
            if body["stream"] == json!(true) {
                let events = [
                    json!({"choices": [{"delta": {"role": "assistant"}}]}).to_string(),
                    json!({"choices": [{"delta": {"content": "Hel"}}]}).to_string(),
                    json!({"choices": [{"delta": {"content": "lo"}}]}).to_string(),
                    json!({"choices": [{"delta": {"content": " world"}}]}).to_string(),
                    json!({"choices": [{"delta": {}, "finish_reason": "stop"}]}).to_string(),
                    "[DONE]".to_owned(),
                ];
                let stream = futures::stream::iter(events).then(|e| async move {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    Ok::<_, std::convert::Infallible>(format!("data: {e}\n\n"))
                });
                return (
                    [(header::CONTENT_TYPE, "text/event-stream")],
                    axum::body::Body::from_stream(stream),
                )
                    .into_response();
            }
            Json(json!({
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "model": body["model"],
                "choices": [{"index": 0, "message": {"role": "assistant", "content": format!("you said: {content}")}, "finish_reason": "stop"}],
            }))
            .into_response()
        }
    };
    Router::new().route("/v1/chat/completions", post(completions))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn openai_backend_through_the_binary_never_logs_the_key() {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let upstream = serve(openai_upstream(seen.clone())).await;
    let env = [
        ("OPENAI_API_KEY", KEY),
        ("FASTAGENTIC_LOG_LEVEL", "trace"),
        ("FASTAGENTIC_MODEL", "test-model"),
    ];
    let base = format!("{upstream}/v1");
    let s = Server::start(
        &[
            "--agent",
            "openai",
            "--openai-base-url",
            &base,
            "--agent-timeout",
            "1",
        ],
        &env,
    );
    let (st, body) = send(&s, "/chat", "hi").await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(json_of(&body)["output"], "you said: hi");

    let (st, body) = send(&s, "/chat/stream", "stream please").await;
    assert_eq!(st, 200, "{body}");
    let deltas: String = body
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|v| v["delta"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(deltas, "Hello world", "{body}");
    assert!(body.contains("event: done"), "{body}");

    let (st, body) = send(&s, "/chat", "slow").await;
    assert_eq!(st, 504, "{body}");

    let down = Server::start(
        &[
            "--agent",
            "openai",
            "--openai-base-url",
            &format!("{}/v1", closed_port_url()),
        ],
        &env,
    );
    let (st, body) = send(&down, "/chat", "hi").await;
    assert_eq!(st, 502, "{body}");
    assert_eq!(json_of(&body)["error"], "agent_unavailable");

    assert!(
        seen.lock()
            .unwrap()
            .authorizations
            .iter()
            .all(|a| a == &format!("Bearer {KEY}")),
        "the key is sent to the upstream"
    );
    // Let the last log lines arrive, then look for the key anywhere in them.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut lines = s.log_lines();
    lines.extend(down.log_lines());
    assert!(lines.len() > 10, "trace logging must have produced lines");
    let leaked: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains(KEY) || l.contains("Zq9SECRET"))
        .collect();
    assert!(
        leaked.is_empty(),
        "the API key appears in the logs: {leaked:?}"
    );
}

#[test]
fn store_and_agent_options_are_listed_and_bad_values_exit_2_naming_them() {
    let help = runtime_support::command()
        .args(["run", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout).into_owned();
    for (flag, env) in [
        ("--durable-store", "FASTAGENTIC_DURABLE_STORE"),
        ("--redis-url", "REDIS_URL"),
        ("--database-url", "DATABASE_URL"),
        ("--db-pool-recycle", "FASTAGENTIC_DB_POOL_RECYCLE"),
        ("--db-pool-pre-ping", "FASTAGENTIC_DB_POOL_PRE_PING"),
        ("--db-pool-timeout", "FASTAGENTIC_DB_POOL_TIMEOUT"),
        ("--agent", "FASTAGENTIC_AGENT"),
        ("--agent-url", "FASTAGENTIC_AGENT_URL"),
        ("--agent-timeout", "FASTAGENTIC_AGENT_TIMEOUT"),
        (
            "--agent-first-byte-timeout",
            "FASTAGENTIC_AGENT_FIRST_BYTE_TIMEOUT",
        ),
        ("--stream-idle-timeout", "FASTAGENTIC_STREAM_IDLE_TIMEOUT"),
        ("--run-max-duration", "FASTAGENTIC_RUN_MAX_DURATION"),
        ("--model", "FASTAGENTIC_MODEL"),
    ] {
        assert!(
            help.contains(flag) && help.contains(env),
            "{flag} / {env} missing in --help"
        );
    }
    for (args, env, needle) in [
        (
            &["--durable-store", "mongo"][..],
            &[][..],
            "--durable-store",
        ),
        (&["--durable-store", "redis"][..], &[][..], "REDIS_URL"),
        (
            &[][..],
            &[("FASTAGENTIC_DURABLE_STORE", "postgres")][..],
            "DATABASE_URL",
        ),
        (&["--agent", "http"][..], &[][..], "FASTAGENTIC_AGENT_URL"),
        (&["--agent", "carrier-pigeon"][..], &[][..], "--agent"),
        (&["--agent-timeout", "-1"][..], &[][..], "--agent-timeout"),
        (
            &["--db-pool-timeout", "-1"][..],
            &[][..],
            "--db-pool-timeout",
        ),
        (
            &[][..],
            &[("FASTAGENTIC_DB_POOL_PRE_PING", "maybe")][..],
            "FASTAGENTIC_DB_POOL_PRE_PING",
        ),
        (&["--redis-url", "http://x"][..], &[][..], "REDIS_URL"),
        (
            &["--database-url", "mysql://u:pw@h/db"][..],
            &[][..],
            "DATABASE_URL",
        ),
    ] {
        let out = runtime_support::command()
            .arg("run")
            .args(args)
            .envs(env.iter().copied())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(2), "{args:?} {env:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        assert!(
            err.contains(needle),
            "{args:?} {env:?}: {needle} missing in {err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
}
