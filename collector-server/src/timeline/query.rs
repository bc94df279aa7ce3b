//! Timeline queries: filters, cursor paging in time order, facet counts in the same answer.
//!
//! Rows come back ordered by `(time_ns, id)`; the cursor is the last row's pair, so a page is
//! stable while new events arrive. Facets (host, kind, user, container, source) count every
//! row that matches, in one pass, up to [`FACET_SCAN_MAX`] rows; beyond that the counts are
//! marked inexact rather than making the answer slow.

use crate::db::Db;
use anyhow::Result;
use rusqlite::types::Value as Sql;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::collections::HashMap;

/// Most rows counted for facets in one query.
pub const FACET_SCAN_MAX: u64 = 1_000_000;

/// What to look for. Hosts are agent ids (the API resolves names first).
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

/// One stored event, as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub id: i64,
    pub time: String,
    pub time_ns: i64,
    pub host_id: String,
    pub source: String,
    pub kind: String,
    pub timestamp_desc: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ppid: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exe: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub argv: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    pub message: String,
    #[serde(skip_serializing_if = "Map::is_empty")]
    pub attrs: Map<String, Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub item_id: Option<String>,
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
        w.push(format!("user = {}", bind(&mut p, Sql::Text(u.clone()))));
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
    if let Some(c) = after {
        let t = bind(&mut p, Sql::Integer(c.time_ns));
        let id = bind(&mut p, Sql::Integer(c.id));
        w.push(format!("time_ns >= {t} AND (time_ns > {t} OR id > {id})"));
    }
    let sql = if w.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", w.join(" AND "))
    };
    (sql, p)
}

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
    let kind: String = r.get(4)?;
    let argv: Option<String> = r.get(8)?;
    let attrs: Option<String> = r.get(13)?;
    let time_ns: i64 = r.get(1)?;
    Ok(Row {
        id: r.get(0)?,
        time: super::rfc3339_ns(time_ns),
        time_ns,
        host_id: r.get(2)?,
        source: r.get(3)?,
        timestamp_desc: super::timestamp_desc(&kind),
        kind,
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
        item_id: r.get(15)?,
    })
}

/// A page of events and the cursor for the next one (`None` at the end).
pub fn page(
    db: &Db,
    f: &Filter,
    after: Option<Cursor>,
    limit: u32,
) -> Result<(Vec<Row>, Option<Cursor>)> {
    let (w, mut p) = where_clause(f, after);
    p.push(Sql::Integer(i64::from(limit) + 1));
    let sql = format!(
        "SELECT id, time_ns, (SELECT host_id FROM timeline_hosts WHERE n = host), source, kind, pid, ppid, exe, argv, user, container, pod, message, attrs, path, item_id
         FROM timeline {w} ORDER BY time_ns, id LIMIT ?{}",
        p.len()
    );
    let conn = db.lock();
    let mut st = conn.prepare_cached(&sql)?;
    let mut rows = st
        .query_map(rusqlite::params_from_iter(p), row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let next = if rows.len() > limit as usize {
        rows.truncate(limit as usize);
        rows.last().map(|r| Cursor {
            time_ns: r.time_ns,
            id: r.id,
        })
    } else {
        None
    };
    Ok((rows, next))
}

/// Counts by host, kind, user, container and source over everything the filter matches.
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
}

/// Most values listed per facet.
const FACET_TOP: usize = 20;

pub fn facets(db: &Db, f: &Filter) -> Result<Facets> {
    let (w, p) = where_clause(f, None);
    let sql = format!(
        "SELECT host, kind, user, container, source FROM timeline {w} LIMIT {}",
        FACET_SCAN_MAX + 1
    );
    let conn = db.lock();
    let host_ids: HashMap<i64, String> = conn
        .prepare_cached("SELECT n, host_id FROM timeline_hosts")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let mut hosts: HashMap<i64, u64> = HashMap::new();
    let mut st = conn.prepare_cached(&sql)?;
    let mut rows = st.query(rusqlite::params_from_iter(p))?;
    let mut counts: [HashMap<String, u64>; 4] = Default::default();
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
    let [kind, user, container, source] = counts;
    Ok(Facets {
        exact: total < FACET_SCAN_MAX,
        total,
        host: top(host),
        kind: top(kind),
        user: top(user),
        container: top(container),
        source: top(source),
    })
}

/// Facets as JSON: `{"host": [{"value": "...", "count": 3}], ...}`.
pub fn facets_json(f: &Facets, hostnames: &HashMap<String, String>) -> Value {
    let list = |v: &[(String, u64)], names: Option<&HashMap<String, String>>| -> Value {
        Value::Array(
            v.iter()
                .map(|(val, n)| {
                    let mut o = json!({"value": val, "count": n});
                    if let Some(name) = names.and_then(|m| m.get(val)) {
                        o["hostname"] = json!(name);
                    }
                    o
                })
                .collect(),
        )
    };
    json!({
        "total": f.total, "exact": f.exact,
        "host": list(&f.host, Some(hostnames)), "kind": list(&f.kind, None),
        "user": list(&f.user, None), "container": list(&f.container, None),
        "source": list(&f.source, None),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::super::Event;
    use super::*;

    fn db_with_events() -> (tempfile::TempDir, Db) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::create(&dir.path().join("t.db")).unwrap();
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
    fn pages_follow_the_cursor_in_time_order() {
        let (_d, db) = db_with_events();
        let f = Filter::default();
        let mut seen = Vec::new();
        let mut cursor = None;
        loop {
            let (rows, next) = page(&db, &f, cursor, 64).unwrap();
            seen.extend(rows.iter().map(|r| r.time_ns));
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
        let (rows, _) = page(&db, &f, None, 1000).unwrap();
        assert_eq!(rows.len(), 40);
        let fc = facets(&db, &f).unwrap();
        assert_eq!(fc.total, 40);
        assert!(fc.exact);
        assert_eq!(fc.host, vec![("host-a".to_string(), 40)]);
        let root = fc.user.iter().find(|(u, _)| u == "root").unwrap().1;
        assert_eq!(
            root,
            rows.iter()
                .filter(|r| r.user.as_deref() == Some("root"))
                .count() as u64
        );
        // Container prefix (Falco's 12 characters) and free text with LIKE metacharacters.
        let f = Filter {
            container: Some("4c01db0b339c".into()),
            text: Some("0 100%_".into()),
            ..Default::default()
        };
        let (rows, _) = page(&db, &f, None, 1000).unwrap();
        assert_eq!(rows.len(), 25);
        let f = Filter {
            text: Some("x%".into()),
            ..Default::default()
        };
        assert!(page(&db, &f, None, 10).unwrap().0.is_empty());
    }
}
