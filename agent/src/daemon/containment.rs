//! Containment commands from the collector: enforced by [`crate::containment`], then proven
//! by a round trip to the collector through what was enforced — an isolation that cut the
//! agent off is rolled back at once — and answered with `contained`.
//!
//! Every answer is written to the state directory before it is sent and kept until the
//! collector acknowledges it, so an answer outlives a lost connection or a restart; a
//! break-glass release done on the host (`cairn-agent isolation release --local`) waits there
//! the same way.

use super::{lock, Agent};
use crate::containment::{failure, ContainError};
use crate::transport::control;
use cairn_protocol::containment::{Action, Outcome, Request, Target};
use cairn_protocol::wire::Message;
use std::sync::Arc;
use std::time::Duration;

/// How long the round trip through an isolation may take before it is rolled back.
const VERIFY_TIMEOUT: Duration = Duration::from_secs(15);

/// A command (once per id: the collector sends it again after a reconnect until it has the
/// answer, which waits in the outbox).
pub(super) fn contain(agent: &Arc<Agent>, req: Request) {
    if !lock(&agent.seen_containment).insert(req.id.clone()) {
        return;
    }
    tracing::warn!(
        "containment {}: {} {} requested by {}: {:?}",
        req.id,
        req.action.as_str(),
        req.target.describe(),
        req.requested_by,
        req.reason
    );
    tokio::spawn(run(agent.clone(), req));
}

async fn run(agent: Arc<Agent>, req: Request) {
    let out = enforce(&agent, &req).await;
    if out.ok {
        tracing::warn!(
            "containment {}: {} {} in force ({})",
            out.id,
            out.action.as_str(),
            out.target.describe(),
            out.mechanism
        );
    } else {
        tracing::error!(
            "containment {}: {} {} not in force: {}",
            out.id,
            out.action.as_str(),
            out.target.describe(),
            out.error.as_deref().unwrap_or("?")
        );
    }
    report(&agent, out).await;
}

async fn enforce(agent: &Arc<Agent>, req: &Request) -> Outcome {
    if let Err(why) = req.check() {
        return failure(req, &ContainError::Refused(why));
    }
    // The collectors' addresses are pinned now: every instance this agent may fail over to.
    let collector = agent.connector.addrs();
    let (c, r) = (agent.containment.clone(), req.clone());
    let applied = tokio::task::spawn_blocking(move || c.apply(&r, &collector)).await;
    let mut out = match applied {
        Ok(Ok(o)) => o,
        Ok(Err(e)) => return failure(req, &e),
        Err(e) => return failure(req, &ContainError::Refused(format!("the task died: {e}"))),
    };
    if !out.ok || !matches!(req.action, Action::Isolate | Action::Release) {
        return out;
    }
    // A new connection through what is now enforced: the proof the channel survived.
    let probe = tokio::time::timeout(
        VERIFY_TIMEOUT,
        control::probe(&agent.connector, agent.host()),
    )
    .await;
    match probe {
        Ok(Ok(p)) => out.verified_rtt_ms = Some(p.rtt.as_secs_f64() * 1000.0),
        failed => {
            let why = match failed {
                Ok(Err(e)) => format!("the collector could not be reached through it: {e:#}"),
                _ => format!(
                    "the collector did not answer through it within {} s",
                    VERIFY_TIMEOUT.as_secs()
                ),
            };
            if req.action == Action::Isolate {
                let (c, r) = (agent.containment.clone(), req.clone());
                return tokio::task::spawn_blocking(move || c.roll_back(&r, &why))
                    .await
                    .unwrap_or_else(|e| {
                        failure(req, &ContainError::Refused(format!("rolling back: {e}")))
                    });
            }
            // A release that lost the collector is still a release; say so.
            out.error = Some(why);
        }
    }
    out
}

/// Kept on disk, then queued for the control stream.
pub(super) async fn report(agent: &Arc<Agent>, out: Outcome) {
    let (c, o) = (agent.containment.clone(), out.clone());
    match tokio::task::spawn_blocking(move || c.queue_report(&o)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!("containment {}: answer not kept on disk: {e}", out.id),
        Err(e) => tracing::warn!("containment {}: answer not kept on disk: {e}", out.id),
    }
    agent.outbox.push(Message::Contained(Box::new(out)));
}

/// At start, before the first connection: what the state says is in force is put back, and
/// answers not yet acknowledged are queued again.
pub(super) fn restore(agent: &Agent) {
    match agent.containment.restore() {
        Ok(done) => {
            for o in done {
                if o.ok {
                    tracing::warn!(
                        "containment restored: {} {} ({})",
                        o.action.as_str(),
                        o.target.describe(),
                        o.mechanism
                    );
                } else {
                    tracing::error!(
                        "containment NOT restored: {} {}: {}",
                        o.action.as_str(),
                        o.target.describe(),
                        o.error.as_deref().unwrap_or("?")
                    );
                }
            }
        }
        Err(e) => tracing::error!("containment state not read: {e}"),
    }
    match agent.containment.pending_reports() {
        Ok(reports) => {
            for o in reports {
                lock(&agent.seen_containment).insert(o.id.clone());
                agent.outbox.push(Message::Contained(Box::new(o)));
            }
        }
        Err(e) => tracing::warn!("containment answers not read: {e}"),
    }
}

/// A break-glass release done while the agent runs (`cairn-agent isolation release --local`
/// is another process) is found within `every` and sent.
pub(super) async fn watch_reports(agent: Arc<Agent>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let c = agent.containment.clone();
        let Ok(Ok(reports)) = tokio::task::spawn_blocking(move || c.pending_reports()).await else {
            continue;
        };
        for o in reports {
            if lock(&agent.seen_containment).insert(o.id.clone()) {
                tracing::warn!(
                    "containment {}: {} {} done on the host itself; reporting it",
                    o.id,
                    o.action.as_str(),
                    o.target.describe()
                );
                agent.outbox.push(Message::Contained(Box::new(o)));
            }
        }
    }
}

/// The collector recorded answer `id`.
pub(super) fn acknowledged(agent: &Agent, id: &str) {
    if let Err(e) = agent.containment.acknowledge(id) {
        tracing::warn!("containment {id}: acknowledgment not kept: {e}");
    }
}

/// What network.json says of containment: what is in force here, as the state has it.
pub fn in_force_json(agent_containment: &crate::containment::Containment) -> serde_json::Value {
    match agent_containment.active() {
        Ok(active) => {
            let host = active
                .iter()
                .find(|a| a.action == Action::Isolate && a.target == Target::Host);
            serde_json::json!({
                "host": host,
                "containers": active.iter().filter(|a| a.action == Action::Isolate && matches!(a.target, Target::Container { .. })).collect::<Vec<_>>(),
                "frozen": active.iter().filter(|a| a.action == Action::Freeze).collect::<Vec<_>>(),
            })
        }
        Err(e) => serde_json::json!({"error": e.to_string()}),
    }
}
