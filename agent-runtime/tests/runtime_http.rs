//! The HTTP contract against the real binary: probe shapes, the instance header on every
//! kind of response, JSON errors, body limit, panics, Prometheus text, logs, keep-alive.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod runtime_support;

use std::io::{BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use runtime_support::*;

const ID: &str = "http-test-1";
const HEADER: &str = "x-fastagentic-instance";

fn assert_keys(v: &serde_json::Value, keys: &[&str]) {
    for k in keys {
        assert!(v.get(k).is_some(), "missing key {k} in {v}");
    }
}

#[test]
fn probes_have_the_seed_keys_and_the_instance_id() {
    let s = Server::start(&["--instance-id", ID, "--title", "My Agent"], &[]);
    let health = get(s.port, "/health").expect("health");
    assert_eq!(health.status, 200);
    let h = health.json();
    assert_keys(&h, &["status", "version", "title", "instance_id"]);
    assert_eq!(h["status"], "healthy");
    assert_eq!(h["title"], "My Agent");
    assert_eq!(h["instance_id"], ID);
    assert_eq!(health.header(HEADER), Some(ID));

    let ready = get(s.port, "/ready").expect("ready");
    assert_eq!(ready.status, 200);
    let r = ready.json();
    assert_keys(&r, &["ready", "checks", "instance_id"]);
    assert_eq!(r["ready"], true);
    assert_eq!(r["checks"]["app"], true);
    assert_eq!(r["checks"]["durable_store"], true);
    assert_eq!(r["instance_id"], ID);
    assert_eq!(ready.header(HEADER), Some(ID));

    let metrics = get(s.port, "/metrics").expect("metrics");
    assert_eq!(metrics.status, 200);
    let m = metrics.json();
    assert_keys(
        &m,
        &[
            "instance_id",
            "version",
            "config",
            "requests_total",
            "errors_total",
            "in_flight",
            "rejected_total",
            "max_in_flight",
        ],
    );
    assert_eq!(m["instance_id"], ID);
    assert_eq!(m["version"], h["version"]);
    assert_eq!(m["config"]["port"], s.port);
    assert_eq!(metrics.header(HEADER), Some(ID));

    for path in ["/health", "/ready"] {
        let head = request(s.port, "HEAD", path, &[], None).expect("HEAD");
        assert_eq!(head.status, 200, "HEAD {path}");
        assert_eq!(head.header(HEADER), Some(ID), "HEAD {path}");
        assert!(head.body.is_empty());
    }
}

#[test]
fn instance_header_and_json_body_on_every_kind_of_response() {
    let mut s = Server::start(
        &[
            "--instance-id",
            ID,
            "--max-body-size",
            "1000",
            "--max-concurrent",
            "1",
            "--echo-delay-ms",
            "1500",
            "--enable-test-routes",
        ],
        &[],
    );
    let check = |r: &Resp, status: u16, what: &str| {
        assert_eq!(r.status, status, "{what}: {}", r.text());
        assert_eq!(r.header(HEADER), Some(ID), "{what}");
        assert!(
            r.header("content-type")
                .is_some_and(|c| c.starts_with("application/json")),
            "{what}: {:?}",
            r.headers
        );
        assert!(r.json().get("error").is_some(), "{what}: {}", r.text());
    };
    check(&get(s.port, "/no/such/route").unwrap(), 404, "404");
    check(&get(s.port, "/chat").unwrap(), 405, "405");
    check(
        &request(s.port, "DELETE", "/health", &[], None).unwrap(),
        405,
        "405 on a probe",
    );
    check(
        &request(s.port, "POST", "/chat", &[], Some(b"{not json")).unwrap(),
        400,
        "400",
    );
    // 413: declared length over the limit (answered without reading the body) ...
    let big = vec![b'x'; 5000];
    check(
        &request(s.port, "POST", "/chat", &[], Some(&big)).unwrap(),
        413,
        "413 content-length",
    );
    // ... and a chunked body that grows over it.
    {
        let mut c = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut req = b"POST /chat HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\n".to_vec();
        for _ in 0..3 {
            req.extend_from_slice(b"258\r\n");
            req.extend_from_slice(&[b' '; 0x258]);
            req.extend_from_slice(b"\r\n");
        }
        req.extend_from_slice(b"0\r\n\r\n");
        let _ = c.write_all(&req);
        let r = read_response(&mut BufReader::new(c), false).unwrap();
        check(&r, 413, "413 chunked");
    }
    // 500 from a panicking handler; the process survives.
    check(
        &request(s.port, "POST", "/__test/panic", &[], Some(b"{}")).unwrap(),
        500,
        "500",
    );
    assert_eq!(
        get(s.port, "/health").unwrap().status,
        200,
        "alive after panic"
    );
    assert!(
        s.try_exit().is_none(),
        "the process must survive a handler panic"
    );
    // 503 from the concurrency limit.
    let port = s.port;
    let slow = std::thread::spawn(move || chat(port, "slow").unwrap());
    let saturated = poll(Duration::from_secs(20), || {
        (s.metrics()["in_flight"].as_u64() == Some(1)).then_some(())
    });
    assert!(saturated.is_some(), "the slow request never started");
    let r = chat(s.port, "rejected").unwrap();
    check(&r, 503, "503");
    assert_eq!(r.json(), seed_overload_body());
    assert_eq!(r.header("retry-after"), Some("1"));
    let ok = slow.join().unwrap();
    assert_eq!(ok.status, 200);
    assert_eq!(ok.header(HEADER), Some(ID));
    assert_eq!(ok.json()["output"], "slow");
}

#[test]
fn prometheus_text_when_asked() {
    let s = Server::start(&["--instance-id", ID], &[]);
    assert_eq!(chat(s.port, "hello").unwrap().status, 200);
    let r = request(s.port, "GET", "/metrics", &[("Accept", "text/plain")], None).unwrap();
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().starts_with("text/plain"));
    assert_eq!(r.header(HEADER), Some(ID));
    let text = r.text();
    assert!(
        text.contains(r#"fastagentic_http_requests_total{path="/chat",class="2xx"} 1"#),
        "{text}"
    );
    assert!(text.contains("fastagentic_http_max_in_flight"), "{text}");
    assert!(text.contains("fastagentic_http_rejected_total"), "{text}");
    assert!(
        text.contains("fastagentic_http_request_duration_seconds_bucket"),
        "{text}"
    );
    let r = request(
        s.port,
        "GET",
        "/metrics",
        &[("Accept", "application/openmetrics-text; version=1.0.0")],
        None,
    )
    .unwrap();
    assert!(
        r.header("content-type")
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    assert!(r.text().trim_end().ends_with("# EOF"), "{}", r.text());
    // Default stays JSON.
    assert!(get(s.port, "/metrics").unwrap().json().is_object());
}

#[test]
fn json_logs_with_request_startup_and_shutdown_events() {
    let mut s = Server::start(&["--instance-id", ID], &[]);
    assert_eq!(chat(s.port, "log me").unwrap().status, 200);
    assert_eq!(get(s.port, "/nope").unwrap().status, 404);
    let found = poll(Duration::from_secs(10), || {
        let ev = s.events("request_completed");
        ev.iter()
            .find(|e| e["path"] == "/chat")
            .cloned()
            .zip(ev.iter().find(|e| e["path"] == "/nope").cloned())
    });
    let (chat_ev, nope_ev) = found.expect("request_completed events for /chat and /nope");
    for (e, status) in [(&chat_ev, 200), (&nope_ev, 404)] {
        assert_eq!(e["instance_id"], ID, "{e}");
        assert_eq!(e["status"], status, "{e}");
        assert!(e["method"].is_string(), "{e}");
        assert!(e["duration_ms"].as_f64().is_some(), "{e}");
        let decimals = e["duration_ms"]
            .to_string()
            .split('.')
            .nth(1)
            .map_or(0, str::len);
        assert!(decimals <= 3, "duration_ms in whole microseconds: {e}");
    }
    assert_eq!(chat_ev["method"], "POST");
    assert!(!s.events("startup").is_empty(), "startup event");
    s.signal(Signal::SIGTERM);
    assert!(s.wait_exit(Duration::from_secs(30)).is_some());
    let shutdown = poll(Duration::from_secs(5), || {
        (!s.events("shutdown_complete").is_empty()).then_some(())
    });
    assert!(shutdown.is_some(), "{:?}", s.log_lines());
    assert!(!s.events("shutdown_started").is_empty());
    // Every stdout line is JSON.
    for line in s.log_lines() {
        assert!(
            serde_json::from_str::<serde_json::Value>(&line).is_ok(),
            "not JSON: {line}"
        );
    }
}

#[test]
fn idle_keep_alive_connection_is_closed_after_the_timeout() {
    let s = Server::start(&["--timeout-keep-alive", "1"], &[]);
    let mut c = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    c.write_all(&build_request("GET", "/health", &[], None, false))
        .unwrap();
    let mut reader = BufReader::new(c.try_clone().unwrap());
    let r = read_response(&mut reader, false).unwrap();
    assert_eq!(r.status, 200);
    // A second request on the same connection works (keep-alive) ...
    c.write_all(&build_request("GET", "/health", &[], None, false))
        .unwrap();
    assert_eq!(read_response(&mut reader, false).unwrap().status, 200);
    // ... then the idle connection is closed by the server.
    let idle_start = Instant::now();
    let mut buf = [0u8; 16];
    let n = reader.read(&mut buf).unwrap_or(0);
    let idle = idle_start.elapsed();
    assert_eq!(n, 0, "expected EOF from the server");
    assert!(
        idle >= Duration::from_millis(800),
        "closed too early: {idle:?}"
    );
    assert!(idle < Duration::from_secs(20), "closed too late: {idle:?}");
}

#[test]
fn a_request_longer_than_the_keep_alive_timeout_is_not_cut() {
    // The connection is busy for 2.5 s with a 1 s keep-alive timeout: the idle timer fires
    // twice while the request runs and must leave it alone; the idle time counts from its end.
    let s = Server::start(
        &["--timeout-keep-alive", "1", "--echo-delay-ms", "2500"],
        &[],
    );
    let mut c = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let started = Instant::now();
    c.write_all(&build_request(
        "POST",
        "/chat",
        &[],
        Some(br#"{"message": "slow"}"#),
        false,
    ))
    .unwrap();
    let mut reader = BufReader::new(c.try_clone().unwrap());
    let r = read_response(&mut reader, false).unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert!(started.elapsed() >= Duration::from_millis(2500));
    let answered = Instant::now();
    let mut buf = [0u8; 16];
    let n = reader.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "expected EOF from the server");
    let idle = answered.elapsed();
    assert!(
        idle >= Duration::from_millis(800),
        "closed too early after the answer: {idle:?}"
    );
    assert!(idle < Duration::from_secs(5), "closed too late: {idle:?}");
}

#[test]
fn concurrency_permit_is_held_until_a_stream_ends() {
    let s = Server::start(&["--max-concurrent", "1", "--echo-delay-ms", "2000"], &[]);
    let mut c = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let body = br#"{"message": "one two three four"}"#;
    c.write_all(&build_request(
        "POST",
        "/chat/stream",
        &[],
        Some(body),
        true,
    ))
    .unwrap();
    // The stream has started (headers and a first event arrive) ...
    let mut reader = BufReader::new(c);
    let mut first = String::new();
    std::io::BufRead::read_line(&mut reader, &mut first).unwrap();
    assert!(first.contains("200"), "{first}");
    // ... and while it runs, the permit is taken.
    let r = chat(s.port, "blocked").unwrap();
    assert_eq!(r.status, 503, "{}", r.text());
    // Read the stream to its end: all words and the done event.
    let mut rest = String::new();
    reader.read_to_string(&mut rest).unwrap();
    for w in ["one", "two", "three", "four", "event: done"] {
        assert!(rest.contains(w), "{rest}");
    }
    // The permit is free again.
    let ok = poll(Duration::from_secs(10), || {
        let r = chat(s.port, "after").ok()?;
        (r.status == 200).then_some(r)
    });
    assert!(ok.is_some(), "permit not released after the stream ended");
}
