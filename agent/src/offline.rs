//! `cairn-agent collect --out DIR`: a collection written to a directory, for air-gapped hosts.
//!
//! ```text
//! DIR/collection.json                 the CollectionRecord (request, host, items, errors)
//! DIR/items/<item id>.cairn           the item's frames: item_begin, chunks, item_end — exactly
//!                                     what an upload sends, so `cairn import` replays it
//! DIR/items/<item id>.manifest.json   the manifest, for people and other tools
//! ```
//!
//! Encrypted (`--encrypt-to age1…`, `--encrypt`): each `<item id>.cairn` is written as
//! `<item id>.cairn.age`, the age encryption (X25519 recipient) of exactly the bytes the clear
//! file would hold; manifests stay clear so a responder sees what is there, and
//! `collection.json` names the recipient in `encrypted_to`. Only the holder of the matching
//! identity (the collector) can read the evidence.

use crate::collect::{plan, CollectOptions};
use crate::encryption::{MaybeEncrypted, Recipient};
use anyhow::{bail, Context, Result};
use cairn_protocol::manifest::{
    CollectRequest, CollectionRecord, CollectionStatus, HostIdentity, ItemStatus,
};
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

/// Where an offline collection goes, and whose it is.
pub struct Destination<'a> {
    /// The directory (created; must not hold a collection already).
    pub out: &'a Path,
    /// Progress bars on stderr.
    pub progress: bool,
    pub encrypt_to: Option<&'a Recipient>,
    /// The host the evidence is filed under, when it is not this one (a mounted image:
    /// [`crate::capture::disk::root_identity::identify`]).
    pub host: Option<HostIdentity>,
}

pub fn collect_to_dir(
    req: &CollectRequest,
    opts: &CollectOptions,
    to: Destination<'_>,
) -> Result<OfflineSummary> {
    let Destination {
        out,
        progress,
        encrypt_to,
        host,
    } = to;
    if out.join("collection.json").exists() {
        bail!(
            "{} already holds a collection; choose an empty directory",
            out.display()
        );
    }
    let items_dir = out.join("items");
    std::fs::create_dir_all(&items_dir)
        .with_context(|| format!("cannot create {}", items_dir.display()))?;
    let started = cairn_protocol::rfc3339::now();
    let host = host.unwrap_or_else(|| crate::identity::host_identity(&opts.volatile.metadata));
    let plan = plan(req, opts);
    let mut errors = plan.errors;
    let mut ids = Vec::new();
    let mut summary = Vec::new();
    let mut all_complete = true;
    for item in plan.items {
        let id = item.header.item_id.clone();
        let name = item.header.source.name.clone();
        let path = items_dir.join(match encrypt_to {
            Some(_) => format!("{id}.cairn.age"),
            None => format!("{id}.cairn"),
        });
        let file = std::io::BufWriter::new(
            std::fs::File::create(&path)
                .with_context(|| format!("cannot create {}", path.display()))?,
        );
        let mut f = MaybeEncrypted::new(file, encrypt_to)
            .with_context(|| format!("cannot encrypt {}", path.display()))?;
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
        let mut file = f
            .finish()
            .with_context(|| format!("cannot write {}", path.display()))?;
        file.flush()?;
        file.into_inner().map_err(|e| e.into_error())?.sync_all()?;
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
        finished: cairn_protocol::rfc3339::now(),
        items: ids,
        status,
        errors,
        tool: crate::tool_version(),
        encrypted_to: encrypt_to.map(|r| r.as_str().to_string()),
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

/// `cairn-agent unpack`: an item of an offline collection back to its raw bytes, each chunk
/// and the whole item checked against the manifest — for a responder who must look at a core
/// or an image before it reaches a collector.
pub fn unpack(dir: &Path, item: &str, to: &Path) -> Result<cairn_protocol::manifest::ItemManifest> {
    use cairn_protocol::manifest::ItemManifest;
    use sha2::{Digest, Sha256};
    let items = dir.join("items");
    // By id, or by the source name (`core.1234.nginx`).
    let mut chosen = None;
    for e in
        std::fs::read_dir(&items).with_context(|| format!("cannot read {}", items.display()))?
    {
        let p = e?.path();
        let Some(stem) = p
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".manifest.json"))
        else {
            continue;
        };
        let m: ItemManifest = serde_json::from_slice(&std::fs::read(&p)?)
            .with_context(|| format!("{} is not an item manifest", p.display()))?;
        if stem == item || m.header.source.name == item {
            chosen = Some(m);
            break;
        }
    }
    let Some(manifest) = chosen else {
        bail!(
            "no item {item:?} in {} (give an item id or a name as the collection lists it)",
            dir.display()
        );
    };
    let frames = items.join(format!("{}.cairn", manifest.header.item_id));
    let sealed = items.join(format!("{}.cairn.age", manifest.header.item_id));
    if !frames.exists() && sealed.exists() {
        bail!(
            "{} is encrypted to the collector's key: import the collection there (`cairn import {}`), or decrypt it with the collector's identity (`age -d -i KEY`)",
            sealed.display(),
            dir.display()
        );
    }
    let mut r = std::io::BufReader::new(
        std::fs::File::open(&frames)
            .with_context(|| format!("cannot open {}", frames.display()))?,
    );
    let mut out = std::io::BufWriter::new(
        std::fs::File::create(to).with_context(|| format!("cannot create {}", to.display()))?,
    );
    let mut whole = Sha256::new();
    let mut next = 0u64;
    while let Some(f) = Frame::read_from(&mut r).with_context(|| format!("{}", frames.display()))? {
        let Frame::Chunk(c) = f else { continue };
        if c.header.index != next {
            bail!(
                "{}: chunk {} where {next} was expected",
                frames.display(),
                c.header.index
            );
        }
        let want = manifest.chunk_sha256.get(next as usize).map(String::as_str);
        if want != Some(c.header.sha256_hex().as_str()) {
            bail!(
                "{}: chunk {next} does not match the manifest",
                frames.display()
            );
        }
        let raw = c
            .verify()
            .with_context(|| format!("{}: chunk {next}", frames.display()))?;
        whole.update(&raw);
        out.write_all(&raw)?;
        next += 1;
    }
    out.flush()?;
    let sha = hex::encode(whole.finalize());
    if next != manifest.chunk_count || sha != manifest.sha256 {
        bail!(
            "{}: {next} of {} chunks, SHA-256 {sha} where the manifest says {}",
            frames.display(),
            manifest.chunk_count,
            manifest.sha256
        );
    }
    Ok(manifest)
}
