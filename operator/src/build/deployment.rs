//! The agent Deployment.

use std::collections::BTreeMap;

use fastagentic_contract::env;
use fastagentic_crd::{self as crd, FastAgenticSpec, ProbeSpec};
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource,
    HTTPGetAction, Lifecycle, LifecycleHandler, ObjectFieldSelector, PodSecurityContext, PodSpec,
    PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile, SecretKeySelector,
    SecurityContext, SleepAction, TopologySpreadConstraint, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::json;

use super::hash::{ANNOTATION_CONFIG_HASH, sha256_hex};
use super::{BuildError, BuildInputs, PORT_NAME, RedisUrl, Validated, agent, child_meta};
use crate::labels::{selector_labels, standard_labels};

/// Name of the agent container in the pod template.
pub const CONTAINER_NAME: &str = "agent";
/// The default container command.
pub const DEFAULT_COMMAND: [&str; 2] = ["fastagentic", "run"];
/// Seconds added to `timeouts.gracefulShutdownSeconds` for the pod's
/// `terminationGracePeriodSeconds`: the server gets its full graceful window to drain, plus
/// time for the readiness probe to take it out of the Service and for the process to exit,
/// before the kubelet sends SIGKILL.
pub const TERMINATION_GRACE_EXTRA_SECONDS: i64 = 10;
/// User and group the pods run as (the conventional "nonroot" id of distroless images).
pub const RUN_AS_USER: i64 = 65532;

/// Name of the writable scratch volume mounted at `/tmp` (the root filesystem is read-only).
const TMP_VOLUME: &str = "tmp";
/// Hashed for a referenced Secret whose resourceVersion is not known (`render`).
const UNKNOWN_VERSION: &str = "unknown";

/// The Deployment of `fastagentic run` pods.
pub fn build_deployment(v: &Validated<'_>, inputs: &BuildInputs) -> Result<Deployment, BuildError> {
    let fa = v.fa();
    let spec = &fa.spec;
    let name = v.name();

    let mut pod_labels = spec.labels.clone().unwrap_or_default();
    pod_labels.extend(standard_labels(name));
    let mut template = PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(pod_labels),
            annotations: spec.annotations.clone(),
            ..Default::default()
        }),
        spec: Some(pod_spec(v)),
    };

    // Everything that should roll the pods: the template itself (a change there rolls them
    // anyway, hashing it keeps the annotation honest) and the resourceVersions of the Secrets
    // the pods read, which Kubernetes does not watch for us.
    let secrets: BTreeMap<&str, &str> = v
        .secrets()
        .iter()
        .map(|s| {
            let version = inputs
                .secret_versions
                .get(&s.name)
                .map_or(UNKNOWN_VERSION, String::as_str);
            (s.name.as_str(), version)
        })
        .collect();
    let hash_input = serde_json::to_vec(&json!({ "template": template, "secrets": secrets }))
        .map_err(|source| BuildError::Serialize {
            what: "pod template",
            source,
        })?;
    template
        .metadata
        .get_or_insert_with(Default::default)
        .annotations
        .get_or_insert_with(Default::default)
        .insert(ANNOTATION_CONFIG_HASH.to_string(), sha256_hex(&hash_input));

    Ok(Deployment {
        metadata: child_meta(v, None),
        spec: Some(DeploymentSpec {
            replicas: v.replicas().deployment_replicas(inputs.current_replicas),
            selector: LabelSelector {
                match_labels: Some(selector_labels(name)),
                ..Default::default()
            },
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_unavailable: Some(IntOrString::Int(0)),
                    max_surge: Some(IntOrString::String("25%".into())),
                }),
            }),
            template,
            ..Default::default()
        }),
        status: None,
    })
}

fn pod_spec(v: &Validated<'_>) -> PodSpec {
    let spec = &v.fa().spec;
    PodSpec {
        init_containers: agent::sidecar(v.fa()).map(|c| vec![c]),
        containers: vec![container(v)],
        termination_grace_period_seconds: Some(
            i64::from(spec.timeouts.drain_delay_seconds)
                + i64::from(spec.timeouts.graceful_shutdown_seconds)
                + TERMINATION_GRACE_EXTRA_SECONDS,
        ),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(RUN_AS_USER),
            run_as_group: Some(RUN_AS_USER),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        volumes: Some(
            std::iter::once(tmp_volume(TMP_VOLUME))
                .chain(agent::sidecar_volume(v.fa()))
                .collect(),
        ),
        node_selector: spec.node_selector.clone(),
        tolerations: spec.tolerations.clone(),
        affinity: spec.affinity.clone(),
        topology_spread_constraints: topology_spread(v),
        service_account_name: spec.service_account_name.clone(),
        image_pull_secrets: spec.image_pull_secrets.clone(),
        priority_class_name: spec.priority_class_name.clone(),
        ..Default::default()
    }
}

/// Topology keys of the default spread: nodes, then zones (where nodes are labelled with one).
const SPREAD_TOPOLOGY_KEYS: [&str; 2] = ["kubernetes.io/hostname", "topology.kubernetes.io/zone"];

/// `spec.topologySpreadConstraints` as given (an empty list included); without it and without
/// `spec.affinity`, a soft spread across nodes and zones of the pods of one rollout
/// (`pod-template-hash`, so a rolling update's old pods do not skew the new ones). Soft
/// (`ScheduleAnyway`): a single-node or zone-less cluster still schedules every pod.
fn topology_spread(v: &Validated<'_>) -> Option<Vec<TopologySpreadConstraint>> {
    let spec = &v.fa().spec;
    if spec.topology_spread_constraints.is_some() || spec.affinity.is_some() {
        return spec.topology_spread_constraints.clone();
    }
    let selector = LabelSelector {
        match_labels: Some(selector_labels(v.name())),
        ..Default::default()
    };
    Some(
        SPREAD_TOPOLOGY_KEYS
            .iter()
            .map(|key| TopologySpreadConstraint {
                max_skew: 1,
                topology_key: (*key).into(),
                when_unsatisfiable: "ScheduleAnyway".into(),
                label_selector: Some(selector.clone()),
                match_label_keys: Some(vec!["pod-template-hash".into()]),
                ..Default::default()
            })
            .collect(),
    )
}

fn container(v: &Validated<'_>) -> Container {
    let spec = &v.fa().spec;
    let (liveness, readiness, startup) = probes(spec);
    Container {
        name: CONTAINER_NAME.into(),
        image: Some(spec.image.clone()),
        image_pull_policy: spec.image_pull_policy.map(|p| p.as_str().to_string()),
        command: Some(v.command().to_vec()),
        args: spec.args.clone(),
        env: Some(env(v)),
        env_from: spec.env_from.clone(),
        ports: Some(vec![ContainerPort {
            name: Some(PORT_NAME.into()),
            container_port: spec.port,
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
        resources: Some(with_ephemeral_storage(spec.resources.clone())),
        liveness_probe: liveness,
        readiness_probe: readiness,
        startup_probe: startup,
        lifecycle: drain_delay(spec),
        security_context: Some(restricted_security_context()),
        volume_mounts: Some(vec![tmp_mount(TMP_VOLUME)]),
        ..Default::default()
    }
}

/// The container security context of the runtime (and the default of the agent's container):
/// non-root, no privilege escalation, a read-only root filesystem, no capabilities. The pod's
/// security context adds the user, group and seccomp profile.
pub(super) fn restricted_security_context() -> SecurityContext {
    SecurityContext {
        run_as_non_root: Some(true),
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A writable scratch volume for `/tmp` (the root filesystem is read-only), bounded so a
/// container filling it is evicted instead of the node's disk.
pub(super) fn tmp_volume(name: &str) -> Volume {
    Volume {
        name: name.into(),
        empty_dir: Some(EmptyDirVolumeSource {
            size_limit: Some(Quantity(crd::TMP_SIZE_LIMIT.into())),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The mount of a [`tmp_volume`] at `/tmp`.
pub(super) fn tmp_mount(volume: &str) -> VolumeMount {
    VolumeMount {
        name: volume.into(),
        mount_path: "/tmp".into(),
        ..Default::default()
    }
}

/// A container's resources, with the default `ephemeral-storage` request and limit when
/// neither its requests nor its limits name one (a user's request alone must not meet a smaller
/// default limit).
pub(super) fn with_ephemeral_storage(mut r: ResourceRequirements) -> ResourceRequirements {
    const EPHEMERAL_STORAGE: &str = "ephemeral-storage";
    let named = |m: &Option<BTreeMap<String, Quantity>>| {
        m.as_ref()
            .is_some_and(|m| m.contains_key(EPHEMERAL_STORAGE))
    };
    if named(&r.requests) || named(&r.limits) {
        return r;
    }
    r.requests
        .get_or_insert_with(BTreeMap::new)
        .entry(EPHEMERAL_STORAGE.into())
        .or_insert_with(|| Quantity(crd::DEFAULT_REQUEST_EPHEMERAL_STORAGE.into()));
    r.limits
        .get_or_insert_with(BTreeMap::new)
        .entry(EPHEMERAL_STORAGE.into())
        .or_insert_with(|| Quantity(crd::DEFAULT_LIMIT_EPHEMERAL_STORAGE.into()));
    r
}

/// The preStop sleep that keeps a deleted pod serving while the endpoints drop it: the kubelet
/// sends SIGTERM only after it, and the runtime then drains (`timeouts.drainDelaySeconds`). A
/// `sleep` action, so the image needs no shell (Kubernetes 1.30+, on by default).
fn drain_delay(spec: &FastAgenticSpec) -> Option<Lifecycle> {
    let seconds = spec.timeouts.drain_delay_seconds;
    (seconds > 0).then(|| Lifecycle {
        pre_stop: Some(LifecycleHandler {
            sleep: Some(SleepAction {
                seconds: i64::from(seconds),
            }),
            ..Default::default()
        }),
        ..Default::default()
    })
}

pub(super) fn value(name: &str, value: impl ToString) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.to_string()),
        value_from: None,
    }
}

pub(super) fn from_secret(name: &str, secret: &crd::SecretKeyRef) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: None,
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.name.clone(),
                key: secret.key.clone(),
                optional: Some(false),
            }),
            ..Default::default()
        }),
    }
}

/// Seconds as the runtime parses them: always with a decimal point (`5.0`, `0.5`).
pub(super) fn seconds(value: f64) -> String {
    format!("{value:?}")
}

/// The injected environment (names from `fastagentic_contract::env`, which the runtime's
/// options read), then the user's `spec.env`. A user variable with the same name as
/// an injected one replaces it (listed once, in the user's position): server-side apply merges
/// `env` by name and rejects duplicates.
fn env(v: &Validated<'_>) -> Vec<EnvVar> {
    let spec = &v.fa().spec;
    let mut ours = vec![
        value(env::SERVER, spec.server.as_str()),
        value(env::HOST, "0.0.0.0"),
        value(env::PORT, spec.port),
        value(env::WORKERS, spec.workers),
    ];
    if let Some(n) = spec.max_concurrent {
        ours.push(value(env::MAX_CONCURRENT, n));
    }
    ours.push(EnvVar {
        name: env::INSTANCE_ID.into(),
        value: None,
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                api_version: Some("v1".into()),
                field_path: "metadata.name".into(),
            }),
            ..Default::default()
        }),
    });
    if spec.reload {
        ours.push(value(env::RELOAD, "true"));
    }
    if let Some(n) = spec.max_requests {
        ours.push(value(env::MAX_REQUESTS, n));
    }
    if let Some(n) = spec.max_requests_jitter {
        ours.push(value(env::MAX_REQUESTS_JITTER, n));
    }
    ours.push(value(
        env::TIMEOUT_KEEP_ALIVE,
        spec.timeouts.keep_alive_seconds,
    ));
    ours.push(value(
        env::TIMEOUT_GRACEFUL_SHUTDOWN,
        spec.timeouts.graceful_shutdown_seconds,
    ));
    // The agent's time limits: only when set, so the runtime's defaults apply otherwise.
    let t = &spec.timeouts;
    for (name, seconds) in [
        (env::AGENT_FIRST_BYTE_TIMEOUT, t.agent_first_byte_seconds),
        (env::STREAM_IDLE_TIMEOUT, t.stream_idle_seconds),
        (env::RUN_MAX_DURATION, t.run_max_seconds),
        (env::STREAM_HEARTBEAT, t.stream_heartbeat_seconds),
    ] {
        if let Some(seconds) = seconds {
            ours.push(value(name, seconds));
        }
    }
    if let Some(spec_agent) = &spec.agent {
        agent::agent_env(spec_agent, &mut ours);
    }
    if let Some(store) = spec.durable_store {
        ours.push(value(env::DURABLE_STORE, store.as_str()));
    }
    if let Some(streams) = &spec.streams {
        if let Some(n) = streams.events_max {
            ours.push(value(env::STREAM_EVENTS_MAX, n));
        }
        if let Some(seconds) = streams.events_ttl_seconds {
            ours.push(value(env::STREAM_EVENTS_TTL, seconds));
        }
    }
    if let Some(redis) = v.redis() {
        ours.push(match redis.url {
            RedisUrl::Secret(secret) => from_secret(env::REDIS_URL, secret),
            RedisUrl::Plain(url) => value(env::REDIS_URL, url),
        });
        ours.push(value(env::REDIS_POOL_SIZE, redis.pool_size));
        ours.push(value(
            env::REDIS_POOL_TIMEOUT,
            seconds(redis.pool_timeout_seconds),
        ));
    }
    if let Some(db) = &spec.database {
        ours.push(from_secret(env::DATABASE_URL, &db.url_secret_ref));
        ours.push(value(env::DB_POOL_SIZE, db.pool_size));
        ours.push(value(env::DB_MAX_OVERFLOW, db.max_overflow));
        ours.push(value(env::DB_POOL_RECYCLE, db.pool_recycle_seconds));
        ours.push(value(env::DB_POOL_PRE_PING, db.pre_ping));
        ours.push(value(
            env::DB_POOL_TIMEOUT,
            seconds(db.pool_timeout_seconds),
        ));
    }
    let user = spec.env.clone().unwrap_or_default();
    ours.retain(|var| !user.iter().any(|u| u.name == var.name));
    ours.extend(user);
    ours
}

/// Default probe settings, merged field by field with `spec.probes`.
struct ProbeDefaults {
    path: &'static str,
    initial_delay: i32,
    period: i32,
    failure_threshold: i32,
}

const READINESS: ProbeDefaults = ProbeDefaults {
    path: crd::READINESS_PATH,
    initial_delay: crd::READINESS_INITIAL_DELAY_SECONDS,
    period: crd::READINESS_PERIOD_SECONDS,
    failure_threshold: crd::PROBE_FAILURE_THRESHOLD,
};

fn probe(port: i32, defaults: &ProbeDefaults, over: Option<&ProbeSpec>) -> Option<Probe> {
    let over = over.cloned().unwrap_or_default();
    if over.disabled.unwrap_or(false) {
        return None;
    }
    Some(http_probe(port, defaults, over))
}

fn http_probe(port: i32, defaults: &ProbeDefaults, over: ProbeSpec) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(over.path.unwrap_or_else(|| defaults.path.to_string())),
            port: IntOrString::Int(port),
            scheme: Some("HTTP".into()),
            ..Default::default()
        }),
        initial_delay_seconds: Some(over.initial_delay_seconds.unwrap_or(defaults.initial_delay)),
        period_seconds: Some(over.period_seconds.unwrap_or(defaults.period)),
        timeout_seconds: Some(over.timeout_seconds.unwrap_or(crd::PROBE_TIMEOUT_SECONDS)),
        failure_threshold: Some(over.failure_threshold.unwrap_or(defaults.failure_threshold)),
        success_threshold: Some(1),
        ..Default::default()
    }
}

/// The runtime's readiness probe with its defaults (`spec.probes.readiness` not applied), on
/// `port` by number.
pub(super) fn default_readiness_probe(port: i32) -> Probe {
    http_probe(port, &READINESS, ProbeSpec::default())
}

fn probes(spec: &FastAgenticSpec) -> (Option<Probe>, Option<Probe>, Option<Probe>) {
    let p = &spec.probes;
    let liveness = probe(
        spec.port,
        &ProbeDefaults {
            path: crd::LIVENESS_PATH,
            initial_delay: crd::LIVENESS_INITIAL_DELAY_SECONDS,
            period: crd::LIVENESS_PERIOD_SECONDS,
            failure_threshold: crd::PROBE_FAILURE_THRESHOLD,
        },
        p.liveness.as_ref(),
    );
    let readiness = probe(spec.port, &READINESS, p.readiness.as_ref());
    let startup = probe(
        spec.port,
        &ProbeDefaults {
            path: crd::LIVENESS_PATH,
            initial_delay: 0,
            period: crd::STARTUP_PERIOD_SECONDS,
            failure_threshold: crd::STARTUP_FAILURE_THRESHOLD,
        },
        p.startup.as_ref(),
    );
    (liveness, readiness, startup)
}
