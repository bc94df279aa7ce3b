//! An item copied out of the store for a parser that needs random access (binary journal
//! files), with bounded memory: the verified stream is written to an unnamed file in the
//! collector's scratch directory (gone when dropped, or if the collector dies), sealed in
//! 64 KiB blocks with ChaCha20-Poly1305 under a key that lives only in memory, and read back
//! through a small cache of blocks. So the copy is never evidence in the clear on disk (the
//! store may be encrypted at rest), and a block altered on disk is a read error, never bytes
//! served. The copy's size is capped.

use super::parse::journal_file::ReadAt;
use super::Stop;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305};
use ring::rand::{SecureRandom, SystemRandom};
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::Path;

const BLOCK: usize = 64 << 10;
const TAG: usize = 16;
/// Blocks kept in the clear in memory (1 MiB).
const CACHED: usize = 16;

pub struct Spill {
    file: File,
    len: u64,
    key: LessSafeKey,
    /// Most recently used first.
    cache: Vec<(u64, Vec<u8>)>,
}

fn nonce(block: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&block.to_le_bytes());
    Nonce::assume_unique_for_key(n)
}

fn crypto(what: &str) -> io::Error {
    io::Error::other(format!("scratch copy: {what}"))
}

impl Spill {
    /// Copy `r` into a new scratch file under `dir`; more than `max` bytes is
    /// [`Stop::TooLarge`] (`what` names the input).
    pub fn copy(dir: &Path, mut r: impl Read, max: u64, what: &'static str) -> Result<Spill, Stop> {
        let file = tempfile::tempfile_in(dir).map_err(|e| {
            Stop::Read(io::Error::new(
                e.kind(),
                format!(
                    "creating a scratch file in {}: {e} (is the data directory writable?)",
                    dir.display()
                ),
            ))
        })?;
        let mut key = [0u8; 32];
        SystemRandom::new()
            .fill(&mut key)
            .map_err(|_| crypto("no random key"))?;
        let key = UnboundKey::new(&CHACHA20_POLY1305, &key).map_err(|_| crypto("key"))?;
        let mut s = Spill {
            file,
            len: 0,
            key: LessSafeKey::new(key),
            cache: Vec::new(),
        };
        let mut buf = Vec::with_capacity(BLOCK + TAG);
        for block in 0u64.. {
            buf.clear();
            buf.resize(BLOCK, 0);
            let n = fill(&mut r, &mut buf)?;
            if n == 0 {
                break;
            }
            s.len += n as u64;
            if s.len > max {
                return Err(Stop::TooLarge { what, max });
            }
            buf.truncate(n);
            s.key
                .seal_in_place_append_tag(nonce(block), Aad::empty(), &mut buf)
                .map_err(|_| crypto("sealing a block"))?;
            s.file.write_all_at(&buf, block * (BLOCK + TAG) as u64)?;
            if n < BLOCK {
                break;
            }
        }
        Ok(s)
    }

    /// Block `i` in the clear, from the cache or the file.
    fn block(&mut self, i: u64) -> io::Result<&[u8]> {
        if let Some(p) = self.cache.iter().position(|(b, _)| *b == i) {
            let hit = self.cache.remove(p);
            self.cache.insert(0, hit);
        } else {
            let plain = (self.len - i * BLOCK as u64).min(BLOCK as u64) as usize;
            let mut buf = if self.cache.len() >= CACHED {
                self.cache.pop().map(|(_, b)| b).unwrap_or_default()
            } else {
                Vec::with_capacity(BLOCK + TAG)
            };
            buf.resize(plain + TAG, 0);
            self.file
                .read_exact_at(&mut buf, i * (BLOCK + TAG) as u64)?;
            let n = self
                .key
                .open_in_place(nonce(i), Aad::empty(), &mut buf)
                .map_err(|_| crypto("a block was altered on disk"))?
                .len();
            buf.truncate(n);
            self.cache.insert(0, (i, buf));
        }
        Ok(self.cache.first().map(|(_, b)| b.as_slice()).unwrap_or(&[]))
    }
}

/// Read into `buf` until it is full or the input ends; how many bytes were read.
fn fill(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

impl ReadAt for Spill {
    fn size(&self) -> u64 {
        self.len
    }

    fn read_at(&mut self, mut at: u64, mut buf: &mut [u8]) -> io::Result<()> {
        if at
            .checked_add(buf.len() as u64)
            .is_none_or(|end| end > self.len)
        {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        while !buf.is_empty() {
            let i = at / BLOCK as u64;
            let off = (at % BLOCK as u64) as usize;
            let block = self.block(i)?;
            let n = buf.len().min(block.len().saturating_sub(off));
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            buf[..n].copy_from_slice(&block[off..off + n]);
            buf = &mut buf[n..];
            at += n as u64;
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn reads_back_what_was_copied_at_any_offset_and_nothing_in_the_clear() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..BLOCK * 40 + 123).map(|i| (i * 7 % 251) as u8).collect();
        let mut s = Spill::copy(dir.path(), &data[..], 1 << 30, "test").unwrap();
        assert_eq!(s.size(), data.len() as u64);
        let mut x = 1u64;
        for _ in 0..500 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let at = (x >> 20) % data.len() as u64;
            let len = ((x >> 8) % (3 * BLOCK as u64)).min(data.len() as u64 - at) as usize;
            let mut buf = vec![0u8; len];
            s.read_at(at, &mut buf).unwrap();
            assert_eq!(buf, data[at as usize..at as usize + len]);
        }
        let mut one = [0u8; 2];
        assert!(s.read_at(data.len() as u64 - 1, &mut one).is_err());
        assert!(s.read_at(u64::MAX, &mut one).is_err());
        // The file holds no plain block, and nothing is left in the directory.
        let mut raw = vec![0u8; BLOCK];
        s.file.read_exact_at(&mut raw, 0).unwrap();
        assert_ne!(raw, data[..BLOCK]);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        // An altered block is an error.
        s.cache.clear();
        let mut b = [0u8; 1];
        s.file.read_exact_at(&mut b, 10).unwrap();
        s.file.write_all_at(&[b[0] ^ 1], 10).unwrap();
        assert!(s.read_at(0, &mut one).is_err());
    }

    #[test]
    fn the_copy_is_capped() {
        let dir = tempfile::tempdir().unwrap();
        let data = vec![1u8; BLOCK * 3];
        let e = Spill::copy(dir.path(), &data[..], BLOCK as u64 * 2, "journal file")
            .err()
            .unwrap();
        assert!(matches!(e, Stop::TooLarge { .. }), "{e}");
        let empty = Spill::copy(dir.path(), &b""[..], 10, "x").unwrap();
        assert_eq!(empty.size(), 0);
    }
}
