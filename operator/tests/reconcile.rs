//! Reconcile against a mocked API server (`tower_test::mock`): every request the operator sends
//! is checked against a script (method and path; bodies are returned for assertions), answered
//! like the API server would, and a missing or extra request fails the test.

// Test helpers may panic with a message: a failed expectation is a failed test.
#![allow(clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use fastagentic_crd::{FastAgentic, FastAgenticStatus};
use fastagentic_operator::FIELD_MANAGER;
use fastagentic_operator::build::ANNOTATION_CONFIG_HASH;
use fastagentic_operator::controller::HANDOFF_FIELD_MANAGER;
use fastagentic_operator::controller::cache::ChildCache;
use fastagentic_operator::controller::writes::CountWrites;
use fastagentic_operator::controller::{Context, reconcile};
use fastagentic_operator::metrics::Metrics;
use http::{Method, Request, Response, StatusCode};
use kube::client::{Body, ClientBuilder};
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher;
use serde_json::{Value, json};

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

const NS: &str = "ns";
const NAME: &str = "agent";
const UID: &str = "7d0a3b2e-0000-4000-8000-000000000001";
const DEPLOY: &str = "/apis/apps/v1/namespaces/ns/deployments/agent";
const SERVICE: &str = "/api/v1/namespaces/ns/services/agent";
const HPA: &str = "/apis/autoscaling/v2/namespaces/ns/horizontalpodautoscalers/agent";
const PDB: &str = "/apis/policy/v1/namespaces/ns/poddisruptionbudgets/agent";
const NETPOL: &str = "/apis/networking.k8s.io/v1/namespaces/ns/networkpolicies/agent";
const STATUS: &str = "/apis/fastagentic.io/v1alpha1/namespaces/ns/fastagentics/agent/status";
const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/ns/events";

/// How the mock answers one request.
enum Reply {
    /// 404 NotFound.
    NotFound,
    /// 200 with this object.
    Json(Value),
    /// 200 with the request's own body (what an apply or create returns, near enough).
    Echo,
    /// As `Echo`, with `spec.replicas` kept at this value by another field manager.
    EchoKeepingReplicas(i64),
    /// 200 with the FastAgentic carrying the status that was sent.
    StatusOf(Box<FastAgentic>),
}

struct Step {
    method: Method,
    path: &'static str,
    reply: Reply,
}

fn step(method: Method, path: &'static str, reply: Reply) -> Step {
    Step {
        method,
        path,
        reply,
    }
}

/// A request the operator sent.
#[derive(Debug)]
struct Seen {
    method: Method,
    path: String,
    query: String,
    body: Value,
}

async fn serve(mut handle: Handle, script: Vec<Step>) -> Vec<Seen> {
    let mut seen = Vec::new();
    for (i, s) in script.into_iter().enumerate() {
        let next = tokio::time::timeout(Duration::from_secs(5), handle.next_request()).await;
        let Ok(Some((request, send))) = next else {
            panic!(
                "request #{i} ({} {}) never came; seen so far: {seen:#?}",
                s.method, s.path
            );
        };
        let method = request.method().clone();
        let path = request.uri().path().to_string();
        let query = request.uri().query().unwrap_or_default().to_string();
        let bytes = request
            .into_body()
            .collect_bytes()
            .await
            .expect("request body");
        let body: Value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).expect("request body is JSON")
        };
        assert_eq!(
            (&method, path.as_str()),
            (&s.method, s.path),
            "request #{i}: unexpected {method} {path}?{query}; seen so far: {seen:#?}"
        );
        let (code, reply) = match s.reply {
            Reply::NotFound => (
                StatusCode::NOT_FOUND,
                json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                       "reason": "NotFound", "code": 404, "message": format!("{path} not found")}),
            ),
            Reply::Json(v) => (StatusCode::OK, v),
            Reply::Echo => (StatusCode::OK, body.clone()),
            Reply::EchoKeepingReplicas(n) => {
                let mut kept = body.clone();
                kept["spec"]["replicas"] = json!(n);
                (StatusCode::OK, kept)
            }
            Reply::StatusOf(fa) => {
                let mut fa = serde_json::to_value(*fa).expect("fa json");
                fa["status"] = body["status"].clone();
                (StatusCode::OK, fa)
            }
        };
        send.send_response(
            Response::builder()
                .status(code)
                .body(Body::from(serde_json::to_vec(&reply).expect("reply json")))
                .expect("response"),
        );
        seen.push(Seen {
            method,
            path,
            query,
            body,
        });
    }
    // Nothing more may come.
    if let Ok(Some((request, _))) =
        tokio::time::timeout(Duration::from_millis(300), handle.next_request()).await
    {
        panic!(
            "unexpected extra request {} {}; seen: {seen:#?}",
            request.method(),
            request.uri()
        );
    }
    seen
}

fn fa(spec: Value, status: Option<FastAgenticStatus>) -> FastAgentic {
    let mut fa: FastAgentic = serde_json::from_value(json!({
        "apiVersion": "fastagentic.io/v1alpha1",
        "kind": "FastAgentic",
        "metadata": {"name": NAME, "namespace": NS, "uid": UID, "generation": 1, "resourceVersion": "10"},
        "spec": spec,
    }))
    .expect("FastAgentic fixture");
    fa.status = status;
    fa
}

/// Runs one reconcile against `script`; returns its result and what was sent.
async fn run(fa: FastAgentic, script: Vec<Step>) -> (Result<(), String>, Vec<Seen>) {
    let (result, seen, _) = run_counting(fa, script).await;
    (result, seen)
}

/// [`run`], with the client counting writes as the operator's does; also returns the non-zero
/// `fastagentic_operator_writes_total` series as `"KIND VERB" -> count`.
async fn run_counting(
    fa: FastAgentic,
    script: Vec<Step>,
) -> (Result<(), String>, Vec<Seen>, BTreeMap<String, u64>) {
    run_cached(fa, None, script).await
}

/// [`run_counting`] with the watched children in `cache`, as the controller runs it.
async fn run_cached(
    fa: FastAgentic,
    cache: Option<ChildCache>,
    script: Vec<Step>,
) -> (Result<(), String>, Vec<Seen>, BTreeMap<String, u64>) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let metrics = Arc::new(Metrics::default());
    let client = ClientBuilder::new(service, NS)
        .with_layer(&CountWrites::new(metrics.clone()))
        .build();
    let ctx = Arc::new(Context::new(client, metrics.clone(), Some("test".into())));
    if let Some(cache) = cache {
        ctx.use_cache(cache);
    }
    let server = tokio::spawn(serve(handle, script));
    let result = tokio::time::timeout(Duration::from_secs(10), reconcile(Arc::new(fa), ctx))
        .await
        .expect("reconcile finishes");
    let seen = server.await.expect("the mock API server script passed");
    (
        result.map(|_| ()).map_err(|e| e.reason().to_string()),
        seen,
        writes(&metrics),
    )
}

/// The non-zero writes counters, as `"KIND VERB" -> count`.
fn writes(metrics: &Metrics) -> BTreeMap<String, u64> {
    let text = metrics.encode().expect("metrics encode");
    text.lines()
        .filter_map(|l| l.strip_prefix("fastagentic_operator_writes_total{kind=\""))
        .filter_map(|rest| {
            let (kind, rest) = rest.split_once("\",verb=\"")?;
            let (verb, count) = rest.split_once("\"} ")?;
            let count: u64 = count.trim().parse().ok()?;
            (count > 0).then(|| (format!("{kind} {verb}"), count))
        })
        .collect()
}

/// `"KIND VERB" -> count` from a list.
fn counts(list: &[(&str, u64)]) -> BTreeMap<String, u64> {
    list.iter().map(|(k, n)| ((*k).to_string(), *n)).collect()
}

fn autoscaling_spec() -> Value {
    json!({"image": "img:1", "server": "gunicorn", "workers": 2, "maxConcurrent": 50,
           "autoscaling": {"minReplicas": 2, "maxReplicas": 10},
           "redis": {"url": "redis://redis:6379"}})
}

fn assert_apply(s: &Seen, path: &str, manager: &str) {
    assert_eq!((&s.method, s.path.as_str()), (&Method::PATCH, path));
    assert!(
        s.query.contains(&format!("fieldManager={manager}")),
        "{}",
        s.query
    );
    assert!(s.query.contains("force=true"), "{}", s.query);
}

/// First reconcile of a new autoscaling resource: three children applied, then status.
async fn create() -> (FastAgentic, Vec<Seen>) {
    let fa0 = fa(autoscaling_spec(), None);
    let (result, seen, written) = run_counting(
        fa0.clone(),
        vec![
            step(Method::GET, DEPLOY, Reply::NotFound),
            step(Method::GET, SERVICE, Reply::NotFound),
            step(Method::GET, HPA, Reply::NotFound),
            step(Method::GET, PDB, Reply::NotFound),
            step(Method::GET, NETPOL, Reply::NotFound),
            // Created at minReplicas; the Service is sent at the same time, before the
            // Deployment's answer. Then the count is handed over and the Deployment applied
            // without it (the server keeps the count the hand-off manager owns), then the HPA.
            step(Method::PATCH, DEPLOY, Reply::Echo),
            step(Method::PATCH, SERVICE, Reply::Echo),
            step(Method::PATCH, DEPLOY, Reply::Echo),
            step(Method::PATCH, DEPLOY, Reply::EchoKeepingReplicas(2)),
            step(Method::PATCH, HPA, Reply::Echo),
            step(
                Method::PATCH,
                STATUS,
                Reply::StatusOf(Box::new(fa0.clone())),
            ),
            step(Method::POST, EVENTS, Reply::Echo),
            step(Method::POST, EVENTS, Reply::Echo),
            step(Method::POST, EVENTS, Reply::Echo),
        ],
    )
    .await;
    assert_eq!(result, Ok(()));
    assert_eq!(
        written,
        counts(&[
            ("Deployment apply", 3),
            ("Service apply", 1),
            ("HorizontalPodAutoscaler apply", 1),
            ("FastAgentic/status apply", 1),
            ("Event create", 3),
        ]),
        "the writes counter"
    );
    (fa0, seen)
}

/// What the server holds after [`create`]: the last Deployment apply (without `replicas`) with
/// the count the hand-off kept, the Service, the HPA, and the status we wrote.
struct Created {
    deployment: Value,
    service: Value,
    hpa: Value,
    status: FastAgenticStatus,
}

fn created(seen: &[Seen]) -> Created {
    let mut deployment = seen[8].body.clone();
    deployment["spec"]["replicas"] = seen[7].body["spec"]["replicas"].clone();
    Created {
        deployment,
        service: seen[6].body.clone(),
        hpa: seen[9].body.clone(),
        status: serde_json::from_value(seen[10].body["status"].clone()).expect("status we wrote"),
    }
}

/// Asserts that `seen` are the Normal Events on the FastAgentic for `changes` (reason, related
/// kind, note), in order.
fn assert_change_events(seen: &[Seen], changes: &[(&str, &str, &str)]) {
    assert_eq!(seen.len(), changes.len(), "{seen:#?}");
    for (s, (reason, kind, note)) in seen.iter().zip(changes) {
        assert_eq!((&s.method, s.path.as_str()), (&Method::POST, EVENTS));
        assert_eq!(s.body["type"], "Normal", "{}", s.body);
        assert_eq!(s.body["reason"], *reason, "{}", s.body);
        assert_eq!(s.body["note"], *note, "{}", s.body);
        assert_eq!(s.body["regarding"]["kind"], "FastAgentic");
        assert_eq!(s.body["regarding"]["name"], NAME);
        assert_eq!(s.body["related"]["kind"], *kind, "{}", s.body);
        assert_eq!(s.body["related"]["name"], NAME, "{}", s.body);
    }
}

#[tokio::test]
async fn create_applies_three_children_and_status() {
    let (_, seen) = create().await;
    assert_apply(&seen[5], DEPLOY, FIELD_MANAGER);
    assert_apply(&seen[6], SERVICE, FIELD_MANAGER);
    assert_apply(&seen[7], DEPLOY, HANDOFF_FIELD_MANAGER);
    assert_apply(&seen[8], DEPLOY, FIELD_MANAGER);
    assert_apply(&seen[9], HPA, FIELD_MANAGER);
    assert_apply(&seen[10], STATUS, FIELD_MANAGER);

    assert_eq!(
        seen[5].body["spec"]["replicas"], 2,
        "created at minReplicas, not 1 until the HPA's first sync"
    );
    assert_eq!(
        seen[7].body["spec"],
        json!({"replicas": 2}),
        "the count handed over in the same reconcile"
    );
    let deploy = &seen[8].body;
    assert!(
        deploy["spec"].get("replicas").is_none(),
        "then the HPA owns replicas: {deploy}"
    );
    assert_ne!(
        deploy["metadata"]["annotations"]["fastagentic.io/applied-hash"],
        seen[5].body["metadata"]["annotations"]["fastagentic.io/applied-hash"],
        "the last apply carries the hash of what later reconciles build"
    );
    assert_eq!(deploy["metadata"]["ownerReferences"][0]["uid"], UID);
    assert_eq!(deploy["metadata"]["ownerReferences"][0]["controller"], true);
    assert_eq!(seen[6].body["spec"]["ports"][0]["name"], "http");
    assert_eq!(seen[9].body["spec"]["maxReplicas"], 10);

    assert_change_events(
        &seen[11..],
        &[
            ("Created", "Deployment", "created Deployment agent"),
            ("Created", "Service", "created Service agent"),
            (
                "Created",
                "HorizontalPodAutoscaler",
                "created HorizontalPodAutoscaler agent",
            ),
        ],
    );

    let status = &seen[10].body["status"];
    assert_eq!(status["observedGeneration"], 1);
    assert_eq!(
        status["selector"],
        "app.kubernetes.io/instance=agent,app.kubernetes.io/name=fastagentic"
    );
    assert_eq!(status["maxRedisConnections"], 10 * 2 * 10);
    let ready = status["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
        .expect("Ready condition");
    assert_eq!(ready["status"], "False", "no pod is ready yet");
    assert_eq!(ready["reason"], "PodsNotReady");
}

#[tokio::test]
async fn second_reconcile_of_unchanged_resource_writes_nothing() {
    let (fa0, seen) = create().await;
    let c = created(&seen);
    let fa1 = fa(autoscaling_spec(), Some(c.status));
    // The server now has exactly what we applied.
    let (result, seen2, written) = run_counting(
        fa1,
        vec![
            step(Method::GET, DEPLOY, Reply::Json(c.deployment)),
            step(Method::GET, SERVICE, Reply::Json(c.service)),
            step(Method::GET, HPA, Reply::Json(c.hpa)),
            step(Method::GET, PDB, Reply::NotFound),
            step(Method::GET, NETPOL, Reply::NotFound),
        ],
    )
    .await;
    assert_eq!(result, Ok(()));
    assert!(
        seen2.iter().all(|s| s.method == Method::GET),
        "only reads: {seen2:#?}"
    );
    assert_eq!(written, counts(&[]), "the writes counter stays at 0");
    drop(fa0);
}

/// A store holding `objects`, as a watch would have filled it.
fn store_of<K>(objects: &[&Value]) -> Store<K>
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + 'static,
{
    let (store, mut writer) = reflector::store();
    for obj in objects {
        let obj: K = serde_json::from_value((*obj).clone()).expect("child fixture");
        writer.apply_watcher_event(&watcher::Event::Apply(obj));
    }
    store
}

/// The watched children: `deployment`, `service` and `hpa` when given, no PDB or NetworkPolicy.
fn cache(deployment: Option<&Value>, service: Option<&Value>, hpa: Option<&Value>) -> ChildCache {
    ChildCache {
        deployments: store_of(&Vec::from_iter(deployment)),
        services: store_of(&Vec::from_iter(service)),
        hpas: store_of(&Vec::from_iter(hpa)),
        pdbs: store_of(&[]),
        network_policies: store_of(&[]),
    }
}

#[tokio::test]
async fn unchanged_resource_with_watched_children_sends_no_request() {
    let (_, seen) = create().await;
    let c = created(&seen);
    let watched = cache(Some(&c.deployment), Some(&c.service), Some(&c.hpa));
    // The script is empty: any request fails the test.
    let (result, seen2, written) = run_cached(
        fa(autoscaling_spec(), Some(c.status)),
        Some(watched),
        vec![],
    )
    .await;
    assert_eq!(result, Ok(()));
    assert!(seen2.is_empty(), "no request at all: {seen2:#?}");
    assert_eq!(written, counts(&[]));
}

#[tokio::test]
async fn a_write_the_watched_children_ask_for_is_decided_on_a_get() {
    let (_, seen) = create().await;
    let c = created(&seen);
    // The watch saw an edited Service, but the server has ours again (someone reverted it, or
    // the watch is behind): the Service alone is read again, the GET decides, and nothing is
    // written.
    let mut edited = c.service.clone();
    edited["spec"]["ports"][0]["port"] = json!(9999);
    let watched = cache(Some(&c.deployment), Some(&edited), Some(&c.hpa));
    let (result, seen2, written) = run_cached(
        fa(autoscaling_spec(), Some(c.status.clone())),
        Some(watched),
        vec![step(Method::GET, SERVICE, Reply::Json(c.service.clone()))],
    )
    .await;
    assert_eq!(result, Ok(()));
    assert_eq!(seen2.len(), 1, "only the Service is read again: {seen2:#?}");
    assert_eq!(written, counts(&[]), "the server had it right: no write");

    // The watch has not seen the Deployment yet (the operator just started): a GET shows it
    // exists, so it is not created again and no `Created` Event is written.
    let watched = cache(None, Some(&c.service), Some(&c.hpa));
    let (result, _, written) = run_cached(
        fa(autoscaling_spec(), Some(c.status.clone())),
        Some(watched),
        vec![step(Method::GET, DEPLOY, Reply::Json(c.deployment.clone()))],
    )
    .await;
    assert_eq!(result, Ok(()));
    assert_eq!(written, counts(&[]));

    // Our HPA is still watched but autoscaling was turned off: the reconcile must not take the
    // no-request path; it reads the Deployment (its spec changed) and the HPA, then deletes the
    // HPA.
    let mut spec = autoscaling_spec();
    spec.as_object_mut().expect("object").remove("autoscaling");
    let off = fa(spec, None);
    let watched = cache(Some(&c.deployment), Some(&c.service), Some(&c.hpa));
    let (result, seen3, _) = run_cached(
        off.clone(),
        Some(watched),
        vec![
            step(Method::GET, DEPLOY, Reply::Json(c.deployment.clone())),
            step(Method::GET, HPA, Reply::Json(c.hpa.clone())),
            step(Method::PATCH, DEPLOY, Reply::Echo),
            step(
                Method::DELETE,
                HPA,
                Reply::Json(json!({"kind": "Status", "apiVersion": "v1", "status": "Success"})),
            ),
            step(Method::PATCH, STATUS, Reply::StatusOf(Box::new(off))),
            step(Method::POST, EVENTS, Reply::Echo),
            step(Method::POST, EVENTS, Reply::Echo),
        ],
    )
    .await;
    assert_eq!(result, Ok(()));
    assert_eq!(
        (&seen3[3].method, seen3[3].path.as_str()),
        (&Method::DELETE, HPA)
    );
}

#[tokio::test]
async fn edited_child_is_corrected() {
    let (_, seen) = create().await;
    let c = created(&seen);
    let mut edited = c.service.clone();
    edited["spec"]["ports"][0]["port"] = json!(9999);
    let (result, seen2) = run(
        fa(autoscaling_spec(), Some(c.status)),
        vec![
            step(Method::GET, DEPLOY, Reply::Json(c.deployment)),
            step(Method::GET, SERVICE, Reply::Json(edited)),
            step(Method::GET, HPA, Reply::Json(c.hpa)),
            step(Method::GET, PDB, Reply::NotFound),
            step(Method::GET, NETPOL, Reply::NotFound),
            step(Method::PATCH, SERVICE, Reply::Echo),
            step(Method::POST, EVENTS, Reply::Echo),
        ],
    )
    .await;
    assert_eq!(result, Ok(()));
    assert_eq!(seen2[5].body["spec"]["ports"][0]["port"], 8000);
    assert_change_events(
        &seen2[6..],
        &[(
            "Updated",
            "Service",
            "updated Service agent to match the spec",
        )],
    );
}

#[tokio::test]
async fn autoscaling_off_deletes_hpa_and_keeps_the_running_replicas() {
    let (_, seen) = create().await;
    let c = created(&seen);
    // The HPA scaled the Deployment to 6; the HPA's controller owns spec.replicas.
    let mut live = c.deployment.clone();
    live["spec"]["replicas"] = json!(6);
    live["metadata"]["managedFields"] = json!([
        {"manager": FIELD_MANAGER, "operation": "Apply", "apiVersion": "apps/v1",
         "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:template": {}}}},
        {"manager": "kube-controller-manager", "operation": "Update", "apiVersion": "apps/v1",
         "subresource": "scale", "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:replicas": {}}}}
    ]);
    let mut spec = autoscaling_spec();
    spec.as_object_mut().expect("object").remove("autoscaling");
    let off = fa(spec, None);
    let (result, seen2) = run(
        off.clone(),
        vec![
            step(Method::GET, DEPLOY, Reply::Json(live)),
            step(Method::GET, SERVICE, Reply::Json(c.service)),
            step(Method::GET, HPA, Reply::Json(c.hpa)),
            step(Method::GET, PDB, Reply::NotFound),
            step(Method::GET, NETPOL, Reply::NotFound),
            step(Method::PATCH, DEPLOY, Reply::Echo),
            step(
                Method::DELETE,
                HPA,
                Reply::Json(json!({"kind": "Status", "apiVersion": "v1", "status": "Success"})),
            ),
            step(Method::PATCH, STATUS, Reply::StatusOf(Box::new(off))),
            step(Method::POST, EVENTS, Reply::Echo),
            step(Method::POST, EVENTS, Reply::Echo),
        ],
    )
    .await;
    assert_eq!(result, Ok(()));
    assert_change_events(
        &seen2[8..],
        &[
            (
                "Updated",
                "Deployment",
                "updated Deployment agent to match the spec",
            ),
            (
                "Deleted",
                "HorizontalPodAutoscaler",
                "deleted HorizontalPodAutoscaler agent: no longer wanted by the spec",
            ),
        ],
    );
    assert_apply(&seen2[5], DEPLOY, FIELD_MANAGER);
    assert_eq!(
        seen2[5].body["spec"]["replicas"], 6,
        "the running count is kept, not reset to 1"
    );
}

#[tokio::test]
async fn autoscaling_on_hands_replicas_over_before_dropping_them() {
    // A fixed-size Deployment whose spec.replicas we applied.
    let fixed = fa(json!({"image": "img:1", "replicas": 4}), None);
    let (result, seen) = run(
        fixed.clone(),
        vec![
            step(Method::GET, DEPLOY, Reply::NotFound),
            step(Method::GET, SERVICE, Reply::NotFound),
            step(Method::GET, HPA, Reply::NotFound),
            step(Method::GET, PDB, Reply::NotFound),
            step(Method::GET, NETPOL, Reply::NotFound),
            step(Method::PATCH, DEPLOY, Reply::Echo),
            step(Method::PATCH, SERVICE, Reply::Echo),
            step(Method::PATCH, STATUS, Reply::StatusOf(Box::new(fixed))),
            step(Method::POST, EVENTS, Reply::Echo),
            step(Method::POST, EVENTS, Reply::Echo),
        ],
    )
    .await;
    assert_eq!(result, Ok(()));
    assert_eq!(seen[5].body["spec"]["replicas"], 4);
    let mut live = seen[5].body.clone();
    live["metadata"]["managedFields"] = json!([
        {"manager": FIELD_MANAGER, "operation": "Apply", "apiVersion": "apps/v1",
         "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:replicas": {}, "f:template": {}}}}
    ]);
    let auto = fa(
        json!({"image": "img:1", "autoscaling": {"maxReplicas": 8}}),
        None,
    );
    let (result, seen2) = run(
        auto.clone(),
        vec![
            step(Method::GET, DEPLOY, Reply::Json(live)),
            step(Method::GET, SERVICE, Reply::Json(seen[6].body.clone())),
            step(Method::GET, HPA, Reply::NotFound),
            step(Method::GET, PDB, Reply::NotFound),
            step(Method::GET, NETPOL, Reply::NotFound),
            step(Method::PATCH, DEPLOY, Reply::Echo),
            step(Method::PATCH, DEPLOY, Reply::Echo),
            step(Method::PATCH, HPA, Reply::Echo),
            step(Method::PATCH, STATUS, Reply::StatusOf(Box::new(auto))),
            step(Method::POST, EVENTS, Reply::Echo),
            step(Method::POST, EVENTS, Reply::Echo),
        ],
    )
    .await;
    assert_eq!(result, Ok(()));
    assert_change_events(
        &seen2[9..],
        &[
            (
                "Updated",
                "Deployment",
                "updated Deployment agent to match the spec",
            ),
            (
                "Created",
                "HorizontalPodAutoscaler",
                "created HorizontalPodAutoscaler agent",
            ),
        ],
    );
    assert_apply(&seen2[5], DEPLOY, HANDOFF_FIELD_MANAGER);
    assert_eq!(
        seen2[5].body["spec"]["replicas"], 4,
        "current count handed over"
    );
    assert_apply(&seen2[6], DEPLOY, FIELD_MANAGER);
    assert!(seen2[6].body["spec"].get("replicas").is_none());
}

#[tokio::test]
async fn missing_secret_sets_ready_false_emits_event_and_applies_nothing() {
    let spec =
        json!({"image": "img:1", "database": {"urlSecretRef": {"name": "db", "key": "url"}}});
    missing_secret_case(spec, "db", "spec.database.urlSecretRef").await;
    let spec = json!({"image": "img:1", "agent": {"openai": {
        "apiKeySecretRef": {"name": "openai", "key": "api-key"}}}});
    missing_secret_case(spec, "openai", "spec.agent.openai.apiKeySecretRef").await;
    let spec = json!({"image": "img:1", "port": 8080, "agent": {"container": {
    "image": "py:1",
    "env": [
        {"name": "A", "value": "b"},
        {"name": "C", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "k"}}},
        {"name": "OPENAI_API_KEY", "valueFrom": {"secretKeyRef": {"name": "llm", "key": "api-key"}}},
    ]}}});
    missing_secret_case(
        spec,
        "llm",
        "spec.agent.container.env[2].valueFrom.secretKeyRef",
    )
    .await;
}

/// A FastAgentic with `spec` whose one Secret `secret` is missing: Ready=False and a Warning
/// Event naming `field`, and nothing applied.
async fn missing_secret_case(spec: Value, secret: &str, field: &str) {
    let missing = fa(spec, None);
    let (result, seen, written) = run_counting(
        missing.clone(),
        vec![
            step(
                Method::GET,
                format!("/api/v1/namespaces/ns/secrets/{secret}").leak(),
                Reply::NotFound,
            ),
            step(Method::PATCH, STATUS, Reply::StatusOf(Box::new(missing))),
            step(Method::POST, EVENTS, Reply::Echo),
        ],
    )
    .await;
    assert_eq!(result, Err("SecretNotFound".to_string()));
    assert_eq!(
        written,
        counts(&[("FastAgentic/status apply", 1), ("Event create", 1)]),
        "only the status and the Warning Event are written"
    );
    let conditions = seen[1].body["status"]["conditions"]
        .as_array()
        .expect("conditions")
        .clone();
    let ready = conditions
        .iter()
        .find(|c| c["type"] == "Ready")
        .expect("Ready");
    assert_eq!(ready["status"], "False");
    assert_eq!(ready["reason"], "SecretNotFound");
    let message = ready["message"].as_str().expect("message");
    assert!(message.contains(field), "{message}");
    let event = &seen[2].body;
    assert_eq!(event["type"], "Warning");
    assert_eq!(event["reason"], "SecretNotFound");
    assert!(event["note"].as_str().is_some_and(|n| n.contains(field)));
    assert_eq!(event["regarding"]["name"], NAME);
}

#[tokio::test]
async fn missing_secret_key_names_the_field() {
    let spec = json!({"image": "img:1", "redis": {"urlSecretRef": {"name": "r", "key": "url"}}});
    let f = fa(spec, None);
    let secret = json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "r", "namespace": NS, "resourceVersion": "5"},
        "data": {"other": "eA=="}});
    let (result, seen) = run(
        f.clone(),
        vec![
            step(
                Method::GET,
                "/api/v1/namespaces/ns/secrets/r",
                Reply::Json(secret),
            ),
            step(Method::PATCH, STATUS, Reply::StatusOf(Box::new(f))),
            step(Method::POST, EVENTS, Reply::Echo),
        ],
    )
    .await;
    assert_eq!(result, Err("SecretKeyNotFound".to_string()));
    assert!(seen[1].body.to_string().contains("spec.redis.urlSecretRef"));
}

#[tokio::test]
async fn secret_values_never_leave_the_secret() {
    const PLANTED: &str = "postgres://agent:s3cr3t-planted@db:5432/agent";
    let b64 = "cG9zdGdyZXM6Ly9hZ2VudDpzM2NyM3QtcGxhbnRlZEBkYjo1NDMyL2FnZW50";
    let spec = json!({"image": "img:1", "replicas": 2,
        "database": {"urlSecretRef": {"name": "stores", "key": "database-url"}}});
    let f = fa(spec, None);
    let secret = json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "stores", "namespace": NS, "resourceVersion": "777"},
        "data": {"database-url": b64}});
    let (result, seen) = run(
        f.clone(),
        vec![
            step(
                Method::GET,
                "/api/v1/namespaces/ns/secrets/stores",
                Reply::Json(secret),
            ),
            step(Method::GET, DEPLOY, Reply::NotFound),
            step(Method::GET, SERVICE, Reply::NotFound),
            step(Method::GET, HPA, Reply::NotFound),
            step(Method::GET, PDB, Reply::NotFound),
            step(Method::GET, NETPOL, Reply::NotFound),
            step(Method::PATCH, DEPLOY, Reply::Echo),
            step(Method::PATCH, SERVICE, Reply::Echo),
            step(Method::PATCH, STATUS, Reply::StatusOf(Box::new(f.clone()))),
            step(Method::POST, EVENTS, Reply::Echo),
            step(Method::POST, EVENTS, Reply::Echo),
        ],
    )
    .await;
    assert_eq!(result, Ok(()));
    for s in seen.iter().filter(|s| s.method != Method::GET) {
        let text = s.body.to_string();
        assert!(
            !text.contains("s3cr3t-planted"),
            "{} {} leaks the secret",
            s.method,
            s.path
        );
        assert!(
            !text.contains(b64),
            "{} {} leaks the secret",
            s.method,
            s.path
        );
        assert!(!text.contains(PLANTED));
    }
    let deploy = &seen[6].body;
    let env = deploy["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .expect("env");
    let db = env
        .iter()
        .find(|e| e["name"] == "DATABASE_URL")
        .expect("DATABASE_URL");
    assert_eq!(db["valueFrom"]["secretKeyRef"]["name"], "stores");
    assert!(db.get("value").is_none());
    // The Secret's resourceVersion is in the pod-template hash: render (version unknown) differs.
    let rendered = fastagentic_operator::render::children(&f, 1).expect("render");
    let hash = |v: &Value| {
        v["spec"]["template"]["metadata"]["annotations"][ANNOTATION_CONFIG_HASH].clone()
    };
    let offline = serde_json::to_value(&rendered.deployment).expect("json");
    assert_ne!(hash(deploy), hash(&offline));
}

#[test]
fn up_to_date_check_tolerates_server_defaults_and_normalised_quantities() {
    use fastagentic_operator::controller::is_subset;
    let want = json!({"spec": {"resources": {"limits": {"cpu": "1000m", "memory": "512Mi"}},
                               "ports": [{"name": "http", "port": 8000}]}});
    let have = json!({"spec": {"resources": {"limits": {"cpu": "1", "memory": "512Mi"}},
                               "ports": [{"name": "http", "port": 8000, "protocol": "TCP"}],
                               "sessionAffinity": "None"}});
    assert!(is_subset(&want, &have));
    let edited = json!({"spec": {"resources": {"limits": {"cpu": "2", "memory": "512Mi"}},
                                 "ports": [{"name": "http", "port": 8000}]}});
    assert!(!is_subset(&want, &edited), "a changed quantity is drift");
    let extra = json!({"spec": {"resources": {"limits": {"cpu": "1", "memory": "512Mi"}},
                                "ports": [{"name": "http", "port": 8000}, {"name": "x", "port": 1}]}});
    assert!(!is_subset(&want, &extra), "an added list entry is drift");
    let zero = json!({"probe": {"initialDelaySeconds": 0, "periodSeconds": 2}});
    assert!(
        is_subset(&zero, &json!({"probe": {"periodSeconds": 2}})),
        "omitempty zero"
    );
    assert!(!is_subset(
        &zero,
        &json!({"probe": {"initialDelaySeconds": 5, "periodSeconds": 2}})
    ));
}

/// `spec.networkPolicy`: the NetworkPolicy is applied before anything else (the pods never run
/// without it), reported like every child, left alone when unchanged, and deleted with a
/// `Deleted` Event when the field is removed.
#[tokio::test]
async fn network_policy_goes_first_and_is_deleted_when_removed() {
    let spec = json!({"image": "img:1", "replicas": 2,
        "networkPolicy": {"from": [{"namespaceSelector": {"matchLabels": {"team": "web"}}}]}});
    let with = fa(spec.clone(), None);
    let (result, seen) = run(
        with.clone(),
        vec![
            step(Method::GET, DEPLOY, Reply::NotFound),
            step(Method::GET, SERVICE, Reply::NotFound),
            step(Method::GET, HPA, Reply::NotFound),
            step(Method::GET, PDB, Reply::NotFound),
            step(Method::GET, NETPOL, Reply::NotFound),
            step(Method::PATCH, NETPOL, Reply::Echo),
            step(Method::PATCH, DEPLOY, Reply::Echo),
            step(Method::PATCH, SERVICE, Reply::Echo),
            step(
                Method::PATCH,
                STATUS,
                Reply::StatusOf(Box::new(with.clone())),
            ),
            step(Method::POST, EVENTS, Reply::Echo),
            step(Method::POST, EVENTS, Reply::Echo),
            step(Method::POST, EVENTS, Reply::Echo),
        ],
    )
    .await;
    assert_eq!(result, Ok(()));
    assert_apply(&seen[5], NETPOL, FIELD_MANAGER);
    let policy = seen[5].body.clone();
    assert_eq!(policy["kind"], "NetworkPolicy");
    assert_eq!(policy["metadata"]["ownerReferences"][0]["uid"], UID);
    assert_eq!(
        policy["spec"]["ingress"][0]["from"],
        json!([{"namespaceSelector": {"matchLabels": {"team": "web"}}}]),
        "no operator peer: the mocked operator does not know its namespace"
    );
    assert_eq!(policy["spec"]["policyTypes"], json!(["Ingress"]));
    assert_change_events(
        &seen[9..],
        &[
            ("Created", "NetworkPolicy", "created NetworkPolicy agent"),
            ("Created", "Deployment", "created Deployment agent"),
            ("Created", "Service", "created Service agent"),
        ],
    );
    let status: FastAgenticStatus =
        serde_json::from_value(seen[8].body["status"].clone()).expect("status we wrote");
    let (deployment, service) = (seen[6].body.clone(), seen[7].body.clone());

    // Unchanged: reads only.
    let (result, again) = run(
        fa(spec.clone(), Some(status.clone())),
        vec![
            step(Method::GET, DEPLOY, Reply::Json(deployment.clone())),
            step(Method::GET, SERVICE, Reply::Json(service.clone())),
            step(Method::GET, HPA, Reply::NotFound),
            step(Method::GET, PDB, Reply::NotFound),
            step(Method::GET, NETPOL, Reply::Json(policy.clone())),
        ],
    )
    .await;
    assert_eq!(result, Ok(()));
    assert!(again.iter().all(|s| s.method == Method::GET), "{again:#?}");

    // The field removed: the NetworkPolicy is deleted, nothing else changes.
    let mut without_spec = spec;
    without_spec
        .as_object_mut()
        .expect("object")
        .remove("networkPolicy");
    let (result, removed) = run(
        fa(without_spec, Some(status)),
        vec![
            step(Method::GET, DEPLOY, Reply::Json(deployment)),
            step(Method::GET, SERVICE, Reply::Json(service)),
            step(Method::GET, HPA, Reply::NotFound),
            step(Method::GET, PDB, Reply::NotFound),
            step(Method::GET, NETPOL, Reply::Json(policy)),
            step(
                Method::DELETE,
                NETPOL,
                Reply::Json(json!({"kind": "Status", "apiVersion": "v1", "status": "Success"})),
            ),
            step(Method::POST, EVENTS, Reply::Echo),
        ],
    )
    .await;
    assert_eq!(result, Ok(()));
    assert_change_events(
        &removed[6..],
        &[(
            "Deleted",
            "NetworkPolicy",
            "deleted NetworkPolicy agent: no longer wanted by the spec",
        )],
    );
}
