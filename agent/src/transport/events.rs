//! The live event stream: sensor events, batched, numbered, acknowledged.
//!
//! Events wait in a bounded in-memory queue until the collector acknowledges them; while it is
//! unreachable the queue fills, and past its bound the oldest are dropped from the *live*
//! stream — they stay in the flight recorder on disk, and the drop is sent as an explicit
//! `events_lost` event, never a silent gap.

use super::connection::Connector;
use anyhow::{anyhow, Result};
use cairn_protocol::wire::aio::write_message;
use cairn_protocol::wire::{Message, RawEvent};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;
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
    /// A queue holding at most `max_bytes` of event JSON (at least 1 MiB).
    pub fn new(max_bytes: usize) -> Arc<EventShipper> {
        Arc::new(EventShipper {
            queue: Mutex::new(Queue::default()),
            bell: Notify::new(),
            max_bytes: max_bytes.max(1 << 20),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queue an event (its JSON) for the collector.
    pub fn push(&self, event: RawEvent) {
        let mut q = self.lock();
        while q.bytes + event.get().len() > self.max_bytes {
            let Some((_, old)) = q.pending.pop_front() else {
                break;
            };
            q.bytes -= old.get().len();
            q.dropped += 1;
            q.dropped_total += 1;
        }
        if q.dropped > 0 && q.bytes + event.get().len() + 512 <= self.max_bytes {
            let marker = serde_json::json!({
                "time": cairn_protocol::now_rfc3339(),
                "kind": "events_lost",
                "source": "agent",
                "lost": {"kind": "live_stream", "count": q.dropped,
                         "note": "dropped from the live stream while the collector was unreachable; still in the host's flight recorder"},
            });
            if let Ok(marker) = RawEvent::from_json(marker.to_string()) {
                let seq = q.next_seq;
                q.next_seq += 1;
                q.bytes += marker.get().len();
                q.pending.push_back((seq, marker));
                q.dropped = 0;
            }
        }
        let seq = q.next_seq;
        q.next_seq += 1;
        q.bytes += event.get().len();
        q.pending.push_back((seq, event));
        drop(q);
        self.bell.notify_one();
    }

    /// Events dropped from the live stream since the agent started.
    pub fn dropped_total(&self) -> u64 {
        self.lock().dropped_total
    }

    /// Events waiting for an acknowledgment.
    pub fn queued(&self) -> usize {
        self.lock().pending.len()
    }

    fn batch_after(&self, sent_upto: Option<u64>) -> Option<(u64, Vec<RawEvent>)> {
        let q = self.lock();
        let mut it = q
            .pending
            .iter()
            .filter(|(s, _)| sent_upto.is_none_or(|u| *s > u))
            .peekable();
        let first = it.peek()?.0;
        Some((first, it.take(BATCH).map(|(_, e)| e.clone()).collect()))
    }

    fn acked(&self, upto: u64) {
        let mut q = self.lock();
        while q.pending.front().is_some_and(|(s, _)| *s <= upto) {
            if let Some((_, e)) = q.pending.pop_front() {
                q.bytes -= e.get().len();
            }
        }
    }
}

/// Ship events for as long as the agent runs, reconnecting with the shared connector.
pub async fn ship(shipper: Arc<EventShipper>, connector: Arc<Connector>) {
    loop {
        if shipper.queued() == 0 {
            shipper.bell.notified().await;
        }
        let conn = connector.get().await;
        if let Err(e) = session(&shipper, &conn).await {
            tracing::warn!(
                "event stream: {e:#}; resending unacknowledged events on the next connection"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
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
    fn bounded_queue_reports_what_it_dropped() {
        let s = EventShipper::new(0); // clamps to 1 MiB
        let pad = "x".repeat(1000);
        let one = ev(serde_json::json!({"n": 0, "pad": pad})).get().len();
        let fit = s.max_bytes / one;
        for i in 0..fit + 10 {
            s.push(ev(serde_json::json!({"n": i % 10, "pad": pad})));
        }
        assert_eq!(s.dropped_total(), 10);
        s.acked(u64::MAX);
        s.push(ev(serde_json::json!({"n": "after"})));
        let (_, batch) = s.batch_after(None).unwrap();
        assert_eq!(parsed(&batch[0])["kind"], "events_lost");
        assert_eq!(parsed(&batch[0])["lost"]["count"], 10);
        assert_eq!(parsed(&batch[1])["n"], "after");
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
    }
}
