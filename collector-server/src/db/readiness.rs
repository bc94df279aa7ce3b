//! Readiness history: every self-test report an agent sends, the host's current verdict and
//! since when it has held, the fleet's verdicts per day; and the pruning of the self-test's
//! own `selftest` collections, of which only the latest per host is kept.

use super::{now, Db};
use anyhow::Result;
use cairn_protocol::readiness::{CheckStatus, SelftestReport};
use rusqlite::{params, OptionalExtension};
use serde_json::{json, Value};

pub const READINESS_SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS readiness (
    host_id TEXT NOT NULL REFERENCES hosts(id), received_at TEXT NOT NULL, started TEXT NOT NULL,
    status TEXT NOT NULL, passed INTEGER NOT NULL, warned INTEGER NOT NULL, failed INTEGER NOT NULL,
    report_json TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS readiness_host_time ON readiness(host_id, received_at);
"#;

impl Db {
    /// Store a report; returns the host's verdict before it.
    pub fn insert_readiness(
        &self,
        host_id: &str,
        report: &SelftestReport,
    ) -> Result<Option<CheckStatus>> {
        let conn = self.lock();
        let previous: Option<String> = conn
            .query_row(
                "SELECT readiness FROM hosts WHERE id = ?1",
                params![host_id],
                |r| r.get(0),
            )
            .optional()?
            .flatten();
        let (p, w, f) = report.counts();
        let at = now();
        let status = report.status.as_str();
        conn.execute(
            "INSERT INTO readiness(host_id, received_at, started, status, passed, warned, failed, report_json)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![host_id, at, report.started, status, p as i64, w as i64, f as i64, serde_json::to_string(report)?],
        )?;
        conn.execute(
            "UPDATE hosts SET readiness = ?2, readiness_at = ?3,
             readiness_since = CASE WHEN readiness IS ?2 THEN readiness_since ELSE ?3 END WHERE id = ?1",
            params![host_id, status, at],
        )?;
        Ok(previous.as_deref().and_then(CheckStatus::parse))
    }

    /// A host's reports, newest first: verdict, counts, each check's status, and whether the
    /// verdict changed with it.
    pub fn readiness_history(&self, host_id: &str, limit: u32) -> Result<Vec<Value>> {
        let mut rows = self.rows(
            "SELECT received_at, started, status, passed, warned, failed, report_json FROM readiness
             WHERE host_id = ?1 ORDER BY received_at DESC, rowid DESC LIMIT ?2",
            params![host_id, limit],
            |r| {
                let report: Option<SelftestReport> =
                    serde_json::from_str(&r.get::<_, String>(6)?).ok();
                let checks: Vec<Value> = report
                    .map(|rep| {
                        rep.checks
                            .iter()
                            .map(|c| json!({"id": c.id, "status": c.status, "measured": c.measured, "remediation": c.remediation}))
                            .collect()
                    })
                    .unwrap_or_default();
                Ok(json!({
                    "received_at": r.get::<_, String>(0)?,
                    "started": r.get::<_, String>(1)?,
                    "status": r.get::<_, String>(2)?,
                    "passed": r.get::<_, i64>(3)?,
                    "warned": r.get::<_, i64>(4)?,
                    "failed": r.get::<_, i64>(5)?,
                    "checks": checks,
                }))
            },
        )?;
        // `changed`: this report's verdict differs from the one before it.
        for i in 0..rows.len() {
            let before = rows.get(i + 1).map(|r| r["status"].clone());
            let changed = before.is_some_and(|b| b != rows[i]["status"]);
            rows[i]["changed"] = json!(changed);
        }
        Ok(rows)
    }

    /// How many hosts passed, warned and failed on each of the last `days` days (UTC), each
    /// host counted once a day by its last report of that day.
    pub fn fleet_readiness(&self, days: u32) -> Result<Vec<Value>> {
        let since = time::OffsetDateTime::now_utc() - time::Duration::days(i64::from(days));
        let since = since
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        let rows: Vec<(String, String, i64)> = self.rows(
            "SELECT day, status, COUNT(*) FROM (
                SELECT substr(received_at, 1, 10) AS day, status,
                       ROW_NUMBER() OVER (PARTITION BY host_id, substr(received_at, 1, 10)
                                          ORDER BY received_at DESC, rowid DESC) AS rn
                FROM readiness WHERE received_at >= ?1)
             WHERE rn = 1 GROUP BY day, status ORDER BY day",
            params![since],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?;
        let mut out: Vec<Value> = Vec::new();
        for (day, status, n) in rows {
            if out.last().map(|d| d["day"] != json!(day)).unwrap_or(true) {
                out.push(json!({"day": day, "pass": 0, "warn": 0, "fail": 0}));
            }
            if let Some(d) = out.last_mut() {
                d[status.as_str()] = json!(n);
            }
        }
        Ok(out)
    }

    /// Delete a host's `selftest` collections other than `keep`, with their items, chunks and
    /// custody; returns the blob hashes no item refers to any more, for the store to delete.
    pub fn prune_selftest_collections(&self, host_id: &str, keep: &str) -> Result<Vec<String>> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let old =
            "SELECT id FROM collections WHERE host_id = ?1 AND origin = 'selftest' AND id != ?2";
        let blobs: Vec<String> = {
            let mut st = tx.prepare(&format!(
                "SELECT DISTINCT sha256 FROM item_chunks WHERE item_id IN (SELECT id FROM items WHERE collection_id IN ({old}))"
            ))?;
            let r = st.query_map(params![host_id, keep], |r| r.get(0))?;
            r.collect::<rusqlite::Result<Vec<_>>>()?
        };
        for sql in [
            format!("DELETE FROM item_chunks WHERE item_id IN (SELECT id FROM items WHERE collection_id IN ({old}))"),
            format!("DELETE FROM items WHERE collection_id IN ({old})"),
            format!("DELETE FROM custody WHERE collection_id IN ({old})"),
            "DELETE FROM collections WHERE host_id = ?1 AND origin = 'selftest' AND id != ?2".to_string(),
        ] {
            tx.execute(&sql, params![host_id, keep])?;
        }
        let mut orphans = Vec::new();
        for sha in blobs {
            let used: bool = tx
                .prepare("SELECT 1 FROM item_chunks WHERE sha256 = ?1 LIMIT 1")?
                .exists(params![sha])?;
            if !used {
                tx.execute("DELETE FROM blobs WHERE sha256 = ?1", params![sha])?;
                orphans.push(sha);
            }
        }
        tx.commit()?;
        Ok(orphans)
    }
}
