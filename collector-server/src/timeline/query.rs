//! Timeline answers as the API and the CLI show them: rows with their time as text and
//! Timesketch's `timestamp_desc`, cursor pages in time order, facet counts.
//!
//! Rows come back ordered by `(time_ns, id)`; the cursor is the last row's pair, so a page is
//! stable while new events arrive. Facets count every matching row up to
//! [`crate::storage::timeline::FACET_SCAN_MAX`]; beyond that they are marked inexact.

use super::{Cursor, Facets, Filter};
use crate::error::Result;
use crate::storage::timeline::StoredEvent;
use crate::storage::MetadataStore;
use serde::Serialize;
use serde_json::{json, Map, Value};
use std::collections::HashMap;

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
    /// The time is a guess (a history line without a stamp dated by the file's mtime, a
    /// syslog line's year): shown as such everywhere.
    pub time_inferred: bool,
    /// What the guess was made from (`file_mtime`, `inferred_year`, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_source: Option<String>,
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

impl From<StoredEvent> for Row {
    fn from(s: StoredEvent) -> Row {
        let e = s.event;
        Row {
            id: s.id,
            time: cairn_protocol::rfc3339::from_unix_ns(i128::from(e.time_ns))
                .unwrap_or_else(|| e.time_ns.to_string()),
            time_ns: e.time_ns,
            host_id: s.host_id,
            timestamp_desc: super::timestamp_desc(&e.kind),
            time_inferred: e.time_inferred(),
            time_source: e.time_source,
            source: e.source,
            kind: e.kind,
            pid: e.pid,
            ppid: e.ppid,
            exe: e.exe,
            argv: e.argv,
            user: e.user,
            container: e.container,
            pod: e.pod,
            message: e.message,
            attrs: e.attrs,
            path: e.path,
            item_id: s.item_id,
        }
    }
}

/// A page of rows and the cursor for the next one (`None` at the end).
pub fn page(
    meta: &dyn MetadataStore,
    f: &Filter,
    after: Option<Cursor>,
    limit: u32,
) -> Result<(Vec<Row>, Option<Cursor>)> {
    let (rows, next) = meta.timeline_page(f, after, limit)?;
    Ok((rows.into_iter().map(Row::from).collect(), next))
}

pub fn facets(meta: &dyn MetadataStore, f: &Filter) -> Result<Facets> {
    Ok(meta.timeline_facets(f)?)
}

/// Facets as JSON: `{"host": [{"value": "...", "count": 3, "hostname": "..."}], ...}`.
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
