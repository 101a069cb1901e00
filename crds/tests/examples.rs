//! Every example parses into the Rust type, is admitted by the generated schema and its CEL rules,
//! and says exactly what the guide's recommended settings say.

// Tests fail loudly on broken fixtures; panicking is the point here.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use common::{examples_dir, read_example, yaml_to_json};
use fastagentic_crd::admission::admit;
use fastagentic_crd::{FastAgentic, ServerKind};

const EXAMPLES: [&str; 8] = [
    "dev.yaml",
    "model-agent.yaml",
    "staging.yaml",
    "production-small.yaml",
    "production-large.yaml",
    "kubernetes-seed.yaml",
    "python-agent.yaml",
    "openai.yaml",
];

fn load(name: &str) -> FastAgentic {
    let text = read_example(name);
    serde_saphyr::from_str::<FastAgentic>(&text)
        .unwrap_or_else(|e| panic!("{name} does not parse into FastAgentic: {e}"))
}

#[test]
fn the_example_list_is_complete() {
    let mut on_disk: Vec<String> = std::fs::read_dir(examples_dir())
        .expect("examples/ exists")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml") && !n.contains("compose"))
        .collect();
    on_disk.sort();
    let mut listed: Vec<String> = EXAMPLES.iter().map(|s| s.to_string()).collect();
    listed.sort();
    assert_eq!(
        on_disk, listed,
        "a FastAgentic example is not covered by the tests"
    );
}

#[test]
fn every_example_parses_and_is_admitted() {
    for name in EXAMPLES {
        let fa = load(name);
        assert!(!fa.spec.image.is_empty(), "{name}: image");
        let json = yaml_to_json(&read_example(name));
        if let Err(errors) = admit(&json) {
            panic!("{name} is rejected: {errors}");
        }
        // What the API server stores after defaulting is what the Rust type reads.
        let round = serde_json::to_value(&fa).expect("serializes");
        admit(&round).unwrap_or_else(|e| panic!("{name} after defaulting: {e}"));
    }
}

#[test]
fn dev_is_fastagentic_run_reload() {
    let s = load("dev.yaml").spec;
    assert_eq!(s.server, ServerKind::Uvicorn);
    assert!(s.reload);
    assert_eq!(s.workers, 1);
    assert_eq!(s.max_concurrent, None, "unlimited");
    assert_eq!(s.port, 8000);
}

#[test]
fn staging_is_gunicorn_2_workers_max_concurrent_50() {
    let s = load("staging.yaml").spec;
    assert_eq!(s.server, ServerKind::Gunicorn);
    assert_eq!(s.workers, 2);
    assert_eq!(s.max_concurrent, Some(50));
    assert!(!s.reload);
    assert!(s.redis.is_none() && s.database.is_none());
}

#[test]
fn production_small_is_4_workers_100_concurrent_redis_pool_20() {
    let s = load("production-small.yaml").spec;
    assert_eq!(s.server, ServerKind::Gunicorn);
    assert_eq!(s.workers, 4);
    assert_eq!(s.max_concurrent, Some(100));
    let redis = s.redis.as_ref().expect("redis");
    assert_eq!(redis.pool_size, 20);
    assert_eq!(redis.pool_timeout_seconds, 5.0);
    assert_eq!(s.timeouts.graceful_shutdown_seconds, 30);
    assert_eq!(s.max_redis_connections(), Some(3 * 4 * 20));
}

#[test]
fn production_large_matches_the_guide() {
    let s = load("production-large.yaml").spec;
    assert_eq!(s.server, ServerKind::Gunicorn);
    assert_eq!(s.workers, 8);
    assert_eq!(s.max_concurrent, Some(200));
    assert_eq!(s.redis.as_ref().expect("redis").pool_size, 30);
    let db = s.database.as_ref().expect("database");
    assert_eq!(db.pool_size, 15);
    assert_eq!(db.max_overflow, 30);
    assert_eq!(db.pool_recycle_seconds, 1800);
    assert!(db.pre_ping);
    assert_eq!(s.timeouts.graceful_shutdown_seconds, 60);
    assert_eq!(s.timeouts.keep_alive_seconds, 5);
    assert_eq!(s.max_redis_connections(), Some(10 * 8 * 30));
    assert_eq!(s.max_database_connections(), Some(10 * 8 * (15 + 30)));
}

#[test]
fn kubernetes_seed_matches_the_guides_manifests() {
    let fa = load("kubernetes-seed.yaml");
    assert_eq!(fa.metadata.name.as_deref(), Some("fastagentic-agent"));
    let s = fa.spec;
    assert_eq!(s.image, "your-agent:latest");
    assert_eq!(s.server, ServerKind::Gunicorn);
    assert_eq!(s.workers, 2);
    assert_eq!(s.max_concurrent, Some(50));
    assert_eq!(s.port, 8000);
    let hpa = s.autoscaling.as_ref().expect("autoscaling");
    assert_eq!((hpa.min_replicas, hpa.max_replicas), (2, 10));
    assert_eq!(hpa.target_cpu_utilization_percentage, 70);
    assert_eq!(hpa.target_memory_utilization_percentage, 80);
    let redis = s.redis.as_ref().expect("redis");
    assert_eq!(redis.url.as_deref(), Some("redis://redis:6379"));
    assert_eq!(redis.pool_size, 10);
    let req = s.resources.requests.as_ref().expect("requests");
    let lim = s.resources.limits.as_ref().expect("limits");
    assert_eq!(req["memory"].0, "256Mi");
    assert_eq!(req["cpu"].0, "250m");
    assert_eq!(lim["memory"].0, "512Mi");
    assert_eq!(lim["cpu"].0, "1000m");
    let live = s.probes.liveness.as_ref().expect("liveness");
    assert_eq!(live.path.as_deref(), Some("/health"));
    assert_eq!(
        (live.initial_delay_seconds, live.period_seconds),
        (Some(10), Some(10))
    );
    let ready = s.probes.readiness.as_ref().expect("readiness");
    assert_eq!(ready.path.as_deref(), Some("/ready"));
    assert_eq!(
        (ready.initial_delay_seconds, ready.period_seconds),
        (Some(5), Some(5))
    );
}

#[test]
fn omitted_fields_take_the_guides_defaults() {
    let fa: FastAgentic = serde_saphyr::from_str(
        "apiVersion: fastagentic.io/v1alpha1\nkind: FastAgentic\nmetadata:\n  name: a\nspec:\n  image: x\n",
    )
    .expect("minimal resource parses");
    let s = fa.spec;
    assert_eq!(s.server, ServerKind::Uvicorn);
    assert_eq!(s.workers, 1);
    assert_eq!(s.port, 8000);
    assert_eq!(s.max_concurrent, None);
    assert!(!s.reload);
    assert_eq!(s.timeouts.keep_alive_seconds, 5);
    assert_eq!(s.timeouts.graceful_shutdown_seconds, 30);
    assert_eq!(s.resources, fastagentic_crd::default_resources());
    assert_eq!(s.max_pods(), 1);
}

#[test]
fn model_agent_scales_on_concurrency_alone() {
    let s = load("model-agent.yaml").spec;
    assert_eq!(s.max_concurrent, Some(20));
    let a = s.autoscaling.expect("autoscaling");
    assert_eq!(a.target_concurrency_utilization_percentage, Some(70));
    assert_eq!(a.target_cpu_utilization_percentage, 0);
    assert_eq!(a.target_memory_utilization_percentage, 0);
    assert!(
        a.behavior.is_none(),
        "the operator's default behavior applies"
    );
}

#[test]
fn python_agent_runs_its_container_next_to_the_runtime_with_redis() {
    let s = load("python-agent.yaml").spec;
    let c = s
        .agent
        .as_ref()
        .and_then(|a| a.container.as_ref())
        .expect("agent.container");
    assert_eq!(c.image, "python-agent:1.2.2");
    assert_eq!(
        c.command.as_deref().unwrap_or_default(),
        [
            "fastagentic",
            "run",
            "app:app",
            "--host",
            "127.0.0.1",
            "--port",
            "8000"
        ]
    );
    assert_eq!(c.port, 8000);
    assert_ne!(s.port, c.port, "the runtime has a port of its own");
    assert_eq!(c.path, "/chat");
    assert_eq!(c.stream_path.as_deref(), Some("/chat/stream"));
    assert_eq!(c.ready_path.as_deref(), Some("/ready"));
    // On the pod's loopback only: no kubelet probe could reach it; the runtime's /ready checks
    // its readyPath.
    assert!(c.readiness_probe.is_none() && c.liveness_probe.is_none() && c.startup_probe.is_none());
    assert!(
        s.network_policy.is_none(),
        "no policy needed to close the agent's port"
    );
    assert!(c.resources.as_ref().is_some_and(|r| r.limits.is_some()));
    assert_eq!(s.durable_store, Some(fastagentic_crd::DurableStore::Redis));
    assert_eq!(
        s.redis.and_then(|r| r.url).as_deref(),
        Some("redis://redis:6379")
    );
}

#[test]
fn openai_takes_its_key_from_a_secret() {
    let text = read_example("openai.yaml");
    let s = load("openai.yaml").spec;
    let o = s
        .agent
        .as_ref()
        .and_then(|a| a.openai.as_ref())
        .expect("agent.openai");
    assert!(o.model.is_some());
    assert_eq!(
        (
            o.api_key_secret_ref.name.as_str(),
            o.api_key_secret_ref.key.as_str()
        ),
        ("openai", "api-key")
    );
    assert!(
        text.contains("kubectl create secret generic openai --from-literal=api-key="),
        "the example shows how to create the Secret"
    );
    assert!(
        !text.contains("kind: Secret"),
        "no Secret with a key in the example"
    );
}
