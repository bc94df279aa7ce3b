//! Rotated logs compressed by logrotate (`auth.log.2.gz`, `messages-20261101.gz`): the input
//! as its parser reads it, gunzipped as it streams, up to a cap on the decompressed size so
//! that a gzip bomb costs time in proportion to the cap, never memory. Past the cap the input
//! ends for the parser, and [`Gunzip::capped`] says so (the builder then records the rest as
//! an `unparsed` event).

use super::Reopen;
use crate::timeline::Stop;
use flate2::bufread::MultiGzDecoder;
use std::io::{self, BufReader, Read};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Most bytes a `.gz` log is read to, decompressed.
pub const MAX_GUNZIPPED: u64 = 4 << 30;

/// Whether a file name is a gzipped log, and its name without `.gz`.
pub fn strip_gz(name: &str) -> Option<&str> {
    name.strip_suffix(".gz").filter(|n| !n.is_empty())
}

/// A gzipped input, opened decompressed as often as its parser reads it.
pub struct Gunzip<'a, I: ?Sized> {
    inner: &'a I,
    max: u64,
    capped: Arc<AtomicBool>,
}

impl<'a, I: Reopen + ?Sized> Gunzip<'a, I> {
    /// `max`: the decompressed bytes read at most (the rest is not read).
    pub fn new(inner: &'a I, max: u64) -> Gunzip<'a, I> {
        Gunzip {
            inner,
            max,
            capped: Arc::default(),
        }
    }

    /// Whether a read stopped at the cap with more input after it.
    pub fn capped(&self) -> bool {
        self.capped.load(Ordering::Relaxed)
    }
}

/// A reader that ends after `left` bytes, noting whether there was more.
pub struct Capped<R> {
    r: R,
    left: u64,
    capped: Arc<AtomicBool>,
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            let mut one = [0u8; 1];
            if self.r.read(&mut one)? > 0 {
                self.capped.store(true, Ordering::Relaxed);
            }
            return Ok(0);
        }
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.r.read(&mut buf[..want])?;
        self.left -= n as u64;
        Ok(n)
    }
}

impl<I: Reopen + ?Sized> Reopen for Gunzip<'_, I> {
    type Reader = BufReader<Capped<MultiGzDecoder<I::Reader>>>;

    fn open(&self) -> Result<Self::Reader, Stop> {
        let r = Capped {
            r: MultiGzDecoder::new(self.inner.open()?),
            left: self.max,
            capped: self.capped.clone(),
        };
        Ok(BufReader::with_capacity(64 << 10, r))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
pub(crate) mod tests {
    use super::*;
    use std::io::{BufRead, Write};

    /// Bytes gzipped by the real `gzip`.
    pub fn gzip(data: &[u8]) -> Vec<u8> {
        let mut child = std::process::Command::new("gzip")
            .arg("-c")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("gzip (apt-get install gzip)");
        let mut stdin = child.stdin.take().unwrap();
        let data = data.to_vec();
        let writer = std::thread::spawn(move || stdin.write_all(&data).unwrap());
        let out = child.wait_with_output().unwrap();
        writer.join().unwrap();
        assert!(out.status.success());
        out.stdout
    }

    fn read_all(r: &mut impl BufRead) -> Vec<u8> {
        let mut v = Vec::new();
        r.read_to_end(&mut v).unwrap();
        v
    }

    #[test]
    fn gzip_streams_are_read_whole_and_concatenated_members_too() {
        let text = b"Nov 29 09:58:01 h sshd[1]: one\nNov 29 09:58:02 h sshd[1]: two\n";
        let mut z = gzip(&text[..31]);
        z.extend(gzip(&text[31..]));
        let input: &[u8] = &z;
        let g = Gunzip::new(&input, MAX_GUNZIPPED);
        assert_eq!(read_all(&mut g.open().unwrap()), text);
        assert!(!g.capped());
        // Exactly the cap is not over it.
        let g = Gunzip::new(&input, text.len() as u64);
        assert_eq!(read_all(&mut g.open().unwrap()), text);
        assert!(!g.capped());
    }

    #[test]
    fn a_bomb_stops_at_the_cap() {
        let z = gzip(&vec![b'a'; 10 << 20]);
        assert!(z.len() < 64 << 10);
        let input: &[u8] = &z;
        let g = Gunzip::new(&input, 1 << 20);
        assert_eq!(read_all(&mut g.open().unwrap()).len(), 1 << 20);
        assert!(g.capped());
    }

    #[test]
    fn corrupt_gzip_is_a_read_error_not_a_panic() {
        let mut z = gzip(b"some text\n");
        let n = z.len();
        z[n / 2] ^= 0xff;
        z.truncate(n - 3);
        let input: &[u8] = &z;
        let g = Gunzip::new(&input, MAX_GUNZIPPED);
        let mut v = Vec::new();
        assert!(g.open().unwrap().read_to_end(&mut v).is_err());
        let not_gzip: &[u8] = b"plain";
        let g = Gunzip::new(&not_gzip, MAX_GUNZIPPED);
        assert!(g.open().unwrap().read_to_end(&mut v).is_err());
    }
}
