use super::{enum_col, now, Sqlite};
use crate::storage::containment::{ContainmentRow, ContainmentStatus, ContainmentStore};
use crate::storage::{from_json, to_json, Result, StorageError};
use cairn_protocol::containment::Outcome;
use rusqlite::{params, OptionalExtension};

pub(super) const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS containments (
    id TEXT PRIMARY KEY, host_id TEXT NOT NULL, request_json TEXT NOT NULL, status TEXT NOT NULL,
    requested_at TEXT NOT NULL, updated_at TEXT NOT NULL, outcome_json TEXT);
CREATE INDEX IF NOT EXISTS containments_host ON containments(host_id, requested_at);
"#;

const COLS: &str = "id, host_id, request_json, status, requested_at, updated_at, outcome_json";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ContainmentRow> {
    let request: String = r.get(2)?;
    let request = serde_json::from_str(&request).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(2, rusqlite::types::Type::Text, Box::new(e))
    })?;
    Ok(ContainmentRow {
        id: r.get(0)?,
        host_id: r.get(1)?,
        request,
        status: enum_col(r, 3, ContainmentStatus::parse)?,
        requested_at: r.get(4)?,
        updated_at: r.get(5)?,
        outcome: from_json(r.get(6)?),
    })
}

impl ContainmentStore for Sqlite {
    fn insert_containment(&self, c: &ContainmentRow) -> Result<()> {
        let outcome = c
            .outcome
            .as_ref()
            .map(|o| to_json("containment outcome", o))
            .transpose()?;
        let n = self.lock().execute(
            &format!("INSERT INTO containments({COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT(id) DO NOTHING"),
            params![
                c.id,
                c.host_id,
                to_json("containment request", &c.request)?,
                c.status.as_str(),
                c.requested_at,
                c.updated_at,
                outcome
            ],
        )?;
        if n == 0 {
            return Err(StorageError::Conflict(format!("containment {}", c.id)));
        }
        Ok(())
    }

    fn containment(&self, id: &str) -> Result<Option<ContainmentRow>> {
        Ok(self
            .lock()
            .query_row(
                &format!("SELECT {COLS} FROM containments WHERE id = ?1"),
                params![id],
                row,
            )
            .optional()?)
    }

    fn containments_of_host(&self, host_id: &str, limit: u32) -> Result<Vec<ContainmentRow>> {
        self.rows(
            &format!("SELECT {COLS} FROM containments WHERE host_id = ?1 ORDER BY requested_at DESC, rowid DESC LIMIT ?2"),
            params![host_id, limit],
            row,
        )
    }

    fn pending_containments(&self, host_id: &str) -> Result<Vec<ContainmentRow>> {
        self.rows(
            &format!("SELECT {COLS} FROM containments WHERE host_id = ?1 AND status IN ('requested', 'sent') ORDER BY requested_at, rowid"),
            params![host_id],
            row,
        )
    }

    fn set_containment_status(
        &self,
        id: &str,
        status: ContainmentStatus,
        outcome: Option<&Outcome>,
    ) -> Result<bool> {
        let outcome = outcome
            .map(|o| to_json("containment outcome", o))
            .transpose()?;
        Ok(self.lock().execute(
            "UPDATE containments SET status = ?2, updated_at = ?3, outcome_json = COALESCE(?4, outcome_json) WHERE id = ?1",
            params![id, status.as_str(), now(), outcome],
        )? == 1)
    }
}
