//! The real `fastagentic` binary with real Redis and PostgreSQL (`REDIS_URL`, `DATABASE_URL`;
//! see `store_support.rs`): per-worker pool limits seen from the servers, pool exhaustion,
//! recovery after killed backends and a stopped Redis, the durable-run suite through HTTP for
//! every store, runs in flight at SIGTERM, runs whose process was killed or frozen mid-run
//! (taken over by another process after `--run-stale-after`), and streams that outlast
//! `--run-stale-after` (kept by their heartbeats, not taken over).
// Tests fail by panicking; expect/unwrap are the assertions here.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod runtime_support;
#[path = "store_support.rs"]
mod support;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::response::IntoResponse;
use axum::routing::post;
use axum::{Json, Router};
use deadpool_redis::redis;
use futures::StreamExt;
use nix::sys::signal::Signal;
use runtime_support::{Server, client, instance, poll};
use serde_json::{Value, json};

fn base(s: &Server) -> String {
    format!("http://127.0.0.1:{}", s.port)
}

async fn chat(
    c: &reqwest::Client,
    s: &Server,
    body: Value,
) -> (u16, Value, reqwest::header::HeaderMap) {
    let r = c
        .post(format!("{}/chat", base(s)))
        .json(&body)
        .send()
        .await
        .expect("POST /chat");
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let text = r.text().await.unwrap_or_default();
    let v = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
    (status, v, headers)
}

async fn get_json(c: &reqwest::Client, url: String) -> (u16, Value) {
    let r = c.get(url).send().await.expect("GET");
    let status = r.status().as_u16();
    let text = r.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}")),
    )
}

/// Connections Redis lists whose name starts with `fastagentic:<id>:`.
async fn redis_clients(conn: &mut redis::aio::MultiplexedConnection, id: &str) -> usize {
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(conn)
        .await
        .expect("CLIENT LIST");
    let needle = format!("name=fastagentic:{id}:");
    list.lines().filter(|l| l.contains(&needle)).count()
}

async fn pg_backends(pg: &sqlx::PgPool, id: &str, state: Option<&str>) -> i64 {
    sqlx::query_scalar::<_, i64>(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE $1 \
         AND ($2::text IS NULL OR state = $2)",
    )
    .bind(format!("fastagentic:{id}:%"))
    .bind(state)
    .fetch_one(pg)
    .await
    .expect("pg_stat_activity")
}

/// Runs `n` concurrent `/chat` requests (each its own run) while `sample` is polled every
/// 10 ms; returns the statuses and the highest sample.
async fn burst<F, Fut>(s: &Server, n: usize, mut sample: F) -> (Vec<u16>, usize)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = usize>,
{
    let c = client();
    let url = format!("{}/chat", base(s));
    let done = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for i in 0..n {
        let (c, url) = (c.clone(), url.clone());
        let id = support::unique(&format!("burst{i}"));
        tasks.push(tokio::spawn(async move {
            c.post(url)
                .json(&json!({"message": format!("m{i}"), "run_id": id}))
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0)
        }));
    }
    let watcher = {
        let done = done.clone();
        tokio::spawn(async move {
            let mut statuses = Vec::new();
            for t in tasks {
                statuses.push(t.await.unwrap_or(0));
            }
            done.store(true, Ordering::Release);
            statuses
        })
    };
    let mut max = 0;
    let mut samples = 0;
    while !done.load(Ordering::Acquire) {
        max = max.max(sample().await);
        samples += 1;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let statuses = watcher.await.unwrap();
    assert!(samples > 0, "no sample taken");
    (statuses, max)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_connections_stay_within_workers_times_pool_size() {
    let Some(url) = support::redis_url("redis_connections_stay_within_workers_times_pool_size")
    else {
        return;
    };
    let id = instance("rp");
    let s = Server::start(
        &[
            "--workers",
            "2",
            "--redis-pool-size",
            "3",
            "--durable-store",
            "redis",
            "--instance-id",
            &id,
        ],
        &[("REDIS_URL", &url), ("FASTAGENTIC_ECHO_DELAY_MS", "20")],
    );
    let mut conn = redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let (statuses, max) = burst(&s, 100, || {
        let mut conn = conn.clone();
        let id = id.clone();
        async move { redis_clients(&mut conn, &id).await }
    })
    .await;
    let after = redis_clients(&mut conn, &id).await;
    eprintln!("redis: max {max} connections from the runtime while sampling, {after} after");
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert!(
        max <= 6,
        "CLIENT LIST showed {max} > 2 workers x 3 connections"
    );
    assert!(
        max >= 2,
        "the sampler must have seen the pools at work (saw {max})"
    );
    let m = s.metrics();
    assert_eq!(m["runs"]["started"], 100, "{m}");
    assert_eq!(m["runs"]["completed"], 100, "pod-wide run counts: {m}");
    assert_eq!(
        m["pools"]["redis"]["max_size"], 6,
        "pod-wide pool size: {m}"
    );
    assert!(m["pools"]["redis"]["size"].as_u64().unwrap() <= 6, "{m}");
    let prom =
        runtime_support::request(s.port, "GET", "/metrics", &[("Accept", "text/plain")], None)
            .unwrap()
            .text();
    assert!(
        prom.contains("fastagentic_pool_max_size{pool=\"redis\"} 6"),
        "{prom}"
    );
    assert!(
        prom.contains("fastagentic_runs_total{event=\"completed\"} 100"),
        "{prom}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn database_connections_stay_within_limits_and_keep_the_minimum() {
    let test = "database_connections_stay_within_limits_and_keep_the_minimum";
    let Some(url) = support::database_url(test) else {
        return;
    };
    let pg = sqlx::PgPool::connect(&url).await.unwrap();
    let id = instance("dp");
    let s = Server::start(
        &[
            "--workers",
            "2",
            "--db-pool-size",
            "2",
            "--db-max-overflow",
            "1",
            "--durable-store",
            "postgres",
            "--instance-id",
            &id,
        ],
        &[("DATABASE_URL", &url), ("FASTAGENTIC_ECHO_DELAY_MS", "20")],
    );
    let (statuses, max) = burst(&s, 100, || {
        let (pg, id) = (pg.clone(), id.clone());
        async move { pg_backends(&pg, &id, None).await as usize }
    })
    .await;
    eprintln!("postgres: max {max} backends from the runtime while sampling");
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert!(
        max <= 6,
        "pg_stat_activity showed {max} > 2 workers x (2 + 1)"
    );
    assert!(
        max >= 2,
        "the sampler must have seen the pools at work (saw {max})"
    );
    // The kept minimum (2 per worker) stays open and idle afterwards.
    let kept = poll(Duration::from_secs(10), || {
        let n = futures::executor::block_on(pg_backends(&pg, &id, Some("idle")));
        (n >= 4).then_some(n)
    });
    let total = pg_backends(&pg, &id, None).await;
    eprintln!("postgres: {kept:?} idle backends kept, {total} in all");
    assert!(
        kept.is_some(),
        "the idle pools must keep 2 connections per worker"
    );
    assert!(total <= 6);
    let m = s.metrics();
    assert_eq!(m["runs"]["completed"], 100, "{m}");
    assert_eq!(m["pools"]["database"]["max_size"], 6, "{m}");
    assert!(m["pools"]["database"]["idle"].as_u64().unwrap() >= 2, "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_exhausted_pool_answers_503_json_within_the_timeout() {
    let test = "an_exhausted_pool_answers_503_json_within_the_timeout";
    let (Some(redis_url), Some(db_url)) = (support::redis_url(test), support::database_url(test))
    else {
        return;
    };
    let c = client();
    for (pool, store, args) in [
        (
            "redis",
            "redis",
            ["--redis-pool-size", "1", "--redis-pool-timeout", "0.5"],
        ),
        (
            "database",
            "postgres",
            ["--db-pool-size", "1", "--db-max-overflow", "0"],
        ),
    ] {
        let mut all = vec!["--durable-store", store];
        all.extend_from_slice(&args);
        let s = Server::start(
            &all,
            &[
                ("REDIS_URL", redis_url.as_str()),
                ("DATABASE_URL", db_url.as_str()),
                ("FASTAGENTIC_DB_POOL_TIMEOUT", "0.5"),
                ("FASTAGENTIC_ENABLE_TEST_ROUTES", "1"),
            ],
        );
        // Warm up (schema, first connection), then hold the only connection.
        let (st, _, _) = chat(&c, &s, json!({"message": "warm"})).await;
        assert_eq!(st, 200);
        let hold = {
            let (c, url) = (c.clone(), format!("{}/__test/hold/{pool}/3000", base(&s)));
            tokio::spawn(async move { c.post(url).send().await.map(|r| r.status().as_u16()) })
        };
        tokio::time::sleep(Duration::from_millis(400)).await;
        let t = Instant::now();
        let (status, body, headers) = chat(&c, &s, json!({"message": "starved"})).await;
        let took = t.elapsed();
        eprintln!("{pool} pool exhausted: {status} after {took:?}: {body}");
        assert_eq!(status, 503, "{body}");
        assert_eq!(body["error"], format!("{pool}_pool_exhausted"), "{body}");
        assert!(headers.get("retry-after").is_some());
        assert!(
            took >= Duration::from_millis(400),
            "it waited the timeout: {took:?}"
        );
        assert!(
            took < Duration::from_millis(1500),
            "within the 0.5 s timeout: {took:?}"
        );
        assert_eq!(hold.await.unwrap().unwrap(), 200);
        let m = s.metrics();
        assert!(m["pools"][pool]["timeouts"].as_u64().unwrap() >= 1, "{m}");
        // The pool is usable again.
        let (st, _, _) = chat(&c, &s, json!({"message": "after"})).await;
        assert_eq!(st, 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_database_backends_are_replaced_before_the_next_request() {
    let test = "killed_database_backends_are_replaced_before_the_next_request";
    let Some(url) = support::database_url(test) else {
        return;
    };
    let pg = sqlx::PgPool::connect(&url).await.unwrap();
    let id = instance("kb");
    let s = Server::start(
        &[
            "--durable-store",
            "postgres",
            "--db-pool-size",
            "2",
            "--instance-id",
            &id,
        ],
        &[("DATABASE_URL", &url)],
    );
    let c = client();
    for round in 0..3 {
        for i in 0..3 {
            let (st, body, _) = chat(&c, &s, json!({"message": format!("r{round}-{i}")})).await;
            assert_eq!(st, 200, "round {round}: {body}");
        }
        let killed: Vec<bool> = sqlx::query_scalar(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name LIKE $1",
        )
        .bind(format!("fastagentic:{id}:%"))
        .fetch_all(&pg)
        .await
        .unwrap();
        assert!(!killed.is_empty(), "round {round}: no backend to kill");
    }
    let (st, body, _) = chat(&c, &s, json!({"message": "last"})).await;
    assert_eq!(st, 200, "{body}");
    let (st, ready) = get_json(&c, format!("{}/ready", base(&s))).await;
    assert_eq!(st, 200, "{ready}");
}

/// A private `redis-server` on its own port.
struct PrivateRedis {
    child: Option<Child>,
    port: u16,
    dir: std::path::PathBuf,
}

impl PrivateRedis {
    fn start(port: u16, dir: &std::path::Path) -> Option<Self> {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let r = PrivateRedis {
            child: Some(child),
            port,
            dir: dir.to_owned(),
        };
        let up = poll(Duration::from_secs(10), || {
            std::net::TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], port))).ok()
        });
        up.map(|_| r)
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stopped_redis_makes_the_pod_unready_and_a_restart_makes_it_ready() {
    let test = "stopped_redis_makes_the_pod_unready_and_a_restart_makes_it_ready";
    if Command::new("redis-server")
        .arg("--version")
        .output()
        .is_err()
    {
        support::skip(test, "redis-server is not installed");
        return;
    }
    let port = support::free_port();
    let dir = std::env::temp_dir().join(support::unique("fa-redis"));
    std::fs::create_dir_all(&dir).unwrap();
    let mut redis = PrivateRedis::start(port, &dir).expect("start a private redis-server");
    let url = format!("redis://127.0.0.1:{}/0", redis.port);
    let s = Server::start(&["--durable-store", "redis"], &[("REDIS_URL", &url)]);
    let c = client();
    let ready = |c: reqwest::Client, port: u16| async move {
        get_json(&c, format!("http://127.0.0.1:{port}/ready")).await
    };
    let (st, body) = ready(c.clone(), s.port).await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["checks"]["redis"], true);
    assert_eq!(body["checks"]["durable_store"], true);
    let (st, _, _) = chat(&c, &s, json!({"message": "before"})).await;
    assert_eq!(st, 200);

    redis.stop();
    let t = Instant::now();
    let mut unready = None;
    while t.elapsed() < Duration::from_secs(10) {
        let (st, body) = ready(c.clone(), s.port).await;
        if st == 503 && body["checks"]["redis"] == false {
            unready = Some((t.elapsed(), body));
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (flip, body) = unready.expect("/ready must turn 503 with checks.redis=false");
    eprintln!("redis stopped: /ready 503 after {flip:?}: {body}");
    assert!(flip <= Duration::from_secs(5), "{flip:?}");
    assert_eq!(body["checks"]["app"], true);
    let (st, _) = get_json(&c, format!("{}/health", base(&s))).await;
    assert_eq!(st, 200, "/health stays 200 during the outage");
    let (st, body, _) = chat(&c, &s, json!({"message": "during"})).await;
    assert_eq!(st, 503, "runs fail fast while the store is down: {body}");

    let _redis2 = PrivateRedis::start(port, &dir).expect("restart redis-server");
    let t = Instant::now();
    let mut back = None;
    while t.elapsed() < Duration::from_secs(15) {
        let (st, _) = ready(c.clone(), s.port).await;
        if st == 200 {
            back = Some(t.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("redis restarted: /ready 200 after {back:?}");
    assert!(back.is_some(), "ready again without restarting the runtime");
    let (st, body, _) = chat(&c, &s, json!({"message": "after"})).await;
    assert_eq!(st, 200, "{body}");
}

/// An upstream for the `http` backend that counts calls; "slow..." messages take 1.5 s and
/// "fail" answers 500.
async fn counting_upstream() -> (String, Arc<AtomicU64>) {
    let calls = Arc::new(AtomicU64::new(0));
    let counter = calls.clone();
    let app = Router::new().route(
        "/agent",
        post(move |Json(body): Json<Value>| {
            let counter = counter.clone();
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
                let message = body["message"].as_str().unwrap_or_default().to_owned();
                if message.starts_with("slow") {
                    tokio::time::sleep(Duration::from_millis(1500)).await;
                }
                if message == "fail" {
                    return (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "boom").into_response();
                }
                Json(json!({"output": format!("upstream: {message}")})).into_response()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/agent"), calls)
}

/// The durable-run behaviour every store must show through HTTP.
async fn durable_run_suite(store: &str, env: &[(&str, &str)]) {
    let (agent_url, calls) = counting_upstream().await;
    let mut all_env = env.to_vec();
    all_env.push(("FASTAGENTIC_AGENT", "http"));
    all_env.push(("FASTAGENTIC_AGENT_URL", agent_url.as_str()));
    let s = Server::start(&["--durable-store", store], &all_env);
    let c = client();
    let rid = support::unique("suite");

    // First run: the agent runs once; replays do not run it again.
    let (st, first, h) = chat(&c, &s, json!({"message": "hello", "run_id": rid})).await;
    assert_eq!(st, 200, "{store}: {first}");
    assert_eq!(first["output"], "upstream: hello");
    assert_eq!(first["run_id"], rid.as_str());
    assert_eq!(first["replayed"], false);
    assert!(h.get("x-fastagentic-replayed").is_none());
    for _ in 0..3 {
        let (st, again, h) = chat(&c, &s, json!({"message": "hello", "run_id": rid})).await;
        assert_eq!(st, 200, "{store}: {again}");
        assert_eq!(again["replayed"], true, "{store}: {again}");
        assert_eq!(again["output"], "upstream: hello");
        assert_eq!(h.get("x-fastagentic-replayed").unwrap(), "true");
    }
    let r = c
        .post(format!("{}/chat", base(&s)))
        .header("Idempotency-Key", &rid)
        .json(&json!({"message": "hello"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<Value>().await.unwrap()["replayed"],
        true,
        "{store}: header key"
    );
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "{store}: the agent ran exactly once"
    );

    // The record.
    let (st, rec) = get_json(&c, format!("{}/runs/{rid}", base(&s))).await;
    assert_eq!(st, 200, "{store}: {rec}");
    assert_eq!(rec["status"], "completed");
    assert_eq!(rec["input"]["message"], "hello");
    assert_eq!(rec["output"]["output"], "upstream: hello");
    assert!(rec["instance_id"].as_str().is_some_and(|i| !i.is_empty()));
    assert!(
        rec["created_at"].is_string() && rec["updated_at"].is_string(),
        "{rec}"
    );

    // 409 while running, then the result.
    let slow_id = support::unique("slow");
    let slow = {
        let (c, url, id) = (c.clone(), format!("{}/chat", base(&s)), slow_id.clone());
        tokio::spawn(async move {
            c.post(url)
                .json(&json!({"message": "slow one", "run_id": id}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (st, busy, _) = chat(&c, &s, json!({"message": "slow one", "run_id": slow_id})).await;
    assert_eq!(st, 409, "{store}: {busy}");
    assert_eq!(busy["run_status"], "running", "{store}: {busy}");
    assert_eq!(slow.await.unwrap(), 200);
    let (st, done, _) = chat(&c, &s, json!({"message": "slow one", "run_id": slow_id})).await;
    assert_eq!(
        (st, done["replayed"].clone()),
        (200, json!(true)),
        "{store}: {done}"
    );
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "{store}: the slow run ran once"
    );

    // Unknown, bad ids, conflicting keys.
    let (st, body) = get_json(&c, format!("{}/runs/{}", base(&s), support::unique("nope"))).await;
    assert_eq!(st, 404, "{store}: {body}");
    assert_eq!(body["error"], "run_not_found");
    let (st, body, _) = chat(&c, &s, json!({"message": "x", "run_id": "bad id!"})).await;
    assert_eq!(st, 400, "{store}: {body}");
    assert_eq!(body["field"], "run_id");
    assert!(
        body["message"].as_str().unwrap().contains("run_id"),
        "{body}"
    );
    let (st, body) = get_json(&c, format!("{}/runs/{}", base(&s), "x".repeat(129))).await;
    assert_eq!(st, 400, "{store}: {body}");
    let r = c
        .post(format!("{}/chat", base(&s)))
        .header("Idempotency-Key", "key-a")
        .json(&json!({"message": "x", "run_id": "key-b"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "{store}: conflicting run ids");

    // A failing agent: 502, run recorded failed.
    let fail_id = support::unique("fail");
    let (st, body, _) = chat(&c, &s, json!({"message": "fail", "run_id": fail_id})).await;
    assert_eq!(st, 502, "{store}: {body}");
    assert_eq!(body["error"], "agent_bad_response");
    let (_, rec) = get_json(&c, format!("{}/runs/{fail_id}", base(&s))).await;
    assert_eq!(rec["status"], "failed", "{store}: {rec}");
    assert!(
        rec["error"]
            .as_str()
            .unwrap()
            .contains("agent_bad_response"),
        "{rec}"
    );

    // Streaming records the run too.
    let stream_id = support::unique("stream");
    let r = c
        .post(format!("{}/chat/stream", base(&s)))
        .json(&json!({"message": "streamed", "run_id": stream_id}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(
        text.contains("upstream: streamed") && text.contains("event: done"),
        "{text}"
    );
    let (_, rec) = get_json(&c, format!("{}/runs/{stream_id}", base(&s))).await;
    assert_eq!(rec["status"], "completed", "{store}: {rec}");

    let m = s.metrics();
    assert_eq!(m["runs"]["replayed"], 5, "{store}: {m}");
    assert_eq!(m["runs"]["failed"], 1, "{store}: {m}");
    assert_eq!(m["runs"]["completed"], 3, "{store}: {m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn durable_runs_over_http_memory() {
    durable_run_suite("memory", &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn durable_runs_over_http_redis() {
    let Some(url) = support::redis_url("durable_runs_over_http_redis") else {
        return;
    };
    durable_run_suite("redis", &[("REDIS_URL", &url)]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn durable_runs_over_http_postgres() {
    let Some(url) = support::database_url("durable_runs_over_http_postgres") else {
        return;
    };
    durable_run_suite("postgres", &[("DATABASE_URL", &url)]).await;
}

/// `--run-stale-after` of the takeover tests, seconds; longer than [`SLOW_ECHO_MS`].
const STALE_AFTER: &str = "4";
const STALE_AFTER_SECS: Duration = Duration::from_secs(4);
/// Echo delay of the process whose run stalls.
const SLOW_ECHO_MS: &str = "3000";

/// A run begun on process A stalls (A is SIGKILLed, or SIGSTOPped when `freeze`); process B,
/// on the same store, answers retries of the run id with 409 until the run is older than
/// `--run-stale-after`, then takes it over and completes it as attempt 2. A frozen A that wakes
/// up afterwards gets its completion refused: its client gets 409 `run_superseded` and the
/// record stays B's.
async fn stalled_run_is_taken_over(store: &str, env: &[(&str, &str)], freeze: bool) {
    let (id_a, id_b) = (instance("sa"), instance("sb"));
    let mut env_a = env.to_vec();
    env_a.push(("FASTAGENTIC_RUN_STALE_AFTER", STALE_AFTER));
    // Below the stale-after, as the runtime requires, and above the echo delay, which it
    // bounds: the run is slow, not timed out.
    env_a.push(("FASTAGENTIC_AGENT_TIMEOUT", "3.5"));
    env_a.push(("FASTAGENTIC_ECHO_DELAY_MS", SLOW_ECHO_MS));
    let mut a = Server::start(&["--durable-store", store, "--instance-id", &id_a], &env_a);
    let c = client();
    let rid = support::unique("stalled");

    let begun = Instant::now();
    let first = {
        let (c, url, rid) = (c.clone(), format!("{}/chat", base(&a)), rid.clone());
        tokio::spawn(async move {
            let r = c
                .post(url)
                .json(&json!({"message": "first try", "run_id": rid}))
                .send()
                .await?;
            let status = r.status().as_u16();
            Ok::<_, reqwest::Error>((status, r.json::<Value>().await.unwrap_or_default()))
        })
    };
    let running = poll(Duration::from_secs(10), || {
        let r = runtime_support::get(a.port, &format!("/runs/{rid}")).ok()?;
        (r.status == 200 && r.json()["status"] == "running").then_some(())
    });
    assert!(running.is_some(), "{store}: the run must be running on A");
    if freeze {
        a.signal(Signal::SIGSTOP);
    } else {
        a.signal(Signal::SIGKILL);
        assert!(a.wait_exit(Duration::from_secs(10)).is_some(), "A must die");
    }

    let mut env_b = env.to_vec();
    env_b.push(("FASTAGENTIC_RUN_STALE_AFTER", STALE_AFTER));
    env_b.push(("FASTAGENTIC_AGENT_TIMEOUT", "2"));
    let b = Server::start(&["--durable-store", store, "--instance-id", &id_b], &env_b);
    let retry = json!({"message": "second try", "run_id": rid});
    let (st, busy, _) = chat(&c, &b, retry.clone()).await;
    assert!(
        begun.elapsed() < STALE_AFTER_SECS,
        "{store}: too slow to check the 409 before the threshold ({:?})",
        begun.elapsed()
    );
    assert_eq!(st, 409, "{store}: before the threshold: {busy}");
    assert_eq!(busy["error"], "run_in_progress", "{store}: {busy}");
    assert_eq!(busy["run"]["instance_id"], id_a.as_str(), "{store}: {busy}");

    // Retry until B takes the run over.
    let answer = loop {
        let (st, body, headers) = chat(&c, &b, retry.clone()).await;
        if st != 409 {
            break (st, body, headers, begun.elapsed());
        }
        assert!(
            begun.elapsed() < STALE_AFTER_SECS + Duration::from_secs(20),
            "{store}: never taken over: {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let (st, body, headers, after) = answer;
    assert_eq!(st, 200, "{store}: after the threshold: {body}");
    assert!(
        after >= STALE_AFTER_SECS,
        "{store}: taken over after {after:?}, before the threshold"
    );
    assert_eq!(body["output"], "second try", "{store}: {body}");
    assert_eq!(body["replayed"], false, "{store}: {body}");
    assert_eq!(body["instance_id"], id_b.as_str(), "{store}: {body}");
    assert_eq!(
        headers.get("x-fastagentic-instance").map(|v| v.as_bytes()),
        Some(id_b.as_bytes())
    );
    let (st, rec) = get_json(&c, format!("{}/runs/{rid}", base(&b))).await;
    assert_eq!(st, 200, "{store}: {rec}");
    assert_eq!(rec["status"], "completed", "{store}: {rec}");
    assert_eq!(rec["attempts"], 2, "{store}: {rec}");
    assert_eq!(rec["instance_id"], id_b.as_str(), "{store}: {rec}");
    assert_eq!(rec["output"]["output"], "second try", "{store}: {rec}");

    let m = b.metrics();
    assert_eq!(m["runs"]["taken_over"], 1, "{store}: {m}");
    assert_eq!(m["runs"]["started"], 1, "{store}: {m}");
    assert_eq!(m["runs"]["completed"], 1, "{store}: {m}");
    let prom =
        runtime_support::request(b.port, "GET", "/metrics", &[("Accept", "text/plain")], None)
            .unwrap()
            .text();
    assert!(
        prom.contains("fastagentic_runs_total{event=\"taken_over\"} 1"),
        "{prom}"
    );
    let events = poll(Duration::from_secs(5), || {
        let e = b.events("run_taken_over");
        (!e.is_empty()).then_some(e)
    })
    .unwrap_or_default();
    assert_eq!(events.len(), 1, "{store}: {:?}", b.log_lines());
    let e = &events[0];
    assert_eq!(e["level"], "WARN", "{e}");
    assert_eq!(e["run_id"], rid.as_str(), "{e}");
    assert_eq!(e["previous_instance_id"], id_a.as_str(), "{e}");
    assert_eq!(e["previous_attempts"], 1, "{e}");

    if freeze {
        // A wakes up and finishes its (superseded) attempt.
        a.signal(Signal::SIGCONT);
        let (st, body) = first.await.unwrap().expect("A answers its client");
        assert_eq!(st, 409, "{store}: {body}");
        assert_eq!(body["error"], "run_superseded", "{store}: {body}");
        assert_eq!(body["attempt"], 1, "{store}: {body}");
        assert!(
            body["message"].as_str().is_some_and(
                |m| m.contains("taken over by another attempt") && m.contains("stalled")
            ),
            "{store}: {body}"
        );
        let refused = poll(Duration::from_secs(5), || {
            let e = a.events("run_superseded");
            (!e.is_empty()).then_some(e)
        });
        assert!(refused.is_some(), "{store}: {:?}", a.log_lines());
        assert_eq!(a.metrics()["runs"]["completed"], 0);
        let (_, unchanged) = get_json(&c, format!("{}/runs/{rid}", base(&b))).await;
        assert_eq!(
            unchanged, rec,
            "{store}: the superseded attempt changed nothing"
        );
    } else {
        assert!(
            first.await.unwrap().is_err(),
            "{store}: A's client loses its connection"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_run_is_taken_over_after_the_threshold_redis() {
    let Some(url) = support::redis_url("a_killed_run_is_taken_over_after_the_threshold_redis")
    else {
        return;
    };
    stalled_run_is_taken_over("redis", &[("REDIS_URL", &url)], false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_run_is_taken_over_after_the_threshold_postgres() {
    let test = "a_killed_run_is_taken_over_after_the_threshold_postgres";
    let Some(url) = support::database_url(test) else {
        return;
    };
    stalled_run_is_taken_over("postgres", &[("DATABASE_URL", &url)], false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_frozen_attempt_that_wakes_up_is_refused_with_409_redis() {
    let test = "a_frozen_attempt_that_wakes_up_is_refused_with_409_redis";
    let Some(url) = support::redis_url(test) else {
        return;
    };
    stalled_run_is_taken_over("redis", &[("REDIS_URL", &url)], true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_frozen_attempt_that_wakes_up_is_refused_with_409_postgres() {
    let test = "a_frozen_attempt_that_wakes_up_is_refused_with_409_postgres";
    let Some(url) = support::database_url(test) else {
        return;
    };
    stalled_run_is_taken_over("postgres", &[("DATABASE_URL", &url)], true).await;
}

/// `--run-stale-after` of the long-stream tests, seconds; the stream lasts [`LONG_STREAM`].
const SHORT_STALE_AFTER: &str = "2";
const SHORT_STALE_AFTER_SECS: Duration = Duration::from_secs(2);
/// Chunks of the long stream and the pause before each: 5 s in all, under the agent timeout
/// (1 s) between chunks.
const LONG_STREAM_CHUNKS: usize = 10;
const LONG_STREAM_PAUSE: Duration = Duration::from_millis(500);
const LONG_STREAM: Duration = Duration::from_secs(5);

/// An OpenAI-compatible upstream that streams [`LONG_STREAM_CHUNKS`] chunks `c0 `, `c1 `, ...
/// with [`LONG_STREAM_PAUSE`] before each, counting calls.
async fn slow_streaming_upstream() -> (String, Arc<AtomicU64>) {
    let calls = Arc::new(AtomicU64::new(0));
    let counter = calls.clone();
    let app = Router::new().route(
        "/v1/chat/completions",
        post(move || {
            let counter = counter.clone();
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
                let events = (0..LONG_STREAM_CHUNKS)
                    .map(|i| {
                        json!({"choices": [{"delta": {"content": format!("c{i} ")}}]}).to_string()
                    })
                    .chain(["[DONE]".to_owned()]);
                let stream = futures::stream::iter(events).then(|e| async move {
                    if e != "[DONE]" {
                        tokio::time::sleep(LONG_STREAM_PAUSE).await;
                    }
                    Ok::<_, std::convert::Infallible>(format!("data: {e}\n\n"))
                });
                (
                    [(axum::http::header::CONTENT_TYPE, "text/event-stream")],
                    axum::body::Body::from_stream(stream),
                )
                    .into_response()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/v1"), calls)
}

/// A streamed run that lasts longer than `--run-stale-after` (chunks every 0.5 s for 5 s, the
/// stale-after 2 s) is kept by its heartbeats: requests with its run id, on its own process and
/// (for a shared store) on another one, get 409 `run_in_progress` all along, and it completes as
/// attempt 1 with every chunk.
async fn a_long_stream_is_not_taken_over(store: &str, env: &[(&str, &str)]) {
    let (upstream, calls) = slow_streaming_upstream().await;
    let mut env = env.to_vec();
    env.extend([
        ("FASTAGENTIC_AGENT", "openai"),
        ("OPENAI_BASE_URL", upstream.as_str()),
        ("FASTAGENTIC_RUN_STALE_AFTER", SHORT_STALE_AFTER),
        ("FASTAGENTIC_AGENT_TIMEOUT", "1"),
    ]);
    let (id_a, id_b) = (instance("la"), instance("lb"));
    let a = Server::start(&["--durable-store", store, "--instance-id", &id_a], &env);
    // Another process on the same store, as another pod would be (the memory store is not
    // shared, so there only the run's own process is asked).
    let b = (store != "memory")
        .then(|| Server::start(&["--durable-store", store, "--instance-id", &id_b], &env));
    let c = client();
    let rid = support::unique("long");

    let begun = Instant::now();
    let r = c
        .post(format!("{}/chat/stream", base(&a)))
        .json(&json!({"message": "a long answer", "run_id": rid}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{store}");
    let reader = tokio::spawn(async move {
        let mut body = r.bytes_stream();
        let mut text = String::new();
        let mut arrivals = Vec::new();
        while let Some(bytes) = body.next().await {
            let bytes = bytes.expect("the stream is read to its end");
            text.push_str(&String::from_utf8_lossy(&bytes));
            arrivals.push(begun.elapsed());
        }
        (text, arrivals)
    });

    // Past the stale-after, and until the stream ends: the run stays attempt 1's.
    tokio::time::sleep(SHORT_STALE_AFTER_SECS + Duration::from_millis(500)).await;
    let retry = json!({"message": "a long answer", "run_id": rid});
    let mut checked = 0;
    while begun.elapsed() < LONG_STREAM - Duration::from_millis(700) {
        let servers = std::iter::once(&a).chain(b.as_ref());
        for (s, path) in servers.flat_map(|s| [(s, "/chat/stream"), (s, "/chat")]) {
            let r = c
                .post(format!("{}{path}", base(s)))
                .json(&retry)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let body: Value = r.json().await.unwrap_or_default();
            assert_eq!(
                status,
                409,
                "{store}: {path} {:?} after the stream began (stale-after {SHORT_STALE_AFTER} s): {body}",
                begun.elapsed()
            );
            assert_eq!(body["error"], "run_in_progress", "{store}: {body}");
            assert_eq!(body["run"]["attempts"], 1, "{store}: {body}");
            assert_eq!(body["run"]["instance_id"], id_a.as_str(), "{store}: {body}");
            // The heartbeats are what keep it: its last update is recent, not its start.
            let time = |field: &str| {
                chrono::DateTime::parse_from_rfc3339(body["run"][field].as_str().unwrap()).unwrap()
            };
            let beat_age = time("updated_at") - time("created_at");
            assert!(
                beat_age >= chrono::Duration::milliseconds(500),
                "{store}: updated_at must follow the heartbeats: {body}"
            );
            checked += 1;
        }
        let (st, rec) = get_json(&c, format!("{}/runs/{rid}", base(&a))).await;
        assert_eq!(
            (st, rec["status"].as_str()),
            (200, Some("running")),
            "{store}: {rec}"
        );
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    assert!(
        checked >= 4,
        "{store}: only {checked} checks while the stream ran"
    );

    let (text, arrivals) = reader.await.unwrap();
    let took = begun.elapsed();
    let deltas: String = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|v| v["delta"].as_str().map(str::to_owned))
        .collect();
    let expected: String = (0..LONG_STREAM_CHUNKS).map(|i| format!("c{i} ")).collect();
    assert_eq!(deltas, expected, "{store}: {text}");
    assert!(text.contains("event: done"), "{store}: {text}");
    assert!(!text.contains("event: error"), "{store}: {text}");
    assert!(
        took >= LONG_STREAM - Duration::from_millis(200),
        "{store}: the stream took {took:?}"
    );
    // Chunks came as they were produced, not held back.
    let early = arrivals
        .iter()
        .filter(|t| **t < SHORT_STALE_AFTER_SECS)
        .count();
    assert!(early >= 2, "{store}: chunk arrivals {arrivals:?}");

    let (st, rec) = get_json(&c, format!("{}/runs/{rid}", base(&a))).await;
    assert_eq!(st, 200, "{store}: {rec}");
    assert_eq!(rec["status"], "completed", "{store}: {rec}");
    assert_eq!(rec["attempts"], 1, "{store}: {rec}");
    assert_eq!(rec["instance_id"], id_a.as_str(), "{store}: {rec}");
    assert_eq!(rec["output"]["output"], expected.as_str(), "{store}: {rec}");
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "{store}: the agent ran once"
    );

    for s in std::iter::once(&a).chain(b.as_ref()) {
        let m = s.metrics();
        assert_eq!(m["runs"]["taken_over"], 0, "{store}: {m}");
        for event in ["run_taken_over", "run_heartbeat_failed", "run_superseded"] {
            assert!(
                s.events(event).is_empty(),
                "{store}: {event}: {:?}",
                s.log_lines()
            );
        }
    }
    assert_eq!(a.metrics()["runs"]["completed"], 1, "{store}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stream_longer_than_the_stale_after_is_not_taken_over_memory() {
    a_long_stream_is_not_taken_over("memory", &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stream_longer_than_the_stale_after_is_not_taken_over_redis() {
    let test = "a_stream_longer_than_the_stale_after_is_not_taken_over_redis";
    let Some(url) = support::redis_url(test) else {
        return;
    };
    a_long_stream_is_not_taken_over("redis", &[("REDIS_URL", &url)]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stream_longer_than_the_stale_after_is_not_taken_over_postgres() {
    let test = "a_stream_longer_than_the_stale_after_is_not_taken_over_postgres";
    let Some(url) = support::database_url(test) else {
        return;
    };
    a_long_stream_is_not_taken_over("postgres", &[("DATABASE_URL", &url)]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_lets_ten_runs_in_flight_complete_and_be_stored() {
    let test = "sigterm_lets_ten_runs_in_flight_complete_and_be_stored";
    let Some(url) = support::database_url(test) else {
        return;
    };
    let mut s = Server::start(
        &["--durable-store", "postgres", "--workers", "2"],
        &[
            ("DATABASE_URL", &url),
            ("FASTAGENTIC_ECHO_DELAY_MS", "1500"),
        ],
    );
    let c = client();
    let ids: Vec<String> = (0..10)
        .map(|i| support::unique(&format!("term{i}")))
        .collect();
    let tasks: Vec<_> = ids
        .iter()
        .map(|id| {
            let (c, url, id) = (c.clone(), format!("{}/chat", base(&s)), id.clone());
            tokio::spawn(async move {
                let r = c
                    .post(url)
                    .json(&json!({"message": "m", "run_id": id}))
                    .send()
                    .await
                    .unwrap();
                (
                    r.status().as_u16(),
                    r.json::<Value>().await.unwrap_or_default(),
                )
            })
        })
        .collect();
    let in_flight = poll(Duration::from_secs(10), || {
        let m = s.metrics();
        (m["in_flight"] == 10).then_some(())
    });
    assert!(in_flight.is_some(), "10 runs must be in flight");
    s.signal(Signal::SIGTERM);
    for t in tasks {
        let (status, body) = t.await.unwrap();
        assert_eq!(status, 200, "{body}");
    }
    let exit = s
        .wait_exit(Duration::from_secs(30))
        .expect("exit after SIGTERM");
    assert!(exit.success(), "{exit:?}");
    let pg = sqlx::PgPool::connect(&url).await.unwrap();
    let statuses: Vec<String> =
        sqlx::query_scalar("SELECT status FROM fastagentic_runs WHERE run_id = ANY($1)")
            .bind(&ids)
            .fetch_all(&pg)
            .await
            .unwrap();
    assert_eq!(statuses.len(), 10, "{statuses:?}");
    assert!(statuses.iter().all(|s| s == "completed"), "{statuses:?}");
}
