//! Status: computed from the Deployment the API server returned, never from what we hoped to
//! write. Pure functions; the controller compares the result with the current status and
//! patches only when they differ.

use fastagentic_crd::{
    AutoscalingStatus, CONCURRENCY_METRIC, CONDITION_DEGRADED, CONDITION_PROGRESSING,
    CONDITION_READY, FastAgentic, FastAgenticStatus,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::labels::selector_string;

/// A failed reconcile, as it shows on the resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// PascalCase reason (`SecretNotFound`, ...).
    pub reason: String,
    /// Message naming the field.
    pub message: String,
}

/// What the conditions say, before the timestamps are merged in.
struct Cond {
    type_: &'static str,
    status: bool,
    reason: String,
    message: String,
}

/// The status of `fa`: from `deployment` (as the server returned it) on success, from
/// `failure` otherwise. Replica counts are kept from the previous status when there is no
/// Deployment to read. Conditions keep their `lastTransitionTime` unless their status flips.
pub fn compute_status(
    fa: &FastAgentic,
    deployment: Option<&Deployment>,
    failure: Option<&Failure>,
    now: &Time,
) -> FastAgenticStatus {
    let old = fa.status.clone().unwrap_or_default();
    let generation = fa.metadata.generation;
    let name = fa.metadata.name.clone().unwrap_or_default();

    let (replicas, ready_replicas) = match deployment.and_then(|d| d.status.as_ref()) {
        Some(s) => (
            Some(s.replicas.unwrap_or(0)),
            Some(s.ready_replicas.unwrap_or(0)),
        ),
        None if deployment.is_some() => (Some(0), Some(0)),
        None => (old.replicas, old.ready_replicas),
    };

    let conds = match (failure, deployment) {
        (Some(f), _) => failure_conditions(f),
        (None, Some(d)) => deployment_conditions(d),
        (None, None) => failure_conditions(&Failure {
            reason: "DeploymentMissing".into(),
            message: "the Deployment has not been created yet".into(),
        }),
    };
    let conditions = conds
        .into_iter()
        .map(|c| merge_condition(&old.conditions, c, generation, now))
        .collect();

    FastAgenticStatus {
        observed_generation: generation,
        replicas,
        ready_replicas,
        selector: Some(selector_string(&name)),
        conditions,
        max_redis_connections: fa.spec.max_redis_connections(),
        max_database_connections: fa.spec.max_database_connections(),
        autoscaling: old.autoscaling,
    }
}

/// `status.autoscaling` from the HorizontalPodAutoscaler's own status: `None` without
/// `spec.autoscaling`; the previous value while the HPA has no status yet.
pub fn autoscaling_status(
    fa: &FastAgentic,
    hpa: Option<&HorizontalPodAutoscaler>,
) -> Option<AutoscalingStatus> {
    fa.spec.autoscaling.as_ref()?;
    let old = fa.status.as_ref().and_then(|s| s.autoscaling.clone());
    let Some(st) = hpa.and_then(|h| h.status.as_ref()) else {
        return old;
    };
    let mut concurrency = None;
    let mut cpu = None;
    for m in st.current_metrics.iter().flatten() {
        if let Some(p) = m
            .pods
            .as_ref()
            .filter(|p| p.metric.name == CONCURRENCY_METRIC)
        {
            concurrency = p.current.average_value.as_ref().and_then(percent);
        }
        if let Some(r) = m.resource.as_ref().filter(|r| r.name == "cpu") {
            cpu = r.current.average_utilization;
        }
    }
    let message = st
        .conditions
        .iter()
        .flatten()
        .filter(|c| c.type_ == "ScalingActive" || c.type_ == "ScalingLimited")
        .filter(|c| c.type_ == "ScalingActive" || c.status == "True")
        .map(|c| {
            format!(
                "{}: {}",
                c.reason.as_deref().unwrap_or(&c.type_),
                c.message.as_deref().unwrap_or_default()
            )
        })
        .collect::<Vec<_>>();
    Some(AutoscalingStatus {
        current_replicas: st.current_replicas,
        desired_replicas: Some(st.desired_replicas),
        current_concurrency_utilization_percentage: concurrency,
        current_cpu_utilization_percentage: cpu,
        last_scale_time: st.last_scale_time.clone(),
        message: (!message.is_empty()).then(|| message.join("; ")),
    })
}

/// A percentage quantity (`"72"`, `"72500m"`) as a whole percent, rounded.
fn percent(q: &Quantity) -> Option<i32> {
    let s = q.0.trim();
    let (digits, scale) = match s.strip_suffix('m') {
        Some(d) => (d, 1000.0),
        None => (s, 1.0),
    };
    let v = digits.parse::<f64>().ok()? / scale;
    (v.is_finite() && v >= 0.0 && v <= f64::from(i32::MAX)).then(|| v.round() as i32)
}

fn failure_conditions(f: &Failure) -> Vec<Cond> {
    vec![
        Cond {
            type_: CONDITION_READY,
            status: false,
            reason: f.reason.clone(),
            message: f.message.clone(),
        },
        Cond {
            type_: CONDITION_PROGRESSING,
            status: false,
            reason: f.reason.clone(),
            message: "nothing was applied: the resource cannot be reconciled (see Ready)".into(),
        },
        Cond {
            type_: CONDITION_DEGRADED,
            status: true,
            reason: f.reason.clone(),
            message: f.message.clone(),
        },
    ]
}

fn deployment_conditions(d: &Deployment) -> Vec<Cond> {
    let desired = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let st = d.status.clone().unwrap_or_default();
    let generation_seen = match (d.metadata.generation, st.observed_generation) {
        (Some(g), Some(o)) => o >= g,
        (Some(_), None) => false,
        (None, _) => true,
    };
    let total = st.replicas.unwrap_or(0);
    let updated = st.updated_replicas.unwrap_or(0);
    let ready = st.ready_replicas.unwrap_or(0);
    let available = st.available_replicas.unwrap_or(0);
    let dep_condition = |type_: &str| {
        st.conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == type_)
            .cloned()
    };
    let deadline = dep_condition("Progressing")
        .filter(|c| c.status == "False" && c.reason.as_deref() == Some("ProgressDeadlineExceeded"));
    let replica_failure = dep_condition("ReplicaFailure").filter(|c| c.status == "True");

    let rolled_out =
        generation_seen && updated >= desired && total <= updated && available >= desired;
    let progressing = if let Some(c) = &deadline {
        Cond {
            type_: CONDITION_PROGRESSING,
            status: false,
            reason: "ProgressDeadlineExceeded".into(),
            message: c.message.clone().unwrap_or_default(),
        }
    } else if rolled_out {
        Cond {
            type_: CONDITION_PROGRESSING,
            status: false,
            reason: "RolloutComplete".into(),
            message: format!("{updated} of {desired} pods updated and available"),
        }
    } else {
        Cond {
            type_: CONDITION_PROGRESSING,
            status: true,
            reason: "RollingOut".into(),
            message: format!("{updated} of {desired} pods updated, {available} available"),
        }
    };
    let ready_cond = if desired == 0 {
        Cond {
            type_: CONDITION_READY,
            status: true,
            reason: "ScaledToZero".into(),
            message: "0 replicas wanted".into(),
        }
    } else if generation_seen && ready >= desired && available >= desired {
        Cond {
            type_: CONDITION_READY,
            status: true,
            reason: "Available".into(),
            message: format!("{ready} of {desired} pods ready"),
        }
    } else {
        Cond {
            type_: CONDITION_READY,
            status: false,
            reason: "PodsNotReady".into(),
            message: format!("{ready} of {desired} pods ready"),
        }
    };
    let degraded = if let Some(c) = deadline {
        Cond {
            type_: CONDITION_DEGRADED,
            status: true,
            reason: "ProgressDeadlineExceeded".into(),
            message: c.message.unwrap_or_default(),
        }
    } else if let Some(c) = replica_failure {
        Cond {
            type_: CONDITION_DEGRADED,
            status: true,
            reason: "ReplicaFailure".into(),
            message: c.message.unwrap_or_default(),
        }
    } else {
        Cond {
            type_: CONDITION_DEGRADED,
            status: false,
            reason: "AsExpected".into(),
            message: "the Deployment reports no failure".into(),
        }
    };
    vec![ready_cond, progressing, degraded]
}

fn merge_condition(old: &[Condition], c: Cond, generation: Option<i64>, now: &Time) -> Condition {
    let status = if c.status { "True" } else { "False" };
    let last_transition_time = old
        .iter()
        .find(|o| o.type_ == c.type_ && o.status == status)
        .map_or_else(|| now.clone(), |o| o.last_transition_time.clone());
    Condition {
        type_: c.type_.to_string(),
        status: status.to_string(),
        reason: c.reason,
        message: c.message,
        observed_generation: generation,
        last_transition_time,
    }
}

#[cfg(test)]
mod tests;
