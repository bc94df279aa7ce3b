//! systemd journal exports: `journalctl -o json` (one object per line) and `journalctl -o
//! export` (the Journal Export Format: `KEY=value` lines, binary fields as `KEY\n` + 64-bit
//! little-endian length + bytes + `\n`, entries separated by an empty line).
//!
//! The binary journal files are read by `journal_file`, into the same events.

use super::syslog::classify;
use super::{read_full, skip, Line, Lines, MAX_LINE};
use crate::timeline::{dedup_key, Emit, Event, Stop};
use std::collections::HashMap;
use std::io::BufRead;

/// The fields an entry's event is made of; the others are counted, not kept, so an entry
/// holds at most these, each cut to [`MAX_LINE`] bytes.
pub(super) const FIELDS: &[&str] = &[
    "__CURSOR",
    "__REALTIME_TIMESTAMP",
    "SYSLOG_IDENTIFIER",
    "_COMM",
    "MESSAGE",
    "_PID",
    "_EXE",
    "_UID",
    "_SYSTEMD_UNIT",
    "_HOSTNAME",
    "_CMDLINE",
    "PRIORITY",
    "_BOOT_ID",
];

/// Parse either export format; the first non-blank byte tells which.
pub fn parse(mut r: impl BufRead, mtime_ns: i64, out: &mut impl Emit) -> Result<(), Stop> {
    // Leading blanks are looked past without being read, unless a whole buffer is blank.
    let first = loop {
        let buf = r.fill_buf()?;
        if buf.is_empty() {
            break None;
        }
        match buf.iter().find(|b| !b.is_ascii_whitespace()) {
            Some(b) => break Some(*b),
            None => {
                let n = buf.len();
                r.consume(n);
            }
        }
    };
    if first == Some(b'{') {
        parse_json(r, mtime_ns, out)
    } else {
        parse_export(r, mtime_ns, out)
    }
}

fn parse_json(r: impl BufRead, mtime_ns: i64, out: &mut impl Emit) -> Result<(), Stop> {
    let mut last = mtime_ns;
    let mut lines = Lines::new(r, MAX_LINE);
    while let Some((at, line)) = lines.next_line()? {
        let bytes = match line {
            Line::Text(b) => b,
            Line::TooLong { head, len, .. } => {
                let text = String::from_utf8_lossy(head);
                out.unparsed(last, "journal", at, &text, &Line::too_long(len, MAX_LINE))?;
                continue;
            }
        };
        let line = String::from_utf8_lossy(bytes);
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = match serde_json::from_str(&line) {
            Ok(v) => v,
            Err(e) => {
                out.unparsed(last, "journal", at, &line, &format!("not JSON: {e}"))?;
                continue;
            }
        };
        let mut fields = HashMap::new();
        if let Some(obj) = v.as_object() {
            for (k, val) in obj.iter().filter(|(k, _)| FIELDS.contains(&k.as_str())) {
                let s = match val {
                    serde_json::Value::String(s) => s.clone(),
                    // A field given several times is an array of its values: keep the first.
                    serde_json::Value::Array(a) if a.first().is_some_and(|x| x.is_string()) => {
                        a[0].as_str().unwrap_or_default().to_string()
                    }
                    // Binary or invalid UTF-8 values are arrays of bytes.
                    serde_json::Value::Array(a) => String::from_utf8_lossy(
                        &a.iter()
                            .filter_map(|b| b.as_u64().map(|b| b as u8))
                            .collect::<Vec<_>>(),
                    )
                    .into_owned(),
                    other => other.to_string(),
                };
                fields.insert(k.clone(), s);
            }
        }
        match entry(&fields) {
            Some(e) => {
                last = e.time_ns;
                out.event(e)?;
            }
            None => out.unparsed(last, "journal", at, &line, "no __REALTIME_TIMESTAMP")?,
        }
    }
    Ok(())
}

/// Most distinct field names counted in one entry (for the text of an entry that cannot be
/// read); the rest are read past uncounted.
const NAMES_COUNTED: usize = 4096;

/// One entry of the export format being read.
#[derive(Default)]
struct Entry {
    fields: HashMap<String, String>,
    /// The names of every field seen, kept or not, as hashes.
    names: std::collections::HashSet<i64>,
    /// Its first line's number, which keys it when it cannot be read.
    at: u64,
}

impl Entry {
    fn field(&mut self, name: &[u8], value: &[u8], at: u64) {
        if self.names.is_empty() {
            self.at = at;
        }
        let name = String::from_utf8_lossy(name);
        if self.names.len() < NAMES_COUNTED {
            self.names.insert(dedup_key(&[name.as_bytes()]));
        }
        if FIELDS.contains(&name.as_ref()) {
            self.fields.insert(
                name.into_owned(),
                String::from_utf8_lossy(value).into_owned(),
            );
        }
    }

    fn flush(&mut self, out: &mut impl Emit, last: &mut i64) -> Result<(), Stop> {
        if self.names.is_empty() {
            return Ok(());
        }
        match entry(&self.fields) {
            Some(e) => {
                *last = e.time_ns;
                out.event(e)?;
            }
            None => {
                let text = self
                    .fields
                    .get("MESSAGE")
                    .cloned()
                    .unwrap_or_else(|| format!("{} fields", self.names.len()));
                let why = "entry without __REALTIME_TIMESTAMP";
                out.unparsed(*last, "journal", self.at, &text, why)?;
            }
        }
        self.fields.clear();
        self.names.clear();
        Ok(())
    }
}

fn parse_export(r: impl BufRead, mtime_ns: i64, out: &mut impl Emit) -> Result<(), Stop> {
    let mut last = mtime_ns;
    let mut entry = Entry::default();
    let mut lines = Lines::raw(r, MAX_LINE);
    let mut value = Vec::new();
    while let Some((at, line)) = lines.next_line()? {
        let line = match line {
            Line::Text(b) => b,
            Line::TooLong { head, len, .. } => {
                let text = String::from_utf8_lossy(head);
                out.unparsed(last, "journal", at, &text, &Line::too_long(len, MAX_LINE))?;
                continue;
            }
        };
        if line.is_empty() {
            entry.flush(out, &mut last)?;
            continue;
        }
        if let Some(eq) = line.iter().position(|b| *b == b'=') {
            entry.field(&line[..eq], &line[eq + 1..], at);
            continue;
        }
        // A binary field: the name alone on its line, then a 64-bit LE length, the value and
        // a newline. The value is kept up to MAX_LINE bytes, the rest skipped.
        let name = line.to_vec();
        let r = lines.reader();
        let mut b = [0u8; 8];
        if read_full(r, &mut b)? < 8 {
            let text = String::from_utf8_lossy(&name);
            out.unparsed(last, "journal", at, &text, "binary field truncated")?;
            return entry.flush(out, &mut last);
        }
        let len = u64::from_le_bytes(b);
        value.clear();
        value.resize(usize::try_from(len).unwrap_or(MAX_LINE).min(MAX_LINE), 0);
        let kept = read_full(r, &mut value)?;
        let complete = kept == value.len() && skip(r, len - kept as u64)? == len - kept as u64;
        if !complete {
            let text = String::from_utf8_lossy(&name);
            out.unparsed(
                last,
                "journal",
                at,
                &text,
                "binary field longer than the file",
            )?;
            return entry.flush(out, &mut last);
        }
        entry.field(&name, &value, at);
        // The newline after the value.
        skip(r, 1)?;
    }
    entry.flush(out, &mut last)
}

/// One journal entry → an event, recognised by its syslog identifier like a syslog line.
pub(super) fn entry(f: &HashMap<String, String>) -> Option<Event> {
    let usec: i64 = f.get("__REALTIME_TIMESTAMP")?.trim().parse().ok()?;
    let t = usec.checked_mul(1000)?;
    let prog = f
        .get("SYSLOG_IDENTIFIER")
        .or_else(|| f.get("_COMM"))
        .map(String::as_str)
        .unwrap_or("");
    let msg = f.get("MESSAGE").map(String::as_str).unwrap_or("");
    let mut e = classify(t, "journal", prog, msg);
    e.pid = e.pid.or_else(|| f.get("_PID").and_then(|p| p.parse().ok()));
    e.exe = f.get("_EXE").cloned();
    if e.user.is_none() {
        e.user = f.get("_UID").cloned();
    }
    for (k, name) in [
        ("_SYSTEMD_UNIT", "unit"),
        ("_HOSTNAME", "log_host"),
        ("_CMDLINE", "cmdline"),
        ("PRIORITY", "priority"),
        ("_BOOT_ID", "boot_id"),
    ] {
        if let Some(v) = f.get(k) {
            e = e.attr(name, v.as_str());
        }
    }
    if !prog.is_empty() {
        e = e.attr("program", prog);
    }
    // The cursor names the entry uniquely in its journal.
    let id = f
        .get("__CURSOR")
        .cloned()
        .unwrap_or_else(|| format!("{usec}/{prog}/{msg}"));
    e.dedup = dedup_key(&[b"journal", id.as_bytes()]);
    Some(e)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::timeline::Parsed;

    fn parse(data: &[u8], mtime_ns: i64) -> Parsed {
        let mut p = Parsed::default();
        super::parse(data, mtime_ns, &mut p).unwrap();
        p
    }

    #[test]
    fn json_export_with_an_ssh_login() {
        let text = r#"{"__CURSOR":"s=1;i=2","__REALTIME_TIMESTAMP":"1795946281000000","_PID":"4121","SYSLOG_IDENTIFIER":"sshd","MESSAGE":"Accepted password for bob from 192.0.2.5 port 50000 ssh2","_SYSTEMD_UNIT":"ssh.service","_UID":"0"}
not json
{"__REALTIME_TIMESTAMP":"1795946282000000","SYSLOG_IDENTIFIER":["kernel","k2"],"MESSAGE":[104,105]}
"#;
        let p = parse(text.as_bytes(), 0);
        assert_eq!(p.unparsed, 1);
        assert_eq!(p.events[0].kind, "ssh_login");
        assert_eq!(p.events[0].user.as_deref(), Some("bob"));
        assert_eq!(p.events[0].time_ns, 1_795_946_281_000_000_000);
        assert_eq!(p.events[0].pid, Some(4121));
        assert_eq!(p.events[0].attrs["unit"], "ssh.service");
        assert_eq!(p.events[2].message, "kernel: hi");
    }

    #[test]
    fn export_format_with_a_binary_field() {
        let mut data =
            b"__CURSOR=s=a;i=1\n__REALTIME_TIMESTAMP=1795946281000000\nSYSLOG_IDENTIFIER=sudo\n"
                .to_vec();
        let msg = b"  alice : TTY=pts/0 ; PWD=/root ; USER=root ; COMMAND=/bin/ls\nsecond line";
        data.extend_from_slice(b"MESSAGE\n");
        data.extend_from_slice(&(msg.len() as u64).to_le_bytes());
        data.extend_from_slice(msg);
        data.extend_from_slice(
            b"\n\n__REALTIME_TIMESTAMP=1795946282000000\nMESSAGE=plain\n\nMESSAGE\n\x05\x00",
        );
        let p = parse(&data, 7);
        assert_eq!(p.events[0].kind, "sudo");
        assert_eq!(p.events[0].user.as_deref(), Some("alice"));
        assert_eq!(p.events[1].message, ": plain");
        // The truncated binary field is kept and counted.
        assert_eq!(p.unparsed, 1);
        assert_eq!(p.events.len(), 3);
    }

    #[test]
    fn big_binary_fields_are_cut_and_long_lines_unparsed() {
        let mut data = b"__REALTIME_TIMESTAMP=1795946281000000\nMESSAGE\n".to_vec();
        let big = vec![b'm'; MAX_LINE + 100];
        data.extend_from_slice(&(big.len() as u64).to_le_bytes());
        data.extend_from_slice(&big);
        data.extend_from_slice(b"\n\n");
        data.extend_from_slice(format!("X={}\n", "y".repeat(MAX_LINE)).as_bytes());
        data.extend_from_slice(b"__REALTIME_TIMESTAMP=1795946282000000\nMESSAGE=next\n");
        let p = parse(&data, 0);
        assert_eq!(p.events.len(), 3);
        assert_eq!(p.events[0].message.len(), ": ".len() + MAX_LINE);
        assert_eq!(p.events[1].kind, "unparsed");
        assert_eq!(p.events[2].message, ": next");
        assert_eq!(p.unparsed, 1);
    }

    #[test]
    fn empty_and_one_byte_inputs() {
        assert!(parse(b"", 0).events.is_empty());
        assert!(parse(b"\n", 0).events.is_empty());
        let p = parse(b"{", 3);
        assert_eq!((p.events.len(), p.unparsed, p.events[0].time_ns), (1, 1, 3));
        // One byte of the export format: a field name with no length after it.
        assert_eq!(parse(b"x", 0).unparsed, 1);
    }
}
