//! `GET /api/v1/fleet`: the fleet by architecture, each group's odd ones out first, each
//! score with its reasons.

use super::auth::READERS;
use super::{internal, to_value, ApiResult, Caller, S};
use crate::error::Error;
use crate::fleet::FleetReport;
use axum::extract::{Query, State as AxState};
use axum::routing::get;
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::Value;

pub(super) fn routes() -> Router<S> {
    Router::new().route("/api/v1/fleet", get(fleet))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FleetQuery {
    /// The profiling window back from now: `1h`, `24h` (the default), `7d`.
    window: Option<String>,
}

/// Longest window: profiles over more than a month compare what hosts did long ago.
const MAX_WINDOW_SECS: i64 = 31 * 86400;

async fn fleet(
    AxState(state): AxState<S>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<FleetQuery>,
) -> ApiResult<Json<Value>> {
    caller.require(READERS)?;
    let report = report(&state, q.window.as_deref()).await?;
    Ok(Json(to_value(&report)?))
}

/// The fleet report over `window` (default: the configured one).
pub(super) async fn report(state: &S, window: Option<&str>) -> ApiResult<FleetReport> {
    let mut fleet = state.fleet.clone();
    if let Some(w) = window {
        let secs =
            crate::datadir::parse_duration(w).map_err(|e| Error::invalid(format!("{e:#}")))?;
        if secs > MAX_WINDOW_SECS {
            return Err(Error::invalid(format!(
                "window {w:?} is longer than 31 days; profile a shorter window"
            ))
            .into());
        }
        fleet.window_ns = secs * 1_000_000_000;
    }
    let st = state.clone();
    let now = time::OffsetDateTime::now_utc().unix_timestamp_nanos() as i64;
    Ok(
        tokio::task::spawn_blocking(move || fleet.report(st.meta(), now))
            .await
            .map_err(|e| internal("fleet report task", e))??,
    )
}
