//! The chain of custody: every event in a collection's life, hash-chained and signed.
//!
//! Records are appended under one lock so that two events of the same collection can never
//! take the same place in its chain. Verification recomputes each record's hash and link,
//! checks its ed25519 signature, then re-reads every stored chunk of every sealed item and
//! compares it with the hashes the custody log recorded when the item was sealed.

use crate::error::{Error, Result};
use crate::evidence::ItemChunks;
use crate::storage::Stores;
use cairn_protocol::custody::{verify_chain, CustodyRecord, GENESIS_HASH};
use ed25519_dalek::{Signer, SigningKey, Verifier, VerifyingKey};
use serde::Serialize;
use std::sync::{Arc, Mutex};

pub struct Custody {
    key: SigningKey,
    stores: Stores,
    append_lock: Mutex<()>,
}

#[derive(Debug, Serialize)]
pub struct VerifyReport {
    pub collection_id: String,
    pub ok: bool,
    pub records_checked: u64,
    pub items_checked: u64,
    pub chunks_checked: u64,
    pub bytes_checked: u64,
    /// The first problem found, naming the record or the item.
    pub error: Option<String>,
    pub bad_item: Option<String>,
}

impl Custody {
    pub fn new(key: SigningKey, stores: Stores) -> Arc<Custody> {
        Arc::new(Custody {
            key,
            stores,
            append_lock: Mutex::new(()),
        })
    }

    pub fn public_key_hex(&self) -> String {
        hex::encode(self.key.verifying_key().to_bytes())
    }

    pub fn append(
        &self,
        collection_id: &str,
        actor: &str,
        action: &str,
        details: serde_json::Value,
    ) -> Result<CustodyRecord> {
        let _guard = self.append_lock.lock().unwrap_or_else(|p| p.into_inner());
        let meta = &self.stores.meta;
        let (seq, prev_hash) = match meta.custody_tail(collection_id)? {
            Some((seq, hash)) => (seq + 1, hash),
            None => (0, GENESIS_HASH.to_string()),
        };
        // Round-trip details through text so the hash covers exactly what is stored.
        let details: serde_json::Value = serde_json::to_string(&details)
            .and_then(|t| serde_json::from_str(&t))
            .map_err(|e| Error::Internal(format!("custody details: {e}")))?;
        let mut r = CustodyRecord {
            collection_id: collection_id.to_string(),
            seq,
            time: cairn_protocol::rfc3339::now(),
            actor: actor.to_string(),
            action: action.to_string(),
            details,
            prev_hash,
            hash: String::new(),
            signature: String::new(),
        };
        r.hash = r.compute_hash();
        let hash_bytes =
            hex::decode(&r.hash).map_err(|e| Error::Internal(format!("record hash: {e}")))?;
        r.signature = hex::encode(self.key.sign(&hash_bytes).to_bytes());
        meta.insert_custody(&r)?;
        Ok(r)
    }

    /// Check the collection's chain and every stored byte of its sealed items.
    pub fn verify(&self, collection_id: &str) -> Result<VerifyReport> {
        let records = self.stores.meta.custody_records(collection_id)?;
        let mut report = VerifyReport {
            collection_id: collection_id.to_string(),
            ok: false,
            records_checked: records.len() as u64,
            items_checked: 0,
            chunks_checked: 0,
            bytes_checked: 0,
            error: None,
            bad_item: None,
        };
        if records.is_empty() {
            report.error = Some(format!("collection {collection_id} has no custody records"));
            return Ok(report);
        }
        let vk = self.key.verifying_key();
        if let Err(e) = verify_chain(&records, |h, s| check_signature(&vk, h, s)) {
            report.error = Some(e.to_string());
            return Ok(report);
        }
        // What custody says each item was sealed as.
        for rec in records.iter().filter(|r| r.action == "item_sealed") {
            let item_id = rec.details["item_id"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let name = rec.details["name"].as_str().unwrap_or_default().to_string();
            let sealed_sha = rec.details["sha256"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            report.items_checked += 1;
            if let Err(e) = self.verify_item(&item_id, &sealed_sha, &mut report) {
                report.error = Some(format!("item {item_id} ({name}): {e}"));
                report.bad_item = Some(item_id);
                return Ok(report);
            }
        }
        report.ok = true;
        Ok(report)
    }

    /// Re-read an item's chunks in order: each must match its hash, the whole `sealed_sha`.
    fn verify_item(
        &self,
        item_id: &str,
        sealed_sha: &str,
        report: &mut VerifyReport,
    ) -> std::result::Result<(), String> {
        let item = self
            .stores
            .meta
            .get_item(item_id)
            .map_err(|e| e.to_string())?
            .ok_or("is in the custody log but not in the database")?;
        if item.sha256.as_deref() != Some(sealed_sha) {
            return Err(format!(
                "database says SHA-256 {}, custody sealed {sealed_sha}",
                item.sha256.unwrap_or_default()
            ));
        }
        let chunks = ItemChunks::open(&self.stores, item_id).map_err(|e| e.to_string())?;
        if Some(chunks.len() as u64) != item.chunk_count {
            return Err(format!(
                "has {} chunks stored, {} sealed",
                chunks.len(),
                item.chunk_count.unwrap_or(0)
            ));
        }
        let whole = chunks.rehash().map_err(|e| e.to_string())?;
        report.chunks_checked += whole.chunks;
        report.bytes_checked += whole.bytes;
        let computed = whole.sha256;
        if computed != sealed_sha {
            return Err(format!(
                "reassembled bytes hash to {computed}, sealed as {sealed_sha}"
            ));
        }
        Ok(())
    }
}

fn check_signature(vk: &VerifyingKey, hash_hex: &str, sig_hex: &str) -> bool {
    let (Ok(hash), Ok(sig)) = (hex::decode(hash_hex), hex::decode(sig_hex)) else {
        return false;
    };
    let Ok(sig) = ed25519_dalek::Signature::from_slice(&sig) else {
        return false;
    };
    vk.verify(&hash, &sig).is_ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::storage::chunk_dir::ChunkDir;
    use crate::storage::sqlite::Sqlite;
    use crate::storage::{CollectionOrigin, CollectionStatus};
    use cairn_protocol::manifest::CollectRequest;

    fn stores(dir: &std::path::Path) -> Stores {
        Stores {
            meta: Arc::new(Sqlite::open(&dir.join("t.db")).unwrap()),
            blobs: Arc::new(ChunkDir::new(dir.join("chunks"), false)),
        }
    }

    fn setup() -> (tempfile::TempDir, Arc<Custody>, SigningKey) {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::generate(&mut rand::rngs::OsRng);
        let s = stores(dir.path());
        let custody = Custody::new(key.clone(), s.clone());
        s.meta.insert_enrolled_host("h1", "web-1", "fp").unwrap();
        let req = CollectRequest {
            collection_id: "c1".into(),
            profile: "volatile".into(),
            reason: "test".into(),
            requested_by: "api:t".into(),
            paths: vec![],
            pid: None,
            container_id: None,
            devices: Vec::new(),
        };
        s.meta
            .insert_collection(
                "h1",
                &req,
                CollectionStatus::Requested,
                CollectionOrigin::Live,
            )
            .unwrap();
        for action in ["trigger_received", "command_sent", "command_accepted"] {
            custody
                .append("c1", "collector", action, serde_json::json!({"n": action}))
                .unwrap();
        }
        (dir, custody, key)
    }

    fn reopen(dir: &tempfile::TempDir, key: SigningKey) -> Arc<Custody> {
        Custody::new(key, stores(dir.path()))
    }

    #[test]
    fn altered_record_is_named_by_sequence_number() {
        let (dir, custody, key) = setup();
        assert!(custody.verify("c1").unwrap().ok);
        drop(custody);
        let conn = rusqlite::Connection::open(dir.path().join("t.db")).unwrap();
        conn.execute(
            "UPDATE custody SET actor = 'someone-else' WHERE seq = 1",
            [],
        )
        .unwrap();
        drop(conn);
        let r = reopen(&dir, key).verify("c1").unwrap();
        assert!(!r.ok);
        let e = r.error.unwrap();
        assert!(e.contains("custody record 1"), "{e}");
    }

    #[test]
    fn deleted_record_and_foreign_signature_are_caught() {
        let (dir, custody, key) = setup();
        drop(custody);
        let conn = rusqlite::Connection::open(dir.path().join("t.db")).unwrap();
        conn.execute("DELETE FROM custody WHERE seq = 1", [])
            .unwrap();
        drop(conn);
        assert!(!reopen(&dir, key).verify("c1").unwrap().ok);

        // The same chain checked with another collector's key fails on the first signature.
        let (dir2, _c, _k) = setup();
        let other = Custody::new(
            SigningKey::generate(&mut rand::rngs::OsRng),
            stores(dir2.path()),
        );
        let r = other.verify("c1").unwrap();
        assert!(r.error.unwrap().contains("signature"));
    }
}
