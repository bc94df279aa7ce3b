//! HTTP endpoints of the timeline: query with facets and cursor, export, saved searches,
//! and which items the timeline was built from.
//!
//! `GET /api/v1/timeline?host=&from=&to=&kind=&user=&container=&source=&q=&limit=&cursor=&saved=`
//! `GET /api/v1/timeline/export?format=timesketch-jsonl|timesketch-csv|jsonl&…same filters`
//! `GET|POST /api/v1/timeline/searches`, `DELETE /api/v1/timeline/searches/{name}`
//! `GET /api/v1/timeline/sources?host=`

use super::export::{self, Format};
use super::query::{self, Cursor, Filter};
use crate::api::{parse_json, parse_time, ApiError, ApiResult, Caller, READERS};
use crate::server::State;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State as AxState};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Extension, Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;

type S = Arc<State>;

pub fn routes() -> Router<S> {
    Router::new()
        .route("/api/v1/timeline", get(search))
        .route("/api/v1/timeline/export", get(export_timeline))
        .route("/api/v1/timeline/searches", get(list_saved).post(save))
        .route("/api/v1/timeline/searches/{name}", delete(delete_saved))
        .route("/api/v1/timeline/sources", get(sources))
}

/// The query string (and what a saved search stores).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// Hosts, comma-separated: agent id, hostname, instance id or machine id. None: all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// Kinds, comma-separated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Free text in the message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub q: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    /// `false` to leave out facet counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub facets: Option<bool>,
    /// Start from a saved search; the other parameters override its fields.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub saved: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
}

impl Params {
    /// Fields of `self` override those of a saved search.
    fn over(self, base: Params) -> Params {
        Params {
            host: self.host.or(base.host),
            from: self.from.or(base.from),
            to: self.to.or(base.to),
            kind: self.kind.or(base.kind),
            user: self.user.or(base.user),
            container: self.container.or(base.container),
            source: self.source.or(base.source),
            q: self.q.or(base.q),
            limit: self.limit.or(base.limit),
            cursor: self.cursor,
            facets: self.facets.or(base.facets),
            saved: self.saved,
            format: self.format.or(base.format),
        }
    }
}

fn hostnames(state: &State) -> ApiResult<HashMap<String, String>> {
    Ok(state
        .db()
        .list_hosts()?
        .into_iter()
        .map(|h| (h.id, h.hostname))
        .collect())
}

fn list(s: &Option<String>) -> Vec<String> {
    s.as_deref()
        .map(|s| {
            s.split(',')
                .map(|x| x.trim().to_string())
                .filter(|x| !x.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

/// Saved search applied, hosts resolved, times parsed.
fn filter_of(state: &State, p: Params) -> ApiResult<(Params, Filter)> {
    let p = match &p.saved {
        Some(name) => {
            let saved = state.db().saved_search(name)?.ok_or_else(|| {
                ApiError::new(StatusCode::NOT_FOUND, format!("no saved search {name:?}"))
            })?;
            let base: Params = serde_json::from_value(saved).map_err(anyhow::Error::from)?;
            p.over(base)
        }
        None => p,
    };
    let mut host_ids = Vec::new();
    for h in list(&p.host) {
        let found = state.db().find_hosts(&h)?;
        if found.is_empty() {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("no host matches {h:?} (looked for an agent id, hostname, cloud instance id or machine id)"),
            ));
        }
        host_ids.extend(found.into_iter().map(|h| h.id));
    }
    let f = Filter {
        host_ids,
        from_ns: p
            .from
            .as_deref()
            .map(|s| parse_time(s, "from"))
            .transpose()?,
        to_ns: p.to.as_deref().map(|s| parse_time(s, "to")).transpose()?,
        kinds: list(&p.kind),
        user: p.user.clone(),
        container: p.container.clone(),
        source: p.source.clone(),
        text: p.q.clone().filter(|q| !q.is_empty()),
    };
    Ok((p, f))
}

async fn search(
    AxState(state): AxState<S>,
    Extension(caller): Extension<Caller>,
    Query(p): Query<Params>,
) -> ApiResult<Json<Value>> {
    caller.require(READERS)?;
    let (p, f) = filter_of(&state, p)?;
    let after = match &p.cursor {
        Some(c) => Some(Cursor::decode(c).ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("\"cursor\" {c:?} is not a cursor this API returned"),
            )
        })?),
        None => None,
    };
    let limit = p.limit.unwrap_or(100).clamp(1, 10_000);
    let want_facets = p.facets.unwrap_or(true) && after.is_none();
    let st = state.clone();
    let (rows, next, facets) = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        let (rows, next) = query::page(st.db(), &f, after, limit)?;
        let facets = if want_facets {
            Some(query::facets(st.db(), &f)?)
        } else {
            None
        };
        Ok((rows, next, facets))
    })
    .await
    .map_err(|e| anyhow::anyhow!("timeline query task: {e}"))??;
    let names = hostnames(&state)?;
    let events: Vec<Value> = rows
        .iter()
        .map(|r| {
            let mut v = serde_json::to_value(r).unwrap_or_default();
            v["hostname"] = json!(names.get(&r.host_id));
            v
        })
        .collect();
    Ok(Json(json!({
        "count": events.len(),
        "events": events,
        "next_cursor": next.map(|c| c.encode()),
        "facets": facets.map(|fc| query::facets_json(&fc, &names)),
    })))
}

/// Rows per page while exporting: bounded memory whatever the size of the timeline.
const EXPORT_PAGE: u32 = 5000;

async fn export_timeline(
    AxState(state): AxState<S>,
    Extension(caller): Extension<Caller>,
    Query(p): Query<Params>,
) -> ApiResult<Response> {
    caller.require(READERS)?;
    let (p, f) = filter_of(&state, p)?;
    let name = p.format.as_deref().unwrap_or("timesketch-jsonl");
    let format = Format::parse(name).ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("\"format\" {name:?} is not one of {}", Format::NAMES),
        )
    })?;
    let names = hostnames(&state)?;
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(4);
    let st = state.clone();
    tokio::task::spawn_blocking(move || {
        if format == Format::TimesketchCsv
            && tx
                .blocking_send(Ok(Bytes::from(export::csv_header())))
                .is_err()
        {
            return;
        }
        let mut after = None;
        loop {
            let (rows, next) = match query::page(st.db(), &f, after, EXPORT_PAGE) {
                Ok(x) => x,
                Err(e) => {
                    let _ = tx.blocking_send(Err(std::io::Error::other(format!("{e:#}"))));
                    return;
                }
            };
            let mut buf = Vec::new();
            if let Err(e) = export::write_rows(&mut buf, format, &rows, &names) {
                let _ = tx.blocking_send(Err(e));
                return;
            }
            if tx.blocking_send(Ok(Bytes::from(buf))).is_err() {
                return;
            }
            match next {
                Some(c) => after = Some(c),
                None => return,
            }
        }
    });
    let stream =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|x| (x, rx)) });
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        format.content_type().parse().map_err(anyhow::Error::from)?,
    );
    Ok((headers, Body::from_stream(stream)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SaveBody {
    name: String,
    query: Params,
}

async fn save(
    AxState(state): AxState<S>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> ApiResult<Response> {
    caller.require(READERS)?;
    let b: SaveBody = parse_json(&body)?;
    if b.name.trim().is_empty() || b.name.len() > 200 {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed JSON request: field \"name\": must be 1-200 characters",
        ));
    }
    // Checked now, so a saved search always runs.
    let mut q = b.query;
    q.cursor = None;
    q.saved = None;
    filter_of(&state, q.clone())?;
    let v = serde_json::to_value(&q).map_err(anyhow::Error::from)?;
    state.db().save_search(&b.name, &v, &caller.actor())?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"name": b.name, "query": v})),
    )
        .into_response())
}

async fn list_saved(
    AxState(state): AxState<S>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<Value>> {
    caller.require(READERS)?;
    Ok(Json(json!({"searches": state.db().saved_searches()?})))
}

async fn delete_saved(
    AxState(state): AxState<S>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.require(READERS)?;
    if !state.db().delete_saved_search(&name)? {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no saved search {name:?}"),
        ));
    }
    Ok(Json(json!({"deleted": name})))
}

#[derive(Deserialize)]
struct SourcesQuery {
    host: Option<String>,
}

async fn sources(
    AxState(state): AxState<S>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<SourcesQuery>,
) -> ApiResult<Json<Value>> {
    caller.require(READERS)?;
    let host = match &q.host {
        Some(h) => match state.db().find_hosts(h)?.as_slice() {
            [one] => Some(one.id.clone()),
            [] => {
                return Err(ApiError::new(
                    StatusCode::NOT_FOUND,
                    format!("no host matches {h:?}"),
                ))
            }
            _ => {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    format!("{h:?} matches several hosts; use an agent id"),
                ))
            }
        },
        None => None,
    };
    Ok(Json(
        json!({"items": state.db().timeline_items(host.as_deref())?}),
    ))
}
