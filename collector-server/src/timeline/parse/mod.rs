//! Parsers: bytes from the host → timeline events. Each reads hostile input: a line it cannot
//! read becomes an `unparsed` event and is counted, and the rest of the input is still read.
//! Each streams: it reads from a `BufRead` and hands events to an [`Emit`] one at a time, so
//! what it holds is one line ([`MAX_LINE`]) or one record, whatever the input's size; only
//! the volatile snapshots are read whole, up to [`MAX_DOCUMENT`], and binary journal files,
//! read at random, from a copy (`journal_file`).

pub mod bodyfile;
pub mod ebpf;
#[cfg(test)]
pub(crate) mod golden;
pub mod gunzip;
pub mod history;
pub mod journal;
pub mod journal_file;
pub mod syslog;
pub mod utmp;
pub mod volatile;

use super::Stop;
use std::io::{self, BufRead};

/// Longest line a line parser reads; a longer one becomes one `unparsed` event that says so,
/// and its tail is skipped, never buffered. Sensor events (argv up to 4 KiB, twice) and log
/// lines are far shorter.
pub const MAX_LINE: usize = 1 << 20;

/// Largest document (`processes.json`, `network.json`) parsed whole.
pub const MAX_DOCUMENT: u64 = 64 << 20;

/// An input that can be read from its start more than once (syslog reads twice).
pub trait Reopen {
    type Reader: BufRead;
    fn open(&self) -> Result<Self::Reader, Stop>;
}

impl<'a> Reopen for &'a [u8] {
    type Reader = &'a [u8];
    fn open(&self) -> Result<&'a [u8], Stop> {
        Ok(self)
    }
}

/// One line, without its `\n` (or `\r\n`, unless raw).
#[derive(Debug, PartialEq, Eq)]
pub enum Line<'a> {
    Text(&'a [u8]),
    /// Longer than the cap: its first `MAX` bytes, its whole length, and its last byte (before
    /// a `\r\n`), read as it was skipped.
    TooLong {
        head: &'a [u8],
        len: u64,
        last: Option<u8>,
    },
}

impl Line<'_> {
    /// The line as text (invalid UTF-8 replaced), or its head for a line too long.
    pub fn text(&self) -> std::borrow::Cow<'_, str> {
        match self {
            Line::Text(b) | Line::TooLong { head: b, .. } => String::from_utf8_lossy(b),
        }
    }

    /// Why a line too long is not parsed.
    pub fn too_long(len: u64, max: usize) -> String {
        format!("line of {len} bytes is longer than the {max} read; not parsed")
    }
}

/// Lines of a `BufRead`, each at most `max` bytes in memory.
pub struct Lines<R> {
    r: R,
    buf: Vec<u8>,
    max: usize,
    /// Lines returned so far.
    count: u64,
    /// Whether a `\r` before the `\n` is dropped (text), or kept (the journal export format).
    strip_cr: bool,
}

impl<R: BufRead> Lines<R> {
    /// Lines as `str::lines` splits them.
    pub fn new(r: R, max: usize) -> Lines<R> {
        Lines {
            r,
            buf: Vec::new(),
            max,
            count: 0,
            strip_cr: true,
        }
    }

    /// Lines split at `\n` only.
    pub fn raw(r: R, max: usize) -> Lines<R> {
        Lines {
            strip_cr: false,
            ..Lines::new(r, max)
        }
    }

    /// The reader after the lines read so far (for formats that mix lines and binary).
    pub fn reader(&mut self) -> &mut R {
        &mut self.r
    }

    /// The next line and its position (0-based).
    pub fn next_line(&mut self) -> io::Result<Option<(u64, Line<'_>)>> {
        self.buf.clear();
        let mut len = 0u64;
        let mut any = false;
        let mut ended = false;
        let mut too_long = false;
        let mut tail = [None, None];
        loop {
            let avail = match self.r.fill_buf() {
                Ok(b) => b,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if avail.is_empty() {
                break;
            }
            any = true;
            let (part, found) = match avail.iter().position(|b| *b == b'\n') {
                Some(i) => (&avail[..i], true),
                None => (avail, false),
            };
            len += part.len() as u64;
            match part {
                [.., a, b] => tail = [Some(*a), Some(*b)],
                [b] => tail = [tail[1], Some(*b)],
                [] => {}
            }
            if !too_long {
                let room = self.max - self.buf.len();
                if part.len() <= room {
                    self.buf.extend_from_slice(part);
                } else {
                    self.buf.extend_from_slice(&part[..room]);
                    too_long = true;
                }
            }
            let used = part.len() + usize::from(found);
            self.r.consume(used);
            if found {
                ended = true;
                break;
            }
        }
        if !any {
            return Ok(None);
        }
        let at = self.count;
        self.count += 1;
        // `str::lines` drops a `\r` before the `\n` (not at the end of an unterminated line).
        let cr = self.strip_cr && ended && tail[1] == Some(b'\r');
        if too_long {
            let last = if cr { tail[0] } else { tail[1] };
            let line = Line::TooLong {
                head: &self.buf,
                len: len - u64::from(cr),
                last,
            };
            return Ok(Some((at, line)));
        }
        if cr {
            self.buf.pop();
        }
        Ok(Some((at, Line::Text(&self.buf))))
    }
}

/// Fill `buf` from `r` unless the input ends first; returns how many bytes were read.
pub fn read_full(r: &mut impl BufRead, buf: &mut [u8]) -> io::Result<usize> {
    cairn_protocol::chunk::read_full(r, buf)
}

/// Skip `n` bytes of `r`; returns how many there were.
pub fn skip(r: &mut impl BufRead, n: u64) -> io::Result<u64> {
    io::copy(&mut io::Read::take(&mut *r, n), &mut io::sink())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn all(data: &[u8], max: usize) -> Vec<String> {
        let mut lines = Lines::new(data, max);
        let mut out = Vec::new();
        while let Some((_, l)) = lines.next_line().unwrap() {
            out.push(match l {
                Line::Text(b) => String::from_utf8_lossy(b).into_owned(),
                Line::TooLong { head, len, last } => format!(
                    "TOO LONG {len} {} {:?}",
                    String::from_utf8_lossy(head),
                    last.map(char::from)
                ),
            });
        }
        out
    }

    #[test]
    fn lines_split_as_str_lines_does() {
        for text in [
            "",
            "a",
            "a\n",
            "a\r\nb\r\n",
            "a\r\n\r\nb",
            "\n\n",
            "x\r",
            "x\ry\n",
            "é\u{fffd}\nlast",
        ] {
            let want: Vec<String> = text.lines().map(str::to_string).collect();
            assert_eq!(all(text.as_bytes(), 64), want, "{text:?}");
        }
    }

    #[test]
    fn lines_split_across_small_reads() {
        // A reader that hands out 3 bytes at a time, so lines span many fill_buf calls.
        let text = "first line\r\nsecond\n\nthird, unterminated";
        let r = io::BufReader::with_capacity(3, text.as_bytes());
        let mut lines = Lines::new(r, 64);
        let mut got = Vec::new();
        while let Some((_, l)) = lines.next_line().unwrap() {
            got.push(l.text().into_owned());
        }
        let want: Vec<String> = text.lines().map(str::to_string).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn a_line_longer_than_the_cap_is_cut_and_its_tail_skipped() {
        let text = "short\n0123456789abcdef\\\r\nafter\n";
        let r = io::BufReader::with_capacity(4, text.as_bytes());
        let mut lines = Lines::new(r, 8);
        assert_eq!(lines.next_line().unwrap(), Some((0, Line::Text(b"short"))));
        let cut = Line::TooLong {
            head: b"01234567",
            len: 17,
            last: Some(b'\\'),
        };
        assert_eq!(lines.next_line().unwrap(), Some((1, cut)));
        assert_eq!(lines.next_line().unwrap(), Some((2, Line::Text(b"after"))));
        assert_eq!(lines.next_line().unwrap(), None);
        // Exactly the cap is not too long.
        assert_eq!(all(b"12345678", 8), ["12345678"]);
    }
}
