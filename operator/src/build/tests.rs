//! Builder tests, driven by the repository's `examples/` and small inline resources.

use std::collections::BTreeMap;

use fastagentic_crd::FastAgentic;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Container, EnvVar, Probe};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::*;
use crate::labels::{
    LABEL_COMPONENT, LABEL_INSTANCE, LABEL_MANAGED_BY, LABEL_NAME, LABEL_PART_OF, selector_labels,
};

const SEED: &str = include_str!("../../../examples/kubernetes-seed.yaml");
const DEV: &str = include_str!("../../../examples/dev.yaml");
const STAGING: &str = include_str!("../../../examples/staging.yaml");
const PROD_SMALL: &str = include_str!("../../../examples/production-small.yaml");
const PROD_LARGE: &str = include_str!("../../../examples/production-large.yaml");
const MODEL_AGENT: &str = include_str!("../../../examples/model-agent.yaml");

/// Parses one document the way `render` does (admission checks and schema defaults).
pub(super) fn load(yaml: &str) -> FastAgentic {
    let mut docs = crate::render::parse(yaml).expect("test resource must be admitted");
    assert_eq!(docs.len(), 1, "one document per test resource");
    docs.remove(0)
}

pub(super) fn children_of(fa: &FastAgentic, inputs: &BuildInputs) -> Children {
    let v = validate(fa).expect("test resource must validate");
    build_children(&v, inputs).expect("build must succeed")
}

pub(super) fn container(d: &Deployment) -> &Container {
    let pod = d
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .expect("pod spec");
    assert_eq!(pod.containers.len(), 1);
    &pod.containers[0]
}

/// `(name, value)` for plain variables, `(name, "<from ...>")` for references.
pub(super) fn env_pairs(c: &Container) -> Vec<(String, String)> {
    c.env
        .iter()
        .flatten()
        .map(|e: &EnvVar| {
            let v = match (&e.value, &e.value_from) {
                (Some(v), _) => v.clone(),
                (None, Some(from)) => match (&from.field_ref, &from.secret_key_ref) {
                    (Some(f), _) => format!("<field {}>", f.field_path),
                    (_, Some(s)) => format!("<secret {}/{}>", s.name, s.key),
                    _ => "<other>".into(),
                },
                (None, None) => String::new(),
            };
            (e.name.clone(), v)
        })
        .collect()
}

pub(super) fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

fn http_probe(p: &Probe) -> (String, i32, i32, i32, i32, i32) {
    let get = p.http_get.as_ref().expect("HTTP probe");
    assert_eq!(get.port, IntOrString::Int(8000));
    (
        get.path.clone().unwrap_or_default(),
        p.initial_delay_seconds.unwrap_or(-1),
        p.period_seconds.unwrap_or(-1),
        p.timeout_seconds.unwrap_or(-1),
        p.failure_threshold.unwrap_or(-1),
        p.success_threshold.unwrap_or(-1),
    )
}

#[test]
fn seed_deployment_env_is_exactly_the_guides() {
    let c = children_of(&load(SEED), &BuildInputs::default());
    let agent = container(&c.deployment);
    assert_eq!(agent.name, "agent");
    assert_eq!(agent.image.as_deref(), Some("your-agent:latest"));
    assert_eq!(
        agent.command,
        Some(vec!["fastagentic".to_string(), "run".to_string()])
    );
    assert_eq!(agent.args, None);
    assert_eq!(
        env_pairs(agent),
        pairs(&[
            ("FASTAGENTIC_SERVER", "gunicorn"),
            ("FASTAGENTIC_HOST", "0.0.0.0"),
            ("FASTAGENTIC_PORT", "8000"),
            ("FASTAGENTIC_WORKERS", "2"),
            ("FASTAGENTIC_MAX_CONCURRENT", "50"),
            ("FASTAGENTIC_INSTANCE_ID", "<field metadata.name>"),
            ("FASTAGENTIC_TIMEOUT_KEEP_ALIVE", "5"),
            ("FASTAGENTIC_TIMEOUT_GRACEFUL_SHUTDOWN", "30"),
            ("REDIS_URL", "redis://redis:6379"),
            ("FASTAGENTIC_REDIS_POOL_SIZE", "10"),
            ("FASTAGENTIC_REDIS_POOL_TIMEOUT", "5.0"),
        ])
    );
    let instance = agent
        .env
        .iter()
        .flatten()
        .find(|e| e.name == "FASTAGENTIC_INSTANCE_ID")
        .and_then(|e| e.value_from.as_ref())
        .and_then(|f| f.field_ref.as_ref())
        .expect("downward API");
    assert_eq!(instance.field_path, "metadata.name");
    assert_eq!(instance.api_version.as_deref(), Some("v1"));
}

#[test]
fn seed_probes_resources_ports_and_security() {
    let c = children_of(&load(SEED), &BuildInputs::default());
    let agent = container(&c.deployment);
    assert_eq!(
        http_probe(agent.liveness_probe.as_ref().expect("liveness")),
        ("/health".into(), 10, 10, 1, 3, 1)
    );
    assert_eq!(
        http_probe(agent.readiness_probe.as_ref().expect("readiness")),
        ("/ready".into(), 5, 5, 1, 3, 1)
    );
    assert_eq!(
        http_probe(agent.startup_probe.as_ref().expect("startup")),
        ("/health".into(), 0, 2, 1, 30, 1)
    );
    let res = agent.resources.as_ref().expect("resources");
    let q =
        |m: &Option<BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>,
         k: &str| { m.as_ref().and_then(|m| m.get(k)).map(|q| q.0.clone()) };
    assert_eq!(q(&res.requests, "memory").as_deref(), Some("256Mi"));
    assert_eq!(q(&res.requests, "cpu").as_deref(), Some("250m"));
    assert_eq!(q(&res.limits, "memory").as_deref(), Some("512Mi"));
    assert_eq!(q(&res.limits, "cpu").as_deref(), Some("1000m"));

    let ports = agent.ports.as_ref().expect("ports");
    assert_eq!(ports.len(), 1);
    assert_eq!(ports[0].name.as_deref(), Some("http"));
    assert_eq!(ports[0].container_port, 8000);

    let sc = agent
        .security_context
        .as_ref()
        .expect("container securityContext");
    assert_eq!(sc.run_as_non_root, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(
        sc.capabilities.as_ref().and_then(|c| c.drop.clone()),
        Some(vec!["ALL".to_string()])
    );
    let pod = c
        .deployment
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .expect("pod");
    let psc = pod.security_context.as_ref().expect("pod securityContext");
    assert_eq!(psc.run_as_user, Some(65532));
    assert_eq!(psc.run_as_non_root, Some(true));
    assert_eq!(
        psc.seccomp_profile.as_ref().map(|s| s.type_.as_str()),
        Some("RuntimeDefault")
    );
    assert_eq!(
        pod.termination_grace_period_seconds,
        Some(45),
        "drain delay 5 s + graceful 30 s + 10 s"
    );
    let pre_stop = agent
        .lifecycle
        .as_ref()
        .and_then(|l| l.pre_stop.as_ref())
        .and_then(|h| h.sleep.as_ref())
        .map(|s| s.seconds);
    assert_eq!(pre_stop, Some(5), "a 5 s preStop sleep by default");
    let mounts = agent.volume_mounts.as_ref().expect("mounts");
    assert_eq!(mounts[0].mount_path, "/tmp");
    assert!(
        pod.volumes.as_ref().expect("volumes")[0]
            .empty_dir
            .is_some()
    );
}

#[test]
fn seed_hpa_service_labels_and_strategy() {
    let c = children_of(&load(SEED), &BuildInputs::default());
    let spec = c.deployment.spec.as_ref().expect("deployment spec");
    assert_eq!(
        spec.replicas,
        Some(2),
        "a new autoscaled Deployment starts at minReplicas"
    );
    let existing = BuildInputs {
        current_replicas: Some(5),
        ..BuildInputs::default()
    };
    let again = children_of(&load(SEED), &existing);
    assert_eq!(
        again.deployment.spec.as_ref().and_then(|s| s.replicas),
        None,
        "an existing autoscaled Deployment: replicas are the HPA's"
    );
    let strategy = spec
        .strategy
        .as_ref()
        .and_then(|s| s.rolling_update.as_ref())
        .expect("rolling");
    assert_eq!(strategy.max_unavailable, Some(IntOrString::Int(0)));
    assert_eq!(strategy.max_surge, Some(IntOrString::String("25%".into())));
    assert_eq!(
        spec.selector.match_labels,
        Some(BTreeMap::from([
            (LABEL_NAME.to_string(), "fastagentic".to_string()),
            (LABEL_INSTANCE.to_string(), "fastagentic-agent".to_string()),
        ]))
    );
    let pod_labels = spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .expect("labels");
    assert_eq!(
        pod_labels.get(LABEL_MANAGED_BY).map(String::as_str),
        Some("fastagentic-operator")
    );
    assert_eq!(
        pod_labels.get(LABEL_PART_OF).map(String::as_str),
        Some("fastagentic")
    );
    assert_eq!(
        pod_labels.get(LABEL_COMPONENT).map(String::as_str),
        Some("agent-server")
    );
    let annotations = spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.annotations.clone())
        .expect("annotations");
    assert_eq!(
        annotations.get(ANNOTATION_CONFIG_HASH).map(String::len),
        Some(64)
    );

    let hpa = c.hpa.as_ref().expect("HPA");
    assert_eq!(hpa.metadata.name.as_deref(), Some("fastagentic-agent"));
    let hs = hpa.spec.as_ref().expect("HPA spec");
    assert_eq!((hs.min_replicas, hs.max_replicas), (Some(2), 10));
    assert_eq!(hs.scale_target_ref.kind, "Deployment");
    assert_eq!(hs.scale_target_ref.name, "fastagentic-agent");
    assert_eq!(hs.scale_target_ref.api_version.as_deref(), Some("apps/v1"));
    let metrics: Vec<(String, String, Option<i32>)> = hs
        .metrics
        .iter()
        .flatten()
        .map(|m| {
            let r = m.resource.as_ref().expect("resource metric");
            (
                r.name.clone(),
                r.target.type_.clone(),
                r.target.average_utilization,
            )
        })
        .collect();
    assert_eq!(
        metrics,
        vec![
            ("cpu".into(), "Utilization".into(), Some(70)),
            ("memory".into(), "Utilization".into(), Some(80)),
        ]
    );

    let svc = c.service.spec.as_ref().expect("service spec");
    assert_eq!(svc.type_.as_deref(), Some("ClusterIP"));
    let port = &svc.ports.as_ref().expect("ports")[0];
    assert_eq!(port.name.as_deref(), Some("http"));
    assert_eq!(port.port, 8000);
    assert_eq!(port.target_port, Some(IntOrString::String("http".into())));
    assert_eq!(svc.selector, spec.selector.match_labels);
    assert!(c.pdb.is_none(), "the seed asks for no disruption budget");
    for name in [
        c.deployment.metadata.name.as_deref(),
        c.service.metadata.name.as_deref(),
    ] {
        assert_eq!(name, Some("fastagentic-agent"));
    }
}

#[test]
fn dev_reload_replicas_and_no_hpa() {
    let c = children_of(&load(DEV), &BuildInputs::default());
    let agent = container(&c.deployment);
    let env = env_pairs(agent);
    assert!(
        env.contains(&("FASTAGENTIC_RELOAD".into(), "true".into())),
        "{env:?}"
    );
    assert!(env.contains(&("FASTAGENTIC_SERVER".into(), "uvicorn".into())));
    assert!(
        !env.iter().any(|(n, _)| n == "FASTAGENTIC_MAX_CONCURRENT"),
        "unset means unlimited"
    );
    assert!(
        !env.iter()
            .any(|(n, _)| n.starts_with("FASTAGENTIC_REDIS") || n == "REDIS_URL")
    );
    assert!(
        !env.iter()
            .any(|(n, _)| n.starts_with("FASTAGENTIC_DB") || n == "DATABASE_URL")
    );
    assert_eq!(agent.image_pull_policy.as_deref(), Some("Always"));
    assert_eq!(c.deployment.spec.as_ref().and_then(|s| s.replicas), Some(1));
    assert!(c.hpa.is_none());
    assert!(c.pdb.is_none());
}

#[test]
fn staging_and_production_small() {
    let staging = children_of(&load(STAGING), &BuildInputs::default());
    assert_eq!(
        staging.deployment.spec.as_ref().and_then(|s| s.replicas),
        Some(2)
    );
    assert!(staging.hpa.is_none());
    assert!(staging.pdb.is_none(), "no disruptionBudget asked");
    let env = env_pairs(container(&staging.deployment));
    assert!(env.contains(&("FASTAGENTIC_WORKERS".into(), "2".into())));
    assert!(env.contains(&("FASTAGENTIC_MAX_CONCURRENT".into(), "50".into())));

    let small = children_of(&load(PROD_SMALL), &BuildInputs::default());
    assert_eq!(
        small.deployment.spec.as_ref().and_then(|s| s.replicas),
        Some(3)
    );
    let env = env_pairs(container(&small.deployment));
    assert!(env.contains(&("FASTAGENTIC_REDIS_POOL_SIZE".into(), "20".into())));
    assert!(env.contains(&("REDIS_URL".into(), "redis://redis:6379/0".into())));
    let pdb = small.pdb.as_ref().expect("PDB");
    let ps = pdb.spec.as_ref().expect("PDB spec");
    assert_eq!(ps.max_unavailable, Some(IntOrString::Int(1)));
    assert_eq!(ps.min_available, None);
    assert_eq!(
        ps.selector.as_ref().and_then(|s| s.match_labels.clone()),
        Some(selector_labels("agent-production-small"))
    );
}

#[test]
fn production_large_secrets_by_reference_and_db_pool() {
    let c = children_of(&load(PROD_LARGE), &BuildInputs::default());
    let env = env_pairs(container(&c.deployment));
    let want = pairs(&[
        ("FASTAGENTIC_SERVER", "gunicorn"),
        ("FASTAGENTIC_HOST", "0.0.0.0"),
        ("FASTAGENTIC_PORT", "8000"),
        ("FASTAGENTIC_WORKERS", "8"),
        ("FASTAGENTIC_MAX_CONCURRENT", "200"),
        ("FASTAGENTIC_INSTANCE_ID", "<field metadata.name>"),
        ("FASTAGENTIC_TIMEOUT_KEEP_ALIVE", "5"),
        ("FASTAGENTIC_TIMEOUT_GRACEFUL_SHUTDOWN", "60"),
        ("FASTAGENTIC_DURABLE_STORE", "postgres"),
        ("REDIS_URL", "<secret agent-stores/redis-url>"),
        ("FASTAGENTIC_REDIS_POOL_SIZE", "30"),
        ("FASTAGENTIC_REDIS_POOL_TIMEOUT", "5.0"),
        ("DATABASE_URL", "<secret agent-stores/database-url>"),
        ("FASTAGENTIC_DB_POOL_SIZE", "15"),
        ("FASTAGENTIC_DB_MAX_OVERFLOW", "30"),
        ("FASTAGENTIC_DB_POOL_RECYCLE", "1800"),
        ("FASTAGENTIC_DB_POOL_PRE_PING", "true"),
        ("FASTAGENTIC_DB_POOL_TIMEOUT", "30.0"),
    ]);
    assert_eq!(env, want);
    let pod = c
        .deployment
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .expect("pod");
    assert_eq!(
        pod.termination_grace_period_seconds,
        Some(75),
        "drain delay 5 s + graceful 60 s + 10 s"
    );
    let hs = c.hpa.as_ref().and_then(|h| h.spec.as_ref()).expect("HPA");
    assert_eq!((hs.min_replicas, hs.max_replicas), (Some(3), 10));
    assert!(c.pdb.is_some(), "10 pods possible and a budget asked");
    assert_eq!(
        referenced_secrets(&load(PROD_LARGE))
            .iter()
            .map(|u| (u.field.as_str(), u.name.as_str()))
            .collect::<Vec<_>>(),
        vec![
            ("spec.redis.urlSecretRef", "agent-stores"),
            ("spec.database.urlSecretRef", "agent-stores"),
        ]
    );
}

#[test]
fn no_secret_value_in_any_object() {
    // The builders only ever see Secret names and versions; prove the serialized objects carry
    // nothing that looks like the planted value even when the resource's own inline env has a
    // reference to it.
    const PLANTED: &str = "s3cr3t-planted-value";
    let fa = load(PROD_LARGE);
    let inputs = BuildInputs {
        secret_versions: BTreeMap::from([("agent-stores".to_string(), "4711".to_string())]),
        current_replicas: None,
        ..BuildInputs::default()
    };
    let c = children_of(&fa, &inputs);
    let text = serde_json::to_string(&(&c.deployment, &c.service, &c.hpa, &c.pdb)).expect("json");
    assert!(!text.contains(PLANTED));
    assert!(
        !text.contains("postgres://"),
        "no URL from a Secret is copied"
    );
    assert!(text.contains("\"secretKeyRef\""), "the URLs are references");
}

#[test]
fn config_hash_rolls_on_secret_rotation_and_spec_change_only() {
    let fa = load(PROD_LARGE);
    let hash = |fa: &FastAgentic, version: &str| {
        let inputs = BuildInputs {
            secret_versions: BTreeMap::from([("agent-stores".to_string(), version.to_string())]),
            current_replicas: None,
            ..BuildInputs::default()
        };
        let d = children_of(fa, &inputs).deployment;
        d.spec
            .and_then(|s| s.template.metadata)
            .and_then(|m| m.annotations)
            .and_then(|a| a.get(ANNOTATION_CONFIG_HASH).cloned())
            .expect("config hash")
    };
    let base = hash(&fa, "1");
    assert_eq!(base, hash(&fa, "1"), "stable for the same input");
    assert_ne!(base, hash(&fa, "2"), "a rotated Secret rolls the pods");
    let mut more_workers = fa.clone();
    more_workers.spec.workers = 9;
    assert_ne!(
        base,
        hash(&more_workers, "1"),
        "a spec change rolls the pods"
    );
}

#[test]
fn applied_hash_is_stamped_and_tracks_content() {
    let fa = load(STAGING);
    let a = children_of(&fa, &BuildInputs::default());
    let get = |m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
        m.annotations
            .as_ref()
            .and_then(|a| a.get(ANNOTATION_APPLIED_HASH).cloned())
            .expect("hash")
    };
    assert_eq!(
        get(&a.deployment.metadata),
        applied_hash(&a.deployment).expect("hash")
    );
    let mut changed = fa.clone();
    changed.spec.replicas = Some(5);
    let b = children_of(&changed, &BuildInputs::default());
    assert_ne!(get(&a.deployment.metadata), get(&b.deployment.metadata));
    assert_eq!(
        get(&a.service.metadata),
        get(&b.service.metadata),
        "the Service did not change"
    );
}

pub(super) const BASE: &str = "apiVersion: fastagentic.io/v1alpha1\nkind: FastAgentic\nmetadata:\n  name: a\n  namespace: ns\nspec:\n  image: img:1\n";

#[test]
fn user_env_comes_after_ours_and_replaces_same_name() {
    let fa = load(&format!(
        "{BASE}  env:\n  - name: OPENAI_API_KEY\n    valueFrom:\n      secretKeyRef: {{name: keys, key: openai}}\n  - name: FASTAGENTIC_WORKERS\n    value: \"3\"\n  envFrom:\n  - configMapRef: {{name: extra}}\n"
    ));
    let c = children_of(&fa, &BuildInputs::default());
    let agent = container(&c.deployment);
    let names: Vec<String> = env_pairs(agent).into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names.iter().filter(|n| *n == "FASTAGENTIC_WORKERS").count(),
        1
    );
    assert_eq!(
        &names[names.len() - 2..],
        ["OPENAI_API_KEY", "FASTAGENTIC_WORKERS"]
    );
    assert!(env_pairs(agent).contains(&("FASTAGENTIC_WORKERS".into(), "3".into())));
    assert_eq!(agent.env_from.as_ref().map(Vec::len), Some(1));
    let uses = referenced_secrets(&fa);
    assert_eq!(uses.len(), 1);
    assert_eq!(uses[0].field, "spec.env[0].valueFrom.secretKeyRef");
}

#[test]
fn probe_overrides_field_by_field_and_disable() {
    let fa = load(&format!(
        "{BASE}  probes:\n    liveness: {{periodSeconds: 20}}\n    readiness: {{path: /ready/deep, timeoutSeconds: 3}}\n    startup: {{disabled: true}}\n"
    ));
    let c = children_of(&fa, &BuildInputs::default());
    let agent = container(&c.deployment);
    assert_eq!(
        http_probe(agent.liveness_probe.as_ref().expect("liveness")),
        ("/health".into(), 10, 20, 1, 3, 1)
    );
    assert_eq!(
        http_probe(agent.readiness_probe.as_ref().expect("readiness")),
        ("/ready/deep".into(), 5, 5, 3, 3, 1)
    );
    assert!(agent.startup_probe.is_none());
}

#[test]
fn placement_fields_pass_through_and_labels_cannot_be_overridden() {
    let fa = load(&format!(
        "{BASE}  nodeSelector: {{pool: agents}}\n  serviceAccountName: agent-sa\n  priorityClassName: high\n  imagePullSecrets: [{{name: regcred}}]\n  tolerations: [{{key: dedicated, operator: Equal, value: agents, effect: NoSchedule}}]\n  labels: {{team: ai, app.kubernetes.io/name: evil}}\n  annotations: {{prometheus.io/scrape: \"true\"}}\n  command: [/bin/agent]\n  args: [--verbose]\n"
    ));
    let c = children_of(&fa, &BuildInputs::default());
    let spec = c.deployment.spec.as_ref().expect("spec");
    let pod = spec.template.spec.as_ref().expect("pod");
    assert_eq!(
        pod.node_selector
            .as_ref()
            .and_then(|m| m.get("pool"))
            .map(String::as_str),
        Some("agents")
    );
    assert_eq!(pod.service_account_name.as_deref(), Some("agent-sa"));
    assert_eq!(pod.priority_class_name.as_deref(), Some("high"));
    assert_eq!(pod.image_pull_secrets.as_ref().map(Vec::len), Some(1));
    assert_eq!(pod.tolerations.as_ref().map(Vec::len), Some(1));
    let meta = spec.template.metadata.as_ref().expect("meta");
    let labels = meta.labels.as_ref().expect("labels");
    assert_eq!(labels.get("team").map(String::as_str), Some("ai"));
    assert_eq!(
        labels.get(LABEL_NAME).map(String::as_str),
        Some("fastagentic")
    );
    assert!(
        meta.annotations
            .as_ref()
            .expect("annotations")
            .contains_key("prometheus.io/scrape")
    );
    let agent = container(&c.deployment);
    assert_eq!(agent.command, Some(vec!["/bin/agent".to_string()]));
    assert_eq!(agent.args, Some(vec!["--verbose".to_string()]));
    assert_eq!(c.deployment.metadata.namespace.as_deref(), Some("ns"));
}

#[test]
fn memory_target_zero_means_cpu_only_and_pdb_needs_two_pods() {
    let fa = load(&format!(
        "{BASE}  autoscaling: {{minReplicas: 1, maxReplicas: 1, targetMemoryUtilizationPercentage: 0}}\n  disruptionBudget: {{}}\n"
    ));
    let c = children_of(&fa, &BuildInputs::default());
    let metrics = c
        .hpa
        .as_ref()
        .and_then(|h| h.spec.as_ref())
        .and_then(|s| s.metrics.clone())
        .expect("metrics");
    assert_eq!(metrics.len(), 1);
    assert_eq!(
        metrics[0].resource.as_ref().map(|r| r.name.as_str()),
        Some("cpu")
    );
    assert!(
        c.pdb.is_none(),
        "a budget over at most one pod protects nothing"
    );

    let fa = load(&format!(
        "{BASE}  replicas: 2\n  disruptionBudget: {{minAvailable: 50%}}\n"
    ));
    let ps = children_of(&fa, &BuildInputs::default())
        .pdb
        .and_then(|p| p.spec)
        .expect("PDB");
    assert_eq!(ps.min_available, Some(IntOrString::String("50%".into())));
    assert_eq!(ps.max_unavailable, None);
}

#[test]
fn drain_delay_sets_the_pre_stop_sleep_and_the_grace_period() {
    let pod_of = |yaml: &str| {
        let c = children_of(&load(yaml), &BuildInputs::default());
        c.deployment
            .spec
            .and_then(|s| s.template.spec)
            .expect("pod spec")
    };
    let pod = pod_of(&format!(
        "{BASE}  timeouts: {{drainDelaySeconds: 12, gracefulShutdownSeconds: 20}}\n"
    ));
    let sleep = pod.containers[0]
        .lifecycle
        .as_ref()
        .and_then(|l| l.pre_stop.as_ref())
        .and_then(|h| h.sleep.as_ref())
        .map(|s| s.seconds);
    assert_eq!(sleep, Some(12));
    assert_eq!(pod.termination_grace_period_seconds, Some(12 + 20 + 10));

    let pod = pod_of(&format!("{BASE}  timeouts: {{drainDelaySeconds: 0}}\n"));
    assert_eq!(
        pod.containers[0].lifecycle, None,
        "0 turns the preStop sleep off"
    );
    assert_eq!(pod.termination_grace_period_seconds, Some(30 + 10));
}

#[test]
fn agent_time_limits_are_rendered_only_when_set() {
    let env_of = |yaml: &str| {
        let c = children_of(&load(yaml), &BuildInputs::default());
        env_pairs(container(&c.deployment))
    };
    let limits = [
        "FASTAGENTIC_AGENT_FIRST_BYTE_TIMEOUT",
        "FASTAGENTIC_STREAM_IDLE_TIMEOUT",
        "FASTAGENTIC_RUN_MAX_DURATION",
        "FASTAGENTIC_STREAM_HEARTBEAT",
    ];
    let unset = env_of(BASE);
    assert!(
        unset
            .iter()
            .all(|(name, _)| !limits.contains(&name.as_str())),
        "unset fields leave the runtime's defaults: {unset:?}"
    );

    let all = env_of(&format!(
        "{BASE}  timeouts: {{agentFirstByteSeconds: 20, streamIdleSeconds: 45, runMaxSeconds: 600, streamHeartbeatSeconds: 10}}\n"
    ));
    let rendered: Vec<(String, String)> = all
        .into_iter()
        .filter(|(name, _)| limits.contains(&name.as_str()))
        .collect();
    assert_eq!(
        rendered,
        pairs(&[
            ("FASTAGENTIC_AGENT_FIRST_BYTE_TIMEOUT", "20"),
            ("FASTAGENTIC_STREAM_IDLE_TIMEOUT", "45"),
            ("FASTAGENTIC_RUN_MAX_DURATION", "600"),
            ("FASTAGENTIC_STREAM_HEARTBEAT", "10"),
        ])
    );

    // 0 is a value (unlimited, off), rendered as such; the other fields stay unset.
    let zeros = env_of(&format!(
        "{BASE}  timeouts: {{runMaxSeconds: 0, streamHeartbeatSeconds: 0}}\n"
    ));
    assert!(zeros.contains(&("FASTAGENTIC_RUN_MAX_DURATION".into(), "0".into())));
    assert!(zeros.contains(&("FASTAGENTIC_STREAM_HEARTBEAT".into(), "0".into())));
    assert!(
        !zeros
            .iter()
            .any(|(name, _)| name == "FASTAGENTIC_AGENT_FIRST_BYTE_TIMEOUT"
                || name == "FASTAGENTIC_STREAM_IDLE_TIMEOUT"),
        "{zeros:?}"
    );
}

#[test]
fn durable_store_and_stream_bounds_are_rendered_only_when_set() {
    let env_of = |yaml: &str| {
        let c = children_of(&load(yaml), &BuildInputs::default());
        env_pairs(container(&c.deployment))
    };
    let ours = [
        "FASTAGENTIC_DURABLE_STORE",
        "FASTAGENTIC_STREAM_EVENTS_MAX",
        "FASTAGENTIC_STREAM_EVENTS_TTL",
    ];
    let unset = env_of(BASE);
    assert!(
        unset.iter().all(|(name, _)| !ours.contains(&name.as_str())),
        "unset fields leave the runtime's choice: {unset:?}"
    );
    let set = env_of(&format!(
        "{BASE}  redis: {{url: \"redis://redis:6379\"}}\n  durableStore: redis\n  streams: {{eventsMax: 500, eventsTtlSeconds: 120}}\n"
    ));
    let rendered: Vec<(String, String)> = set
        .into_iter()
        .filter(|(name, _)| ours.contains(&name.as_str()))
        .collect();
    assert_eq!(
        rendered,
        pairs(&[
            ("FASTAGENTIC_DURABLE_STORE", "redis"),
            ("FASTAGENTIC_STREAM_EVENTS_MAX", "500"),
            ("FASTAGENTIC_STREAM_EVENTS_TTL", "120"),
        ])
    );
    let memory = env_of(&format!("{BASE}  durableStore: memory\n  streams: {{}}\n"));
    assert!(memory.contains(&("FASTAGENTIC_DURABLE_STORE".into(), "memory".into())));
    assert!(
        !memory
            .iter()
            .any(|(name, _)| name.starts_with("FASTAGENTIC_STREAM_EVENTS")),
        "{memory:?}"
    );
}

#[test]
fn the_agent_is_rendered_with_its_key_by_reference() {
    let env_of = |agent: &str| {
        let fa = load(&format!("{BASE}  agent: {agent}\n"));
        let c = children_of(&fa, &BuildInputs::default());
        let ours = [
            "FASTAGENTIC_AGENT",
            "FASTAGENTIC_ECHO_DELAY_MS",
            "FASTAGENTIC_AGENT_URL",
        ];
        let env: Vec<(String, String)> = env_pairs(container(&c.deployment))
            .into_iter()
            .filter(|(n, _)| {
                ours.contains(&n.as_str()) || n.starts_with("OPENAI_") || n == "FASTAGENTIC_MODEL"
            })
            .collect();
        (env, referenced_secrets(&fa))
    };
    let (env, secrets) = env_of("{echo: {delayMs: 250}}");
    assert_eq!(
        env,
        pairs(&[
            ("FASTAGENTIC_AGENT", "echo"),
            ("FASTAGENTIC_ECHO_DELAY_MS", "250")
        ])
    );
    assert!(secrets.is_empty());
    let (env, _) = env_of("{http: {url: \"http://agent:9000/chat\"}}");
    assert_eq!(
        env,
        pairs(&[
            ("FASTAGENTIC_AGENT", "http"),
            ("FASTAGENTIC_AGENT_URL", "http://agent:9000/chat")
        ])
    );
    let (env, secrets) = env_of(
        "{openai: {model: gpt-4.1, baseUrl: \"https://llm.example.com/v1\", apiKeySecretRef: {name: openai, key: api-key}}}",
    );
    assert_eq!(
        env,
        pairs(&[
            ("FASTAGENTIC_AGENT", "openai"),
            ("FASTAGENTIC_MODEL", "gpt-4.1"),
            ("OPENAI_BASE_URL", "https://llm.example.com/v1"),
            ("OPENAI_API_KEY", "<secret openai/api-key>"),
        ])
    );
    assert_eq!(secrets.len(), 1);
    assert_eq!(secrets[0].field, "spec.agent.openai.apiKeySecretRef");
    assert_eq!(
        (secrets[0].name.as_str(), secrets[0].key.as_deref()),
        ("openai", Some("api-key"))
    );
    // A variable of spec.env still wins over the rendered one.
    let fa = load(&format!(
        "{BASE}  agent: {{echo: {{delayMs: 5}}}}\n  env: [{{name: FASTAGENTIC_ECHO_DELAY_MS, value: \"9\"}}]\n"
    ));
    let env = env_pairs(container(
        &children_of(&fa, &BuildInputs::default()).deployment,
    ));
    assert!(env.contains(&("FASTAGENTIC_ECHO_DELAY_MS".into(), "9".into())));
    assert!(!env.contains(&("FASTAGENTIC_ECHO_DELAY_MS".into(), "5".into())));
}

#[test]
fn replicas_decision() {
    let auto = load(&format!("{BASE}  autoscaling: {{maxReplicas: 5}}\n"));
    let fixed = load(&format!("{BASE}  replicas: 4\n"));
    let neither = load(BASE);
    let mode = |fa| validate(fa).expect("valid").replicas().clone();
    assert!(matches!(mode(&auto), ReplicaMode::Autoscaled(_)));
    assert_eq!(mode(&fixed), ReplicaMode::Fixed(4));
    assert_eq!(mode(&neither), ReplicaMode::KeepCurrent);
    assert_eq!(mode(&auto).deployment_replicas(Some(7)), None);
    assert_eq!(
        mode(&auto).deployment_replicas(None),
        Some(1),
        "a new autoscaled Deployment starts at minReplicas (default 1)"
    );
    let auto3 = load(&format!(
        "{BASE}  autoscaling: {{minReplicas: 3, maxReplicas: 5}}\n"
    ));
    assert_eq!(mode(&auto3).deployment_replicas(None), Some(3));
    assert_eq!(
        mode(&auto3).deployment_replicas(Some(2)),
        None,
        "once the Deployment exists the HPA owns the count"
    );
    assert_eq!(mode(&fixed).deployment_replicas(Some(7)), Some(4));
    assert_eq!(
        mode(&neither).deployment_replicas(Some(7)),
        Some(7),
        "autoscaling turned off keeps the running count"
    );
    assert_eq!(
        mode(&neither).deployment_replicas(None),
        Some(1),
        "a new Deployment starts with 1"
    );
}

#[test]
fn the_redis_url_source_the_command_and_the_service_port_are_decided_once() {
    let fa = load(&format!(
        "{BASE}  redis: {{url: \"redis://r:6379\"}}\n  service: {{port: 80}}\n"
    ));
    let v = validate(&fa).expect("valid");
    assert_eq!(
        v.redis().map(|r| r.url),
        Some(RedisUrl::Plain("redis://r:6379"))
    );
    assert_eq!(v.command(), ["fastagentic", "run"]);
    assert_eq!(v.service_port(), 80);

    let fa = load(&format!(
        "{BASE}  redis: {{urlSecretRef: {{name: s, key: k}}}}\n  command: [my-agent]\n"
    ));
    let v = validate(&fa).expect("valid");
    assert!(
        matches!(v.redis().map(|r| r.url), Some(RedisUrl::Secret(r)) if r.name == "s" && r.key == "k")
    );
    assert_eq!(v.command(), ["my-agent"]);
    assert_eq!(v.service_port(), 8000, "the Service defaults to spec.port");

    // What an API server without CEL validation would let through is still refused.
    let mut fa = load(&format!("{BASE}  redis: {{url: \"redis://r:6379\"}}\n"));
    if let Some(r) = fa.spec.redis.as_mut() {
        r.url = None;
    }
    let err = validate(&fa).expect_err("neither url nor urlSecretRef");
    assert_eq!(err.field, "spec.redis", "{err}");
    assert!(err.message.contains("set exactly one of"), "{err}");
}

/// `(field, message)` of the error `validate` returns for `fa`.
fn refused(fa: &FastAgentic, what: &str) -> (String, String) {
    let err = validate(fa).expect_err(what);
    (err.field, err.message)
}

#[test]
fn validate_names_the_field() {
    // Admission rules come back as the API server reports them: the CEL rule's field, and a
    // message that names the offending field.
    let mut fa = load(BASE);
    fa.metadata.name = Some("a".repeat(64));
    let (field, message) = refused(&fa, "too long");
    assert_eq!(field, "<root>");
    assert!(
        message.contains("metadata.name must be at most 63 characters"),
        "{message}"
    );
    fa.metadata.name = Some("Bad_Name".into());
    let (field, message) = refused(&fa, "not RFC 1035");
    assert_eq!(field, "<root>");
    assert!(
        message.contains("metadata.name must start with a letter"),
        "{message}"
    );

    let mut fa = load(&format!("{BASE}  autoscaling: {{maxReplicas: 5}}\n"));
    fa.spec.replicas = Some(2);
    let (field, message) = refused(&fa, "both");
    assert_eq!(field, "spec");
    assert!(
        message.contains("set either spec.replicas or spec.autoscaling"),
        "{message}"
    );
    let mut fa = load(&format!("{BASE}  autoscaling: {{maxReplicas: 5}}\n"));
    fa.spec
        .autoscaling
        .as_mut()
        .expect("autoscaling")
        .min_replicas = 6;
    let (field, message) = refused(&fa, "min > max");
    assert_eq!(field, "spec.autoscaling");
    assert!(
        message.contains("spec.autoscaling.minReplicas must be less than or equal to"),
        "{message}"
    );
    let mut fa = load(BASE);
    fa.spec.server = fastagentic_crd::ServerKind::Gunicorn;
    fa.spec.reload = true;
    let (field, message) = refused(&fa, "reload");
    assert_eq!(field, "spec");
    assert!(message.contains("spec.reload"), "{message}");
    let mut fa = load(BASE);
    fa.spec.image = "  ".into();
    assert_eq!(refused(&fa, "blank image").0, "spec.image");
    fa.spec.image = String::new();
    let (field, message) = refused(&fa, "empty image");
    assert_eq!(field, "spec.image");
    assert!(
        message.contains("spec.image must not be empty"),
        "{message}"
    );
    let mut fa = load(BASE);
    let var = |v: &str| EnvVar {
        name: "X".into(),
        value: Some(v.into()),
        value_from: None,
    };
    fa.spec.env = Some(vec![var("a"), var("b")]);
    assert_eq!(
        validate(&fa).expect_err("duplicate").field,
        "spec.env[1].name"
    );
    let mut fa = load(BASE);
    fa.spec.command = Some(vec![]);
    assert_eq!(
        validate(&fa).expect_err("empty command").field,
        "spec.command"
    );
}

#[test]
fn owner_reference_only_with_uid() {
    let mut fa = load(BASE);
    assert!(
        children_of(&fa, &BuildInputs::default())
            .service
            .metadata
            .owner_references
            .is_none()
    );
    fa.metadata.uid = Some("0000-1111".into());
    let c = children_of(&fa, &BuildInputs::default());
    let owners = c.service.metadata.owner_references.expect("owner");
    assert_eq!(owners[0].uid, "0000-1111");
    assert_eq!(owners[0].kind, "FastAgentic");
    assert_eq!(owners[0].controller, Some(true));
}

/// `(type, name, target type, target)` of each HPA metric.
fn hpa_metrics(c: &Children) -> Vec<(String, String, String, String)> {
    let hs = c
        .hpa
        .as_ref()
        .and_then(|h| h.spec.as_ref())
        .expect("HPA spec");
    hs.metrics
        .iter()
        .flatten()
        .map(|m| match (&m.resource, &m.pods) {
            (Some(r), _) => (
                m.type_.clone(),
                r.name.clone(),
                r.target.type_.clone(),
                format!("{:?}", r.target.average_utilization),
            ),
            (_, Some(p)) => (
                m.type_.clone(),
                p.metric.name.clone(),
                p.target.type_.clone(),
                p.target
                    .average_value
                    .as_ref()
                    .map(|q| q.0.clone())
                    .unwrap_or_default(),
            ),
            _ => panic!("unexpected metric {m:?}"),
        })
        .collect()
}

#[test]
fn concurrency_target_alone_is_a_pods_metric_with_fast_up_slow_down_behavior() {
    let c = children_of(&load(MODEL_AGENT), &BuildInputs::default());
    assert_eq!(
        hpa_metrics(&c),
        vec![(
            "Pods".into(),
            "fastagentic_concurrency_utilization".into(),
            "AverageValue".into(),
            "70".into()
        )],
        "CPU and memory targets of 0 are left out"
    );
    let b = c
        .hpa
        .as_ref()
        .and_then(|h| h.spec.as_ref())
        .and_then(|s| s.behavior.clone())
        .expect("default behavior");
    let up = b.scale_up.expect("scale up");
    assert_eq!(up.stabilization_window_seconds, Some(0));
    let down = b.scale_down.expect("scale down");
    assert_eq!(down.stabilization_window_seconds, Some(300));
}

#[test]
fn concurrency_target_with_cpu_and_memory_and_a_given_behavior() {
    let c = children_of(&load(PROD_LARGE), &BuildInputs::default());
    let kinds: Vec<(String, String)> = hpa_metrics(&c)
        .into_iter()
        .map(|(t, n, _, v)| (format!("{t}/{n}"), v))
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("Resource/cpu".into(), "Some(70)".into()),
            ("Resource/memory".into(), "Some(80)".into()),
            (
                "Pods/fastagentic_concurrency_utilization".into(),
                "70".into()
            ),
        ]
    );
    let mut fa = load(MODEL_AGENT);
    let a = fa.spec.autoscaling.as_mut().expect("autoscaling");
    a.behavior = Some(
        k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscalerBehavior {
            scale_down: Some(k8s_openapi::api::autoscaling::v2::HPAScalingRules {
                stabilization_window_seconds: Some(15),
                ..Default::default()
            }),
            scale_up: None,
        },
    );
    let c = children_of(&fa, &BuildInputs::default());
    let b = c
        .hpa
        .as_ref()
        .and_then(|h| h.spec.as_ref())
        .and_then(|s| s.behavior.clone())
        .expect("behavior");
    assert!(
        b.scale_up.is_none(),
        "a given behavior replaces the default"
    );
    assert_eq!(
        b.scale_down.and_then(|d| d.stabilization_window_seconds),
        Some(15)
    );
}

#[test]
fn concurrency_target_without_max_concurrent_or_no_target_is_refused() {
    let mut fa = load(MODEL_AGENT);
    fa.spec.max_concurrent = None;
    let err = validate(&fa).expect_err("needs maxConcurrent");
    assert_eq!(err.field, "spec");
    assert!(
        err.message.contains(
            "spec.autoscaling.targetConcurrencyUtilizationPercentage needs spec.maxConcurrent"
        ),
        "{err}"
    );
    let mut fa = load(MODEL_AGENT);
    fa.spec
        .autoscaling
        .as_mut()
        .expect("autoscaling")
        .target_concurrency_utilization_percentage = None;
    let err = validate(&fa).expect_err("needs a target");
    assert_eq!(err.field, "spec.autoscaling");
    assert!(err.message.contains("needs a target"), "{err}");
}

#[test]
fn pods_spread_softly_across_nodes_and_zones_unless_told_otherwise() {
    let pod = |yaml: &str| {
        children_of(&load(yaml), &BuildInputs::default())
            .deployment
            .spec
            .and_then(|s| s.template.spec)
            .expect("pod spec")
    };
    let spread = pod(BASE)
        .topology_spread_constraints
        .expect("a default spread");
    let keys: Vec<_> = spread.iter().map(|c| c.topology_key.as_str()).collect();
    assert_eq!(
        keys,
        ["kubernetes.io/hostname", "topology.kubernetes.io/zone"]
    );
    for c in &spread {
        assert_eq!(c.when_unsatisfiable, "ScheduleAnyway", "soft: {c:?}");
        assert_eq!(c.max_skew, 1);
        assert_eq!(
            c.match_label_keys.as_deref(),
            Some(&["pod-template-hash".to_owned()][..])
        );
        let labels = c
            .label_selector
            .as_ref()
            .and_then(|s| s.match_labels.as_ref())
            .expect("a selector");
        assert_eq!(labels, &crate::labels::selector_labels("a"));
    }
    let own = pod(&format!(
        "{BASE}  topologySpreadConstraints: [{{maxSkew: 2, topologyKey: rack, whenUnsatisfiable: DoNotSchedule}}]\n"
    ));
    let own = own.topology_spread_constraints.expect("the user's");
    assert_eq!(own.len(), 1);
    assert_eq!(own[0].topology_key, "rack");
    let none = pod(&format!("{BASE}  topologySpreadConstraints: []\n"));
    assert_eq!(
        none.topology_spread_constraints,
        Some(vec![]),
        "an empty list turns it off"
    );
    let affinity = pod(&format!(
        "{BASE}  affinity: {{podAntiAffinity: {{preferredDuringSchedulingIgnoredDuringExecution: []}}}}\n"
    ));
    assert_eq!(
        affinity.topology_spread_constraints, None,
        "affinity given: no default spread"
    );
}

#[test]
fn ephemeral_storage_is_bounded_unless_the_resource_says_otherwise() {
    let built = |yaml: &str| {
        let d = children_of(&load(yaml), &BuildInputs::default()).deployment;
        let pod = d.spec.and_then(|s| s.template.spec).expect("pod spec");
        let tmp = pod
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == "tmp")
            .and_then(|v| v.empty_dir.clone())
            .expect("the /tmp emptyDir");
        let r = pod.containers[0].resources.clone().expect("resources");
        let get = |m: &Option<BTreeMap<String, Quantity>>| {
            m.as_ref()
                .and_then(|m| m.get("ephemeral-storage"))
                .map(|q| q.0.clone())
        };
        (
            tmp.size_limit.map(|q| q.0),
            get(&r.requests),
            get(&r.limits),
            r,
        )
    };
    let (tmp, request, limit, r) = built(BASE);
    assert_eq!(tmp.as_deref(), Some("256Mi"));
    assert_eq!(request.as_deref(), Some("64Mi"));
    assert_eq!(limit.as_deref(), Some("1Gi"));
    assert_eq!(
        r.requests
            .as_ref()
            .and_then(|m| m.get("cpu"))
            .map(|q| q.0.as_str()),
        Some("250m"),
        "the other defaults stay"
    );
    // A request of the user's own: no default limit below it.
    let (_, request, limit, _) = built(&format!(
        "{BASE}  resources: {{requests: {{cpu: 100m, ephemeral-storage: 2Gi}}}}\n"
    ));
    assert_eq!((request.as_deref(), limit), (Some("2Gi"), None));
    let (_, request, limit, _) = built(&format!(
        "{BASE}  resources: {{limits: {{ephemeral-storage: 5Gi}}}}\n"
    ));
    assert_eq!((request, limit.as_deref()), (None, Some("5Gi")));
}
