//! The FastAgentic operator as a library: the binary (`main.rs`) is a thin command line over it,
//! and the integration tests (golden files, mocked API server) call it directly.
//!
//! The parts, in the order a reconcile uses them:
//!
//! - [`build`]: pure functions from a `FastAgentic` to the objects it needs (`validate`, then one
//!   builder per child). No I/O; `render` and the controller call the same functions.
//! - [`controller`]: the kube-runtime controller: reads the referenced Secrets and the live
//!   children, applies what differs with server-side apply, deletes what is no longer wanted,
//!   writes status and Events.
//! - [`render`]: the offline `render` subcommand (YAML in, the objects the operator would apply
//!   out), including the CRD's schema and CEL checks.
//! - [`leader`], [`metrics`], [`server`]: leader election on a Lease, Prometheus metrics, and
//!   the health/metrics HTTP endpoints of `fastagentic-operator run`.
//! - [`metrics_api`]: the `custom.metrics.k8s.io` API (concurrency utilization scraped from the
//!   pods) and the pods' deletion costs, served and written by the leader.

#![forbid(unsafe_code)]

pub mod build;
pub mod controller;
pub mod labels;
pub mod leader;
pub mod metrics;
pub mod metrics_api;
pub mod render;
pub mod server;

/// Server-side apply field manager of every object the operator writes: the children, the
/// FastAgentic status and the metrics API's EndpointSlice.
pub const FIELD_MANAGER: &str = "fastagentic-operator";
