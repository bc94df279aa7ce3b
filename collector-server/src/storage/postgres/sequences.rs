use super::{get, int, now, rows, t, Postgres};
use crate::storage::sequences::{SequenceRow, SequenceStore};
use crate::storage::{to_json, Result, StorageError};
use postgres::Row;

pub(super) const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS trigger_sequences (
    id TEXT PRIMARY KEY, host_id TEXT NOT NULL, steps_json TEXT NOT NULL, next BIGINT NOT NULL,
    waiting_kind TEXT NOT NULL, waiting_id TEXT NOT NULL, status TEXT NOT NULL,
    context_json TEXT NOT NULL, log_json TEXT NOT NULL, created_at TEXT NOT NULL, updated_at TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS trigger_sequences_status ON trigger_sequences(status, created_at);
CREATE INDEX IF NOT EXISTS trigger_sequences_host ON trigger_sequences(host_id, created_at);
"#;

const COLS: &str = "id, host_id, steps_json, next, waiting_kind, waiting_id, status, context_json, log_json, created_at, updated_at";

fn json_col<T: serde::de::DeserializeOwned>(r: &Row, i: usize) -> Result<T> {
    let s: String = get(r, i)?;
    serde_json::from_str(&s).map_err(|e| StorageError::Corrupt {
        what: "trigger sequence",
        detail: format!("column {i}: {e}"),
    })
}

fn row(r: &Row) -> Result<SequenceRow> {
    let next: i64 = get(r, 3)?;
    Ok(SequenceRow {
        id: get(r, 0)?,
        host_id: get(r, 1)?,
        steps: json_col(r, 2)?,
        next: usize::try_from(next).unwrap_or(0),
        waiting_kind: get(r, 4)?,
        waiting_id: get(r, 5)?,
        status: get(r, 6)?,
        context: json_col(r, 7)?,
        log: json_col(r, 8)?,
        created_at: get(r, 9)?,
        updated_at: get(r, 10)?,
    })
}

impl SequenceStore for Postgres {
    fn insert_sequence(&self, s: &SequenceRow) -> Result<()> {
        let steps = to_json("sequence steps", &s.steps)?;
        let context = to_json("sequence context", &s.context)?;
        let log = to_json("sequence log", &s.log)?;
        let next = int("sequence step", s.next as u64)?;
        let s = s.clone();
        self.run(move |c| {
            c.execute(
                &format!("INSERT INTO trigger_sequences({COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"),
                &[
                    &t(&s.id),
                    &t(&s.host_id),
                    &t(&steps),
                    &next,
                    &t(&s.waiting_kind),
                    &t(&s.waiting_id),
                    &t(&s.status),
                    &t(&context),
                    &t(&log),
                    &t(&s.created_at),
                    &t(&s.updated_at),
                ],
            )?;
            Ok(())
        })
    }

    fn running_sequences(&self, limit: u32) -> Result<Vec<SequenceRow>> {
        self.run(move |c| {
            rows(
                c,
                &format!("SELECT {COLS} FROM trigger_sequences WHERE status = 'running' ORDER BY created_at LIMIT $1"),
                &[&i64::from(limit)],
                row,
            )
        })
    }

    fn update_sequence(&self, s: &SequenceRow) -> Result<()> {
        let log = to_json("sequence log", &s.log)?;
        let next = int("sequence step", s.next as u64)?;
        let s = s.clone();
        self.run(move |c| {
            c.execute(
                "UPDATE trigger_sequences SET next = $2, waiting_kind = $3, waiting_id = $4, status = $5, log_json = $6, updated_at = $7 WHERE id = $1",
                &[&t(&s.id), &next, &t(&s.waiting_kind), &t(&s.waiting_id), &t(&s.status), &t(&log), &now()],
            )?;
            Ok(())
        })
    }

    fn sequences_of_host(&self, host_id: &str, limit: u32) -> Result<Vec<SequenceRow>> {
        let host = host_id.to_string();
        self.run(move |c| {
            rows(
                c,
                &format!("SELECT {COLS} FROM trigger_sequences WHERE host_id = $1 ORDER BY created_at DESC LIMIT $2"),
                &[&t(&host), &i64::from(limit)],
                row,
            )
        })
    }
}
