use super::{now, Sqlite};
use crate::storage::sequences::{SequenceRow, SequenceStore};
use crate::storage::{to_json, Result};
use rusqlite::params;

pub(super) const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS trigger_sequences (
    id TEXT PRIMARY KEY, host_id TEXT NOT NULL, steps_json TEXT NOT NULL, next INTEGER NOT NULL,
    waiting_kind TEXT NOT NULL, waiting_id TEXT NOT NULL, status TEXT NOT NULL,
    context_json TEXT NOT NULL, log_json TEXT NOT NULL, created_at TEXT NOT NULL, updated_at TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS trigger_sequences_status ON trigger_sequences(status, created_at);
CREATE INDEX IF NOT EXISTS trigger_sequences_host ON trigger_sequences(host_id, created_at);
"#;

const COLS: &str = "id, host_id, steps_json, next, waiting_kind, waiting_id, status, context_json, log_json, created_at, updated_at";

fn json_col<T: serde::de::DeserializeOwned>(
    r: &rusqlite::Row<'_>,
    i: usize,
) -> rusqlite::Result<T> {
    let s: String = r.get(i)?;
    serde_json::from_str(&s).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e))
    })
}

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<SequenceRow> {
    let next: i64 = r.get(3)?;
    Ok(SequenceRow {
        id: r.get(0)?,
        host_id: r.get(1)?,
        steps: json_col(r, 2)?,
        next: usize::try_from(next).unwrap_or(0),
        waiting_kind: r.get(4)?,
        waiting_id: r.get(5)?,
        status: r.get(6)?,
        context: json_col(r, 7)?,
        log: json_col(r, 8)?,
        created_at: r.get(9)?,
        updated_at: r.get(10)?,
    })
}

impl SequenceStore for Sqlite {
    fn insert_sequence(&self, s: &SequenceRow) -> Result<()> {
        self.lock().execute(
            &format!("INSERT INTO trigger_sequences({COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"),
            params![
                s.id,
                s.host_id,
                to_json("sequence steps", &s.steps)?,
                s.next as i64,
                s.waiting_kind,
                s.waiting_id,
                s.status,
                to_json("sequence context", &s.context)?,
                to_json("sequence log", &s.log)?,
                s.created_at,
                s.updated_at
            ],
        )?;
        Ok(())
    }

    fn running_sequences(&self, limit: u32) -> Result<Vec<SequenceRow>> {
        self.rows(
            &format!("SELECT {COLS} FROM trigger_sequences WHERE status = 'running' ORDER BY created_at LIMIT ?1"),
            params![limit],
            row,
        )
    }

    fn update_sequence(&self, s: &SequenceRow) -> Result<()> {
        self.lock().execute(
            "UPDATE trigger_sequences SET next = ?2, waiting_kind = ?3, waiting_id = ?4, status = ?5, log_json = ?6, updated_at = ?7 WHERE id = ?1",
            params![
                s.id,
                s.next as i64,
                s.waiting_kind,
                s.waiting_id,
                s.status,
                to_json("sequence log", &s.log)?,
                now()
            ],
        )?;
        Ok(())
    }

    fn sequences_of_host(&self, host_id: &str, limit: u32) -> Result<Vec<SequenceRow>> {
        self.rows(
            &format!("SELECT {COLS} FROM trigger_sequences WHERE host_id = ?1 ORDER BY created_at DESC LIMIT ?2"),
            params![host_id, limit],
            row,
        )
    }
}
