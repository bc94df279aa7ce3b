//! Agents connected right now, and a way to wake their control loop when work is queued.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<String, (u64, Arc<Notify>)>>,
    next_id: std::sync::atomic::AtomicU64,
    /// Rung when a collection slot frees: the dispatcher looks for queued work at once
    /// instead of at its next tick.
    dispatcher: Notify,
}

impl Sessions {
    /// Register a control stream; returns its token (to unregister only itself) and its bell.
    pub fn register(&self, host_id: &str) -> (u64, Arc<Notify>) {
        let id = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let n = Arc::new(Notify::new());
        self.lock().insert(host_id.to_string(), (id, n.clone()));
        (id, n)
    }

    pub fn unregister(&self, host_id: &str, token: u64) {
        let mut m = self.lock();
        if m.get(host_id).is_some_and(|(t, _)| *t == token) {
            m.remove(host_id);
        }
    }

    pub fn is_connected(&self, host_id: &str) -> bool {
        self.lock().contains_key(host_id)
    }

    /// Tell the host's control loop that a command is waiting. False when it is not connected.
    pub fn wake(&self, host_id: &str) -> bool {
        match self.lock().get(host_id) {
            Some((_, n)) => {
                n.notify_one();
                true
            }
            None => false,
        }
    }

    /// A slot is free: wake the dispatcher (not every control loop).
    pub fn ring_dispatcher(&self) {
        self.dispatcher.notify_one();
    }

    /// Wait for [`Sessions::ring_dispatcher`].
    pub async fn dispatcher_rung(&self) {
        self.dispatcher.notified().await;
    }

    /// The hosts connected to this instance now.
    pub fn hosts(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    /// How many agents are connected now.
    pub fn connected(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (u64, Arc<Notify>)>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }
}
