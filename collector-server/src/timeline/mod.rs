//! One timeline across hosts: every source turned into events of one shape.
//!
//! Sources are the live eBPF events (stored by `Db::insert_events`, which writes their
//! timeline rows in the same transaction) and sealed items (built by [`build_for_item`] when
//! ingest seals them): log files, shell histories, login records, bodyfiles, file timestamps
//! and volatile snapshots. Parsers never stop at a line they cannot read: the line becomes an
//! `unparsed` event and is counted, and the rest of the file is read.

pub mod api;
pub mod bench;
pub mod bodyfile;
pub mod builder;
pub mod ebpf;
pub mod export;
pub mod history;
pub mod journal;
pub mod query;
pub mod store;
pub mod syslog;
pub mod utmp;
pub mod volatile;

pub use builder::build_for_item;

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// One event of the timeline. Time is UTC nanoseconds since the Unix epoch.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Event {
    pub time_ns: i64,
    /// Which parser or stream it came from: `ebpf`, `auth.log`, `syslog`, `journal`, `wtmp`,
    /// `btmp`, `utmp`, `bash_history`, `zsh_history`, `bodyfile`, `file`, `processes.json`,
    /// `network.json`, `event_journal`.
    pub source: String,
    /// What happened: `process_exec`, `ssh_login`, `sudo`, `shell_command`, `file_mtime`, …
    pub kind: String,
    pub pid: Option<i64>,
    pub ppid: Option<i64>,
    pub exe: Option<String>,
    pub argv: Option<Vec<String>>,
    pub user: Option<String>,
    pub container: Option<String>,
    pub pod: Option<String>,
    pub message: String,
    pub attrs: Map<String, Value>,
    /// Path on the host of the file the event was read from (or is about).
    pub path: Option<String>,
    /// Identity of the event within its host: the same event read twice (the live stream and
    /// the journal item, or a log collected twice) is stored once.
    pub dedup: i64,
}

impl Event {
    pub fn new(time_ns: i64, source: &str, kind: &str, message: impl Into<String>) -> Event {
        Event {
            time_ns,
            source: source.to_string(),
            kind: kind.to_string(),
            message: message.into(),
            ..Default::default()
        }
    }

    pub fn attr(mut self, key: &str, value: impl Into<Value>) -> Event {
        self.attrs.insert(key.to_string(), value.into());
        self
    }
}

/// A stable 63-bit key from the parts that identify an event.
pub fn dedup_key(parts: &[&[u8]]) -> i64 {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    let d = h.finalize();
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    (u64::from_le_bytes(b) >> 1) as i64
}

/// What a parser produced from one input.
#[derive(Debug, Default)]
pub struct Parsed {
    pub events: Vec<Event>,
    /// Lines or records that could not be read (each is also an `unparsed` event).
    pub unparsed: u64,
}

impl Parsed {
    /// Keep a line that could not be read, at the best time known, and count it.
    pub fn unparsed(&mut self, time_ns: i64, source: &str, line: &str, why: &str) {
        self.unparsed += 1;
        let text: String = line.chars().take(4096).collect();
        self.events.push(
            Event::new(time_ns, source, "unparsed", text)
                .attr("parse_error", why)
                .attr("time_inferred", true),
        );
    }
}

/// Numbers identical lines in order, so a line repeated in one file stays several events
/// but the same file read twice gives the same keys.
#[derive(Default)]
pub struct Occurrences(std::collections::HashMap<u64, u32>);

impl Occurrences {
    pub fn next(&mut self, text: &str) -> u32 {
        let k = dedup_key(&[text.as_bytes()]) as u64;
        let n = self.0.entry(k).or_insert(0);
        *n += 1;
        *n
    }
}

/// RFC 3339 UTC with nanoseconds, or the raw number when out of range.
pub fn rfc3339_ns(ns: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ns))
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| ns.to_string())
}

/// Parse an RFC 3339 time into UTC nanoseconds.
pub fn parse_rfc3339_ns(s: &str) -> Option<i64> {
    time::OffsetDateTime::parse(s.trim(), &time::format_description::well_known::Rfc3339)
        .ok()
        .and_then(|t| i64::try_from(t.unix_timestamp_nanos()).ok())
}

/// What Timesketch shows as `timestamp_desc`: which of the event's times this is.
pub fn timestamp_desc(kind: &str) -> &'static str {
    match kind {
        "process_exec" => "Process Exec",
        "process_fork" => "Process Fork",
        "process_exit" => "Process Exit",
        "process_start" => "Process Start",
        "tcp_connect" | "tcp_accept" | "tcp_close" => "Connection Event",
        "socket_snapshot" | "socket_listen" => "Snapshot Time",
        "security_call" => "Syscall",
        "ssh_login" | "login" | "su" => "Login Time",
        "ssh_failed" | "ssh_invalid_user" | "failed_login" => "Failed Login Time",
        "logout" => "Logout Time",
        "boot" => "Boot Time",
        "shell_command" => "Command Executed",
        "cron_command" => "Scheduled Task Run",
        "file_mtime" => "Content Modification Time",
        "file_atime" => "Last Access Time",
        "file_ctime" => "Metadata Modification Time",
        "file_btime" => "Creation Time",
        "unparsed" => "Unparsed Entry (Time Inferred)",
        _ => "Log Entry Time",
    }
}

/// The user a home-directory path belongs to: `/home/alice/.bash_history` → `alice`.
pub fn user_from_home_path(path: &str) -> Option<String> {
    if path.starts_with("/root/") {
        return Some("root".into());
    }
    let rest = path.strip_prefix("/home/")?;
    let user = rest.split('/').next()?;
    (!user.is_empty()).then(|| user.to_string())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn dedup_keys_are_stable_and_separate_parts() {
        assert_eq!(dedup_key(&[b"ab", b"c"]), dedup_key(&[b"ab", b"c"]));
        assert_ne!(dedup_key(&[b"ab", b"c"]), dedup_key(&[b"a", b"bc"]));
        assert!(dedup_key(&[b"x"]) >= 0);
    }

    #[test]
    fn times_round_trip() {
        let ns = parse_rfc3339_ns("2026-11-29T09:57:52.065472261Z").unwrap();
        assert_eq!(rfc3339_ns(ns), "2026-11-29T09:57:52.065472261Z");
        assert_eq!(
            user_from_home_path("/home/alice/.bash_history").as_deref(),
            Some("alice")
        );
        assert_eq!(
            user_from_home_path("/root/.zsh_history").as_deref(),
            Some("root")
        );
    }
}
