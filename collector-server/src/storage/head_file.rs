//! The embedded head store: an append-only file of JSON lines, `DATA/custody-heads.jsonl`,
//! fsynced after every line, with the newest head of each chain kept in memory. It is never
//! rewritten; where the filesystem allows it, the collector also marks it append-only
//! (`chattr +a`), so that not even root truncates it without first removing the flag.

use super::heads::HeadStore;
use super::{Result, StorageError};
use cairn_protocol::custody::ChainHead;
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

pub struct HeadFile {
    path: PathBuf,
    inner: Mutex<Inner>,
}

struct Inner {
    file: File,
    latest: HashMap<String, ChainHead>,
}

fn io(what: &'static str, path: &Path, e: std::io::Error) -> StorageError {
    StorageError::Backend {
        what,
        source: format!("{}: {e}", path.display()).into(),
    }
}

impl HeadFile {
    /// Open the head file, creating it when `create` (a new data directory); every head in it
    /// is read. A line that does not parse is corruption, named by its line number.
    pub fn open(path: &Path, create: bool) -> Result<HeadFile> {
        let file = OpenOptions::new()
            .append(true)
            .read(true)
            .create(create)
            .mode(0o600)
            .open(path)
            .map_err(|e| io("opening the custody head log", path, e))?;
        let mut latest: HashMap<String, ChainHead> = HashMap::new();
        let reader = BufReader::new(
            File::open(path).map_err(|e| io("reading the custody head log", path, e))?,
        );
        for (n, line) in reader.lines().enumerate() {
            let line = line.map_err(|e| io("reading the custody head log", path, e))?;
            if line.trim().is_empty() {
                continue;
            }
            let head: ChainHead =
                serde_json::from_str(&line).map_err(|e| StorageError::Corrupt {
                    what: "custody head log",
                    detail: format!("{} line {}: {e}", path.display(), n + 1),
                })?;
            match latest.get(&head.collection_id) {
                Some(h) if h.seq >= head.seq => {}
                _ => {
                    latest.insert(head.collection_id.clone(), head);
                }
            }
        }
        set_append_only(&file);
        Ok(HeadFile {
            path: path.to_path_buf(),
            inner: Mutex::new(Inner { file, latest }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Best effort: `FS_IOC_SETFLAGS` with `FS_APPEND_FL` (needs CAP_LINUX_IMMUTABLE and a
/// filesystem that has the flag; tmpfs does not).
fn set_append_only(file: &File) {
    use std::os::fd::AsRawFd;
    const FS_APPEND_FL: libc::c_long = 0x0000_0020;
    let mut flags: libc::c_long = 0;
    // SAFETY: FS_IOC_GETFLAGS/SETFLAGS read and write one `long` through the pointer, which
    // points to a live local for the duration of each call.
    unsafe {
        if libc::ioctl(file.as_raw_fd(), libc::FS_IOC_GETFLAGS, &mut flags) == 0
            && flags & FS_APPEND_FL == 0
        {
            flags |= FS_APPEND_FL;
            let _ = libc::ioctl(file.as_raw_fd(), libc::FS_IOC_SETFLAGS, &flags);
        }
    }
}

impl HeadStore for HeadFile {
    fn publish(&self, head: &ChainHead) -> Result<()> {
        let mut line = serde_json::to_string(head).map_err(|e| StorageError::Corrupt {
            what: "chain head",
            detail: e.to_string(),
        })?;
        line.push('\n');
        let mut inner = self.lock();
        inner
            .file
            .write_all(line.as_bytes())
            .and_then(|()| inner.file.sync_data())
            .map_err(|e| io("writing the custody head log", &self.path, e))?;
        inner
            .latest
            .insert(head.collection_id.clone(), head.clone());
        Ok(())
    }

    fn latest(&self, collection_id: &str) -> Result<Option<ChainHead>> {
        Ok(self.lock().latest.get(collection_id).cloned())
    }

    fn chains(&self) -> Result<usize> {
        Ok(self.lock().latest.len())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn head(cid: &str, seq: u64) -> ChainHead {
        ChainHead {
            collection_id: cid.into(),
            seq,
            hash: format!("{seq:064}"),
            time: "2026-12-01T00:00:00Z".into(),
            signature: "00".into(),
        }
    }

    #[test]
    fn the_newest_head_of_each_chain_survives_a_reopen() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("heads.jsonl");
        assert!(HeadFile::open(&p, false).is_err());
        let f = HeadFile::open(&p, true).unwrap();
        f.publish(&head("a", 0)).unwrap();
        f.publish(&head("a", 1)).unwrap();
        f.publish(&head("b", 0)).unwrap();
        drop(f);
        let f = HeadFile::open(&p, false).unwrap();
        assert_eq!(f.latest("a").unwrap().unwrap().seq, 1);
        assert_eq!(f.latest("b").unwrap().unwrap().seq, 0);
        assert_eq!(f.latest("c").unwrap(), None);
        assert_eq!(f.chains().unwrap(), 2);
    }
}
