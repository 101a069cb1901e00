//! `fastagentic-operator`: the FastAgentic operator's command line.
//!
//! - `run` reconciles FastAgentic resources (the operator itself).
//! - `render -f FILE|-` prints the objects the operator would apply, without a cluster.
//! - `crd` prints the CustomResourceDefinition generated from the Rust types.
//!
//! Every `run` flag can also be given as an environment variable `FASTAGENTIC_OPERATOR_<FLAG>`
//! (for example `FASTAGENTIC_OPERATOR_LEADER_ELECT=true`); a flag wins over its variable.

#![forbid(unsafe_code)]

// mimalloc instead of the C library's allocator, as in the runtime: the static image's musl
// malloc is slow under the many small allocations of watch events and JSON, and holds more
// memory after a burst (bench/README.md, "Operator at scale").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::RwLock;
use std::time::Duration;

use clap::{ArgAction, Parser, Subcommand, ValueEnum};
use fastagentic_operator::build::OperatorPods;
use fastagentic_operator::controller::writes::CountWrites;
use fastagentic_operator::controller::{self, Context, Scope};
use fastagentic_operator::labels::parse_label_list;
use fastagentic_operator::leader::{self, LeaseConfig};
use fastagentic_operator::metrics::Metrics;
use fastagentic_operator::metrics_api::auth::FrontProxy;
use fastagentic_operator::metrics_api::scrape::ScrapeConfig;
use fastagentic_operator::metrics_api::{self, ApiState, LeaderConfig, ServeConfig};
use fastagentic_operator::render;
use fastagentic_operator::server::{self, Readiness};
use k8s_openapi::api::coordination::v1::Lease;
use kube::client::ClientBuilder;
use kube::runtime::reflector;
use kube::{Api, Client};
use tokio::sync::watch;

/// Runs FastAgentic agent servers on Kubernetes.
#[derive(Parser, Debug)]
#[command(name = "fastagentic-operator", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print the FastAgentic CustomResourceDefinition as YAML.
    Crd,
    /// Print, as YAML, the objects the operator would apply for the FastAgentic(s) in a file.
    ///
    /// Secret resourceVersions are unknown offline and hashed as `unknown`, so the
    /// `fastagentic.io/config-hash` differs from the one in the cluster; owner references are
    /// left out (the resource has no uid yet). Invalid input exits with status 2.
    Render {
        /// File with one or more FastAgentic YAML documents; `-` reads standard input.
        #[arg(short = 'f', long = "filename")]
        file: String,
    },
    /// Run the operator.
    Run(Box<RunArgs>),
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Json,
    Text,
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// Watch FastAgentics (and their children and Secrets) in this namespace only; all
    /// namespaces when unset.
    #[arg(long, env = "FASTAGENTIC_OPERATOR_NAMESPACE")]
    namespace: Option<String>,

    /// Hold a coordination.k8s.io Lease so that of several replicas only one reconciles.
    #[arg(long, env = "FASTAGENTIC_OPERATOR_LEADER_ELECT", action = ArgAction::Set,
          num_args = 0..=1, default_value_t = false, default_missing_value = "true")]
    leader_elect: bool,

    /// Name of the leader election Lease.
    #[arg(
        long,
        env = "FASTAGENTIC_OPERATOR_LEASE_NAME",
        default_value = "fastagentic-operator"
    )]
    lease_name: String,

    /// Namespace of the leader election Lease; defaults to the operator's own namespace (the
    /// in-cluster service account's, or the kubeconfig context's).
    #[arg(long, env = "FASTAGENTIC_OPERATOR_LEASE_NAMESPACE")]
    lease_namespace: Option<String>,

    /// This replica's identity in the Lease; defaults to `POD_NAME`, else `HOSTNAME`, plus the pid.
    #[arg(long, env = "FASTAGENTIC_OPERATOR_LEADER_ELECT_IDENTITY")]
    leader_elect_identity: Option<String>,

    /// Address of the Prometheus `/metrics` endpoint.
    #[arg(
        long,
        env = "FASTAGENTIC_OPERATOR_METRICS_BIND_ADDRESS",
        default_value = "0.0.0.0:8080"
    )]
    metrics_bind_address: SocketAddr,

    /// Address of the `/healthz` and `/readyz` endpoints.
    #[arg(
        long,
        env = "FASTAGENTIC_OPERATOR_HEALTH_BIND_ADDRESS",
        default_value = "0.0.0.0:8081"
    )]
    health_bind_address: SocketAddr,

    /// Address of the `custom.metrics.k8s.io` API (HTTPS), served when the certificate and key
    /// are given.
    #[arg(
        long,
        env = "FASTAGENTIC_OPERATOR_METRICS_API_BIND_ADDRESS",
        default_value = "0.0.0.0:6443"
    )]
    metrics_api_bind_address: SocketAddr,

    /// PEM serving certificate of the metrics API (the APIService's caBundle must trust it).
    #[arg(
        long,
        env = "FASTAGENTIC_OPERATOR_METRICS_API_CERT_FILE",
        requires = "metrics_api_key_file"
    )]
    metrics_api_cert_file: Option<PathBuf>,

    /// PEM private key of the metrics API.
    #[arg(
        long,
        env = "FASTAGENTIC_OPERATOR_METRICS_API_KEY_FILE",
        requires = "metrics_api_cert_file"
    )]
    metrics_api_key_file: Option<PathBuf>,

    /// The metrics API's selector-less Service, `NAME` (in the operator's namespace) or
    /// `NAMESPACE/NAME`: the leader points its EndpointSlice at itself.
    #[arg(long, env = "FASTAGENTIC_OPERATOR_METRICS_API_SERVICE")]
    metrics_api_service: Option<String>,

    /// The address the leader publishes for the metrics API; defaults to `POD_IP`.
    #[arg(long, env = "FASTAGENTIC_OPERATOR_METRICS_API_ADVERTISE_ADDRESS")]
    metrics_api_advertise_address: Option<IpAddr>,

    /// FastAgentics reconciled at once. Bounds the operator's connections to the API server and
    /// its memory when many resources change together (2,000 created at once, say); one
    /// resource is never reconciled twice at the same time.
    #[arg(long, env = "FASTAGENTIC_OPERATOR_MAX_CONCURRENT_RECONCILES", default_value_t = 16,
          value_parser = clap::value_parser!(u16).range(1..=1024))]
    max_concurrent_reconciles: u16,

    /// Time between two scrapes of the pods' concurrency (e.g. `2s`, `500ms`).
    #[arg(long, env = "FASTAGENTIC_OPERATOR_SCRAPE_INTERVAL", default_value = "2s",
          value_parser = parse_duration)]
    scrape_interval: Duration,

    /// Time a pod gets to answer a scrape; one that does not is left out of the metric.
    #[arg(long, env = "FASTAGENTIC_OPERATOR_SCRAPE_TIMEOUT", default_value = "1s",
          value_parser = parse_duration)]
    scrape_timeout: Duration,

    /// Pods scraped at once.
    #[arg(long, env = "FASTAGENTIC_OPERATOR_SCRAPE_CONCURRENCY", default_value_t = 16,
          value_parser = clap::value_parser!(u16).range(1..=1024))]
    scrape_concurrency: u16,

    /// Scrapes the concurrency utilization averages over.
    #[arg(long, env = "FASTAGENTIC_OPERATOR_SCRAPE_WINDOW", default_value_t = 3,
          value_parser = clap::value_parser!(u16).range(1..=60))]
    scrape_window: u16,

    /// Most `controller.kubernetes.io/pod-deletion-cost` writes per FastAgentic per minute;
    /// 0 writes none.
    #[arg(
        long,
        env = "FASTAGENTIC_OPERATOR_DELETION_COST_WRITES_PER_MINUTE",
        default_value_t = 60
    )]
    deletion_cost_writes_per_minute: u32,

    /// The operator's own namespace, admitted by the NetworkPolicies of FastAgentics that scale
    /// on concurrency (the leader scrapes their pods); defaults to `POD_NAMESPACE`, else the
    /// in-cluster service account's namespace, or the kubeconfig context's.
    #[arg(long, env = "FASTAGENTIC_OPERATOR_POD_NAMESPACE")]
    pod_namespace: Option<String>,

    /// Labels of the operator's own pods, `key=value,key=value`, narrowing that NetworkPolicy
    /// peer to them; unset admits every pod of the operator's namespace.
    #[arg(long, env = "FASTAGENTIC_OPERATOR_POD_LABELS", default_value = "",
          value_parser = parse_label_list)]
    pod_labels: BTreeMap<String, String>,

    /// Log filter (tracing `EnvFilter` syntax), e.g. `info` or `fastagentic_operator=debug`.
    #[arg(long, env = "FASTAGENTIC_OPERATOR_LOG_LEVEL", default_value = "info")]
    log_level: String,

    /// Log format: one JSON object per line, or human-readable text.
    #[arg(
        long,
        env = "FASTAGENTIC_OPERATOR_LOG_FORMAT",
        value_enum,
        default_value = "json"
    )]
    log_format: LogFormat,
}

/// `2s`, `500ms`, `1.5s` or plain seconds (`2`): more than 0 and at most an hour.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let (number, scale) = if let Some(n) = t.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1.0)
    } else {
        (t, 1.0)
    };
    let seconds = number
        .trim()
        .parse::<f64>()
        .ok()
        .map(|n| n * scale)
        .filter(|n| n.is_finite() && *n > 0.0 && *n <= 3600.0)
        .ok_or_else(|| {
            format!("{s:?} is not a duration: use seconds or milliseconds, like 2s or 500ms (at most 1h)")
        })?;
    Ok(Duration::from_secs_f64(seconds))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd => print_crd(),
        Command::Render { file } => render_file(&file),
        Command::Run(args) => run(*args),
    }
}

fn print_crd() -> ExitCode {
    match fastagentic_crd::crd_yaml() {
        Ok(yaml) => {
            let mut out = std::io::stdout().lock();
            if let Err(err) = out.write_all(yaml.as_bytes()).and_then(|()| out.flush()) {
                eprintln!("error: writing the CRD to stdout: {err}");
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("error: serializing the CRD: {err}");
            ExitCode::FAILURE
        }
    }
}

fn render_file(file: &str) -> ExitCode {
    let mut input = String::new();
    let read = if file == "-" {
        std::io::stdin().read_to_string(&mut input).map(|_| ())
    } else {
        std::fs::read_to_string(file).map(|s| input = s)
    };
    if let Err(err) = read {
        eprintln!("error: reading {file}: {err}");
        return ExitCode::from(2);
    }
    match render::render(&input) {
        Ok(yaml) => {
            let mut out = std::io::stdout().lock();
            if let Err(err) = out.write_all(yaml.as_bytes()).and_then(|()| out.flush()) {
                eprintln!("error: writing to stdout: {err}");
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("error: {file}: {err}");
            ExitCode::from(2)
        }
    }
}

fn init_logging(args: &RunArgs) -> Result<(), String> {
    let filter = tracing_subscriber::EnvFilter::try_new(&args.log_level)
        .map_err(|e| format!("--log-level {:?}: {e}", args.log_level))?;
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let result = match args.log_format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
    result.map_err(|e| format!("initialising logging: {e}"))
}

fn run(args: RunArgs) -> ExitCode {
    if let Err(e) = init_logging(&args) {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "could not start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run_async(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "operator stopped");
            ExitCode::FAILURE
        }
    }
}

/// Resolves on SIGTERM or Ctrl-C.
async fn termination_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {},
                    _ = tokio::signal::ctrl_c() => {},
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn default_identity() -> String {
    let host = std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "fastagentic-operator".into());
    format!("{host}_{}", std::process::id())
}

/// The leader's scraping and endpoint settings from the flags.
fn leader_config(args: &RunArgs, client: &Client) -> LeaderConfig {
    let service = args
        .metrics_api_service
        .as_ref()
        .map(|s| match s.split_once('/') {
            Some((ns, name)) => (name.to_string(), ns.to_string()),
            None => (s.clone(), client.default_namespace().to_string()),
        });
    let advertise = args
        .metrics_api_advertise_address
        .or_else(|| std::env::var("POD_IP").ok().and_then(|ip| ip.parse().ok()));
    LeaderConfig {
        watch_namespace: args.namespace.clone(),
        service,
        advertise,
        port: args.metrics_api_bind_address.port(),
        scrape: ScrapeConfig {
            interval: args.scrape_interval,
            timeout: args.scrape_timeout,
            concurrency: usize::from(args.scrape_concurrency),
            window: usize::from(args.scrape_window),
            cost_writes_per_minute: args.deletion_cost_writes_per_minute,
        },
    }
}

async fn run_async(args: RunArgs) -> Result<(), String> {
    let metrics = Arc::new(Metrics::default());
    let ready = Readiness::default();
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };

    // HTTP endpoints first, so liveness answers while we wait for the Lease.
    let health = server::health_router(ready.clone());
    let metrics_router = server::metrics_router(metrics.clone());
    let mut servers = Vec::new();
    if args.health_bind_address == args.metrics_bind_address {
        servers.push((args.health_bind_address, health.merge(metrics_router)));
    } else {
        servers.push((args.health_bind_address, health));
        servers.push((args.metrics_bind_address, metrics_router));
    }
    for (addr, router) in servers {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| format!("binding {addr}: {e}"))?;
        tokio::spawn(server::serve(listener, router, stopped(stop_rx.clone())));
    }

    let config = kube::Config::infer()
        .await
        .map_err(|e| format!("connecting to the Kubernetes API: {e}"))?;
    let client = Client::try_from(config.clone())
        .map_err(|e| format!("connecting to the Kubernetes API: {e}"))?;
    // The reconciler's own client counts its writes (`fastagentic_operator_writes_total`).
    let reconciler_client = ClientBuilder::try_from(config)
        .map_err(|e| format!("connecting to the Kubernetes API: {e}"))?
        .with_layer(&CountWrites::new(metrics.clone()))
        .build();
    let version = client
        .apiserver_version()
        .await
        .map_err(|e| format!("reaching the Kubernetes API server: {e}"))?;
    tracing::info!(server = %version.git_version, "connected to the API server");

    // The metrics API listens on every replica; only the leader's address is published.
    let front_proxy = match (&args.metrics_api_cert_file, &args.metrics_api_key_file) {
        (Some(_), Some(_)) => FrontProxy::load(&client).await?,
        _ => None,
    };
    let metrics_api_on =
        args.metrics_api_cert_file.is_some() && args.metrics_api_key_file.is_some();
    let api_state = Arc::new(ApiState::new(
        client.clone(),
        front_proxy,
        Arc::new(RwLock::new(Default::default())),
        metrics.clone(),
    ));
    if let (Some(cert_file), Some(key_file)) =
        (&args.metrics_api_cert_file, &args.metrics_api_key_file)
    {
        let cfg = ServeConfig {
            bind: args.metrics_api_bind_address,
            cert_file: cert_file.clone(),
            key_file: key_file.clone(),
        };
        metrics_api::serve(&cfg, api_state.clone(), stopped(stop_rx.clone())).await?;
    } else {
        tracing::info!(
            "metrics API off (no --metrics-api-cert-file): concurrency autoscaling needs it"
        );
    }
    ready.set(true);

    let identity = args
        .leader_elect_identity
        .clone()
        .unwrap_or_else(default_identity);
    let lease = if args.leader_elect {
        let cfg = LeaseConfig {
            name: args.lease_name.clone(),
            namespace: args
                .lease_namespace
                .clone()
                .unwrap_or_else(|| client.default_namespace().to_string()),
            identity: identity.clone(),
        };
        let api: Api<Lease> = Api::namespaced(client.clone(), &cfg.namespace);
        tokio::select! {
            () = leader::acquire(&api, &cfg) => {},
            () = termination_signal() => {
                let _ = stop_tx.send(true);
                return Ok(());
            }
        }
        Some((api, cfg))
    } else {
        None
    };
    metrics.set_leader(true);

    let operator_pods = OperatorPods {
        namespace: Some(
            args.pod_namespace
                .clone()
                .or_else(|| std::env::var("POD_NAMESPACE").ok())
                .filter(|ns| !ns.is_empty())
                .unwrap_or_else(|| client.default_namespace().to_string()),
        ),
        labels: args.pod_labels.clone(),
    };
    let ctx = Arc::new(
        Context::new(reconciler_client, metrics.clone(), Some(identity))
            .with_operator_pods(operator_pods),
    );
    let scope = Scope {
        namespace: args.namespace.clone(),
    };
    tracing::info!(namespace = ?scope.namespace, "starting the controller");
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (fastagentics, writer) = reflector::store();
    let controller = tokio::spawn(controller::run(
        client.clone(),
        scope,
        args.max_concurrent_reconciles,
        ctx,
        writer,
        stopped(shutdown_rx),
    ));
    let leader_cfg = leader_config(&args, &client);
    // The leader's pod watch and scrapes serve only the metrics API: without it there is
    // nothing to scrape for, and the chart grants no access to pods.
    let leading = tokio::spawn(async move {
        if metrics_api_on {
            metrics_api::lead(client, leader_cfg, api_state, fastagentics).await;
        }
    });

    let outcome = match &lease {
        Some((api, cfg)) => tokio::select! {
            () = termination_signal() => Ok(()),
            reason = leader::hold(api, cfg) => Err(format!("lost the leader Lease: {reason}")),
        },
        None => {
            termination_signal().await;
            Ok(())
        }
    };
    metrics.set_leader(false);
    match &outcome {
        Ok(()) => tracing::info!("termination signal: finishing running reconciles"),
        // Stop writing at once: another replica may already lead.
        Err(e) => tracing::error!(error = %e, "stopping"),
    }
    leading.abort();
    let _ = shutdown_tx.send(true);
    if outcome.is_ok() {
        let _ = controller.await;
        if let Some((api, cfg)) = &lease {
            leader::release(api, cfg).await;
        }
    } else {
        controller.abort();
    }
    let _ = stop_tx.send(true);
    outcome
}
