//! The domain's errors, by what the caller should do about them: the edges turn each kind
//! into its answer (HTTP status, QUIC error code), so only real faults become a 500.

use crate::evidence::EvidenceError;
use crate::ingest::IngestError;
use crate::storage::{BlobError, StorageError};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// What was named does not exist.
    #[error("{0}")]
    NotFound(String),
    /// It exists already, or is in a state that does not allow this.
    #[error("{0}")]
    Conflict(String),
    /// The request itself is wrong; the message names the field.
    #[error("{0}")]
    Invalid(String),
    /// The caller's role or policy does not allow this.
    #[error("{0}")]
    Forbidden(String),
    /// Too many of these in too short a time.
    #[error("{0}")]
    RateLimited(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Blob(#[from] BlobError),
    #[error(transparent)]
    Evidence(#[from] EvidenceError),
    #[error(transparent)]
    Ingest(#[from] IngestError),
    /// A fault of the collector itself (a key that cannot sign, a task that died).
    #[error("{0}")]
    Internal(String),
}

impl Error {
    pub fn not_found(m: impl Into<String>) -> Error {
        Error::NotFound(m.into())
    }
    pub fn conflict(m: impl Into<String>) -> Error {
        Error::Conflict(m.into())
    }
    pub fn invalid(m: impl Into<String>) -> Error {
        Error::Invalid(m.into())
    }
}

pub type Result<T> = std::result::Result<T, Error>;
