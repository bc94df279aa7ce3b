//! Admission of connections before anyone is authenticated: everything an outsider who can
//! reach a port makes the collector hold is bounded.
//!
//! - Handshakes in progress per source address are capped; when a source reaches its cap, its
//!   *oldest* handshake is abandoned to make room, so a flood of half-open connections from
//!   one address cannot shut out a real client from the same address (a NAT, loopback).
//! - Connections in all are capped (file descriptors, memory): beyond the cap a new one is
//!   refused at once.
//! - What goes wrong with outsiders is logged as a count per interval, not a line each.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

pub struct Admission {
    what: &'static str,
    max_handshakes_per_source: usize,
    max_connections: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    next_id: u64,
    /// Handshakes in progress per source, oldest first: (id, its eviction bell).
    handshaking: HashMap<IpAddr, VecDeque<(u64, Arc<Notify>)>>,
    connections: usize,
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused(pub String);

/// A connection whose handshake is in progress; dropping it releases its place.
pub struct Handshake {
    admission: Arc<Admission>,
    ip: IpAddr,
    id: u64,
    evicted: Arc<Notify>,
    done: bool,
}

/// A connection past its handshake; dropping it releases its place.
pub struct Established {
    admission: Arc<Admission>,
}

impl Admission {
    pub fn new(
        what: &'static str,
        max_handshakes_per_source: usize,
        max_connections: usize,
    ) -> Arc<Admission> {
        Arc::new(Admission {
            what,
            max_handshakes_per_source: max_handshakes_per_source.max(1),
            max_connections: max_connections.max(1),
            inner: Mutex::new(Inner::default()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new connection from `ip` may start its handshake.
    pub fn begin(self: &Arc<Self>, ip: IpAddr) -> Result<Handshake, Refused> {
        let mut inner = self.lock();
        if inner.connections >= self.max_connections {
            return Err(Refused(format!(
                "{} connections already open on the {} listener (the limit)",
                inner.connections, self.what
            )));
        }
        inner.next_id += 1;
        let id = inner.next_id;
        let queue = inner.handshaking.entry(ip).or_default();
        if queue.len() >= self.max_handshakes_per_source {
            if let Some((_, oldest)) = queue.pop_front() {
                // Its task sees the bell, closes, and releases its connection slot.
                oldest.notify_one();
            }
        }
        let evicted = Arc::new(Notify::new());
        queue.push_back((id, evicted.clone()));
        inner.connections += 1;
        Ok(Handshake {
            admission: self.clone(),
            ip,
            id,
            evicted,
            done: false,
        })
    }

    /// Connections open now (in handshake or established).
    pub fn open(&self) -> usize {
        self.lock().connections
    }

    fn end_handshake(&self, ip: IpAddr, id: u64) {
        let mut inner = self.lock();
        if let Some(q) = inner.handshaking.get_mut(&ip) {
            q.retain(|(i, _)| *i != id);
            if q.is_empty() {
                inner.handshaking.remove(&ip);
            }
        }
    }

    fn release(&self) {
        let mut inner = self.lock();
        inner.connections = inner.connections.saturating_sub(1);
    }
}

impl Handshake {
    /// Resolves when this handshake was abandoned to make room for a newer one.
    pub async fn evicted(&self) {
        self.evicted.notified().await
    }

    /// The handshake succeeded: the connection keeps its place, no longer evictable.
    pub fn established(mut self) -> Established {
        self.done = true;
        self.admission.end_handshake(self.ip, self.id);
        Established {
            admission: self.admission.clone(),
        }
    }
}

impl Drop for Handshake {
    fn drop(&mut self) {
        if !self.done {
            self.admission.end_handshake(self.ip, self.id);
            self.admission.release();
        }
    }
}

impl Drop for Established {
    fn drop(&mut self) {
        self.admission.release();
    }
}

/// A log line per kind of trouble per interval, with how many there were.
pub struct LogLimiter {
    interval: Duration,
    kinds: Mutex<HashMap<&'static str, (Instant, u64)>>,
}

impl LogLimiter {
    pub fn new(interval: Duration) -> LogLimiter {
        LogLimiter {
            interval,
            kinds: Mutex::new(HashMap::new()),
        }
    }

    /// Note one event; returns the line to log now, if any: the first of an interval, with the
    /// count of those suppressed since the last line.
    pub fn note(&self, kind: &'static str, message: &str) -> Option<String> {
        let mut kinds = self.kinds.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let entry = kinds.entry(kind).or_insert((now - self.interval * 2, 0));
        if now.duration_since(entry.0) >= self.interval {
            let suppressed = entry.1;
            *entry = (now, 0);
            Some(if suppressed > 0 {
                format!(
                    "{kind}: {message} (and {suppressed} more in the last {} s)",
                    self.interval.as_secs().max(1)
                )
            } else {
                format!("{kind}: {message}")
            })
        } else {
            entry.1 += 1;
            None
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_flood_from_one_source_evicts_its_own_oldest_handshakes() {
        let a = Admission::new("test", 3, 10);
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let first = a.begin(ip).unwrap();
        let _second = a.begin(ip).unwrap();
        let _third = a.begin(ip).unwrap();
        // The fourth evicts the first.
        let fourth = a.begin(ip).unwrap();
        tokio::time::timeout(Duration::from_secs(1), first.evicted())
            .await
            .unwrap();
        drop(first);
        // An established connection is no longer evictable and still counts.
        let est = fourth.established();
        assert_eq!(a.open(), 3);
        drop(est);
        assert_eq!(a.open(), 2);
        // The total cap refuses outright.
        let other: IpAddr = "10.0.0.1".parse().unwrap();
        let held: Vec<_> = (0..8).map(|_| a.begin(other).unwrap()).collect();
        assert_eq!(a.open(), 10);
        assert!(a.begin("10.0.0.2".parse().unwrap()).is_err());
        drop(held);
        assert_eq!(a.open(), 2);
    }

    #[test]
    fn one_line_per_interval_with_the_count() {
        let l = LogLimiter::new(Duration::from_millis(50));
        assert!(l.note("bad handshake", "a").is_some());
        for _ in 0..100 {
            assert!(l.note("bad handshake", "b").is_none());
        }
        std::thread::sleep(Duration::from_millis(60));
        let line = l.note("bad handshake", "c").unwrap();
        assert!(line.contains("100 more"), "{line}");
        assert!(l.note("other", "x").is_some());
    }
}
