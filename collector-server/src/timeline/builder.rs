//! Which parser reads a sealed item, and the run that turns it into timeline rows.
//!
//! Files are recognised by their file name on the host (rotation suffixes such as `.1` or
//! `-20261129` ignored, `.gz` read through [`Gunzip`]), binary journals by their place
//! (`*.journal`, `*.journal~` in a `journal` directory), bodyfiles by `source.name`/
//! `media_type`, volatile artifacts and the event journal by their names. A file item also
//! gives its own MACB times. What each item gave (events, unparsed lines, error) is recorded
//! in `timeline_items`.
//!
//! Memory is bounded whatever the item's size: the item is read one verified chunk at a time
//! (`evidence::ItemReader`), the parsers hold one line or record, and events go to the store
//! [`BATCH`] at a time; at most [`CONCURRENT_BUILDS`] items are indexed at once. A binary
//! journal, read at random, is first copied to a sealed scratch file ([`Spill`]).

use super::parse::gunzip::{self, Gunzip};
use super::parse::{self, Reopen, MAX_DOCUMENT};
use super::spill::Spill;
use super::{Emit, Event, Stop};
use crate::error::{Error, Result};
use crate::evidence::ItemReader;
use crate::storage::Stores;
use cairn_protocol::manifest::{ItemKind, ItemManifest};
use cairn_protocol::rfc3339;
use std::sync::{Condvar, Mutex};

/// Events per `insert_timeline` call: one transaction each, a few MiB of events in memory.
pub const BATCH: usize = 8192;

/// Items indexed at once. The others wait their turn, so that many collections finishing
/// together (36 large `events.jsonl` at once) cost this many builds of memory, not one each;
/// the store takes one writer at a time anyway.
pub const CONCURRENT_BUILDS: usize = 2;

/// Largest binary journal file read (journald rotates its files at 128 MiB at most).
pub const MAX_JOURNAL_FILE: u64 = 1 << 30;

/// How to read one item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parser {
    Syslog(&'static str),
    Journal,
    /// A binary journal file.
    JournalFile,
    Utmp(&'static str),
    History(&'static str),
    Bodyfile,
    Processes,
    Network,
    Kernel,
    EventJournal,
}

impl Parser {
    pub fn name(&self) -> &'static str {
        match self {
            Parser::Syslog(s) | Parser::Utmp(s) | Parser::History(s) => s,
            Parser::Journal => "journal",
            Parser::JournalFile => "journal_file",
            Parser::Bodyfile => "bodyfile",
            Parser::Processes => "processes.json",
            Parser::Network => "network.json",
            Parser::Kernel => "kernel.json",
            Parser::EventJournal => "event_journal",
        }
    }

    /// Whether it reads the item whole (up to [`MAX_DOCUMENT`]) rather than streaming it.
    pub fn whole_document(&self) -> bool {
        matches!(self, Parser::Processes | Parser::Network | Parser::Kernel)
    }

    /// Read `input` into `out`; `scratch` is where an input read at random is copied.
    pub fn run<I: Reopen + ?Sized>(
        &self,
        input: &I,
        user: Option<String>,
        mtime_ns: i64,
        scratch: &std::path::Path,
        out: &mut impl Emit,
    ) -> std::result::Result<(), Stop> {
        use parse::*;
        match *self {
            Parser::Syslog(source) => syslog::parse(input, source, mtime_ns, out),
            Parser::Journal => journal::parse(input.open()?, mtime_ns, out),
            Parser::JournalFile => {
                let copy = Spill::copy(scratch, input.open()?, MAX_JOURNAL_FILE, "journal file")?;
                journal_file::parse(copy, mtime_ns, out)
            }
            Parser::Utmp(source) => utmp::parse(input.open()?, source, mtime_ns, out),
            Parser::History(source) => history::parse(input.open()?, source, user, mtime_ns, out),
            Parser::Bodyfile => bodyfile::parse(input.open()?, mtime_ns, out),
            Parser::Processes => volatile::processes(input.open()?, mtime_ns, out),
            Parser::Network => volatile::network(input.open()?, mtime_ns, out),
            Parser::Kernel => volatile::kernel(input.open()?, mtime_ns, out),
            Parser::EventJournal => volatile::event_journal(input.open()?, mtime_ns, out),
        }
    }
}

/// A sealed item as parser input: opened as many times as the parser reads it.
struct StoredItem<'a> {
    stores: &'a Stores,
    item_id: &'a str,
}

impl Reopen for StoredItem<'_> {
    type Reader = ItemReader;
    fn open(&self) -> std::result::Result<ItemReader, Stop> {
        ItemReader::open(self.stores, self.item_id)
            .map_err(|e| Stop::Read(std::io::Error::other(e)))
    }
}

/// Where a build's events go: to the store, [`BATCH`] at a time.
struct Rows<'a> {
    stores: &'a Stores,
    host_id: &'a str,
    item_id: &'a str,
    /// The item's path on the host, for events that name no other.
    path: Option<&'a str>,
    batch: Vec<Event>,
    /// Events read, and of those how many were new to the store and how many unparsed.
    read: u64,
    stored: u64,
    unparsed: u64,
}

impl Rows<'_> {
    fn flush(&mut self) -> std::result::Result<(), Stop> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let n = self
            .stores
            .meta
            .insert_timeline(self.host_id, Some(self.item_id), &self.batch)
            .map_err(Stop::Store)?;
        crate::metrics::Metrics::add(&self.stores.metrics.timeline_events, n as u64);
        self.stored += n as u64;
        self.batch.clear();
        Ok(())
    }
}

impl Emit for Rows<'_> {
    fn put(&mut self, mut e: Event, unparsed: bool) -> std::result::Result<(), Stop> {
        if e.path.is_none() {
            e.path = self.path.map(str::to_string);
        }
        self.read += 1;
        self.unparsed += u64::from(unparsed);
        self.batch.push(e);
        if self.batch.len() >= BATCH {
            self.flush()?;
        }
        Ok(())
    }
}

/// A counting semaphore for blocking threads (builds run on them, never on the runtime).
struct Gate {
    busy: Mutex<usize>,
    freed: Condvar,
}

static BUILDS: Gate = Gate {
    busy: Mutex::new(0),
    freed: Condvar::new(),
};

struct Permit;

impl Gate {
    fn enter(&'static self) -> Permit {
        // A build that panicked left the count right (the permit is dropped on unwind).
        let mut busy = self.busy.lock().unwrap_or_else(|p| p.into_inner());
        while *busy >= CONCURRENT_BUILDS {
            busy = self.freed.wait(busy).unwrap_or_else(|p| p.into_inner());
        }
        *busy += 1;
        Permit
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut busy = BUILDS.busy.lock().unwrap_or_else(|p| p.into_inner());
        *busy = busy.saturating_sub(1);
        BUILDS.freed.notify_one();
    }
}

/// `auth.log.1` → `auth.log`, `secure-20261129` → `secure`, `syslog.3.gz` → `syslog`.
fn base_name(name: &str) -> &str {
    let mut n = gunzip::strip_gz(name).unwrap_or(name);
    if let Some((stem, suffix)) = n.rsplit_once('.') {
        if !suffix.is_empty() && suffix.bytes().all(|b| b.is_ascii_digit()) {
            n = stem;
        }
    }
    if let Some((stem, suffix)) = n.rsplit_once('-') {
        if suffix.len() == 8 && suffix.bytes().all(|b| b.is_ascii_digit()) {
            n = stem;
        }
    }
    n
}

/// The parser for an item, from its kind, names and media type.
pub fn choose(
    kind: ItemKind,
    name: &str,
    path: Option<&str>,
    media_type: Option<&str>,
) -> Option<Parser> {
    if name == "bodyfile" || media_type == Some("text/x-bodyfile") {
        return Some(Parser::Bodyfile);
    }
    match kind {
        ItemKind::EventJournal => return Some(Parser::EventJournal),
        ItemKind::VolatileArtifact => {
            return match name {
                "processes.json" => Some(Parser::Processes),
                "network.json" => Some(Parser::Network),
                "kernel.json" => Some(Parser::Kernel),
                "events.jsonl" => Some(Parser::EventJournal),
                _ => None,
            }
        }
        ItemKind::File => {}
        _ => return None,
    }
    let file = path.and_then(|p| p.rsplit('/').next()).unwrap_or(name);
    if file.ends_with(".xz") || file.ends_with(".zst") {
        return None;
    }
    if file == "events.jsonl" {
        return Some(Parser::EventJournal);
    }
    let base = base_name(file);
    if base.ends_with(".journal") || base.ends_with(".journal~") {
        // journald's files live in `/var/log/journal/MACHINE/` or `/run/log/journal/…`.
        let in_journal_dir = path.is_some_and(|p| p.split('/').any(|c| c == "journal"));
        return in_journal_dir.then_some(Parser::JournalFile);
    }
    if is_journal_export(base) {
        return Some(Parser::Journal);
    }
    match base {
        "auth.log" | "secure" => Some(Parser::Syslog("auth.log")),
        "syslog" | "messages" | "kern.log" | "daemon.log" | "user.log" => {
            Some(Parser::Syslog("syslog"))
        }
        "cron" | "cron.log" => Some(Parser::Syslog("cron")),
        "wtmp" => Some(Parser::Utmp("wtmp")),
        "btmp" => Some(Parser::Utmp("btmp")),
        "utmp" => Some(Parser::Utmp("utmp")),
        ".bash_history" | ".sh_history" | ".ash_history" => Some(Parser::History("bash_history")),
        ".zsh_history" | ".histfile" => Some(Parser::History("zsh_history")),
        _ => None,
    }
}

/// `journalctl -o export` or `-o json` saved to a file: `*.export`, or a JSON file that names
/// the journal (`journal.json`, `boot-journal.jsonl`). Not any file whose name says
/// "journal" (`systemd-journal-flush.service` is a unit file).
fn is_journal_export(file: &str) -> bool {
    let Some((stem, ext)) = file.rsplit_once('.') else {
        return false;
    };
    ext == "export"
        || (matches!(ext, "json" | "jsonl" | "ndjson")
            && stem.to_ascii_lowercase().contains("journal"))
}

/// MACB events of a collected file, from the times the agent recorded in `source.details`.
pub fn file_time_events(
    path: &str,
    details: &serde_json::Map<String, serde_json::Value>,
) -> Vec<Event> {
    let mut out = Vec::new();
    for (field, kind) in [
        ("mtime", "file_mtime"),
        ("atime", "file_atime"),
        ("ctime", "file_ctime"),
        ("btime", "file_btime"),
    ] {
        let Some(raw) = details.get(field).and_then(|v| v.as_str()) else {
            continue;
        };
        // 0 is "unknown" (a file system without birth times), not 1970.
        let Some(t) = rfc3339::parse_ns(raw).filter(|t| *t != 0) else {
            continue;
        };
        let mut e = Event::new(
            t,
            "file",
            kind,
            format!("{path} ({})", super::timestamp_desc(kind)),
        );
        for k in ["size", "mode", "uid", "gid", "inode"] {
            if let Some(v) = details.get(k) {
                e.attrs.insert(k.to_string(), v.clone());
            }
        }
        e.user = details
            .get("uid")
            .map(|u| u.to_string().trim_matches('"').to_string());
        e.path = Some(path.to_string());
        e.dedup = super::dedup_key(&[b"file", path.as_bytes(), kind.as_bytes(), raw.as_bytes()]);
        out.push(e);
    }
    out
}

/// Build the timeline rows of a sealed item. Errors are recorded for the item as well as
/// returned.
pub fn build_for_item(stores: &Stores, m: &ItemManifest) -> Result<()> {
    let item_id = &m.header.item_id;
    let src = &m.header.source;
    let Some(collection) = stores.meta.get_collection(&m.header.collection_id)? else {
        return Err(Error::not_found(format!(
            "collection {} of item {item_id} not found",
            m.header.collection_id
        )));
    };
    let host_id = collection.host_id;
    let file_times = match (m.header.kind, src.path.as_deref()) {
        (ItemKind::File, Some(path)) => file_time_events(path, &src.details),
        _ => Vec::new(),
    };
    let parser = choose(
        m.header.kind,
        &src.name,
        src.path.as_deref(),
        src.media_type.as_deref(),
    );
    if file_times.is_empty() && parser.is_none() {
        return Ok(());
    }
    let mut rows = Rows {
        stores,
        host_id: &host_id,
        item_id,
        path: src.path.as_deref(),
        batch: Vec::new(),
        read: 0,
        stored: 0,
        unparsed: 0,
    };
    let run = |rows: &mut Rows<'_>| -> std::result::Result<(), Stop> {
        for e in file_times {
            rows.event(e)?;
        }
        let Some(p) = parser else { return Ok(()) };
        if p.whole_document() && m.raw_len > MAX_DOCUMENT {
            return Err(Stop::TooLarge {
                what: p.name(),
                max: MAX_DOCUMENT,
            });
        }
        if p == Parser::JournalFile && m.raw_len > MAX_JOURNAL_FILE {
            return Err(Stop::TooLarge {
                what: "journal file",
                max: MAX_JOURNAL_FILE,
            });
        }
        let mtime = src
            .details
            .get("mtime")
            .and_then(|v| v.as_str())
            .and_then(rfc3339::parse_ns)
            .or_else(|| rfc3339::parse_ns(&m.acquisition_end))
            .unwrap_or(0);
        let user = src.path.as_deref().and_then(super::user_from_home_path);
        let _permit = BUILDS.enter();
        let item = StoredItem { stores, item_id };
        let file = src.path.as_deref().unwrap_or(&src.name);
        if m.header.kind == ItemKind::File && gunzip::strip_gz(file).is_some() {
            let gz = Gunzip::new(&item, gunzip::MAX_GUNZIPPED);
            p.run(&gz, user, mtime, &stores.scratch, rows)?;
            if gz.capped() {
                let why = format!(
                    "decompressed to more than the {} bytes read; the rest is not parsed",
                    gunzip::MAX_GUNZIPPED
                );
                rows.unparsed(mtime, p.name(), u64::MAX, file, &why)?;
            }
            return Ok(());
        }
        p.run(&item, user, mtime, &stores.scratch, rows)
    };
    let mut error = run(&mut rows).err();
    // Events read before a read failure are stored too: every byte they came from was
    // verified. What was stored stays, and is counted.
    if !matches!(error, Some(Stop::Store(_))) {
        if let Err(e) = rows.flush() {
            error.get_or_insert(e);
        }
    }
    let error = error.map(|e| e.to_string());
    if rows.read >= BATCH as u64 {
        // A large item filled the store's caches: what it needed is not kept.
        if let Err(e) = stores.meta.release_memory() {
            tracing::warn!("timeline: releasing memory after item {item_id}: {e}");
        }
    }
    let parser_name = parser.map_or("file_times", |p| p.name());
    stores.meta.record_timeline_item(
        item_id,
        &host_id,
        parser_name,
        rows.stored,
        rows.unparsed,
        error.as_deref(),
    )?;
    tracing::info!(
        "timeline: item {item_id} ({}) via {parser_name}: {} events ({} new), {} unparsed{}",
        src.name,
        rows.read,
        rows.stored,
        rows.unparsed,
        error
            .as_deref()
            .map(|e| format!("; {e}"))
            .unwrap_or_default()
    );
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::timeline::Parsed;

    #[test]
    fn parsers_are_chosen_by_file_name() {
        let f = |p: &str| choose(ItemKind::File, p, Some(p), None);
        assert_eq!(f("/var/log/auth.log"), Some(Parser::Syslog("auth.log")));
        assert_eq!(f("/var/log/auth.log.1"), Some(Parser::Syslog("auth.log")));
        assert_eq!(
            f("/var/log/secure-20261129"),
            Some(Parser::Syslog("auth.log"))
        );
        assert_eq!(f("/var/log/messages"), Some(Parser::Syslog("syslog")));
        assert_eq!(f("/var/log/cron"), Some(Parser::Syslog("cron")));
        assert_eq!(f("/var/log/wtmp"), Some(Parser::Utmp("wtmp")));
        assert_eq!(f("/var/log/btmp.1"), Some(Parser::Utmp("btmp")));
        assert_eq!(
            f("/home/alice/.bash_history"),
            Some(Parser::History("bash_history"))
        );
        assert_eq!(
            f("/root/.zsh_history"),
            Some(Parser::History("zsh_history"))
        );
        assert_eq!(f("/tmp/journal-export.json"), Some(Parser::Journal));
        assert_eq!(f("/tmp/boot.export"), Some(Parser::Journal));
        assert_eq!(
            f("/var/log/auth.log.2.gz"),
            Some(Parser::Syslog("auth.log"))
        );
        assert_eq!(f("/var/log/syslog.3.gz"), Some(Parser::Syslog("syslog")));
        assert_eq!(
            f("/var/log/messages-20261101.gz"),
            Some(Parser::Syslog("syslog"))
        );
        assert_eq!(f("/var/log/wtmp.1.gz"), Some(Parser::Utmp("wtmp")));
        assert_eq!(f("/var/log/syslog.2.xz"), None);
        assert_eq!(f("/etc/passwd"), None);
    }

    #[test]
    fn journal_files_are_chosen_by_place_and_units_are_not_exports() {
        let f = |p: &str| choose(ItemKind::File, p, Some(p), None);
        let m = "/var/log/journal/3d1219c7c4c5404aaa1f6d2a48adfda4";
        assert_eq!(f(&format!("{m}/system.journal")), Some(Parser::JournalFile));
        assert_eq!(
            f(&format!(
                "{m}/system@0005ebbfd42fc981-39a8842ec948769a.journal~"
            )),
            Some(Parser::JournalFile)
        );
        assert_eq!(
            f("/run/log/journal/x/user-1000.journal"),
            Some(Parser::JournalFile)
        );
        // Not in a journal directory: not read as one.
        assert_eq!(f("/tmp/system.journal"), None);
        // Unit files and sockets whose names say "journal" are neither journals nor exports.
        for unit in [
            "/usr/lib/systemd/system/systemd-journal-flush.service",
            "/etc/systemd/system/multi-user.target.wants/systemd-journald.service",
            "/usr/lib/systemd/system/systemd-journald.socket",
            "/etc/systemd/journald.conf",
            "/var/log/journal",
        ] {
            assert_eq!(f(unit), None, "{unit}");
        }
        assert_eq!(
            choose(
                ItemKind::ArtifactBundle,
                "bodyfile",
                None,
                Some("text/x-bodyfile")
            ),
            Some(Parser::Bodyfile)
        );
        assert_eq!(
            choose(ItemKind::VolatileArtifact, "processes.json", None, None),
            Some(Parser::Processes)
        );
        assert_eq!(choose(ItemKind::ProcessCore, "core.1", None, None), None);
    }

    fn run(p: Parser, data: &[u8]) -> Parsed {
        let mut out = Parsed::default();
        p.run(&data, None, 0, &std::env::temp_dir(), &mut out)
            .unwrap();
        out
    }

    #[test]
    fn no_parser_panics_on_hostile_bytes() {
        let parsers = [
            Parser::Syslog("auth.log"),
            Parser::Journal,
            Parser::Utmp("wtmp"),
            Parser::History("bash_history"),
            Parser::Bodyfile,
            Parser::Processes,
            Parser::Network,
            Parser::Kernel,
            Parser::EventJournal,
        ];
        let mut x: u64 = 0x1234_5678;
        for round in 0..200 {
            let len = (round * 37) % 3000;
            let data: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    // Mostly printable, with newlines, separators and the odd high byte.
                    let alphabet = b"Jan 1 00:00:0#|:;=\n{}[]\"\xff\x00 9";
                    alphabet[(x % alphabet.len() as u64) as usize]
                })
                .collect();
            for p in parsers {
                let parsed = run(p, &data);
                assert!(parsed.unparsed as usize <= parsed.events.len());
            }
        }
        // A binary journal field claiming an absurd length.
        let mut j = b"MESSAGE\n".to_vec();
        j.extend_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(run(Parser::Journal, &j).unparsed, 1);
    }

    #[test]
    fn file_times_from_details() {
        let d = serde_json::json!({"size": 10, "uid": 0, "mtime": "2026-11-29T10:00:00.5Z", "atime": "2026-11-29T10:01:00Z", "ctime": "bad"});
        let ev = file_time_events("/etc/shadow", d.as_object().unwrap());
        assert_eq!(ev.len(), 2);
        assert_eq!(ev[0].kind, "file_mtime");
        assert_eq!(ev[0].path.as_deref(), Some("/etc/shadow"));
        assert_eq!(ev[0].user.as_deref(), Some("0"));
        // A birth time of 0 is unknown: no event in 1970.
        let d =
            serde_json::json!({"mtime": "2026-11-29T10:00:00Z", "btime": "1970-01-01T00:00:00Z"});
        let ev = file_time_events("/etc/shadow", d.as_object().unwrap());
        let kinds: Vec<&str> = ev.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(kinds, ["file_mtime"]);
    }

    mod stored {
        use super::super::*;
        use crate::storage::chunk_dir::ChunkDir;
        use crate::storage::head_file::HeadFile;
        use crate::storage::sqlite::Sqlite;
        use crate::storage::{CollectionOrigin, CollectionStatus};
        use cairn_protocol::chunk::Chunk;
        use cairn_protocol::manifest::{CollectRequest, ItemHeader, Source};
        use std::sync::Arc;

        fn stores(dir: &std::path::Path) -> Stores {
            std::fs::create_dir_all(dir.join("chunks")).unwrap();
            let s = Stores {
                meta: Arc::new(Sqlite::open(&dir.join("t.db")).unwrap()),
                blobs: Arc::new(ChunkDir::new(dir.join("chunks"), false)),
                heads: Arc::new(HeadFile::open(&dir.join("heads.jsonl"), true).unwrap()),
                scratch: dir.join("scratch"),
                metrics: Default::default(),
            };
            std::fs::create_dir(&s.scratch).unwrap();
            s.meta.insert_enrolled_host("h1", "web-1", "fp").unwrap();
            let req = CollectRequest {
                collection_id: "c1".into(),
                profile: "volatile".into(),
                reason: "test".into(),
                requested_by: "api:t".into(),
                paths: vec![],
                pid: None,
                container_id: None,
                devices: Vec::new(),
            };
            s.meta
                .insert_collection(
                    "h1",
                    &req,
                    CollectionStatus::Running,
                    CollectionOrigin::Live,
                )
                .unwrap();
            s
        }

        /// An item stored in chunks of `chunk` bytes (so lines span chunks), and its manifest.
        fn store_item(s: &Stores, id: &str, name: &str, data: &[u8], chunk: usize) -> ItemManifest {
            let source = Source {
                name: name.into(),
                ..Default::default()
            };
            store(s, id, ItemKind::VolatileArtifact, source, data, chunk)
        }

        /// A file collected from `path` on the host.
        fn store_file(s: &Stores, id: &str, path: &str, data: &[u8]) -> ItemManifest {
            let source = Source {
                name: path.rsplit('/').next().unwrap().into(),
                path: Some(path.into()),
                ..Default::default()
            };
            store(s, id, ItemKind::File, source, data, 1 << 20)
        }

        fn store(
            s: &Stores,
            id: &str,
            kind: ItemKind,
            source: Source,
            data: &[u8],
            chunk: usize,
        ) -> ItemManifest {
            let header = ItemHeader {
                item_id: id.into(),
                collection_id: "c1".into(),
                kind,
                source,
                chunk_size: chunk as u64,
                acquisition_start: "2026-11-29T10:00:00Z".into(),
                expected_len: None,
            };
            s.meta.insert_item(&header).unwrap();
            for (i, part) in data.chunks(chunk).enumerate() {
                let c = Chunk::seal(i as u64, part, 1).unwrap();
                crate::ingest::verify_and_store(s, id, chunk as u64, c).unwrap();
            }
            ItemManifest {
                header,
                host: Default::default(),
                acquisition_end: "2026-11-29T10:05:00Z".into(),
                raw_len: data.len() as u64,
                sha256: String::new(),
                chunk_count: data.len().div_ceil(chunk) as u64,
                chunk_sha256: Vec::new(),
                gaps: Vec::new(),
                status: cairn_protocol::manifest::ItemStatus::Complete,
                error: None,
                tool: "test".into(),
            }
        }

        fn line(i: usize) -> String {
            format!(
                r#"{{"time":"2026-11-29T09:{:02}:{:02}.{i:09}Z","kind":"process_exec","source":"ebpf","process":{{"pid":{i},"ppid":1,"uid":0,"comm":"sh","exe":"/bin/sh","args":["sh","-c","echo {i}"]}}}}"#,
                (i / 60) % 60,
                i % 60
            )
        }

        fn items(s: &Stores) -> Vec<serde_json::Value> {
            s.meta.timeline_items(None).unwrap()
        }

        #[test]
        fn an_item_in_many_chunks_is_indexed_in_batches_with_every_event() {
            let dir = tempfile::tempdir().unwrap();
            let s = stores(dir.path());
            let n = BATCH * 2 + 100;
            let text: String = (0..n).map(|i| line(i) + "\n").collect();
            // A 1000-byte chunk ends mid-line almost every time.
            let m = store_item(&s, "i1", "events.jsonl", text.as_bytes(), 1000);
            build_for_item(&s, &m).unwrap();
            let rec = &items(&s)[0];
            assert_eq!(rec["events"], n as u64, "{rec}");
            assert_eq!(rec["unparsed"], 0);
            assert!(rec["error"].is_null(), "{rec}");
            let live = crate::timeline::parse::ebpf::from_line(&line(BATCH + 7)).unwrap();
            let (page, _) = s
                .meta
                .timeline_page(
                    &crate::timeline::Filter {
                        from_ns: Some(live.time_ns),
                        to_ns: Some(live.time_ns),
                        ..Default::default()
                    },
                    None,
                    10,
                )
                .unwrap();
            assert_eq!(page.len(), 1);
            assert_eq!(page[0].event.dedup, live.dedup, "keyed as its live copy");
            // Read again: nothing new.
            build_for_item(&s, &m).unwrap();
            assert_eq!(items(&s)[0]["events"], 0);
        }

        fn events_of(s: &Stores, item: &str) -> Vec<Event> {
            let f = crate::timeline::Filter::default();
            let (page, _) = s.meta.timeline_page(&f, None, 1000).unwrap();
            page.into_iter()
                .filter(|r| r.item_id.as_deref() == Some(item))
                .map(|r| r.event)
                .collect()
        }

        #[test]
        fn a_binary_journal_item_is_read_through_a_scratch_copy() {
            let dir = tempfile::tempdir().unwrap();
            let s = stores(dir.path());
            let data =
                crate::timeline::parse::journal_file::tests::fixture("compact-lz4.journal.zst");
            let path = "/var/log/journal/3d1219c7c4c5404aaa1f6d2a48adfda4/system.journal";
            let m = store_file(&s, "j1", path, &data);
            build_for_item(&s, &m).unwrap();
            let rec = &items(&s)[0];
            assert_eq!(rec["parser"], "journal_file", "{rec}");
            assert_eq!(rec["events"], 6, "{rec}");
            assert!(rec["error"].is_null(), "{rec}");
            let ev = events_of(&s, "j1");
            assert_eq!(ev[0].kind, "ssh_login");
            assert_eq!(ev[0].user.as_deref(), Some("alice"));
            assert_eq!(ev[0].path.as_deref(), Some(path));
            // The scratch copy is gone.
            assert_eq!(std::fs::read_dir(&s.scratch).unwrap().count(), 0);
        }

        #[test]
        fn rotated_gz_logs_are_read_as_their_uncompressed_names() {
            let dir = tempfile::tempdir().unwrap();
            let s = stores(dir.path());
            let text = "Nov 29 09:58:01 h sshd[4121]: Accepted publickey for alice from 203.0.113.7 port 52144 ssh2\n\
                        Nov 29 09:59:02 h sudo:    alice : TTY=pts/0 ; PWD=/home/alice ; USER=root ; COMMAND=/usr/bin/id\n";
            let gz = crate::timeline::parse::gunzip::tests::gzip(text.as_bytes());
            let m = store_file(&s, "g1", "/var/log/auth.log.2.gz", &gz);
            build_for_item(&s, &m).unwrap();
            let ev = events_of(&s, "g1");
            let kinds: Vec<&str> = ev.iter().map(|e| e.kind.as_str()).collect();
            assert_eq!(kinds, ["ssh_login", "sudo"]);
            assert_eq!(ev[0].source, "auth.log");
            // A corrupt .gz: the error is recorded for the item.
            let mut bad = gz.clone();
            bad.truncate(gz.len() - 10);
            let m = store_file(&s, "g2", "/var/log/syslog.3.gz", &bad);
            build_for_item(&s, &m).unwrap();
            let rec = items(&s)
                .into_iter()
                .find(|r| r["item_id"] == "g2")
                .unwrap();
            assert!(!rec["error"].is_null(), "{rec}");
        }

        #[test]
        fn a_journald_unit_file_is_not_parsed_as_a_journal_export() {
            let dir = tempfile::tempdir().unwrap();
            let s = stores(dir.path());
            let unit = b"[Unit]\nDescription=Flush Journal to Persistent Storage\nDefaultDependencies=no\n";
            let m = store_file(
                &s,
                "u1",
                "/usr/lib/systemd/system/systemd-journal-flush.service",
                unit,
            );
            build_for_item(&s, &m).unwrap();
            assert!(events_of(&s, "u1").iter().all(|e| e.kind != "unparsed"));
        }

        #[test]
        fn empty_one_byte_corrupt_and_oversized_items_are_recorded() {
            let dir = tempfile::tempdir().unwrap();
            let s = stores(dir.path());
            let m = store_item(&s, "empty", "events.jsonl", b"", 1000);
            build_for_item(&s, &m).unwrap();
            let m = store_item(&s, "one", "events.jsonl", b"{", 1000);
            build_for_item(&s, &m).unwrap();
            let by_id = |id: &str| items(&s).into_iter().find(|r| r["item_id"] == id).unwrap();
            assert_eq!(by_id("empty")["events"], 0);
            assert!(by_id("empty")["error"].is_null());
            assert_eq!(by_id("one")["unparsed"], 1);

            // A stored chunk altered after the seal: the events before it are kept, the
            // error names the chunk.
            let text: String = (0..200).map(|i| line(i) + "\n").collect();
            let m = store_item(&s, "bad", "events.jsonl", text.as_bytes(), 4096);
            let chunks = s.meta.item_chunks("bad").unwrap();
            let victim = &chunks[2];
            let other = Chunk::seal(0, b"not the same bytes", 1).unwrap();
            s.blobs.delete(&victim.sha256).unwrap();
            s.blobs.put(&victim.sha256, &other.payload).unwrap();
            build_for_item(&s, &m).unwrap();
            let rec = by_id("bad");
            let error = rec["error"].as_str().unwrap();
            assert!(error.contains("chunk 2"), "{error}");
            let kept = rec["events"].as_u64().unwrap();
            assert!(kept > 0 && kept < 200, "{rec}");

            // A processes.json over the cap is not read at all.
            let mut m = store_item(&s, "procs", "processes.json", b"{}", 1000);
            m.raw_len = MAX_DOCUMENT + 1;
            build_for_item(&s, &m).unwrap();
            let error = by_id("procs")["error"].as_str().unwrap().to_string();
            assert!(error.contains("larger than"), "{error}");
        }
    }
}
