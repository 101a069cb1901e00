//! Control-plane tests (`DESIGN.md`, "Tests, in layers", 3): the CRD, the Helm chart and the
//! operator against a real kube-apiserver, etcd and kube-controller-manager on loopback.
//!
//! Run with `./scripts/test.sh`, or by hand:
//!
//! ```text
//! scripts/control-plane.sh up && eval "$(scripts/control-plane.sh env)"
//! cargo build --workspace --bins
//! FASTAGENTIC_CONTROL_PLANE=1 cargo test -p fastagentic-tests --test control_plane
//! ```
//!
//! Without the control plane every test prints `SKIPPED` and why (see the harness in
//! `tests/src/lib.rs`). The tests run one at a time (they share the chart's RBAC, which one of
//! them edits, and two CPU cores); each has its own namespace and operator process.

// Tests fail loudly: a panic with the state that was seen is the point of an assertion here.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::io::Write as _;
use std::time::{Duration, Instant};

use fastagentic_tests::*;
use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

/// How long the operator gets to react to a change (generous: two shared cores).
const RECONCILE: Duration = Duration::from_secs(90);
/// The operator's Lease duration plus one retry interval (`operator/src/leader.rs`): the most a
/// standby may need to take over from a crashed holder.
const TAKEOVER_BOUND: Duration = Duration::from_secs(15 + 5);

fn fastagentic(name: &str, spec: Value) -> Value {
    let mut full = json!({"image": "registry.example.com/agent:1.0.0"});
    for (k, v) in spec.as_object().expect("spec is an object") {
        full[k] = v.clone();
    }
    json!({
        "apiVersion": "fastagentic.io/v1alpha1",
        "kind": "FastAgentic",
        "metadata": {"name": name},
        "spec": full,
    })
}

async fn create_secret(client: &Client, ns: &str, name: &str, data: &[(&str, &str)]) -> Secret {
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        data: Some(
            data.iter()
                .map(|(k, v)| ((*k).to_string(), ByteString(v.as_bytes().to_vec())))
                .collect(),
        ),
        ..Default::default()
    };
    Api::<Secret>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap_or_else(|e| panic!("creating Secret {ns}/{name}: {e}"))
}

fn owned_by(meta: &ObjectMeta, fa: &Value) -> Result<(), String> {
    let uid = fa["metadata"]["uid"].as_str().unwrap_or_default();
    let refs = meta.owner_references.clone().unwrap_or_default();
    let ok = refs.iter().any(|o| {
        o.kind == "FastAgentic"
            && o.api_version == "fastagentic.io/v1alpha1"
            && o.uid == uid
            && o.controller == Some(true)
    });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "no controller ownerReference to FastAgentic uid {uid}: {refs:?}"
        ))
    }
}

fn standard_labels(meta: &ObjectMeta, name: &str) -> Result<(), String> {
    let labels = meta.labels.clone().unwrap_or_default();
    for (k, v) in [
        ("app.kubernetes.io/name", "fastagentic"),
        ("app.kubernetes.io/instance", name),
        ("app.kubernetes.io/managed-by", "fastagentic-operator"),
        ("app.kubernetes.io/part-of", "fastagentic"),
    ] {
        if labels.get(k).map(String::as_str) != Some(v) {
            return Err(format!("label {k}={v} missing: {labels:?}"));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Admission
// ---------------------------------------------------------------------------------------------

/// The base every invalid fixture starts from is admitted; every invalid fixture is rejected by
/// `kubectl apply` (server-side strict field validation, the CRD's schema and CEL rules) with
/// the fixture's message and field, and nothing is stored.
#[tokio::test]
async fn invalid_fixtures_are_rejected_by_the_api_server() {
    let Some(t) =
        ControlPlaneTest::without_operator("invalid_fixtures_are_rejected_by_the_api_server").await
    else {
        return;
    };
    let (client, n) = (&t.client, t.ns());

    let base = base_fixture();
    kubectl(&[
        "apply",
        "--dry-run=server",
        "-n",
        n,
        "-f",
        base.to_str().unwrap(),
    ])
    .unwrap_or_else(|e| panic!("the API server refuses the fixtures' base: {e}"));

    let fixtures = invalid_fixtures();
    assert!(
        fixtures.len() >= 15,
        "only {} invalid fixtures found",
        fixtures.len()
    );
    let mut failures = Vec::new();
    for f in &fixtures {
        let file = f.path.file_name().unwrap().to_string_lossy().into_owned();
        match kubectl(&["apply", "-n", n, "-f", f.path.to_str().unwrap()]) {
            Ok(out) => failures.push(format!("{file}: accepted: {out}")),
            Err(err) => {
                if !err.contains(&f.message) {
                    failures.push(format!("{file}: message {:?} not in: {err}", f.message));
                } else if f.field != "<root>" && !err.contains(&f.field) {
                    failures.push(format!("{file}: field {:?} not in: {err}", f.field));
                } else {
                    eprintln!("rejected as expected: {file}");
                }
            }
        }
    }
    let stored = fastagentics(client, n)
        .list(&Default::default())
        .await
        .expect("list FastAgentics");
    assert!(
        stored.items.is_empty(),
        "invalid objects were stored: {:?}",
        stored
            .items
            .iter()
            .map(|o| o.name_any())
            .collect::<Vec<_>>()
    );
    assert!(
        failures.is_empty(),
        "{} fixture(s) not rejected as expected:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// Examples → children
// ---------------------------------------------------------------------------------------------

/// Checks the live Deployment against what `render` builds for the example, and what render
/// cannot know: the owner, the pods' selector and hash, the Secret references and values.
fn check_deployment(
    example: &Value,
    rendered: &Rendered,
    fa: &Value,
    d: &Deployment,
    secret_values: &[&str],
) -> Result<(), String> {
    let spec = &example["spec"];
    let name = example["metadata"]["name"].as_str().unwrap();
    owned_by(&d.metadata, fa)?;
    standard_labels(&d.metadata, name)?;
    matches_rendered(&serde_json::to_value(d).unwrap(), rendered.deployment())?;
    let dspec = d.spec.as_ref().ok_or("no spec")?;
    let template_labels = dspec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    for (k, v) in dspec.selector.match_labels.clone().unwrap_or_default() {
        if template_labels.get(&k) != Some(&v) {
            return Err(format!(
                "selector {k}={v} not on the pod template: {template_labels:?}"
            ));
        }
    }
    config_hash(d).ok_or("no config-hash annotation on the pod template")?;
    let c = agent_container(d);
    if c.image.as_deref() != spec["image"].as_str() {
        return Err(format!("image {:?}", c.image));
    }
    let env = c.env.clone().unwrap_or_default();
    for (var, source) in [
        ("REDIS_URL", &spec["redis"]["urlSecretRef"]),
        ("DATABASE_URL", &spec["database"]["urlSecretRef"]),
    ] {
        if source.is_null() {
            continue;
        }
        let e = env
            .iter()
            .find(|e| e.name == var)
            .ok_or(format!("no {var}"))?;
        let sel = e
            .value_from
            .as_ref()
            .and_then(|s| s.secret_key_ref.as_ref())
            .ok_or(format!("{var} is not a secretKeyRef"))?;
        if Some(sel.name.as_str()) != source["name"].as_str()
            || Some(sel.key.as_str()) != source["key"].as_str()
        {
            return Err(format!("{var} refers to {sel:?}, want {source}"));
        }
    }
    // The pods get time to drain after the graceful timeout the runtime is given.
    let grace = dspec
        .template
        .spec
        .as_ref()
        .and_then(|p| p.termination_grace_period_seconds)
        .unwrap_or(0);
    let graceful = rendered.env_int("FASTAGENTIC_TIMEOUT_GRACEFUL_SHUTDOWN");
    if grace <= graceful {
        return Err(format!(
            "terminationGracePeriodSeconds {grace} is not above the graceful timeout {graceful}"
        ));
    }
    if let Some(r) = spec["replicas"].as_i64()
        && deployment_replicas(d).map(i64::from) != Some(r)
    {
        return Err(format!("replicas {:?}, want {r}", deployment_replicas(d)));
    }
    let text = serde_json::to_string(d).unwrap();
    if let Some(v) = secret_values.iter().find(|v| text.contains(**v)) {
        return Err(format!("the Deployment holds a secret value ({v})"));
    }
    Ok(())
}

/// Every example becomes the Deployment, Service, HPA (with autoscaling) and PDB that
/// `fastagentic-operator render` builds for it, owned by the FastAgentic; the status reports the
/// connection budget of the rendered pods; `status.observedGeneration` follows
/// `metadata.generation` after an edit.
#[tokio::test]
async fn examples_become_deployment_service_and_hpa() {
    let Some(t) = ControlPlaneTest::start("examples_become_deployment_service_and_hpa").await
    else {
        return;
    };
    let (client, n) = (&t.client, t.ns());
    let redis_secret = "redis://:s3cret-redis@redis.invalid:6379/0";
    let db_secret = "postgres://agent:s3cret-db@postgres.invalid:5432/agent";
    let openai_secret = "sk-s3cret-openai";
    create_secret(
        client,
        n,
        "agent-stores",
        &[("redis-url", redis_secret), ("database-url", db_secret)],
    )
    .await;
    // examples/openai.yaml's key.
    create_secret(client, n, "openai", &[("api-key", openai_secret)]).await;

    let examples = examples();
    assert!(
        examples.len() >= 5,
        "expected the five examples, found {}",
        examples.len()
    );
    for (_, obj) in &examples {
        apply_fastagentic(client, n, obj).await;
    }
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), n);
    let services: Api<Service> = Api::namespaced(client.clone(), n);
    let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(client.clone(), n);
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), n);
    for (file, example) in &examples {
        let name = example["metadata"]["name"].as_str().unwrap();
        let rendered = Rendered::of(example);
        let fa = wait_observed(client, n, name, RECONCILE).await;
        let fa_ref = &fa;
        let d = wait_deployment(
            client,
            n,
            name,
            RECONCILE,
            &format!("fields of {file}"),
            |d| {
                check_deployment(
                    example,
                    &rendered,
                    fa_ref,
                    d,
                    &[redis_secret, db_secret, openai_secret],
                )
            },
        )
        .await;

        let svc = services
            .get(name)
            .await
            .unwrap_or_else(|e| panic!("{file}: Service: {e}"));
        owned_by(&svc.metadata, &fa).unwrap_or_else(|e| panic!("{file}: Service: {e}"));
        standard_labels(&svc.metadata, name).unwrap_or_else(|e| panic!("{file}: Service: {e}"));
        matches_rendered(&serde_json::to_value(&svc).unwrap(), rendered.service())
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(
            svc.spec.as_ref().and_then(|s| s.selector.clone()),
            d.spec.as_ref().unwrap().selector.match_labels,
            "{file}: the Service selects the Deployment's pods"
        );

        let hpa = hpas.get_opt(name).await.unwrap();
        match (rendered.hpa(), hpa) {
            (Some(want), Some(hpa)) => {
                owned_by(&hpa.metadata, &fa).unwrap_or_else(|e| panic!("{file}: HPA: {e}"));
                matches_rendered(&serde_json::to_value(&hpa).unwrap(), want)
                    .unwrap_or_else(|e| panic!("{file}: {e}"));
                let target = &hpa.spec.as_ref().unwrap().scale_target_ref;
                assert_eq!(
                    (target.kind.as_str(), target.name.as_str()),
                    ("Deployment", name),
                    "{file}: the HPA scales the Deployment"
                );
            }
            (None, None) => {}
            (want, have) => panic!(
                "{file}: render builds {} HPA, the cluster has {}",
                if want.is_some() { "an" } else { "no" },
                if have.is_some() { "one" } else { "none" }
            ),
        }
        let pdb = pdbs.get_opt(name).await.unwrap();
        match (rendered.pdb(), pdb) {
            (Some(want), Some(pdb)) => {
                owned_by(&pdb.metadata, &fa).unwrap_or_else(|e| panic!("{file}: PDB: {e}"));
                matches_rendered(&serde_json::to_value(&pdb).unwrap(), want)
                    .unwrap_or_else(|e| panic!("{file}: {e}"));
            }
            (None, None) => {}
            (want, have) => panic!(
                "{file}: render builds {} PDB, the cluster has {}",
                if want.is_some() { "a" } else { "no" },
                if have.is_some() { "one" } else { "none" }
            ),
        }

        // The connection budget the guide teaches, for the largest pod count of the rendered
        // objects, with the pool sizes the rendered pods are given.
        let max_pods = rendered
            .hpa()
            .and_then(|h| h["spec"]["maxReplicas"].as_i64())
            .or(rendered.deployment()["spec"]["replicas"].as_i64())
            .unwrap_or(1);
        let workers = rendered.env_int("FASTAGENTIC_WORKERS");
        if rendered.env("FASTAGENTIC_REDIS_POOL_SIZE").is_some() {
            let want = max_pods * workers * rendered.env_int("FASTAGENTIC_REDIS_POOL_SIZE");
            assert_eq!(
                fa["status"]["maxRedisConnections"].as_i64(),
                Some(want),
                "{file}: maxRedisConnections"
            );
        }
        if rendered.env("FASTAGENTIC_DB_POOL_SIZE").is_some() {
            let per_worker = rendered.env_int("FASTAGENTIC_DB_POOL_SIZE")
                + rendered.env_int("FASTAGENTIC_DB_MAX_OVERFLOW");
            assert_eq!(
                fa["status"]["maxDatabaseConnections"].as_i64(),
                Some(max_pods * workers * per_worker),
                "{file}: maxDatabaseConnections"
            );
        }
        assert!(
            condition(&fa, "Ready").is_some(),
            "{file}: no Ready condition: {}",
            fa["status"]
        );
        eprintln!(
            "{file}: Deployment, Service{}{} as rendered",
            if rendered.hpa().is_some() {
                ", HPA"
            } else {
                ""
            },
            if rendered.pdb().is_some() {
                ", PDB"
            } else {
                ""
            },
        );
    }
    assert!(
        deployments
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .len()
            == examples.len()
    );

    // An edit: observedGeneration follows the new generation.
    let (_, first) = &examples[0];
    let name = first["metadata"]["name"].as_str().unwrap();
    let before = get_fastagentic(client, n, name).await["metadata"]["generation"]
        .as_i64()
        .unwrap();
    let workers = Rendered::of(first).env_int("FASTAGENTIC_WORKERS") + 1;
    merge_patch_spec(client, n, name, json!({"workers": workers})).await;
    let fa = wait_observed(client, n, name, RECONCILE).await;
    assert!(
        fa["metadata"]["generation"].as_i64().unwrap() > before,
        "the edit did not bump the generation"
    );
    assert_eq!(
        fa["status"]["observedGeneration"],
        fa["metadata"]["generation"]
    );
}

// ---------------------------------------------------------------------------------------------
// Updates and idempotency
// ---------------------------------------------------------------------------------------------

/// Changing `workers` updates the env and the pod-template hash.
#[tokio::test]
async fn changing_workers_updates_env_and_template_hash() {
    let Some(t) = ControlPlaneTest::start("changing_workers_updates_env_and_template_hash").await
    else {
        return;
    };
    let (client, n) = (&t.client, t.ns());
    apply_fastagentic(
        client,
        n,
        &fastagentic(
            "agent",
            json!({"server": "gunicorn", "workers": 2, "replicas": 1}),
        ),
    )
    .await;
    let d = wait_deployment(
        client,
        n,
        "agent",
        RECONCILE,
        "FASTAGENTIC_WORKERS=2",
        |d| {
            (env_value(d, "FASTAGENTIC_WORKERS").as_deref() == Some("2"))
                .then_some(())
                .ok_or(format!("{:?}", env_value(d, "FASTAGENTIC_WORKERS")))
        },
    )
    .await;
    let hash = config_hash(&d).expect("config hash");
    for kind in ["Deployment", "Service"] {
        let created = wait_event(
            client,
            n,
            "agent",
            "Normal",
            "Created",
            &format!("created {kind} agent"),
        )
        .await;
        assert_eq!(
            created.reporting_controller.as_deref(),
            Some("fastagentic-operator")
        );
        let related = created.related.expect("related object");
        assert_eq!(
            (related.kind.as_deref(), related.name.as_deref()),
            (Some(kind), Some("agent"))
        );
    }
    merge_patch_spec(client, n, "agent", json!({"workers": 4})).await;
    let d2 = wait_deployment(
        client,
        n,
        "agent",
        RECONCILE,
        "FASTAGENTIC_WORKERS=4 and a new hash",
        |d| {
            let w = env_value(d, "FASTAGENTIC_WORKERS");
            let h = config_hash(d);
            if w.as_deref() == Some("4") && h.as_ref() != Some(&hash) {
                Ok(())
            } else {
                Err(format!("workers {w:?}, hash {h:?} (was {hash})"))
            }
        },
    )
    .await;
    assert!(
        d2.metadata.generation > d.metadata.generation,
        "the Deployment's generation did not move"
    );
    wait_observed(client, n, "agent", RECONCILE).await;
    wait_event(
        client,
        n,
        "agent",
        "Normal",
        "Updated",
        "updated Deployment agent",
    )
    .await;
    let events: Api<Event> = Api::namespaced(client.clone(), n);
    let service_updates: Vec<_> = events
        .list(&Default::default())
        .await
        .expect("list events")
        .items
        .into_iter()
        .filter(|e| e.note.as_deref() == Some("updated Service agent to match the spec"))
        .collect();
    assert!(
        service_updates.is_empty(),
        "only the Deployment changed: {service_updates:?}"
    );
    // What it converged to is what the operator builds for the edited spec.
    let edited = fastagentic(
        "agent",
        json!({"server": "gunicorn", "workers": 4, "replicas": 1}),
    );
    let live = Api::<Deployment>::namespaced(client.clone(), n)
        .get("agent")
        .await
        .unwrap();
    matches_rendered(
        &serde_json::to_value(&live).unwrap(),
        Rendered::of(&edited).deployment(),
    )
    .unwrap_or_else(|e| panic!("after the edit: {e}"));
}

/// The non-zero `fastagentic_operator_writes_total` series of `op`, as `(labels, count)`: what
/// the reconciler wrote, whatever it logged.
async fn writes(op: &Operator) -> Vec<(String, f64)> {
    op.metrics_text()
        .await
        .lines()
        .filter_map(|l| l.strip_prefix("fastagentic_operator_writes_total"))
        .filter_map(|l| {
            let (labels, value) = l.rsplit_once(' ')?;
            let value: f64 = value.parse().ok()?;
            (value > 0.0).then(|| (labels.to_string(), value))
        })
        .collect()
}

/// `fastagentic_operator_writes_total` for one kind and verb (0 when the series is absent).
async fn writes_total(op: &Operator, kind: &str, verb: &str) -> f64 {
    op.metric(&format!(
        "fastagentic_operator_writes_total{{kind=\"{kind}\",verb=\"{verb}\"}}"
    ))
    .await
}

/// Waits for an Event about FastAgentic `name` with this type and reason whose note contains
/// `note`, and returns it.
async fn wait_event(
    client: &Client,
    ns: &str,
    name: &str,
    type_: &str,
    reason: &str,
    note: &str,
) -> Event {
    let api: Api<Event> = Api::namespaced(client.clone(), ns);
    wait_for(
        &format!("a {type_} Event {reason} on {name} saying {note:?}"),
        RECONCILE,
        || async {
            let events = api
                .list(&Default::default())
                .await
                .map_err(|e| e.to_string())?;
            let about: Vec<&Event> = events
                .items
                .iter()
                .filter(|e| {
                    e.regarding.as_ref().and_then(|r| r.kind.as_deref()) == Some("FastAgentic")
                        && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name)
                })
                .collect();
            about
                .iter()
                .find(|e| {
                    e.type_.as_deref() == Some(type_)
                        && e.reason.as_deref() == Some(reason)
                        && e.note.as_deref().is_some_and(|n| n.contains(note))
                })
                .map(|e| (*e).clone())
                .ok_or_else(|| {
                    let seen: Vec<_> = about
                        .iter()
                        .map(|e| (e.type_.clone(), e.reason.clone(), e.note.clone()))
                        .collect();
                    format!("events so far: {seen:?}")
                })
        },
    )
    .await
}

/// resourceVersions of a FastAgentic and all its children.
async fn versions(client: &Client, ns: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for fa in fastagentics(client, ns)
        .list(&Default::default())
        .await
        .unwrap()
    {
        out.insert(
            format!("FastAgentic/{}", fa.name_any()),
            resource_version(&fa),
        );
    }
    for d in Api::<Deployment>::namespaced(client.clone(), ns)
        .list(&Default::default())
        .await
        .unwrap()
    {
        out.insert(format!("Deployment/{}", d.name_any()), resource_version(&d));
    }
    for s in Api::<Service>::namespaced(client.clone(), ns)
        .list(&Default::default())
        .await
        .unwrap()
    {
        out.insert(format!("Service/{}", s.name_any()), resource_version(&s));
    }
    for h in Api::<HorizontalPodAutoscaler>::namespaced(client.clone(), ns)
        .list(&Default::default())
        .await
        .unwrap()
    {
        out.insert(format!("HPA/{}", h.name_any()), resource_version(&h));
    }
    for p in Api::<PodDisruptionBudget>::namespaced(client.clone(), ns)
        .list(&Default::default())
        .await
        .unwrap()
    {
        out.insert(format!("PDB/{}", p.name_any()), resource_version(&p));
    }
    out
}

fn changed(a: &BTreeMap<String, String>, b: &BTreeMap<String, String>) -> Vec<String> {
    let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    keys.into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| format!("{k}: {:?} -> {:?}", a.get(k), b.get(k)))
        .collect()
}

/// Changing nothing writes nothing: once every example has settled (the controller-manager and
/// the HPA controller have finished their own status writes), restarting the operator — a full
/// reconcile of every resource — changes no resourceVersion and sends no apply.
#[tokio::test]
async fn unchanged_resources_are_not_written_across_a_restart() {
    let Some(mut t) =
        ControlPlaneTest::start("unchanged_resources_are_not_written_across_a_restart").await
    else {
        return;
    };
    // Owned copies: the test restarts its operator (a mutable use of `t`) midway.
    let (client, n) = (&t.client.clone(), &t.ns().to_string());
    create_secret(
        client,
        n,
        "agent-stores",
        &[
            ("redis-url", "redis://r.invalid:6379"),
            ("database-url", "postgres://d.invalid/db"),
        ],
    )
    .await;
    create_secret(client, n, "openai", &[("api-key", "sk-test")]).await;
    let examples = examples();
    for (_, obj) in &examples {
        apply_fastagentic(client, n, obj).await;
    }
    for (_, obj) in &examples {
        wait_observed(
            client,
            n,
            obj["metadata"]["name"].as_str().unwrap(),
            RECONCILE,
        )
        .await;
    }
    // Settled: nothing changed for 20 s (longer than the HPA controller's 15 s sync).
    let quiet = Duration::from_secs(20);
    let start = Instant::now();
    let mut last = versions(client, n).await;
    let mut since = Instant::now();
    while since.elapsed() < quiet {
        assert!(
            start.elapsed() < Duration::from_secs(180),
            "the objects never settled for {quiet:?}: last change {:?}\n{}",
            changed(&last, &versions(client, n).await),
            t.operator().log_tail(30)
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = versions(client, n).await;
        if now != last {
            eprintln!("still settling: {:?}", changed(&last, &now));
            last = now;
            since = Instant::now();
        }
    }
    assert!(
        last.len() >= 2 * examples.len(),
        "too few objects recorded: {last:?}"
    );
    t.restart_operator("operator-restarted").await;
    let op = t.operator();
    let reconciles = wait_for(
        "the restarted operator to reconcile every example",
        RECONCILE,
        || async {
            let r = op.metric("fastagentic_operator_reconciles_total").await;
            if r >= examples.len() as f64 {
                Ok(r)
            } else {
                Err(format!("{r} reconciles"))
            }
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(12)).await;
    let after = versions(client, n).await;
    let diff = changed(&last, &after);
    assert!(
        diff.is_empty(),
        "a reconcile with nothing changed wrote: {diff:?}\n{}",
        op.log_tail(30)
    );
    let written = writes(op).await;
    assert!(
        written.is_empty(),
        "the restarted operator wrote to unchanged objects: {written:?}\n{}",
        op.log_tail(30)
    );
    eprintln!(
        "{} objects unchanged after {reconciles} reconciles of a restarted operator",
        after.len()
    );
}

/// Field managers whose Apply entry in the Deployment's managedFields includes `spec.replicas`.
fn replicas_owners(d: &Deployment) -> Vec<String> {
    d.metadata
        .managed_fields
        .iter()
        .flatten()
        .filter(|m| m.operation.as_deref() == Some("Apply"))
        .filter(|m| {
            m.fields_v1
                .as_ref()
                .is_some_and(|f| f.0.pointer("/f:spec/f:replicas").is_some())
        })
        .filter_map(|m| m.manager.clone())
        .collect()
}

/// A new autoscaled FastAgentic's Deployment is created at `autoscaling.minReplicas` (not 1
/// until the HPA's first sync), and in the same reconcile the count is handed over: the
/// operator's own apply never owns `spec.replicas` afterwards, so a later change to the
/// resource leaves the count alone.
#[tokio::test]
async fn a_new_autoscaled_deployment_starts_at_min_replicas() {
    let Some(t) =
        ControlPlaneTest::start("a_new_autoscaled_deployment_starts_at_min_replicas").await
    else {
        return;
    };
    let (client, n) = (&t.client, t.ns());
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), n);
    apply_fastagentic(
        client,
        n,
        &fastagentic(
            "agent",
            json!({"autoscaling": {"minReplicas": 3, "maxReplicas": 6}}),
        ),
    )
    .await;
    let first = wait_for("the Deployment", RECONCILE, || async {
        match deployments.get_opt("agent").await {
            Ok(Some(d)) => Ok(d),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    // The Deployment's first version: generation 1 is what the operator created.
    assert_eq!(
        deployment_replicas(&first),
        Some(3),
        "created at minReplicas: {:?}",
        first.spec.as_ref().map(|s| s.replicas)
    );
    wait_observed(client, n, "agent", RECONCILE).await;
    let settled = deployments.get("agent").await.expect("the Deployment");
    assert_eq!(
        replicas_owners(&settled),
        vec!["fastagentic-operator-replicas-handoff".to_string()],
        "spec.replicas is owned by the hand-off manager only, not by the operator's apply"
    );
    assert_eq!(deployment_replicas(&settled), Some(3));

    merge_patch_spec(client, n, "agent", json!({"workers": 2})).await;
    let changed = wait_deployment(
        client,
        n,
        "agent",
        RECONCILE,
        "FASTAGENTIC_WORKERS=2",
        |d| {
            (env_value(d, "FASTAGENTIC_WORKERS").as_deref() == Some("2"))
                .then_some(())
                .ok_or(format!("{:?}", env_value(d, "FASTAGENTIC_WORKERS")))
        },
    )
    .await;
    assert_eq!(
        deployment_replicas(&changed),
        Some(3),
        "a later change leaves the HPA's count alone"
    );
    assert!(
        !replicas_owners(&changed).contains(&OPERATOR_MANAGER.to_string()),
        "{:?}",
        replicas_owners(&changed)
    );
}

/// Rotating a referenced Secret changes the hash; `kubectl scale fa/NAME --replicas=5` moves the
/// Deployment to 5; turning autoscaling on then off keeps the running replica count.
#[tokio::test]
async fn secret_rotation_scale_and_autoscaling_toggle() {
    let Some(t) = ControlPlaneTest::start("secret_rotation_scale_and_autoscaling_toggle").await
    else {
        return;
    };
    let (client, n) = (&t.client, t.ns());
    create_secret(
        client,
        n,
        "stores",
        &[("redis-url", "redis://one.invalid:6379")],
    )
    .await;
    apply_fastagentic(
        client,
        n,
        &fastagentic("agent", json!({"replicas": 1, "redis": {"urlSecretRef": {"name": "stores", "key": "redis-url"}}})),
    )
    .await;
    let d = wait_deployment(client, n, "agent", RECONCILE, "created with a hash", |d| {
        config_hash(d).map(|_| ()).ok_or("no hash".into())
    })
    .await;
    let hash = config_hash(&d).unwrap();

    // Rotate the Secret's value: the pods must roll.
    Api::<Secret>::namespaced(client.clone(), n)
        .patch(
            "stores",
            &PatchParams::default(),
            &Patch::Merge(&json!({"stringData": {"redis-url": "redis://two.invalid:6379"}})),
        )
        .await
        .expect("rotating the Secret");
    let d = wait_deployment(
        client,
        n,
        "agent",
        RECONCILE,
        "a new hash after the Secret rotation",
        |d| {
            let h = config_hash(d);
            if h.as_ref().is_some_and(|h| h != &hash) {
                Ok(())
            } else {
                Err(format!("hash {h:?}"))
            }
        },
    )
    .await;
    eprintln!(
        "Secret rotated: hash {hash} -> {}",
        config_hash(&d).unwrap()
    );

    // The scale subresource.
    kubectl(&["scale", "-n", n, "fa/agent", "--replicas=5"]).expect("kubectl scale fa/agent");
    wait_deployment(
        client,
        n,
        "agent",
        RECONCILE,
        "5 replicas after kubectl scale",
        |d| {
            if deployment_replicas(d) == Some(5) {
                Ok(())
            } else {
                Err(format!("{:?}", deployment_replicas(d)))
            }
        },
    )
    .await;
    assert_eq!(
        get_fastagentic(client, n, "agent").await["spec"]["replicas"],
        5
    );

    // Autoscaling on: the HPA appears and the Deployment keeps its 5 pods (a reset to 1 would
    // show as the HPA's minimum, 2).
    merge_patch_spec(
        client,
        n,
        "agent",
        json!({"replicas": null, "autoscaling": {"minReplicas": 2, "maxReplicas": 10}}),
    )
    .await;
    let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(client.clone(), n);
    wait_for("the HPA", RECONCILE, || async {
        hpas.get_opt("agent")
            .await
            .map_err(|e| e.to_string())?
            .map(|_| ())
            .ok_or("no HPA".to_string())
    })
    .await;
    wait_observed(client, n, "agent", RECONCILE).await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), n);
    for _ in 0..20 {
        let d = deployments.get("agent").await.unwrap();
        assert_eq!(
            deployment_replicas(&d),
            Some(5),
            "turning autoscaling on changed the replica count"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // Autoscaling off (no replicas given): the HPA goes, the count stays.
    merge_patch_spec(client, n, "agent", json!({"autoscaling": null})).await;
    wait_for("the HPA to be deleted", RECONCILE, || async {
        match hpas.get_opt("agent").await.map_err(|e| e.to_string())? {
            None => Ok(()),
            Some(_) => Err("HPA still there".to_string()),
        }
    })
    .await;
    wait_observed(client, n, "agent", RECONCILE).await;
    for _ in 0..20 {
        let d = deployments.get("agent").await.unwrap();
        assert_eq!(
            deployment_replicas(&d),
            Some(5),
            "turning autoscaling off changed the replica count"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The agent's own container in the pods.
const AGENT_APP: &str = "agent-app";

/// The pod template's `agent-app` init container, if any.
fn agent_app(d: &Deployment) -> Option<&k8s_openapi::api::core::v1::Container> {
    d.spec
        .as_ref()?
        .template
        .spec
        .as_ref()?
        .init_containers
        .as_ref()?
        .iter()
        .find(|c| c.name == AGENT_APP)
}

/// `spec.agent.container`: the API server stores the Deployment with the agent as a native
/// sidecar (init container `agent-app`, `restartPolicy: Always`) and the runtime's env pointing
/// at it, as `render` builds it, and a Service on the runtime's port only; a new agent image
/// rolls the pods (new config hash, new Deployment generation); an env var of the agent read
/// from a missing Secret is `Ready=False` `SecretNotFound` naming that entry, with nothing
/// applied, until the Secret is created.
#[tokio::test]
async fn agent_container_is_a_sidecar_and_its_secrets_are_checked() {
    let Some(t) =
        ControlPlaneTest::start("agent_container_is_a_sidecar_and_its_secrets_are_checked").await
    else {
        return;
    };
    let (client, n) = (&t.client, t.ns());
    let container = json!({
        "image": "registry.example.com/python-agent:1",
        "readyPath": "/ready",
        "env": [{"name": "LOG_LEVEL", "value": "info"}],
    });
    let fa = fastagentic(
        "agent",
        json!({"replicas": 1, "port": 8080, "agent": {"container": container}}),
    );
    apply_fastagentic(client, n, &fa).await;
    let rendered = Rendered::of(&fa);
    let d = wait_deployment(
        client,
        n,
        "agent",
        RECONCILE,
        "the agent as a sidecar",
        |d| {
            matches_rendered(&serde_json::to_value(d).unwrap(), rendered.deployment())?;
            let app = agent_app(d).ok_or("no agent-app init container")?;
            if app.restart_policy.as_deref() != Some("Always") {
                return Err(format!("restartPolicy {:?}", app.restart_policy));
            }
            Ok(())
        },
    )
    .await;
    for (var, want) in [
        ("FASTAGENTIC_AGENT", "http"),
        ("FASTAGENTIC_AGENT_URL", "http://127.0.0.1:8000/chat"),
        ("FASTAGENTIC_AGENT_READY_URL", "http://127.0.0.1:8000/ready"),
        ("FASTAGENTIC_PORT", "8080"),
    ] {
        assert_eq!(env_value(&d, var).as_deref(), Some(want), "{var}");
    }
    let app = agent_app(&d).unwrap();
    assert_eq!(
        app.ports
            .iter()
            .flatten()
            .map(|p| (p.name.as_deref(), p.container_port))
            .collect::<Vec<_>>(),
        [(Some("agent"), 8000)]
    );
    // The operator applies the Service alongside the Deployment, so it may show a moment later.
    let svc = wait_for("the Service", RECONCILE, || async {
        Api::<Service>::namespaced(client.clone(), n)
            .get_opt("agent")
            .await
            .map_err(|e| e.to_string())?
            .ok_or("no Service".to_string())
    })
    .await;
    let ports: Vec<(i32, Option<IntOrString>)> = svc
        .spec
        .iter()
        .flat_map(|s| s.ports.iter().flatten())
        .map(|p| (p.port, p.target_port.clone()))
        .collect();
    assert_eq!(
        ports,
        [(8080, Some(IntOrString::String("http".into())))],
        "the Service reaches the runtime's port only"
    );

    // A new agent image rolls the pods.
    let hash = config_hash(&d).expect("config hash");
    merge_patch_spec(
        client,
        n,
        "agent",
        json!({"agent": {"container": {"image": "registry.example.com/python-agent:2"}}}),
    )
    .await;
    let d2 = wait_deployment(client, n, "agent", RECONCILE, "the new agent image", |d| {
        let image = agent_app(d).and_then(|c| c.image.clone());
        let h = config_hash(d);
        if image.as_deref() == Some("registry.example.com/python-agent:2")
            && h.as_ref().is_some_and(|h| h != &hash)
        {
            Ok(())
        } else {
            Err(format!("image {image:?}, hash {h:?} (was {hash})"))
        }
    })
    .await;
    assert!(
        d2.metadata.generation > d.metadata.generation,
        "a new template is a new Deployment generation"
    );
    eprintln!(
        "agent image 1 -> 2: hash {hash} -> {}, generation {:?} -> {:?}",
        config_hash(&d2).unwrap(),
        d.metadata.generation,
        d2.metadata.generation
    );

    // An env var of the agent from a Secret that does not exist yet.
    let field = "spec.agent.container.env[1].valueFrom.secretKeyRef";
    merge_patch_spec(
        client,
        n,
        "agent",
        json!({"agent": {"container": {"env": [
            {"name": "LOG_LEVEL", "value": "info"},
            {"name": "OPENAI_API_KEY", "valueFrom": {"secretKeyRef": {"name": "agent-llm", "key": "api-key"}}},
        ]}}}),
    )
    .await;
    let fa_now = wait_for("Ready=False SecretNotFound", RECONCILE, || async {
        let fa = get_fastagentic(client, n, "agent").await;
        match condition(&fa, "Ready") {
            Some(c) if c["status"] == "False" && c["reason"] == "SecretNotFound" => Ok(fa),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let message = condition(&fa_now, "Ready").unwrap()["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        message.contains(field) && message.contains("agent-llm"),
        "{message}"
    );
    wait_event(client, n, "agent", "Warning", "SecretNotFound", field).await;
    let live = Api::<Deployment>::namespaced(client.clone(), n)
        .get("agent")
        .await
        .unwrap();
    assert!(
        agent_app(&live)
            .and_then(|c| c.env.as_ref())
            .is_some_and(|env| env.iter().all(|e| e.name != "OPENAI_API_KEY")),
        "nothing is applied while the Secret is missing"
    );

    // The Secret appears: the watch brings the resource back, the env is applied by reference.
    let key = "sk-s3cret-agent";
    create_secret(client, n, "agent-llm", &[("api-key", key)]).await;
    let d3 = wait_deployment(
        client,
        n,
        "agent",
        RECONCILE,
        "the agent's Secret env",
        |d| {
            let from = agent_app(d)
                .and_then(|c| c.env.as_ref())
                .and_then(|env| env.iter().find(|e| e.name == "OPENAI_API_KEY"))
                .and_then(|e| e.value_from.as_ref())
                .and_then(|v| v.secret_key_ref.as_ref())
                .map(|s| (s.name.clone(), s.key.clone()));
            if from == Some(("agent-llm".into(), "api-key".into())) {
                Ok(())
            } else {
                Err(format!("{from:?}"))
            }
        },
    )
    .await;
    assert!(
        !serde_json::to_string(&d3).unwrap().contains(key),
        "the Secret's value is not copied into the Deployment"
    );
    // The status is written after the Deployment: wait for it rather than read it once.
    let ready = wait_for("Ready no longer SecretNotFound", RECONCILE, || async {
        let fa = get_fastagentic(client, n, "agent").await;
        match condition(&fa, "Ready") {
            Some(c) if c["reason"] != "SecretNotFound" => Ok(c.clone()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    eprintln!("with the Secret: Ready {ready}");
}

/// `spec.networkPolicy`: the NetworkPolicy is created with the given peers plus the operator's
/// pods (the resource scales on concurrency, so the operator scrapes it; the namespace comes from
/// the operator's kubeconfig context as documented for a process outside the cluster, the labels
/// from `--pod-labels`), an edit to it is corrected, egress rules add `Egress`, and removing the
/// field deletes it (with a `Deleted` Event) while the other children stay.
#[tokio::test]
async fn network_policy_follows_the_spec() {
    let Some(t) = ControlPlaneTest::without_operator("network_policy_follows_the_spec").await
    else {
        return;
    };
    let _op = t
        .start_operator_with(
            "operator",
            &[
                "--pod-labels",
                "app.kubernetes.io/name=fastagentic-operator",
            ],
        )
        .await;
    let (client, n) = (&t.client, t.ns());
    let users = json!([
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress"}}},
        {"podSelector": {"matchLabels": {"role": "client"}}},
    ]);
    apply_fastagentic(
        client,
        n,
        &fastagentic(
            "agent",
            json!({
                "maxConcurrent": 10,
                "autoscaling": {"minReplicas": 1, "maxReplicas": 3,
                                "targetConcurrencyUtilizationPercentage": 60},
                "networkPolicy": {"from": users},
            }),
        ),
    )
    .await;
    let operator_peer = json!({
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": SYSTEM_NAMESPACE}},
        "podSelector": {"matchLabels": {"app.kubernetes.io/name": "fastagentic-operator"}},
    });
    let mut want_from = users.as_array().unwrap().clone();
    want_from.push(operator_peer);
    let policies: Api<NetworkPolicy> = Api::namespaced(client.clone(), n);
    let want_ingress = json!([{
        "from": want_from,
        "ports": [{"port": 8000, "protocol": "TCP"}],
    }]);
    let ingress_is = |want: Value| {
        let policies = policies.clone();
        move || {
            let (policies, want) = (policies.clone(), want.clone());
            async move {
                let np = policies
                    .get_opt("agent")
                    .await
                    .map_err(|e| e.to_string())?
                    .ok_or("no NetworkPolicy")?;
                let spec = serde_json::to_value(np.spec.clone()).unwrap();
                if spec["ingress"] == want {
                    Ok(np)
                } else {
                    Err(format!("spec {spec}"))
                }
            }
        }
    };
    let np = wait_for(
        "the NetworkPolicy with the peers and the operator",
        RECONCILE,
        ingress_is(want_ingress.clone()),
    )
    .await;
    let fa = get_fastagentic(client, n, "agent").await;
    owned_by(&np.metadata, &fa).unwrap();
    standard_labels(&np.metadata, "agent").unwrap();
    let d = Api::<Deployment>::namespaced(client.clone(), n)
        .get("agent")
        .await
        .unwrap();
    let spec = np.spec.clone().unwrap();
    assert_eq!(
        spec.pod_selector.and_then(|s| s.match_labels),
        d.spec.unwrap().selector.match_labels,
        "the policy selects the Deployment's pods"
    );
    assert_eq!(spec.policy_types, Some(vec!["Ingress".to_string()]));
    assert_eq!(spec.egress, None, "egress is not restricted");
    wait_event(
        client,
        n,
        "agent",
        "Normal",
        "Created",
        "created NetworkPolicy agent",
    )
    .await;

    // Someone removes the operator's peer: the watch brings the operator back to correct it.
    policies
        .patch(
            "agent",
            &PatchParams::default(),
            &Patch::Merge(
                &json!({"spec": {"ingress": [{"from": users, "ports": [{"port": 8000}]}]}}),
            ),
        )
        .await
        .expect("editing the NetworkPolicy");
    wait_for(
        "the edited NetworkPolicy to be corrected",
        RECONCILE,
        ingress_is(want_ingress),
    )
    .await;

    // Egress rules restrict egress.
    merge_patch_spec(
        client,
        n,
        "agent",
        json!({"networkPolicy": {"egress": [{"ports": [{"port": 53, "protocol": "UDP"}]}]}}),
    )
    .await;
    wait_for("Egress in policyTypes", RECONCILE, || async {
        let np = policies.get("agent").await.map_err(|e| e.to_string())?;
        let spec = np.spec.unwrap_or_default();
        if spec.policy_types == Some(vec!["Ingress".into(), "Egress".into()])
            && spec.egress.as_ref().map(Vec::len) == Some(1)
        {
            Ok(())
        } else {
            Err(format!("{spec:?}"))
        }
    })
    .await;

    // The field removed: the NetworkPolicy goes, the Deployment and Service stay.
    merge_patch_spec(client, n, "agent", json!({"networkPolicy": null})).await;
    wait_for("the NetworkPolicy to be deleted", RECONCILE, || async {
        match policies.get_opt("agent").await.map_err(|e| e.to_string())? {
            None => Ok(()),
            Some(_) => Err("still there".to_string()),
        }
    })
    .await;
    wait_event(
        client,
        n,
        "agent",
        "Normal",
        "Deleted",
        "deleted NetworkPolicy agent: no longer wanted by the spec",
    )
    .await;
    assert!(exists::<Deployment>(client, n, "agent").await.unwrap());
    assert!(exists::<Service>(client, n, "agent").await.unwrap());
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        !exists::<NetworkPolicy>(client, n, "agent").await.unwrap(),
        "the NetworkPolicy came back"
    );
}

// ---------------------------------------------------------------------------------------------
// Deletion and readiness
// ---------------------------------------------------------------------------------------------

/// Deleting the FastAgentic garbage-collects every child (kube-controller-manager's GC), and
/// the operator does not bring them back.
#[tokio::test]
async fn deleting_the_fastagentic_garbage_collects_every_child() {
    let Some(t) =
        ControlPlaneTest::start("deleting_the_fastagentic_garbage_collects_every_child").await
    else {
        return;
    };
    let (client, n) = (&t.client, t.ns());
    apply_fastagentic(
        client,
        n,
        &fastagentic("agent", json!({"autoscaling": {"minReplicas": 2, "maxReplicas": 4}, "disruptionBudget": {"maxUnavailable": 1}})),
    )
    .await;
    let present = || async {
        let mut have = Vec::new();
        for (kind, found) in [
            (
                "Deployment",
                exists::<Deployment>(client, n, "agent").await?,
            ),
            ("Service", exists::<Service>(client, n, "agent").await?),
            (
                "HPA",
                exists::<HorizontalPodAutoscaler>(client, n, "agent").await?,
            ),
            (
                "PDB",
                exists::<PodDisruptionBudget>(client, n, "agent").await?,
            ),
        ] {
            if found {
                have.push(kind);
            }
        }
        Ok::<_, String>(have)
    };
    wait_for("all four children", RECONCILE, || async {
        let have = present().await?;
        if have.len() == 4 {
            Ok(())
        } else {
            Err(format!("{have:?}"))
        }
    })
    .await;
    fastagentics(client, n)
        .delete("agent", &DeleteParams::default())
        .await
        .expect("delete FastAgentic");
    wait_for("every child to be garbage-collected", RECONCILE, || async {
        let have = present().await?;
        if have.is_empty() {
            Ok(())
        } else {
            Err(format!("still there: {have:?}"))
        }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let have = present().await.unwrap();
    assert!(
        have.is_empty(),
        "children came back after the deletion: {have:?}"
    );
}

/// `kubectl wait --for=condition=Ready fa/NAME` succeeds once the pods are Ready (on kwok's
/// simulated node).
#[tokio::test]
async fn ready_condition_end_to_end() {
    let Some(t) = ControlPlaneTest::without_operator("ready_condition_end_to_end").await else {
        return;
    };
    if !t.cluster.kwok_node {
        let _ = writeln!(
            std::io::stderr(),
            "\n*** SKIPPED ready_condition_end_to_end: no Ready kwok node (scripts/control-plane.sh \
             starts kwok + kube-scheduler when kwok builds); without nodes no pod becomes Ready ***\n"
        );
        return;
    }
    let (client, n) = (&t.client, t.ns());
    let op = t.start_operator("operator").await;
    apply_fastagentic(client, n, &fastagentic("agent", json!({"replicas": 2}))).await;
    let fa = wait_observed(client, n, "agent", RECONCILE).await;
    eprintln!("Ready before the pods: {:?}", condition(&fa, "Ready"));
    let out = kubectl(&[
        "wait",
        "-n",
        n,
        "--for=condition=Ready",
        "fa/agent",
        "--timeout=180s",
    ]);
    let fa = get_fastagentic(client, n, "agent").await;
    assert!(
        out.is_ok(),
        "kubectl wait --for=condition=Ready failed: {out:?}\nstatus {}\n{}",
        fa["status"],
        op.log_tail(20)
    );
    let ready = condition(&fa, "Ready").expect("Ready condition");
    assert_eq!(ready["status"], "True");
    assert_eq!(ready["observedGeneration"], fa["metadata"]["generation"]);
    assert_eq!(fa["status"]["readyReplicas"], 2, "status {}", fa["status"]);
}

// ---------------------------------------------------------------------------------------------
// Leader election
// ---------------------------------------------------------------------------------------------

async fn lease_holder(client: &Client, name: &str) -> Option<String> {
    Api::<Lease>::namespaced(client.clone(), SYSTEM_NAMESPACE)
        .get_opt(name)
        .await
        .ok()
        .flatten()
        .and_then(|l| l.spec)
        .and_then(|s| s.holder_identity)
}

/// Two operators with `--leader-elect`: only the Lease holder reconciles and writes; killing it
/// (SIGKILL, no release) hands over within the lease duration and the new holder reconciles.
#[tokio::test]
async fn leader_election_one_writer_and_handover() {
    let Some(t) =
        ControlPlaneTest::without_operator("leader_election_one_writer_and_handover").await
    else {
        return;
    };
    let (client, n) = (&t.client, t.ns());
    let lease = t.lease();
    let (id_a, id_b) = (format!("{n}-a"), format!("{n}-b"));
    let a = t
        .start_operator_with("operator-a", &t.leader_elect_args(&id_a))
        .await;
    let first = wait_for("a Lease holder", RECONCILE, || async {
        lease_holder(client, lease)
            .await
            .ok_or("no holder".to_string())
    })
    .await;
    assert_eq!(first, id_a, "the first operator should take the free Lease");
    let b = t
        .start_operator_with("operator-b", &t.leader_elect_args(&id_b))
        .await;
    let (mut leader, standby) = (a, b);

    apply_fastagentic(
        client,
        n,
        &fastagentic("agent", json!({"replicas": 1, "workers": 1})),
    )
    .await;
    wait_observed(client, n, "agent", RECONCILE).await;
    wait_for(
        "the standby to log that it waits for the Lease",
        RECONCILE,
        || async {
            if standby
                .log_events("waiting for the leader Lease")
                .is_empty()
            {
                Err(standby.log_tail(10))
            } else {
                Ok(())
            }
        },
    )
    .await;
    assert_eq!(
        lease_holder(client, lease).await.as_deref(),
        Some(id_a.as_str())
    );
    assert!(
        writes_total(&leader, "Deployment", "apply").await >= 1.0,
        "the leader applied nothing:\n{}",
        leader.log_tail(20)
    );
    let standby_writes = writes(&standby).await;
    assert!(
        standby_writes.is_empty(),
        "the standby wrote: {standby_writes:?}\n{}",
        standby.log_tail(20)
    );
    assert!(
        standby.log_events("starting the controller").is_empty(),
        "the standby runs a controller:\n{}",
        standby.log_tail(20)
    );
    assert_eq!(leader.metric("fastagentic_operator_leader").await, 1.0);
    assert_eq!(standby.metric("fastagentic_operator_leader").await, 0.0);
    let deployment = Api::<Deployment>::namespaced(client.clone(), n)
        .get("agent")
        .await
        .unwrap();
    let managers: Vec<String> = deployment
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter(|m| m.operation.as_deref() == Some("Apply"))
        .filter_map(|m| m.manager.clone())
        .collect();
    assert_eq!(
        managers,
        vec![OPERATOR_MANAGER.to_string()],
        "Apply managers of the Deployment"
    );

    // Crash the holder: the standby must take over within the lease duration (+ one retry).
    leader.kill();
    let killed = Instant::now();
    wait_for(
        "the standby to hold the Lease",
        Duration::from_secs(60),
        || async {
            match lease_holder(client, lease).await {
                Some(h) if h == id_b => Ok(()),
                other => Err(format!("holder {other:?}")),
            }
        },
    )
    .await;
    let took = killed.elapsed();
    eprintln!("handover after {took:?}");
    assert!(
        took <= TAKEOVER_BOUND + Duration::from_secs(3),
        "handover took {took:?}, more than {TAKEOVER_BOUND:?}"
    );
    wait_for(
        "the new leader to start its controller",
        RECONCILE,
        || async {
            if standby.log_events("starting the controller").is_empty() {
                Err(standby.log_tail(10))
            } else {
                Ok(())
            }
        },
    )
    .await;
    merge_patch_spec(client, n, "agent", json!({"workers": 3})).await;
    wait_deployment(
        client,
        n,
        "agent",
        RECONCILE,
        "FASTAGENTIC_WORKERS=3 from the new leader",
        |d| {
            (env_value(d, "FASTAGENTIC_WORKERS").as_deref() == Some("3"))
                .then_some(())
                .ok_or(format!("{:?}", env_value(d, "FASTAGENTIC_WORKERS")))
        },
    )
    .await;
    assert!(
        writes_total(&standby, "Deployment", "apply").await >= 1.0,
        "the new leader applied nothing:\n{}",
        standby.log_tail(20)
    );
    assert_eq!(standby.metric("fastagentic_operator_leader").await, 1.0);
}

// ---------------------------------------------------------------------------------------------
// RBAC
// ---------------------------------------------------------------------------------------------

/// Puts the chart ClusterRole's rules back when dropped (also when the test panics).
struct RestoreRules(Value);

impl RestoreRules {
    fn restore(&self) -> Result<String, String> {
        let patch = json!([{"op": "replace", "path": "/rules", "value": self.0}]).to_string();
        kubectl(&[
            "patch",
            "clusterrole",
            CHART_FULLNAME,
            "--type",
            "json",
            "-p",
            &patch,
        ])
    }
}

impl Drop for RestoreRules {
    fn drop(&mut self) {
        if let Err(e) = self.restore() {
            eprintln!(
                "WARNING: could not restore ClusterRole {CHART_FULLNAME}: {e} (helm upgrade restores it)"
            );
        }
    }
}

/// Removing the `services` rule from the chart's ClusterRole makes the operator report a clear
/// error — a log line and a `Ready=False` condition naming the forbidden resource — and keep
/// running; with the rule back it recovers.
#[tokio::test]
async fn missing_rbac_rule_is_reported_not_fatal() {
    let Some(t) =
        ControlPlaneTest::without_operator("missing_rbac_rule_is_reported_not_fatal").await
    else {
        return;
    };
    let (client, n) = (&t.client, t.ns());
    let role: Value = serde_json::from_str(
        &kubectl(&["get", "clusterrole", CHART_FULLNAME, "-o", "json"]).expect("chart ClusterRole"),
    )
    .unwrap();
    let rules = role["rules"].as_array().expect("rules").clone();
    let without: Vec<Value> = rules
        .iter()
        .filter(|r| {
            !r["resources"]
                .as_array()
                .is_some_and(|rs| rs.iter().any(|x| x == "services"))
        })
        .cloned()
        .collect();
    assert_eq!(
        without.len() + 1,
        rules.len(),
        "expected exactly one rule for services: {rules:?}"
    );
    let guard = RestoreRules(Value::Array(rules));
    let patch = json!([{"op": "replace", "path": "/rules", "value": without}]).to_string();
    kubectl(&[
        "patch",
        "clusterrole",
        CHART_FULLNAME,
        "--type",
        "json",
        "-p",
        &patch,
    ])
    .expect("dropping the services rule");
    // RBAC changes reach the authorizer through an informer: wait until it denies.
    let sa = format!("system:serviceaccount:{SYSTEM_NAMESPACE}:{CHART_FULLNAME}");
    wait_for(
        "the API server to deny services",
        Duration::from_secs(30),
        || async {
            match kubectl(&["auth", "can-i", "get", "services", "-n", n, "--as", &sa]) {
                Err(_) => Ok(()),
                Ok(s) => Err(s),
            }
        },
    )
    .await;

    let mut op = t.start_operator("operator").await;
    apply_fastagentic(client, n, &fastagentic("agent", json!({"replicas": 1}))).await;
    let fa = wait_for("Ready=False naming services", RECONCILE, || async {
        let fa = get_fastagentic(client, n, "agent").await;
        match condition(&fa, "Ready") {
            Some(c)
                if c["status"] == "False"
                    && c["reason"] == "Forbidden"
                    && c["message"]
                        .as_str()
                        .is_some_and(|m| m.contains("services")) =>
            {
                Ok(fa)
            }
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    eprintln!("condition: {}", condition(&fa, "Ready").unwrap());
    let logged = wait_for(
        "a log line naming the forbidden resource",
        RECONCILE,
        || async {
            op.log_events("reconcile failed")
                .into_iter()
                .find(|e| {
                    e["reason"] == "Forbidden"
                        && e["error"]
                            .as_str()
                            .is_some_and(|m| m.contains("services") && m.contains("forbidden"))
                })
                .ok_or_else(|| op.log_tail(10))
        },
    )
    .await;
    eprintln!("log: {logged}");
    let warning = wait_event(client, n, "agent", "Warning", "Forbidden", "services").await;
    eprintln!("event: {:?}", warning.note);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        op.exit_status().is_none(),
        "the operator exited:\n{}",
        op.log_tail(30)
    );
    assert_eq!(
        http_get(&format!("http://{}/healthz", op.health))
            .await
            .map(|r| r.0),
        Ok(200),
        "operator /healthz"
    );

    // The rule back: the operator recovers on its own (retry with backoff).
    guard.restore().expect("restoring the ClusterRole");
    wait_for(
        "the Service after the rule came back",
        Duration::from_secs(180),
        || async {
            Api::<Service>::namespaced(client.clone(), n)
                .get_opt("agent")
                .await
                .map_err(|e| e.to_string())?
                .map(|_| ())
                .ok_or("no Service".to_string())
        },
    )
    .await;
    wait_for("Ready no longer Forbidden", RECONCILE, || async {
        let fa = get_fastagentic(client, n, "agent").await;
        match condition(&fa, "Ready") {
            Some(c) if c["reason"] != "Forbidden" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    drop(guard);
}

// ---------------------------------------------------------------------------------------------
// Resources the API server admits but the operator cannot run
// ---------------------------------------------------------------------------------------------

/// Two resources the API server admits but the operator cannot run, each reported on the
/// object with a Warning Event naming the field: one that does not deserialize into the
/// operator's types (an int-or-string beyond 32 bits: the schema allows it, the operator's
/// `IntOrString` does not) and one that fails the operator's own checks (an empty command).
/// Neither gets a child, neither stops the watch (a good resource next to them is reconciled),
/// and the writes counter is exposed and shows what the reconciler wrote.
#[tokio::test]
async fn unrunnable_resources_get_a_warning_event_naming_the_field() {
    let Some(mut t) =
        ControlPlaneTest::start("unrunnable_resources_get_a_warning_event_naming_the_field").await
    else {
        return;
    };
    let (client, n) = (t.client.clone(), t.ns().to_owned());
    let (client, n) = (&client, n.as_str());
    let op = t.operator_mut();
    assert_eq!(
        writes_total(op, "Deployment", "apply").await,
        0.0,
        "nothing written yet"
    );
    assert!(
        op.metrics_text()
            .await
            .contains("fastagentic_operator_writes_total{kind=\"Deployment\",verb=\"apply\"} 0"),
        "the writes counter is exposed from the start"
    );

    apply_fastagentic(
        client,
        n,
        &fastagentic(
            "malformed",
            json!({"replicas": 2, "disruptionBudget": {"maxUnavailable": 3_000_000_000_i64}}),
        ),
    )
    .await;
    apply_fastagentic(
        client,
        n,
        &fastagentic("no-command", json!({"replicas": 1, "command": []})),
    )
    .await;
    apply_fastagentic(client, n, &fastagentic("good", json!({"replicas": 1}))).await;

    let malformed = wait_event(
        client,
        n,
        "malformed",
        "Warning",
        "Malformed",
        "spec.disruptionBudget.maxUnavailable",
    )
    .await;
    eprintln!("malformed: {:?}", malformed.note);
    let invalid = wait_event(
        client,
        n,
        "no-command",
        "Warning",
        "InvalidSpec",
        "spec.command",
    )
    .await;
    eprintln!("no-command: {:?}", invalid.note);
    let fa = wait_for("no-command Ready=False InvalidSpec", RECONCILE, || async {
        let fa = get_fastagentic(client, n, "no-command").await;
        match condition(&fa, "Ready") {
            Some(c) if c["status"] == "False" && c["reason"] == "InvalidSpec" => Ok(fa),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert!(
        condition(&fa, "Ready").unwrap()["message"]
            .as_str()
            .is_some_and(|m| m.contains("spec.command")),
        "{}",
        fa["status"]
    );
    wait_observed(client, n, "good", RECONCILE).await;

    for name in ["malformed", "no-command"] {
        assert!(
            !exists::<Deployment>(client, n, name).await.unwrap(),
            "{name}: a Deployment was applied"
        );
        assert!(
            !exists::<Service>(client, n, name).await.unwrap(),
            "{name}: a Service was applied"
        );
    }
    assert!(
        get_fastagentic(client, n, "malformed").await["status"].is_null(),
        "the operator cannot read the malformed resource, so it writes no status to it"
    );
    assert!(
        op.exit_status().is_none(),
        "the operator exited:\n{}",
        op.log_tail(30)
    );

    // The good resource's two children and the three Events (two Created, the InvalidSpec
    // warning) and the Malformed warning, the two status writes (good, no-command).
    assert_eq!(writes_total(op, "Deployment", "apply").await, 1.0);
    assert_eq!(writes_total(op, "Service", "apply").await, 1.0);
    assert_eq!(
        writes_total(op, "HorizontalPodAutoscaler", "apply").await,
        0.0
    );
    assert!(writes_total(op, "Event", "create").await >= 4.0);
    assert!(writes_total(op, "FastAgentic/status", "apply").await >= 2.0);
}
