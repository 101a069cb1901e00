//! Agent builder tests: the runtime's variables for each kind of `spec.agent`, and the agent's
//! container (`spec.agent.container`) in the pod.

use std::collections::BTreeMap;

use fastagentic_crd::FastAgentic;
use k8s_openapi::api::core::v1::{Container, PodSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::super::tests::{BASE, children_of, container, env_pairs, load, pairs};
use super::super::{ANNOTATION_CONFIG_HASH, BuildInputs, referenced_secrets, validate};

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
             readyUrl: \"tcp://agent:9000\", format: json, replyField: data.answer, \
             timeoutSeconds: 30}}"
        ),
        pairs(&[
            ("FASTAGENTIC_AGENT", "http"),
            ("FASTAGENTIC_AGENT_URL", "http://agent:9000/run"),
            (
                "FASTAGENTIC_AGENT_STREAM_URL",
                "http://agent:9000/run/stream"
            ),
            ("FASTAGENTIC_AGENT_FORMAT", "json"),
            ("FASTAGENTIC_AGENT_REPLY_FIELD", "data.answer"),
            ("FASTAGENTIC_AGENT_READY_URL", "tcp://agent:9000"),
            // Seconds as the runtime parses them, with a decimal point.
            ("FASTAGENTIC_AGENT_TIMEOUT", "30.0"),
        ])
    );
    assert_eq!(
        agent_env_of(
            "{http: {url: \"https://agent.example.com/chat\", format: chat-completions, readyUrl: \"https://agent.example.com/ready\"}}"
        ),
        pairs(&[
            ("FASTAGENTIC_AGENT", "http"),
            ("FASTAGENTIC_AGENT_URL", "https://agent.example.com/chat"),
            ("FASTAGENTIC_AGENT_FORMAT", "chat-completions"),
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

// --- spec.agent.container -------------------------------------------------------------------

/// A resource whose runtime listens on 8080 and whose agent is the container `agent` (a YAML
/// flow mapping of `spec.agent.container`), with `extra` spec lines.
fn with_container(container: &str, extra: &str) -> FastAgentic {
    load(&format!(
        "{BASE}  port: 8080\n  agent: {{container: {container}}}\n{extra}"
    ))
}

fn pod(fa: &FastAgentic, inputs: &BuildInputs) -> PodSpec {
    children_of(fa, inputs)
        .deployment
        .spec
        .and_then(|s| s.template.spec)
        .expect("pod spec")
}

/// The pod's one init container, the agent's.
fn sidecar_of(pod: &PodSpec) -> &Container {
    let init = pod.init_containers.as_deref().unwrap_or_default();
    assert_eq!(init.len(), 1, "one init container: {init:?}");
    &init[0]
}

fn config_hash(fa: &FastAgentic, inputs: &BuildInputs) -> String {
    children_of(fa, inputs)
        .deployment
        .spec
        .and_then(|s| s.template.metadata)
        .and_then(|m| m.annotations)
        .and_then(|a| a.get(ANNOTATION_CONFIG_HASH).cloned())
        .expect("config hash")
}

const PYTHON_AGENT: &str = "{image: \"registry.example.com/python-agent:1.2.2\", command: [fastagentic, run, \"app:app\"], args: [--port, \"8000\"], env: [{name: LOG_LEVEL, value: info}], resources: {requests: {cpu: 100m, memory: 128Mi}, limits: {memory: 256Mi}}}";

#[test]
fn the_container_agent_is_a_native_sidecar_with_its_port_and_tmp() {
    let fa = with_container(PYTHON_AGENT, "");
    let pod = pod(&fa, &BuildInputs::default());
    let agent = sidecar_of(&pod);
    assert_eq!(agent.name, "agent-app");
    assert_eq!(agent.restart_policy.as_deref(), Some("Always"));
    assert_eq!(
        agent.image.as_deref(),
        Some("registry.example.com/python-agent:1.2.2")
    );
    assert_eq!(agent.image_pull_policy, None, "Kubernetes' default");
    assert_eq!(
        agent.command,
        Some(vec!["fastagentic".into(), "run".into(), "app:app".into()])
    );
    assert_eq!(agent.args, Some(vec!["--port".into(), "8000".into()]));
    assert_eq!(
        env_pairs(agent),
        pairs(&[("LOG_LEVEL", "info")]),
        "the agent gets its own env, not the runtime's"
    );
    let ports = agent.ports.as_deref().unwrap_or_default();
    assert_eq!(ports.len(), 1);
    assert_eq!(
        (ports[0].name.as_deref(), ports[0].container_port),
        (Some("agent"), 8000)
    );
    // The user's resources, with the ephemeral-storage bounds the runtime gets too.
    let r = agent.resources.clone().expect("resources");
    let q = |m: &Option<BTreeMap<String, Quantity>>, k: &str| {
        m.as_ref().and_then(|m| m.get(k)).map(|q| q.0.clone())
    };
    assert_eq!(q(&r.requests, "cpu").as_deref(), Some("100m"));
    assert_eq!(q(&r.requests, "memory").as_deref(), Some("128Mi"));
    assert_eq!(q(&r.limits, "memory").as_deref(), Some("256Mi"));
    assert_eq!(q(&r.requests, "ephemeral-storage").as_deref(), Some("64Mi"));
    assert_eq!(q(&r.limits, "ephemeral-storage").as_deref(), Some("1Gi"));
    // Its own /tmp, an emptyDir bounded like the runtime's.
    let mounts = agent.volume_mounts.as_deref().unwrap_or_default();
    assert_eq!(mounts.len(), 1);
    assert_eq!(
        (mounts[0].name.as_str(), mounts[0].mount_path.as_str()),
        ("agent-tmp", "/tmp")
    );
    let volumes = pod.volumes.as_deref().unwrap_or_default();
    let names: Vec<&str> = volumes.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(names, ["tmp", "agent-tmp"]);
    let limit = volumes[1]
        .empty_dir
        .as_ref()
        .and_then(|e| e.size_limit.clone());
    assert_eq!(limit, Some(Quantity("256Mi".into())));
    // The runtime stays the one regular container, on its own port.
    assert_eq!(pod.containers.len(), 1);
    assert_eq!(pod.containers[0].name, "agent");
    let runtime_ports = pod.containers[0].ports.as_deref().unwrap_or_default();
    assert_eq!(
        runtime_ports
            .iter()
            .map(|p| (p.name.as_deref(), p.container_port))
            .collect::<Vec<_>>(),
        [(Some("http"), 8080)]
    );
}

#[test]
fn without_a_container_agent_there_is_no_init_container_nor_its_volume() {
    let fa = load(&format!(
        "{BASE}  agent: {{http: {{url: \"http://a:1/chat\"}}}}\n"
    ));
    let pod = pod(&fa, &BuildInputs::default());
    assert_eq!(pod.init_containers, None);
    let names: Vec<String> = pod
        .volumes
        .iter()
        .flatten()
        .map(|v| v.name.clone())
        .collect();
    assert_eq!(names, ["tmp"]);
}

#[test]
fn the_runtime_calls_the_container_agent_on_loopback() {
    assert_eq!(
        agent_env_of(
            "{container: {image: py:1, port: 9000, readyPath: /ready, streamPath: /chat/stream, \
             format: json, replyField: data.answer}}"
        ),
        pairs(&[
            ("FASTAGENTIC_AGENT", "http"),
            ("FASTAGENTIC_AGENT_URL", "http://127.0.0.1:9000/chat"),
            (
                "FASTAGENTIC_AGENT_STREAM_URL",
                "http://127.0.0.1:9000/chat/stream"
            ),
            ("FASTAGENTIC_AGENT_FORMAT", "json"),
            ("FASTAGENTIC_AGENT_REPLY_FIELD", "data.answer"),
            ("FASTAGENTIC_AGENT_READY_URL", "http://127.0.0.1:9000/ready"),
        ])
    );
    // Without a readyPath the runtime's /ready checks that the port accepts connections.
    assert_eq!(
        agent_env_of("{container: {image: py:1, port: 9000, path: /run}}"),
        pairs(&[
            ("FASTAGENTIC_AGENT", "http"),
            ("FASTAGENTIC_AGENT_URL", "http://127.0.0.1:9000/run"),
            ("FASTAGENTIC_AGENT_READY_URL", "tcp://127.0.0.1:9000"),
        ])
    );
}

#[test]
fn the_default_readiness_probe_asks_the_runtimes_ready_which_checks_the_agent() {
    for (container, ready_url) in [
        (
            "{image: py:1, readyPath: /ready}",
            "http://127.0.0.1:8000/ready",
        ),
        ("{image: py:1}", "tcp://127.0.0.1:8000"),
    ] {
        let pod = pod(&with_container(container, ""), &BuildInputs::default());
        let agent = sidecar_of(&pod);
        let probe = agent.readiness_probe.clone().expect("a readiness probe");
        let get = probe.http_get.as_ref().expect("an HTTP probe");
        assert_eq!(
            (get.path.as_deref(), &get.port, get.scheme.as_deref()),
            (Some("/ready"), &IntOrString::Int(8080), Some("HTTP")),
            "{container}: the runtime's port (spec.port, by number: a probe's port name is looked \
             up among its own container's ports), so the agent may listen on 127.0.0.1"
        );
        assert_eq!(
            (
                probe.initial_delay_seconds,
                probe.period_seconds,
                probe.timeout_seconds,
                probe.failure_threshold,
                probe.success_threshold
            ),
            (Some(5), Some(5), Some(1), Some(3), Some(1)),
            "the runtime's readiness timings"
        );
        assert_eq!(
            (&agent.liveness_probe, &agent.startup_probe),
            (&None, &None)
        );
        let runtime = &pod.containers[0];
        let ready = runtime
            .env
            .iter()
            .flatten()
            .find(|e| e.name == "FASTAGENTIC_AGENT_READY_URL")
            .and_then(|e| e.value.as_deref());
        assert_eq!(
            ready,
            Some(ready_url),
            "what the runtime's /ready checks: {container}"
        );
    }
}

#[test]
fn probes_given_for_the_container_are_used_as_given() {
    let pod = pod(
        &with_container(
            "{image: py:1, readyPath: /ready, readinessProbe: {exec: {command: [check]}, periodSeconds: 7}, \
             livenessProbe: {httpGet: {path: /health, port: agent}}, \
             startupProbe: {httpGet: {path: /ready, port: agent}, periodSeconds: 2, failureThreshold: 90}}",
            "",
        ),
        &BuildInputs::default(),
    );
    let agent = sidecar_of(&pod);
    let ready = agent.readiness_probe.as_ref().expect("readiness");
    assert_eq!(
        ready.exec.as_ref().and_then(|e| e.command.clone()),
        Some(vec!["check".to_string()])
    );
    assert_eq!(ready.http_get, None, "the user's probe, as given");
    assert_eq!(ready.period_seconds, Some(7));
    let live = agent.liveness_probe.as_ref().expect("liveness");
    assert_eq!(
        live.http_get.as_ref().and_then(|g| g.path.as_deref()),
        Some("/health")
    );
    let startup = agent.startup_probe.as_ref().expect("startup");
    assert_eq!(
        (startup.period_seconds, startup.failure_threshold),
        (Some(2), Some(90))
    );
    // Without them: no liveness or startup probe is invented.
    let pod = pod_of_plain_container();
    let agent = sidecar_of(&pod);
    assert_eq!(agent.liveness_probe, None);
    assert_eq!(agent.startup_probe, None);
}

fn pod_of_plain_container() -> PodSpec {
    pod(
        &with_container("{image: py:1}", ""),
        &BuildInputs::default(),
    )
}

#[test]
fn the_container_gets_the_runtimes_security_context_unless_it_gives_one() {
    let plain = pod_of_plain_container();
    let runtime = plain.containers[0].security_context.clone();
    let agent = sidecar_of(&plain).security_context.clone();
    assert_eq!(agent, runtime);
    let agent = agent.expect("a security context");
    assert_eq!(agent.read_only_root_filesystem, Some(true));
    assert_eq!(agent.allow_privilege_escalation, Some(false));
    assert_eq!(agent.run_as_non_root, Some(true));
    assert_eq!(
        agent.capabilities.and_then(|c| c.drop),
        Some(vec!["ALL".to_string()])
    );
    let overridden = pod(
        &with_container(
            "{image: py:1, securityContext: {runAsUser: 1000, readOnlyRootFilesystem: false}}",
            "",
        ),
        &BuildInputs::default(),
    );
    let given = sidecar_of(&overridden)
        .security_context
        .clone()
        .expect("given");
    assert_eq!(given.run_as_user, Some(1000));
    assert_eq!(given.read_only_root_filesystem, Some(false));
    assert_eq!(
        given.capabilities, None,
        "the user's context replaces the default as a whole"
    );
}

#[test]
fn the_service_and_network_policy_reach_the_runtime_port_only() {
    let fa = with_container(
        "{image: py:1}",
        "  networkPolicy: {from: [{podSelector: {}}]}\n",
    );
    let c = children_of(&fa, &BuildInputs::default());
    let ports = c
        .service
        .spec
        .as_ref()
        .and_then(|s| s.ports.clone())
        .unwrap_or_default();
    assert_eq!(ports.len(), 1, "{ports:?}");
    assert_eq!(ports[0].port, 8080);
    assert_eq!(
        ports[0].target_port,
        Some(IntOrString::String("http".into())),
        "the runtime's port, not the agent's"
    );
    let policy = c.network_policy.expect("network policy");
    let admitted: Vec<Option<IntOrString>> = policy
        .spec
        .iter()
        .flat_map(|s| s.ingress.iter().flatten())
        .flat_map(|rule| rule.ports.iter().flatten())
        .map(|p| p.port.clone())
        .collect();
    assert_eq!(admitted, [Some(IntOrString::Int(8080))]);
}

#[test]
fn the_template_hash_covers_the_whole_agent_container() {
    let inputs = BuildInputs::default();
    let base = config_hash(&with_container("{image: \"py:1\"}", ""), &inputs);
    assert_eq!(
        base,
        config_hash(&with_container("{image: \"py:1\"}", ""), &inputs),
        "stable"
    );
    for changed in [
        "{image: \"py:2\"}",
        "{image: \"py:1\", args: [--verbose]}",
        "{image: \"py:1\", env: [{name: A, value: b}]}",
        "{image: \"py:1\", readyPath: /ready}",
        "{image: \"py:1\", replyField: result}",
    ] {
        assert_ne!(
            base,
            config_hash(&with_container(changed, ""), &inputs),
            "{changed} rolls the pods"
        );
    }
}

#[test]
fn secrets_of_the_container_env_are_referenced_and_hashed() {
    let fa = with_container(
        "{image: py:1, env: [{name: A, value: b}, {name: CM, valueFrom: {configMapKeyRef: {name: cm, key: k}}}, \
         {name: OPENAI_API_KEY, valueFrom: {secretKeyRef: {name: llm, key: api-key}}}, \
         {name: EXTRA, valueFrom: {secretKeyRef: {name: extra, key: token, optional: true}}}]}",
        "",
    );
    let uses = referenced_secrets(&fa);
    let found: Vec<(&str, &str, Option<&str>, bool)> = uses
        .iter()
        .map(|u| {
            (
                u.field.as_str(),
                u.name.as_str(),
                u.key.as_deref(),
                u.required,
            )
        })
        .collect();
    assert_eq!(
        found,
        [
            (
                "spec.agent.container.env[2].valueFrom.secretKeyRef",
                "llm",
                Some("api-key"),
                true
            ),
            (
                "spec.agent.container.env[3].valueFrom.secretKeyRef",
                "extra",
                Some("token"),
                false
            ),
        ]
    );
    let at = |version: &str| BuildInputs {
        secret_versions: BTreeMap::from([("llm".to_string(), version.to_string())]),
        ..BuildInputs::default()
    };
    assert_ne!(
        config_hash(&fa, &at("1")),
        config_hash(&fa, &at("2")),
        "rotating the agent's Secret rolls the pods"
    );
}

#[test]
fn duplicate_container_env_names_are_refused_naming_the_entry() {
    let mut fa = with_container("{image: py:1, env: [{name: A, value: b}]}", "");
    let container = fa
        .spec
        .agent
        .as_mut()
        .and_then(|a| a.container.as_mut())
        .expect("container agent");
    let mut env = container.env.clone().unwrap_or_default();
    env.push(env[0].clone());
    container.env = Some(env);
    let err = validate(&fa).expect_err("a duplicate name");
    assert_eq!(err.field, "spec.agent.container.env[1].name");
    assert!(err.message.contains("\"A\""), "{}", err.message);
}

#[test]
fn the_python_example_runs_its_agent_as_a_sidecar_behind_the_runtime() {
    const PYTHON_EXAMPLE: &str = include_str!("../../../../examples/python-agent.yaml");
    let fa = load(PYTHON_EXAMPLE);
    let c = children_of(&fa, &BuildInputs::default());
    let pod = c
        .deployment
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.clone())
        .expect("pod spec");
    let agent = sidecar_of(&pod);
    assert_eq!(agent.image.as_deref(), Some("python-agent:1.2.2"));
    assert_eq!(agent.restart_policy.as_deref(), Some("Always"));
    // It listens on the pod's loopback only; its readiness is the runtime's /ready, which
    // checks its readyPath.
    let command = agent.command.clone().unwrap_or_default().join(" ");
    assert!(command.contains("--host 127.0.0.1"), "{command}");
    let ready = agent
        .readiness_probe
        .as_ref()
        .and_then(|p| p.http_get.as_ref());
    assert_eq!(
        ready.map(|g| (g.path.as_deref(), &g.port)),
        Some((Some("/ready"), &IntOrString::Int(8080)))
    );
    assert_eq!(agent.startup_probe, None);
    let env = env_pairs(container(&c.deployment));
    for want in [
        ("FASTAGENTIC_AGENT", "http"),
        ("FASTAGENTIC_AGENT_URL", "http://127.0.0.1:8000/chat"),
        (
            "FASTAGENTIC_AGENT_STREAM_URL",
            "http://127.0.0.1:8000/chat/stream",
        ),
        ("FASTAGENTIC_AGENT_READY_URL", "http://127.0.0.1:8000/ready"),
        ("FASTAGENTIC_PORT", "8080"),
        ("FASTAGENTIC_DURABLE_STORE", "redis"),
    ] {
        assert!(
            env.contains(&(want.0.to_string(), want.1.to_string())),
            "{want:?} in {env:?}"
        );
    }
}
