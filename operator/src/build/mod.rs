//! Desired state: pure functions from a `FastAgentic` to the objects the operator applies.
//!
//! [`validate`] admits the object again (schema and CEL rules), checks what the schema cannot
//! express, and returns a [`Validated`] value carrying the decisions (replica mode, where the
//! Redis URL comes from, the command, the disruption budget, the Service port, the network
//! policy); the builders ([`build_deployment`], [`build_service`], [`build_hpa`], [`build_pdb`],
//! [`build_network_policy`]) turn it into Kubernetes objects (`agent.rs` renders `spec.agent`:
//! the runtime's agent variables and the agent's own container); [`build_children`] runs them
//! all and stamps each object with its `fastagentic.io/applied-hash`. Nothing here does I/O:
//! the controller passes in what it read from the cluster ([`BuildInputs`]) and `render` passes
//! in what it cannot know as "unknown".

mod agent;
mod deployment;
mod hash;
mod hpa;
mod network_policy;
mod pdb;
mod service;

use std::collections::BTreeMap;

use fastagentic_crd::admission::{Rejected, admit};
use fastagentic_crd::{AutoscalingSpec, FastAgentic, SecretKeyRef};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::{HorizontalPodAutoscaler, HorizontalPodAutoscalerBehavior};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};

pub use agent::{AGENT_APP_CONTAINER_NAME, AGENT_PORT_NAME};
pub use deployment::{
    CONTAINER_NAME, DEFAULT_COMMAND, RUN_AS_USER, TERMINATION_GRACE_EXTRA_SECONDS, build_deployment,
};
pub use hash::{ANNOTATION_APPLIED_HASH, ANNOTATION_CONFIG_HASH, applied_hash, stamp_applied_hash};
pub use hpa::{build_hpa, default_concurrency_behavior};
pub use network_policy::{
    AgentNetworkPolicy, LABEL_NAMESPACE_NAME, OperatorPods, build_network_policy,
};
pub use pdb::build_pdb;
pub use service::build_service;

use crate::labels::standard_labels;

/// Name of the agent container's port and of the Service port (the scraper finds the pod's
/// port by it too).
pub const PORT_NAME: &str = "http";

/// A spec the schema let through but that cannot be run; names the offending field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct SpecError {
    /// JSON path of the field, for example `spec.autoscaling.minReplicas`.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl SpecError {
    fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Errors of the build step itself (not of the spec).
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// An object could not be serialized for hashing. Not expected with the k8s-openapi types.
    #[error("serializing {what} for its hash: {source}")]
    Serialize {
        /// Which object.
        what: &'static str,
        /// The serializer's error.
        source: serde_json::Error,
    },
}

/// A `FastAgentic` that passed [`validate`], with the decisions the builders act on: made once
/// here, so no builder re-derives them from the spec's `Option`s. The builders only accept this.
#[derive(Debug, Clone)]
pub struct Validated<'a> {
    fa: &'a FastAgentic,
    name: &'a str,
    replicas: ReplicaMode<'a>,
    redis: Option<Redis<'a>>,
    command: Vec<String>,
    disruption_budget: Option<DisruptionBudget>,
    service_port: i32,
    secrets: Vec<SecretUse>,
    network_policy: Option<AgentNetworkPolicy<'a>>,
}

impl<'a> Validated<'a> {
    /// The resource.
    pub fn fa(&self) -> &'a FastAgentic {
        self.fa
    }
    /// Its name, which every child carries.
    pub fn name(&self) -> &'a str {
        self.name
    }
    /// Who decides the number of pods.
    pub fn replicas(&self) -> &ReplicaMode<'a> {
        &self.replicas
    }
    /// The Redis pool, when `spec.redis` is set.
    pub fn redis(&self) -> Option<&Redis<'a>> {
        self.redis.as_ref()
    }
    /// The container command: `spec.command`, else `fastagentic run`.
    pub fn command(&self) -> &[String] {
        &self.command
    }
    /// The PodDisruptionBudget to keep, if any (see [`DisruptionBudget`]).
    pub fn disruption_budget(&self) -> Option<&DisruptionBudget> {
        self.disruption_budget.as_ref()
    }
    /// The Service's port: `spec.service.port`, else `spec.port`.
    pub fn service_port(&self) -> i32 {
        self.service_port
    }
    /// Every Secret the pods read ([`referenced_secrets`]).
    pub fn secrets(&self) -> &[SecretUse] {
        &self.secrets
    }
    /// The NetworkPolicy to keep, when `spec.networkPolicy` is set.
    pub fn network_policy(&self) -> Option<&AgentNetworkPolicy<'a>> {
        self.network_policy.as_ref()
    }
}

/// Who decides the number of pods.
#[derive(Debug, Clone, PartialEq)]
pub enum ReplicaMode<'a> {
    /// `spec.replicas`: this many (`kubectl scale fa/NAME` writes it).
    Fixed(i32),
    /// Neither `spec.replicas` nor `spec.autoscaling`: the live Deployment keeps its count, a new
    /// one starts with 1.
    KeepCurrent,
    /// `spec.autoscaling`: the HorizontalPodAutoscaler.
    Autoscaled(Autoscaling<'a>),
}

impl ReplicaMode<'_> {
    /// The replica count the Deployment is applied with, given the live Deployment's
    /// `spec.replicas`; `None` leaves the field out of the apply.
    ///
    /// - Autoscaled: `autoscaling.minReplicas` for a new Deployment, so it starts with the
    ///   pods the HPA would ask for instead of 1 until the HPA's first sync; `None` once the
    ///   Deployment exists. The HPA owns `spec.replicas` then; sending it would fight the
    ///   autoscaler (the controller hands the field over to a second field manager when our
    ///   apply stops sending it, so dropping it does not reset the Deployment to 1).
    /// - Fixed: that number.
    /// - KeepCurrent: the live Deployment's count, or 1 for a new Deployment. So turning
    ///   autoscaling off without setting `spec.replicas` keeps the pods the HPA had scaled to,
    ///   instead of dropping to 1 under load; set `spec.replicas` to choose a number.
    pub fn deployment_replicas(&self, current: Option<i32>) -> Option<i32> {
        match self {
            ReplicaMode::Autoscaled(a) => current.is_none().then_some(a.spec.min_replicas),
            ReplicaMode::Fixed(n) => Some(*n),
            ReplicaMode::KeepCurrent => Some(current.unwrap_or(1)),
        }
    }
}

/// `spec.autoscaling` with its scaling behavior decided.
#[derive(Debug, Clone, PartialEq)]
pub struct Autoscaling<'a> {
    /// The user's settings (bounds and targets).
    pub spec: &'a AutoscalingSpec,
    /// `behavior` as given; without it, the operator's default with a concurrency target
    /// ([`default_concurrency_behavior`]), else none (Kubernetes' default).
    pub behavior: Option<HorizontalPodAutoscalerBehavior>,
}

/// The Redis pool: where `REDIS_URL` comes from, and the pool settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Redis<'a> {
    /// Where the URL comes from.
    pub url: RedisUrl<'a>,
    /// `spec.redis.poolSize`.
    pub pool_size: i32,
    /// `spec.redis.poolTimeoutSeconds`.
    pub pool_timeout_seconds: f64,
}

/// Where `REDIS_URL` comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedisUrl<'a> {
    /// `spec.redis.url`, a URL without credentials, injected as a value.
    Plain(&'a str),
    /// `spec.redis.urlSecretRef`, injected by reference.
    Secret(&'a SecretKeyRef),
}

/// The PodDisruptionBudget's limit: exactly one of the two is set.
#[derive(Debug, Clone, PartialEq)]
pub struct DisruptionBudget {
    /// `maxUnavailable` (1 when the user chose neither).
    pub max_unavailable: Option<IntOrString>,
    /// `minAvailable`.
    pub min_available: Option<IntOrString>,
}

/// What the builders need from the cluster. `render` has none of it and passes the default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BuildInputs {
    /// resourceVersion of each referenced Secret, by name. A name missing here is hashed as
    /// `unknown` (that is what `render` does: its config hash differs from the cluster's).
    pub secret_versions: BTreeMap<String, String>,
    /// `spec.replicas` of the live Deployment, when there is one (see [`ReplicaMode::deployment_replicas`]).
    pub current_replicas: Option<i32>,
    /// Where the operator's pods run, for the NetworkPolicy's operator peer (unknown in
    /// `render`: the peer is left out).
    pub operator: OperatorPods,
}

/// Every child object of a FastAgentic. The applier destructures it without `..`, so adding a
/// child here fails to compile until the applier handles it.
#[derive(Debug, Clone, PartialEq)]
pub struct Children {
    /// The agent Deployment.
    pub deployment: Deployment,
    /// The Service in front of it.
    pub service: Service,
    /// The HorizontalPodAutoscaler, when `spec.autoscaling` is set.
    pub hpa: Option<HorizontalPodAutoscaler>,
    /// The PodDisruptionBudget, when `spec.disruptionBudget` is set and 2+ pods are possible.
    pub pdb: Option<PodDisruptionBudget>,
    /// The NetworkPolicy, when `spec.networkPolicy` is set.
    pub network_policy: Option<NetworkPolicy>,
}

/// A Secret the pods read, and where the spec references it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretUse {
    /// JSON path of the reference, for example `spec.database.urlSecretRef`.
    pub field: String,
    /// Secret name.
    pub name: String,
    /// The key the pods read; `None` for a whole-Secret `envFrom`.
    pub key: Option<String>,
    /// False when the reference is marked `optional: true`.
    pub required: bool,
}

/// Every Secret the pods of `fa` read: Redis and database URLs, the OpenAI key, the agent
/// container's `env` references, and the user's `env` and `envFrom` references. Their
/// resourceVersions go into the pod-template hash, so rotating any of them rolls the pods.
pub fn referenced_secrets(fa: &FastAgentic) -> Vec<SecretUse> {
    let spec = &fa.spec;
    let mut uses = Vec::new();
    if let Some(r) = spec.redis.as_ref().and_then(|r| r.url_secret_ref.as_ref()) {
        uses.push(SecretUse {
            field: "spec.redis.urlSecretRef".into(),
            name: r.name.clone(),
            key: Some(r.key.clone()),
            required: true,
        });
    }
    if let Some(d) = &spec.database {
        uses.push(SecretUse {
            field: "spec.database.urlSecretRef".into(),
            name: d.url_secret_ref.name.clone(),
            key: Some(d.url_secret_ref.key.clone()),
            required: true,
        });
    }
    if let Some(o) = spec.agent.as_ref().and_then(|a| a.openai.as_ref()) {
        uses.push(SecretUse {
            field: "spec.agent.openai.apiKeySecretRef".into(),
            name: o.api_key_secret_ref.name.clone(),
            key: Some(o.api_key_secret_ref.key.clone()),
            required: true,
        });
    }
    uses.extend(agent::secret_uses(fa));
    for (i, var) in spec.env.iter().flatten().enumerate() {
        if let Some(sel) = var
            .value_from
            .as_ref()
            .and_then(|v| v.secret_key_ref.as_ref())
        {
            uses.push(SecretUse {
                field: format!("spec.env[{i}].valueFrom.secretKeyRef"),
                name: sel.name.clone(),
                key: Some(sel.key.clone()),
                required: !sel.optional.unwrap_or(false),
            });
        }
    }
    for (i, src) in spec.env_from.iter().flatten().enumerate() {
        if let Some(sel) = &src.secret_ref {
            uses.push(SecretUse {
                field: format!("spec.envFrom[{i}].secretRef"),
                name: sel.name.clone(),
                key: None,
                required: !sel.optional.unwrap_or(false),
            });
        }
    }
    uses
}

/// Admits `fa` again on the client side, checks what the schema cannot express, and makes the
/// decisions the builders act on. Every error names the field.
///
/// The admission rules run through [`fastagentic_crd::admission::admit`] (the CRD's schema and
/// its CEL rules, the one client-side implementation of them): the API server has already
/// applied them, unless it is older than CEL validation, and the operator must never apply a
/// half-valid set of objects. The checks written here are the operator's own.
pub fn validate(fa: &FastAgentic) -> Result<Validated<'_>, SpecError> {
    let name = fa
        .metadata
        .name
        .as_deref()
        .ok_or_else(|| SpecError::new("metadata.name", "the resource has no name"))?;
    admit_again(fa)?;
    let spec = &fa.spec;
    // The schema forbids an empty image; a blank one would only fail at the Deployment.
    if spec.image.trim().is_empty() {
        return Err(SpecError::new("spec.image", "must not be blank"));
    }
    let command = match &spec.command {
        None => DEFAULT_COMMAND.iter().map(ToString::to_string).collect(),
        Some(c) if c.is_empty() => {
            return Err(SpecError::new(
                "spec.command",
                "must not be an empty list; leave it out for `fastagentic run`",
            ));
        }
        Some(c) => c.clone(),
    };
    // Server-side apply merges `env` by name: two entries with one name make every apply fail.
    let mut seen = std::collections::BTreeSet::new();
    for (i, var) in spec.env.iter().flatten().enumerate() {
        if !seen.insert(var.name.as_str()) {
            return Err(SpecError::new(
                format!("spec.env[{i}].name"),
                format!("duplicate environment variable {:?}", var.name),
            ));
        }
    }
    agent::check(fa)?;
    let replicas = match (&spec.autoscaling, spec.replicas) {
        (Some(a), _) => ReplicaMode::Autoscaled(Autoscaling {
            spec: a,
            behavior: match (&a.behavior, a.target_concurrency_utilization_percentage) {
                (Some(b), _) => Some(b.clone()),
                (None, Some(_)) => Some(default_concurrency_behavior()),
                (None, None) => None,
            },
        }),
        (None, Some(n)) => ReplicaMode::Fixed(n),
        (None, None) => ReplicaMode::KeepCurrent,
    };
    let redis = match &spec.redis {
        None => None,
        Some(r) => Some(Redis {
            url: match (&r.url, &r.url_secret_ref) {
                (None, Some(secret)) => RedisUrl::Secret(secret),
                (Some(url), None) => RedisUrl::Plain(url),
                // Admission forbids both and neither; this is what an old server let through.
                _ => {
                    return Err(SpecError::new(
                        "spec.redis",
                        "set exactly one of spec.redis.url and spec.redis.urlSecretRef",
                    ));
                }
            },
            pool_size: r.pool_size,
            pool_timeout_seconds: r.pool_timeout_seconds,
        }),
    };
    // With one pod at most, a budget either blocks every node drain or protects nothing.
    let disruption_budget = spec
        .disruption_budget
        .as_ref()
        .filter(|_| spec.max_pods() >= 2)
        .map(|b| match (&b.max_unavailable, &b.min_available) {
            (None, None) => DisruptionBudget {
                max_unavailable: Some(IntOrString::Int(1)),
                min_available: None,
            },
            (max, min) => DisruptionBudget {
                max_unavailable: max.clone(),
                min_available: min.clone(),
            },
        });
    let network_policy = match &spec.network_policy {
        None => None,
        Some(policy) => {
            network_policy::check_cidrs(policy)?;
            Some(AgentNetworkPolicy {
                spec: policy,
                admit_operator: spec
                    .autoscaling
                    .as_ref()
                    .is_some_and(|a| a.target_concurrency_utilization_percentage.is_some()),
            })
        }
    };
    Ok(Validated {
        fa,
        name,
        replicas,
        redis,
        command,
        disruption_budget,
        service_port: spec.service.port.unwrap_or(spec.port),
        secrets: referenced_secrets(fa),
        network_policy,
    })
}

/// The CRD's schema and CEL rules, on the object as the operator read it. Every reason is in
/// the message; the field is the first one's.
fn admit_again(fa: &FastAgentic) -> Result<(), SpecError> {
    let object = serde_json::to_value(fa)
        .map_err(|e| SpecError::new("<root>", format!("cannot be serialized: {e}")))?;
    let Err(Rejected(errors)) = admit(&object) else {
        return Ok(());
    };
    let Some(first) = errors.first() else {
        return Ok(());
    };
    let mut message = first.message.clone();
    for e in errors.iter().skip(1) {
        message.push_str(&format!("; {e}"));
    }
    Err(SpecError::new(first.field.clone(), message))
}

/// Builds every child, stamped with its applied-hash annotation.
pub fn build_children(v: &Validated<'_>, inputs: &BuildInputs) -> Result<Children, BuildError> {
    let mut deployment = build_deployment(v, inputs)?;
    let mut service = build_service(v);
    let mut hpa = build_hpa(v);
    let mut pdb = build_pdb(v);
    let mut network_policy = build_network_policy(v, inputs);
    stamp_applied_hash(&mut deployment, "Deployment")?;
    stamp_applied_hash(&mut service, "Service")?;
    if let Some(h) = hpa.as_mut() {
        stamp_applied_hash(h, "HorizontalPodAutoscaler")?;
    }
    if let Some(p) = pdb.as_mut() {
        stamp_applied_hash(p, "PodDisruptionBudget")?;
    }
    if let Some(n) = network_policy.as_mut() {
        stamp_applied_hash(n, "NetworkPolicy")?;
    }
    Ok(Children {
        deployment,
        service,
        hpa,
        pdb,
        network_policy,
    })
}

/// Metadata of a child: same name and namespace as the resource, standard labels, and the
/// controller owner reference (absent when the resource has no uid, as in `render`).
fn child_meta(v: &Validated<'_>, extra_labels: Option<&BTreeMap<String, String>>) -> ObjectMeta {
    let mut labels = extra_labels.cloned().unwrap_or_default();
    // Ours last: the user cannot override the labels the selector and tooling rely on.
    labels.extend(standard_labels(v.name));
    ObjectMeta {
        name: Some(v.name.to_string()),
        namespace: v.fa.namespace(),
        labels: Some(labels),
        owner_references: owner_ref(v.fa).map(|o| vec![o]),
        ..Default::default()
    }
}

fn owner_ref(fa: &FastAgentic) -> Option<OwnerReference> {
    fa.controller_owner_ref(&())
}

#[cfg(test)]
mod tests;
