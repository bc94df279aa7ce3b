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
    let item = state.collections.item(&id)?;
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
    raw_response(state, &id, caller.actor()).await
}

/// An item's raw bytes as a response, for the API and the console alike: refused when the
/// item does not match its custody, every chunk re-verified on the way out, the end of the
/// download recorded in custody.
pub(crate) async fn raw_response(state: S, id: &str, actor: String) -> ApiResult<Response> {
    let item = state.collections.sealed_item(id)?;
    let id = item.id.clone();
    // Evidence that no longer matches its custody record is not served at all.
    if let Err(why) = state.custody.check_item(&item)? {
        return Err(Error::conflict(format!(
            "item {id} does not match its chain of custody ({why}); it is not served. Run `cairn custody verify {}`",
            item.collection_id
        ))
        .into());
    }
    // Every chunk's codec is looked up before the first byte is served.
    let chunks = ItemChunks::open(&state.stores, &item.id).map_err(Error::from)?;
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(4);
    let st = state.clone();
    let raw_len = item.raw_len;
    let sha256 = item.sha256.clone();
    tokio::task::spawn_blocking(move || {
        let mut sent = 0u64;
        let mut failure = None;
        for c in chunks {
            // Corrupt evidence is never served: the stream stops with an error there.
            match c {
                Ok((_, raw)) => {
                    let n = raw.len() as u64;
                    if tx.blocking_send(Ok(Bytes::from(raw))).is_err() {
                        failure = Some("the client went away".to_string());
                        break;
                    }
                    sent += n;
                }
                Err(e) => {
                    failure = Some(e.to_string());
                    let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
                    break;
                }
            }
        }
        // The body has taken every byte only when the channel is empty again.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
        while failure.is_none() && tx.capacity() < tx.max_capacity() {
            if tx.is_closed() || std::time::Instant::now() > deadline {
                failure = Some("the client went away before the last bytes".to_string());
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        drop(tx);
        // Custody says what happened: the whole item went out, or how much of it and why not.
        if let Err(e) = st
            .collections
            .record_download(&item, &actor, sent, failure.as_deref())
        {
            tracing::error!("recording the download of item {}: {e}", item.id);
        }
    });
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        "application/octet-stream"
            .parse()
            .map_err(|e| internal("content type", e))?,
    );
    if let Some(len) = raw_len {
        headers.insert(header::CONTENT_LENGTH, len.into());
    }
    if let Some(sha) = &sha256 {
        headers.insert(
            "x-cairn-sha256",
            sha.parse().map_err(|e| internal("hash header", e))?,
        );
    }
    headers.insert(
        axum::http::header::CONTENT_DISPOSITION,
        format!("attachment; filename=\"{id}.bin\"")
            .parse()
            .map_err(|e| internal("content disposition", e))?,
    );
    Ok((headers, body_stream(rx)).into_response())
}
