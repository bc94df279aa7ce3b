use super::{enum_col, now, Sqlite};
use crate::storage::items::{codec_name, codec_parse, ChunkRow, ItemRow, ItemStatus, ItemStore};
use crate::storage::{from_json, to_json, Result, StorageError};
use cairn_protocol::chunk::Codec;
use cairn_protocol::manifest::{ItemHeader, ItemManifest};
use rusqlite::{params, OptionalExtension};

pub(super) const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS items (
    id TEXT PRIMARY KEY, collection_id TEXT NOT NULL REFERENCES collections(id), name TEXT NOT NULL,
    kind TEXT NOT NULL, header_json TEXT NOT NULL, manifest_json TEXT, status TEXT NOT NULL,
    raw_len INTEGER, sha256 TEXT, chunk_count INTEGER,
    chunks_received INTEGER NOT NULL DEFAULT 0, duplicate_chunks INTEGER NOT NULL DEFAULT 0,
    started_at TEXT NOT NULL, sealed_at TEXT, error TEXT);
CREATE INDEX IF NOT EXISTS items_collection ON items(collection_id);
CREATE TABLE IF NOT EXISTS blobs (
    sha256 TEXT PRIMARY KEY, codec TEXT NOT NULL, stored_len INTEGER NOT NULL, raw_len INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS item_chunks (
    item_id TEXT NOT NULL REFERENCES items(id), idx INTEGER NOT NULL, sha256 TEXT NOT NULL,
    raw_len INTEGER NOT NULL, PRIMARY KEY (item_id, idx));
"#;

const ITEM_COLS: &str =
    "id, collection_id, name, kind, status, raw_len, sha256, chunk_count, chunks_received,
    duplicate_chunks, started_at, sealed_at, error, header_json, manifest_json";

fn item_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ItemRow> {
    Ok(ItemRow {
        id: r.get(0)?,
        collection_id: r.get(1)?,
        name: r.get(2)?,
        kind: r.get(3)?,
        status: enum_col(r, 4, ItemStatus::parse)?,
        raw_len: r.get(5)?,
        sha256: r.get(6)?,
        chunk_count: r.get(7)?,
        chunks_received: r.get(8)?,
        duplicate_chunks: r.get(9)?,
        started_at: r.get(10)?,
        sealed_at: r.get(11)?,
        error: r.get(12)?,
        header: from_json(r.get(13)?),
        manifest: from_json(r.get(14)?),
    })
}

impl ItemStore for Sqlite {
    fn insert_item(&self, h: &ItemHeader) -> Result<bool> {
        let kind = serde_json::to_value(h.kind)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_else(|| "unknown".into());
        let n = self.lock().execute(
            "INSERT INTO items(id, collection_id, name, kind, header_json, status, started_at)
             VALUES (?1, ?2, ?3, ?4, ?5, 'receiving', ?6) ON CONFLICT(id) DO NOTHING",
            params![
                h.item_id,
                h.collection_id,
                h.source.name,
                kind,
                to_json("item header", h)?,
                now()
            ],
        )?;
        Ok(n == 1)
    }

    fn get_item(&self, id: &str) -> Result<Option<ItemRow>> {
        Ok(self
            .lock()
            .query_row(
                &format!("SELECT {ITEM_COLS} FROM items WHERE id = ?1"),
                params![id],
                item_from_row,
            )
            .optional()?)
    }

    fn item_ids_with_prefix(&self, prefix: &str, limit: u32) -> Result<Vec<String>> {
        self.rows(
            "SELECT id FROM items WHERE substr(id, 1, length(?1)) = ?1 ORDER BY id LIMIT ?2",
            params![prefix, limit],
            |r| r.get(0),
        )
    }

    fn items_of_collection(&self, collection_id: &str) -> Result<Vec<ItemRow>> {
        self.rows(
            &format!(
                "SELECT {ITEM_COLS} FROM items WHERE collection_id = ?1 ORDER BY started_at, name"
            ),
            params![collection_id],
            item_from_row,
        )
    }

    fn item_chunks(&self, item_id: &str) -> Result<Vec<ChunkRow>> {
        self.rows(
            "SELECT idx, sha256, raw_len FROM item_chunks WHERE item_id = ?1 ORDER BY idx",
            params![item_id],
            |r| {
                Ok(ChunkRow {
                    index: r.get(0)?,
                    sha256: r.get(1)?,
                    raw_len: r.get(2)?,
                })
            },
        )
    }

    fn blob_codec(&self, sha256: &str) -> Result<Option<(Codec, u64)>> {
        let row: Option<(String, u64)> = self
            .lock()
            .query_row(
                "SELECT codec, stored_len FROM blobs WHERE sha256 = ?1",
                params![sha256],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
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
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        tx.execute(
            "INSERT INTO blobs(sha256, codec, stored_len, raw_len) VALUES (?1, ?2, ?3, ?4) ON CONFLICT(sha256) DO NOTHING",
            params![sha256, codec_name(codec), stored_len, raw_len],
        )?;
        let n = tx.execute(
            "INSERT INTO item_chunks(item_id, idx, sha256, raw_len) VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
            params![item_id, index, sha256, raw_len],
        )?;
        let counter = if n == 1 {
            "chunks_received"
        } else {
            "duplicate_chunks"
        };
        tx.execute(
            &format!("UPDATE items SET {counter} = {counter} + 1 WHERE id = ?1"),
            params![item_id],
        )?;
        tx.commit()?;
        Ok(n == 1)
    }

    fn seal_item(&self, m: &ItemManifest) -> Result<()> {
        self.lock().execute(
            "UPDATE items SET status = 'sealed', manifest_json = ?2, raw_len = ?3, sha256 = ?4, chunk_count = ?5,
             sealed_at = ?6, error = ?7 WHERE id = ?1",
            params![
                m.header.item_id,
                to_json("item manifest", m)?,
                m.raw_len,
                m.sha256,
                m.chunk_count,
                now(),
                m.error
            ],
        )?;
        Ok(())
    }

    fn reject_item(&self, id: &str, error: &str, manifest: Option<&ItemManifest>) -> Result<()> {
        let mj = manifest.map(|m| to_json("item manifest", m)).transpose()?;
        self.lock().execute(
            "UPDATE items SET status = 'rejected', error = ?2, manifest_json = COALESCE(?3, manifest_json) WHERE id = ?1",
            params![id, error, mj],
        )?;
        Ok(())
    }

    fn fail_item(&self, id: &str, error: &str) -> Result<bool> {
        let n = self.lock().execute(
            "UPDATE items SET status = 'failed', error = ?2 WHERE id = ?1 AND status = 'receiving'",
            params![id, error],
        )?;
        Ok(n == 1)
    }
}
