//! The pre-fork (`--server gunicorn`) process model against the real binary: worker
//! processes, replacement of a killed worker, SIGHUP rolling restart and `--max-requests`
//! recycling with zero failed requests, pod-wide metrics.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod runtime_support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use runtime_support::*;

fn wait_children(s: &Server, n: usize) -> Vec<i32> {
    poll(Duration::from_secs(20), || {
        let c = s.children();
        (c.len() == n).then_some(c)
    })
    .unwrap_or_else(|| panic!("expected {n} workers, have {:?}", s.children()))
}

fn cmdline(pid: i32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

/// Steady load: `threads` clients sending `/chat` until stopped; returns (ok, failures).
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    errors: Arc<std::sync::Mutex<Vec<String>>>,
    handles: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    /// `threads` clients with a new connection per request, plus one keep-alive client that
    /// reconnects only when the server says `Connection: close`.
    fn start(port: u16, threads: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let errors = Arc::new(std::sync::Mutex::new(Vec::new()));
        let handles = (0..threads)
            .map(|_| {
                let (stop, ok, failed, errors) =
                    (stop.clone(), ok.clone(), failed.clone(), errors.clone());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        match chat(port, "load") {
                            Ok(r) if r.status == 200 => {
                                ok.fetch_add(1, Ordering::Relaxed);
                            }
                            other => {
                                failed.fetch_add(1, Ordering::Relaxed);
                                errors.lock().unwrap().push(format!("{other:?}"));
                            }
                        }
                    }
                })
            })
            .chain(std::iter::once({
                let (stop, ok, failed, errors) =
                    (stop.clone(), ok.clone(), failed.clone(), errors.clone());
                std::thread::spawn(move || keep_alive_client(port, &stop, &ok, &failed, &errors))
            }))
            .collect();
        Load {
            stop,
            ok,
            failed,
            errors,
            handles,
        }
    }

    fn finish(self) -> (u64, u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for h in self.handles {
            h.join().unwrap();
        }
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
            self.errors.lock().unwrap().clone(),
        )
    }
}

fn keep_alive_client(
    port: u16,
    stop: &AtomicBool,
    ok: &AtomicU64,
    failed: &AtomicU64,
    errors: &std::sync::Mutex<Vec<String>>,
) {
    use std::io::{BufReader, Write};
    let body = br#"{"message": "keep-alive"}"#;
    let req = build_request("POST", "/chat", &[], Some(body), false);
    let mut conn: Option<(std::net::TcpStream, BufReader<std::net::TcpStream>)> = None;
    while !stop.load(Ordering::Relaxed) {
        if conn.is_none() {
            let c = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
            let r = BufReader::new(c.try_clone().expect("clone"));
            conn = Some((c, r));
        }
        let Some((c, r)) = conn.as_mut() else {
            continue;
        };
        let res = c.write_all(&req).and_then(|()| read_response(r, false));
        match res {
            Ok(resp) if resp.status == 200 => {
                ok.fetch_add(1, Ordering::Relaxed);
                if resp
                    .header("connection")
                    .is_some_and(|v| v.eq_ignore_ascii_case("close"))
                {
                    conn = None;
                }
            }
            other => {
                failed.fetch_add(1, Ordering::Relaxed);
                errors
                    .lock()
                    .unwrap()
                    .push(format!("keep-alive: {other:?}"));
                conn = None;
            }
        }
    }
}

#[test]
fn three_workers_and_a_killed_worker_is_replaced_within_2s() {
    let s = Server::start(&["--server", "gunicorn", "--workers", "3"], &[]);
    let workers = wait_children(&s, 3);
    for w in &workers {
        assert!(cmdline(*w).contains("worker"), "{}", cmdline(*w));
    }
    // /metrics sees the same three processes.
    let seen: BTreeSet<i64> = poll(Duration::from_secs(10), || {
        let m = s.metrics();
        let pids: BTreeSet<i64> = m["workers"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|w| w["state"] == "ready")
            .map(|w| w["pid"].as_i64().unwrap())
            .collect();
        (pids.len() == 3).then_some(pids)
    })
    .expect("three ready workers in /metrics");
    let expected: BTreeSet<i64> = workers.iter().map(|p| i64::from(*p)).collect();
    assert_eq!(seen, expected);

    let victim = workers[1];
    let killed_at = Instant::now();
    kill(Pid::from_raw(victim), Signal::SIGKILL).unwrap();
    let replaced = poll(Duration::from_secs(2), || {
        let c = s.children();
        (c.len() == 3 && !c.contains(&victim)).then_some(c)
    });
    let elapsed = killed_at.elapsed();
    let now = replaced.unwrap_or_else(|| panic!("not replaced within 2 s: {:?}", s.children()));
    assert!(elapsed <= Duration::from_millis(2100), "{elapsed:?}");
    let new: Vec<_> = now.iter().filter(|p| !workers.contains(p)).collect();
    assert_eq!(new.len(), 1, "exactly one new worker: {now:?}");
    // The server keeps answering.
    for _ in 0..20 {
        assert_eq!(chat(s.port, "still here").unwrap().status, 200);
    }
}

#[test]
fn sighup_replaces_all_workers_with_zero_failed_requests_under_load() {
    let s = Server::start(&["--server", "gunicorn", "--workers", "3"], &[]);
    let before = wait_children(&s, 3);
    let load = Load::start(s.port, 4);
    std::thread::sleep(Duration::from_millis(500));
    s.signal(Signal::SIGHUP);
    let after = poll(Duration::from_secs(60), || {
        let c = s.children();
        (c.len() == 3 && c.iter().all(|p| !before.contains(p))).then_some(c)
    });
    std::thread::sleep(Duration::from_millis(500));
    let (ok, failed, errors) = load.finish();
    assert!(
        after.is_some(),
        "workers not all replaced: before {before:?} now {:?}",
        s.children()
    );
    assert_eq!(failed, 0, "failed requests during SIGHUP: {errors:?}");
    assert!(ok > 50, "load too small to mean anything: {ok}");
    assert_eq!(s.events("worker_replaced").len(), 3);
}

#[test]
fn max_requests_recycles_workers_with_zero_failures_and_metrics_count_all() {
    let s = Server::start(
        &[
            "--server",
            "gunicorn",
            "--workers",
            "2",
            "--max-requests",
            "50",
            "--max-requests-jitter",
            "10",
        ],
        &[],
    );
    let before = wait_children(&s, 2);
    let sent = Arc::new(AtomicU64::new(0));
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let port = s.port;
            let sent = sent.clone();
            std::thread::spawn(move || {
                let mut failures = Vec::new();
                while sent.fetch_add(1, Ordering::SeqCst) < 500 {
                    match chat(port, "recycle") {
                        Ok(r) if r.status == 200 => {}
                        other => failures.push(format!("{other:?}")),
                    }
                }
                failures
            })
        })
        .collect();
    let failures: Vec<String> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    assert!(failures.is_empty(), "failed requests: {failures:?}");
    // Workers were recycled: none of the first two serves any more.
    let recycled = poll(Duration::from_secs(30), || {
        let c = s.children();
        (c.len() == 2 && c.iter().all(|p| !before.contains(p))).then_some(c)
    });
    assert!(
        recycled.is_some(),
        "before {before:?} now {:?}",
        s.children()
    );
    assert!(s.events("worker_recycle_requested").len() >= 2);
    // Whichever worker answers, /metrics counts the whole pod: all 500.
    for _ in 0..10 {
        let m = s.metrics();
        assert_eq!(m["scope"], "pod");
        assert_eq!(m["requests"]["/chat"]["2xx"], 500, "{m}");
    }
}

#[test]
fn a_burst_of_connections_is_shared_between_the_workers() {
    let s = Server::start(&["--server", "gunicorn", "--workers", "2"], &[]);
    wait_children(&s, 2);
    poll(Duration::from_secs(20), || {
        (s.metrics()["accepting_workers"] == 2).then_some(())
    })
    .expect("both workers accepting");
    // All connect at once (the kernel completes them before any worker accepts), then each
    // sends a request and keeps its connection open.
    const CONNS: u64 = 40;
    let conns: Vec<std::net::TcpStream> = (0..CONNS)
        .map(|_| std::net::TcpStream::connect(("127.0.0.1", s.port)).expect("connect"))
        .collect();
    let req = build_request("GET", "/health", &[], None, false);
    for c in &conns {
        use std::io::Write;
        (&*c).write_all(&req).expect("send");
        let resp = read_response(&mut std::io::BufReader::new(c), false).expect("response");
        assert_eq!(resp.status, 200);
    }
    let m = s.metrics();
    let open: Vec<u64> = m["workers"]
        .as_array()
        .expect("workers")
        .iter()
        .map(|w| w["connections"].as_u64().expect("connections"))
        .collect();
    assert_eq!(open.len(), 2, "{m}");
    assert!(
        open.iter().sum::<u64>() >= CONNS,
        "every connection is counted (and the scrape's own): {open:?}"
    );
    assert!(
        open.iter().all(|&n| n >= CONNS * 3 / 10),
        "each worker holds at least 30% of {CONNS} connections: {open:?}"
    );
    drop(conns);
}

#[test]
fn workers_from_the_environment() {
    let s = Server::start(
        &[],
        &[
            ("FASTAGENTIC_SERVER", "gunicorn"),
            ("FASTAGENTIC_WORKERS", "2"),
        ],
    );
    let workers = wait_children(&s, 2);
    assert_eq!(workers.len(), 2);
    // Every worker reports the pod's instance id.
    let id = get(s.port, "/health").unwrap().json()["instance_id"].clone();
    assert!(
        id.as_str().unwrap().ends_with(&format!("-{}", s.pid())),
        "{id}"
    );
}
