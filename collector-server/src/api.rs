//! HTTP API v1 for people and detection systems (bearer tokens, JSON).
//!
//! HTTPS with the collector's certificate by default; plain HTTP only on loopback when asked.
//! Request bodies are parsed by hand rather than by axum's `Json` extractor so that a malformed
//! request gets a JSON error that names the field, the same shape as every other error.

use crate::db::Role;
use crate::ingest::{ItemIngest, Opened};
use crate::server::State;
use anyhow::{Context, Result};
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, Request, State as AxState};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Extension, Json, Router};
use cairn_protocol::manifest::{CollectRequest, CollectionRecord};
use cairn_protocol::wire::{Frame, Message};
use serde::Deserialize;
use serde_json::{json, Value};
use std::io::Read;
use std::sync::Arc;

type S = Arc<State>;

#[derive(Debug)]
pub struct ApiError(pub StatusCode, pub String);

impl ApiError {
    pub(crate) fn new(code: StatusCode, msg: impl Into<String>) -> ApiError {
        ApiError(code, msg.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({"error": self.1}))).into_response()
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> Self {
        tracing::error!("internal error: {e:#}");
        ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("internal error: {e:#}"),
        )
    }
}

pub(crate) type ApiResult<T> = std::result::Result<T, ApiError>;

/// Who is calling, from their token.
#[derive(Debug, Clone)]
pub struct Caller {
    pub name: String,
    pub role: Role,
}

impl Caller {
    pub(crate) fn actor(&self) -> String {
        format!("api:{}", self.name)
    }
    pub(crate) fn require(&self, allowed: &[Role]) -> ApiResult<()> {
        if allowed.contains(&self.role) {
            Ok(())
        } else {
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                format!(
                    "token {:?} has role {} which may not do this",
                    self.name,
                    self.role.as_str()
                ),
            ))
        }
    }
}

pub(crate) const READERS: &[Role] = &[Role::Admin, Role::Analyst];
pub(crate) const COLLECTORS: &[Role] = &[Role::Admin, Role::Analyst, Role::Trigger];

pub fn router(state: S) -> Router {
    Router::new()
        .route("/api/v1/hosts", get(list_hosts))
        .route(
            "/api/v1/collections",
            post(request_collection).get(list_collections),
        )
        .route("/api/v1/collections/{id}", get(show_collection))
        .route("/api/v1/collections/{id}/custody", get(custody_log))
        .route("/api/v1/collections/{id}/verify", post(verify_collection))
        .route("/api/v1/hosts/{id}/events", get(host_events))
        .route("/api/v1/hosts/{id}/readiness", get(host_readiness))
        .route("/api/v1/readiness", get(fleet_readiness))
        .route("/api/v1/items/{id}", get(show_item))
        .route("/api/v1/items/{id}/raw", get(download_item))
        .route("/api/v1/import/collections", post(import_collection))
        .route(
            "/api/v1/import/collections/{cid}/items/{item_id}",
            put(import_item),
        )
        .route(
            "/api/v1/import/collections/{cid}/finish",
            post(import_finish),
        )
        .merge(crate::triggers::routes())
        .merge(crate::timeline::api::routes())
        .layer(middleware::from_fn_with_state(state.clone(), auth))
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "no such endpoint; the API lives under /api/v1/",
            )
        })
        .with_state(state)
}

async fn auth(AxState(state): AxState<S>, mut req: Request, next: Next) -> Response {
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let Some(token) = token else {
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing bearer token: send `Authorization: Bearer <token>` (the admin token is in the collector's admin.token)",
        )
        .into_response();
    };
    match state.db().check_api_token(token) {
        Ok(Some((name, role))) => {
            req.extensions_mut().insert(Caller { name, role });
            next.run(req).await
        }
        Ok(None) => ApiError::new(StatusCode::UNAUTHORIZED, "unknown API token").into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> ApiResult<T> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let msg = if path == "." || path.is_empty() {
            format!("malformed JSON request: {inner}")
        } else {
            format!("malformed JSON request: field \"{path}\": {inner}")
        };
        ApiError::new(StatusCode::BAD_REQUEST, msg)
    })
}

async fn list_hosts(
    AxState(state): AxState<S>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<Value>> {
    caller.require(READERS)?;
    let hosts: Vec<Value> = state
        .db()
        .list_hosts()?
        .into_iter()
        .map(|h| {
            let connected = state.sessions.is_connected(&h.id);
            let mut v = serde_json::to_value(&h).unwrap_or_default();
            v["connected"] = json!(connected);
            v
        })
        .collect();
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

pub(crate) fn parse_time(s: &str, what: &str) -> ApiResult<i64> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map(|t| t.unix_timestamp_nanos() as i64)
        .map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("\"{what}\" must be RFC 3339 (2026-01-31T12:00:00Z): {e}"),
            )
        })
}

/// The one host `id` names (agent id, hostname, instance id or machine id).
fn one_host(state: &S, id: &str) -> ApiResult<crate::db::HostRow> {
    match state.db().find_hosts(id)?.as_slice() {
        [h] => Ok(h.clone()),
        [] => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no host matches {id:?}"),
        )),
        _ => Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("{id:?} matches several hosts; use an agent id"),
        )),
    }
}

/// Live events a host's sensor sent, by time.
async fn host_events(
    AxState(state): AxState<S>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Query(q): Query<EventsQuery>,
) -> ApiResult<Json<Value>> {
    caller.require(READERS)?;
    let host = one_host(&state, &id)?;
    let now = time::OffsetDateTime::now_utc().unix_timestamp_nanos() as i64;
    let from = q
        .from
        .as_deref()
        .map(|s| parse_time(s, "from"))
        .transpose()?
        .unwrap_or(now - 3600 * 1_000_000_000);
    let to =
        q.to.as_deref()
            .map(|s| parse_time(s, "to"))
            .transpose()?
            .unwrap_or(now);
    let events = state.db().query_events(
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
    let host = one_host(&state, &id)?;
    let history = state
        .db()
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
        json!({"days": days, "per_day": state.db().fleet_readiness(days)?}),
    ))
}

/// Profiles the agent knows; anything else is refused before a command is sent.
pub const PROFILES: &[&str] = &[
    "volatile", "file", "memory", "full", "triage", "minimal", "disk",
];

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
    if !PROFILES.contains(&b.profile.as_str()) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "unknown profile {:?}; known profiles: {}",
                b.profile,
                PROFILES.join(", ")
            ),
        ));
    }
    if b.profile == "file" && b.paths.is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "profile \"file\" needs at least one entry in \"paths\"",
        ));
    }
    if b.profile == "memory" && b.pid.is_none() && b.container_id.is_none() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "profile \"memory\" needs \"pid\" or \"container_id\": the process (and its ancestors) or container to capture",
        ));
    }
    if b.profile == "disk" && b.devices.is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "profile \"disk\" needs at least one entry in \"devices\" (e.g. \"/dev/nvme0n1\")",
        ));
    }
    if b.reason.trim().is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "\"reason\" must say why evidence is collected (it goes into the custody log)",
        ));
    }
    let hosts = state.db().find_hosts(&b.host)?;
    let host = match hosts.as_slice() {
        [] => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("no host matches {:?} (looked for an agent id, hostname, cloud instance id or machine id)", b.host),
            ))
        }
        [h] => h.clone(),
        many => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!(
                    "{:?} matches {} hosts ({}); use an agent id",
                    b.host,
                    many.len(),
                    many.iter().map(|h| h.id.as_str()).collect::<Vec<_>>().join(", ")
                ),
            ))
        }
    };
    let req = CollectRequest {
        collection_id: uuid::Uuid::new_v4().to_string(),
        profile: b.profile,
        reason: b.reason,
        requested_by: caller.actor(),
        paths: b.paths,
        pid: b.pid,
        container_id: b.container_id,
        devices: b.devices,
    };
    let connected = start_collection(&state, &host, &req, json!({}))?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"id": req.collection_id, "status": "requested", "host_id": host.id, "agent_connected": connected})),
    )
        .into_response())
}

/// Store a collection request, log `trigger_received` (with `extra` facts, e.g. the alert)
/// and wake the host's control loop. Returns whether the agent is connected now.
pub(crate) fn start_collection(
    state: &State,
    host: &crate::db::HostRow,
    req: &CollectRequest,
    extra: Value,
) -> ApiResult<bool> {
    state
        .db()
        .insert_collection(&host.id, req, "requested", "live")?;
    let mut details = json!({"host_id": host.id, "hostname": host.hostname, "profile": req.profile, "reason": req.reason, "paths": req.paths, "pid": req.pid, "container_id": req.container_id, "devices": req.devices});
    if let (Some(d), Value::Object(x)) = (details.as_object_mut(), extra) {
        d.extend(x);
    }
    state.ctx.custody.append(
        state.db(),
        &req.collection_id,
        &req.requested_by,
        "trigger_received",
        details,
    )?;
    Ok(state.sessions.wake(&host.id))
}

#[derive(Deserialize)]
struct ListQuery {
    host: Option<String>,
    limit: Option<u32>,
}

async fn list_collections(
    AxState(state): AxState<S>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    caller.require(READERS)?;
    let rows = state
        .db()
        .list_collections(q.host.as_deref(), q.limit.unwrap_or(100).min(1000))?;
    Ok(Json(json!({ "collections": rows })))
}

pub fn collection_view(state: &State, id: &str) -> ApiResult<Value> {
    let c = state
        .db()
        .get_collection(id)?
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no collection {id}")))?;
    let hostname = state.db().get_host(&c.host_id)?.map(|h| h.hostname);
    let items: Vec<Value> = state
        .db()
        .items_of_collection(id)?
        .into_iter()
        .map(|i| {
            let source = i
                .header
                .as_ref()
                .map(|h| serde_json::to_value(&h.source).unwrap_or_default());
            let gaps = i.manifest.as_ref().map(|m| m.gaps.len()).unwrap_or(0);
            let acq = i.manifest.as_ref().map(|m| m.status);
            let mut v = serde_json::to_value(&i).unwrap_or_default();
            v["source"] = source.unwrap_or(Value::Null);
            v["gaps"] = json!(gaps);
            v["acquisition_status"] = json!(acq);
            v
        })
        .collect();
    let mut v = serde_json::to_value(&c).map_err(anyhow::Error::from)?;
    v["hostname"] = json!(hostname);
    v["items"] = Value::Array(items);
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
    let records = state.db().custody_records(&id)?;
    if records.is_empty() && state.db().get_collection(&id)?.is_none() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no collection {id}"),
        ));
    }
    Ok(Json(json!({
        "collection_id": id,
        "public_key": state.ctx.custody.public_key_hex(),
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
    if state.db().get_collection(&id)?.is_none() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no collection {id}"),
        ));
    }
    let st = state.clone();
    let cid = id.clone();
    let report =
        tokio::task::spawn_blocking(move || st.ctx.custody.verify(&st.ctx.db, &st.ctx.store, &cid))
            .await
            .map_err(|e| anyhow::anyhow!("verification task: {e}"))??;
    let action = if report.ok {
        "verified"
    } else {
        "verify_failed"
    };
    // Recording a verification extends the chain; only do it on an intact chain, so a broken
    // one stays exactly as it was found.
    if report.ok || report.bad_item.is_some() {
        state.ctx.custody.append(
            state.db(),
            &id,
            &caller.actor(),
            action,
            json!({"records_checked": report.records_checked, "items_checked": report.items_checked, "chunks_checked": report.chunks_checked, "bytes_checked": report.bytes_checked, "error": report.error}),
        )?;
    }
    Ok(Json(
        serde_json::to_value(&report).map_err(anyhow::Error::from)?,
    ))
}

async fn show_item(
    AxState(state): AxState<S>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.require(READERS)?;
    let item = state
        .db()
        .get_item(&id)?
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no item {id}")))?;
    let mut v = match &item.manifest {
        Some(m) => serde_json::to_value(m).map_err(anyhow::Error::from)?,
        None => serde_json::to_value(&item.header).map_err(anyhow::Error::from)?,
    };
    // `status` is the collector's (sealed, rejected…); how acquisition on the host ended
    // (complete, partial with gaps, source_vanished) stays visible beside it.
    if let Some(m) = &item.manifest {
        v["acquisition_status"] = json!(m.status);
    }
    v["status"] = json!(item.status);
    v["chunks_received"] = json!(item.chunks_received);
    v["duplicate_chunks"] = json!(item.duplicate_chunks);
    v["collector_error"] = json!(item.error);
    Ok(Json(v))
}

async fn download_item(
    AxState(state): AxState<S>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    caller.require(READERS)?;
    let item = state
        .db()
        .get_item(&id)?
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no item {id}")))?;
    if item.status != "sealed" {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("item {id} is {}, not sealed", item.status),
        ));
    }
    let chunks = state.db().item_chunks(&id)?;
    let mut codecs = Vec::with_capacity(chunks.len());
    for c in &chunks {
        let (codec, _) = state
            .db()
            .blob_codec(&c.sha256)?
            .ok_or_else(|| anyhow::anyhow!("chunk {} of item {id} has no blob row", c.index))?;
        codecs.push(crate::store::codec_parse(&codec).map_err(anyhow::Error::from)?);
    }
    state.ctx.custody.append(
        state.db(),
        &item.collection_id,
        &caller.actor(),
        "downloaded",
        json!({"item_id": id, "name": item.name, "sha256": item.sha256, "raw_len": item.raw_len}),
    )?;
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(4);
    let store = state.ctx.store.clone();
    tokio::task::spawn_blocking(move || {
        for (c, codec) in chunks.iter().zip(codecs) {
            // Each chunk is re-verified on the way out: corrupt evidence is never served.
            let r = store
                .get(&c.sha256, codec, c.raw_len, c.index)
                .map(Bytes::from)
                .map_err(|e| std::io::Error::other(e.to_string()));
            let stop = r.is_err();
            if tx.blocking_send(r).is_err() || stop {
                return;
            }
        }
    });
    let stream =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|x| (x, rx)) });
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        "application/octet-stream"
            .parse()
            .map_err(anyhow::Error::from)?,
    );
    if let Some(len) = item.raw_len {
        headers.insert(header::CONTENT_LENGTH, len.into());
    }
    if let Some(sha) = &item.sha256 {
        headers.insert("x-cairn-sha256", sha.parse().map_err(anyhow::Error::from)?);
    }
    Ok((headers, Body::from_stream(stream)).into_response())
}

// ---- import of offline collections ----

async fn import_collection(
    AxState(state): AxState<S>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> ApiResult<Response> {
    caller.require(&[Role::Admin])?;
    let rec: CollectionRecord = parse_json(&body)?;
    let cid = rec.request.collection_id.clone();
    if !cid.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        || cid.is_empty()
        || cid.len() > 64
    {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("collection id {cid:?} is not a valid id"),
        ));
    }
    if state.db().get_collection(&cid)?.is_some() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("collection {cid} was already imported"),
        ));
    }
    let host_id = state.db().upsert_import_host(&rec.host)?;
    state
        .db()
        .insert_collection(&host_id, &rec.request, "running", "import")?;
    state.ctx.custody.append(
        state.db(),
        &cid,
        &caller.actor(),
        "imported",
        json!({"host_id": host_id, "hostname": rec.host.hostname, "profile": rec.request.profile, "reason": rec.request.reason,
               "collected_by": rec.request.requested_by, "started": rec.started, "finished": rec.finished, "tool": rec.tool, "items": rec.items}),
    )?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"id": cid, "host_id": host_id})),
    )
        .into_response())
}

/// A blocking `Read` over an async body, so the same frame parser serves files and uploads.
struct BodyReader {
    rx: tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>,
    buf: Bytes,
}

impl Read for BodyReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.buf.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(b)) => self.buf = b,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.buf.len());
        out[..n].copy_from_slice(&self.buf.split_to(n));
        Ok(n)
    }
}

async fn import_item(
    AxState(state): AxState<S>,
    Extension(caller): Extension<Caller>,
    Path((cid, item_id)): Path<(String, String)>,
    body: Body,
) -> ApiResult<Json<Value>> {
    caller.require(&[Role::Admin])?;
    let c = state
        .db()
        .get_collection(&cid)?
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no collection {cid}")))?;
    if c.origin != "import" {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("collection {cid} was not created by an import"),
        ));
    }
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let mut data = body.into_data_stream();
    tokio::spawn(async move {
        use futures::StreamExt;
        while let Some(b) = data.next().await {
            if tx.send(b.map_err(std::io::Error::other)).await.is_err() {
                return;
            }
        }
    });
    let ctx = state.ctx.clone();
    let actor = caller.actor();
    let result = tokio::task::spawn_blocking(move || {
        import_stream(
            &ctx,
            &cid,
            &item_id,
            &actor,
            BodyReader {
                rx,
                buf: Bytes::new(),
            },
        )
    })
    .await
    .map_err(|e| anyhow::anyhow!("import task: {e}"))?;
    match result {
        Ok(v) => Ok(Json(v)),
        Err(e) => Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e)),
    }
}

/// Replay an item's frames (`ItemBegin`, chunks, `ItemEnd`) into the ingest state machine.
fn import_stream(
    ctx: &crate::ingest::Ctx,
    cid: &str,
    item_id: &str,
    actor: &str,
    mut r: impl Read,
) -> std::result::Result<Value, String> {
    let header = match Frame::read_from(&mut r).map_err(|e| e.to_string())? {
        Some(Frame::Message(Message::ItemBegin(h))) => h,
        _ => return Err("an item stream must start with item_begin".into()),
    };
    if header.item_id != item_id || header.collection_id != cid {
        return Err(format!(
            "stream is for item {} of collection {}",
            header.item_id, header.collection_id
        ));
    }
    let mut ingest =
        match ItemIngest::begin(ctx, *header, None, actor).map_err(|e| e.to_string())? {
            Opened::AlreadySealed(sha) => {
                return Ok(json!({"item_id": item_id, "sha256": sha, "already_sealed": true}))
            }
            Opened::Held(_, i) => i,
        };
    loop {
        match Frame::read_from(&mut r).map_err(|e| e.to_string())? {
            Some(Frame::Chunk(c)) => ingest.chunk(c).map_err(|e| e.to_string())?,
            Some(Frame::Message(Message::ItemEnd(m))) => {
                let sha = ingest.finish(&m).map_err(|e| e.to_string())?;
                return Ok(json!({"item_id": item_id, "sha256": sha}));
            }
            Some(Frame::Message(m)) => {
                return Err(format!("unexpected {} in an item stream", m.name()))
            }
            None => return Err("item stream ended before its manifest (truncated file?)".into()),
        }
    }
}

#[derive(Deserialize)]
struct FinishBody {
    items: Vec<String>,
    #[serde(default)]
    errors: Vec<String>,
}

async fn import_finish(
    AxState(state): AxState<S>,
    Extension(caller): Extension<Caller>,
    Path(cid): Path<String>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    caller.require(&[Role::Admin])?;
    let b: FinishBody = parse_json(&body)?;
    let c = state
        .db()
        .get_collection(&cid)?
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no collection {cid}")))?;
    crate::quic::finish_collection(&state, &c.host_id, &cid, &b.items, &b.errors)?;
    Ok(Json(collection_view(&state, &cid)?))
}

// ---- serving ----

pub fn tls_acceptor(data: &crate::datadir::DataDir) -> Result<tokio_rustls::TlsAcceptor> {
    let (certs, key) = crate::server::server_identity(data)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("loading the server certificate for HTTPS")?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(cfg)))
}

pub async fn run(
    state: S,
    listener: tokio::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> Result<()> {
    let app = router(state);
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let app = app.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let service = hyper_util::service::TowerToHyperService::new(app);
            let builder =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            let result = match tls {
                Some(acceptor) => match acceptor.accept(stream).await {
                    Ok(s) => {
                        builder
                            .serve_connection(hyper_util::rt::TokioIo::new(s), service)
                            .await
                    }
                    Err(e) => {
                        tracing::debug!("TLS handshake with {peer} failed: {e}");
                        return;
                    }
                },
                None => {
                    builder
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await
                }
            };
            if let Err(e) = result {
                tracing::debug!("connection from {peer}: {e}");
            }
        });
    }
}
