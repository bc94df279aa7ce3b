//! `GET /api/v1/items/{id}` (the manifest and the collector's view) and
//! `GET /api/v1/items/{id}/raw` (the exact raw bytes, every chunk re-verified on the way out).

use super::auth::READERS;
use super::{body_stream, internal, to_value, ApiResult, Caller, S};
use crate::error::Error;
use crate::evidence::ItemChunks;
use axum::body::Bytes;
use axum::extract::{Path, State as AxState};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use serde_json::{json, Value};

pub(super) fn routes() -> Router<S> {
    Router::new()
        .route("/api/v1/items/{id}", get(show_item))
        .route("/api/v1/items/{id}/raw", get(download_item))
}

async fn show_item(
    AxState(state): AxState<S>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.require(READERS)?;
    let item = state
        .meta()
        .get_item(&id)?
        .ok_or_else(|| Error::not_found(format!("no item {id}")))?;
    let mut v = match &item.manifest {
        Some(m) => to_value(m)?,
        None => to_value(&item.header)?,
    };
    // `status` is the collector's (sealed, rejected…); how acquisition on the host ended
    // (complete, partial with gaps, source_vanished) stays visible beside it.
    if let Some(m) = &item.manifest {
        v["acquisition_status"] = json!(m.status);
    }
    v["status"] = json!(item.status);
    v["chunks_received"] = json!(item.chunks_received);
    v["duplicate_chunks"] = json!(item.duplicate_chunks);
    v["collector_error"] = json!(item.error);
    Ok(Json(v))
}

async fn download_item(
    AxState(state): AxState<S>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    caller.require(READERS)?;
    let item = state.collections.sealed_item(&id)?;
    // Every chunk's codec is looked up before the first byte is served.
    let chunks = ItemChunks::open(&state.stores, &id).map_err(Error::from)?;
    state.collections.record_download(&item, &caller.actor())?;
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(4);
    tokio::task::spawn_blocking(move || {
        for c in chunks {
            // Corrupt evidence is never served: the stream stops with an error there.
            let r = c
                .map(|(_, raw)| Bytes::from(raw))
                .map_err(|e| std::io::Error::other(e.to_string()));
            let stop = r.is_err();
            if tx.blocking_send(r).is_err() || stop {
                return;
            }
        }
    });
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        "application/octet-stream"
            .parse()
            .map_err(|e| internal("content type", e))?,
    );
    if let Some(len) = item.raw_len {
        headers.insert(header::CONTENT_LENGTH, len.into());
    }
    if let Some(sha) = &item.sha256 {
        headers.insert(
            "x-cairn-sha256",
            sha.parse().map_err(|e| internal("hash header", e))?,
        );
    }
    Ok((headers, body_stream(rx)).into_response())
}
