//! Enrollment: a connection without a client certificate may send one `enroll` with a token
//! and a CSR; it gets back a certificate signed by the collector's CA, and a new agent id.

use super::refuse;
use crate::state::State;
use anyhow::{Context, Result};
use cairn_protocol::wire::aio::{read_frame, write_message};
use cairn_protocol::wire::{Frame, Message};
use std::sync::Arc;
use std::time::Duration;

pub(super) async fn enrollment(state: Arc<State>, conn: quinn::Connection) -> Result<()> {
    let (mut send, mut recv) = conn.accept_bi().await?;
    let msg = tokio::time::timeout(Duration::from_secs(30), read_frame(&mut recv)).await??;
    let Some(Frame::Message(Message::Enroll {
        token,
        csr_pem,
        hostname,
        host,
        new_identity,
    })) = msg
    else {
        return refuse(
            send,
            "certificate_required",
            "this connection has no client certificate; it can only enroll".into(),
        )
        .await;
    };
    let reply = match state.meta().consume_enroll_token(&token)? {
        Err(refusal) => {
            tracing::warn!(
                "enrollment refused for {hostname:?} from {}: {refusal}",
                conn.remote_address()
            );
            Message::error("enrollment_refused", refusal.to_string())
        }
        Ok(()) => {
            // The same machine enrolled again (a reinstall, a wiped state directory) keeps its
            // host id and its history; its old certificate stops working.
            let known = match (&host, new_identity) {
                (Some(h), false) => match &h.machine_id {
                    Some(mid) => state
                        .meta()
                        .enrolled_host_of_machine(mid, h.instance_id())?,
                    None => None,
                },
                _ => None,
            };
            if let Some(id) = known
                .as_deref()
                .filter(|id| state.sessions.is_connected(id))
            {
                // A live agent holds that identity: a second agent, or someone claiming the
                // machine id, must not take it over.
                tracing::warn!(
                    "enrollment of {hostname:?} from {} refused: host {id} has the same machine id and is connected",
                    conn.remote_address()
                );
                let refusal = Message::error(
                    "enrollment_refused",
                    format!("host {id} has this machine id and its agent is connected now: stop that agent and enroll again to take over its identity, or enroll with --new-identity for a second host"),
                );
                write_message(&mut send, refusal).await?;
                send.finish()?;
                let _ = tokio::time::timeout(Duration::from_secs(5), conn.closed()).await;
                return Ok(());
            }
            let agent_id = known
                .clone()
                .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
            match state.authority.sign_agent(&csr_pem, &agent_id) {
                Ok(cert_pem) => {
                    let fp = crate::authority::pem_fingerprint(&cert_pem)
                        .context("fingerprinting the new agent certificate")?;
                    let meta = state.meta();
                    if known.is_some() {
                        meta.reenroll_host(&agent_id, &hostname, &fp)?;
                        tracing::info!(
                            "{hostname} enrolled again as agent {agent_id} (same machine id); its previous certificate is no longer accepted"
                        );
                    } else {
                        meta.insert_enrolled_host(&agent_id, &hostname, &fp)?;
                        tracing::info!("enrolled {hostname} as agent {agent_id}");
                    }
                    if let Some(h) = &host {
                        meta.set_enrolled_identity(&agent_id, h)?;
                    }
                    Message::Enrolled {
                        agent_id,
                        cert_pem,
                        ca_pem: state.ca_pem.clone(),
                        evidence_recipient: Some(state.evidence_key.recipient()),
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
