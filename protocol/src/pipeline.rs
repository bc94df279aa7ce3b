//! The hash + compress pipeline: any `Read` in, framed chunks out, in order.
//!
//! One thread reads fixed-size blocks, a second feeds them in order to the whole-item SHA-256,
//! and a small pool hashes and compresses each block on its own: reading, the item hash and
//! the chunk work overlap on as many cores as there are. Memory is bounded by the
//! channel depths (a few chunks per worker), never by the item's size, so a 64 GiB source
//! streams through a few tens of MiB.

use crate::chunk::{read_full, Chunk, ChunkError};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Read;
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::thread::JoinHandle;

#[derive(Debug, Clone)]
pub struct PipelineOptions {
    pub chunk_size: usize,
    pub zstd_level: i32,
    /// Hash/compress threads.
    pub workers: usize,
}

impl Default for PipelineOptions {
    fn default() -> Self {
        PipelineOptions {
            chunk_size: crate::CHUNK_SIZE,
            zstd_level: 1,
            workers: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2)
                .clamp(1, 4),
        }
    }
}

/// What the whole stream came to, known once the last chunk was produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamSummary {
    pub raw_len: u64,
    pub sha256: String,
    pub chunk_sha256: Vec<String>,
    /// A read error that ended the stream early; the chunks before it are good.
    pub read_error: Option<String>,
}

type Work = (u64, Vec<u8>);

/// An iterator of sealed chunks over a reader, produced in parallel and yielded in order.
pub struct ChunkStream {
    results: Receiver<(u64, Result<Chunk, ChunkError>)>,
    summary: Receiver<(u64, String, Option<String>)>,
    pending: BTreeMap<u64, Result<Chunk, ChunkError>>,
    next: u64,
    chunk_sha256: Vec<String>,
    threads: Vec<JoinHandle<()>>,
    failed: bool,
}

impl ChunkStream {
    pub fn new<R: Read + Send + 'static>(reader: R, opts: &PipelineOptions) -> ChunkStream {
        let workers = opts.workers.max(1);
        let (work_tx, work_rx) = mpsc::sync_channel::<Work>(workers * 2);
        let (res_tx, res_rx) = mpsc::sync_channel(workers * 2);
        let (sum_tx, sum_rx) = mpsc::sync_channel(1);
        let mut threads = Vec::new();
        let chunk_size = opts.chunk_size.clamp(1, crate::CHUNK_SIZE);
        let (hash_tx, hash_rx) = mpsc::sync_channel::<Block>(2);
        threads.push(std::thread::spawn(move || {
            read_blocks(reader, chunk_size, hash_tx)
        }));
        threads.push(std::thread::spawn(move || {
            hash_blocks(hash_rx, work_tx, sum_tx)
        }));
        let work_rx = std::sync::Arc::new(std::sync::Mutex::new(work_rx));
        for _ in 0..workers {
            let work_rx = work_rx.clone();
            let res_tx: SyncSender<(u64, Result<Chunk, ChunkError>)> = res_tx.clone();
            let level = opts.zstd_level;
            threads.push(std::thread::spawn(move || loop {
                let job = match work_rx.lock() {
                    Ok(rx) => rx.recv(),
                    Err(_) => return,
                };
                let Ok((index, raw)) = job else { return };
                if res_tx
                    .send((index, Chunk::seal_owned(index, raw, level)))
                    .is_err()
                {
                    return;
                }
            }));
        }
        ChunkStream {
            results: res_rx,
            summary: sum_rx,
            pending: BTreeMap::new(),
            next: 0,
            chunk_sha256: Vec::new(),
            threads,
            failed: false,
        }
    }

    /// The totals; call after the iterator returned `None`.
    pub fn finish(mut self) -> StreamSummary {
        let (raw_len, sha256, read_error) = self.summary.recv().unwrap_or((
            0,
            String::new(),
            Some("pipeline reader thread died".into()),
        ));
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        StreamSummary {
            raw_len,
            sha256,
            chunk_sha256: std::mem::take(&mut self.chunk_sha256),
            read_error,
        }
    }
}

impl Iterator for ChunkStream {
    type Item = Result<Chunk, ChunkError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        loop {
            if let Some(r) = self.pending.remove(&self.next) {
                self.next += 1;
                match &r {
                    Ok(c) => self.chunk_sha256.push(c.header.sha256_hex()),
                    Err(_) => self.failed = true,
                }
                return Some(r);
            }
            match self.results.recv() {
                Ok((i, r)) => {
                    self.pending.insert(i, r);
                }
                // All workers are gone: everything produced has been yielded.
                Err(_) => return None,
            }
        }
    }
}

/// What the reader hands the item hasher.
enum Block {
    Data(u64, Vec<u8>),
    /// The stream ended: its length, and the read error that ended it early, if any.
    End(u64, Option<String>),
}

/// Reads blocks in order and hands them to the item hasher.
fn read_blocks<R: Read>(mut reader: R, chunk_size: usize, out: SyncSender<Block>) {
    let mut total = 0u64;
    let mut index = 0u64;
    let mut error = None;
    loop {
        let mut buf = vec![0u8; chunk_size];
        match read_full(&mut reader, &mut buf) {
            Ok(0) => break,
            Ok(n) => {
                buf.truncate(n);
                total += n as u64;
                if out.send(Block::Data(index, buf)).is_err() {
                    return;
                }
                index += 1;
                if n < chunk_size {
                    break;
                }
            }
            Err(e) => {
                error = Some(format!("read failed after {total} bytes: {e}"));
                break;
            }
        }
    }
    let _ = out.send(Block::End(total, error));
}

/// Feeds the whole-item SHA-256 in order, then passes each block on to the workers.
fn hash_blocks(
    blocks: Receiver<Block>,
    work: SyncSender<Work>,
    summary: SyncSender<(u64, String, Option<String>)>,
) {
    let mut hasher = Sha256::new();
    for b in blocks {
        match b {
            Block::Data(index, buf) => {
                hasher.update(&buf);
                if work.send((index, buf)).is_err() {
                    return;
                }
            }
            Block::End(total, error) => {
                drop(work);
                let _ = summary.send((total, hex::encode(hasher.finalize()), error));
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(data: Vec<u8>, chunk_size: usize, workers: usize) -> (Vec<Chunk>, StreamSummary) {
        let opts = PipelineOptions {
            chunk_size,
            zstd_level: 1,
            workers,
        };
        let mut s = ChunkStream::new(std::io::Cursor::new(data), &opts);
        let chunks: Vec<Chunk> = s.by_ref().map(|c| c.unwrap()).collect();
        (chunks, s.finish())
    }

    #[test]
    fn reassembles_exactly_in_order() {
        let mut data = b"hello world\n".repeat(50_000);
        data.extend((0..300_000).map(|_| rand::random::<u8>()));
        data.extend(vec![0u8; 200_000]);
        let (chunks, sum) = run(data.clone(), 64 * 1024, 3);
        assert_eq!(sum.raw_len, data.len() as u64);
        assert_eq!(sum.sha256, crate::sha256_hex(&data));
        assert_eq!(chunks.len(), data.len().div_ceil(64 * 1024));
        let mut back = Vec::new();
        for (i, c) in chunks.iter().enumerate() {
            assert_eq!(c.header.index, i as u64);
            back.extend(c.open().unwrap());
        }
        assert_eq!(back, data);
        assert_eq!(sum.chunk_sha256.len(), chunks.len());
        assert!(sum.read_error.is_none());
    }

    #[test]
    fn empty_stream_has_no_chunks() {
        let (chunks, sum) = run(Vec::new(), 1024, 2);
        assert!(chunks.is_empty());
        assert_eq!(sum.raw_len, 0);
        assert_eq!(sum.sha256, crate::sha256_hex(b""));
    }

    struct FailsAfter(usize);
    impl Read for FailsAfter {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.0 == 0 {
                return Err(std::io::Error::other("device went away"));
            }
            let n = buf.len().min(self.0);
            buf[..n].fill(b'a');
            self.0 -= n;
            Ok(n)
        }
    }

    #[test]
    fn read_error_keeps_what_was_read() {
        let opts = PipelineOptions {
            chunk_size: 1000,
            zstd_level: 1,
            workers: 2,
        };
        let mut s = ChunkStream::new(FailsAfter(2500), &opts);
        let n = s.by_ref().filter(|c| c.is_ok()).count();
        let sum = s.finish();
        assert_eq!(n, 2);
        assert_eq!(sum.raw_len, 2000);
        assert!(sum.read_error.unwrap().contains("device went away"));
    }
}
