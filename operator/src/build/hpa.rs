//! The HorizontalPodAutoscaler (autoscaling/v2).

use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec, MetricSpec,
    MetricTarget, ResourceMetricSource,
};

use super::{Validated, child_meta};

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

/// The HPA when `spec.autoscaling` is set: CPU utilization, memory utilization unless its
/// target is 0, `minReplicas`/`maxReplicas`, and `behavior` as given.
pub fn build_hpa(v: &Validated<'_>) -> Option<HorizontalPodAutoscaler> {
    let a = v.fa().spec.autoscaling.as_ref()?;
    let mut metrics = vec![utilization("cpu", a.target_cpu_utilization_percentage)];
    if a.target_memory_utilization_percentage > 0 {
        metrics.push(utilization(
            "memory",
            a.target_memory_utilization_percentage,
        ));
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
            behavior: a.behavior.clone(),
        }),
        status: None,
    })
}
