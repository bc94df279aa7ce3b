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
}

enum Body {
    Bytes(Vec<u8>),
    File(capture::file::OpenedFile),
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

/// Profiles this agent can run.
pub const PROFILES: &[&str] = &["volatile", "file"];

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
        other => errors.push(format!(
            "unknown profile {other:?}; this agent knows {}",
            PROFILES.join(", ")
        )),
    }
    Plan { items, errors }
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
        let (reader, file): (Box<dyn Read + Send>, Option<capture::file::OpenedFile>) = match body {
            Body::Bytes(b) => (Box::new(std::io::Cursor::new(b)), None),
            Body::File(f) => match f.file.try_clone() {
                Ok(clone) => (Box::new(clone), Some(f)),
                Err(e) => {
                    let msg = format!("{}: cannot read: {e}", f.path);
                    (Box::new(FailingReader(Some(msg))), Some(f))
                }
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

struct FailingReader(Option<String>);

impl Read for FailingReader {
    fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
        Err(std::io::Error::other(self.0.take().unwrap_or_default()))
    }
}
