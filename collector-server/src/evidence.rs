//! The one verified read of stored evidence: every chunk that leaves the blob store is
//! decoded and re-hashed against the SHA-256 it was stored under, whoever asked (a download,
//! a custody verification, the timeline builder, ingest re-reading a resumed item).

use crate::storage::{BlobError, ChunkRow, StorageError, Stores};
use cairn_protocol::chunk::{open_payload, ChunkError, ChunkHeader, Codec};

#[derive(Debug, thiserror::Error)]
pub enum EvidenceError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Blob(#[from] BlobError),
    #[error("chunk {index} ({sha256}) has no blob row")]
    NoBlobRow { index: u64, sha256: String },
    #[error("stored chunk {index} ({sha256}) is corrupt: {source}")]
    Corrupt {
        index: u64,
        sha256: String,
        source: ChunkError,
    },
}

/// A stored chunk's raw bytes, verified, with its codec looked up.
pub fn read_chunk(stores: &Stores, c: &ChunkRow) -> Result<Vec<u8>, EvidenceError> {
    let codec = codec_of(stores, c)?;
    read_chunk_as(stores, c, codec)
}

fn codec_of(stores: &Stores, c: &ChunkRow) -> Result<Codec, EvidenceError> {
    stores
        .meta
        .blob_codec(&c.sha256)?
        .map(|(codec, _)| codec)
        .ok_or_else(|| EvidenceError::NoBlobRow {
            index: c.index,
            sha256: c.sha256.clone(),
        })
}

/// A stored chunk's raw bytes, verified, when its codec is known.
pub fn read_chunk_as(
    stores: &Stores,
    c: &ChunkRow,
    codec: Codec,
) -> Result<Vec<u8>, EvidenceError> {
    let corrupt = |source| EvidenceError::Corrupt {
        index: c.index,
        sha256: c.sha256.clone(),
        source,
    };
    let mut hash = [0u8; 32];
    hex::decode_to_slice(&c.sha256, &mut hash)
        .map_err(|_| corrupt(ChunkError::Truncated("bad hash in the database")))?;
    let raw_len = u32::try_from(c.raw_len)
        .map_err(|_| corrupt(ChunkError::Truncated("raw length out of range")))?;
    let payload = if codec == Codec::Zero {
        Vec::new()
    } else {
        stores.blobs.get(&c.sha256)?
    };
    let header = ChunkHeader {
        index: c.index,
        raw_len,
        codec,
        sha256: hash,
        stored_len: u32::try_from(payload.len())
            .map_err(|_| corrupt(ChunkError::Truncated("stored payload out of range")))?,
    };
    open_payload(&header, &payload).map_err(corrupt)
}

/// An item's chunks in order, each read and verified as it is taken. Every chunk's codec is
/// looked up when it is opened, so a broken index fails before the first byte is served.
pub struct ItemChunks {
    stores: Stores,
    chunks: std::vec::IntoIter<(ChunkRow, Codec)>,
}

impl ItemChunks {
    pub fn open(stores: &Stores, item_id: &str) -> Result<ItemChunks, EvidenceError> {
        let mut chunks = Vec::new();
        for c in stores.meta.item_chunks(item_id)? {
            let codec = codec_of(stores, &c)?;
            chunks.push((c, codec));
        }
        Ok(ItemChunks {
            stores: stores.clone(),
            chunks: chunks.into_iter(),
        })
    }

    /// How many chunks are left.
    pub fn len(&self) -> usize {
        self.chunks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.chunks.len() == 0
    }

    /// Read every chunk and hash the whole item: what it hashes to, as stored now.
    pub fn rehash(self) -> Result<Rehashed, EvidenceError> {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        let mut out = Rehashed::default();
        for c in self {
            let (_, raw) = c?;
            h.update(&raw);
            out.chunks += 1;
            out.bytes += raw.len() as u64;
        }
        out.sha256 = hex::encode(h.finalize());
        Ok(out)
    }
}

/// What an item's stored chunks hash to.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Rehashed {
    pub sha256: String,
    pub chunks: u64,
    pub bytes: u64,
}

impl Iterator for ItemChunks {
    type Item = Result<(ChunkRow, Vec<u8>), EvidenceError>;

    fn next(&mut self) -> Option<Self::Item> {
        let (c, codec) = self.chunks.next()?;
        Some(read_chunk_as(&self.stores, &c, codec).map(|raw| (c, raw)))
    }
}

/// An item's raw bytes as a `BufRead`, one verified chunk in memory at a time: what the
/// timeline reads, however large the item. A chunk that fails verification is a read error
/// (an [`EvidenceError`] inside the `io::Error`), never bytes served.
pub struct ItemReader {
    chunks: ItemChunks,
    chunk: Vec<u8>,
    pos: usize,
}

impl ItemReader {
    pub fn open(stores: &Stores, item_id: &str) -> Result<ItemReader, EvidenceError> {
        Ok(ItemReader {
            chunks: ItemChunks::open(stores, item_id)?,
            chunk: Vec::new(),
            pos: 0,
        })
    }
}

impl std::io::Read for ItemReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        use std::io::BufRead;
        let avail = self.fill_buf()?;
        let n = avail.len().min(out.len());
        out[..n].copy_from_slice(&avail[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl std::io::BufRead for ItemReader {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        while self.pos >= self.chunk.len() {
            match self.chunks.next() {
                None => return Ok(&[]),
                Some(Err(e)) => return Err(std::io::Error::other(e)),
                Some(Ok((_, raw))) => {
                    // The previous chunk is freed here: one chunk held at a time.
                    self.chunk = raw;
                    self.pos = 0;
                }
            }
        }
        Ok(&self.chunk[self.pos..])
    }

    fn consume(&mut self, n: usize) {
        self.pos = self.pos.saturating_add(n).min(self.chunk.len());
    }
}
