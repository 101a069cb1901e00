//! What the operator observed: `FastAgentic.status`.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// Condition type: the pods are available and serve traffic.
pub const CONDITION_READY: &str = "Ready";
/// Condition type: a rollout is in progress.
pub const CONDITION_PROGRESSING: &str = "Progressing";
/// Condition type: the resource cannot be reconciled or the pods are failing.
pub const CONDITION_DEGRADED: &str = "Degraded";

/// Observed state of a FastAgentic.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FastAgenticStatus {
    /// The `metadata.generation` this status was computed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Pods the Deployment currently has (the scale subresource reads it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,

    /// Pods that pass their readiness probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_replicas: Option<i32>,

    /// Label selector of the pods, as a string (the scale subresource and the
    /// HorizontalPodAutoscaler read it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,

    /// `Ready`, `Progressing` and `Degraded`, in the standard Kubernetes condition shape. Use
    /// `kubectl wait --for=condition=Ready fa/NAME`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,

    /// Most Redis connections all pods together can open: `maxReplicas x workers x poolSize`.
    /// Compare it with your Redis server's `maxclients`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_redis_connections: Option<i64>,

    /// Most PostgreSQL connections all pods together can open:
    /// `maxReplicas x workers x (poolSize + maxOverflow)`. Compare it with the server's
    /// `max_connections`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_database_connections: Option<i64>,

    /// What the HorizontalPodAutoscaler last measured and decided (with `spec.autoscaling`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<AutoscalingStatus>,
}

/// The HorizontalPodAutoscaler's view, copied from its status.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AutoscalingStatus {
    /// Pods the autoscaler saw.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_replicas: Option<i32>,

    /// Pods the autoscaler last asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired_replicas: Option<i32>,

    /// Average concurrency utilization of the pods, percent (rounded), as the autoscaler last
    /// read it from the operator's metrics API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_concurrency_utilization_percentage: Option<i32>,

    /// Average CPU utilization of the pods, percent of their CPU request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(rename = "currentCPUUtilizationPercentage")]
    pub current_cpu_utilization_percentage: Option<i32>,

    /// When the autoscaler last changed the replica count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scale_time: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,

    /// Why the autoscaler can or cannot scale now (reason and message of its `ScalingActive`
    /// and `ScalingLimited` conditions), for example `TooFewReplicas: ...`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}
