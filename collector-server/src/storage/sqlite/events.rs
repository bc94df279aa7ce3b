use super::Sqlite;
use crate::storage::events::{EventStore, LiveEvent};
use crate::storage::timeline::Event;
use crate::storage::Result;
use rusqlite::params;

pub(super) const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS events (
    host_id TEXT NOT NULL, time_ns INTEGER NOT NULL, kind TEXT NOT NULL, pid INTEGER, ppid INTEGER,
    uid INTEGER, comm TEXT, exe TEXT, container_id TEXT, source TEXT, json TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS events_host_time ON events(host_id, time_ns);
"#;

impl EventStore for Sqlite {
    fn insert_live_events(
        &self,
        host_id: &str,
        events: &[LiveEvent],
        timeline: &[Event],
    ) -> Result<usize> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        {
            let mut st = tx.prepare_cached(
                "INSERT INTO events(host_id, time_ns, kind, pid, ppid, uid, comm, exe, container_id, source, json)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            )?;
            for e in events {
                st.execute(params![
                    host_id,
                    e.time_ns,
                    e.kind,
                    e.pid,
                    e.ppid,
                    e.uid,
                    e.comm,
                    e.exe,
                    e.container_id,
                    e.source,
                    e.json,
                ])?;
            }
        }
        super::timeline::insert_with(&tx, host_id, None, timeline)?;
        tx.commit()?;
        Ok(events.len())
    }

    fn query_events(
        &self,
        host_id: &str,
        from_ns: i64,
        to_ns: i64,
        kind: Option<&str>,
        limit: u32,
    ) -> Result<Vec<serde_json::Value>> {
        let json: Vec<String> = self.rows(
            "SELECT json FROM events WHERE host_id = ?1 AND time_ns >= ?2 AND time_ns <= ?3 AND (?4 IS NULL OR kind = ?4)
             ORDER BY time_ns, rowid LIMIT ?5",
            params![host_id, from_ns, to_ns, kind, limit],
            |r| r.get(0),
        )?;
        Ok(json
            .iter()
            .filter_map(|s| serde_json::from_str(s).ok())
            .collect())
    }
}
