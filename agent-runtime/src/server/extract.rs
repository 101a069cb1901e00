//! Request extractors whose rejections are our JSON errors.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use http::StatusCode;
use http::request::Parts;
use serde::de::DeserializeOwned;

use crate::error::ApiError;
use crate::runs::BadRunId;

/// Request header accepted as the run id.
pub const IDEMPOTENCY_KEY: &str = fastagentic_contract::header::IDEMPOTENCY_KEY;

/// A JSON request body. Unlike `axum::Json` it does not insist on a `Content-Type` (clients
/// of the seed send bare `curl -d` bodies); a body that is not the expected JSON is a 400, a
/// body over the limit the limit layer's 413, both as JSON.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError::plain(e.status(), e.body_text()))?;
        serde_json::from_slice(&bytes).map(JsonBody).map_err(|e| {
            ApiError::plain(
                StatusCode::BAD_REQUEST,
                format!("expected a JSON body {{\"message\": string, ...}}: {e}"),
            )
        })
    }
}

/// The `Idempotency-Key` header, if sent; one that is not visible ASCII is a 400.
#[derive(Debug)]
pub struct IdempotencyKey(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        match parts.headers.get(IDEMPOTENCY_KEY).map(|v| v.to_str()) {
            None => Ok(Self(None)),
            Some(Ok(key)) => Ok(Self(Some(key.to_owned()))),
            Some(Err(_)) => Err((&BadRunId(
                "run_id (Idempotency-Key header): not visible ASCII".to_owned(),
            ))
                .into()),
        }
    }
}
