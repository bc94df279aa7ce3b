//! Import of offline collections (`cairn-agent collect --out DIR`, then `cairn import DIR`):
//! `POST /api/v1/import/collections` (the collection record), `PUT …/{cid}/items/{item_id}`
//! (an item's frames, replayed through the same ingest as a live upload), `POST …/finish`.

use super::auth::ADMINS;
use super::collections::collection_view;
use super::{internal, parse_json, ApiError, ApiResult, Caller, S};
use crate::collections::Collections;
use crate::ingest::{self, IngestError, ItemFrame, Opened};
use axum::body::{Body, Bytes};
use axum::extract::{Path, State as AxState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{post, put};
use axum::{Extension, Json, Router};
use cairn_protocol::manifest::CollectionRecord;
use cairn_protocol::wire::Frame;
use serde::Deserialize;
use serde_json::{json, Value};
use std::io::Read;

pub(super) fn routes() -> Router<S> {
    Router::new()
        .route("/api/v1/import/collections", post(import_collection))
        .route(
            "/api/v1/import/collections/{cid}/items/{item_id}",
            put(import_item),
        )
        .route(
            "/api/v1/import/collections/{cid}/finish",
            post(import_finish),
        )
}

async fn import_collection(
    AxState(state): AxState<S>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> ApiResult<Response> {
    caller.require(ADMINS)?;
    let rec: CollectionRecord = parse_json(&body)?;
    let (host_id, resumed) = state.collections.import(&rec, &caller.actor())?;
    let code = if resumed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((
        code,
        Json(json!({"id": rec.request.collection_id, "host_id": host_id, "resumed": resumed})),
    )
        .into_response())
}

/// A blocking `Read` over an async body, so the same frame parser serves files and uploads.
struct BodyReader {
    rx: tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>,
    buf: Bytes,
}

impl Read for BodyReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.buf.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(b)) => self.buf = b,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.buf.len());
        out[..n].copy_from_slice(&self.buf.split_to(n));
        Ok(n)
    }
}

async fn import_item(
    AxState(state): AxState<S>,
    Extension(caller): Extension<Caller>,
    Path((cid, item_id)): Path<(String, String)>,
    body: Body,
) -> ApiResult<Json<Value>> {
    caller.require(ADMINS)?;
    state.collections.importing(&cid)?;
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let mut data = body.into_data_stream();
    tokio::spawn(async move {
        use futures::StreamExt;
        while let Some(b) = data.next().await {
            if tx.send(b.map_err(std::io::Error::other)).await.is_err() {
                return;
            }
        }
    });
    let st = state.clone();
    let actor = caller.actor();
    let reader = BodyReader {
        rx,
        buf: Bytes::new(),
    };
    let result = tokio::task::spawn_blocking(move || {
        // An item written with `collect --out DIR --encrypt` is age-encrypted to this
        // collector's evidence key: decrypted here, as it is read.
        let mut reader = reader;
        let mut head = Vec::new();
        (&mut reader)
            .take(crate::crypt::AGE_MAGIC.len() as u64)
            .read_to_end(&mut head)
            .map_err(|e| IngestError::Frames(e.to_string()))?;
        let whole = std::io::Cursor::new(head.clone()).chain(reader);
        if crate::crypt::is_age(&head) {
            let plain = st
                .evidence_key
                .decrypt_stream(whole)
                .map_err(|e| IngestError::Frames(e.to_string()))?;
            import_stream(&st.collections, &cid, &item_id, &actor, plain)
        } else {
            import_stream(&st.collections, &cid, &item_id, &actor, whole)
        }
    })
    .await
    .map_err(|e| internal("import task", e))?;
    match result {
        Ok(v) => Ok(Json(v)),
        Err(e) => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            e.to_string(),
        )),
    }
}

/// Replay an item's frames (`item_begin`, chunks, `item_end`) into the ingest state machine.
/// Public so that the fuzz targets drive the very replay this handler runs.
pub fn import_stream(
    collections: &Collections,
    cid: &str,
    item_id: &str,
    actor: &str,
    mut r: impl Read,
) -> Result<Value, IngestError> {
    fn read(r: &mut impl Read) -> Result<Option<Frame>, IngestError> {
        Frame::read_from(r).map_err(|e| IngestError::Frames(e.to_string()))
    }
    let header = ingest::first_frame(read(&mut r)?)?;
    if header.item_id != item_id || header.collection_id != cid {
        return Err(IngestError::BadItem(format!(
            "stream is for item {} of collection {}",
            header.item_id, header.collection_id
        )));
    }
    let mut ingest = match collections.begin_item(header, None, actor)? {
        Opened::AlreadySealed(sha) => {
            return Ok(json!({"item_id": item_id, "sha256": sha, "already_sealed": true}))
        }
        Opened::Held { ingest, .. } => ingest,
    };
    // A file is one item written once: the same chunk twice, or anything after the manifest,
    // means it was altered.
    let mut seen = std::collections::HashSet::new();
    loop {
        match ingest::next_frame(read(&mut r)?, item_id)? {
            ItemFrame::Chunk(c) => {
                if !seen.insert(c.header.index) {
                    return Err(IngestError::Frames(format!(
                        "chunk {} of item {item_id} appears twice in the file",
                        c.header.index
                    )));
                }
                ingest.chunk(c)?
            }
            ItemFrame::End(m) => {
                let mut rest = [0u8; 1];
                let trailing = loop {
                    match r.read(&mut rest) {
                        Ok(n) => break n,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(IngestError::Frames(e.to_string())),
                    }
                };
                if trailing > 0 {
                    return Err(IngestError::Frames(format!(
                        "bytes follow the manifest of item {item_id}: the file was altered or is not one item"
                    )));
                }
                let sha = collections.finish_item(*ingest, &m, actor)?;
                return Ok(
                    json!({"item_id": item_id, "sha256": sha, "raw_len": m.raw_len, "chunk_count": m.chunk_count}),
                );
            }
        }
    }
}

#[derive(Deserialize)]
struct FinishBody {
    items: Vec<String>,
    #[serde(default)]
    errors: Vec<String>,
}

async fn import_finish(
    AxState(state): AxState<S>,
    Extension(caller): Extension<Caller>,
    Path(cid): Path<String>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    caller.require(ADMINS)?;
    let b: FinishBody = parse_json(&body)?;
    let c = state.collections.get(&cid)?;
    state
        .collections
        .finish(&c.host_id, &cid, &b.items, &b.errors)?;
    Ok(Json(collection_view(&state, &cid)?))
}
