//! The NetworkPolicy (networking.k8s.io/v1) of `spec.networkPolicy`.
//!
//! One ingress rule: the agent port (`spec.port`, TCP, the number the container declares, so
//! network plugins without named-port support enforce it too) from the user's peers, plus the
//! operator's own pods when the operator scrapes the agent pods (a concurrency target: the
//! leader reads each pod's `/metrics` on the agent port for the `custom.metrics.k8s.io` API).
//! No rule for the kubelet's probes: NetworkPolicy always admits traffic from the pod's own
//! node. Egress is left out of `policyTypes`, so not restricted, unless the spec gives rules.

use std::collections::BTreeMap;
use std::net::IpAddr;

use fastagentic_crd::NetworkPolicySpec as UserPolicy;
use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{BuildInputs, SpecError, Validated, child_meta};
use crate::labels::selector_labels;

/// The label every namespace carries with its own name (set by the API server since 1.21).
pub const LABEL_NAMESPACE_NAME: &str = "kubernetes.io/metadata.name";

/// `spec.networkPolicy` with the operator's decision made.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentNetworkPolicy<'a> {
    /// The user's peers and egress rules.
    pub spec: &'a UserPolicy,
    /// Whether the operator's pods are admitted too: only when the operator scrapes the pods
    /// (`autoscaling.targetConcurrencyUtilizationPercentage` is set).
    pub admit_operator: bool,
}

/// Where the operator's own pods run, so the NetworkPolicy can admit them. The controller fills
/// it from `--pod-namespace` and `--pod-labels` (the chart sets both); `render` knows neither.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OperatorPods {
    /// The operator's namespace; `None` leaves the operator out of every NetworkPolicy.
    pub namespace: Option<String>,
    /// Labels that select the operator's pods in that namespace; empty admits every pod of the
    /// namespace (what a namespace without other workloads, such as the chart's, amounts to).
    pub labels: BTreeMap<String, String>,
}

impl OperatorPods {
    /// The NetworkPolicy peer that selects the operator's pods, if the namespace is known.
    pub fn peer(&self) -> Option<NetworkPolicyPeer> {
        let namespace = self.namespace.as_ref()?;
        Some(NetworkPolicyPeer {
            namespace_selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([(
                    LABEL_NAMESPACE_NAME.to_string(),
                    namespace.clone(),
                )])),
                ..Default::default()
            }),
            pod_selector: (!self.labels.is_empty()).then(|| LabelSelector {
                match_labels: Some(self.labels.clone()),
                ..Default::default()
            }),
            ip_block: None,
        })
    }
}

/// The NetworkPolicy when `spec.networkPolicy` is set: selects the resource's pods (the
/// Deployment's selector), admits the peers (and the operator, see [`AgentNetworkPolicy`]) to
/// the agent port only, and restricts egress only when rules are given.
pub fn build_network_policy(v: &Validated<'_>, inputs: &BuildInputs) -> Option<NetworkPolicy> {
    let AgentNetworkPolicy {
        spec,
        admit_operator,
    } = v.network_policy()?;
    let mut from = spec.from.clone();
    if *admit_operator
        && let Some(peer) = inputs.operator.peer()
        && !from.contains(&peer)
    {
        from.push(peer);
    }
    let mut policy_types = vec!["Ingress".to_string()];
    if spec.egress.is_some() {
        policy_types.push("Egress".to_string());
    }
    Some(NetworkPolicy {
        metadata: child_meta(v, None),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(selector_labels(v.name())),
                ..Default::default()
            }),
            ingress: Some(vec![NetworkPolicyIngressRule {
                from: Some(from),
                ports: Some(vec![NetworkPolicyPort {
                    port: Some(IntOrString::Int(v.fa().spec.port)),
                    protocol: Some("TCP".into()),
                    end_port: None,
                }]),
            }]),
            egress: spec.egress.clone(),
            policy_types: Some(policy_types),
        }),
    })
}

/// What the CRD's schema cannot check in `spec.networkPolicy`: every `ipBlock` CIDR (and its
/// `except` entries) must be an address and prefix length. The API server would refuse the
/// NetworkPolicy otherwise; refusing here names the field before anything is applied.
pub(super) fn check_cidrs(policy: &UserPolicy) -> Result<(), SpecError> {
    let blocks =
        policy
            .from
            .iter()
            .enumerate()
            .map(|(i, p)| (format!("spec.networkPolicy.from[{i}]"), p))
            .chain(
                policy
                    .egress
                    .iter()
                    .flatten()
                    .enumerate()
                    .flat_map(|(i, rule)| {
                        rule.to.iter().flatten().enumerate().map(move |(j, p)| {
                            (format!("spec.networkPolicy.egress[{i}].to[{j}]"), p)
                        })
                    }),
            );
    for (field, peer) in blocks {
        let Some(IPBlock { cidr, except }) = &peer.ip_block else {
            continue;
        };
        if !is_cidr(cidr) {
            return Err(SpecError::new(
                format!("{field}.ipBlock.cidr"),
                format!("{cidr:?} is not a CIDR such as 10.0.0.0/16 or 2001:db8::/32"),
            ));
        }
        for (k, e) in except.iter().flatten().enumerate() {
            if !is_cidr(e) {
                return Err(SpecError::new(
                    format!("{field}.ipBlock.except[{k}]"),
                    format!("{e:?} is not a CIDR such as 10.0.1.0/24"),
                ));
            }
        }
    }
    Ok(())
}

/// `ADDRESS/PREFIX` with a prefix length that fits the address family.
fn is_cidr(s: &str) -> bool {
    let Some((addr, prefix)) = s.split_once('/') else {
        return false;
    };
    let Ok(prefix) = prefix.parse::<u8>() else {
        return false;
    };
    match addr.parse::<IpAddr>() {
        Ok(IpAddr::V4(_)) => prefix <= 32,
        Ok(IpAddr::V6(_)) => prefix <= 128,
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests;
