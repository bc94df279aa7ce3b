//! Live event batches from the agents' sensors: each line is stored as sent (it serves
//! `GET /hosts/{id}/events`) with the fields it is found by, and becomes its timeline row in
//! the same transaction. A line that is not JSON is kept as text under kind `unparsed` rather
//! than failing the batch; an event without a readable `time` takes the time it arrived.

use super::parse::ebpf;
use super::{dedup_key, unparsed_event, Event};
use crate::error::Result;
use crate::storage::{LiveEvent, MetadataStore};

/// One line of a batch: its stored form and its timeline row.
pub fn derive(line: &str, arrived_ns: i64) -> (LiveEvent, Event) {
    // Stored as sent; parsed only for the indexed fields.
    let e: serde_json::Value =
        serde_json::from_str(line).unwrap_or_else(|_| serde_json::json!({"kind": "unparsed"}));
    let time_ns = e["time"]
        .as_str()
        .and_then(cairn_protocol::rfc3339::parse_ns)
        .unwrap_or(arrived_ns);
    let p = &e["process"];
    let live = LiveEvent {
        time_ns,
        kind: e["kind"].as_str().unwrap_or("unknown").to_string(),
        pid: p["pid"].as_u64(),
        ppid: p["ppid"].as_u64(),
        uid: p["uid"].as_u64(),
        comm: p["comm"].as_str().map(str::to_string),
        exe: p["exe"].as_str().map(str::to_string),
        container_id: p["container_id"].as_str().map(str::to_string),
        source: e["source"].as_str().map(str::to_string),
        json: line.to_string(),
    };
    let row = ebpf::from_line(line).unwrap_or_else(|| {
        let why = "not a sensor event with a time";
        let mut ev = unparsed_event(arrived_ns, "ebpf", 0, line, why);
        ev.dedup = dedup_key(&[b"ebpf", line.as_bytes()]);
        ev
    });
    (live, row)
}

/// Store a batch of JSON lines for a host; returns how many lines were stored.
pub fn store_batch(meta: &dyn MetadataStore, host_id: &str, jsonl: &str) -> Result<usize> {
    let mut live = Vec::new();
    let mut rows = Vec::new();
    for line in jsonl.lines().filter(|l| !l.trim().is_empty()) {
        let arrived = time::OffsetDateTime::now_utc().unix_timestamp_nanos() as i64;
        let (l, r) = derive(line, arrived);
        live.push(l);
        rows.push(r);
    }
    Ok(meta.insert_live_events(host_id, &live, &rows)?)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_line_that_is_not_an_event_is_kept_as_unparsed() {
        let (live, row) = derive("not json at all", 42);
        assert_eq!(live.kind, "unparsed");
        assert_eq!(live.time_ns, 42);
        assert_eq!(live.json, "not json at all");
        assert_eq!(row.kind, "unparsed");
        assert_eq!(row.source, "ebpf");
        assert_eq!(row.dedup, dedup_key(&[b"ebpf", b"not json at all"]));
        let line = r#"{"time":"2026-11-29T09:57:52Z","kind":"process_exec","process":{"pid":7,"ppid":1,"uid":0,"comm":"sh","exe":"/bin/sh"}}"#;
        let (live, row) = derive(line, 42);
        assert_eq!(live.pid, Some(7));
        assert_eq!(live.exe.as_deref(), Some("/bin/sh"));
        assert_eq!(
            live.time_ns,
            cairn_protocol::rfc3339::parse_ns("2026-11-29T09:57:52Z").unwrap()
        );
        assert_eq!(row.time_ns, live.time_ns);
    }
}
