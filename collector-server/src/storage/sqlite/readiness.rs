use super::{now, Sqlite};
use crate::storage::readiness::{
    fleet_days, fleet_since, history_row, mark_changes, ReadinessStore,
};
use crate::storage::{to_json, Result};
use cairn_protocol::readiness::{CheckStatus, SelftestReport};
use rusqlite::{params, OptionalExtension};
use serde_json::Value;

pub(super) const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS readiness (
    host_id TEXT NOT NULL REFERENCES hosts(id), received_at TEXT NOT NULL, started TEXT NOT NULL,
    status TEXT NOT NULL, passed INTEGER NOT NULL, warned INTEGER NOT NULL, failed INTEGER NOT NULL,
    report_json TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS readiness_host_time ON readiness(host_id, received_at);
"#;

impl ReadinessStore for Sqlite {
    fn insert_readiness(
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
            params![host_id, at, report.started, status, p as i64, w as i64, f as i64, to_json("readiness report", report)?],
        )?;
        conn.execute(
            "UPDATE hosts SET readiness = ?2, readiness_at = ?3,
             readiness_since = CASE WHEN readiness IS ?2 THEN readiness_since ELSE ?3 END WHERE id = ?1",
            params![host_id, status, at],
        )?;
        Ok(previous.as_deref().and_then(CheckStatus::parse))
    }

    fn readiness_history(&self, host_id: &str, limit: u32) -> Result<Vec<Value>> {
        let mut rows = self.rows(
            "SELECT received_at, started, status, passed, warned, failed, report_json FROM readiness
             WHERE host_id = ?1 ORDER BY received_at DESC, rowid DESC LIMIT ?2",
            params![host_id, limit],
            |r| {
                Ok(history_row(
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    (r.get(3)?, r.get(4)?, r.get(5)?),
                    &r.get::<_, String>(6)?,
                ))
            },
        )?;
        mark_changes(&mut rows);
        Ok(rows)
    }

    fn fleet_readiness(&self, days: u32) -> Result<Vec<Value>> {
        let rows: Vec<(String, String, i64)> = self.rows(
            "SELECT day, status, COUNT(*) FROM (
                SELECT substr(received_at, 1, 10) AS day, status,
                       ROW_NUMBER() OVER (PARTITION BY host_id, substr(received_at, 1, 10)
                                          ORDER BY received_at DESC, rowid DESC) AS rn
                FROM readiness WHERE received_at >= ?1)
             WHERE rn = 1 GROUP BY day, status ORDER BY day",
            params![fleet_since(days)],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?;
        Ok(fleet_days(rows))
    }
}
