//! The generated CRD: committed copies match the code, and it carries what users rely on.

// Tests fail loudly on broken fixtures; panicking is the point here.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use fastagentic_crd::{CRD_FILE_NAME, crd, crd_yaml};
use serde_json::Value;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("crds/ has a parent")
        .to_path_buf()
}

/// Every file named like the CRD anywhere in the repository (build output excluded).
fn committed_copies(dir: &Path, found: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).expect("readable directory");
    for entry in entries {
        let entry = entry.expect("directory entry");
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if path.is_dir() {
            if name.starts_with("target") || name == ".git" || name == "node_modules" {
                continue;
            }
            committed_copies(&path, found);
        } else if name == CRD_FILE_NAME {
            found.push(path);
        }
    }
}

#[test]
fn every_committed_copy_matches_the_generated_crd() {
    let generated = crd_yaml().expect("CRD serializes");
    let root = repo_root();
    let mut copies = Vec::new();
    committed_copies(&root, &mut copies);

    let mut required = vec![root.join("crds").join(CRD_FILE_NAME)];
    let chart = root.join("charts/fastagentic-operator");
    if chart.exists() {
        required.push(chart.join("crds").join(CRD_FILE_NAME));
    }
    for path in &required {
        assert!(
            copies.contains(path),
            "{} is missing; run ./scripts/gen-crd.sh",
            path.display()
        );
    }
    for path in &copies {
        let committed = std::fs::read_to_string(path).expect("readable CRD copy");
        assert!(
            committed == generated,
            "{} differs from the CRD generated from crds/src; run ./scripts/gen-crd.sh",
            path.display()
        );
    }
}

fn crd_json() -> Value {
    serde_json::to_value(crd()).expect("CRD to JSON")
}

#[test]
fn crd_names_scope_and_subresources() {
    let crd = crd_json();
    assert_eq!(crd["metadata"]["name"], "fastagentics.fastagentic.io");
    assert_eq!(crd["spec"]["group"], "fastagentic.io");
    assert_eq!(crd["spec"]["scope"], "Namespaced");
    assert_eq!(crd["spec"]["names"]["kind"], "FastAgentic");
    assert_eq!(crd["spec"]["names"]["plural"], "fastagentics");
    assert_eq!(
        crd["spec"]["names"]["shortNames"],
        serde_json::json!(["fa"])
    );
    let version = &crd["spec"]["versions"][0];
    assert_eq!(version["name"], "v1alpha1");
    assert_eq!(version["served"], true);
    assert_eq!(version["storage"], true);
    assert!(version["subresources"]["status"].is_object());
    let scale = &version["subresources"]["scale"];
    assert_eq!(scale["specReplicasPath"], ".spec.replicas");
    assert_eq!(scale["statusReplicasPath"], ".status.replicas");
    assert_eq!(scale["labelSelectorPath"], ".status.selector");
}

#[test]
fn crd_printer_columns() {
    let crd = crd_json();
    let columns = crd["spec"]["versions"][0]["additionalPrinterColumns"]
        .as_array()
        .expect("printer columns")
        .clone();
    let find = |name: &str| {
        columns
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("printer column {name} missing"))
            .clone()
    };
    assert_eq!(find("Server")["jsonPath"], ".spec.server");
    assert_eq!(find("Workers")["jsonPath"], ".spec.workers");
    assert_eq!(find("MaxConcurrent")["jsonPath"], ".spec.maxConcurrent");
    assert_eq!(find("Replicas")["jsonPath"], ".status.replicas");
    assert_eq!(find("Ready")["jsonPath"], ".status.readyReplicas");
    assert_eq!(find("Age")["jsonPath"], ".metadata.creationTimestamp");
    assert_eq!(find("Age")["type"], "date");
}

/// Collects every CEL rule with its message and the schema path it sits on.
fn rules(schema: &Value, path: &str, out: &mut Vec<(String, String, String)>) {
    if let Some(list) = schema["x-kubernetes-validations"].as_array() {
        for r in list {
            out.push((
                path.to_string(),
                r["rule"].as_str().unwrap_or_default().to_string(),
                r["message"].as_str().unwrap_or_default().to_string(),
            ));
        }
    }
    if let Some(props) = schema["properties"].as_object() {
        for (k, v) in props {
            rules(v, &format!("{path}.{k}"), out);
        }
    }
    if schema["items"].is_object() {
        rules(&schema["items"], &format!("{path}[]"), out);
    }
}

#[test]
fn crd_carries_the_cel_rules_each_with_a_message() {
    let schema = fastagentic_crd::admission::schema();
    let mut found = Vec::new();
    rules(schema, "", &mut found);
    let expect = [
        ("", "self.metadata.name.size() <= 63"),
        (
            "",
            "self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')",
        ),
        (".spec", "!(has(self.replicas) && has(self.autoscaling))"),
        (".spec", "!self.reload || self.server == 'uvicorn'"),
        (".spec.autoscaling", "self.minReplicas <= self.maxReplicas"),
        (".spec.redis", "has(self.url) != has(self.urlSecretRef)"),
    ];
    for (path, rule) in expect {
        assert!(
            found.iter().any(|(p, r, _)| p == path && r == rule),
            "rule {rule:?} missing at {path:?}; found {found:#?}"
        );
    }
    for (path, rule, message) in &found {
        assert!(
            message.len() > 15,
            "rule {rule:?} at {path:?} has no useful message"
        );
    }
}

#[test]
fn conditions_are_a_list_map_keyed_by_type() {
    let schema = fastagentic_crd::admission::schema();
    let conditions = &schema["properties"]["status"]["properties"]["conditions"];
    assert_eq!(conditions["x-kubernetes-list-type"], "map");
    assert_eq!(
        conditions["x-kubernetes-list-map-keys"],
        serde_json::json!(["type"])
    );
}

/// Walks every property below `spec` and `status` and returns those without a description.
fn undocumented(schema: &Value, path: &str, out: &mut Vec<String>) {
    if let Some(props) = schema["properties"].as_object() {
        for (k, v) in props {
            let p = format!("{path}.{k}");
            let described = v["description"]
                .as_str()
                .is_some_and(|d| !d.trim().is_empty());
            if !described {
                out.push(p.clone());
            }
            undocumented(v, &p, out);
        }
    }
    if schema["items"].is_object() {
        undocumented(&schema["items"], &format!("{path}[]"), out);
    }
    if schema["additionalProperties"].is_object() {
        undocumented(&schema["additionalProperties"], &format!("{path}{{}}"), out);
    }
}

#[test]
fn every_property_has_a_description_for_kubectl_explain() {
    let schema = fastagentic_crd::admission::schema();
    let mut missing = Vec::new();
    for top in ["spec", "status"] {
        let s = &schema["properties"][top];
        assert!(
            s["description"].as_str().is_some_and(|d| !d.is_empty()),
            "{top} has no description"
        );
        undocumented(s, top, &mut missing);
    }
    assert!(
        missing.is_empty(),
        "properties without a description: {missing:#?}"
    );
}

#[test]
fn schema_defaults_match_the_guide() {
    let schema = fastagentic_crd::admission::schema();
    let spec = &schema["properties"]["spec"]["properties"];
    assert_eq!(spec["server"]["default"], "uvicorn");
    assert_eq!(
        spec["server"]["enum"],
        serde_json::json!(["uvicorn", "gunicorn"])
    );
    assert_eq!(spec["workers"]["default"], 1);
    assert_eq!(spec["workers"]["minimum"], 1.0);
    assert_eq!(spec["port"]["default"], 8000);
    assert_eq!(spec["port"]["minimum"], 1.0);
    assert_eq!(spec["port"]["maximum"], 65535.0);
    assert_eq!(spec["reload"]["default"], false);
    assert_eq!(spec["maxConcurrent"]["minimum"], 1.0);
    assert!(
        spec["maxConcurrent"].get("default").is_none(),
        "unset means unlimited"
    );
    let redis = &spec["redis"]["properties"];
    assert_eq!(redis["poolSize"]["default"], 10);
    assert_eq!(redis["poolTimeoutSeconds"]["default"], 5.0);
    let db = &spec["database"]["properties"];
    assert_eq!(db["poolSize"]["default"], 5);
    assert_eq!(db["maxOverflow"]["default"], 10);
    assert_eq!(db["poolRecycleSeconds"]["default"], 1800);
    assert_eq!(db["prePing"]["default"], true);
    let timeouts = &spec["timeouts"]["properties"];
    assert_eq!(timeouts["keepAliveSeconds"]["default"], 5);
    assert_eq!(timeouts["gracefulShutdownSeconds"]["default"], 30);
    // The agent's time limits have no schema default: unset leaves the runtime's own.
    for (field, min, max) in [
        ("agentFirstByteSeconds", 1.0, 3600.0),
        ("streamIdleSeconds", 1.0, 3600.0),
        ("runMaxSeconds", 0.0, 86400.0),
        ("streamHeartbeatSeconds", 0.0, 3600.0),
    ] {
        let f = &timeouts[field];
        assert!(f.get("default").is_none(), "{field}: {f}");
        assert_eq!(
            (&f["minimum"], &f["maximum"]),
            (&min.into(), &max.into()),
            "{field}"
        );
    }
    let hpa = &spec["autoscaling"]["properties"];
    assert_eq!(hpa["targetCPUUtilizationPercentage"]["default"], 70);
    assert_eq!(hpa["targetMemoryUtilizationPercentage"]["default"], 80);
    let resources = &spec["resources"]["default"];
    assert_eq!(resources["requests"]["memory"], "256Mi");
    assert_eq!(resources["requests"]["cpu"], "250m");
    assert_eq!(resources["limits"]["memory"], "512Mi");
    assert_eq!(resources["limits"]["cpu"], "1000m");
}

/// `spec.agent.http.url` is required, so its rule has no fixture of its own (a fixture's broken
/// field put back to the base must be admitted): checked here against the same schema and CEL.
#[test]
fn an_http_agent_url_needs_a_scheme() {
    let object = |url: &str| {
        serde_json::json!({
            "apiVersion": "fastagentic.io/v1alpha1",
            "kind": "FastAgentic",
            "metadata": {"name": "agent"},
            "spec": {"image": "registry.example.com/agent:1", "agent": {"http": {"url": url}}}
        })
    };
    assert!(fastagentic_crd::admission::admit(&object("http://agent:9000/chat")).is_ok());
    let rejected = fastagentic_crd::admission::admit(&object("agent:9000/chat"))
        .expect_err("a URL without a scheme is refused");
    assert_eq!(rejected.0.len(), 1, "{rejected:?}");
    assert_eq!(rejected.0[0].field, "spec.agent.http.url");
    assert_eq!(
        rejected.0[0].message,
        "spec.agent.http.url must start with http:// or https://"
    );
}
