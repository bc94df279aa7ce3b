//! Timeline indexing in bounded memory, through the real binaries: offline collections made
//! byte for byte as `cairn-agent collect --out` writes them (the protocol crate's pipeline and
//! frames), holding a large `events.jsonl`, are `cairn import`ed into a collector whose
//! resident memory is read from /proc. A 1 GiB journal indexes every event within 256 MiB of
//! what the collector held before and gives that memory back; 36 collections imported at
//! once keep the collector under 1 GiB and are all sealed and indexed.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn_harness::*;
use cairn_protocol::manifest::{
    CollectRequest, CollectionRecord, CollectionStatus, HostIdentity, ItemHeader, ItemKind,
    ItemManifest, ItemStatus, Source,
};
use cairn_protocol::pipeline::{ChunkStream, PipelineOptions};
use cairn_protocol::wire::{Frame, Message};
use serde_json::Value;

const MIB: u64 = 1 << 20;

/// The tests of this file measure one collector each on a shared 2-core machine: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// 2026-11-29T09:00:00Z: the first generated event.
const T0_NS: i64 = 1_795_942_800_000_000_000;
/// One event every 100 µs.
const STEP_NS: i64 = 100_000;

/// Sensor events as `docs/events.md` shows them (exec with its parent, connect, exit in
/// turn), one a line, until `size` bytes: a `Read`, so the pipeline streams it.
struct Events {
    host: u32,
    size: u64,
    written: u64,
    n: u64,
    line: Vec<u8>,
    pos: usize,
    count: Arc<AtomicU64>,
}

impl Events {
    fn line(&mut self) {
        let n = self.n;
        let t = |ns: i64| cairn_protocol::rfc3339::from_unix_ns(i128::from(ns)).unwrap();
        let time = t(T0_NS + n as i64 * STEP_NS);
        let start = t(T0_NS + n as i64 * STEP_NS - 1_641_000);
        let pid = 20_000 + n % 40_000;
        let host = self.host;
        self.line = match n % 3 {
            0 => format!(
                r#"{{"time":"{time}","kind":"process_exec","source":"ebpf","process":{{"pid":{pid},"tid":{pid},"ppid":{},"uid":0,"gid":0,"euid":0,"comm":"curl","exe":"/usr/bin/curl","args":["curl","-s","http://198.51.100.{host}/x.sh?n={n}"],"cwd":"/tmp","cgroup_id":1,"cgroup":"/","start_time":"{start}"}},"parent":{{"pid":{},"ppid":1,"uid":0,"comm":"bash","exe":"/usr/bin/bash","args":["bash"],"cwd":"/root","start_time":"{start}"}}}}"#,
                pid - 1,
                pid - 1
            ),
            1 => format!(
                r#"{{"time":"{time}","kind":"tcp_connect","source":"ebpf","process":{{"pid":{pid},"tid":{pid},"ppid":{},"uid":1000,"gid":1000,"euid":1000,"comm":"curl","exe":"/usr/bin/curl","args":["curl","-s","http://198.51.100.{host}/x.sh"],"cgroup_id":1,"cgroup":"/","start_time":"{start}"}},"socket":{{"family":"inet","protocol":"tcp","saddr":"10.0.1.17","sport":{},"daddr":"198.51.100.{host}","dport":443,"result":-115,"cookie":{n}}}}}"#,
                pid - 1,
                32_768 + n % 28_000
            ),
            _ => format!(
                r#"{{"time":"{time}","kind":"process_exit","source":"ebpf","process":{{"pid":{pid},"tid":{pid},"ppid":{},"uid":0,"gid":0,"euid":0,"comm":"sh","exe":"/bin/sh","args":["sh","-c","echo {n}"],"cwd":"/","cgroup_id":1,"cgroup":"/","start_time":"{start}"}},"exit":{{"code":0,"signal":0}}}}"#,
                pid - 1
            ),
        }
        .into_bytes();
        self.line.push(b'\n');
        self.pos = 0;
        self.n += 1;
    }
}

impl Read for Events {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.pos == self.line.len() {
            if self.written >= self.size {
                return Ok(0);
            }
            self.line();
            self.count.fetch_add(1, Ordering::Relaxed);
        }
        let k = out.len().min(self.line.len() - self.pos);
        out[..k].copy_from_slice(&self.line[self.pos..self.pos + k]);
        self.pos += k;
        self.written += k as u64;
        Ok(k)
    }
}

/// An offline collection directory holding one `events.jsonl` of about `size` bytes, as the
/// agent writes it: `collection.json`, `items/ID.cairn` (item_begin, chunks, item_end) and
/// `items/ID.manifest.json`. Returns the directory and how many events it holds.
fn offline_collection(work: &Path, host: u32, size: u64) -> (PathBuf, u64) {
    let dir = work.join(format!("offline-{host}"));
    std::fs::create_dir_all(dir.join("items")).unwrap();
    let cid = format!("c0ffee00-0000-4000-8000-{host:012}");
    let item_id = format!("e7e70000-0000-4000-8000-{host:012}");
    let identity = HostIdentity {
        hostname: format!("ip-10-0-1-{host}"),
        machine_id: Some(format!("{host:032x}")),
        ..Default::default()
    };
    let started = cairn_protocol::rfc3339::now();
    let header = ItemHeader {
        item_id: item_id.clone(),
        collection_id: cid.clone(),
        kind: ItemKind::EventJournal,
        source: Source {
            name: "events.jsonl".into(),
            path: Some("/var/lib/cairn-agent/journal".into()),
            media_type: Some("application/x-ndjson".into()),
            ..Default::default()
        },
        chunk_size: cairn_protocol::CHUNK_SIZE as u64,
        acquisition_start: started.clone(),
        expected_len: None,
    };
    let count = Arc::new(AtomicU64::new(0));
    let events = Events {
        host,
        size,
        written: 0,
        n: 0,
        line: Vec::new(),
        pos: 0,
        count: count.clone(),
    };
    let path = dir.join("items").join(format!("{item_id}.cairn"));
    let mut f = BufWriter::new(std::fs::File::create(&path).unwrap());
    Frame::Message(Message::ItemBegin(Box::new(header.clone())))
        .write_to(&mut f)
        .unwrap();
    let mut stream = ChunkStream::new(events, &PipelineOptions::default());
    for chunk in stream.by_ref() {
        Frame::Chunk(chunk.unwrap()).write_to(&mut f).unwrap();
    }
    let summary = stream.finish();
    assert_eq!(summary.read_error, None);
    let manifest = ItemManifest {
        header,
        host: identity.clone(),
        acquisition_end: cairn_protocol::rfc3339::now(),
        raw_len: summary.raw_len,
        sha256: summary.sha256,
        chunk_count: summary.chunk_sha256.len() as u64,
        chunk_sha256: summary.chunk_sha256,
        gaps: Vec::new(),
        status: ItemStatus::Complete,
        error: None,
        tool: "cairn-agent e2e".into(),
    };
    Frame::Message(Message::ItemEnd(Box::new(manifest.clone())))
        .write_to(&mut f)
        .unwrap();
    f.flush().unwrap();
    std::fs::write(
        dir.join("items").join(format!("{item_id}.manifest.json")),
        serde_json::to_vec_pretty(&manifest).unwrap(),
    )
    .unwrap();
    let record = CollectionRecord {
        request: CollectRequest {
            collection_id: cid,
            profile: "volatile".into(),
            reason: "e2e: a large flight recorder window".into(),
            requested_by: "e2e".into(),
            paths: Vec::new(),
            pid: None,
            container_id: None,
            devices: Vec::new(),
        },
        host: identity,
        started,
        finished: cairn_protocol::rfc3339::now(),
        items: vec![item_id],
        status: CollectionStatus::Sealed,
        errors: Vec::new(),
        tool: "cairn-agent e2e".into(),
        encrypted_to: None,
    };
    std::fs::write(
        dir.join("collection.json"),
        serde_json::to_vec_pretty(&record).unwrap(),
    )
    .unwrap();
    (dir, count.load(Ordering::Relaxed))
}

/// A `Vm*` line of /proc/PID/status, in bytes.
fn vm(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"));
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

/// Restart the process's peak (VmHWM) from its resident size now; false where the kernel
/// does not let us (then the peak since start is what is measured).
fn reset_peak(pid: u32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

/// `cairn import DIR --json` → the collection it printed.
fn import(collector: &Collector, dir: &Path, timeout: Duration) -> Value {
    let d = dir.to_string_lossy().into_owned();
    let out = collector.cli_raw(&["import", &d], timeout).unwrap();
    let v = out
        .json()
        .unwrap_or_else(|_| panic!("{}", out.describe("printed no collection")));
    assert_eq!(v["status"], "sealed", "{}", out.describe("did not seal"));
    v
}

/// What the timeline recorded for the item (`/timeline/sources`).
fn source_of(collector: &Collector, item_id: &str) -> Value {
    let v = collector.api_get("/api/v1/timeline/sources").unwrap();
    v["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["item_id"] == item_id)
        .cloned()
        .unwrap_or_else(|| panic!("no timeline record of item {item_id}: {v}"))
}

/// How many of the host's events the timeline finds between the first and the `n`-th
/// generated event, counted by the API's facets window by window (each exact, under 1 M).
fn events_found(collector: &Collector, host_id: &str, n: u64) -> u64 {
    let per_window = 900_000i64;
    let mut total = 0;
    let mut first = 0i64;
    while (first as u64) < n {
        let from = T0_NS + first * STEP_NS;
        let to = from + per_window * STEP_NS - 1;
        let ts = |ns: i64| cairn_protocol::rfc3339::from_unix_ns(i128::from(ns)).unwrap();
        let v = collector
            .api_get(&format!(
                "/api/v1/timeline?host={host_id}&from={}&to={}&limit=1",
                ts(from),
                ts(to)
            ))
            .unwrap();
        assert_eq!(v["facets"]["exact"], true, "{}", v["facets"]);
        total += v["facets"]["total"].as_u64().unwrap();
        first += per_window;
    }
    total
}

#[test]
fn a_1_gib_events_jsonl_is_indexed_within_256_mib_of_collector_memory_given_back_after() {
    let _one_at_a_time = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let work = workdir("timeline-1gib").unwrap();
    let (dir, events) = offline_collection(work.path(), 1, 1 << 30);
    let collector = Collector::start(work.path()).unwrap();
    let pid = collector.pid().unwrap();
    std::thread::sleep(Duration::from_secs(1));
    let before = vm(pid, "VmRSS");
    let peak_reset = reset_peak(pid);
    let started = Instant::now();
    let c = import(&collector, &dir, Duration::from_secs(1200));
    let took = started.elapsed();
    let peak = if peak_reset {
        vm(pid, "VmHWM")
    } else {
        vm(pid, "VmHWM").max(before)
    };
    eprintln!(
        "1 GiB events.jsonl, {events} events: imported and indexed in {took:.0?}; collector RSS {} MiB before, peak {} MiB",
        before / MIB,
        peak / MIB
    );
    assert!(
        peak < before + 256 * MIB,
        "collector peak RSS {} MiB, more than 256 MiB over the {} MiB before the import",
        peak / MIB,
        before / MIB
    );
    // What the import needed is given back. (Measured before the queries below: searching
    // 2.5 M rows fills SQLite's page cache again, which is bounded on its own.)
    let settled = wait_for(
        "the collector's RSS to come back within 64 MiB of where it was",
        Duration::from_secs(60),
        || {
            let rss = vm(pid, "VmRSS");
            Ok((rss < before + 64 * MIB).then_some(rss))
        },
    )
    .unwrap_or_else(|e| panic!("{e:#}: {} MiB now", vm(pid, "VmRSS") / MIB));
    eprintln!("collector RSS settled at {} MiB", settled / MIB);
    let item = &items(&c)[0];
    let rec = source_of(&collector, &s(item, "id").unwrap());
    assert_eq!(rec["parser"], "event_journal", "{rec}");
    assert!(rec["error"].is_null(), "{rec}");
    assert_eq!(rec["unparsed"], 0, "{rec}");
    assert_eq!(rec["events"], events, "every line is a new event: {rec}");
    let host_id = s(&c, "host_id").unwrap();
    assert_eq!(events_found(&collector, &host_id, events), events);
}

/// 36 collections at once, each with a 48 MiB `events.jsonl` (~115,000 events, 12 chunks).
/// The size is what matters to memory before this change (about 7.5x the item each: 36 of
/// these would have wanted some 13 GiB) and makes every item stream through many chunks and
/// batches, while 1.7 GiB of events in all is generated, imported and indexed in about two
/// minutes on a 2-core machine.
#[test]
fn thirty_six_collections_with_large_events_jsonl_at_once_keep_the_collector_under_1_gib() {
    let _one_at_a_time = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    const N: u32 = 36;
    let work = workdir("timeline-36").unwrap();
    let dirs: Vec<(PathBuf, u64)> = (0..N)
        .map(|h| offline_collection(work.path(), 100 + h, 48 * MIB))
        .collect();
    let collector = Arc::new(Collector::start(work.path()).unwrap());
    let pid = collector.pid().unwrap();
    let before = vm(pid, "VmRSS");
    let started = Instant::now();
    let imports: Vec<_> = dirs
        .iter()
        .map(|(dir, _)| {
            let (collector, dir) = (collector.clone(), dir.clone());
            std::thread::spawn(move || import(&collector, &dir, Duration::from_secs(900)))
        })
        .collect();
    // The peak is sampled while they run as well as read at the end (VmHWM).
    let mut sampled = 0;
    while !imports.iter().all(|t| t.is_finished()) {
        sampled = sampled.max(vm(pid, "VmRSS"));
        std::thread::sleep(Duration::from_millis(200));
    }
    let collections: Vec<Value> = imports.into_iter().map(|t| t.join().unwrap()).collect();
    let took = started.elapsed();
    let peak = vm(pid, "VmHWM");
    eprintln!(
        "{N} imports at once in {took:.0?}: collector RSS {} MiB before, peak {} MiB (sampled {} MiB)",
        before / MIB,
        peak / MIB,
        sampled / MIB
    );
    for (c, (_, events)) in collections.iter().zip(&dirs) {
        assert_eq!(c["status"], "sealed", "{}", summary(c));
        let rec = source_of(&collector, &s(&items(c)[0], "id").unwrap());
        assert!(rec["error"].is_null(), "{rec}");
        assert_eq!(rec["events"], *events, "every event indexed: {rec}");
        assert_eq!(rec["unparsed"], 0, "{rec}");
    }
    assert!(
        peak < 1 << 30,
        "collector peak RSS {} MiB with {N} imports at once",
        peak / MIB
    );
}
