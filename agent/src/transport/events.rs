//! The live event stream: sensor events, batched, numbered, acknowledged.
//!
//! Events wait for the collector's acknowledgment in a small in-memory queue; when it
//! overflows (the collector is unreachable or slower than the host), the oldest events spill
//! to the on-disk `EventSpool` (`event_spool`) in the agent's state directory, and are sent from there, in order,
//! before the ones still in memory. The spool survives an agent restart. Only past its bound
//! (default 256 MiB) are the oldest spooled events dropped from the live stream — they stay
//! in the flight recorder — and the drop is sent as an explicit `events_lost` event, never a
//! silent gap.

use super::backoff::Backoff;
use super::connection::Connector;
use super::event_spool::{lost_count, EventSpool};
use anyhow::{anyhow, Result};
use cairn_protocol::wire::aio::write_message;
use cairn_protocol::wire::{Message, RawEvent};
use std::collections::VecDeque;
use std::path::Path;
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

const BATCH: usize = 512;
/// Longest a partial batch waits for company.
const LINGER: std::time::Duration = std::time::Duration::from_millis(100);

#[derive(Default)]
struct Queue {
    next_seq: u64,
    pending: VecDeque<(u64, RawEvent)>,
    /// Bytes of JSON in `pending`.
    bytes: usize,
    spool: Option<EventSpool>,
    /// Everything up to here was acknowledged (a resend after a reconnect starts after it).
    acked: Option<u64>,
    /// Dropped since the last `events_lost` marker.
    dropped: u64,
    dropped_total: u64,
}

pub struct EventShipper {
    queue: Mutex<Queue>,
    bell: Notify,
    max_bytes: usize,
}

impl EventShipper {
    /// A queue holding at most `max_bytes` of event JSON in memory (at least 1 MiB); without a
    /// spool, what does not fit is dropped (and reported).
    pub fn new(max_bytes: usize) -> Arc<EventShipper> {
        Arc::new(EventShipper {
            queue: Mutex::new(Queue::default()),
            bell: Notify::new(),
            max_bytes: max_bytes.max(1 << 20),
        })
    }

    /// Like [`EventShipper::new`], spilling to `dir` (at most `spool_bytes`) what does not fit
    /// in memory, and resuming what a previous run left there.
    pub fn with_spool(max_bytes: usize, dir: &Path, spool_bytes: u64) -> Result<Arc<EventShipper>> {
        let spool = EventSpool::open(dir, spool_bytes)
            .map_err(|e| anyhow!("cannot open the event spool {}: {e}", dir.display()))?;
        let s = EventShipper::new(max_bytes);
        {
            let mut q = s.lock();
            q.next_seq = spool.next_seq();
            if spool.count() > 0 {
                tracing::info!(
                    "event spool: {} event(s) from a previous run will be sent first",
                    spool.count()
                );
            }
            q.spool = Some(spool);
        }
        Ok(s)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queue an event (its JSON) for the collector.
    pub fn push(&self, event: RawEvent) {
        let mut q = self.lock();
        let q = &mut *q;
        self.make_room(q, event.get().len());
        if let Some(sp) = q.spool.as_mut() {
            while sp.over_bound() {
                // A dropped loss marker's count is reported again by the next marker.
                let (events, reported) = sp.drop_oldest();
                q.dropped += events + reported;
                q.dropped_total += events;
            }
        }
        if q.dropped > 0 {
            // Reported before any newer event, so the stream says where the hole is.
            let marker = serde_json::json!({
                "time": cairn_protocol::rfc3339::now(),
                "kind": "events_lost",
                "source": "agent",
                "lost": {"kind": "live_stream", "count": q.dropped,
                         "note": "dropped from the live stream (its spool was full while the collector was unreachable); still in the host's flight recorder"},
            });
            if let Ok(marker) = RawEvent::from_json(marker.to_string()) {
                q.dropped = 0;
                self.make_room(q, marker.get().len());
                Self::enqueue(q, marker);
            }
        }
        Self::enqueue(q, event);
        // What spilled reaches the file now: a crash of the agent must not lose it.
        if let Some(Err(e)) = q.spool.as_mut().map(|sp| sp.seal_keep_open()) {
            tracing::warn!("event spool: cannot write: {e}");
        }
        self.bell.notify_one();
    }

    fn enqueue(q: &mut Queue, e: RawEvent) {
        let seq = q.next_seq;
        q.next_seq += 1;
        q.bytes += e.get().len();
        q.pending.push_back((seq, e));
    }

    /// Moves the oldest events to the spool (or drops them without one) until `len` more
    /// bytes fit in memory.
    fn make_room(&self, q: &mut Queue, len: usize) {
        while q.bytes + len > self.max_bytes {
            let Some((old_seq, old)) = q.pending.pop_front() else {
                break;
            };
            q.bytes -= old.get().len();
            let spilled = match q.spool.as_mut() {
                Some(sp) => match sp.append(old_seq, &old) {
                    Ok(()) => true,
                    Err(e) => {
                        tracing::warn!("event spool: cannot write: {e}; the event is dropped");
                        false
                    }
                },
                None => false,
            };
            if !spilled {
                match lost_count(&old) {
                    Some(n) => q.dropped += n,
                    None => {
                        q.dropped += 1;
                        q.dropped_total += 1;
                    }
                }
            }
        }
    }

    /// Events dropped from the live stream since the agent started.
    pub fn dropped_total(&self) -> u64 {
        self.lock().dropped_total
    }

    /// Events waiting for an acknowledgment, in memory and spooled.
    pub fn queued(&self) -> usize {
        let q = self.lock();
        q.pending.len() + q.spool.as_ref().map(|s| s.count() as usize).unwrap_or(0)
    }

    fn batch_after(&self, sent_upto: Option<u64>) -> Option<(u64, Vec<RawEvent>)> {
        let mut q = self.lock();
        let after = match (sent_upto, q.acked) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        if let Some(b) = q.spool.as_mut().and_then(|sp| sp.batch_after(after, BATCH)) {
            return Some(b);
        }
        let mut it = q
            .pending
            .iter()
            .filter(|(s, _)| after.is_none_or(|u| *s > u))
            .peekable();
        let first = it.peek()?.0;
        Some((first, it.take(BATCH).map(|(_, e)| e.clone()).collect()))
    }

    fn acked(&self, upto: u64) {
        let mut q = self.lock();
        q.acked = Some(q.acked.map_or(upto, |a| a.max(upto)));
        if let Some(sp) = q.spool.as_mut() {
            sp.acked(upto);
        }
        while q.pending.front().is_some_and(|(s, _)| *s <= upto) {
            if let Some((_, e)) = q.pending.pop_front() {
                q.bytes -= e.get().len();
            }
        }
    }
}

/// Ship events for as long as the agent runs, reconnecting with the shared connector; a
/// stream that fails is reopened with backoff, which starts over once events were acknowledged.
pub async fn ship(shipper: Arc<EventShipper>, connector: Arc<Connector>) {
    let mut backoff = Backoff::standard();
    loop {
        if shipper.queued() == 0 {
            shipper.bell.notified().await;
        }
        let conn = connector.get().await;
        let acked_before = shipper.lock().acked;
        if let Err(e) = session(&shipper, &conn).await {
            if shipper.lock().acked != acked_before {
                backoff.reset();
            }
            let wait = backoff.next_delay();
            tracing::warn!(
                "event stream: {e:#}; resending unacknowledged events in {:.1}s",
                wait.as_secs_f64()
            );
            tokio::time::sleep(wait).await;
        }
    }
}

async fn session(shipper: &EventShipper, conn: &quinn::Connection) -> Result<()> {
    let (mut send, recv) = conn.open_bi().await?;
    let (mut replies, _reader) = super::read_messages(recv, "event stream", 64);
    let mut sent_upto: Option<u64> = None;
    let result: Result<()> = async {
        loop {
            while let Ok(m) = replies.try_recv() {
                shipper.acked(ack(m)?);
            }
            if let Some((first_seq, events)) = shipper.batch_after(sent_upto) {
                let n = events.len() as u64;
                let mut jsonl =
                    String::with_capacity(events.iter().map(|e| e.get().len() + 1).sum());
                for e in &events {
                    jsonl.push_str(e.get());
                    jsonl.push('\n');
                }
                write_message(&mut send, Message::Events { first_seq, jsonl }).await?;
                sent_upto = Some(first_seq + n - 1);
                if (n as usize) < BATCH {
                    // A partial batch: let more gather before the next one, so a busy host
                    // sends few large batches rather than one small one per event.
                    tokio::time::sleep(LINGER).await;
                }
                continue;
            }
            tokio::select! {
                m = replies.recv() => shipper.acked(ack(m.ok_or_else(|| anyhow!("event stream closed"))?)?),
                _ = shipper.bell.notified() => {}
            }
        }
    }
    .await;
    result
}

fn ack(m: Result<Message>) -> Result<u64> {
    match m? {
        Message::EventsAck { upto_seq } => Ok(upto_seq),
        Message::Error { code, message } => {
            Err(anyhow!("collector refused events ({code}): {message}"))
        }
        other => Err(anyhow!("unexpected {} on the event stream", other.name())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(v: serde_json::Value) -> RawEvent {
        RawEvent::from_json(v.to_string()).unwrap()
    }

    fn parsed(e: &RawEvent) -> serde_json::Value {
        serde_json::from_str(e.get()).unwrap()
    }

    #[test]
    fn without_a_spool_the_queue_reports_what_it_dropped() {
        let s = EventShipper::new(0); // clamps to 1 MiB
        let pad = "x".repeat(1000);
        let one = ev(serde_json::json!({"n": 0, "pad": pad})).get().len();
        let total = s.max_bytes / one + 10;
        for i in 0..total {
            s.push(ev(serde_json::json!({"n": i, "pad": pad})));
        }
        let dropped = s.dropped_total();
        assert!(dropped >= 10, "{dropped}");
        let (mut lost, mut seen) = (0, 0);
        let (first, batch) = s.batch_after(None).unwrap();
        let mut sent = Some(first + batch.len() as u64 - 1);
        let mut batches = vec![batch];
        while let Some((first, b)) = s.batch_after(sent) {
            sent = Some(first + b.len() as u64 - 1);
            batches.push(b);
        }
        for e in batches.iter().flatten() {
            match parsed(e)["lost"]["count"].as_u64() {
                Some(n) => lost += n,
                None => seen += 1,
            }
        }
        assert_eq!(lost, dropped, "every drop is reported");
        assert_eq!(seen + dropped as usize, total);
    }

    #[test]
    fn batches_resume_after_the_last_sent_and_acks_trim() {
        let s = EventShipper::new(1 << 20);
        for i in 0..1000 {
            s.push(ev(serde_json::json!({"n": i})));
        }
        let (first, b) = s.batch_after(None).unwrap();
        assert_eq!((first, b.len()), (0, BATCH));
        let (first, b) = s.batch_after(Some(511)).unwrap();
        assert_eq!((first, b.len()), (512, 488));
        s.acked(511);
        assert_eq!(s.queued(), 488);
        assert!(s.batch_after(Some(999)).is_none());
        // After a reconnect (nothing sent yet on the new stream), acked events are not resent.
        assert_eq!(s.batch_after(None).unwrap().0, 512);
    }

    /// Sends everything the way a session does, acknowledging each batch; returns the `n`s.
    fn drain(s: &EventShipper) -> Vec<serde_json::Value> {
        let mut got = Vec::new();
        let mut sent = None;
        while let Some((first, b)) = s.batch_after(sent) {
            sent = Some(first + b.len() as u64 - 1);
            got.extend(b.iter().map(|e| parsed(e)["n"].clone()));
            s.acked(first + b.len() as u64 - 1);
        }
        got
    }

    #[test]
    fn overflow_spills_to_disk_in_order_and_acks_delete_the_files() {
        let dir = tempfile::tempdir().unwrap();
        let s = EventShipper::with_spool(1 << 20, dir.path(), 64 << 20).unwrap();
        let pad = "p".repeat(300);
        let n = 20_000; // ~6 MiB: most of it spills
        for i in 0..n {
            s.push(ev(serde_json::json!({"n": i, "pad": pad})));
        }
        assert_eq!(s.dropped_total(), 0);
        assert_eq!(s.queued(), n);
        assert!(std::fs::read_dir(dir.path()).unwrap().count() >= 1);
        let got = drain(&s);
        assert_eq!(got.len(), n, "every event once");
        assert!(got.iter().enumerate().all(|(i, v)| v == i), "in order");
        assert_eq!(s.queued(), 0);
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "spool emptied"
        );
    }

    #[test]
    fn the_spool_survives_a_restart_and_numbering_continues() {
        let dir = tempfile::tempdir().unwrap();
        let pad = "q".repeat(500);
        {
            let s = EventShipper::with_spool(1 << 20, dir.path(), 64 << 20).unwrap();
            for i in 0..5000 {
                s.push(ev(serde_json::json!({"n": i, "pad": pad})));
            }
            // Flush what is being written, as a stopping agent does when its BufWriter drops.
        }
        let s = EventShipper::with_spool(1 << 20, dir.path(), 64 << 20).unwrap();
        let spooled = s.queued();
        assert!(spooled > 1000, "{spooled} events found on disk");
        s.push(ev(serde_json::json!({"n": "new"})));
        let got = drain(&s);
        assert_eq!(got.len(), spooled + 1);
        assert_eq!(got[0], 0);
        assert_eq!(got.last().unwrap(), "new");
    }

    #[test]
    fn a_full_spool_drops_its_oldest_and_says_how_many() {
        let dir = tempfile::tempdir().unwrap();
        let s = EventShipper::with_spool(1 << 20, dir.path(), 9 << 20).unwrap();
        let pad = "r".repeat(1000);
        for i in 0..20_000 {
            s.push(ev(serde_json::json!({"n": i, "pad": pad})));
        }
        let dropped = s.dropped_total();
        assert!(dropped > 0);
        let mut sent = None;
        let mut lost = 0;
        let mut seen = 0;
        while let Some((first, b)) = s.batch_after(sent) {
            sent = Some(first + b.len() as u64 - 1);
            for e in &b {
                let v = parsed(e);
                if v["kind"] == "events_lost" {
                    lost += v["lost"]["count"].as_u64().unwrap();
                } else {
                    seen += 1;
                }
            }
            s.acked(sent.unwrap());
        }
        assert_eq!(lost, dropped, "every drop is reported");
        assert_eq!(seen + dropped, 20_000);
    }

    #[test]
    fn events_spilled_after_they_were_sent_are_removed_by_their_ack() {
        let dir = tempfile::tempdir().unwrap();
        let s = EventShipper::with_spool(1 << 20, dir.path(), 64 << 20).unwrap();
        for i in 0..100 {
            s.push(ev(serde_json::json!({"n": i})));
        }
        let (first, b) = s.batch_after(None).unwrap();
        let sent = first + b.len() as u64 - 1;
        // Before the ack arrives, a burst pushes the sent events out to the spool.
        let pad = "s".repeat(1000);
        let spilled_before = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(spilled_before, 0);
        for _ in 0..1100 {
            s.push(ev(serde_json::json!({"n": "burst", "pad": pad})));
        }
        s.acked(sent);
        let left = drain(&s);
        assert!(
            left.iter().all(|v| v == "burst"),
            "nothing acked is sent again"
        );
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
