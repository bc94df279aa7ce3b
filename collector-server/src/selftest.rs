//! The collector's side of the agents' readiness self-test: storing readiness reports, and the
//! evidence round trip — a `selftest` collection opened for the probe item, which arrives on a
//! normal item stream, and a read-back of every stored chunk once it is sealed. Only each
//! host's latest self-test collection is kept, and analysts' collection lists leave it out.

use crate::quic::refuse;
use crate::server::State;
use anyhow::Result;
use cairn_protocol::manifest::CollectRequest;
use cairn_protocol::readiness::{SelftestReport, SCHEMA_VERSION};
use cairn_protocol::wire::aio::{read_frame, write_message};
use cairn_protocol::wire::{Frame, Message};
use quinn::{RecvStream, SendStream};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

/// More checks than any agent runs: a report beyond it is refused, not stored.
const MAX_CHECKS: usize = 256;

/// How long the agent has to upload the probe item and ask for the read-back.
const ROUND_TRIP_LIMIT: Duration = Duration::from_secs(120);

pub async fn readiness_stream(
    state: Arc<State>,
    host_id: &str,
    report: SelftestReport,
    mut send: SendStream,
) -> Result<()> {
    if report.schema_version > SCHEMA_VERSION
        || report.checks.is_empty()
        || report.checks.len() > MAX_CHECKS
    {
        return refuse(
            send,
            "bad_request",
            format!(
                "readiness report of schema {} with {} checks; this collector reads schema {SCHEMA_VERSION} with 1 to {MAX_CHECKS} checks",
                report.schema_version,
                report.checks.len()
            ),
        )
        .await;
    }
    let st = state.clone();
    let hid = host_id.to_string();
    let status = report.status;
    let previous =
        tokio::task::spawn_blocking(move || st.db().insert_readiness(&hid, &report)).await??;
    if previous.is_some_and(|p| p != status) {
        tracing::info!(
            "host {host_id} readiness changed: {} → {}",
            previous.map(|p| p.as_str()).unwrap_or("none"),
            status.as_str()
        );
    }
    write_message(&mut send, Message::ReadinessAck { previous }).await?;
    let _ = send.finish();
    let _ = send.stopped().await;
    Ok(())
}

fn valid_id(s: &str) -> bool {
    uuid::Uuid::parse_str(s).is_ok()
}

pub async fn round_trip_stream(
    state: Arc<State>,
    host_id: &str,
    collection_id: String,
    mut send: SendStream,
    mut recv: RecvStream,
) -> Result<()> {
    if !valid_id(&collection_id) {
        return refuse(
            send,
            "bad_request",
            format!("self-test collection id {collection_id:?} is not a UUID"),
        )
        .await;
    }
    let actor = format!("agent:{host_id}");
    let req = CollectRequest {
        collection_id: collection_id.clone(),
        profile: "selftest".into(),
        reason: "readiness self-test: evidence round trip".into(),
        requested_by: actor.clone(),
        paths: Vec::new(),
        pid: None,
        container_id: None,
        devices: Vec::new(),
    };
    state
        .db()
        .insert_collection(host_id, &req, "running", "selftest")?;
    state.ctx.custody.append(
        state.db(),
        &collection_id,
        &actor,
        "selftest_started",
        json!({"host_id": host_id}),
    )?;
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
            state.db().set_collection_status(
                &collection_id,
                "failed",
                Some(&["the agent did not finish the self-test round trip".to_string()]),
            )?;
            anyhow::bail!("self-test {collection_id}: the agent went away before the read-back");
        }
        Ok(Ok(Some(other))) => {
            return refuse(
                send,
                "bad_request",
                format!("expected selftest_read_back, got {other:?}"),
            )
            .await
        }
    };
    let st = state.clone();
    let cid = collection_id.clone();
    let iid = item_id.clone();
    let hid = host_id.to_string();
    let reply = tokio::task::spawn_blocking(move || read_back(&st, &hid, &cid, &iid)).await??;
    write_message(&mut send, reply).await?;
    let _ = send.finish();
    let _ = send.stopped().await;
    Ok(())
}

/// Re-read every stored chunk of the probe item (through the custody verification, which
/// also checks the collection's chain), close the collection, prune older ones.
fn read_back(state: &State, host_id: &str, collection_id: &str, item_id: &str) -> Result<Message> {
    let item = state.db().get_item(item_id)?;
    let belongs = item
        .as_ref()
        .is_some_and(|i| i.collection_id == collection_id);
    let report = if belongs {
        Some(
            state
                .ctx
                .custody
                .verify(&state.ctx.db, &state.ctx.store, collection_id)?,
        )
    } else {
        None
    };
    let (ok, error) = match &report {
        Some(r) if r.ok && r.items_checked == 1 => (true, None),
        Some(r) if r.ok => (
            false,
            Some(format!(
                "{} sealed item(s) in the collection, expected 1",
                r.items_checked
            )),
        ),
        Some(r) => (false, r.error.clone()),
        None => (
            false,
            Some(format!(
                "item {item_id} is not in self-test collection {collection_id}"
            )),
        ),
    };
    let errors: Vec<String> = error.iter().cloned().collect();
    state.db().set_collection_status(
        collection_id,
        if ok { "sealed" } else { "failed" },
        Some(&errors),
    )?;
    state.ctx.custody.append(
        state.db(),
        collection_id,
        "collector",
        "selftest_read_back",
        json!({"item_id": item_id, "ok": ok, "error": error}),
    )?;
    if ok {
        for sha in state
            .db()
            .prune_selftest_collections(host_id, collection_id)?
        {
            let _ = std::fs::remove_file(state.ctx.store.path_of(&sha));
        }
    }
    Ok(Message::SelftestReadBackResult {
        item_id: item_id.to_string(),
        ok,
        sha256: item.and_then(|i| i.sha256).filter(|_| belongs),
        bytes_checked: report.map(|r| r.bytes_checked).unwrap_or(0),
        error,
    })
}
