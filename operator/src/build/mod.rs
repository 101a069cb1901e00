//! Desired state: pure functions from a `FastAgentic` to the objects the operator applies.
//!
//! `validate` checks what the CRD schema cannot express and returns a [`Validated`] value; the
//! builders ([`build_deployment`], [`build_service`], [`build_hpa`], [`build_pdb`]) turn it into
//! Kubernetes objects; [`build_children`] runs them all and stamps each object with its
//! `fastagentic.io/applied-hash`. Nothing here does I/O: the controller passes in what it read
//! from the cluster ([`BuildInputs`]) and `render` passes in what it cannot know as "unknown".

mod deployment;
mod hash;
mod hpa;
mod pdb;
mod service;

use std::collections::BTreeMap;

use fastagentic_crd::{FastAgentic, MAX_NAME_LENGTH};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt};

pub use deployment::{build_deployment, desired_replicas};
pub use hash::{ANNOTATION_APPLIED_HASH, ANNOTATION_CONFIG_HASH, applied_hash, stamp_applied_hash};
pub use hpa::build_hpa;
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

/// A `FastAgentic` that passed [`validate`]; the builders only accept this.
#[derive(Debug, Clone, Copy)]
pub struct Validated<'a> {
    fa: &'a FastAgentic,
    name: &'a str,
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
}

/// What the builders need from the cluster. `render` has none of it and passes the default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BuildInputs {
    /// resourceVersion of each referenced Secret, by name. A name missing here is hashed as
    /// `unknown` (that is what `render` does: its config hash differs from the cluster's).
    pub secret_versions: BTreeMap<String, String>,
    /// `spec.replicas` of the live Deployment, when there is one (see [`desired_replicas`]).
    pub current_replicas: Option<i32>,
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

/// Every Secret the pods of `fa` read: Redis and database URLs, and the user's `env` and
/// `envFrom` references. Their resourceVersions go into the pod-template hash, so rotating any
/// of them rolls the pods.
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

/// Checks what the CRD schema and its CEL rules cannot express (or what an old API server may
/// have let through), naming the field. The checks that duplicate CEL rules are defensive: the
/// operator must never apply a half-valid set of objects.
pub fn validate(fa: &FastAgentic) -> Result<Validated<'_>, SpecError> {
    let name = fa
        .metadata
        .name
        .as_deref()
        .ok_or_else(|| SpecError::new("metadata.name", "the resource has no name"))?;
    if name.len() > MAX_NAME_LENGTH {
        return Err(SpecError::new(
            "metadata.name",
            format!(
                "{} characters is too long: the Service and the app.kubernetes.io/instance label \
                 derived from it allow at most {MAX_NAME_LENGTH}",
                name.len()
            ),
        ));
    }
    if !is_dns1035_label(name) {
        return Err(SpecError::new(
            "metadata.name",
            "must start with a letter and contain only lowercase letters, digits and '-' (it names \
             the Service, an RFC 1035 label)",
        ));
    }
    let spec = &fa.spec;
    if spec.image.trim().is_empty() {
        return Err(SpecError::new("spec.image", "must not be empty"));
    }
    if spec.command.as_ref().is_some_and(Vec::is_empty) {
        return Err(SpecError::new(
            "spec.command",
            "must not be an empty list; leave it out for `fastagentic run`",
        ));
    }
    if spec.replicas.is_some() && spec.autoscaling.is_some() {
        return Err(SpecError::new(
            "spec.autoscaling",
            "set either spec.replicas or spec.autoscaling, not both",
        ));
    }
    if let Some(a) = &spec.autoscaling
        && a.min_replicas > a.max_replicas
    {
        return Err(SpecError::new(
            "spec.autoscaling.minReplicas",
            format!(
                "{} is greater than spec.autoscaling.maxReplicas {}",
                a.min_replicas, a.max_replicas
            ),
        ));
    }
    if let Some(a) = &spec.autoscaling {
        if a.target_cpu_utilization_percentage == 0
            && a.target_memory_utilization_percentage == 0
            && a.target_concurrency_utilization_percentage.is_none()
        {
            return Err(SpecError::new(
                "spec.autoscaling",
                "needs a target: targetCPUUtilizationPercentage, \
                 targetMemoryUtilizationPercentage or targetConcurrencyUtilizationPercentage",
            ));
        }
        if a.target_concurrency_utilization_percentage.is_some() && spec.max_concurrent.is_none() {
            return Err(SpecError::new(
                "spec.autoscaling.targetConcurrencyUtilizationPercentage",
                "needs spec.maxConcurrent: utilization is in-flight requests over the limit",
            ));
        }
    }
    if spec.reload && spec.server == fastagentic_crd::ServerKind::Gunicorn {
        return Err(SpecError::new(
            "spec.reload",
            "works only with server 'uvicorn', not 'gunicorn'",
        ));
    }
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
    Ok(Validated { fa, name })
}

/// RFC 1035 label: lowercase letter first, then lowercase letters, digits and '-', no '-' last.
fn is_dns1035_label(s: &str) -> bool {
    let bytes = s.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(first), Some(last)) => {
            first.is_ascii_lowercase()
                && (last.is_ascii_lowercase() || last.is_ascii_digit())
                && bytes
                    .iter()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        }
        _ => false,
    }
}

/// Builds every child, stamped with its applied-hash annotation.
pub fn build_children(v: &Validated<'_>, inputs: &BuildInputs) -> Result<Children, BuildError> {
    let mut deployment = build_deployment(v, inputs)?;
    let mut service = build_service(v);
    let mut hpa = build_hpa(v);
    let mut pdb = build_pdb(v);
    stamp_applied_hash(&mut deployment, "Deployment")?;
    stamp_applied_hash(&mut service, "Service")?;
    if let Some(h) = hpa.as_mut() {
        stamp_applied_hash(h, "HorizontalPodAutoscaler")?;
    }
    if let Some(p) = pdb.as_mut() {
        stamp_applied_hash(p, "PodDisruptionBudget")?;
    }
    Ok(Children {
        deployment,
        service,
        hpa,
        pdb,
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
