//! The timeline table: writing events, recording what each item gave, saved searches.
//!
//! The same event read twice for a host (the live stream and the journal item, a log collected
//! twice) is stored once: `(host, time_ns, dedup)` is unique and rows are `INSERT OR IGNORE`d.
//! Putting the time before the key keeps that index in time order, so a batch of new events
//! touches its last pages only instead of pages all over a random-keyed index.
//! Hosts are stored as small integers (`timeline_hosts`): a 36-character agent id in every row
//! and in the (host, time) index would double the size of both.

use super::Event;
use crate::db::Db;
use anyhow::Result;
use rusqlite::{params, Connection, OptionalExtension};
use serde_json::Value;

/// Rows per multi-row INSERT: one statement step per 32 events instead of one per event.
const ROWS: usize = 32;
const COLUMNS: &str = "host, time_ns, source, kind, pid, ppid, exe, argv, user, container, pod, message, attrs, path, item_id, dedup";
const COLS: usize = 16;

fn insert_sql(rows: usize) -> String {
    let row = format!("({})", vec!["?"; COLS].join(","));
    format!(
        "INSERT OR IGNORE INTO timeline({COLUMNS}) VALUES {}",
        vec![row; rows].join(",")
    )
}

/// Bind one event's columns from parameter `at` (1-based) on.
fn bind(
    st: &mut rusqlite::CachedStatement<'_>,
    at: usize,
    host: i64,
    item_id: Option<&str>,
    e: &Event,
) -> Result<()> {
    let argv = e.argv.as_ref().map(serde_json::to_string).transpose()?;
    let attrs = (!e.attrs.is_empty())
        .then(|| serde_json::to_string(&e.attrs))
        .transpose()?;
    st.raw_bind_parameter(at, host)?;
    st.raw_bind_parameter(at + 1, e.time_ns)?;
    st.raw_bind_parameter(at + 2, &e.source)?;
    st.raw_bind_parameter(at + 3, &e.kind)?;
    st.raw_bind_parameter(at + 4, e.pid)?;
    st.raw_bind_parameter(at + 5, e.ppid)?;
    st.raw_bind_parameter(at + 6, &e.exe)?;
    st.raw_bind_parameter(at + 7, argv)?;
    st.raw_bind_parameter(at + 8, &e.user)?;
    st.raw_bind_parameter(at + 9, &e.container)?;
    st.raw_bind_parameter(at + 10, &e.pod)?;
    st.raw_bind_parameter(at + 11, &e.message)?;
    st.raw_bind_parameter(at + 12, attrs)?;
    st.raw_bind_parameter(at + 13, &e.path)?;
    st.raw_bind_parameter(at + 14, item_id)?;
    st.raw_bind_parameter(at + 15, e.dedup)?;
    Ok(())
}

/// Insert events for a host inside the caller's transaction; returns how many were new.
pub fn insert_with(
    conn: &Connection,
    host_id: &str,
    item_id: Option<&str>,
    events: &[Event],
) -> Result<usize> {
    conn.prepare_cached("INSERT OR IGNORE INTO timeline_hosts(host_id) VALUES (?1)")?
        .execute(params![host_id])?;
    let host: i64 = conn
        .prepare_cached("SELECT n FROM timeline_hosts WHERE host_id = ?1")?
        .query_row(params![host_id], |r| r.get(0))?;
    let mut many = conn.prepare_cached(&insert_sql(ROWS))?;
    let mut one = conn.prepare_cached(&insert_sql(1))?;
    let mut new = 0;
    for chunk in events.chunks(ROWS) {
        if chunk.len() == ROWS {
            for (i, e) in chunk.iter().enumerate() {
                bind(&mut many, 1 + i * COLS, host, item_id, e)?;
            }
            new += many.raw_execute()?;
        } else {
            for e in chunk {
                bind(&mut one, 1, host, item_id, e)?;
                new += one.raw_execute()?;
            }
        }
    }
    Ok(new)
}

impl Db {
    /// Insert events for a host in one transaction; returns how many were new.
    pub fn insert_timeline(
        &self,
        host_id: &str,
        item_id: Option<&str>,
        events: &[Event],
    ) -> Result<usize> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let n = insert_with(&tx, host_id, item_id, events)?;
        tx.commit()?;
        Ok(n)
    }

    /// What building the timeline from an item gave: parser, events, unparsed lines, error.
    pub fn record_timeline_item(
        &self,
        item_id: &str,
        host_id: &str,
        parser: &str,
        events: u64,
        unparsed: u64,
        error: Option<&str>,
    ) -> Result<()> {
        self.lock().execute(
            "INSERT OR REPLACE INTO timeline_items(item_id, host_id, parser, events, unparsed, error, built_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![item_id, host_id, parser, events, unparsed, error, cairn_protocol::now_rfc3339()],
        )?;
        Ok(())
    }

    /// The items a host's timeline was built from, newest first.
    pub fn timeline_items(&self, host_id: Option<&str>) -> Result<Vec<Value>> {
        let conn = self.lock();
        let mut st = conn.prepare(
            "SELECT t.item_id, t.host_id, t.parser, t.events, t.unparsed, t.error, t.built_at, i.name
             FROM timeline_items t LEFT JOIN items i ON i.id = t.item_id
             WHERE ?1 IS NULL OR t.host_id = ?1 ORDER BY t.built_at DESC",
        )?;
        let rows = st.query_map(params![host_id], |r| {
            Ok(serde_json::json!({
                "item_id": r.get::<_, String>(0)?, "host_id": r.get::<_, String>(1)?,
                "parser": r.get::<_, String>(2)?, "events": r.get::<_, i64>(3)?,
                "unparsed": r.get::<_, i64>(4)?, "error": r.get::<_, Option<String>>(5)?,
                "built_at": r.get::<_, String>(6)?, "name": r.get::<_, Option<String>>(7)?,
            }))
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    pub fn save_search(&self, name: &str, query: &Value, by: &str) -> Result<()> {
        self.lock().execute(
            "INSERT OR REPLACE INTO saved_searches(name, query_json, created_by, created_at) VALUES (?1, ?2, ?3, ?4)",
            params![name, serde_json::to_string(query)?, by, cairn_protocol::now_rfc3339()],
        )?;
        Ok(())
    }

    pub fn saved_search(&self, name: &str) -> Result<Option<Value>> {
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

    pub fn saved_searches(&self) -> Result<Vec<Value>> {
        let conn = self.lock();
        let mut st = conn.prepare(
            "SELECT name, query_json, created_by, created_at FROM saved_searches ORDER BY name",
        )?;
        let rows = st.query_map([], |r| {
            let q: String = r.get(1)?;
            Ok(serde_json::json!({
                "name": r.get::<_, String>(0)?,
                "query": serde_json::from_str::<Value>(&q).unwrap_or(Value::String(q)),
                "created_by": r.get::<_, String>(2)?, "created_at": r.get::<_, String>(3)?,
            }))
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    pub fn delete_saved_search(&self, name: &str) -> Result<bool> {
        Ok(self
            .lock()
            .execute("DELETE FROM saved_searches WHERE name = ?1", params![name])?
            == 1)
    }
}
