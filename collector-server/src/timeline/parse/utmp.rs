//! Login records: wtmp (logins, logouts, boots), btmp (failed logins), utmp (current
//! sessions). Linux `struct utmp` on x86_64 and aarch64 is 384 bytes, little-endian, with
//! 32-bit times (glibc's `__WORDSIZE_TIME64_COMPAT32` layout).

use super::read_full;
use crate::timeline::{dedup_key, Emit, Event, Stop};
use std::io::BufRead;

pub const RECORD: usize = 384;

const RUN_LVL: i16 = 1;
const BOOT_TIME: i16 = 2;
const LOGIN_PROCESS: i16 = 6;
const USER_PROCESS: i16 = 7;
const DEAD_PROCESS: i16 = 8;

fn cstr(b: &[u8]) -> String {
    let end = b.iter().position(|c| *c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

fn i32_at(b: &[u8], at: usize) -> i32 {
    let mut x = [0u8; 4];
    x.copy_from_slice(&b[at..at + 4]);
    i32::from_le_bytes(x)
}

/// Parse a utmp-format file, one record at a time; `source` is `wtmp`, `btmp` or `utmp`.
pub fn parse(
    mut input: impl BufRead,
    source: &str,
    mtime_ns: i64,
    out: &mut impl Emit,
) -> Result<(), Stop> {
    let mut last = mtime_ns;
    // Whether `last` is a record's own time (not the mtime).
    let mut dated = false;
    let mut record = [0u8; RECORD];
    for n in 0u64.. {
        let got = read_full(&mut input, &mut record)?;
        if got == 0 {
            break;
        }
        if got < RECORD {
            let text = format!("{got} trailing bytes");
            out.unparsed(last, source, n, &text, "truncated utmp record")?;
            break;
        }
        let r = &record[..];
        let ut_type = i16::from_le_bytes([r[0], r[1]]);
        let pid = i32_at(r, 4);
        let line = cstr(&r[8..40]);
        let user = cstr(&r[44..76]);
        let host = cstr(&r[76..332]);
        let secs = i32_at(r, 340);
        let usecs = i32_at(r, 344);
        if ut_type == 0 && secs == 0 {
            continue; // an empty slot
        }
        if !(0..=9).contains(&ut_type) || !(0..1_000_000).contains(&usecs) {
            let text = format!("record {n}: type {ut_type}, time {secs}.{usecs}");
            out.unparsed(last, source, n, &text, "not a utmp record")?;
            continue;
        }
        // A record without a time (0) is not from 1970: it is dated by the one before it (or
        // the file's mtime), as a guess.
        let (t, guessed) = if secs == 0 {
            (
                last,
                Some(if dated { "nearby_entry" } else { "file_mtime" }),
            )
        } else {
            (
                i64::from(secs) * 1_000_000_000 + i64::from(usecs) * 1000,
                None,
            )
        };
        last = t;
        dated |= guessed.is_none();
        let kind = match (source, ut_type) {
            ("btmp", _) => "failed_login",
            (_, USER_PROCESS) => "login",
            (_, DEAD_PROCESS) => "logout",
            (_, BOOT_TIME) => "boot",
            (_, RUN_LVL) => "runlevel",
            (_, LOGIN_PROCESS) => "login_prompt",
            _ => "login_record",
        };
        let from = if host.is_empty() {
            String::new()
        } else {
            format!(" from {host}")
        };
        let mut e = Event::new(
            t,
            source,
            kind,
            format!("{kind}: {user} on {line}{from}").replace("  ", " "),
        )
        .attr("tty", line.as_str())
        .attr("ut_type", ut_type);
        if !host.is_empty() {
            e = e.attr("remote_host", host.as_str());
        }
        e.pid = (pid > 0).then_some(i64::from(pid));
        e.user = (!user.is_empty()).then_some(user);
        e.dedup = dedup_key(&[source.as_bytes(), r]);
        if let Some(how) = guessed {
            e = e.inferred(how);
        }
        out.event(e)?;
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
pub(crate) mod tests {
    use super::*;
    use crate::timeline::Parsed;

    fn parse(data: &[u8], source: &str, mtime_ns: i64) -> Parsed {
        let mut p = Parsed::default();
        super::parse(data, source, mtime_ns, &mut p).unwrap();
        p
    }

    /// One record as glibc writes it.
    pub fn record(
        ut_type: i16,
        pid: i32,
        line: &str,
        user: &str,
        host: &str,
        secs: i32,
    ) -> Vec<u8> {
        let mut r = vec![0u8; RECORD];
        r[0..2].copy_from_slice(&ut_type.to_le_bytes());
        r[4..8].copy_from_slice(&pid.to_le_bytes());
        r[8..8 + line.len()].copy_from_slice(line.as_bytes());
        r[44..44 + user.len()].copy_from_slice(user.as_bytes());
        r[76..76 + host.len()].copy_from_slice(host.as_bytes());
        r[340..344].copy_from_slice(&secs.to_le_bytes());
        r[344..348].copy_from_slice(&250_000i32.to_le_bytes());
        r
    }

    #[test]
    fn wtmp_logins_logouts_boot_and_a_truncated_tail() {
        let mut data = record(
            BOOT_TIME,
            0,
            "~",
            "reboot",
            "6.1.0-27-cloud-amd64",
            1_795_900_000,
        );
        data.extend(record(
            USER_PROCESS,
            4121,
            "pts/0",
            "alice",
            "203.0.113.7",
            1_795_946_281,
        ));
        data.extend(record(DEAD_PROCESS, 4121, "pts/0", "", "", 1_795_946_900));
        data.extend_from_slice(&[1, 2, 3]);
        let p = parse(&data, "wtmp", 0);
        let kinds: Vec<&str> = p.events.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(kinds, ["boot", "login", "logout", "unparsed"]);
        assert_eq!(p.unparsed, 1);
        let login = &p.events[1];
        assert_eq!(login.user.as_deref(), Some("alice"));
        assert_eq!(login.time_ns, 1_795_946_281_250_000_000);
        assert_eq!(login.attrs["remote_host"], "203.0.113.7");
        assert_eq!(login.pid, Some(4121));
        let btmp = parse(
            &record(LOGIN_PROCESS, 1, "ssh:notty", "admin", "198.51.100.9", 5),
            "btmp",
            0,
        );
        assert_eq!(btmp.events[0].kind, "failed_login");
    }

    #[test]
    fn a_record_without_a_time_is_not_from_1970() {
        let mtime = 1_795_999_999_000_000_000;
        let mut data = record(USER_PROCESS, 7, "pts/1", "eve", "", 0);
        data.extend(record(USER_PROCESS, 8, "pts/2", "bob", "", 1_795_946_281));
        data.extend(record(DEAD_PROCESS, 8, "pts/2", "", "", 0));
        let p = parse(&data, "wtmp", mtime);
        let t: Vec<(i64, Option<&str>)> = p
            .events
            .iter()
            .map(|e| (e.time_ns, e.time_source.as_deref()))
            .collect();
        assert_eq!(
            t,
            [
                (mtime, Some("file_mtime")),
                (1_795_946_281_250_000_000, None),
                (1_795_946_281_250_000_000, Some("nearby_entry")),
            ]
        );
    }

    #[test]
    fn empty_one_byte_and_records_across_reads() {
        assert!(parse(b"", "wtmp", 0).events.is_empty());
        let p = parse(b"\x07", "wtmp", 9);
        assert_eq!(
            (p.unparsed, p.events[0].message.as_str()),
            (1, "1 trailing bytes")
        );
        // Records split over many small reads are read whole.
        let mut data = record(USER_PROCESS, 1, "pts/0", "alice", "", 1_795_946_281);
        data.extend(record(DEAD_PROCESS, 1, "pts/0", "", "", 1_795_946_282));
        let mut p = Parsed::default();
        let r = std::io::BufReader::with_capacity(7, data.as_slice());
        super::parse(r, "wtmp", 0, &mut p).unwrap();
        let kinds: Vec<&str> = p.events.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(kinds, ["login", "logout"]);
        assert_eq!(p.events[0].dedup, parse(&data, "wtmp", 0).events[0].dedup);
    }
}
