//! The control stream: `hello` (identity, protocol version, the collections the agent still
//! has), then heartbeats from the agent and commands to it. Commands wait in the store; the
//! session's bell rings when one is queued, and every `requested` command not yet sent on this
//! connection goes out — containment actions before collections. The agent's `contained`
//! answers are recorded and acknowledged (`contained_ack`), so a lost answer is sent again.
//!
//! Every store call runs on a blocking thread (`super::blocking`): a thousand control loops
//! doing SQLite on the async workers starve the QUIC endpoint, and its connections time out.

use super::{blocking, refuse};
use crate::error::Error;
use crate::state::State;
use anyhow::Result;
use cairn_protocol::wire::aio::{read_frame, write_message};
use cairn_protocol::wire::{Frame, Message};
use quinn::{RecvStream, SendStream};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

pub(super) async fn control(
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
    let (st, hid, h, active) = (
        state.clone(),
        host_id.to_string(),
        host.clone(),
        active_collections.clone(),
    );
    blocking(move || {
        // Groups joined and left since the identity the collector had: the host's membership
        // history. Losing it is said, and does not refuse the agent.
        let now = time::OffsetDateTime::now_utc().unix_timestamp_nanos() as i64;
        if let Err(e) = crate::fleet::history::record(st.meta(), &hid, &h, &st.fleet.peering, now) {
            tracing::warn!("fleet: membership history of {hid} not recorded: {e}");
        }
        st.meta().update_host_identity(&hid, &h, &agent_version)?;
        if let Some(active) = &active {
            st.collections.fail_lost(&hid, active)?;
        }
        Ok(())
    })
    .await?;
    write_message(
        &mut send,
        Message::Welcome {
            agent_id: host_id.to_string(),
            collector_version: crate::tool_version(),
            server_time: cairn_protocol::rfc3339::now(),
            evidence_recipient: Some(state.evidence_key.recipient()),
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
    let mut sent = Sent::default();
    let result = control_loop(&state, host_id, &bell, &mut send, &mut recv, &mut sent).await;
    state.sessions.unregister(host_id, token);
    // Slots held by commands this connection sent and its agent never accepted come back.
    let unaccepted: Vec<String> = sent.unaccepted().cloned().collect();
    state.collections.unsent(&unaccepted);
    tracing::info!("agent {host_id} disconnected");
    result
}

/// Collections and containment actions sent on this connection, apart: a containment
/// action is never accepted as a collection is, and must not count as one in flight.
#[derive(Default)]
struct Sent {
    collections: HashSet<String>,
    containments: HashSet<String>,
    accepted: HashSet<String>,
}

impl Sent {
    fn unaccepted(&self) -> impl Iterator<Item = &String> {
        self.collections.difference(&self.accepted)
    }
}

async fn control_loop(
    state: &Arc<State>,
    host_id: &str,
    bell: &tokio::sync::Notify,
    send: &mut SendStream,
    recv: &mut RecvStream,
    sent: &mut Sent,
) -> Result<()> {
    send_pending(state, host_id, send, sent).await?;
    loop {
        tokio::select! {
            frame = read_frame(recv) => {
                let Some(frame) = frame? else { return Ok(()) };
                let status = match &frame {
                    Frame::Message(Message::Heartbeat { status, .. }) => status.clone(),
                    _ => None,
                };
                seen(state, host_id, status).await;
                match frame {
                    Frame::Message(Message::Heartbeat { .. }) => {
                        write_message(send, Message::HeartbeatAck { time: cairn_protocol::rfc3339::now() }).await?;
                    }
                    Frame::Message(Message::CommandAccepted { collection_id }) => {
                        let (st, hid, id) = (state.clone(), host_id.to_string(), collection_id.clone());
                        blocking(move || st.collections.accepted(&hid, &id)).await?;
                        sent.accepted.insert(collection_id);
                    }
                    Frame::Message(Message::CollectionDone { collection_id, items, errors }) => {
                        let (st, hid, id) = (state.clone(), host_id.to_string(), collection_id.clone());
                        let finished = tokio::task::spawn_blocking(move || st.collections.finish(&hid, &id, &items, &errors)).await?;
                        match finished {
                            Ok(()) => {}
                            // The agent named a collection that is not its own: say so, go on.
                            Err(e @ (Error::NotFound(_) | Error::Conflict(_))) => {
                                tracing::warn!("collection_done from {host_id}: {e}");
                                write_message(send, Message::error("bad_request", e.to_string())).await?;
                            }
                            Err(e) => return Err(e.into()),
                        }
                    }
                    Frame::Message(Message::Contained(o)) => {
                        let (st, hid, id) = (state.clone(), host_id.to_string(), o.id.clone());
                        let recorded = tokio::task::spawn_blocking(move || st.containments.outcome(&hid, &o)).await?;
                        match recorded {
                            Ok(()) => write_message(send, Message::ContainedAck { id }).await?,
                            Err(e @ (Error::NotFound(_) | Error::Conflict(_))) => {
                                tracing::warn!("contained from {host_id}: {e}");
                                write_message(send, Message::error("bad_request", e.to_string())).await?;
                            }
                            Err(e) => return Err(e.into()),
                        }
                    }
                    Frame::Message(Message::LastBreath(call)) => {
                        let (st, hid) = (state.clone(), host_id.to_string());
                        let id = call.collection_id.clone();
                        let asked = tokio::task::spawn_blocking(move || last_breath(&st, &hid, &call)).await?;
                        match asked {
                            Ok(()) => {}
                            Err(e @ (Error::NotFound(_) | Error::Conflict(_) | Error::Invalid(_))) => {
                                tracing::warn!("last breath from {host_id} refused: {e}");
                                write_message(send, Message::LastBreathRefused { collection_id: id, reason: e.to_string() }).await?;
                            }
                            Err(e) => return Err(e.into()),
                        }
                    }
                    Frame::Message(m) => {
                        write_message(send, Message::error("bad_request", format!("unexpected {} on the control stream", m.name()))).await?;
                    }
                    Frame::Chunk(_) => anyhow::bail!("chunk on the control stream"),
                }
            }
            _ = bell.notified() => send_pending(state, host_id, send, sent).await?,
        }
    }
}

/// A marked host or container going away: its `last-breath` collection is requested like
/// any other (custody starts with the call), and the session's bell sends it.
fn last_breath(
    state: &State,
    host_id: &str,
    call: &cairn_protocol::containment::LastBreathCall,
) -> crate::error::Result<()> {
    let req = state.containments.last_breath(host_id, call)?;
    let host = state
        .meta()
        .get_host(host_id)?
        .ok_or_else(|| Error::NotFound(format!("host {host_id}")))?;
    state.collections.request(
        &host,
        &req,
        serde_json::json!({"last_breath": {"event": call.event, "target": call.target,
            "mark_id": call.mark_id, "budget_secs": call.budget_secs, "detail": call.detail,
            "agent_time": call.at}}),
    )?;
    Ok(())
}

/// The host was heard from (with its status, on a heartbeat). The agent stays connected while
/// the collector's disk is full: its status waits, its session does not end.
async fn seen(
    state: &Arc<State>,
    host_id: &str,
    status: Option<cairn_protocol::wire::AgentStatus>,
) {
    let (st, hid) = (state.clone(), host_id.to_string());
    let done = tokio::task::spawn_blocking(move || {
        if let Err(e) = st.meta().touch_host(&hid) {
            tracing::debug!("host {hid}: last seen not recorded: {e}");
        }
        if let Some(s) = status {
            if let Err(e) = st.meta().set_host_status(&hid, &s) {
                tracing::debug!("host {hid}: status not recorded: {e}");
            }
        }
    })
    .await;
    if let Err(e) = done {
        tracing::debug!("host {host_id}: last seen not recorded: {e}");
    }
}

async fn send_pending(
    state: &Arc<State>,
    host_id: &str,
    send: &mut SendStream,
    sent: &mut Sent,
) -> Result<()> {
    // Containment first: an isolation must not wait behind collections.
    let (st, hid) = (state.clone(), host_id.to_string());
    for req in blocking(move || st.containments.sendable(&hid)).await? {
        // Sent on an earlier connection and never answered: sent again (enforcing is idempotent).
        if !sent.containments.insert(req.id.clone()) {
            continue;
        }
        write_message(send, Message::Contain(Box::new(req.clone()))).await?;
        let (st, hid) = (state.clone(), host_id.to_string());
        blocking(move || st.containments.sent(&hid, &req.id)).await?;
    }
    let in_flight: HashSet<String> = sent.unaccepted().cloned().collect();
    let (st, hid) = (state.clone(), host_id.to_string());
    for req in blocking(move || st.collections.sendable(&hid, &in_flight)).await? {
        if !sent.collections.insert(req.collection_id.clone()) {
            continue;
        }
        write_message(send, Message::Collect(Box::new(req.clone()))).await?;
        let (st, hid) = (state.clone(), host_id.to_string());
        blocking(move || st.collections.command_sent(&hid, &req)).await?;
    }
    Ok(())
}
