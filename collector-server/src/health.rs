//! The collector's own health, as operators and load balancers see it (`/healthz`): whether
//! it can take evidence now. A full disk is an incident, not a mystery: it is logged once at
//! ERROR when it starts and once when it ends, and shown here meanwhile; so is an object store
//! that stops answering. `/readyz` adds what a load balancer needs: whether the database and
//! the blob store answer this instance now.

use crate::storage::{Capacity, Stores};
use serde::Serialize;
use std::sync::Mutex;

#[derive(Default)]
pub struct Health {
    /// When storage became full, and why; `None` while there is room.
    full_since: Mutex<Option<(String, String)>>,
    /// When the blob store stopped answering (or taking writes), and why.
    unavailable_since: Mutex<Option<(String, String)>>,
}

#[derive(Debug, Serialize)]
pub struct Report {
    /// `ok`, or `degraded` while evidence cannot be stored.
    pub status: &'static str,
    pub storage_full: bool,
    pub storage_full_since: Option<String>,
    pub storage_error: Option<String>,
    pub capacity: Option<Capacity>,
    /// The blob store (an object store) cannot be reached or refuses writes.
    pub store_unavailable: bool,
    pub store_unavailable_since: Option<String>,
    pub store_error: Option<String>,
    /// Custody chains whose newest head is not yet published (the head store failed): until
    /// it is, deleting their newest records could go unnoticed.
    pub custody_heads_pending: usize,
    pub agents_connected: usize,
}

impl Health {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<(String, String)>> {
        self.full_since.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_unavailable(&self) -> std::sync::MutexGuard<'_, Option<(String, String)>> {
        self.unavailable_since
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// A chunk could not be stored because the blob store is away.
    pub fn store_unavailable(&self, why: &str) {
        let mut u = self.lock_unavailable();
        if u.is_none() {
            tracing::error!(
                "blob store unavailable: evidence uploads are paused until it answers again ({why})"
            );
        }
        // The newest reason: an operator fixing it wants the current error, not the first.
        let since = u
            .as_ref()
            .map(|x| x.0.clone())
            .unwrap_or_else(cairn_protocol::rfc3339::now);
        *u = Some((since, why.to_string()));
    }

    pub fn is_store_unavailable(&self) -> bool {
        self.lock_unavailable().is_some()
    }

    /// A chunk could not be stored for lack of room.
    pub fn storage_full(&self, why: &str) {
        let mut full = self.lock();
        if full.is_none() {
            tracing::error!(
                "storage full: evidence uploads are paused until there is room again ({why})"
            );
            *full = Some((cairn_protocol::rfc3339::now(), why.to_string()));
        }
    }

    /// A chunk was stored: if storage was full or away, it no longer is.
    pub fn storage_ok(&self) {
        if let Some((since, _)) = self.lock_unavailable().take() {
            tracing::warn!(
                "the blob store answers again (unavailable since {since}): uploads resume"
            );
        }
        let mut full = self.lock();
        if let Some((since, _)) = full.take() {
            tracing::warn!("storage has room again (full since {since}): uploads resume");
        }
    }

    pub fn is_storage_full(&self) -> bool {
        self.lock().is_some()
    }

    pub fn report(&self, stores: &Stores, agents_connected: usize, heads_pending: usize) -> Report {
        let capacity = stores.blobs.capacity().ok().flatten();
        let full = self.lock().clone();
        // Room may have come back (or gone) since the last upload said so.
        let full_now = full.is_some() && capacity.is_none_or(|c| c.full())
            || capacity.is_some_and(|c| c.full());
        let unavailable = self.lock_unavailable().clone();
        Report {
            status: if full_now || unavailable.is_some() || heads_pending > 0 {
                "degraded"
            } else {
                "ok"
            },
            storage_full: full_now,
            storage_full_since: full.as_ref().map(|f| f.0.clone()),
            storage_error: full.map(|f| f.1),
            capacity,
            custody_heads_pending: heads_pending,
            store_unavailable: unavailable.is_some(),
            store_unavailable_since: unavailable.as_ref().map(|u| u.0.clone()),
            store_error: unavailable.map(|u| u.1),
            agents_connected,
        }
    }
}

/// One dependency's answer to the readiness probe.
#[derive(Debug, Serialize)]
pub struct Probe {
    pub ok: bool,
    pub millis: f64,
    pub error: Option<String>,
}

/// `/readyz`: whether this instance can take agents and evidence now.
#[derive(Debug, Serialize)]
pub struct Readiness {
    pub ready: bool,
    pub database: Probe,
    pub blob_store: Probe,
    pub storage_full: bool,
    pub store_unavailable: bool,
}

/// The id nothing has: reading it is a round trip that changes nothing.
const PROBE_ID: &str = "00000000-0000-0000-0000-000000000000";

impl Health {
    /// Ask the database and the blob store for something absent, and time both.
    pub fn ready(&self, stores: &Stores) -> Readiness {
        let started = std::time::Instant::now();
        let db = stores.meta.get_collection(PROBE_ID);
        let took = started.elapsed();
        stores.metrics.database_probe.observe(took, db.is_err());
        let database = Probe {
            ok: db.is_ok(),
            millis: took.as_secs_f64() * 1e3,
            error: db.err().map(|e| e.to_string()),
        };
        let started = std::time::Instant::now();
        let blobs = stores.blobs.exists(&"0".repeat(64));
        let blob_store = Probe {
            ok: blobs.is_ok(),
            millis: started.elapsed().as_secs_f64() * 1e3,
            error: blobs.err().map(|e| e.to_string()),
        };
        let storage_full = self.is_storage_full()
            || stores
                .blobs
                .capacity()
                .ok()
                .flatten()
                .is_some_and(|c| c.full());
        // A store that answers the probe is available, whatever the last upload saw.
        let store_unavailable = !blob_store.ok;
        Readiness {
            ready: database.ok && blob_store.ok && !storage_full,
            database,
            blob_store,
            storage_full,
            store_unavailable,
        }
    }
}
