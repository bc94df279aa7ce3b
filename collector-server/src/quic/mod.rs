//! The agent-facing QUIC server, one module per kind of stream.
//!
//! A connection without a client certificate may only enroll ([`enroll`]). A connection with
//! one is an agent, known by the SHA-256 of its certificate; each stream it opens says what it
//! is by its first frame: `hello` (the [`control`] stream), `events` ([`events`]),
//! `item_begin` ([`items`]), `readiness` or `selftest_begin` ([`readiness`]), `canary` (the
//! self-test's encryption check, answered at once).

mod control;
mod endpoint;
mod enroll;
mod events;
mod items;
mod readiness;

pub use endpoint::endpoint;

use crate::admission::{Admission, LogLimiter, Refused};
use crate::state::State;
use anyhow::Result;
use cairn_protocol::wire::aio::{read_frame, write_message};
use cairn_protocol::wire::{Frame, Message};
use quinn::SendStream;
use std::sync::Arc;
use std::time::Duration;

/// How long an agent has to finish its QUIC handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn run(
    state: Arc<State>,
    endpoint: quinn::Endpoint,
    admission: Arc<Admission>,
) -> Result<()> {
    let log = Arc::new(LogLimiter::new(Duration::from_secs(10)));
    while let Some(incoming) = endpoint.accept().await {
        let remote = incoming.remote_address();
        let handshake = match admission.begin(remote.ip()) {
            Ok(h) => h,
            Err(Refused(why)) => {
                if let Some(line) = log.note("QUIC connection refused", &format!("{remote}: {why}"))
                {
                    tracing::warn!("{line}");
                }
                incoming.refuse();
                continue;
            }
        };
        let state = state.clone();
        let log = log.clone();
        tokio::spawn(async move {
            let connecting = tokio::select! {
                r = tokio::time::timeout(HANDSHAKE_TIMEOUT, incoming) => r,
                () = handshake.evicted() => return,
            };
            match connecting {
                Ok(Ok(conn)) => {
                    let _established = handshake.established();
                    if let Err(e) = handle(state, conn).await {
                        tracing::info!("connection from {remote} ended: {e:#}");
                    }
                }
                Ok(Err(e)) => {
                    if let Some(line) = log.note("QUIC handshake failed", &format!("{remote}: {e}"))
                    {
                        tracing::warn!("{line}");
                    }
                }
                Err(_) => {
                    if let Some(line) = log.note("QUIC handshake timed out", &remote.to_string()) {
                        tracing::warn!("{line}");
                    }
                }
            }
        });
    }
    Ok(())
}

fn peer_cert_sha256(conn: &quinn::Connection) -> Option<String> {
    let certs = conn
        .peer_identity()?
        .downcast::<Vec<rustls_pki_types::CertificateDer<'static>>>()
        .ok()?;
    certs.first().map(|c| cairn_protocol::sha256_hex(c))
}

async fn handle(state: Arc<State>, conn: quinn::Connection) -> Result<()> {
    let Some(fingerprint) = peer_cert_sha256(&conn) else {
        return enroll::enrollment(state, conn).await;
    };
    let Some(host_id) = state.meta().host_id_by_cert(&fingerprint)? else {
        conn.close(
            1u32.into(),
            b"certificate not registered with this collector: enroll again",
        );
        anyhow::bail!("unknown client certificate {fingerprint}");
    };
    loop {
        let (send, mut recv) = match conn.accept_bi().await {
            Ok(s) => s,
            Err(quinn::ConnectionError::ApplicationClosed(_))
            | Err(quinn::ConnectionError::LocallyClosed) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        let state = state.clone();
        let host_id = host_id.clone();
        tokio::spawn(async move {
            let result = match read_frame(&mut recv).await {
                Ok(Some(Frame::Message(hello @ Message::Hello { .. }))) => {
                    control::control(state, &host_id, hello, send, recv).await
                }
                Ok(Some(Frame::Message(Message::Events { first_seq, jsonl }))) => {
                    events::events_stream(state, &host_id, first_seq, jsonl, send, recv).await
                }
                Ok(Some(Frame::Message(Message::ItemBegin(header)))) => {
                    items::item_stream(state, &host_id, *header, send, recv).await
                }
                Ok(Some(Frame::Message(Message::Readiness(report)))) => {
                    readiness::readiness_stream(state, &host_id, *report, send).await
                }
                Ok(Some(Frame::Message(Message::Canary { ciphertext }))) => {
                    let reply = crate::readiness::canary(&state.evidence_key, &ciphertext);
                    finish_with(send, reply).await
                }
                Ok(Some(Frame::Message(Message::SelftestBegin { collection_id }))) => {
                    readiness::round_trip_stream(state, &host_id, collection_id, send, recv).await
                }
                Ok(Some(Frame::Message(m))) => {
                    refuse(
                        send,
                        "bad_request",
                        format!("a stream cannot start with {}", m.name()),
                    )
                    .await
                }
                Ok(Some(Frame::Chunk(_))) => {
                    refuse(
                        send,
                        "bad_request",
                        "a stream cannot start with a chunk".into(),
                    )
                    .await
                }
                Ok(None) => Ok(()),
                Err(e) => refuse(send, "bad_request", e.to_string()).await,
            };
            if let Err(e) = result {
                tracing::info!("stream from host {host_id}: {e:#}");
            }
        });
    }
}

/// Answer a stream with an error message and close it.
async fn refuse(mut send: SendStream, code: &str, message: String) -> Result<()> {
    write_message(&mut send, Message::error(code, message.clone())).await?;
    let _ = send.finish();
    anyhow::bail!("{code}: {message}")
}

/// Send one last message and wait until the agent has read it.
async fn finish_with(mut send: SendStream, m: Message) -> Result<()> {
    write_message(&mut send, m).await?;
    send.finish()?;
    let _ = send.stopped().await;
    Ok(())
}

/// Run blocking domain work (SQLite, hashing, disk) off the async executor.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> crate::error::Result<T> + Send + 'static,
) -> Result<T> {
    Ok(tokio::task::spawn_blocking(f).await??)
}
