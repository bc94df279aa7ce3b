//! `GET /api/v1/tokens` (every API and enrollment token, never a secret) and
//! `DELETE /api/v1/tokens/{id_or_name}` (revoke): admin only.

use super::auth::ADMINS;
use super::{ApiResult, Caller, S};
use crate::error::Error;
use axum::extract::{Path, State as AxState};
use axum::routing::{delete, get};
use axum::{Extension, Json, Router};
use serde_json::{json, Value};

pub(super) fn routes() -> Router<S> {
    Router::new()
        .route("/api/v1/tokens", get(list_tokens))
        .route("/api/v1/tokens/{id}", delete(revoke))
}

async fn list_tokens(
    AxState(state): AxState<S>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<Value>> {
    caller.require(ADMINS)?;
    Ok(Json(json!({"tokens": state.meta().list_tokens()?})))
}

async fn revoke(
    AxState(state): AxState<S>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.require(ADMINS)?;
    let n = state.meta().revoke_tokens(&id)?;
    if n == 0 {
        return Err(Error::not_found(format!(
            "no token {id:?} to revoke (give a token id from `cairn tokens`, 6 hex digits or more, or an API token's name)"
        ))
        .into());
    }
    tracing::warn!("{} revoked {n} token(s) named {id:?}", caller.actor());
    Ok(Json(json!({"revoked": n})))
}
