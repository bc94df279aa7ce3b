//! The readiness self-test's streams: a `readiness` report (stored as history, answered with
//! the verdict before it), and the evidence round trip (`selftest_begin`, the probe item on an
//! ordinary item stream, `selftest_read_back` answered with what the collector re-read).

use super::{blocking, refuse};
use crate::error::Error;
use crate::state::State;
use anyhow::Result;
use cairn_protocol::readiness::SelftestReport;
use cairn_protocol::wire::aio::{read_frame, write_message};
use cairn_protocol::wire::{Frame, Message};
use quinn::{RecvStream, SendStream};
use std::sync::Arc;
use std::time::Duration;

/// How long the agent has to upload the probe item and ask for the read-back.
const ROUND_TRIP_LIMIT: Duration = Duration::from_secs(120);

pub(super) async fn readiness_stream(
    state: Arc<State>,
    host_id: &str,
    report: SelftestReport,
    mut send: SendStream,
) -> Result<()> {
    let st = state.clone();
    let hid = host_id.to_string();
    let recorded =
        tokio::task::spawn_blocking(move || crate::readiness::record(&st.stores, &hid, &report))
            .await?;
    let previous = match recorded {
        Ok(p) => p,
        Err(e @ Error::Invalid(_)) => return refuse(send, "bad_request", e.to_string()).await,
        Err(e) => return Err(e.into()),
    };
    write_message(&mut send, Message::ReadinessAck { previous }).await?;
    let _ = send.finish();
    let _ = send.stopped().await;
    Ok(())
}

pub(super) async fn round_trip_stream(
    state: Arc<State>,
    host_id: &str,
    collection_id: String,
    mut send: SendStream,
    mut recv: RecvStream,
) -> Result<()> {
    let (st, hid, cid) = (state.clone(), host_id.to_string(), collection_id.clone());
    let begun = tokio::task::spawn_blocking(move || {
        crate::readiness::begin_round_trip(&st.stores, &st.custody, &hid, &cid)
    })
    .await?;
    match begun {
        Ok(()) => {}
        Err(e @ Error::Invalid(_)) => return refuse(send, "bad_request", e.to_string()).await,
        Err(e) => return Err(e.into()),
    }
    write_message(
        &mut send,
        Message::SelftestReady {
            collection_id: collection_id.clone(),
        },
    )
    .await?;
    let item_id = match tokio::time::timeout(ROUND_TRIP_LIMIT, read_frame(&mut recv)).await {
        Ok(Ok(Some(Frame::Message(Message::SelftestReadBack { item_id })))) => item_id,
        Ok(Ok(None)) | Ok(Err(_)) | Err(_) => {
            let (st, cid) = (state.clone(), collection_id.clone());
            blocking(move || crate::readiness::abandon_round_trip(&st.stores, &cid)).await?;
            anyhow::bail!("self-test {collection_id}: the agent went away before the read-back");
        }
        Ok(Ok(Some(other))) => {
            let what = match &other {
                Frame::Message(m) => m.name(),
                Frame::Chunk(_) => "a chunk",
            };
            return refuse(
                send,
                "bad_request",
                format!("expected selftest_read_back, got {what}"),
            )
            .await;
        }
    };
    let (st, hid) = (state.clone(), host_id.to_string());
    let reply = blocking(move || {
        crate::readiness::read_back(&st.stores, &st.custody, &hid, &collection_id, &item_id)
    })
    .await?;
    write_message(&mut send, reply).await?;
    let _ = send.finish();
    let _ = send.stopped().await;
    Ok(())
}
