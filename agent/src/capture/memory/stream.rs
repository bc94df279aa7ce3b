//! Turns a memory layout into one ordered byte stream for the evidence pipeline.
//!
//! Both writers (process cores and physical memory images) compute their whole layout first —
//! headers, then where each memory range goes — so the item can be produced front to back,
//! never staged on local disk. A [`PieceReader`] walks that layout: header bytes, padding, and
//! ranges read from the source (`/proc/PID/mem`, `/proc/kcore`...). Pages the source refuses
//! are written as zeros, because the layout is fixed, and every one of them is recorded as a
//! [`Gap`] with the address and the OS error. A source that disappears (the process exited)
//! ends the reading: what remains is recorded as one gap per range, never silently zeroed.

use std::io::{self, Read};
use std::sync::{Arc, Mutex};

use cairn_protocol::manifest::Gap;
use sha2::{Digest, Sha256};

const PAGE: u64 = 4096;
/// After a refused page, read page by page for this long before trying large reads again.
const CAREFUL_SPAN: u64 = 1 << 20;

/// Where bytes come from.
pub trait MemorySource: Send {
    /// Reads at `at` (a file offset or an address, as the source defines it).
    fn read_at(&mut self, at: u64, buf: &mut [u8]) -> io::Result<usize>;
    /// Why the source is gone for good, if it is (checked when a read gives nothing).
    fn gone(&self) -> Option<String>;
}

/// One part of the stream.
#[derive(Debug, Clone)]
pub enum Piece {
    Bytes(Vec<u8>),
    Zeros(u64),
    /// A range known to be unreadable before reading starts: zeros, recorded as a gap.
    Missing {
        /// The address the range starts at, as gap reasons name it.
        addr: u64,
        len: u64,
        reason: String,
        hash_slot: Option<usize>,
    },
    /// `len` bytes from the source at `at`; `addr` is the address named in gap reasons.
    /// With `hash_slot`, the SHA-256 of the bytes as written is reported in that slot; consecutive
    /// pieces with the same slot (a RAM range split by what the source maps) share one hash.
    Source {
        at: u64,
        addr: u64,
        len: u64,
        hash_slot: Option<usize>,
    },
}

impl Piece {
    pub fn len(&self) -> u64 {
        match self {
            Piece::Bytes(b) => b.len() as u64,
            Piece::Zeros(n) => *n,
            Piece::Missing { len, .. } => *len,
            Piece::Source { len, .. } => *len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn hash_slot(&self) -> Option<usize> {
        match self {
            Piece::Source { hash_slot, .. } | Piece::Missing { hash_slot, .. } => *hash_slot,
            _ => None,
        }
    }
}

/// What reading found, shared with whoever writes the manifest.
#[derive(Debug, Default, Clone)]
pub struct StreamReport {
    pub gaps: Vec<Gap>,
    /// Set when the source went away during reading.
    pub gone: Option<String>,
    /// SHA-256 per hash slot, filled as each hashed piece ends.
    pub slot_sha256: Vec<Option<String>>,
    pub unreadable_bytes: u64,
}

pub type SharedReport = Arc<Mutex<StreamReport>>;

pub struct PieceReader<S: MemorySource> {
    source: S,
    pieces: Vec<Piece>,
    idx: usize,
    off: u64,
    /// Offset of the next byte in the whole stream.
    pos: u64,
    careful_until: u64,
    hasher: Option<(usize, Sha256)>,
    report: SharedReport,
}

impl<S: MemorySource> PieceReader<S> {
    pub fn new(source: S, pieces: Vec<Piece>) -> (Self, SharedReport) {
        let slots = pieces
            .iter()
            .filter_map(|p| p.hash_slot().map(|s| s + 1))
            .max()
            .unwrap_or(0);
        let report = Arc::new(Mutex::new(StreamReport {
            slot_sha256: vec![None; slots],
            ..Default::default()
        }));
        (
            PieceReader {
                source,
                pieces,
                idx: 0,
                off: 0,
                pos: 0,
                careful_until: 0,
                hasher: None,
                report: report.clone(),
            },
            report,
        )
    }

    /// Total length of the stream.
    pub fn len(pieces: &[Piece]) -> u64 {
        pieces.iter().map(Piece::len).sum()
    }

    fn with_report<T>(&self, f: impl FnOnce(&mut StreamReport) -> T) -> T {
        let mut r = self.report.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut r)
    }

    fn record_gap(&self, len: u64, reason: String) {
        let pos = self.pos;
        self.with_report(|r| {
            r.unreadable_bytes += len;
            if let Some(last) = r.gaps.last_mut() {
                if last.offset + last.length == pos && last.reason == reason {
                    last.length += len;
                    return;
                }
            }
            r.gaps.push(Gap {
                offset: pos,
                length: len,
                reason,
                filled_with: "zeros".into(),
            });
        });
    }

    /// Reads from the source into `buf` (whose length is at most what the piece has left).
    fn read_source(&mut self, at: u64, addr: u64, buf: &mut [u8]) -> usize {
        let gone = self.with_report(|r| r.gone.clone());
        if let Some(why) = gone {
            buf.fill(0);
            self.record_gap(buf.len() as u64, why);
            return buf.len();
        }
        let careful = self.pos < self.careful_until;
        let want = if careful {
            // Up to the next page boundary of the address.
            let to_page = PAGE - (addr % PAGE);
            (to_page as usize).min(buf.len())
        } else {
            buf.len()
        };
        match self.source.read_at(at, &mut buf[..want]) {
            Ok(n) if n > 0 => n,
            result => {
                if let Some(why) = self.source.gone() {
                    self.with_report(|r| r.gone = Some(why.clone()));
                    buf.fill(0);
                    self.record_gap(buf.len() as u64, why);
                    return buf.len();
                }
                if !careful {
                    // Find the refused page(s) one page at a time.
                    self.careful_until = self.pos + CAREFUL_SPAN;
                    return self.read_source(at, addr, buf);
                }
                let err = match result {
                    Err(e) => e.to_string(),
                    Ok(_) => "read returned no data".into(),
                };
                self.careful_until = self.pos + CAREFUL_SPAN;
                buf[..want].fill(0);
                // Adjacent refused pages share one gap; the reason names the first address.
                let reason = match self.report.lock() {
                    Ok(r) => match r.gaps.last() {
                        Some(g) if g.offset + g.length == self.pos => g.reason.clone(),
                        _ => format!("{addr:#x}: {err}"),
                    },
                    Err(_) => format!("{addr:#x}: {err}"),
                };
                self.record_gap(want as u64, reason);
                want
            }
        }
    }
}

impl<S: MemorySource> PieceReader<S> {
    fn hash(&mut self, slot: Option<usize>, bytes: &[u8]) {
        if self.hasher.as_ref().map(|h| h.0) != slot {
            self.finish_hash();
        }
        if let Some(s) = slot {
            self.hasher
                .get_or_insert_with(|| (s, Sha256::new()))
                .1
                .update(bytes);
        }
    }

    fn finish_hash(&mut self) {
        if let Some((s, h)) = self.hasher.take() {
            let sha = hex::encode(h.finalize());
            self.with_report(|r| {
                if let Some(slot) = r.slot_sha256.get_mut(s) {
                    *slot = Some(sha);
                }
            });
        }
    }
}

impl<S: MemorySource> Read for PieceReader<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let Some(piece) = self.pieces.get(self.idx) else {
                self.finish_hash();
                return Ok(0);
            };
            let left = piece.len() - self.off;
            if left == 0 {
                self.idx += 1;
                self.off = 0;
                continue;
            }
            if buf.is_empty() {
                return Ok(0);
            }
            let want = (left.min(buf.len() as u64)) as usize;
            let out = &mut buf[..want];
            let slot = piece.hash_slot();
            let n = match piece {
                Piece::Bytes(b) => {
                    let o = self.off as usize;
                    out.copy_from_slice(&b[o..o + want]);
                    want
                }
                Piece::Zeros(_) => {
                    out.fill(0);
                    want
                }
                Piece::Missing { reason, .. } => {
                    let reason = reason.clone();
                    out.fill(0);
                    self.record_gap(want as u64, reason);
                    want
                }
                &Piece::Source { at, addr, .. } => {
                    self.read_source(at + self.off, addr + self.off, out)
                }
            };
            self.hash(slot, &out[..n]);
            self.off += n as u64;
            self.pos += n as u64;
            return Ok(n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 64 KiB of memory at address 0x10000 where page 3 is unreadable; gone after `life` reads.
    struct Fake {
        life: usize,
        reads: usize,
    }

    impl MemorySource for Fake {
        fn read_at(&mut self, at: u64, buf: &mut [u8]) -> io::Result<usize> {
            self.reads += 1;
            if self.reads > self.life {
                return Ok(0);
            }
            let bad = 0x10000 + 3 * PAGE..0x10000 + 4 * PAGE;
            if bad.contains(&at) {
                return Err(io::Error::from_raw_os_error(libc::EIO));
            }
            let n = if at < bad.start && at + buf.len() as u64 > bad.start {
                return Err(io::Error::from_raw_os_error(libc::EIO));
            } else {
                buf.len()
            };
            for (i, b) in buf[..n].iter_mut().enumerate() {
                *b = ((at + i as u64) / PAGE) as u8;
            }
            Ok(n)
        }
        fn gone(&self) -> Option<String> {
            (self.reads > self.life).then(|| "process exited during capture".into())
        }
    }

    fn pieces() -> Vec<Piece> {
        vec![
            Piece::Bytes(b"HEAD".to_vec()),
            Piece::Zeros(4),
            Piece::Source {
                at: 0x10000,
                addr: 0x10000,
                len: 16 * PAGE,
                hash_slot: Some(0),
            },
        ]
    }

    #[test]
    fn refused_pages_become_recorded_zero_gaps_and_the_rest_is_read() {
        let (mut r, report) = PieceReader::new(
            Fake {
                life: usize::MAX,
                reads: 0,
            },
            pieces(),
        );
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        assert_eq!(out.len() as u64, 8 + 16 * PAGE);
        assert_eq!(&out[..4], b"HEAD");
        let rep = report.lock().unwrap().clone();
        assert_eq!(rep.gaps.len(), 1, "{:?}", rep.gaps);
        let g = &rep.gaps[0];
        assert_eq!(g.offset, 8 + 3 * PAGE);
        assert_eq!(g.length, PAGE);
        assert!(g.reason.starts_with("0x13000: "), "{}", g.reason);
        assert!(out[g.offset as usize..(g.offset + g.length) as usize]
            .iter()
            .all(|&b| b == 0));
        // Bytes after the gap are the source's.
        assert_eq!(out[(8 + 5 * PAGE) as usize], 0x15);
        let want = hex::encode(Sha256::digest(&out[8..]));
        assert_eq!(rep.slot_sha256, vec![Some(want)]);
        assert_eq!(rep.gone, None);
    }

    #[test]
    fn a_vanished_source_records_the_rest_as_a_gap() {
        let (mut r, report) = PieceReader::new(Fake { life: 1, reads: 0 }, pieces());
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        assert_eq!(out.len() as u64, 8 + 16 * PAGE);
        let rep = report.lock().unwrap().clone();
        assert_eq!(rep.gone.as_deref(), Some("process exited during capture"));
        let covered: u64 = rep.gaps.iter().map(|g| g.length).sum();
        assert!(covered > 0);
        let last = rep.gaps.last().unwrap();
        assert_eq!(last.offset + last.length, out.len() as u64);
    }
}
