//! A chunk: one fixed-size slice of an item's raw bytes, as hashed at the source.
//!
//! The SHA-256 is always of the *raw* bytes, computed before compression, so a chunk can be
//! verified wherever it lands by decompressing and re-hashing. Binary layout of a chunk header
//! (all integers little-endian), followed by `stored_len` payload bytes:
//!
//! ```text
//! index u64 | raw_len u32 | codec u8 | sha256 [32] | stored_len u32      (49 bytes)
//! ```

use sha2::{Digest, Sha256};
use std::io::{self, Read, Write};

/// Encoded size of a [`ChunkHeader`].
pub const HEADER_LEN: usize = 8 + 4 + 1 + 32 + 4;

/// How a chunk's raw bytes are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Codec {
    /// Stored as is (incompressible data: compressing it would cost time and gain nothing).
    None = 0,
    /// zstd frame.
    Zstd = 1,
    /// Every raw byte is zero; nothing is stored. Sparse memory and disks cost nothing.
    Zero = 2,
}

impl Codec {
    fn from_u8(v: u8) -> Result<Self, ChunkError> {
        match v {
            0 => Ok(Codec::None),
            1 => Ok(Codec::Zstd),
            2 => Ok(Codec::Zero),
            other => Err(ChunkError::UnknownCodec(other)),
        }
    }
}

/// The fixed-size description of one chunk.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChunkHeader {
    pub index: u64,
    pub raw_len: u32,
    pub codec: Codec,
    #[serde(with = "hex_bytes")]
    pub sha256: [u8; 32],
    pub stored_len: u32,
}

/// A chunk header with its stored (possibly compressed) payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    pub header: ChunkHeader,
    pub payload: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum ChunkError {
    #[error("chunk {index}: SHA-256 of the raw bytes is {actual}, the header says {expected}")]
    HashMismatch {
        index: u64,
        expected: String,
        actual: String,
    },
    #[error("chunk {index}: raw length is {actual}, the header says {expected}")]
    LengthMismatch {
        index: u64,
        expected: u64,
        actual: u64,
    },
    #[error("chunk {index}: payload is {actual} bytes, the header says {expected}")]
    PayloadLength {
        index: u64,
        expected: u64,
        actual: u64,
    },
    #[error("chunk {index}: raw length {raw_len} exceeds the maximum chunk size {max}")]
    TooLarge { index: u64, raw_len: u64, max: u64 },
    #[error("chunk {index}: zstd payload does not decompress: {source}")]
    Decompress { index: u64, source: io::Error },
    #[error("unknown chunk codec {0}")]
    UnknownCodec(u8),
    #[error("truncated chunk: {0}")]
    Truncated(&'static str),
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
}

impl ChunkHeader {
    pub fn sha256_hex(&self) -> String {
        hex::encode(self.sha256)
    }

    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[0..8].copy_from_slice(&self.index.to_le_bytes());
        out[8..12].copy_from_slice(&self.raw_len.to_le_bytes());
        out[12] = self.codec as u8;
        out[13..45].copy_from_slice(&self.sha256);
        out[45..49].copy_from_slice(&self.stored_len.to_le_bytes());
        out
    }

    pub fn decode(b: &[u8]) -> Result<Self, ChunkError> {
        if b.len() < HEADER_LEN {
            return Err(ChunkError::Truncated("header shorter than 49 bytes"));
        }
        let mut sha256 = [0u8; 32];
        sha256.copy_from_slice(&b[13..45]);
        let header = ChunkHeader {
            index: u64::from_le_bytes(arr8(&b[0..8])),
            raw_len: u32::from_le_bytes(arr4(&b[8..12])),
            codec: Codec::from_u8(b[12])?,
            sha256,
            stored_len: u32::from_le_bytes(arr4(&b[45..49])),
        };
        if header.raw_len as usize > crate::CHUNK_SIZE {
            return Err(ChunkError::TooLarge {
                index: header.index,
                raw_len: header.raw_len.into(),
                max: crate::CHUNK_SIZE as u64,
            });
        }
        if header.stored_len as usize > crate::CHUNK_SIZE + 1024 {
            return Err(ChunkError::TooLarge {
                index: header.index,
                raw_len: header.stored_len.into(),
                max: crate::CHUNK_SIZE as u64,
            });
        }
        Ok(header)
    }
}

fn arr8(b: &[u8]) -> [u8; 8] {
    let mut a = [0u8; 8];
    a.copy_from_slice(b);
    a
}

fn arr4(b: &[u8]) -> [u8; 4] {
    let mut a = [0u8; 4];
    a.copy_from_slice(b);
    a
}

impl Chunk {
    /// Hash and encode raw bytes. `level` is the zstd level; the chunk is stored uncompressed
    /// when compression does not make it smaller, and as [`Codec::Zero`] when it is all zeros.
    pub fn seal(index: u64, raw: &[u8], level: i32) -> Result<Chunk, ChunkError> {
        let sha256: [u8; 32] = Sha256::digest(raw).into();
        Self::seal_hashed(index, raw, sha256, level)
    }

    /// Like [`Chunk::seal`], taking ownership: an incompressible chunk's bytes become its
    /// payload without a copy. The pipeline's hot path.
    pub fn seal_owned(index: u64, raw: Vec<u8>, level: i32) -> Result<Chunk, ChunkError> {
        let zero = is_zero(&raw);
        // Memory and disk images are mostly zero chunks: their hash is a constant.
        let sha256: [u8; 32] = if zero && raw.len() == crate::CHUNK_SIZE {
            zero_chunk_sha256()
        } else {
            Sha256::digest(&raw).into()
        };
        if raw.len() > crate::CHUNK_SIZE {
            return Err(ChunkError::TooLarge {
                index,
                raw_len: raw.len() as u64,
                max: crate::CHUNK_SIZE as u64,
            });
        }
        let raw_len = raw.len() as u32;
        let (codec, payload) = if zero {
            (Codec::Zero, Vec::new())
        } else {
            match compress(&raw, level)? {
                Some(c) => (Codec::Zstd, c),
                None => (Codec::None, raw),
            }
        };
        Ok(Chunk {
            header: ChunkHeader {
                index,
                raw_len,
                codec,
                sha256,
                stored_len: payload.len() as u32,
            },
            payload,
        })
    }

    /// Like [`Chunk::seal`] for a caller that already hashed `raw`.
    pub fn seal_hashed(
        index: u64,
        raw: &[u8],
        sha256: [u8; 32],
        level: i32,
    ) -> Result<Chunk, ChunkError> {
        if raw.len() > crate::CHUNK_SIZE {
            return Err(ChunkError::TooLarge {
                index,
                raw_len: raw.len() as u64,
                max: crate::CHUNK_SIZE as u64,
            });
        }
        let (codec, payload) = if is_zero(raw) {
            (Codec::Zero, Vec::new())
        } else {
            match compress(raw, level)? {
                Some(c) => (Codec::Zstd, c),
                None => (Codec::None, raw.to_vec()),
            }
        };
        Ok(Chunk {
            header: ChunkHeader {
                index,
                raw_len: raw.len() as u32,
                codec,
                sha256,
                stored_len: payload.len() as u32,
            },
            payload,
        })
    }

    /// Decode the payload back to raw bytes and check length and SHA-256.
    pub fn open(&self) -> Result<Vec<u8>, ChunkError> {
        open_payload(&self.header, &self.payload)
    }

    /// Verify without copying an uncompressed payload: the raw bytes, borrowed when they are
    /// the payload itself.
    pub fn verify(&self) -> Result<std::borrow::Cow<'_, [u8]>, ChunkError> {
        decode_checked(&self.header, &self.payload)
    }

    pub fn write_to<W: Write>(&self, w: &mut W) -> io::Result<()> {
        w.write_all(&self.header.encode())?;
        w.write_all(&self.payload)
    }

    /// Read one chunk; `Ok(None)` at a clean end of stream.
    pub fn read_from<R: Read>(r: &mut R) -> Result<Option<Chunk>, ChunkError> {
        let mut hb = [0u8; HEADER_LEN];
        match read_full(r, &mut hb)? {
            0 => return Ok(None),
            n if n < HEADER_LEN => {
                return Err(ChunkError::Truncated("stream ended inside a chunk header"))
            }
            _ => {}
        }
        let header = ChunkHeader::decode(&hb)?;
        let mut payload = vec![0u8; header.stored_len as usize];
        if read_full(r, &mut payload)? < payload.len() {
            return Err(ChunkError::Truncated("stream ended inside a chunk payload"));
        }
        Ok(Some(Chunk { header, payload }))
    }
}

thread_local! {
    // zstd contexts are costly to create (and their tables to warm); one per thread, reused.
    static COMPRESSOR: std::cell::RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> = const { std::cell::RefCell::new(None) };
    static DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { std::cell::RefCell::new(None) };
}

/// Bytes of each sample [`compress`] tries before committing to the whole chunk.
const SAMPLE: usize = 32 * 1024;

/// zstd at `level`, or `None` when it would not make the data smaller.
///
/// Random-looking data (encrypted files, compressed archives, much of a memory image) costs
/// zstd real time for nothing: three samples are tried first, and if none of them shrinks by
/// at least 3 % the chunk is stored as it is.
fn compress(raw: &[u8], level: i32) -> io::Result<Option<Vec<u8>>> {
    if raw.len() >= 8 * SAMPLE {
        let mid = raw.len() / 2 - SAMPLE / 2;
        let samples = [
            &raw[..SAMPLE],
            &raw[mid..mid + SAMPLE],
            &raw[raw.len() - SAMPLE..],
        ];
        let mut any_shrinks = false;
        for sample in samples {
            if compress_all(sample, level)?.is_some_and(|c| c.len() < SAMPLE * 97 / 100) {
                any_shrinks = true;
                break;
            }
        }
        if !any_shrinks {
            return Ok(None);
        }
    }
    compress_all(raw, level)
}

fn compress_all(raw: &[u8], level: i32) -> io::Result<Option<Vec<u8>>> {
    COMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.as_ref().map(|(l, _)| *l) != Some(level) {
            *slot = Some((level, zstd::bulk::Compressor::new(level)?));
        }
        let Some((_, c)) = slot.as_mut() else {
            return Ok(None);
        };
        // Output capped at the input size: zstd gives up early on data it cannot shrink.
        let mut out = Vec::with_capacity(raw.len());
        match c.compress_to_buffer(raw, &mut out) {
            Ok(n) if n < raw.len() => Ok(Some(out)),
            Ok(_) => Ok(None),
            Err(_) => Ok(None), // destination too small: incompressible
        }
    })
}

fn decompress(payload: &[u8], index: u64) -> Result<Vec<u8>, ChunkError> {
    DECOMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = Some(zstd::bulk::Decompressor::new()?);
        }
        let Some(d) = slot.as_mut() else {
            return Err(ChunkError::Truncated("no zstd context"));
        };
        d.decompress(payload, crate::CHUNK_SIZE)
            .map_err(|source| ChunkError::Decompress { index, source })
    })
}

fn check(header: &ChunkHeader, raw: &[u8]) -> Result<(), ChunkError> {
    let index = header.index;
    if raw.len() != header.raw_len as usize {
        return Err(ChunkError::LengthMismatch {
            index,
            expected: header.raw_len.into(),
            actual: raw.len() as u64,
        });
    }
    let actual: [u8; 32] = Sha256::digest(raw).into();
    if actual != header.sha256 {
        return Err(ChunkError::HashMismatch {
            index,
            expected: hex::encode(header.sha256),
            actual: hex::encode(actual),
        });
    }
    Ok(())
}

/// Decode a stored payload and verify it against its header.
pub fn open_payload(header: &ChunkHeader, payload: &[u8]) -> Result<Vec<u8>, ChunkError> {
    decode_checked(header, payload).map(std::borrow::Cow::into_owned)
}

/// The raw bytes of a payload, checked for length and SHA-256; borrowed when the payload is
/// stored uncompressed (no copy on the hot path).
fn decode_checked<'a>(
    header: &ChunkHeader,
    payload: &'a [u8],
) -> Result<std::borrow::Cow<'a, [u8]>, ChunkError> {
    use std::borrow::Cow;
    let index = header.index;
    if payload.len() != header.stored_len as usize {
        return Err(ChunkError::PayloadLength {
            index,
            expected: header.stored_len.into(),
            actual: payload.len() as u64,
        });
    }
    let raw = match header.codec {
        Codec::None => Cow::Borrowed(payload),
        Codec::Zero => Cow::Owned(vec![0u8; header.raw_len as usize]),
        Codec::Zstd => Cow::Owned(decompress(payload, index)?),
    };
    // A zero chunk is verified too: the header's hash must be that of the zeros it stands for.
    check(header, &raw)?;
    Ok(raw)
}

/// Read until `buf` is full or EOF; returns the number of bytes read.
pub fn read_full<R: Read + ?Sized>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// True when every byte is zero; word-at-a-time, so it costs far less than hashing.
/// SHA-256 of a full chunk of zeros, computed once.
fn zero_chunk_sha256() -> [u8; 32] {
    static SHA: std::sync::OnceLock<[u8; 32]> = std::sync::OnceLock::new();
    *SHA.get_or_init(|| Sha256::digest(vec![0u8; crate::CHUNK_SIZE]).into())
}

pub fn is_zero(b: &[u8]) -> bool {
    let (prefix, words, suffix) = {
        // SAFETY: u64 has no invalid bit patterns; align_to only reinterprets aligned middle bytes.
        unsafe { b.align_to::<u64>() }
    };
    prefix.iter().all(|&x| x == 0)
        && suffix.iter().all(|&x| x == 0)
        && words.iter().all(|&w| w == 0)
}

mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let s = String::deserialize(d)?;
        let v = hex::decode(&s).map_err(serde::de::Error::custom)?;
        v.try_into()
            .map_err(|_| serde::de::Error::custom("a SHA-256 is 32 bytes (64 hex digits)"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_chunks_carry_the_hash_of_their_bytes() {
        let raw = vec![0u8; crate::CHUNK_SIZE];
        let c = Chunk::seal_owned(3, raw.clone(), 1).unwrap();
        assert_eq!(c.header.codec, Codec::Zero);
        let want: [u8; 32] = Sha256::digest(&raw).into();
        assert_eq!(c.header.sha256, want);
        assert_eq!(c.open().unwrap(), raw);
        // A shorter zero chunk is hashed, not given the full chunk's constant.
        let short = Chunk::seal_owned(4, vec![0u8; 100], 1).unwrap();
        let want: [u8; 32] = Sha256::digest([0u8; 100]).into();
        assert_eq!(short.header.sha256, want);
    }

    #[test]
    fn round_trip_each_codec() {
        let text = b"log line 1\n".repeat(1000);
        let random: Vec<u8> = (0..10_000).map(|_| rand::random::<u8>()).collect();
        let zeros = vec![0u8; 8192];
        for (raw, codec) in [
            (&text[..], Codec::Zstd),
            (&random[..], Codec::None),
            (&zeros[..], Codec::Zero),
        ] {
            let c = Chunk::seal(7, raw, 1).unwrap();
            assert_eq!(c.header.codec, codec);
            let mut buf = Vec::new();
            c.write_to(&mut buf).unwrap();
            let back = Chunk::read_from(&mut &buf[..]).unwrap().unwrap();
            assert_eq!(back, c);
            assert_eq!(back.open().unwrap(), raw);
        }
    }

    #[test]
    fn flipped_byte_is_named() {
        let raw = b"evidence ".repeat(500);
        let mut c = Chunk::seal(3, &raw, 1).unwrap();
        let last = c.payload.len() - 1;
        c.payload[last] ^= 0x40;
        let err = c.open().unwrap_err().to_string();
        assert!(err.starts_with("chunk 3:"), "{err}");
    }

    #[test]
    fn truncated_stream_is_an_error_not_a_panic() {
        let c = Chunk::seal(0, &b"abc".repeat(100), 1).unwrap();
        let mut buf = Vec::new();
        c.write_to(&mut buf).unwrap();
        for cut in [1, HEADER_LEN - 1, HEADER_LEN + 1, buf.len() - 1] {
            let err = Chunk::read_from(&mut &buf[..cut]).unwrap_err();
            assert!(matches!(err, ChunkError::Truncated(_)), "cut {cut}: {err}");
        }
        assert!(Chunk::read_from(&mut &buf[..0]).unwrap().is_none());
    }

    #[test]
    fn hostile_lengths_are_refused() {
        let mut h = Chunk::seal(0, b"x", 1).unwrap().header.encode();
        h[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            ChunkHeader::decode(&h),
            Err(ChunkError::TooLarge { .. })
        ));
        h[12] = 9;
        assert!(ChunkHeader::decode(&h).is_err());
    }
}

#[cfg(test)]
mod sampling_tests {
    use super::*;

    #[test]
    fn random_chunk_is_stored_raw_and_mixed_chunk_is_compressed() {
        let random: Vec<u8> = (0..1 << 20).map(|_| rand::random::<u8>()).collect();
        assert_eq!(
            Chunk::seal(0, &random, 1).unwrap().header.codec,
            Codec::None
        );
        // Random except a compressible middle: the middle sample finds it.
        let mut mixed = random.clone();
        let mid = mixed.len() / 2;
        mixed[mid - 100_000..mid + 100_000].fill(b'a');
        let c = Chunk::seal(0, &mixed, 1).unwrap();
        assert_eq!(c.header.codec, Codec::Zstd);
        assert_eq!(c.open().unwrap(), mixed);
    }
}
