//! What every request handler and agent session holds: the stores and the domain's services.
//! Built once by `server`; the edges (`api`, `quic`) only read it.

use crate::authority::Authority;
use crate::collections::Collections;
use crate::containment::Containments;
use crate::crypt::EvidenceKey;
use crate::custody::Custody;
use crate::health::Health;
use crate::sessions::Sessions;
use crate::storage::{MetadataStore, Stores};
use crate::triggers::Triggers;
use std::sync::Arc;

pub struct State {
    pub stores: Stores,
    pub custody: Arc<Custody>,
    /// Agents connected now, and the bell of each one's control loop.
    pub sessions: Arc<Sessions>,
    pub collections: Collections,
    /// Isolate, release, freeze, thaw, kill: asked, sent, answered.
    pub containments: Containments,
    /// What `[[containment]]` rules add after an alert's collection.
    pub sequences: crate::triggers::sequence::Sequences,
    /// Profile mapping, dedup and rate limits for `/api/v1/triggers/...`.
    pub triggers: Triggers,
    /// How hosts are grouped and profiled (peered VPCs, the window).
    pub fleet: crate::fleet::Fleet,
    /// The last fleet report, for triggers' priorities.
    pub fleet_cache: crate::fleet::ReportCache,
    pub authority: Authority,
    pub ca_pem: String,
    /// Whether evidence can be stored now.
    pub health: Health,
    /// The age identity offline collections and (optionally) stored chunks are encrypted to.
    pub evidence_key: Arc<EvidenceKey>,
}

impl State {
    pub fn meta(&self) -> &dyn MetadataStore {
        self.stores.meta.as_ref()
    }
}
