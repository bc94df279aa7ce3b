use super::{get, get_u64, int, rows, Postgres};
use crate::storage::custody::CustodyStore;
use crate::storage::{to_json, Result, StorageError};
use cairn_protocol::custody::CustodyRecord;

// `details` is the JSON text exactly as SQLite stores it (never `jsonb`, which would reorder
// keys and change the bytes the record's hash covers).
pub(super) const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS custody (
    collection_id TEXT NOT NULL, seq BIGINT NOT NULL, time TEXT NOT NULL, actor TEXT NOT NULL,
    action TEXT NOT NULL, details TEXT NOT NULL, prev_hash TEXT NOT NULL, hash TEXT NOT NULL,
    signature TEXT NOT NULL, PRIMARY KEY (collection_id, seq));
"#;

impl CustodyStore for Postgres {
    fn custody_tail(&self, collection_id: &str) -> Result<Option<(u64, String)>> {
        let coll = collection_id.to_string();
        self.run(move |c| {
            c.query_opt(
                "SELECT seq, hash FROM custody WHERE collection_id = $1 ORDER BY seq DESC LIMIT 1",
                &[&super::t(&coll)],
            )?
            .map(|r| Ok((get_u64(&r, 0)?, get(&r, 1)?)))
            .transpose()
        })
    }

    fn insert_custody(&self, r: &CustodyRecord) -> Result<()> {
        let details = to_json("custody details", &r.details)?;
        // A signed record is stored byte for byte or not at all: PostgreSQL text cannot hold
        // U+0000, and writing anything else would break the chain's hashes.
        let text = [
            &r.collection_id,
            &r.time,
            &r.actor,
            &r.action,
            &details,
            &r.prev_hash,
            &r.hash,
            &r.signature,
        ];
        if text.iter().any(|s| s.contains('\0')) {
            return Err(StorageError::Backend {
                what: "PostgreSQL",
                source: format!(
                    "custody record {} of collection {:?} holds a NUL character, which PostgreSQL text cannot store",
                    r.seq, r.collection_id
                )
                .into(),
            });
        }
        let rec = r.clone();
        let seq = int("custody sequence number", r.seq)?;
        self.run(move |c| {
            c.execute(
                "INSERT INTO custody(collection_id, seq, time, actor, action, details, prev_hash, hash, signature)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                &[
                    &rec.collection_id,
                    &seq,
                    &rec.time,
                    &rec.actor,
                    &rec.action,
                    &details,
                    &rec.prev_hash,
                    &rec.hash,
                    &rec.signature,
                ],
            )
            .map_err(|e| match StorageError::from(e) {
                StorageError::Conflict(_) => StorageError::Conflict(format!(
                    "custody record {} of collection {}",
                    rec.seq, rec.collection_id
                )),
                e => e,
            })?;
            Ok(())
        })
    }

    fn custody_records(&self, collection_id: &str) -> Result<Vec<CustodyRecord>> {
        let coll = collection_id.to_string();
        self.run(move |c| {
            rows(
                c,
                "SELECT collection_id, seq, time, actor, action, details, prev_hash, hash, signature
                 FROM custody WHERE collection_id = $1 ORDER BY seq",
                &[&super::t(&coll)],
                |r| {
                    let details: String = get(r, 5)?;
                    Ok(CustodyRecord {
                        collection_id: get(r, 0)?,
                        seq: get_u64(r, 1)?,
                        time: get(r, 2)?,
                        actor: get(r, 3)?,
                        action: get(r, 4)?,
                        // An unparsable details column is kept as a string: verification then
                        // fails on the hash, naming the record, instead of this query failing.
                        details: serde_json::from_str(&details)
                            .unwrap_or(serde_json::Value::String(details)),
                        prev_hash: get(r, 6)?,
                        hash: get(r, 7)?,
                        signature: get(r, 8)?,
                    })
                },
            )
        })
    }

    fn custody_tails(&self) -> Result<Vec<(String, u64, String, String)>> {
        self.run(|c| {
            rows(
                c,
                "SELECT DISTINCT ON (collection_id) collection_id, seq, hash, time FROM custody
                 ORDER BY collection_id, seq DESC",
                &[],
                |r| Ok((get(r, 0)?, get_u64(r, 1)?, get(r, 2)?, get(r, 3)?)),
            )
        })
    }
}
