//! Containment in one place: an isolate, release, freeze, thaw or kill is asked of a host,
//! sent on its control stream, and answered by the agent with what it enforced.
//!
//! Every step is a custody record on the host's containment chain (`containment-HOST`): who
//! asked, why, what the agent enforced (with the SHA-256 of the rules in force) or why it could
//! not, and a break-glass release done on the host itself. Each answer is also a timeline event
//! (kind `containment`, source `cairn`), so the moment a host was cut off sits among what it
//! did before and after.

use crate::custody::Custody;
use crate::error::{Error, Result};
use crate::sessions::Sessions;
use crate::storage::{ContainmentRow, ContainmentStatus, HostRow, Stores};
use crate::timeline::Event;
use cairn_protocol::containment::{Action, LastBreathCall, Outcome, Request, Target};
use cairn_protocol::manifest::CollectRequest;
use serde::Serialize;
use serde_json::json;
use std::sync::Arc;

/// Most actions kept in a host's history view.
pub const HISTORY: u32 = 200;

pub struct Containments {
    stores: Stores,
    custody: Arc<Custody>,
    sessions: Arc<Sessions>,
}

/// The custody chain of a host's containment actions.
pub fn chain_of(host_id: &str) -> String {
    format!("containment-{host_id}")
}

/// What is in force on a host now, by target: the newest action that was done decides.
#[derive(Debug, Clone, Serialize)]
pub struct InForce {
    pub target: Target,
    /// `isolated`, `frozen` or `marked for last breath`.
    pub state: &'static str,
    pub since: String,
    pub by: String,
    pub reason: String,
    pub containment_id: String,
    pub rules_sha256: Option<String>,
}

impl Containments {
    pub fn new(stores: Stores, custody: Arc<Custody>, sessions: Arc<Sessions>) -> Containments {
        Containments {
            stores,
            custody,
            sessions,
        }
    }

    /// Store the request, record it in custody, ring the host's bell. `id` and `requested_by`
    /// are set here.
    pub fn request(&self, host: &HostRow, mut req: Request, actor: &str) -> Result<ContainmentRow> {
        req.id = uuid::Uuid::new_v4().to_string();
        req.requested_by = actor.to_string();
        req.check().map_err(Error::Invalid)?;
        let now = cairn_protocol::rfc3339::now();
        let row = ContainmentRow {
            id: req.id.clone(),
            host_id: host.id.clone(),
            request: req,
            status: ContainmentStatus::Requested,
            requested_at: now.clone(),
            updated_at: now,
            outcome: None,
        };
        self.stores.meta.insert_containment(&row)?;
        self.custody.append(
            &chain_of(&host.id),
            actor,
            "containment_requested",
            json!({"containment_id": row.id, "action": row.request.action, "target": row.request.target,
                   "allow": row.request.allow, "reason": row.request.reason}),
        )?;
        self.sessions.wake(&host.id);
        Ok(row)
    }

    pub fn get(&self, id: &str) -> Result<ContainmentRow> {
        self.stores
            .meta
            .containment(id)?
            .ok_or_else(|| Error::NotFound(format!("containment action {id}")))
    }

    /// What waits for the host's agent: not sent, or sent on a connection that ended unanswered.
    pub fn sendable(&self, host_id: &str) -> Result<Vec<Request>> {
        Ok(self
            .stores
            .meta
            .pending_containments(host_id)?
            .into_iter()
            .map(|r| r.request)
            .collect())
    }

    pub fn sent(&self, host_id: &str, id: &str) -> Result<()> {
        self.stores
            .meta
            .set_containment_status(id, ContainmentStatus::Sent, None)?;
        self.custody.append(
            &chain_of(host_id),
            "collector",
            "containment_sent",
            json!({"containment_id": id}),
        )?;
        Ok(())
    }

    /// The agent's answer. A break-glass action done on the host (`local` set, an id the
    /// collector never issued) is recorded as its own action.
    pub fn outcome(&self, host_id: &str, o: &Outcome) -> Result<()> {
        let known = self.stores.meta.containment(&o.id)?;
        let actor = match (&known, &o.local) {
            (Some(row), _) if row.host_id != host_id => {
                return Err(Error::Conflict(format!(
                    "containment action {} is not this host's",
                    o.id
                )))
            }
            // Answered twice (the ack was lost): recorded once.
            (Some(row), _) if row.outcome.is_some() => return Ok(()),
            (Some(_), _) => format!("agent:{host_id}"),
            (None, Some(local)) => {
                let now = cairn_protocol::rfc3339::now();
                let reason = local.reason.chars().take(1024).collect::<String>();
                self.stores.meta.insert_containment(&ContainmentRow {
                    id: o.id.clone(),
                    host_id: host_id.to_string(),
                    request: Request {
                        id: o.id.clone(),
                        action: o.action,
                        target: o.target.clone(),
                        allow: Vec::new(),
                        reason,
                        requested_by: format!("local:{}", local.user),
                    },
                    status: ContainmentStatus::Requested,
                    requested_at: o.at.clone(),
                    updated_at: now,
                    outcome: None,
                })?;
                format!("local:{}@{host_id}", local.user)
            }
            (None, None) => {
                return Err(Error::NotFound(format!(
                    "containment action {} (the agent answered an action the collector did not ask for)",
                    o.id
                )))
            }
        };
        let status = if o.ok {
            ContainmentStatus::Done
        } else {
            ContainmentStatus::Failed
        };
        self.stores
            .meta
            .set_containment_status(&o.id, status, Some(o))?;
        let action = custody_action(o);
        self.custody.append(
            &chain_of(host_id),
            &actor,
            action,
            json!({"containment_id": o.id, "action": o.action, "target": o.target, "ok": o.ok,
                   "mechanism": o.mechanism, "rules_sha256": o.rules_sha256, "pids": o.pids,
                   "verified_rtt_ms": o.verified_rtt_ms, "rolled_back": o.rolled_back,
                   "error": o.error, "local": o.local, "agent_time": o.at}),
        )?;
        let row = self.get(&o.id)?;
        let time_ns = cairn_protocol::rfc3339::parse_ns(&o.at)
            .unwrap_or_else(|| time::OffsetDateTime::now_utc().unix_timestamp_nanos() as i64);
        let ev = timeline_event(&row, o, time_ns);
        self.stores
            .meta
            .insert_timeline(host_id, None, std::slice::from_ref(&ev))?;
        Ok(())
    }

    /// A host's actions, newest first.
    pub fn history(&self, host_id: &str) -> Result<Vec<ContainmentRow>> {
        Ok(self.stores.meta.containments_of_host(host_id, HISTORY)?)
    }

    /// What is in force on a host now: per target, the newest action done.
    pub fn in_force(&self, host_id: &str) -> Result<Vec<InForce>> {
        Ok(in_force(&self.history(host_id)?))
    }

    /// An agent's call for a last breath, checked against the marks in force here: the
    /// `last-breath` collection to request (with the id the agent chose), or why not. A mark
    /// removed since the agent saw it, a target never marked, a reused id: refused.
    pub fn last_breath(&self, host_id: &str, call: &LastBreathCall) -> Result<CollectRequest> {
        call.check().map_err(Error::Invalid)?;
        let marks = self.in_force(host_id)?;
        let mark = marks
            .iter()
            .filter(|f| f.state == MARKED)
            .find(|f| f.target.same_as(&call.target))
            .ok_or_else(|| {
                Error::Conflict(format!(
                    "{} is not marked for a last breath here",
                    call.target.describe()
                ))
            })?;
        if self
            .stores
            .meta
            .get_collection(&call.collection_id)?
            .is_some()
        {
            return Err(Error::Conflict(format!(
                "collection {} exists already",
                call.collection_id
            )));
        }
        let container_id = match &call.target {
            Target::Container { id } => Some(id.clone()),
            _ => None,
        };
        Ok(CollectRequest {
            collection_id: call.collection_id.clone(),
            profile: "last-breath".into(),
            reason: format!(
                "last breath ({}) of {}: {}",
                call.event.as_str(),
                call.target.describe(),
                mark.reason
            ),
            requested_by: format!("last-breath:{}", mark.by),
            paths: Vec::new(),
            pid: None,
            container_id,
            devices: Vec::new(),
        })
    }
}

/// The in-force state of a last-breath mark.
pub const MARKED: &str = "marked for last breath";

/// From a host's history (newest first), what is in force now.
pub fn in_force(history: &[ContainmentRow]) -> Vec<InForce> {
    let mut decided: Vec<(Target, &'static str)> = Vec::new();
    let mut out = Vec::new();
    for row in history
        .iter()
        .filter(|r| r.status == ContainmentStatus::Done)
    {
        let t = &row.request.target;
        let (dimension, state) = match row.request.action {
            Action::Isolate => ("network", Some("isolated")),
            Action::Release => ("network", None),
            Action::Freeze => ("freeze", Some("frozen")),
            Action::Thaw | Action::Kill => ("freeze", None),
            Action::MarkLastBreath => ("last_breath", Some(MARKED)),
            Action::UnmarkLastBreath => ("last_breath", None),
        };
        if decided.iter().any(|(dt, d)| dt == t && *d == dimension) {
            continue;
        }
        decided.push((t.clone(), dimension));
        if let Some(state) = state {
            out.push(InForce {
                target: t.clone(),
                state,
                since: row
                    .outcome
                    .as_ref()
                    .map(|o| o.at.clone())
                    .unwrap_or_else(|| row.updated_at.clone()),
                by: row.request.requested_by.clone(),
                reason: row.request.reason.clone(),
                containment_id: row.id.clone(),
                rules_sha256: row.outcome.as_ref().and_then(|o| o.rules_sha256.clone()),
            });
        }
    }
    out
}

fn custody_action(o: &Outcome) -> &'static str {
    match (o.ok, o.rolled_back, o.action) {
        (false, true, _) => "containment_rolled_back",
        (false, false, _) => "containment_failed",
        (true, _, Action::Isolate) => "isolated",
        (true, _, Action::Release) => "released",
        (true, _, Action::Freeze) => "frozen",
        (true, _, Action::Thaw) => "thawed",
        (true, _, Action::Kill) => "killed",
        (true, _, Action::MarkLastBreath) => "marked_for_last_breath",
        (true, _, Action::UnmarkLastBreath) => "last_breath_mark_removed",
    }
}

fn timeline_event(row: &ContainmentRow, o: &Outcome, time_ns: i64) -> Event {
    let what = match (o.ok, o.rolled_back) {
        (true, _) => format!("{} {}", custody_action(o), o.target.describe()),
        (false, true) => format!(
            "{} of {} rolled back: {}",
            o.action.as_str(),
            o.target.describe(),
            o.error
                .as_deref()
                .unwrap_or("the collector was not reachable through it")
        ),
        (false, false) => format!(
            "{} of {} failed: {}",
            o.action.as_str(),
            o.target.describe(),
            o.error.as_deref().unwrap_or("no reason given")
        ),
    };
    let mut e = Event::new(
        time_ns,
        "cairn",
        "containment",
        format!(
            "{what} (by {}: {})",
            row.request.requested_by, row.request.reason
        ),
    )
    .attr("containment_id", row.id.clone())
    .attr("action", o.action.as_str())
    .attr("ok", o.ok)
    .attr("mechanism", o.mechanism.clone())
    .attr("requested_by", row.request.requested_by.clone())
    .attr("reason", row.request.reason.clone());
    if let Some(h) = &o.rules_sha256 {
        e = e.attr("rules_sha256", h.clone());
    }
    if let Target::Container { id } = &o.target {
        e.container = Some(id.clone());
    }
    if let Target::Process { pid } = &o.target {
        e.pid = Some(i64::from(*pid));
    }
    e.user = Some(row.request.requested_by.clone());
    e.dedup = crate::timeline::dedup_key(&[b"containment", row.id.as_bytes()]);
    e
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn row(id: &str, action: Action, target: Target, status: ContainmentStatus) -> ContainmentRow {
        ContainmentRow {
            id: id.into(),
            host_id: "h".into(),
            request: Request {
                id: id.into(),
                action,
                target,
                allow: vec![],
                reason: format!("r-{id}"),
                requested_by: "admin".into(),
            },
            status,
            requested_at: "2026-12-02T10:00:00Z".into(),
            updated_at: "2026-12-02T10:00:00Z".into(),
            outcome: None,
        }
    }

    #[test]
    fn the_newest_done_action_decides_per_target() {
        let c = Target::Container { id: "abcd".into() };
        // Newest first.
        let history = [
            row(
                "5",
                Action::Release,
                Target::Host,
                ContainmentStatus::Failed,
            ),
            row("4", Action::Freeze, c.clone(), ContainmentStatus::Done),
            row("3", Action::Release, c.clone(), ContainmentStatus::Done),
            row("2", Action::Isolate, c.clone(), ContainmentStatus::Done),
            row("1", Action::Isolate, Target::Host, ContainmentStatus::Done),
        ];
        let now = in_force(&history);
        let shown: Vec<(&Target, &str, &str)> = now
            .iter()
            .map(|f| (&f.target, f.state, f.containment_id.as_str()))
            .collect();
        // The failed release leaves the host isolated; the container is released and frozen.
        assert_eq!(
            shown,
            vec![(&c, "frozen", "4"), (&Target::Host, "isolated", "1")]
        );
    }

    #[test]
    fn a_last_breath_mark_is_in_force_until_unmarked_and_apart_from_isolation() {
        let c = Target::Container { id: "abcd".into() };
        let history = [
            row("3", Action::Isolate, c.clone(), ContainmentStatus::Done),
            row(
                "2",
                Action::MarkLastBreath,
                c.clone(),
                ContainmentStatus::Done,
            ),
            row(
                "1",
                Action::MarkLastBreath,
                Target::Host,
                ContainmentStatus::Failed,
            ),
        ];
        let now = in_force(&history);
        let states: Vec<&str> = now.iter().map(|f| f.state).collect();
        assert_eq!(states, ["isolated", MARKED]);
        let mut later = vec![row(
            "4",
            Action::UnmarkLastBreath,
            c.clone(),
            ContainmentStatus::Done,
        )];
        later.extend(history);
        let states: Vec<&str> = in_force(&later).iter().map(|f| f.state).collect();
        assert_eq!(
            states,
            ["isolated"],
            "unmarked; a failed mark never counted"
        );
    }

    #[test]
    fn its_timeline_events_are_searchable_by_kind_and_source() {
        use crate::timeline::ql::{KINDS, SOURCES};
        let r = row("1", Action::Isolate, Target::Host, ContainmentStatus::Done);
        let o = Outcome {
            id: "1".into(),
            action: Action::Isolate,
            target: Target::Host,
            ok: true,
            mechanism: "nftables".into(),
            rules_sha256: Some("ab".into()),
            rules: None,
            pids: vec![],
            verified_rtt_ms: Some(1.0),
            rolled_back: false,
            error: None,
            local: None,
            at: "2026-12-02T10:00:01Z".into(),
        };
        let e = timeline_event(&r, &o, 1);
        assert!(KINDS.contains(&e.kind.as_str()) && SOURCES.contains(&e.source.as_str()));
        assert_eq!(e.message, "isolated host (by admin: r-1)");
        assert_eq!(e.attrs["rules_sha256"], "ab");
    }
}
