//! The route handlers: thin, each turning its request into a call and the result into a
//! response. Errors are [`ApiError`]s; run logic is in [`crate::runs`].

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use serde_json::json;

use super::extract::{IdempotencyKey, JsonBody};
use super::http::{AppState, READY_CHECK_TIMEOUT};
use crate::agent::AgentRequest;
use crate::error::ApiError;
use crate::runs::AnswerBody;

/// Response header set (to `true`) on an answer served from the store.
pub const REPLAYED_HEADER: &str = fastagentic_contract::header::REPLAYED;

/// `GET /health`: the same body for the life of the process, serialized once.
pub async fn health(State(st): State<Arc<AppState>>) -> Response {
    let body = st.health_body.get_or_init(|| {
        let body = json!({
            "status": "healthy",
            "version": env!("CARGO_PKG_VERSION"),
            "title": st.title,
            "instance_id": st.instance_id,
        });
        axum::body::Bytes::from(body.to_string())
    });
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body.clone(),
    )
        .into_response()
}

/// `GET /ready`: 200 when not draining and every readiness check passes, else 503.
pub async fn ready(State(st): State<Arc<AppState>>) -> Response {
    let draining = st.draining.load(Ordering::Acquire);
    let mut checks = serde_json::Map::new();
    checks.insert("app".into(), (!draining).into());
    let results = futures::future::join_all(st.checks.iter().map(|c| async move {
        let ok = tokio::time::timeout(READY_CHECK_TIMEOUT, c.check())
            .await
            .unwrap_or(false);
        (c.name(), ok)
    }))
    .await;
    for (name, ok) in results {
        checks.insert(name.into(), ok.into());
    }
    let is_ready = checks.values().all(|v| v.as_bool() == Some(true));
    let status = if is_ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let mut body = json!({"ready": is_ready, "checks": checks, "instance_id": st.instance_id});
    if draining {
        body["draining"] = true.into();
    }
    (status, Json(body)).into_response()
}

/// Which Prometheus exposition a scrape asked for (`None`: the JSON view).
fn wants_prometheus(h: &HeaderMap) -> Option<&'static str> {
    let accept = h.get(header::ACCEPT).and_then(|v| v.to_str().ok())?;
    if accept.contains("application/openmetrics-text") {
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    } else if accept.contains("text/plain") {
        Some("text/plain; version=0.0.4; charset=utf-8")
    } else {
        None
    }
}

/// `GET /metrics`: the pod's numbers as JSON, or Prometheus text / OpenMetrics by `Accept`.
pub async fn metrics(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    st.counters.set_pools(st.pools.metrics());
    if let Some(content_type) = wants_prometheus(&headers) {
        let mut out = String::new();
        let res = if content_type.starts_with("application/openmetrics") {
            prometheus_client::encoding::text::encode(&mut out, &st.registry)
        } else {
            prometheus_client::encoding::prometheus_text::encode(&mut out, &st.registry)
        };
        return match res {
            Ok(()) => Ok(([(header::CONTENT_TYPE, content_type)], out).into_response()),
            Err(_) => Err(ApiError::plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                "metrics encoding failed",
            )),
        };
    }
    let snapshot = st.counters.pod_snapshot();
    Ok(Json(snapshot.to_json(
        &st.instance_id,
        st.max_concurrent,
        st.config_json.clone(),
        st.counters.process_json(),
    ))
    .into_response())
}

/// Marks an answer served from the store.
pub(super) fn replayed(mut resp: Response) -> Response {
    resp.headers_mut().insert(
        HeaderName::from_static(REPLAYED_HEADER),
        HeaderValue::from_static("true"),
    );
    resp
}

/// `POST /chat`.
pub async fn chat(
    State(st): State<Arc<AppState>>,
    IdempotencyKey(key): IdempotencyKey,
    JsonBody(request): JsonBody<AgentRequest>,
) -> Result<Response, ApiError> {
    let answer = st.runs.chat(request, key.as_deref()).await?;
    let body = AnswerBody {
        output: &answer.output,
        run_id: &answer.run_id,
        instance_id: &st.instance_id,
        replayed: answer.replayed,
    };
    let resp = Json(body).into_response();
    Ok(if answer.replayed {
        replayed(resp)
    } else {
        resp
    })
}

/// `GET /runs/{run_id}`.
pub async fn get_run(
    State(st): State<Arc<AppState>>,
    Path(run_id): Path<String>,
) -> Result<Response, ApiError> {
    Ok(Json(st.runs.get(&run_id).await?).into_response())
}

/// `POST /__test/panic` (test routes only).
pub async fn panic_route() -> Response {
    panic!("deliberate panic from the test route")
}

/// Anything without a route: 404 JSON.
pub async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::plain(
        StatusCode::NOT_FOUND,
        format!("no route for {method} {}", uri.path()),
    )
}
