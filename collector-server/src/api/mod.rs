//! HTTP API v1 for people and detection systems (bearer tokens, JSON), one module per
//! resource. Handlers parse and answer; what a request means is the domain's.
//!
//! HTTPS with the collector's certificate by default; plain HTTP only on loopback when asked.
//! Request bodies are parsed by hand rather than by axum's `Json` extractor so that a malformed
//! request gets a JSON error that names the field, the same shape as every other error.

pub(crate) mod archive;
mod auth;
pub(crate) mod collections;
mod containment;
mod fleet;
mod hosts;
pub mod import;
pub(crate) mod items;
mod readiness;
mod serve;
mod timeline;
mod tokens;
mod triggers;

pub use auth::Caller;
pub use serve::{run, tls_acceptor};

use crate::error::Error;
use crate::ingest::IngestError;
use crate::state::State;
use crate::storage::StorageError;
use axum::http::StatusCode;
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde_json::json;
use std::sync::Arc;

type S = Arc<State>;

/// An answer other than success: a status and a message, as `{"error": "..."}`.
#[derive(Debug)]
pub struct ApiError(pub StatusCode, pub String);

impl ApiError {
    pub(crate) fn new(code: StatusCode, msg: impl Into<String>) -> ApiError {
        ApiError(code, msg.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({"error": self.1}))).into_response()
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        let code = match &e {
            Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::Conflict(_) | Error::Storage(StorageError::Conflict(_)) => StatusCode::CONFLICT,
            Error::Invalid(_) => StatusCode::BAD_REQUEST,
            Error::Forbidden(_) => StatusCode::FORBIDDEN,
            Error::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            Error::Ingest(IngestError::UnknownCollection(_)) => StatusCode::NOT_FOUND,
            Error::Ingest(
                IngestError::BadItem(_)
                | IngestError::Frames(_)
                | IngestError::Chunk(_)
                | IngestError::Rejected(_)
                | IngestError::WrongHost { .. },
            ) => StatusCode::UNPROCESSABLE_ENTITY,
            Error::Storage(_)
            | Error::Blob(_)
            | Error::Evidence(_)
            | Error::Ingest(_)
            | Error::Internal(_) => {
                tracing::error!("internal error: {e}");
                return ApiError(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("internal error: {e}"),
                );
            }
        };
        ApiError(code, e.to_string())
    }
}

impl From<StorageError> for ApiError {
    fn from(e: StorageError) -> Self {
        Error::from(e).into()
    }
}

/// A task that should not fail did (a panic in a blocking task, a serialisation bug).
fn internal(what: &str, e: impl std::fmt::Display) -> ApiError {
    Error::Internal(format!("{what}: {e}")).into()
}

pub(crate) type ApiResult<T> = std::result::Result<T, ApiError>;

pub fn router(state: S) -> Router {
    Router::new()
        .merge(hosts::routes())
        .merge(fleet::routes())
        .merge(containment::routes())
        .merge(collections::routes())
        .merge(archive::routes())
        .merge(items::routes())
        .merge(import::routes())
        .merge(readiness::routes())
        .merge(triggers::routes())
        .merge(timeline::routes())
        .merge(tokens::routes())
        // Inside out: the body is read (bounded) only for a caller with a valid token.
        .layer(middleware::from_fn(body_limit))
        .layer(axum::extract::DefaultBodyLimit::disable())
        .layer(middleware::from_fn_with_state(state.clone(), auth::bearer))
        // For load balancers and operators: no token, nothing secret.
        .route("/healthz", axum::routing::get(healthz))
        .route("/readyz", axum::routing::get(readyz))
        .route("/metrics", axum::routing::get(metrics))
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "no such endpoint; the API lives under /api/v1/",
            )
        })
        .with_state(state)
}

/// Largest JSON request body. Item imports (`PUT …/items/…`) stream and are not held.
pub const MAX_BODY: usize = 2 << 20;
/// How much of an oversized body is read and thrown away so that the client, HTTP/2 ones
/// included, gets its 413 instead of a reset stream; beyond it the stream is reset.
const MAX_DRAIN: usize = 64 << 20;

/// Bounded request bodies, answered 413 with a JSON error when over the limit.
async fn body_limit(req: axum::extract::Request, next: middleware::Next) -> Response {
    if req.method() == axum::http::Method::PUT && req.uri().path().starts_with("/api/v1/import/") {
        return next.run(req).await;
    }
    let (parts, body) = req.into_parts();
    let mut body = body.into_data_stream();
    let mut kept: Vec<u8> = Vec::new();
    let mut total = 0usize;
    use futures::StreamExt;
    while let Some(frame) = body.next().await {
        let Ok(bytes) = frame else {
            return ApiError::new(
                StatusCode::BAD_REQUEST,
                "the request body could not be read",
            )
            .into_response();
        };
        total += bytes.len();
        if total <= MAX_BODY {
            kept.extend_from_slice(&bytes);
        } else if total > MAX_DRAIN {
            break;
        }
    }
    if total > MAX_BODY {
        return ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body is over {MAX_BODY} bytes, the limit of this API"),
        )
        .into_response();
    }
    next.run(axum::extract::Request::from_parts(
        parts,
        axum::body::Body::from(kept),
    ))
    .await
}

/// `GET /healthz`: 200 while evidence can be stored, 503 while it cannot (storage full).
async fn healthz(axum::extract::State(state): axum::extract::State<S>) -> Response {
    let st = state.clone();
    let report = tokio::task::spawn_blocking(move || {
        st.health.report(
            &st.stores,
            st.sessions.connected(),
            st.custody.heads_pending(),
        )
    })
    .await;
    match report {
        Ok(r) => {
            let code = if r.status == "ok" {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            (code, Json(r)).into_response()
        }
        Err(e) => internal("health task", e).into_response(),
    }
}

/// `GET /readyz`: 200 when the database and the blob store answer this instance and there is
/// room; 503 with what failed otherwise (a load balancer sends agents elsewhere).
async fn readyz(axum::extract::State(state): axum::extract::State<S>) -> Response {
    let st = state.clone();
    match tokio::task::spawn_blocking(move || st.health.ready(&st.stores)).await {
        Ok(r) => {
            let code = if r.ready {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            (code, Json(r)).into_response()
        }
        Err(e) => internal("readiness task", e).into_response(),
    }
}

/// `GET /metrics`: the Prometheus text format. Counts and latencies only: no host names, ids
/// or paths, so it needs no token.
async fn metrics(axum::extract::State(state): axum::extract::State<S>) -> Response {
    let text = state.stores.metrics.render(&crate::metrics::Gauges {
        agents_connected: state.sessions.connected(),
        storage_full: state.health.is_storage_full(),
        store_unavailable: state.health.is_store_unavailable(),
    });
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> ApiResult<T> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let msg = if path == "." || path.is_empty() {
            format!("malformed JSON request: {inner}")
        } else {
            format!("malformed JSON request: field \"{path}\": {inner}")
        };
        ApiError::new(StatusCode::BAD_REQUEST, msg)
    })
}

/// JSON of a serialisable value; a failure is a fault of the collector.
fn to_value<T: serde::Serialize>(v: &T) -> ApiResult<serde_json::Value> {
    serde_json::to_value(v).map_err(|e| internal("serialising the answer", e))
}

/// A byte stream produced on a blocking thread, as a response body.
fn body_stream(
    rx: tokio::sync::mpsc::Receiver<std::io::Result<axum::body::Bytes>>,
) -> axum::body::Body {
    let stream =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|x| (x, rx)) });
    axum::body::Body::from_stream(stream)
}
