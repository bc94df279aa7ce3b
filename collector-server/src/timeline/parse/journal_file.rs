//! Binary systemd journal files (`system.journal`, `user-1000@….journal~`), read directly:
//! no `journalctl` on the collector. The format is systemd's (docs/JOURNAL_FILE_FORMAT.md):
//! a header (`LPKSHHRH`, flags, header size, arena), then 8-byte aligned objects. Entries are
//! found through the chain of entry arrays from the header's `entry_array_offset`; each entry
//! lists its data objects (`FIELD=value`), which may be compressed (XZ, LZ4 with an 8-byte
//! size before the block, ZSTD). Compact files (systemd ≥ 252) use 32-bit offsets in entry
//! items and arrays.
//!
//! Every offset and size in the file is hostile: each object is checked to lie inside the
//! file, be aligned and be of the type wanted; arrays and entries must move forward through
//! the file (so a chain cannot loop, and the walk ends within the file's size); an entry
//! lists at most [`MAX_ITEMS`] fields; a field is read or decompressed to at most
//! [`MAX_FIELD`] bytes (only the fields the event is made of are read past their name), and
//! all decompression of one file to a budget in proportion to its size. What cannot be read
//! becomes an `unparsed` event that says why, and the walk goes on where it can.
//!
//! An entry becomes the event its export would (`journal::entry`): the same kinds as
//! `auth.log` (sshd, sudo, su, …), and the same key, from the cursor `journalctl` prints.

use super::journal::{entry as journal_event, FIELDS};
use crate::timeline::{Emit, Stop};
use std::collections::HashMap;
use std::io::{self, Read};

/// Random access to an input of known size.
pub trait ReadAt {
    fn size(&self) -> u64;
    /// Fill `buf` from `at`; an error if the input ends first.
    fn read_at(&mut self, at: u64, buf: &mut [u8]) -> io::Result<()>;
}

impl ReadAt for &[u8] {
    fn size(&self) -> u64 {
        self.len() as u64
    }
    fn read_at(&mut self, at: u64, buf: &mut [u8]) -> io::Result<()> {
        let from = usize::try_from(at).map_err(|_| io::ErrorKind::UnexpectedEof)?;
        let to = from
            .checked_add(buf.len())
            .ok_or(io::ErrorKind::UnexpectedEof)?;
        let src = self.get(from..to).ok_or(io::ErrorKind::UnexpectedEof)?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

const SIGNATURE: &[u8; 8] = b"LPKSHHRH";
/// The header up to `tail_entry_monotonic`: every journal file has at least this.
const MIN_HEADER: u64 = 208;

const INCOMPATIBLE_XZ: u32 = 1 << 0;
const INCOMPATIBLE_LZ4: u32 = 1 << 1;
const INCOMPATIBLE_KEYED_HASH: u32 = 1 << 2;
const INCOMPATIBLE_ZSTD: u32 = 1 << 3;
const INCOMPATIBLE_COMPACT: u32 = 1 << 4;
const INCOMPATIBLE_KNOWN: u32 = INCOMPATIBLE_XZ
    | INCOMPATIBLE_LZ4
    | INCOMPATIBLE_KEYED_HASH
    | INCOMPATIBLE_ZSTD
    | INCOMPATIBLE_COMPACT;

const OBJECT_DATA: u8 = 1;
const OBJECT_ENTRY: u8 = 3;
const OBJECT_ENTRY_ARRAY: u8 = 6;

const COMPRESSED_XZ: u8 = 1 << 0;
const COMPRESSED_LZ4: u8 = 1 << 1;
const COMPRESSED_ZSTD: u8 = 1 << 2;

/// Most fields one entry may list (journald's own limit is 1024).
pub const MAX_ITEMS: u64 = 1024;
/// Most bytes of one field read (or decompressed).
pub const MAX_FIELD: usize = 1 << 20;
/// Longest field name looked for (systemd's limit is 64).
const MAX_NAME: usize = 64;
/// Decompression allowed per file: this many times its size, plus [`BUDGET_BASE`].
const BUDGET_PER_BYTE: u64 = 16;
const BUDGET_BASE: u64 = 64 << 20;
/// Memory an XZ or ZSTD decoder may take for one field (its window).
const DECODER_MEMORY: u64 = 16 << 20;
const ZSTD_WINDOW_LOG_MAX: u32 = 24;

/// Why an object could not be read, or that the input itself failed.
enum Fail {
    Bad(String),
    Io(io::Error),
}

impl From<io::Error> for Fail {
    fn from(e: io::Error) -> Fail {
        Fail::Io(e)
    }
}

fn bad<T>(why: impl Into<String>) -> Result<T, Fail> {
    Err(Fail::Bad(why.into()))
}

fn le64(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

fn le32(b: &[u8], at: usize) -> u32 {
    let mut x = [0u8; 4];
    x.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(x)
}

struct Object {
    at: u64,
    flags: u8,
    size: u64,
}

/// The file being read, within its bounds.
struct Journal<'r, R: ReadAt> {
    r: &'r mut R,
    compact: bool,
    /// Objects lie in `[header_size, end)`.
    header_size: u64,
    end: u64,
    seqnum_id: String,
    /// Decompressed bytes still allowed.
    budget: u64,
}

impl<R: ReadAt> Journal<'_, R> {
    /// The object at `at`, checked to be of type `want`, at least `min` bytes, in the file.
    fn object(&mut self, at: u64, want: u8, min: u64) -> Result<Object, Fail> {
        if !at.is_multiple_of(8) || at < self.header_size || at.saturating_add(16) > self.end {
            return bad(format!("object offset {at:#x} outside the file's objects"));
        }
        let mut h = [0u8; 16];
        self.r.read_at(at, &mut h)?;
        let size = le64(&h, 8);
        if h[0] != want {
            return bad(format!("object at {at:#x} is of type {}, not {want}", h[0]));
        }
        if size < min || at.saturating_add(size) > self.end {
            return bad(format!(
                "object at {at:#x} claims {size} bytes, beyond the file or too small"
            ));
        }
        Ok(Object {
            at,
            flags: h[1],
            size,
        })
    }

    fn item_size(&self) -> u64 {
        if self.compact {
            4
        } else {
            8
        }
    }

    /// Charge `n` decompressed bytes to the budget.
    fn charge(&mut self, n: u64) -> Result<(), Fail> {
        if n > self.budget {
            self.budget = 0;
            return bad("decompressed more than this file's budget; the rest is not read");
        }
        self.budget -= n;
        Ok(())
    }

    /// One data object: its field name and, if it is one the event is made of, its value
    /// (`Ok(None)` for the other fields, which are read no further than their name).
    fn field(&mut self, at: u64) -> Result<Option<(String, Vec<u8>)>, Fail> {
        let head = if self.compact { 72 } else { 64 };
        let obj = self.object(at, OBJECT_DATA, head)?;
        let start = obj.at + head;
        let len = obj.size - head;
        let compression = obj.flags & (COMPRESSED_XZ | COMPRESSED_LZ4 | COMPRESSED_ZSTD);
        let mut failed = None;
        let section = Section {
            r: &mut *self.r,
            at: start,
            end: start + len,
            failed: &mut failed,
        };
        let mut value = Vec::new();
        let over = decode_field(compression, section, len, &mut value);
        // A read of the input that failed is the input's error, whatever the decoder said.
        if let Some(e) = failed {
            return Err(Fail::Io(e));
        }
        let over = match over {
            Err(Fail::Bad(why)) => return bad(format!("data object at {at:#x}: {why}")),
            other => other?,
        };
        if compression != 0 {
            self.charge(value.len() as u64)?;
        }
        let Some(eq) = value.iter().take(MAX_NAME + 1).position(|b| *b == b'=') else {
            return bad(format!("data object at {at:#x} is not FIELD=value"));
        };
        let name = String::from_utf8_lossy(&value[..eq]).into_owned();
        if !FIELDS.contains(&name.as_str()) {
            return Ok(None);
        }
        if over {
            return bad(format!(
                "field {name} at {at:#x} is longer than the {MAX_FIELD} bytes read; not read"
            ));
        }
        value.drain(..=eq);
        Ok(Some((name, value)))
    }
}

/// A data object's payload, decompressed as its flags say; returns whether there was more.
fn decode_field<R: ReadAt>(
    compression: u8,
    section: Section<'_, R>,
    len: u64,
    value: &mut Vec<u8>,
) -> Result<bool, Fail> {
    match compression {
        0 => read_field(&mut { section }, value),
        COMPRESSED_ZSTD => {
            let mut d = zstd::stream::read::Decoder::with_buffer(io::BufReader::with_capacity(
                8192, section,
            ))
            .map_err(decode)?;
            d.window_log_max(ZSTD_WINDOW_LOG_MAX).map_err(decode)?;
            read_field(&mut d, value)
        }
        COMPRESSED_XZ => {
            let stream = xz2::stream::Stream::new_stream_decoder(DECODER_MEMORY, 0)
                .map_err(|e| Fail::Bad(format!("XZ decoder: {e}")))?;
            read_field(
                &mut xz2::read::XzDecoder::new_stream(section, stream),
                value,
            )
        }
        COMPRESSED_LZ4 => lz4_field(&mut { section }, len, value),
        f => bad(format!("compression flags {f:#x}")),
    }
}

/// A field's bytes: its name first, then (for the fields kept) up to [`MAX_FIELD`] bytes.
/// Returns whether there was more.
fn read_field(r: &mut impl Read, out: &mut Vec<u8>) -> Result<bool, Fail> {
    // The name: enough to see the `=`.
    r.take(MAX_NAME as u64 + 1)
        .read_to_end(out)
        .map_err(decode)?;
    let name_end = out.iter().position(|b| *b == b'=');
    let kept = name_end.is_some_and(|eq| FIELDS.contains(&&*String::from_utf8_lossy(&out[..eq])));
    if !kept {
        return Ok(false);
    }
    let room = (MAX_FIELD + MAX_NAME + 1).saturating_sub(out.len()) as u64;
    r.take(room).read_to_end(out).map_err(decode)?;
    let mut one = [0u8; 1];
    Ok(r.read(&mut one).map_err(decode)? > 0)
}

/// An LZ4 field: its uncompressed size (8 bytes, little-endian), then one LZ4 block.
fn lz4_field(section: &mut impl Read, len: u64, out: &mut Vec<u8>) -> Result<bool, Fail> {
    let mut size = [0u8; 8];
    section.read_exact(&mut size).map_err(decode)?;
    let size = u64::from_le_bytes(size);
    let limit = (MAX_FIELD + MAX_NAME + 1) as u64;
    if size > limit || len - 8 > limit {
        return bad(format!(
            "LZ4 field of {size} bytes is longer than the {MAX_FIELD} bytes read; not read"
        ));
    }
    let mut block = Vec::new();
    section
        .take(len - 8)
        .read_to_end(&mut block)
        .map_err(decode)?;
    out.resize(size as usize, 0);
    match lz4_flex::block::decompress_into(&block, out) {
        Ok(n) if n as u64 == size => Ok(false),
        Ok(n) => bad(format!(
            "LZ4 field gave {n} bytes, not the {size} it claims"
        )),
        Err(e) => bad(format!("LZ4 field: {e}")),
    }
}

/// An error while decoding a field: the field's fault, unless the input's read failed (which
/// [`Section`] keeps, and the caller checks first).
fn decode(e: io::Error) -> Fail {
    Fail::Bad(e.to_string())
}

/// `[at, end)` of the input as a reader. A failed read of the input is kept in `failed`, so
/// that it is not mistaken for a bad field when it comes back through a decoder.
struct Section<'r, R: ReadAt> {
    r: &'r mut R,
    at: u64,
    end: u64,
    failed: &'r mut Option<io::Error>,
}

impl<R: ReadAt> Read for Section<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf
            .len()
            .min(usize::try_from(self.end - self.at).unwrap_or(usize::MAX));
        if let Err(e) = self.r.read_at(self.at, &mut buf[..n]) {
            let kind = e.kind();
            *self.failed = Some(e);
            return Err(kind.into());
        }
        self.at += n as u64;
        Ok(n)
    }
}

/// Parse a journal file. `mtime_ns` dates what cannot be read before any entry was.
pub fn parse(mut r: impl ReadAt, mtime_ns: i64, out: &mut impl Emit) -> Result<(), Stop> {
    let size = r.size();
    let mut h = [0u8; 272];
    let got = h.len().min(usize::try_from(size).unwrap_or(h.len()));
    r.read_at(0, &mut h[..got])?;
    let unparsed = |out: &mut dyn Emit, why: &str| {
        out.unparsed(
            mtime_ns,
            "journal",
            0,
            &format!("journal file of {size} bytes"),
            why,
        )
    };
    if got < 8 || &h[..8] != SIGNATURE {
        return unparsed(out, "not a systemd journal file (no LPKSHHRH signature)");
    }
    if (got as u64) < MIN_HEADER {
        return unparsed(out, "journal file header truncated");
    }
    let incompatible = le32(&h, 12);
    if incompatible & !INCOMPATIBLE_KNOWN != 0 {
        let why = format!(
            "journal file with incompatible flags {incompatible:#x}, from a newer systemd; not parsed"
        );
        return unparsed(out, &why);
    }
    let header_size = le64(&h, 88);
    let arena_size = le64(&h, 96);
    if header_size < MIN_HEADER || !header_size.is_multiple_of(8) || header_size > size {
        return unparsed(
            out,
            &format!("journal header size {header_size} is not valid"),
        );
    }
    let mut j = Journal {
        r: &mut r,
        compact: incompatible & INCOMPATIBLE_COMPACT != 0,
        header_size,
        end: size.min(header_size.saturating_add(arena_size)),
        seqnum_id: hex::encode(&h[72..88]),
        budget: BUDGET_BASE.saturating_add(size.saturating_mul(BUDGET_PER_BYTE)),
    };
    walk(&mut j, le64(&h, 176), mtime_ns, out)
}

/// Follow the entry array chain from `first`, each entry to an event.
fn walk<R: ReadAt>(
    j: &mut Journal<'_, R>,
    first: u64,
    mtime_ns: i64,
    out: &mut impl Emit,
) -> Result<(), Stop> {
    let mut last_time = mtime_ns;
    let mut array = first;
    let mut after_array = 0u64;
    // Entries are appended in order: each must start past the one before.
    let mut after_entry = 0u64;
    let item = j.item_size();
    let mut items = vec![0u8; 4096];
    let stop = |out: &mut dyn Emit, at: u64, t: i64, why: String| {
        out.unparsed(
            t,
            "journal",
            at,
            &format!("journal object at {at:#x}"),
            &why,
        )
    };
    while array != 0 {
        if array < after_array {
            let why =
                format!("entry array chain goes back to {array:#x}: a loop; the rest is not read");
            return stop(out, array, last_time, why);
        }
        let obj = match j.object(array, OBJECT_ENTRY_ARRAY, 24) {
            Ok(o) => o,
            Err(Fail::Io(e)) => return Err(Stop::Read(e)),
            Err(Fail::Bad(why)) => return stop(out, array, last_time, why),
        };
        let mut next = [0u8; 8];
        j.r.read_at(array + 16, &mut next)?;
        after_array = array + obj.size;
        let n = (obj.size - 24) / item;
        let mut i = 0u64;
        while i < n {
            let batch = (n - i).min(items.len() as u64 / item);
            let buf = &mut items[..(batch * item) as usize];
            j.r.read_at(array + 24 + i * item, buf)?;
            for k in 0..batch as usize {
                let at = if j.compact {
                    u64::from(le32(buf, k * 4))
                } else {
                    le64(buf, k * 8)
                };
                if at == 0 {
                    // The rest of the array is unused.
                    i = n;
                    break;
                }
                if at < after_entry {
                    let why = format!(
                        "entry at {at:#x} is not after the one before: the rest is not read"
                    );
                    return stop(out, at, last_time, why);
                }
                match read_entry(j, at, out)? {
                    Read1::Entry { time, end } => {
                        last_time = time;
                        after_entry = end;
                    }
                    Read1::Skipped { end } => after_entry = end,
                    Read1::Bad(why) => {
                        stop(out, at, last_time, why)?;
                        after_entry = at.saturating_add(1);
                    }
                    Read1::Over(why) => return stop(out, at, last_time, why),
                }
            }
            i = i.saturating_add(batch);
        }
        array = u64::from_le_bytes(next);
    }
    Ok(())
}

enum Read1 {
    /// An event (or an entry without a time, reported), and where the entry ends.
    Entry {
        time: i64,
        end: u64,
    },
    Skipped {
        end: u64,
    },
    /// The entry could not be read.
    Bad(String),
    /// Nothing more can be read (the decompression budget is spent).
    Over(String),
}

/// One entry object at `at` → its event.
fn read_entry<R: ReadAt>(
    j: &mut Journal<'_, R>,
    at: u64,
    out: &mut impl Emit,
) -> Result<Read1, Stop> {
    let obj = match j.object(at, OBJECT_ENTRY, 64) {
        Ok(o) => o,
        Err(Fail::Io(e)) => return Err(Stop::Read(e)),
        Err(Fail::Bad(why)) => return Ok(Read1::Bad(why)),
    };
    let end = at + obj.size;
    let mut h = [0u8; 64];
    j.r.read_at(at, &mut h)?;
    let (seqnum, realtime, monotonic, xor) =
        (le64(&h, 16), le64(&h, 24), le64(&h, 32), le64(&h, 56));
    let boot_id = hex::encode(&h[40..56]);
    let item = if j.compact { 4 } else { 16 };
    let n = (obj.size - 64) / item;
    let time = i64::try_from(realtime)
        .ok()
        .and_then(|t| t.checked_mul(1000));
    let Some(time) = time.filter(|_| realtime != 0) else {
        let why = format!("entry at {at:#x} has no realtime timestamp ({realtime})");
        return Ok(Read1::Bad(why));
    };
    if n > MAX_ITEMS {
        let why = format!("entry at {at:#x} lists {n} fields, more than the {MAX_ITEMS} read");
        out.unparsed(
            time,
            "journal",
            at,
            &format!("journal entry at {at:#x}"),
            &why,
        )?;
        return Ok(Read1::Skipped { end });
    }
    let mut items = vec![0u8; (n * item) as usize];
    j.r.read_at(at + 64, &mut items)?;
    let mut fields: HashMap<String, String> = HashMap::new();
    for k in 0..n as usize {
        let data = if j.compact {
            u64::from(le32(&items, k * 4))
        } else {
            le64(&items, k * 16)
        };
        match j.field(data) {
            Ok(Some((name, value))) => {
                fields
                    .entry(name)
                    .or_insert_with(|| String::from_utf8_lossy(&value).into_owned());
            }
            Ok(None) => {}
            Err(Fail::Io(e)) => return Err(Stop::Read(e)),
            Err(Fail::Bad(why)) if j.budget == 0 => return Ok(Read1::Over(why)),
            Err(Fail::Bad(why)) => {
                let text = format!("field of the journal entry at {at:#x}");
                out.unparsed(time, "journal", data, &text, &why)?;
            }
        }
    }
    let cursor = format!(
        "s={};i={seqnum:x};b={boot_id};m={monotonic:x};t={realtime:x};x={xor:x}",
        j.seqnum_id
    );
    fields.insert("__CURSOR".into(), cursor);
    fields.insert("__REALTIME_TIMESTAMP".into(), realtime.to_string());
    // As `journalctl -o export` gives it: the entry's own boot id, not a field's.
    fields.insert("_BOOT_ID".into(), boot_id);
    match journal_event(&fields) {
        Some(e) => {
            out.event(e)?;
            Ok(Read1::Entry { time, end })
        }
        None => Ok(Read1::Bad(format!("entry at {at:#x} has no usable time"))),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
pub mod tests {
    use super::*;
    use crate::timeline::Parsed;

    /// A fixture made by `testdata/make-journals.sh` (systemd-journal-remote).
    pub(crate) fn fixture(name: &str) -> Vec<u8> {
        let path = format!(
            "{}/src/timeline/parse/testdata/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        let z = std::fs::read(&path).unwrap();
        zstd::decode_all(&z[..]).unwrap()
    }

    fn export(mode: &str) -> Parsed {
        let path = format!(
            "{}/src/timeline/parse/testdata/{mode}.export",
            env!("CARGO_MANIFEST_DIR")
        );
        let data = std::fs::read(path).unwrap();
        let mut p = Parsed::default();
        super::super::journal::parse(&data[..], 0, &mut p).unwrap();
        p
    }

    fn parse(data: &[u8]) -> Parsed {
        let mut p = Parsed::default();
        super::parse(data, 7, &mut p).unwrap();
        p
    }

    const FILES: [&str; 6] = [
        "regular-zstd",
        "regular-xz",
        "regular-lz4",
        "compact-zstd",
        "compact-xz",
        "compact-lz4",
    ];

    #[test]
    fn real_journal_files_give_the_events_of_their_export() {
        for name in FILES {
            let data = fixture(&format!("{name}.journal.zst"));
            let p = parse(&data);
            assert_eq!(p.unparsed, 0, "{name}: {:?}", p.events);
            assert_eq!(p.events.len(), 6, "{name}");
            // Exactly what journalctl's own export of the file gives, keys included.
            let mode = name.split('-').next().unwrap();
            assert_eq!(p.events, export(mode).events, "{name}");
            let login = &p.events[0];
            assert_eq!(login.kind, "ssh_login");
            assert_eq!(login.source, "journal");
            assert_eq!(login.time_ns, 1_795_946_281_123_456_000);
            assert_eq!(login.user.as_deref(), Some("alice"));
            assert_eq!(login.pid, Some(4121));
            assert_eq!(login.exe.as_deref(), Some("/usr/sbin/sshd"));
            assert_eq!(login.attrs["src_ip"], "203.0.113.7");
            assert_eq!(login.attrs["unit"], "ssh.service");
            assert_eq!(login.attrs["log_host"], "ip-10-0-1-17");
            assert_eq!(p.events[1].kind, "ssh_failed");
            assert_eq!(p.events[2].kind, "sudo");
            assert_eq!(p.events[2].attrs["command"], "/usr/bin/id -u");
            assert_eq!(p.events[2].time_ns, 1_795_946_283_123_458_000);
            assert_eq!(p.events[3].kind, "su");
            // The compressed field, read whole.
            assert_eq!(p.events[4].kind, "log");
            assert!(p.events[4].message.ends_with("key199=value199"), "{name}");
            assert_eq!(p.events[5].attrs["unit"], "init.scope");
        }
    }

    fn u64_at(b: &[u8], at: u64) -> u64 {
        le64(b, at as usize)
    }

    fn put64(b: &mut [u8], at: u64, v: u64) {
        b[at as usize..at as usize + 8].copy_from_slice(&v.to_le_bytes());
    }

    /// The first entry array's offset.
    fn first_array(b: &[u8]) -> u64 {
        u64_at(b, 176)
    }

    /// The entries of a fixture (regular mode), through the array chain.
    fn entries(b: &[u8]) -> Vec<u64> {
        let mut out = Vec::new();
        let mut arr = first_array(b);
        while arr != 0 {
            for i in 0..(u64_at(b, arr + 8) - 24) / 8 {
                match u64_at(b, arr + 24 + 8 * i) {
                    0 => break,
                    e => out.push(e),
                }
            }
            arr = u64_at(b, arr + 16);
        }
        out
    }

    /// The compressed data object of a fixture (regular mode).
    fn compressed_object(b: &[u8]) -> u64 {
        for e in entries(b) {
            for k in 0..(u64_at(b, e + 8) - 64) / 16 {
                let d = u64_at(b, e + 64 + k * 16);
                if b[d as usize + 1] & 7 != 0 {
                    return d;
                }
            }
        }
        panic!("no compressed object");
    }

    #[test]
    fn truncated_files_never_panic_and_say_so() {
        let data = fixture("regular-zstd.journal.zst");
        let used = {
            let tail = u64_at(&data, 136);
            (tail + u64_at(&data, tail + 8)) as usize
        };
        let mut cuts = vec![0, 1, 7, 8, 100, 207, 208, 264, 4096];
        cuts.extend(entries(&data).iter().map(|e| *e as usize + 20));
        for cut in cuts {
            let p = parse(&data[..cut]);
            assert!(p.unparsed >= 1, "cut at {cut}: {:?}", p.events);
            assert!(p.events.len() <= 6 + p.unparsed as usize);
        }
        // Cut after every object: all the entries, nothing unparsed.
        assert_eq!(parse(&data[..used]).events.len(), 6);
        let p = parse(b"not a journal at all");
        assert_eq!(p.unparsed, 1);
        let why = p.events[0].attrs["parse_error"].as_str().unwrap();
        assert!(why.contains("not a systemd journal file"), "{why}");
    }

    #[test]
    fn offsets_out_of_range_are_unparsed() {
        let data = fixture("regular-zstd.journal.zst");
        for bad in [u64::MAX - 7, 1 << 40, 8, 3, data.len() as u64 - 8] {
            let mut b = data.clone();
            put64(&mut b, 176, bad);
            let p = parse(&b);
            assert_eq!((p.events.len(), p.unparsed), (1, 1), "{bad:#x}");
        }
        // An entry's field pointing past the end: that field is unparsed, the entry kept.
        let mut b = data.clone();
        let e = u64_at(&b, first_array(&b) + 24);
        put64(&mut b, e + 64, 1 << 50);
        let p = parse(&b);
        assert_eq!(p.unparsed, 1);
        assert_eq!(p.events.iter().filter(|e| e.kind != "unparsed").count(), 6);
        // A header size larger than the file.
        let mut b = data.clone();
        put64(&mut b, 88, 1 << 40);
        assert_eq!(parse(&b).unparsed, 1);
    }

    #[test]
    fn an_entry_array_cycle_ends_the_walk() {
        let data = fixture("compact-zstd.journal.zst");
        let arr = first_array(&data);
        let mut b = data.clone();
        // The first array's next is itself.
        put64(&mut b, arr + 16, arr);
        let p = parse(&b);
        assert_eq!(p.unparsed, 1);
        let why = p.events.last().unwrap().attrs["parse_error"]
            .as_str()
            .unwrap();
        assert!(why.contains("loop"), "{why}");
        // Pointing into the header: out of the objects.
        put64(&mut b, arr + 16, 16);
        assert_eq!(parse(&b).unparsed, 1);
    }

    #[test]
    fn a_compressed_field_claiming_4_gib_is_unparsed_not_allocated() {
        let mut b = fixture("regular-lz4.journal.zst");
        let d = compressed_object(&b);
        put64(&mut b, d + 64, 4 << 30);
        let p = parse(&b);
        assert_eq!(p.unparsed, 1);
        let bad = p.events.iter().find(|e| e.kind == "unparsed").unwrap();
        let why = bad.attrs["parse_error"].as_str().unwrap();
        assert!(why.contains("longer than the 1048576 bytes read"), "{why}");
        // The entry is kept, without its message.
        assert_eq!(p.events.len(), 7);
    }

    #[test]
    fn a_zstd_field_that_inflates_past_the_cap_is_unparsed() {
        let mut b = fixture("regular-zstd.journal.zst");
        let d = compressed_object(&b);
        // A new data object at the end: MESSAGE= and 16 MiB, zstd'ed to a few hundred bytes.
        let mut plain = b"MESSAGE=".to_vec();
        plain.resize(16 << 20, b'a');
        let z = zstd::encode_all(&plain[..], 19).unwrap();
        let tail = u64_at(&b, 136);
        let end = (tail + u64_at(&b, tail + 8) + 7) & !7;
        let mut obj = b[d as usize..d as usize + 64].to_vec();
        obj.extend_from_slice(&z);
        let len = obj.len() as u64;
        put64(&mut obj, 8, len);
        b[end as usize..(end + len) as usize].copy_from_slice(&obj);
        let e = entries(&b)[4];
        let item = (0..(u64_at(&b, e + 8) - 64) / 16)
            .map(|k| e + 64 + k * 16)
            .find(|at| u64_at(&b, *at) == d)
            .unwrap();
        put64(&mut b, item, end);
        let p = parse(&b);
        assert_eq!(p.unparsed, 1, "{:?}", p.events);
        assert_eq!(p.events.len(), 7);
    }

    #[test]
    fn flipped_bytes_never_panic() {
        let data = fixture("compact-xz.journal.zst");
        let tail = u64_at(&data, 136);
        let used = (tail + u64_at(&data, tail + 8)) as usize;
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..300 {
            let mut b = data[..used].to_vec();
            for _ in 0..8 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let at = (x % used as u64) as usize;
                b[at] ^= (x >> 32) as u8 | 1;
            }
            let p = parse(&b);
            assert!(p.unparsed as usize <= p.events.len());
        }
    }
}
