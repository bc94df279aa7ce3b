//! The item state machine shared by live uploads (QUIC) and imports (HTTP): begin, chunks, end.
//!
//! Frame order is enforced here once ([`first_frame`], [`next_frame`]): `item_begin`, then
//! chunks, then `item_end` with the manifest. Every chunk is decompressed and re-hashed before
//! it is stored and acknowledged; at the end the whole item is re-hashed and compared with the
//! agent's manifest, and only then sealed. What sealing means beyond the item (custody, the
//! timeline) is the domain's business: this module knows items and chunks only. It is
//! synchronous on purpose: callers run it on a blocking thread, because it is all hashing,
//! zstd and disk I/O.

use crate::evidence::{self, EvidenceError};
use crate::metrics::Metrics;
use crate::storage::{BlobError, ChunkRow, ItemStatus, StorageError, Stores};
use cairn_protocol::chunk::{Chunk, Codec};
use cairn_protocol::manifest::{ItemHeader, ItemManifest};
use cairn_protocol::wire::{Frame, Message};
use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("collection {0} is not known to this collector")]
    UnknownCollection(String),
    #[error("collection {collection} belongs to another host")]
    WrongHost { collection: String },
    #[error("bad item: {0}")]
    BadItem(String),
    #[error("bad item stream: {0}")]
    Frames(String),
    #[error("chunk rejected: {0}")]
    Chunk(String),
    #[error("item rejected: {0}")]
    Rejected(String),
    #[error("collector storage error: {0}")]
    Storage(#[from] StorageError),
    #[error("collector blob store error: {0}")]
    Blob(#[from] BlobError),
    #[error("reading stored evidence: {0}")]
    Evidence(#[from] EvidenceError),
}

impl IngestError {
    /// The collector has no room: the agent keeps its chunks and tries again later.
    pub fn is_storage_full(&self) -> bool {
        matches!(
            self,
            IngestError::Blob(BlobError::Full { .. })
                | IngestError::Storage(StorageError::Full(_))
                | IngestError::Evidence(EvidenceError::Blob(BlobError::Full { .. }))
                | IngestError::Evidence(EvidenceError::Storage(StorageError::Full(_)))
        )
    }

    /// The blob store is away (unreachable, refusing writes): as with a full one, the agent
    /// keeps its chunks and tries again later.
    pub fn is_store_unavailable(&self) -> bool {
        matches!(
            self,
            IngestError::Blob(BlobError::Unavailable { .. })
                | IngestError::Evidence(EvidenceError::Blob(BlobError::Unavailable { .. }))
        )
    }
}

/// What follows `item_begin` on an item stream.
#[derive(Debug)]
pub enum ItemFrame {
    Chunk(Chunk),
    End(Box<ItemManifest>),
}

/// The frame that opens an item stream: `item_begin` with the item's header.
pub fn first_frame(frame: Option<Frame>) -> Result<ItemHeader, IngestError> {
    match frame {
        Some(Frame::Message(Message::ItemBegin(h))) => Ok(*h),
        Some(Frame::Message(m)) => Err(IngestError::Frames(format!(
            "an item stream must start with item_begin, not {}",
            m.name()
        ))),
        Some(Frame::Chunk(_)) => Err(IngestError::Frames(
            "an item stream must start with item_begin, not a chunk".into(),
        )),
        None => Err(IngestError::Frames("the item stream is empty".into())),
    }
}

/// A frame after `item_begin`: a chunk, or `item_end` with the manifest; nothing else.
pub fn next_frame(frame: Option<Frame>, item_id: &str) -> Result<ItemFrame, IngestError> {
    match frame {
        Some(Frame::Chunk(c)) => Ok(ItemFrame::Chunk(c)),
        Some(Frame::Message(Message::ItemEnd(m))) => Ok(ItemFrame::End(m)),
        Some(Frame::Message(m)) => Err(IngestError::Frames(format!(
            "unexpected {} in item stream {item_id}: after item_begin come chunks, then item_end",
            m.name()
        ))),
        None => Err(IngestError::Frames(format!(
            "item stream {item_id} ended before its manifest (item_end): truncated?"
        ))),
    }
}

/// Decompress and re-hash a chunk, persist it and record it; returns its raw bytes.
/// Independent of other chunks, so several run in parallel; the running item hash is
/// [`ItemIngest::fold`]'s job.
pub fn verify_and_store(
    stores: &Stores,
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
    let sha = h.sha256_hex();
    // All-zero chunks are stored as nothing at all: their hash says what they are.
    if h.codec != Codec::Zero {
        stores.blobs.put(&sha, &chunk.payload)?;
    }
    let started = std::time::Instant::now();
    let recorded = stores.meta.record_chunk(
        item_id,
        h.index,
        &sha,
        u64::from(h.raw_len),
        h.codec,
        u64::from(h.stored_len),
    );
    let m = &stores.metrics;
    m.database.observe(started.elapsed(), recorded.is_err());
    recorded?;
    Metrics::add(&m.chunks_received, 1);
    Metrics::add(&m.bytes_received, u64::from(h.raw_len));
    Metrics::add(&m.bytes_stored, u64::from(h.stored_len));
    Ok(decoded.unwrap_or(chunk.payload))
}

/// How an item stream opens.
pub enum Opened {
    /// Send these chunks again only if they are not listed. `new`: the item was not known.
    Held {
        held: Vec<u64>,
        ingest: Box<ItemIngest>,
        new: bool,
    },
    /// The item was sealed before (the agent lost our answer): nothing to send.
    AlreadySealed(String),
}

pub struct ItemIngest {
    stores: Stores,
    header: ItemHeader,
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
        stores: &Stores,
        header: ItemHeader,
        host_id: Option<&str>,
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
        let collection = stores
            .meta
            .get_collection(&header.collection_id)?
            .ok_or_else(|| IngestError::UnknownCollection(header.collection_id.clone()))?;
        if host_id.is_some_and(|h| h != collection.host_id) {
            return Err(IngestError::WrongHost {
                collection: header.collection_id.clone(),
            });
        }
        if let Some(existing) = stores.meta.get_item(&header.item_id)? {
            if existing.collection_id != header.collection_id {
                return Err(IngestError::BadItem(format!(
                    "item {} belongs to collection {}",
                    header.item_id, existing.collection_id
                )));
            }
            if existing.status == ItemStatus::Sealed {
                return Ok(Opened::AlreadySealed(existing.sha256.unwrap_or_default()));
            }
        }
        let new = stores.meta.insert_item(&header)?;
        let held: Vec<u64> = stores
            .meta
            .item_chunks(&header.item_id)?
            .iter()
            .map(|c| c.index)
            .collect();
        Ok(Opened::Held {
            held,
            new,
            ingest: Box::new(ItemIngest {
                stores: stores.clone(),
                header,
                hasher: Sha256::new(),
                next: 0,
                in_order: true,
            }),
        })
    }

    pub fn header(&self) -> &ItemHeader {
        &self.header
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
            &self.stores,
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
        let Ok(chunks) = self.stores.meta.item_chunks(&self.header.item_id) else {
            self.in_order = false;
            return;
        };
        let from = self.next;
        for c in chunks.iter().filter(|c| c.index >= from && c.index < upto) {
            if c.index != self.next {
                break;
            }
            match evidence::read_chunk(&self.stores, c) {
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

    /// Check the manifest against what was received: seal the item, or record why not and
    /// return [`IngestError::Rejected`]. Returns the item's SHA-256.
    pub fn finish(mut self, manifest: &ItemManifest) -> Result<String, IngestError> {
        match self.check(manifest) {
            Ok(()) => {
                self.stores.meta.seal_item(manifest)?;
                Ok(manifest.sha256.clone())
            }
            Err(reason) => {
                self.stores
                    .meta
                    .reject_item(&self.header.item_id, &reason, Some(manifest))?;
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
        let chunks: Vec<ChunkRow> = self
            .stores
            .meta
            .item_chunks(&self.header.item_id)
            .map_err(|e| e.to_string())?;
        let computed = if self.in_order && self.next == chunks.len() as u64 {
            hex::encode(std::mem::take(&mut self.hasher).finalize())
        } else {
            // Out of order or resumed across restarts: re-read the whole item from the store.
            evidence::ItemChunks::open(&self.stores, &self.header.item_id)
                .and_then(|c| c.rehash())
                .map_err(|e| e.to_string())?
                .sha256
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn frames_come_in_one_order() {
        assert!(matches!(
            first_frame(None),
            Err(IngestError::Frames(m)) if m.contains("empty")
        ));
        let e = first_frame(Some(Frame::Message(Message::CommandAccepted {
            collection_id: "c".into(),
        })))
        .unwrap_err();
        assert!(e.to_string().contains("must start with item_begin"), "{e}");
        let e = next_frame(None, "i1").unwrap_err();
        assert!(e.to_string().contains("ended before its manifest"), "{e}");
        let e = next_frame(
            Some(Frame::Message(Message::CommandAccepted {
                collection_id: "c".into(),
            })),
            "i1",
        )
        .unwrap_err();
        assert!(e.to_string().contains("unexpected command_accepted"), "{e}");
    }
}
