//! Graceful shutdown against the real binary, in both process models: SIGTERM with slow
//! requests in flight, readiness, refused connections, the graceful timeout.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod runtime_support;

use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use runtime_support::*;

fn sigterm_with_5_slow_requests(extra: &[&str]) {
    let mut args = vec!["--echo-delay-ms", "3000", "--timeout-keep-alive", "30"];
    args.extend_from_slice(extra);
    let mut s = Server::start(&args, &[]);
    let port = s.port;
    // A kept-alive connection opened before the signal, to ask /ready afterwards.
    let mut probe = TcpStream::connect(("127.0.0.1", port)).unwrap();
    probe
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut probe_reader = BufReader::new(probe.try_clone().unwrap());
    probe
        .write_all(&build_request("GET", "/ready", &[], None, false))
        .unwrap();
    assert_eq!(read_response(&mut probe_reader, false).unwrap().status, 200);

    let slow: Vec<_> = (0..5)
        .map(|i| std::thread::spawn(move || chat(port, &format!("slow{i}"))))
        .collect();
    let in_flight = poll(Duration::from_secs(20), || {
        (s.metrics()["in_flight"].as_u64() == Some(5)).then_some(())
    });
    assert!(in_flight.is_some(), "5 requests never got in flight");

    let signalled = Instant::now();
    s.signal(Signal::SIGTERM);
    // /ready turns 503 at once (asked on the connection that was already open): within a
    // signal delivery (the supervisor forwards it in pre-fork mode), long before the
    // in-flight requests finish.
    let ready = poll(Duration::from_secs(1), || {
        probe
            .write_all(&build_request("GET", "/ready", &[], None, false))
            .ok()?;
        let r = read_response(&mut probe_reader, false).ok()?;
        (r.status == 503).then_some(r)
    })
    .expect("/ready did not turn 503 within 1 s of SIGTERM");
    assert_eq!(ready.json()["ready"], false);
    assert_eq!(ready.json()["checks"]["app"], false);
    // New connections are refused while the 5 are still running.
    let refused = poll(Duration::from_secs(2), || {
        match TcpStream::connect(("127.0.0.1", port)) {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Some(()),
            _ => None,
        }
    });
    assert!(
        refused.is_some(),
        "new connections still accepted after SIGTERM"
    );
    assert!(
        signalled.elapsed() < Duration::from_millis(2500),
        "refusal came only after the slow requests"
    );
    for h in slow {
        let r = h.join().unwrap().expect("in-flight request completes");
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let status = s
        .wait_exit(Duration::from_secs(30))
        .expect("exit within --timeout-graceful");
    assert_eq!(status.code(), Some(0));
    assert!(s.events("shutdown_cut").is_empty(), "nothing was cut");
}

#[test]
fn sigterm_single_process_completes_in_flight_refuses_new_and_exits_0() {
    sigterm_with_5_slow_requests(&[]);
}

#[test]
fn sigterm_gunicorn_completes_in_flight_refuses_new_and_exits_0() {
    sigterm_with_5_slow_requests(&["--server", "gunicorn", "--workers", "2"]);
}

fn graceful_timeout_cuts(extra: &[&str], limit: Duration) {
    let mut args = vec!["--echo-delay-ms", "20000", "--timeout-graceful", "1"];
    args.extend_from_slice(extra);
    let mut s = Server::start(&args, &[]);
    let port = s.port;
    let slow: Vec<_> = (0..2)
        .map(|_| std::thread::spawn(move || chat(port, "too slow")))
        .collect();
    let in_flight = poll(Duration::from_secs(20), || {
        (s.metrics()["in_flight"].as_u64() == Some(2)).then_some(())
    });
    assert!(in_flight.is_some());
    let signalled = Instant::now();
    s.signal(Signal::SIGTERM);
    let status = s.wait_exit(limit).expect("exits by the graceful timeout");
    let took = signalled.elapsed();
    assert!(
        took >= Duration::from_millis(900),
        "exited before the timeout: {took:?}"
    );
    assert!(took < limit, "{took:?}");
    assert_eq!(status.code(), Some(0));
    // What was cut is logged.
    let logged = poll(Duration::from_secs(5), || {
        (!s.events("shutdown_cut").is_empty()).then_some(())
    });
    assert!(logged.is_some(), "{:?}", s.log_lines());
    assert_eq!(s.events("request_cut").len(), 2, "{:?}", s.log_lines());
    for h in slow {
        assert!(
            h.join().unwrap().is_err(),
            "a cut request must not look successful"
        );
    }
}

#[test]
fn graceful_timeout_shorter_than_requests_single_process() {
    // The requests would take 20 s; the process is gone well before that.
    graceful_timeout_cuts(&[], Duration::from_secs(6));
}

#[test]
fn graceful_timeout_shorter_than_requests_gunicorn() {
    graceful_timeout_cuts(
        &["--server", "gunicorn", "--workers", "2"],
        Duration::from_secs(6),
    );
}
