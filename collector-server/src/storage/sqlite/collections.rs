use super::{enum_col, is_conflict, now, Sqlite};
use crate::storage::collections::{
    CollectionOrigin, CollectionRow, CollectionStatus, CollectionStore,
};
use crate::storage::{from_json, to_json, Result, StorageError};
use cairn_protocol::manifest::CollectRequest;
use rusqlite::{params, OptionalExtension};

pub(super) const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS collections (
    id TEXT PRIMARY KEY, host_id TEXT NOT NULL REFERENCES hosts(id), profile TEXT NOT NULL,
    reason TEXT NOT NULL, requested_by TEXT NOT NULL, request_json TEXT NOT NULL,
    status TEXT NOT NULL, requested_at TEXT NOT NULL, finished_at TEXT,
    errors_json TEXT NOT NULL DEFAULT '[]', origin TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS collections_host ON collections(host_id, status);
CREATE INDEX IF NOT EXISTS collections_status ON collections(status);
"#;

const COLS: &str = "id, host_id, profile, reason, requested_by, status, requested_at, finished_at, errors_json, origin, request_json";

fn collection_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<CollectionRow> {
    Ok(CollectionRow {
        id: r.get(0)?,
        host_id: r.get(1)?,
        profile: r.get(2)?,
        reason: r.get(3)?,
        requested_by: r.get(4)?,
        status: enum_col(r, 5, CollectionStatus::parse)?,
        requested_at: r.get(6)?,
        finished_at: r.get(7)?,
        errors: from_json(r.get(8)?).unwrap_or_default(),
        origin: enum_col(r, 9, CollectionOrigin::parse)?,
        request: from_json(r.get(10)?),
    })
}

impl CollectionStore for Sqlite {
    fn insert_collection(
        &self,
        host_id: &str,
        req: &CollectRequest,
        status: CollectionStatus,
        origin: CollectionOrigin,
    ) -> Result<()> {
        self.lock()
            .execute(
                "INSERT INTO collections(id, host_id, profile, reason, requested_by, request_json, status, requested_at, origin)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    req.collection_id,
                    host_id,
                    req.profile,
                    req.reason,
                    req.requested_by,
                    to_json("collection request", req)?,
                    status.as_str(),
                    now(),
                    origin.as_str()
                ],
            )
            .map_err(|e| {
                if is_conflict(&e) {
                    StorageError::Conflict(format!("collection {}", req.collection_id))
                } else {
                    e.into()
                }
            })?;
        Ok(())
    }

    fn set_collection_status(
        &self,
        id: &str,
        status: CollectionStatus,
        errors: Option<&[String]>,
    ) -> Result<()> {
        let finished = status.is_final().then(now);
        let conn = self.lock();
        conn.execute(
            "UPDATE collections SET status = ?2, finished_at = COALESCE(?3, finished_at) WHERE id = ?1",
            params![id, status.as_str(), finished],
        )?;
        if let Some(e) = errors {
            conn.execute(
                "UPDATE collections SET errors_json = ?2 WHERE id = ?1",
                params![id, to_json("collection errors", &e)?],
            )?;
        }
        Ok(())
    }

    fn get_collection(&self, id: &str) -> Result<Option<CollectionRow>> {
        Ok(self
            .lock()
            .query_row(
                &format!("SELECT {COLS} FROM collections WHERE id = ?1"),
                params![id],
                collection_from_row,
            )
            .optional()?)
    }

    fn collection_ids_with_prefix(&self, prefix: &str, limit: u32) -> Result<Vec<String>> {
        self.rows(
            "SELECT id FROM collections WHERE substr(id, 1, length(?1)) = ?1 ORDER BY id LIMIT ?2",
            params![prefix, limit],
            |r| r.get(0),
        )
    }

    fn pending_requests(&self, host_id: &str) -> Result<Vec<CollectRequest>> {
        let json: Vec<String> = self.rows(
            "SELECT request_json FROM collections WHERE host_id = ?1 AND status IN ('requested', 'queued') ORDER BY requested_at",
            params![host_id],
            |r| r.get(0),
        )?;
        Ok(json
            .iter()
            .filter_map(|s| serde_json::from_str(s).ok())
            .collect())
    }

    fn hosts_with_requested(&self, hosts: &[String]) -> Result<Vec<String>> {
        self.rows(
            "SELECT DISTINCT host_id FROM collections WHERE status = 'requested'
             AND host_id IN (SELECT value FROM json_each(?1))",
            params![crate::storage::to_json("hosts", &hosts)?],
            |r| r.get(0),
        )
    }

    fn queued_hosts(
        &self,
        hosts: &[String],
        per_host: u64,
        limit: u64,
    ) -> Result<Vec<(String, String)>> {
        self.rows(
            "SELECT q.host_id, MIN(q.requested_at) AS oldest FROM collections q
             WHERE q.status = 'queued' AND q.host_id IN (SELECT value FROM json_each(?1))
             AND (SELECT COUNT(*) FROM collections r WHERE r.host_id = q.host_id
                  AND r.origin = 'live' AND r.status IN ('running', 'paused')) < ?2
             GROUP BY q.host_id ORDER BY oldest, q.host_id LIMIT ?3",
            params![
                crate::storage::to_json("hosts", &hosts)?,
                per_host.min(i64::MAX as u64) as i64,
                limit.min(i64::MAX as u64) as i64
            ],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
    }

    fn mark_queued(&self, ids: &[String]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        self.lock().execute(
            "UPDATE collections SET status = 'queued' WHERE status = 'requested'
             AND id IN (SELECT value FROM json_each(?1))",
            params![crate::storage::to_json("collection ids", &ids)?],
        )?;
        Ok(())
    }

    fn running_collections(&self, host_id: Option<&str>) -> Result<u64> {
        Ok(self.lock().query_row(
            "SELECT COUNT(*) FROM collections WHERE (?1 IS NULL OR host_id = ?1) AND origin = 'live' AND status IN ('running', 'paused')",
            params![host_id],
            |r| r.get(0),
        )?)
    }

    fn list_collections(
        &self,
        host_id: Option<&str>,
        before: Option<&str>,
        limit: u32,
    ) -> Result<Vec<CollectionRow>> {
        self.rows(
            &format!(
                "SELECT {COLS} FROM collections WHERE (?1 IS NULL OR host_id = ?1) AND origin != 'selftest'
                 AND (?3 IS NULL OR (requested_at, id) < (SELECT requested_at, id FROM collections WHERE id = ?3))
                 ORDER BY requested_at DESC, id DESC LIMIT ?2"
            ),
            params![host_id, limit, before],
            collection_from_row,
        )
    }

    fn prune_selftest_collections(&self, host_id: &str, keep: &str) -> Result<Vec<String>> {
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
