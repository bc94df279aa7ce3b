//! `cairn-collector migrate --to postgres://… [--blobs s3://…]`: move a data directory's
//! embedded stores (SQLite, the chunk directory, the head log) onto the shared engines, then
//! prove nothing was lost: every collection's custody is verified on the target (chain, heads,
//! completeness, every stored byte re-hashed) before the data directory is switched over.
//!
//! The source is only read. The target's database must be empty; chunks already in the bucket
//! (an interrupted migration run again) are skipped, not rewritten.

use crate::custody::Custody;
use crate::datadir::{Backends, DataDir};
use crate::metrics::Metrics;
use crate::storage::head_file::HeadFile;
use crate::storage::{BlobStore, CustodyStore, HeadStore, Stores};
use anyhow::{bail, Context, Result};
use std::path::Path;
use std::sync::Arc;

/// What a migration did.
#[derive(Debug, serde::Serialize)]
pub struct Report {
    pub tables: Vec<(String, u64)>,
    pub chunks_copied: u64,
    pub chunks_present: u64,
    pub bytes_copied: u64,
    pub heads_published: u64,
    pub collections_verified: u64,
    pub collections_failed: Vec<(String, String)>,
    /// `collector.toml` now names the targets.
    pub switched: bool,
}

/// Every file under `chunks/ab/<sha256>`, as (hash, path).
fn chunk_files(root: &Path) -> Result<Vec<(String, std::path::PathBuf)>> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(root) else {
        return Ok(out);
    };
    for shard in rd.flatten().filter(|e| e.path().is_dir()) {
        for f in std::fs::read_dir(shard.path())?.flatten() {
            let name = f.file_name().to_string_lossy().into_owned();
            if crate::storage::blobs::check_key(&name).is_ok() {
                out.push((name, f.path()));
            }
        }
    }
    out.sort();
    Ok(out)
}

pub fn migrate(data: &DataDir, target: &Backends, progress: &dyn Fn(&str)) -> Result<Report> {
    data.check_private()?;
    if target.database.is_none() && target.blobs.is_none() {
        bail!("nothing to migrate to: give --to postgres://… and/or --blobs s3://…");
    }
    let current = data.config()?;
    if current.database.is_some() || current.blobs.is_some() {
        bail!(
            "{} already names shared back ends in collector.toml: migrate copies the embedded ones (cairn.db, chunks/), which this data directory no longer uses",
            data.root.display()
        );
    }
    let source_db = data.path("cairn.db");
    let source_meta = Arc::new(data.open_db()?);
    let source_heads = data.open_heads(source_meta.as_ref())?;
    let metrics = Arc::new(Metrics::default());
    let mut report = Report {
        tables: Vec::new(),
        chunks_copied: 0,
        chunks_present: 0,
        bytes_copied: 0,
        heads_published: 0,
        collections_verified: 0,
        collections_failed: Vec::new(),
        switched: false,
    };

    // Metadata.
    let meta: Arc<dyn crate::storage::MetadataStore> = match target.database.as_deref() {
        Some(url) => {
            progress("copying the metadata database");
            let pg = crate::storage::postgres::Postgres::connect(url)
                .with_context(|| format!("--to {}", crate::datadir::redact_url(url)))?;
            report.tables = pg.copy_from_sqlite(&source_db)?;
            Arc::new(pg)
        }
        None => source_meta.clone(),
    };

    // Evidence bytes and the custody heads.
    let (blobs, heads): (Arc<dyn BlobStore>, Arc<dyn HeadStore>) = match target.blobs.as_deref() {
        Some(_) => {
            let (blobs, s3) = data.open_blob_store(target, true, &metrics)?;
            let s3 = s3.context("the object store")?;
            let files = chunk_files(&data.chunks())?;
            let total = files.len();
            for (n, (sha, path)) in files.into_iter().enumerate() {
                if blobs.exists(&sha)? {
                    report.chunks_present += 1;
                } else {
                    let payload = std::fs::read(&path)
                        .with_context(|| format!("reading {}", path.display()))?;
                    blobs.put(&sha, &payload)?;
                    report.chunks_copied += 1;
                    report.bytes_copied += payload.len() as u64;
                }
                if (n + 1) % 256 == 0 || n + 1 == total {
                    progress(&format!("chunks: {} of {total}", n + 1));
                }
            }
            // Heads: the newest of every chain, as the head log has it (not the database: the
            // log is what proves the database was not truncated).
            for (chain, _, _, _) in source_meta.custody_tails()? {
                if let Some(head) = source_heads.latest(&chain)? {
                    if s3.latest(&chain)?.is_none_or(|h| h.seq < head.seq) {
                        s3.publish(&head)?;
                        report.heads_published += 1;
                    }
                }
            }
            (blobs, s3)
        }
        None => (
            Arc::new(crate::storage::chunk_dir::ChunkDir::new(
                data.chunks(),
                true,
            )),
            Arc::new(HeadFile::open(&data.path(crate::datadir::HEADS), false)?),
        ),
    };

    // Proof: every collection verifies on the target, through the target's stores only.
    let stores = Stores {
        meta: meta.clone(),
        // Reads chunks stored in clear and encrypted at rest alike.
        blobs: Arc::new(crate::storage::encrypted_blobs::EncryptedBlobs::new(
            blobs,
            Arc::new(data.evidence_key()?),
        )),
        heads,
        scratch: data.scratch()?,
        metrics,
    };
    let custody = Custody::new(data.custody_key()?, stores);
    let chains = meta.custody_tails()?;
    let total = chains.len();
    for (n, (chain, _, _, _)) in chains.into_iter().enumerate() {
        let r = custody
            .verify(&chain)
            .with_context(|| format!("verifying {chain}"))?;
        if r.ok {
            report.collections_verified += 1;
        } else {
            report
                .collections_failed
                .push((chain, r.error.unwrap_or_else(|| "failed".into())));
        }
        if (n + 1) % 50 == 0 || n + 1 == total {
            progress(&format!("verified {} of {total} custody chains", n + 1));
        }
    }
    if report.collections_failed.is_empty() {
        data.record_backends(target)?;
        report.switched = true;
    }
    Ok(report)
}
