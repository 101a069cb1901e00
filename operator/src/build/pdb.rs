//! The PodDisruptionBudget (policy/v1).

use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{Validated, child_meta};
use crate::labels::selector_labels;

/// The PDB when `spec.disruptionBudget` is set and at least 2 pods are possible (with one pod a
/// budget either blocks every node drain or protects nothing). `maxUnavailable: 1` unless the
/// user chose `maxUnavailable` or `minAvailable`.
pub fn build_pdb(v: &Validated<'_>) -> Option<PodDisruptionBudget> {
    let spec = &v.fa().spec;
    let budget = spec.disruption_budget.as_ref()?;
    if spec.max_pods() < 2 {
        return None;
    }
    let (max_unavailable, min_available) = match (&budget.max_unavailable, &budget.min_available) {
        (None, None) => (Some(IntOrString::Int(1)), None),
        (max, min) => (max.clone(), min.clone()),
    };
    Some(PodDisruptionBudget {
        metadata: child_meta(v, None),
        spec: Some(PodDisruptionBudgetSpec {
            selector: Some(LabelSelector {
                match_labels: Some(selector_labels(v.name())),
                ..Default::default()
            }),
            max_unavailable,
            min_available,
            ..Default::default()
        }),
        status: None,
    })
}
