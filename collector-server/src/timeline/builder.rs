//! Which parser reads a sealed item, and the run that turns it into timeline rows.
//!
//! Files are recognised by their file name on the host (rotation suffixes such as `.1` or
//! `-20261129` ignored), bodyfiles by `source.name`/`media_type`, volatile artifacts and the
//! event journal by their names. A file item also gives its own MACB times. What each item
//! gave (events, unparsed lines, error) is recorded in `timeline_items`.

use super::parse;
use super::{Event, Parsed};
use crate::error::{Error, Result};
use crate::storage::Stores;
use cairn_protocol::manifest::{ItemKind, ItemManifest};
use cairn_protocol::rfc3339;

/// Items larger than this are not read for the timeline (a log this large is a disk image's job).
pub const MAX_PARSE_BYTES: u64 = 512 << 20;

/// How to read one item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parser {
    Syslog(&'static str),
    Journal,
    Utmp(&'static str),
    History(&'static str),
    Bodyfile,
    Processes,
    Network,
    EventJournal,
}

impl Parser {
    pub fn name(&self) -> &'static str {
        match self {
            Parser::Syslog(s) | Parser::Utmp(s) | Parser::History(s) => s,
            Parser::Journal => "journal",
            Parser::Bodyfile => "bodyfile",
            Parser::Processes => "processes.json",
            Parser::Network => "network.json",
            Parser::EventJournal => "event_journal",
        }
    }

    fn run(&self, data: &[u8], user: Option<String>, mtime_ns: i64) -> Parsed {
        let text = || String::from_utf8_lossy(data);
        match *self {
            Parser::Syslog(source) => parse::syslog::parse(&text(), source, mtime_ns),
            Parser::Journal => parse::journal::parse(data, mtime_ns),
            Parser::Utmp(source) => parse::utmp::parse(data, source, mtime_ns),
            Parser::History(source) => parse::history::parse(&text(), source, user, mtime_ns),
            Parser::Bodyfile => parse::bodyfile::parse(&text(), mtime_ns),
            Parser::Processes => parse::volatile::processes(data, mtime_ns),
            Parser::Network => parse::volatile::network(data, mtime_ns),
            Parser::EventJournal => parse::volatile::event_journal(&text(), mtime_ns),
        }
    }
}

/// `auth.log.1` → `auth.log`, `secure-20261129` → `secure`.
fn base_name(name: &str) -> &str {
    let mut n = name;
    if let Some((stem, suffix)) = n.rsplit_once('.') {
        if !suffix.is_empty() && suffix.bytes().all(|b| b.is_ascii_digit()) {
            n = stem;
        }
    }
    if let Some((stem, suffix)) = n.rsplit_once('-') {
        if suffix.len() == 8 && suffix.bytes().all(|b| b.is_ascii_digit()) {
            n = stem;
        }
    }
    n
}

/// The parser for an item, from its kind, names and media type.
pub fn choose(
    kind: ItemKind,
    name: &str,
    path: Option<&str>,
    media_type: Option<&str>,
) -> Option<Parser> {
    if name == "bodyfile" || media_type == Some("text/x-bodyfile") {
        return Some(Parser::Bodyfile);
    }
    match kind {
        ItemKind::EventJournal => return Some(Parser::EventJournal),
        ItemKind::VolatileArtifact => {
            return match name {
                "processes.json" => Some(Parser::Processes),
                "network.json" => Some(Parser::Network),
                "events.jsonl" => Some(Parser::EventJournal),
                _ => None,
            }
        }
        ItemKind::File => {}
        _ => return None,
    }
    let file = path.and_then(|p| p.rsplit('/').next()).unwrap_or(name);
    if file.ends_with(".gz") || file.ends_with(".xz") || file.ends_with(".zst") {
        return None;
    }
    if file == "events.jsonl" {
        return Some(Parser::EventJournal);
    }
    if file.contains("journal") && !file.ends_with(".journal") && !file.ends_with(".journal~") {
        return Some(Parser::Journal);
    }
    match base_name(file) {
        "auth.log" | "secure" => Some(Parser::Syslog("auth.log")),
        "syslog" | "messages" | "kern.log" | "daemon.log" | "user.log" => {
            Some(Parser::Syslog("syslog"))
        }
        "cron" | "cron.log" => Some(Parser::Syslog("cron")),
        "wtmp" => Some(Parser::Utmp("wtmp")),
        "btmp" => Some(Parser::Utmp("btmp")),
        "utmp" => Some(Parser::Utmp("utmp")),
        ".bash_history" | ".sh_history" | ".ash_history" => Some(Parser::History("bash_history")),
        ".zsh_history" | ".histfile" => Some(Parser::History("zsh_history")),
        _ => None,
    }
}

/// MACB events of a collected file, from the times the agent recorded in `source.details`.
pub fn file_time_events(
    path: &str,
    details: &serde_json::Map<String, serde_json::Value>,
) -> Vec<Event> {
    let mut out = Vec::new();
    for (field, kind) in [
        ("mtime", "file_mtime"),
        ("atime", "file_atime"),
        ("ctime", "file_ctime"),
        ("btime", "file_btime"),
    ] {
        let Some(raw) = details.get(field).and_then(|v| v.as_str()) else {
            continue;
        };
        let Some(t) = rfc3339::parse_ns(raw) else {
            continue;
        };
        let mut e = Event::new(
            t,
            "file",
            kind,
            format!("{path} ({})", super::timestamp_desc(kind)),
        );
        for k in ["size", "mode", "uid", "gid", "inode"] {
            if let Some(v) = details.get(k) {
                e.attrs.insert(k.to_string(), v.clone());
            }
        }
        e.user = details
            .get("uid")
            .map(|u| u.to_string().trim_matches('"').to_string());
        e.path = Some(path.to_string());
        e.dedup = super::dedup_key(&[b"file", path.as_bytes(), kind.as_bytes(), raw.as_bytes()]);
        out.push(e);
    }
    out
}

/// Build the timeline rows of a sealed item. Errors are recorded for the item as well as
/// returned.
pub fn build_for_item(stores: &Stores, m: &ItemManifest) -> Result<()> {
    let item_id = &m.header.item_id;
    let src = &m.header.source;
    let Some(collection) = stores.meta.get_collection(&m.header.collection_id)? else {
        return Err(Error::not_found(format!(
            "collection {} of item {item_id} not found",
            m.header.collection_id
        )));
    };
    let host_id = collection.host_id;
    let mut events: Vec<Event> = Vec::new();
    if let (ItemKind::File, Some(path)) = (m.header.kind, src.path.as_deref()) {
        events.extend(file_time_events(path, &src.details));
    }
    let parser = choose(
        m.header.kind,
        &src.name,
        src.path.as_deref(),
        src.media_type.as_deref(),
    );
    let mut unparsed = 0;
    let mut error = None;
    if let Some(p) = parser {
        if m.raw_len > MAX_PARSE_BYTES {
            error = Some(format!(
                "{} bytes is more than the {MAX_PARSE_BYTES} read for the timeline; not parsed",
                m.raw_len
            ));
        } else {
            match crate::evidence::read_item(stores, item_id, MAX_PARSE_BYTES) {
                Ok(data) => {
                    let mtime = src
                        .details
                        .get("mtime")
                        .and_then(|v| v.as_str())
                        .and_then(rfc3339::parse_ns)
                        .or_else(|| rfc3339::parse_ns(&m.acquisition_end))
                        .unwrap_or(0);
                    let user = src.path.as_deref().and_then(super::user_from_home_path);
                    let parsed = p.run(&data, user, mtime);
                    unparsed = parsed.unparsed;
                    events.extend(parsed.events);
                }
                Err(e) => error = Some(format!("reading the item back from the store: {e}")),
            }
        }
    }
    if events.is_empty() && parser.is_none() {
        return Ok(());
    }
    if let Some(path) = &src.path {
        for e in events.iter_mut().filter(|e| e.path.is_none()) {
            e.path = Some(path.clone());
        }
    }
    let stored = stores
        .meta
        .insert_timeline(&host_id, Some(item_id), &events)?;
    let parser_name = parser.map_or("file_times", |p| p.name());
    stores.meta.record_timeline_item(
        item_id,
        &host_id,
        parser_name,
        stored as u64,
        unparsed,
        error.as_deref(),
    )?;
    tracing::info!(
        "timeline: item {item_id} ({}) via {parser_name}: {} events ({stored} new), {unparsed} unparsed",
        src.name,
        events.len()
    );
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn parsers_are_chosen_by_file_name() {
        let f = |p: &str| choose(ItemKind::File, p, Some(p), None);
        assert_eq!(f("/var/log/auth.log"), Some(Parser::Syslog("auth.log")));
        assert_eq!(f("/var/log/auth.log.1"), Some(Parser::Syslog("auth.log")));
        assert_eq!(
            f("/var/log/secure-20261129"),
            Some(Parser::Syslog("auth.log"))
        );
        assert_eq!(f("/var/log/messages"), Some(Parser::Syslog("syslog")));
        assert_eq!(f("/var/log/cron"), Some(Parser::Syslog("cron")));
        assert_eq!(f("/var/log/wtmp"), Some(Parser::Utmp("wtmp")));
        assert_eq!(f("/var/log/btmp.1"), Some(Parser::Utmp("btmp")));
        assert_eq!(
            f("/home/alice/.bash_history"),
            Some(Parser::History("bash_history"))
        );
        assert_eq!(
            f("/root/.zsh_history"),
            Some(Parser::History("zsh_history"))
        );
        assert_eq!(f("/tmp/journal-export.json"), Some(Parser::Journal));
        assert_eq!(f("/var/log/journal/x/system.journal"), None);
        assert_eq!(f("/var/log/auth.log.2.gz"), None);
        assert_eq!(f("/etc/passwd"), None);
        assert_eq!(
            choose(
                ItemKind::ArtifactBundle,
                "bodyfile",
                None,
                Some("text/x-bodyfile")
            ),
            Some(Parser::Bodyfile)
        );
        assert_eq!(
            choose(ItemKind::VolatileArtifact, "processes.json", None, None),
            Some(Parser::Processes)
        );
        assert_eq!(choose(ItemKind::ProcessCore, "core.1", None, None), None);
    }

    #[test]
    fn no_parser_panics_on_hostile_bytes() {
        let parsers = [
            Parser::Syslog("auth.log"),
            Parser::Journal,
            Parser::Utmp("wtmp"),
            Parser::History("bash_history"),
            Parser::Bodyfile,
            Parser::Processes,
            Parser::Network,
            Parser::EventJournal,
        ];
        let mut x: u64 = 0x1234_5678;
        for round in 0..200 {
            let len = (round * 37) % 3000;
            let data: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    // Mostly printable, with newlines, separators and the odd high byte.
                    let alphabet = b"Jan 1 00:00:0#|:;=\n{}[]\"\xff\x00 9";
                    alphabet[(x % alphabet.len() as u64) as usize]
                })
                .collect();
            for p in parsers {
                let parsed = p.run(&data, None, 0);
                assert!(parsed.unparsed as usize <= parsed.events.len());
            }
        }
        // A binary journal field claiming an absurd length.
        let mut j = b"MESSAGE\n".to_vec();
        j.extend_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(Parser::Journal.run(&j, None, 0).unparsed, 1);
    }

    #[test]
    fn file_times_from_details() {
        let d = serde_json::json!({"size": 10, "uid": 0, "mtime": "2026-11-29T10:00:00.5Z", "atime": "2026-11-29T10:01:00Z", "ctime": "bad"});
        let ev = file_time_events("/etc/shadow", d.as_object().unwrap());
        assert_eq!(ev.len(), 2);
        assert_eq!(ev[0].kind, "file_mtime");
        assert_eq!(ev[0].path.as_deref(), Some("/etc/shadow"));
        assert_eq!(ev[0].user.as_deref(), Some("0"));
    }
}
