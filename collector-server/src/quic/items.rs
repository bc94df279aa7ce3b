//! Item upload streams: `item_begin` (answered with the chunks already held, for resume), the
//! chunks (each verified and stored, then acknowledged), `item_end` with the manifest
//! (answered `item_sealed` or why not). Frame order is `ingest`'s; sealing is `collections`'.

use super::{finish_with, refuse};
use crate::ingest::{self, IngestError, ItemFrame, Opened};
use crate::metrics::Metrics;
use crate::state::State;
use anyhow::Result;
use cairn_protocol::manifest::{ItemHeader, ItemManifest};
use cairn_protocol::wire::aio::{read_frame, write_message};
use cairn_protocol::wire::Message;
use quinn::{RecvStream, SendStream};
use std::sync::Arc;

enum Work {
    /// A chunk being verified and stored on a blocking thread: (index, that task).
    Chunk(u64, tokio::task::JoinHandle<Result<Vec<u8>, IngestError>>),
    End(Box<ItemManifest>),
}

/// No room for a chunk, or the object store is away: the agent keeps it and tries again
/// later; the collection says why. `None` for any other failure.
fn cannot_store(state: &State, collection_id: &str, e: &IngestError) -> Option<Message> {
    let (code, why) = if e.is_storage_full() {
        state.health.storage_full(&e.to_string());
        ("storage_full", "storage full at the collector")
    } else if e.is_store_unavailable() {
        state.health.store_unavailable(&e.to_string());
        (
            "storage_unavailable",
            "the collector's object store is unavailable",
        )
    } else {
        return None;
    };
    if let Err(err) = state.collections.pause(collection_id, why) {
        tracing::debug!("collection {collection_id} not marked paused: {err}");
    }
    Some(Message::error(code, e.to_string()))
}

/// An upload stream counted in `/metrics` while it is open.
struct InProgress(Arc<Metrics>);

impl InProgress {
    fn new(m: Arc<Metrics>) -> InProgress {
        Metrics::add(&m.uploads_in_progress, 1);
        InProgress(m)
    }
}

impl Drop for InProgress {
    fn drop(&mut self) {
        self.0
            .uploads_in_progress
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Most chunks of one item verified and stored at a time, whatever the store asks for
/// ([`crate::storage::BlobStore::writes_in_parallel`]): each holds a chunk (≤ 4 MiB) in memory.
const MAX_VERIFY_DEPTH: usize = 16;

pub(super) async fn item_stream(
    state: Arc<State>,
    host_id: &str,
    header: ItemHeader,
    mut send: SendStream,
    mut recv: RecvStream,
) -> Result<()> {
    let actor = format!("agent:{host_id}");
    let (st, hid, who) = (state.clone(), host_id.to_string(), actor.clone());
    let opened =
        tokio::task::spawn_blocking(move || st.collections.begin_item(header, Some(&hid), &who))
            .await?;
    let mut ingest = match opened {
        Err(e) => return refuse(send, "item_rejected", e.to_string()).await,
        Ok(Opened::AlreadySealed(sha256)) => {
            return finish_with(
                send,
                Message::ItemSealed {
                    item_id: String::new(),
                    sha256,
                },
            )
            .await;
        }
        Ok(Opened::Held { held, ingest, .. }) => {
            write_message(&mut send, Message::ChunksHeld { indices: held }).await?;
            ingest
        }
    };
    let item_id = ingest.item_id().to_string();
    let chunk_size = ingest.chunk_size();
    let _open = InProgress::new(state.stores.metrics.clone());
    let collection_id = ingest.header().collection_id.clone();
    // A collection paused for a full disk goes on with the first chunk that is stored.
    let mut resume_pending = state
        .meta()
        .get_collection(&collection_id)
        .ok()
        .flatten()
        .is_some_and(|c| c.status == crate::storage::CollectionStatus::Paused);

    // Three stages overlap: this task reads frames and starts each chunk's verification on a
    // blocking thread; the sequencer takes results in order, folds them into the item hash and
    // acknowledges; the writer sends the acknowledgments.
    let depth = state
        .stores
        .blobs
        .writes_in_parallel()
        .clamp(1, MAX_VERIFY_DEPTH);
    let (work_tx, mut work_rx) = tokio::sync::mpsc::channel::<Work>(depth);
    let (reply_tx, mut reply_rx) = tokio::sync::mpsc::channel::<Message>(64);
    let worker_item = item_id.clone();
    let rt = tokio::runtime::Handle::current();
    let st = state.clone();
    let worker = tokio::task::spawn_blocking(move || {
        while let Some(w) = work_rx.blocking_recv() {
            match w {
                Work::Chunk(index, task) => {
                    let result = rt.block_on(task).unwrap_or_else(|e| {
                        Err(IngestError::Rejected(format!("verify task: {e}")))
                    });
                    let reply = match result {
                        Ok(raw) => {
                            ingest.fold(index, &raw);
                            st.health.storage_ok();
                            if resume_pending {
                                resume_pending = false;
                                if let Err(e) = st.collections.resume(&collection_id) {
                                    tracing::warn!("collection {collection_id}: {e}");
                                }
                            }
                            Message::ChunkAck { index }
                        }
                        Err(e @ IngestError::Chunk(_)) => {
                            Metrics::add(&st.stores.metrics.verification_failures, 1);
                            Message::error("chunk_rejected", e.to_string())
                        }
                        Err(e) => cannot_store(&st, &collection_id, &e)
                            .unwrap_or_else(|| Message::error("storage_error", e.to_string())),
                    };
                    let stop = matches!(reply, Message::Error { .. });
                    if reply_tx.blocking_send(reply).is_err() || stop {
                        return;
                    }
                }
                Work::End(m) => {
                    let reply = match st.collections.finish_item(*ingest, &m, &actor) {
                        Ok(sha256) => {
                            Metrics::add(&st.stores.metrics.items_sealed, 1);
                            Message::ItemSealed {
                                item_id: worker_item,
                                sha256,
                            }
                        }
                        Err(e @ IngestError::Rejected(_)) => {
                            Metrics::add(&st.stores.metrics.verification_failures, 1);
                            Message::error("item_rejected", e.to_string())
                        }
                        Err(e) => cannot_store(&st, &collection_id, &e)
                            .unwrap_or_else(|| Message::error("item_rejected", e.to_string())),
                    };
                    let _ = reply_tx.blocking_send(reply);
                    return;
                }
            }
        }
    });

    let writer = tokio::spawn(async move {
        while let Some(m) = reply_rx.recv().await {
            let last = matches!(m, Message::ItemSealed { .. } | Message::Error { .. });
            if write_message(&mut send, m).await.is_err() {
                return;
            }
            if last {
                let _ = send.finish();
                let _ = send.stopped().await;
                return;
            }
        }
    });

    let read_result: Result<()> = async {
        loop {
            match ingest::next_frame(read_frame(&mut recv).await?, &item_id)? {
                ItemFrame::Chunk(c) => {
                    let index = c.header.index;
                    let stores = state.stores.clone();
                    let id = item_id.clone();
                    let task = tokio::task::spawn_blocking(move || {
                        ingest::verify_and_store(&stores, &id, chunk_size, c)
                    });
                    if work_tx.send(Work::Chunk(index, task)).await.is_err() {
                        return Ok(()); // the worker stopped on an error it already reported
                    }
                }
                ItemFrame::End(m) => {
                    let _ = work_tx.send(Work::End(m)).await;
                    return Ok(());
                }
            }
        }
    }
    .await;
    drop(work_tx);
    let _ = worker.await;
    let _ = writer.await;
    read_result
}
