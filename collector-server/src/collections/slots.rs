//! Slots held by commands sent and not yet accepted, on this instance. The store counts a
//! collection as running only once its agent accepted it; until then the command holds a
//! slot here, so the control loops of ten thousand hosts woken together cannot each see the
//! same free slot and all start at once. A hold the agent never answers lapses after
//! [`HOLD`]: the slot comes back (the request stays pending and is sent again on reconnect).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a sent command may hold its slot without being accepted.
pub const HOLD: Duration = Duration::from_secs(120);

/// Commands in flight: collection id → (host, when sent). Bounded by the collector's total
/// limit: a slot is only held where one was free.
#[derive(Default)]
pub struct Slots {
    held: Mutex<HashMap<String, (String, Instant)>>,
}

/// The ledger, locked: counts and holds decided together.
pub struct Held<'a> {
    map: std::sync::MutexGuard<'a, HashMap<String, (String, Instant)>>,
}

impl Slots {
    /// Lock the ledger for one decision (lapsed holds dropped first). Held for the length of
    /// a count query, so two loops never decide on the same free slot.
    pub fn lock(&self) -> Held<'_> {
        let mut map = self.held.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, (_, at)| at.elapsed() < HOLD);
        Held { map }
    }

    /// The agent accepted (or refused, or the collection ended): the slot is the store's now.
    pub fn release(&self, collection_id: &str) {
        self.lock().map.remove(collection_id);
    }

    /// How many slots are held now, on all hosts.
    pub fn held(&self) -> u64 {
        self.lock().total()
    }
}

impl Held<'_> {
    pub fn total(&self) -> u64 {
        self.map.len() as u64
    }

    pub fn on_host(&self, host_id: &str) -> u64 {
        self.map.values().filter(|(h, _)| h == host_id).count() as u64
    }

    pub fn is_held(&self, collection_id: &str) -> bool {
        self.map.contains_key(collection_id)
    }

    pub fn hold(&mut self, collection_id: &str, host_id: &str) {
        self.map.insert(
            collection_id.to_string(),
            (host_id.to_string(), Instant::now()),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_count_per_host_and_release() {
        let a = Slots::default();
        {
            let mut l = a.lock();
            l.hold("c1", "h1");
            l.hold("c2", "h1");
            l.hold("c3", "h2");
            assert_eq!(l.total(), 3);
            assert_eq!(l.on_host("h1"), 2);
            assert_eq!(l.on_host("h3"), 0);
            assert!(l.is_held("c3"));
        }
        a.release("c1");
        a.release("unknown");
        assert_eq!(a.held(), 2);
        assert!(!a.lock().is_held("c1"));
    }

    #[test]
    fn a_hold_never_answered_lapses() {
        let a = Slots::default();
        {
            let mut l = a.lock();
            l.hold("c1", "h1");
            // Sent long ago: as if HOLD passed.
            if let Some(e) = l.map.get_mut("c1") {
                e.1 = Instant::now()
                    .checked_sub(HOLD + Duration::from_secs(1))
                    .expect("the clock is past HOLD");
            }
        }
        assert_eq!(a.held(), 0);
    }
}
