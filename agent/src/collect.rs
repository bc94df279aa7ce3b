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
    pub memory: MemoryOptions,
    pub pipeline: PipelineOptions,
    /// Triage root and profile locations (`triage`, `minimal`, `disk`, the user's own).
    pub disk: capture::disk::DiskOptions,
    /// The flight recorder whose recent past every collection carries.
    pub journal: Option<Journal>,
    /// How much of that past to take, in seconds, whatever the profile says (`collect
    /// --events-window`); 0: none.
    pub events_window_secs: Option<u64>,
    /// A `last-breath` collection's container writable layer (its overlay upperdir), found by
    /// the daemon: recorded when the container was marked, or read from the running one.
    pub writable_layer: Option<Result<std::path::PathBuf, String>>,
}

/// What the `memory` and `full` profiles capture beyond what the request names.
#[derive(Debug, Clone)]
pub struct MemoryOptions {
    /// Processes to core, already chosen (`capture memory --tree/--all`); `None`: the request's
    /// pid and its ancestors, and its container's processes.
    pub pids: Option<Vec<u32>>,
    /// Physical memory too (always for `full`).
    pub physical: bool,
    pub format: capture::memory::Format,
    /// The volatile documents too (the profiles do; `capture memory` does not).
    pub volatile: bool,
}

impl Default for MemoryOptions {
    fn default() -> Self {
        MemoryOptions {
            pids: None,
            physical: false,
            format: capture::memory::Format::Lime,
            volatile: true,
        }
    }
}

/// Where a collection finds the recent past, and how much of it to take.
#[derive(Clone)]
pub struct Journal {
    /// The running agent's recorder; `None` reads the directory without touching it.
    pub recorder: Option<std::sync::Arc<std::sync::Mutex<crate::flight_recorder::FlightRecorder>>>,
    pub dir: std::path::PathBuf,
    /// For profiles that set no window of their own (the agent's `journal_window_secs`).
    pub window: std::time::Duration,
}

/// The flight recorder window of the profiles written in code, in seconds. A look at what runs
/// now needs the last minutes; a memory capture the hour before it. The TOML profiles set
/// theirs (`events_window_secs`: triage a day).
pub fn events_window_of(profile: &str) -> Option<u64> {
    match profile {
        "volatile" | "file" | "last-breath" => Some(15 * 60),
        "memory" | "full" | "disk" => Some(3600),
        _ => None,
    }
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Journal({}, last {:?})", self.dir.display(), self.window)
    }
}

impl Journal {
    /// Where a window of `secs` starts for a trigger now.
    fn window_start(secs: u64) -> i64 {
        let ns = i64::try_from(u128::from(secs) * 1_000_000_000).unwrap_or(i64::MAX);
        crate::flight_recorder::now_ns().saturating_sub(ns)
    }

    /// From `from` until now, as JSON lines, and the bounds.
    fn slice(&self, from: i64) -> anyhow::Result<(Vec<u8>, i64, i64)> {
        let to = crate::flight_recorder::now_ns();
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
    /// A `file` profile path, checked when planned and opened again only when produced: a
    /// request may name thousands of files, too many to hold open.
    Path {
        host_root: std::path::PathBuf,
        path: String,
        /// (device, inode) when planned: a file replaced since is not read.
        identity: (u64, u64),
    },
    /// Planned when the item is produced, not before: a core's registers and maps must be
    /// read just before its memory, not when the collection started.
    Deferred(Box<dyn FnOnce() -> Result<Streamed, Failure> + Send>),
    /// Opened only when produced: triage plans thousands of files, too many to hold open.
    Triage(capture::disk::triage::CopyFile),
}

/// A source read through a [`capture::memory::stream::PieceReader`]: its facts, known once
/// planned, and the report of what could not be read.
pub struct Streamed {
    pub details: serde_json::Map<String, serde_json::Value>,
    pub memory_source: Option<String>,
    pub reader: Box<dyn Read + Send>,
    pub report: capture::memory::stream::SharedReport,
}

impl Streamed {
    /// Bytes already in memory: nothing to report beyond them.
    fn bytes(b: Vec<u8>) -> Streamed {
        Streamed {
            details: serde_json::Map::new(),
            memory_source: None,
            reader: Box::new(std::io::Cursor::new(b)),
            report: Default::default(),
        }
    }
}

/// Why a deferred item produced nothing.
pub struct Failure {
    pub status: ItemStatus,
    pub error: String,
}

/// An item decided on but not yet read.
pub struct PlannedItem {
    pub header: ItemHeader,
    body: Body,
}

impl PlannedItem {
    /// An item of bytes already in memory (the self-test's probe item).
    pub fn from_bytes(header: ItemHeader, bytes: Vec<u8>) -> PlannedItem {
        PlannedItem::new(header, Body::Bytes(bytes))
    }

    /// The header says how long the item should be where that is known before reading: bytes
    /// in memory, and files and devices by the size they were planned with. What is sized only
    /// as it is read (process and physical memory, volatile documents) says nothing.
    fn new(mut header: ItemHeader, body: Body) -> PlannedItem {
        header.expected_len = match &body {
            Body::Bytes(b) => Some(b.len() as u64),
            Body::File(_) | Body::Path { .. } | Body::Triage(_) => {
                header.source.details.get("size").and_then(|s| s.as_u64())
            }
            Body::Deferred(_) => None,
        };
        PlannedItem { header, body }
    }
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
        acquisition_start: cairn_protocol::rfc3339::now(),
        expected_len: None,
    }
}

/// Profiles this agent can run: the protocol's.
pub use cairn_protocol::manifest::PROFILES;

fn volatile_items(req: &CollectRequest, opts: &CollectOptions, items: &mut Vec<PlannedItem>) {
    // Read when produced, one after the other: host.json is on the wire within milliseconds of
    // the trigger while the process table is still being read.
    let docs = std::sync::Arc::new(capture::volatile::Documents::new(opts.volatile.clone()));
    for name in capture::volatile::DOCUMENTS {
        let source = Source {
            name: name.to_string(),
            media_type: Some("application/json".into()),
            ..Default::default()
        };
        let docs = docs.clone();
        items.push(PlannedItem {
            header: header(req, ItemKind::VolatileArtifact, source),
            body: Body::Deferred(Box::new(move || {
                let a = docs.produce(name).ok_or_else(|| Failure {
                    status: ItemStatus::Failed,
                    error: format!("no volatile document {name}"),
                })?;
                // Fields that could not be read are recorded inside each document ("errors");
                // they do not make the collection partial.
                if !a.errors.is_empty() {
                    tracing::info!(
                        "{}: {} field(s) could not be read (listed in the document)",
                        a.name,
                        a.errors.len()
                    );
                }
                Ok(Streamed::bytes(a.bytes))
            })),
        });
    }
}

/// Blocking: the volatile profile reads /proc, which takes a moment.
pub fn plan(req: &CollectRequest, opts: &CollectOptions) -> Plan {
    let mut items = Vec::new();
    let mut errors = Vec::new();
    let mut profile_window = events_window_of(&req.profile);
    match req.profile.as_str() {
        "volatile" => volatile_items(req, opts, &mut items),
        // Bounded, for a host shutting down or a container gone: the volatile documents, the
        // container's writable layer (capped by the writable-layer profile), the recorder.
        "last-breath" => {
            volatile_items(req, opts, &mut items);
            if let Some(id) = &req.container_id {
                match &opts.writable_layer {
                    Some(Ok(layer)) => {
                        let p = capture::disk::plan_writable_layer(layer);
                        errors.extend(p.errors);
                        items.extend(p.items.into_iter().map(|i| disk_item(req, i)));
                    }
                    Some(Err(e)) => errors.push(format!("writable layer of container {id}: {e}")),
                    None => errors.push(format!(
                        "writable layer of container {id}: not known to this agent"
                    )),
                }
            }
        }
        "memory" | "full" => {
            if opts.memory.volatile {
                volatile_items(req, opts, &mut items);
            }
            let full = req.profile == "full";
            memory_items(req, opts, full, &mut items, &mut errors);
        }
        "file" => {
            if req.paths.is_empty() {
                errors.push("profile file needs at least one path".into());
            }
            let host_root = &opts.volatile.host_root;
            for p in &req.paths {
                // Opened and closed: one descriptor at a time, however many paths.
                match capture::file::open_in(host_root, p) {
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
                        items.push(PlannedItem::new(
                            header(req, ItemKind::File, source),
                            Body::Path {
                                host_root: host_root.clone(),
                                path: p.clone(),
                                identity: f.identity(),
                            },
                        ));
                    }
                    Err(e) => errors.push(e),
                }
            }
        }
        other => match capture::disk::plan(req, &opts.disk) {
            Some(p) => {
                errors.extend(p.errors);
                profile_window = p.events_window_secs.or(profile_window);
                items.extend(p.items.into_iter().map(|i| disk_item(req, i)));
            }
            None => errors.push(format!(
                "unknown profile {other:?}; this agent knows {} and profile files in its profiles directory",
                PROFILES.join(", ")
            )),
        },
    }
    // Every collection carries the flight recorder's recent past, as much as its profile says.
    if let Some(j) = &opts.journal {
        if let Some(item) = journal_item(req, j, opts.events_window_secs, profile_window) {
            items.push(item);
        }
    }
    Plan { items, errors }
}

/// `events.jsonl`: the window the caller gives, else the profile's, else the agent's; none
/// for a window of 0.
fn journal_item(
    req: &CollectRequest,
    j: &Journal,
    given: Option<u64>,
    profile: Option<u64>,
) -> Option<PlannedItem> {
    let (secs, set_by) = match (given, profile) {
        (Some(s), _) => (s, "request".to_string()),
        (None, Some(s)) => (s, format!("profile {}", req.profile)),
        (None, None) => (j.window.as_secs(), "agent configuration".to_string()),
    };
    if secs == 0 {
        return None;
    }
    let mut source = Source {
        name: "events.jsonl".into(),
        path: Some(j.dir.display().to_string()),
        media_type: Some("application/x-ndjson".into()),
        ..Default::default()
    };
    source.details.insert("window_secs".into(), secs.into());
    source.details.insert("window_set_by".into(), set_by.into());
    let j = j.clone();
    // The window opens `secs` before the trigger and closes when the item is produced, the
    // last of the collection: what happened during the capture is in it too.
    let from = Journal::window_start(secs);
    Some(PlannedItem {
        header: header(req, ItemKind::EventJournal, source),
        body: Body::Deferred(Box::new(move || {
            let (bytes, from, to) = j.slice(from).map_err(|e| Failure {
                status: ItemStatus::Failed,
                error: format!("flight recorder: {e:#}"),
            })?;
            let events = bytecount_lines(&bytes);
            let size = bytes.len() as u64;
            let mut s = Streamed::bytes(bytes);
            s.details.insert("events".into(), events.into());
            s.details.insert("bytes".into(), size.into());
            s.details
                .insert("window_start".into(), rfc3339_ns(from).into());
            s.details.insert("window_end".into(), rfc3339_ns(to).into());
            Ok(s)
        })),
    })
}

/// Cores of the processes the request (or the caller) names; physical memory for `full`.
fn memory_items(
    req: &CollectRequest,
    opts: &CollectOptions,
    full: bool,
    items: &mut Vec<PlannedItem>,
    errors: &mut Vec<String>,
) {
    use capture::memory::targets;
    let mo = &opts.memory;
    // Inside a container (`--host-root /host`), the host's /proc and /dev.
    let proc_root = &opts.volatile.proc_root;
    let dev_root = opts.volatile.host_root.join("dev");
    let pids = match &mo.pids {
        Some(p) => p.clone(),
        None => {
            let mut pids = Vec::new();
            if let Some(pid) = req.pid {
                if proc_root.join(pid.to_string()).is_dir() {
                    pids.extend(targets::with_ancestors(proc_root, pid));
                } else {
                    errors.push(format!(
                        "process {pid} named by the trigger does not exist (it exited before the capture)"
                    ));
                }
            }
            if let Some(c) = &req.container_id {
                match targets::container(proc_root, c) {
                    Ok(found) if found.is_empty() => {
                        errors.push(format!("no running process belongs to container {c}"))
                    }
                    Ok(found) => pids.extend(found),
                    Err(e) => errors.push(e),
                }
            }
            if req.pid.is_none() && req.container_id.is_none() && !full {
                errors.push(
                    "profile memory needs a process (pid) or a container id from the trigger; \
                     use `cairn collect HOST --profile memory --pid P` or `cairn-agent capture \
                     memory --pid P`"
                        .into(),
                );
            }
            pids
        }
    };
    let mut seen = std::collections::BTreeSet::new();
    let cache = std::sync::Arc::new(std::sync::Mutex::new(
        capture::memory::files::FileCache::default(),
    ));
    for pid in pids.into_iter().filter(|p| seen.insert(*p)) {
        let comm = std::fs::read_to_string(proc_root.join(pid.to_string()).join("comm"))
            .map(|c| c.trim_end().to_string())
            .unwrap_or_default();
        let safe: String = comm
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let mut source = Source {
            name: if safe.is_empty() {
                format!("core.{pid}")
            } else {
                format!("core.{pid}.{safe}")
            },
            pid: Some(pid),
            memory_source: Some(format!("/proc/{pid}/mem")),
            media_type: Some("application/x-coredump".into()),
            ..Default::default()
        };
        source.details.insert("comm".into(), comm.into());
        let proc_root = proc_root.clone();
        let cache = cache.clone();
        items.push(PlannedItem {
            header: header(req, ItemKind::ProcessCore, source),
            body: Body::Deferred(Box::new(move || {
                let mut cache = cache.lock().unwrap_or_else(|p| p.into_inner());
                match capture::memory::process::plan(&proc_root, pid, &mut cache) {
                    Ok(core) => Ok(Streamed {
                        details: core.details,
                        memory_source: None,
                        reader: Box::new(core.reader),
                        report: core.report,
                    }),
                    Err(e @ capture::memory::process::CoreError::Gone { .. }) => Err(Failure {
                        status: ItemStatus::SourceVanished,
                        error: format!("{e} before its capture started"),
                    }),
                    Err(e) => Err(Failure {
                        status: ItemStatus::Failed,
                        error: e.to_string(),
                    }),
                }
            })),
        });
    }
    if full || mo.physical {
        let source = Source {
            name: format!("physical-memory.{}", mo.format.as_str()),
            media_type: Some(match mo.format {
                capture::memory::Format::Lime => "application/x-lime".into(),
                _ => "application/octet-stream".into(),
            }),
            ..Default::default()
        };
        let (format, proc_root) = (mo.format, proc_root.clone());
        items.push(PlannedItem {
            header: header(req, ItemKind::PhysicalMemory, source),
            body: Body::Deferred(Box::new(move || {
                match capture::memory::physical::plan(format, &proc_root, &dev_root) {
                    Ok(img) => Ok(Streamed {
                        details: img.details,
                        memory_source: Some(img.source),
                        reader: Box::new(img.reader),
                        report: img.report,
                    }),
                    Err(e) => Err(Failure {
                        status: ItemStatus::Failed,
                        error: e.to_string(),
                    }),
                }
            })),
        });
    }
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
    PlannedItem::new(header(req, kind, source), body)
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
        let PlannedItem { mut header, body } = self;
        let mut report = None;
        let mut failure = None;
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
            Body::Deferred(start) => match start() {
                Ok(s) => {
                    header.source.details.extend(s.details);
                    if s.memory_source.is_some() {
                        header.source.memory_source = s.memory_source;
                    }
                    report = Some(s.report);
                    (s.reader, None)
                }
                Err(f) => {
                    failure = Some(f);
                    (Box::new(std::io::empty()), None)
                }
            },
            Body::File(f) => file_reader(f),
            Body::Path {
                host_root,
                path,
                identity,
            } => match capture::file::open_in(&host_root, &path) {
                Ok(f) if f.identity() == identity => file_reader(f),
                Ok(f) => {
                    let msg = format!(
                        "{path}: replaced between planning and reading (inode {} is now {}); not read",
                        identity.1,
                        f.identity().1
                    );
                    (Box::new(FailingReader(Some(msg))), None)
                }
                Err(msg) => (Box::new(FailingReader(Some(msg))), None),
            },
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
        let mut gaps = Vec::new();
        if let Some(f) = failure {
            status = f.status;
            error = Some(f.error);
        }
        if let Some(r) = report {
            let r = r.lock().unwrap_or_else(|p| p.into_inner()).clone();
            apply_range_hashes(&mut header.source.details, &r.slot_sha256);
            if !r.gaps.is_empty() {
                header
                    .source
                    .details
                    .insert("unreadable_bytes".into(), r.unreadable_bytes.into());
            }
            gaps = r.gaps;
            if let Some(why) = r.gone {
                status = ItemStatus::SourceVanished;
                error = Some(error.map(|e| format!("{e}; {why}")).unwrap_or(why));
            } else if !gaps.is_empty() && status == ItemStatus::Complete {
                status = ItemStatus::Partial;
            }
        }
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
            acquisition_end: cairn_protocol::rfc3339::now(),
            raw_len: summary.raw_len,
            sha256: summary.sha256,
            chunk_count: summary.chunk_sha256.len() as u64,
            chunk_sha256: summary.chunk_sha256,
            gaps,
            status,
            error,
            tool: crate::tool_version(),
        })
    }
}

/// Physical images list their ranges in `details.ranges`; each gets the SHA-256 of its bytes.
fn apply_range_hashes(
    details: &mut serde_json::Map<String, serde_json::Value>,
    hashes: &[Option<String>],
) {
    if let Some(serde_json::Value::Array(ranges)) = details.get_mut("ranges") {
        for (r, h) in ranges.iter_mut().zip(hashes) {
            if let (Some(obj), Some(h)) = (r.as_object_mut(), h) {
                obj.insert("sha256".into(), h.clone().into());
            }
        }
    }
}

fn bytecount_lines(b: &[u8]) -> u64 {
    b.iter().filter(|&&c| c == b'\n').count() as u64
}

fn rfc3339_ns(ns: i64) -> String {
    cairn_protocol::rfc3339::from_unix_ns(i128::from(ns)).unwrap_or_default()
}

struct FailingReader(Option<String>);

impl Read for FailingReader {
    fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
        Err(std::io::Error::other(self.0.take().unwrap_or_default()))
    }
}
