//! The real `run` parser: defaults, flags, variables and one-line errors.

use super::*;
use crate::agents::{AgentKind, ApiKey};
use crate::store::{DEFAULT_RUN_STALE_AFTER_SECS, DurableStoreKind};
use clap::CommandFactory;

/// The agent's time limits and their check against `--run-stale-after`.
mod timeouts;

fn run(args: &[&str]) -> CliOutcome {
    let mut v = vec!["fastagentic", "run"];
    v.extend_from_slice(args);
    parse_cli(v)
}

/// The parsed `run` options, or the test fails with the usage line.
fn run_args(args: &[&str]) -> RunArgs {
    match run(args) {
        CliOutcome::Ok(cli) => match cli.command {
            Command::Run(r) => *Box::new(r),
            Command::Worker(_) => panic!("run expected"),
        },
        other => panic!("{args:?} must parse: {other:?}"),
    }
}

/// The one-line usage error for `args`.
fn usage(args: &[&str]) -> String {
    match run(args) {
        CliOutcome::Usage(line) => {
            assert_eq!(line.lines().count(), 1, "{line}");
            line
        }
        other => panic!("{args:?} must be rejected: {other:?}"),
    }
}

#[test]
fn command_definition_is_consistent() {
    Cli::command().debug_assert();
}

#[test]
fn defaults_come_from_the_contract() {
    use fastagentic_contract::defaults;
    let r = run_args(&[]);
    assert_eq!(r.port, defaults::PORT);
    assert_eq!(r.workers, defaults::WORKERS);
    assert_eq!(r.redis_pool_size, defaults::REDIS_POOL_SIZE);
    assert_eq!(
        r.redis_pool_timeout.as_secs_f64(),
        defaults::REDIS_POOL_TIMEOUT_SECONDS
    );
    assert_eq!(r.db_pool_size, defaults::DB_POOL_SIZE);
    assert_eq!(r.db_max_overflow, defaults::DB_MAX_OVERFLOW);
    assert_eq!(
        r.pools.db_pool_recycle,
        Duration::from_secs(u64::from(defaults::DB_POOL_RECYCLE_SECONDS))
    );
    assert_eq!(
        r.pools.db_pool_timeout.as_secs_f64(),
        defaults::DB_POOL_TIMEOUT_SECONDS
    );
    assert!(r.pools.db_pool_pre_ping);
    assert_eq!(
        r.timeout_keep_alive,
        Duration::from_secs(u64::from(defaults::KEEP_ALIVE_SECONDS))
    );
    assert_eq!(
        r.timeout_graceful,
        Duration::from_secs(u64::from(defaults::GRACEFUL_SHUTDOWN_SECONDS))
    );
    assert_eq!(r.agent.agent, AgentKind::Echo);
    let sixty = Duration::from_secs(60);
    assert_eq!(
        r.agent.limits(),
        crate::agents::TimeLimits {
            first_byte: sixty,
            stream_idle: sixty,
            run_max: None,
        },
        "both waits default to --agent-timeout, the run is unlimited"
    );
    assert_eq!(r.stream_heartbeat, Duration::from_secs(15));
    assert_eq!(
        r.store.stale_after(),
        Duration::from_secs(DEFAULT_RUN_STALE_AFTER_SECS)
    );
    assert_eq!(
        r.store.memory_store_max_bytes,
        crate::store::MEMORY_STORE_DEFAULT_MAX_BYTES
    );
}

#[test]
fn pool_flags_reach_the_pool_configurations() {
    let r = run_args(&[
        "--redis-url",
        "redis://127.0.0.1:1/0",
        "--database-url",
        "postgres://u@127.0.0.1:1/d",
        "--durable-store",
        "memory",
        "--redis-pool-size",
        "3",
        "--redis-pool-timeout",
        "0.25",
        "--db-pool-size",
        "2",
        "--db-max-overflow",
        "0",
        "--db-pool-recycle",
        "60",
        "--db-pool-pre-ping",
        "OFF",
        "--db-pool-timeout",
        "1.5",
    ]);
    let redis = r
        .pools
        .redis_config(r.redis_pool_size, r.redis_pool_timeout, "n");
    let db = r.pools.db_config(r.db_pool_size, r.db_max_overflow, "n");
    assert_eq!(redis.url.as_deref(), Some("redis://127.0.0.1:1/0"));
    assert_eq!(redis.max_size, 3);
    assert_eq!(redis.wait_timeout, Duration::from_millis(250));
    assert_eq!(db.url.as_deref(), Some("postgres://u@127.0.0.1:1/d"));
    assert_eq!(db.min_connections, 2);
    assert_eq!(db.max_connections(), 2);
    assert_eq!(db.recycle, Duration::from_secs(60));
    assert!(!db.pre_ping);
    assert_eq!(db.acquire_timeout, Duration::from_millis(1500));
}

#[test]
fn switches_accept_the_usual_spellings() {
    for (value, expected) in [
        ("true", true),
        ("TRUE", true),
        ("1", true),
        ("yes", true),
        ("on", true),
        ("false", false),
        ("0", false),
        ("No", false),
        ("off", false),
    ] {
        let r = run_args(&["--db-pool-pre-ping", value]);
        assert_eq!(r.pools.db_pool_pre_ping, expected, "{value}");
    }
    assert!(run_args(&["--reload"]).reload);
    let line = usage(&["--db-pool-pre-ping", "maybe"]);
    for needle in [
        "--db-pool-pre-ping",
        "FASTAGENTIC_DB_POOL_PRE_PING",
        "maybe",
        "accepted: one of true, false",
    ] {
        assert!(line.contains(needle), "{needle:?} missing in {line}");
    }
}

#[test]
fn every_bad_value_names_the_flag_its_variable_the_value_and_what_is_accepted() {
    let cases: &[(&str, &str, &str, &str)] = &[
        (
            "--redis-pool-size",
            "0",
            "FASTAGENTIC_REDIS_POOL_SIZE",
            "from 1",
        ),
        (
            "--redis-pool-size",
            "-3",
            "FASTAGENTIC_REDIS_POOL_SIZE",
            "from 1",
        ),
        (
            "--redis-pool-size",
            "ten",
            "FASTAGENTIC_REDIS_POOL_SIZE",
            "from 1",
        ),
        (
            "--redis-pool-timeout",
            "0",
            "FASTAGENTIC_REDIS_POOL_TIMEOUT",
            "> 0",
        ),
        (
            "--redis-pool-timeout",
            "NaN",
            "FASTAGENTIC_REDIS_POOL_TIMEOUT",
            "> 0",
        ),
        ("--db-pool-size", "0", "FASTAGENTIC_DB_POOL_SIZE", "from 1"),
        (
            "--db-max-overflow",
            "-1",
            "FASTAGENTIC_DB_MAX_OVERFLOW",
            "from 0",
        ),
        (
            "--db-pool-recycle",
            "0",
            "FASTAGENTIC_DB_POOL_RECYCLE",
            "> 0",
        ),
        (
            "--db-pool-timeout",
            "1e9",
            "FASTAGENTIC_DB_POOL_TIMEOUT",
            "> 0",
        ),
        (
            "--durable-store",
            "mongo",
            "FASTAGENTIC_DURABLE_STORE",
            "memory, redis, postgres",
        ),
        (
            "--run-stale-after",
            "604801",
            "FASTAGENTIC_RUN_STALE_AFTER",
            "> 0",
        ),
        (
            "--memory-store-max-bytes",
            "4MB",
            "FASTAGENTIC_MEMORY_STORE_MAX_BYTES",
            "from 0 to 64Gi",
        ),
        (
            "--run-webhook-url",
            "ftp://hooks",
            "FASTAGENTIC_RUN_WEBHOOK_URL",
            "http://",
        ),
        (
            "--stream-events-max",
            "0",
            "FASTAGENTIC_STREAM_EVENTS_MAX",
            "from 1 to 1000000",
        ),
        (
            "--stream-events-ttl",
            "-1",
            "FASTAGENTIC_STREAM_EVENTS_TTL",
            "> 0",
        ),
        ("--agent", "gpt", "FASTAGENTIC_AGENT", "echo, http, openai"),
        (
            "--agent-url",
            "localhost:8080",
            "FASTAGENTIC_AGENT_URL",
            "http://",
        ),
        (
            "--agent-stream-url",
            "/chat/stream",
            "FASTAGENTIC_AGENT_STREAM_URL",
            "http://",
        ),
        (
            "--agent-format",
            "xml",
            "FASTAGENTIC_AGENT_FORMAT",
            "json, chat-completions",
        ),
        (
            "--agent-reply-field",
            "a..b",
            "FASTAGENTIC_AGENT_REPLY_FIELD",
            "data.answer",
        ),
        (
            "--agent-ready-url",
            "udp://h:1",
            "FASTAGENTIC_AGENT_READY_URL",
            "tcp://host:port",
        ),
        ("--agent-timeout", "0", "FASTAGENTIC_AGENT_TIMEOUT", "> 0"),
        (
            "--agent-first-byte-timeout",
            "0",
            "FASTAGENTIC_AGENT_FIRST_BYTE_TIMEOUT",
            "> 0",
        ),
        (
            "--stream-idle-timeout",
            "soon",
            "FASTAGENTIC_STREAM_IDLE_TIMEOUT",
            "> 0",
        ),
        (
            "--run-max-duration",
            "-5",
            "FASTAGENTIC_RUN_MAX_DURATION",
            "or 0 for unlimited",
        ),
        (
            "--stream-heartbeat",
            "90000",
            "FASTAGENTIC_STREAM_HEARTBEAT",
            "or 0 for off",
        ),
        (
            "--openai-base-url",
            "ftp://x",
            "OPENAI_BASE_URL",
            "https://",
        ),
        (
            "--server",
            "daphne",
            "FASTAGENTIC_SERVER",
            "uvicorn, gunicorn",
        ),
    ];
    for (flag, value, var, accepted) in cases {
        let arg = format!("{flag}={value}");
        let line = usage(&[arg.as_str()]);
        for needle in [*flag, *value, *var, "accepted", *accepted] {
            assert!(
                line.contains(needle),
                "{flag}={value}: {needle:?} missing in {line:?}"
            );
        }
    }
}

#[test]
fn the_store_and_the_agent_are_chosen_by_name() {
    let r = run_args(&["--durable-store", "memory", "--server", "GUNICORN"]);
    assert_eq!(r.store.durable_store, Some(DurableStoreKind::Memory));
    assert_eq!(r.server, ServerKind::Gunicorn);
    let r = run_args(&[
        "--durable-store",
        "postgresql",
        "--database-url",
        "postgres://u@127.0.0.1:1/d",
    ]);
    assert_eq!(r.store.durable_store, Some(DurableStoreKind::Postgres));
    let line = usage(&["--agent", "http"]);
    assert!(line.contains("FASTAGENTIC_AGENT_URL"), "{line}");
    let line = usage(&["--agent", "openai"]);
    assert!(line.contains("OPENAI_API_KEY"), "{line}");
}

#[tokio::test]
async fn the_api_key_never_shows_in_debug_output() {
    let r = run_args(&["--agent", "openai", "--openai-api-key", " sk-very-secret\n"]);
    assert_eq!(
        r.agent.openai_api_key.as_ref().map(ApiKey::expose),
        Some("sk-very-secret")
    );
    let debug = format!("{r:?}");
    assert!(
        !debug.contains("sk-very-secret") && debug.contains("ApiKey(***)"),
        "{debug}"
    );
    let built = r.agent.build(Duration::ZERO).map(|a| a.name());
    assert_eq!(built, Ok("openai"));
}

#[test]
fn defaults_follow_the_seed() {
    let CliOutcome::Ok(cli) = run(&[]) else {
        panic!("defaults must parse")
    };
    let Command::Run(r) = cli.command else {
        panic!("run expected")
    };
    assert_eq!(r.server, ServerKind::Uvicorn);
    assert_eq!(r.host.to_string(), "127.0.0.1");
    assert_eq!(r.port, 8000);
    assert_eq!(r.workers, 1);
    assert!(!r.reload);
    assert_eq!(r.max_concurrent, ConcurrencyLimit(None));
    assert_eq!(r.redis_pool_size, 10);
    assert_eq!(r.redis_pool_timeout, Duration::from_secs(5));
    assert_eq!(r.db_pool_size, 5);
    assert_eq!(r.db_max_overflow, 10);
    assert_eq!(r.timeout_graceful, Duration::from_secs(30));
    assert_eq!(r.timeout_keep_alive, Duration::from_secs(5));
    assert_eq!(r.store.stale_after(), Duration::from_secs(300));
    assert_eq!(r.mode(), Mode::Single);
}

#[test]
fn bad_values_are_one_line_naming_the_flag() {
    for (args, flag) in [
        (&["--workers", "0"][..], "--workers"),
        (&["--port", "70000"][..], "--port"),
        (&["--server", "daphne"][..], "--server"),
        (&["--timeout-graceful", "-1"][..], "--timeout-graceful"),
        (&["--run-stale-after", "0"][..], "--run-stale-after"),
        (&["--run-stale-after", "-1"][..], "--run-stale-after"),
        (&["--run-stale-after", "abc"][..], "--run-stale-after"),
    ] {
        let CliOutcome::Usage(line) = run(args) else {
            panic!("{args:?} must be rejected")
        };
        assert!(line.contains(flag), "{line}");
        assert!(line.contains("accepted"), "{line}");
        assert_eq!(line.lines().count(), 1, "{line}");
    }
}

#[test]
fn reload_with_gunicorn_is_rejected() {
    let CliOutcome::Usage(line) = run(&["--reload", "--server", "gunicorn"]) else {
        panic!("must be rejected")
    };
    assert!(line.contains("--reload"), "{line}");
}

#[test]
fn gunicorn_is_supervised() {
    let CliOutcome::Ok(cli) = run(&["--server", "gunicorn", "--workers", "3"]) else {
        panic!("must parse")
    };
    let Command::Run(r) = cli.command else {
        panic!("run expected")
    };
    assert_eq!(r.mode(), Mode::Supervised);
    assert_eq!(r.workers, 3);
}
