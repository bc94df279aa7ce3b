//! Chunks encrypted at rest: a blob store that keeps every new payload age-encrypted to the
//! collector's evidence key and decrypts on the way out. Payloads stored in clear before
//! encryption was turned on are still read (they do not start like an age file); what a
//! payload decodes to is verified by `evidence` either way.

use super::blobs::{BlobError, BlobStore, Capacity};
use crate::crypt::{is_age, EvidenceKey};
use std::sync::Arc;

pub struct EncryptedBlobs {
    inner: Arc<dyn BlobStore>,
    key: Arc<EvidenceKey>,
}

impl EncryptedBlobs {
    pub fn new(inner: Arc<dyn BlobStore>, key: Arc<EvidenceKey>) -> EncryptedBlobs {
        EncryptedBlobs { inner, key }
    }

    fn crypt_err(sha256: &str, e: impl std::fmt::Display) -> BlobError {
        BlobError::Io {
            location: format!("chunk {sha256}"),
            source: std::io::Error::other(e.to_string()),
        }
    }
}

impl BlobStore for EncryptedBlobs {
    fn writes_in_parallel(&self) -> usize {
        self.inner.writes_in_parallel()
    }

    fn put(&self, sha256: &str, payload: &[u8]) -> Result<(), BlobError> {
        if self.inner.exists(sha256)? {
            return Ok(());
        }
        let sealed = self
            .key
            .encrypt(payload)
            .map_err(|e| Self::crypt_err(sha256, e))?;
        self.inner.put(sha256, &sealed)
    }

    fn get(&self, sha256: &str) -> Result<Vec<u8>, BlobError> {
        let stored = self.inner.get(sha256)?;
        if is_age(&stored) {
            self.key
                .decrypt(&stored)
                .map_err(|e| Self::crypt_err(sha256, e))
        } else {
            Ok(stored)
        }
    }

    fn exists(&self, sha256: &str) -> Result<bool, BlobError> {
        self.inner.exists(sha256)
    }

    fn delete(&self, sha256: &str) -> Result<(), BlobError> {
        self.inner.delete(sha256)
    }

    fn capacity(&self) -> Result<Option<Capacity>, BlobError> {
        self.inner.capacity()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::storage::chunk_dir::ChunkDir;

    #[test]
    fn payloads_are_unreadable_on_disk_and_read_back_clear() {
        let d = tempfile::tempdir().unwrap();
        let dir = Arc::new(ChunkDir::new(d.path(), false));
        let key = Arc::new(EvidenceKey::generate());
        let enc = EncryptedBlobs::new(dir.clone(), key);
        let sha = cairn_protocol::sha256_hex(b"shadow");
        enc.put(&sha, b"root:$6$secret").unwrap();
        let on_disk = dir.get(&sha).unwrap();
        assert!(is_age(&on_disk));
        assert!(!on_disk.windows(6).any(|w| w == b"secret"));
        assert_eq!(enc.get(&sha).unwrap(), b"root:$6$secret");
        // A payload stored in clear before encryption was on is still read.
        let old = cairn_protocol::sha256_hex(b"old");
        dir.put(&old, b"clear payload").unwrap();
        assert_eq!(enc.get(&old).unwrap(), b"clear payload");
    }
}
