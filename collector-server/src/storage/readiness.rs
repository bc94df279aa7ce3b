//! Readiness history: every self-test report, the host's verdict and since when it holds.

use super::Result;
use cairn_protocol::readiness::{CheckStatus, SelftestReport};
use serde_json::Value;

pub trait ReadinessStore {
    /// Store a report and update the host's verdict; returns the verdict before it.
    fn insert_readiness(
        &self,
        host_id: &str,
        report: &SelftestReport,
    ) -> Result<Option<CheckStatus>>;
    /// A host's reports, newest first: verdict, counts, each check, whether the verdict changed.
    fn readiness_history(&self, host_id: &str, limit: u32) -> Result<Vec<Value>>;
    /// Hosts that passed, warned and failed on each of the last `days` UTC days, each host
    /// counted once a day by its last report of that day.
    fn fleet_readiness(&self, days: u32) -> Result<Vec<Value>>;
}
