use super::{now, Sqlite};
use crate::storage::searches::SearchStore;
use crate::storage::{to_json, Result};
use rusqlite::{params, OptionalExtension};
use serde_json::Value;

pub(super) const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS saved_searches (
    name TEXT PRIMARY KEY, query_json TEXT NOT NULL, created_by TEXT NOT NULL, created_at TEXT NOT NULL);
"#;

impl SearchStore for Sqlite {
    fn save_search(&self, name: &str, query: &Value, by: &str) -> Result<()> {
        self.lock().execute(
            "INSERT OR REPLACE INTO saved_searches(name, query_json, created_by, created_at) VALUES (?1, ?2, ?3, ?4)",
            params![name, to_json("saved search", query)?, by, now()],
        )?;
        Ok(())
    }

    fn saved_search(&self, name: &str) -> Result<Option<Value>> {
        let s: Option<String> = self
            .lock()
            .query_row(
                "SELECT query_json FROM saved_searches WHERE name = ?1",
                params![name],
                |r| r.get(0),
            )
            .optional()?;
        Ok(s.and_then(|s| serde_json::from_str(&s).ok()))
    }

    fn saved_searches(&self) -> Result<Vec<Value>> {
        self.rows(
            "SELECT name, query_json, created_by, created_at FROM saved_searches ORDER BY name",
            [],
            |r| {
                let q: String = r.get(1)?;
                Ok(serde_json::json!({
                    "name": r.get::<_, String>(0)?,
                    "query": serde_json::from_str::<Value>(&q).unwrap_or(Value::String(q)),
                    "created_by": r.get::<_, String>(2)?, "created_at": r.get::<_, String>(3)?,
                }))
            },
        )
    }

    fn delete_saved_search(&self, name: &str) -> Result<bool> {
        Ok(self
            .lock()
            .execute("DELETE FROM saved_searches WHERE name = ?1", params![name])?
            == 1)
    }

    fn rename_saved_search(&self, from: &str, to: &str) -> Result<bool> {
        let conn = self.lock();
        let taken: Option<i64> = conn
            .query_row(
                "SELECT 1 FROM saved_searches WHERE name = ?1",
                params![to],
                |r| r.get(0),
            )
            .optional()?;
        if taken.is_some() && from != to {
            return Err(crate::storage::StorageError::Conflict(format!(
                "a saved search named {to:?}"
            )));
        }
        Ok(conn.execute(
            "UPDATE saved_searches SET name = ?2 WHERE name = ?1",
            params![from, to],
        )? == 1)
    }
}
