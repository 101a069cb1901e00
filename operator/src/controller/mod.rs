//! The FastAgentic controller: `read secrets and children → validate → build → apply →
//! update status`. The decisions live in [`crate::build`] and [`status`]; this module only
//! talks to the API server.
//!
//! Wiring: the FastAgentic watch goes through a reflector (its store also serves the Secret
//! mapper) and a `generation` predicate, so our own status patches do not trigger a reconcile.
//! The watches of the Deployments, Services, HPAs, PDBs and NetworkPolicies we control bring
//! back every change to them (drift correction and Deployment status → our status) and keep them
//! in stores, so a reconcile that has nothing to write sends no request ([`cache`]). Reconciles
//! run at most `--max-concurrent-reconciles` at a time. Secrets are watched as metadata only (their
//! values are never cached) and mapped to the FastAgentics in the same namespace that reference
//! them, so a rotated Secret changes the pod-template hash and rolls the pods.
//!
//! FastAgentics are watched as JSON and read here, so one that does not match the operator's
//! types is skipped with a Warning Event naming the field instead of breaking the watch. The
//! reconciler writes through its own client, whose requests [`writes`] counts.

mod apply;
pub mod cache;
mod error;
mod secrets;
pub mod status;
pub mod writes;

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use fastagentic_crd::FastAgentic;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ObjectReference, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Patch, PatchParams};
use kube::core::{ApiResource, DynamicObject, PartialObjectMeta};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{Controller, WatchStreamExt, controller, predicates, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;

pub use apply::{
    Change, ChangeAction, HANDOFF_FIELD_MANAGER, Live, Stale, is_subset, is_up_to_date,
    manager_owns_replicas, needs_replicas_handoff,
};
use cache::{ChildCache, keep_own_managed_fields, writes_needed};
pub use error::Error;
pub use status::{Failure, autoscaling_status, compute_status};

use crate::FIELD_MANAGER;
use crate::build::{BuildInputs, OperatorPods, build_children, referenced_secrets, validate};
use crate::labels::{LABEL_MANAGED_BY, MANAGED_BY};
use crate::metrics::Metrics;

/// How often an unchanged resource is looked at again (reads only).
const RESYNC: Duration = Duration::from_secs(600);
/// First retry after a failure; doubled per consecutive failure up to [`MAX_BACKOFF`].
const BASE_BACKOFF: Duration = Duration::from_secs(5);
/// Longest wait between retries.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// Shared state of the reconciler.
pub struct Context {
    client: Client,
    recorder: Recorder,
    metrics: Arc<Metrics>,
    failures: Mutex<HashMap<ObjectRef<FastAgentic>, u32>>,
    /// The watched children, once [`run`] watches them; without it every reconcile GETs them.
    cache: OnceLock<ChildCache>,
    operator_pods: OperatorPods,
}

impl Context {
    /// A context whose Events are reported as `fastagentic-operator` by `instance`.
    pub fn new(client: Client, metrics: Arc<Metrics>, instance: Option<String>) -> Self {
        let reporter = Reporter {
            controller: MANAGED_BY.into(),
            instance,
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            metrics,
            failures: Mutex::new(HashMap::new()),
            cache: OnceLock::new(),
            operator_pods: OperatorPods::default(),
        }
    }

    /// Reconciles read the children from `cache` first (see [`cache`]); set once, by [`run`].
    pub fn use_cache(&self, cache: ChildCache) {
        let _ = self.cache.set(cache);
    }

    /// Where the operator's own pods run, admitted by the NetworkPolicies it builds (unknown by
    /// default: no operator peer).
    pub fn with_operator_pods(mut self, operator_pods: OperatorPods) -> Self {
        self.operator_pods = operator_pods;
        self
    }

    fn next_backoff(&self, fa: &FastAgentic) -> Duration {
        let n = match self.failures.lock() {
            Ok(mut map) => {
                let n = map.entry(ObjectRef::from_obj(fa)).or_insert(0);
                *n = n.saturating_add(1);
                *n
            }
            Err(_) => 1,
        };
        backoff(n)
    }

    fn clear_backoff(&self, fa: &FastAgentic) {
        if let Ok(mut map) = self.failures.lock() {
            map.remove(&ObjectRef::from_obj(fa));
        }
    }
}

/// Delay before retry number `n` (1-based): 5 s, 10 s, 20 s ... at most 5 min.
pub fn backoff(n: u32) -> Duration {
    let factor = 2u32.saturating_pow(n.saturating_sub(1).min(16));
    BASE_BACKOFF.saturating_mul(factor).min(MAX_BACKOFF)
}

/// Where the controller watches.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    /// One namespace, or all when `None`.
    pub namespace: Option<String>,
}

fn api_for<K>(client: &Client, scope: &Scope) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match &scope.namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// A watch of the children of kind `K` with our label: the store it fills, and the stream of
/// changed objects (each stored before it is passed on).
fn watch_children<K>(
    client: &Client,
    scope: &Scope,
    config: &watcher::Config,
) -> (
    Store<K>,
    impl futures::Stream<Item = Result<K, watcher::Error>> + Send + 'static,
)
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (store, writer) = reflector::store();
    let events = watcher(api_for::<K>(client, scope), config.clone())
        .default_backoff()
        .modify(keep_own_managed_fields)
        .reflect(writer)
        .touched_objects();
    (store, events)
}

/// FastAgentics in `store` that reference the Secret `secret`.
fn referencing(
    store: &Store<FastAgentic>,
    secret: &PartialObjectMeta<Secret>,
) -> Vec<ObjectRef<FastAgentic>> {
    let (Some(name), ns) = (
        secret.metadata.name.as_deref(),
        secret.metadata.namespace.as_deref(),
    ) else {
        return Vec::new();
    };
    store
        .state()
        .iter()
        .filter(|fa| fa.metadata.namespace.as_deref() == ns)
        .filter(|fa| referenced_secrets(fa).iter().any(|u| u.name == name))
        .map(|fa| ObjectRef::from_obj(fa.as_ref()))
        .collect()
}

/// Runs the controller until `shutdown` resolves, caching the FastAgentics in `writer`'s store
/// (others may read it: the metrics API's scraper does).
pub async fn run(
    client: Client,
    scope: Scope,
    concurrency: u16,
    ctx: Arc<Context>,
    writer: reflector::store::Writer<FastAgentic>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let store = writer.as_reader();
    // Objects are watched as plain JSON and read here: one FastAgentic that does not
    // deserialize (stored under an older schema, say) gets a Warning Event naming the field and
    // is skipped, instead of failing the whole watch and stalling every other resource.
    let recorder = ctx.recorder.clone();
    let resource = ApiResource::erase::<FastAgentic>(&());
    let raw: Api<DynamicObject> = match &scope.namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
        None => Api::all_with(client.clone(), &resource),
    };
    let fastagentics = watcher(raw, watcher::Config::default())
        .default_backoff()
        .filter_map(move |event| {
            let recorder = recorder.clone();
            async move {
                let (passed, malformed) = skip_malformed(event);
                if let Some(m) = malformed {
                    report_malformed(&recorder, &m).await;
                }
                passed
            }
        })
        // Nothing reads a FastAgentic's managedFields; they would only cost memory.
        .modify(|fa| fa.managed_fields_mut().clear())
        .reflect(writer)
        .applied_objects()
        .predicate_filter(predicates::generation, Default::default());
    // Metadata only: Secret values are never cached in the operator.
    let secret_api: Api<PartialObjectMeta<Secret>> = match &scope.namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let secrets = watcher(secret_api, watcher::Config::default())
        .default_backoff()
        .applied_objects();
    let mapper_store = store.clone();
    let owned = watcher::Config::default().labels(&format!("{LABEL_MANAGED_BY}={MANAGED_BY}"));

    // The children are watched in full and stored (see [`cache`]); each change still triggers
    // its owner's reconcile.
    let (deployments, deployment_events) = watch_children::<Deployment>(&client, &scope, &owned);
    let (services, service_events) = watch_children::<Service>(&client, &scope, &owned);
    let (hpas, hpa_events) = watch_children::<HorizontalPodAutoscaler>(&client, &scope, &owned);
    let (pdbs, pdb_events) = watch_children::<PodDisruptionBudget>(&client, &scope, &owned);
    let (network_policies, network_policy_events) =
        watch_children::<NetworkPolicy>(&client, &scope, &owned);
    ctx.use_cache(ChildCache {
        deployments,
        services,
        hpas,
        pdbs,
        network_policies,
    });

    Controller::for_stream(fastagentics, store)
        .with_config(controller::Config::default().concurrency(concurrency))
        .owns_stream(deployment_events)
        .owns_stream(service_events)
        .owns_stream(hpa_events)
        .owns_stream(pdb_events)
        .owns_stream(network_policy_events)
        .watches_stream(secrets, move |secret| referencing(&mapper_store, &secret))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((obj, _)) => tracing::debug!(object = %obj, "reconciled"),
                Err(err) => tracing::debug!(error = %err, "reconcile loop"),
            }
        })
        .await;
}

/// Event reason for a FastAgentic that does not match the operator's types.
pub const REASON_MALFORMED: &str = "Malformed";

/// A FastAgentic the watch could not read as one, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Malformed {
    /// The object, for the Event's `regarding`.
    pub reference: ObjectReference,
    /// The deserializer's message, naming the field.
    pub error: String,
}

/// Passes well-formed FastAgentics on; a malformed one is dropped from the stream and returned
/// for [`malformed_event`] (its deletion is dropped silently: there is nothing left to warn).
pub fn skip_malformed(
    event: Result<watcher::Event<DynamicObject>, watcher::Error>,
) -> (
    Option<Result<watcher::Event<FastAgentic>, watcher::Error>>,
    Option<Malformed>,
) {
    use watcher::Event as E;
    let event = match event {
        Err(e) => return (Some(Err(e)), None),
        Ok(event) => event,
    };
    let split = |obj: DynamicObject| {
        let reference = obj.object_ref(&ApiResource::erase::<FastAgentic>(&()));
        match read_fastagentic(&obj) {
            Ok(fa) => (Some(fa), None),
            Err(error) => (None, Some(Malformed { reference, error })),
        }
    };
    match event {
        E::Apply(obj) => {
            let (fa, malformed) = split(obj);
            (fa.map(|fa| Ok(E::Apply(fa))), malformed)
        }
        E::InitApply(obj) => {
            let (fa, malformed) = split(obj);
            (fa.map(|fa| Ok(E::InitApply(fa))), malformed)
        }
        E::Delete(obj) => (split(obj).0.map(|fa| Ok(E::Delete(fa))), None),
        E::Init => (Some(Ok(E::Init)), None),
        E::InitDone => (Some(Ok(E::InitDone)), None),
    }
}

/// The FastAgentic in `obj`, or why it is not one, starting with the path of the offending
/// field.
fn read_fastagentic(obj: &DynamicObject) -> Result<FastAgentic, String> {
    let value = serde_json::to_value(obj).map_err(|e| e.to_string())?;
    serde_path_to_error::deserialize(value).map_err(|e| e.to_string())
}

/// The Warning Event on a malformed FastAgentic: reason `Malformed`, the deserializer's message
/// (which names the field) in the note.
pub fn malformed_event(m: &Malformed) -> Event {
    Event {
        type_: EventType::Warning,
        reason: REASON_MALFORMED.into(),
        note: Some(truncate(
            &format!(
                "the resource does not match the operator's types and is not reconciled: {}",
                m.error
            ),
            1000,
        )),
        action: "Reconcile".into(),
        secondary: None,
    }
}

/// Logs the malformed object and warns on it with an Event (best effort: without RBAC for
/// Events the log line is all there is).
async fn report_malformed(recorder: &Recorder, m: &Malformed) {
    tracing::warn!(
        namespace = m.reference.namespace.as_deref().unwrap_or_default(),
        name = m.reference.name.as_deref().unwrap_or_default(),
        error = %m.error,
        "skipping a FastAgentic that does not match the operator's types"
    );
    publish_to(recorder, &m.reference, &malformed_event(m)).await;
}

fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

/// One reconcile of one FastAgentic, with metrics, and with failures reported on the resource.
pub async fn reconcile(fa: Arc<FastAgentic>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let result = reconcile_inner(&fa, &ctx).await;
    ctx.metrics
        .observe(started.elapsed(), result.as_ref().err().map(Error::reason));
    match result {
        Ok(action) => {
            ctx.clear_backoff(&fa);
            Ok(action)
        }
        Err(err) => {
            tracing::warn!(
                namespace = fa.namespace().unwrap_or_default(),
                name = fa.name_any(),
                reason = err.reason(),
                error = %err,
                "reconcile failed"
            );
            report_failure(&fa, &ctx, &err).await;
            Err(err)
        }
    }
}

/// Retry with a per-resource exponential backoff (other resources are unaffected).
pub fn error_policy(fa: Arc<FastAgentic>, _err: &Error, ctx: Arc<Context>) -> Action {
    Action::requeue(ctx.next_backoff(&fa))
}

async fn reconcile_inner(fa: &FastAgentic, ctx: &Context) -> Result<Action, Error> {
    let ns = fa.namespace().ok_or(Error::MissingNamespace)?;
    let validated = validate(fa)?;
    let secret_versions = secrets::resolve(&ctx.client, &ns, validated.secrets()).await?;
    let build = |live: &Live| {
        let inputs = BuildInputs {
            secret_versions: secret_versions.clone(),
            current_replicas: live
                .deployment
                .as_ref()
                .and_then(|d| d.spec.as_ref())
                .and_then(|s| s.replicas),
            operator: ctx.operator_pods.clone(),
        };
        build_children(&validated, &inputs)
    };
    // The watched children first: when they say nothing is to be written, no request is needed
    // to know it. Otherwise the children to write are read again, and every write is decided on
    // what those GETs return.
    let (live, children) = match ctx.cache.get() {
        Some(cache) => {
            let mut live = cache.live(&ns, validated.name());
            let children = build(&live)?;
            let stale = writes_needed(&children, &live, fa);
            if stale.any() {
                live.refresh(&ctx.client, &ns, validated.name(), stale)
                    .await?;
                let children = build(&live)?;
                (live, children)
            } else {
                (live, children)
            }
        }
        None => {
            let live = Live::fetch(&ctx.client, &ns, validated.name()).await?;
            let children = build(&live)?;
            (live, children)
        }
    };
    let autoscaling = autoscaling_status(fa, live.hpa.as_ref());
    let (deployment, changes) = apply::apply_children(&ctx.client, &ns, fa, children, live).await?;
    let mut status = compute_status(fa, Some(&deployment), None, &now());
    status.autoscaling = autoscaling;
    patch_status_if_changed(&ctx.client, &ns, fa, status).await?;
    publish_in_background(ctx, fa, change_events(&changes));
    Ok(Action::requeue(RESYNC))
}

/// One Normal Event per write a reconcile made (none when it wrote nothing, so an unchanged
/// resource gets no Events): reason `Created`, `Updated` or `Deleted`, the child in `related`,
/// and a note such as `created Deployment agent`.
///
/// One Event per child rather than one per reconcile: Events with the same reason, action and
/// related object are aggregated into a series (count and last time), so a note must be the
/// same for every Event that shares those.
pub fn change_events(changes: &[Change]) -> Vec<Event> {
    changes
        .iter()
        .map(|change| {
            let (reason, action) = match change.action {
                ChangeAction::Created => ("Created", "Apply"),
                ChangeAction::Updated => ("Updated", "Apply"),
                ChangeAction::Deleted => ("Deleted", "Delete"),
            };
            let why = match change.action {
                ChangeAction::Created => "",
                ChangeAction::Updated => " to match the spec",
                ChangeAction::Deleted => ": no longer wanted by the spec",
            };
            Event {
                type_: EventType::Normal,
                reason: reason.into(),
                note: Some(format!("{change}{why}")),
                action: action.into(),
                secondary: Some(change.reference.clone()),
            }
        })
        .collect()
}

/// Writes `events` on a task of their own: the reconcile is done once its objects and status
/// are written, and its slot (one of `--max-concurrent-reconciles`) goes to the next resource
/// instead of waiting for Events nobody reads back. Best effort, as [`publish_to`].
fn publish_in_background(ctx: &Context, fa: &FastAgentic, events: Vec<Event>) {
    if events.is_empty() {
        return;
    }
    let recorder = ctx.recorder.clone();
    let regarding = fa.object_ref(&());
    tokio::spawn(async move {
        let writes = events
            .iter()
            .map(|event| publish_to(&recorder, &regarding, event));
        futures::future::join_all(writes).await;
    });
}

async fn publish(ctx: &Context, fa: &FastAgentic, event: &Event) {
    publish_to(&ctx.recorder, &fa.object_ref(&()), event).await;
}

/// Best effort: an Event that cannot be written (no RBAC for events, say) is logged only.
async fn publish_to(recorder: &Recorder, regarding: &ObjectReference, event: &Event) {
    if let Err(e) = recorder.publish(event, regarding).await {
        tracing::warn!(error = %e, reason = %event.reason, "could not publish the Event");
    }
}

async fn patch_status_if_changed(
    client: &Client,
    ns: &str,
    fa: &FastAgentic,
    status: fastagentic_crd::FastAgenticStatus,
) -> Result<(), Error> {
    if fa.status.as_ref() == Some(&status) {
        return Ok(());
    }
    let name = fa.name_any();
    let body = json!({
        "apiVersion": FastAgentic::api_version(&()),
        "kind": FastAgentic::kind(&()),
        "status": status,
    });
    Api::<FastAgentic>::namespaced(client.clone(), ns)
        .patch_status(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await
        .map_err(Error::kube(format!(
            "patch status of FastAgentic {ns}/{name}"
        )))?;
    Ok(())
}

/// Best effort: `Ready=False` with the error's reason and message, and a Warning Event. Both
/// failing (for example without RBAC for them) is logged, never fatal.
async fn report_failure(fa: &FastAgentic, ctx: &Context, err: &Error) {
    let failure = Failure {
        reason: err.reason().to_string(),
        message: err.to_string(),
    };
    if let Some(ns) = fa.namespace() {
        let status = compute_status(fa, None, Some(&failure), &now());
        if let Err(e) = patch_status_if_changed(&ctx.client, &ns, fa, status).await {
            tracing::warn!(error = %e, "could not write the failure to the status");
        }
    }
    let event = Event {
        type_: EventType::Warning,
        reason: failure.reason.clone(),
        note: Some(truncate(&failure.message, 1000)),
        action: "Reconcile".into(),
        secondary: None,
    };
    publish(ctx, fa, &event).await;
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod guard_tests {
    use super::*;

    fn guard(value: serde_json::Value) -> DynamicObject {
        serde_json::from_value(value).expect("any object with metadata is a DynamicObject")
    }

    #[test]
    fn a_malformed_fastagentic_is_skipped_and_a_good_one_passes() {
        let good = guard(json!({
            "apiVersion": "fastagentic.io/v1alpha1", "kind": "FastAgentic",
            "metadata": {"name": "good", "namespace": "ns"},
            "spec": {"image": "agent:1"}
        }));
        let bad = guard(json!({
            "apiVersion": "fastagentic.io/v1alpha1", "kind": "FastAgentic",
            "metadata": {"name": "bad", "namespace": "ns"},
            "spec": {"image": "agent:1", "workers": "many"}
        }));

        match skip_malformed(Ok(watcher::Event::Apply(good))) {
            (Some(Ok(watcher::Event::Apply(fa))), None) => assert_eq!(fa.name_any(), "good"),
            other => panic!("the good object must pass, got {other:?}"),
        }
        let (passed, malformed) = skip_malformed(Ok(watcher::Event::InitApply(bad.clone())));
        assert!(passed.is_none(), "the malformed object must not pass");
        let malformed = malformed.expect("the malformed object is reported");
        assert_eq!(malformed.reference.name.as_deref(), Some("bad"));
        assert_eq!(malformed.reference.namespace.as_deref(), Some("ns"));
        assert_eq!(malformed.reference.kind.as_deref(), Some("FastAgentic"));
        assert_eq!(
            malformed.reference.api_version.as_deref(),
            Some("fastagentic.io/v1alpha1")
        );
        let event = malformed_event(&malformed);
        assert_eq!(event.type_, EventType::Warning);
        assert_eq!(event.reason, "Malformed");
        let note = event.note.unwrap_or_default();
        assert!(
            note.contains("spec.workers: invalid type: string \"many\""),
            "the note names the field: {note}"
        );
        assert!(
            matches!(
                skip_malformed(Ok(watcher::Event::Delete(bad))),
                (None, None)
            ),
            "a deleted malformed object is dropped without a warning"
        );
        assert!(matches!(
            skip_malformed(Ok(watcher::Event::InitDone)),
            (Some(Ok(watcher::Event::InitDone)), None)
        ));
    }
}
