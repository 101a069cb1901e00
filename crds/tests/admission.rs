//! Invalid resources are rejected, each by the rule meant for it (the message is asserted, not
//! only the failure). The control-plane tests send the same objects to a real API server.

// Tests fail loudly on broken fixtures; panicking is the point here.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use common::yaml_to_json;
use fastagentic_crd::admission::admit;
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

/// One invalid resource from `tests/fixtures/invalid/` with the error it must produce.
struct Case {
    name: String,
    object: Value,
    field: String,
    message: String,
}

fn invalid_cases() -> Vec<Case> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/invalid");
    let mut cases = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("fixtures/invalid exists") {
        let path = entry.expect("directory entry").path();
        let text = std::fs::read_to_string(&path).expect("readable fixture");
        let header = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("# {key}: ")))
                .unwrap_or_else(|| panic!("{} has no '# {key}:' line", path.display()))
                .to_string()
        };
        cases.push(Case {
            name: path
                .file_stem()
                .expect("file name")
                .to_string_lossy()
                .into_owned(),
            object: yaml_to_json(&text),
            field: header("field"),
            message: header("message"),
        });
    }
    cases.sort_by(|a, b| a.name.cmp(&b.name));
    cases
}

#[test]
fn the_fixtures_cover_every_rule_the_issue_lists() {
    let names: Vec<String> = invalid_cases().into_iter().map(|c| c.name).collect();
    for required in [
        "unknown-server",
        "workers-zero",
        "negative-redis-pool-size",
        "port-70000",
        "min-greater-than-max",
        "reload-with-gunicorn",
        "replicas-with-autoscaling",
        "missing-image",
    ] {
        assert!(
            names.iter().any(|n| n == required),
            "fixture {required} missing"
        );
    }
}

#[test]
fn the_base_object_is_admitted() {
    admit(&base()).expect("the base object is valid");
}

#[test]
fn every_invalid_resource_is_rejected_by_its_rule() {
    let mut failures = Vec::new();
    let cases = invalid_cases();
    assert!(cases.len() >= 8, "only {} invalid fixtures", cases.len());
    for Case {
        name,
        object,
        field,
        message,
    } in cases
    {
        match admit(&object) {
            Ok(()) => failures.push(format!("{name}: admitted")),
            Err(errors) => {
                let hit = errors
                    .0
                    .iter()
                    .any(|e| e.field == field && e.message.contains(&message));
                if !hit {
                    failures.push(format!(
                        "{name}: expected {field:?} with {message:?}, got: {errors}"
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
        if let Err(e) = admit(&object) {
            panic!("{case} fixed should be valid: {e}");
        }
    }
}

#[test]
fn wrong_kind_and_api_version_are_named() {
    let obj = yaml_to_json(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: x\nspec:\n  image: y\n",
    );
    let err = admit(&obj).expect_err("a Deployment is not a FastAgentic");
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
    admit(&obj).expect("poolTimeoutSeconds: 2 is a valid number");
}
