//! Which profile an alert gets, and how alert storms are kept to one collection.
//!
//! The mapping is read from `DATA/triggers.toml` when present (every key optional). A trigger
//! is a machine holding a token that may leak, so what it may start is bounded by
//! `[policy]`: by default `volatile`, `memory` (of a named process or container) and `triage`,
//! no file paths, no devices, a request budget per token and a collection budget per host.
//! The default mapping stays inside that: serious findings get the memory of the process or
//! container they name (a triage when they name none), the rest a triage. Dedup and rate limits
//! are kept in memory: a restart forgets them, which at worst starts one more collection.

use super::parse::Alert;
use anyhow::{Context, Result};
use cairn_protocol::manifest::PROFILES;
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Severity or rule → profile for one alert source. In `triggers.toml` every key is optional
/// and what is given is laid over the defaults.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Mapping {
    /// Severity (GuardDuty band, Falco priority, or a plain request's `severity`) → profile.
    pub severity: BTreeMap<String, String>,
    /// Finding-type or rule prefix → profile; the longest matching prefix wins over severity.
    pub rules: BTreeMap<String, String>,
    /// When nothing else matches.
    pub default: String,
}

impl Mapping {
    fn over(mut self, given: Mapping) -> Mapping {
        self.severity.extend(
            given
                .severity
                .into_iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v)),
        );
        self.rules.extend(given.rules);
        if !given.default.is_empty() {
            self.default = given.default;
        }
        self
    }
}

/// What the trigger role, and every alert posted to `/api/v1/triggers/*`, may start.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Policy {
    /// Profiles a trigger may start. `memory` also needs a named pid or container.
    pub allowed_profiles: Vec<String>,
    /// Whether a trigger may name files (`paths`).
    pub allow_paths: bool,
    /// Whether a trigger may name block devices to image.
    pub allow_devices: bool,
    /// Requests per minute per trigger token, on every endpoint it can call.
    pub requests_per_minute: u32,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            allowed_profiles: vec!["volatile".into(), "memory".into(), "triage".into()],
            allow_paths: false,
            allow_devices: false,
            requests_per_minute: 120,
        }
    }
}

impl Policy {
    /// Whether a trigger may start this; the refusal says why and what to configure.
    pub fn check(&self, profile: &str, paths: usize, devices: usize) -> Result<(), String> {
        if !self.allowed_profiles.iter().any(|p| p == profile) {
            return Err(format!(
                "profile {profile:?} is not allowed for triggers (allowed: {}); an operator can allow it in [policy] allowed_profiles of triggers.toml",
                self.allowed_profiles.join(", ")
            ));
        }
        if paths > 0 && !self.allow_paths {
            return Err("triggers may not name files; an operator can allow it with [policy] allow_paths = true in triggers.toml".into());
        }
        if devices > 0 && !self.allow_devices {
            return Err("triggers may not name block devices; an operator can allow it with [policy] allow_devices = true in triggers.toml".into());
        }
        Ok(())
    }
}

/// Steps a `[[containment]]` rule may add after an alert's collection, beside profiles.
pub const CONTAINMENT_STEPS: &[&str] = &[
    "isolate",
    "isolate_container",
    "freeze_container",
    // Mark the host (or the alert's container) for a last-breath collection.
    "mark_last_breath",
    "mark_last_breath_container",
];
/// Most steps one rule may add.
pub const MAX_STEPS: usize = 8;

/// `[[containment]]` in `triggers.toml`: what follows the collection an alert starts, in
/// order (`then = ["isolate", "memory"]`: isolate the host once the first collection is
/// finished, then collect memory). Only these rules contain anything on a trigger's behalf.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ContainmentRule {
    /// `guardduty`, `falco` or `generic`; any when absent.
    #[serde(default)]
    pub source: Option<String>,
    /// The alert's severity is one of these (lower case, as in the mappings).
    #[serde(default)]
    pub severity: Vec<String>,
    /// Or its finding type or rule starts with this.
    #[serde(default)]
    pub rule: Option<String>,
    /// Profiles and containment steps (`isolate`, `isolate_container`, `freeze_container`,
    /// `mark_last_breath`, `mark_last_breath_container`).
    pub then: Vec<String>,
}

impl ContainmentRule {
    fn matches(&self, a: &Alert) -> bool {
        self.source.as_deref().is_none_or(|s| s == a.source)
            && (self
                .severity
                .iter()
                .any(|s| s.eq_ignore_ascii_case(&a.severity))
                || self.rule.as_deref().is_some_and(|r| a.rule.starts_with(r)))
    }
}

/// `triggers.toml` as written: every key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct ConfigFile {
    dedup_window_secs: Option<u64>,
    rate_limit_per_host: Option<u32>,
    rate_window_secs: Option<u64>,
    policy: Option<Policy>,
    guardduty: Mapping,
    falco: Mapping,
    generic: Mapping,
    containment: Vec<ContainmentRule>,
    priority: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TriggerConfig {
    /// Alerts with the same key (GuardDuty finding id; Falco rule + host + container; a plain
    /// request's `dedup_key`) within this many seconds start one collection.
    pub dedup_window_secs: u64,
    /// At most this many triggered collections per host per `rate_window_secs`.
    pub rate_limit_per_host: u32,
    pub rate_window_secs: u64,
    pub policy: Policy,
    pub guardduty: Mapping,
    pub falco: Mapping,
    pub generic: Mapping,
    /// What follows an alert's collection; none by default: nothing is contained unless a
    /// rule says so.
    pub containment: Vec<ContainmentRule>,
    /// `[priority]`: priority (`low`…`critical`, the alert's severity raised by fleet context)
    /// → profile. When set, it is used before the severity mapping (a rule prefix still wins).
    pub priority: BTreeMap<String, String>,
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// GuardDuty's and plain triggers' default: their severity names the profile.
fn by_severity() -> Mapping {
    Mapping {
        severity: map(&[
            ("critical", "memory"),
            ("high", "memory"),
            ("medium", "memory"),
            ("low", "triage"),
        ]),
        rules: BTreeMap::new(),
        default: "triage".into(),
    }
}

impl Default for TriggerConfig {
    fn default() -> Self {
        TriggerConfig {
            dedup_window_secs: 900,
            rate_limit_per_host: 6,
            rate_window_secs: 3600,
            policy: Policy::default(),
            guardduty: by_severity(),
            falco: Mapping {
                severity: map(&[
                    ("emergency", "memory"),
                    ("alert", "memory"),
                    ("critical", "memory"),
                    ("error", "memory"),
                    ("warning", "triage"),
                    ("notice", "volatile"),
                    ("informational", "volatile"),
                    ("debug", "volatile"),
                ]),
                rules: BTreeMap::new(),
                default: "triage".into(),
            },
            generic: by_severity(),
            containment: Vec::new(),
            priority: BTreeMap::new(),
        }
    }
}

impl TriggerConfig {
    /// `DATA/triggers.toml`, or the defaults when it does not exist.
    pub fn load(path: &Path) -> Result<TriggerConfig> {
        let file: ConfigFile = match std::fs::read_to_string(path) {
            Ok(text) => toml::from_str(&text).with_context(|| {
                format!("{} is not a valid trigger configuration", path.display())
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => ConfigFile::default(),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let d = TriggerConfig::default();
        let cfg = TriggerConfig {
            dedup_window_secs: file.dedup_window_secs.unwrap_or(d.dedup_window_secs),
            rate_limit_per_host: file.rate_limit_per_host.unwrap_or(d.rate_limit_per_host),
            rate_window_secs: file.rate_window_secs.unwrap_or(d.rate_window_secs),
            policy: file.policy.unwrap_or(d.policy),
            guardduty: d.guardduty.over(file.guardduty),
            falco: d.falco.over(file.falco),
            generic: d.generic.over(file.generic),
            containment: file.containment,
            priority: file
                .priority
                .into_iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v))
                .collect(),
        };
        for (k, p) in &cfg.priority {
            if !["low", "medium", "high", "critical"].contains(&k.as_str()) {
                anyhow::bail!(
                    "{}: [priority] {k:?} is not a priority (low, medium, high, critical)",
                    path.display()
                );
            }
            if !PROFILES.contains(&p.as_str()) || !cfg.policy.allowed_profiles.contains(p) {
                anyhow::bail!(
                    "{}: [priority] {k} maps to profile {p:?}, which is unknown or not in [policy] allowed_profiles ({})",
                    path.display(),
                    cfg.policy.allowed_profiles.join(", ")
                );
            }
        }
        for (i, r) in cfg.containment.iter().enumerate() {
            let at = format!("{}: [[containment]] #{}", path.display(), i + 1);
            if r.severity.is_empty() && r.rule.is_none() {
                anyhow::bail!(
                    "{at} names neither a severity nor a rule: it would contain on every alert"
                );
            }
            if let Some(s) = &r.source {
                if !["guardduty", "falco", "generic"].contains(&s.as_str()) {
                    anyhow::bail!("{at}: source {s:?} is not guardduty, falco or generic");
                }
            }
            if r.then.is_empty() || r.then.len() > MAX_STEPS {
                anyhow::bail!("{at}: then needs 1 to {MAX_STEPS} steps");
            }
            for step in &r.then {
                let known = CONTAINMENT_STEPS.contains(&step.as_str())
                    || cfg.policy.allowed_profiles.contains(step);
                if !known {
                    anyhow::bail!(
                        "{at}: step {step:?} is neither a containment step ({}) nor a profile [policy] allowed_profiles allows ({})",
                        CONTAINMENT_STEPS.join(", "),
                        cfg.policy.allowed_profiles.join(", ")
                    );
                }
            }
        }
        for (name, m) in [
            ("guardduty", &cfg.guardduty),
            ("falco", &cfg.falco),
            ("generic", &cfg.generic),
        ] {
            for p in m
                .severity
                .values()
                .chain(m.rules.values())
                .chain([&m.default])
            {
                if !PROFILES.contains(&p.as_str()) {
                    anyhow::bail!(
                        "{}: [{name}] maps to unknown profile {p:?}; profiles: {}",
                        path.display(),
                        PROFILES.join(", ")
                    );
                }
                if !cfg.policy.allowed_profiles.contains(p) {
                    anyhow::bail!(
                        "{}: [{name}] maps to profile {p:?}, which [policy] allowed_profiles ({}) does not allow",
                        path.display(),
                        cfg.policy.allowed_profiles.join(", ")
                    );
                }
            }
        }
        Ok(cfg)
    }

    /// The profile for an alert and, when the mapping's choice could not be kept, why: its own
    /// (plain requests), else the longest rule prefix, else its severity, else the default. A
    /// mapped `memory` for an alert that names no process or container becomes `triage`.
    pub fn profile_for(
        &self,
        a: &Alert,
        priority: super::priority::Priority,
    ) -> (String, Option<String>) {
        if let Some(p) = &a.profile {
            return (p.clone(), None);
        }
        let mapped = self.mapped_profile(a, priority);
        if mapped == "memory" && a.pid.is_none() && a.container_id.is_none() && !a.names_container()
        {
            return (
                "triage".into(),
                Some("the mapping says memory, but the alert names no process or container: triage instead".into()),
            );
        }
        (mapped, None)
    }

    /// The steps after an alert's collection: the first `[[containment]]` rule that matches.
    pub fn then_for(&self, a: &Alert) -> Vec<String> {
        self.containment
            .iter()
            .find(|r| r.matches(a))
            .map(|r| r.then.clone())
            .unwrap_or_default()
    }

    pub(crate) fn mapped_profile(&self, a: &Alert, priority: super::priority::Priority) -> String {
        let m = match a.source {
            "guardduty" => &self.guardduty,
            "falco" => &self.falco,
            _ => &self.generic,
        };
        m.rules
            .iter()
            .filter(|(prefix, _)| a.rule.starts_with(prefix.as_str()))
            .max_by_key(|(prefix, _)| prefix.len())
            .map(|(_, p)| p)
            .or_else(|| self.priority.get(priority.as_str()))
            .or_else(|| m.severity.get(&a.severity))
            .unwrap_or(&m.default)
            .clone()
    }
}

/// What the storm guard decided.
#[derive(Debug, PartialEq, Eq)]
pub enum Admit {
    Start,
    /// The same alert started this collection within the window.
    Duplicate(String),
    /// The host had this many triggered collections in the window.
    RateLimited(u32),
}

/// Dedup keys, per-host trigger times and per-token request times.
#[derive(Default)]
pub struct StormGuard {
    seen: Mutex<HashMap<String, (Instant, String)>>,
    per_host: Mutex<HashMap<String, VecDeque<Instant>>>,
    per_token: Mutex<HashMap<String, VecDeque<Instant>>>,
}

/// Drop times older than `window`; whether fewer than `limit` remain (and then count `now`).
fn take_slot(times: &mut VecDeque<Instant>, now: Instant, window: Duration, limit: usize) -> bool {
    while times
        .front()
        .is_some_and(|t| now.duration_since(*t) >= window)
    {
        times.pop_front();
    }
    if times.len() >= limit {
        return false;
    }
    times.push_back(now);
    true
}

impl StormGuard {
    /// Decide, and when the answer is `Start`, reserve the slot for `collection_id`.
    pub fn admit(
        &self,
        cfg: &TriggerConfig,
        key: &str,
        host_id: &str,
        collection_id: &str,
    ) -> Admit {
        let now = Instant::now();
        let window = Duration::from_secs(cfg.dedup_window_secs);
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.retain(|_, (t, _)| now.duration_since(*t) < window);
        if let Some((_, id)) = seen.get(key) {
            return Admit::Duplicate(id.clone());
        }
        if let Admit::RateLimited(n) = self.admit_host(cfg, host_id) {
            return Admit::RateLimited(n);
        }
        seen.insert(key.to_string(), (now, collection_id.to_string()));
        Admit::Start
    }

    /// The per-host budget of triggered collections alone (a trigger token's
    /// `POST /api/v1/collections`, which has no dedup key).
    pub fn admit_host(&self, cfg: &TriggerConfig, host_id: &str) -> Admit {
        let mut per_host = self.per_host.lock().unwrap_or_else(|p| p.into_inner());
        let times = per_host.entry(host_id.to_string()).or_default();
        let window = Duration::from_secs(cfg.rate_window_secs);
        if take_slot(
            times,
            Instant::now(),
            window,
            cfg.rate_limit_per_host as usize,
        ) {
            Admit::Start
        } else {
            Admit::RateLimited(cfg.rate_limit_per_host)
        }
    }

    /// One request of a trigger token against its per-minute budget.
    pub fn admit_request(&self, cfg: &TriggerConfig, token: &str) -> bool {
        let mut per_token = self.per_token.lock().unwrap_or_else(|p| p.into_inner());
        if per_token.len() > 10_000 {
            // Bounded: forget idle tokens rather than grow without end.
            let now = Instant::now();
            per_token.retain(|_, t| {
                t.back()
                    .is_some_and(|b| now.duration_since(*b) < Duration::from_secs(60))
            });
        }
        let times = per_token.entry(token.to_string()).or_default();
        take_slot(
            times,
            Instant::now(),
            Duration::from_secs(60),
            cfg.policy.requests_per_minute as usize,
        )
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn alert(source: &'static str, rule: &str, severity: &str) -> Alert {
        Alert {
            source,
            rule: rule.into(),
            severity: severity.into(),
            reason: String::new(),
            dedup_key: String::new(),
            lookups: Vec::new(),
            profile: None,
            pid: None,
            container_id: None,
            paths: Vec::new(),
        }
    }

    #[test]
    fn containment_follows_an_alert_only_where_a_rule_says_so() {
        let cfg = TriggerConfig::default();
        assert!(cfg
            .then_for(&alert("guardduty", "x", "critical"))
            .is_empty());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("triggers.toml");
        std::fs::write(
            &path,
            "[guardduty.severity]\ncritical = \"volatile\"\n\
             [[containment]]\nsource = \"guardduty\"\nseverity = [\"critical\"]\nthen = [\"isolate\", \"memory\"]\n\
             [[containment]]\nrule = \"Terminal shell\"\nthen = [\"freeze_container\"]\n",
        )
        .unwrap();
        let cfg = TriggerConfig::load(&path).unwrap();
        assert_eq!(
            cfg.then_for(&alert("guardduty", "Backdoor:EC2/X", "critical")),
            ["isolate", "memory"]
        );
        assert!(cfg
            .then_for(&alert("guardduty", "Backdoor:EC2/X", "high"))
            .is_empty());
        assert!(cfg.then_for(&alert("falco", "x", "critical")).is_empty());
        assert_eq!(
            cfg.then_for(&alert("falco", "Terminal shell in container", "notice")),
            ["freeze_container"]
        );
        for (bad, says) in [
            (
                "[[containment]]\nthen = [\"isolate\"]\n",
                "neither a severity nor a rule",
            ),
            (
                "[[containment]]\nseverity = [\"low\"]\nthen = [\"wipe\"]\n",
                "\"wipe\"",
            ),
            (
                "[[containment]]\nseverity = [\"low\"]\nthen = [\"full\"]\n",
                "allowed_profiles",
            ),
            (
                "[[containment]]\nseverity = [\"low\"]\nthen = []\n",
                "1 to 8",
            ),
            (
                "[[containment]]\nsource = \"edr\"\nseverity = [\"low\"]\nthen = [\"isolate\"]\n",
                "edr",
            ),
        ] {
            std::fs::write(&path, bad).unwrap();
            let e = TriggerConfig::load(&path).unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn a_priority_mapping_comes_before_severity_and_after_rules() {
        use super::super::priority::Priority;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("triggers.toml");
        std::fs::write(
            &path,
            "[priority]\nlow = \"volatile\"\nmedium = \"memory\"\n[guardduty.rules]\n\"Recon:\" = \"triage\"\n",
        )
        .unwrap();
        let cfg = TriggerConfig::load(&path).unwrap();
        let mut a = alert("guardduty", "Backdoor:EC2/C&CActivity.B", "low");
        a.pid = Some(1);
        assert_eq!(cfg.profile_for(&a, Priority::Low).0, "volatile");
        assert_eq!(cfg.profile_for(&a, Priority::Medium).0, "memory");
        // No mapping for high: the severity mapping decides.
        assert_eq!(cfg.profile_for(&a, Priority::High).0, "triage");
        let recon = alert("guardduty", "Recon:EC2/PortProbeUnprotectedPort", "low");
        assert_eq!(cfg.profile_for(&recon, Priority::Medium).0, "triage");
        for bad in [
            "[priority]\nurgent = \"memory\"\n",
            "[priority]\nlow = \"disk\"\n",
        ] {
            std::fs::write(&path, bad).unwrap();
            let e = format!("{:#}", TriggerConfig::load(&path).unwrap_err());
            assert!(e.contains("[priority]"), "{bad}: {e}");
        }
    }

    #[test]
    fn defaults_stay_inside_the_policy_and_files_are_checked_against_it() {
        let mut cfg = TriggerConfig::default();
        let own = |a: &Alert| super::super::priority::Priority::of_severity(&a.severity);
        let p = |cfg: &TriggerConfig, a: &Alert| cfg.profile_for(a, own(a)).0;
        // A GuardDuty EC2 finding names no process: memory falls back to triage, and says so.
        let gd = alert("guardduty", "Backdoor:EC2/C&CActivity.B", "high");
        let (profile, note) = cfg.profile_for(&gd, own(&gd));
        assert_eq!(profile, "triage");
        assert!(note.unwrap().contains("names no process"));
        let mut with_pid = alert("falco", "Terminal shell in container", "critical");
        with_pid.pid = Some(4242);
        assert_eq!(p(&cfg, &with_pid), "memory");
        assert_eq!(
            p(
                &cfg,
                &alert("guardduty", "Recon:EC2/PortProbeUnprotectedPort", "low")
            ),
            "triage"
        );
        assert_eq!(p(&cfg, &alert("falco", "x", "notice")), "volatile");
        cfg.falco
            .rules
            .insert("Terminal shell".into(), "volatile".into());
        assert_eq!(p(&cfg, &with_pid), "volatile");
        for (_, profile) in cfg
            .guardduty
            .severity
            .iter()
            .chain(cfg.falco.severity.iter())
        {
            assert!(cfg.policy.check(profile, 0, 0).is_ok(), "{profile}");
        }
        assert!(cfg
            .policy
            .check("full", 0, 0)
            .unwrap_err()
            .contains("allowed_profiles"));
        assert!(cfg
            .policy
            .check("triage", 1, 0)
            .unwrap_err()
            .contains("allow_paths"));
        assert!(cfg
            .policy
            .check("triage", 0, 1)
            .unwrap_err()
            .contains("allow_devices"));

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("triggers.toml");
        std::fs::write(&path, "dedup_window_secs = 5\n[falco]\ndefault = \"memory\"\n[falco.severity]\ncritical = \"everything\"\n").unwrap();
        let e = TriggerConfig::load(&path).unwrap_err().to_string();
        assert!(e.contains("everything"), "{e}");
        // A mapping outside the policy is refused at load, naming both.
        std::fs::write(&path, "[guardduty.severity]\nhigh = \"full\"\n").unwrap();
        let e = TriggerConfig::load(&path).unwrap_err().to_string();
        assert!(
            e.contains("\"full\"") && e.contains("allowed_profiles"),
            "{e}"
        );
        std::fs::write(&path, "dedup_window_secs = 5\n[policy]\nallowed_profiles = [\"volatile\", \"memory\", \"triage\", \"full\"]\n[guardduty]\nrules = { \"CryptoCurrency:\" = \"memory\" }\n[guardduty.severity]\nHigh = \"full\"\n").unwrap();
        let cfg = TriggerConfig::load(&path).unwrap();
        assert_eq!(cfg.dedup_window_secs, 5);
        assert_eq!(cfg.rate_limit_per_host, 6);
        // Laid over the defaults: high changed, critical kept.
        assert_eq!(cfg.guardduty.severity["high"], "full");
        assert_eq!(cfg.guardduty.severity["critical"], "memory");
        let mut crypto = alert(
            "guardduty",
            "CryptoCurrency:EC2/BitcoinTool.B!DNS",
            "critical",
        );
        crypto.container_id = Some("4c01db0b339c".into());
        assert_eq!(p(&cfg, &crypto), "memory");
        assert_eq!(
            p(&cfg, &alert("guardduty", "Backdoor:EC2/X", "high")),
            "full"
        );
    }

    #[test]
    fn storm_guard_dedups_and_limits() {
        let cfg = TriggerConfig {
            rate_limit_per_host: 2,
            ..Default::default()
        };
        let g = StormGuard::default();
        assert_eq!(g.admit(&cfg, "k1", "h", "c1"), Admit::Start);
        assert_eq!(
            g.admit(&cfg, "k1", "h", "c2"),
            Admit::Duplicate("c1".into())
        );
        assert_eq!(g.admit(&cfg, "k2", "h", "c3"), Admit::Start);
        assert_eq!(g.admit(&cfg, "k3", "h", "c4"), Admit::RateLimited(2));
        assert_eq!(g.admit(&cfg, "k3", "other", "c5"), Admit::Start);
    }
}
