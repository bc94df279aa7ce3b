use super::{is_conflict, Sqlite};
use crate::storage::custody::CustodyStore;
use crate::storage::{to_json, Result, StorageError};
use cairn_protocol::custody::CustodyRecord;
use rusqlite::{params, OptionalExtension};

pub(super) const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS custody (
    collection_id TEXT NOT NULL, seq INTEGER NOT NULL, time TEXT NOT NULL, actor TEXT NOT NULL,
    action TEXT NOT NULL, details TEXT NOT NULL, prev_hash TEXT NOT NULL, hash TEXT NOT NULL,
    signature TEXT NOT NULL, PRIMARY KEY (collection_id, seq));
"#;

impl CustodyStore for Sqlite {
    fn custody_tail(&self, collection_id: &str) -> Result<Option<(u64, String)>> {
        Ok(self
            .lock()
            .query_row(
                "SELECT seq, hash FROM custody WHERE collection_id = ?1 ORDER BY seq DESC LIMIT 1",
                params![collection_id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?)
    }

    fn insert_custody(&self, r: &CustodyRecord) -> Result<()> {
        self.lock()
            .execute(
                "INSERT INTO custody(collection_id, seq, time, actor, action, details, prev_hash, hash, signature)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    r.collection_id,
                    r.seq,
                    r.time,
                    r.actor,
                    r.action,
                    to_json("custody details", &r.details)?,
                    r.prev_hash,
                    r.hash,
                    r.signature
                ],
            )
            .map_err(|e| {
                if is_conflict(&e) {
                    StorageError::Conflict(format!(
                        "custody record {} of collection {}",
                        r.seq, r.collection_id
                    ))
                } else {
                    e.into()
                }
            })?;
        Ok(())
    }

    fn custody_records(&self, collection_id: &str) -> Result<Vec<CustodyRecord>> {
        self.rows(
            "SELECT collection_id, seq, time, actor, action, details, prev_hash, hash, signature
             FROM custody WHERE collection_id = ?1 ORDER BY seq",
            params![collection_id],
            |r| {
                let details: String = r.get(5)?;
                Ok(CustodyRecord {
                    collection_id: r.get(0)?,
                    seq: r.get(1)?,
                    time: r.get(2)?,
                    actor: r.get(3)?,
                    action: r.get(4)?,
                    // An unparsable details column is kept as a string: verification then
                    // fails on the hash, naming the record, instead of this query failing.
                    details: serde_json::from_str(&details)
                        .unwrap_or(serde_json::Value::String(details)),
                    prev_hash: r.get(6)?,
                    hash: r.get(7)?,
                    signature: r.get(8)?,
                })
            },
        )
    }

    fn custody_tails(&self) -> Result<Vec<(String, u64, String, String)>> {
        self.rows(
            "SELECT c.collection_id, c.seq, c.hash, c.time FROM custody c
             JOIN (SELECT collection_id, MAX(seq) AS seq FROM custody GROUP BY collection_id) t
             ON t.collection_id = c.collection_id AND t.seq = c.seq ORDER BY c.collection_id",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
    }
}
