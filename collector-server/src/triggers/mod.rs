//! Triggers: detection systems start collections themselves.
//!
//! An alert body is read into one [`Alert`] ([`parse`]: a plain request, a GuardDuty finding,
//! a Falco alert), its host found from what agents report ([`resolve`]), its profile picked and
//! alert storms kept to one collection ([`policy`]). The collection itself starts through the
//! same path as any other (`collections`); what a `[[containment]]` rule adds after it runs
//! step by step ([`sequence`]). Nothing here speaks HTTP.

pub mod parse;
pub mod policy;
pub mod priority;
pub mod resolve;
pub mod sequence;

pub use parse::Alert;
pub use policy::TriggerConfig;

use crate::error::{Error, Result};
use crate::storage::HostRow;
use policy::{Admit, StormGuard};

/// The trigger configuration and the storm guard's memory.
pub struct Triggers {
    pub config: TriggerConfig,
    guard: StormGuard,
}

/// What to do about one alert.
#[derive(Debug)]
pub struct Decision {
    pub host: HostRow,
    /// Which lookup found the host, in words.
    pub matched_by: String,
    /// The full container id when the alert named a container or pod.
    pub container_id: Option<String>,
    pub profile: String,
    /// Why the profile is not the one the mapping named, when it is not.
    pub profile_note: Option<String>,
    /// `Some(existing collection)` when the alert repeats one inside the dedup window.
    pub duplicate_of: Option<String>,
    /// The alert's severity raised by what is known of the host, and why.
    pub priority: priority::Prioritised,
}

impl Triggers {
    pub fn new(config: TriggerConfig) -> Triggers {
        Triggers {
            config,
            guard: StormGuard::default(),
        }
    }

    /// An alert body in one of the formats (`generic`, `guardduty`, `falco`).
    pub fn read(format: &str, body: &[u8]) -> Result<Alert> {
        let alert = match format {
            "generic" => parse::generic(body),
            "guardduty" => parse::guardduty(body),
            "falco" => parse::falco(body),
            other => {
                return Err(Error::not_found(format!(
                    "no trigger format {other:?}; use generic, guardduty or falco"
                )))
            }
        };
        alert.map_err(|e| Error::invalid(e.to_string()))
    }

    /// Host, priority, profile and storm guard for an alert; reserves the guard's slot for
    /// `collection_id` when the collection is to start. `context` says what is known of the
    /// host the alert resolved to (its outlier score, its readiness).
    pub fn decide(
        &self,
        alert: &Alert,
        hosts: &[HostRow],
        collection_id: &str,
        context: &dyn Fn(&HostRow) -> priority::HostContext,
    ) -> Result<Decision> {
        let cfg = &self.config;
        let (host, matched_by, container_id) = resolve::resolve(hosts, &alert.lookups)?;
        let priority = priority::prioritise(&alert.severity, &context(&host));
        let (profile, profile_note) = cfg.profile_for(alert, priority.priority);
        if !crate::collections::PROFILES.contains(&profile.as_str()) {
            return Err(Error::invalid(format!(
                "malformed JSON: field \"profile\": unknown profile {profile:?}; profiles: {}",
                crate::collections::PROFILES.join(", ")
            )));
        }
        if profile == "file" && alert.paths.is_empty() {
            return Err(Error::invalid(
                "malformed JSON: field \"paths\": profile \"file\" needs at least one path",
            ));
        }
        if profile == "memory" && alert.pid.is_none() && !alert.names_container() {
            return Err(Error::invalid(
                "malformed JSON: field \"pid\": profile \"memory\" needs \"pid\" or a container (\"container_id\", \"pod\")",
            ));
        }
        cfg.policy
            .check(&profile, alert.paths.len(), 0)
            .map_err(Error::Forbidden)?;
        crate::collections::check_paths(&alert.paths, &[])?;
        let duplicate_of = match self
            .guard
            .admit(cfg, &alert.dedup_key, &host.id, collection_id)
        {
            Admit::Duplicate(existing) => Some(existing),
            Admit::RateLimited(n) => {
                return Err(Error::RateLimited(format!(
                    "host {} ({}) already had {n} triggered collections in the last {} s (rate_limit_per_host in triggers.toml)",
                    host.id, host.hostname, cfg.rate_window_secs
                )))
            }
            Admit::Start => None,
        };
        Ok(Decision {
            host,
            matched_by,
            container_id,
            profile,
            profile_note,
            duplicate_of,
            priority,
        })
    }

    /// A trigger token's own `POST /api/v1/collections`: the same policy and per-host budget
    /// as an alert.
    pub fn admit_collection(&self, ask: &crate::collections::Ask, host: &HostRow) -> Result<()> {
        let cfg = &self.config;
        cfg.policy
            .check(&ask.profile, ask.paths.len(), ask.devices.len())
            .map_err(Error::Forbidden)?;
        match self.guard.admit_host(cfg, &host.id) {
            Admit::RateLimited(n) => Err(Error::RateLimited(format!(
                "host {} ({}) already had {n} triggered collections in the last {} s (rate_limit_per_host in triggers.toml)",
                host.id, host.hostname, cfg.rate_window_secs
            ))),
            _ => Ok(()),
        }
    }

    /// One request of a trigger token, against `[policy] requests_per_minute`.
    pub fn admit_request(&self, token_name: &str) -> Result<()> {
        if self.guard.admit_request(&self.config, token_name) {
            Ok(())
        } else {
            Err(Error::RateLimited(format!(
                "trigger token {token_name:?} made more than {} requests in the last minute ([policy] requests_per_minute in triggers.toml)",
                self.config.policy.requests_per_minute
            )))
        }
    }
}
