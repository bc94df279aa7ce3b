//! Collections: what one request produced on one host, and where it is in its life.

use super::Result;
use cairn_protocol::manifest::CollectRequest;
use serde::Serialize;

/// Where a collection is in its life. Only the last three are final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CollectionStatus {
    /// Stored, not yet accepted by the agent (it may be disconnected).
    Requested,
    /// The agent is collecting (or an import is in progress).
    Running,
    /// Waiting for a free slot: the host or the collector has as many collections running as
    /// it allows.
    Queued,
    /// Uploads wait for room at the collector (storage full); they resume by themselves.
    Paused,
    /// Every item sealed and nothing went wrong.
    Sealed,
    /// Some items sealed, something went wrong.
    Partial,
    /// Nothing was sealed.
    Failed,
}

impl CollectionStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            CollectionStatus::Requested => "requested",
            CollectionStatus::Running => "running",
            CollectionStatus::Queued => "queued",
            CollectionStatus::Paused => "paused",
            CollectionStatus::Sealed => "sealed",
            CollectionStatus::Partial => "partial",
            CollectionStatus::Failed => "failed",
        }
    }
    pub fn parse(s: &str) -> Option<CollectionStatus> {
        Some(match s {
            "requested" => CollectionStatus::Requested,
            "running" => CollectionStatus::Running,
            "queued" => CollectionStatus::Queued,
            "paused" => CollectionStatus::Paused,
            "sealed" => CollectionStatus::Sealed,
            "partial" => CollectionStatus::Partial,
            "failed" => CollectionStatus::Failed,
            _ => return None,
        })
    }
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            CollectionStatus::Sealed | CollectionStatus::Partial | CollectionStatus::Failed
        )
    }
}

/// How a collection came to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CollectionOrigin {
    /// Requested of a connected (or connecting) agent.
    Live,
    /// Written offline by `cairn-agent collect --out` and imported.
    Import,
    /// The readiness self-test's evidence round trip.
    Selftest,
}

impl CollectionOrigin {
    pub fn as_str(&self) -> &'static str {
        match self {
            CollectionOrigin::Live => "live",
            CollectionOrigin::Import => "import",
            CollectionOrigin::Selftest => "selftest",
        }
    }
    pub fn parse(s: &str) -> Option<CollectionOrigin> {
        Some(match s {
            "live" => CollectionOrigin::Live,
            "import" => CollectionOrigin::Import,
            "selftest" => CollectionOrigin::Selftest,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct CollectionRow {
    pub id: String,
    pub host_id: String,
    pub profile: String,
    pub reason: String,
    pub requested_by: String,
    pub status: CollectionStatus,
    pub requested_at: String,
    pub finished_at: Option<String>,
    pub errors: Vec<String>,
    pub origin: CollectionOrigin,
    #[serde(skip)]
    pub request: Option<CollectRequest>,
}

pub trait CollectionStore {
    /// A new collection; [`super::StorageError::Conflict`] when its id exists.
    fn insert_collection(
        &self,
        host_id: &str,
        req: &CollectRequest,
        status: CollectionStatus,
        origin: CollectionOrigin,
    ) -> Result<()>;
    /// A new status (a final one sets `finished_at`), and the errors when given.
    fn set_collection_status(
        &self,
        id: &str,
        status: CollectionStatus,
        errors: Option<&[String]>,
    ) -> Result<()>;
    fn get_collection(&self, id: &str) -> Result<Option<CollectionRow>>;
    /// Ids of collections that start with `prefix` (at most `limit`).
    fn collection_ids_with_prefix(&self, prefix: &str, limit: u32) -> Result<Vec<String>>;
    /// Requests not yet accepted by the host's agent (requested or queued), oldest first.
    fn pending_requests(&self, host_id: &str) -> Result<Vec<CollectRequest>>;
    /// Which of `hosts` have requests in status `requested` (new, or sent and not yet
    /// accepted): how an instance learns of requests made through another instance sharing
    /// the database. Queued ones are not named here; see [`CollectionStore::queued_hosts`].
    fn hosts_with_requested(&self, hosts: &[String]) -> Result<Vec<String>>;
    /// Which of `hosts` have queued requests and room for one more (fewer than `per_host` live
    /// collections running), each with its oldest queued request's time, oldest first, at
    /// most `limit`: the hosts to wake when slots are free, so a freed slot wakes a few
    /// control loops and not every host that waits.
    fn queued_hosts(
        &self,
        hosts: &[String],
        per_host: u64,
        limit: u64,
    ) -> Result<Vec<(String, String)>>;
    /// Mark requests still `requested` as `queued` (a request in another status is left as
    /// it is): one write for all of a host's requests that wait.
    fn mark_queued(&self, ids: &[String]) -> Result<()>;
    /// Live collections running (or paused) now, on one host or on all.
    fn running_collections(&self, host_id: Option<&str>) -> Result<u64>;
    /// Newest first (request time, then id), self-test collections left out; `before` (a
    /// collection id) pages on from the row after it, so a script can walk every row.
    fn list_collections(
        &self,
        host_id: Option<&str>,
        before: Option<&str>,
        limit: u32,
    ) -> Result<Vec<CollectionRow>>;
    /// Delete a host's self-test collections other than `keep`, with their items, chunks and
    /// custody; returns the blob hashes no item refers to any more, for the blob store.
    fn prune_selftest_collections(&self, host_id: &str, keep: &str) -> Result<Vec<String>>;
}
