//! The flight recorder: the host's recent past, on disk, bounded, surviving restarts.
//!
//! Events are appended as JSON lines to zstd segments under `STATE/journal/`. The active
//! segment is written as a series of independent zstd frames (one per flush, at most every
//! second), so a crash loses at most the last unflushed second and never corrupts what came
//! before: on reopen the active segment is cut back to its last complete frame and closed.
//! Segments are deleted oldest first when the journal exceeds its size or age bound, and each
//! deletion is counted (`evicted_segments`) — a bound, never a silent gap.
//!
//! A collection asks for a window (`slice`) and gets plain JSON lines, one event per line, in
//! time order as recorded.

use anyhow::{Context, Result};
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct RecorderConfig {
    pub max_bytes: u64,
    pub max_age: Duration,
    /// Rotate the active segment past this many compressed bytes.
    pub segment_bytes: u64,
    /// Flush buffered events at least this often.
    pub flush_every: Duration,
}

impl Default for RecorderConfig {
    fn default() -> Self {
        RecorderConfig {
            max_bytes: 256 * 1024 * 1024,
            max_age: Duration::from_secs(24 * 3600),
            segment_bytes: 8 * 1024 * 1024,
            flush_every: Duration::from_secs(1),
        }
    }
}

/// Closed segment file name: `seg-<first ns>-<last ns>.jsonl.zst`.
fn segment_name(first: i64, last: i64) -> String {
    format!("seg-{first:020}-{last:020}.jsonl.zst")
}

fn parse_segment_name(name: &str) -> Option<(i64, i64)> {
    let rest = name.strip_prefix("seg-")?.strip_suffix(".jsonl.zst")?;
    let (a, b) = rest.split_once('-')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

const ACTIVE: &str = "active.jsonl.zst";

pub struct FlightRecorder {
    dir: PathBuf,
    cfg: RecorderConfig,
    active: File,
    active_bytes: u64,
    active_first: Option<i64>,
    active_last: i64,
    /// Lines waiting for the next flush: `<time ns> <json>\n`.
    buffer: Vec<u8>,
    last_flush: Instant,
    /// Events that were recorded and later deleted by the size or age bound.
    pub evicted_segments: u64,
}

impl FlightRecorder {
    pub fn open(dir: &Path, cfg: RecorderConfig) -> Result<FlightRecorder> {
        fs::create_dir_all(dir)
            .with_context(|| format!("cannot create journal directory {}", dir.display()))?;
        let active_path = dir.join(ACTIVE);
        if active_path.exists() {
            recover_active(dir, &active_path)?;
        }
        let active = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&active_path)
            .with_context(|| format!("cannot open {}", active_path.display()))?;
        let mut r = FlightRecorder {
            dir: dir.to_path_buf(),
            cfg,
            active,
            active_bytes: 0,
            active_first: None,
            active_last: 0,
            buffer: Vec::new(),
            last_flush: Instant::now(),
            evicted_segments: 0,
        };
        r.enforce_bounds(now_ns())?;
        Ok(r)
    }

    /// Record one event (its JSON without a trailing newline) at `time_ns` (Unix ns).
    pub fn append(&mut self, time_ns: i64, json: &[u8]) -> Result<()> {
        self.buffer.extend(time_ns.to_string().as_bytes());
        self.buffer.push(b' ');
        // A raw newline inside the JSON would split the record; serde_json never writes one,
        // but the journal does not rely on its callers for that.
        self.buffer
            .extend(json.iter().map(|&b| if b == b'\n' { b' ' } else { b }));
        self.buffer.push(b'\n');
        self.active_first.get_or_insert(time_ns);
        self.active_last = self.active_last.max(time_ns);
        if self.last_flush.elapsed() >= self.cfg.flush_every || self.buffer.len() > 1024 * 1024 {
            self.flush()?;
        }
        Ok(())
    }

    /// Write buffered events as one zstd frame.
    pub fn flush(&mut self) -> Result<()> {
        self.last_flush = Instant::now();
        if self.buffer.is_empty() {
            return Ok(());
        }
        let frame = zstd::bulk::compress(&self.buffer, 3)?;
        self.active.write_all(&frame)?;
        self.active_bytes += frame.len() as u64;
        self.buffer.clear();
        if self.active_bytes >= self.cfg.segment_bytes {
            self.rotate()?;
        }
        Ok(())
    }

    fn rotate(&mut self) -> Result<()> {
        self.active.sync_data()?;
        let first = self.active_first.unwrap_or(self.active_last);
        fs::rename(
            self.dir.join(ACTIVE),
            self.dir.join(segment_name(first, self.active_last)),
        )?;
        self.active = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(ACTIVE))?;
        self.active_bytes = 0;
        self.active_first = None;
        self.enforce_bounds(now_ns())
    }

    fn closed_segments(&self) -> Result<Vec<(i64, i64, PathBuf, u64)>> {
        let mut v = Vec::new();
        for e in fs::read_dir(&self.dir)? {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some((a, b)) = parse_segment_name(&name) {
                v.push((a, b, e.path(), e.metadata().map(|m| m.len()).unwrap_or(0)));
            }
        }
        v.sort();
        Ok(v)
    }

    /// Delete the oldest segments beyond the size bound or the age bound.
    fn enforce_bounds(&mut self, now: i64) -> Result<()> {
        let segs = self.closed_segments()?;
        let mut total: u64 = segs.iter().map(|s| s.3).sum::<u64>() + self.active_bytes;
        let oldest_allowed = now - self.cfg.max_age.as_nanos() as i64;
        for (_, last, path, len) in segs {
            if total <= self.cfg.max_bytes && last >= oldest_allowed {
                break;
            }
            fs::remove_file(&path)?;
            total = total.saturating_sub(len);
            self.evicted_segments += 1;
        }
        Ok(())
    }

    /// Events with `from_ns <= time <= to_ns`, as JSON lines (one event per line).
    pub fn slice(&mut self, from_ns: i64, to_ns: i64) -> Result<Vec<u8>> {
        self.flush()?;
        let mut out = Vec::new();
        for (first, last, path, _) in self.closed_segments()? {
            if last < from_ns || first > to_ns {
                continue;
            }
            filter_segment(&path, from_ns, to_ns, &mut out)?;
        }
        filter_segment(&self.dir.join(ACTIVE), from_ns, to_ns, &mut out)?;
        Ok(out)
    }
}

/// Read a window of a journal without touching it (for `cairn-agent collect` while an agent
/// may be writing it): closed segments and the complete frames of the active one.
pub fn read_slice(dir: &Path, from_ns: i64, to_ns: i64) -> Result<Vec<u8>> {
    let mut segs = Vec::new();
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            if let Some((a, b)) = parse_segment_name(&e.file_name().to_string_lossy()) {
                segs.push((a, b, e.path()));
            }
        }
    }
    segs.sort();
    let mut out = Vec::new();
    for (first, last, path) in segs {
        if last >= from_ns && first <= to_ns {
            filter_segment(&path, from_ns, to_ns, &mut out)?;
        }
    }
    filter_segment(&dir.join(ACTIVE), from_ns, to_ns, &mut out)?;
    Ok(out)
}

/// Unix time in nanoseconds of an RFC 3339 timestamp (an event's `time`).
pub fn time_ns(rfc3339: &str) -> Option<i64> {
    cairn_protocol::rfc3339::parse(rfc3339)
        .ok()
        .map(|t| t.unix_timestamp_nanos().clamp(0, i64::MAX as i128) as i64)
}

pub fn now_ns() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos()).clamp(0, i64::MAX as i128) as i64
}

/// Decode a segment's frames, stopping quietly at a torn last frame.
fn decode_segment(path: &Path) -> Result<Vec<u8>> {
    let mut raw = Vec::new();
    match File::open(path) {
        Ok(mut f) => {
            f.read_to_end(&mut raw)?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    }
    let mut out = Vec::new();
    let mut dec = zstd::stream::read::Decoder::new(&raw[..])?;
    // A torn final frame ends decoding with an error after all complete frames were produced.
    let _ = dec.read_to_end(&mut out);
    Ok(out)
}

fn filter_segment(path: &Path, from: i64, to: i64, out: &mut Vec<u8>) -> Result<()> {
    let data = decode_segment(path)?;
    for line in BufReader::new(&data[..]).split(b'\n') {
        let line = line?;
        let Some(sp) = line.iter().position(|&b| b == b' ') else {
            continue;
        };
        let Some(t) = std::str::from_utf8(&line[..sp])
            .ok()
            .and_then(|s| s.parse::<i64>().ok())
        else {
            continue;
        };
        if t >= from && t <= to {
            out.extend(&line[sp + 1..]);
            out.push(b'\n');
        }
    }
    Ok(())
}

/// After a crash: keep the complete frames of the active segment as a closed segment.
fn recover_active(dir: &Path, active: &Path) -> Result<()> {
    let data = decode_segment(active)?;
    if data.is_empty() {
        fs::remove_file(active)?;
        return Ok(());
    }
    let mut first = i64::MAX;
    let mut last = 0i64;
    let mut complete = Vec::new();
    for line in data.split(|&b| b == b'\n') {
        let Some(sp) = line.iter().position(|&b| b == b' ') else {
            continue;
        };
        if let Some(t) = std::str::from_utf8(&line[..sp])
            .ok()
            .and_then(|s| s.parse::<i64>().ok())
        {
            first = first.min(t);
            last = last.max(t);
            complete.extend(line);
            complete.push(b'\n');
        }
    }
    let target = dir.join(segment_name(first.min(last), last));
    fs::write(&target, zstd::bulk::compress(&complete, 3)?)?;
    fs::remove_file(active)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> RecorderConfig {
        RecorderConfig {
            max_bytes: 1 << 30,
            max_age: Duration::from_secs(3600),
            segment_bytes: 2048,
            flush_every: Duration::from_secs(3600),
        }
    }

    fn event(i: i64) -> Vec<u8> {
        format!(
            r#"{{"kind":"process_exec","n":{i},"pad":"{}"}}"#,
            "x".repeat((i % 50) as usize)
        )
        .into_bytes()
    }

    #[test]
    fn slice_returns_the_window_across_segments_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = FlightRecorder::open(dir.path(), cfg()).unwrap();
        let base = now_ns();
        for i in 0..2000 {
            r.append(base + i * 1000, &event(i)).unwrap();
            if i % 100 == 0 {
                r.flush().unwrap();
            }
        }
        let out = r.slice(base + 500 * 1000, base + 1499 * 1000).unwrap();
        let lines: Vec<serde_json::Value> = out
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 1000);
        assert_eq!(lines[0]["n"], 500);
        assert_eq!(lines[999]["n"], 1499);
        assert!(r.closed_segments().unwrap().len() > 3, "rotation happened");
    }

    #[test]
    fn survives_a_torn_active_segment() {
        let dir = tempfile::tempdir().unwrap();
        let base = now_ns();
        {
            let mut r = FlightRecorder::open(dir.path(), cfg()).unwrap();
            for i in 0..10 {
                r.append(base + i, &event(i)).unwrap();
            }
            r.flush().unwrap();
            for i in 10..20 {
                r.append(base + i, &event(i)).unwrap();
            }
            r.flush().unwrap();
        }
        // A crash in the middle of writing the next frame.
        let active = dir.path().join(ACTIVE);
        let mut f = OpenOptions::new().append(true).open(&active).unwrap();
        let junk: Vec<u8> = (0..5000).map(|_| rand::random::<u8>()).collect();
        f.write_all(&zstd::bulk::compress(&junk, 3).unwrap()[..200])
            .unwrap();
        drop(f);
        let mut r = FlightRecorder::open(dir.path(), cfg()).unwrap();
        r.append(base + 100, &event(100)).unwrap();
        let out = r.slice(base, base + 1000).unwrap();
        assert_eq!(
            out.split(|&b| b == b'\n').filter(|l| !l.is_empty()).count(),
            21
        );
    }

    #[test]
    fn size_bound_evicts_oldest_segments_and_counts_them() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = cfg();
        c.max_bytes = 8 * 1024;
        let mut r = FlightRecorder::open(dir.path(), c).unwrap();
        let base = now_ns();
        for i in 0..5000 {
            r.append(
                base + i,
                format!(r#"{{"n":{i},"r":{}}}"#, rand::random::<u64>()).as_bytes(),
            )
            .unwrap();
            if i % 50 == 0 {
                r.flush().unwrap();
            }
        }
        r.flush().unwrap();
        let total: u64 = r.closed_segments().unwrap().iter().map(|s| s.3).sum();
        assert!(total <= 8 * 1024, "journal holds {total} bytes");
        assert!(r.evicted_segments > 0);
        let out = r.slice(base, base + 10_000).unwrap();
        let first: serde_json::Value =
            serde_json::from_slice(out.split(|&b| b == b'\n').next().unwrap()).unwrap();
        assert!(
            first["n"].as_i64().unwrap() > 0,
            "oldest events were evicted"
        );
    }
}
