//! The collector's own health, as operators and load balancers see it (`/healthz`): whether
//! it can take evidence now. A full disk is an incident, not a mystery: it is logged once at
//! ERROR when it starts and once when it ends, and shown here meanwhile.

use crate::storage::{Capacity, Stores};
use serde::Serialize;
use std::sync::Mutex;

#[derive(Default)]
pub struct Health {
    /// When storage became full, and why; `None` while there is room.
    full_since: Mutex<Option<(String, String)>>,
}

#[derive(Debug, Serialize)]
pub struct Report {
    /// `ok`, or `degraded` while evidence cannot be stored.
    pub status: &'static str,
    pub storage_full: bool,
    pub storage_full_since: Option<String>,
    pub storage_error: Option<String>,
    pub capacity: Option<Capacity>,
    pub agents_connected: usize,
}

impl Health {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<(String, String)>> {
        self.full_since.lock().unwrap_or_else(|p| p.into_inner())
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

    /// A chunk was stored: if storage was full, it no longer is.
    pub fn storage_ok(&self) {
        let mut full = self.lock();
        if let Some((since, _)) = full.take() {
            tracing::warn!("storage has room again (full since {since}): uploads resume");
        }
    }

    pub fn is_storage_full(&self) -> bool {
        self.lock().is_some()
    }

    pub fn report(&self, stores: &Stores, agents_connected: usize) -> Report {
        let capacity = stores.blobs.capacity().ok().flatten();
        let full = self.lock().clone();
        // Room may have come back (or gone) since the last upload said so.
        let full_now = full.is_some() && capacity.is_none_or(|c| c.full())
            || capacity.is_some_and(|c| c.full());
        Report {
            status: if full_now { "degraded" } else { "ok" },
            storage_full: full_now,
            storage_full_since: full.as_ref().map(|f| f.0.clone()),
            storage_error: full.map(|f| f.1),
            capacity,
            agents_connected,
        }
    }
}
