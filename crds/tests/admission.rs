//! Invalid resources are rejected, each by the rule meant for it (the message is asserted, not
//! only the failure), and each differs from `tests/fixtures/base.yaml` by that one rule (see
//! `tests/fixtures/README.md`). The control-plane tests send the same objects to a real API
//! server.

// Tests fail loudly on broken fixtures; panicking is the point here.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};

use common::yaml_to_json;
use fastagentic_crd::admission::admit;
use serde_json::{Value, json};

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// `tests/fixtures/base.yaml`: the valid object every invalid fixture starts from.
fn base() -> Value {
    let path = fixtures_dir().join("base.yaml");
    yaml_to_json(
        &std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
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
    /// Dotted paths of the fields whose values break the rule (`# breaks:`).
    breaks: Vec<String>,
}

fn invalid_cases() -> Vec<Case> {
    let dir = fixtures_dir().join("invalid");
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
            breaks: header("breaks")
                .split(',')
                .map(|p| p.trim().to_string())
                .filter(|p| !p.is_empty())
                .collect(),
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
        ..
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

/// The value at a dotted path (`spec.autoscaling.minReplicas`).
fn at<'a>(object: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(object, |v, key| v.get(key))
}

fn at_mut<'a>(object: &'a mut Value, keys: &[&str]) -> Option<&'a mut Value> {
    keys.iter().try_fold(object, |v, key| v.get_mut(*key))
}

/// Puts the value at `path` back to `base`'s: the same value, or no key where the base has none
/// (then also no parent left empty that the base does not have either).
fn revert(object: &mut Value, base: &Value, path: &str) {
    let keys: Vec<&str> = path.split('.').collect();
    let (last, parents) = keys.split_last().expect("a non-empty path");
    if let Some(value) = at(base, path) {
        // Indexing a Value by key inserts the key (null, then an object) where it is missing.
        let parent = parents.iter().fold(&mut *object, |v, key| &mut v[*key]);
        parent[*last] = value.clone();
        return;
    }
    if let Some(Value::Object(map)) = at_mut(object, parents) {
        map.remove(*last);
    }
    for depth in (1..keys.len()).rev() {
        let parent = keys[..depth].join(".");
        let left_empty = at(object, &parent).is_some_and(|v| v == &json!({}));
        if !left_empty || at(base, &parent).is_some() {
            break;
        }
        if let Some(Value::Object(map)) = at_mut(object, &keys[..depth - 1]) {
            map.remove(keys[depth - 1]);
        }
    }
}

/// Whether `path` is `scope` or lies under it (`<root>` holds everything).
fn within(path: &str, scope: &str) -> bool {
    scope == "<root>" || path == scope || path.starts_with(&format!("{scope}."))
}

#[test]
fn each_invalid_case_differs_from_the_base_by_one_rule() {
    // Guards the table itself: a case must fail by its own rule alone, not pass by tripping some
    // other one.
    let base = base();
    admit(&base).expect("tests/fixtures/base.yaml is admitted");
    let mut failures = Vec::new();
    for Case {
        name,
        object,
        field,
        message,
        breaks,
    } in invalid_cases()
    {
        if breaks.is_empty() {
            failures.push(format!("{name}: no '# breaks:' field"));
            continue;
        }
        // Exactly one error, the rule's: the rest of the fixture trips no other rule.
        match admit(&object) {
            Ok(()) => failures.push(format!("{name}: admitted")),
            Err(errors) => {
                let only_the_rule = matches!(errors.0.as_slice(),
                    [e] if e.field == field && e.message.contains(&message));
                if !only_the_rule {
                    failures.push(format!(
                        "{name}: expected only {field:?} with {message:?}, got: {errors}"
                    ));
                }
            }
        }
        // The broken fields are changes from the base, inside what the rule guards.
        for path in &breaks {
            if at(&object, path) == at(&base, path) {
                failures.push(format!("{name}: breaks {path}, which is the base's value"));
            }
            // A missing required field is broken by the object that lacks it: that object may
            // be the `breaks` path, above the error's field.
            let lacks_it = message == "Required value" && within(&field, path);
            if !within(path, &field) && !lacks_it {
                failures.push(format!(
                    "{name}: breaks {path}, outside the rule's field {field}"
                ));
            }
        }
        // Everything else the fixture changes is valid on its own: with the broken fields back
        // to the base's values, it is admitted.
        let mut fixed = object.clone();
        for path in &breaks {
            revert(&mut fixed, &base, path);
        }
        if let Err(e) = admit(&fixed) {
            failures.push(format!(
                "{name}: with {breaks:?} as in the base it is still rejected: {e} ({fixed})"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_valid_neighbours_of_the_invalid_cases_are_admitted() {
    // The values next to each rule's edge, on the base: the rules reject no more than they say.
    let neighbours: Vec<(&str, Value)> = vec![
        ("a known server", json!({"server": "gunicorn"})),
        ("workers 1", json!({"workers": 1})),
        ("port 65535", json!({"port": 65535})),
        (
            "min < max replicas",
            json!({"autoscaling": {"minReplicas": 2, "maxReplicas": 5}}),
        ),
        (
            "reload with uvicorn",
            json!({"server": "uvicorn", "reload": true}),
        ),
        (
            "autoscaling without replicas",
            json!({"replicas": null, "autoscaling": {"maxReplicas": 5}}),
        ),
        (
            "network policy peers: selectors together, an ipBlock alone",
            json!({"networkPolicy": {"from": [
                {"namespaceSelector": {}, "podSelector": {"matchLabels": {"role": "client"}}},
                {"ipBlock": {"cidr": "203.0.113.0/24"}},
            ]}}),
        ),
        (
            "an http agent with every option at its edge",
            json!({"agent": {"http": {
                "url": "https://agent.example.com/chat",
                "streamUrl": "http://agent:9000/chat/stream",
                "readyUrl": "tcp://agent:9000",
                "format": "json",
                "replyField": "data_2.answer-text",
                "timeoutSeconds": 3600,
            }}}),
        ),
        (
            "a chat-completions http agent (no replyField, no streamUrl)",
            json!({"agent": {"http": {
                "url": "http://gateway:4000/v1/chat/completions",
                "readyUrl": "http://gateway:4000/health",
                "format": "chat-completions",
            }}}),
        ),
        (
            "a chat-completions container agent (no replyField, no streamPath)",
            json!({"port": 8080, "agent": {"container": {
                "image": "registry.example.com/gateway:1",
                "path": "/v1/chat/completions",
                "format": "chat-completions",
            }}}),
        ),
        (
            "an http agent: one-word reply field, an https ready URL, timeout 1",
            json!({"agent": {"http": {
                "url": "http://agent:9000/chat",
                "readyUrl": "https://agent:9000/ready",
                "format": "json",
                "replyField": "result",
                "timeoutSeconds": 1,
            }}}),
        ),
        (
            "a container agent on a port of its own (the runtime's stays the default 8000)",
            json!({"agent": {"container": {"image": "registry.example.com/python-agent:1", "port": 8001}}}),
        ),
        (
            "a container agent with every field",
            json!({"port": 8080, "agent": {"container": {
                "image": "registry.example.com/python-agent:1",
                "imagePullPolicy": "IfNotPresent",
                "command": ["fastagentic", "run", "app:app"],
                "args": ["--port", "8000"],
                "env": [{"name": "OPENAI_API_KEY", "valueFrom": {"secretKeyRef": {"name": "openai", "key": "api-key"}}}],
                "port": 1,
                "path": "/",
                "streamPath": "/chat/stream",
                "readyPath": "/ready",
                "format": "json",
                "replyField": "output",
                "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}},
                "readinessProbe": {"httpGet": {"path": "/ready", "port": "agent"}},
                "livenessProbe": {"tcpSocket": {"port": 8000}},
                "startupProbe": {"httpGet": {"path": "/ready", "port": 8000}, "failureThreshold": 60},
                "securityContext": {"runAsUser": 1000, "readOnlyRootFilesystem": false},
            }}}),
        ),
        (
            "64 network policy peers",
            json!({"networkPolicy": {"from": vec![json!({"podSelector": {}}); 64]}}),
        ),
    ];
    for (case, patch) in neighbours {
        let object = with_spec(patch);
        if let Err(e) = admit(&object) {
            panic!("{case} should be valid: {e}");
        }
    }
}

#[test]
fn more_than_64_network_policy_peers_are_refused() {
    let obj = with_spec(json!({"networkPolicy": {"from": vec![json!({"podSelector": {}}); 65]}}));
    let err = admit(&obj).expect_err("65 peers are too many");
    assert_eq!(
        err.0,
        vec![fastagentic_crd::admission::FieldError {
            field: "spec.networkPolicy.from".into(),
            message: "Too many: 65: must have at most 64 items".into(),
        }]
    );
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
