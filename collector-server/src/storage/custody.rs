//! Custody records: per collection, in sequence order, exactly as signed.

use super::Result;
use cairn_protocol::custody::CustodyRecord;

pub trait CustodyStore {
    /// The last record's sequence number and hash.
    fn custody_tail(&self, collection_id: &str) -> Result<Option<(u64, String)>>;
    /// Append a record; [`super::StorageError::Conflict`] when its sequence number is taken.
    fn insert_custody(&self, record: &CustodyRecord) -> Result<()>;
    fn custody_records(&self, collection_id: &str) -> Result<Vec<CustodyRecord>>;
    /// Every chain's last record: `(collection id, seq, hash, time)`.
    fn custody_tails(&self) -> Result<Vec<(String, u64, String, String)>>;
}
