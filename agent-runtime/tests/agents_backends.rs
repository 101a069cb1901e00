//! The `http` and `openai` backends against small local upstreams (axum on 127.0.0.1): success,
//! upstream down (502), upstream slow (504), bad answers (502), streaming, and the API key kept
//! out of every log line. Each backend is inside the [`Timed`] decorator, as the runtime builds
//! it: the backends keep no timer of their own.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agent_runtime::agent::{Agent, AgentError, AgentErrorKind, AgentRequest};
use agent_runtime::agents::{ApiKey, HttpAgent, OpenAiAgent, ReplyField, TimeLimits, Timed};
use agent_runtime::error::agent_status;
use axum::Json;
use axum::Router;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::post;
use futures::StreamExt;
use serde_json::{Value, json};

const KEY: &str = "sk-test-0123456789-do-not-log";
const SLOW: Duration = Duration::from_secs(3);
const TIMEOUT: Duration = Duration::from_millis(300);

/// `agent` under the limits the runtime would give it with `--agent-timeout` [`TIMEOUT`].
fn timed(agent: impl Agent) -> Timed {
    let limits = TimeLimits {
        first_byte: TIMEOUT,
        stream_idle: TIMEOUT,
        run_max: None,
    };
    Timed::new(Arc::new(agent), limits)
}

fn request(message: &str) -> AgentRequest {
    AgentRequest {
        message: message.to_owned(),
        run_id: Some("run-1".to_owned()),
        extra: serde_json::Map::new(),
    }
}

fn url(s: &str) -> reqwest::Url {
    match reqwest::Url::parse(s) {
        Ok(u) => u,
        Err(e) => panic!("{s}: {e}"),
    }
}

/// Serves `app` on a loopback port; returns its base URL.
async fn serve(app: Router) -> String {
    let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
        Ok(l) => l,
        Err(e) => panic!("bind: {e}"),
    };
    let addr = match listener.local_addr() {
        Ok(a) => a,
        Err(e) => panic!("addr: {e}"),
    };
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

/// A port with nothing listening.
fn closed_port_url() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(1);
    format!("http://127.0.0.1:{port}")
}

fn assert_error(
    result: Result<impl std::fmt::Debug, AgentError>,
    status: u16,
    code: &str,
    within: Duration,
    started: Instant,
) {
    match result {
        Err(e) => {
            assert_eq!(
                (agent_status(e.kind).as_u16(), e.code()),
                (status, code),
                "{e:?}"
            );
        }
        Ok(v) => panic!("expected a {status} {code}, got {v:?}"),
    }
    assert!(started.elapsed() < within, "took {:?}", started.elapsed());
}

fn http_upstream() -> Router {
    Router::new()
        .route(
            "/agent",
            post(|Json(body): Json<Value>| async move {
                let message = body["message"].as_str().unwrap_or_default().to_owned();
                Json(json!({"output": format!("upstream: {message}"), "run_id_seen": body["run_id"]}))
            }),
        )
        .route(
            "/slow",
            post(|| async {
                tokio::time::sleep(SLOW).await;
                Json(json!({"output": "late"}))
            }),
        )
        .route("/broken", post(|| async { StatusCode::INTERNAL_SERVER_ERROR }))
        .route("/garbage", post(|| async { "not json" }))
}

#[tokio::test]
async fn http_backend_forwards_and_maps_upstream_failures() {
    let base = serve(http_upstream()).await;
    let agent = |path: &str| match HttpAgent::new(
        url(&format!("{base}{path}")),
        None,
        ReplyField::Default,
        TIMEOUT,
    ) {
        Ok(a) => timed(a),
        Err(e) => panic!("{e}"),
    };

    let reply = agent("/agent").run(request("hi")).await;
    let Ok(reply) = reply else {
        panic!("{reply:?}")
    };
    assert_eq!(reply.output, "upstream: hi");
    assert_eq!(reply.run_id.as_deref(), Some("run-1"));
    assert_eq!(
        reply.extra.get("run_id_seen"),
        Some(&json!("run-1")),
        "the request body is forwarded"
    );

    let started = Instant::now();
    assert_error(
        agent("/slow").run(request("hi")).await,
        504,
        AgentErrorKind::Timeout.code(),
        TIMEOUT * 4,
        started,
    );

    let started = Instant::now();
    assert_error(
        agent("/broken").run(request("hi")).await,
        502,
        AgentErrorKind::BadResponse.code(),
        TIMEOUT * 4,
        started,
    );
    assert_error(
        agent("/garbage").run(request("hi")).await,
        502,
        AgentErrorKind::BadResponse.code(),
        TIMEOUT * 4,
        started,
    );

    let down = match HttpAgent::new(
        url(&format!("{}/agent", closed_port_url())),
        None,
        ReplyField::Default,
        TIMEOUT,
    ) {
        Ok(a) => timed(a),
        Err(e) => panic!("{e}"),
    };
    let started = Instant::now();
    assert_error(
        down.run(request("hi")).await,
        502,
        AgentErrorKind::Unavailable.code(),
        TIMEOUT * 4,
        started,
    );

    // Streaming from a backend that cannot stream yields its whole answer as one chunk.
    let chunks = match agent("/agent").stream(request("hi")).await {
        Ok(s) => s.collect::<Vec<_>>().await,
        Err(e) => panic!("{e:?}"),
    };
    let chunks: Vec<String> = chunks.into_iter().filter_map(Result::ok).collect();
    assert_eq!(chunks, vec!["upstream: hi"]);
}

/// Requests the fake OpenAI server saw, to check what the client sent.
#[derive(Default)]
struct Seen {
    authorizations: Vec<String>,
    bodies: Vec<Value>,
}

fn openai_upstream(seen: Arc<Mutex<Seen>>) -> Router {
    let completions = move |headers: HeaderMap, Json(body): Json<Value>| {
        let seen = Arc::clone(&seen);
        async move {
            if let Ok(mut seen) = seen.lock() {
                seen.authorizations.push(
                    headers
                        .get(header::AUTHORIZATION)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned(),
                );
                seen.bodies.push(body.clone());
            }
            let content = body["messages"][0]["content"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            if content == "slow" {
                tokio::time::sleep(SLOW).await;
            }
            if content == "unauthorized" {
                return (
                    StatusCode::UNAUTHORIZED,
                    Json(json!({"error": {"message": "Incorrect API key provided"}})),
                )
                    .into_response();
            }
            if body["stream"] == json!(true) {
                let events = [
                    json!({"choices": [{"delta": {"role": "assistant"}}]}).to_string(),
                    json!({"choices": [{"delta": {"content": "Hel"}}]}).to_string(),
                    json!({"choices": [{"delta": {"content": "lo"}}]}).to_string(),
                    json!({"choices": [{"delta": {"content": " world"}, "finish_reason": null}]})
                        .to_string(),
                    json!({"choices": [{"delta": {}, "finish_reason": "stop"}]}).to_string(),
                    "[DONE]".to_owned(),
                ];
                let stall = content == "stall";
                // One network chunk per event, and a split inside the second one, so framing
                // across reads is exercised.
                let mut pieces: Vec<String> = Vec::new();
                for (i, event) in events.iter().enumerate() {
                    let frame = format!("data: {event}\n\n");
                    if i == 1 {
                        let (a, b) = frame.split_at(9);
                        pieces.push(a.to_owned());
                        pieces.push(b.to_owned());
                    } else {
                        pieces.push(frame);
                    }
                }
                let stream = futures::stream::iter(pieces.into_iter().enumerate()).then(
                    move |(i, piece)| async move {
                        if stall && i == 3 {
                            tokio::time::sleep(SLOW).await;
                        } else {
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                        Ok::<_, std::convert::Infallible>(piece)
                    },
                );
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
                "usage": {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6},
            }))
            .into_response()
        }
    };
    Router::new().route("/v1/chat/completions", post(completions))
}

/// Collects every tracing event (all levels, all targets) written while it is the default.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut out) = self.0.lock() {
            out.extend_from_slice(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        self.0
            .lock()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }
}

// current_thread: the subscriber set with `set_default` sees every task of the test, including
// the HTTP client's and the fake server's.
#[tokio::test(flavor = "current_thread")]
async fn openai_backend_completes_streams_maps_failures_and_never_logs_the_key() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let seen = Arc::new(Mutex::new(Seen::default()));
    let base = serve(openai_upstream(Arc::clone(&seen))).await;
    let agent = match OpenAiAgent::new(
        url(&format!("{base}/v1")),
        Some(ApiKey::new(KEY)),
        "test-model".into(),
        TIMEOUT,
    ) {
        Ok(a) => a,
        Err(e) => panic!("{e}"),
    };
    tracing::info!(agent = ?agent, "built the openai agent");
    let agent = timed(agent);

    // Success.
    let reply = agent.run(request("hi")).await;
    let Ok(reply) = reply else {
        panic!("{reply:?}")
    };
    assert_eq!(reply.output, "you said: hi");
    assert_eq!(reply.extra.get("model"), Some(&json!("test-model")));
    assert_eq!(reply.extra["usage"]["total_tokens"], json!(6));

    // Streaming over SSE, chunk by chunk.
    let chunks = match agent.stream(request("stream me")).await {
        Ok(s) => s.collect::<Vec<_>>().await,
        Err(e) => panic!("{e:?}"),
    };
    let texts: Vec<String> = chunks
        .iter()
        .filter_map(|c| c.as_ref().ok().cloned())
        .collect();
    assert_eq!(texts, vec!["Hel", "lo", " world"], "{chunks:?}");
    assert_eq!(chunks.len(), 3, "no errors in the stream: {chunks:?}");

    // A stream that stalls longer than the timeout ends with a 504 chunk.
    let chunks = match agent.stream(request("stall")).await {
        Ok(s) => s.collect::<Vec<_>>().await,
        Err(e) => panic!("{e:?}"),
    };
    let last = chunks.last().map(|c| {
        c.as_ref()
            .map_err(|e| (agent_status(e.kind).as_u16(), e.code().to_owned()))
    });
    assert_eq!(
        last,
        Some(Err((504, AgentErrorKind::Timeout.code().to_owned()))),
        "{chunks:?}"
    );

    // Slow, rejected, down.
    let started = Instant::now();
    assert_error(
        agent.run(request("slow")).await,
        504,
        AgentErrorKind::Timeout.code(),
        TIMEOUT * 4,
        started,
    );
    let started = Instant::now();
    assert_error(
        agent.stream(request("slow")).await.map(|_| ()),
        504,
        AgentErrorKind::Timeout.code(),
        TIMEOUT * 4,
        started,
    );
    let started = Instant::now();
    let rejected = agent.run(request("unauthorized")).await;
    assert!(
        matches!(&rejected, Err(e) if e.message.contains("Incorrect API key provided")),
        "the upstream's reason is passed on: {rejected:?}"
    );
    assert_error(
        rejected,
        502,
        AgentErrorKind::BadResponse.code(),
        TIMEOUT * 4,
        started,
    );
    let down = match OpenAiAgent::new(
        url(&format!("{}/v1", closed_port_url())),
        Some(ApiKey::new(KEY)),
        "m".into(),
        TIMEOUT,
    ) {
        Ok(a) => timed(a),
        Err(e) => panic!("{e}"),
    };
    let started = Instant::now();
    assert_error(
        down.run(request("hi")).await,
        502,
        AgentErrorKind::Unavailable.code(),
        TIMEOUT * 4,
        started,
    );
    assert_error(
        down.stream(request("hi")).await.map(|_| ()),
        502,
        AgentErrorKind::Unavailable.code(),
        TIMEOUT * 4,
        started,
    );

    // The key went to the server as a bearer token, with the configured model...
    let (authorizations, bodies) = match seen.lock() {
        Ok(s) => (s.authorizations.clone(), s.bodies.clone()),
        Err(_) => panic!("poisoned"),
    };
    assert!(authorizations.len() >= 6, "{authorizations:?}");
    assert!(
        authorizations.iter().all(|a| a == &format!("Bearer {KEY}")),
        "{authorizations:?}"
    );
    assert!(bodies.iter().all(|b| b["model"] == "test-model"));
    assert_eq!(bodies[1]["stream"], json!(true));

    // ...and into no log line, while the logs did record the calls.
    let logs = captured.text();
    assert!(
        logs.contains("calling chat completions"),
        "logs were captured: {logs}"
    );
    assert!(
        logs.contains("ApiKey(***)"),
        "the agent's Debug output was logged redacted: {logs}"
    );
    assert!(
        !logs.contains(KEY),
        "the API key leaked into the logs:\n{logs}"
    );
    assert!(!logs.contains("0123456789-do-not-log"));
}

/// An agent service streaming server-sent events the way the Python FastAgentic package does.
fn sse_upstream() -> Router {
    fn sse(body: &'static str) -> impl IntoResponse {
        ([(header::CONTENT_TYPE, "text/event-stream")], body)
    }
    Router::new()
        .route(
            "/events",
            post(|| async {
                sse("event: node_start\r\ndata: {\"type\":\"node_start\",\"data\":{}}\r\n\r\n\
                     event: token\r\ndata: {\"type\":\"token\",\"data\":{\"content\":\"Hel\"}}\r\n\r\n\
                     event: token\r\ndata: {\"type\":\"token\",\"data\":{\"content\":\"lo\"}}\r\n\r\n\
                     event: done\r\ndata: {\"type\":\"done\",\"data\":{\"result\":\"Hello\"}}\r\n\r\n")
            }),
        )
        .route(
            "/cut",
            post(|| async { sse("event: token\ndata: {\"type\":\"token\",\"data\":{\"content\":\"Hel\"}}\n\n") }),
        )
        .route("/json", post(|| async { Json(json!({"data": {"answer": "deep"}, "cost": 1})) }))
}

#[tokio::test]
async fn http_backend_relays_event_streams_and_refuses_a_cut_one() {
    let base = serve(sse_upstream()).await;
    let agent = |stream_path: &str, reply: ReplyField| match HttpAgent::new(
        url(&format!("{base}/json")),
        Some(url(&format!("{base}{stream_path}"))),
        reply,
        TIMEOUT,
    ) {
        Ok(a) => timed(a),
        Err(e) => panic!("{e}"),
    };
    let chunks = match agent("/events", ReplyField::Default)
        .stream(request("hi"))
        .await
    {
        Ok(s) => s.collect::<Vec<_>>().await,
        Err(e) => panic!("{e:?}"),
    };
    let chunks: Vec<String> = chunks
        .into_iter()
        .map(|c| c.unwrap_or_else(|e| panic!("{e:?}")))
        .collect();
    assert_eq!(chunks, ["Hel", "lo"]);

    // An agent that stops (dies) before `done`: the text so far, then an error, never a
    // short answer that looks complete.
    let chunks = match agent("/cut", ReplyField::Default)
        .stream(request("hi"))
        .await
    {
        Ok(s) => s.collect::<Vec<_>>().await,
        Err(e) => panic!("{e:?}"),
    };
    assert!(
        matches!(chunks.first(), Some(Ok(t)) if t == "Hel"),
        "{chunks:?}"
    );
    assert!(
        matches!(chunks.last(), Some(Err(e)) if e.kind == AgentErrorKind::BadResponse && e.message.contains("ended before its end event")),
        "{chunks:?}"
    );

    // The reply field, followed through nested objects.
    let deep = agent(
        "/events",
        ReplyField::Path(vec!["data".into(), "answer".into()]),
    );
    let reply = deep.run(request("hi")).await;
    assert!(
        matches!(&reply, Ok(r) if r.output == "deep" && r.extra.get("cost") == Some(&json!(1))),
        "{reply:?}"
    );
}

/// `--agent http --agent-format chat-completions`: the chat-completions client posting to the
/// whole URL given, with the model, and without a key.
#[tokio::test]
async fn http_backend_speaks_chat_completions() {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let base = serve(openai_upstream(Arc::clone(&seen))).await;
    let agent = match OpenAiAgent::at_endpoint(
        url(&format!("{base}/v1/chat/completions")),
        "gateway-model".into(),
        TIMEOUT,
    ) {
        Ok(a) => timed(a),
        Err(e) => panic!("{e}"),
    };
    assert_eq!(agent.name(), "http");
    let reply = agent.run(request("hi")).await;
    assert!(
        matches!(&reply, Ok(r) if r.output == "you said: hi"),
        "{reply:?}"
    );
    let chunks = match agent.stream(request("hi")).await {
        Ok(s) => s.collect::<Vec<_>>().await,
        Err(e) => panic!("{e:?}"),
    };
    let text: String = chunks
        .into_iter()
        .map(|c| c.unwrap_or_else(|e| panic!("{e:?}")))
        .collect();
    assert_eq!(text, "Hello world");
    let seen = seen.lock().unwrap_or_else(|e| e.into_inner());
    assert!(
        seen.authorizations.iter().all(String::is_empty),
        "no key is sent"
    );
    assert_eq!(seen.bodies[0]["model"], "gateway-model");
    assert_eq!(
        seen.bodies[0]["messages"][0],
        json!({"role": "user", "content": "hi"})
    );
}
