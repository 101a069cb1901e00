//! The HorizontalPodAutoscaler (autoscaling/v2).

use fastagentic_crd::{
    CONCURRENCY_METRIC, DEFAULT_SCALE_DOWN_PERCENT_PER_MINUTE,
    DEFAULT_SCALE_DOWN_STABILIZATION_SECONDS, DEFAULT_SCALE_UP_PODS,
};
use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HPAScalingPolicy, HPAScalingRules, HorizontalPodAutoscaler,
    HorizontalPodAutoscalerBehavior, HorizontalPodAutoscalerSpec, MetricIdentifier, MetricSpec,
    MetricTarget, PodsMetricSource, ResourceMetricSource,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use super::{Autoscaling, ReplicaMode, Validated, child_meta};

fn utilization(resource: &str, percent: i32) -> MetricSpec {
    MetricSpec {
        type_: "Resource".into(),
        resource: Some(ResourceMetricSource {
            name: resource.into(),
            target: MetricTarget {
                type_: "Utilization".into(),
                average_utilization: Some(percent),
                ..Default::default()
            },
        }),
        ..Default::default()
    }
}

/// The per-pod concurrency utilization the operator's metrics API serves, in percent.
fn concurrency(percent: i32) -> MetricSpec {
    MetricSpec {
        type_: "Pods".into(),
        pods: Some(PodsMetricSource {
            metric: MetricIdentifier {
                name: CONCURRENCY_METRIC.into(),
                selector: None,
            },
            target: MetricTarget {
                type_: "AverageValue".into(),
                average_value: Some(Quantity(percent.to_string())),
                ..Default::default()
            },
        }),
        ..Default::default()
    }
}

fn policy(type_: &str, value: i32, period_seconds: i32) -> HPAScalingPolicy {
    HPAScalingPolicy {
        type_: type_.into(),
        value,
        period_seconds,
    }
}

/// Behavior with a concurrency target: scale up at once (an overloaded pod answers 503, so
/// waiting costs requests), scale down slowly (a pod removed in the middle of a long run costs
/// that run).
pub fn default_concurrency_behavior() -> HorizontalPodAutoscalerBehavior {
    HorizontalPodAutoscalerBehavior {
        scale_up: Some(HPAScalingRules {
            stabilization_window_seconds: Some(0),
            select_policy: Some("Max".into()),
            policies: Some(vec![
                policy("Percent", 100, 15),
                policy("Pods", DEFAULT_SCALE_UP_PODS, 15),
            ]),
            tolerance: None,
        }),
        scale_down: Some(HPAScalingRules {
            stabilization_window_seconds: Some(DEFAULT_SCALE_DOWN_STABILIZATION_SECONDS),
            select_policy: Some("Max".into()),
            policies: Some(vec![policy(
                "Percent",
                DEFAULT_SCALE_DOWN_PERCENT_PER_MINUTE,
                60,
            )]),
            tolerance: None,
        }),
    }
}

/// The HPA when the replicas are autoscaled: CPU utilization unless its target is 0, memory
/// utilization unless its target is 0, concurrency utilization when its target is set,
/// `minReplicas`/`maxReplicas`, and the behavior [`validate`](super::validate) decided.
pub fn build_hpa(v: &Validated<'_>) -> Option<HorizontalPodAutoscaler> {
    let ReplicaMode::Autoscaled(Autoscaling { spec: a, behavior }) = v.replicas() else {
        return None;
    };
    let mut metrics = Vec::new();
    if a.target_cpu_utilization_percentage > 0 {
        metrics.push(utilization("cpu", a.target_cpu_utilization_percentage));
    }
    if a.target_memory_utilization_percentage > 0 {
        metrics.push(utilization(
            "memory",
            a.target_memory_utilization_percentage,
        ));
    }
    if let Some(percent) = a.target_concurrency_utilization_percentage {
        metrics.push(concurrency(percent));
    }
    Some(HorizontalPodAutoscaler {
        metadata: child_meta(v, None),
        spec: Some(HorizontalPodAutoscalerSpec {
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some("apps/v1".into()),
                kind: "Deployment".into(),
                name: v.name().to_string(),
            },
            min_replicas: Some(a.min_replicas),
            max_replicas: a.max_replicas,
            metrics: Some(metrics),
            behavior: behavior.clone(),
        }),
        status: None,
    })
}
