//! The agent-facing QUIC server.
//!
//! A connection without a client certificate may only enroll. A connection with one is an
//! agent, known by the SHA-256 of its certificate; its first stream is the control stream
//! (hello, heartbeats, commands), every further stream uploads one item.

use crate::ingest::{IngestError, ItemIngest, Opened};
use crate::server::State;
use anyhow::{Context, Result};
use cairn_protocol::manifest::CollectRequest;
use cairn_protocol::wire::aio::{read_frame, write_message};
use cairn_protocol::wire::{Frame, Message};
use quinn::{RecvStream, SendStream};
use serde_json::json;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub fn endpoint(
    data: &crate::datadir::DataDir,
    state: &State,
    listen: SocketAddr,
) -> Result<quinn::Endpoint> {
    let (certs, key) = crate::server::server_identity(data)?;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut state.ca_pem.as_bytes()) {
        roots.add(c?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    // Enrollment happens before the agent has a certificate; such connections can do
    // nothing else (see `handle`).
    .allow_unauthenticated()
    .build()?;
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)?;
    tls.alpn_protocols = vec![cairn_protocol::ALPN.to_vec()];
    tls.max_early_data_size = 0;
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    transport.max_idle_timeout(Some(Duration::from_secs(30).try_into()?));
    transport.max_concurrent_bidi_streams(64u32.into());
    // Large windows: one item stream should fill a fast link on its own.
    transport.stream_receive_window((32u32 * 1024 * 1024).into());
    transport.receive_window((64u32 * 1024 * 1024).into());
    transport.send_window(64 * 1024 * 1024);
    // Probe for jumbo frames (AWS VPCs carry 9001-byte packets): six times fewer packets to
    // encrypt and send than at the 1500-byte default, where the path allows it.
    let mut mtu = quinn::MtuDiscoveryConfig::default();
    mtu.upper_bound(cairn_protocol::JUMBO_UDP_PAYLOAD);
    transport.mtu_discovery_config(Some(mtu));
    config.transport_config(Arc::new(transport));
    // A stateless-reset key that survives restarts: after a crash, agents' packets for old
    // connections are answered with a reset they recognise, so they reconnect at once instead
    // of waiting for an idle timeout.
    let secret = data.quic_reset_secret()?;
    let reset_key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &secret);
    let mut endpoint_config = quinn::EndpointConfig::new(Arc::new(reset_key));
    // Connection ids must validate after a restart too, or the packets that should draw a
    // reset are dropped as invalid.
    let cid_key =
        u64::from_le_bytes(secret[..8].try_into().unwrap_or_default()) ^ 0x6361_6972_6e2d_6369;
    endpoint_config.cid_generator(move || {
        Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key))
    });
    let socket = std::net::UdpSocket::bind(listen)
        .with_context(|| format!("cannot listen on {listen}/udp for agents"))?;
    let runtime = quinn::default_runtime().context("no async runtime for QUIC")?;
    Ok(quinn::Endpoint::new(
        endpoint_config,
        Some(config),
        socket,
        runtime,
    )?)
}

pub async fn run(state: Arc<State>, endpoint: quinn::Endpoint) -> Result<()> {
    while let Some(incoming) = endpoint.accept().await {
        let state = state.clone();
        tokio::spawn(async move {
            let remote = incoming.remote_address();
            match incoming.await {
                Ok(conn) => {
                    if let Err(e) = handle(state, conn).await {
                        tracing::info!("connection from {remote} ended: {e:#}");
                    }
                }
                Err(e) => tracing::warn!("handshake with {remote} failed: {e}"),
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
        return enrollment(state, conn).await;
    };
    let Some(host_id) = state.db().host_id_by_cert(&fingerprint)? else {
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
                    control(state, &host_id, hello, send, recv).await
                }
                Ok(Some(Frame::Message(Message::Events { first_seq, jsonl }))) => {
                    events_stream(state, &host_id, first_seq, jsonl, send, recv).await
                }
                Ok(Some(Frame::Message(Message::ItemBegin(header)))) => {
                    item_stream(state, &host_id, *header, send, recv).await
                }
                Ok(Some(Frame::Message(Message::Readiness(report)))) => {
                    crate::selftest::readiness_stream(state, &host_id, *report, send).await
                }
                Ok(Some(Frame::Message(Message::SelftestBegin { collection_id }))) => {
                    crate::selftest::round_trip_stream(state, &host_id, collection_id, send, recv)
                        .await
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

pub(crate) async fn refuse(mut send: SendStream, code: &str, message: String) -> Result<()> {
    write_message(&mut send, Message::error(code, message.clone())).await?;
    let _ = send.finish();
    anyhow::bail!("{code}: {message}")
}

async fn enrollment(state: Arc<State>, conn: quinn::Connection) -> Result<()> {
    let (mut send, mut recv) = conn.accept_bi().await?;
    let msg = tokio::time::timeout(Duration::from_secs(30), read_frame(&mut recv)).await??;
    let Some(Frame::Message(Message::Enroll {
        token,
        csr_pem,
        hostname,
    })) = msg
    else {
        return refuse(
            send,
            "certificate_required",
            "this connection has no client certificate; it can only enroll".into(),
        )
        .await;
    };
    let reply = match state.db().consume_enroll_token(&token)? {
        Err(refusal) => {
            tracing::warn!(
                "enrollment refused for {hostname:?} from {}: {refusal}",
                conn.remote_address()
            );
            Message::error("enrollment_refused", refusal.to_string())
        }
        Ok(()) => {
            let agent_id = uuid::Uuid::new_v4().to_string();
            match state.authority.sign_agent(&csr_pem, &agent_id) {
                Ok(cert_pem) => {
                    let fp = crate::authority::pem_fingerprint(&cert_pem)
                        .context("fingerprinting the new agent certificate")?;
                    state.db().insert_enrolled_host(&agent_id, &hostname, &fp)?;
                    tracing::info!("enrolled {hostname} as agent {agent_id}");
                    Message::Enrolled {
                        agent_id,
                        cert_pem,
                        ca_pem: state.ca_pem.clone(),
                    }
                }
                Err(e) => Message::error("bad_request", e.to_string()),
            }
        }
    };
    write_message(&mut send, reply).await?;
    send.finish()?;
    // Let the agent read the answer before the connection goes.
    let _ = tokio::time::timeout(Duration::from_secs(5), conn.closed()).await;
    Ok(())
}

async fn control(
    state: Arc<State>,
    host_id: &str,
    hello: Message,
    mut send: SendStream,
    mut recv: RecvStream,
) -> Result<()> {
    let Message::Hello {
        protocol_version,
        agent_version,
        host,
        active_collections,
    } = hello
    else {
        return refuse(
            send,
            "bad_request",
            "the control stream starts with hello".into(),
        )
        .await;
    };
    if protocol_version != cairn_protocol::PROTOCOL_VERSION {
        return refuse(
            send,
            "protocol_version",
            format!(
                "agent speaks protocol {protocol_version}, this collector speaks {}",
                cairn_protocol::PROTOCOL_VERSION
            ),
        )
        .await;
    }
    state
        .db()
        .update_host_identity(host_id, &host, &agent_version)?;
    if let Some(active) = &active_collections {
        fail_lost_collections(&state, host_id, active)?;
    }
    write_message(
        &mut send,
        Message::Welcome {
            agent_id: host_id.to_string(),
            collector_version: crate::tool_version(),
            server_time: cairn_protocol::now_rfc3339(),
        },
    )
    .await?;
    if active_collections.is_none() {
        // A probe (`cairn-agent ping`, the self-test): answered, but it takes no commands, so
        // it must not stand in for the agent's own control stream.
        let _ = send.finish();
        let _ = tokio::time::timeout(Duration::from_secs(10), read_frame(&mut recv)).await;
        return Ok(());
    }
    let (token, bell) = state.sessions.register(host_id);
    tracing::info!("agent {host_id} ({}) connected", host.hostname);
    let result = control_loop(&state, host_id, &bell, &mut send, &mut recv).await;
    state.sessions.unregister(host_id, token);
    tracing::info!("agent {host_id} disconnected");
    result
}

async fn control_loop(
    state: &Arc<State>,
    host_id: &str,
    bell: &tokio::sync::Notify,
    send: &mut SendStream,
    recv: &mut RecvStream,
) -> Result<()> {
    let mut sent: HashSet<String> = HashSet::new();
    send_pending(state, host_id, send, &mut sent).await?;
    loop {
        tokio::select! {
            frame = read_frame(recv) => {
                let Some(frame) = frame? else { return Ok(()) };
                state.db().touch_host(host_id)?;
                match frame {
                    Frame::Message(Message::Heartbeat { status, .. }) => {
                        if let Some(s) = status {
                            state.db().set_host_status(host_id, &s)?;
                        }
                        write_message(send, Message::HeartbeatAck { time: cairn_protocol::now_rfc3339() }).await?;
                    }
                    Frame::Message(Message::CommandAccepted { collection_id }) => {
                        if let Some(c) = state.db().get_collection(&collection_id)? {
                            if c.host_id == host_id && c.status == "requested" {
                                state.db().set_collection_status(&collection_id, "running", None)?;
                                state.ctx.custody.append(state.db(), &collection_id, &format!("agent:{host_id}"), "command_accepted", json!({}))?;
                            }
                        }
                    }
                    Frame::Message(Message::CollectionDone { collection_id, items, errors }) => {
                        finish_collection(state, host_id, &collection_id, &items, &errors)?;
                    }
                    Frame::Message(m) => {
                        write_message(send, Message::error("bad_request", format!("unexpected {} on the control stream", m.name()))).await?;
                    }
                    Frame::Chunk(_) => anyhow::bail!("chunk on the control stream"),
                }
            }
            _ = bell.notified() => send_pending(state, host_id, send, &mut sent).await?,
        }
    }
}

async fn send_pending(
    state: &Arc<State>,
    host_id: &str,
    send: &mut SendStream,
    sent: &mut HashSet<String>,
) -> Result<()> {
    let pending: Vec<CollectRequest> = state.db().pending_requests(host_id)?;
    for req in pending {
        if !sent.insert(req.collection_id.clone()) {
            continue;
        }
        let cid = req.collection_id.clone();
        write_message(send, Message::Collect(Box::new(req.clone()))).await?;
        state.ctx.custody.append(
            state.db(),
            &cid,
            "collector",
            "command_sent",
            json!({"host_id": host_id, "profile": req.profile, "paths": req.paths}),
        )?;
    }
    Ok(())
}

/// Collections `running` here that the agent no longer knows were lost with an agent restart.
fn fail_lost_collections(state: &State, host_id: &str, active: &[String]) -> Result<()> {
    for c in state.db().list_collections(Some(host_id), 1000)? {
        if c.status == "running" && c.origin == "live" && !active.contains(&c.id) {
            let error = "the agent no longer has this collection (it restarted while collecting); request it again".to_string();
            state.db().set_collection_status(
                &c.id,
                "failed",
                Some(std::slice::from_ref(&error)),
            )?;
            state.ctx.custody.append(
                state.db(),
                &c.id,
                &format!("agent:{host_id}"),
                "collection_lost",
                json!({"error": error}),
            )?;
            tracing::warn!("collection {} on {host_id} lost: agent restarted", c.id);
        }
    }
    Ok(())
}

/// Close a collection when its agent says it is done: sealed if every item sealed and
/// nothing went wrong, partial if something was sealed, failed otherwise.
pub fn finish_collection(
    state: &State,
    host_id: &str,
    collection_id: &str,
    items: &[String],
    errors: &[String],
) -> Result<()> {
    let Some(c) = state.db().get_collection(collection_id)? else {
        anyhow::bail!("collection_done for unknown collection {collection_id}");
    };
    if c.host_id != host_id {
        anyhow::bail!("collection_done for another host's collection {collection_id}");
    }
    if matches!(c.status.as_str(), "sealed" | "partial" | "failed") {
        // A repeat after a reconnect: already recorded.
        return Ok(());
    }
    let mut errors = errors.to_vec();
    let mut sealed = 0;
    for id in items {
        match state.db().get_item(id)? {
            Some(i) if i.status == "sealed" => sealed += 1,
            Some(i) => errors.push(format!(
                "item {id} ({}) is {}: {}",
                i.name,
                i.status,
                i.error.unwrap_or_default()
            )),
            None => errors.push(format!("item {id} was never received")),
        }
    }
    let status = if errors.is_empty() {
        "sealed"
    } else if sealed > 0 {
        "partial"
    } else {
        "failed"
    };
    state
        .db()
        .set_collection_status(collection_id, status, Some(&errors))?;
    state.ctx.custody.append(
        state.db(),
        collection_id,
        &format!("agent:{host_id}"),
        "collection_finished",
        json!({"status": status, "items": items, "errors": errors}),
    )?;
    Ok(())
}

/// The live event stream: store each batch, then acknowledge it.
async fn events_stream(
    state: Arc<State>,
    host_id: &str,
    mut first_seq: u64,
    mut events: String,
    mut send: SendStream,
    mut recv: RecvStream,
) -> Result<()> {
    loop {
        let st = state.clone();
        let hid = host_id.to_string();
        let n = tokio::task::spawn_blocking(move || st.db().insert_events(&hid, &events)).await??
            as u64;
        if n > 0 {
            write_message(
                &mut send,
                Message::EventsAck {
                    upto_seq: first_seq + n - 1,
                },
            )
            .await?;
        }
        match read_frame(&mut recv).await? {
            Some(Frame::Message(Message::Events {
                first_seq: f,
                jsonl: e,
            })) => {
                first_seq = f;
                events = e;
            }
            None => return Ok(()),
            Some(other) => anyhow::bail!("unexpected frame on the event stream: {other:?}"),
        }
    }
}

enum Work {
    /// A chunk being verified and stored on a blocking thread: (index, that task).
    Chunk(u64, tokio::task::JoinHandle<Result<Vec<u8>, IngestError>>),
    End(Box<cairn_protocol::manifest::ItemManifest>),
}

/// Chunks verified and stored in parallel at most this many at a time per item.
const VERIFY_DEPTH: usize = 3;

async fn item_stream(
    state: Arc<State>,
    host_id: &str,
    header: cairn_protocol::manifest::ItemHeader,
    mut send: SendStream,
    mut recv: RecvStream,
) -> Result<()> {
    let ctx = state.ctx.clone();
    let actor = format!("agent:{host_id}");
    let hid = host_id.to_string();
    let opened =
        tokio::task::spawn_blocking(move || ItemIngest::begin(&ctx, header, Some(&hid), &actor))
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
        Ok(Opened::Held(held, ingest)) => {
            write_message(&mut send, Message::ChunksHeld { indices: held }).await?;
            ingest
        }
    };
    let item_id = ingest.item_id().to_string();
    let chunk_size = ingest.chunk_size();

    // Three stages overlap: this task reads frames and starts each chunk's verification on a
    // blocking thread; the sequencer takes results in order, folds them into the item hash and
    // acknowledges; the writer sends the acknowledgments.
    let (work_tx, mut work_rx) = tokio::sync::mpsc::channel::<Work>(VERIFY_DEPTH);
    let (reply_tx, mut reply_rx) = tokio::sync::mpsc::channel::<Message>(64);
    let worker_item = item_id.clone();
    let rt = tokio::runtime::Handle::current();
    let worker = tokio::task::spawn_blocking(move || {
        while let Some(w) = work_rx.blocking_recv() {
            match w {
                Work::Chunk(index, task) => {
                    let result = rt
                        .block_on(task)
                        .unwrap_or_else(|e| Err(IngestError::Storage(format!("verify task: {e}"))));
                    let reply = match result {
                        Ok(raw) => {
                            ingest.fold(index, &raw);
                            Message::ChunkAck { index }
                        }
                        Err(e @ IngestError::Chunk(_)) => {
                            Message::error("chunk_rejected", e.to_string())
                        }
                        Err(e) => Message::error("storage_error", e.to_string()),
                    };
                    let stop = matches!(reply, Message::Error { .. });
                    if reply_tx.blocking_send(reply).is_err() || stop {
                        return;
                    }
                }
                Work::End(m) => {
                    let reply = match ingest.finish(&m) {
                        Ok(sha256) => Message::ItemSealed {
                            item_id: worker_item,
                            sha256,
                        },
                        Err(e) => Message::error("item_rejected", e.to_string()),
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
            match read_frame(&mut recv).await? {
                Some(Frame::Chunk(c)) => {
                    let index = c.header.index;
                    let ctx = state.ctx.clone();
                    let id = item_id.clone();
                    let task = tokio::task::spawn_blocking(move || {
                        crate::ingest::verify_and_store(&ctx, &id, chunk_size, c)
                    });
                    if work_tx.send(Work::Chunk(index, task)).await.is_err() {
                        return Ok(()); // the worker stopped on an error it already reported
                    }
                }
                Some(Frame::Message(Message::ItemEnd(m))) => {
                    let _ = work_tx.send(Work::End(m)).await;
                    return Ok(());
                }
                Some(Frame::Message(m)) => {
                    anyhow::bail!("unexpected {} on item stream {item_id}", m.name())
                }
                None => anyhow::bail!("item stream {item_id} ended before its manifest"),
            }
        }
    }
    .await;
    drop(work_tx);
    let _ = worker.await;
    let _ = writer.await;
    read_result
}

async fn finish_with(mut send: SendStream, m: Message) -> Result<()> {
    write_message(&mut send, m).await?;
    send.finish()?;
    let _ = send.stopped().await;
    Ok(())
}
