//! `POST /api/v1/triggers/{generic,guardduty,falco}`: an alert in, a collection (or the one
//! it repeats) out, and the steps a `[[containment]]` rule adds after it (`then`).

use super::auth::COLLECTORS;
use super::{ApiResult, Caller, S};
use crate::storage::HostRow;
use crate::triggers::priority::HostContext;
use crate::triggers::Triggers;
use axum::body::Bytes;
use axum::extract::{Path, State as AxState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Json, Router};
use cairn_protocol::manifest::CollectRequest;
use serde_json::{json, Value};

pub(super) fn routes() -> Router<S> {
    Router::new().route("/api/v1/triggers/{format}", post(trigger))
}

async fn trigger(
    AxState(state): AxState<S>,
    Extension(caller): Extension<Caller>,
    Path(format): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    caller.require(COLLECTORS)?;
    let alert = Triggers::read(&format, &body)?;
    let hosts = state.meta().list_hosts()?;
    let collection_id = uuid::Uuid::new_v4().to_string();
    // The host's standing among its peers; a fleet that cannot be profiled now leaves the
    // alert at its own severity, and says so, rather than failing the trigger.
    let now = time::OffsetDateTime::now_utc().unix_timestamp_nanos() as i64;
    let st = state.clone();
    let fleet = tokio::task::spawn_blocking(move || st.fleet_cache.get(&st.fleet, st.meta(), now))
        .await
        .map_err(|e| super::internal("fleet report task", e))?;
    let fleet_note = fleet
        .as_ref()
        .err()
        .map(|e| format!("fleet context not available ({e}): priority from the alert alone"));
    let context = |h: &HostRow| {
        let standing = fleet
            .as_ref()
            .ok()
            .and_then(|r| r.hosts.iter().find(|s| s.host_id == h.id));
        HostContext {
            score: standing.map(|s| s.score),
            outlier: standing.is_some_and(|s| s.outlier),
            features: standing.map(|s| s.features).unwrap_or(0),
            reasons: standing.map(|s| s.reasons.clone()).unwrap_or_default(),
            readiness: h.readiness.clone(),
            suspect: standing.filter(|s| s.outlier).and_then(|s| {
                let r = fleet.as_ref().ok()?;
                let found =
                    crate::fleet::suspect(state.meta(), &h.id, &s.odd_features, r.from_ns, r.to_ns);
                let p = found
                    .map_err(|e| tracing::warn!("fleet: no suspect process for {}: {e}", h.id))
                    .ok()??;
                let exe = p.exe.as_deref().unwrap_or("?");
                Some((
                    p.pid,
                    format!("pid {} ({exe}), the process that {}", p.pid, p.why),
                ))
            }),
        }
    };
    let d = state
        .triggers
        .decide(&alert, &hosts, &collection_id, &context)?;
    let mut priority_reasons = d.priority.reasons.clone();
    priority_reasons.extend(fleet_note);
    let answer = |id: &str, dedup: bool| {
        json!({"id": id, "host_id": d.host.id, "hostname": d.host.hostname, "profile": d.profile,
               "profile_note": d.profile_note, "matched_by": d.matched_by, "deduplicated": dedup,
               "priority": d.priority.priority, "priority_reasons": priority_reasons})
    };
    if let Some(existing) = &d.duplicate_of {
        tracing::info!(
            "trigger {} deduplicated into collection {existing}",
            alert.dedup_key
        );
        let mut v = answer(existing, true);
        v["status"] = json!("deduplicated");
        return Ok((StatusCode::OK, Json(v)).into_response());
    }
    let req = CollectRequest {
        collection_id: collection_id.clone(),
        profile: d.profile.clone(),
        reason: alert.reason.clone(),
        requested_by: caller.actor(),
        paths: alert.paths.clone(),
        pid: d.pid,
        container_id: d.container_id.clone().or(alert.container_id.clone()),
        devices: Vec::new(),
    };
    let alert_facts = json!({"alert_source": alert.source, "rule": alert.rule, "severity": alert.severity,
                             "dedup_key": alert.dedup_key, "matched_by": d.matched_by, "profile_note": d.profile_note,
                             "priority": d.priority.priority, "priority_reasons": priority_reasons});
    let connected = state.collections.request(&d.host, &req, alert_facts)?;
    // What a [[containment]] rule adds after it, step by step.
    let then = state.triggers.config.then_for(&alert);
    let sequence = if then.is_empty() {
        None
    } else {
        let ctx = json!({"reason": req.reason, "requested_by": req.requested_by, "pid": req.pid,
                         "container_id": req.container_id, "rule": alert.rule});
        Some(
            state
                .sequences
                .start(&d.host.id, &collection_id, then.clone(), ctx)?,
        )
    };
    tracing::info!(
        "{} trigger {:?} → collection {collection_id} ({}) on {} ({})",
        alert.source,
        alert.rule,
        d.profile,
        d.host.hostname,
        d.matched_by
    );
    let mut v: Value = answer(&collection_id, false);
    v["status"] = json!("requested");
    v["agent_connected"] = json!(connected);
    v["pid"] = json!(req.pid);
    v["container_id"] = json!(req.container_id);
    v["then"] = json!(then);
    v["sequence_id"] = json!(sequence);
    Ok((StatusCode::ACCEPTED, Json(v)).into_response())
}
