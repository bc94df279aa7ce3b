//! Last breath: evidence sent before it disappears. A host or a container marked by the
//! collector (a `mark_last_breath` containment action, kept in the containment state) gets a
//! bounded `last-breath` collection — the volatile documents, the flight recorder and, for a
//! container, its writable layer — when the host shuts down (SIGTERM: systemd stopping the
//! unit before the network goes, a DaemonSet's pod terminating) or the container exits.
//!
//! The agent asks (`last_breath`, with a collection id of its own choosing) and the collector
//! answers with that collection, so its custody starts at the collector like any other. At a
//! shutdown the agent waits at most `last_breath_secs`; whatever was not sealed by then is
//! listed in the collection's `collection_done` with the reason, so custody says how much made
//! it.

use super::{lock, Agent};
use crate::containment::Active;
use cairn_protocol::containment::{Action, LastBreathCall, LastBreathEvent, Target};
use cairn_protocol::wire::Message;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often marked containers' cgroups are looked at (one small file each).
pub const WATCH_PERIOD: Duration = Duration::from_millis(250);
/// How long the collector has to answer a last-breath call.
const ANSWER_WAIT: Duration = Duration::from_secs(5);
/// At a shutdown, the time kept after the budget to deliver the final `collection_done`.
const DELIVERY_WAIT: Duration = Duration::from_millis(1500);

/// What the daemon tracks of last breaths: the calls the collector refused, and the marks
/// already answered (a container's fires once).
#[derive(Default)]
pub struct LastBreaths {
    refused: Mutex<HashMap<String, String>>,
    fired: Mutex<HashSet<String>>,
}

impl LastBreaths {
    pub fn refused(&self, collection_id: &str, reason: &str) {
        tracing::warn!("last-breath collection {collection_id} refused by the collector: {reason}");
        lock(&self.refused).insert(collection_id.to_string(), reason.to_string());
    }
}

/// How a last-breath call ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    /// The collector sent the collection; the agent runs it.
    Started,
    Refused(String),
    /// No answer in time (not connected, or the collector is slow).
    NoAnswer,
}

fn marks(agent: &Agent) -> Vec<Active> {
    match agent.containment.active() {
        Ok(a) => a
            .into_iter()
            .filter(|a| a.action == Action::MarkLastBreath)
            .collect(),
        Err(e) => {
            tracing::warn!("last-breath marks not read: {e}");
            Vec::new()
        }
    }
}

/// Asks the collector for the collection and waits (at most `ANSWER_WAIT`) for its answer.
async fn call(
    agent: &Arc<Agent>,
    event: LastBreathEvent,
    mark: &Active,
    budget: Option<Duration>,
    detail: String,
) -> (String, Answer) {
    let id = uuid::Uuid::new_v4().to_string();
    let c = LastBreathCall {
        collection_id: id.clone(),
        event,
        target: mark.target.clone(),
        mark_id: mark.request_id.clone(),
        budget_secs: budget.map(|b| b.as_secs()),
        detail: Some(detail.chars().take(1000).collect()),
        at: cairn_protocol::rfc3339::now(),
    };
    tracing::warn!(
        "last breath of {} ({}): asking the collector for collection {id}",
        mark.target.describe(),
        event.as_str()
    );
    agent.outbox.push(Message::LastBreath(Box::new(c)));
    let until = Instant::now() + ANSWER_WAIT;
    while Instant::now() < until {
        if lock(&agent.seen).contains(&id) {
            return (id, Answer::Started);
        }
        if let Some(why) = lock(&agent.last_breaths.refused).remove(&id) {
            return (id, Answer::Refused(why));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (id, Answer::NoAnswer)
}

/// SIGTERM on a marked host: the last-breath collection, within `budget`. Returns at once when
/// the host is not marked.
pub async fn on_shutdown(agent: &Arc<Agent>, budget: Duration) {
    let Some(mark) = marks(agent).into_iter().find(|m| m.target == Target::Host) else {
        return;
    };
    let deadline = Instant::now() + budget;
    let (id, answer) = call(
        agent,
        LastBreathEvent::HostShutdown,
        &mark,
        Some(budget),
        format!(
            "SIGTERM; the agent waits at most {} s before it exits",
            budget.as_secs()
        ),
    )
    .await;
    match answer {
        Answer::Started => {}
        Answer::Refused(why) => {
            tracing::error!("no last breath: the collector refused it: {why}");
            return;
        }
        Answer::NoAnswer => {
            tracing::error!(
                "no last breath: the collector did not answer within {} s (the agent is not connected?)",
                ANSWER_WAIT.as_secs()
            );
            return;
        }
    }
    // Done when the collection is over and its `collection_done` was read by the collector.
    let done = |a: &Agent| {
        !lock(&a.running).contains(&id)
            && !a.outbox.undelivered().iter().any(|m| {
                matches!(m, Message::CollectionDone { collection_id, .. } if *collection_id == id)
            })
    };
    while Instant::now() < deadline {
        if done(agent) {
            tracing::warn!("last-breath collection {id} sent");
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if !lock(&agent.running).contains(&id) {
        // Finished, its answer not yet read: a little longer for it.
        wait_delivery(agent, &id).await;
        return;
    }
    // Out of time: the collection ends here, and says what did not make it.
    let planned = lock(&agent.planned).get(&id).cloned().unwrap_or_default();
    let sealed = lock(&agent.sealed).get(&id).cloned().unwrap_or_default();
    let missing: Vec<&String> = planned.iter().filter(|i| !sealed.contains(*i)).collect();
    tracing::error!(
        "last-breath budget of {} s spent: {} of {} item(s) sealed",
        budget.as_secs(),
        sealed.len(),
        planned.len()
    );
    agent.outbox.push(Message::CollectionDone {
        collection_id: id.clone(),
        items: planned.clone(),
        errors: vec![format!(
            "last breath: the host shut down and the agent's budget of {} s ran out with {} of {} item(s) sealed; not sent: {}",
            budget.as_secs(),
            sealed.len(),
            planned.len(),
            if missing.is_empty() { "(items not yet planned)".to_string() } else { missing.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ") }
        )],
    });
    wait_delivery(agent, &id).await;
}

async fn wait_delivery(agent: &Agent, id: &str) {
    let until = Instant::now() + DELIVERY_WAIT;
    while Instant::now() < until {
        let pending = agent.outbox.undelivered().iter().any(
            |m| matches!(m, Message::CollectionDone { collection_id, .. } if collection_id == id),
        );
        if !pending {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tracing::error!("last-breath collection {id}: its end was not acknowledged before exit");
}

/// Whether a container's cgroup holds no process any more (or is gone).
fn emptied(cgroup: &Path) -> bool {
    match std::fs::read_to_string(cgroup.join("cgroup.events")) {
        Ok(t) => t.lines().any(|l| l.trim() == "populated 0"),
        Err(_) => !cgroup.is_dir(),
    }
}

/// Forever: a marked container whose cgroup empties gets its last breath, once; its mark is
/// then removed here and the removal reported to the collector (as the agent's own action).
pub async fn watch_containers(agent: Arc<Agent>, period: Duration) {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let a = agent.clone();
        let due: Vec<Active> = match tokio::task::spawn_blocking(move || {
            marks(&a)
                .into_iter()
                .filter(|m| matches!(m.target, Target::Container { .. }))
                .filter(|m| m.cgroup.as_deref().is_some_and(emptied))
                .collect()
        })
        .await
        {
            Ok(d) => d,
            Err(_) => continue,
        };
        for m in due {
            if !lock(&agent.last_breaths.fired).insert(m.request_id.clone()) {
                continue;
            }
            tokio::spawn(container_exit(agent.clone(), m));
        }
    }
}

async fn container_exit(agent: Arc<Agent>, mark: Active) {
    let cg = mark
        .cgroup
        .as_deref()
        .map(|c| c.display().to_string())
        .unwrap_or_default();
    let layer = mark
        .layer
        .as_deref()
        .map(|l| l.display().to_string())
        .unwrap_or_else(|| "none found".into());
    let (id, answer) = call(
        &agent,
        LastBreathEvent::ContainerExit,
        &mark,
        None,
        format!("cgroup {cg} emptied; writable layer {layer}"),
    )
    .await;
    let why = match &answer {
        Answer::Started => format!("container exited; last-breath collection {id}"),
        Answer::Refused(r) => {
            format!("container exited; the collector refused its last breath: {r}")
        }
        Answer::NoAnswer => {
            // Not connected: asked again at the next look (the mark stays).
            lock(&agent.last_breaths.fired).remove(&mark.request_id);
            return;
        }
    };
    let error = match answer {
        Answer::Refused(r) => Some(r),
        _ => None,
    };
    let (c, m) = (agent.containment.clone(), mark.clone());
    match tokio::task::spawn_blocking(move || c.forget_mark(&m, &why, error)).await {
        Ok(Ok(out)) => {
            // A gone mark is not seen again: nothing to remember it by.
            lock(&agent.last_breaths.fired).remove(&mark.request_id);
            super::containment::report(&agent, out).await;
        }
        Ok(Err(e)) => tracing::warn!(
            "last-breath mark of {} not removed: {e}",
            mark.target.describe()
        ),
        Err(e) => tracing::warn!(
            "last-breath mark of {} not removed: {e}",
            mark.target.describe()
        ),
    }
}

/// The writable layer a `last-breath` collection of `container` takes: the one recorded by its
/// mark, else the running container's.
pub fn writable_layer(agent: &Agent, container: &str) -> Result<PathBuf, String> {
    let t = Target::Container {
        id: container.to_string(),
    };
    if let Some(l) = marks(agent)
        .into_iter()
        .filter(|m| m.target.same_as(&t))
        .find_map(|m| m.layer)
    {
        return Ok(l);
    }
    agent
        .containment
        .writable_layer(container)
        .map_err(|e| e.to_string())
}
