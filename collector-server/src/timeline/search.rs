//! A timeline search as people and tools write it (the API's query string, and what a saved
//! search stores), turned into a [`Filter`]: the saved search applied, hosts resolved by name,
//! times parsed.

use super::Filter;
use crate::error::{Error, Result};
use crate::storage::timeline::{Column, Cond, Match};
use crate::storage::MetadataStore;
use serde::{Deserialize, Serialize};

/// The query string (and what a saved search stores).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// Hosts, comma-separated: agent id, hostname, instance id or machine id. None: all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// Kinds, comma-separated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Free text in the message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub q: Option<String>,
    /// A query in the query language (`host:web-1 kind:process_exec -user:root`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// A relative range ending now: `15m`, `1h`, `24h`, `7d`. Kept relative when saved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<String>,
    /// `newest` (the default) or `oldest` first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    /// `false` to leave out facet counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub facets: Option<bool>,
    /// Start from a saved search; the other parameters override its fields.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub saved: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
}

impl Params {
    /// Fields of `self` override those of a saved search.
    fn over(self, base: Params) -> Params {
        Params {
            host: self.host.or(base.host),
            from: self.from.or(base.from),
            to: self.to.or(base.to),
            kind: self.kind.or(base.kind),
            user: self.user.or(base.user),
            container: self.container.or(base.container),
            source: self.source.or(base.source),
            q: self.q.or(base.q),
            query: self.query.or(base.query),
            last: self.last.or(base.last),
            order: self.order.or(base.order),
            limit: self.limit.or(base.limit),
            cursor: self.cursor,
            facets: self.facets.or(base.facets),
            saved: self.saved,
            format: self.format.or(base.format),
        }
    }
}

/// `15m`, `1h`, `24h`, `7d`, `90s` as nanoseconds.
pub fn duration_ns(s: &str) -> Option<i64> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit())?);
    let n: i64 = num.parse().ok()?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return None,
    };
    n.checked_mul(secs)?.checked_mul(1_000_000_000)
}

/// A time parameter as UTC nanoseconds: RFC 3339, or relative to now (`-1h`, `-15m`); the
/// error names the parameter.
pub fn time_param(s: &str, what: &str) -> Result<i64> {
    if let Some(ago) = s.trim().strip_prefix('-').and_then(duration_ns) {
        return Ok(time::OffsetDateTime::now_utc().unix_timestamp_nanos() as i64 - ago);
    }
    cairn_protocol::rfc3339::parse(s)
        .map(|t| t.unix_timestamp_nanos() as i64)
        .map_err(|e| {
            Error::invalid(format!(
                "\"{what}\" must be RFC 3339 (2026-01-31T12:00:00Z) or relative to now (-1h, -15m, -7d): {e}"
            ))
        })
}

fn list(s: &Option<String>) -> Vec<String> {
    s.as_deref()
        .map(|s| {
            s.split(',')
                .map(|x| x.trim().to_string())
                .filter(|x| !x.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

/// Saved search applied, hosts resolved, times parsed.
pub fn resolve(meta: &dyn MetadataStore, p: Params) -> Result<(Params, Filter)> {
    let p = match &p.saved {
        Some(name) => {
            let saved = meta
                .saved_search(name)?
                .ok_or_else(|| Error::not_found(format!("no saved search {name:?}")))?;
            let base: Params = serde_json::from_value(saved).map_err(|e| {
                Error::Internal(format!("saved search {name:?} no longer reads: {e}"))
            })?;
            p.over(base)
        }
        None => p,
    };
    let mut host_ids = Vec::new();
    for h in list(&p.host) {
        let found = meta.find_hosts(&h)?;
        if found.is_empty() {
            return Err(Error::not_found(format!(
                "no host matches {h:?} (looked for an agent id, hostname, cloud instance id or machine id)"
            )));
        }
        host_ids.extend(found.into_iter().map(|h| h.id));
    }
    let kinds = list(&p.kind);
    for k in &kinds {
        if !super::ql::KINDS.contains(&k.as_str()) {
            return Err(Error::invalid(format!(
                "unknown kind {k:?}; kinds: {}",
                super::ql::KINDS.join(", ")
            )));
        }
    }
    if let Some(src) = &p.source {
        if !super::ql::SOURCES.contains(&src.as_str()) {
            return Err(Error::invalid(format!(
                "unknown source {src:?}; sources: {}",
                super::ql::SOURCES.join(", ")
            )));
        }
    }
    let mut from_ns = p
        .from
        .as_deref()
        .map(|s| time_param(s, "from"))
        .transpose()?;
    if let Some(last) = &p.last {
        let ago = duration_ns(last).ok_or_else(|| {
            Error::invalid(format!(
                "\"last\" {last:?} is not a duration: 15m, 1h, 24h, 7d"
            ))
        })?;
        from_ns = Some(time::OffsetDateTime::now_utc().unix_timestamp_nanos() as i64 - ago);
    }
    let mut conds = Vec::new();
    if let Some(q) = p.query.as_deref().filter(|q| !q.trim().is_empty()) {
        let parsed = super::ql::parse(q).map_err(|e| Error::invalid(e.to_string()))?;
        let mut missing = None;
        let resolved = super::ql::resolve_hosts(parsed, &mut |name| {
            let mut ids: Vec<String> = meta
                .find_hosts(name)
                .map(|hs| hs.into_iter().map(|h| h.id).collect())
                .unwrap_or_default();
            if ids.is_empty() && name.len() >= crate::hosts::MIN_PREFIX {
                ids = meta
                    .hosts_with_id_prefix(name, 10)
                    .map(|hs| hs.into_iter().map(|h| h.id).collect())
                    .unwrap_or_default();
            }
            if ids.is_empty() && missing.is_none() {
                missing = Some(name.to_string());
            }
            ids
        });
        if let Some(name) = missing {
            return Err(Error::not_found(format!(
                "query: no host matches {name:?} (looked for an agent id or id prefix, hostname, cloud instance id or machine id)"
            )));
        }
        conds.push(resolved);
    }
    // Sensor events carry uids, logs carry names: root is both.
    let mut user = p.user.clone();
    if matches!(user.as_deref(), Some("root" | "0")) {
        user = None;
        conds.push(Cond::Is(
            Column::User,
            Match::OneOf(vec!["root".into(), "0".into()]),
        ));
    }
    let newest_first = match p.order.as_deref() {
        None | Some("newest") => true,
        Some("oldest") => false,
        Some(other) => {
            return Err(Error::invalid(format!(
                "\"order\" {other:?} is not newest or oldest"
            )))
        }
    };
    let f = Filter {
        host_ids,
        from_ns,
        to_ns: p.to.as_deref().map(|s| time_param(s, "to")).transpose()?,
        kinds,
        user,
        container: p.container.clone(),
        source: p.source.clone(),
        text: p.q.clone().filter(|q| !q.is_empty()),
        cond: match conds.len() {
            0 => None,
            1 => conds.pop(),
            _ => Some(Cond::All(conds)),
        },
        newest_first,
    };
    Ok((p, f))
}

/// Store a search under a name, checked now so that a saved search always runs.
pub fn save(
    meta: &dyn MetadataStore,
    name: &str,
    query: Params,
    by: &str,
) -> Result<serde_json::Value> {
    if name.trim().is_empty() || name.len() > 200 {
        return Err(Error::invalid(
            "malformed JSON request: field \"name\": must be 1-200 characters",
        ));
    }
    let mut q = query;
    q.cursor = None;
    q.saved = None;
    resolve(meta, q.clone())?;
    let v = serde_json::to_value(&q).map_err(|e| Error::Internal(e.to_string()))?;
    meta.save_search(name, &v, by)?;
    Ok(v)
}

/// Rename a saved search; the new name follows the rules of [`save`].
pub fn rename(meta: &dyn MetadataStore, from: &str, to: &str) -> Result<()> {
    if to.trim().is_empty() || to.len() > 200 {
        return Err(Error::invalid("a saved search's name is 1-200 characters"));
    }
    if !meta.rename_saved_search(from, to)? {
        return Err(Error::not_found(format!("no saved search {from:?}")));
    }
    Ok(())
}
