//! Invalid resources are rejected, each by the rule meant for it (the message is asserted, not
//! only the failure). The control-plane tests send the same objects to a real API server.

// Tests fail loudly on broken fixtures; panicking is the point here.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use common::yaml_to_json;
use fastagentic_crd::validate::validate_object;
use serde_json::{Value, json};

fn base() -> Value {
    json!({
        "apiVersion": "fastagentic.io/v1alpha1",
        "kind": "FastAgentic",
        "metadata": {"name": "agent"},
        "spec": {"image": "registry.example.com/agent:1"}
    })
}

fn with_spec(patch: Value) -> Value {
    let mut obj = base();
    let spec = obj["spec"].as_object_mut().expect("spec object");
    for (k, v) in patch.as_object().expect("patch object") {
        if v.is_null() {
            spec.remove(k);
        } else {
            spec.insert(k.clone(), v.clone());
        }
    }
    obj
}

/// (case, object, field the error names, text the message must contain)
fn invalid_cases() -> Vec<(&'static str, Value, &'static str, &'static str)> {
    let mut long_name = base();
    long_name["metadata"]["name"] = json!("a".repeat(64));
    let mut bad_name = base();
    bad_name["metadata"]["name"] = json!("1-agent");
    vec![
        (
            "unknown server",
            with_spec(json!({"server": "nginx"})),
            "spec.server",
            "Unsupported value: \"nginx\": supported values: \"uvicorn\", \"gunicorn\"",
        ),
        (
            "workers 0",
            with_spec(json!({"workers": 0})),
            "spec.workers",
            "should be greater than or equal to 1",
        ),
        (
            "workers not a number",
            with_spec(json!({"workers": "abc"})),
            "spec.workers",
            "must be of type integer",
        ),
        (
            "negative redis pool size",
            with_spec(json!({"redis": {"url": "redis://r:6379", "poolSize": -1}})),
            "spec.redis.poolSize",
            "should be greater than or equal to 1",
        ),
        (
            "negative db overflow",
            with_spec(
                json!({"database": {"urlSecretRef": {"name": "s", "key": "k"}, "maxOverflow": -3}}),
            ),
            "spec.database.maxOverflow",
            "should be greater than or equal to 0",
        ),
        (
            "port 70000",
            with_spec(json!({"port": 70000})),
            "spec.port",
            "should be less than or equal to 65535",
        ),
        (
            "port 0",
            with_spec(json!({"port": 0})),
            "spec.port",
            "should be greater than or equal to 1",
        ),
        (
            "max concurrent 0",
            with_spec(json!({"maxConcurrent": 0})),
            "spec.maxConcurrent",
            "should be greater than or equal to 1",
        ),
        (
            "graceful timeout 0",
            with_spec(json!({"timeouts": {"gracefulShutdownSeconds": 0}})),
            "spec.timeouts.gracefulShutdownSeconds",
            "should be greater than or equal to 1",
        ),
        (
            "redis pool timeout 0",
            with_spec(json!({"redis": {"url": "redis://r:6379", "poolTimeoutSeconds": 0}})),
            "spec.redis.poolTimeoutSeconds",
            "must be greater than 0",
        ),
        (
            "min > max replicas",
            with_spec(json!({"autoscaling": {"minReplicas": 5, "maxReplicas": 2}})),
            "spec.autoscaling",
            "minReplicas must be less than or equal to spec.autoscaling.maxReplicas",
        ),
        (
            "reload with gunicorn",
            with_spec(json!({"server": "gunicorn", "reload": true})),
            "spec",
            "reload is a development option and works only with server 'uvicorn'",
        ),
        (
            "replicas with autoscaling",
            with_spec(json!({"replicas": 3, "autoscaling": {"maxReplicas": 5}})),
            "spec",
            "set either spec.replicas or spec.autoscaling, not both",
        ),
        (
            "missing image",
            with_spec(json!({"image": null})),
            "spec.image",
            "Required value",
        ),
        (
            "empty image",
            with_spec(json!({"image": ""})),
            "spec.image",
            "must not be empty",
        ),
        (
            "redis url and secret",
            with_spec(
                json!({"redis": {"url": "redis://r", "urlSecretRef": {"name": "s", "key": "k"}}}),
            ),
            "spec.redis",
            "set exactly one of spec.redis.url and spec.redis.urlSecretRef",
        ),
        (
            "redis url with password",
            with_spec(json!({"redis": {"url": "redis://:hunter2@r:6379"}})),
            "spec.redis",
            "must not contain credentials",
        ),
        (
            "pdb with both fields",
            with_spec(json!({"disruptionBudget": {"maxUnavailable": 1, "minAvailable": 1}})),
            "spec.disruptionBudget",
            "set at most one of",
        ),
        (
            "unknown field",
            with_spec(json!({"wrokers": 2})),
            "spec.wrokers",
            "unknown field \"wrokers\"",
        ),
        (
            "name too long",
            long_name,
            "<root>",
            "metadata.name must be at most 63 characters",
        ),
        (
            "name not a DNS label",
            bad_name,
            "<root>",
            "metadata.name must start with a letter",
        ),
    ]
}

#[test]
fn the_base_object_is_admitted() {
    validate_object(&base()).expect("the base object is valid");
}

#[test]
fn every_invalid_resource_is_rejected_by_its_rule() {
    let mut failures = Vec::new();
    for (case, object, field, text) in invalid_cases() {
        match validate_object(&object) {
            Ok(()) => failures.push(format!("{case}: admitted")),
            Err(errors) => {
                let hit = errors
                    .0
                    .iter()
                    .any(|e| e.field == field && e.message.contains(text));
                if !hit {
                    failures.push(format!(
                        "{case}: expected {field:?} with {text:?}, got: {errors}"
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn each_invalid_case_differs_from_the_base_by_one_rule() {
    // Guards the table itself: fixing the offending field makes each case valid again, so a case
    // cannot pass by tripping some other rule.
    let fixes: Vec<(&str, Value)> = vec![
        ("unknown server", json!({"server": "gunicorn"})),
        ("workers 0", json!({"workers": 1})),
        ("port 70000", json!({"port": 65535})),
        (
            "min > max replicas",
            json!({"autoscaling": {"minReplicas": 2, "maxReplicas": 5}}),
        ),
        (
            "reload with gunicorn",
            json!({"server": "uvicorn", "reload": true}),
        ),
        (
            "replicas with autoscaling",
            json!({"replicas": null, "autoscaling": {"maxReplicas": 5}}),
        ),
    ];
    for (case, patch) in fixes {
        let object = with_spec(patch);
        if let Err(e) = validate_object(&object) {
            panic!("{case} fixed should be valid: {e}");
        }
    }
}

#[test]
fn wrong_kind_and_api_version_are_named() {
    let obj = yaml_to_json(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: x\nspec:\n  image: y\n",
    );
    let err = validate_object(&obj).expect_err("a Deployment is not a FastAgentic");
    let text = err.to_string();
    assert!(
        text.contains("apiVersion: Unsupported value: \"apps/v1\""),
        "{text}"
    );
    assert!(
        text.contains("kind: Unsupported value: \"Deployment\""),
        "{text}"
    );
}

#[test]
fn integer_timeouts_are_accepted_for_number_fields() {
    let obj = with_spec(json!({"redis": {"url": "redis://r:6379", "poolTimeoutSeconds": 2}}));
    validate_object(&obj).expect("poolTimeoutSeconds: 2 is a valid number");
}
