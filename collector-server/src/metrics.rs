//! The collector's counters for operators (`GET /metrics`, the Prometheus text format): what
//! arrives, what fails, and how long the database and the object store take. Atomics only,
//! no locks on the evidence path; labels are fixed names from the code, never from the wire,
//! so a hostile agent cannot grow the set of series.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Latency buckets, in seconds: 1 ms to 10 s.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

#[derive(Default)]
pub struct Histogram {
    counts: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_us: AtomicU64,
    errors: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, took: Duration, failed: bool) {
        let s = took.as_secs_f64();
        for (i, b) in BUCKETS.iter().enumerate() {
            if s <= *b {
                self.counts[i].fetch_add(1, Relaxed);
            }
        }
        self.count.fetch_add(1, Relaxed);
        self.sum_us
            .fetch_add(u64::try_from(took.as_micros()).unwrap_or(u64::MAX), Relaxed);
        if failed {
            self.errors.fetch_add(1, Relaxed);
        }
    }

    fn render(&self, out: &mut String, name: &str, label: &str) {
        let sep = if label.is_empty() { "" } else { "," };
        for (i, b) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "{name}_seconds_bucket{{{label}{sep}le=\"{b}\"}} {}",
                self.counts[i].load(Relaxed)
            );
        }
        let n = self.count.load(Relaxed);
        let _ = writeln!(out, "{name}_seconds_bucket{{{label}{sep}le=\"+Inf\"}} {n}");
        let braces = if label.is_empty() {
            String::new()
        } else {
            format!("{{{label}}}")
        };
        let _ = writeln!(
            out,
            "{name}_seconds_sum{braces} {}",
            self.sum_us.load(Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "{name}_seconds_count{braces} {n}");
        let _ = writeln!(
            out,
            "{name}_errors_total{braces} {}",
            self.errors.load(Relaxed)
        );
    }
}

/// The object store's calls, by operation.
pub const OBJECT_STORE_OPS: [&str; 8] = [
    "put",
    "get",
    "head",
    "delete",
    "list",
    "put_head",
    "get_head",
    "object_lock",
];

#[derive(Default)]
pub struct Metrics {
    pub chunks_received: AtomicU64,
    /// Raw (decoded) bytes of the chunks stored.
    pub bytes_received: AtomicU64,
    /// Bytes as stored (compressed).
    pub bytes_stored: AtomicU64,
    /// Chunks refused because they did not verify, and items whose manifest did not.
    pub verification_failures: AtomicU64,
    pub items_sealed: AtomicU64,
    /// Item upload streams open now.
    pub uploads_in_progress: AtomicU64,
    /// Timeline rows written (new, after dedup).
    pub timeline_events: AtomicU64,
    /// Recording a chunk in the database.
    pub database: Histogram,
    /// The readiness probe's `SELECT 1`-like call.
    pub database_probe: Histogram,
    object_store: [Histogram; OBJECT_STORE_OPS.len()],
}

/// What the caller knows at render time and the counters do not.
pub struct Gauges {
    pub agents_connected: usize,
    pub storage_full: bool,
    pub store_unavailable: bool,
}

impl Metrics {
    pub fn object_store(&self, op: &str, took: Duration, failed: bool) {
        if let Some(i) = OBJECT_STORE_OPS.iter().position(|o| *o == op) {
            self.object_store[i].observe(took, failed);
        }
    }

    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    /// The Prometheus text exposition (version 0.0.4).
    pub fn render(&self, g: &Gauges) -> String {
        let mut out = String::with_capacity(8 << 10);
        let gauge = |out: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        };
        let counter = |out: &mut String, name: &str, help: &str, v: &AtomicU64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                v.load(Relaxed)
            );
        };
        gauge(
            &mut out,
            "cairn_agents_connected",
            "Agents connected to this instance now.",
            g.agents_connected as u64,
        );
        gauge(
            &mut out,
            "cairn_uploads_in_progress",
            "Item upload streams open now.",
            self.uploads_in_progress.load(Relaxed),
        );
        gauge(
            &mut out,
            "cairn_storage_full",
            "1 while evidence cannot be stored for lack of room.",
            u64::from(g.storage_full),
        );
        gauge(
            &mut out,
            "cairn_object_store_unavailable",
            "1 while the blob store cannot be reached or refuses writes.",
            u64::from(g.store_unavailable),
        );
        counter(
            &mut out,
            "cairn_chunks_received_total",
            "Chunks verified and stored.",
            &self.chunks_received,
        );
        counter(
            &mut out,
            "cairn_bytes_received_total",
            "Raw bytes of the chunks verified and stored.",
            &self.bytes_received,
        );
        counter(
            &mut out,
            "cairn_bytes_stored_total",
            "Bytes of the chunks as stored (compressed).",
            &self.bytes_stored,
        );
        counter(
            &mut out,
            "cairn_verification_failures_total",
            "Chunks and items refused because their bytes did not match their hashes or manifest.",
            &self.verification_failures,
        );
        counter(
            &mut out,
            "cairn_items_sealed_total",
            "Items verified whole and sealed.",
            &self.items_sealed,
        );
        counter(
            &mut out,
            "cairn_timeline_events_total",
            "Timeline rows written (after dedup); its rate is the ingest rate.",
            &self.timeline_events,
        );
        for (name, help, h) in [
            (
                "cairn_database_record_chunk",
                "Recording a stored chunk in the metadata database.",
                &self.database,
            ),
            (
                "cairn_database_probe",
                "The readiness probe's round trip to the metadata database.",
                &self.database_probe,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name}_seconds {help}\n# TYPE {name}_seconds histogram"
            );
            h.render(&mut out, name, "");
        }
        let _ = writeln!(
            out,
            "# HELP cairn_object_store_request_seconds Object store calls by operation.\n# TYPE cairn_object_store_request_seconds histogram"
        );
        for (op, h) in OBJECT_STORE_OPS.iter().zip(&self.object_store) {
            h.render(
                &mut out,
                "cairn_object_store_request",
                &format!("op=\"{op}\""),
            );
        }
        if let Some(rss) = resident_bytes() {
            gauge(
                &mut out,
                "cairn_process_resident_bytes",
                "Resident memory of this collector process.",
                rss,
            );
        }
        out
    }
}

/// The process's resident set, from `/proc/self/statm`.
pub fn resident_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = s.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_histograms_in_prometheus_text() {
        let m = Metrics::default();
        Metrics::add(&m.chunks_received, 3);
        m.object_store("put", Duration::from_millis(3), false);
        m.object_store("put", Duration::from_millis(700), true);
        m.object_store("not-an-op", Duration::from_millis(1), true);
        let text = m.render(&Gauges {
            agents_connected: 2,
            storage_full: false,
            store_unavailable: true,
        });
        assert!(text.contains("\ncairn_chunks_received_total 3\n"), "{text}");
        assert!(text.contains("cairn_agents_connected 2\n"));
        assert!(text.contains("cairn_object_store_unavailable 1\n"));
        assert!(
            text.contains("cairn_object_store_request_seconds_bucket{op=\"put\",le=\"0.005\"} 1\n")
        );
        assert!(text.contains("cairn_object_store_request_seconds_bucket{op=\"put\",le=\"1\"} 2\n"));
        assert!(text.contains("cairn_object_store_request_seconds_count{op=\"put\"} 2\n"));
        assert!(text.contains("cairn_object_store_request_errors_total{op=\"put\"} 1\n"));
        assert!(!text.contains("not-an-op"));
        // Every sample line is `name{labels} number`.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (_, v) = line.rsplit_once(' ').unwrap();
            assert!(v.parse::<f64>().is_ok(), "{line}");
        }
    }
}
