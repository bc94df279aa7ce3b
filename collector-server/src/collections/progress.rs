//! How far a running collection has come, from its items as the collector holds them: bytes
//! in, the rate, and an ETA where every item begun has said how long it should be.
//!
//! Honest by construction: an item of unknown size (memory is sized as it is read) leaves
//! the ETA unknown rather than short, and items the host has not begun yet are not known here
//! at all, so the ETA is only ever "for the items begun so far".

use crate::storage::{ItemRow, ItemStatus};
use serde::Serialize;
use time::OffsetDateTime;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Progress {
    pub items_begun: usize,
    pub items_sealed: usize,
    /// Raw bytes in: a sealed item's length, a receiving item's chunks (never more than it
    /// said it would be).
    pub bytes_received: u64,
    /// What the begun items said they would be, where each said; None if any did not.
    pub bytes_expected: Option<u64>,
    /// Begun items still open whose size is not known before reading.
    pub items_of_unknown_size: usize,
    /// Seconds since the first item began.
    pub elapsed_secs: f64,
    pub bytes_per_sec: f64,
    /// Seconds left at the rate so far, for the items begun so far; None when unknown.
    pub eta_secs: Option<f64>,
}

/// The progress of a collection whose items are `items`, at `now`.
pub fn progress(items: &[ItemRow], now: OffsetDateTime) -> Progress {
    let chunk = cairn_protocol::CHUNK_SIZE as u64;
    let mut p = Progress {
        items_begun: items.len(),
        items_sealed: 0,
        bytes_received: 0,
        bytes_expected: Some(0),
        items_of_unknown_size: 0,
        elapsed_secs: 0.0,
        bytes_per_sec: 0.0,
        eta_secs: None,
    };
    let mut first: Option<OffsetDateTime> = None;
    for i in items {
        if let Ok(t) = cairn_protocol::rfc3339::parse(&i.started_at) {
            first = Some(first.map_or(t, |f| f.min(t)));
        }
        let expected = i.header.as_ref().and_then(|h| h.expected_len);
        let done = i.status != ItemStatus::Receiving;
        let got = match (done, i.raw_len) {
            (true, Some(n)) => n,
            _ => {
                let n = i.chunks_received.saturating_mul(chunk);
                expected.map_or(n, |e| n.min(e))
            }
        };
        if i.status == ItemStatus::Sealed {
            p.items_sealed += 1;
        }
        p.bytes_received = p.bytes_received.saturating_add(got);
        // A finished item's size is what was read, whatever it expected.
        let size = if done { Some(got) } else { expected };
        match size {
            Some(s) => p.bytes_expected = p.bytes_expected.map(|e| e.saturating_add(s)),
            None => {
                p.items_of_unknown_size += 1;
                p.bytes_expected = None;
            }
        }
    }
    if let Some(f) = first {
        p.elapsed_secs = (now - f).as_seconds_f64().max(0.0);
    }
    if p.elapsed_secs > 0.0 {
        p.bytes_per_sec = p.bytes_received as f64 / p.elapsed_secs;
    }
    if let Some(e) = p.bytes_expected {
        let left = e.saturating_sub(p.bytes_received);
        if left == 0 {
            p.eta_secs = Some(0.0);
        } else if p.bytes_per_sec > 0.0 {
            p.eta_secs = Some(left as f64 / p.bytes_per_sec);
        }
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_protocol::manifest::{ItemHeader, ItemKind, Source};

    fn item(
        status: ItemStatus,
        chunks: u64,
        raw_len: Option<u64>,
        expected: Option<u64>,
    ) -> ItemRow {
        ItemRow {
            id: "i".into(),
            collection_id: "c".into(),
            name: "n".into(),
            kind: "file".into(),
            status,
            raw_len,
            sha256: None,
            chunk_count: None,
            chunks_received: chunks,
            duplicate_chunks: 0,
            started_at: "2026-12-02T10:00:00Z".into(),
            sealed_at: None,
            error: None,
            header: Some(ItemHeader {
                item_id: "i".into(),
                collection_id: "c".into(),
                kind: ItemKind::File,
                source: Source::default(),
                chunk_size: cairn_protocol::CHUNK_SIZE as u64,
                acquisition_start: "2026-12-02T10:00:00Z".into(),
                expected_len: expected,
            }),
            manifest: None,
        }
    }

    fn at(secs: i64) -> OffsetDateTime {
        cairn_protocol::rfc3339::parse("2026-12-02T10:00:00Z")
            .map(|t| t + time::Duration::seconds(secs))
            .unwrap()
    }

    #[test]
    fn eta_from_the_rate_so_far_for_items_of_known_size() {
        let chunk = cairn_protocol::CHUNK_SIZE as u64;
        // One sealed item of 4 chunks, one receiving with 4 of 12 chunks in, after 8 s.
        let items = [
            item(ItemStatus::Sealed, 4, Some(4 * chunk), Some(4 * chunk)),
            item(ItemStatus::Receiving, 4, None, Some(12 * chunk)),
        ];
        let p = progress(&items, at(8));
        assert_eq!((p.items_begun, p.items_sealed), (2, 1));
        assert_eq!(p.bytes_received, 8 * chunk);
        assert_eq!(p.bytes_expected, Some(16 * chunk));
        assert_eq!(p.bytes_per_sec, chunk as f64);
        assert_eq!(p.eta_secs, Some(8.0));
    }

    #[test]
    fn an_item_of_unknown_size_leaves_the_eta_unknown() {
        let chunk = cairn_protocol::CHUNK_SIZE as u64;
        let items = [
            item(ItemStatus::Receiving, 2, None, Some(4 * chunk)),
            item(ItemStatus::Receiving, 3, None, None),
        ];
        let p = progress(&items, at(5));
        assert_eq!(p.bytes_received, 5 * chunk);
        assert_eq!(p.items_of_unknown_size, 1);
        assert_eq!((p.bytes_expected, p.eta_secs), (None, None));
    }

    #[test]
    fn a_short_read_and_a_finished_item_count_what_was_read() {
        let chunk = cairn_protocol::CHUNK_SIZE as u64;
        // A file planned at 10 chunks that shrank to 3, sealed; one that failed with 1 in.
        let items = [
            item(ItemStatus::Sealed, 3, Some(3 * chunk), Some(10 * chunk)),
            item(ItemStatus::Failed, 1, None, None),
            // Chunks are counted whole: never more than the item said it would be.
            item(ItemStatus::Receiving, 1, None, Some(100)),
        ];
        let p = progress(&items, at(4));
        assert_eq!(p.bytes_received, 3 * chunk + chunk + 100);
        assert_eq!(p.bytes_expected, Some(3 * chunk + chunk + 100));
        assert_eq!(p.eta_secs, Some(0.0));
    }
}
