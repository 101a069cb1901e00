//! One serving process: its tokio runtime, services, limiter, metrics and signal handling.
//! Used by single-process mode and by every pre-fork worker.

use std::net::TcpListener as StdTcpListener;
use std::num::NonZeroU32;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use prometheus_client::registry::Registry;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::Semaphore;

use super::http::{self, AppState, InFlight};
use super::serve::{self, ServeOptions};
use crate::config::RunArgs;
use crate::metrics::{Counters, PodCollector, SlotState};

/// How often a process refreshes its pool gauges in its metrics slot.
const POOL_METRICS_PERIOD: std::time::Duration = std::time::Duration::from_secs(1);

/// How this process was started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The only process.
    Single,
    /// A worker of a supervisor.
    Worker {
        /// Requests after which to ask for recycling (0 = never).
        request_budget: u64,
    },
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Single => "single",
            Role::Worker { .. } => "worker",
        }
    }
}

/// Threads of this process's async runtime: every core for a single process; for a worker, the
/// cores shared out among the `--workers` processes (at least one each), so that 2 workers on 2
/// cores run one thread each rather than two each, competing for the same cores.
fn runtime_threads(role: Role, workers: u32) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    match role {
        Role::Single => cores,
        Role::Worker { .. } => {
            let workers = usize::try_from(workers.max(1)).unwrap_or(usize::MAX);
            (cores / workers).max(1)
        }
    }
}

/// Serves on `listener` until SIGTERM/SIGINT, then drains. Exit status 0 after a drain
/// (even when the deadline cut requests: they are logged), 1 when start-up fails.
pub fn run(
    args: RunArgs,
    instance_id: String,
    listener: StdTcpListener,
    counters: Arc<Counters>,
    role: Role,
) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(runtime_threads(role, args.workers))
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(event = "startup_failed", error = %e, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(serve_process(args, instance_id, listener, counters, role));
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    code
}

/// Start-up, then serving until a signal, in named steps.
async fn serve_process(
    args: RunArgs,
    instance_id: String,
    listener: StdTcpListener,
    counters: Arc<Counters>,
    role: Role,
) -> ExitCode {
    let services = match start_services(&args, &instance_id, &counters).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(event = "startup_failed", instance_id = %instance_id, error = %e);
            return ExitCode::FAILURE;
        }
    };
    let listener = match into_async(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(event = "startup_failed", instance_id = %instance_id, error = %e);
            return ExitCode::FAILURE;
        }
    };
    let pools = services.pools.clone();
    let (state, app) = build_app(&args, &instance_id, &counters, services, role);
    let Some(signals) = install_signals() else {
        tracing::error!(
            event = "startup_failed",
            error = "cannot install signal handlers"
        );
        return ExitCode::FAILURE;
    };
    publish_pool_metrics(counters.clone(), pools);
    state.runs.start_sweeper();
    counters.set_state(SlotState::Ready);
    log_startup(&args, &state, &listener, role);
    let shutdown = drain_on_signal(signals, state.clone());
    let opts = ServeOptions {
        keep_alive: args.timeout_keep_alive,
        graceful: args.timeout_graceful,
    };
    let cut = serve::serve(listener, app, state.clone(), opts, shutdown).await;
    tracing::info!(
        event = "shutdown_complete",
        instance_id = %instance_id,
        pid = std::process::id(),
        requests_cut = cut,
    );
    ExitCode::SUCCESS
}

/// The worker's agent backend, pools, run store, readiness checks and extra routes.
async fn start_services(
    args: &RunArgs,
    instance_id: &str,
    counters: &Counters,
) -> anyhow::Result<crate::services::Services> {
    let worker = crate::services::WorkerContext {
        instance_id: instance_id.to_owned(),
        worker: counters.slot().unwrap_or(0),
    };
    crate::services::build_services(args, &worker).await
}

/// The (bound or inherited) listening socket, for tokio.
fn into_async(listener: StdTcpListener) -> std::io::Result<tokio::net::TcpListener> {
    listener.set_nonblocking(true)?;
    tokio::net::TcpListener::from_std(listener)
}

/// The application state (metrics registry, run store, limiter, recycling hook) and the
/// HTTP application over it.
fn build_app(
    args: &RunArgs,
    instance_id: &str,
    counters: &Arc<Counters>,
    services: crate::services::Services,
    role: Role,
) -> (Arc<AppState>, axum::Router) {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(PodCollector {
        counters: counters.clone(),
        instance_id: instance_id.to_owned(),
        max_concurrent: args.max_concurrent.0,
    }));
    let state = Arc::new(AppState {
        instance_id: instance_id.to_owned(),
        title: args.title.clone(),
        health_body: std::sync::OnceLock::new(),
        config_json: args.effective_json(),
        max_concurrent: args.max_concurrent.0,
        counters: counters.clone(),
        registry,
        draining: AtomicBool::new(false),
        runs: crate::runs::Runs {
            store: services.runs,
            agent: services.agent.clone(),
            instance_id: instance_id.to_owned(),
            counters: counters.clone(),
            wrap_up: Arc::new(tokio::sync::watch::Sender::new(false)),
            driving: Arc::default(),
            webhook: args
                .run_webhook_url
                .clone()
                .map(|url| Arc::new(crate::runs::Webhook::new(url))),
        },
        agent: services.agent,
        pools: services.pools,
        checks: services.checks,
        limiter: args
            .max_concurrent
            .0
            .map(|n| Arc::new(Semaphore::new(NonZeroU32::get(n) as usize))),
        in_flight: InFlight::default(),
        on_answered: recycle_hook(role, counters),
        stream_heartbeat: Some(args.stream_heartbeat).filter(|d| !d.is_zero()),
    });
    let app = http::app(
        state.clone(),
        services.routes,
        args.max_body_size,
        args.enable_test_routes,
    );
    (state, app)
}

/// A worker with a request budget asks the supervisor for its replacement (once) when it
/// has answered that many requests.
fn recycle_hook(role: Role, counters: &Arc<Counters>) -> Option<Box<dyn Fn(u64) + Send + Sync>> {
    let Role::Worker { request_budget } = role else {
        return None;
    };
    if request_budget == 0 {
        return None;
    }
    let asked = AtomicBool::new(false);
    let c = counters.clone();
    Some(Box::new(move |answered| {
        if answered >= request_budget && !asked.swap(true, Ordering::AcqRel) {
            tracing::info!(event = "worker_recycle_requested", requests = answered);
            c.set_state(SlotState::RecycleRequested);
        }
    }))
}

/// The signals that start the drain.
struct ShutdownSignals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

/// Installs the SIGTERM/SIGINT handlers, and one that logs and ignores SIGHUP.
fn install_signals() -> Option<ShutdownSignals> {
    let (Ok(term), Ok(int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return None;
    };
    // SIGHUP is the supervisor's (rolling restart); a serving process must not die of it.
    if let Ok(mut hup) = signal(SignalKind::hangup()) {
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                tracing::info!(event = "sighup_ignored", pid = std::process::id());
            }
        });
    }
    Some(ShutdownSignals { term, int })
}

/// Keeps the pool gauges in this process's slot current, idle or not, for the pod-wide view.
fn publish_pool_metrics(counters: Arc<Counters>, pools: crate::services::Pools) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(POOL_METRICS_PERIOD);
        loop {
            tick.tick().await;
            counters.set_pools(pools.metrics());
            counters.publish_now();
        }
    });
}

fn log_startup(args: &RunArgs, state: &AppState, listener: &tokio::net::TcpListener, role: Role) {
    let local_addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    tracing::info!(
        event = "startup",
        instance_id = %state.instance_id,
        role = role.name(),
        pid = std::process::id(),
        version = env!("CARGO_PKG_VERSION"),
        server = %args.server,
        address = %local_addr,
        workers = args.workers,
        max_concurrent = %args.max_concurrent,
        agent = state.agent.name(),
    );
}

/// Resolves at SIGTERM/SIGINT, once the process is marked draining (`/ready` answers 503,
/// the slot says so).
async fn drain_on_signal(signals: ShutdownSignals, state: Arc<AppState>) {
    let ShutdownSignals { mut term, mut int } = signals;
    let sig = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    state.draining.store(true, Ordering::Release);
    state.counters.set_state(SlotState::Draining);
    tracing::info!(
        event = "shutdown_started",
        instance_id = %state.instance_id,
        signal = sig,
        in_flight = state.counters.in_flight(),
    );
}
