//! What a worker process serves besides the built-in routes: the agent backend, readiness
//! checks and extra routes. [`build_services`] is the one place that wires backends in.

use std::sync::Arc;

use async_trait::async_trait;

use crate::agent::{Agent, EchoAgent};
use crate::config::RunArgs;

/// A dependency `/ready` checks (a store ping, for one). `/ready` answers 503 when any
/// check returns `false` or takes longer than [`crate::server::http::READY_CHECK_TIMEOUT`].
#[async_trait]
pub trait ReadinessCheck: Send + Sync + 'static {
    /// Key in the `checks` object of `/ready`.
    fn name(&self) -> &'static str;
    /// Whether the dependency is usable now.
    async fn check(&self) -> bool;
}

/// The per-worker services the HTTP layer is built from.
pub struct Services {
    /// Backend behind `POST /chat` and `POST /chat/stream`.
    pub agent: Arc<dyn Agent>,
    /// Checks reported by `/ready`.
    pub checks: Vec<Arc<dyn ReadinessCheck>>,
    /// Extra routes, served behind the concurrency limit and body limit like `/chat`.
    pub routes: axum::Router,
}

/// The in-process durable store of the core runtime: always ready.
#[derive(Debug)]
pub struct MemoryStoreCheck;

#[async_trait]
impl ReadinessCheck for MemoryStoreCheck {
    fn name(&self) -> &'static str {
        "durable_store"
    }
    async fn check(&self) -> bool {
        true
    }
}

/// Builds the services of one worker process (called once per process, inside its
/// runtime, so pools created here are per worker).
pub async fn build_services(args: &RunArgs) -> anyhow::Result<Services> {
    Ok(Services {
        agent: Arc::new(EchoAgent {
            delay: std::time::Duration::from_millis(args.echo_delay_ms),
        }),
        checks: vec![Arc::new(MemoryStoreCheck)],
        routes: axum::Router::new(),
    })
}
