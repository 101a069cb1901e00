//! NetworkPolicy builder tests: the production example, small inline resources, and the
//! operator peer with and without a concurrency target.

use fastagentic_crd::FastAgentic;
use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicyPeer};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::super::{BuildInputs, Children, build_children, validate};
use super::LABEL_NAMESPACE_NAME;
use crate::build::{ANNOTATION_APPLIED_HASH, OperatorPods};
use crate::labels::{LABEL_MANAGED_BY, selector_labels, standard_labels};

const PROD_LARGE: &str = include_str!("../../../../examples/production-large.yaml");

fn load(yaml: &str) -> FastAgentic {
    let mut docs = crate::render::parse(yaml).expect("test resource must be admitted");
    assert_eq!(docs.len(), 1, "one document per test resource");
    docs.remove(0)
}

fn inline_yaml(spec: &str) -> String {
    format!(
        "apiVersion: fastagentic.io/v1alpha1\nkind: FastAgentic\nmetadata:\n  name: agent\n  \
         namespace: team\n  uid: 0d9f6c1e-0000-4000-8000-000000000001\nspec:\n  image: agent:1\n{spec}"
    )
}

fn inline(spec: &str) -> FastAgentic {
    load(&inline_yaml(spec))
}

fn children(fa: &FastAgentic, inputs: &BuildInputs) -> Children {
    let v = validate(fa).expect("test resource must validate");
    build_children(&v, inputs).expect("build must succeed")
}

fn operator_in(namespace: &str, labels: &[(&str, &str)]) -> BuildInputs {
    BuildInputs {
        operator: OperatorPods {
            namespace: Some(namespace.into()),
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
                .collect(),
        },
        ..BuildInputs::default()
    }
}

fn selector(labels: &[(&str, &str)]) -> Option<LabelSelector> {
    Some(LabelSelector {
        match_labels: Some(
            labels
                .iter()
                .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
                .collect(),
        ),
        ..Default::default()
    })
}

fn namespace_peer(ns: &str) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        namespace_selector: selector(&[(LABEL_NAMESPACE_NAME, ns)]),
        ..Default::default()
    }
}

/// The peers of the one ingress rule, after checking it admits only the agent port over TCP.
fn peers(np: &NetworkPolicy, port: i32) -> Vec<NetworkPolicyPeer> {
    let spec = np.spec.as_ref().expect("spec");
    let rules = spec.ingress.as_ref().expect("ingress rules");
    assert_eq!(rules.len(), 1, "one ingress rule: {rules:?}");
    let ports = rules[0].ports.as_ref().expect("ports");
    assert_eq!(ports.len(), 1);
    assert_eq!(ports[0].port, Some(IntOrString::Int(port)));
    assert_eq!(ports[0].protocol.as_deref(), Some("TCP"));
    assert_eq!(ports[0].end_port, None);
    rules[0].from.clone().expect("from")
}

fn policy_types(np: &NetworkPolicy) -> Vec<String> {
    np.spec
        .as_ref()
        .and_then(|s| s.policy_types.clone())
        .unwrap_or_default()
}

#[test]
fn no_field_no_policy() {
    let c = children(&inline("  replicas: 2\n"), &operator_in("ops", &[]));
    assert_eq!(c.network_policy, None);
}

#[test]
fn production_example_admits_its_peers_and_the_operator_on_the_agent_port() {
    let fa = load(PROD_LARGE);
    let inputs = operator_in(
        "fastagentic-system",
        &[
            ("app.kubernetes.io/name", "fastagentic-operator"),
            ("app.kubernetes.io/instance", "fastagentic-operator"),
        ],
    );
    let c = children(&fa, &inputs);
    let np = c.network_policy.as_ref().expect("a NetworkPolicy");
    assert_eq!(np.metadata.name.as_deref(), Some("agent-production-large"));
    let mut labels = np.metadata.labels.clone().expect("labels");
    assert_eq!(
        labels.remove(LABEL_MANAGED_BY).as_deref(),
        Some("fastagentic-operator")
    );
    let mut want_labels = standard_labels("agent-production-large");
    want_labels.remove(LABEL_MANAGED_BY);
    assert_eq!(labels, want_labels);
    let spec = np.spec.as_ref().expect("spec");
    // The pods it protects are exactly the Deployment's.
    let deployment_selector = c
        .deployment
        .spec
        .as_ref()
        .map(|s| s.selector.clone())
        .expect("deployment selector");
    assert_eq!(spec.pod_selector.as_ref(), Some(&deployment_selector));
    assert_eq!(
        spec.pod_selector
            .as_ref()
            .and_then(|s| s.match_labels.clone()),
        Some(selector_labels("agent-production-large"))
    );
    assert_eq!(
        peers(np, 8000),
        vec![
            namespace_peer("ingress-nginx"),
            NetworkPolicyPeer {
                pod_selector: selector(&[("role", "agent-client")]),
                ..Default::default()
            },
            NetworkPolicyPeer {
                namespace_selector: selector(&[(LABEL_NAMESPACE_NAME, "fastagentic-system")]),
                pod_selector: selector(&[
                    ("app.kubernetes.io/instance", "fastagentic-operator"),
                    ("app.kubernetes.io/name", "fastagentic-operator"),
                ]),
                ip_block: None,
            },
        ],
        "the example's two peers, then the operator (the example scales on concurrency)"
    );
    // The example restricts egress: both policy types, its rules as given.
    assert_eq!(policy_types(np), vec!["Ingress", "Egress"]);
    let egress = spec.egress.as_ref().expect("egress rules");
    assert_eq!(
        Some(egress),
        fa.spec
            .network_policy
            .as_ref()
            .and_then(|n| n.egress.as_ref())
    );
    assert_eq!(egress.len(), 2);
    assert!(
        np.metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(ANNOTATION_APPLIED_HASH)),
        "stamped like every child"
    );
}

#[test]
fn render_leaves_the_operator_out_when_it_does_not_know_where_it_runs() {
    let c = children(&load(PROD_LARGE), &BuildInputs::default());
    let np = c.network_policy.expect("a NetworkPolicy");
    assert_eq!(
        peers(&np, 8000).len(),
        2,
        "only the example's own peers without an operator namespace"
    );
}

#[test]
fn without_a_concurrency_target_the_operator_is_not_admitted_and_egress_is_open() {
    let fa = inline(
        "  port: 9000\n  replicas: 2\n  networkPolicy:\n    from:\n      - namespaceSelector: {}\n",
    );
    let c = children(&fa, &operator_in("ops", &[("app", "op")]));
    let np = c.network_policy.expect("a NetworkPolicy");
    assert_eq!(np.metadata.namespace.as_deref(), Some("team"));
    let owner = np
        .metadata
        .owner_references
        .as_ref()
        .and_then(|o| o.first())
        .expect("owner reference");
    assert_eq!(owner.kind, "FastAgentic");
    assert_eq!(owner.controller, Some(true));
    assert_eq!(
        peers(&np, 9000),
        vec![NetworkPolicyPeer {
            namespace_selector: Some(LabelSelector::default()),
            ..Default::default()
        }],
        "the agent port follows spec.port; nobody scrapes the pods, so no operator peer"
    );
    assert_eq!(policy_types(&np), vec!["Ingress"], "egress not restricted");
    assert_eq!(np.spec.as_ref().and_then(|s| s.egress.clone()), None);
}

#[test]
fn an_empty_egress_list_refuses_all_egress() {
    let fa = inline(
        "  networkPolicy:\n    from:\n      - podSelector: {matchLabels: {a: b}}\n    egress: []\n",
    );
    let np = children(&fa, &BuildInputs::default())
        .network_policy
        .expect("a NetworkPolicy");
    assert_eq!(policy_types(&np), vec!["Ingress", "Egress"]);
    assert_eq!(
        np.spec.as_ref().and_then(|s| s.egress.clone()),
        Some(vec![])
    );
}

const CONCURRENCY: &str = "  maxConcurrent: 10\n  autoscaling:\n    maxReplicas: 4\n    \
                           targetConcurrencyUtilizationPercentage: 60\n";

#[test]
fn the_operator_peer_is_its_namespace_narrowed_to_its_labels_when_known() {
    let fa = inline(&format!(
        "{CONCURRENCY}  networkPolicy:\n    from:\n      - ipBlock: {{cidr: 203.0.113.0/24}}\n"
    ));
    let without_labels = children(&fa, &operator_in("ops", &[]))
        .network_policy
        .expect("a NetworkPolicy");
    assert_eq!(peers(&without_labels, 8000)[1], namespace_peer("ops"));
    let with_labels = children(&fa, &operator_in("ops", &[("app", "op")]))
        .network_policy
        .expect("a NetworkPolicy");
    let operator = &peers(&with_labels, 8000)[1];
    assert_eq!(operator.pod_selector, selector(&[("app", "op")]));
    assert_ne!(
        without_labels.metadata.annotations, with_labels.metadata.annotations,
        "the applied hash follows the operator's labels, so a changed chart re-applies"
    );
}

#[test]
fn a_peer_the_user_already_lists_is_not_repeated() {
    let fa = inline(&format!(
        "{CONCURRENCY}  networkPolicy:\n    from:\n      - namespaceSelector:\n          \
         matchLabels: {{kubernetes.io/metadata.name: ops}}\n"
    ));
    let np = children(&fa, &operator_in("ops", &[]))
        .network_policy
        .expect("a NetworkPolicy");
    assert_eq!(peers(&np, 8000), vec![namespace_peer("ops")]);
}

#[test]
fn bad_cidrs_are_refused_naming_the_field() {
    let refused = |policy: &str| {
        // Read without `render`'s checks, which already run `validate`.
        let fa: FastAgentic =
            serde_saphyr::from_str(&inline_yaml(&format!("  networkPolicy:\n{policy}")))
                .expect("a FastAgentic");
        let err = validate(&fa).expect_err("must be refused");
        (err.field, err.message)
    };
    let (field, message) =
        refused("    from:\n      - podSelector: {}\n      - ipBlock: {cidr: 10.0.0.0}\n");
    assert_eq!(field, "spec.networkPolicy.from[1].ipBlock.cidr");
    assert!(message.contains("\"10.0.0.0\" is not a CIDR"), "{message}");
    let (field, _) = refused("    from:\n      - ipBlock: {cidr: 10.0.0.0/33}\n");
    assert_eq!(field, "spec.networkPolicy.from[0].ipBlock.cidr");
    let (field, message) = refused(
        "    from:\n      - podSelector: {}\n    egress:\n      - to:\n          - ipBlock: \
         {cidr: 10.0.0.0/8, except: [10.1.0.0/x]}\n",
    );
    assert_eq!(
        field,
        "spec.networkPolicy.egress[0].to[0].ipBlock.except[0]"
    );
    assert!(message.contains("10.1.0.0/x"), "{message}");
    // Both families, at their longest prefixes, are fine.
    let fa = inline(
        "  networkPolicy:\n    from:\n      - ipBlock: {cidr: 192.0.2.1/32, except: []}\n      \
         - ipBlock: {cidr: '2001:db8::/128'}\n",
    );
    validate(&fa).expect("valid CIDRs");
}

#[test]
fn only_the_network_policy_child_depends_on_where_the_operator_runs() {
    let fa = load(PROD_LARGE);
    let here = children(&fa, &operator_in("a", &[]));
    let there = children(&fa, &operator_in("b", &[]));
    assert_eq!(here.deployment, there.deployment, "no pod roll");
    assert_eq!(here.service, there.service);
    assert_ne!(here.network_policy, there.network_policy);
}
