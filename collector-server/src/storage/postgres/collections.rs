use super::{enum_col, get, now, ot, rows, t, texts, Postgres};
use crate::storage::collections::{
    CollectionOrigin, CollectionRow, CollectionStatus, CollectionStore,
};
use crate::storage::{from_json, to_json, Result, StorageError};
use cairn_protocol::manifest::CollectRequest;
use postgres::Row;

pub(super) const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS collections (
    id TEXT PRIMARY KEY, host_id TEXT NOT NULL REFERENCES hosts(id), profile TEXT NOT NULL,
    reason TEXT NOT NULL, requested_by TEXT NOT NULL, request_json TEXT NOT NULL,
    status TEXT NOT NULL, requested_at TEXT NOT NULL, finished_at TEXT,
    errors_json TEXT NOT NULL DEFAULT '[]', origin TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS collections_host ON collections(host_id, status);
CREATE INDEX IF NOT EXISTS collections_status ON collections(status);
CREATE INDEX IF NOT EXISTS collections_requested ON collections(requested_at);
"#;

const COLS: &str = "id, host_id, profile, reason, requested_by, status, requested_at, finished_at, errors_json, origin, request_json";

fn collection_from_row(r: &Row) -> Result<CollectionRow> {
    Ok(CollectionRow {
        id: get(r, 0)?,
        host_id: get(r, 1)?,
        profile: get(r, 2)?,
        reason: get(r, 3)?,
        requested_by: get(r, 4)?,
        status: enum_col(r, 5, "collection status", CollectionStatus::parse)?,
        requested_at: get(r, 6)?,
        finished_at: get(r, 7)?,
        errors: from_json(get(r, 8)?).unwrap_or_default(),
        origin: enum_col(r, 9, "collection origin", CollectionOrigin::parse)?,
        request: from_json(get(r, 10)?),
    })
}

impl CollectionStore for Postgres {
    fn insert_collection(
        &self,
        host_id: &str,
        req: &CollectRequest,
        status: CollectionStatus,
        origin: CollectionOrigin,
    ) -> Result<()> {
        let json = to_json("collection request", req)?;
        let (host, r) = (host_id.to_string(), req.clone());
        self.run(move |c| {
            c.execute(
                "INSERT INTO collections(id, host_id, profile, reason, requested_by, request_json, status, requested_at, origin)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                &[
                    &t(&r.collection_id),
                    &t(&host),
                    &t(&r.profile),
                    &t(&r.reason),
                    &t(&r.requested_by),
                    &t(&json),
                    &status.as_str(),
                    &now(),
                    &origin.as_str(),
                ],
            )
            .map_err(|e| match StorageError::from(e) {
                StorageError::Conflict(_) => {
                    StorageError::Conflict(format!("collection {}", r.collection_id))
                }
                e => e,
            })?;
            Ok(())
        })
    }

    fn set_collection_status(
        &self,
        id: &str,
        status: CollectionStatus,
        errors: Option<&[String]>,
    ) -> Result<()> {
        let finished = status.is_final().then(now);
        let errors = errors
            .map(|e| to_json("collection errors", &e))
            .transpose()?;
        let id = id.to_string();
        self.run(move |c| {
            let mut tx = c.transaction()?;
            tx.execute(
                "UPDATE collections SET status = $2, finished_at = COALESCE($3, finished_at) WHERE id = $1",
                &[&t(&id), &status.as_str(), &finished],
            )?;
            if let Some(e) = errors {
                tx.execute(
                    "UPDATE collections SET errors_json = $2 WHERE id = $1",
                    &[&t(&id), &t(&e)],
                )?;
            }
            tx.commit()?;
            Ok(())
        })
    }

    fn get_collection(&self, id: &str) -> Result<Option<CollectionRow>> {
        let id = id.to_string();
        self.run(move |c| {
            c.query_opt(
                &format!("SELECT {COLS} FROM collections WHERE id = $1"),
                &[&t(&id)],
            )?
            .map(|r| collection_from_row(&r))
            .transpose()
        })
    }

    fn collection_ids_with_prefix(&self, prefix: &str, limit: u32) -> Result<Vec<String>> {
        let prefix = prefix.to_string();
        self.run(move |c| {
            rows(
                c,
                "SELECT id FROM collections WHERE substr(id, 1, length($1)) = $1 ORDER BY id LIMIT $2",
                &[&t(&prefix), &i64::from(limit)],
                |r| get(r, 0),
            )
        })
    }

    fn pending_requests(&self, host_id: &str) -> Result<Vec<CollectRequest>> {
        let host = host_id.to_string();
        let json: Vec<String> = self.run(move |c| {
            rows(
                c,
                "SELECT request_json FROM collections WHERE host_id = $1 AND status IN ('requested', 'queued') ORDER BY requested_at",
                &[&t(&host)],
                |r| get(r, 0),
            )
        })?;
        Ok(json
            .iter()
            .filter_map(|s| serde_json::from_str(s).ok())
            .collect())
    }

    fn hosts_with_requested(&self, hosts: &[String]) -> Result<Vec<String>> {
        let hosts = texts(hosts);
        self.run(move |c| {
            rows(
                c,
                "SELECT DISTINCT host_id FROM collections WHERE status = 'requested' AND host_id = ANY($1)",
                &[&hosts],
                |r| get(r, 0),
            )
        })
    }

    fn queued_hosts(
        &self,
        hosts: &[String],
        per_host: u64,
        limit: u64,
    ) -> Result<Vec<(String, String)>> {
        let hosts = texts(hosts);
        let per_host = per_host.min(i64::MAX as u64) as i64;
        let limit = limit.min(i64::MAX as u64) as i64;
        self.run(move |c| {
            rows(
                c,
                "SELECT q.host_id, MIN(q.requested_at) AS oldest FROM collections q
                 WHERE q.status = 'queued' AND q.host_id = ANY($1)
                 AND (SELECT COUNT(*) FROM collections r WHERE r.host_id = q.host_id
                      AND r.origin = 'live' AND r.status IN ('running', 'paused')) < $2
                 GROUP BY q.host_id ORDER BY oldest, q.host_id LIMIT $3",
                &[&hosts, &per_host, &limit],
                |r| Ok((get(r, 0)?, get(r, 1)?)),
            )
        })
    }

    fn mark_queued(&self, ids: &[String]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let ids = texts(ids);
        self.run(move |c| {
            c.execute(
                "UPDATE collections SET status = 'queued' WHERE status = 'requested' AND id = ANY($1)",
                &[&ids],
            )?;
            Ok(())
        })
    }

    fn running_collections(&self, host_id: Option<&str>) -> Result<u64> {
        let host = host_id.map(str::to_string);
        self.run(move |c| {
            let r = c.query_one(
                "SELECT COUNT(*) FROM collections WHERE ($1::text IS NULL OR host_id = $1) AND origin = 'live' AND status IN ('running', 'paused')",
                &[&ot(host.as_deref())],
            )?;
            super::get_u64(&r, 0)
        })
    }

    fn list_collections(
        &self,
        host_id: Option<&str>,
        before: Option<&str>,
        limit: u32,
    ) -> Result<Vec<CollectionRow>> {
        let host = host_id.map(str::to_string);
        let before = before.map(str::to_string);
        self.run(move |c| {
            rows(
                c,
                &format!(
                    "SELECT {COLS} FROM collections WHERE ($1::text IS NULL OR host_id = $1) AND origin != 'selftest'
                     AND ($3::text IS NULL OR (requested_at, id) < (SELECT requested_at, id FROM collections WHERE id = $3))
                     ORDER BY requested_at DESC, id DESC LIMIT $2"
                ),
                &[&ot(host.as_deref()), &i64::from(limit), &ot(before.as_deref())],
                collection_from_row,
            )
        })
    }

    fn prune_selftest_collections(&self, host_id: &str, keep: &str) -> Result<Vec<String>> {
        let (host, keep) = (host_id.to_string(), keep.to_string());
        self.run(move |c| {
            let mut tx = c.transaction()?;
            let p: [&(dyn postgres::types::ToSql + Sync); 2] = [&t(&host), &t(&keep)];
            let old = "SELECT id FROM collections WHERE host_id = $1 AND origin = 'selftest' AND id != $2";
            let blobs: Vec<String> = rows(
                &mut tx,
                &format!(
                    "SELECT DISTINCT sha256 FROM item_chunks WHERE item_id IN (SELECT id FROM items WHERE collection_id IN ({old}))"
                ),
                &p,
                |r| get(r, 0),
            )?;
            for sql in [
                format!("DELETE FROM item_chunks WHERE item_id IN (SELECT id FROM items WHERE collection_id IN ({old}))"),
                format!("DELETE FROM items WHERE collection_id IN ({old})"),
                format!("DELETE FROM custody WHERE collection_id IN ({old})"),
                "DELETE FROM collections WHERE host_id = $1 AND origin = 'selftest' AND id != $2".to_string(),
            ] {
                tx.execute(&sql, &p)?;
            }
            let mut orphans = Vec::new();
            for sha in blobs {
                // Another collector may record a chunk of this payload meanwhile: the delete
                // only takes a blob no chunk refers to at that moment.
                let n = tx.execute(
                    "DELETE FROM blobs WHERE sha256 = $1 AND NOT EXISTS (SELECT 1 FROM item_chunks WHERE sha256 = $1)",
                    &[&sha],
                )?;
                if n == 1 {
                    orphans.push(sha);
                }
            }
            tx.commit()?;
            Ok(orphans)
        })
    }
}
