//! Naming a host: wherever a person or a tool names one (an agent id, hostname, cloud instance
//! id or machine id), it must name exactly one.

use crate::error::{Error, Result};
use crate::storage::{HostRow, MetadataStore};

/// The one host `query` names.
pub fn resolve(meta: &dyn MetadataStore, query: &str) -> Result<HostRow> {
    let hosts = meta.find_hosts(query)?;
    match hosts.as_slice() {
        [h] => Ok(h.clone()),
        [] => Err(Error::not_found(format!(
            "no host matches {query:?} (looked for an agent id, hostname, cloud instance id or machine id)"
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
