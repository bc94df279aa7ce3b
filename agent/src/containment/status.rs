//! What is enforced now: the recorded containments checked against the kernel, for
//! `cairn-agent isolation status` and the daemon's reports.

use super::state::Active;
use super::{cgroup, freeze, host, ContainError, Containment};
use cairn_protocol::containment::{Action, Proto, Target};
use serde::Serialize;

/// A saved containment, checked against the kernel now.
#[derive(Debug, Clone, Serialize)]
pub struct Checked {
    #[serde(flatten)]
    pub active: Active,
    /// `None`: cannot tell (no nft, no cgroup).
    pub enforced: Option<bool>,
    pub detail: String,
    /// Packets dropped so far by a container isolation (egress, ingress).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dropped: Option<(u64, u64)>,
}

/// What is enforced now: the state, checked, and enforcement the state does not know of.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub active: Vec<Checked>,
    pub unrecorded: Vec<String>,
}

impl Status {
    /// The state and the kernel agree.
    pub fn consistent(&self) -> bool {
        self.unrecorded.is_empty() && self.active.iter().all(|c| c.enforced != Some(false))
    }

    /// A table for a person.
    pub fn render(&self) -> String {
        let mut s = String::new();
        if self.active.is_empty() {
            s.push_str("no containment is recorded on this host\n");
        }
        for c in &self.active {
            let a = &c.active;
            let state = match c.enforced {
                Some(true) => "enforced",
                Some(false) => "NOT ENFORCED",
                None => "unknown",
            };
            s.push_str(&format!(
                "{} {}: {state} ({})\n  by {} at {}, request {}: {}\n  {}\n",
                a.action.as_str(),
                a.target.describe(),
                c.detail,
                a.requested_by,
                a.at,
                a.request_id,
                a.reason,
                a.mechanism,
            ));
            if let Some(h) = &a.rules_sha256 {
                s.push_str(&format!("  rules sha256 {h}\n"));
            }
            if !a.collector.is_empty() {
                let c: Vec<String> = a.collector.iter().map(|x| x.to_string()).collect();
                s.push_str(&format!("  collector kept open: {}\n", c.join(", ")));
            }
            for r in &a.allow {
                s.push_str(&format!(
                    "  allowed: {}{}{}\n",
                    r.cidr,
                    r.proto
                        .map(|p| format!(" {}", if p == Proto::Tcp { "tcp" } else { "udp" }))
                        .unwrap_or_default(),
                    r.port.map(|p| format!(" port {p}")).unwrap_or_default(),
                ));
            }
            if let Some((e, i)) = c.dropped {
                s.push_str(&format!("  dropped: {e} out, {i} in\n"));
            }
        }
        for u in &self.unrecorded {
            s.push_str(&format!("unrecorded: {u}\n"));
        }
        s
    }
}

impl Containment {
    /// The recorded containments checked against the kernel (nft table present? programs
    /// attached? cgroup frozen? processes stopped?), and enforcement nobody recorded.
    pub fn status(&self) -> Result<Status, ContainError> {
        let active = self.active()?;
        let bpffs = &self.roots.bpffs;
        let mut checked = Vec::new();
        for a in &active {
            let (enforced, detail, dropped) = match (a.action, &a.target, &a.cgroup) {
                (Action::Isolate, Target::Host, _) => match host::present() {
                    Ok(true) => (Some(true), "table in the ruleset".into(), None),
                    Ok(false) => (Some(false), "the table is not in the ruleset".into(), None),
                    Err(e) => (None, e.to_string(), None),
                },
                (Action::Isolate, Target::Container { .. }, Some(cg)) => {
                    match cgroup::verify(cg, bpffs) {
                        Ok(()) => (
                            Some(true),
                            "programs attached".into(),
                            a.pins.as_deref().and_then(|d| cgroup::dropped(d).ok()),
                        ),
                        Err(why) if !cg.is_dir() => {
                            (Some(false), format!("the cgroup is gone ({why})"), None)
                        }
                        Err(why) => (Some(false), why, None),
                    }
                }
                (Action::Freeze, Target::Container { .. }, Some(cg)) => {
                    match freeze::is_frozen(cg) {
                        Ok(true) => (Some(true), "cgroup frozen".into(), None),
                        Ok(false) => (Some(false), "the cgroup is not frozen".into(), None),
                        Err(e) => (Some(false), e.to_string(), None),
                    }
                }
                (Action::Freeze, Target::Process { pid }, _) => {
                    let same = freeze::start_time(&self.roots.proc_root, *pid) == a.start_time;
                    if same && freeze::all_stopped(&self.roots.proc_root, &a.pids) {
                        (Some(true), "processes stopped".into(), None)
                    } else if !same {
                        (Some(false), format!("process {pid} is gone"), None)
                    } else {
                        (Some(false), "some processes are running".into(), None)
                    }
                }
                (Action::MarkLastBreath, Target::Container { .. }, Some(cg)) if !cg.is_dir() => (
                    Some(true),
                    "marked; the container is gone (its last breath is sent or due)".into(),
                    None,
                ),
                (Action::MarkLastBreath, ..) => (Some(true), "marked".into(), None),
                _ => (None, "nothing to check".into(), None),
            };
            checked.push(Checked {
                active: a.clone(),
                enforced,
                detail,
                dropped,
            });
        }
        let mut unrecorded = Vec::new();
        let host_recorded = active
            .iter()
            .any(|a| a.action == Action::Isolate && a.target == Target::Host);
        if !host_recorded && host::present().unwrap_or(false) {
            unrecorded.push(format!(
                "{} is in the ruleset (remove it with `nft delete table inet {}`)",
                host::MECHANISM,
                host::TABLE
            ));
        }
        for d in cgroup::pinned_dirs(bpffs) {
            if !active.iter().any(|a| a.pins.as_ref() == Some(&d)) {
                unrecorded.push(format!(
                    "container isolation pins at {} (cgroup inode {})",
                    d.display(),
                    d.file_name()
                        .map(|n| n.to_string_lossy())
                        .unwrap_or_default()
                ));
            }
        }
        Ok(Status {
            active: checked,
            unrecorded,
        })
    }
}
