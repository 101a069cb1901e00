//! The PodDisruptionBudget (policy/v1).

use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use super::{DisruptionBudget, Validated, child_meta};
use crate::labels::selector_labels;

/// The PDB when [`validate`](super::validate) kept a disruption budget (`spec.disruptionBudget`
/// set and at least 2 pods possible).
pub fn build_pdb(v: &Validated<'_>) -> Option<PodDisruptionBudget> {
    let DisruptionBudget {
        max_unavailable,
        min_available,
    } = v.disruption_budget()?.clone();
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
