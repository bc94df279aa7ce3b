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
    /// The process to capture: the alert's own, or (for a mapped `memory`) the one fleet
    /// context says makes the host odd.
    pub pid: Option<u32>,
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
        let ctx = context(&host);
        let priority = priority::prioritise(&alert.severity, &ctx);
        let (mut profile, mut profile_note) = cfg.profile_for(alert, priority.priority);
        let mut pid = alert.pid;
        // The mapping says memory and the alert names no process, but fleet context knows
        // the process that makes this host odd: capture that one rather than falling back.
        if let Some((suspect, why)) = &ctx.suspect {
            let fell_back = alert.profile.is_none()
                && profile == "triage"
                && profile_note.is_some()
                && cfg.mapped_profile(alert, priority.priority) == "memory";
            if fell_back {
                profile = "memory".into();
                pid = Some(*suspect);
                profile_note = Some(format!(
                    "the alert names no process: memory of {why}, what makes the host an outlier among its peers"
                ));
            }
        }
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
        if profile == "memory" && pid.is_none() && !alert.names_container() {
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
            pid,
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::parse::Lookup;
    use super::*;
    use crate::storage::HostOrigin;

    fn host(id: &str, instance: &str) -> HostRow {
        HostRow {
            id: id.into(),
            hostname: format!("web-{id}"),
            machine_id: None,
            instance_id: Some(instance.into()),
            kernel: None,
            agent_version: None,
            enrolled_at: String::new(),
            last_seen: None,
            origin: HostOrigin::Enrolled,
            status: None,
            readiness: Some("pass".into()),
            readiness_since: None,
            readiness_at: None,
            retired_at: None,
            retired_reason: None,
            identity: None,
        }
    }

    fn finding(instance: &str, key: &str) -> Alert {
        Alert {
            source: "guardduty",
            rule: "UnauthorizedAccess:EC2/TorClient".into(),
            severity: "low".into(),
            reason: "gd".into(),
            dedup_key: key.into(),
            lookups: vec![Lookup::InstanceId(instance.into())],
            profile: None,
            pid: None,
            container_id: None,
            paths: Vec::new(),
        }
    }

    #[test]
    fn a_low_finding_captures_the_outliers_odd_process_and_only_volatile_on_a_peer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("triggers.toml");
        std::fs::write(
            &path,
            "[priority]\nlow = \"volatile\"\nmedium = \"memory\"\nhigh = \"memory\"\n",
        )
        .unwrap();
        let t = Triggers::new(TriggerConfig::load(&path).unwrap());
        let hosts = vec![host("odd", "i-1"), host("peer", "i-2")];
        let context = |h: &HostRow| {
            if h.id == "odd" {
                priority::HostContext {
                    score: Some(2.48),
                    outlier: true,
                    features: 4,
                    reasons: vec!["only web-odd of 12 in asg web ran /tmp/.x/payload".into()],
                    readiness: h.readiness.clone(),
                    suspect: Some((4242, "pid 4242 (/tmp/.x/payload)".into())),
                }
            } else {
                priority::HostContext {
                    score: Some(0.0),
                    features: 3,
                    readiness: h.readiness.clone(),
                    ..Default::default()
                }
            }
        };
        let odd = t
            .decide(&finding("i-1", "f-1"), &hosts, "c-1", &context)
            .unwrap();
        assert_eq!(odd.priority.priority, priority::Priority::Medium);
        assert_eq!((odd.profile.as_str(), odd.pid), ("memory", Some(4242)));
        assert!(
            odd.profile_note.as_deref().unwrap().contains("pid 4242"),
            "{:?}",
            odd.profile_note
        );
        let peer = t
            .decide(&finding("i-2", "f-2"), &hosts, "c-2", &context)
            .unwrap();
        assert_eq!(peer.priority.priority, priority::Priority::Low);
        assert_eq!((peer.profile.as_str(), peer.pid), ("volatile", None));
        // An outlier with no process behind its oddity: memory falls back to triage, as before.
        let no_suspect = |h: &HostRow| priority::HostContext {
            suspect: None,
            ..context(h)
        };
        let d = t
            .decide(&finding("i-1", "f-3"), &hosts, "c-3", &no_suspect)
            .unwrap();
        assert_eq!((d.profile.as_str(), d.pid), ("triage", None));
    }
}
