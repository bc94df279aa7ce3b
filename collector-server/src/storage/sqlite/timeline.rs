//! The timeline table.
//!
//! The same event read twice for a host (the live stream and the journal item, a log collected
//! twice) is stored once: `(host, time_ns, dedup)` is unique and rows are `INSERT OR IGNORE`d.
//! Putting the time before the key keeps that index in time order, so a batch of new events
//! touches its last pages only instead of pages all over a random-keyed index.
//! Hosts are stored as small integers (`timeline_hosts`): a 36-character agent id in every row
//! and in the (host, time) index would double the size of both. Facets are counted in one pass
//! over the matching rows, stopping at [`FACET_SCAN_MAX`] rather than making an answer slow.

use super::{now, Sqlite};
use crate::storage::timeline::{
    Column, Cond, Cursor, Event, Facets, Filter, Histogram, Match, Stacked, StoredEvent,
    TimelineStore, FACET_SCAN_MAX, FACET_TOP,
};
use crate::storage::{to_json, Result};
use rusqlite::types::Value as Sql;
use rusqlite::{params, Connection};
use serde_json::Value;
use std::collections::HashMap;

pub(super) const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS timeline_hosts (n INTEGER PRIMARY KEY, host_id TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS timeline (
    id INTEGER PRIMARY KEY, host INTEGER NOT NULL, time_ns INTEGER NOT NULL,
    source TEXT NOT NULL, kind TEXT NOT NULL, pid INTEGER, ppid INTEGER, exe TEXT, argv TEXT, user TEXT,
    container TEXT, pod TEXT, message TEXT NOT NULL, attrs TEXT, path TEXT, item_id TEXT, dedup INTEGER NOT NULL);
CREATE UNIQUE INDEX IF NOT EXISTS timeline_host_time ON timeline(host, time_ns, dedup);
CREATE INDEX IF NOT EXISTS timeline_time ON timeline(time_ns);
CREATE INDEX IF NOT EXISTS timeline_kind_time ON timeline(kind, time_ns);
CREATE TABLE IF NOT EXISTS timeline_items (
    item_id TEXT PRIMARY KEY, host_id TEXT NOT NULL, parser TEXT NOT NULL, events INTEGER NOT NULL,
    unparsed INTEGER NOT NULL, error TEXT, built_at TEXT NOT NULL);
"#;

/// Rows per multi-row INSERT: one statement step per 32 events instead of one per event.
const ROWS: usize = 32;
const COLUMNS: &str = "host, time_ns, source, kind, pid, ppid, exe, argv, user, container, pod, message, attrs, path, item_id, dedup, parent_exe, dst_addr, dst_port, time_source";
const COLS: usize = 20;

fn insert_sql(rows: usize) -> String {
    let row = format!("({})", vec!["?"; COLS].join(","));
    format!(
        "INSERT OR IGNORE INTO timeline({COLUMNS}) VALUES {}",
        vec![row; rows].join(",")
    )
}

/// Bind one event's columns from parameter `at` (1-based) on.
fn bind(
    st: &mut rusqlite::CachedStatement<'_>,
    at: usize,
    host: i64,
    item_id: Option<&str>,
    e: &Event,
) -> Result<()> {
    let argv = e.argv.as_ref().map(|a| to_json("argv", a)).transpose()?;
    let attrs = (!e.attrs.is_empty())
        .then(|| to_json("attributes", &e.attrs))
        .transpose()?;
    st.raw_bind_parameter(at, host)?;
    st.raw_bind_parameter(at + 1, e.time_ns)?;
    st.raw_bind_parameter(at + 2, &e.source)?;
    st.raw_bind_parameter(at + 3, &e.kind)?;
    st.raw_bind_parameter(at + 4, e.pid)?;
    st.raw_bind_parameter(at + 5, e.ppid)?;
    st.raw_bind_parameter(at + 6, &e.exe)?;
    st.raw_bind_parameter(at + 7, argv)?;
    st.raw_bind_parameter(at + 8, &e.user)?;
    st.raw_bind_parameter(at + 9, &e.container)?;
    st.raw_bind_parameter(at + 10, &e.pod)?;
    st.raw_bind_parameter(at + 11, &e.message)?;
    st.raw_bind_parameter(at + 12, attrs)?;
    st.raw_bind_parameter(at + 13, &e.path)?;
    st.raw_bind_parameter(at + 14, item_id)?;
    st.raw_bind_parameter(at + 15, e.dedup)?;
    st.raw_bind_parameter(at + 16, &e.parent_exe)?;
    st.raw_bind_parameter(at + 17, &e.dst_addr)?;
    st.raw_bind_parameter(at + 18, e.dst_port)?;
    st.raw_bind_parameter(at + 19, &e.time_source)?;
    Ok(())
}

/// Insert events for a host inside the caller's transaction; returns how many were new.
pub(super) fn insert_with(
    conn: &Connection,
    host_id: &str,
    item_id: Option<&str>,
    events: &[Event],
) -> Result<usize> {
    conn.prepare_cached("INSERT OR IGNORE INTO timeline_hosts(host_id) VALUES (?1)")?
        .execute(params![host_id])?;
    let host: i64 = conn
        .prepare_cached("SELECT n FROM timeline_hosts WHERE host_id = ?1")?
        .query_row(params![host_id], |r| r.get(0))?;
    let mut many = conn.prepare_cached(&insert_sql(ROWS))?;
    let mut one = conn.prepare_cached(&insert_sql(1))?;
    let mut new = 0;
    for chunk in events.chunks(ROWS) {
        if chunk.len() == ROWS {
            for (i, e) in chunk.iter().enumerate() {
                bind(&mut many, 1 + i * COLS, host, item_id, e)?;
            }
            new += many.raw_execute()?;
        } else {
            for e in chunk {
                bind(&mut one, 1, host, item_id, e)?;
                new += one.raw_execute()?;
            }
        }
    }
    Ok(new)
}

/// `WHERE` clause and its parameters for a filter (and an optional cursor).
fn where_clause(f: &Filter, after: Option<Cursor>) -> (String, Vec<Sql>) {
    let mut w: Vec<String> = Vec::new();
    let mut p: Vec<Sql> = Vec::new();
    let bind = |p: &mut Vec<Sql>, v: Sql| {
        p.push(v);
        format!("?{}", p.len())
    };
    if !f.host_ids.is_empty() {
        let marks: Vec<String> = f
            .host_ids
            .iter()
            .map(|h| bind(&mut p, Sql::Text(h.clone())))
            .collect();
        w.push(format!(
            "host IN (SELECT n FROM timeline_hosts WHERE host_id IN ({}))",
            marks.join(",")
        ));
    }
    if let Some(t) = f.from_ns {
        w.push(format!("time_ns >= {}", bind(&mut p, Sql::Integer(t))));
    }
    if let Some(t) = f.to_ns {
        w.push(format!("time_ns <= {}", bind(&mut p, Sql::Integer(t))));
    }
    if !f.kinds.is_empty() {
        let marks: Vec<String> = f
            .kinds
            .iter()
            .map(|k| bind(&mut p, Sql::Text(k.clone())))
            .collect();
        w.push(format!("kind IN ({})", marks.join(",")));
    }
    if let Some(u) = &f.user {
        let u = bind(&mut p, Sql::Text(u.clone()));
        w.push(format!("({USER_OR_UID})").replace("?U", &u));
    }
    if let Some(c) = &f.container {
        // A prefix match on an exact range keeps it an index-friendly comparison.
        let lo = bind(&mut p, Sql::Text(c.clone()));
        let hi = bind(&mut p, Sql::Text(format!("{c}\u{10ffff}")));
        w.push(format!("container >= {lo} AND container < {hi}"));
    }
    if let Some(s) = &f.source {
        w.push(format!("source = {}", bind(&mut p, Sql::Text(s.clone()))));
    }
    if let Some(t) = &f.text {
        let escaped = t
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_");
        w.push(format!(
            "message LIKE {} ESCAPE '\\'",
            bind(&mut p, Sql::Text(format!("%{escaped}%")))
        ));
    }
    if let Some(c) = &f.cond {
        w.push(compile(c, &mut p));
    }
    if let Some(c) = after {
        let t = bind(&mut p, Sql::Integer(c.time_ns));
        let id = bind(&mut p, Sql::Integer(c.id));
        if f.newest_first {
            w.push(format!("time_ns <= {t} AND (time_ns < {t} OR id < {id})"));
        } else {
            w.push(format!("time_ns >= {t} AND (time_ns > {t} OR id > {id})"));
        }
    }
    let sql = if w.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", w.join(" AND "))
    };
    (sql, p)
}

fn like_escape(t: &str) -> String {
    t.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}

/// SQL for a condition of the query language; its values are bound, never spliced.
/// A user filter: the name or the uid (`?U` is its one parameter).
const USER_OR_UID: &str = "user = ?U OR json_extract(attrs, '$.uid') = ?U";

fn compile(c: &Cond, p: &mut Vec<Sql>) -> String {
    let mut bind = |v: Sql| {
        p.push(v);
        format!("?{}", p.len())
    };
    match c {
        Cond::All(cs) if cs.is_empty() => "1".into(),
        Cond::Any(cs) if cs.is_empty() => "0".into(),
        Cond::All(cs) => format!(
            "({})",
            cs.iter()
                .map(|c| compile(c, p))
                .collect::<Vec<_>>()
                .join(" AND ")
        ),
        Cond::Any(cs) => format!(
            "({})",
            cs.iter()
                .map(|c| compile(c, p))
                .collect::<Vec<_>>()
                .join(" OR ")
        ),
        Cond::Not(c) => format!("NOT COALESCE({}, 0)", compile(c, p)),
        Cond::Is(Column::Host, m) => {
            let ids: Vec<String> = match m {
                Match::OneOf(v) => v.clone(),
                Match::Is(v) | Match::Prefix(v) | Match::Contains(v) => vec![v.clone()],
            };
            let marks: Vec<String> = ids.into_iter().map(|h| bind(Sql::Text(h))).collect();
            format!(
                "host IN (SELECT n FROM timeline_hosts WHERE host_id IN ({}))",
                marks.join(",")
            )
        }
        // A user is a name or a uid (sensor events carry both).
        Cond::Is(Column::User, Match::Is(v)) => {
            format!("({USER_OR_UID})").replace("?U", &bind(Sql::Text(v.clone())))
        }
        Cond::Is(Column::User, Match::OneOf(vs)) => format!(
            "({})",
            vs.iter()
                .map(|v| USER_OR_UID.replace("?U", &bind(Sql::Text(v.clone()))))
                .collect::<Vec<_>>()
                .join(" OR ")
        ),
        Cond::Is(col, m) => {
            let name = col.sql();
            let value = |v: &str| -> Sql {
                if col.is_numeric() {
                    v.parse::<i64>().map(Sql::Integer).unwrap_or(Sql::Null)
                } else {
                    Sql::Text(v.to_string())
                }
            };
            match m {
                Match::Is(v) => format!("{name} = {}", bind(value(v))),
                Match::OneOf(vs) => format!(
                    "{name} IN ({})",
                    vs.iter()
                        .map(|v| bind(value(v)))
                        .collect::<Vec<_>>()
                        .join(",")
                ),
                // A prefix on an exact range stays an index-friendly comparison.
                Match::Prefix(v) if !col.is_numeric() => {
                    let lo = bind(Sql::Text(v.clone()));
                    let hi = bind(Sql::Text(format!("{v}\u{10ffff}")));
                    format!("({name} >= {lo} AND {name} < {hi})")
                }
                Match::Prefix(v) | Match::Contains(v) => format!(
                    "CAST({name} AS TEXT) LIKE {} ESCAPE '\\'",
                    bind(Sql::Text(format!("%{}%", like_escape(v))))
                ),
            }
        }
    }
}

const ROW_COLS: &str = "id, time_ns, (SELECT host_id FROM timeline_hosts WHERE n = host), source, kind, pid, ppid, exe, argv, user, container, pod, message, attrs, path, item_id, dedup, parent_exe, dst_addr, dst_port, time_source";

fn stored_event(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredEvent> {
    let argv: Option<String> = r.get(8)?;
    let attrs: Option<String> = r.get(13)?;
    Ok(StoredEvent {
        id: r.get(0)?,
        host_id: r.get(2)?,
        item_id: r.get(15)?,
        event: Event {
            time_ns: r.get(1)?,
            source: r.get(3)?,
            kind: r.get(4)?,
            pid: r.get(5)?,
            ppid: r.get(6)?,
            exe: r.get(7)?,
            argv: argv.and_then(|a| serde_json::from_str(&a).ok()),
            user: r.get(9)?,
            container: r.get(10)?,
            pod: r.get(11)?,
            message: r.get(12)?,
            attrs: attrs
                .and_then(|a| serde_json::from_str(&a).ok())
                .unwrap_or_default(),
            path: r.get(14)?,
            dedup: r.get(16)?,
            parent_exe: r.get(17)?,
            dst_addr: r.get(18)?,
            dst_port: r.get(19)?,
            time_source: r.get(20)?,
        },
    })
}

impl TimelineStore for Sqlite {
    fn insert_timeline(
        &self,
        host_id: &str,
        item_id: Option<&str>,
        events: &[Event],
    ) -> Result<usize> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let n = insert_with(&tx, host_id, item_id, events)?;
        tx.commit()?;
        Ok(n)
    }

    fn record_timeline_item(
        &self,
        item_id: &str,
        host_id: &str,
        parser: &str,
        events: u64,
        unparsed: u64,
        error: Option<&str>,
    ) -> Result<()> {
        self.lock().execute(
            "INSERT OR REPLACE INTO timeline_items(item_id, host_id, parser, events, unparsed, error, built_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![item_id, host_id, parser, events, unparsed, error, now()],
        )?;
        Ok(())
    }

    fn timeline_items(&self, host_id: Option<&str>) -> Result<Vec<Value>> {
        let conn = self.lock();
        let mut st = conn.prepare(
            "SELECT t.item_id, t.host_id, t.parser, t.events, t.unparsed, t.error, t.built_at, i.name
             FROM timeline_items t LEFT JOIN items i ON i.id = t.item_id
             WHERE ?1 IS NULL OR t.host_id = ?1 ORDER BY t.built_at DESC",
        )?;
        let rows = st.query_map(params![host_id], |r| {
            Ok(serde_json::json!({
                "item_id": r.get::<_, String>(0)?, "host_id": r.get::<_, String>(1)?,
                "parser": r.get::<_, String>(2)?, "events": r.get::<_, i64>(3)?,
                "unparsed": r.get::<_, i64>(4)?, "error": r.get::<_, Option<String>>(5)?,
                "built_at": r.get::<_, String>(6)?, "name": r.get::<_, Option<String>>(7)?,
            }))
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    fn timeline_page(
        &self,
        f: &Filter,
        after: Option<Cursor>,
        limit: u32,
    ) -> Result<(Vec<StoredEvent>, Option<Cursor>)> {
        let (w, mut p) = where_clause(f, after);
        p.push(Sql::Integer(i64::from(limit) + 1));
        let order = if f.newest_first {
            "time_ns DESC, id DESC"
        } else {
            "time_ns, id"
        };
        let sql = format!(
            "SELECT {ROW_COLS} FROM timeline {w} ORDER BY {order} LIMIT ?{}",
            p.len()
        );
        let conn = self.lock();
        let mut st = conn.prepare_cached(&sql)?;
        let mut rows = st
            .query_map(rusqlite::params_from_iter(p), stored_event)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let next = if rows.len() > limit as usize {
            rows.truncate(limit as usize);
            rows.last().map(|r| Cursor {
                time_ns: r.event.time_ns,
                id: r.id,
            })
        } else {
            None
        };
        Ok((rows, next))
    }

    fn release_memory(&self) -> Result<()> {
        // The page cache (up to `cache_size`) is full after a bulk insert: free its pages...
        self.lock().execute_batch("PRAGMA shrink_memory")?;
        // ...and hand the freed heap back (glibc keeps it otherwise).
        #[cfg(target_env = "gnu")]
        // SAFETY: malloc_trim only releases free heap pages; it touches no live allocation.
        unsafe {
            libc::malloc_trim(0);
        }
        Ok(())
    }

    fn timeline_facets(&self, f: &Filter) -> Result<Facets> {
        let (w, p) = where_clause(f, None);
        let sql = format!(
            "SELECT host, kind, user, container, source, exe, parent_exe, dst_addr, CAST(dst_port AS TEXT), pod FROM timeline {w} LIMIT {}",
            FACET_SCAN_MAX + 1
        );
        let conn = self.lock();
        let host_ids: HashMap<i64, String> = conn
            .prepare_cached("SELECT n, host_id FROM timeline_hosts")?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        let mut hosts: HashMap<i64, u64> = HashMap::new();
        let mut st = conn.prepare_cached(&sql)?;
        let mut rows = st.query(rusqlite::params_from_iter(p))?;
        let mut counts: [HashMap<String, u64>; 9] = Default::default();
        let mut total = 0u64;
        while let Some(r) = rows.next()? {
            total += 1;
            if total > FACET_SCAN_MAX {
                total -= 1;
                break;
            }
            *hosts.entry(r.get(0)?).or_insert(0) += 1;
            for (i, c) in counts.iter_mut().enumerate() {
                // Borrowed text avoids an allocation per row for values already counted.
                let v = match r.get_ref(i + 1)? {
                    rusqlite::types::ValueRef::Text(t) => std::str::from_utf8(t).unwrap_or("?"),
                    _ => continue,
                };
                match c.get_mut(v) {
                    Some(n) => *n += 1,
                    None => {
                        c.insert(v.to_string(), 1);
                    }
                }
            }
        }
        let top = |m: HashMap<String, u64>| {
            let mut v: Vec<(String, u64)> = m.into_iter().collect();
            v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            v.truncate(FACET_TOP);
            v
        };
        let host = hosts
            .into_iter()
            .map(|(n, c)| {
                (
                    host_ids.get(&n).cloned().unwrap_or_else(|| n.to_string()),
                    c,
                )
            })
            .collect();
        let [kind, user, container, source, exe, parent, dst, dst_port, pod] = counts;
        Ok(Facets {
            exact: total < FACET_SCAN_MAX,
            total,
            host: top(host),
            kind: top(kind),
            user: top(user),
            container: top(container),
            source: top(source),
            exe: top(exe),
            parent: top(parent),
            dst: top(dst),
            dst_port: top(dst_port),
            pod: top(pod),
        })
    }

    fn timeline_values(
        &self,
        f: &Filter,
        column: Column,
        offset: u32,
        limit: u32,
    ) -> Result<Vec<(String, u64)>> {
        let (w, mut p) = where_clause(f, None);
        let col = match column {
            Column::Host => "(SELECT host_id FROM timeline_hosts WHERE n = host)".to_string(),
            c => format!("CAST({} AS TEXT)", c.sql()),
        };
        p.push(Sql::Integer(i64::from(limit)));
        p.push(Sql::Integer(i64::from(offset)));
        let sql = format!(
            "SELECT v, COUNT(*) FROM (SELECT {col} AS v FROM timeline {w} LIMIT {FACET_SCAN_MAX}) WHERE v IS NOT NULL
             GROUP BY v ORDER BY COUNT(*) DESC, v LIMIT ?{} OFFSET ?{}",
            p.len() - 1,
            p.len()
        );
        self.rows(&sql, rusqlite::params_from_iter(p), |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
    }

    fn timeline_histogram(
        &self,
        f: &Filter,
        from_ns: i64,
        to_ns: i64,
        buckets: u32,
    ) -> Result<Histogram> {
        let buckets = buckets.clamp(1, 1000);
        let span = to_ns.saturating_sub(from_ns).max(1);
        let bucket_ns = (span / i64::from(buckets)).max(1);
        // One range count per bucket: each is served by the best index for its range (time,
        // host and time, kind and time), where one GROUP BY over the whole range sorts every
        // matching row in a temporary tree (10 M rows: 0.4 s against 2.7 s).
        let mut counts = vec![0u64; buckets as usize];
        let conn = self.lock();
        for (i, slot) in counts.iter_mut().enumerate() {
            let lo = from_ns.saturating_add(bucket_ns.saturating_mul(i as i64));
            // The last bucket takes the remainder, up to `to_ns` itself.
            let hi = if i + 1 == buckets as usize {
                to_ns
            } else {
                lo.saturating_add(bucket_ns).saturating_sub(1)
            };
            let mut b = f.clone();
            b.from_ns = Some(f.from_ns.map_or(lo, |t| t.max(lo)));
            b.to_ns = Some(f.to_ns.map_or(hi, |t| t.min(hi)));
            if b.from_ns > b.to_ns {
                continue;
            }
            let (w, p) = where_clause(&b, None);
            let mut st = conn.prepare_cached(&format!("SELECT COUNT(*) FROM timeline {w}"))?;
            *slot = st.query_row(rusqlite::params_from_iter(p), |r| r.get::<_, u64>(0))?;
        }
        Ok(Histogram {
            from_ns,
            bucket_ns,
            counts,
        })
    }

    fn timeline_stack(
        &self,
        f: &Filter,
        column: Column,
        rarest_first: bool,
        limit: u32,
    ) -> Result<Vec<Stacked>> {
        let (w, mut p) = where_clause(f, None);
        let col = match column {
            Column::Host => "CAST(host AS TEXT)".to_string(),
            c => format!("CAST({} AS TEXT)", c.sql()),
        };
        let and = if w.is_empty() { "WHERE" } else { "AND" };
        p.push(Sql::Integer(i64::from(limit.clamp(1, 10_000))));
        let order = if rarest_first { "ASC" } else { "DESC" };
        let sql = format!(
            "SELECT {col} AS v, COUNT(*), COUNT(DISTINCT host) FROM timeline {w} {and} {} IS NOT NULL
             GROUP BY v ORDER BY COUNT(DISTINCT host) {order}, COUNT(*) {order}, v LIMIT ?{}",
            column.sql(),
            p.len()
        );
        self.rows(&sql, rusqlite::params_from_iter(p), |r| {
            Ok(Stacked {
                value: r.get(0)?,
                events: r.get(1)?,
                hosts: r.get(2)?,
            })
        })
    }

    fn timeline_event(&self, id: i64) -> Result<Option<StoredEvent>> {
        use rusqlite::OptionalExtension;
        Ok(self
            .lock()
            .query_row(
                &format!("SELECT {ROW_COLS} FROM timeline WHERE id = ?1"),
                params![id],
                stored_event,
            )
            .optional()?)
    }

    fn timeline_context(&self, id: i64, n: u32) -> Result<Vec<StoredEvent>> {
        use rusqlite::OptionalExtension;
        let n = i64::from(n.clamp(1, 500));
        let anchor: Option<(i64, i64)> = self
            .lock()
            .query_row(
                "SELECT host, time_ns FROM timeline WHERE id = ?1",
                params![id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let Some((host, t)) = anchor else {
            return Ok(Vec::new());
        };
        let mut before = self.rows(
            &format!(
                "SELECT {ROW_COLS} FROM timeline WHERE host = ?1 AND time_ns <= ?2 AND (time_ns < ?2 OR id < ?3)
                 ORDER BY time_ns DESC, id DESC LIMIT ?4"
            ),
            params![host, t, id, n],
            stored_event,
        )?;
        before.reverse();
        let this = self.timeline_event(id)?;
        let after = self.rows(
            &format!(
                "SELECT {ROW_COLS} FROM timeline WHERE host = ?1 AND time_ns >= ?2 AND (time_ns > ?2 OR id > ?3)
                 ORDER BY time_ns, id LIMIT ?4"
            ),
            params![host, t, id, n],
            stored_event,
        )?;
        before.extend(this);
        before.extend(after);
        Ok(before)
    }

    fn timeline_span(&self, f: &Filter) -> Result<Option<(i64, i64)>> {
        let (w, p) = where_clause(f, None);
        let (lo, hi): (Option<i64>, Option<i64>) = self.lock().query_row(
            &format!("SELECT MIN(time_ns), MAX(time_ns) FROM timeline {w}"),
            rusqlite::params_from_iter(p),
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        Ok(lo.zip(hi))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn db_with_events() -> (tempfile::TempDir, Sqlite) {
        let dir = tempfile::tempdir().unwrap();
        let db = Sqlite::open(&dir.path().join("t.db")).unwrap();
        let mut evs = Vec::new();
        for i in 0..250i64 {
            let mut e = Event::new(
                1_000 + i,
                if i % 2 == 0 { "ebpf" } else { "auth.log" },
                if i % 5 == 0 {
                    "ssh_login"
                } else {
                    "process_exec"
                },
                format!("event {i} 100%_done"),
            );
            e.user = Some(if i % 3 == 0 { "root" } else { "alice" }.into());
            e.container = (i % 10 == 0).then(|| "4c01db0b339cabcdef".to_string());
            e.dedup = i;
            evs.push(e);
        }
        db.insert_timeline("host-a", None, &evs[..200]).unwrap();
        db.insert_timeline("host-b", None, &evs[200..]).unwrap();
        // Inserting again changes nothing.
        assert_eq!(db.insert_timeline("host-a", None, &evs[..200]).unwrap(), 0);
        (dir, db)
    }

    #[test]
    fn histograms_count_every_matching_event_in_its_bucket() {
        let (_d, db) = db_with_events();
        let all = Filter::default();
        let h = db.timeline_histogram(&all, 1_000, 1_250, 10).unwrap();
        assert_eq!(h.bucket_ns, 25);
        assert_eq!(h.counts, vec![25; 10]);
        // Another condition: the same buckets, only what matches (every fifth is a login).
        let logins = Filter {
            kinds: vec!["ssh_login".into()],
            ..Filter::default()
        };
        let h = db.timeline_histogram(&logins, 1_000, 1_250, 10).unwrap();
        assert_eq!(h.counts, vec![5; 10]);
        // A narrower range than the histogram's: nothing outside it is counted.
        let late = Filter {
            from_ns: Some(1_200),
            ..Filter::default()
        };
        let h = db.timeline_histogram(&late, 1_000, 1_250, 10).unwrap();
        assert_eq!(h.counts.iter().sum::<u64>(), 50);
        assert_eq!(&h.counts[8..], &[25, 25]);
    }

    #[test]
    fn pages_follow_the_cursor_in_time_order() {
        let (_d, db) = db_with_events();
        let f = Filter::default();
        let mut seen = Vec::new();
        let mut cursor = None;
        loop {
            let (rows, next) = db.timeline_page(&f, cursor, 64).unwrap();
            seen.extend(rows.iter().map(|r| r.event.time_ns));
            match next {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        assert_eq!(seen.len(), 250);
        assert!(seen.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(
            Cursor::decode(&Cursor { time_ns: 5, id: 7 }.encode()),
            Some(Cursor { time_ns: 5, id: 7 })
        );
    }

    #[test]
    fn filters_and_facets_agree() {
        let (_d, db) = db_with_events();
        let f = Filter {
            host_ids: vec!["host-a".into()],
            kinds: vec!["ssh_login".into()],
            ..Default::default()
        };
        let (rows, _) = db.timeline_page(&f, None, 1000).unwrap();
        assert_eq!(rows.len(), 40);
        let fc = db.timeline_facets(&f).unwrap();
        assert_eq!(fc.total, 40);
        assert!(fc.exact);
        assert_eq!(fc.host, vec![("host-a".to_string(), 40)]);
        let root = fc.user.iter().find(|(u, _)| u == "root").unwrap().1;
        assert_eq!(
            root,
            rows.iter()
                .filter(|r| r.event.user.as_deref() == Some("root"))
                .count() as u64
        );
        // Container prefix (Falco's 12 characters) and free text with LIKE metacharacters.
        let f = Filter {
            container: Some("4c01db0b339c".into()),
            text: Some("0 100%_".into()),
            ..Default::default()
        };
        let (rows, _) = db.timeline_page(&f, None, 1000).unwrap();
        assert_eq!(rows.len(), 25);
        let f = Filter {
            text: Some("x%".into()),
            ..Default::default()
        };
        assert!(db.timeline_page(&f, None, 10).unwrap().0.is_empty());
    }

    #[test]
    fn inferred_times_are_stored_and_older_databases_gain_the_column() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        // A database from before the column.
        drop(Sqlite::open(&path).unwrap());
        Connection::open(&path)
            .unwrap()
            .execute_batch("ALTER TABLE timeline DROP COLUMN time_source")
            .unwrap();
        let db = Sqlite::open(&path).unwrap();
        let mut guessed =
            Event::new(5, "bash_history", "shell_command", "id").inferred("file_mtime");
        guessed.dedup = 1;
        let mut exact = Event::new(6, "bash_history", "shell_command", "ls");
        exact.dedup = 2;
        db.insert_timeline("h", None, &[guessed, exact]).unwrap();
        let (rows, _) = db.timeline_page(&Filter::default(), None, 10).unwrap();
        assert_eq!(rows[0].event.time_source.as_deref(), Some("file_mtime"));
        assert_eq!(rows[1].event.time_source, None);
        // As the API shows them.
        let json: Vec<Value> = rows
            .into_iter()
            .map(|r| serde_json::to_value(crate::timeline::query::Row::from(r)).unwrap())
            .collect();
        assert_eq!(json[0]["time_inferred"], true);
        assert_eq!(json[0]["time_source"], "file_mtime");
        assert_eq!(json[1]["time_inferred"], false);
        assert!(json[1].get("time_source").is_none());
    }
}
