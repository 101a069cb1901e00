//! Names, label keys and annotation keys shared by the builders, the controller and the tests.

/// Server-side apply field manager for every object the operator writes (children and status).
pub const FIELD_MANAGER: &str = "fastagentic-operator";

/// Field manager used once, when autoscaling is turned on, to keep `spec.replicas` owned by
/// someone while the operator stops sending it (see `controller::apply`).
pub const HANDOFF_FIELD_MANAGER: &str = "fastagentic-operator-replicas-handoff";

/// Name of the agent container in the pod template.
pub const CONTAINER_NAME: &str = "agent";
/// Name of the container port and of the Service port.
pub const PORT_NAME: &str = "http";
/// The default container command.
pub const DEFAULT_COMMAND: [&str; 2] = ["fastagentic", "run"];

/// `app.kubernetes.io/name`.
pub const LABEL_NAME: &str = "app.kubernetes.io/name";
/// `app.kubernetes.io/instance`.
pub const LABEL_INSTANCE: &str = "app.kubernetes.io/instance";
/// `app.kubernetes.io/managed-by`.
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// `app.kubernetes.io/part-of`.
pub const LABEL_PART_OF: &str = "app.kubernetes.io/part-of";
/// `app.kubernetes.io/component`.
pub const LABEL_COMPONENT: &str = "app.kubernetes.io/component";

/// Value of `app.kubernetes.io/name` and `app.kubernetes.io/part-of`.
pub const APP_NAME: &str = "fastagentic";
/// Value of `app.kubernetes.io/managed-by`.
pub const MANAGED_BY: &str = "fastagentic-operator";
/// Value of `app.kubernetes.io/component`.
pub const COMPONENT: &str = "agent-server";

/// Pod-template annotation: hash of everything that should roll the pods, including the
/// resourceVersions of the referenced Secrets.
pub const ANNOTATION_CONFIG_HASH: &str = "fastagentic.io/config-hash";
/// Annotation on every child: hash of the object the operator applied. A reconcile whose desired
/// object has the same hash as the live one (and whose fields are still in place) writes nothing.
pub const ANNOTATION_APPLIED_HASH: &str = "fastagentic.io/applied-hash";

/// Seconds added to `timeouts.gracefulShutdownSeconds` for the pod's
/// `terminationGracePeriodSeconds`: the server gets its full graceful window to drain, plus
/// time for the readiness probe to take it out of the Service and for the process to exit,
/// before the kubelet sends SIGKILL.
pub const TERMINATION_GRACE_EXTRA_SECONDS: i64 = 10;

/// User and group the pods run as (the conventional "nonroot" id of distroless images).
pub const RUN_AS_USER: i64 = 65532;
