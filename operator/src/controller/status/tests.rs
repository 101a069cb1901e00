use fastagentic_crd::FastAgentic;
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentCondition, DeploymentSpec, DeploymentStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;

use super::*;

fn fa(status: Option<FastAgenticStatus>) -> FastAgentic {
    let mut fa: FastAgentic = serde_json::from_value(serde_json::json!({
        "apiVersion": "fastagentic.io/v1alpha1", "kind": "FastAgentic",
        "metadata": {"name": "a", "namespace": "ns", "generation": 3},
        "spec": {"image": "img", "workers": 4, "autoscaling": {"maxReplicas": 10},
                 "redis": {"url": "redis://r", "poolSize": 20},
                 "database": {"urlSecretRef": {"name": "s", "key": "k"}, "poolSize": 5, "maxOverflow": 10}}
    }))
    .expect("fixture");
    fa.status = status;
    fa
}

fn deployment(desired: i32, ready: i32, updated: i32, total: i32) -> Deployment {
    Deployment {
        metadata: ObjectMeta {
            generation: Some(2),
            ..Default::default()
        },
        spec: Some(DeploymentSpec {
            replicas: Some(desired),
            ..Default::default()
        }),
        status: Some(DeploymentStatus {
            observed_generation: Some(2),
            replicas: Some(total),
            ready_replicas: Some(ready),
            available_replicas: Some(ready),
            updated_replicas: Some(updated),
            ..Default::default()
        }),
    }
}

fn t(secs: i64) -> Time {
    Time(Timestamp::from_second(secs).expect("valid time"))
}

fn cond<'a>(s: &'a FastAgenticStatus, type_: &str) -> &'a Condition {
    s.conditions
        .iter()
        .find(|c| c.type_ == type_)
        .expect("condition present")
}

#[test]
fn ready_when_all_pods_ready_with_budget_and_selector() {
    let s = compute_status(&fa(None), Some(&deployment(3, 3, 3, 3)), None, &t(100));
    assert_eq!(s.observed_generation, Some(3));
    assert_eq!((s.replicas, s.ready_replicas), (Some(3), Some(3)));
    assert_eq!(
        s.selector.as_deref(),
        Some("app.kubernetes.io/instance=a,app.kubernetes.io/name=fastagentic")
    );
    assert_eq!(s.max_redis_connections, Some(10 * 4 * 20));
    assert_eq!(s.max_database_connections, Some(10 * 4 * 15));
    assert_eq!(cond(&s, "Ready").status, "True");
    assert_eq!(cond(&s, "Ready").reason, "Available");
    assert_eq!(cond(&s, "Progressing").status, "False");
    assert_eq!(cond(&s, "Degraded").status, "False");
    assert!(
        s.conditions
            .iter()
            .all(|c| c.observed_generation == Some(3))
    );
}

#[test]
fn rolling_out_and_not_ready() {
    let s = compute_status(&fa(None), Some(&deployment(3, 1, 1, 4)), None, &t(100));
    assert_eq!(cond(&s, "Ready").status, "False");
    assert_eq!(cond(&s, "Ready").reason, "PodsNotReady");
    assert_eq!(cond(&s, "Progressing").status, "True");
}

#[test]
fn last_transition_time_kept_unless_status_flips() {
    let first = compute_status(&fa(None), Some(&deployment(3, 1, 3, 3)), None, &t(100));
    let again = compute_status(
        &fa(Some(first.clone())),
        Some(&deployment(3, 2, 3, 3)),
        None,
        &t(200),
    );
    assert_eq!(
        cond(&again, "Ready").last_transition_time,
        t(100),
        "still False: time kept"
    );
    assert_eq!(cond(&again, "Ready").message, "2 of 3 pods ready");
    let flipped = compute_status(
        &fa(Some(again)),
        Some(&deployment(3, 3, 3, 3)),
        None,
        &t(300),
    );
    assert_eq!(
        cond(&flipped, "Ready").last_transition_time,
        t(300),
        "flipped to True"
    );
    assert_eq!(
        cond(&flipped, "Degraded").last_transition_time,
        t(100),
        "Degraded stayed False"
    );
    // Same inputs twice give an equal status: the controller then writes nothing.
    let same = compute_status(
        &fa(Some(flipped.clone())),
        Some(&deployment(3, 3, 3, 3)),
        None,
        &t(400),
    );
    assert_eq!(same, flipped);
}

#[test]
fn failure_sets_ready_false_and_degraded() {
    let f = Failure {
        reason: "SecretNotFound".into(),
        message: "spec.database.urlSecretRef: Secret \"s\" not found".into(),
    };
    let s = compute_status(&fa(None), None, Some(&f), &t(100));
    assert_eq!(cond(&s, "Ready").status, "False");
    assert_eq!(cond(&s, "Ready").reason, "SecretNotFound");
    assert!(
        cond(&s, "Ready")
            .message
            .contains("spec.database.urlSecretRef")
    );
    assert_eq!(cond(&s, "Degraded").status, "True");
}

#[test]
fn progress_deadline_is_degraded() {
    let mut d = deployment(3, 1, 1, 3);
    if let Some(st) = d.status.as_mut() {
        st.conditions = Some(vec![DeploymentCondition {
            type_: "Progressing".into(),
            status: "False".into(),
            reason: Some("ProgressDeadlineExceeded".into()),
            message: Some("ReplicaSet has timed out progressing".into()),
            ..Default::default()
        }]);
    }
    let s = compute_status(&fa(None), Some(&d), None, &t(100));
    assert_eq!(cond(&s, "Degraded").status, "True");
    assert_eq!(cond(&s, "Degraded").reason, "ProgressDeadlineExceeded");
    assert_eq!(cond(&s, "Progressing").status, "False");
}

fn hpa_with_status(status: serde_json::Value) -> HorizontalPodAutoscaler {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "a"},
        "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "a"}, "maxReplicas": 10},
        "status": status,
    }))
    .expect("HPA fixture")
}

#[test]
fn autoscaling_status_copies_what_the_hpa_measured_and_decided() {
    let hpa = hpa_with_status(serde_json::json!({
        "currentReplicas": 2, "desiredReplicas": 4,
        "lastScaleTime": "2026-12-01T10:00:00Z",
        "currentMetrics": [
            {"type": "Resource", "resource": {"name": "cpu",
                "current": {"averageUtilization": 3, "averageValue": "7m"}}},
            {"type": "Pods", "pods": {"metric": {"name": "fastagentic_concurrency_utilization"},
                "current": {"averageValue": "99500m"}}}
        ],
        "conditions": [
            {"type": "AbleToScale", "status": "True", "reason": "SucceededRescale", "message": "x"},
            {"type": "ScalingActive", "status": "True", "reason": "ValidMetricFound",
             "message": "the HPA was able to compute"},
            {"type": "ScalingLimited", "status": "False", "reason": "DesiredWithinRange", "message": "y"}
        ]
    }));
    let s = autoscaling_status(&fa(None), Some(&hpa)).expect("autoscaling status");
    assert_eq!(s.current_replicas, Some(2));
    assert_eq!(s.desired_replicas, Some(4));
    assert_eq!(s.current_concurrency_utilization_percentage, Some(100));
    assert_eq!(s.current_cpu_utilization_percentage, Some(3));
    assert!(s.last_scale_time.is_some());
    assert_eq!(
        s.message.as_deref(),
        Some("ValidMetricFound: the HPA was able to compute"),
        "only ScalingActive, and ScalingLimited when it limits"
    );
}

#[test]
fn autoscaling_status_keeps_the_last_value_until_the_hpa_has_a_status_and_clears_without_autoscaling()
 {
    let previous = AutoscalingStatus {
        desired_replicas: Some(3),
        ..Default::default()
    };
    let with_old = fa(Some(FastAgenticStatus {
        autoscaling: Some(previous.clone()),
        ..Default::default()
    }));
    let fresh = hpa_with_status(serde_json::Value::Null);
    assert_eq!(
        autoscaling_status(&with_old, Some(&fresh)),
        Some(previous.clone())
    );
    assert_eq!(autoscaling_status(&with_old, None), Some(previous));
    let mut manual = with_old.clone();
    manual.spec.autoscaling = None;
    manual.spec.replicas = Some(2);
    assert_eq!(autoscaling_status(&manual, None), None);
}

#[test]
fn percent_quantities_round_and_refuse_garbage() {
    for (q, want) in [
        ("70", Some(70)),
        ("72500m", Some(73)),
        ("0", Some(0)),
        ("abc", None),
        ("-5", None),
    ] {
        assert_eq!(percent(&Quantity(q.into())), want, "{q}");
    }
}
