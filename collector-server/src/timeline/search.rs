//! A timeline search as people and tools write it (the API's query string, and what a saved
//! search stores), turned into a [`Filter`]: the saved search applied, hosts resolved by name,
//! times parsed.

use super::Filter;
use crate::error::{Error, Result};
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
            limit: self.limit.or(base.limit),
            cursor: self.cursor,
            facets: self.facets.or(base.facets),
            saved: self.saved,
            format: self.format.or(base.format),
        }
    }
}

/// An RFC 3339 parameter as UTC nanoseconds; the error names the parameter.
pub fn time_param(s: &str, what: &str) -> Result<i64> {
    cairn_protocol::rfc3339::parse(s)
        .map(|t| t.unix_timestamp_nanos() as i64)
        .map_err(|e| {
            Error::invalid(format!(
                "\"{what}\" must be RFC 3339 (2026-01-31T12:00:00Z): {e}"
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
    let f = Filter {
        host_ids,
        from_ns: p
            .from
            .as_deref()
            .map(|s| time_param(s, "from"))
            .transpose()?,
        to_ns: p.to.as_deref().map(|s| time_param(s, "to")).transpose()?,
        kinds: list(&p.kind),
        user: p.user.clone(),
        container: p.container.clone(),
        source: p.source.clone(),
        text: p.q.clone().filter(|q| !q.is_empty()),
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
