//! One item over one QUIC stream, resumable across lost connections and collector restarts.
//!
//! Chunks come from the producer (a blocking thread running the pipeline) and are sent at
//! once; each stays in memory until the collector acknowledges it as persisted. When the
//! connection drops, unacknowledged chunks are written to the [`ChunkSpool`], and the producer
//! keeps filling it (up to its bound) while we reconnect, so a capture is not lost to a
//! collector restart. On reconnect the collector says which chunks it already holds, and
//! only the others are sent. A spooled chunk is deleted only after it is acknowledged.

use super::connection::Connector;
use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use cairn_protocol::chunk::{Chunk, ChunkHeader, HEADER_LEN};
use cairn_protocol::manifest::{ItemHeader, ItemManifest};
use cairn_protocol::wire::aio::write_message;
use cairn_protocol::wire::{Message, KIND_CHUNK};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Unacknowledged bytes kept in memory per item before we wait for acks.
const WINDOW_BYTES: usize = 96 * 1024 * 1024;

/// What the producer thread sends.
pub enum Produced {
    Chunk(Chunk),
    Done(Box<ItemManifest>),
}

/// The chunk spool (`STATE/spool/ITEM/N.chunk`): chunks of items not yet acknowledged,
/// written when the connection drops, shared by all uploads, bounded in bytes. Not to be
/// confused with the live events' `EventSpool` (`transport/event_spool.rs`).
pub struct ChunkSpool {
    root: PathBuf,
    max_bytes: u64,
    used: AtomicU64,
}

impl ChunkSpool {
    pub fn new(root: PathBuf, max_bytes: u64) -> Arc<ChunkSpool> {
        Arc::new(ChunkSpool {
            root,
            max_bytes,
            used: AtomicU64::new(0),
        })
    }
    fn has_room(&self, n: usize) -> bool {
        self.used.load(Ordering::Relaxed) + n as u64 <= self.max_bytes
    }
    fn dir(&self, item: &str) -> PathBuf {
        self.root.join(item)
    }
    fn put(&self, item: &str, c: &Pending) -> Result<()> {
        let dir = self.dir(item);
        std::fs::create_dir_all(&dir)?;
        let mut buf = Vec::with_capacity(HEADER_LEN + c.payload.len());
        buf.extend(c.header.encode());
        buf.extend(&c.payload);
        std::fs::write(dir.join(format!("{}.chunk", c.header.index)), &buf)
            .with_context(|| format!("cannot spool chunk {} of item {item}", c.header.index))?;
        self.used.fetch_add(buf.len() as u64, Ordering::Relaxed);
        Ok(())
    }
    fn get(&self, item: &str, index: u64) -> Result<Pending> {
        let p = self.dir(item).join(format!("{index}.chunk"));
        let bytes =
            std::fs::read(&p).with_context(|| format!("spooled chunk {} is gone", p.display()))?;
        Chunk::read_from(&mut &bytes[..])?
            .map(Pending::from)
            .ok_or_else(|| anyhow!("spooled chunk {} is empty", p.display()))
    }
    fn remove(&self, item: &str, index: u64) {
        let p = self.dir(item).join(format!("{index}.chunk"));
        if let Ok(m) = std::fs::metadata(&p) {
            if std::fs::remove_file(&p).is_ok() {
                self.used.fetch_sub(m.len(), Ordering::Relaxed);
            }
        }
    }
    fn remove_item(&self, item: &str) {
        let _ = std::fs::remove_dir_all(self.dir(item));
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
    producer: mpsc::Receiver<Produced>,
    producer_done: bool,
    manifest: Option<Box<ItemManifest>>,
    in_memory: BTreeMap<u64, Pending>,
    mem_bytes: usize,
    spooled: BTreeSet<u64>,
    chunks_sent: u64,
}

enum AttemptError {
    /// The connection went away: reconnect and resume.
    Lost(anyhow::Error),
    /// The collector refused the item: do not retry.
    Refused(String),
}

impl<E: Into<anyhow::Error>> From<E> for AttemptError {
    fn from(e: E) -> Self {
        AttemptError::Lost(e.into())
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
    fn acked(&mut self, index: u64) {
        if let Some(c) = self.in_memory.remove(&index) {
            self.mem_bytes -= c.payload.len();
        }
        if self.spooled.remove(&index) {
            self.spool.remove(&self.item, index);
        }
    }

    /// Move what is in memory to the spool (connection lost).
    fn spill(&mut self) -> Result<()> {
        for (i, c) in std::mem::take(&mut self.in_memory) {
            self.spool.put(&self.item, &c)?;
            self.spooled.insert(i);
        }
        self.mem_bytes = 0;
        Ok(())
    }

    async fn attempt(&mut self, conn: &quinn::Connection) -> Result<Sealed, AttemptError> {
        let (mut send, recv) = conn.open_bi().await?;
        write_message(&mut send, Message::ItemBegin(Box::new(self.header.clone()))).await?;
        let (mut replies, _reader) = super::read_messages(recv, "item stream", 256);
        self.exchange(&mut send, &mut replies).await
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
            Message::Error { code, message } => {
                return Err(AttemptError::Refused(format!("{code}: {message}")))
            }
            other => {
                return Err(AttemptError::Lost(anyhow!(
                    "unexpected {} after item_begin",
                    other.name()
                )))
            }
        }
        // Resend what is unacknowledged, in order.
        let mut resend: Vec<u64> = self
            .spooled
            .iter()
            .chain(self.in_memory.keys())
            .copied()
            .collect();
        resend.sort_unstable();
        for i in resend {
            let c = match self.in_memory.get(&i) {
                Some(c) => c.clone(),
                None => self.spool.get(&self.item, i)?,
            };
            write_chunk(send, &c).await?;
            self.chunks_sent += 1;
        }
        let mut end_sent = false;
        loop {
            if self.producer_done && !end_sent {
                if let Some(m) = &self.manifest {
                    write_message(send, Message::ItemEnd(m.clone())).await?;
                    end_sent = true;
                }
            }
            let window_open = self.mem_bytes < WINDOW_BYTES;
            tokio::select! {
                r = replies.recv() => {
                    match r.ok_or_else(|| anyhow!("item stream reader stopped"))?? {
                        Message::ChunkAck { index } => self.acked(index),
                        Message::ItemSealed { sha256, .. } => return Ok(self.sealed(sha256, resumed)),
                        Message::Error { code, message } if code == "storage_error" => {
                            return Err(AttemptError::Lost(anyhow!("collector storage error: {message}")))
                        }
                        Message::Error { code, message } => return Err(AttemptError::Refused(format!("{code}: {message}"))),
                        other => return Err(AttemptError::Lost(anyhow!("unexpected {} on an item stream", other.name()))),
                    }
                }
                p = self.producer.recv(), if !self.producer_done && window_open => {
                    match p {
                        Some(Produced::Chunk(c)) => {
                            // Kept before it is written: a write that fails must not lose it.
                            let index = c.header.index;
                            self.mem_bytes += c.payload.len();
                            self.in_memory.insert(index, Pending::from(c));
                            if let Some(c) = self.in_memory.get(&index) {
                                write_chunk(send, c).await?;
                            }
                            self.chunks_sent += 1;
                        }
                        Some(Produced::Done(m)) => {
                            self.manifest = Some(m);
                            self.producer_done = true;
                        }
                        None => return Err(AttemptError::Refused("the capture stopped before finishing the item".into())),
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

    /// While disconnected: keep the capture going into the spool, as far as it has room.
    async fn drain_while_disconnected(
        &mut self,
        reconnect: &mut tokio::task::JoinHandle<quinn::Connection>,
    ) -> Result<quinn::Connection> {
        loop {
            let room = self.spool.has_room(cairn_protocol::CHUNK_SIZE + HEADER_LEN);
            tokio::select! {
                c = &mut *reconnect => return c.context("reconnect task failed"),
                p = self.producer.recv(), if !self.producer_done && room => match p {
                    Some(Produced::Chunk(c)) => {
                        let index = c.header.index;
                        self.spool.put(&self.item, &Pending::from(c))?;
                        self.spooled.insert(index);
                    }
                    Some(Produced::Done(m)) => {
                        self.manifest = Some(m);
                        self.producer_done = true;
                    }
                    None => bail!("the capture stopped before finishing the item"),
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
    let sealed = upload(connector.clone(), spool.clone(), header, rx).await;
    let _ = producer.await;
    sealed
}

/// Upload one item; returns once the collector sealed it, or refused it.
pub async fn upload(
    connector: Arc<Connector>,
    spool: Arc<ChunkSpool>,
    header: ItemHeader,
    producer: mpsc::Receiver<Produced>,
) -> Result<Sealed> {
    let item = header.item_id.clone();
    let mut up = Upload {
        header,
        item: item.clone(),
        spool,
        producer,
        producer_done: false,
        manifest: None,
        in_memory: BTreeMap::new(),
        mem_bytes: 0,
        spooled: BTreeSet::new(),
        chunks_sent: 0,
    };
    let mut resumes = 0u32;
    let mut conn = connector.get().await;
    let result = loop {
        match up.attempt(&conn).await {
            Ok(mut s) => {
                s.resumed = resumes;
                break Ok(s);
            }
            Err(AttemptError::Refused(why)) => {
                break Err(anyhow!("collector refused item {item}: {why}"))
            }
            Err(AttemptError::Lost(e)) => {
                resumes += 1;
                tracing::warn!("item {item}: connection lost ({e:#}); spooling and resuming");
                up.spill()?;
                let c = connector.clone();
                let mut reconnect = tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    c.get().await
                });
                conn = up.drain_while_disconnected(&mut reconnect).await?;
            }
        }
    };
    up.spool.remove_item(&item);
    result
}
