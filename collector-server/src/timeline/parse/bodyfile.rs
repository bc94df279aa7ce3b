//! The Sleuth Kit 3.x bodyfile: `MD5|name|inode|mode_as_string|UID|GID|size|atime|mtime|ctime|crtime`,
//! times in Unix seconds (fractions allowed), 0 or -1 for "unknown". One event per known
//! time, the way Plaso does it: `file_mtime`, `file_atime`, `file_ctime`, `file_btime`.
//! File names may contain `|`: the name is everything between the first field and the last nine.

use super::{Line, Lines, MAX_LINE};
use crate::timeline::{dedup_key, Emit, Event, Stop};
use std::io::BufRead;

/// Seconds with an optional fraction → nanoseconds; `None` for unknown (0, -1, empty).
fn secs_to_ns(s: &str) -> Option<Option<i64>> {
    let s = s.trim();
    if s.is_empty() || s == "0" || s == "-1" {
        return Some(None);
    }
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    let whole: i64 = whole.parse().ok()?;
    let mut nanos: i64 = 0;
    if !frac.is_empty() {
        let digits: String = frac.chars().take(9).collect();
        nanos = digits.parse::<i64>().ok()? * 10i64.pow(9 - digits.len() as u32);
    }
    Some(Some(whole.checked_mul(1_000_000_000)?.checked_add(nanos)?))
}

/// File events from a bodyfile. `mtime_ns` (of the bodyfile itself) dates unreadable lines.
pub fn parse(r: impl BufRead, mtime_ns: i64, out: &mut impl Emit) -> Result<(), Stop> {
    let mut lines = Lines::new(r, MAX_LINE);
    while let Some((at, line)) = lines.next_line()? {
        let line = match line {
            Line::Text(b) => String::from_utf8_lossy(b),
            Line::TooLong { head, len, .. } => {
                let text = String::from_utf8_lossy(head);
                let why = Line::too_long(len, MAX_LINE);
                out.unparsed(mtime_ns, "bodyfile", at, &text, &why)?;
                continue;
            }
        };
        let line = line.as_ref();
        if line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split('|').collect();
        if fields.len() < 11 {
            let why = "fewer than 11 `|`-separated fields";
            out.unparsed(mtime_ns, "bodyfile", at, line, why)?;
            continue;
        }
        let n = fields.len();
        let name = fields[1..n - 9].join("|");
        let [inode, mode, uid, gid, size, atime, mtime, ctime, crtime] = [
            fields[n - 9],
            fields[n - 8],
            fields[n - 7],
            fields[n - 6],
            fields[n - 5],
            fields[n - 4],
            fields[n - 3],
            fields[n - 2],
            fields[n - 1],
        ];
        let times = [
            ("file_mtime", secs_to_ns(mtime), 'm'),
            ("file_atime", secs_to_ns(atime), 'a'),
            ("file_ctime", secs_to_ns(ctime), 'c'),
            ("file_btime", secs_to_ns(crtime), 'b'),
        ];
        if times.iter().any(|(_, t, _)| t.is_none()) {
            let why = "a time field is not a number";
            out.unparsed(mtime_ns, "bodyfile", at, line, why)?;
            continue;
        }
        for (kind, t, letter) in times {
            let Some(Some(t)) = t else { continue };
            let mut e = Event::new(
                t,
                "bodyfile",
                kind,
                format!("{name} ({})", crate::timeline::timestamp_desc(kind)),
            )
            .attr("macb", letter.to_string())
            .attr("inode", inode)
            .attr("mode", mode)
            .attr("uid", uid)
            .attr("gid", gid)
            .attr(
                "size",
                size.parse::<u64>()
                    .map(serde_json::Value::from)
                    .unwrap_or(size.into()),
            );
            if fields[0] != "0" && !fields[0].is_empty() {
                e = e.attr("md5", fields[0]);
            }
            e.path = Some(name.clone());
            e.user = Some(uid.to_string());
            e.dedup = dedup_key(&[b"bodyfile", line.as_bytes(), kind.as_bytes()]);
            out.event(e)?;
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::timeline::Parsed;

    fn parse(text: &str, mtime_ns: i64) -> Parsed {
        let mut p = Parsed::default();
        super::parse(text.as_bytes(), mtime_ns, &mut p).unwrap();
        p
    }

    #[test]
    fn macb_events_from_tsk_lines() {
        let text = "\
0|/etc/passwd|393228|r/rrw-r--r--|0|0|1843|1795946000|1795946281|1795946281|1700000000
d41d8cd98f00b204e9800998ecf8427e|/tmp/a|b.sh|12|r/rrwxr-xr-x|1000|1000|42|1795946290.5|1795946290|1795946290|0
broken|line
0|/x|1|r/r---------|0|0|0|notatime|0|0|0
";
        let p = parse(text, 9);
        assert_eq!(p.unparsed, 2);
        let kinds: Vec<&str> = p.events.iter().take(4).map(|e| e.kind.as_str()).collect();
        assert_eq!(
            kinds,
            ["file_mtime", "file_atime", "file_ctime", "file_btime"]
        );
        assert_eq!(p.events[0].time_ns, 1_795_946_281_000_000_000);
        assert_eq!(p.events[0].path.as_deref(), Some("/etc/passwd"));
        assert_eq!(p.events[0].attrs["size"], 1843);
        // A name with a `|`, a fractional atime, an unknown crtime (0): three events.
        let b: Vec<&Event> = p
            .events
            .iter()
            .filter(|e| e.path.as_deref() == Some("/tmp/a|b.sh"))
            .collect();
        assert_eq!(b.len(), 3);
        assert_eq!(b[1].time_ns, 1_795_946_290_500_000_000);
        assert_eq!(b[0].attrs["md5"], "d41d8cd98f00b204e9800998ecf8427e");
        // Times of 0 or -1 are unknown: no event in 1970 (and none dated 1969).
        let p = parse("0|/lost+found|11|d/drwx------|0|0|16384|0|-1|0|0\n", 9);
        assert!(p.events.is_empty(), "{:?}", p.events);
        assert_eq!(p.unparsed, 0);
    }
}
