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

/// One report of [`ReadinessStore::readiness_history`] as the API shows it (`changed` is set by
/// [`mark_changes`]); `report_json` is read leniently.
pub(crate) fn history_row(
    received_at: String,
    started: String,
    status: String,
    counts: (i64, i64, i64),
    report_json: &str,
) -> Value {
    let report: Option<SelftestReport> = serde_json::from_str(report_json).ok();
    let checks: Vec<Value> = report
        .map(|rep| {
            rep.checks
                .iter()
                .map(|c| serde_json::json!({"id": c.id, "status": c.status, "measured": c.measured, "remediation": c.remediation}))
                .collect()
        })
        .unwrap_or_default();
    serde_json::json!({
        "received_at": received_at,
        "started": started,
        "status": status,
        "passed": counts.0,
        "warned": counts.1,
        "failed": counts.2,
        "checks": checks,
    })
}

/// `changed`: a report's verdict differs from the one before it (rows newest first).
pub(crate) fn mark_changes(rows: &mut [Value]) {
    for i in 0..rows.len() {
        let before = rows.get(i + 1).map(|r| r["status"].clone());
        let changed = before.is_some_and(|b| b != rows[i]["status"]);
        rows[i]["changed"] = serde_json::json!(changed);
    }
}

/// The earliest receipt time [`ReadinessStore::fleet_readiness`] counts.
pub(crate) fn fleet_since(days: u32) -> String {
    let since = time::OffsetDateTime::now_utc() - time::Duration::days(i64::from(days));
    cairn_protocol::rfc3339::format(since)
}

/// `(day, status, hosts)` rows, in day order, as one object a day.
pub(crate) fn fleet_days(rows: Vec<(String, String, i64)>) -> Vec<Value> {
    let mut out: Vec<Value> = Vec::new();
    for (day, status, n) in rows {
        if out
            .last()
            .map(|d| d["day"] != serde_json::json!(day))
            .unwrap_or(true)
        {
            out.push(serde_json::json!({"day": day, "pass": 0, "warn": 0, "fail": 0}));
        }
        if let Some(d) = out.last_mut() {
            d[status.as_str()] = serde_json::json!(n);
        }
    }
    out
}
