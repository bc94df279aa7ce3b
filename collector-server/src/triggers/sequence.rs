//! What follows an alert's collection when a `[[containment]]` rule says so: each step starts
//! when the one before it is finished (a collection sealed, partial or failed; a containment
//! action done or failed), so the network state is captured before an isolation changes it.
//!
//! Sequences live in the store and are advanced by one loop in the server ([`Sequences::advance`]
//! every half second): a restarted collector goes on where it was.

use crate::collections::Collections;
use crate::containment::Containments;
use crate::error::Result;
use crate::storage::{CollectionStatus, ContainmentStatus, SequenceRow, Stores};
use cairn_protocol::containment::{Action, Request, Target};
use cairn_protocol::manifest::CollectRequest;
use serde_json::{json, Value};

/// Most sequences looked at per round.
const PER_ROUND: u32 = 200;

pub struct Sequences {
    stores: Stores,
}

impl Sequences {
    pub fn new(stores: Stores) -> Sequences {
        Sequences { stores }
    }

    /// Steps `steps` on `host_id` after collection `first`; `context` carries the alert's
    /// `reason`, `requested_by`, `pid`, `container_id` and `rule`.
    pub fn start(
        &self,
        host_id: &str,
        first: &str,
        steps: Vec<String>,
        context: Value,
    ) -> Result<String> {
        let now = cairn_protocol::rfc3339::now();
        let row = SequenceRow {
            id: uuid::Uuid::new_v4().to_string(),
            host_id: host_id.to_string(),
            steps,
            next: 0,
            waiting_kind: "collection".into(),
            waiting_id: first.to_string(),
            status: "running".into(),
            context,
            log: vec![format!("collection {first} (the alert's)")],
            created_at: now.clone(),
            updated_at: now,
        };
        self.stores.meta.insert_sequence(&row)?;
        Ok(row.id)
    }

    /// Starts every next step whose predecessor is finished; how many steps started.
    pub fn advance(&self, collections: &Collections, containments: &Containments) -> Result<usize> {
        let mut started = 0;
        for mut s in self.stores.meta.running_sequences(PER_ROUND)? {
            if !self.finished(&s, collections, containments)? {
                continue;
            }
            // Steps that cannot apply (no container to freeze) are skipped, not waited for.
            loop {
                let Some(step) = s.steps.get(s.next).cloned() else {
                    s.status = "done".into();
                    s.log.push("done".into());
                    break;
                };
                s.next += 1;
                match self.start_step(&s, &step, collections, containments) {
                    Ok(Some((kind, id))) => {
                        s.log.push(format!("{step}: {kind} {id}"));
                        s.waiting_kind = kind.into();
                        s.waiting_id = id;
                        started += 1;
                        break;
                    }
                    Ok(None) => s
                        .log
                        .push(format!("{step}: skipped, the alert names no container")),
                    Err(e) => s.log.push(format!("{step}: not started: {e}")),
                }
            }
            self.stores.meta.update_sequence(&s)?;
        }
        Ok(started)
    }

    fn finished(
        &self,
        s: &SequenceRow,
        collections: &Collections,
        containments: &Containments,
    ) -> Result<bool> {
        Ok(match s.waiting_kind.as_str() {
            "collection" => match collections.get(&s.waiting_id) {
                Ok(c) => matches!(
                    c.status,
                    CollectionStatus::Sealed | CollectionStatus::Partial | CollectionStatus::Failed
                ),
                // Gone (never stored): nothing to wait for.
                Err(_) => true,
            },
            "containment" => match containments.get(&s.waiting_id) {
                Ok(c) => matches!(
                    c.status,
                    ContainmentStatus::Done | ContainmentStatus::Failed
                ),
                Err(_) => true,
            },
            _ => true,
        })
    }

    /// Starts one step: what it waits for, or None when it does not apply.
    fn start_step(
        &self,
        s: &SequenceRow,
        step: &str,
        collections: &Collections,
        containments: &Containments,
    ) -> Result<Option<(&'static str, String)>> {
        let host = self
            .stores
            .meta
            .get_host(&s.host_id)?
            .ok_or_else(|| crate::error::Error::NotFound(format!("host {}", s.host_id)))?;
        let ctx = &s.context;
        let reason = ctx["reason"].as_str().unwrap_or("trigger").to_string();
        let by = format!(
            "{} (triggers.toml [[containment]])",
            ctx["requested_by"].as_str().unwrap_or("trigger")
        );
        let container = ctx["container_id"].as_str().map(str::to_string);
        let pid = ctx["pid"].as_u64().and_then(|p| u32::try_from(p).ok());
        let contain = |action: Action, target: Target| -> Result<Option<(&'static str, String)>> {
            let req = Request {
                id: String::new(),
                action,
                target,
                allow: Vec::new(),
                reason: reason.clone(),
                requested_by: String::new(),
            };
            let row = containments.request(&host, req, &by)?;
            Ok(Some(("containment", row.id)))
        };
        match step {
            "isolate" => contain(Action::Isolate, Target::Host),
            "mark_last_breath" => contain(Action::MarkLastBreath, Target::Host),
            "mark_last_breath_container" => match container {
                None => Ok(None),
                Some(id) => contain(Action::MarkLastBreath, Target::Container { id }),
            },
            "isolate_container" | "freeze_container" => match container {
                None => Ok(None),
                Some(id) => {
                    let action = if step == "isolate_container" {
                        Action::Isolate
                    } else {
                        Action::Freeze
                    };
                    contain(action, Target::Container { id })
                }
            },
            profile => {
                // Memory of nothing named is a triage, as for the alert's own collection.
                let profile = if profile == "memory" && pid.is_none() && container.is_none() {
                    "triage"
                } else {
                    profile
                };
                let req = CollectRequest {
                    collection_id: uuid::Uuid::new_v4().to_string(),
                    profile: profile.to_string(),
                    reason: reason.clone(),
                    requested_by: by.clone(),
                    paths: Vec::new(),
                    pid,
                    container_id: container.clone(),
                    devices: Vec::new(),
                };
                collections.request(&host, &req, json!({"sequence": s.id, "rule": ctx["rule"]}))?;
                Ok(Some(("collection", req.collection_id)))
            }
        }
    }
}
