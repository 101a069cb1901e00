//! Agent builder tests: the runtime's variables for each kind of `spec.agent`.

use super::super::BuildInputs;
use super::super::tests::{BASE, children_of, container, env_pairs, load, pairs};

/// The runtime's `FASTAGENTIC_AGENT*` variables for `agent` (a YAML flow mapping), in order.
fn agent_env_of(agent: &str) -> Vec<(String, String)> {
    let fa = load(&format!("{BASE}  agent: {agent}\n"));
    let c = children_of(&fa, &BuildInputs::default());
    env_pairs(container(&c.deployment))
        .into_iter()
        .filter(|(n, _)| n.starts_with("FASTAGENTIC_AGENT"))
        .collect()
}

#[test]
fn the_http_agent_renders_every_option_that_is_set() {
    assert_eq!(
        agent_env_of(
            "{http: {url: \"http://agent:9000/run\", streamUrl: \"http://agent:9000/run/stream\", \
             readyUrl: \"tcp://agent:9000\", format: chat-completions, replyField: data.answer, \
             timeoutSeconds: 30}}"
        ),
        pairs(&[
            ("FASTAGENTIC_AGENT", "http"),
            ("FASTAGENTIC_AGENT_URL", "http://agent:9000/run"),
            (
                "FASTAGENTIC_AGENT_STREAM_URL",
                "http://agent:9000/run/stream"
            ),
            ("FASTAGENTIC_AGENT_FORMAT", "chat-completions"),
            ("FASTAGENTIC_AGENT_REPLY_FIELD", "data.answer"),
            ("FASTAGENTIC_AGENT_READY_URL", "tcp://agent:9000"),
            // Seconds as the runtime parses them, with a decimal point.
            ("FASTAGENTIC_AGENT_TIMEOUT", "30.0"),
        ])
    );
    assert_eq!(
        agent_env_of(
            "{http: {url: \"https://agent.example.com/chat\", format: json, readyUrl: \"https://agent.example.com/ready\"}}"
        ),
        pairs(&[
            ("FASTAGENTIC_AGENT", "http"),
            ("FASTAGENTIC_AGENT_URL", "https://agent.example.com/chat"),
            ("FASTAGENTIC_AGENT_FORMAT", "json"),
            (
                "FASTAGENTIC_AGENT_READY_URL",
                "https://agent.example.com/ready"
            ),
        ])
    );
}

#[test]
fn the_http_agent_leaves_unset_options_to_the_runtime() {
    assert_eq!(
        agent_env_of("{http: {url: \"http://agent:9000/chat\"}}"),
        pairs(&[
            ("FASTAGENTIC_AGENT", "http"),
            ("FASTAGENTIC_AGENT_URL", "http://agent:9000/chat"),
        ])
    );
}
