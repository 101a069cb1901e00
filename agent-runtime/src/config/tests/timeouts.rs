use super::*;

#[test]
fn stale_after_must_exceed_the_first_byte_wait_or_a_shorter_run_limit() {
    for (args, other) in [
        (&["--run-stale-after", "60"][..], "--agent-timeout"),
        (
            &["--run-stale-after", "2", "--agent-timeout", "3"][..],
            "--agent-timeout",
        ),
        (
            &[
                "--run-stale-after",
                "2",
                "--agent-timeout",
                "1",
                "--agent-first-byte-timeout",
                "2",
            ][..],
            "--agent-first-byte-timeout",
        ),
        (
            &[
                "--run-stale-after",
                "5",
                "--agent-first-byte-timeout",
                "10",
                "--run-max-duration",
                "5",
            ][..],
            "--run-max-duration",
        ),
    ] {
        let CliOutcome::Usage(line) = run(args) else {
            panic!("{args:?} must be rejected")
        };
        assert!(
            line.contains("--run-stale-after") && line.contains(other),
            "{line}"
        );
        assert_eq!(line.lines().count(), 1, "{line}");
    }
    // The echo delay is bounded like any backend, so it does not count; the idle wait is
    // covered by stream heartbeats; a run limit below stale-after caps a longer first-byte wait.
    for args in [
        &[
            "--run-stale-after",
            "2.5",
            "--agent-timeout",
            "2",
            "--echo-delay-ms",
            "9000",
        ][..],
        &[
            "--run-stale-after",
            "2.5",
            "--agent-timeout",
            "2",
            "--stream-idle-timeout",
            "9",
        ][..],
        &[
            "--run-stale-after",
            "5",
            "--agent-first-byte-timeout",
            "10",
            "--run-max-duration",
            "4",
        ][..],
    ] {
        let r = run_args(args);
        assert!(r.store.stale_after() < Duration::from_secs(6), "{args:?}");
    }
    let r = run_args(&["--run-stale-after", "2.5", "--agent-timeout", "2"]);
    assert_eq!(r.store.stale_after(), Duration::from_millis(2500));
    assert_eq!(r.effective_json()["run_stale_after"], 2.5);
}

#[test]
fn the_waits_default_to_the_agent_timeout_and_are_reported() {
    let r = run_args(&["--agent-timeout", "7", "--stream-idle-timeout", "2.5"]);
    let limits = r.agent.limits();
    assert_eq!(limits.first_byte, Duration::from_secs(7));
    assert_eq!(limits.stream_idle, Duration::from_millis(2500));
    assert_eq!(limits.run_max, None);
    let r = run_args(&[
        "--agent-first-byte-timeout",
        "3",
        "--run-max-duration",
        "120",
        "--stream-heartbeat",
        "0",
    ]);
    let limits = r.agent.limits();
    assert_eq!(limits.first_byte, Duration::from_secs(3));
    assert_eq!(limits.stream_idle, Duration::from_secs(60));
    assert_eq!(limits.run_max, Some(Duration::from_secs(120)));
    assert_eq!(r.stream_heartbeat, Duration::ZERO);
    let c = r.effective_json();
    assert_eq!(
        (
            &c["agent_first_byte_timeout"],
            &c["stream_idle_timeout"],
            &c["run_max_duration"],
            &c["stream_heartbeat"],
        ),
        (&3.0.into(), &60.0.into(), &120.0.into(), &0.0.into())
    );
}

#[test]
fn the_http_agent_options_are_read_and_reported_without_urls() {
    let r = run_args(&[
        "--agent",
        "http",
        "--agent-url",
        "http://user:pw@agent:8000/chat",
        "--agent-stream-url",
        "http://agent:8000/chat/stream",
        "--agent-format",
        "json",
        "--agent-reply-field",
        "data.answer",
        "--agent-ready-url",
        "tcp://127.0.0.1:8000",
    ]);
    assert_eq!(r.agent.agent_format, crate::agents::AgentFormat::Json);
    assert_eq!(
        r.agent.agent_reply_field,
        Some(crate::agents::ReplyField::Path(vec![
            "data".into(),
            "answer".into()
        ]))
    );
    assert_eq!(
        r.agent.agent_ready_url,
        Some(crate::agents::ReadyTarget::Tcp("127.0.0.1:8000".into()))
    );
    let c = r.effective_json();
    assert_eq!(
        (
            &c["agent_format"],
            &c["agent_streams"],
            &c["agent_ready_check"]
        ),
        (&"json".into(), &true.into(), &true.into())
    );
    assert!(
        !c.to_string().contains("pw@"),
        "no URL, so no credentials: {c}"
    );
}

#[test]
fn chat_completions_refuses_the_json_formats_options() {
    let base = [
        "--agent",
        "http",
        "--agent-url",
        "http://gateway:4000/v1/chat/completions",
        "--agent-format",
        "chat-completions",
    ];
    let r = run_args(&base);
    assert_eq!(r.effective_json()["agent_format"], "chat-completions");
    assert_eq!(r.agent.build(Duration::ZERO).map(|a| a.name()), Ok("http"));
    for extra in [
        ["--agent-reply-field", "result"],
        ["--agent-stream-url", "http://gateway:4000/stream"],
    ] {
        let args: Vec<&str> = base.iter().chain(extra.iter()).copied().collect();
        let line = usage(&args);
        assert!(
            line.contains(extra[0]) && line.contains("--agent-format json"),
            "{extra:?}: {line}"
        );
    }
}
