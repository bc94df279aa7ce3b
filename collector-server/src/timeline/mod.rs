//! One timeline across hosts: every source turned into events of one shape. All derivation
//! of timeline rows lives here, whatever the source:
//!
//! - [`live`]: the sensor's live event batches (their rows are stored in the same transaction
//!   as the events themselves);
//! - [`builder`]: sealed items (log files, shell histories, login records, bodyfiles, file
//!   timestamps, volatile snapshots, the event journal), read back through `evidence`;
//! - [`parse`]: the parsers, which never stop at a line they cannot read;
//! - [`query`] and [`search`]: what the API and the CLI ask (filters, saved searches, facets,
//!   cursor pages); [`export`]: Timesketch JSONL and CSV, plain JSONL.

pub mod builder;
pub mod export;
pub mod live;
pub mod parse;
pub mod ql;
pub mod query;
pub mod search;

pub use crate::storage::timeline::{Cursor, Event, Facets, Filter};
pub use builder::build_for_item;

use sha2::{Digest, Sha256};

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
    fn home_paths_name_their_user() {
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
