//! Runs a profile: decides which items a collection holds and produces each one's chunks and
//! manifest through the evidence pipeline. Live uploads and offline collections share this;
//! only where the chunks go differs.

use crate::capture;
use cairn_protocol::chunk::Chunk;
use cairn_protocol::manifest::{
    CollectRequest, HostIdentity, ItemHeader, ItemKind, ItemManifest, ItemStatus, Source,
};
use cairn_protocol::pipeline::{ChunkStream, PipelineOptions};
use std::io::Read;

#[derive(Debug, Clone, Default)]
pub struct CollectOptions {
    pub volatile: capture::volatile::VolatileOptions,
    pub pipeline: PipelineOptions,
    /// Triage root and profile locations (`triage`, `minimal`, `disk`, the user's own).
    pub disk: capture::disk::DiskOptions,
    /// The flight recorder whose recent past every collection carries.
    pub journal: Option<Journal>,
}

/// Where a collection finds the recent past, and how much of it to take.
#[derive(Clone)]
pub struct Journal {
    /// The running agent's recorder; `None` reads the directory without touching it.
    pub recorder: Option<std::sync::Arc<std::sync::Mutex<crate::flight_recorder::FlightRecorder>>>,
    pub dir: std::path::PathBuf,
    pub window: std::time::Duration,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Journal({}, last {:?})", self.dir.display(), self.window)
    }
}

impl Journal {
    /// The window before now as JSON lines, and the window's bounds.
    fn slice(&self) -> anyhow::Result<(Vec<u8>, i64, i64)> {
        let to = crate::flight_recorder::now_ns();
        let from = to - self.window.as_nanos().min(i64::MAX as u128) as i64;
        let bytes = match &self.recorder {
            Some(r) => r
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .slice(from, to)?,
            None => crate::flight_recorder::read_slice(&self.dir, from, to)?,
        };
        Ok((bytes, from, to))
    }
}

enum Body {
    Bytes(Vec<u8>),
    File(capture::file::OpenedFile),
    /// Opened only when produced: triage plans thousands of files, too many to hold open.
    Triage(capture::disk::triage::CopyFile),
}

/// An item decided on but not yet read.
pub struct PlannedItem {
    pub header: ItemHeader,
    body: Body,
}

/// What a profile yields: items, and errors about what it could not even start.
pub struct Plan {
    pub items: Vec<PlannedItem>,
    pub errors: Vec<String>,
}

fn header(req: &CollectRequest, kind: ItemKind, source: Source) -> ItemHeader {
    ItemHeader {
        item_id: uuid::Uuid::new_v4().to_string(),
        collection_id: req.collection_id.clone(),
        kind,
        source,
        chunk_size: cairn_protocol::CHUNK_SIZE as u64,
        acquisition_start: cairn_protocol::now_rfc3339(),
    }
}

/// Profiles this agent can run (besides profile files in `STATE/profiles`).
pub const PROFILES: &[&str] = &["volatile", "file", "triage", "minimal", "disk"];

/// Blocking: the volatile profile reads /proc, which takes a moment.
pub fn plan(req: &CollectRequest, opts: &CollectOptions) -> Plan {
    let mut items = Vec::new();
    let mut errors = Vec::new();
    match req.profile.as_str() {
        "volatile" => {
            for a in capture::volatile::collect(&opts.volatile) {
                // Fields that could not be read are recorded inside each document ("errors");
                // they do not make the collection partial.
                if !a.errors.is_empty() {
                    tracing::info!(
                        "{}: {} field(s) could not be read (listed in the document)",
                        a.name,
                        a.errors.len()
                    );
                }
                let source = Source {
                    name: a.name.clone(),
                    media_type: Some(a.media_type.clone()),
                    ..Default::default()
                };
                items.push(PlannedItem {
                    header: header(req, ItemKind::VolatileArtifact, source),
                    body: Body::Bytes(a.bytes),
                });
            }
        }
        "file" => {
            if req.paths.is_empty() {
                errors.push("profile file needs at least one path".into());
            }
            for p in &req.paths {
                match capture::file::open(p) {
                    Ok(f) => {
                        let source = Source {
                            name: std::path::Path::new(p)
                                .file_name()
                                .map(|n| n.to_string_lossy().into_owned())
                                .unwrap_or_else(|| p.clone()),
                            path: Some(p.clone()),
                            details: f.details(),
                            ..Default::default()
                        };
                        items.push(PlannedItem {
                            header: header(req, ItemKind::File, source),
                            body: Body::File(f),
                        });
                    }
                    Err(e) => errors.push(e),
                }
            }
        }
        other => match capture::disk::plan(req, &opts.disk) {
            Some(p) => {
                errors.extend(p.errors);
                items.extend(p.items.into_iter().map(|i| disk_item(req, i)));
            }
            None => errors.push(format!(
                "unknown profile {other:?}; this agent knows {} and profile files in its profiles directory",
                PROFILES.join(", ")
            )),
        },
    }
    // Every collection carries the flight recorder's recent past: what ran before the trigger.
    if let Some(j) = &opts.journal {
        match j.slice() {
            Ok((bytes, from, to)) => {
                let mut details = serde_json::Map::new();
                details.insert("window_start".into(), rfc3339_ns(from).into());
                details.insert("window_end".into(), rfc3339_ns(to).into());
                details.insert("events".into(), bytecount_lines(&bytes).into());
                let source = Source {
                    name: "events.jsonl".into(),
                    path: Some(j.dir.display().to_string()),
                    media_type: Some("application/x-ndjson".into()),
                    details,
                    ..Default::default()
                };
                items.push(PlannedItem {
                    header: header(req, ItemKind::EventJournal, source),
                    body: Body::Bytes(bytes),
                });
            }
            Err(e) => errors.push(format!("flight recorder: {e:#}")),
        }
    }
    Plan { items, errors }
}

fn disk_item(req: &CollectRequest, item: capture::disk::DiskItem) -> PlannedItem {
    use capture::disk::DiskItem;
    let (kind, source, body) = match item {
        DiskItem::File { source, file } => (ItemKind::File, source, Body::Triage(file)),
        DiskItem::Document { source, bytes } => {
            (ItemKind::ArtifactBundle, source, Body::Bytes(bytes))
        }
        DiskItem::Device { source, file } => (ItemKind::DiskImage, source, Body::File(file)),
    };
    PlannedItem {
        header: header(req, kind, source),
        body,
    }
}

impl PlannedItem {
    /// Read the source through the pipeline, handing each chunk to `sink` in order; `sink`
    /// returns false to abandon the item. Returns the manifest, or None if abandoned.
    pub fn produce(
        self,
        host: &HostIdentity,
        opts: &PipelineOptions,
        mut sink: impl FnMut(Chunk) -> bool,
    ) -> Option<ItemManifest> {
        let PlannedItem { header, body } = self;
        let file_reader = |f: capture::file::OpenedFile| -> (Box<dyn Read + Send>, _) {
            match f.reader() {
                Ok(r) => (r, Some(f)),
                Err(e) => {
                    let msg = format!("{}: cannot read: {e}", f.path);
                    (Box::new(FailingReader(Some(msg))), Some(f))
                }
            }
        };
        let (reader, file): (Box<dyn Read + Send>, Option<capture::file::OpenedFile>) = match body {
            Body::Bytes(b) => (Box::new(std::io::Cursor::new(b)), None),
            Body::File(f) => file_reader(f),
            Body::Triage(t) => match t.open() {
                Ok(f) => file_reader(f),
                Err(msg) => (Box::new(FailingReader(Some(msg))), None),
            },
        };
        let mut stream = ChunkStream::new(reader, opts);
        let mut chunk_error = None;
        for c in stream.by_ref() {
            match c {
                Ok(c) => {
                    if !sink(c) {
                        return None;
                    }
                }
                Err(e) => {
                    chunk_error = Some(e.to_string());
                    break;
                }
            }
        }
        let summary = stream.finish();
        let mut error = summary.read_error.clone().or(chunk_error);
        let mut status = if error.is_some() {
            ItemStatus::Failed
        } else {
            ItemStatus::Complete
        };
        let mut header = header;
        if let Some(note) = file.as_ref().and_then(|f| f.changed_since_open()) {
            header
                .source
                .details
                .insert("changed_during_read".into(), true.into());
            if status == ItemStatus::Complete {
                status = ItemStatus::Partial;
            }
            error = Some(error.map(|e| format!("{e}; {note}")).unwrap_or(note));
        }
        Some(ItemManifest {
            header,
            host: host.clone(),
            acquisition_end: cairn_protocol::now_rfc3339(),
            raw_len: summary.raw_len,
            sha256: summary.sha256,
            chunk_count: summary.chunk_sha256.len() as u64,
            chunk_sha256: summary.chunk_sha256,
            gaps: Vec::new(),
            status,
            error,
            tool: crate::tool_version(),
        })
    }
}

fn bytecount_lines(b: &[u8]) -> u64 {
    b.iter().filter(|&&c| c == b'\n').count() as u64
}

fn rfc3339_ns(ns: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ns))
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

struct FailingReader(Option<String>);

impl Read for FailingReader {
    fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
        Err(std::io::Error::other(self.0.take().unwrap_or_default()))
    }
}
