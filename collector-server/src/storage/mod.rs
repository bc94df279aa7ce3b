//! Where the collector keeps things, behind two traits: the seam for other back ends.
//!
//! - [`MetadataStore`]: tokens, hosts, collections, items and their chunks, custody, live
//!   events, the timeline, readiness, saved searches and containment actions — one trait per
//!   group of tables, each in its own file, so a back end is written group by group.
//!   [`sqlite`] (one file, one process) is the first; [`postgres`] (one database shared by
//!   several collectors, its connections on threads of their own) the second. Both compile the
//!   timeline's queries with `timeline_sql`, and one conformance suite (`conformance/`, tests
//!   only) holds them to the same answers.
//! - [`BlobStore`]: chunk payloads by the SHA-256 of their raw bytes. [`chunk_dir`] (a
//!   content-addressed directory) is the first.
//! - [`HeadStore`]: each custody chain's newest head, kept apart from the metadata so that
//!   a truncated chain is detected. [`head_file`] (an append-only file) is the first.
//!
//! Nothing here knows what a collection means or checks a hash: that is `ingest`, `evidence`
//! and the domain above. Errors are typed: a caller can tell a conflict from a broken disk.

pub mod blobs;
pub mod cases;
pub mod chunk_dir;
pub mod collections;
#[cfg(test)]
mod conformance;
pub mod console;
pub mod containment;
pub mod custody;
pub mod encrypted_blobs;
pub mod events;
pub mod head_file;
pub mod heads;
pub mod hosts;
pub mod items;
pub mod postgres;
pub mod readiness;
pub mod s3;
pub mod searches;
pub mod sequences;
pub mod sqlite;
pub mod timeline;
pub(crate) mod timeline_sql;
pub mod tokens;

pub use blobs::{BlobError, BlobStore, Capacity};
pub use cases::CaseStore;
pub use collections::{CollectionOrigin, CollectionRow, CollectionStatus, CollectionStore};
pub use console::{ConsoleSession, ConsoleStore};
pub use containment::{ContainmentRow, ContainmentStatus, ContainmentStore};
pub use custody::CustodyStore;
pub use events::{EventStore, LiveEvent};
pub use heads::HeadStore;
pub use hosts::{HostOrigin, HostRow, HostStore};
pub use items::{ChunkRow, ItemRow, ItemStatus, ItemStore};
pub use readiness::ReadinessStore;
pub use searches::SearchStore;
pub use sequences::{SequenceRow, SequenceStore};
pub use timeline::TimelineStore;
pub use tokens::{EnrollRefusal, Role, TokenStore};

use std::sync::Arc;

/// Why the metadata store could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The back end failed (I/O, a locked or corrupt database): a real fault.
    #[error("metadata store: {what}: {source}")]
    Backend {
        what: &'static str,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A row with that identity exists already.
    #[error("{0} already exists")]
    Conflict(String),
    /// A stored value no longer reads as what was written.
    #[error("stored {what} is not readable: {detail}")]
    Corrupt { what: &'static str, detail: String },
    /// The volume under the store is full.
    #[error("storage full: {0}; free space or grow the volume, uploads resume by themselves")]
    Full(String),
}

pub type Result<T> = std::result::Result<T, StorageError>;

/// Everything the collector keeps about hosts and evidence, apart from the evidence bytes.
pub trait MetadataStore:
    TokenStore
    + HostStore
    + CollectionStore
    + ItemStore
    + CustodyStore
    + EventStore
    + TimelineStore
    + ReadinessStore
    + SearchStore
    + ConsoleStore
    + CaseStore
    + ContainmentStore
    + SequenceStore
    + Send
    + Sync
{
}

impl<T> MetadataStore for T where
    T: TokenStore
        + HostStore
        + CollectionStore
        + ItemStore
        + CustodyStore
        + EventStore
        + TimelineStore
        + ReadinessStore
        + SearchStore
        + ConsoleStore
        + CaseStore
        + ContainmentStore
        + SequenceStore
        + Send
        + Sync
{
}

/// The stores, as every layer above holds them.
#[derive(Clone)]
pub struct Stores {
    pub meta: Arc<dyn MetadataStore>,
    pub blobs: Arc<dyn BlobStore>,
    pub heads: Arc<dyn HeadStore>,
    /// A private directory for scratch files (the timeline's copies of items it reads at
    /// random), on the data directory's disk rather than in a RAM-backed `/tmp`.
    pub scratch: std::path::PathBuf,
    /// Counters for `/metrics`, shared by every layer that counts.
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// Values written to the store as JSON text and read back.
pub(crate) fn to_json<T: serde::Serialize>(what: &'static str, v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| StorageError::Corrupt {
        what,
        detail: e.to_string(),
    })
}

/// A JSON column read leniently: a value that no longer parses is `None`, not an error that
/// would hide the whole row.
pub(crate) fn from_json<T: serde::de::DeserializeOwned>(s: Option<String>) -> Option<T> {
    s.and_then(|s| serde_json::from_str(&s).ok())
}
