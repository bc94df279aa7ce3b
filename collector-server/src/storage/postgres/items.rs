use super::hosts::exec;
use super::{enum_col, get, get_opt_u64, get_u64, int, now, ot, rows, t, Postgres};
use crate::storage::items::{codec_name, codec_parse, ChunkRow, ItemRow, ItemStatus, ItemStore};
use crate::storage::{from_json, to_json, Result, StorageError};
use cairn_protocol::chunk::Codec;
use cairn_protocol::manifest::{ItemHeader, ItemManifest};
use postgres::Row;

pub(super) const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS items (
    id TEXT PRIMARY KEY, collection_id TEXT NOT NULL REFERENCES collections(id), name TEXT NOT NULL,
    kind TEXT NOT NULL, header_json TEXT NOT NULL, manifest_json TEXT, status TEXT NOT NULL,
    raw_len BIGINT, sha256 TEXT, chunk_count BIGINT,
    chunks_received BIGINT NOT NULL DEFAULT 0, duplicate_chunks BIGINT NOT NULL DEFAULT 0,
    started_at TEXT NOT NULL, sealed_at TEXT, error TEXT);
CREATE INDEX IF NOT EXISTS items_collection ON items(collection_id);
CREATE TABLE IF NOT EXISTS blobs (
    sha256 TEXT PRIMARY KEY, codec TEXT NOT NULL, stored_len BIGINT NOT NULL, raw_len BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS item_chunks (
    item_id TEXT NOT NULL REFERENCES items(id), idx BIGINT NOT NULL, sha256 TEXT NOT NULL,
    raw_len BIGINT NOT NULL, PRIMARY KEY (item_id, idx));
CREATE INDEX IF NOT EXISTS item_chunks_sha256 ON item_chunks(sha256);
"#;

const ITEM_COLS: &str =
    "id, collection_id, name, kind, status, raw_len, sha256, chunk_count, chunks_received,
    duplicate_chunks, started_at, sealed_at, error, header_json, manifest_json";

fn item_from_row(r: &Row) -> Result<ItemRow> {
    Ok(ItemRow {
        id: get(r, 0)?,
        collection_id: get(r, 1)?,
        name: get(r, 2)?,
        kind: get(r, 3)?,
        status: enum_col(r, 4, "item status", ItemStatus::parse)?,
        raw_len: get_opt_u64(r, 5)?,
        sha256: get(r, 6)?,
        chunk_count: get_opt_u64(r, 7)?,
        chunks_received: get_u64(r, 8)?,
        duplicate_chunks: get_u64(r, 9)?,
        started_at: get(r, 10)?,
        sealed_at: get(r, 11)?,
        error: get(r, 12)?,
        header: from_json(get(r, 13)?),
        manifest: from_json(get(r, 14)?),
    })
}

impl ItemStore for Postgres {
    fn insert_item(&self, h: &ItemHeader) -> Result<bool> {
        let kind = serde_json::to_value(h.kind)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_else(|| "unknown".into());
        let json = to_json("item header", h)?;
        let (id, coll, name) = (
            h.item_id.clone(),
            h.collection_id.clone(),
            h.source.name.clone(),
        );
        self.run(move |c| {
            let n = c.execute(
                "INSERT INTO items(id, collection_id, name, kind, header_json, status, started_at)
                 VALUES ($1, $2, $3, $4, $5, 'receiving', $6) ON CONFLICT(id) DO NOTHING",
                &[&t(&id), &t(&coll), &t(&name), &t(&kind), &t(&json), &now()],
            )?;
            Ok(n == 1)
        })
    }

    fn get_item(&self, id: &str) -> Result<Option<ItemRow>> {
        let id = id.to_string();
        self.run(move |c| {
            c.query_opt(
                &format!("SELECT {ITEM_COLS} FROM items WHERE id = $1"),
                &[&t(&id)],
            )?
            .map(|r| item_from_row(&r))
            .transpose()
        })
    }

    fn item_ids_with_prefix(&self, prefix: &str, limit: u32) -> Result<Vec<String>> {
        let prefix = prefix.to_string();
        self.run(move |c| {
            rows(
                c,
                "SELECT id FROM items WHERE substr(id, 1, length($1)) = $1 ORDER BY id LIMIT $2",
                &[&t(&prefix), &i64::from(limit)],
                |r| get(r, 0),
            )
        })
    }

    fn items_of_collection(&self, collection_id: &str) -> Result<Vec<ItemRow>> {
        let coll = collection_id.to_string();
        self.run(move |c| {
            rows(
                c,
                &format!(
                    "SELECT {ITEM_COLS} FROM items WHERE collection_id = $1 ORDER BY started_at, name"
                ),
                &[&t(&coll)],
                item_from_row,
            )
        })
    }

    fn item_chunks(&self, item_id: &str) -> Result<Vec<ChunkRow>> {
        let item = item_id.to_string();
        self.run(move |c| {
            rows(
                c,
                "SELECT idx, sha256, raw_len FROM item_chunks WHERE item_id = $1 ORDER BY idx",
                &[&t(&item)],
                |r| {
                    Ok(ChunkRow {
                        index: get_u64(r, 0)?,
                        sha256: get(r, 1)?,
                        raw_len: get_u64(r, 2)?,
                    })
                },
            )
        })
    }

    fn blob_codec(&self, sha256: &str) -> Result<Option<(Codec, u64)>> {
        let sha = sha256.to_string();
        let row: Option<(String, u64)> = self.run(move |c| {
            c.query_opt(
                "SELECT codec, stored_len FROM blobs WHERE sha256 = $1",
                &[&t(&sha)],
            )?
            .map(|r| Ok((get(&r, 0)?, get_u64(&r, 1)?)))
            .transpose()
        })?;
        row.map(|(c, len)| {
            codec_parse(&c)
                .map(|c| (c, len))
                .ok_or_else(|| StorageError::Corrupt {
                    what: "blob codec",
                    detail: format!("unknown codec {c:?} for chunk {sha256}"),
                })
        })
        .transpose()
    }

    fn record_chunk(
        &self,
        item_id: &str,
        index: u64,
        sha256: &str,
        raw_len: u64,
        codec: Codec,
        stored_len: u64,
    ) -> Result<bool> {
        let (item, sha) = (item_id.to_string(), sha256.to_string());
        let (index, raw, stored) = (
            int("chunk index", index)?,
            int("chunk length", raw_len)?,
            int("stored length", stored_len)?,
        );
        // One statement, so one implicit transaction and two round trips (prepare, execute)
        // instead of eight: every chunk of every upload pays it.
        self.run(move |c| {
            let row = c.query_one(
                "WITH b AS (INSERT INTO blobs(sha256, codec, stored_len, raw_len) VALUES ($1, $2, $3, $4)
                     ON CONFLICT(sha256) DO NOTHING),
                 n AS (INSERT INTO item_chunks(item_id, idx, sha256, raw_len) VALUES ($5, $6, $1, $4)
                     ON CONFLICT DO NOTHING RETURNING 1),
                 u AS (UPDATE items SET chunks_received = chunks_received + (SELECT COUNT(*) FROM n),
                     duplicate_chunks = duplicate_chunks + 1 - (SELECT COUNT(*) FROM n) WHERE id = $5)
                 SELECT COUNT(*) FROM n",
                &[&t(&sha), &codec_name(codec), &stored, &raw, &t(&item), &index],
            )?;
            let n: i64 = get(&row, 0)?;
            Ok(n == 1)
        })
    }

    fn seal_item(&self, m: &ItemManifest) -> Result<()> {
        let json = to_json("item manifest", m)?;
        let (raw, count) = (
            int("item length", m.raw_len)?,
            int("chunk count", m.chunk_count)?,
        );
        let (id, sha, err) = (m.header.item_id.clone(), m.sha256.clone(), m.error.clone());
        exec!(
            self,
            "UPDATE items SET status = 'sealed', manifest_json = $2, raw_len = $3, sha256 = $4, chunk_count = $5,
             sealed_at = $6, error = $7 WHERE id = $1",
            t(&id), t(&json), raw, t(&sha), count, now(), ot(err.as_deref())
        )
    }

    fn reject_item(&self, id: &str, error: &str, manifest: Option<&ItemManifest>) -> Result<()> {
        let mj = manifest.map(|m| to_json("item manifest", m)).transpose()?;
        let (id, error) = (id.to_string(), error.to_string());
        exec!(
            self,
            "UPDATE items SET status = 'rejected', error = $2, manifest_json = COALESCE($3, manifest_json) WHERE id = $1",
            t(&id), t(&error), ot(mj.as_deref())
        )
    }

    fn fail_item(&self, id: &str, error: &str) -> Result<bool> {
        let (id, error) = (id.to_string(), error.to_string());
        self.run(move |c| {
            let n = c.execute(
                "UPDATE items SET status = 'failed', error = $2 WHERE id = $1 AND status = 'receiving'",
                &[&t(&id), &t(&error)],
            )?;
            Ok(n == 1)
        })
    }
}
