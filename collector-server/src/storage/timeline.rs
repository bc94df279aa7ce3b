//! The timeline table: one row per event from any source, found by host, time, kind, user,
//! container, source and text, read in `(time, id)` order with a cursor.

use super::Result;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// One event of the timeline. Time is UTC nanoseconds since the Unix epoch.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Event {
    pub time_ns: i64,
    /// Which parser or stream it came from: `ebpf`, `auth.log`, `syslog`, `journal`, `wtmp`,
    /// `btmp`, `utmp`, `bash_history`, `zsh_history`, `bodyfile`, `file`, `processes.json`,
    /// `network.json`, `event_journal`, `cairn` (the collector's own actions: containment).
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
    /// The parent process's executable (sensor events).
    pub parent_exe: Option<String>,
    /// The remote end of a connection (connects, accepts, sockets) or a login's source.
    pub dst_addr: Option<String>,
    pub dst_port: Option<i64>,
    /// Identity of the event within its host: the same event read twice (the live stream and
    /// the journal item, or a log collected twice) is stored once.
    pub dedup: i64,
    /// Where the time came from when the input did not give it whole, so it is a guess:
    /// `file_mtime`, `inferred_year`, `previous_command`, `nearby_entry`, … `None` when the
    /// time is the input's own.
    pub time_source: Option<String>,
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

    /// Mark the time as inferred, and say from what.
    pub fn inferred(mut self, source: &str) -> Event {
        self.time_source = Some(source.to_string());
        self
    }

    /// Whether the time is a guess rather than the input's own.
    pub fn time_inferred(&self) -> bool {
        self.time_source.is_some()
    }
}

/// What to look for. Hosts are agent ids (names are resolved above).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Filter {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub host_ids: Vec<String>,
    #[serde(default)]
    pub from_ns: Option<i64>,
    #[serde(default)]
    pub to_ns: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kinds: Vec<String>,
    #[serde(default)]
    pub user: Option<String>,
    /// A container id or a prefix of one (Falco's 12 characters).
    #[serde(default)]
    pub container: Option<String>,
    #[serde(default)]
    pub source: Option<String>,
    /// Free text, matched case-insensitively against the message.
    #[serde(default)]
    pub text: Option<String>,
    /// The query language's condition, hosts already resolved to agent ids.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cond: Option<Cond>,
    /// Newest first (the default of people); oldest first for exports and replays.
    #[serde(default)]
    pub newest_first: bool,
}

/// A column the query language can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Column {
    /// Values are agent ids.
    Host,
    Kind,
    Source,
    User,
    Exe,
    Parent,
    Pid,
    Ppid,
    Container,
    Pod,
    Path,
    Dst,
    DstPort,
    Item,
    Message,
}

impl Column {
    /// The column's name in the timeline table, quoted where SQL reserves it.
    pub fn sql(&self) -> &'static str {
        match self {
            Column::Host => "host",
            Column::Kind => "kind",
            Column::Source => "source",
            Column::User => "\"user\"",
            Column::Exe => "exe",
            Column::Parent => "parent_exe",
            Column::Pid => "pid",
            Column::Ppid => "ppid",
            Column::Container => "container",
            Column::Pod => "pod",
            Column::Path => "path",
            Column::Dst => "dst_addr",
            Column::DstPort => "dst_port",
            Column::Item => "item_id",
            Column::Message => "message",
        }
    }

    pub fn is_numeric(&self) -> bool {
        matches!(self, Column::Pid | Column::Ppid | Column::DstPort)
    }
}

/// How a value matches a column.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Match {
    /// Equal (case-sensitive; a number for numeric columns).
    Is(String),
    /// Starts with (a value ending in `*`).
    Prefix(String),
    /// Contains, case-insensitively (free text).
    Contains(String),
    /// One of (hosts, users as name and uid).
    OneOf(Vec<String>),
}

/// A condition tree: what the query language compiles to, and what stores evaluate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cond {
    All(Vec<Cond>),
    Any(Vec<Cond>),
    Not(Box<Cond>),
    Is(Column, Match),
}

/// Counts of matching events over time: `counts[i]` in `[from_ns + i·bucket_ns, +bucket_ns)`.
#[derive(Debug, Clone, Serialize)]
pub struct Histogram {
    pub from_ns: i64,
    pub bucket_ns: i64,
    pub counts: Vec<u64>,
}

/// One value of a column with how often it occurs and on how many hosts (stacking).
#[derive(Debug, Clone, Serialize)]
pub struct Stacked {
    pub value: String,
    pub events: u64,
    pub hosts: u64,
}

/// One distinct value (or pair) of a host's events, and how many events had it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostValue {
    pub host: String,
    pub a: String,
    pub b: Option<String>,
    pub events: u64,
}

/// A page position: the last `(time_ns, id)` returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub time_ns: i64,
    pub id: i64,
}

impl Cursor {
    pub fn encode(&self) -> String {
        format!("{}.{}", self.time_ns, self.id)
    }
    pub fn decode(s: &str) -> Option<Cursor> {
        let (t, id) = s.split_once('.')?;
        Some(Cursor {
            time_ns: t.parse().ok()?,
            id: id.parse().ok()?,
        })
    }
}

/// An event as stored: its row id, host and the item it was read from.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    pub id: i64,
    pub host_id: String,
    pub item_id: Option<String>,
    pub event: Event,
}

/// Most rows counted for facets in one query.
pub const FACET_SCAN_MAX: u64 = 1_000_000;
/// Most values listed per facet.
pub const FACET_TOP: usize = 20;

/// Counts by host, kind, user, container and source over everything a filter matches.
#[derive(Debug, Serialize)]
pub struct Facets {
    pub total: u64,
    /// False when more than [`FACET_SCAN_MAX`] rows matched and counting stopped there.
    pub exact: bool,
    pub host: Vec<(String, u64)>,
    pub kind: Vec<(String, u64)>,
    pub user: Vec<(String, u64)>,
    pub container: Vec<(String, u64)>,
    pub source: Vec<(String, u64)>,
    pub exe: Vec<(String, u64)>,
    pub parent: Vec<(String, u64)>,
    pub dst: Vec<(String, u64)>,
    pub dst_port: Vec<(String, u64)>,
    pub pod: Vec<(String, u64)>,
}

pub trait TimelineStore {
    /// Insert events for a host in one transaction; returns how many were new.
    fn insert_timeline(
        &self,
        host_id: &str,
        item_id: Option<&str>,
        events: &[Event],
    ) -> Result<usize>;
    /// What building the timeline from an item gave: parser, events, unparsed lines, error.
    fn record_timeline_item(
        &self,
        item_id: &str,
        host_id: &str,
        parser: &str,
        events: u64,
        unparsed: u64,
        error: Option<&str>,
    ) -> Result<()>;
    /// The items a host's (or every) timeline was built from, newest first.
    fn timeline_items(&self, host_id: Option<&str>) -> Result<Vec<Value>>;
    /// A page of events in `(time, id)` order after `after`, and the cursor for the next page
    /// (`None` at the end).
    fn timeline_page(
        &self,
        filter: &Filter,
        after: Option<Cursor>,
        limit: u32,
    ) -> Result<(Vec<StoredEvent>, Option<Cursor>)>;
    /// Facet counts over everything the filter matches, up to [`FACET_SCAN_MAX`] rows.
    fn timeline_facets(&self, filter: &Filter) -> Result<Facets>;
    /// Every value of one column among the matching events, most frequent first, a page at a
    /// time (a facet's "more"), with its count.
    fn timeline_values(
        &self,
        filter: &Filter,
        column: Column,
        offset: u32,
        limit: u32,
    ) -> Result<Vec<(String, u64)>>;
    /// Matching events per time bucket between `from_ns` and `to_ns`.
    fn timeline_histogram(
        &self,
        filter: &Filter,
        from_ns: i64,
        to_ns: i64,
        buckets: u32,
    ) -> Result<Histogram>;
    /// The least (or most) frequent values of a column among the matching events, with the
    /// number of hosts each was seen on.
    fn timeline_stack(
        &self,
        filter: &Filter,
        column: Column,
        rarest_first: bool,
        limit: u32,
    ) -> Result<Vec<Stacked>>;
    /// The distinct values of column `a` (with `b`, as pairs) on each host among the matching
    /// events, with how many events had each: what a host's behaviour profile is made of. At
    /// most `limit` + 1 rows, so the caller can say the profile was cut.
    fn timeline_host_values(
        &self,
        filter: &Filter,
        a: Column,
        b: Option<Column>,
        limit: u32,
    ) -> Result<Vec<HostValue>>;
    /// One event by its row id.
    fn timeline_event(&self, id: i64) -> Result<Option<StoredEvent>>;
    /// The `n` events before and the `n` after an event, on its host, in time order.
    fn timeline_context(&self, id: i64, n: u32) -> Result<Vec<StoredEvent>>;
    /// The earliest and latest time among the matching events.
    fn timeline_span(&self, filter: &Filter) -> Result<Option<(i64, i64)>>;
    /// Give back to the system the memory a bulk insert filled (caches), after a large
    /// item's timeline, so the collector's resident size is what it keeps, not what it once
    /// needed.
    fn release_memory(&self) -> Result<()> {
        Ok(())
    }
}
