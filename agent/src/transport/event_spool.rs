//! The event spool: live events that did not fit in memory, on disk in the agent's state
//! directory (`STATE/event-spool`), oldest first, kept across agent restarts until the
//! collector acknowledges them.
//!
//! Files are `<first seq>.spool`, lines of `SEQ<TAB>JSON`, 4 MiB each; [`EventSpool::acked`]
//! deletes a file once every event in it is acknowledged. Not to be confused with the chunk
//! spool of uploads ([`super::upload::ChunkSpool`]).

use cairn_protocol::wire::RawEvent;
use std::collections::VecDeque;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

/// A spool file is closed and a new one started past this size.
const SEGMENT_BYTES: u64 = 4 << 20;

/// One spool file: `<first seq>.spool`, lines of `SEQ<TAB>JSON`.
#[derive(Debug)]
struct Segment {
    first: u64,
    last: u64,
    count: u64,
    bytes: u64,
    path: PathBuf,
}

/// Events that did not fit in memory, on disk, oldest first.
pub(super) struct EventSpool {
    dir: PathBuf,
    segments: VecDeque<Segment>,
    /// The newest segment, still being appended to.
    writer: Option<std::io::BufWriter<std::fs::File>>,
    bytes: u64,
    max_bytes: u64,
    /// The segment being sent, read once: (its first seq, its events).
    cache: Option<(u64, Vec<(u64, RawEvent)>)>,
}

impl EventSpool {
    /// Opens the spool directory, picking up what a previous run left.
    pub(super) fn open(dir: &Path, max_bytes: u64) -> std::io::Result<EventSpool> {
        std::fs::create_dir_all(dir)?;
        let mut segments = Vec::new();
        for e in std::fs::read_dir(dir)? {
            let path = e?.path();
            let Some(first) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".spool"))
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            let events = read_segment(&path)?;
            let bytes = std::fs::metadata(&path)?.len();
            match events.last() {
                Some(&(last, _)) => segments.push(Segment {
                    first,
                    last,
                    count: events.len() as u64,
                    bytes,
                    path,
                }),
                None => std::fs::remove_file(&path)?,
            }
        }
        segments.sort_by_key(|s| s.first);
        Ok(EventSpool {
            dir: dir.to_path_buf(),
            bytes: segments.iter().map(|s| s.bytes).sum(),
            segments: segments.into(),
            writer: None,
            max_bytes,
            cache: None,
        })
    }

    /// Over its bound with a segment to spare: the oldest must go.
    pub(super) fn over_bound(&self) -> bool {
        self.bytes > self.max_bytes && self.segments.len() > 1
    }

    pub(super) fn count(&self) -> u64 {
        self.segments.iter().map(|s| s.count).sum()
    }

    pub(super) fn next_seq(&self) -> u64 {
        self.segments.back().map(|s| s.last + 1).unwrap_or(0)
    }

    pub(super) fn append(&mut self, seq: u64, e: &RawEvent) -> std::io::Result<()> {
        let full = self
            .segments
            .back()
            .is_none_or(|s| s.bytes >= SEGMENT_BYTES);
        if self.writer.is_none() || full {
            self.seal()?;
            let path = self.dir.join(format!("{seq}.spool"));
            self.writer = Some(std::io::BufWriter::new(std::fs::File::create(&path)?));
            self.segments.push_back(Segment {
                first: seq,
                last: seq,
                count: 0,
                bytes: 0,
                path,
            });
        }
        let line = format!("{seq}\t{}\n", e.get());
        if let Some(w) = self.writer.as_mut() {
            w.write_all(line.as_bytes())?;
        }
        if let Some(s) = self.segments.back_mut() {
            s.last = seq;
            s.count += 1;
            s.bytes += line.len() as u64;
        }
        self.bytes += line.len() as u64;
        Ok(())
    }

    /// Flushes what was appended to the segment being written.
    pub(super) fn seal_keep_open(&mut self) -> std::io::Result<()> {
        match self.writer.as_mut() {
            Some(w) if !w.buffer().is_empty() => w.flush(),
            _ => Ok(()),
        }
    }

    /// Closes the segment being written: it is about to be read, or a new one starts.
    fn seal(&mut self) -> std::io::Result<()> {
        if let Some(mut w) = self.writer.take() {
            w.flush()?;
        }
        Ok(())
    }

    /// Drops the oldest segment unsent; returns (events it held, events its loss markers
    /// reported), for the next marker.
    pub(super) fn drop_oldest(&mut self) -> (u64, u64) {
        let Some(front) = self.segments.front() else {
            return (0, 0);
        };
        let (mut events, mut reported) = (0, 0);
        match read_segment(&front.path) {
            Ok(all) => {
                for (_, e) in &all {
                    match lost_count(e) {
                        Some(n) => reported += n,
                        None => events += 1,
                    }
                }
            }
            Err(_) => events = front.count,
        }
        self.remove_oldest();
        (events, reported)
    }

    /// Deletes the oldest segment's file.
    fn remove_oldest(&mut self) {
        let Some(s) = self.segments.pop_front() else {
            return;
        };
        if self.segments.is_empty() {
            self.writer = None;
        }
        let _ = std::fs::remove_file(&s.path);
        self.bytes -= s.bytes;
        if self.cache.as_ref().is_some_and(|c| c.0 == s.first) {
            self.cache = None;
        }
    }

    /// Up to `max` spooled events after `after`, oldest first.
    pub(super) fn batch_after(
        &mut self,
        after: Option<u64>,
        max: usize,
    ) -> Option<(u64, Vec<RawEvent>)> {
        let i = self
            .segments
            .iter()
            .position(|s| after.is_none_or(|a| s.last > a))?;
        if i + 1 == self.segments.len() && self.writer.is_some() {
            // Sending from the segment still being written: close it first.
            if let Err(e) = self.seal() {
                tracing::warn!("event spool: {e}");
            }
        }
        let first = self.segments[i].first;
        if self.cache.as_ref().is_none_or(|c| c.0 != first) {
            match read_segment(&self.segments[i].path) {
                Ok(events) => self.cache = Some((first, events)),
                Err(e) => {
                    tracing::warn!("event spool {}: {e}", self.segments[i].path.display());
                    return None;
                }
            }
        }
        let (_, events) = self.cache.as_ref()?;
        let mut it = events
            .iter()
            .filter(|(s, _)| after.is_none_or(|a| *s > a))
            .peekable();
        let first_seq = it.peek()?.0;
        Some((first_seq, it.take(max).map(|(_, e)| e.clone()).collect()))
    }

    /// Deletes segments the collector has all of. An event sent from memory may be spilled
    /// before its acknowledgment arrives, so the segment being written can be done too.
    pub(super) fn acked(&mut self, upto: u64) {
        while self.segments.front().is_some_and(|s| s.last <= upto) {
            self.remove_oldest();
        }
    }
}

/// The count an `events_lost` marker of the live stream reports (`None` for other events).
pub(super) fn lost_count(e: &RawEvent) -> Option<u64> {
    if !e.get().contains("\"events_lost\"") {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(e.get()).ok()?;
    if v["kind"] != "events_lost" || v["lost"]["kind"] != "live_stream" {
        return None;
    }
    v["lost"]["count"].as_u64()
}

/// A spool file's events; a torn last line (the agent died mid-write) is skipped.
fn read_segment(path: &Path) -> std::io::Result<Vec<(u64, RawEvent)>> {
    let f = std::io::BufReader::new(std::fs::File::open(path)?);
    let mut out = Vec::new();
    for line in f.split(b'\n') {
        let line = line?;
        let Ok(text) = std::str::from_utf8(&line) else {
            continue;
        };
        let Some((seq, json)) = text.split_once('\t') else {
            continue;
        };
        if let (Ok(seq), Ok(e)) = (seq.parse(), RawEvent::from_json(json.to_string())) {
            out.push((seq, e));
        }
    }
    Ok(out)
}
