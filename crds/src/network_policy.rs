//! `spec.networkPolicy`: who may reach the agent pods, as a NetworkPolicy the operator keeps.

use k8s_openapi::api::networking::v1::{NetworkPolicyEgressRule, NetworkPolicyPeer};
use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// A NetworkPolicy for the agent pods (networking.k8s.io/v1), named after the resource. It
/// admits traffic to the agent port (`spec.port`, TCP) only from the sources in `from`, plus the
/// FastAgentic operator's own pods when `autoscaling.targetConcurrencyUtilizationPercentage` is
/// set (the operator reads each pod's `/metrics` on that port). Every other port and source is
/// refused. The kubelet's liveness, readiness and startup probes need no rule: NetworkPolicy
/// always allows traffic from the pod's own node. Egress is not restricted unless `egress` is
/// given. Enforcement needs a network plugin that implements NetworkPolicy (Calico, Cilium,
/// Antrea, ...); without one the object is created and has no effect. Removing this field
/// deletes the NetworkPolicy.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NetworkPolicySpec {
    /// Sources admitted to the agent port, as in a NetworkPolicy ingress rule's `from`: each
    /// peer is a `namespaceSelector` (`{}` selects every namespace; the label
    /// `kubernetes.io/metadata.name` selects one by name), a `podSelector` (pods in the
    /// resource's namespace, or in the selected namespaces when both are given), or an `ipBlock`
    /// (addresses outside the cluster, such as a load balancer's). At least one peer; a source
    /// matching any peer is admitted. At most 64 peers (a bound the CEL rules' cost needs).
    #[schemars(length(min = 1, max = 64))]
    #[x_kube(
        validation = Rule::new("self.all(p, has(p.namespaceSelector) || has(p.podSelector) || has(p.ipBlock))")
            .message("spec.networkPolicy.from: each peer needs a namespaceSelector, a podSelector or an ipBlock")
            .reason(Reason::FieldValueRequired),
        validation = Rule::new("self.all(p, !has(p.ipBlock) || !(has(p.namespaceSelector) || has(p.podSelector)))")
            .message("spec.networkPolicy.from: a peer with an ipBlock cannot also have a namespaceSelector or a podSelector")
            .reason(Reason::FieldValueForbidden),
    )]
    pub from: Vec<NetworkPolicyPeer>,

    /// Outgoing traffic the pods may send, as NetworkPolicy egress rules (remember DNS: port 53
    /// UDP and TCP to the cluster's DNS). Unset: egress is not restricted (the policy's
    /// `policyTypes` is `Ingress` only). An empty list refuses all egress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress: Option<Vec<NetworkPolicyEgressRule>>,
}
