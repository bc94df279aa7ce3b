//! Collections: a command is planned into items (`collect::plan`), each item produced on a
//! blocking thread and uploaded as it is produced, and the collection's `collection_done`
//! queued in the control stream's outbox.

use super::{lock, release_freed_memory, Agent};
use crate::collect::{plan, PlannedItem};
use crate::transport::upload::{self, Sealed};
use anyhow::Result;
use cairn_protocol::manifest::{CollectRequest, HostIdentity};
use cairn_protocol::wire::Message;
use std::sync::Arc;
use std::time::Instant;

/// Run one collection to its end and queue its `collection_done`.
pub async fn run_collection(agent: Arc<Agent>, req: CollectRequest) {
    let started = Instant::now();
    lock(&agent.running).insert(req.collection_id.clone());
    let (items, errors) = collect_and_upload(&agent, &req).await;
    // The pipeline's chunk buffers (tens of MiB during a capture) are not needed between
    // collections.
    release_freed_memory();
    tracing::info!(
        "collection {} finished in {:.1}s: {} item(s), {} error(s)",
        req.collection_id,
        started.elapsed().as_secs_f64(),
        items.len(),
        errors.len()
    );
    agent.outbox.push(Message::CollectionDone {
        collection_id: req.collection_id.clone(),
        items,
        errors,
    });
    lock(&agent.running).remove(&req.collection_id);
    lock(&agent.planned).remove(&req.collection_id);
    lock(&agent.sealed).remove(&req.collection_id);
}

/// Hash, compress and upload one planned item; returns once the collector sealed it.
pub async fn send_item(agent: &Agent, item: PlannedItem, host: &HostIdentity) -> Result<Sealed> {
    let header = item.header.clone();
    let host = host.clone();
    let pipeline = agent.options.pipeline.clone();
    upload::send_item(
        &agent.connector,
        &agent.spool,
        &agent.pause,
        header,
        move |sink| item.produce(&host, &pipeline, sink),
    )
    .await
}

/// The items' ids and the collection's errors.
async fn collect_and_upload(
    agent: &Arc<Agent>,
    req: &CollectRequest,
) -> (Vec<String>, Vec<String>) {
    let mut opts = agent.options.clone();
    if let (Some(j), Some(rec)) = (opts.journal.as_mut(), agent.recorder.get()) {
        j.recorder = Some(rec.clone());
    }
    if let (true, Some(id)) = (req.profile == "last-breath", &req.container_id) {
        let a = agent.clone();
        let id = id.clone();
        opts.writable_layer =
            tokio::task::spawn_blocking(move || super::last_breath::writable_layer(&a, &id))
                .await
                .ok();
    }
    let r = req.clone();
    let planned = tokio::task::spawn_blocking(move || {
        let host =
            crate::identity::host_identity_in(&opts.volatile.metadata, &opts.volatile.host_root);
        (plan(&r, &opts), host)
    })
    .await;
    let (plan, host) = match planned {
        Ok(p) => p,
        Err(e) => return (Vec::new(), vec![format!("capture task failed: {e}")]),
    };
    let mut errors = plan.errors;
    let mut items = Vec::new();
    lock(&agent.planned).insert(
        req.collection_id.clone(),
        plan.items
            .iter()
            .map(|i| i.header.item_id.clone())
            .collect(),
    );
    for item in plan.items {
        let name = item.header.source.name.clone();
        items.push(item.header.item_id.clone());
        let item_id = item.header.item_id.clone();
        match send_item(agent, item, &host).await {
            Ok(s) => {
                lock(&agent.sealed)
                    .entry(req.collection_id.clone())
                    .or_default()
                    .push(item_id);
                tracing::info!(
                    "item {name} sealed: {} ({} chunks sent, {} resume(s))",
                    s.sha256,
                    s.chunks_sent,
                    s.resumed
                )
            }
            Err(e) => {
                tracing::warn!("item {name}: {e:#}");
                errors.push(format!("{name}: {e:#}"));
            }
        }
    }
    (items, errors)
}
