//! Everything between this host and the collector: mechanisms, not policy. Nothing here
//! knows about the sensor, the flight recorder, collections or the self-test
//! (the daemon puts them together).
//!
//! - [`tls`]: rustls configurations: the pinned-CA one used to enroll, the mutual one after.
//! - [`enroll`]: key generation, CSR, token exchange; the private key never leaves the host.
//! - [`backoff`]: the one retry policy (capped exponential backoff, full jitter) of every
//!   retry below and in the daemon.
//! - [`connection`]: one QUIC connection kept alive with reconnect and backoff.
//! - [`control`]: the control-stream protocol (hello, heartbeats, commands, an outbox of
//!   messages kept until acknowledged) and the probe round trip; what commands do is the
//!   daemon's.
//! - [`events`]: the live event stream, batched and acknowledged, spilling to the on-disk
//!   `EventSpool` (`event_spool`).
//! - [`upload`]: one item over one stream, resumable, with the on-disk [`upload::ChunkSpool`]
//!   (`chunk_spool`).

pub mod backoff;
mod chunk_spool;
pub mod connection;
pub mod control;
pub mod enroll;
mod event_spool;
pub mod events;
pub mod tls;
pub mod upload;

use anyhow::{anyhow, Result};
use cairn_protocol::wire::{aio::read_frame, Frame, Message};

/// Messages from the collector on one stream, read by their own task and handed over a
/// channel: a frame read cut short by `select!` would lose bytes, a channel receive does not.
/// The channel ends with the first error (or the end of the stream, named `stream`).
/// Dropping the returned guard stops the task.
pub(crate) fn read_messages(
    mut recv: quinn::RecvStream,
    stream: &'static str,
    depth: usize,
) -> (tokio::sync::mpsc::Receiver<Result<Message>>, ReaderGuard) {
    let (tx, rx) = tokio::sync::mpsc::channel(depth);
    let task = tokio::spawn(async move {
        loop {
            let m = match read_frame(&mut recv).await {
                Ok(Some(Frame::Message(m))) => Ok(m),
                Ok(Some(Frame::Chunk(_))) => Err(anyhow!("collector sent a chunk on the {stream}")),
                Ok(None) => Err(anyhow!("collector closed the {stream}")),
                Err(e) => Err(e.into()),
            };
            let stop = m.is_err();
            if tx.send(m).await.is_err() || stop {
                return;
            }
        }
    });
    (rx, ReaderGuard(task))
}

/// Aborts the reader task when dropped.
pub(crate) struct ReaderGuard(tokio::task::JoinHandle<()>);

impl Drop for ReaderGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}
