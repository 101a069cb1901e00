//! Runs and streams that survive their process, through the real binary: two processes share
//! Redis (and again PostgreSQL); a stream started on A is resumed on B after A is killed or
//! drained, and gets exactly the remaining events; a background run accepted by a process
//! that dies completes once on the other; bad resumes get 4xx JSON.

#![allow(clippy::expect_used, clippy::unwrap_used)]

#[path = "store_support.rs"]
mod support;

#[path = "runtime_support/mod.rs"]
mod runtime_support;

use std::time::Duration;

use nix::sys::signal::Signal;
use runtime_support::sse::{Sse, SseReader};
use runtime_support::{Server, client, instance};
use serde_json::{Value, json};

/// Fifteen words, streamed one per chunk by the echo agent.
fn message() -> String {
    (1..=15)
        .map(|i| format!("w{i:02}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn base(s: &Server) -> String {
    format!("http://127.0.0.1:{}", s.port)
}

async fn open_stream(c: &reqwest::Client, s: &Server, run_id: &str) -> SseReader {
    let resp = c
        .post(format!("{}/chat/stream", base(s)))
        .json(&json!({"message": message(), "run_id": run_id}))
        .send()
        .await
        .expect("POST /chat/stream");
    assert_eq!(resp.status(), 200);
    SseReader::new(resp)
}

async fn resume(c: &reqwest::Client, s: &Server, run_id: &str, last: Option<&str>) -> SseReader {
    let mut req = c.get(format!("{}/runs/{run_id}/stream", base(s)));
    if let Some(last) = last {
        req = req.header("Last-Event-ID", last);
    }
    let resp = req.send().await.expect("GET /runs/{id}/stream");
    assert_eq!(resp.status(), 200, "{:?}", resp.text().await);
    SseReader::new(resp)
}

/// The number of an event id `<run_id>:<n>`.
fn seq(e: &Sse) -> u64 {
    let id = e.id.as_deref().expect("the event has an id");
    id.rsplit_once(':').unwrap().1.parse().unwrap()
}

/// Asserts the client's whole view: deltas numbered 1, 2, ... without gap or repeat that add
/// up to the message, then one `done`.
fn assert_exactly_once(events: &[Sse], run_id: &str) {
    let deltas: Vec<&Sse> = events.iter().filter(|e| e.event.is_none()).collect();
    let seqs: Vec<u64> = deltas.iter().map(|e| seq(e)).collect();
    assert_eq!(seqs, (1..=15).collect::<Vec<_>>(), "{events:#?}");
    let text: String = deltas
        .iter()
        .map(|e| e.data["delta"].as_str().unwrap())
        .collect();
    assert_eq!(text, message());
    let done: Vec<&Sse> = events
        .iter()
        .filter(|e| e.event.as_deref() == Some("done"))
        .collect();
    assert_eq!(done.len(), 1, "{events:#?}");
    assert_eq!(done[0].data["run_id"], run_id);
    assert_eq!(seq(done[0]), 16);
    assert!(
        events.iter().all(|e| e.event.as_deref() != Some("reset")),
        "{events:#?}"
    );
}

async fn run_record(c: &reqwest::Client, s: &Server, run_id: &str) -> Value {
    let r = c
        .get(format!("{}/runs/{run_id}", base(s)))
        .send()
        .await
        .expect("GET /runs/{id}");
    r.json().await.expect("JSON")
}

async fn completed(c: &reqwest::Client, s: &Server, run_id: &str) -> Value {
    for _ in 0..300 {
        let record = run_record(c, s, run_id).await;
        if record["status"] == "completed" {
            return record;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "{run_id} did not complete: {:?}",
        run_record(c, s, run_id).await
    );
}

fn store_env(store: &str, test: &str) -> Option<Vec<(&'static str, String)>> {
    Some(match store {
        "redis" => vec![("REDIS_URL", support::redis_url(test)?)],
        _ => vec![("DATABASE_URL", support::database_url(test)?)],
    })
}

/// Two processes on the same store, with short stale-after and a 100 ms-per-word echo unless
/// `extra` sets them.
fn pair(store: &str, env: &[(&'static str, String)], extra: &[&str]) -> (Server, Server) {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let start = |id: &str| {
        let mut args = vec!["--durable-store", store, "--instance-id", id];
        args.extend_from_slice(extra);
        for (flag, value) in [
            ("--run-stale-after", "2"),
            ("--echo-delay-ms", "1500"),
            ("--agent-timeout", "1"),
        ] {
            if !extra.contains(&flag) {
                args.extend_from_slice(&[flag, value]);
            }
        }
        Server::start(&args, &env)
    };
    (start(&instance("a-")), start(&instance("b-")))
}

async fn a_killed_stream_resumes_on_another_process(store: &str) {
    let test = format!("a_killed_stream_resumes_on_another_process_{store}");
    let Some(env) = store_env(store, &test) else {
        return;
    };
    let (a, b) = pair(store, &env, &[]);
    let c = client();
    let run_id = support::unique("kill");
    let mut stream = open_stream(&c, &a, &run_id).await;
    let mut seen = Vec::new();
    while seen.len() < 5 {
        seen.push(stream.next().await.expect("an event before the kill"));
    }
    a.signal(Signal::SIGKILL);
    let last = seen[4].id.clone().expect("id");
    assert_eq!(last, format!("{run_id}:5"));
    let mut resumed = resume(&c, &b, &run_id, Some(&last)).await;
    seen.extend(resumed.rest().await);
    assert_exactly_once(&seen, &run_id);

    let record = run_record(&c, &b, &run_id).await;
    assert_eq!(record["status"], "completed");
    assert_eq!(record["attempts"], 2, "taken over once: {record}");
    assert_eq!(record["output"]["output"], message());
    assert_eq!(b.events("run_taken_over").len(), 1);
    // Read again from the start, on the other process's view of the log: the same events.
    let again = resume(&c, &b, &run_id, None).await.rest().await;
    assert_exactly_once(&again, &run_id);
}

async fn a_drained_stream_ends_with_a_resume_event(store: &str) {
    let test = format!("a_drained_stream_ends_with_a_resume_event_{store}");
    let Some(env) = store_env(store, &test) else {
        return;
    };
    // Wraps up 1.5 s after SIGTERM, while the 15 words (3 s) are still streaming.
    let (mut a, b) = pair(
        store,
        &env,
        &[
            "--timeout-graceful",
            "2",
            "--echo-delay-ms",
            "3000",
            "--run-stale-after",
            "60",
        ],
    );
    let c = client();
    let run_id = support::unique("drain");
    let mut stream = open_stream(&c, &a, &run_id).await;
    let mut seen = Vec::new();
    while seen.len() < 3 {
        seen.push(stream.next().await.expect("an event before SIGTERM"));
    }
    a.signal(Signal::SIGTERM);
    let mut rest = stream.rest().await;
    let resume_event = rest.pop().expect("a last event");
    assert_eq!(resume_event.event.as_deref(), Some("resume"), "{rest:#?}");
    assert_eq!(resume_event.data["run_id"], run_id.as_str());
    assert_eq!(resume_event.data["url"], format!("/runs/{run_id}/stream"));
    seen.extend(rest);
    let last = resume_event.data["last_event_id"]
        .as_str()
        .expect("last id");
    assert_eq!(Some(last), seen.last().and_then(|e| e.id.as_deref()));
    assert!(
        a.wait_exit(Duration::from_secs(10))
            .is_some_and(|s| s.success())
    );
    assert_eq!(a.events("run_released").len(), 1);

    let mut resumed = resume(&c, &b, &run_id, Some(last)).await;
    seen.extend(resumed.rest().await);
    assert_exactly_once(&seen, &run_id);
    let record = run_record(&c, &b, &run_id).await;
    assert_eq!(
        record["attempts"], 2,
        "released and taken over at once: {record}"
    );
    assert_eq!(record["instance_id"], b.events("startup")[0]["instance_id"]);
}

async fn a_background_run_survives_its_process(store: &str) {
    let test = format!("a_background_run_survives_its_process_{store}");
    let Some(env) = store_env(store, &test) else {
        return;
    };
    let (a, b) = pair(store, &env, &[]);
    let c = client();
    let run_id = support::unique("bg");
    let resp = c
        .post(format!("{}/runs", base(&a)))
        .json(&json!({"message": message(), "run_id": run_id}))
        .send()
        .await
        .expect("POST /runs");
    assert_eq!(resp.status(), 202);
    assert_eq!(
        resp.headers().get("location").and_then(|v| v.to_str().ok()),
        Some(format!("/runs/{run_id}").as_str())
    );
    let body: Value = resp.json().await.expect("JSON");
    assert_eq!(body["status"], "running");
    assert_eq!(body["stream_url"], format!("/runs/{run_id}/stream"));
    // Killed before the agent's first word (100 ms): the run is only recorded.
    a.signal(Signal::SIGKILL);
    let record = completed(&c, &b, &run_id).await;
    assert_eq!(record["attempts"], 2, "{record}");
    assert_eq!(record["output"]["output"], message());
    assert_eq!(b.events("run_taken_over").len(), 1);
    let events = resume(&c, &b, &run_id, None).await.rest().await;
    assert_exactly_once(&events, &run_id);

    // 20 concurrent submissions of one id: one run.
    let run_id = support::unique("bg20");
    let submits = (0..20).map(|_| {
        let c = c.clone();
        let url = format!("{}/runs", base(&b));
        let body = json!({"message": message(), "run_id": run_id});
        async move {
            c.post(url)
                .json(&body)
                .send()
                .await
                .expect("POST")
                .status()
                .as_u16()
        }
    });
    let mut statuses = futures::future::join_all(submits).await;
    statuses.sort_unstable();
    assert_eq!(
        statuses.iter().filter(|s| **s == 202).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        19,
        "{statuses:?}"
    );
    let record = completed(&c, &b, &run_id).await;
    assert_eq!(record["attempts"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_stream_resumes_on_another_process_redis() {
    a_killed_stream_resumes_on_another_process("redis").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_stream_resumes_on_another_process_postgres() {
    a_killed_stream_resumes_on_another_process("postgres").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_drained_stream_ends_with_a_resume_event_redis() {
    a_drained_stream_ends_with_a_resume_event("redis").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_drained_stream_ends_with_a_resume_event_postgres() {
    a_drained_stream_ends_with_a_resume_event("postgres").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_background_run_survives_its_process_redis() {
    a_background_run_survives_its_process("redis").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_background_run_survives_its_process_postgres() {
    a_background_run_survives_its_process("postgres").await;
}

/// Bad resumes and bodies: 4xx JSON with the instance header, nothing recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_resumes_get_clear_4xx_json() {
    let s = Server::start(&["--stream-events-max", "2"], &[]);
    let c = client();
    let run_id = support::unique("bad");
    let events = open_stream(&c, &s, &run_id).await.rest().await;
    assert_eq!(events.last().and_then(|e| e.event.as_deref()), Some("done"));
    let cases = [
        (
            format!("/runs/{run_id}/stream"),
            Some("other-run:3"),
            400,
            "bad_last_event_id",
        ),
        (
            format!("/runs/{run_id}/stream"),
            Some("garbage"),
            400,
            "bad_last_event_id",
        ),
        (
            format!("/runs/{run_id}/stream"),
            Some(&*format!("{run_id}:99")),
            400,
            "bad_last_event_id",
        ),
        // Only events 14 and 15 are kept.
        (
            format!("/runs/{run_id}/stream"),
            Some(&*format!("{run_id}:3")),
            410,
            "events_expired",
        ),
        (
            "/runs/no-such-run/stream".to_owned(),
            None,
            404,
            "run_not_found",
        ),
        (
            "/runs/bad%20id/stream".to_owned(),
            None,
            400,
            "invalid_run_id",
        ),
    ];
    for (path, last, status, code) in cases {
        let mut req = c.get(format!("{}{path}", base(&s)));
        if let Some(last) = last {
            req = req.header("Last-Event-ID", last);
        }
        let resp = req.send().await.expect("GET");
        assert_eq!(resp.status().as_u16(), status, "{path} {last:?}");
        assert!(resp.headers().contains_key("x-fastagentic-instance"));
        let body: Value = resp.json().await.expect("JSON");
        assert_eq!(body["error"], code, "{path} {last:?}: {body}");
        assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    // From the last kept event on, the resume works.
    let rest = resume(&c, &s, &run_id, Some(&format!("{run_id}:14")))
        .await
        .rest()
        .await;
    assert_eq!(rest.iter().map(seq).collect::<Vec<_>>(), [15, 16]);

    for body in ["{", "{\"message\": 3}", "[]"] {
        let resp = c
            .post(format!("{}/runs", base(&s)))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("POST");
        assert!(resp.status().is_client_error(), "{body}: {}", resp.status());
        assert!(resp.headers().contains_key("x-fastagentic-instance"));
        let v: Value = resp.json().await.expect("JSON");
        assert!(v["error"].is_string(), "{v}");
    }
    let resp = c
        .post(format!("{}/runs", base(&s)))
        .json(&json!({"message": "m", "run_id": "bad id"}))
        .send()
        .await
        .expect("POST");
    assert_eq!(resp.status(), 400);
    let resp = c
        .get(format!("{}/runs/bad-id-never-recorded", base(&s)))
        .send()
        .await
        .expect("GET");
    assert_eq!(
        resp.status(),
        404,
        "nothing was recorded for the refused requests"
    );
}

/// A finished background run is POSTed to `--run-webhook-url`, retried after a failed try with
/// the same idempotency key; runs a client waits on are not.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_finished_background_run_is_posted_to_the_webhook() {
    use std::sync::{Arc, Mutex};

    type Seen = Arc<Mutex<Vec<(Option<String>, Value)>>>;
    let seen: Seen = Arc::default();
    let app = axum::Router::new()
        .route(
            "/hook",
            axum::routing::post(
                |axum::extract::State(seen): axum::extract::State<Seen>,
                 headers: axum::http::HeaderMap,
                 axum::Json(body): axum::Json<Value>| async move {
                    let key = headers
                        .get("idempotency-key")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    let mut seen = seen.lock().unwrap();
                    seen.push((key, body));
                    // The first try fails: the runtime must try again.
                    if seen.len() == 1 {
                        axum::http::StatusCode::INTERNAL_SERVER_ERROR
                    } else {
                        axum::http::StatusCode::NO_CONTENT
                    }
                },
            ),
        )
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });

    let hook = format!("http://127.0.0.1:{port}/hook");
    let s = Server::start(&["--run-webhook-url", &hook], &[]);
    let c = client();
    let resp = c
        .post(format!("{}/chat", base(&s)))
        .json(&json!({"message": "not a background run"}))
        .send()
        .await
        .expect("POST /chat");
    assert_eq!(resp.status(), 200);
    let run_id = support::unique("hook");
    let resp = c
        .post(format!("{}/runs", base(&s)))
        .json(&json!({"message": "a b c", "run_id": run_id}))
        .send()
        .await
        .expect("POST /runs");
    assert_eq!(resp.status(), 202);
    for _ in 0..100 {
        if seen.lock().unwrap().len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "one failed try, one delivered: {seen:?}");
    let key = format!("{run_id}:1");
    for (k, body) in &seen {
        assert_eq!(k.as_deref(), Some(key.as_str()));
        assert_eq!(body["event"], "run.completed");
        assert_eq!(body["run"]["run_id"], run_id.as_str());
        assert_eq!(body["run"]["status"], "completed");
        assert_eq!(body["run"]["background"], true);
        assert_eq!(body["run"]["output"]["output"], "a b c");
    }
    assert_eq!(s.events("run_webhook_delivered")[0]["tries"], 2);
}
