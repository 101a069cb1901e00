//! Shared helpers of the store, pool and agent integration tests (included with `#[path]`; as
//! its own test target it holds no tests).
//!
//! The tests that need real servers read `REDIS_URL` and `DATABASE_URL` (the same variables the
//! runtime reads; `scripts/services.sh up && eval "$(scripts/services.sh env)"` sets both).
//! When one is unset, such a test writes a SKIPPED line straight to stderr (past the test
//! harness's output capture, so it shows in every run) and returns; with
//! `FASTAGENTIC_REQUIRE_SERVICES=1` (CI) a missing server fails the test instead.
#![allow(dead_code)]

use std::io::Write;

/// Says loudly that a test did not run, or fails it when services are required.
pub fn skip(test: &str, why: &str) {
    let required = std::env::var("FASTAGENTIC_REQUIRE_SERVICES").is_ok_and(|v| v == "1");
    assert!(!required, "{test}: {why} (FASTAGENTIC_REQUIRE_SERVICES=1)");
    let _ = writeln!(
        std::io::stderr(),
        "\n*** SKIPPED {test}: {why}; start the servers with \
         `scripts/services.sh up && eval \"$(scripts/services.sh env)\"` ***\n"
    );
}

fn url(var: &str, test: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ => {
            skip(test, &format!("{var} is not set"));
            None
        }
    }
}

/// `REDIS_URL`, or `None` after reporting the skip.
pub fn redis_url(test: &str) -> Option<String> {
    url("REDIS_URL", test)
}

/// `DATABASE_URL`, or `None` after reporting the skip.
pub fn database_url(test: &str) -> Option<String> {
    url("DATABASE_URL", test)
}

/// A name no other test run uses (connection names, run ids, schemas).
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    )
}

/// A loopback port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(1)
}
