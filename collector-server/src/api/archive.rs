//! `GET /api/v1/collections/{id}/archive`: a whole collection as one tar stream — every sealed
//! item's raw bytes under its name, each manifest, the collection, its custody log with the
//! collector's public key, and a `SHA256SUMS` that `sha256sum -c` checks. Streamed as read
//! (every chunk re-verified), so a 64 GiB collection needs no room at the collector. Items that
//! no longer match their custody are refused before a byte is sent.

use super::auth::READERS;
use super::collections::collection_view;
use super::{body_stream, internal, to_value, ApiResult, Caller, S};
use crate::error::Error;
use crate::evidence::ItemChunks;
use crate::storage::{ItemRow, ItemStatus};
use axum::body::Bytes;
use axum::extract::{Path, State as AxState};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use serde_json::json;
use std::collections::HashSet;
use std::io::Write;

pub(super) fn routes() -> Router<S> {
    Router::new().route("/api/v1/collections/{id}/archive", get(archive))
}

/// A `Write` that hands what it gets to the response body, a block at a time.
struct ChannelWriter {
    tx: tokio::sync::mpsc::Sender<std::io::Result<Bytes>>,
    buf: Vec<u8>,
    sent: u64,
}

impl ChannelWriter {
    const BLOCK: usize = 1 << 20;

    fn flush_block(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let block = std::mem::replace(&mut self.buf, Vec::with_capacity(Self::BLOCK));
        self.sent += block.len() as u64;
        self.tx
            .blocking_send(Ok(Bytes::from(block)))
            .map_err(|_| std::io::Error::other("the client went away"))
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= Self::BLOCK {
            self.flush_block()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.flush_block()
    }
}

/// File names inside the archive: the item's name with anything that could climb out of the
/// directory or confuse a terminal replaced, made unique.
fn entry_name(item: &ItemRow, taken: &mut HashSet<String>) -> String {
    let clean: String = item
        .name
        .trim_start_matches('/')
        .chars()
        .map(|c| if c.is_control() || c == '\\' { '_' } else { c })
        .collect::<String>()
        .split('/')
        .filter(|part| !part.is_empty() && *part != "." && *part != "..")
        .collect::<Vec<_>>()
        .join("/");
    let base = if clean.is_empty() {
        item.id.clone()
    } else {
        clean
    };
    let mut name = base.clone();
    if !taken.insert(name.clone()) {
        name = format!("{base}.{}", &item.id[..item.id.len().min(8)]);
        taken.insert(name.clone());
    }
    name
}

fn header_for(len: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_size(len);
    h.set_mode(0o600);
    h.set_mtime(crate::unix_now().max(0) as u64);
    h.set_entry_type(tar::EntryType::Regular);
    h
}

async fn archive(
    AxState(state): AxState<S>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    caller.require(READERS)?;
    archive_response(state, &id, caller.actor()).await
}

/// The archive as a response, for the API and the console alike.
pub(crate) async fn archive_response(state: S, id: &str, actor: String) -> ApiResult<Response> {
    let c = state.collections.get(id)?;
    let view = collection_view(&state, &c.id)?;
    let custody = json!({
        "collection_id": c.id,
        "public_key": state.custody.public_key_hex(),
        "algorithm": "ed25519 over the SHA-256 record hash; see protocol/src/custody.rs",
        "records": state.meta().custody_records(&c.id)?,
    });
    let items = state.meta().items_of_collection(&c.id)?;
    let mut sealed = Vec::new();
    for item in items.iter().filter(|i| i.status == ItemStatus::Sealed) {
        if let Err(why) = state.custody.check_item(item)? {
            return Err(Error::conflict(format!(
                "item {} ({}) does not match its chain of custody ({why}); the archive is not served. Run `cairn custody verify {}`",
                item.id, item.name, c.id
            ))
            .into());
        }
        let chunks = ItemChunks::open(&state.stores, &item.id).map_err(Error::from)?;
        sealed.push((item.clone(), chunks));
    }
    let root = format!("cairn-{}", c.id);
    let filename = format!("attachment; filename=\"{root}.tar\"");
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(4);
    let st = state.clone();
    let cid = c.id.clone();
    let docs = (
        serde_json::to_vec_pretty(&view).map_err(|e| internal("collection.json", e))?,
        serde_json::to_vec_pretty(&custody).map_err(|e| internal("custody.json", e))?,
    );
    let manifests: Vec<(String, Vec<u8>)> = items
        .iter()
        .filter_map(|i| {
            let m = i
                .manifest
                .as_ref()
                .map(to_value)
                .or_else(|| i.header.as_ref().map(to_value))?;
            Some((
                i.id.clone(),
                m.ok().and_then(|v| serde_json::to_vec_pretty(&v).ok())?,
            ))
        })
        .collect();
    tokio::task::spawn_blocking(move || {
        let mut w = ChannelWriter {
            tx: tx.clone(),
            buf: Vec::with_capacity(ChannelWriter::BLOCK),
            sent: 0,
        };
        let written = (|| -> Result<Vec<String>, String> {
            let mut tar = tar::Builder::new(&mut w);
            fn add<W: Write>(
                tar: &mut tar::Builder<W>,
                path: String,
                bytes: &[u8],
            ) -> Result<(), String> {
                tar.append_data(&mut header_for(bytes.len() as u64), path, bytes)
                    .map_err(|e| e.to_string())
            }
            add(&mut tar, format!("{root}/collection.json"), &docs.0)?;
            add(&mut tar, format!("{root}/custody.json"), &docs.1)?;
            for (item_id, m) in &manifests {
                add(&mut tar, format!("{root}/manifests/{item_id}.json"), m)?;
            }
            let mut taken = HashSet::new();
            let mut sums = String::new();
            let mut names = Vec::new();
            for (item, chunks) in sealed {
                let name = entry_name(&item, &mut taken);
                let len = item.raw_len.unwrap_or(0);
                let mut reader = ChunkReader {
                    chunks,
                    current: std::io::Cursor::new(Vec::new()),
                };
                tar.append_data(
                    &mut header_for(len),
                    format!("{root}/items/{name}"),
                    &mut reader,
                )
                .map_err(|e| format!("item {} ({}): {e}", item.id, item.name))?;
                sums.push_str(&format!(
                    "{}  items/{name}\n",
                    item.sha256.as_deref().unwrap_or("")
                ));
                names.push(name);
            }
            add(&mut tar, format!("{root}/SHA256SUMS"), sums.as_bytes())?;
            tar.finish().map_err(|e| e.to_string())?;
            drop(tar);
            Ok(names)
        })();
        let flushed =
            written.and_then(|names| w.flush().map(|()| names).map_err(|e| e.to_string()));
        let (action, details) = match &flushed {
            Ok(names) => (
                "archive_downloaded",
                json!({"items": names, "bytes": w.sent}),
            ),
            Err(e) => {
                let _ = tx.blocking_send(Err(std::io::Error::other(e.clone())));
                (
                    "download_aborted",
                    json!({"archive": true, "bytes_sent": w.sent, "reason": e}),
                )
            }
        };
        if let Err(e) = st.custody.append(&cid, &actor, action, details) {
            tracing::error!("recording the archive of collection {cid}: {e}");
        }
    });
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        "application/x-tar"
            .parse()
            .map_err(|e| internal("content type", e))?,
    );
    headers.insert(
        header::CONTENT_DISPOSITION,
        filename
            .parse()
            .map_err(|e| internal("content disposition", e))?,
    );
    Ok((headers, body_stream(rx)).into_response())
}

/// The raw bytes of an item, read chunk by verified chunk.
struct ChunkReader {
    chunks: ItemChunks,
    current: std::io::Cursor<Vec<u8>>,
}

impl std::io::Read for ChunkReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        loop {
            let n = self.current.read(out)?;
            if n > 0 || out.is_empty() {
                return Ok(n);
            }
            match self.chunks.next() {
                None => return Ok(0),
                Some(Ok((_, raw))) => self.current = std::io::Cursor::new(raw),
                Some(Err(e)) => return Err(std::io::Error::other(e.to_string())),
            }
        }
    }
}
