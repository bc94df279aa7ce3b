//! Live events exactly as the agents' sensors sent them, with the fields they are found by.

use super::timeline::Event;
use super::Result;

/// One live event line and its indexed fields.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LiveEvent {
    pub time_ns: i64,
    pub kind: String,
    pub pid: Option<u64>,
    pub ppid: Option<u64>,
    pub uid: Option<u64>,
    pub comm: Option<String>,
    pub exe: Option<String>,
    pub container_id: Option<String>,
    pub source: Option<String>,
    /// The line as received.
    pub json: String,
}

pub trait EventStore {
    /// Store a batch of live events and their timeline rows in one transaction; returns how
    /// many events were stored.
    fn insert_live_events(
        &self,
        host_id: &str,
        events: &[LiveEvent],
        timeline: &[Event],
    ) -> Result<usize>;
    /// Events of a host in `[from_ns, to_ns]`, oldest first, optionally of one kind.
    fn query_events(
        &self,
        host_id: &str,
        from_ns: i64,
        to_ns: i64,
        kind: Option<&str>,
        limit: u32,
    ) -> Result<Vec<serde_json::Value>>;
}
