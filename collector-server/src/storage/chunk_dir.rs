//! The embedded blob store: content-addressed files, `chunks/<first two hex>/<sha256>`.
//!
//! Identical chunks across items and hosts are stored once. A file is written to a temporary
//! name, fsynced and renamed, so a crash never leaves a half-written chunk under its final name.

use super::blobs::{check_key, BlobError, BlobStore, Capacity};
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct ChunkDir {
    root: PathBuf,
    fsync: bool,
}

impl ChunkDir {
    pub fn new(root: impl Into<PathBuf>, fsync: bool) -> ChunkDir {
        ChunkDir {
            root: root.into(),
            fsync,
        }
    }

    /// Where a payload lives; an error for a key that is not a SHA-256.
    pub fn path_of(&self, sha256: &str) -> Result<PathBuf, BlobError> {
        check_key(sha256)?;
        Ok(self.root.join(&sha256[..2]).join(sha256))
    }

    fn io_err(&self, path: &Path, source: io::Error) -> BlobError {
        if matches!(
            source.kind(),
            io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
        ) {
            let (free_bytes, reserve_bytes) = self
                .space()
                .map(|c| (c.free_bytes, c.reserve_bytes))
                .unwrap_or((0, 0));
            return BlobError::Full {
                location: self.root.display().to_string(),
                free_bytes,
                reserve_bytes,
            };
        }
        BlobError::Io {
            location: path.display().to_string(),
            source,
        }
    }

    /// The filesystem's room: reserve 5 % of it, at most 256 MiB.
    fn space(&self) -> Result<Capacity, BlobError> {
        let st = nix::sys::statvfs::statvfs(&self.root).map_err(|e| BlobError::Io {
            location: self.root.display().to_string(),
            source: io::Error::from(e),
        })?;
        let frag = st.fragment_size() as u64;
        let total_bytes = st.blocks() as u64 * frag;
        let free_bytes = st.blocks_available() as u64 * frag;
        let reserve_bytes = (total_bytes / 20).min(256 << 20);
        Ok(Capacity {
            total_bytes,
            free_bytes,
            reserve_bytes,
        })
    }
}

impl BlobStore for ChunkDir {
    fn put(&self, sha256: &str, payload: &[u8]) -> Result<(), BlobError> {
        let path = self.path_of(sha256)?;
        if path.exists() {
            return Ok(());
        }
        let room = self.space()?;
        if room.free_bytes.saturating_sub(payload.len() as u64) <= room.reserve_bytes {
            return Err(BlobError::Full {
                location: self.root.display().to_string(),
                free_bytes: room.free_bytes,
                reserve_bytes: room.reserve_bytes,
            });
        }
        let dir = path.parent().unwrap_or(&self.root);
        fs::create_dir_all(dir).map_err(|e| self.io_err(dir, e))?;
        let tmp = dir.join(format!(".{sha256}.tmp{}", rand::random::<u32>()));
        let write = || -> io::Result<()> {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(payload)?;
            if self.fsync {
                f.sync_data()?;
            }
            fs::rename(&tmp, &path)
        };
        write().map_err(|e| {
            let _ = fs::remove_file(&tmp);
            self.io_err(&path, e)
        })
    }

    fn get(&self, sha256: &str) -> Result<Vec<u8>, BlobError> {
        let path = self.path_of(sha256)?;
        fs::read(&path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => BlobError::Missing {
                sha256: sha256.to_string(),
                location: path.display().to_string(),
            },
            _ => self.io_err(&path, e),
        })
    }

    fn exists(&self, sha256: &str) -> Result<bool, BlobError> {
        Ok(self.path_of(sha256)?.exists())
    }

    fn delete(&self, sha256: &str) -> Result<(), BlobError> {
        let path = self.path_of(sha256)?;
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.io_err(&path, e)),
        }
    }

    fn capacity(&self) -> Result<Option<Capacity>, BlobError> {
        Ok(Some(self.space()?))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn put_get_exists_delete() {
        let d = tempfile::tempdir().unwrap();
        let s = ChunkDir::new(d.path(), true);
        let key = cairn_protocol::sha256_hex(b"abc");
        assert!(!s.exists(&key).unwrap());
        assert!(matches!(s.get(&key), Err(BlobError::Missing { .. })));
        s.put(&key, b"payload").unwrap();
        s.put(&key, b"payload").unwrap();
        assert!(s.exists(&key).unwrap());
        assert_eq!(s.get(&key).unwrap(), b"payload");
        s.delete(&key).unwrap();
        s.delete(&key).unwrap();
        assert!(!s.exists(&key).unwrap());
        // A key that is not a hash never becomes a path.
        assert!(matches!(
            s.get("../../etc/passwd"),
            Err(BlobError::BadKey(_))
        ));
    }
}
