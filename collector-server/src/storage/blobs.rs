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
}

#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("chunk {sha256} is missing from the blob store ({location})")]
    Missing { sha256: String, location: String },
    #[error("blob store {location}: {source}")]
    Io { location: String, source: io::Error },
    #[error("{0:?} is not a SHA-256 in hex")]
    BadKey(String),
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
