//! The children as the controller's watches last saw them, so that a reconcile which has
//! nothing to write sends no request at all.
//!
//! The watches of the Deployments, Services, HPAs, PDBs and NetworkPolicies fill a reflector
//! store each (the object is stored before its event triggers the reconcile, so a reconcile
//! never sees an older child than the change that woke it). The reconcile reads the children
//! from here first; only the children they show as needing a write (missing, changed, to
//! delete, or `spec.replicas` to hand over) are read again with GET, and the writes are decided
//! on those, as they always were. Every write is therefore still decided on what the API server
//! has now; the cache saves the GETs of the children that need nothing (all of them in the
//! reconciles that change nothing: the Deployment status
//! updates, the resyncs, the echoes of our own writes.
//!
//! Stored children keep of their `managedFields` only what the `spec.replicas` hand-off reads:
//! whether our apply owns `spec.replicas`. Parsed field sets are the largest part of an object
//! in memory (about 40 of a Deployment's 60 KB), and the cache holds one object per child.

use std::sync::Arc;

use fastagentic_crd::FastAgentic;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::FieldsV1;
use kube::Resource;
use kube::runtime::reflector::{ObjectRef, Store};

use super::apply::{Live, Stale, controlled_by, is_up_to_date, needs_replicas_handoff};
use crate::FIELD_MANAGER;
use crate::build::Children;

/// Read handles on the stores of the four child kinds.
#[derive(Clone)]
pub struct ChildCache {
    /// Deployments with our label.
    pub deployments: Store<Deployment>,
    /// Services with our label.
    pub services: Store<Service>,
    /// HPAs with our label.
    pub hpas: Store<HorizontalPodAutoscaler>,
    /// PDBs with our label.
    pub pdbs: Store<PodDisruptionBudget>,
    /// NetworkPolicies with our label.
    pub network_policies: Store<NetworkPolicy>,
}

fn cached<K>(store: &Store<K>, ns: &str, name: &str) -> Option<K>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope> + Clone + 'static,
{
    store
        .get(&ObjectRef::new(name).within(ns))
        .map(Arc::unwrap_or_clone)
}

impl ChildCache {
    /// The children named `name` in `ns` as last watched.
    pub fn live(&self, ns: &str, name: &str) -> Live {
        Live {
            deployment: cached(&self.deployments, ns, name),
            service: cached(&self.services, ns, name),
            hpa: cached(&self.hpas, ns, name),
            pdb: cached(&self.pdbs, ns, name),
            network_policy: cached(&self.network_policies, ns, name),
        }
    }
}

/// Reduces `managedFields` to what [`needs_replicas_handoff`] reads, before the object is
/// stored: our apply's entry, with its field set cut down to `spec.replicas` when it owns it;
/// every other entry and field is dropped.
pub fn keep_own_managed_fields<K: Resource>(obj: &mut K) {
    let Some(fields) = obj.meta_mut().managed_fields.as_mut() else {
        return;
    };
    fields.retain(|m| m.manager.as_deref() == Some(FIELD_MANAGER));
    for entry in fields.iter_mut() {
        let owns_replicas = entry
            .fields_v1
            .as_ref()
            .is_some_and(|f| f.0.pointer("/f:spec/f:replicas").is_some());
        entry.fields_v1 =
            owns_replicas.then(|| FieldsV1(serde_json::json!({"f:spec": {"f:replicas": {}}})));
    }
}

/// The children [`super::apply::apply_children`] would write given `live`: a wanted child
/// missing or not up to date, an unwanted child of `fa`'s still there, or (the Deployment)
/// `spec.replicas` to hand over. None means applying `children` to `live` is a no-op.
pub fn writes_needed(children: &Children, live: &Live, fa: &FastAgentic) -> Stale {
    fn stale<K: Resource + serde::Serialize>(desired: &K, live: Option<&K>) -> bool {
        !live.is_some_and(|l| is_up_to_date(desired, l))
    }
    fn wanted_or_gone<K: Resource + serde::Serialize>(
        desired: Option<&K>,
        live: Option<&K>,
        fa: &FastAgentic,
    ) -> bool {
        match desired {
            Some(d) => stale(d, live),
            // Unwanted, and still there as ours: to delete.
            None => live.is_some_and(|l| controlled_by(l, fa)),
        }
    }
    let handoff = live
        .deployment
        .as_ref()
        .is_some_and(|l| needs_replicas_handoff(&children.deployment, l));
    Stale {
        deployment: handoff || stale(&children.deployment, live.deployment.as_ref()),
        service: stale(&children.service, live.service.as_ref()),
        hpa: wanted_or_gone(children.hpa.as_ref(), live.hpa.as_ref(), fa),
        pdb: wanted_or_gone(children.pdb.as_ref(), live.pdb.as_ref(), fa),
        network_policy: wanted_or_gone(
            children.network_policy.as_ref(),
            live.network_policy.as_ref(),
            fa,
        ),
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::apps::v1::Deployment;
    use serde_json::json;

    use super::*;
    use crate::controller::{HANDOFF_FIELD_MANAGER, manager_owns_replicas};

    fn deployment(managed: serde_json::Value) -> Deployment {
        serde_json::from_value(json!({
            "metadata": {"name": "agent", "namespace": "ns", "managedFields": managed},
            "spec": {"selector": {}, "template": {}},
        }))
        .unwrap_or_default()
    }

    fn entry(manager: &str, fields: serde_json::Value) -> serde_json::Value {
        json!({"manager": manager, "operation": "Apply", "apiVersion": "apps/v1",
               "fieldsType": "FieldsV1", "fieldsV1": fields})
    }

    #[test]
    fn stored_objects_keep_only_whether_we_own_replicas() {
        let big = json!({"f:metadata": {"f:labels": {"f:a": {}}},
                         "f:spec": {"f:replicas": {}, "f:template": {"f:spec": {"f:containers": {}}}}});
        let mut d = deployment(json!([
            entry(FIELD_MANAGER, big),
            entry(HANDOFF_FIELD_MANAGER, json!({"f:spec": {"f:replicas": {}}})),
            {"manager": "kube-controller-manager", "operation": "Update", "subresource": "status",
             "fieldsType": "FieldsV1", "fieldsV1": {"f:status": {"f:replicas": {}}}},
        ]));
        assert!(manager_owns_replicas(&d, FIELD_MANAGER));
        keep_own_managed_fields(&mut d);
        assert!(
            manager_owns_replicas(&d, FIELD_MANAGER),
            "the hand-off still sees it"
        );
        let kept = d.metadata.managed_fields.clone().unwrap_or_default();
        assert_eq!(kept.len(), 1, "{kept:?}");
        assert_eq!(
            kept[0].fields_v1.as_ref().map(|f| f.0.clone()),
            Some(json!({"f:spec": {"f:replicas": {}}}))
        );

        // Our apply without spec.replicas (the HPA owns it): nothing of the field set is kept,
        // and the hand-off is not asked for.
        let mut d = deployment(json!([
            entry(FIELD_MANAGER, json!({"f:spec": {"f:template": {}}})),
            entry(HANDOFF_FIELD_MANAGER, json!({"f:spec": {"f:replicas": {}}})),
        ]));
        keep_own_managed_fields(&mut d);
        assert!(!manager_owns_replicas(&d, FIELD_MANAGER));
        let kept = d.metadata.managed_fields.clone().unwrap_or_default();
        assert_eq!(kept.len(), 1);
        assert!(kept[0].fields_v1.is_none());
    }
}
