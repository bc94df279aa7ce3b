//! The life of a collection, in one place: requested (by a person, a trigger or an import),
//! sent to its agent, accepted, its items begun and sealed, finished, verified, downloaded.
//! Every step that changes what is known about the evidence is a custody record.

use crate::custody::{Custody, VerifyReport};
use crate::error::{Error, Result};
use crate::ingest::{IngestError, ItemIngest, Opened};
use crate::sessions::Sessions;
use crate::storage::{
    CollectionOrigin, CollectionRow, CollectionStatus, HostRow, ItemRow, ItemStatus, Stores,
};
use cairn_protocol::manifest::{CollectRequest, CollectionRecord, ItemHeader, ItemManifest};
use serde_json::{json, Value};
use std::sync::Arc;

mod ask;
mod progress;
mod slots;
pub use ask::{check_paths, Ask, MAX_DEVICES, MAX_PATHS};
pub use progress::{progress, Progress};
use slots::Slots;

pub use cairn_protocol::manifest::PROFILES;

/// How many live collections may run at once: a collection holds agent CPU and disk on the
/// host and the collector's ingest; beyond the limits, requests wait `queued`, oldest first.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub per_host: u64,
    pub total: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            per_host: 2,
            total: 32,
        }
    }
}

pub struct Collections {
    stores: Stores,
    custody: Arc<Custody>,
    sessions: Arc<Sessions>,
    limits: Limits,
    slots: Slots,
}

fn agent_actor(host_id: &str) -> String {
    format!("agent:{host_id}")
}

impl Collections {
    pub fn new(
        stores: Stores,
        custody: Arc<Custody>,
        sessions: Arc<Sessions>,
        limits: Limits,
    ) -> Collections {
        Collections {
            stores,
            custody,
            sessions,
            limits,
            slots: Slots::default(),
        }
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// A collection by its id or an id prefix.
    pub fn get(&self, id: &str) -> Result<CollectionRow> {
        if let Some(c) = self.stores.meta.get_collection(id)? {
            return Ok(c);
        }
        let found = self.stores.meta.collection_ids_with_prefix(id, 10)?;
        let full = crate::hosts::one_id("collection", id, false, found)?;
        self.stores
            .meta
            .get_collection(&full)?
            .ok_or_else(|| Error::not_found(format!("no collection {id}")))
    }

    /// An item by its id or an id prefix.
    pub fn item(&self, id: &str) -> Result<ItemRow> {
        if let Some(i) = self.stores.meta.get_item(id)? {
            return Ok(i);
        }
        let found = self.stores.meta.item_ids_with_prefix(id, 10)?;
        let full = crate::hosts::one_id("item", id, false, found)?;
        self.stores
            .meta
            .get_item(&full)?
            .ok_or_else(|| Error::not_found(format!("no item {id}")))
    }

    /// Store a request, log `trigger_received` (with `extra` facts, e.g. the alert) and wake
    /// the host's control loop. Returns whether the agent is connected now.
    pub fn request(&self, host: &HostRow, req: &CollectRequest, extra: Value) -> Result<bool> {
        self.stores.meta.insert_collection(
            &host.id,
            req,
            CollectionStatus::Requested,
            CollectionOrigin::Live,
        )?;
        let mut details = json!({"host_id": host.id, "hostname": host.hostname, "profile": req.profile, "reason": req.reason, "paths": req.paths, "pid": req.pid, "container_id": req.container_id, "devices": req.devices});
        if let (Some(d), Value::Object(x)) = (details.as_object_mut(), extra) {
            d.extend(x);
        }
        self.custody.append(
            &req.collection_id,
            &req.requested_by,
            "trigger_received",
            details,
        )?;
        Ok(self.sessions.wake(&host.id))
    }

    /// Requests the host's agent has not accepted yet that may be sent now, oldest first;
    /// `in_flight` were sent on this connection and not yet accepted (not sent again). Each
    /// one returned holds a slot until its agent accepts it (see [`slots`]); the rest
    /// wait `queued`, and the dispatcher ([`Collections::hosts_to_wake`]) wakes their host
    /// when a slot frees.
    pub fn sendable(
        &self,
        host_id: &str,
        in_flight: &std::collections::HashSet<String>,
    ) -> Result<Vec<CollectRequest>> {
        let pending: Vec<CollectRequest> = self
            .stores
            .meta
            .pending_requests(host_id)?
            .into_iter()
            .filter(|r| !in_flight.contains(&r.collection_id))
            .collect();
        if pending.is_empty() {
            return Ok(pending);
        }
        // A last breath cannot wait for a slot: the host or container is going away.
        let (urgent, pending): (Vec<_>, Vec<_>) = pending
            .into_iter()
            .partition(|r| r.profile == "last-breath");
        let mut out = Vec::new();
        let mut wait = Vec::new();
        {
            let mut held = self.slots.lock();
            let on_host =
                self.stores.meta.running_collections(Some(host_id))? + held.on_host(host_id);
            let total = self.stores.meta.running_collections(None)? + held.total();
            let mut room = self
                .limits
                .per_host
                .saturating_sub(on_host)
                .min(self.limits.total.saturating_sub(total));
            for req in urgent {
                held.hold(&req.collection_id, host_id);
                out.push(req);
            }
            for req in pending {
                if held.is_held(&req.collection_id) {
                    // Sent on an earlier connection, its slot still held: it goes again.
                    out.push(req);
                } else if room > 0 {
                    room -= 1;
                    held.hold(&req.collection_id, host_id);
                    out.push(req);
                } else {
                    wait.push(req.collection_id);
                }
            }
        }
        self.stores.meta.mark_queued(&wait)?;
        Ok(out)
    }

    /// Commands sent on a connection that ended before the agent accepted them: their slots
    /// are free again (the requests stay pending and go out on the next connection).
    pub fn unsent(&self, collection_ids: &[String]) {
        for id in collection_ids {
            self.slots.release(id);
        }
        if !collection_ids.is_empty() {
            self.sessions.ring_dispatcher();
        }
    }

    /// Which of the `connected` hosts have work that may go now: new requests (each host
    /// once, to send it or mark it queued) and, when slots are free, the hosts of the oldest
    /// queued requests, as many as there are free slots. Not every host that waits: with ten
    /// thousand queued, waking them all each second starves the control streams.
    pub fn hosts_to_wake(&self, connected: &[String]) -> Result<Vec<String>> {
        const BATCH: usize = 500;
        let mut due = Vec::new();
        for batch in connected.chunks(BATCH) {
            due.extend(self.stores.meta.hosts_with_requested(batch)?);
        }
        let free = self
            .limits
            .total
            .saturating_sub(self.stores.meta.running_collections(None)? + self.slots.held());
        if free > 0 {
            let mut queued = Vec::new();
            for batch in connected.chunks(BATCH) {
                queued.extend(
                    self.stores
                        .meta
                        .queued_hosts(batch, self.limits.per_host, free)?,
                );
            }
            queued.sort_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
            due.extend(queued.into_iter().take(free as usize).map(|(h, _)| h));
        }
        due.sort();
        due.dedup();
        Ok(due)
    }

    /// Why a queued collection waits, in words.
    pub fn queue_reason(&self, host_id: &str) -> Result<String> {
        let on_host = self.stores.meta.running_collections(Some(host_id))?;
        let total = self.stores.meta.running_collections(None)?;
        Ok(format!(
            "waiting for a free slot: {on_host} running on this host (at most {}), {total} on the collector (at most {})",
            self.limits.per_host, self.limits.total
        ))
    }

    /// Uploads of a collection wait for room at the collector.
    pub fn pause(&self, collection_id: &str, why: &str) -> Result<()> {
        if let Some(c) = self.stores.meta.get_collection(collection_id)? {
            if c.status == CollectionStatus::Running {
                self.stores.meta.set_collection_status(
                    collection_id,
                    CollectionStatus::Paused,
                    Some(&[format!("paused: {why}")]),
                )?;
            }
        }
        Ok(())
    }

    /// A paused collection's uploads go on.
    pub fn resume(&self, collection_id: &str) -> Result<()> {
        if let Some(c) = self.stores.meta.get_collection(collection_id)? {
            if c.status == CollectionStatus::Paused {
                self.stores.meta.set_collection_status(
                    collection_id,
                    CollectionStatus::Running,
                    Some(&[]),
                )?;
            }
        }
        Ok(())
    }

    /// The command went out on the host's control stream.
    pub fn command_sent(&self, host_id: &str, req: &CollectRequest) -> Result<()> {
        self.custody.append(
            &req.collection_id,
            "collector",
            "command_sent",
            json!({"host_id": host_id, "profile": req.profile, "paths": req.paths}),
        )?;
        Ok(())
    }

    /// The agent took the command: the collection runs. A repeat or another host's claim is
    /// ignored.
    pub fn accepted(&self, host_id: &str, collection_id: &str) -> Result<()> {
        if let Some(c) = self.stores.meta.get_collection(collection_id)? {
            if c.host_id == host_id {
                // Counted by the store from here on (once running), or never again.
                self.slots.release(collection_id);
            }
            if c.host_id == host_id
                && matches!(
                    c.status,
                    CollectionStatus::Requested | CollectionStatus::Queued
                )
            {
                self.stores.meta.set_collection_status(
                    collection_id,
                    CollectionStatus::Running,
                    None,
                )?;
                self.custody.append(
                    collection_id,
                    &agent_actor(host_id),
                    "command_accepted",
                    json!({}),
                )?;
            }
        }
        Ok(())
    }

    /// Collections running here that the agent no longer knows were lost with an agent restart.
    pub fn fail_lost(&self, host_id: &str, active: &[String]) -> Result<()> {
        for c in self
            .stores
            .meta
            .list_collections(Some(host_id), None, 1000)?
        {
            if matches!(
                c.status,
                CollectionStatus::Running | CollectionStatus::Paused
            ) && c.origin == CollectionOrigin::Live
                && !active.contains(&c.id)
            {
                let error = "the agent no longer has this collection (it restarted while collecting); request it again".to_string();
                self.fail_unfinished_items(&c.id, &agent_actor(host_id), &error)?;
                self.stores.meta.set_collection_status(
                    &c.id,
                    CollectionStatus::Failed,
                    Some(std::slice::from_ref(&error)),
                )?;
                self.custody.close(
                    &c.id,
                    &agent_actor(host_id),
                    "collection_lost",
                    json!({"error": error}),
                )?;
                tracing::warn!("collection {} on {host_id} lost: agent restarted", c.id);
            }
        }
        Ok(())
    }

    /// Items still receiving when their collection can no longer finish: failed, each with a
    /// custody record saying why.
    fn fail_unfinished_items(&self, collection_id: &str, actor: &str, why: &str) -> Result<()> {
        for item in self.stores.meta.items_of_collection(collection_id)? {
            if item.status == ItemStatus::Receiving && self.stores.meta.fail_item(&item.id, why)? {
                self.custody.append(
                    collection_id,
                    actor,
                    "item_failed",
                    json!({"item_id": item.id, "name": item.name, "chunks_received": item.chunks_received, "reason": why}),
                )?;
            }
        }
        Ok(())
    }

    /// Close a collection when its agent (or an import) says it is done: sealed if every item
    /// sealed and nothing went wrong, partial if something was sealed, failed otherwise.
    pub fn finish(
        &self,
        host_id: &str,
        collection_id: &str,
        items: &[String],
        errors: &[String],
    ) -> Result<()> {
        let c = self.get(collection_id)?;
        if c.host_id != host_id {
            return Err(Error::conflict(format!(
                "collection {collection_id} belongs to another host"
            )));
        }
        self.slots.release(collection_id);
        if c.status.is_final() {
            // A repeat after a reconnect: already recorded.
            return Ok(());
        }
        let mut errors = errors.to_vec();
        let mut sealed = 0;
        let mut sealed_bytes = 0u64;
        for id in items {
            match self.stores.meta.get_item(id)? {
                // Stored and sealed, but the host could not read its source (physical memory
                // with no source): evidence is missing, and the collection must say so.
                Some(i) if i.status == ItemStatus::Sealed => match i
                    .manifest
                    .as_ref()
                    .filter(|m| m.status == cairn_protocol::manifest::ItemStatus::Failed)
                {
                    Some(m) => errors.push(format!(
                        "item {id} ({}): acquisition failed on the host: {}",
                        i.name,
                        m.error.as_deref().unwrap_or("no reason given")
                    )),
                    None => {
                        sealed += 1;
                        sealed_bytes += i.raw_len.unwrap_or(0);
                    }
                },
                Some(i) => errors.push(format!(
                    "item {id} ({}) is {}: {}",
                    i.name,
                    i.status.as_str(),
                    i.error.unwrap_or_default()
                )),
                None => errors.push(format!("item {id} was never received")),
            }
        }
        let status = if errors.is_empty() {
            CollectionStatus::Sealed
        } else if sealed > 0 {
            CollectionStatus::Partial
        } else {
            CollectionStatus::Failed
        };
        // Items of the collection the agent did not list can never complete now.
        self.fail_unfinished_items(
            collection_id,
            &agent_actor(host_id),
            "the collection finished without this item",
        )?;
        self.stores
            .meta
            .set_collection_status(collection_id, status, Some(&errors))?;
        self.custody.close(
            collection_id,
            &agent_actor(host_id),
            "collection_finished",
            // How much made it, in numbers (a last breath cut short by a shutdown says so).
            json!({"status": status, "items": items, "errors": errors,
                   "items_sealed": sealed, "bytes_sealed": sealed_bytes}),
        )?;
        // A slot is free: the dispatcher wakes the hosts of the oldest queued requests.
        self.sessions.ring_dispatcher();
        Ok(())
    }

    /// Open an item stream (live upload or import); `host_id`, when given, must own the
    /// collection. The first time an item is seen, `item_started` goes into custody.
    pub fn begin_item(
        &self,
        header: ItemHeader,
        host_id: Option<&str>,
        actor: &str,
    ) -> std::result::Result<Opened, IngestError> {
        let opened = ItemIngest::begin(&self.stores, header, host_id)?;
        if let Opened::Held {
            new: true, ingest, ..
        } = &opened
        {
            let h = ingest.header();
            self.custody
                .append(
                    &h.collection_id,
                    actor,
                    "item_started",
                    json!({"item_id": h.item_id, "name": h.source.name, "kind": h.kind, "source": h.source}),
                )
                .map_err(|e| IngestError::Rejected(format!("custody: {e}")))?;
        }
        Ok(opened)
    }

    /// Check an item's manifest and seal it (custody `item_sealed`, then its timeline rows,
    /// before the agent hears "sealed", so a finished collection is searchable), or record its
    /// rejection. Returns the item's SHA-256.
    pub fn finish_item(
        &self,
        ingest: ItemIngest,
        manifest: &ItemManifest,
        actor: &str,
    ) -> std::result::Result<String, IngestError> {
        let header = ingest.header().clone();
        let cid = &header.collection_id;
        let custody = |action: &str, details: Value| {
            self.custody
                .append(cid, actor, action, details)
                .map_err(|e| IngestError::Rejected(format!("custody: {e}")))
        };
        match ingest.finish(manifest) {
            Ok(sha256) => {
                let chunks_sha256 = self
                    .custody
                    .item_chunks_sha256(&header.item_id)
                    .map_err(|e| IngestError::Rejected(format!("custody: {e}")))?;
                custody(
                    "item_sealed",
                    json!({
                        "chunks_sha256": chunks_sha256,
                        "item_id": manifest.header.item_id,
                        "name": manifest.header.source.name,
                        "sha256": manifest.sha256,
                        "raw_len": manifest.raw_len,
                        "chunk_count": manifest.chunk_count,
                        "acquisition_status": manifest.status,
                        "gaps": manifest.gaps.len(),
                        "acquisition_start": manifest.header.acquisition_start,
                        "acquisition_end": manifest.acquisition_end,
                        "verified_by": "collector re-hashed every chunk and the whole item",
                    }),
                )?;
                // A timeline failure is recorded for the item, never fatal to the seal.
                if let Err(e) = crate::timeline::build_for_item(&self.stores, manifest) {
                    tracing::warn!("timeline of item {}: {e}", manifest.header.item_id);
                }
                Ok(sha256)
            }
            Err(IngestError::Rejected(reason)) => {
                custody(
                    "item_rejected",
                    json!({"item_id": header.item_id, "name": header.source.name, "reason": reason}),
                )?;
                Err(IngestError::Rejected(reason))
            }
            Err(e) => Err(e),
        }
    }

    /// An offline collection's record arrives: its host (found or created), the collection
    /// `running` and `imported` in custody. Returns the host id, and whether an interrupted
    /// import of the same record is being resumed.
    pub fn import(&self, rec: &CollectionRecord, actor: &str) -> Result<(String, bool)> {
        let cid = &rec.request.collection_id;
        if !cid.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            || cid.is_empty()
            || cid.len() > 64
        {
            return Err(Error::invalid(format!(
                "collection id {cid:?} is not a valid id"
            )));
        }
        if let Some(existing) = self.stores.meta.get_collection(cid)? {
            // An import cut short (Ctrl-C, a dropped connection) may be run again to finish.
            let same = existing.origin == CollectionOrigin::Import
                && existing.request.as_ref() == Some(&rec.request);
            if same && existing.status == CollectionStatus::Running {
                return Ok((existing.host_id, true));
            }
            return Err(Error::conflict(format!(
                "collection {cid} was already imported ({}); `cairn show {cid}` shows it",
                existing.status.as_str()
            )));
        }
        let host_id = self.stores.meta.upsert_import_host(&rec.host)?;
        self.stores.meta.insert_collection(
            &host_id,
            &rec.request,
            CollectionStatus::Running,
            CollectionOrigin::Import,
        )?;
        self.custody.append(
            cid,
            actor,
            "imported",
            json!({"host_id": host_id, "hostname": rec.host.hostname, "profile": rec.request.profile, "reason": rec.request.reason,
                   "collected_by": rec.request.requested_by, "started": rec.started, "finished": rec.finished, "tool": rec.tool, "items": rec.items,
                   // A mounted image read on another machine: which files, which machine.
                   "source_root": rec.host.source_root, "hostname_from": rec.host.hostname_from, "read_on": rec.host.collected_by}),
        )?;
        Ok((host_id, false))
    }

    /// The collection an import writes into: it must exist and come from an import.
    pub fn importing(&self, collection_id: &str) -> Result<CollectionRow> {
        let c = self.get(collection_id)?;
        if c.origin != CollectionOrigin::Import {
            return Err(Error::conflict(format!(
                "collection {collection_id} was not created by an import"
            )));
        }
        Ok(c)
    }

    /// Check the chain and every stored byte, and record the verification in the chain.
    pub fn verify(&self, collection_id: &str, actor: &str) -> Result<VerifyReport> {
        let collection_id = &self.get(collection_id)?.id;
        let report = self.custody.verify(collection_id)?;
        let action = if report.ok {
            "verified"
        } else {
            "verify_failed"
        };
        // Recording a verification extends the chain; only do it on an intact chain, so a
        // broken one stays exactly as it was found.
        if report.ok || report.bad_item.is_some() {
            self.custody.append(
                collection_id,
                actor,
                action,
                json!({"records_checked": report.records_checked, "items_checked": report.items_checked, "chunks_checked": report.chunks_checked, "bytes_checked": report.bytes_checked, "error": report.error}),
            )?;
        }
        Ok(report)
    }

    /// A sealed item, ready to be served; anything else is a conflict naming its status.
    pub fn sealed_item(&self, item_id: &str) -> Result<ItemRow> {
        let item = self.item(item_id)?;
        let item_id = item.id.clone();
        if item.status != ItemStatus::Sealed {
            return Err(Error::conflict(format!(
                "item {item_id} is {}, not sealed",
                item.status.as_str()
            )));
        }
        Ok(item)
    }

    /// A download ended: `downloaded` when every byte went out, else `download_aborted` with
    /// how many bytes did and why the rest did not.
    pub fn record_download(
        &self,
        item: &ItemRow,
        actor: &str,
        bytes_sent: u64,
        failure: Option<&str>,
    ) -> Result<()> {
        let complete = failure.is_none() && Some(bytes_sent) == item.raw_len;
        let (action, details) = if complete {
            (
                "downloaded",
                json!({"item_id": item.id, "name": item.name, "sha256": item.sha256, "raw_len": item.raw_len}),
            )
        } else {
            (
                "download_aborted",
                json!({"item_id": item.id, "name": item.name, "sha256": item.sha256, "raw_len": item.raw_len,
                       "bytes_sent": bytes_sent, "reason": failure.unwrap_or("ended early")}),
            )
        };
        self.custody
            .append(&item.collection_id, actor, action, details)?;
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::storage::chunk_dir::ChunkDir;
    use crate::storage::head_file::HeadFile;
    use crate::storage::sqlite::Sqlite;
    use std::collections::HashSet;

    struct Fleet {
        _dir: tempfile::TempDir,
        collections: Collections,
        hosts: Vec<String>,
    }

    /// `n` connected hosts, each with `per` requests, oldest first by host.
    fn fleet(limits: Limits, n: usize, per: usize) -> Fleet {
        let dir = tempfile::tempdir().unwrap();
        let stores = Stores {
            meta: Arc::new(Sqlite::open(&dir.path().join("t.db")).unwrap()),
            blobs: Arc::new(ChunkDir::new(dir.path().join("chunks"), false)),
            heads: Arc::new(HeadFile::open(&dir.path().join("heads.jsonl"), true).unwrap()),
            scratch: dir.path().to_path_buf(),
            metrics: Default::default(),
        };
        let key = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
        let custody = Custody::new(key, stores.clone());
        let sessions = Arc::new(Sessions::default());
        let collections = Collections::new(stores.clone(), custody, sessions.clone(), limits);
        let mut hosts = Vec::new();
        for h in 0..n {
            let id = format!("h{h}");
            stores.meta.insert_enrolled_host(&id, &id, &id).unwrap();
            let _bell = sessions.register(&id);
            let host = stores.meta.get_host(&id).unwrap().unwrap();
            for c in 0..per {
                let req = CollectRequest {
                    collection_id: format!("c{h}-{c}"),
                    profile: "volatile".into(),
                    reason: "test".into(),
                    requested_by: "api:t".into(),
                    paths: vec![],
                    pid: None,
                    container_id: None,
                    devices: vec![],
                };
                collections.request(&host, &req, json!({})).unwrap();
                // Distinct request times: the queue's order is theirs.
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            hosts.push(id);
        }
        Fleet {
            _dir: dir,
            collections,
            hosts,
        }
    }

    fn send_all(f: &Fleet) -> Vec<String> {
        f.hosts
            .iter()
            .flat_map(|h| f.collections.sendable(h, &HashSet::new()).unwrap())
            .map(|r| r.collection_id)
            .collect()
    }

    fn status(f: &Fleet, id: &str) -> CollectionStatus {
        f.collections.get(id).unwrap().status
    }

    #[test]
    fn hosts_woken_together_share_the_free_slots_and_a_freed_slot_wakes_one() {
        let f = fleet(
            Limits {
                per_host: 2,
                total: 3,
            },
            10,
            1,
        );
        // Every loop looks at once (the first tick): three commands go, not ten.
        assert_eq!(send_all(&f), ["c0-0", "c1-0", "c2-0"]);
        for h in 3..10 {
            assert_eq!(status(&f, &format!("c{h}-0")), CollectionStatus::Queued);
        }
        // Sent, not yet accepted: only their own hosts are looked at again.
        assert_eq!(
            f.collections.hosts_to_wake(&f.hosts).unwrap(),
            ["h0", "h1", "h2"]
        );
        // Asked again before any answer (as by new connections): the same three, no more.
        assert_eq!(send_all(&f), ["c0-0", "c1-0", "c2-0"]);
        for h in 0..3 {
            f.collections
                .accepted(&f.hosts[h], &format!("c{h}-0"))
                .unwrap();
        }
        assert!(f.collections.hosts_to_wake(&f.hosts).unwrap().is_empty());
        f.collections.finish("h0", "c0-0", &[], &[]).unwrap();
        // One slot free: the oldest queued host is woken, not the seven that wait.
        assert_eq!(f.collections.hosts_to_wake(&f.hosts).unwrap(), ["h3"]);
        assert_eq!(send_all(&f), ["c3-0"]);
        assert!(f.collections.hosts_to_wake(&f.hosts).unwrap().is_empty());
        // Its connection ended before the agent accepted: the slot comes back to the queue.
        f.collections.unsent(&["c3-0".to_string()]);
        assert_eq!(f.collections.hosts_to_wake(&f.hosts).unwrap(), ["h3"]);
    }

    #[test]
    fn one_host_takes_no_more_than_its_own_limit() {
        let f = fleet(
            Limits {
                per_host: 2,
                total: 32,
            },
            2,
            3,
        );
        assert_eq!(send_all(&f), ["c0-0", "c0-1", "c1-0", "c1-1"]);
        assert_eq!(status(&f, "c0-2"), CollectionStatus::Queued);
        for id in ["c0-0", "c0-1"] {
            f.collections.accepted("h0", id).unwrap();
        }
        f.collections.finish("h0", "c0-0", &[], &[]).unwrap();
        // h1's two are held, h0 has room for one: only h0 has a queued request with room.
        let woken = f.collections.hosts_to_wake(&f.hosts).unwrap();
        assert_eq!(woken, ["h0", "h1"], "h1 only for its unaccepted commands");
        assert_eq!(
            f.collections.sendable("h0", &HashSet::new()).unwrap()[0].collection_id,
            "c0-2"
        );
    }
}
