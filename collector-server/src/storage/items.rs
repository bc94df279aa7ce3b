//! Items (one raw byte stream each), the chunks each item is made of, and the codec each
//! stored payload has.

use super::Result;
use cairn_protocol::chunk::Codec;
use cairn_protocol::manifest::{ItemHeader, ItemManifest};
use serde::Serialize;

/// The collector's view of an item (how acquisition ended on the host is in its manifest).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ItemStatus {
    /// Its stream is open or was cut; chunks may still come.
    Receiving,
    /// Every chunk and the whole item re-hashed and matched the manifest.
    Sealed,
    /// The manifest did not match what arrived.
    Rejected,
    /// Its agent went away (restarted, died) before the item was complete.
    Failed,
}

impl ItemStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            ItemStatus::Receiving => "receiving",
            ItemStatus::Sealed => "sealed",
            ItemStatus::Rejected => "rejected",
            ItemStatus::Failed => "failed",
        }
    }
    pub fn parse(s: &str) -> Option<ItemStatus> {
        Some(match s {
            "receiving" => ItemStatus::Receiving,
            "sealed" => ItemStatus::Sealed,
            "rejected" => ItemStatus::Rejected,
            "failed" => ItemStatus::Failed,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ItemRow {
    pub id: String,
    pub collection_id: String,
    pub name: String,
    pub kind: String,
    pub status: ItemStatus,
    pub raw_len: Option<u64>,
    pub sha256: Option<String>,
    pub chunk_count: Option<u64>,
    pub chunks_received: u64,
    pub duplicate_chunks: u64,
    pub started_at: String,
    pub sealed_at: Option<String>,
    pub error: Option<String>,
    #[serde(skip)]
    pub header: Option<ItemHeader>,
    #[serde(skip)]
    pub manifest: Option<ItemManifest>,
}

/// One chunk of an item: where it is in the item and which payload holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkRow {
    pub index: u64,
    pub sha256: String,
    pub raw_len: u64,
}

/// How a codec is named in the store.
pub fn codec_name(c: Codec) -> &'static str {
    match c {
        Codec::None => "none",
        Codec::Zstd => "zstd",
        Codec::Zero => "zero",
    }
}

pub fn codec_parse(s: &str) -> Option<Codec> {
    match s {
        "none" => Some(Codec::None),
        "zstd" => Some(Codec::Zstd),
        "zero" => Some(Codec::Zero),
        _ => None,
    }
}

pub trait ItemStore {
    /// Register an item when its first stream opens; false when it already existed.
    fn insert_item(&self, header: &ItemHeader) -> Result<bool>;
    fn get_item(&self, id: &str) -> Result<Option<ItemRow>>;
    /// Ids of items that start with `prefix` (at most `limit`).
    fn item_ids_with_prefix(&self, prefix: &str, limit: u32) -> Result<Vec<String>>;
    fn items_of_collection(&self, collection_id: &str) -> Result<Vec<ItemRow>>;
    /// The item's chunks in index order.
    fn item_chunks(&self, item_id: &str) -> Result<Vec<ChunkRow>>;
    /// The codec and stored length of a payload.
    fn blob_codec(&self, sha256: &str) -> Result<Option<(Codec, u64)>>;
    /// Record a verified, persisted chunk. False when the item already held that index
    /// (counted as a duplicate: the agent sent a chunk the collector had acknowledged).
    fn record_chunk(
        &self,
        item_id: &str,
        index: u64,
        sha256: &str,
        raw_len: u64,
        codec: Codec,
        stored_len: u64,
    ) -> Result<bool>;
    fn seal_item(&self, manifest: &ItemManifest) -> Result<()>;
    fn reject_item(&self, id: &str, error: &str, manifest: Option<&ItemManifest>) -> Result<()>;
    /// Mark an item that will never complete (its agent went away); returns whether it was
    /// still receiving.
    fn fail_item(&self, id: &str, error: &str) -> Result<bool>;
}
