//! Applies the desired children with server-side apply, skipping every object that is already
//! as desired, and deletes the children that are no longer wanted.
//!
//! "Already as desired" means: the live object carries the same `fastagentic.io/applied-hash`
//! as the desired one (so the spec has not changed since our last apply) and every field we
//! send is still present with the same value (so nobody edited what we own; if somebody did, the
//! `.owns()` watch brought us here and we apply to correct the drift). A reconcile with nothing
//! changed therefore sends no write at all.
//!
//! The NetworkPolicy goes first: the pods of a new resource never run without it, and a policy
//! the API server refuses stops the reconcile before anything else is written. The others are
//! written at the same time: the Deployment (and after it the HPA that scales it), the Service
//! and the PDB.

use std::fmt::Debug;

use fastagentic_crd::FastAgentic;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ObjectReference, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::Error;
use crate::FIELD_MANAGER;
use crate::build::{ANNOTATION_APPLIED_HASH, Children};

/// Field manager used once, when autoscaling is turned on, to keep `spec.replicas` owned by
/// someone while the operator stops sending it (see [`needs_replicas_handoff`]).
pub const HANDOFF_FIELD_MANAGER: &str = "fastagentic-operator-replicas-handoff";

/// One write a reconcile made to a child, reported in a Normal Event on the FastAgentic.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// What was done.
    pub action: ChangeAction,
    /// The child's kind (`Deployment`, `Service`, ...).
    pub kind: String,
    /// The child's name.
    pub name: String,
    /// The child, for the Event's `related` field.
    pub reference: ObjectReference,
}

/// What was done to a child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeAction {
    /// It did not exist and was applied.
    Created,
    /// It existed but differed from the spec (a spec change, or an edit by someone else) and
    /// was applied again.
    Updated,
    /// It is no longer wanted (autoscaling, the disruption budget or the network policy was
    /// removed).
    Deleted,
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let action = match self.action {
            ChangeAction::Created => "created",
            ChangeAction::Updated => "updated",
            ChangeAction::Deleted => "deleted",
        };
        write!(f, "{action} {} {}", self.kind, self.name)
    }
}

/// The children as they are in the cluster: read with GET (so a reconcile sees its own previous
/// writes) whenever something is to be written, else as the watches last saw them.
#[derive(Debug, Clone, Default)]
pub struct Live {
    /// The Deployment, if any.
    pub deployment: Option<Deployment>,
    /// The Service, if any.
    pub service: Option<Service>,
    /// The HPA, if any.
    pub hpa: Option<HorizontalPodAutoscaler>,
    /// The PDB, if any.
    pub pdb: Option<PodDisruptionBudget>,
    /// The NetworkPolicy, if any.
    pub network_policy: Option<NetworkPolicy>,
}

async fn get<K>(client: &Client, ns: &str, name: &str) -> Result<Option<K>, Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + Debug,
{
    Api::<K>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .map_err(Error::kube(format!("get {} {ns}/{name}", K::kind(&()))))
}

/// Which children to read again (see [`super::cache::writes_needed`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stale {
    /// The Deployment.
    pub deployment: bool,
    /// The Service.
    pub service: bool,
    /// The HPA.
    pub hpa: bool,
    /// The PDB.
    pub pdb: bool,
    /// The NetworkPolicy.
    pub network_policy: bool,
}

impl Stale {
    /// Every child.
    pub const ALL: Stale = Stale {
        deployment: true,
        service: true,
        hpa: true,
        pdb: true,
        network_policy: true,
    };

    /// True when any child is to be read.
    pub fn any(&self) -> bool {
        self.deployment || self.service || self.hpa || self.pdb || self.network_policy
    }
}

/// `Some(the child)` read with GET when `read`, else `None` (keep what is known).
async fn get_if<K>(
    read: bool,
    client: &Client,
    ns: &str,
    name: &str,
) -> Result<Option<Option<K>>, Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + Debug,
{
    if read {
        get(client, ns, name).await.map(Some)
    } else {
        Ok(None)
    }
}

impl Live {
    /// GETs the five children named `name` in `ns`, at the same time.
    pub async fn fetch(client: &Client, ns: &str, name: &str) -> Result<Self, Error> {
        let mut live = Self::default();
        live.refresh(client, ns, name, Stale::ALL).await?;
        Ok(live)
    }

    /// GETs the children `stale` names, at the same time, replacing what was known of them.
    pub async fn refresh(
        &mut self,
        client: &Client,
        ns: &str,
        name: &str,
        stale: Stale,
    ) -> Result<(), Error> {
        let (deployment, service, hpa, pdb, network_policy) = tokio::try_join!(
            get_if(stale.deployment, client, ns, name),
            get_if(stale.service, client, ns, name),
            get_if(stale.hpa, client, ns, name),
            get_if(stale.pdb, client, ns, name),
            get_if(stale.network_policy, client, ns, name),
        )?;
        if let Some(d) = deployment {
            self.deployment = d;
        }
        if let Some(s) = service {
            self.service = s;
        }
        if let Some(h) = hpa {
            self.hpa = h;
        }
        if let Some(p) = pdb {
            self.pdb = p;
        }
        if let Some(n) = network_policy {
            self.network_policy = n;
        }
        Ok(())
    }
}

/// Applies `children` (only those that differ from `live`), deletes the unwanted ones, and
/// returns the Deployment as the server has it now with the list of writes made (empty when
/// everything was already as desired).
pub async fn apply_children(
    client: &Client,
    ns: &str,
    fa: &FastAgentic,
    children: Children,
    live: Live,
) -> Result<(Deployment, Vec<Change>), Error> {
    let Children {
        deployment,
        service,
        hpa,
        pdb,
        network_policy,
    } = children;
    let Live {
        deployment: live_deployment,
        service: live_service,
        hpa: live_hpa,
        pdb: live_pdb,
        network_policy: live_network_policy,
    } = live;
    let mut changes = Vec::new();

    let policies: Api<NetworkPolicy> = Api::namespaced(client.clone(), ns);
    apply_or_delete(
        &policies,
        fa,
        network_policy.as_ref(),
        live_network_policy.as_ref(),
        &mut changes,
    )
    .await?;

    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    if let Some(live) = &live_deployment
        && needs_replicas_handoff(&deployment, live)
    {
        hand_off_replicas(&deployments, live).await?;
    }
    let creating_autoscaled = live_deployment.is_none()
        && hpa.is_some()
        && deployment.spec.as_ref().and_then(|s| s.replicas).is_some();
    // The Deployment (then the HPA that scales it), the Service and the PDB do not depend on
    // each other: they are written at the same time, so a reconcile waits for the Deployment's
    // writes only, not for the Service and PDB after them.
    let workload = async {
        let mut changes = Vec::new();
        let mut applied = apply_if_changed(
            &deployments,
            &deployment,
            live_deployment.as_ref(),
            &mut changes,
        )
        .await?;
        if creating_autoscaled {
            applied = release_first_replicas(&deployments, &deployment, applied).await?;
        }
        let mut hpa_changes = Vec::new();
        let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(client.clone(), ns);
        apply_or_delete(&hpas, fa, hpa.as_ref(), live_hpa.as_ref(), &mut hpa_changes).await?;
        Ok::<_, Error>((applied, changes, hpa_changes))
    };
    let service_write = async {
        let mut changes = Vec::new();
        let services: Api<Service> = Api::namespaced(client.clone(), ns);
        apply_if_changed(&services, &service, live_service.as_ref(), &mut changes).await?;
        Ok::<_, Error>(changes)
    };
    let pdb_write = async {
        let mut changes = Vec::new();
        let pdbs: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), ns);
        apply_or_delete(&pdbs, fa, pdb.as_ref(), live_pdb.as_ref(), &mut changes).await?;
        Ok::<_, Error>(changes)
    };
    let ((deployment, deployment_changes, hpa_changes), service_changes, pdb_changes) =
        tokio::try_join!(workload, service_write, pdb_write)?;
    // In the order the children are listed everywhere else.
    changes.extend(deployment_changes);
    changes.extend(service_changes);
    changes.extend(hpa_changes);
    changes.extend(pdb_changes);
    Ok((deployment, changes))
}

/// True when `live` is already what `desired` asks for: same applied hash, and every field of
/// `desired` present in `live` with an equal value.
pub fn is_up_to_date<K: Resource + Serialize>(desired: &K, live: &K) -> bool {
    let hash = |k: &K| {
        k.meta()
            .annotations
            .as_ref()
            .and_then(|a| a.get(ANNOTATION_APPLIED_HASH).cloned())
    };
    if hash(desired).is_none() || hash(desired) != hash(live) {
        return false;
    }
    match (serde_json::to_value(desired), serde_json::to_value(live)) {
        (Ok(want), Ok(have)) => is_subset(&want, &have),
        _ => false,
    }
}

/// `want` is contained in `have`: objects by key (a key absent from `have` matches a null or
/// zero value in `want`), arrays element by element with equal length, scalars equal, and
/// quantities equal by value (the API server rewrites `1000m` as `1`).
pub fn is_subset(want: &Value, have: &Value) -> bool {
    match (want, have) {
        (Value::Object(w), Value::Object(h)) => w.iter().all(|(k, v)| match h.get(k) {
            Some(hv) => is_subset(v, hv),
            // The API server omits zero values (Go `omitempty`): `initialDelaySeconds: 0`
            // comes back absent.
            None => is_zero(v),
        }),
        (Value::Array(w), Value::Array(h)) => {
            w.len() == h.len() && w.iter().zip(h).all(|(a, b)| is_subset(a, b))
        }
        (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
        (Value::String(a), Value::String(b)) => {
            a == b || matches!((quantity(a), quantity(b)), (Some(x), Some(y)) if x == y)
        }
        (Value::String(a), Value::Number(b)) | (Value::Number(b), Value::String(a)) => {
            matches!((quantity(a), b.as_f64()), (Some(x), Some(y)) if x == y)
        }
        (a, b) => a == b,
    }
}

/// Null, 0, false, "" or an empty list/object: what Go's `omitempty` leaves out.
fn is_zero(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
    }
}

/// Value of a Kubernetes quantity (`250m`, `1`, `512Mi`, `1.5G`); `None` if it is not one.
fn quantity(s: &str) -> Option<f64> {
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(split);
    let number: f64 = number.parse().ok()?;
    let factor = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024.0_f64.powi(4),
        "Pi" => 1024.0_f64.powi(5),
        "Ei" => 1024.0_f64.powi(6),
        _ => return None,
    };
    Some(number * factor)
}

async fn apply_if_changed<K>(
    api: &Api<K>,
    desired: &K,
    live: Option<&K>,
    changes: &mut Vec<Change>,
) -> Result<K, Error>
where
    K: Resource<DynamicType = ()> + Clone + Serialize + DeserializeOwned + Debug,
{
    if let Some(live) = live
        && is_up_to_date(desired, live)
    {
        return Ok(live.clone());
    }
    let name = desired.name_any();
    tracing::info!(kind = %K::kind(&()), %name, "applying");
    let applied = api
        .patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(desired),
        )
        .await
        .map_err(Error::kube(format!("apply {} {name}", K::kind(&()))))?;
    changes.push(Change {
        action: if live.is_some() {
            ChangeAction::Updated
        } else {
            ChangeAction::Created
        },
        kind: K::kind(&()).into_owned(),
        name,
        reference: applied.object_ref(&()),
    });
    Ok(applied)
}

/// Applies `desired` when the spec wants the child, else deletes `live` if it is ours.
async fn apply_or_delete<K>(
    api: &Api<K>,
    fa: &FastAgentic,
    desired: Option<&K>,
    live: Option<&K>,
    changes: &mut Vec<Change>,
) -> Result<(), Error>
where
    K: Resource<DynamicType = ()> + Clone + Serialize + DeserializeOwned + Debug,
{
    match desired {
        Some(d) => apply_if_changed(api, d, live, changes).await.map(drop),
        None => delete_if_ours(api, fa, live, changes).await,
    }
}

/// Deletes `live` if it is controlled by `fa` (an object of the same name that someone else
/// created is left alone). A 404 means it is already gone.
async fn delete_if_ours<K>(
    api: &Api<K>,
    fa: &FastAgentic,
    live: Option<&K>,
    changes: &mut Vec<Change>,
) -> Result<(), Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
{
    let Some(live) = live else { return Ok(()) };
    if !controlled_by(live, fa) {
        return Ok(());
    }
    let name = live.name_any();
    tracing::info!(kind = %K::kind(&()), %name, "deleting, no longer wanted");
    match api.delete(&name, &DeleteParams::default()).await {
        Ok(_) => {
            changes.push(Change {
                action: ChangeAction::Deleted,
                kind: K::kind(&()).into_owned(),
                name,
                reference: live.object_ref(&()),
            });
            Ok(())
        }
        Err(kube::Error::Api(s)) if s.is_not_found() => Ok(()),
        Err(e) => Err(Error::kube(format!("delete {} {name}", K::kind(&())))(e)),
    }
}

/// True when `obj`'s controller owner reference is `fa`.
pub fn controlled_by<K: Resource>(obj: &K, fa: &FastAgentic) -> bool {
    obj.owner_references()
        .iter()
        .any(|o| o.controller == Some(true) && Some(&o.uid) == fa.metadata.uid.as_ref())
}

/// True when autoscaling was just turned on: we no longer send `spec.replicas`, but our field
/// manager still owns it. Dropping a field we alone own makes the API server remove it, and the
/// Deployment would fall back to 1 replica until the HPA reacts.
pub fn needs_replicas_handoff(desired: &Deployment, live: &Deployment) -> bool {
    let desired_has_replicas = desired.spec.as_ref().and_then(|s| s.replicas).is_some();
    !desired_has_replicas && manager_owns_replicas(live, FIELD_MANAGER)
}

/// True when `manager`'s apply entry in `managedFields` includes `spec.replicas`.
pub fn manager_owns_replicas(d: &Deployment, manager: &str) -> bool {
    d.metadata.managed_fields.iter().flatten().any(|m| {
        m.manager.as_deref() == Some(manager)
            && m.operation.as_deref() == Some("Apply")
            && m.fields_v1
                .as_ref()
                .is_some_and(|f| f.0.pointer("/f:spec/f:replicas").is_some())
    })
}

/// A new autoscaled Deployment is created at `minReplicas` (so it does not run 1 pod until the
/// HPA's first sync); in the same reconcile the count is handed over and our apply stops sending
/// it, exactly as a later reconcile would build it. So the next reconcile writes nothing, and
/// the HPA owns `spec.replicas` from the start.
async fn release_first_replicas(
    api: &Api<Deployment>,
    desired: &Deployment,
    created: Deployment,
) -> Result<Deployment, Error> {
    hand_off_replicas(api, &created).await?;
    // What the next reconcile builds for the existing Deployment: the same object without
    // `spec.replicas`, with its own applied hash.
    let mut without = desired.clone();
    if let Some(spec) = without.spec.as_mut() {
        spec.replicas = None;
    }
    crate::build::stamp_applied_hash(&mut without, "Deployment")?;
    // Reported as one change: the Deployment was created in this reconcile.
    let mut same_change = Vec::new();
    apply_if_changed(api, &without, Some(&created), &mut same_change).await
}

/// Applies the current `spec.replicas` under a second field manager, so the field stays owned
/// (and keeps its value) when our main apply stops sending it; the HPA's scale updates then take
/// it over.
async fn hand_off_replicas(api: &Api<Deployment>, live: &Deployment) -> Result<(), Error> {
    let name = live.name_any();
    let replicas = live.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let patch = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": { "name": name },
        "spec": { "replicas": replicas },
    });
    tracing::info!(%name, replicas, "handing spec.replicas over to the autoscaler");
    api.patch(
        &name,
        &PatchParams::apply(HANDOFF_FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(Error::kube(format!(
        "hand over spec.replicas of Deployment {name}"
    )))?;
    Ok(())
}
