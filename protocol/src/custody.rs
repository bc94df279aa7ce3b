//! Chain-of-custody records.
//!
//! Each collection has its own chain: record *n* holds the hash of record *n−1* (the first holds
//! 64 zeros), and its own hash covers every field but the hash and the signature, in a canonical
//! byte form defined here so that anyone can recompute it. The collector signs each record's hash
//! with its ed25519 key; `cairn custody verify` recomputes hashes, links and signatures.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustodyRecord {
    pub collection_id: String,
    /// Position in the collection's chain, from 0.
    pub seq: u64,
    pub time: String,
    /// Who caused it: `api:<token name>`, `agent:<agent id>`, `collector`, `import:<token name>`.
    pub actor: String,
    /// `trigger_received`, `command_sent`, `command_accepted`, `item_started`, `item_sealed`,
    /// `item_rejected`, `item_failed`, `collection_finished`, `collection_lost`, `imported`,
    /// `downloaded`, `download_aborted`, `verified`, `verify_failed`, `selftest_started`,
    /// `selftest_read_back`.
    pub action: String,
    /// Facts of the event: item id, SHA-256, sizes, reasons.
    pub details: serde_json::Value,
    pub prev_hash: String,
    pub hash: String,
    /// ed25519 signature of the 32 bytes of `hash`, hex.
    pub signature: String,
}

impl CustodyRecord {
    /// The canonical bytes the record hash covers: each field length-prefixed, `details` as
    /// compact JSON with sorted keys (serde_json's `Value` map is ordered).
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let details = serde_json::to_string(&self.details).unwrap_or_default();
        let mut out = Vec::new();
        for field in [
            "cairn-custody-v1",
            &self.collection_id,
            &self.seq.to_string(),
            &self.time,
            &self.actor,
            &self.action,
            &details,
            &self.prev_hash,
        ] {
            out.extend((field.len() as u64).to_be_bytes());
            out.extend(field.as_bytes());
        }
        out
    }

    pub fn compute_hash(&self) -> String {
        hex::encode(Sha256::digest(self.canonical_bytes()))
    }
}

/// Actions that close a chain: their details carry a [`Commitment`] to every item of the
/// collection, so a verifier can prove nothing was added, removed or swapped afterwards.
pub const FINAL_ACTIONS: &[&str] = &[
    "collection_finished",
    "collection_lost",
    "selftest_read_back",
];

/// What a final record commits to: every item the collector holds for the collection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Commitment {
    pub items: Vec<CommittedItem>,
}

/// One item as it was when the collection was closed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommittedItem {
    pub item_id: String,
    pub name: String,
    /// The collector's status of the item: `sealed`, `rejected`, `receiving`, `failed`.
    pub status: String,
    pub sha256: Option<String>,
    pub raw_len: Option<u64>,
    pub chunk_count: u64,
    /// [`chunk_list_sha256`] of the item's chunks.
    pub chunks_sha256: String,
}

/// The commitment to an item's chunk list: SHA-256 over one line `index sha256 raw_len\n` per
/// chunk, in index order. Pointing an item at other chunks changes it.
pub fn chunk_list_sha256<'a>(chunks: impl IntoIterator<Item = (u64, &'a str, u64)>) -> String {
    let mut h = Sha256::new();
    for (index, sha256, raw_len) in chunks {
        h.update(format!("{index} {sha256} {raw_len}\n").as_bytes());
    }
    hex::encode(h.finalize())
}

/// A chain's head (its last record's sequence number and hash), published outside the
/// collector's database and signed, so that deleting the newest records is detected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainHead {
    pub collection_id: String,
    pub seq: u64,
    pub hash: String,
    pub time: String,
    /// ed25519 signature of [`ChainHead::signed_bytes`], hex.
    pub signature: String,
}

impl ChainHead {
    /// What the head's signature covers.
    pub fn signed_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for field in [
            "cairn-custody-head-v1",
            &self.collection_id,
            &self.seq.to_string(),
            &self.hash,
            &self.time,
        ] {
            out.extend((field.len() as u64).to_be_bytes());
            out.extend(field.as_bytes());
        }
        out
    }
}

/// Why a chain does not verify, naming the first bad record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    #[error("custody record {seq}: sequence number out of order (expected {expected})")]
    Sequence { seq: u64, expected: u64 },
    #[error("custody record {seq}: prev_hash does not match the hash of record {prev}")]
    Link { seq: u64, prev: u64 },
    #[error("custody record {seq} ({action}): content was altered (hash {stored} stored, {computed} computed)")]
    Hash {
        seq: u64,
        action: String,
        stored: String,
        computed: String,
    },
    #[error("custody record {seq} ({action}): signature does not verify with the collector's key")]
    Signature { seq: u64, action: String },
}

/// Check hashes and links of a chain; `check_sig(hash_hex, signature_hex)` checks signatures.
pub fn verify_chain(
    records: &[CustodyRecord],
    check_sig: impl Fn(&str, &str) -> bool,
) -> Result<(), ChainError> {
    let mut prev_hash = GENESIS_HASH.to_string();
    for (i, r) in records.iter().enumerate() {
        if r.seq != i as u64 {
            return Err(ChainError::Sequence {
                seq: r.seq,
                expected: i as u64,
            });
        }
        if r.prev_hash != prev_hash {
            return Err(ChainError::Link {
                seq: r.seq,
                prev: r.seq.saturating_sub(1),
            });
        }
        let computed = r.compute_hash();
        if computed != r.hash {
            return Err(ChainError::Hash {
                seq: r.seq,
                action: r.action.clone(),
                stored: r.hash.clone(),
                computed,
            });
        }
        if !check_sig(&r.hash, &r.signature) {
            return Err(ChainError::Signature {
                seq: r.seq,
                action: r.action.clone(),
            });
        }
        prev_hash = r.hash.clone();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: u64) -> Vec<CustodyRecord> {
        let mut prev = GENESIS_HASH.to_string();
        (0..n)
            .map(|seq| {
                let mut r = CustodyRecord {
                    collection_id: "c1".into(),
                    seq,
                    time: "2026-01-01T00:00:00Z".into(),
                    actor: "collector".into(),
                    action: "item_sealed".into(),
                    details: serde_json::json!({"item": seq, "sha256": "ab"}),
                    prev_hash: prev.clone(),
                    hash: String::new(),
                    signature: "ok".into(),
                };
                r.hash = r.compute_hash();
                prev = r.hash.clone();
                r
            })
            .collect()
    }

    #[test]
    fn intact_chain_verifies_and_edits_are_named() {
        let ok = |_: &str, s: &str| s == "ok";
        let c = chain(4);
        assert!(verify_chain(&c, ok).is_ok());

        let mut edited = c.clone();
        edited[2].details = serde_json::json!({"item": 2, "sha256": "cd"});
        assert!(matches!(
            verify_chain(&edited, ok),
            Err(ChainError::Hash { seq: 2, .. })
        ));

        let mut removed = c.clone();
        removed.remove(1);
        assert!(verify_chain(&removed, ok).is_err());

        let mut resigned = c.clone();
        resigned[3].signature = "forged".into();
        assert!(matches!(
            verify_chain(&resigned, ok),
            Err(ChainError::Signature { seq: 3, .. })
        ));
    }
}
