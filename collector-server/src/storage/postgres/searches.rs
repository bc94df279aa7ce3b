use super::{get, now, rows, t, Postgres};
use crate::storage::searches::SearchStore;
use crate::storage::{to_json, Result, StorageError};
use serde_json::Value;

pub(super) const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS saved_searches (
    name TEXT PRIMARY KEY, query_json TEXT NOT NULL, created_by TEXT NOT NULL, created_at TEXT NOT NULL);
"#;

impl SearchStore for Postgres {
    fn save_search(&self, name: &str, query: &Value, by: &str) -> Result<()> {
        let (name, json, by) = (
            name.to_string(),
            to_json("saved search", query)?,
            by.to_string(),
        );
        self.run(move |c| {
            c.execute(
                "INSERT INTO saved_searches(name, query_json, created_by, created_at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (name) DO UPDATE SET query_json = excluded.query_json,
                 created_by = excluded.created_by, created_at = excluded.created_at",
                &[&t(&name), &t(&json), &t(&by), &now()],
            )?;
            Ok(())
        })
    }

    fn saved_search(&self, name: &str) -> Result<Option<Value>> {
        let name = name.to_string();
        let s: Option<String> = self.run(move |c| {
            c.query_opt(
                "SELECT query_json FROM saved_searches WHERE name = $1",
                &[&t(&name)],
            )?
            .map(|r| get(&r, 0))
            .transpose()
        })?;
        Ok(s.and_then(|s| serde_json::from_str(&s).ok()))
    }

    fn saved_searches(&self) -> Result<Vec<Value>> {
        self.run(|c| {
            rows(
                c,
                "SELECT name, query_json, created_by, created_at FROM saved_searches ORDER BY name",
                &[],
                |r| {
                    let q: String = get(r, 1)?;
                    Ok(serde_json::json!({
                        "name": get::<String>(r, 0)?,
                        "query": serde_json::from_str::<Value>(&q).unwrap_or(Value::String(q)),
                        "created_by": get::<String>(r, 2)?, "created_at": get::<String>(r, 3)?,
                    }))
                },
            )
        })
    }

    fn delete_saved_search(&self, name: &str) -> Result<bool> {
        let name = name.to_string();
        self.run(move |c| {
            Ok(c.execute("DELETE FROM saved_searches WHERE name = $1", &[&t(&name)])? == 1)
        })
    }

    fn rename_saved_search(&self, from: &str, to: &str) -> Result<bool> {
        let (from, to) = (from.to_string(), to.to_string());
        self.run(move |c| {
            let taken = || StorageError::Conflict(format!("a saved search named {to:?}"));
            if from != to
                && c.query_opt("SELECT 1 FROM saved_searches WHERE name = $1", &[&t(&to)])?
                    .is_some()
            {
                return Err(taken());
            }
            // The primary key decides a race with another collector taking `to` meanwhile.
            match c.execute(
                "UPDATE saved_searches SET name = $2 WHERE name = $1",
                &[&t(&from), &t(&to)],
            ) {
                Ok(n) => Ok(n == 1),
                Err(e) => match StorageError::from(e) {
                    StorageError::Conflict(_) => Err(taken()),
                    e => Err(e),
                },
            }
        })
    }
}
