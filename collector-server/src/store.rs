//! Content-addressed chunk files: `chunks/<first two hex>/<sha256 of the raw bytes>`.
//!
//! A file holds a chunk's stored payload (zstd or raw, as the agent sent it after the
//! collector verified it); all-zero chunks have no file. Identical chunks across items and
//! hosts are stored once. A file is written to a temporary name, fsynced and renamed, so a
//! crash never leaves a half-written chunk under its final name.

use cairn_protocol::chunk::{open_payload, Chunk, ChunkError, ChunkHeader, Codec};
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct ChunkStore {
    root: PathBuf,
    fsync: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("chunk {sha256} is missing from the store ({path})")]
    Missing { sha256: String, path: String },
    #[error("chunk file {path}: {source}")]
    Io { path: String, source: io::Error },
    #[error("stored chunk {sha256} is corrupt: {source}")]
    Corrupt { sha256: String, source: ChunkError },
    #[error("unknown codec {0:?} in the database")]
    Codec(String),
}

pub fn codec_name(c: Codec) -> &'static str {
    match c {
        Codec::None => "none",
        Codec::Zstd => "zstd",
        Codec::Zero => "zero",
    }
}

pub fn codec_parse(s: &str) -> Result<Codec, StoreError> {
    match s {
        "none" => Ok(Codec::None),
        "zstd" => Ok(Codec::Zstd),
        "zero" => Ok(Codec::Zero),
        other => Err(StoreError::Codec(other.to_string())),
    }
}

impl ChunkStore {
    pub fn new(root: impl Into<PathBuf>, fsync: bool) -> ChunkStore {
        ChunkStore {
            root: root.into(),
            fsync,
        }
    }

    pub fn path_of(&self, sha256: &str) -> PathBuf {
        let prefix = sha256.get(..2).unwrap_or("xx");
        self.root.join(prefix).join(sha256)
    }

    fn io_err(path: &Path, source: io::Error) -> StoreError {
        StoreError::Io {
            path: path.display().to_string(),
            source,
        }
    }

    /// Persist a verified chunk's payload unless the store already holds it.
    pub fn put(&self, chunk: &Chunk) -> Result<(), StoreError> {
        if chunk.header.codec == Codec::Zero {
            return Ok(());
        }
        let path = self.path_of(&chunk.header.sha256_hex());
        if path.exists() {
            return Ok(());
        }
        let dir = path.parent().unwrap_or(&self.root);
        fs::create_dir_all(dir).map_err(|e| Self::io_err(dir, e))?;
        let tmp = dir.join(format!(
            ".{}.tmp{}",
            chunk.header.sha256_hex(),
            rand::random::<u32>()
        ));
        let write = || -> io::Result<()> {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(&chunk.payload)?;
            if self.fsync {
                f.sync_data()?;
            }
            fs::rename(&tmp, &path)
        };
        write().map_err(|e| {
            let _ = fs::remove_file(&tmp);
            Self::io_err(&path, e)
        })
    }

    /// Read a stored chunk back and verify it: the raw bytes, or why they cannot be trusted.
    pub fn get(
        &self,
        sha256: &str,
        codec: Codec,
        raw_len: u64,
        index: u64,
    ) -> Result<Vec<u8>, StoreError> {
        let mut hash = [0u8; 32];
        hex::decode_to_slice(sha256, &mut hash).map_err(|_| StoreError::Corrupt {
            sha256: sha256.to_string(),
            source: ChunkError::Truncated("bad hash in the database"),
        })?;
        let payload = if codec == Codec::Zero {
            Vec::new()
        } else {
            let path = self.path_of(sha256);
            fs::read(&path).map_err(|e| match e.kind() {
                io::ErrorKind::NotFound => StoreError::Missing {
                    sha256: sha256.to_string(),
                    path: path.display().to_string(),
                },
                _ => Self::io_err(&path, e),
            })?
        };
        let header = ChunkHeader {
            index,
            raw_len: raw_len as u32,
            codec,
            sha256: hash,
            stored_len: payload.len() as u32,
        };
        open_payload(&header, &payload).map_err(|source| StoreError::Corrupt {
            sha256: sha256.to_string(),
            source,
        })
    }
}
