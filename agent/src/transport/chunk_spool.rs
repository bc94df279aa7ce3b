//! The chunk spool (`STATE/spool/ITEM/N.chunk`): what uploads could not hand to the collector
//! yet, on disk, bounded in bytes.

use anyhow::{anyhow, Context, Result};
use cairn_protocol::chunk::{Chunk, ChunkHeader, HEADER_LEN};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The chunk spool (`STATE/spool/ITEM/N.chunk`): chunks of items not yet acknowledged,
/// written when the connection drops or the collector has no room, shared by all uploads,
/// bounded in bytes. Not to be confused with the live events' `EventSpool`
/// (`transport/event_spool.rs`).
pub struct ChunkSpool {
    root: PathBuf,
    max_bytes: u64,
    used: AtomicU64,
}

impl ChunkSpool {
    pub fn new(root: PathBuf, max_bytes: u64) -> Arc<ChunkSpool> {
        Arc::new(ChunkSpool {
            root,
            max_bytes,
            used: AtomicU64::new(0),
        })
    }
    pub(super) fn has_room(&self, n: usize) -> bool {
        self.used.load(Ordering::Relaxed) + n as u64 <= self.max_bytes
    }
    fn dir(&self, item: &str) -> PathBuf {
        self.root.join(item)
    }
    pub(super) fn put(&self, item: &str, header: &ChunkHeader, payload: &[u8]) -> Result<()> {
        let dir = self.dir(item);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create the spool directory {}", dir.display()))?;
        let mut buf = Vec::with_capacity(HEADER_LEN + payload.len());
        buf.extend(header.encode());
        buf.extend(payload);
        std::fs::write(dir.join(format!("{}.chunk", header.index)), &buf)
            .with_context(|| format!("cannot spool chunk {} of item {item}", header.index))?;
        self.used.fetch_add(buf.len() as u64, Ordering::Relaxed);
        Ok(())
    }
    pub(super) fn get(&self, item: &str, index: u64) -> Result<Chunk> {
        let p = self.dir(item).join(format!("{index}.chunk"));
        let bytes =
            std::fs::read(&p).with_context(|| format!("spooled chunk {} is gone", p.display()))?;
        Chunk::read_from(&mut &bytes[..])?
            .ok_or_else(|| anyhow!("spooled chunk {} is empty", p.display()))
    }
    pub(super) fn remove(&self, item: &str, index: u64) {
        let p = self.dir(item).join(format!("{index}.chunk"));
        if let Ok(m) = std::fs::metadata(&p) {
            if std::fs::remove_file(&p).is_ok() {
                self.used
                    .fetch_sub(m.len().min(self.used()), Ordering::Relaxed);
            }
        }
    }
    pub(super) fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }
    /// Everything spooled for `item`; returns the bytes removed.
    pub fn remove_item(&self, item: &str) -> u64 {
        let dir = self.dir(item);
        let mut bytes = 0;
        if let Ok(rd) = std::fs::read_dir(&dir) {
            for e in rd.flatten() {
                if let Ok(m) = e.metadata() {
                    if m.is_file() && std::fs::remove_file(e.path()).is_ok() {
                        bytes += m.len();
                    }
                }
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
        self.used
            .fetch_sub(bytes.min(self.used()), Ordering::Relaxed);
        bytes
    }
    /// At the agent's start: the spool of every item of an earlier run. Those collections
    /// died with it (the collector, told so by `hello`, marks them failed), so their chunks
    /// will never be asked for. Returns (items, bytes) removed.
    pub fn remove_leftovers(&self) -> (usize, u64) {
        let mut items = 0;
        let mut bytes = 0;
        let Ok(rd) = std::fs::read_dir(&self.root) else {
            return (0, 0);
        };
        for e in rd.flatten() {
            let path = e.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()).map(str::to_owned) else {
                let _ = std::fs::remove_dir_all(&path);
                continue;
            };
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                bytes += self.remove_item(&name);
                items += 1;
            } else {
                let _ = std::fs::remove_file(&path);
            }
        }
        (items, bytes)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn chunk(index: u64) -> Chunk {
        // Random: stored as is, so sizes are what they seem.
        let raw: Vec<u8> = (0..1000).map(|_| rand::random::<u8>()).collect();
        Chunk::seal(index, &raw, 1).unwrap()
    }

    #[test]
    fn the_spool_of_an_item_goes_whole_and_its_bytes_are_given_back() {
        let d = tempfile::tempdir().unwrap();
        let spool = ChunkSpool::new(d.path().join("spool"), 10 << 20);
        let put = |item: &str, c: Chunk| spool.put(item, &c.header, &c.payload).unwrap();
        for i in 0..3 {
            put("item-1", chunk(i));
        }
        put("item-2", chunk(0));
        assert!(spool.used() > 4000);
        let back = spool.get("item-1", 1).unwrap();
        assert_eq!(back.header.index, 1);
        assert!(spool.remove_item("item-1") > 3000);
        assert!(!d.path().join("spool/item-1").exists());
        assert!(spool.used() < 2000, "{}", spool.used());
        // A restarted agent: a new spool over the same directory clears what was left.
        let again = ChunkSpool::new(d.path().join("spool"), 10 << 20);
        std::fs::write(d.path().join("spool/stray"), b"x").unwrap();
        let (items, bytes) = again.remove_leftovers();
        assert_eq!(items, 1);
        assert!(bytes > 1000);
        assert_eq!(
            std::fs::read_dir(d.path().join("spool")).unwrap().count(),
            0
        );
    }
}
