//! The concurrency limit against the real binary: exactness, the seed's 503, probes that
//! bypass it, the max in-flight gauge.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod runtime_support;

use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use runtime_support::*;

/// Sends `n` `/chat` requests at once over connections opened beforehand; returns
/// `(response, latency)` of each.
fn burst(port: u16, n: usize) -> Vec<(Resp, Duration)> {
    let barrier = Arc::new(Barrier::new(n));
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let mut conn = TcpStream::connect(("127.0.0.1", port)).expect("connect");
            conn.set_read_timeout(Some(Duration::from_secs(60)))
                .unwrap();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let body = format!(r#"{{"message": "m{i}"}}"#);
                let req = build_request("POST", "/chat", &[], Some(body.as_bytes()), true);
                barrier.wait();
                let start = Instant::now();
                conn.write_all(&req).expect("send");
                let r = read_response(&mut BufReader::new(conn), false).expect("response");
                (r, start.elapsed())
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

#[test]
fn max_concurrent_5_gives_exactly_5_successes_per_window() {
    let s = Server::start(&["--max-concurrent", "5", "--echo-delay-ms", "300"], &[]);
    for window in 0..2 {
        let results = burst(s.port, 40);
        let ok: Vec<_> = results.iter().filter(|(r, _)| r.status == 200).collect();
        let rejected: Vec<_> = results.iter().filter(|(r, _)| r.status == 503).collect();
        assert_eq!(ok.len(), 5, "window {window}: successes");
        assert_eq!(rejected.len(), 35, "window {window}: rejections");
        for (r, latency) in &rejected {
            assert_eq!(r.header("retry-after"), Some("1"));
            assert_eq!(r.json(), seed_overload_body());
            // At once: never waiting for a permit (a permit frees only after 300 ms).
            assert!(
                *latency < Duration::from_millis(300),
                "503 took {latency:?}"
            );
        }
        for (r, latency) in &ok {
            assert!(*latency >= Duration::from_millis(290), "{latency:?}");
            assert!(r.json()["output"].as_str().unwrap().starts_with('m'));
        }
    }
    let m = s.metrics();
    assert_eq!(m["max_in_flight"], 5, "{m}");
    assert_eq!(m["rejected_total"], 70, "{m}");
    assert_eq!(m["requests"]["/chat"]["2xx"], 10, "{m}");
    assert_eq!(m["requests"]["/chat"]["5xx"], 70, "{m}");
    assert_eq!(m["errors_total"], 0, "rejections are not errors: {m}");
}

#[test]
fn probes_bypass_the_limit_while_saturated() {
    let s = Server::start(&["--max-concurrent", "5", "--echo-delay-ms", "4000"], &[]);
    let port = s.port;
    let slow: Vec<_> = (0..5)
        .map(|i| std::thread::spawn(move || chat(port, &format!("slow{i}")).unwrap()))
        .collect();
    let saturated = poll(Duration::from_secs(20), || {
        (s.metrics()["in_flight"].as_u64() == Some(5)).then_some(())
    });
    assert!(saturated.is_some(), "5 requests never got in flight");
    for path in ["/health", "/ready", "/metrics"] {
        let r = get(port, path).unwrap();
        assert_eq!(r.status, 200, "{path} while saturated");
    }
    assert_eq!(chat(port, "one too many").unwrap().status, 503);
    for h in slow {
        assert_eq!(h.join().unwrap().status, 200);
    }
    let m = s.metrics();
    assert_eq!(m["max_in_flight"], 5, "{m}");
}

#[test]
fn no_limit_without_the_option() {
    let s = Server::start(&["--echo-delay-ms", "300"], &[]);
    let results = burst(s.port, 20);
    assert!(results.iter().all(|(r, _)| r.status == 200));
    assert_eq!(
        s.metrics()["config"]["max_concurrent"],
        serde_json::Value::Null
    );
}
