//! Containment: `POST/DELETE /api/v1/hosts/{id}/isolation` (the host, or one container),
//! `POST /api/v1/hosts/{id}/{freeze,thaw,kill}` (a container or a process tree),
//! `GET /api/v1/hosts/{id}/containment` (what is in force, the history, the custody chain) and
//! `GET /api/v1/containment/{id}` (one action, to wait for the agent's answer), and
//! `POST/DELETE /api/v1/hosts/{id}/last-breath` (mark the host, or one container, for a
//! last-breath collection when it shuts down or exits).
//!
//! Only people contain: the `trigger` role is refused here, because a detection system may
//! contain only where a rule of the trigger policy says so.

use super::auth::READERS;
use super::{parse_json, to_value, ApiResult, Caller, S};
use crate::error::Error;
use crate::storage::Role;
use axum::extract::{Path, State as AxState};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use cairn_protocol::containment::{Action, Allow, Request, Target};
use serde::Deserialize;
use serde_json::{json, Value};

/// Who may isolate, release, freeze, thaw and kill by hand.
const CONTAINERS: &[Role] = &[Role::Admin, Role::Analyst];

pub(super) fn routes() -> Router<S> {
    Router::new()
        .route(
            "/api/v1/hosts/{id}/isolation",
            post(isolate).delete(release),
        )
        .route("/api/v1/hosts/{id}/freeze", post(freeze))
        .route("/api/v1/hosts/{id}/thaw", post(thaw))
        .route("/api/v1/hosts/{id}/kill", post(kill))
        .route(
            "/api/v1/hosts/{id}/last-breath",
            post(mark_last_breath).delete(unmark_last_breath),
        )
        .route("/api/v1/hosts/{id}/containment", get(host_containment))
        .route("/api/v1/containment/{id}", get(show))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    reason: String,
    /// A container id (or a unique prefix): only its cgroup, not the host.
    #[serde(default)]
    container: Option<String>,
    /// A process and its descendants (freeze, thaw, kill).
    #[serde(default)]
    pid: Option<u32>,
    /// What stays reachable (isolate only) beside the collector and loopback.
    #[serde(default)]
    allow: Vec<Allow>,
}

fn target(b: &Body) -> Result<Target, Error> {
    match (&b.container, b.pid) {
        (Some(_), Some(_)) => Err(Error::invalid("name a container or a pid, not both")),
        (Some(c), None) => Ok(Target::Container {
            id: c.trim().to_ascii_lowercase(),
        }),
        (None, Some(pid)) => Ok(Target::Process { pid }),
        (None, None) => Ok(Target::Host),
    }
}

async fn act(
    state: S,
    caller: Caller,
    host: &str,
    action: Action,
    body: &[u8],
) -> ApiResult<(StatusCode, Json<Value>)> {
    if caller.role == Role::Trigger {
        return Err(Error::Forbidden(
            "the trigger role contains a host only where a rule of the trigger policy says so; \
             ask an analyst or an admin"
                .into(),
        )
        .into());
    }
    caller.require(CONTAINERS)?;
    let b: Body = parse_json(body)?;
    let req = Request {
        id: String::new(),
        action,
        target: target(&b)?,
        allow: b.allow,
        reason: b.reason,
        requested_by: String::new(),
    };
    let host = crate::hosts::resolve(state.meta(), host)?;
    let row = state.containments.request(&host, req, &caller.actor())?;
    let connected = state.sessions.is_connected(&host.id);
    let mut v = to_value(&row)?;
    v["agent_connected"] = json!(connected);
    Ok((StatusCode::ACCEPTED, Json(v)))
}

async fn isolate(
    AxState(state): AxState<S>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    act(state, caller, &id, Action::Isolate, &body).await
}

async fn release(
    AxState(state): AxState<S>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    act(state, caller, &id, Action::Release, &body).await
}

async fn freeze(
    AxState(state): AxState<S>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    act(state, caller, &id, Action::Freeze, &body).await
}

async fn thaw(
    AxState(state): AxState<S>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    act(state, caller, &id, Action::Thaw, &body).await
}

async fn kill(
    AxState(state): AxState<S>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    act(state, caller, &id, Action::Kill, &body).await
}

async fn mark_last_breath(
    AxState(state): AxState<S>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    act(state, caller, &id, Action::MarkLastBreath, &body).await
}

async fn unmark_last_breath(
    AxState(state): AxState<S>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    act(state, caller, &id, Action::UnmarkLastBreath, &body).await
}

async fn host_containment(
    AxState(state): AxState<S>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.require(READERS)?;
    let host = crate::hosts::resolve(state.meta(), &id)?;
    let history = state.containments.history(&host.id)?;
    let in_force = crate::containment::in_force(&history);
    let chain = crate::containment::chain_of(&host.id);
    let records = state.meta().custody_records(&chain)?;
    Ok(Json(json!({
        "host_id": host.id,
        "hostname": host.hostname,
        "in_force": in_force,
        "history": history,
        "custody_chain": chain,
        "custody": records,
        "sequences": state.meta().sequences_of_host(&host.id, 50)?,
    })))
}

async fn show(
    AxState(state): AxState<S>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.require(READERS)?;
    Ok(Json(to_value(&state.containments.get(&id)?)?))
}
