//! The chain of custody: every event in a collection's life, hash-chained and signed, and
//! proof that the chain is whole.
//!
//! Records are appended under one lock so that two events of the same collection can never
//! take the same place in its chain; after each append the chain's new head is signed and
//! published outside the database (`storage::heads`). A chain is closed by a final record
//! (`collection_finished`, `collection_lost`, `selftest_read_back`) that commits to every item
//! the collector holds for it: id, status, SHA-256, length and the hash of its chunk list.
//!
//! Verification checks that the chain is intact (hashes, links, signatures), that it reaches
//! its published head (deleted newest records), that every item in the database is in the
//! chain, that a finished collection's final record names exactly its items with the chunks
//! they have now, and that every sealed item's stored bytes still hash to what was sealed.

use crate::error::{Error, Result};
use crate::evidence::ItemChunks;
use crate::storage::{ItemRow, ItemStatus, StorageError, Stores};
use cairn_protocol::custody::{
    chunk_list_sha256, verify_chain, ChainHead, Commitment, CommittedItem, CustodyRecord,
    FINAL_ACTIONS, GENESIS_HASH,
};
use ed25519_dalek::{Signer, SigningKey, Verifier, VerifyingKey};
use serde::Serialize;
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

/// Locks for chains' appends: more than the blocking threads that append at once.
const APPEND_STRIPES: usize = 64;

pub struct Custody {
    key: SigningKey,
    stores: Stores,
    /// Appends to one chain take turns (read the tail, sign, insert, publish the head, in
    /// order); chains apart do not wait for each other. One lock for every chain held each
    /// append behind another's object-store write, and bounded the whole collector at some
    /// ten custody records a second on Garage (BENCHMARKS.md, #16 load). Striped: a fixed
    /// number of locks, a chain's chosen by its id.
    append_locks: Vec<Mutex<()>>,
    /// Heads whose publication failed (the object store away), newest per chain, published
    /// again by [`Custody::publish_pending`]. The record itself is committed: refusing the
    /// action (an isolation!) because the bucket is down would be worse than a head that
    /// trails for a while, which `/healthz` shows.
    pending_heads: Mutex<std::collections::HashMap<String, ChainHead>>,
}

#[derive(Debug, Serialize)]
pub struct VerifyReport {
    pub collection_id: String,
    pub ok: bool,
    pub records_checked: u64,
    pub items_checked: u64,
    pub chunks_checked: u64,
    pub bytes_checked: u64,
    /// The published head the chain was checked against: `(seq, time)`.
    pub head: Option<(u64, String)>,
    /// Whether the chain is closed by a final record whose commitment was checked.
    pub complete: bool,
    /// The first problem found, naming the record or the item.
    pub error: Option<String>,
    /// Every problem found.
    pub problems: Vec<String>,
    pub bad_item: Option<String>,
}

impl VerifyReport {
    fn problem(&mut self, what: String, item: Option<&str>) {
        if self.error.is_none() {
            self.error = Some(what.clone());
        }
        if self.bad_item.is_none() {
            self.bad_item = item.map(str::to_string);
        }
        self.problems.push(what);
    }
}

/// The chunk list commitment of an item as stored now.
fn chunks_sha256(stores: &Stores, item_id: &str) -> Result<(String, u64)> {
    let chunks = stores.meta.item_chunks(item_id)?;
    let n = chunks.len() as u64;
    Ok((
        chunk_list_sha256(
            chunks
                .iter()
                .map(|c| (c.index, c.sha256.as_str(), c.raw_len)),
        ),
        n,
    ))
}

fn committed(stores: &Stores, item: &ItemRow) -> Result<CommittedItem> {
    let (chunks_sha256, chunk_count) = chunks_sha256(stores, &item.id)?;
    Ok(CommittedItem {
        item_id: item.id.clone(),
        name: item.name.clone(),
        status: item.status.as_str().to_string(),
        sha256: item.sha256.clone(),
        raw_len: item.raw_len,
        chunk_count,
        chunks_sha256,
    })
}

/// Item ids a record is about.
fn item_of(r: &CustodyRecord) -> Option<&str> {
    match r.action.as_str() {
        "item_started" | "item_sealed" | "item_rejected" | "item_failed" => {
            r.details["item_id"].as_str()
        }
        _ => None,
    }
}

impl Custody {
    pub fn new(key: SigningKey, stores: Stores) -> Arc<Custody> {
        Arc::new(Custody {
            key,
            stores,
            append_locks: (0..APPEND_STRIPES).map(|_| Mutex::new(())).collect(),
            pending_heads: Mutex::new(Default::default()),
        })
    }

    fn lock_pending(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, ChainHead>> {
        self.pending_heads.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Publish a head, or keep it for later when the head store fails.
    fn publish_or_keep(&self, head: ChainHead) {
        match self.stores.heads.publish(&head) {
            Ok(()) => {
                let mut p = self.lock_pending();
                if p.get(&head.collection_id)
                    .is_some_and(|h| h.seq <= head.seq)
                {
                    p.remove(&head.collection_id);
                }
            }
            Err(e) => {
                tracing::warn!(
                    "custody head of {} (record {}) not published, kept to publish again: {e}",
                    head.collection_id,
                    head.seq
                );
                let mut p = self.lock_pending();
                if p.get(&head.collection_id).is_none_or(|h| h.seq < head.seq) {
                    p.insert(head.collection_id.clone(), head);
                }
            }
        }
    }

    /// How many chains have a head not yet published.
    pub fn heads_pending(&self) -> usize {
        self.lock_pending().len()
    }

    /// Try again to publish the heads kept when their store failed; returns how many are
    /// still waiting.
    pub fn publish_pending(&self) -> usize {
        let heads: Vec<ChainHead> = self.lock_pending().values().cloned().collect();
        for h in heads {
            self.publish_or_keep(h);
        }
        self.heads_pending()
    }

    pub fn public_key_hex(&self) -> String {
        hex::encode(self.key.verifying_key().to_bytes())
    }

    fn append_lock(&self, collection_id: &str) -> &Mutex<()> {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        collection_id.hash(&mut h);
        // Never out of bounds: APPEND_STRIPES locks were made, and the index is below it.
        &self.append_locks[(h.finish() % APPEND_STRIPES as u64) as usize]
    }

    pub fn append(
        &self,
        collection_id: &str,
        actor: &str,
        action: &str,
        details: serde_json::Value,
    ) -> Result<CustodyRecord> {
        let _guard = self
            .append_lock(collection_id)
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        // Another instance sharing the database may take the next sequence number between
        // our read of the tail and our insert: the key refuses the second, which then chains
        // onto the new tail. One order per chain, no fork.
        let mut attempt = 0;
        loop {
            match self.append_once(collection_id, actor, action, &details) {
                Err(Error::Storage(StorageError::Conflict(_))) if attempt < 16 => attempt += 1,
                r => return r,
            }
        }
    }

    fn append_once(
        &self,
        collection_id: &str,
        actor: &str,
        action: &str,
        details: &serde_json::Value,
    ) -> Result<CustodyRecord> {
        let meta = &self.stores.meta;
        let (seq, prev_hash) = match meta.custody_tail(collection_id)? {
            Some((seq, hash)) => (seq + 1, hash),
            None => (0, GENESIS_HASH.to_string()),
        };
        // Round-trip details through text so the hash covers exactly what is stored.
        let details: serde_json::Value = serde_json::to_string(details)
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
        let mut head = ChainHead {
            collection_id: r.collection_id.clone(),
            seq: r.seq,
            hash: r.hash.clone(),
            time: r.time.clone(),
            signature: String::new(),
        };
        head.signature = hex::encode(self.key.sign(&head.signed_bytes()).to_bytes());
        self.publish_or_keep(head);
        Ok(r)
    }

    /// What a final record commits to: every item the collector holds for the collection.
    pub fn commitment(&self, collection_id: &str) -> Result<Commitment> {
        let mut items = Vec::new();
        for item in self.stores.meta.items_of_collection(collection_id)? {
            items.push(committed(&self.stores, &item)?);
        }
        Ok(Commitment { items })
    }

    /// Close a chain: a final record (`action` one of [`FINAL_ACTIONS`]) with `details` and
    /// the commitment to every item.
    pub fn close(
        &self,
        collection_id: &str,
        actor: &str,
        action: &str,
        mut details: serde_json::Value,
    ) -> Result<CustodyRecord> {
        if !FINAL_ACTIONS.contains(&action) {
            return Err(Error::Internal(format!(
                "{action} is not a final custody action"
            )));
        }
        let commitment = serde_json::to_value(self.commitment(collection_id)?)
            .map_err(|e| Error::Internal(format!("commitment: {e}")))?;
        if let Some(d) = details.as_object_mut() {
            d.insert("commitment".into(), commitment);
        }
        self.append(collection_id, actor, action, details)
    }

    /// Publish every chain's head as the database has it now (after a restore without the head
    /// log); returns how many chains.
    pub fn republish_heads(&self) -> Result<usize> {
        let tails = self.stores.meta.custody_tails()?;
        for (collection_id, seq, hash, time) in &tails {
            let mut head = ChainHead {
                collection_id: collection_id.clone(),
                seq: *seq,
                hash: hash.clone(),
                time: time.clone(),
                signature: String::new(),
            };
            head.signature = hex::encode(self.key.sign(&head.signed_bytes()).to_bytes());
            self.stores.heads.publish(&head)?;
        }
        Ok(tails.len())
    }

    /// The chunk list commitment `item_sealed` records carry.
    pub fn item_chunks_sha256(&self, item_id: &str) -> Result<String> {
        Ok(chunks_sha256(&self.stores, item_id)?.0)
    }

    fn check_head(
        &self,
        collection_id: &str,
        records: &[CustodyRecord],
        report: &mut VerifyReport,
    ) -> Result<()> {
        let vk = self.key.verifying_key();
        match self.stores.heads.latest(collection_id)? {
            None => report.problem(
                format!("collection {collection_id} has no published chain head: that its newest custody records are all present cannot be proven"),
                None,
            ),
            Some(h) => {
                report.head = Some((h.seq, h.time.clone()));
                let signed = hex::decode(&h.signature)
                    .ok()
                    .and_then(|s| ed25519_dalek::Signature::from_slice(&s).ok())
                    .is_some_and(|sig| vk.verify(&h.signed_bytes(), &sig).is_ok());
                if !signed {
                    report.problem(format!("the published head of collection {collection_id} (record {}) is not signed by this collector", h.seq), None);
                } else {
                    match records.get(h.seq as usize) {
                        None => report.problem(
                            format!(
                                "the custody chain ends at record {} but its head published at {} is record {}: the newest {} record(s) were deleted",
                                records.len().saturating_sub(1),
                                h.time,
                                h.seq,
                                h.seq + 1 - records.len() as u64
                            ),
                            None,
                        ),
                        Some(r) if r.hash != h.hash => report.problem(
                            format!("custody record {} differs from the head published for it at {}", h.seq, h.time),
                            None,
                        ),
                        Some(_) => {}
                    }
                }
            }
        }
        Ok(())
    }

    /// Check the collection's chain, that it is whole, and every stored byte of its sealed
    /// items.
    pub fn verify(&self, collection_id: &str) -> Result<VerifyReport> {
        let records = self.stores.meta.custody_records(collection_id)?;
        let mut report = VerifyReport {
            collection_id: collection_id.to_string(),
            ok: false,
            records_checked: records.len() as u64,
            items_checked: 0,
            chunks_checked: 0,
            bytes_checked: 0,
            head: None,
            complete: false,
            error: None,
            problems: Vec::new(),
            bad_item: None,
        };
        if records.is_empty() {
            report.problem(
                format!("collection {collection_id} has no custody records"),
                None,
            );
            self.check_head(collection_id, &records, &mut report)?;
            return Ok(report);
        }
        let vk = self.key.verifying_key();
        if let Err(e) = verify_chain(&records, |h, s| check_signature(&vk, h, s)) {
            report.problem(e.to_string(), None);
            return Ok(report);
        }
        self.check_head(collection_id, &records, &mut report)?;

        // Every item the database holds must be in the chain.
        let db_items = self.stores.meta.items_of_collection(collection_id)?;
        let in_chain: BTreeSet<&str> = records.iter().filter_map(item_of).collect();
        for item in &db_items {
            if !in_chain.contains(item.id.as_str()) {
                report.problem(
                    format!(
                        "item {} ({}) is in the database but not in the custody chain",
                        item.id, item.name
                    ),
                    Some(&item.id),
                );
            }
        }

        // What custody says each item was sealed as, and what is stored now.
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
            if let Err(e) = self.verify_item(
                &item_id,
                &sealed_sha,
                rec.details["chunks_sha256"].as_str(),
                &mut report,
            ) {
                report.problem(format!("item {item_id} ({name}): {e}"), Some(&item_id));
            }
        }

        // A finished collection: its final record names exactly its items, as they are now.
        let status = self
            .stores
            .meta
            .get_collection(collection_id)?
            .map(|c| c.status);
        let last_final = records
            .iter()
            .rev()
            .find(|r| FINAL_ACTIONS.contains(&r.action.as_str()));
        match (status, last_final) {
            (Some(s), None) if s.is_final() => report.problem(
                format!("collection {collection_id} is {} but its chain has no final record committing to its items", s.as_str()),
                None,
            ),
            (_, Some(fin)) => self.check_commitment(fin, &db_items, &mut report)?,
            _ => {}
        }
        report.ok = report.problems.is_empty();
        Ok(report)
    }

    fn check_commitment(
        &self,
        fin: &CustodyRecord,
        db_items: &[ItemRow],
        report: &mut VerifyReport,
    ) -> Result<()> {
        let Some(commitment) = fin
            .details
            .get("commitment")
            .and_then(|c| serde_json::from_value::<Commitment>(c.clone()).ok())
        else {
            report.problem(
                format!(
                    "final custody record {} ({}) carries no commitment to the collection's items",
                    fin.seq, fin.action
                ),
                None,
            );
            return Ok(());
        };
        let committed_ids: BTreeSet<&str> = commitment
            .items
            .iter()
            .map(|i| i.item_id.as_str())
            .collect();
        for item in db_items {
            if !committed_ids.contains(item.id.as_str()) {
                report.problem(
                    format!(
                        "item {} ({}) is in the database but not in the final record {} ({})",
                        item.id, item.name, fin.seq, fin.action
                    ),
                    Some(&item.id),
                );
            }
        }
        for c in &commitment.items {
            let Some(item) = db_items.iter().find(|i| i.id == c.item_id) else {
                report.problem(
                    format!(
                        "item {} ({}) was committed by record {} but is missing from the database",
                        c.item_id, c.name, fin.seq
                    ),
                    Some(&c.item_id),
                );
                continue;
            };
            let now = committed(&self.stores, item)?;
            if now.sha256 != c.sha256 || now.raw_len != c.raw_len || now.status != c.status {
                report.problem(
                    format!(
                        "item {} ({}) is now {} {} ({} bytes), committed as {} {} ({} bytes)",
                        c.item_id,
                        c.name,
                        now.status,
                        now.sha256.as_deref().unwrap_or("-"),
                        now.raw_len.unwrap_or(0),
                        c.status,
                        c.sha256.as_deref().unwrap_or("-"),
                        c.raw_len.unwrap_or(0)
                    ),
                    Some(&c.item_id),
                );
            } else if now.chunks_sha256 != c.chunks_sha256 || now.chunk_count != c.chunk_count {
                report.problem(
                    format!(
                        "item {} ({}) now points at other chunks ({} chunks) than committed ({} chunks)",
                        c.item_id, c.name, now.chunk_count, c.chunk_count
                    ),
                    Some(&c.item_id),
                );
            }
        }
        report.complete = true;
        Ok(())
    }

    /// Re-read an item's chunks in order: the chunk list must be the sealed one, each chunk
    /// must match its hash, the whole `sealed_sha`.
    fn verify_item(
        &self,
        item_id: &str,
        sealed_sha: &str,
        sealed_chunks: Option<&str>,
        report: &mut VerifyReport,
    ) -> std::result::Result<(), String> {
        let item = self
            .stores
            .meta
            .get_item(item_id)
            .map_err(|e| e.to_string())?
            .ok_or("is in the custody log but not in the database")?;
        if item.sha256.as_deref() != Some(sealed_sha) || item.status != ItemStatus::Sealed {
            return Err(format!(
                "database says {} SHA-256 {}, custody sealed {sealed_sha}",
                item.status.as_str(),
                item.sha256.unwrap_or_default()
            ));
        }
        if let Some(sealed_chunks) = sealed_chunks {
            let (now, n) = chunks_sha256(&self.stores, item_id).map_err(|e| e.to_string())?;
            if now != sealed_chunks {
                return Err(format!(
                    "points at other chunks ({n}) than it was sealed with"
                ));
            }
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
        if whole.sha256 != sealed_sha {
            return Err(format!(
                "reassembled bytes hash to {}, sealed as {sealed_sha}",
                whole.sha256
            ));
        }
        Ok(())
    }

    /// Before an item is served: its chain is intact up to its published head, and the item
    /// is the one it sealed (same SHA-256, same chunks).
    pub fn check_item(&self, item: &ItemRow) -> Result<std::result::Result<(), String>> {
        let records = self.stores.meta.custody_records(&item.collection_id)?;
        let vk = self.key.verifying_key();
        if let Err(e) = verify_chain(&records, |h, s| check_signature(&vk, h, s)) {
            return Ok(Err(e.to_string()));
        }
        let mut report = VerifyReport {
            collection_id: item.collection_id.clone(),
            ok: false,
            records_checked: 0,
            items_checked: 0,
            chunks_checked: 0,
            bytes_checked: 0,
            head: None,
            complete: false,
            error: None,
            problems: Vec::new(),
            bad_item: None,
        };
        self.check_head(&item.collection_id, &records, &mut report)?;
        if let Some(e) = report.error {
            return Ok(Err(e));
        }
        let Some(sealed) = records
            .iter()
            .rev()
            .find(|r| r.action == "item_sealed" && r.details["item_id"].as_str() == Some(&item.id))
        else {
            return Ok(Err(format!(
                "item {} has no item_sealed custody record",
                item.id
            )));
        };
        if sealed.details["sha256"].as_str() != item.sha256.as_deref() {
            return Ok(Err(format!(
                "item {} says SHA-256 {}, custody sealed {}",
                item.id,
                item.sha256.as_deref().unwrap_or("-"),
                sealed.details["sha256"].as_str().unwrap_or("-")
            )));
        }
        if let Some(c) = sealed.details["chunks_sha256"].as_str() {
            if chunks_sha256(&self.stores, &item.id)?.0 != c {
                return Ok(Err(format!(
                    "item {} points at other chunks than it was sealed with",
                    item.id
                )));
            }
        }
        Ok(Ok(()))
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
    use crate::storage::head_file::HeadFile;
    use crate::storage::sqlite::Sqlite;
    use crate::storage::{CollectionOrigin, CollectionStatus};
    use cairn_protocol::manifest::CollectRequest;

    fn stores(dir: &std::path::Path) -> Stores {
        Stores {
            meta: Arc::new(Sqlite::open(&dir.join("t.db")).unwrap()),
            blobs: Arc::new(ChunkDir::new(dir.join("chunks"), false)),
            heads: Arc::new(HeadFile::open(&dir.join("heads.jsonl"), true).unwrap()),
            scratch: dir.to_path_buf(),
            metrics: Default::default(),
        }
    }

    fn request(id: &str) -> CollectRequest {
        CollectRequest {
            collection_id: id.into(),
            profile: "volatile".into(),
            reason: "test".into(),
            requested_by: "api:t".into(),
            paths: vec![],
            pid: None,
            container_id: None,
            devices: Vec::new(),
        }
    }

    fn setup() -> (tempfile::TempDir, Arc<Custody>, SigningKey) {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::generate(&mut rand::rngs::OsRng);
        let s = stores(dir.path());
        let custody = Custody::new(key.clone(), s.clone());
        s.meta.insert_enrolled_host("h1", "web-1", "fp").unwrap();
        let req = request("c1");
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

    use crate::storage::HeadStore;

    /// A head store that fails while `down` is set.
    struct Flaky {
        inner: HeadFile,
        down: std::sync::atomic::AtomicBool,
    }

    impl HeadStore for Flaky {
        fn publish(&self, head: &ChainHead) -> crate::storage::Result<()> {
            if self.down.load(std::sync::atomic::Ordering::Relaxed) {
                return Err(StorageError::Backend {
                    what: "test heads",
                    source: "down".into(),
                });
            }
            self.inner.publish(head)
        }
        fn latest(&self, c: &str) -> crate::storage::Result<Option<ChainHead>> {
            self.inner.latest(c)
        }
        fn chains(&self) -> crate::storage::Result<usize> {
            self.inner.chains()
        }
    }

    /// The head store away: appends still succeed (the record is committed), the head waits,
    /// and is published once the store is back; verify then sees the whole chain.
    #[test]
    fn heads_that_cannot_be_published_wait_and_are_published_later() {
        let (dir, _c, key) = setup();
        let flaky = Arc::new(Flaky {
            inner: HeadFile::open(&dir.path().join("heads.jsonl"), true).unwrap(),
            down: std::sync::atomic::AtomicBool::new(true),
        });
        let mut s = stores(dir.path());
        s.heads = flaky.clone();
        let c = Custody::new(key, s);
        c.append("c1", "collector", "note", serde_json::json!({}))
            .unwrap();
        c.append("c1", "collector", "note", serde_json::json!({}))
            .unwrap();
        assert_eq!(c.heads_pending(), 1);
        assert_eq!(c.publish_pending(), 1, "still down");
        assert_eq!(
            flaky.latest("c1").unwrap().unwrap().seq,
            2,
            "the head trails"
        );
        flaky
            .down
            .store(false, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(c.publish_pending(), 0);
        assert_eq!(flaky.latest("c1").unwrap().unwrap().seq, 4);
        assert!(c.verify("c1").unwrap().ok);
    }

    /// A head store whose publication of chain `c1` waits until the test lets it go.
    struct Gated {
        inner: HeadFile,
        entered: std::sync::mpsc::SyncSender<()>,
        release: Mutex<std::sync::mpsc::Receiver<()>>,
    }

    impl HeadStore for Gated {
        fn publish(&self, head: &ChainHead) -> crate::storage::Result<()> {
            if head.collection_id == "c1" {
                let _ = self.entered.send(());
                let _ = self.release.lock().unwrap().recv();
            }
            self.inner.publish(head)
        }
        fn latest(&self, c: &str) -> crate::storage::Result<Option<ChainHead>> {
            self.inner.latest(c)
        }
        fn chains(&self) -> crate::storage::Result<usize> {
            self.inner.chains()
        }
    }

    /// An append to one chain waiting on the object store (its head's PUT) holds only that
    /// chain: another collection's custody goes on meanwhile, and both chains verify after.
    #[test]
    fn a_slow_head_write_holds_only_its_own_chain() {
        let (dir, _c, key) = setup();
        let (entered_tx, entered) = std::sync::mpsc::sync_channel(1);
        let (release, release_rx) = std::sync::mpsc::channel();
        let mut s = stores(dir.path());
        s.heads = Arc::new(Gated {
            inner: HeadFile::open(&dir.path().join("heads.jsonl"), true).unwrap(),
            entered: entered_tx,
            release: Mutex::new(release_rx),
        });
        let c = Custody::new(key, s.clone());
        // A second collection whose chain has a lock of its own.
        let other = (0..1000)
            .map(|i| format!("c2-{i}"))
            .find(|id| !std::ptr::eq(c.append_lock("c1"), c.append_lock(id)))
            .unwrap();
        let ask = request(&other);
        s.meta
            .insert_collection(
                "h1",
                &ask,
                CollectionStatus::Requested,
                CollectionOrigin::Live,
            )
            .unwrap();
        let slow = {
            let c = c.clone();
            std::thread::spawn(move || {
                c.append("c1", "collector", "note", serde_json::json!({}))
                    .unwrap()
            })
        };
        entered
            .recv_timeout(std::time::Duration::from_secs(10))
            .unwrap();
        let (done_tx, done) = std::sync::mpsc::channel();
        let fast = {
            let (c, other) = (c.clone(), other.clone());
            std::thread::spawn(move || {
                let r = c.append(
                    &other,
                    "collector",
                    "trigger_received",
                    serde_json::json!({}),
                );
                let _ = done_tx.send(());
                r.unwrap()
            })
        };
        let finished = done.recv_timeout(std::time::Duration::from_secs(10));
        release.send(()).unwrap();
        assert!(
            finished.is_ok(),
            "an append to {other} waited for c1's head to be published"
        );
        assert_eq!(fast.join().unwrap().seq, 0);
        assert_eq!(slow.join().unwrap().seq, 3);
        assert!(c.verify("c1").unwrap().ok);
        assert!(c.verify(&other).unwrap().ok);
    }

    /// Two collectors sharing one database (two connections, two processes' worth of
    /// `Custody`) append to one chain at once: one order, no fork, every record kept.
    #[test]
    fn two_instances_appending_to_one_chain_never_fork_it() {
        let (dir, a, key) = setup();
        let b = reopen(&dir, key.clone());
        let threads: Vec<_> = [a, b]
            .into_iter()
            .enumerate()
            .map(|(n, c)| {
                std::thread::spawn(move || {
                    for i in 0..40 {
                        c.append(
                            "c1",
                            &format!("instance-{n}"),
                            "note",
                            serde_json::json!({"i": i}),
                        )
                        .unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let c = reopen(&dir, key);
        let records = c.stores.meta.custody_records("c1").unwrap();
        assert_eq!(records.len(), 83, "3 at setup + 2 × 40");
        for (i, r) in records.iter().enumerate() {
            assert_eq!(r.seq, i as u64);
        }
        let r = c.verify("c1").unwrap();
        assert!(r.ok, "{:?}", r.error);
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

    #[test]
    fn deleting_the_newest_records_is_caught_by_the_published_head() {
        let (dir, custody, key) = setup();
        assert!(custody.verify("c1").unwrap().ok);
        drop(custody);
        let conn = rusqlite::Connection::open(dir.path().join("t.db")).unwrap();
        conn.execute("DELETE FROM custody WHERE seq = 2", [])
            .unwrap();
        drop(conn);
        let r = reopen(&dir, key).verify("c1").unwrap();
        assert!(!r.ok);
        let e = r.error.unwrap();
        assert!(e.contains("the newest 1 record(s) were deleted"), "{e}");
    }
}
