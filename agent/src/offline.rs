//! `cairn-agent collect --out DIR`: a collection written to a directory, for air-gapped hosts.
//!
//! ```text
//! DIR/collection.json                 the CollectionRecord (request, host, items, errors)
//! DIR/items/<item id>.cairn           the item's frames: item_begin, chunks, item_end — exactly
//!                                     what an upload sends, so `cairn import` replays it
//! DIR/items/<item id>.manifest.json   the manifest, for people and other tools
//! ```

use crate::collect::{plan, CollectOptions};
use anyhow::{bail, Context, Result};
use cairn_protocol::manifest::{CollectRequest, CollectionRecord, CollectionStatus, ItemStatus};
use cairn_protocol::wire::{Frame, Message};
use std::io::Write;
use std::path::Path;

pub struct OfflineSummary {
    pub record: CollectionRecord,
    pub items: Vec<(String, String, u64, String)>,
}

/// Bytes read so far: a bar with rate and time left when the size is known (a disk image),
/// a spinner otherwise.
fn progress_bar(h: &cairn_protocol::manifest::ItemHeader, show: bool) -> indicatif::ProgressBar {
    let size = h.source.details.get("size").and_then(|v| v.as_u64());
    let bar = match size {
        Some(n) if h.kind == cairn_protocol::manifest::ItemKind::DiskImage => {
            let b = indicatif::ProgressBar::new(n);
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "{msg} [{bar:40}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
            ) {
                b.set_style(style.progress_chars("=> "));
            }
            b
        }
        _ => indicatif::ProgressBar::new_spinner(),
    };
    if !show {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    bar
}

pub fn collect_to_dir(
    req: &CollectRequest,
    opts: &CollectOptions,
    out: &Path,
    progress: bool,
) -> Result<OfflineSummary> {
    if out.join("collection.json").exists() {
        bail!(
            "{} already holds a collection; choose an empty directory",
            out.display()
        );
    }
    let items_dir = out.join("items");
    std::fs::create_dir_all(&items_dir)
        .with_context(|| format!("cannot create {}", items_dir.display()))?;
    let started = cairn_protocol::now_rfc3339();
    let host = crate::identity::host_identity(&opts.volatile.metadata);
    let plan = plan(req, opts);
    let mut errors = plan.errors;
    let mut ids = Vec::new();
    let mut summary = Vec::new();
    let mut all_complete = true;
    for item in plan.items {
        let id = item.header.item_id.clone();
        let name = item.header.source.name.clone();
        let path = items_dir.join(format!("{id}.cairn"));
        let mut f = std::io::BufWriter::new(
            std::fs::File::create(&path)
                .with_context(|| format!("cannot create {}", path.display()))?,
        );
        Frame::Message(Message::ItemBegin(Box::new(item.header.clone()))).write_to(&mut f)?;
        let mut write_err = None;
        let bar = progress_bar(&item.header, progress);
        bar.set_message(name.clone());
        let manifest = item.produce(&host, &opts.pipeline, |c| {
            let raw_len = u64::from(c.header.raw_len);
            match Frame::Chunk(c).write_to(&mut f) {
                Ok(()) => {
                    bar.inc(raw_len);
                    true
                }
                Err(e) => {
                    write_err = Some(e);
                    false
                }
            }
        });
        bar.finish_and_clear();
        if let Some(e) = write_err {
            bail!("cannot write {}: {e}", path.display());
        }
        let Some(m) = manifest else {
            bail!("item {name} was abandoned")
        };
        Frame::Message(Message::ItemEnd(Box::new(m.clone()))).write_to(&mut f)?;
        f.flush()?;
        f.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        std::fs::write(
            items_dir.join(format!("{id}.manifest.json")),
            serde_json::to_vec_pretty(&m)?,
        )?;
        if m.status != ItemStatus::Complete {
            all_complete = false;
            if let Some(e) = &m.error {
                errors.push(format!("{name}: {e}"));
            }
        }
        summary.push((id.clone(), name, m.raw_len, m.sha256.clone()));
        ids.push(id);
    }
    let status = if errors.is_empty() && all_complete {
        CollectionStatus::Sealed
    } else if ids.is_empty() {
        CollectionStatus::Failed
    } else {
        CollectionStatus::Partial
    };
    let record = CollectionRecord {
        request: req.clone(),
        host,
        started,
        finished: cairn_protocol::now_rfc3339(),
        items: ids,
        status,
        errors,
        tool: crate::tool_version(),
    };
    std::fs::write(
        out.join("collection.json"),
        serde_json::to_vec_pretty(&record)?,
    )?;
    Ok(OfflineSummary {
        record,
        items: summary,
    })
}
