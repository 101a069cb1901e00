//! An agent written with the Python FastAgentic package (PyPI `fastagentic`, pinned in
//! `examples/python-agent/requirements.txt`), served by the package's own `fastagentic run`,
//! behind the real runtime binary with the `http` backend: `/chat`, `/chat/stream` (the
//! package's `StreamEvent`s relayed as chunks), a run replayed from Redis on another runtime
//! process after the agent is gone, the agent's errors (a raise, an error event mid-stream, a
//! non-JSON answer, a slow answer) as the runtime's JSON errors with the run recorded failed,
//! and a killed agent process (`/ready` turns 503 with `checks.agent` false, requests 502).
//!
//! The agent is `examples/python-agent/app.py`, imported unchanged by
//! `tests/python/agent_under_test.py`, which adds the failing routes. The package comes from
//! the virtualenv `scripts/test.sh` installs (`~/.cache/fastagentic/venv`, or the `fastagentic`
//! CLI named by `FASTAGENTIC_PYTHON_AGENT`); without it the test prints SKIPPED, and fails
//! with `FASTAGENTIC_REQUIRE_PYTHON_AGENT=1` (CI).

#![allow(clippy::expect_used, clippy::unwrap_used)]

#[path = "store_support.rs"]
mod support;

#[path = "runtime_support/mod.rs"]
mod runtime_support;

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use runtime_support::sse::{Sse, SseReader};
use runtime_support::{Server, client, instance};
use serde_json::{Value, json};

const INSTANCE_HEADER: &str = fastagentic_contract::header::INSTANCE;

/// The package's CLI, or `None` after saying why the test does not run.
fn python_agent_cli() -> Option<PathBuf> {
    let path = std::env::var_os("FASTAGENTIC_PYTHON_AGENT")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .map(|h| PathBuf::from(h).join(".cache/fastagentic/venv/bin/fastagentic"))
        })
        .filter(|p| p.is_file());
    if path.is_none() {
        let why = "no Python FastAgentic package: run scripts/test.sh (it installs \
                   examples/python-agent/requirements.txt into ~/.cache/fastagentic/venv) or \
                   set FASTAGENTIC_PYTHON_AGENT to a `fastagentic` CLI";
        let required = std::env::var("FASTAGENTIC_REQUIRE_PYTHON_AGENT").is_ok_and(|v| v == "1");
        assert!(!required, "{why} (FASTAGENTIC_REQUIRE_PYTHON_AGENT=1)");
        let _ = writeln!(
            std::io::stderr(),
            "\n*** SKIPPED python agent tests: {why} ***\n"
        );
    }
    path
}

/// `fastagentic run agent_under_test:app` on a free loopback port, killed on drop.
struct PythonAgent {
    child: Child,
    port: u16,
}

impl PythonAgent {
    async fn start(cli: &PathBuf) -> PythonAgent {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let port = support::free_port();
        let child = Command::new(cli)
            .args([
                "run",
                "agent_under_test:app",
                "--host",
                "127.0.0.1",
                "--port",
            ])
            .arg(port.to_string())
            .current_dir(root.join("tests/python"))
            .env("PYTHONPATH", root.join("../examples/python-agent"))
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn the Python agent");
        let agent = PythonAgent { child, port };
        for _ in 0..300 {
            let ready = client().get(agent.url("/ready")).send().await;
            if ready.is_ok_and(|r| r.status().is_success()) {
                return agent;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the Python agent did not become ready on port {port} in 30 s");
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for PythonAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A runtime in front of the agent: `path` for `/chat`, `stream_path` for `/chat/stream`.
fn runtime(agent: &PythonAgent, path: &str, stream_path: Option<&str>, extra: &[&str]) -> Server {
    let url = agent.url(path);
    let ready = agent.url("/ready");
    let stream = stream_path.map(|p| agent.url(p));
    let mut args = vec![
        "--agent",
        "http",
        "--agent-url",
        &url,
        "--agent-ready-url",
        &ready,
        "--instance-id",
    ];
    let id = instance("py-");
    args.push(&id);
    if let Some(stream) = &stream {
        args.extend_from_slice(&["--agent-stream-url", stream]);
    }
    args.extend_from_slice(extra);
    Server::start(&args, &[])
}

async fn post(s: &Server, path: &str, body: Value) -> (u16, Value, reqwest::header::HeaderMap) {
    let r = client()
        .post(format!("http://127.0.0.1:{}{path}", s.port))
        .json(&body)
        .send()
        .await
        .expect("request");
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let text = r.text().await.unwrap_or_default();
    let v = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
    (status, v, headers)
}

async fn run_record(s: &Server, run_id: &str) -> Value {
    let r = client()
        .get(format!("http://127.0.0.1:{}/runs/{run_id}", s.port))
        .send()
        .await
        .expect("GET /runs");
    r.json().await.expect("run record JSON")
}

async fn stream(s: &Server, message: &str, run_id: &str) -> Vec<Sse> {
    let r = client()
        .post(format!("http://127.0.0.1:{}/chat/stream", s.port))
        .json(&json!({"message": message, "run_id": run_id}))
        .send()
        .await
        .expect("POST /chat/stream");
    if r.status() != 200 {
        let status = r.status();
        panic!(
            "POST /chat/stream {run_id}: {status} {}",
            r.text().await.unwrap_or_default()
        );
    }
    SseReader::new(r).rest().await
}

async fn ready(s: &Server) -> (u16, Value) {
    let r = client()
        .get(format!("http://127.0.0.1:{}/ready", s.port))
        .send()
        .await
        .expect("GET /ready");
    (r.status().as_u16(), r.json().await.expect("ready JSON"))
}

fn assert_agent_error(
    status: u16,
    body: &Value,
    headers: &reqwest::header::HeaderMap,
    want: (u16, &str),
) {
    assert_eq!(
        (status, body["error"].as_str()),
        (want.0, Some(want.1)),
        "{body}"
    );
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert!(headers.contains_key(INSTANCE_HEADER), "{headers:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_python_fastagentic_agent_runs_behind_the_runtime() {
    let Some(cli) = python_agent_cli() else {
        return;
    };
    let Some(redis) = support::redis_url("a_python_fastagentic_agent_runs_behind_the_runtime")
    else {
        return;
    };
    let agent = PythonAgent::start(&cli).await;
    let redis_args = ["--durable-store", "redis", "--redis-url", redis.as_str()];
    let a = runtime(&agent, "/chat", Some("/chat/stream"), &redis_args);

    // /chat: the package's JSON model dump ({"response": ...}) is the reply.
    let (st, ready_body) = ready(&a).await;
    assert_eq!(
        (st, &ready_body["checks"]["agent"]),
        (200, &json!(true)),
        "{ready_body}"
    );
    let chat_run = support::unique("py-chat");
    let (st, body, headers) =
        post(&a, "/chat", json!({"message": "hello", "run_id": chat_run})).await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["output"], "echo: hello");
    assert_eq!(body["run_id"], chat_run.as_str());
    assert!(headers.contains_key(INSTANCE_HEADER));

    // /chat/stream: the package's token events, one chunk each, then done.
    let stream_run = support::unique("py-stream");
    let events = stream(&a, "one two three", &stream_run).await;
    let deltas: Vec<&str> = events
        .iter()
        .filter(|e| e.event.is_none())
        .map(|e| e.data["delta"].as_str().unwrap())
        .collect();
    assert_eq!(deltas, ["echo: ", "one ", "two ", "three "], "{events:#?}");
    let done = events.last().expect("events");
    assert_eq!(done.event.as_deref(), Some("done"), "{events:#?}");
    assert_eq!(done.id.as_deref(), Some(format!("{stream_run}:5").as_str()));
    let record = run_record(&a, &stream_run).await;
    assert_eq!(record["status"], "completed", "{record}");
    assert_eq!(record["output"]["output"], "echo: one two three ");

    // The package's `{"result": ...}` shape of a plain return value.
    let plain = runtime(&agent, "/plain", None, &[]);
    let (st, body, _) = post(&plain, "/chat", json!({"message": "p"})).await;
    assert_eq!(
        (st, body["output"].as_str()),
        (200, Some("plain: p")),
        "{body}"
    );

    // The agent raises: 502 with the service's status, the run failed.
    let fail = runtime(&agent, "/fail", Some("/fail/stream"), &redis_args);
    let failed_run = support::unique("py-fail");
    let (st, body, headers) = post(
        &fail,
        "/chat",
        json!({"message": "x", "run_id": failed_run}),
    )
    .await;
    assert_agent_error(st, &body, &headers, (502, "agent_bad_response"));
    assert!(
        body["message"].as_str().unwrap().contains("HTTP 500"),
        "{body}"
    );
    assert_eq!(run_record(&fail, &failed_run).await["status"], "failed");
    // ... or reports an error mid-stream: the client gets the chunk, then an error event.
    let failed_stream = support::unique("py-fail-stream");
    let events = stream(&fail, "x", &failed_stream).await;
    assert_eq!(
        events.first().map(|e| &e.data["delta"]),
        Some(&json!("partial ")),
        "{events:#?}"
    );
    let last = events.last().unwrap();
    assert_eq!(last.event.as_deref(), Some("error"), "{events:#?}");
    assert_eq!(last.data["error"], "agent_bad_response");
    assert!(
        last.data["message"]
            .as_str()
            .unwrap()
            .contains("reported an error: Internal server error"),
        "{last:?}"
    );
    assert_eq!(run_record(&fail, &failed_stream).await["status"], "failed");

    // A 200 that is not JSON: 502. A slow answer: 504 at the runtime's limit.
    let garbage = runtime(&agent, "/garbage", None, &[]);
    let (st, body, headers) = post(&garbage, "/chat", json!({"message": "x"})).await;
    assert_agent_error(st, &body, &headers, (502, "agent_bad_response"));
    let slow = runtime(&agent, "/slow", None, &["--agent-timeout", "1"]);
    let started = std::time::Instant::now();
    let (st, body, headers) = post(&slow, "/chat", json!({"message": "x"})).await;
    assert_agent_error(st, &body, &headers, (504, "agent_timeout"));
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );

    // The agent process is killed: the runtime turns unready, new runs fail with 502 and are
    // recorded failed, and what was recorded before is still served, by another runtime too.
    drop(agent);
    let (st, ready_body) = ready(&a).await;
    assert_eq!(
        (st, &ready_body["checks"]["agent"]),
        (503, &json!(false)),
        "{ready_body}"
    );
    let lost_run = support::unique("py-lost");
    let (st, body, headers) = post(&a, "/chat", json!({"message": "x", "run_id": lost_run})).await;
    assert_agent_error(st, &body, &headers, (502, "agent_unavailable"));
    assert_eq!(run_record(&a, &lost_run).await["status"], "failed");
    let b = runtime_without_agent(&redis_args);
    let (st, body, headers) =
        post(&b, "/chat", json!({"message": "hello", "run_id": chat_run})).await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["output"], "echo: hello");
    assert_eq!(
        headers
            .get("x-fastagentic-replayed")
            .and_then(|v| v.to_str().ok()),
        Some("true")
    );
    let record = run_record(&b, &stream_run).await;
    assert_eq!(
        record["output"]["output"], "echo: one two three ",
        "{record}"
    );
}

/// A runtime whose agent URL has nothing listening: it can only replay.
fn runtime_without_agent(extra: &[&str]) -> Server {
    let url = format!("http://127.0.0.1:{}/chat", support::free_port());
    let mut args = vec!["--agent", "http", "--agent-url", url.as_str()];
    args.extend_from_slice(extra);
    Server::start(&args, &[])
}
