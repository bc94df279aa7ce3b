//! Chunk payloads by the SHA-256 of their raw bytes: put, get, exists, delete.
//!
//! A payload is stored as the agent sent it once the collector verified it (zstd or raw); what
//! it decodes to is checked on every read by `evidence`, never trusted from here. All-zero
//! chunks have no payload at all and are never put.

use std::io;

/// Where chunk payloads live.
pub trait BlobStore: Send + Sync {
    /// Store a payload under its hash, durably before returning; storing a hash again is a no-op.
    fn put(&self, sha256: &str, payload: &[u8]) -> Result<(), BlobError>;
    /// The payload stored under a hash.
    fn get(&self, sha256: &str) -> Result<Vec<u8>, BlobError>;
    fn exists(&self, sha256: &str) -> Result<bool, BlobError>;
    /// Remove a payload no item refers to any more; removing one that is absent is a no-op.
    fn delete(&self, sha256: &str) -> Result<(), BlobError>;
    /// How much room is left, where the store has a bound (a filesystem); `None` otherwise.
    fn capacity(&self) -> Result<Option<Capacity>, BlobError> {
        Ok(None)
    }
    /// Chunks of one item worth verifying and storing at once. A local disk is bound by
    /// bandwidth, so a few; an object store by the latency of each request, so more.
    fn writes_in_parallel(&self) -> usize {
        3
    }
}

/// Room in a bounded store. Chunks are refused once `free_bytes` would go below
/// `reserve_bytes`, so the database and the logs beside them keep room to say what happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Capacity {
    pub total_bytes: u64,
    pub free_bytes: u64,
    pub reserve_bytes: u64,
}

impl Capacity {
    pub fn full(&self) -> bool {
        self.free_bytes <= self.reserve_bytes
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("chunk {sha256} is missing from the blob store ({location})")]
    Missing { sha256: String, location: String },
    #[error("blob store {location}: {source}")]
    Io { location: String, source: io::Error },
    /// The store cannot take or give evidence now (an object store unreachable, overloaded or
    /// refusing writes): uploads pause and go on when it answers again.
    #[error("blob store {location} unavailable: {detail}; uploads resume by themselves when it answers again")]
    Unavailable { location: String, detail: String },
    #[error("{0:?} is not a SHA-256 in hex")]
    BadKey(String),
    /// No room for more evidence: the store is full (or at its reserve).
    #[error("storage full: {location} has {free_bytes} bytes free, {reserve_bytes} kept in reserve; free space or grow the volume, uploads resume by themselves")]
    Full {
        location: String,
        free_bytes: u64,
        reserve_bytes: u64,
    },
}

/// Keys are 64 lower-case hex digits: nothing else reaches a path or an object name.
pub fn check_key(sha256: &str) -> Result<(), BlobError> {
    if sha256.len() == 64
        && sha256
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        Ok(())
    } else {
        Err(BlobError::BadKey(sha256.chars().take(80).collect()))
    }
}
