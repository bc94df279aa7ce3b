//! One item over one QUIC stream, resumable across lost connections, collector restarts and a
//! collector whose disk is full.
//!
//! Chunks come from the producer (a blocking thread running the pipeline) and are sent at
//! once; each stays in memory until the collector acknowledges it as persisted. When the
//! connection drops, or the collector answers `storage_full`, unacknowledged chunks are
//! written to the [`ChunkSpool`], and the producer keeps filling it (up to its bound) while we
//! wait (with [`Backoff`]), so a capture is not lost to a collector restart or a full disk. On
//! the next attempt the collector says which chunks it already holds, and only the others are
//! sent. A spooled chunk is deleted only after it is acknowledged; the item's spool directory
//! goes when the upload ends, however it ends.
//!
//! Chunks in flight on a stream are bounded by a window that starts at one chunk after
//! `storage_full` and grows by one with each acknowledgment: a collector still full costs one
//! chunk per attempt, not the whole memory window.

use super::backoff::Backoff;
pub use super::chunk_spool::ChunkSpool;
use super::connection::Connector;
use anyhow::{anyhow, Result};
use bytes::Bytes;
use cairn_protocol::chunk::{Chunk, ChunkHeader, HEADER_LEN};
use cairn_protocol::manifest::{ItemHeader, ItemManifest};
use cairn_protocol::wire::aio::write_message;
use cairn_protocol::wire::{Message, KIND_CHUNK};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, Notify};

/// Unacknowledged bytes kept in memory per item before we wait for acks.
const WINDOW_BYTES: usize = 96 * 1024 * 1024;
/// Most chunks in flight on one stream (the memory window is what bounds them in practice).
const MAX_IN_FLIGHT: usize = 256;
/// In flight again after this many acknowledgments in a row: the storage-full backoff
/// starts over.
const RECOVERED: usize = 16;

/// What the producer thread sends.
pub enum Produced {
    Chunk(Chunk),
    Done(Box<ItemManifest>),
}

/// Removes the item's spool when its upload ends: sealed, refused, failed, or dropped (a
/// self-test that timed out).
struct SpoolGuard {
    spool: Arc<ChunkSpool>,
    pause: Arc<UploadPause>,
    item: String,
}

impl Drop for SpoolGuard {
    fn drop(&mut self) {
        self.spool.remove_item(&self.item);
        self.pause.done(&self.item);
    }
}

/// Whether uploads wait for room at the collector, for the heartbeat status. Said once in the
/// log when the first upload pauses and once when the last one goes on, not per chunk.
#[derive(Default)]
pub struct UploadPause {
    state: Mutex<PauseState>,
    bell: Notify,
}

#[derive(Default)]
struct PauseState {
    /// When the collector first said it had no room (RFC 3339), and the monotonic instant.
    since: Option<(String, Instant)>,
    items: BTreeSet<String>,
}

impl UploadPause {
    fn lock(&self) -> std::sync::MutexGuard<'_, PauseState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `item` got `storage_full`.
    fn paused(&self, item: &str, why: &str) {
        let mut s = self.lock();
        s.items.insert(item.to_string());
        if s.since.is_none() {
            s.since = Some((cairn_protocol::rfc3339::now(), Instant::now()));
            tracing::warn!(
                "the collector cannot store evidence now ({why}): uploads paused; their chunks are kept on this host and sent again, with backoff, once it has room"
            );
            self.bell.notify_one();
        }
    }

    /// `item`'s chunks are stored again, or its upload ended.
    fn done(&self, item: &str) {
        let mut s = self.lock();
        s.items.remove(item);
        if s.items.is_empty() {
            if let Some((_, at)) = s.since.take() {
                tracing::info!(
                    "uploads go on: the collector stores evidence again (paused {:.0} s)",
                    at.elapsed().as_secs_f64()
                );
                self.bell.notify_one();
            }
        }
    }

    fn is_paused(&self) -> bool {
        self.lock().since.is_some()
    }

    /// For `AgentStatus::uploads_paused`.
    pub fn status(&self) -> Option<String> {
        self.lock()
            .since
            .as_ref()
            .map(|(since, _)| format!("storage full at the collector since {since}"))
    }

    /// Rung when uploads pause or go on.
    pub fn bell(&self) -> &Notify {
        &self.bell
    }
}

/// How an upload ended.
#[derive(Debug)]
pub struct Sealed {
    pub sha256: String,
    pub resumed: u32,
    pub chunks_sent: u64,
}

struct Upload {
    header: ItemHeader,
    item: String,
    spool: Arc<ChunkSpool>,
    pause: Arc<UploadPause>,
    producer: mpsc::Receiver<Produced>,
    producer_done: bool,
    manifest: Option<Box<ItemManifest>>,
    in_memory: BTreeMap<u64, Pending>,
    mem_bytes: usize,
    spooled: BTreeSet<u64>,
    chunks_sent: u64,
    /// Chunks that may be in flight on a stream.
    window: usize,
    /// Acknowledgments since the last `storage_full`.
    acks_in_a_row: usize,
    lost_backoff: Backoff,
    full_backoff: Backoff,
}

enum AttemptError {
    /// The connection or the stream went away: reconnect and resume.
    Lost(anyhow::Error),
    /// No room at the collector: keep the chunks, wait, resume.
    Full(String),
    /// The collector refused the item: do not retry.
    Refused(String),
    /// This host cannot go on (a spooled chunk is unreadable, the capture stopped).
    Local(anyhow::Error),
}

impl<E: Into<anyhow::Error>> From<E> for AttemptError {
    fn from(e: E) -> Self {
        AttemptError::Lost(e.into())
    }
}

/// What an `error` from the collector means for the upload.
fn classify(code: &str, message: &str) -> AttemptError {
    match code {
        // No room, or the collector's object store is away: the same wait, with backoff.
        "storage_full" | "storage_unavailable" => AttemptError::Full(message.to_string()),
        "storage_error" => AttemptError::Lost(anyhow!("collector storage error: {message}")),
        _ => AttemptError::Refused(format!("{code}: {message}")),
    }
}

/// A chunk kept until acknowledged. The payload is shared, not copied, with the QUIC send
/// buffer, so sending and keeping it for a resend cost one buffer.
#[derive(Clone)]
struct Pending {
    header: ChunkHeader,
    payload: Bytes,
}

impl From<Chunk> for Pending {
    fn from(c: Chunk) -> Pending {
        Pending {
            header: c.header,
            payload: Bytes::from(c.payload),
        }
    }
}

async fn write_chunk(send: &mut quinn::SendStream, c: &Pending) -> Result<()> {
    let mut head = Vec::with_capacity(5 + HEADER_LEN);
    head.extend(((1 + HEADER_LEN + c.payload.len()) as u32).to_be_bytes());
    head.push(KIND_CHUNK);
    head.extend(c.header.encode());
    send.write_all(&head).await?;
    send.write_chunk(c.payload.clone()).await?;
    Ok(())
}

impl Upload {
    /// Forget an acknowledged chunk; true if it was still held.
    fn acked(&mut self, index: u64) -> bool {
        let mut held = false;
        if let Some(c) = self.in_memory.remove(&index) {
            self.mem_bytes -= c.payload.len();
            held = true;
        }
        if self.spooled.remove(&index) {
            self.spool.remove(&self.item, index);
            held = true;
        }
        held
    }

    /// A chunk was stored: the window grows, and after a run of them the backoffs start over.
    fn progress(&mut self) {
        self.window = (self.window + 1).min(MAX_IN_FLIGHT);
        self.acks_in_a_row += 1;
        self.lost_backoff.reset();
        if self.acks_in_a_row == 1 {
            self.pause.done(&self.item);
        }
        if self.acks_in_a_row >= RECOVERED {
            self.full_backoff.reset();
        }
    }

    /// Move what is in memory to the spool. What the spool cannot take stays in memory.
    fn spill(&mut self) {
        let mut kept = BTreeMap::new();
        let mut failed = None;
        for (i, c) in std::mem::take(&mut self.in_memory) {
            let len = HEADER_LEN + c.payload.len();
            let put = if failed.is_none() && self.spool.has_room(len) {
                self.spool.put(&self.item, &c.header, &c.payload)
            } else {
                Err(anyhow!("the spool is full"))
            };
            match put {
                Ok(()) => {
                    self.mem_bytes -= c.payload.len();
                    self.spooled.insert(i);
                }
                Err(e) => {
                    failed.get_or_insert(e);
                    kept.insert(i, c);
                }
            }
        }
        if let Some(e) = failed {
            tracing::warn!(
                "item {}: {} chunk(s) stay in memory: {e:#}",
                self.item,
                kept.len()
            );
        }
        self.in_memory = kept;
    }

    async fn attempt(&mut self, conn: &quinn::Connection) -> Result<Sealed, AttemptError> {
        let (mut send, recv) = conn.open_bi().await?;
        write_message(&mut send, Message::ItemBegin(Box::new(self.header.clone()))).await?;
        let (mut replies, _reader) = super::read_messages(recv, "item stream", 256);
        self.exchange(&mut send, &mut replies).await
    }

    /// A write failed: the collector may have said why just before it stopped reading.
    async fn why_stopped(
        &mut self,
        e: anyhow::Error,
        replies: &mut mpsc::Receiver<Result<Message>>,
    ) -> AttemptError {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        loop {
            match tokio::time::timeout_at(deadline, replies.recv()).await {
                Ok(Some(Ok(Message::ChunkAck { index }))) => {
                    if self.acked(index) {
                        self.progress();
                    }
                }
                Ok(Some(Ok(Message::Error { code, message }))) => return classify(&code, &message),
                _ => return AttemptError::Lost(e),
            }
        }
    }

    async fn exchange(
        &mut self,
        send: &mut quinn::SendStream,
        replies: &mut mpsc::Receiver<Result<Message>>,
    ) -> Result<Sealed, AttemptError> {
        let mut resumed = 0;
        match replies
            .recv()
            .await
            .ok_or_else(|| anyhow!("no answer to item_begin"))??
        {
            Message::ChunksHeld { indices } => {
                if !indices.is_empty() {
                    resumed = 1;
                    tracing::info!(
                        "item {}: collector already holds {} chunk(s); sending only the rest",
                        self.item,
                        indices.len()
                    );
                }
                for i in indices {
                    self.acked(i);
                }
            }
            Message::ItemSealed { sha256, .. } => return Ok(self.sealed(sha256, resumed)),
            Message::Error { code, message } => return Err(classify(&code, &message)),
            other => {
                return Err(AttemptError::Lost(anyhow!(
                    "unexpected {} after item_begin",
                    other.name()
                )))
            }
        }
        // What is unacknowledged goes first, in order, within the window.
        let mut unsent: BTreeSet<u64> = self
            .spooled
            .iter()
            .chain(self.in_memory.keys())
            .copied()
            .collect();
        let mut in_flight: BTreeSet<u64> = BTreeSet::new();
        let mut end_sent = false;
        loop {
            while in_flight.len() < self.window {
                let Some(i) = unsent.pop_first() else { break };
                let c = match self.in_memory.get(&i) {
                    Some(c) => c.clone(),
                    None => self
                        .spool
                        .get(&self.item, i)
                        .map(Pending::from)
                        .map_err(AttemptError::Local)?,
                };
                if let Err(e) = write_chunk(send, &c).await {
                    return Err(self.why_stopped(e, replies).await);
                }
                self.chunks_sent += 1;
                in_flight.insert(i);
            }
            if self.producer_done && unsent.is_empty() && !end_sent {
                if let Some(m) = &self.manifest {
                    if let Err(e) = write_message(send, Message::ItemEnd(m.clone())).await {
                        return Err(self.why_stopped(e.into(), replies).await);
                    }
                    end_sent = true;
                }
            }
            let room = self.mem_bytes < WINDOW_BYTES;
            tokio::select! {
                r = replies.recv() => {
                    match r.ok_or_else(|| anyhow!("item stream reader stopped"))?? {
                        Message::ChunkAck { index } => {
                            in_flight.remove(&index);
                            if self.acked(index) {
                                self.progress();
                            }
                        }
                        Message::ItemSealed { sha256, .. } => return Ok(self.sealed(sha256, resumed)),
                        Message::Error { code, message } => return Err(classify(&code, &message)),
                        other => return Err(AttemptError::Lost(anyhow!("unexpected {} on an item stream", other.name()))),
                    }
                }
                p = self.producer.recv(), if !self.producer_done && room => {
                    match p {
                        Some(Produced::Chunk(c)) => {
                            // Kept before it is written: a write that fails must not lose it.
                            let index = c.header.index;
                            self.mem_bytes += c.payload.len();
                            self.in_memory.insert(index, Pending::from(c));
                            unsent.insert(index);
                        }
                        Some(Produced::Done(m)) => {
                            self.manifest = Some(m);
                            self.producer_done = true;
                        }
                        None => return Err(AttemptError::Local(anyhow!("the capture stopped before finishing the item"))),
                    }
                }
            }
        }
    }

    fn sealed(&self, sha256: String, resumed: u32) -> Sealed {
        Sealed {
            sha256,
            resumed,
            chunks_sent: self.chunks_sent,
        }
    }

    /// While waiting (to reconnect, for room at the collector): keep the capture going into
    /// the spool, as far as it has room.
    async fn keep_producing_while<T>(
        &mut self,
        wait: impl std::future::Future<Output = T>,
    ) -> Result<T> {
        tokio::pin!(wait);
        let mut spool_ok = true;
        loop {
            let room = spool_ok && self.spool.has_room(cairn_protocol::CHUNK_SIZE + HEADER_LEN);
            tokio::select! {
                t = &mut wait => return Ok(t),
                p = self.producer.recv(), if !self.producer_done && room => match p {
                    Some(Produced::Chunk(c)) => {
                        let index = c.header.index;
                        let c = Pending::from(c);
                        match self.spool.put(&self.item, &c.header, &c.payload) {
                            Ok(()) => {
                                self.spooled.insert(index);
                            }
                            Err(e) => {
                                // Kept in memory; the capture waits for the next attempt.
                                tracing::warn!("item {}: {e:#}; the capture waits", self.item);
                                self.mem_bytes += c.payload.len();
                                self.in_memory.insert(index, c);
                                spool_ok = false;
                            }
                        }
                    }
                    Some(Produced::Done(m)) => {
                        self.manifest = Some(m);
                        self.producer_done = true;
                    }
                    None => return Err(anyhow!("the capture stopped before finishing the item")),
                }
            }
        }
    }
}

/// Hash, compress and upload one item: `produce` runs on a blocking thread, handing each
/// chunk to the sink it is given (false: the upload gave up, stop) and returning the manifest,
/// while the upload streams the chunks. Returns once the collector sealed the item.
pub async fn send_item<F>(
    connector: &Arc<Connector>,
    spool: &Arc<ChunkSpool>,
    pause: &Arc<UploadPause>,
    header: ItemHeader,
    produce: F,
) -> Result<Sealed>
where
    F: FnOnce(&mut dyn FnMut(Chunk) -> bool) -> Option<ItemManifest> + Send + 'static,
{
    let (tx, rx) = mpsc::channel::<Produced>(4);
    let producer = tokio::task::spawn_blocking(move || {
        let manifest = produce(&mut |c| tx.blocking_send(Produced::Chunk(c)).is_ok());
        if let Some(m) = manifest {
            let _ = tx.blocking_send(Produced::Done(Box::new(m)));
        }
    });
    let sealed = upload(connector.clone(), spool.clone(), pause.clone(), header, rx).await;
    let _ = producer.await;
    sealed
}

/// Upload one item; returns once the collector sealed it, or refused it.
pub async fn upload(
    connector: Arc<Connector>,
    spool: Arc<ChunkSpool>,
    pause: Arc<UploadPause>,
    header: ItemHeader,
    producer: mpsc::Receiver<Produced>,
) -> Result<Sealed> {
    let item = header.item_id.clone();
    let _guard = SpoolGuard {
        spool: spool.clone(),
        pause: pause.clone(),
        item: item.clone(),
    };
    // Uploads that start while the collector is full start with one chunk in flight.
    let window = if pause.is_paused() { 1 } else { MAX_IN_FLIGHT };
    let mut up = Upload {
        header,
        item: item.clone(),
        spool,
        pause,
        producer,
        producer_done: false,
        manifest: None,
        in_memory: BTreeMap::new(),
        mem_bytes: 0,
        spooled: BTreeSet::new(),
        chunks_sent: 0,
        window,
        acks_in_a_row: 0,
        lost_backoff: Backoff::standard(),
        full_backoff: Backoff::new(Duration::from_secs(1), Duration::from_secs(60)),
    };
    let mut resumes = 0u32;
    let mut conn = connector.get().await;
    loop {
        match up.attempt(&conn).await {
            Ok(mut s) => {
                s.resumed = resumes;
                return Ok(s);
            }
            Err(AttemptError::Refused(why)) => {
                return Err(anyhow!("collector refused item {item}: {why}"))
            }
            Err(AttemptError::Local(e)) => return Err(e.context(format!("item {item}"))),
            Err(AttemptError::Full(why)) => {
                resumes += 1;
                up.pause.paused(&item, &why);
                up.window = 1;
                up.acks_in_a_row = 0;
                let wait = up.full_backoff.next_delay();
                tracing::debug!(
                    "item {item}: no room at the collector; next try in {:.1}s",
                    wait.as_secs_f64()
                );
                up.spill();
                up.keep_producing_while(tokio::time::sleep(wait)).await?;
                conn = connector.get().await;
            }
            Err(AttemptError::Lost(e)) => {
                resumes += 1;
                let wait = up.lost_backoff.next_delay();
                tracing::warn!(
                    "item {item}: connection lost ({e:#}); spooling and resuming in {:.1}s",
                    wait.as_secs_f64()
                );
                up.spill();
                let c = connector.clone();
                let reconnect = async move {
                    tokio::time::sleep(wait).await;
                    c.get().await
                };
                conn = up.keep_producing_while(reconnect).await?;
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_pause_is_said_once_and_cleared_when_the_last_item_goes_on() {
        let p = UploadPause::default();
        assert_eq!(p.status(), None);
        p.paused("a", "no room");
        let first = p.status().unwrap();
        assert!(
            first.starts_with("storage full at the collector since "),
            "{first}"
        );
        p.paused("a", "no room");
        p.paused("b", "no room");
        assert_eq!(p.status().unwrap(), first, "the first pause's time is kept");
        p.done("a");
        assert!(p.is_paused(), "b still waits");
        p.done("b");
        assert_eq!(p.status(), None);
        p.done("b");
        assert_eq!(p.status(), None);
    }
}
