//! The item state machine shared by live uploads (QUIC) and imports (HTTP): begin, chunks, end.
//!
//! Every chunk is decompressed and re-hashed before it is stored and acknowledged; at the end
//! the whole item is re-hashed and compared with the agent's manifest. Only then is it sealed
//! and the seal written to the custody log. It is synchronous on purpose: callers run it on a
//! blocking thread, off the async executor, because it is all hashing, zstd and disk I/O.

use crate::custody::Custody;
use crate::db::Db;
use crate::store::{codec_name, codec_parse, ChunkStore};
use cairn_protocol::chunk::Chunk;
use cairn_protocol::manifest::{ItemHeader, ItemManifest};
use serde_json::json;
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// What the ingest path needs from the collector.
#[derive(Clone)]
pub struct Ctx {
    pub db: Arc<Db>,
    pub store: ChunkStore,
    pub custody: Arc<Custody>,
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("collection {0} is not known to this collector")]
    UnknownCollection(String),
    #[error("collection {collection} belongs to another host")]
    WrongHost { collection: String },
    #[error("bad item: {0}")]
    BadItem(String),
    #[error("chunk rejected: {0}")]
    Chunk(String),
    #[error("item rejected: {0}")]
    Rejected(String),
    #[error("collector storage error: {0}")]
    Storage(String),
}

impl From<anyhow::Error> for IngestError {
    fn from(e: anyhow::Error) -> Self {
        IngestError::Storage(format!("{e:#}"))
    }
}

/// Decompress and re-hash a chunk, persist it and record it; returns its raw bytes.
/// Independent of other chunks, so several run in parallel; the running item hash is
/// [`ItemIngest::fold`]'s job.
pub fn verify_and_store(
    ctx: &Ctx,
    item_id: &str,
    chunk_size: u64,
    chunk: Chunk,
) -> Result<Vec<u8>, IngestError> {
    let h = chunk.header.clone();
    if u64::from(h.raw_len) > chunk_size {
        return Err(IngestError::Chunk(format!(
            "chunk {} is {} bytes, larger than the item's chunk size {chunk_size}",
            h.index, h.raw_len
        )));
    }
    // An uncompressed payload is verified in place and becomes the raw bytes without a copy.
    let decoded = match chunk
        .verify()
        .map_err(|e| IngestError::Chunk(e.to_string()))?
    {
        std::borrow::Cow::Borrowed(_) => None,
        std::borrow::Cow::Owned(raw) => Some(raw),
    };
    ctx.store
        .put(&chunk)
        .map_err(|e| IngestError::Storage(e.to_string()))?;
    ctx.db.record_chunk(
        item_id,
        h.index,
        &h.sha256_hex(),
        u64::from(h.raw_len),
        codec_name(h.codec),
        u64::from(h.stored_len),
    )?;
    Ok(decoded.unwrap_or(chunk.payload))
}

/// A stored chunk's raw bytes, verified against its hash on the way out of the store.
pub fn read_chunk(ctx: &Ctx, c: &crate::db::ChunkRow) -> Result<Vec<u8>, IngestError> {
    let (codec, _) = ctx
        .db
        .blob_codec(&c.sha256)?
        .ok_or_else(|| IngestError::Storage(format!("chunk {} has no blob row", c.index)))?;
    ctx.store
        .get(
            &c.sha256,
            codec_parse(&codec).map_err(|e| IngestError::Storage(e.to_string()))?,
            c.raw_len,
            c.index,
        )
        .map_err(|e| IngestError::Storage(e.to_string()))
}

/// How an item stream opens.
pub enum Opened {
    /// Send these chunks again only if they are not listed.
    Held(Vec<u64>, Box<ItemIngest>),
    /// The item was sealed before (the agent lost our answer): nothing to send.
    AlreadySealed(String),
}

pub struct ItemIngest {
    ctx: Ctx,
    header: ItemHeader,
    actor: String,
    /// Running SHA-256 over chunks 0..next, valid while chunks arrive in order.
    hasher: Sha256,
    next: u64,
    in_order: bool,
}

fn valid_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

impl ItemIngest {
    /// Open an item. `host_id`, when given, must own the collection (live uploads).
    pub fn begin(
        ctx: &Ctx,
        header: ItemHeader,
        host_id: Option<&str>,
        actor: &str,
    ) -> Result<Opened, IngestError> {
        if !valid_id(&header.item_id) {
            return Err(IngestError::BadItem(format!(
                "item id {:?} is not a valid id",
                header.item_id
            )));
        }
        if header.chunk_size == 0 || header.chunk_size > cairn_protocol::CHUNK_SIZE as u64 {
            return Err(IngestError::BadItem(format!(
                "chunk size {} is out of range",
                header.chunk_size
            )));
        }
        let collection = ctx
            .db
            .get_collection(&header.collection_id)?
            .ok_or_else(|| IngestError::UnknownCollection(header.collection_id.clone()))?;
        if host_id.is_some_and(|h| h != collection.host_id) {
            return Err(IngestError::WrongHost {
                collection: header.collection_id.clone(),
            });
        }
        if let Some(existing) = ctx.db.get_item(&header.item_id)? {
            if existing.collection_id != header.collection_id {
                return Err(IngestError::BadItem(format!(
                    "item {} belongs to collection {}",
                    header.item_id, existing.collection_id
                )));
            }
            if existing.status == "sealed" {
                return Ok(Opened::AlreadySealed(existing.sha256.unwrap_or_default()));
            }
        }
        if ctx.db.insert_item(&header)? {
            ctx.custody.append(
                &ctx.db,
                &header.collection_id,
                actor,
                "item_started",
                json!({"item_id": header.item_id, "name": header.source.name, "kind": header.kind, "source": header.source}),
            )?;
        }
        let held: Vec<u64> = ctx
            .db
            .item_chunks(&header.item_id)?
            .iter()
            .map(|c| c.index)
            .collect();
        Ok(Opened::Held(
            held,
            Box::new(ItemIngest {
                ctx: ctx.clone(),
                header,
                actor: actor.to_string(),
                hasher: Sha256::new(),
                next: 0,
                in_order: true,
            }),
        ))
    }

    pub fn item_id(&self) -> &str {
        &self.header.item_id
    }

    pub fn chunk_size(&self) -> u64 {
        self.header.chunk_size
    }

    /// Verify, store and record one chunk. After `Ok` the chunk is durable and may be acked.
    pub fn chunk(&mut self, chunk: Chunk) -> Result<(), IngestError> {
        let index = chunk.header.index;
        let raw = verify_and_store(
            &self.ctx,
            &self.header.item_id,
            self.header.chunk_size,
            chunk,
        )?;
        self.fold(index, &raw);
        Ok(())
    }

    /// Feed a verified chunk's raw bytes to the running item hash (chunks arrive in order
    /// except after a resume; then the stored prefix is folded in first).
    pub fn fold(&mut self, index: u64, raw: &[u8]) {
        if self.in_order && index > self.next {
            self.catch_up(index);
        }
        if self.in_order && index == self.next {
            self.hasher.update(raw);
            self.next += 1;
        } else if index >= self.next {
            self.in_order = false;
        }
    }

    fn catch_up(&mut self, upto: u64) {
        let Ok(chunks) = self.ctx.db.item_chunks(&self.header.item_id) else {
            self.in_order = false;
            return;
        };
        let from = self.next;
        for c in chunks.iter().filter(|c| c.index >= from && c.index < upto) {
            if c.index != self.next {
                break;
            }
            match self.read_stored(c) {
                Ok(raw) => {
                    self.hasher.update(&raw);
                    self.next += 1;
                }
                Err(_) => break,
            }
        }
        if self.next != upto {
            self.in_order = false;
        }
    }

    fn read_stored(&self, c: &crate::db::ChunkRow) -> Result<Vec<u8>, IngestError> {
        read_chunk(&self.ctx, c)
    }

    /// Check the manifest against what was received and seal the item.
    pub fn finish(mut self, manifest: &ItemManifest) -> Result<String, IngestError> {
        let result = self.check(manifest);
        let db = &self.ctx.db;
        let cid = &self.header.collection_id;
        match result {
            Ok(()) => {
                db.seal_item(manifest)?;
                self.ctx.custody.append(
                    db,
                    cid,
                    &self.actor,
                    "item_sealed",
                    json!({
                        "item_id": manifest.header.item_id,
                        "name": manifest.header.source.name,
                        "sha256": manifest.sha256,
                        "raw_len": manifest.raw_len,
                        "chunk_count": manifest.chunk_count,
                        "acquisition_status": manifest.status,
                        "gaps": manifest.gaps.len(),
                        "acquisition_start": manifest.header.acquisition_start,
                        "acquisition_end": manifest.acquisition_end,
                        "verified_by": "collector re-hashed every chunk and the whole item",
                    }),
                )?;
                // The timeline is built before the agent hears "sealed", so a finished
                // collection's events are queryable; a failure is recorded, never fatal.
                if let Err(e) = crate::timeline::build_for_item(&self.ctx, manifest) {
                    tracing::warn!("timeline of item {}: {e:#}", manifest.header.item_id);
                }
                Ok(manifest.sha256.clone())
            }
            Err(reason) => {
                db.reject_item(&self.header.item_id, &reason, Some(manifest))?;
                self.ctx.custody.append(
                    db,
                    cid,
                    &self.actor,
                    "item_rejected",
                    json!({"item_id": self.header.item_id, "name": self.header.source.name, "reason": reason}),
                )?;
                Err(IngestError::Rejected(reason))
            }
        }
    }

    fn check(&mut self, manifest: &ItemManifest) -> Result<(), String> {
        if manifest.header.item_id != self.header.item_id {
            return Err(format!(
                "manifest is for item {}, the stream was opened for {}",
                manifest.header.item_id, self.header.item_id
            ));
        }
        let chunks = self
            .ctx
            .db
            .item_chunks(&self.header.item_id)
            .map_err(|e| e.to_string())?;
        let computed = if self.in_order && self.next == chunks.len() as u64 {
            hex::encode(std::mem::take(&mut self.hasher).finalize())
        } else {
            // Out of order or resumed across restarts: re-read the whole item from the store.
            let mut h = Sha256::new();
            for c in &chunks {
                h.update(self.read_stored(c).map_err(|e| e.to_string())?);
            }
            hex::encode(h.finalize())
        };
        let received: Vec<(u64, String, u64)> = chunks
            .into_iter()
            .map(|c| (c.index, c.sha256, c.raw_len))
            .collect();
        manifest
            .verify_against(&received, &computed)
            .map_err(|e| e.to_string())
    }
}
