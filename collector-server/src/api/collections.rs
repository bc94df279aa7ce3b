//! `POST|GET /api/v1/collections`, `GET /api/v1/collections/{id}`, its custody log and
//! `POST /api/v1/collections/{id}/verify`.

use super::auth::{COLLECTORS, READERS};
use super::{internal, parse_json, to_value, ApiResult, Caller, S};
use crate::collections::Ask;
use crate::state::State;
use crate::storage::Role;
use axum::body::Bytes;
use axum::extract::{Path, Query, State as AxState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

pub(super) fn routes() -> Router<S> {
    Router::new()
        .route(
            "/api/v1/collections",
            post(request_collection).get(list_collections),
        )
        .route("/api/v1/collections/{id}", get(show_collection))
        .route("/api/v1/collections/{id}/custody", get(custody_log))
        .route("/api/v1/collections/{id}/verify", post(verify_collection))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CollectionBody {
    host: String,
    profile: String,
    reason: String,
    #[serde(default)]
    paths: Vec<String>,
    #[serde(default)]
    pid: Option<u32>,
    #[serde(default)]
    container_id: Option<String>,
    /// Block devices for the `disk` profile.
    #[serde(default)]
    devices: Vec<String>,
}

async fn request_collection(
    AxState(state): AxState<S>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> ApiResult<Response> {
    caller.require(COLLECTORS)?;
    let b: CollectionBody = parse_json(&body)?;
    let ask = Ask {
        profile: b.profile,
        reason: b.reason,
        paths: b.paths,
        pid: b.pid,
        container_id: b.container_id,
        devices: b.devices,
    };
    ask.check()?;
    let host = crate::hosts::resolve(state.meta(), &b.host)?;
    if caller.role == Role::Trigger {
        state.triggers.admit_collection(&ask, &host)?;
    }
    let req = ask.into_request(caller.actor());
    let connected = state.collections.request(&host, &req, json!({}))?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"id": req.collection_id, "status": "requested", "host_id": host.id, "agent_connected": connected})),
    )
        .into_response())
}

#[derive(Deserialize)]
struct ListQuery {
    host: Option<String>,
    limit: Option<u32>,
    /// A collection id: the page after it (the `next` of the page before).
    before: Option<String>,
}

async fn list_collections(
    AxState(state): AxState<S>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    caller.require(READERS)?;
    // A host is named as anywhere else (hostname, instance id, id prefix); one that does not
    // exist is an error, not an empty list.
    let host = match q.host.as_deref() {
        Some(h) => Some(crate::hosts::resolve(state.meta(), h)?.id),
        None => None,
    };
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    // A cursor that names nothing would page from nowhere: an error, not the first page.
    let before = match q.before.as_deref() {
        Some(b) => Some(state.collections.get(b)?.id),
        None => None,
    };
    let rows = state
        .meta()
        .list_collections(host.as_deref(), before.as_deref(), limit)?;
    // A full page has a cursor to the next one; the last page has none.
    let next = (rows.len() == limit as usize)
        .then(|| rows.last().map(|r| r.id.clone()))
        .flatten();
    Ok(Json(json!({ "collections": rows, "next": next })))
}

/// A collection with its hostname and every item (source, gaps, how acquisition ended).
pub(crate) fn collection_view(state: &State, id: &str) -> ApiResult<Value> {
    let c = state.collections.get(id)?;
    let hostname = state.meta().get_host(&c.host_id)?.map(|h| h.hostname);
    let mut items = Vec::new();
    let rows = state.meta().items_of_collection(&c.id)?;
    let progress = crate::collections::progress(&rows, time::OffsetDateTime::now_utc());
    for i in rows {
        let source = i.header.as_ref().map(|h| to_value(&h.source)).transpose()?;
        let gaps = i.manifest.as_ref().map(|m| m.gaps.len()).unwrap_or(0);
        let acq = i.manifest.as_ref().map(|m| m.status);
        let acq_error = i.manifest.as_ref().and_then(|m| m.error.clone());
        let mut v = to_value(&i)?;
        v["source"] = source.unwrap_or(Value::Null);
        v["gaps"] = json!(gaps);
        v["acquisition_status"] = json!(acq);
        v["acquisition_error"] = json!(acq_error);
        v["expected_len"] = json!(i.header.as_ref().and_then(|h| h.expected_len));
        items.push(v);
    }
    let mut v = to_value(&c)?;
    v["hostname"] = json!(hostname);
    v["items"] = Value::Array(items);
    v["progress"] = to_value(&progress)?;
    Ok(v)
}

async fn show_collection(
    AxState(state): AxState<S>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.require(READERS)?;
    Ok(Json(collection_view(&state, &id)?))
}

async fn custody_log(
    AxState(state): AxState<S>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.require(READERS)?;
    let id = state.collections.get(&id)?.id;
    let records = state.meta().custody_records(&id)?;
    Ok(Json(json!({
        "collection_id": id,
        "public_key": state.custody.public_key_hex(),
        "algorithm": "ed25519 over the SHA-256 record hash; see protocol/src/custody.rs",
        "records": records,
    })))
}

async fn verify_collection(
    AxState(state): AxState<S>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.require(READERS)?;
    let st = state.clone();
    let actor = caller.actor();
    let report = tokio::task::spawn_blocking(move || st.collections.verify(&id, &actor))
        .await
        .map_err(|e| internal("verification task", e))??;
    Ok(Json(to_value(&report)?))
}
