//! `GET /api/v1/hosts/{id}/readiness` (a host's self-test history), `GET /api/v1/readiness`
//! (the fleet's verdicts per day).

use super::auth::READERS;
use super::{ApiResult, Caller, S};
use axum::extract::{Path, Query, State as AxState};
use axum::routing::get;
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

pub(super) fn routes() -> Router<S> {
    Router::new()
        .route("/api/v1/hosts/{id}/readiness", get(host_readiness))
        .route("/api/v1/readiness", get(fleet_readiness))
}

#[derive(Deserialize)]
struct ReadinessQuery {
    limit: Option<u32>,
    days: Option<u32>,
}

/// A host's readiness history (self-test reports, newest first).
async fn host_readiness(
    AxState(state): AxState<S>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Query(q): Query<ReadinessQuery>,
) -> ApiResult<Json<Value>> {
    caller.require(READERS)?;
    let host = crate::hosts::resolve(state.meta(), &id)?;
    let history = state
        .meta()
        .readiness_history(&host.id, q.limit.unwrap_or(100).min(10_000))?;
    Ok(Json(json!({
        "host_id": host.id,
        "hostname": host.hostname,
        "readiness": host.readiness,
        "since": host.readiness_since,
        "history": history,
    })))
}

/// The fleet's readiness per day: hosts that passed, warned, failed (last report of the day).
async fn fleet_readiness(
    AxState(state): AxState<S>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<ReadinessQuery>,
) -> ApiResult<Json<Value>> {
    caller.require(READERS)?;
    let days = q.days.unwrap_or(30).clamp(1, 3660);
    Ok(Json(
        json!({"days": days, "per_day": state.meta().fleet_readiness(days)?}),
    ))
}
