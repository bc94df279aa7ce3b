//! The control stream: hello, heartbeats, commands, and messages that must arrive once.
//!
//! Each connection gets a control stream: hello, then heartbeats and commands. Messages put
//! in the [`Outbox`] (a finished collection's `collection_done`) are written on the current
//! control stream and kept until a heartbeat acknowledgment comes back after them (the stream
//! is ordered, so the collector has read them); a connection lost in between makes them go
//! out again. What a command makes the agent do is the [`ControlHandler`]'s business (the
//! daemon's); this module is the protocol only.

use super::connection::Connector;
use anyhow::{anyhow, bail, Result};
use cairn_protocol::manifest::{CollectRequest, HostIdentity};
use cairn_protocol::wire::aio::{read_frame, write_message};
use cairn_protocol::wire::{AgentStatus, Frame, Message};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, Notify};

/// What the agent behind a control stream says and does.
pub trait ControlHandler {
    /// The hello that opens each control stream.
    fn hello(&self) -> Message;
    /// The status sent with each periodic heartbeat.
    fn status(&self) -> AgentStatus;
    /// A collection command, already answered with `command_accepted`. It may come again
    /// after a reconnect.
    fn collect(&self, req: CollectRequest);
    /// Rung when the status changed in a way the collector should hear now, not at the next
    /// periodic heartbeat (uploads paused or going on again).
    fn status_bell(&self) -> Option<&Notify> {
        None
    }
    /// The collector's `welcome` (its evidence recipient, for offline collections).
    fn welcomed(&self, _welcome: &Message) {}
    /// A containment action (isolate, release, freeze, thaw, kill). Its outcome goes back as
    /// `contained` through the outbox; it may come again after a reconnect.
    fn contain(&self, req: cairn_protocol::containment::Request);
    /// The collector recorded the outcome `id`: it need not be sent again.
    fn contained_ack(&self, _id: &str) {}
    /// The collector will not run the last-breath collection the agent asked for.
    fn last_breath_refused(&self, _collection_id: &str, _reason: &str) {}
}

/// Messages for the collector that must not be lost with a connection.
#[derive(Default)]
pub struct Outbox {
    queue: Mutex<Vec<Message>>,
    bell: Notify,
}

impl Outbox {
    /// Queue `m` for the current control stream (or the next one).
    pub fn push(&self, m: Message) {
        self.lock().push(m);
        self.bell.notify_one();
    }

    /// What is queued and not yet acknowledged, oldest first.
    pub fn undelivered(&self) -> Vec<Message> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Message>> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The messages after the first `written`, which becomes the queue's length.
    fn unwritten(&self, written: &mut usize) -> Vec<Message> {
        let out = self.lock();
        let new: Vec<Message> = out.iter().skip(*written).cloned().collect();
        *written = out.len();
        new
    }

    /// Everything written before a heartbeat ack was read by the collector: forget it.
    fn acknowledged(&self, written: &mut usize) {
        let mut out = self.lock();
        let n = (*written).min(out.len());
        out.drain(..n);
        *written -= n;
    }
}

/// The hello of this agent: `active_collections` `None` for a probe, which the collector
/// answers without taking it for the agent's control session.
pub fn hello(host: HostIdentity, active_collections: Option<Vec<String>>) -> Message {
    Message::Hello {
        protocol_version: cairn_protocol::PROTOCOL_VERSION,
        agent_version: crate::tool_version(),
        host,
        active_collections,
    }
}

/// How a control session ended (always with an error): `welcomed` when the collector had
/// accepted its hello, so the caller's backoff starts over.
pub struct SessionEnd {
    pub welcomed: bool,
    pub error: anyhow::Error,
}

/// One control session on `conn`, until the stream or the connection ends.
pub async fn session(
    conn: &quinn::Connection,
    handler: &impl ControlHandler,
    outbox: &Outbox,
    heartbeat: Duration,
) -> SessionEnd {
    let mut welcomed = false;
    let error = match run_session(conn, handler, outbox, heartbeat, &mut welcomed).await {
        Ok(()) => anyhow!("control stream ended"),
        Err(e) => e,
    };
    SessionEnd { welcomed, error }
}

async fn run_session(
    conn: &quinn::Connection,
    handler: &impl ControlHandler,
    outbox: &Outbox,
    heartbeat: Duration,
    welcomed: &mut bool,
) -> Result<()> {
    let (mut send, mut recv) = conn.open_bi().await?;
    write_message(&mut send, handler.hello()).await?;
    match read_frame(&mut recv).await? {
        Some(Frame::Message(m @ Message::Welcome { .. })) => {
            if let Message::Welcome { agent_id, .. } = &m {
                tracing::info!("collector welcomed us as {agent_id}");
            }
            *welcomed = true;
            handler.welcomed(&m);
        }
        Some(Frame::Message(Message::Error { code, message })) => {
            bail!("collector refused hello ({code}): {message}")
        }
        other => bail!("unexpected answer to hello: {other:?}"),
    }
    let (mut incoming, _reader) = super::read_messages(recv, "control stream", 64);
    control_loop(handler, outbox, heartbeat, &mut send, &mut incoming).await
}

async fn control_loop(
    handler: &impl ControlHandler,
    outbox: &Outbox,
    heartbeat: Duration,
    send: &mut quinn::SendStream,
    incoming: &mut mpsc::Receiver<Result<Message>>,
) -> Result<()> {
    let mut heartbeat = tokio::time::interval(heartbeat);
    // Outbox messages written on this stream, awaiting a heartbeat ack.
    let mut written = 0usize;
    for m in outbox.unwritten(&mut written) {
        write_message(send, m).await?;
    }
    loop {
        tokio::select! {
            m = incoming.recv() => {
                match m.ok_or_else(|| anyhow!("control reader stopped"))?? {
                    Message::Collect(req) => {
                        write_message(send, Message::CommandAccepted { collection_id: req.collection_id.clone() }).await?;
                        handler.collect(*req);
                    }
                    Message::Contain(req) => handler.contain(*req),
                    Message::ContainedAck { id } => handler.contained_ack(&id),
                    Message::LastBreathRefused { collection_id, reason } => handler.last_breath_refused(&collection_id, &reason),
                    Message::HeartbeatAck { .. } => outbox.acknowledged(&mut written),
                    Message::Error { code, message } => tracing::warn!("collector error ({code}): {message}"),
                    other => tracing::warn!("ignoring unexpected {} on the control stream", other.name()),
                }
            }
            _ = outbox.bell.notified() => {
                for m in outbox.unwritten(&mut written) {
                    write_message(send, m).await?;
                }
                write_message(send, Message::Heartbeat { time: cairn_protocol::rfc3339::now(), status: None }).await?;
            }
            _ = async {
                match handler.status_bell() {
                    Some(bell) => bell.notified().await,
                    None => std::future::pending().await,
                }
            } => {
                write_message(send, Message::Heartbeat { time: cairn_protocol::rfc3339::now(), status: Some(handler.status()) }).await?;
            }
            _ = heartbeat.tick() => {
                write_message(send, Message::Heartbeat { time: cairn_protocol::rfc3339::now(), status: Some(handler.status()) }).await?;
            }
        }
    }
}

/// What a probe's hello round trip learned.
#[derive(Debug, Clone)]
pub struct Pong {
    pub rtt: Duration,
    /// The collector's clock when it answered (RFC 3339).
    pub server_time: String,
    /// Our clock half-way through the round trip, to compare with `server_time`.
    pub local_mid: time::OffsetDateTime,
    pub collector_version: String,
    /// The collector's age recipient for evidence, when it keeps evidence encrypted.
    pub evidence_recipient: Option<String>,
}

/// A hello round trip on a connection of its own, with a 10 s limit on each step: proves
/// enrollment, certificates and reachability.
pub async fn probe(connector: &Connector, host: HostIdentity) -> Result<Pong> {
    let limit = Duration::from_secs(10);
    let conn = tokio::time::timeout(limit, connector.connect_once())
        .await
        .map_err(|_| {
            anyhow!(
                "no QUIC handshake with the collector at {} within {} s (nothing answered on UDP)",
                connector.collector,
                limit.as_secs()
            )
        })??;
    let start = Instant::now();
    let local_start = time::OffsetDateTime::now_utc();
    let (mut send, mut recv) = conn.open_bi().await?;
    write_message(&mut send, hello(host, None)).await?;
    let reply = tokio::time::timeout(limit, read_frame(&mut recv)).await;
    let rtt = start.elapsed();
    let result = match reply {
        Ok(Ok(Some(Frame::Message(Message::Welcome {
            server_time,
            collector_version,
            evidence_recipient,
            ..
        })))) => Ok(Pong {
            rtt,
            server_time,
            local_mid: local_start + rtt / 2,
            collector_version,
            evidence_recipient,
        }),
        Ok(Ok(Some(Frame::Message(Message::Error { code, message })))) => {
            Err(anyhow!("collector refused us ({code}): {message}"))
        }
        Ok(Ok(_)) | Ok(Err(_)) => Err(anyhow!(
            "the collector closed the connection{}",
            conn.close_reason()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        )),
        Err(_) => Err(anyhow!("no answer from the collector within 10 s")),
    };
    conn.close(0u32.into(), b"probe done");
    result
}
