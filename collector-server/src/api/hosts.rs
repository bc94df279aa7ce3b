//! `GET /api/v1/hosts`, `GET /api/v1/hosts/{id}/events`.

use super::auth::{ADMINS, READERS};
use super::{parse_json, to_value, ApiResult, Caller, S};
use crate::error::Error;
use crate::timeline::search::time_param;
use axum::extract::{Path, Query, State as AxState};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

pub(super) fn routes() -> Router<S> {
    Router::new()
        .route("/api/v1/hosts", get(list_hosts))
        .route("/api/v1/hosts/{id}/events", get(host_events))
        .route("/api/v1/hosts/{id}/retire", post(retire_host))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RetireBody {
    reason: String,
}

/// Retire a host: its agent's certificate is refused from now on (it must enroll again to be
/// collected from), names and triggers no longer find it, its collections and custody stay.
async fn retire_host(
    AxState(state): AxState<S>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<Json<Value>> {
    caller.require(ADMINS)?;
    let b: RetireBody = parse_json(&body)?;
    if b.reason.trim().is_empty() {
        return Err(Error::invalid("\"reason\" must say why the host is retired").into());
    }
    let host = crate::hosts::resolve(state.meta(), &id)?;
    if !state
        .meta()
        .retire_host(&host.id, &format!("{} ({})", b.reason, caller.actor()))?
    {
        return Err(Error::conflict(format!("host {} is already retired", host.id)).into());
    }
    tracing::warn!(
        "{} retired host {} ({}): {}",
        caller.actor(),
        host.id,
        host.hostname,
        b.reason
    );
    Ok(Json(json!({"retired": host.id, "hostname": host.hostname})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    /// `score`: each host's outlier score among its peers (with its reasons), highest first.
    sort: Option<String>,
    /// The profiling window of the score (`24h` by default).
    window: Option<String>,
}

async fn list_hosts(
    AxState(state): AxState<S>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    caller.require(READERS)?;
    let scores = match q.sort.as_deref() {
        None | Some("name") => None,
        Some("score") => Some(super::fleet::report(&state, q.window.as_deref()).await?),
        Some(other) => {
            return Err(Error::invalid(format!(
                "sort={other:?}: sort by \"name\" (the default) or \"score\""
            ))
            .into())
        }
    };
    let mut hosts = Vec::new();
    for h in state.meta().list_hosts()? {
        let connected = state.sessions.is_connected(&h.id);
        let mut v = to_value(&h)?;
        v["connected"] = json!(connected);
        v["containment"] = to_value(&state.containments.in_force(&h.id)?)?;
        if let Some(r) = &scores {
            match r.hosts.iter().find(|s| s.host_id == h.id) {
                Some(s) => {
                    v["score"] = json!(s.score);
                    v["outlier"] = json!(s.outlier);
                    v["score_reasons"] = json!(s.reasons);
                    v["groups"] = json!(s.groups);
                }
                None => {
                    v["score"] = Value::Null;
                    v["score_note"] =
                        json!("in no group (its agent gave no cloud context): not scored");
                }
            }
        }
        hosts.push(v);
    }
    if scores.is_some() {
        hosts.sort_by(|a, b| {
            let s = |v: &Value| v["score"].as_f64().unwrap_or(-1.0);
            s(b).total_cmp(&s(a))
        });
    }
    Ok(Json(json!({ "hosts": hosts })))
}

#[derive(Deserialize)]
struct EventsQuery {
    /// RFC 3339; default: an hour ago.
    from: Option<String>,
    /// RFC 3339; default: now.
    to: Option<String>,
    kind: Option<String>,
    limit: Option<u32>,
}

/// Live events a host's sensor sent, by time.
async fn host_events(
    AxState(state): AxState<S>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Query(q): Query<EventsQuery>,
) -> ApiResult<Json<Value>> {
    caller.require(READERS)?;
    let host = crate::hosts::resolve(state.meta(), &id)?;
    let now = time::OffsetDateTime::now_utc().unix_timestamp_nanos() as i64;
    let from = q
        .from
        .as_deref()
        .map(|s| time_param(s, "from"))
        .transpose()?
        .unwrap_or(now - 3600 * 1_000_000_000);
    let to =
        q.to.as_deref()
            .map(|s| time_param(s, "to"))
            .transpose()?
            .unwrap_or(now);
    let events = state.meta().query_events(
        &host.id,
        from,
        to,
        q.kind.as_deref(),
        q.limit.unwrap_or(1000).min(100_000),
    )?;
    Ok(Json(
        json!({"host_id": host.id, "count": events.len(), "events": events}),
    ))
}
