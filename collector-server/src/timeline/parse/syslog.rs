//! Syslog-style text logs: auth.log / secure, syslog / messages, cron logs.
//!
//! Lines start with either an RFC 3339 time (rsyslog's default since Debian 12) or the
//! traditional `Mmm dd hh:mm:ss`, which has no year and no zone. The year is inferred from the
//! file's mtime, walking back from the last line and stepping back a year where the month
//! goes backwards (a log spanning New Year), in two passes over the file so that nothing is
//! kept per line; the zone is taken as UTC, as on cloud images, and
//! the event says so (`time_zone_assumed`). The message is then recognised: sshd logins,
//! sudo, su, useradd, cron commands; anything else is a plain log entry.

use super::{Line, Lines, Reopen, MAX_LINE};
use crate::timeline::{dedup_key, Emit, Event, Occurrences, Stop};
use serde_json::Value;
use std::io::BufRead;

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

enum Stamp {
    /// Complete time, nanoseconds UTC.
    Full(i64),
    /// `Mmm dd hh:mm:ss[.frac]`: month 1-12, day, seconds of day, nanoseconds.
    NoYear(NoYear),
}

/// Split a line into its time stamp and the rest.
fn stamp(line: &str) -> Option<(Stamp, &str)> {
    if line.len() > 19 && line.as_bytes()[4] == b'-' && line.as_bytes()[10] == b'T' {
        let (t, rest) = line.split_once(' ').unwrap_or((line, ""));
        return cairn_protocol::rfc3339::parse_ns(t).map(|ns| (Stamp::Full(ns), rest));
    }
    let month = MONTHS.iter().position(|m| line.starts_with(m))? as u8 + 1;
    let rest = line.get(3..)?.trim_start();
    let (day, rest) = rest.split_once(' ')?;
    let day: u8 = day.parse().ok().filter(|d| (1..=31).contains(d))?;
    let (hms, rest) = rest.split_once(' ').unwrap_or((rest, ""));
    let (hms, frac) = hms.split_once('.').unwrap_or((hms, ""));
    let mut it = hms.split(':').map(|x| x.parse::<u32>().ok());
    let (h, m, s) = (it.next()??, it.next()??, it.next()??);
    if h > 23 || m > 59 || s > 60 || it.next().is_some() {
        return None;
    }
    let nanos = if frac.is_empty() {
        0
    } else {
        let digits: String = frac.chars().take(9).collect();
        digits.parse::<u32>().ok()? * 10u32.pow(9 - digits.len() as u32)
    };
    Some((
        Stamp::NoYear(NoYear {
            month,
            day,
            secs: h * 3600 + m * 60 + s,
            nanos,
        }),
        rest,
    ))
}

fn ns_of(year: i32, month: u8, day: u8, secs: u32, nanos: u32) -> Option<i64> {
    let m = time::Month::try_from(month).ok()?;
    let date = time::Date::from_calendar_date(year, m, day).ok()?;
    let t = date
        .with_hms(0, 0, 0)
        .ok()?
        .assume_utc()
        .unix_timestamp_nanos();
    i64::try_from(t + i128::from(secs) * 1_000_000_000 + i128::from(nanos)).ok()
}

fn year_of(ns: i64) -> i32 {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ns))
        .map(|t| t.year())
        .unwrap_or(1970)
}

/// The year of the first yearless line of each run: a run is the yearless lines between two
/// lines with a full time (or the file's ends). Walking back from the end of a run, the year
/// is that of the full time after it (or of the mtime), adjusted for the run's last line, and
/// steps back wherever the month goes backwards; so, reading forward, a run starts that many
/// steps before its end year and steps forward at each New Year. Only the runs whose first
/// year differs from the run before are kept.
struct RunYears {
    /// `(run, year)`, runs counted from 0 in file order.
    changes: Vec<(u64, i64)>,
}

/// Most year changes between runs kept (a real log has a few; each is 16 bytes). Past that
/// (only a file made to have them), later runs keep the last year recorded.
const MAX_YEAR_CHANGES: usize = 65_536;

/// The year of the last yearless line before a full time of `base`'s year (or the mtime):
/// the latest date not after the file was last written, with a day of slack for a clock or
/// zone difference (a line of Jan 1 in a file written on Dec 31 is from next year).
fn last_year(base: i64, st: &NoYear, mtime_ns: i64) -> i64 {
    [base + 1, base, base - 1]
        .into_iter()
        .find(|y| {
            st.ns(*y)
                .is_some_and(|t| t <= mtime_ns.saturating_add(86_400_000_000_000))
        })
        .unwrap_or(base - 1)
}

#[derive(Clone, Copy)]
struct NoYear {
    month: u8,
    day: u8,
    secs: u32,
    nanos: u32,
}

impl NoYear {
    fn ns(&self, year: i64) -> Option<i64> {
        ns_of(
            i32::try_from(year).ok()?,
            self.month,
            self.day,
            self.secs,
            self.nanos,
        )
    }
}

impl RunYears {
    /// The first pass: one line in memory, and a few numbers per run.
    fn scan(r: impl BufRead, mtime_ns: i64) -> Result<RunYears, Stop> {
        struct Run {
            index: u64,
            steps: i64,
            last: NoYear,
        }
        let mut out = RunYears {
            changes: Vec::new(),
        };
        let close = |run: Run, base: i64, out: &mut RunYears| {
            let first = last_year(base, &run.last, mtime_ns) - run.steps;
            if out.changes.last().map(|c| c.1) != Some(first)
                && out.changes.len() < MAX_YEAR_CHANGES
            {
                out.changes.push((run.index, first));
            }
        };
        let mut lines = Lines::new(r, MAX_LINE);
        let mut run: Option<Run> = None;
        let mut runs = 0u64;
        while let Some((_, line)) = lines.next_line()? {
            let Line::Text(bytes) = line else { continue };
            match stamp(&String::from_utf8_lossy(bytes)) {
                Some((Stamp::Full(ns), _)) => {
                    if let Some(r) = run.take() {
                        close(r, i64::from(year_of(ns)), &mut out);
                    }
                }
                Some((Stamp::NoYear(st), _)) => match &mut run {
                    Some(r) => {
                        if r.last.month > st.month {
                            r.steps += 1;
                        }
                        r.last = st;
                    }
                    None => {
                        run = Some(Run {
                            index: runs,
                            steps: 0,
                            last: st,
                        });
                        runs += 1;
                    }
                },
                None => {}
            }
        }
        if let Some(r) = run.take() {
            close(r, i64::from(year_of(mtime_ns)), &mut out);
        }
        Ok(out)
    }
}

/// Parse a syslog-format file. `source` names it in the timeline (`auth.log`, `syslog`,
/// `cron`); `mtime_ns` is the file's modification time, used for the year. The file is read
/// twice: once for the years (see [`RunYears`]), once for the events.
pub fn parse<I: Reopen + ?Sized>(
    input: &I,
    source: &str,
    mtime_ns: i64,
    out: &mut impl Emit,
) -> Result<(), Stop> {
    let years = RunYears::scan(input.open()?, mtime_ns)?;
    let mut changes = years.changes.iter().peekable();
    let mut lines = Lines::new(input.open()?, MAX_LINE);
    let mut occ = Occurrences::default();
    let mut last_time = None;
    let mut runs = 0u64;
    let mut year = 0i64;
    let mut run_year = 0i64;
    let mut month: Option<u8> = None;
    while let Some((at, line)) = lines.next_line()? {
        let bytes = match line {
            Line::Text(b) => b,
            Line::TooLong { head, len, .. } => {
                let why = Line::too_long(len, MAX_LINE);
                let t = last_time.unwrap_or(mtime_ns);
                out.unparsed(t, source, at, &String::from_utf8_lossy(head), &why)?;
                continue;
            }
        };
        let line = String::from_utf8_lossy(bytes);
        let st = stamp(&line);
        let time = match &st {
            Some((Stamp::Full(ns), _)) => {
                month = None;
                Some(*ns)
            }
            Some((Stamp::NoYear(ny), _)) => {
                match month {
                    None => {
                        while let Some(c) = changes.next_if(|c| c.0 <= runs) {
                            run_year = c.1;
                        }
                        runs += 1;
                        year = run_year;
                    }
                    Some(earlier) if earlier > ny.month => year += 1,
                    Some(_) => {}
                }
                month = Some(ny.month);
                ny.ns(year)
            }
            None => None,
        };
        if line.trim().is_empty() {
            continue;
        }
        let (Some((st, rest)), Some(t)) = (st, time) else {
            let t = last_time.unwrap_or(mtime_ns);
            out.unparsed(t, source, at, &line, "no syslog time stamp")?;
            continue;
        };
        last_time = Some(t);
        let mut e = entry(t, source, rest);
        if matches!(st, Stamp::NoYear(_)) {
            e = e.attr("time_zone_assumed", "UTC").inferred("inferred_year");
        }
        e.dedup = dedup_key(&[
            source.as_bytes(),
            line.as_bytes(),
            &occ.next(t, &line, at).key_part(),
        ]);
        out.event(e)?;
    }
    Ok(())
}

/// `HOST PROG[PID]: MESSAGE` → an event, recognised where we know the message.
fn entry(t: i64, source: &str, rest: &str) -> Event {
    let (host, rest) = rest.split_once(' ').unwrap_or(("", rest));
    let (tag, msg) = rest.split_once(": ").unwrap_or(("", rest));
    let (prog, pid) = match tag.split_once('[') {
        Some((p, pid)) => (p, pid.trim_end_matches(']').parse::<i64>().ok()),
        None => (tag, None),
    };
    let mut e = classify(t, source, prog, msg);
    e.pid = e.pid.or(pid);
    if !host.is_empty() {
        e = e.attr("log_host", host);
    }
    if !prog.is_empty() {
        e = e.attr("program", prog);
    }
    e
}

/// The word after `key` in `msg`.
fn word_after<'a>(msg: &'a str, key: &str) -> Option<&'a str> {
    let at = msg.find(key)? + key.len();
    msg[at..].split_whitespace().next()
}

/// Recognise what a log message says. Used for syslog lines and journal entries alike.
pub fn classify(t: i64, source: &str, prog: &str, msg: &str) -> Event {
    let msg = msg.trim_end();
    let plain = || Event::new(t, source, "log", format!("{prog}: {msg}"));
    match prog {
        "sshd" | "sshd-session" => {
            for (prefix, kind) in [
                ("Accepted ", "ssh_login"),
                ("Failed ", "ssh_failed"),
                ("Invalid user ", "ssh_invalid_user"),
            ] {
                let Some(rest) = msg.strip_prefix(prefix) else {
                    continue;
                };
                // Accepted publickey for alice from 203.0.113.7 port 52144 ssh2: ED25519 SHA256:…
                // Failed password for invalid user admin from 198.51.100.9 port 40022 ssh2
                // Invalid user admin from 198.51.100.9 port 40022
                let (method, user) = if kind == "ssh_invalid_user" {
                    (None, rest.split_whitespace().next())
                } else {
                    let method = rest.split_whitespace().next();
                    let after_for = rest.split_once(" for ").map(|x| x.1).unwrap_or("");
                    let user = after_for
                        .strip_prefix("invalid user ")
                        .unwrap_or(after_for)
                        .split_whitespace()
                        .next();
                    (method, user)
                };
                let mut e = Event::new(t, source, kind, format!("sshd: {msg}"));
                e.user = user.map(str::to_string);
                if let Some(m) = method {
                    e = e.attr("method", m);
                }
                if let Some(ip) = word_after(msg, " from ") {
                    e = e.attr("src_ip", ip);
                }
                if let Some(port) = word_after(msg, " port ").and_then(|p| p.parse::<u16>().ok()) {
                    e = e.attr("src_port", port);
                }
                return e;
            }
            plain()
        }
        "sudo" if msg.contains("COMMAND=") => {
            // "  alice : TTY=pts/0 ; PWD=/home/alice ; USER=root ; COMMAND=/usr/bin/id -u"
            let (user, fields) = msg.split_once(" : ").unwrap_or(("", msg));
            let mut e = Event::new(t, source, "sudo", format!("sudo: {}", msg.trim()));
            e.user = Some(user.trim().to_string()).filter(|u| !u.is_empty());
            for f in fields.split(" ; ") {
                if let Some((k, v)) = f.split_once('=') {
                    let key = match k.trim() {
                        "TTY" => "tty",
                        "PWD" => "cwd",
                        "USER" => "target_user",
                        "COMMAND" => "command",
                        _ => continue,
                    };
                    e = e.attr(key, v.trim());
                }
            }
            e
        }
        "su" => {
            // "(to root) alice on pts/0" or "Successful su for root by alice" or
            // "pam_unix(su:session): session opened for user root(uid=0) by alice(uid=1000)"
            let (target, by) = if let Some(r) = msg.strip_prefix("(to ") {
                let (target, rest) = r.split_once(')').unwrap_or((r, ""));
                (Some(target), rest.split_whitespace().next())
            } else if let Some(r) = msg.strip_prefix("Successful su for ") {
                let (target, by) = r.split_once(" by ").unwrap_or((r, ""));
                (Some(target), by.split_whitespace().next())
            } else if msg.contains("session opened for user ") {
                let target = word_after(msg, "session opened for user ")
                    .map(|u| u.split('(').next().unwrap_or(u));
                let by = word_after(msg, " by ").map(|u| u.split('(').next().unwrap_or(u));
                (target, by)
            } else {
                return plain();
            };
            let mut e = Event::new(t, source, "su", format!("su: {msg}"));
            e.user = by.filter(|u| !u.is_empty()).map(str::to_string);
            if let Some(tu) = target {
                e = e.attr("target_user", tu.trim());
            }
            e
        }
        "useradd" | "adduser" if msg.starts_with("new user: ") => {
            // "new user: name=eve, UID=1001, GID=1001, home=/home/eve, shell=/bin/bash, from=/dev/pts/1"
            let mut e = Event::new(t, source, "user_added", format!("{prog}: {msg}"));
            for f in msg["new user: ".len()..].split(", ") {
                if let Some((k, v)) = f.split_once('=') {
                    match k {
                        "name" => e.user = Some(v.to_string()),
                        "UID" => {
                            e = e.attr("uid", v.parse::<u64>().map(Value::from).unwrap_or(v.into()))
                        }
                        "home" | "shell" | "from" => e = e.attr(k, v),
                        _ => {}
                    }
                }
            }
            e
        }
        "CRON" | "crond" | "cron" if msg.contains(" CMD (") => {
            // "(root) CMD (cd / && run-parts --report /etc/cron.hourly)"
            let user = msg
                .strip_prefix('(')
                .and_then(|r| r.split_once(')'))
                .map(|x| x.0.to_string());
            let cmd = msg
                .split_once(" CMD (")
                .map(|x| x.1.trim_end_matches(')'))
                .unwrap_or("");
            let mut e = Event::new(t, source, "cron_command", format!("cron: {msg}"));
            e.user = user;
            e.attr("command", cmd)
        }
        _ => plain(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::timeline::Parsed;

    fn ns(s: &str) -> i64 {
        cairn_protocol::rfc3339::parse_ns(s).unwrap()
    }

    fn parse(text: &str, source: &str, mtime_ns: i64) -> Parsed {
        let mut p = Parsed::default();
        super::parse(&text.as_bytes(), source, mtime_ns, &mut p).unwrap();
        p
    }

    /// The times the first version gave each line: every line's stamp in memory, years
    /// walked back from the last line.
    fn times_walking_back(text: &str, mtime_ns: i64) -> Vec<Option<i64>> {
        let stamps: Vec<Option<Stamp>> = text.lines().map(|l| stamp(l).map(|s| s.0)).collect();
        let mut times = vec![None; stamps.len()];
        let mut year = i64::from(year_of(mtime_ns));
        let mut later_month: Option<u8> = None;
        for (i, s) in stamps.iter().enumerate().rev() {
            match s {
                Some(Stamp::Full(ns)) => {
                    times[i] = Some(*ns);
                    year = i64::from(year_of(*ns));
                    later_month = None;
                }
                Some(Stamp::NoYear(st)) => {
                    match later_month {
                        None => year = last_year(year, st, mtime_ns),
                        Some(later) if st.month > later => year -= 1,
                        Some(_) => {}
                    }
                    later_month = Some(st.month);
                    times[i] = st.ns(year);
                }
                None => {}
            }
        }
        times
    }

    /// Each line's time as the parser gave it (unparsed lines: none).
    fn times_streamed(text: &str, mtime_ns: i64) -> Vec<Option<i64>> {
        let p = parse(text, "syslog", mtime_ns);
        let mut events = p.events.iter();
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|_| {
                let e = events.next().unwrap();
                (e.kind != "unparsed").then_some(e.time_ns)
            })
            .collect()
    }

    const AUTH: &str = "\
Nov 29 09:58:01 ip-10-0-1-17 sshd[4121]: Accepted publickey for alice from 203.0.113.7 port 52144 ssh2: ED25519 SHA256:Vd7Kp0Q3mNfY1kq1sBqLQmS0p8m1f4xT9e2r3c5u6w8
Nov 29 09:58:40 ip-10-0-1-17 sshd[4170]: Failed password for invalid user admin from 198.51.100.9 port 40022 ssh2
Nov 29 09:59:02 ip-10-0-1-17 sudo:    alice : TTY=pts/0 ; PWD=/home/alice ; USER=root ; COMMAND=/usr/bin/id -u
garbage that is not a log line
Nov 29 10:00:11 ip-10-0-1-17 su[4300]: (to root) alice on pts/0
Nov 29 10:01:00 ip-10-0-1-17 useradd[4401]: new user: name=eve, UID=1001, GID=1001, home=/home/eve, shell=/bin/bash, from=/dev/pts/0
Nov 29 10:02:01 ip-10-0-1-17 CRON[4500]: (root) CMD (cd / && run-parts --report /etc/cron.hourly)
";

    #[test]
    fn auth_log_lines_are_recognised_and_bad_lines_kept() {
        let p = parse(AUTH, "auth.log", ns("2026-11-29T10:05:00Z"));
        assert_eq!(p.unparsed, 1);
        assert_eq!(p.events.len(), 7);
        let login = &p.events[0];
        assert_eq!(login.kind, "ssh_login");
        assert_eq!(login.time_ns, ns("2026-11-29T09:58:01Z"));
        // No year in the line: the year is inferred, and the event says so.
        assert_eq!(login.time_source.as_deref(), Some("inferred_year"));
        assert_eq!(login.user.as_deref(), Some("alice"));
        assert_eq!(login.pid, Some(4121));
        assert_eq!(login.attrs["src_ip"], "203.0.113.7");
        assert_eq!(login.attrs["src_port"], 52144);
        assert_eq!(login.attrs["method"], "publickey");
        assert_eq!(p.events[1].kind, "ssh_failed");
        assert_eq!(p.events[1].user.as_deref(), Some("admin"));
        assert_eq!(p.events[2].kind, "sudo");
        assert_eq!(p.events[2].user.as_deref(), Some("alice"));
        assert_eq!(p.events[2].attrs["command"], "/usr/bin/id -u");
        assert_eq!(p.events[2].attrs["target_user"], "root");
        // The unreadable line is kept, at the time of the line before it.
        assert_eq!(p.events[3].kind, "unparsed");
        assert_eq!(p.events[3].time_ns, ns("2026-11-29T09:59:02Z"));
        assert_eq!(p.events[4].kind, "su");
        assert_eq!(p.events[4].attrs["target_user"], "root");
        assert_eq!(p.events[5].kind, "user_added");
        assert_eq!(p.events[5].user.as_deref(), Some("eve"));
        assert_eq!(p.events[6].kind, "cron_command");
        assert_eq!(p.events[6].user.as_deref(), Some("root"));
    }

    #[test]
    fn year_rolls_over_backwards_from_mtime() {
        let text = "Dec 31 23:59:58 h sshd[1]: Accepted password for bob from 192.0.2.1 port 1 ssh2\n\
                    Jan  1 00:00:03 h sshd[2]: Accepted password for bob from 192.0.2.1 port 2 ssh2\n";
        let p = parse(text, "auth.log", ns("2027-01-01T00:10:00Z"));
        assert_eq!(p.events[0].time_ns, ns("2026-12-31T23:59:58Z"));
        assert_eq!(p.events[1].time_ns, ns("2027-01-01T00:00:03Z"));
        // A file last written in January whose last line is in December: last year.
        let p = parse(
            "Dec 30 10:00:00 h kernel: x\n",
            "syslog",
            ns("2027-01-02T00:00:00Z"),
        );
        assert_eq!(p.events[0].time_ns, ns("2026-12-30T10:00:00Z"));
        // Written a few seconds before New Year by a clock slightly behind: next year.
        let p = parse(
            "Dec 31 23:59:50 h kernel: x\nJan  1 00:00:03 h kernel: y\n",
            "syslog",
            ns("2026-12-31T23:59:59Z"),
        );
        assert_eq!(p.events[0].time_ns, ns("2026-12-31T23:59:50Z"));
        assert_eq!(p.events[1].time_ns, ns("2027-01-01T00:00:03Z"));
    }

    #[test]
    fn rfc3339_lines_and_repeats() {
        let text = "2026-11-29T10:00:00.123456+01:00 h CRON[9]: (root) CMD (true)\n\
                    2026-11-29T10:00:00.123456+01:00 h CRON[9]: (root) CMD (true)\n";
        let p = parse(text, "syslog", 0);
        assert_eq!(p.events[0].time_ns, ns("2026-11-29T09:00:00.123456Z"));
        assert!(!p.events[0].time_inferred());
        // Identical lines stay two events with distinct keys.
        assert_ne!(p.events[0].dedup, p.events[1].dedup);
        let again = parse(text, "syslog", 0);
        assert_eq!(again.events[1].dedup, p.events[1].dedup);
    }

    #[test]
    fn two_passes_give_the_years_of_the_walk_back_across_new_years() {
        let mtime = ns("2027-01-02T08:00:00Z");
        // Three New Years in one file, a full time in the middle, lines without a time, a
        // blank line, an impossible date (Feb 30) and a line just after the mtime.
        let text = "\
Nov 30 10:00:00 h a: 2024
Dec 31 23:59:59 h a: 2024
Jan  1 00:00:01 h a: 2025
not a log line
Jun  5 12:00:00 h a: 2025
Feb 30 12:00:00 h a: never

Dec 24 18:00:00 h a: 2026, the full time's year, as the walk back has it
2026-03-01T10:00:00Z h a: full time
Jan  2 07:00:00 h a: 2026, the full time's year
Oct  1 00:00:00 h a: 2026
Jan  1 00:00:00 h a: 2027
Jan  2 08:30:00 h a: 2027, just after the mtime
";
        let want: Vec<Option<i64>> = text
            .lines()
            .zip(times_walking_back(text, mtime))
            .filter(|(l, _)| !l.trim().is_empty())
            .map(|(_, t)| t)
            .collect();
        assert_eq!(times_streamed(text, mtime), want);
        let p = parse(text, "syslog", mtime);
        let year = |i: usize| year_of(p.events[i].time_ns);
        assert_eq!(
            [year(0), year(1), year(2), year(4), year(6)],
            [2024, 2024, 2025, 2025, 2026]
        );
        assert_eq!(p.events[3].kind, "unparsed"); // not a log line
        assert_eq!(p.events[5].kind, "unparsed"); // Feb 30
        assert_eq!(p.events[8].time_ns, ns("2026-01-02T07:00:00Z"));
        assert_eq!(p.events[10].time_ns, ns("2027-01-01T00:00:00Z"));
        assert_eq!(p.events[11].time_ns, ns("2027-01-02T08:30:00Z"));
        // Against the walk back on many shapes of file: runs of yearless lines between full
        // times, months going back, garbage between.
        let mut x: u64 = 0x9e37_79b9;
        for round in 0..300 {
            let mut text = String::new();
            for _ in 0..(round % 40) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                match x % 9 {
                    0 => text.push_str(&format!("2026-0{}-01T00:00:00Z h a: full\n", x % 9 + 1)),
                    1 => text.push_str("garbage\n"),
                    _ => text.push_str(&format!(
                        "{} {:2} 1{}:00:00 h a: x\n",
                        MONTHS[(x >> 8) as usize % 12],
                        (x >> 16) % 31 + 1,
                        x % 10
                    )),
                }
            }
            let mtime = ns("2026-06-15T00:00:00Z") + (x % 400) as i64 * 86_400_000_000_000;
            let want: Vec<Option<i64>> = text
                .lines()
                .zip(times_walking_back(&text, mtime))
                .filter(|(l, _)| !l.trim().is_empty())
                .map(|(_, t)| t)
                .collect();
            assert_eq!(times_streamed(&text, mtime), want, "{text}");
        }
    }

    #[test]
    fn a_line_longer_than_the_cap_is_one_unparsed_event() {
        let long = format!("Nov 29 10:00:00 h a: {}\n", "x".repeat(MAX_LINE + 10));
        let text = format!("Nov 29 09:00:00 h a: before\n{long}Nov 29 11:00:00 h a: after\n");
        let p = parse(&text, "syslog", ns("2026-11-29T12:00:00Z"));
        assert_eq!(p.events.len(), 3);
        assert_eq!(p.unparsed, 1);
        let cut = &p.events[1];
        assert_eq!(cut.kind, "unparsed");
        assert_eq!(cut.time_ns, ns("2026-11-29T09:00:00Z"));
        assert_eq!(cut.message.chars().count(), 4096);
        let why = cut.attrs["parse_error"].as_str().unwrap();
        assert!(why.contains(&format!("{} bytes", long.len() - 1)), "{why}");
        assert_eq!(p.events[2].time_ns, ns("2026-11-29T11:00:00Z"));
    }

    #[test]
    fn empty_and_one_byte_files() {
        assert!(parse("", "syslog", 5).events.is_empty());
        let p = parse("x", "syslog", 5);
        assert_eq!((p.events.len(), p.unparsed), (1, 1));
        assert_eq!(p.events[0].time_ns, 5);
        assert!(parse("\n", "syslog", 5).events.is_empty());
    }

    #[test]
    fn repeated_lines_at_one_time_and_out_of_order_stay_distinct() {
        // The same line twice at one time, then an earlier line, then the first line again.
        let a = "Nov 29 10:00:00 h CRON[1]: (root) CMD (true)";
        let b = "Nov 29 09:00:00 h CRON[1]: (root) CMD (true)";
        let text = format!("{a}\n{a}\n{b}\n{a}\n{b}\n");
        let p = parse(&text, "cron", ns("2026-11-29T12:00:00Z"));
        let mut keys: Vec<(i64, i64)> = p.events.iter().map(|e| (e.time_ns, e.dedup)).collect();
        assert_eq!(keys.len(), 5);
        keys.sort_unstable();
        keys.dedup();
        assert_eq!(keys.len(), 5, "no two lines share (time, key)");
        let again = parse(&text, "cron", ns("2026-11-29T12:00:00Z"));
        let k = |p: &Parsed| p.events.iter().map(|e| e.dedup).collect::<Vec<_>>();
        assert_eq!(k(&p), k(&again));
    }
}
