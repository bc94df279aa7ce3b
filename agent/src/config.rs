//! The agent's state directory and configuration.
//!
//! ```text
//! STATE/agent.toml    collector address and agent id (written by enroll), settings
//!       agent.key     the agent's private key (0600); generated here, never sent anywhere
//!       agent.pem     its certificate, signed by the collector's CA
//!       ca.pem        the collector's CA, pinned at enrollment by its SHA-256
//!       spool/        chunks not yet acknowledged by the collector
//!       journal/      the flight recorder: recent events, zstd segments
//!       profiles/     the user's own triage profiles (NAME.toml), for `--profile NAME`
//!       collector.age-recipient  the collector's age recipient for encrypted offline
//!                     collections (`collect --encrypt`), from enrollment and each welcome
//! ```
//!
//! All of it is private: the directory 0700, what the agent writes there 0600 (it runs with
//! umask 077), and `run` refuses a state directory others can read.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

pub const DEFAULT_STATE_DIR: &str = "/var/lib/cairn-agent";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgentConfig {
    /// `HOST:PORT` of the collector's QUIC listener.
    pub collector: String,
    pub agent_id: String,
    /// Most bytes of unacknowledged chunks kept on disk while the collector is unreachable.
    #[serde(default = "default_spool_max")]
    pub spool_max_bytes: u64,
    /// Seconds between heartbeats.
    #[serde(default = "default_heartbeat")]
    pub heartbeat_secs: u64,
    /// Longest wait between reconnection attempts, in seconds.
    #[serde(default = "default_backoff")]
    pub reconnect_max_secs: u64,
    /// Cloud metadata: "auto" (only where DMI names a cloud), "always" (each cloud in turn),
    /// "aws", "gcp" or "azure" (that cloud's service), or "never".
    #[serde(default = "default_metadata_mode")]
    pub metadata: String,
    #[serde(default)]
    pub metadata_url: Option<String>,
    /// Run the sensor (process and network events) while connected: `true` by default.
    #[serde(default = "default_true")]
    pub sensor_enabled: bool,
    #[serde(default)]
    pub sensor: crate::sensor::SensorConfig,
    /// Flight recorder bound: bytes on disk.
    #[serde(default = "default_journal_bytes")]
    pub journal_max_bytes: u64,
    /// Flight recorder bound: age, in seconds.
    #[serde(default = "default_journal_age")]
    pub journal_max_age_secs: u64,
    /// How much of the recent past a collection carries, in seconds, when its profile sets no
    /// window of its own (the shipped ones do: volatile 15 min, memory 1 h, triage 24 h).
    #[serde(default = "default_journal_window")]
    pub journal_window_secs: u64,
    /// The host's root file system when the agent runs in a container (`/host`): /proc and
    /// collected paths resolve inside it. `--host-root` overrides it.
    #[serde(default)]
    pub host_root: Option<PathBuf>,
    /// Seconds between readiness self-tests while running (also run at start); 0: only at start.
    #[serde(default = "default_selftest_interval")]
    pub selftest_interval_secs: u64,
    /// Report the containers (and pods) running here with each heartbeat, so that triggers
    /// naming a container or pod find this host: `true` by default.
    #[serde(default = "default_true")]
    pub report_containers: bool,
    /// How long a marked host's last-breath collection may take after SIGTERM before the
    /// agent goes, in seconds: below systemd's `TimeoutStopSec` (30 in cairn's unit) and the
    /// DaemonSet's `terminationGracePeriodSeconds` (30).
    #[serde(default = "default_last_breath")]
    pub last_breath_secs: u64,
}

fn default_selftest_interval() -> u64 {
    6 * 3600
}

fn default_true() -> bool {
    true
}
fn default_journal_bytes() -> u64 {
    256 * 1024 * 1024
}
fn default_journal_age() -> u64 {
    24 * 3600
}
fn default_last_breath() -> u64 {
    20
}

fn default_journal_window() -> u64 {
    3600
}

fn default_spool_max() -> u64 {
    2 * 1024 * 1024 * 1024
}
fn default_heartbeat() -> u64 {
    15
}
fn default_backoff() -> u64 {
    60
}
fn default_metadata_mode() -> String {
    "auto".into()
}

#[derive(Debug, Clone)]
pub struct StateDir {
    pub root: PathBuf,
}

impl StateDir {
    pub fn new(root: impl Into<PathBuf>) -> StateDir {
        StateDir { root: root.into() }
    }
    pub fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }
    pub fn spool(&self) -> PathBuf {
        self.path("spool")
    }
    pub fn journal(&self) -> PathBuf {
        self.path("journal")
    }
    /// Live events waiting for the collector that did not fit in memory.
    pub fn event_spool(&self) -> PathBuf {
        self.path("event-spool")
    }
    /// The user's own triage profiles, `NAME.toml`.
    pub fn profiles(&self) -> PathBuf {
        self.path("profiles")
    }

    pub fn load(&self) -> Result<AgentConfig> {
        let p = self.path("agent.toml");
        let text = std::fs::read_to_string(&p).with_context(|| {
            format!(
                "cannot read {} — enroll this host first: cairn-agent enroll --collector HOST:PORT --token TOKEN --ca-sha256 FINGERPRINT --state-dir {}",
                p.display(),
                self.root.display()
            )
        })?;
        toml::from_str(&text)
            .with_context(|| format!("{} is not a valid agent configuration", p.display()))
    }

    pub fn save(&self, cfg: &AgentConfig) -> Result<()> {
        std::fs::write(self.path("agent.toml"), toml::to_string(cfg)?)?;
        Ok(())
    }

    /// The age recipient the collector gave (at enrollment or in its last `welcome`), if any.
    pub fn evidence_recipient(&self) -> Result<Option<crate::encryption::Recipient>> {
        let p = self.path(crate::encryption::RECIPIENT_FILE);
        match std::fs::read_to_string(&p) {
            Ok(text) => Ok(Some(
                crate::encryption::Recipient::parse(&text)
                    .with_context(|| format!("{} is damaged", p.display()))?,
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", p.display())),
        }
    }

    /// Keep (or, `None`: forget) the collector's evidence recipient. One that is not a valid
    /// age recipient is refused, and what was kept stays.
    pub fn save_evidence_recipient(&self, recipient: Option<&str>) -> Result<()> {
        let p = self.path(crate::encryption::RECIPIENT_FILE);
        match recipient {
            Some(r) => {
                let r = crate::encryption::Recipient::parse(r)
                    .context("the collector's evidence recipient")?;
                if self
                    .evidence_recipient()
                    .ok()
                    .flatten()
                    .map(|k| k.as_str().to_string())
                    != Some(r.as_str().to_string())
                {
                    cairn_private_fs::write_secret(&p, format!("{}\n", r.as_str()).as_bytes())?;
                }
            }
            None => match std::fs::remove_file(&p) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(e).with_context(|| format!("cannot remove {}", p.display()))
                }
                _ => {}
            },
        }
        Ok(())
    }

    /// Refuse a state directory other users can read: it holds the agent's private key and
    /// evidence waiting for the collector (spooled chunks, the event journal). The directory,
    /// every entry at its top and the entries of its subdirectories are checked.
    pub fn check_private(&self) -> Result<()> {
        // Enough to find a mistake; a spool of millions of chunks is not walked at every start.
        const MAX_ENTRIES: usize = 10_000;
        let mut exposed = Vec::new();
        let seen = std::cell::Cell::new(0usize);
        let mut look = |p: &std::path::Path| -> Result<()> {
            seen.set(seen.get() + 1);
            if let Some(why) = cairn_private_fs::exposure(p)? {
                exposed.push(why);
            }
            Ok(())
        };
        look(&self.root)?;
        let top: Vec<_> = std::fs::read_dir(&self.root)
            .with_context(|| format!("cannot read the state directory {}", self.root.display()))?
            .flatten()
            .collect();
        for entry in &top {
            look(&entry.path())?;
        }
        for entry in top
            .iter()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        {
            let Ok(rd) = std::fs::read_dir(entry.path()) else {
                continue;
            };
            for e in rd.flatten() {
                if seen.get() >= MAX_ENTRIES {
                    break;
                }
                look(&e.path())?;
            }
        }
        if exposed.is_empty() {
            return Ok(());
        }
        let n = exposed.len();
        let first: Vec<String> = exposed.into_iter().take(3).collect();
        anyhow::bail!(
            "the state directory {} holds the agent's private key and evidence not yet sent, but {n} entr{} other users can read: {}{}. Fix: `chmod -R go-rwx {}`",
            self.root.display(),
            if n == 1 { "y is one" } else { "ies are ones" },
            first.join("; "),
            if n > 3 { "; …" } else { "" },
            self.root.display()
        )
    }

    pub fn read(&self, name: &str) -> Result<String> {
        let p = self.path(name);
        std::fs::read_to_string(&p)
            .with_context(|| format!("cannot read {}; enroll again if it is missing", p.display()))
    }
}

impl AgentConfig {
    pub fn new(collector: String, agent_id: String) -> AgentConfig {
        AgentConfig {
            collector,
            agent_id,
            spool_max_bytes: default_spool_max(),
            heartbeat_secs: default_heartbeat(),
            reconnect_max_secs: default_backoff(),
            metadata: default_metadata_mode(),
            metadata_url: None,
            sensor_enabled: true,
            sensor: crate::sensor::SensorConfig::default(),
            journal_max_bytes: default_journal_bytes(),
            journal_max_age_secs: default_journal_age(),
            journal_window_secs: default_journal_window(),
            host_root: None,
            selftest_interval_secs: default_selftest_interval(),
            report_containers: true,
            last_breath_secs: default_last_breath(),
        }
    }

    pub fn metadata_config(&self) -> crate::identity::MetadataConfig {
        let defaults = crate::identity::MetadataConfig::default();
        let provider = crate::cloud::Provider::parse(&self.metadata);
        crate::identity::MetadataConfig {
            mode: match self.metadata.as_str() {
                "always" => crate::identity::MetadataMode::Always,
                "never" => crate::identity::MetadataMode::Never,
                // A provider named: ask it, whatever DMI says.
                _ if provider.is_some() => crate::identity::MetadataMode::Always,
                _ => crate::identity::MetadataMode::Auto,
            },
            provider,
            url: self.metadata_url.clone().unwrap_or(defaults.url),
            ..defaults
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(p: &std::path::Path, m: u32) {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
    }

    #[test]
    fn the_collectors_recipient_is_kept_private_replaced_and_forgotten() {
        let d = tempfile::tempdir().unwrap();
        let state = StateDir::new(d.path());
        assert!(state.evidence_recipient().unwrap().is_none());
        let one = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p";
        state.save_evidence_recipient(Some(one)).unwrap();
        assert_eq!(state.evidence_recipient().unwrap().unwrap().as_str(), one);
        let p = state.path(crate::encryption::RECIPIENT_FILE);
        assert_eq!(cairn_private_fs::exposure(&p).unwrap(), None);
        // A collector that sends garbage does not replace what was kept.
        assert!(state.save_evidence_recipient(Some("age1garbage")).is_err());
        assert_eq!(state.evidence_recipient().unwrap().unwrap().as_str(), one);
        // Encryption at rest turned off at the collector: forgotten.
        state.save_evidence_recipient(None).unwrap();
        assert!(state.evidence_recipient().unwrap().is_none());
        state.save_evidence_recipient(None).unwrap();
    }

    #[test]
    fn a_state_directory_others_can_read_is_refused_with_the_fix() {
        let d = tempfile::tempdir().unwrap();
        let state = StateDir::new(d.path().join("state"));
        cairn_private_fs::create_private_dir(&state.root).unwrap();
        cairn_private_fs::write_secret(&state.path("agent.key"), b"KEY").unwrap();
        std::fs::create_dir(state.spool()).unwrap();
        mode(&state.spool(), 0o700);
        std::fs::create_dir(state.spool().join("item")).unwrap();
        mode(&state.spool().join("item"), 0o700);
        state.check_private().unwrap();

        // A chunk spool directory readable by all, as a default umask would leave it.
        mode(&state.spool().join("item"), 0o755);
        let e = format!("{:#}", state.check_private().unwrap_err());
        assert!(e.contains("spool/item has mode 0755"), "{e}");
        assert!(
            e.contains(&format!("chmod -R go-rwx {}", state.root.display())),
            "{e}"
        );
        mode(&state.spool().join("item"), 0o700);

        mode(&state.root, 0o755);
        std::fs::write(state.path("agent.toml"), "x").unwrap();
        mode(&state.path("agent.toml"), 0o644);
        let e = format!("{:#}", state.check_private().unwrap_err());
        assert!(e.contains("2 entries are ones other users can read"), "{e}");
        assert!(e.contains("agent.toml has mode 0644"), "{e}");
    }
}
