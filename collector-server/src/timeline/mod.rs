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
pub mod spill;

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

/// Why a parser stopped before the end of its input.
#[derive(Debug, thiserror::Error)]
pub enum Stop {
    #[error("reading the item back from the store: {0}")]
    Read(#[source] std::io::Error),
    #[error("storing its timeline rows: {0}")]
    Store(#[source] crate::storage::StorageError),
    #[error("{what} is larger than the {max} bytes read whole for the timeline; not parsed")]
    TooLarge { what: &'static str, max: u64 },
}

impl From<std::io::Error> for Stop {
    fn from(e: std::io::Error) -> Stop {
        Stop::Read(e)
    }
}

/// Where a parser puts what it reads, one event at a time (the builder sends them to the
/// store in batches), so no parser holds more than the line or record it is on.
pub trait Emit {
    /// Take one event; `unparsed` when it stands for input that could not be read.
    fn put(&mut self, e: Event, unparsed: bool) -> Result<(), Stop>;

    fn event(&mut self, e: Event) -> Result<(), Stop> {
        self.put(e, false)
    }

    /// Keep a line or record that could not be read, at the best time known. `at` is its
    /// position in the input (line or record number), which keys it: two unreadable lines are
    /// two events even at the same time, and the same file read twice gives the same keys.
    fn unparsed(
        &mut self,
        time_ns: i64,
        source: &str,
        at: u64,
        text: &str,
        why: &str,
    ) -> Result<(), Stop> {
        self.put(unparsed_event(time_ns, source, at, text, why), true)
    }
}

/// The event that stands for input that could not be read (its first 4,096 characters),
/// dated by what was read near it (or the file's mtime): an inferred time.
pub fn unparsed_event(time_ns: i64, source: &str, at: u64, text: &str, why: &str) -> Event {
    let text: String = text.chars().take(4096).collect();
    let mut e = Event::new(time_ns, source, "unparsed", text)
        .attr("parse_error", why)
        .inferred("nearby_entry");
    e.dedup = dedup_key(&[
        source.as_bytes(),
        b"unparsed",
        e.message.as_bytes(),
        &at.to_le_bytes(),
    ]);
    e
}

/// Everything a parser produced from one input, in memory: for tests of the parsers.
#[cfg(test)]
#[derive(Debug, Default)]
pub struct Parsed {
    pub events: Vec<Event>,
    /// Lines or records that could not be read (each is also an `unparsed` event).
    pub unparsed: u64,
}

#[cfg(test)]
impl Emit for Parsed {
    fn put(&mut self, e: Event, unparsed: bool) -> Result<(), Stop> {
        self.unparsed += u64::from(unparsed);
        self.events.push(e);
        Ok(())
    }
}

/// Most distinct texts [`Occurrences`] counts at once (about 40 bytes each).
pub const OCCURRENCES_MAX: usize = 65_536;

/// Which of several identical lines this is, for its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Occurrence {
    /// The n-th line with this text.
    Nth(u32),
    /// Not counted: keyed by its position in the input instead.
    At(u64),
}

impl Occurrence {
    /// The key part: `n` as four bytes, or a tag and the position (never equal to an `Nth`,
    /// since key parts are hashed with their lengths).
    pub fn key_part(&self) -> Vec<u8> {
        match self {
            Occurrence::Nth(n) => n.to_le_bytes().to_vec(),
            Occurrence::At(at) => [b"@".as_slice(), &at.to_le_bytes()].concat(),
        }
    }
}

#[derive(Debug)]
struct Counted {
    n: u32,
    /// Lines of this text dated before this were counted by an entry since forgotten.
    since: i64,
    /// The latest time of a line counted here.
    latest: i64,
}

/// Numbers identical lines in order, so a line repeated in one file stays several events but
/// the same file read twice gives the same keys.
///
/// Bounded: at most [`OCCURRENCES_MAX`] texts are counted. Since `(host, time_ns, key)` is
/// what makes a row unique, numbers need only differ among lines of the same time; so when
/// the table is full, the texts last seen before the newest time are forgotten. A line that
/// might have been counted by a forgotten entry (dated before it was forgotten), or a new text
/// while the table is full of the newest time's texts, is keyed by its position in the input
/// instead: never the same key as another line at the same time.
#[derive(Debug)]
pub struct Occurrences {
    counts: std::collections::HashMap<u64, Counted>,
    /// Entries last seen before this were forgotten.
    forgot_before: i64,
    newest: i64,
}

impl Default for Occurrences {
    fn default() -> Occurrences {
        Occurrences {
            counts: Default::default(),
            forgot_before: i64::MIN,
            newest: i64::MIN,
        }
    }
}

impl Occurrences {
    /// The occurrence of `text` at `time_ns`; `at` is its position in the input.
    pub fn next(&mut self, time_ns: i64, text: &str, at: u64) -> Occurrence {
        self.newest = self.newest.max(time_ns);
        let k = dedup_key(&[text.as_bytes()]) as u64;
        if let Some(c) = self.counts.get_mut(&k) {
            if time_ns < c.since || c.n == u32::MAX {
                return Occurrence::At(at);
            }
            c.n += 1;
            c.latest = c.latest.max(time_ns);
            return Occurrence::Nth(c.n);
        }
        if time_ns < self.forgot_before {
            return Occurrence::At(at);
        }
        if self.counts.len() >= OCCURRENCES_MAX && self.newest > self.forgot_before {
            // Forget what was last seen before the newest time: lines dated before it are
            // keyed by position from now on.
            self.forgot_before = self.newest;
            let keep = self.forgot_before;
            self.counts.retain(|_, c| c.latest >= keep);
            if time_ns < self.forgot_before {
                return Occurrence::At(at);
            }
        }
        if self.counts.len() >= OCCURRENCES_MAX {
            return Occurrence::At(at);
        }
        let since = self.forgot_before;
        self.counts.insert(
            k,
            Counted {
                n: 1,
                since,
                latest: time_ns,
            },
        );
        Occurrence::Nth(1)
    }

    /// How many texts are counted now (at most [`OCCURRENCES_MAX`]).
    pub fn len(&self) -> usize {
        self.counts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
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

    /// Every line's `(time, text, occurrence)`, which with the source is its row's identity.
    fn identities(lines: &[(i64, String)]) -> Vec<(i64, String, Occurrence)> {
        let mut occ = Occurrences::default();
        let out = lines
            .iter()
            .enumerate()
            .map(|(at, (t, text))| {
                let o = occ.next(*t, text, at as u64);
                assert!(occ.len() <= OCCURRENCES_MAX);
                (*t, text.clone(), o)
            })
            .collect();
        out
    }

    fn assert_distinct(ids: &[(i64, String, Occurrence)]) {
        let set: std::collections::HashSet<_> = ids
            .iter()
            .map(|(t, text, o)| (t, text, o.key_part()))
            .collect();
        assert_eq!(set.len(), ids.len(), "two lines got the same identity");
    }

    #[test]
    fn occurrences_are_bounded_and_never_merge_two_lines() {
        let many = OCCURRENCES_MAX as i64 * 2;
        // A long log in time order, every line repeated once: counted as before throughout.
        let sorted: Vec<(i64, String)> = (0..many)
            .flat_map(|i| [(i / 3, format!("line {i}")), (i / 3, format!("line {i}"))])
            .collect();
        let ids = identities(&sorted);
        assert_distinct(&ids);
        assert!(ids
            .iter()
            .all(|(_, _, o)| matches!(o, Occurrence::Nth(1 | 2))));
        // Everything at one time (a history without time stamps): the texts past the bound
        // are keyed by position.
        let one_time: Vec<(i64, String)> = (0..many)
            .map(|i| (7, format!("cmd {}", i % (many / 2 + 1))))
            .collect();
        let ids = identities(&one_time);
        assert_distinct(&ids);
        assert!(ids.iter().any(|(_, _, o)| matches!(o, Occurrence::At(_))));
        // Out of order after the table was full: a repeat dated before what was forgotten
        // is keyed by position, never numbered 1 again.
        let mut shuffled = sorted.clone();
        shuffled.push((0, "line 0".into()));
        shuffled.push((5, "line 15".into()));
        let ids = identities(&shuffled);
        assert_distinct(&ids);
        assert!(matches!(ids[ids.len() - 1].2, Occurrence::At(_)));
        // The same input twice gives the same occurrences.
        assert_eq!(identities(&shuffled), ids);
        // Small inputs count exactly as before: the n-th time the text is seen.
        let few: Vec<(i64, String)> = [(3, "a"), (1, "a"), (3, "b"), (2, "a")]
            .iter()
            .map(|(t, s)| (*t, s.to_string()))
            .collect();
        let n: Vec<Occurrence> = identities(&few).into_iter().map(|x| x.2).collect();
        use Occurrence::Nth;
        assert_eq!(n, [Nth(1), Nth(2), Nth(1), Nth(3)]);
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
