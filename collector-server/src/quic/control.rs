//! The control stream: `hello` (identity, protocol version, the collections the agent still
//! has), then heartbeats from the agent and commands to it. Commands wait in the store; the
//! session's bell rings when one is queued, and every `requested` command not yet sent on this
//! connection goes out.

use super::refuse;
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
    state
        .meta()
        .update_host_identity(host_id, &host, &agent_version)?;
    if let Some(active) = &active_collections {
        state.collections.fail_lost(host_id, active)?;
    }
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
    let mut accepted: HashSet<String> = HashSet::new();
    send_pending(state, host_id, send, &mut sent, &accepted).await?;
    loop {
        tokio::select! {
            frame = read_frame(recv) => {
                let Some(frame) = frame? else { return Ok(()) };
                // The agent stays connected while the collector's disk is full: its status
                // waits, its session does not end.
                if let Err(e) = state.meta().touch_host(host_id) {
                    tracing::debug!("host {host_id}: last seen not recorded: {e}");
                }
                match frame {
                    Frame::Message(Message::Heartbeat { status, .. }) => {
                        if let Some(s) = status {
                            if let Err(e) = state.meta().set_host_status(host_id, &s) {
                                tracing::debug!("host {host_id}: status not recorded: {e}");
                            }
                        }
                        write_message(send, Message::HeartbeatAck { time: cairn_protocol::rfc3339::now() }).await?;
                    }
                    Frame::Message(Message::CommandAccepted { collection_id }) => {
                        state.collections.accepted(host_id, &collection_id)?;
                        accepted.insert(collection_id);
                    }
                    Frame::Message(Message::CollectionDone { collection_id, items, errors }) => {
                        match state.collections.finish(host_id, &collection_id, &items, &errors) {
                            Ok(()) => {}
                            // The agent named a collection that is not its own: say so, go on.
                            Err(e @ (Error::NotFound(_) | Error::Conflict(_))) => {
                                tracing::warn!("collection_done from {host_id}: {e}");
                                write_message(send, Message::error("bad_request", e.to_string())).await?;
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
            _ = bell.notified() => send_pending(state, host_id, send, &mut sent, &accepted).await?,
        }
    }
}

async fn send_pending(
    state: &Arc<State>,
    host_id: &str,
    send: &mut SendStream,
    sent: &mut HashSet<String>,
    accepted: &HashSet<String>,
) -> Result<()> {
    let in_flight: HashSet<String> = sent.difference(accepted).cloned().collect();
    for req in state.collections.sendable(host_id, &in_flight)? {
        if !sent.insert(req.collection_id.clone()) {
            continue;
        }
        write_message(send, Message::Collect(Box::new(req.clone()))).await?;
        state.collections.command_sent(host_id, &req)?;
    }
    Ok(())
}
