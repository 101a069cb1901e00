//! The `custom.metrics.k8s.io` API the operator serves, so a plain HorizontalPodAutoscaler can
//! scale FastAgentics on concurrency utilization — no Prometheus, no adapter, no proxy in the
//! request path.
//!
//! - [`scrape`]: the leader reads every ready pod's in-flight count and capacity every few
//!   seconds and keeps a short window per pod; it also writes the pods' deletion costs
//!   ([`cost`]) so that a scale-down removes idle pods first.
//! - [`api`]: the discovery documents and `MetricValueList` answers.
//! - [`auth`]: delegated authentication (front proxy, TokenReview) and authorization
//!   (SubjectAccessReview), as every aggregated API server does it.
//! - [`tls`]: the HTTPS listener (rustls) that hands each connection's verified client
//!   certificate to the handlers.
//! - [`endpoint`]: the leader points the API's selector-less Service at itself; standbys serve
//!   the same API but get no traffic, and answer 503 if reached directly.
//!
//! It is kept apart from the reconcile pipeline: the controller never reads samples, and this
//! module only reads the controller's FastAgentic cache.

pub mod api;
pub mod auth;
pub mod cost;
pub mod endpoint;
pub mod scrape;
pub mod selector;
pub mod tls;

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use fastagentic_crd::FastAgentic;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};

use self::api::{ApiError, PodMetrics};
use self::auth::{Attributes, Delegated, FrontProxy};
use self::scrape::{ScrapeConfig, Scraper};
use self::tls::Peer;
use crate::labels::{LABEL_MANAGED_BY, MANAGED_BY};
use crate::metrics::Metrics;

/// Shared by the handlers.
pub struct ApiState {
    front_proxy: Option<FrontProxy>,
    delegated: Delegated,
    published: Arc<RwLock<PodMetrics>>,
    leading: AtomicBool,
    metrics: Arc<Metrics>,
}

impl ApiState {
    /// State answering from `published`; `front_proxy` from [`FrontProxy::load`].
    pub fn new(
        client: kube::Client,
        front_proxy: Option<FrontProxy>,
        published: Arc<RwLock<PodMetrics>>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            front_proxy,
            delegated: Delegated::new(client),
            published,
            leading: AtomicBool::new(false),
            metrics,
        }
    }
}

/// The API's routes, behind authentication and authorization.
pub fn router(state: Arc<ApiState>) -> Router {
    let base = format!("/apis/{}/{}", api::GROUP, api::VERSION);
    Router::new()
        .route("/apis", get(|| async { Json(api::group_list()) }))
        .route(
            &format!("/apis/{}", api::GROUP),
            get(|| async { Json(api::group()) }),
        )
        .route(&base, get(|| async { Json(api::resource_list()) }))
        .route(
            &format!("{base}/namespaces/{{namespace}}/pods/{{name}}/{{metric}}"),
            get(metric),
        )
        .fallback(|uri: Uri| async move {
            ApiError::not_found(format!(
                "the server could not find the requested resource {uri}"
            ))
        })
        .layer(middleware::from_fn_with_state(state.clone(), guard))
        .with_state(state)
}

/// Authenticates and authorizes every request, and counts the answers.
async fn guard(State(st): State<Arc<ApiState>>, req: Request, next: Next) -> Response {
    let cn = req
        .extensions()
        .get::<Peer>()
        .and_then(|p| p.client_cn.clone());
    let path = req.uri().path().to_string();
    let response = match check(&st, cn.as_deref(), req.headers().clone(), &path).await {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    };
    st.metrics.metrics_api_answered(response.status().as_u16());
    response
}

async fn check(
    st: &ApiState,
    cn: Option<&str>,
    headers: HeaderMap,
    path: &str,
) -> Result<(), ApiError> {
    let proxied = match (cn, &st.front_proxy) {
        (Some(cn), Some(fp)) => fp.user(cn, &headers)?,
        _ => None,
    };
    let user = match proxied {
        Some(u) => u,
        None => {
            let token = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .ok_or_else(|| {
                    ApiError::unauthorized(
                        "no credentials: present the front proxy's client certificate or a bearer token",
                    )
                })?;
            st.delegated.authenticate_token(token).await?
        }
    };
    if auth::is_discovery(path) {
        return Ok(());
    }
    st.delegated
        .authorize(&user, &Attributes::of_path(path))
        .await
}

async fn metric(
    State(st): State<Arc<ApiState>>,
    Path((namespace, name, metric)): Path<(String, String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    if !st.leading.load(Ordering::Acquire) {
        return Err(ApiError::unavailable(
            "this operator replica is a standby: the leader serves the metrics API",
        ));
    }
    let published = st
        .published
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    api::metric_list(
        &published,
        &namespace,
        &name,
        &metric,
        query.get("labelSelector").map(String::as_str),
        query.get("metricLabelSelector").map(String::as_str),
    )
    .map(Json)
}

/// The HTTPS listener's settings.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Listen address.
    pub bind: SocketAddr,
    /// PEM serving certificate (chain).
    pub cert_file: PathBuf,
    /// PEM private key.
    pub key_file: PathBuf,
}

/// Starts the HTTPS listener (every replica); returns once it listens.
pub async fn serve(
    cfg: &ServeConfig,
    state: Arc<ApiState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    let read = |p: &PathBuf, flag: &str| {
        std::fs::read(p).map_err(|e| format!("{flag} {}: {e}", p.display()))
    };
    let cert = read(&cfg.cert_file, "--metrics-api-cert-file")?;
    let key = read(&cfg.key_file, "--metrics-api-key-file")?;
    let ca = state
        .front_proxy
        .as_ref()
        .map(|f| f.client_ca_pem.as_bytes());
    let config = tls::server_config(&cert, &key, ca)?;
    let listener = tokio::net::TcpListener::bind(cfg.bind)
        .await
        .map_err(|e| format!("binding --metrics-api-bind-address {}: {e}", cfg.bind))?;
    tracing::info!(addr = %cfg.bind, front_proxy = state.front_proxy.is_some(), "metrics API listening");
    tokio::spawn(tls::serve(
        listener,
        Arc::new(config),
        router(state),
        shutdown,
    ));
    Ok(())
}

/// What the leader does besides reconciling.
#[derive(Debug, Clone)]
pub struct LeaderConfig {
    /// Namespace watched (all when `None`).
    pub watch_namespace: Option<String>,
    /// The metrics API's Service to point at this process, and its namespace.
    pub service: Option<(String, String)>,
    /// This process's address for that Service.
    pub advertise: Option<IpAddr>,
    /// Port the metrics API listens on.
    pub port: u16,
    /// Scraping.
    pub scrape: ScrapeConfig,
}

/// How often the leader re-asserts its EndpointSlice (a no-op apply unless it was changed).
const ENDPOINT_REFRESH: Duration = Duration::from_secs(30);

/// Takes over as the leader: publishes the endpoint, watches the pods and scrapes them.
/// Runs until the task is aborted.
pub async fn lead(
    client: kube::Client,
    cfg: LeaderConfig,
    state: Arc<ApiState>,
    fastagentics: Store<FastAgentic>,
) {
    state.leading.store(true, Ordering::Release);
    if let (Some((service, namespace)), Some(address)) = (cfg.service.clone(), cfg.advertise) {
        let client = client.clone();
        tokio::spawn(async move {
            loop {
                match endpoint::publish(&client, &service, &namespace, address, cfg.port).await {
                    Ok(()) => tracing::debug!(%service, %address, "metrics API endpoint published"),
                    Err(e) => {
                        tracing::warn!(%service, error = %e, "could not publish the metrics API endpoint")
                    }
                }
                tokio::time::sleep(ENDPOINT_REFRESH).await;
            }
        });
    } else if cfg.service.is_some() {
        tracing::warn!(
            "--metrics-api-service is set but this process has no address to publish \
             (set POD_IP or --metrics-api-advertise-address)"
        );
    }
    let pods_api: Api<Pod> = match &cfg.watch_namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let (pods, writer) = reflector::store();
    let watch = watcher(
        pods_api,
        watcher::Config::default().labels(&format!("{LABEL_MANAGED_BY}={MANAGED_BY}")),
    )
    .default_backoff()
    .modify(|pod: &mut Pod| {
        pod.managed_fields_mut().clear();
    })
    .reflect(writer)
    .for_each(|_| std::future::ready(()));
    tokio::spawn(watch);
    let scraper = match Scraper::new(cfg.scrape, state.published.clone(), state.metrics.clone()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "metrics API: no HTTP client for scraping");
            return;
        }
    };
    if pods.wait_until_ready().await.is_err() {
        return;
    }
    scraper.run(client, pods, fastagentics).await;
}
