//! `fastagentic run` configuration against the real binary: bad values, every option as
//! flag and as variable, precedence, `--help`, instance id.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod runtime_support;

use std::time::Duration;

use runtime_support::*;

fn run_fails(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    // Should a value be accepted by mistake, the server fails to bind this busy port
    // (exit 1) instead of serving.
    let busy = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let busy_port = busy.local_addr().expect("addr").port().to_string();
    let out = command()
        .arg("run")
        .args(args)
        .envs(env.iter().copied())
        .env("FASTAGENTIC_PORT", &busy_port)
        .output()
        .expect("run fastagentic");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// (args, env, name the message must contain, value it must contain)
type BadCase<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str, &'a str);

#[test]
fn bad_values_exit_2_with_one_line_naming_the_option() {
    // (args, env, name the message must contain, value it must contain)
    let cases: &[BadCase] = &[
        (&["--server", "daphne"], &[], "--server", "daphne"),
        (
            &[],
            &[("FASTAGENTIC_SERVER", "hypercorn")],
            "FASTAGENTIC_SERVER",
            "hypercorn",
        ),
        (&["--workers", "0"], &[], "--workers", "'0'"),
        (&["--workers", "abc"], &[], "--workers", "abc"),
        (
            &[],
            &[("FASTAGENTIC_WORKERS", "many")],
            "FASTAGENTIC_WORKERS",
            "many",
        ),
        (&["--port", "0"], &[], "--port", "'0'"),
        (&["--port", "70000"], &[], "--port", "70000"),
        (&["--redis-pool-size=-1"], &[], "--redis-pool-size", "-1"),
        (
            &[],
            &[("FASTAGENTIC_REDIS_POOL_SIZE", "ten")],
            "FASTAGENTIC_REDIS_POOL_SIZE",
            "ten",
        ),
        (&["--db-pool-size=-5"], &[], "--db-pool-size", "-5"),
        (
            &["--timeout-graceful", "-3"],
            &[],
            "--timeout-graceful",
            "-3",
        ),
        (
            &["--db-max-overflow", "lots"],
            &[],
            "--db-max-overflow",
            "lots",
        ),
        (
            &[],
            &[("FASTAGENTIC_DB_MAX_OVERFLOW", "-1")],
            "FASTAGENTIC_DB_MAX_OVERFLOW",
            "-1",
        ),
        (&["--timeout-graceful=-1"], &[], "--timeout-graceful", "-1"),
        (
            &[],
            &[("FASTAGENTIC_TIMEOUT_GRACEFUL_SHUTDOWN", "soon")],
            "FASTAGENTIC_TIMEOUT_GRACEFUL_SHUTDOWN",
            "soon",
        ),
        (
            &["--timeout-keep-alive", "0"],
            &[],
            "--timeout-keep-alive",
            "'0'",
        ),
        (
            &[],
            &[("FASTAGENTIC_TIMEOUT_KEEP_ALIVE", "abc")],
            "FASTAGENTIC_TIMEOUT_KEEP_ALIVE",
            "abc",
        ),
        (
            &[],
            &[("FASTAGENTIC_REDIS_POOL_TIMEOUT", "-2")],
            "FASTAGENTIC_REDIS_POOL_TIMEOUT",
            "-2",
        ),
        (&["--max-concurrent", "0"], &[], "--max-concurrent", "'0'"),
        (
            &[],
            &[("FASTAGENTIC_MAX_CONCURRENT", "lots")],
            "FASTAGENTIC_MAX_CONCURRENT",
            "lots",
        ),
        (&["--host", "not-an-ip"], &[], "--host", "not-an-ip"),
        (&["--max-requests=-1"], &[], "--max-requests", "-1"),
        (
            &[],
            &[("FASTAGENTIC_RELOAD", "perhaps")],
            "FASTAGENTIC_RELOAD",
            "perhaps",
        ),
        (
            &["--reload", "--server", "gunicorn"],
            &[],
            "--reload",
            "gunicorn",
        ),
        (
            &[],
            &[
                ("FASTAGENTIC_RELOAD", "true"),
                ("FASTAGENTIC_SERVER", "gunicorn"),
            ],
            "FASTAGENTIC_RELOAD",
            "gunicorn",
        ),
        (
            &[],
            &[("FASTAGENTIC_RUN_STALE_AFTER", "0")],
            "FASTAGENTIC_RUN_STALE_AFTER",
            "'0'",
        ),
        (
            &[],
            &[("FASTAGENTIC_RUN_STALE_AFTER", "-1")],
            "FASTAGENTIC_RUN_STALE_AFTER",
            "-1",
        ),
        (
            &[],
            &[("FASTAGENTIC_RUN_STALE_AFTER", "abc")],
            "FASTAGENTIC_RUN_STALE_AFTER",
            "abc",
        ),
        (
            &["--run-stale-after", "inf"],
            &[],
            "--run-stale-after",
            "inf",
        ),
        // Not longer than the agent timeout (default 60 s), or equal to it.
        (
            &[],
            &[("FASTAGENTIC_RUN_STALE_AFTER", "30")],
            "FASTAGENTIC_RUN_STALE_AFTER",
            "30",
        ),
        (
            &["--run-stale-after", "90", "--agent-timeout", "90"],
            &[],
            "--run-stale-after",
            "90",
        ),
    ];
    assert!(cases.len() >= 12);
    for (args, env, name, value) in cases {
        let (code, stdout, stderr) = run_fails(args, env);
        let what = format!("args {args:?} env {env:?}: stdout {stdout:?} stderr {stderr:?}");
        assert_eq!(code, Some(2), "exit status 2 expected; {what}");
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "one line on stderr; {what}");
        assert!(lines[0].contains(name), "must name {name}; {what}");
        assert!(
            lines[0].contains(value),
            "must show the value {value}; {what}"
        );
        assert!(
            lines[0].contains("accepted"),
            "must say what is accepted; {what}"
        );
        for text in [&stdout, &stderr] {
            assert!(!text.contains("panicked"), "no panic; {what}");
            assert!(!text.contains("RUST_BACKTRACE"), "no backtrace; {what}");
        }
    }
}

/// `--run-stale-after` must exceed how long a live run may go without a store update: the wait
/// for its first byte (`--agent-first-byte-timeout`, default `--agent-timeout`). The one line
/// names both options (flag and variable) and both values.
#[test]
fn stale_after_not_above_the_run_time_exits_2_naming_both_options() {
    // (args, env, what the line must contain)
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a [&'a str]);
    let cases: &[Case] = &[
        (
            &["--run-stale-after", "60"],
            &[],
            &[
                "--run-stale-after",
                "FASTAGENTIC_RUN_STALE_AFTER",
                " 60 ",
                "--agent-timeout",
                "FASTAGENTIC_AGENT_TIMEOUT",
                "accepted",
            ],
        ),
        (
            &[],
            &[
                ("FASTAGENTIC_RUN_STALE_AFTER", "10"),
                ("FASTAGENTIC_AGENT_TIMEOUT", "12.5"),
            ],
            &[
                "FASTAGENTIC_RUN_STALE_AFTER",
                " 10 ",
                "--agent-timeout",
                "12.5",
            ],
        ),
        (
            &["--run-stale-after", "5", "--agent-timeout", "1"],
            &[("FASTAGENTIC_AGENT_FIRST_BYTE_TIMEOUT", "6")],
            &[
                "--run-stale-after",
                " 5 ",
                "--agent-first-byte-timeout",
                "FASTAGENTIC_AGENT_FIRST_BYTE_TIMEOUT",
                " 6;",
                "accepted",
            ],
        ),
    ];
    for (args, env, needles) in cases {
        let (code, stdout, stderr) = run_fails(args, env);
        let what = format!("args {args:?} env {env:?}: stdout {stdout:?} stderr {stderr:?}");
        assert_eq!(code, Some(2), "exit status 2 expected; {what}");
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "one line on stderr; {what}");
        for needle in *needles {
            assert!(lines[0].contains(needle), "must contain {needle:?}; {what}");
        }
        assert!(!stderr.contains("panicked"), "no panic; {what}");
    }
    // Just above is accepted (the server then serves: checked by `Server::start`); the echo
    // delay is bounded by the first-byte wait like any backend, so it need not be below.
    let server = Server::start(
        &["--run-stale-after", "5.5", "--agent-timeout", "5"],
        &[("FASTAGENTIC_ECHO_DELAY_MS", "5000")],
    );
    assert_eq!(server.metrics()["config"]["run_stale_after"], 5.5);
}

#[test]
fn help_shows_each_option_with_variable_and_default() {
    let out = command()
        .args(["run", "--help"])
        .output()
        .expect("run --help");
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    for (flag, env, default) in [
        ("--server", "FASTAGENTIC_SERVER", "uvicorn"),
        ("--host", "FASTAGENTIC_HOST", "127.0.0.1"),
        ("--port", "FASTAGENTIC_PORT", "8000"),
        ("--workers", "FASTAGENTIC_WORKERS", "1"),
        ("--reload", "FASTAGENTIC_RELOAD", "false"),
        (
            "--max-concurrent",
            "FASTAGENTIC_MAX_CONCURRENT",
            "unlimited",
        ),
        ("--instance-id", "FASTAGENTIC_INSTANCE_ID", "auto"),
        ("--redis-pool-size", "FASTAGENTIC_REDIS_POOL_SIZE", "10"),
        (
            "--redis-pool-timeout",
            "FASTAGENTIC_REDIS_POOL_TIMEOUT",
            "5.0",
        ),
        ("--db-pool-size", "FASTAGENTIC_DB_POOL_SIZE", "5"),
        ("--db-max-overflow", "FASTAGENTIC_DB_MAX_OVERFLOW", "10"),
        (
            "--timeout-graceful",
            "FASTAGENTIC_TIMEOUT_GRACEFUL_SHUTDOWN",
            "30",
        ),
        (
            "--timeout-keep-alive",
            "FASTAGENTIC_TIMEOUT_KEEP_ALIVE",
            "5",
        ),
        ("--max-requests", "FASTAGENTIC_MAX_REQUESTS", "0"),
        (
            "--max-requests-jitter",
            "FASTAGENTIC_MAX_REQUESTS_JITTER",
            "0",
        ),
        ("--title", "FASTAGENTIC_TITLE", "FastAgentic"),
        ("--run-stale-after", "FASTAGENTIC_RUN_STALE_AFTER", "300"),
        ("--agent-timeout", "FASTAGENTIC_AGENT_TIMEOUT", "60"),
        (
            "--agent-first-byte-timeout",
            "FASTAGENTIC_AGENT_FIRST_BYTE_TIMEOUT",
            "--agent-timeout",
        ),
        (
            "--stream-idle-timeout",
            "FASTAGENTIC_STREAM_IDLE_TIMEOUT",
            "--agent-timeout",
        ),
        ("--run-max-duration", "FASTAGENTIC_RUN_MAX_DURATION", "0"),
        ("--stream-heartbeat", "FASTAGENTIC_STREAM_HEARTBEAT", "15"),
    ] {
        // clap prints the option, then its help, then "[env: X=] [default: Y]".
        let section = option_block(&help, flag);
        assert!(
            section.contains(&format!("[env: {env}")),
            "{flag}: {section}"
        );
        assert!(
            section.contains(&format!("[default: {default}]")),
            "{flag}: {section}"
        );
    }
}

/// The help text of one option: its line and the lines up to the next option.
fn option_block(help: &str, flag: &str) -> String {
    let mut block = String::new();
    let mut inside = false;
    for line in help.lines() {
        let t = line.trim_start();
        if t.starts_with('-') {
            inside = t.split([' ', ',']).any(|w| w == flag);
        }
        if inside {
            block.push_str(t);
            block.push(' ');
        }
    }
    assert!(!block.is_empty(), "{flag} missing from help:\n{help}");
    block
}

const ALL_OPTIONS: &[(&str, &str, &str)] = &[
    // (flag, variable, value) — port, host and server are set by the harness / below.
    ("--instance-id", "FASTAGENTIC_INSTANCE_ID", "pod-a-1"),
    ("--title", "FASTAGENTIC_TITLE", "Option Agent"),
    ("--max-concurrent", "FASTAGENTIC_MAX_CONCURRENT", "7"),
    ("--redis-pool-size", "FASTAGENTIC_REDIS_POOL_SIZE", "21"),
    (
        "--redis-pool-timeout",
        "FASTAGENTIC_REDIS_POOL_TIMEOUT",
        "2.5",
    ),
    ("--db-pool-size", "FASTAGENTIC_DB_POOL_SIZE", "11"),
    ("--db-max-overflow", "FASTAGENTIC_DB_MAX_OVERFLOW", "22"),
    (
        "--timeout-graceful",
        "FASTAGENTIC_TIMEOUT_GRACEFUL_SHUTDOWN",
        "7",
    ),
    (
        "--timeout-keep-alive",
        "FASTAGENTIC_TIMEOUT_KEEP_ALIVE",
        "9",
    ),
    ("--max-requests", "FASTAGENTIC_MAX_REQUESTS", "1000"),
    (
        "--max-requests-jitter",
        "FASTAGENTIC_MAX_REQUESTS_JITTER",
        "4",
    ),
    ("--workers", "FASTAGENTIC_WORKERS", "2"),
    ("--server", "FASTAGENTIC_SERVER", "gunicorn"),
    ("--host", "FASTAGENTIC_HOST", "127.0.0.1"),
    ("--run-stale-after", "FASTAGENTIC_RUN_STALE_AFTER", "120.5"),
    (
        "--agent-first-byte-timeout",
        "FASTAGENTIC_AGENT_FIRST_BYTE_TIMEOUT",
        "20",
    ),
    (
        "--stream-idle-timeout",
        "FASTAGENTIC_STREAM_IDLE_TIMEOUT",
        "30.5",
    ),
    ("--run-max-duration", "FASTAGENTIC_RUN_MAX_DURATION", "600"),
    ("--stream-heartbeat", "FASTAGENTIC_STREAM_HEARTBEAT", "7"),
];

fn assert_all_applied(server: &Server) {
    let m = server.metrics();
    let c = &m["config"];
    assert_eq!(m["instance_id"], "pod-a-1");
    assert_eq!(c["title"], "Option Agent");
    assert_eq!(c["max_concurrent"], 7);
    assert_eq!(c["redis_pool_size"], 21);
    assert_eq!(c["redis_pool_timeout"], 2.5);
    assert_eq!(c["db_pool_size"], 11);
    assert_eq!(c["db_max_overflow"], 22);
    assert_eq!(c["timeout_graceful"], 7.0);
    assert_eq!(c["timeout_keep_alive"], 9.0);
    assert_eq!(c["max_requests"], 1000);
    assert_eq!(c["max_requests_jitter"], 4);
    assert_eq!(c["workers"], 2);
    assert_eq!(c["server"], "gunicorn");
    assert_eq!(c["host"], "127.0.0.1");
    assert_eq!(c["run_stale_after"], 120.5);
    assert_eq!(c["agent_first_byte_timeout"], 20.0);
    assert_eq!(c["stream_idle_timeout"], 30.5);
    assert_eq!(c["run_max_duration"], 600.0);
    assert_eq!(c["stream_heartbeat"], 7.0);
    assert_eq!(c["port"], server.port);
    let health = get(server.port, "/health").expect("health").json();
    assert_eq!(health["title"], "Option Agent");
    assert_eq!(health["instance_id"], "pod-a-1");
    // --workers 2 with gunicorn really runs two worker processes.
    let two = poll(Duration::from_secs(20), || {
        (server.children().len() == 2).then_some(())
    });
    assert!(two.is_some(), "children: {:?}", server.children());
}

#[test]
fn every_option_works_as_a_flag() {
    let mut args = Vec::new();
    for (flag, _, value) in ALL_OPTIONS {
        args.push(*flag);
        args.push(*value);
    }
    let server = Server::start(&args, &[]);
    assert_all_applied(&server);
}

#[test]
fn every_option_works_as_a_variable() {
    let env: Vec<(&str, &str)> = ALL_OPTIONS.iter().map(|(_, e, v)| (*e, *v)).collect();
    let server = Server::start(&[], &env);
    assert_all_applied(&server);
}

#[test]
fn flag_beats_variable_beats_default() {
    // Flag and variable: the flag wins.
    let server = Server::start(
        &[
            "--max-concurrent",
            "3",
            "--instance-id",
            "from-flag",
            "--db-pool-size",
            "8",
        ],
        &[
            ("FASTAGENTIC_MAX_CONCURRENT", "9"),
            ("FASTAGENTIC_INSTANCE_ID", "from-env"),
            ("FASTAGENTIC_DB_POOL_SIZE", "4"),
            // Variable only: the variable wins over the default.
            ("FASTAGENTIC_REDIS_POOL_SIZE", "33"),
        ],
    );
    let m = server.metrics();
    assert_eq!(m["config"]["max_concurrent"], 3);
    assert_eq!(m["config"]["db_pool_size"], 8);
    assert_eq!(m["instance_id"], "from-flag");
    assert_eq!(m["config"]["redis_pool_size"], 33);
    // Neither: the seed's default.
    assert_eq!(m["config"]["db_max_overflow"], 10);
    assert_eq!(m["config"]["run_stale_after"], 300.0);
    assert_eq!(m["config"]["timeout_graceful"], 30.0);
    let r = get(server.port, "/health").expect("health");
    assert_eq!(r.header("x-fastagentic-instance"), Some("from-flag"));
}

#[test]
fn instance_id_defaults_to_hostname_and_pid() {
    let server = Server::start(&[], &[]);
    let id = get(server.port, "/health").expect("health").json()["instance_id"]
        .as_str()
        .expect("instance_id string")
        .to_owned();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .expect("hostname")
        .trim()
        .to_owned();
    assert_eq!(id, format!("{host}-{}", server.pid()));
}
