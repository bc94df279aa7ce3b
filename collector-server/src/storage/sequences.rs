//! Trigger sequences: the steps a `[[containment]]` rule adds after an alert's collection
//! (isolate, then collect memory…), where each one is, and what happened.

use super::Result;
use serde::Serialize;
use serde_json::Value;

#[derive(Debug, Clone, Serialize)]
pub struct SequenceRow {
    pub id: String,
    pub host_id: String,
    /// The steps after the first collection, in order.
    pub steps: Vec<String>,
    /// How many of `steps` were started.
    pub next: usize,
    /// What the current step is waiting for: `collection` or `containment`, and its id.
    pub waiting_kind: String,
    pub waiting_id: String,
    /// `running` or `done`.
    pub status: String,
    /// The alert's facts the steps need: reason, requested_by, pid, container_id, rule.
    pub context: Value,
    /// One line per step that ran.
    pub log: Vec<String>,
    pub created_at: String,
    pub updated_at: String,
}

pub trait SequenceStore {
    fn insert_sequence(&self, row: &SequenceRow) -> Result<()>;
    /// Sequences still running, oldest first.
    fn running_sequences(&self, limit: u32) -> Result<Vec<SequenceRow>>;
    fn update_sequence(&self, row: &SequenceRow) -> Result<()>;
    /// A host's sequences, newest first.
    fn sequences_of_host(&self, host_id: &str, limit: u32) -> Result<Vec<SequenceRow>>;
}
