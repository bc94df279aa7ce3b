//! systemd journal exports: `journalctl -o json` (one object per line) and `journalctl -o
//! export` (the Journal Export Format: `KEY=value` lines, binary fields as `KEY\n` + 64-bit
//! little-endian length + bytes + `\n`, entries separated by an empty line).
//!
//! The binary journal files themselves are not parsed; collect an export instead.

use super::syslog::classify;
use crate::timeline::{dedup_key, Event, Parsed};
use std::collections::HashMap;

/// Parse either export format; the first non-blank byte tells which.
pub fn parse(data: &[u8], mtime_ns: i64) -> Parsed {
    let first = data.iter().find(|b| !b.is_ascii_whitespace());
    if first == Some(&b'{') {
        parse_json(&String::from_utf8_lossy(data), mtime_ns)
    } else {
        parse_export(data, mtime_ns)
    }
}

fn parse_json(text: &str, mtime_ns: i64) -> Parsed {
    let mut out = Parsed::default();
    let mut last = mtime_ns;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = match serde_json::from_str(line) {
            Ok(v) => v,
            Err(e) => {
                out.unparsed(last, "journal", line, &format!("not JSON: {e}"));
                continue;
            }
        };
        let mut fields = HashMap::new();
        if let Some(obj) = v.as_object() {
            for (k, val) in obj {
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
                out.events.push(e);
            }
            None => out.unparsed(last, "journal", line, "no __REALTIME_TIMESTAMP"),
        }
    }
    out
}

fn parse_export(data: &[u8], mtime_ns: i64) -> Parsed {
    let mut out = Parsed::default();
    let mut last = mtime_ns;
    let mut fields: HashMap<String, String> = HashMap::new();
    let mut pos = 0usize;
    let flush = |fields: &mut HashMap<String, String>, out: &mut Parsed, last: &mut i64| {
        if fields.is_empty() {
            return;
        }
        match entry(fields) {
            Some(e) => {
                *last = e.time_ns;
                out.events.push(e);
            }
            None => {
                let text = fields
                    .get("MESSAGE")
                    .cloned()
                    .unwrap_or_else(|| format!("{} fields", fields.len()));
                out.unparsed(
                    *last,
                    "journal",
                    &text,
                    "entry without __REALTIME_TIMESTAMP",
                )
            }
        }
        fields.clear();
    };
    while pos < data.len() {
        let end = data[pos..]
            .iter()
            .position(|b| *b == b'\n')
            .map_or(data.len(), |i| pos + i);
        let line = &data[pos..end];
        pos = end + 1;
        if line.is_empty() {
            flush(&mut fields, &mut out, &mut last);
            continue;
        }
        if let Some(eq) = line.iter().position(|b| *b == b'=') {
            fields.insert(
                String::from_utf8_lossy(&line[..eq]).into_owned(),
                String::from_utf8_lossy(&line[eq + 1..]).into_owned(),
            );
            continue;
        }
        // A binary field: the name alone on its line, then a 64-bit LE length.
        let name = String::from_utf8_lossy(line).into_owned();
        let Some(len_bytes) = data.get(pos..pos + 8) else {
            out.unparsed(last, "journal", &name, "binary field truncated");
            break;
        };
        let mut b = [0u8; 8];
        b.copy_from_slice(len_bytes);
        let len = u64::from_le_bytes(b) as usize;
        let Some(value) = len
            .checked_add(pos + 8)
            .and_then(|stop| data.get(pos + 8..stop))
        else {
            out.unparsed(last, "journal", &name, "binary field longer than the file");
            break;
        };
        fields.insert(name, String::from_utf8_lossy(value).into_owned());
        pos += 8 + len + 1;
    }
    flush(&mut fields, &mut out, &mut last);
    out
}

/// One journal entry → an event, recognised by its syslog identifier like a syslog line.
fn entry(f: &HashMap<String, String>) -> Option<Event> {
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
}
