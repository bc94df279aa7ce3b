//! Naming a host: wherever a person or a tool names one (an agent id, hostname, cloud instance
//! id or machine id), it must name exactly one.

use crate::error::{Error, Result};
use crate::storage::{HostRow, MetadataStore};

/// Shortest id prefix taken for a host, collection or item: 6 characters name one among
/// millions of UUIDs without being guessable as a word.
pub const MIN_PREFIX: usize = 6;

/// The one host `query` names: an agent id (or a prefix of one, at least [`MIN_PREFIX`]
/// characters), a hostname, a cloud instance id or a machine id. Retired hosts are named only
/// by their full id.
pub fn resolve(meta: &dyn MetadataStore, query: &str) -> Result<HostRow> {
    let mut hosts = meta.find_hosts(query)?;
    if hosts.is_empty() && query.len() >= MIN_PREFIX {
        hosts = meta.hosts_with_id_prefix(query, 10)?;
    }
    match hosts.as_slice() {
        [h] => Ok(h.clone()),
        [] => Err(Error::not_found(format!(
            "no host matches {query:?} (looked for an agent id or id prefix, hostname, cloud instance id or machine id; `cairn hosts` lists them)"
        ))),
        many => Err(Error::conflict(format!(
            "{query:?} matches {} hosts ({}); use an agent id",
            many.len(),
            many.iter()
                .map(|h| h.id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// The one id among those starting with `prefix` (`what`: "collection", "item"): an exact id
/// wins; a prefix of at least [`MIN_PREFIX`] characters must name exactly one.
pub fn one_id(what: &str, query: &str, exact: bool, found: Vec<String>) -> Result<String> {
    if exact {
        return Ok(query.to_string());
    }
    if query.len() < MIN_PREFIX {
        return Err(Error::not_found(format!(
            "no {what} {query:?} (an id prefix needs at least {MIN_PREFIX} characters)"
        )));
    }
    match found.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(Error::not_found(format!("no {what} {query:?}"))),
        many => Err(Error::conflict(format!(
            "{query:?} is the start of {} {what} ids ({}…); give more of it",
            many.len(),
            many.iter()
                .take(3)
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}
