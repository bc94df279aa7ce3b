//! Which profile an alert gets, and how alert storms are kept to one collection.
//!
//! The mapping is read from `DATA/triggers.toml` when present (every key optional); the
//! defaults are what an incident responder would pick: the worst findings get everything
//! (`full`), serious ones memory, the rest a triage. Dedup and rate limits are kept in memory:
//! a restart forgets them, which at worst starts one more collection.

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

/// `triggers.toml` as written: every key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct ConfigFile {
    dedup_window_secs: Option<u64>,
    rate_limit_per_host: Option<u32>,
    rate_window_secs: Option<u64>,
    guardduty: Mapping,
    falco: Mapping,
    generic: Mapping,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TriggerConfig {
    /// Alerts with the same key (GuardDuty finding id; Falco rule + host + container; a plain
    /// request's `dedup_key`) within this many seconds start one collection.
    pub dedup_window_secs: u64,
    /// At most this many triggered collections per host per `rate_window_secs`.
    pub rate_limit_per_host: u32,
    pub rate_window_secs: u64,
    pub guardduty: Mapping,
    pub falco: Mapping,
    pub generic: Mapping,
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
            ("critical", "full"),
            ("high", "full"),
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
            guardduty: by_severity(),
            falco: Mapping {
                severity: map(&[
                    ("emergency", "full"),
                    ("alert", "full"),
                    ("critical", "full"),
                    ("error", "memory"),
                    ("warning", "triage"),
                    ("notice", "minimal"),
                    ("informational", "minimal"),
                    ("debug", "minimal"),
                ]),
                rules: BTreeMap::new(),
                default: "triage".into(),
            },
            generic: by_severity(),
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
            guardduty: d.guardduty.over(file.guardduty),
            falco: d.falco.over(file.falco),
            generic: d.generic.over(file.generic),
        };
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
            }
        }
        Ok(cfg)
    }

    /// The profile for an alert: its own (plain requests), else the longest rule prefix, else
    /// its severity, else the default.
    pub fn profile_for(&self, a: &Alert) -> String {
        if let Some(p) = &a.profile {
            return p.clone();
        }
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

/// Dedup keys and per-host trigger times.
#[derive(Default)]
pub struct StormGuard {
    seen: Mutex<HashMap<String, (Instant, String)>>,
    per_host: Mutex<HashMap<String, VecDeque<Instant>>>,
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
        let rate_window = Duration::from_secs(cfg.rate_window_secs);
        let mut per_host = self.per_host.lock().unwrap_or_else(|p| p.into_inner());
        let times = per_host.entry(host_id.to_string()).or_default();
        while times
            .front()
            .is_some_and(|t| now.duration_since(*t) >= rate_window)
        {
            times.pop_front();
        }
        if times.len() >= cfg.rate_limit_per_host as usize {
            return Admit::RateLimited(cfg.rate_limit_per_host);
        }
        times.push_back(now);
        seen.insert(key.to_string(), (now, collection_id.to_string()));
        Admit::Start
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
    fn defaults_and_overrides() {
        let mut cfg = TriggerConfig::default();
        assert_eq!(
            cfg.profile_for(&alert("guardduty", "Backdoor:EC2/C&CActivity.B", "high")),
            "full"
        );
        assert_eq!(
            cfg.profile_for(&alert(
                "guardduty",
                "Recon:EC2/PortProbeUnprotectedPort",
                "low"
            )),
            "triage"
        );
        assert_eq!(
            cfg.profile_for(&alert("falco", "Terminal shell in container", "critical")),
            "full"
        );
        assert_eq!(cfg.profile_for(&alert("falco", "x", "notice")), "minimal");
        cfg.falco
            .rules
            .insert("Terminal shell".into(), "memory".into());
        assert_eq!(
            cfg.profile_for(&alert("falco", "Terminal shell in container", "critical")),
            "memory"
        );
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("triggers.toml");
        std::fs::write(&p, "dedup_window_secs = 5\n[falco]\ndefault = \"memory\"\n[falco.severity]\ncritical = \"everything\"\n").unwrap();
        let e = TriggerConfig::load(&p).unwrap_err().to_string();
        assert!(e.contains("everything"), "{e}");
        std::fs::write(&p, "dedup_window_secs = 5\n[guardduty]\nrules = { \"CryptoCurrency:\" = \"memory\" }\n[guardduty.severity]\nHigh = \"memory\"\n").unwrap();
        let cfg = TriggerConfig::load(&p).unwrap();
        assert_eq!(cfg.dedup_window_secs, 5);
        assert_eq!(cfg.rate_limit_per_host, 6);
        // Laid over the defaults: high changed, critical kept.
        assert_eq!(cfg.guardduty.severity["high"], "memory");
        assert_eq!(cfg.guardduty.severity["critical"], "full");
        assert_eq!(
            cfg.profile_for(&alert(
                "guardduty",
                "CryptoCurrency:EC2/BitcoinTool.B!DNS",
                "critical"
            )),
            "memory"
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
