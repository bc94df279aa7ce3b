//! What is enforced, on disk: `<state_dir>/containment.json` (re-applied at start, before the
//! agent connects), and the break-glass reports waiting for the collector,
//! `<state_dir>/containment-reports.jsonl`. Both written whole (temporary file, rename, 0600)
//! under an exclusive lock, so the CLI's release and the daemon never lose each other's change.

use super::ContainError;
use cairn_protocol::containment::{Action, Allow, Outcome, Target};
use serde::{Deserialize, Serialize};
use std::fs::OpenOptions;
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

pub const STATE_FILE: &str = "containment.json";
pub const REPORTS_FILE: &str = "containment-reports.jsonl";
const LOCK_FILE: &str = ".containment.lock";
/// Break-glass reports kept while the collector is unreachable (the oldest go first).
pub const MAX_REPORTS: usize = 1000;
/// Containments one host may hold at once.
pub const MAX_ACTIVE: usize = 1024;

/// One containment in force: an isolation (host or container) or a freeze (container or
/// process tree).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Active {
    /// `isolate` or `freeze`.
    pub action: Action,
    pub target: Target,
    /// The request that started it (or `local-…`).
    pub request_id: String,
    pub reason: String,
    pub requested_by: String,
    /// When it was applied (RFC 3339).
    pub at: String,
    /// What enforces it, as the outcome said.
    pub mechanism: String,
    /// The container's cgroup directory, as resolved when it was applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<PathBuf>,
    /// Where a container isolation's links and maps are pinned (found again even when the
    /// cgroup is gone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pins: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<Allow>,
    /// The collector's addresses pinned when a host isolation started.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub collector: Vec<SocketAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules_sha256: Option<String>,
    /// Processes reached (a freeze).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pids: Vec<u32>,
    /// A frozen tree's root start time (clock ticks after boot): a reused pid is not it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<u64>,
    /// A container marked for a last breath: its writable layer (the overlay `upperdir`), as
    /// found when it was marked, collected when it exits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer: Option<PathBuf>,
}

impl Active {
    /// Whether this entry is the one `action` on `target` would replace or undo: the same kind
    /// (isolation, freeze) on the same target (a container by either id being a prefix of the
    /// other, as ids are given abbreviated).
    pub fn is_for(&self, action: Action, target: &Target) -> bool {
        let kind = |a: Action| match a {
            Action::Isolate | Action::Release => Action::Isolate,
            Action::Freeze | Action::Thaw | Action::Kill => Action::Freeze,
            Action::MarkLastBreath | Action::UnmarkLastBreath => Action::MarkLastBreath,
        };
        kind(self.action) == kind(action) && self.target.same_as(target)
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct StateFile {
    version: u32,
    #[serde(default)]
    active: Vec<Active>,
}

/// The state directory's files, behind an exclusive lock while held.
pub struct Store {
    dir: PathBuf,
    _lock: nix::fcntl::Flock<std::fs::File>,
}

fn io_err(path: &Path, what: &str, e: impl std::fmt::Display) -> ContainError {
    ContainError::State {
        path: path.to_path_buf(),
        detail: format!("{what}: {e}"),
    }
}

impl Store {
    /// Locks the state (blocking: every holder only reads and writes two small files).
    pub fn lock(dir: &Path) -> Result<Store, ContainError> {
        if !dir.is_dir() {
            cairn_private_fs::create_private_dir(dir)
                .map_err(|e| io_err(dir, "cannot create the state directory", e))?;
        }
        let path = dir.join(LOCK_FILE);
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(|e| io_err(&path, "cannot open the lock file", e))?;
        let lock = nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| io_err(&path, "cannot lock", e))?;
        Ok(Store {
            dir: dir.to_path_buf(),
            _lock: lock,
        })
    }

    fn state_path(&self) -> PathBuf {
        self.dir.join(STATE_FILE)
    }

    fn reports_path(&self) -> PathBuf {
        self.dir.join(REPORTS_FILE)
    }

    /// The containments in force; none when the file does not exist.
    pub fn active(&self) -> Result<Vec<Active>, ContainError> {
        let path = self.state_path();
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err(&path, "cannot read", e)),
        };
        let f: StateFile = serde_json::from_str(&text).map_err(|e| {
            io_err(
                &path,
                "is not a containment state file (fix or remove it; what it held may still be enforced: check `nft list ruleset` and /sys/fs/bpf/cairn)",
                e,
            )
        })?;
        Ok(f.active)
    }

    fn save(&self, active: Vec<Active>) -> Result<(), ContainError> {
        let path = self.state_path();
        let f = StateFile { version: 1, active };
        let mut text =
            serde_json::to_vec_pretty(&f).map_err(|e| io_err(&path, "cannot encode", e))?;
        text.push(b'\n');
        cairn_private_fs::write_secret(&path, &text).map_err(|e| io_err(&path, "cannot write", e))
    }

    /// Records `entry`, replacing the one for the same kind and target.
    pub fn upsert(&self, entry: Active) -> Result<(), ContainError> {
        let mut all = self.active()?;
        all.retain(|a| !a.is_for(entry.action, &entry.target));
        if all.len() >= MAX_ACTIVE {
            return Err(ContainError::Refused(format!(
                "{MAX_ACTIVE} containments are in force on this host already"
            )));
        }
        all.push(entry);
        self.save(all)
    }

    /// Drops the entries `action` on `target` undoes; returns them.
    pub fn remove(&self, action: Action, target: &Target) -> Result<Vec<Active>, ContainError> {
        let (gone, keep): (Vec<Active>, Vec<Active>) = self
            .active()?
            .into_iter()
            .partition(|a| a.is_for(action, target));
        if !gone.is_empty() {
            self.save(keep)?;
        }
        Ok(gone)
    }

    /// Reports waiting for the collector, oldest first; lines that do not parse are skipped.
    pub fn reports(&self) -> Result<Vec<Outcome>, ContainError> {
        let path = self.reports_path();
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err(&path, "cannot read", e)),
        };
        Ok(text
            .lines()
            .filter_map(|l| match serde_json::from_str::<Outcome>(l) {
                Ok(o) => Some(o),
                Err(e) => {
                    tracing::warn!(
                        "{}: skipping a line that is not a report: {e}",
                        path.display()
                    );
                    None
                }
            })
            .collect())
    }

    fn save_reports(&self, reports: &[Outcome]) -> Result<(), ContainError> {
        let path = self.reports_path();
        let mut text = Vec::new();
        for r in reports {
            serde_json::to_writer(&mut text, r).map_err(|e| io_err(&path, "cannot encode", e))?;
            text.push(b'\n');
        }
        cairn_private_fs::write_secret(&path, &text).map_err(|e| io_err(&path, "cannot write", e))
    }

    pub fn push_report(&self, report: &Outcome) -> Result<(), ContainError> {
        let mut all = self.reports()?;
        all.push(report.clone());
        let excess = all.len().saturating_sub(MAX_REPORTS);
        if excess > 0 {
            tracing::warn!("dropping the {excess} oldest unsent containment report(s)");
        }
        self.save_reports(&all[excess..])
    }

    /// Drops the report `id` (the collector has it); not there is not an error.
    pub fn remove_report(&self, id: &str) -> Result<(), ContainError> {
        let all = self.reports()?;
        let keep: Vec<Outcome> = all.iter().filter(|o| o.id != id).cloned().collect();
        if keep.len() != all.len() {
            self.save_reports(&keep)?;
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn entry(action: Action, target: Target) -> Active {
        Active {
            action,
            target,
            request_id: "r1".into(),
            reason: "IR-7".into(),
            requested_by: "alice".into(),
            at: "2026-01-01T00:00:00Z".into(),
            mechanism: "m".into(),
            cgroup: Some("/sys/fs/cgroup/x".into()),
            pins: Some("/sys/fs/bpf/cairn/isolation/7".into()),
            allow: vec![Allow {
                cidr: "10.0.0.0/8".into(),
                port: Some(22),
                proto: Some(cairn_protocol::containment::Proto::Tcp),
                note: Some("jump".into()),
            }],
            collector: vec!["10.0.0.1:4433".parse().unwrap()],
            rules_sha256: Some("ab".into()),
            pids: vec![1, 2],
            start_time: Some(42),
            layer: None,
        }
    }

    #[test]
    fn the_state_round_trips_privately_and_replaces_by_target() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("state");
        let s = Store::lock(&dir).unwrap();
        assert_eq!(s.active().unwrap(), vec![]);
        let host = entry(Action::Isolate, Target::Host);
        let c = entry(
            Action::Freeze,
            Target::Container {
                id: "abcdef12".into(),
            },
        );
        s.upsert(host.clone()).unwrap();
        s.upsert(c.clone()).unwrap();
        assert_eq!(s.active().unwrap(), vec![host.clone(), c.clone()]);
        let path = dir.join(STATE_FILE);
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        assert_eq!(std::fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
        // Re-isolating the host replaces its entry.
        let mut again = host.clone();
        again.request_id = "r2".into();
        s.upsert(again.clone()).unwrap();
        assert_eq!(s.active().unwrap(), vec![c.clone(), again]);
        // Thaw by a longer id finds the freeze of the prefix; a release leaves it.
        let long = Target::Container {
            id: "abcdef1234567890".into(),
        };
        assert!(s.remove(Action::Release, &long).unwrap().is_empty());
        assert_eq!(s.remove(Action::Thaw, &long).unwrap(), vec![c]);
        drop(s);
        let s = Store::lock(&dir).unwrap();
        assert_eq!(s.active().unwrap().len(), 1);
    }

    #[test]
    fn reports_wait_until_acknowledged() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::lock(d.path()).unwrap();
        let o = |id: &str| Outcome {
            id: id.into(),
            action: Action::Release,
            target: Target::Host,
            ok: true,
            mechanism: "m".into(),
            rules_sha256: None,
            rules: None,
            pids: vec![],
            verified_rtt_ms: None,
            rolled_back: false,
            error: None,
            local: None,
            at: "2026-01-01T00:00:00Z".into(),
        };
        s.push_report(&o("local-1")).unwrap();
        s.push_report(&o("local-2")).unwrap();
        let path = d.path().join(REPORTS_FILE);
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        assert_eq!(s.reports().unwrap(), vec![o("local-1"), o("local-2")]);
        s.remove_report("local-1").unwrap();
        s.remove_report("nope").unwrap();
        assert_eq!(s.reports().unwrap(), vec![o("local-2")]);
    }
}
