//! `GET /metrics` in both Prometheus formats, as the Prometheus project's own Python parser
//! (`prometheus_client`) reads it, from a pre-fork pod of 2 workers: both parse, the duration
//! histogram's buckets never decrease and end with `+Inf` equal to `_count`, and the pod-wide
//! counts add up to the requests sent whichever worker answered.
//!
//! The parser: `FASTAGENTIC_PROMETHEUS_PYTHON` (a Python with `prometheus_client`), else the
//! project's virtualenv (`~/.cache/fastagentic/venv`, which `scripts/test.sh` provides).

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod runtime_support;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use runtime_support::{Server, chat, request};
use serde_json::Value;

const PARSER: &str = include_str!("metrics_exposition.py");
const CHATS: usize = 40;
const HISTOGRAM: &str = "fastagentic_http_request_duration_seconds";

fn parser_python() -> Result<PathBuf, String> {
    let candidate = match std::env::var_os("FASTAGENTIC_PROMETHEUS_PYTHON") {
        Some(p) => PathBuf::from(p),
        None => {
            let venv = std::env::var_os("FASTAGENTIC_VENV").map_or_else(
                || {
                    PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                        .join(".cache/fastagentic/venv")
                },
                PathBuf::from,
            );
            venv.join("bin/python")
        }
    };
    let ok = Command::new(&candidate)
        .args(["-c", "import prometheus_client"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        Ok(candidate)
    } else {
        Err(format!(
            "{} cannot import prometheus_client (scripts/test.sh installs it; or set \
             FASTAGENTIC_PROMETHEUS_PYTHON)",
            candidate.display()
        ))
    }
}

fn parse(python: &PathBuf, format: &str, body: &str) -> BTreeMap<String, Value> {
    let mut child = Command::new(python)
        .args(["-c", PARSER, format])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running the parser");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "prometheus_client refuses the {format} exposition: {}\n--- body ---\n{body}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the parser's JSON")
}

/// `(sample name, labels, value)` of a family.
fn samples(families: &BTreeMap<String, Value>, family: &str) -> Vec<(String, Value, Value)> {
    families
        .get(family)
        .unwrap_or_else(|| panic!("no family {family} in {:?}", families.keys()))["samples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s[0].as_str().unwrap().to_string(),
                s[1].clone(),
                s[2].clone(),
            )
        })
        .collect()
}

#[test]
fn both_formats_parse_with_prometheus_client_and_the_histogram_holds() {
    let python = match parser_python() {
        Ok(p) => p,
        Err(why) => {
            assert!(
                std::env::var("FASTAGENTIC_REQUIRE_PROMETHEUS_PARSER").as_deref() != Ok("1"),
                "FASTAGENTIC_REQUIRE_PROMETHEUS_PARSER=1 but {why}"
            );
            eprintln!("\n*** SKIPPED metrics_exposition: {why} ***\n");
            return;
        }
    };
    let s = Server::start(
        &[
            "--server",
            "gunicorn",
            "--workers",
            "2",
            "--max-concurrent",
            "50",
        ],
        &[],
    );
    for i in 0..CHATS {
        let r = chat(s.port, &format!("m{i}")).expect("a chat answer");
        assert_eq!(r.status, 200);
    }
    for (accept, format) in [
        ("text/plain", "prometheus"),
        ("application/openmetrics-text", "openmetrics"),
    ] {
        let r = request(s.port, "GET", "/metrics", &[("Accept", accept)], None)
            .expect("a /metrics answer");
        assert_eq!(r.status, 200);
        let families = parse(&python, format, &r.text());

        let hist = samples(&families, HISTOGRAM);
        let buckets: Vec<(String, f64)> = hist
            .iter()
            .filter(|(n, _, _)| n.ends_with("_bucket"))
            .map(|(_, l, v)| {
                (
                    l["le"].as_str().unwrap().to_string(),
                    v.as_f64().expect("a finite bucket count"),
                )
            })
            .collect();
        let count = hist
            .iter()
            .find(|(n, _, _)| n.ends_with("_count"))
            .and_then(|(_, _, v)| v.as_f64())
            .expect("_count");
        assert!(
            buckets.windows(2).all(|w| w[0].1 <= w[1].1),
            "{format}: buckets decrease: {buckets:?}"
        );
        let last = buckets.last().expect("buckets");
        assert_eq!(
            last.0, "+Inf",
            "{format}: the last bucket is +Inf: {buckets:?}"
        );
        assert_eq!(last.1, count, "{format}: +Inf equals _count");
        let finite: Vec<f64> = buckets[..buckets.len() - 1]
            .iter()
            .map(|(le, _)| le.parse().unwrap())
            .collect();
        assert!(
            finite.iter().all(|b| *b < 1e300),
            "{format}: no finite stand-in for +Inf: {finite:?}"
        );

        // Pod-wide: both workers' answers, whichever served the scrape.
        let requests = samples(&families, "fastagentic_http_requests");
        let chats: f64 = requests
            .iter()
            .filter(|(_, l, _)| l["path"] == "/chat" && l["class"] == "2xx")
            .map(|(_, _, v)| v.as_f64().unwrap())
            .sum();
        assert_eq!(chats, CHATS as f64, "{format}: /chat 2xx counted pod-wide");
        let all: f64 = requests.iter().map(|(_, _, v)| v.as_f64().unwrap()).sum();
        assert!(
            count >= CHATS as f64 && count <= all,
            "{format}: the histogram counts every finished request: {count} of {all}"
        );
        eprintln!(
            "{format}: parsed {} families; {HISTOGRAM}: {} buckets, +Inf = _count = {count}; \
             /chat 2xx = {chats}",
            families.len(),
            buckets.len()
        );
    }
}
