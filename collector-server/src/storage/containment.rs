//! Containment actions (isolate, release, freeze, thaw, kill) asked of hosts, and what each
//! agent said it enforced.

use super::Result;
use cairn_protocol::containment::{Outcome, Request};
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ContainmentStatus {
    /// Waiting for its agent (disconnected, or not yet sent).
    Requested,
    /// Sent on the agent's control stream; no answer yet.
    Sent,
    /// The agent enforced it (or undid it, for release and thaw) and proved its channel.
    Done,
    /// The agent could not enforce it, or rolled it back; the outcome says why.
    Failed,
}

impl ContainmentStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            ContainmentStatus::Requested => "requested",
            ContainmentStatus::Sent => "sent",
            ContainmentStatus::Done => "done",
            ContainmentStatus::Failed => "failed",
        }
    }
    pub fn parse(s: &str) -> Option<ContainmentStatus> {
        Some(match s {
            "requested" => ContainmentStatus::Requested,
            "sent" => ContainmentStatus::Sent,
            "done" => ContainmentStatus::Done,
            "failed" => ContainmentStatus::Failed,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ContainmentRow {
    pub id: String,
    pub host_id: String,
    #[serde(flatten)]
    pub request: Request,
    pub status: ContainmentStatus,
    pub requested_at: String,
    pub updated_at: String,
    /// The agent's answer, once it came.
    pub outcome: Option<Outcome>,
}

pub trait ContainmentStore {
    fn insert_containment(&self, row: &ContainmentRow) -> Result<()>;
    fn containment(&self, id: &str) -> Result<Option<ContainmentRow>>;
    /// A host's actions, newest first.
    fn containments_of_host(&self, host_id: &str, limit: u32) -> Result<Vec<ContainmentRow>>;
    /// Actions not yet answered by a host (requested, or sent and unanswered), oldest first.
    fn pending_containments(&self, host_id: &str) -> Result<Vec<ContainmentRow>>;
    /// Which of `hosts` have actions not yet answered (see `hosts_with_requested` of
    /// collections).
    fn hosts_with_pending_containment(&self, hosts: &[String]) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for h in hosts {
            if !self.pending_containments(h)?.is_empty() {
                out.push(h.clone());
            }
        }
        Ok(out)
    }
    /// False when there is no such action.
    fn set_containment_status(
        &self,
        id: &str,
        status: ContainmentStatus,
        outcome: Option<&Outcome>,
    ) -> Result<bool>;
}
