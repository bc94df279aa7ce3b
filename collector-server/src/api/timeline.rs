//! The timeline over HTTP: query with facets and cursor, export, saved searches, and which
//! items the timeline was built from.
//!
//! `GET /api/v1/timeline?host=&from=&to=&kind=&user=&container=&source=&q=&limit=&cursor=&saved=`
//! `GET /api/v1/timeline/export?format=timesketch-jsonl|timesketch-csv|jsonl&…same filters`
//! `GET|POST /api/v1/timeline/searches`, `DELETE /api/v1/timeline/searches/{name}`
//! `GET /api/v1/timeline/sources?host=`

use super::auth::READERS;
use super::{body_stream, internal, parse_json, ApiResult, Caller, S};
use crate::error::Error;
use crate::state::State;
use crate::timeline::export::{self, Format};
use crate::timeline::{query, search, Cursor};
use axum::body::Bytes;
use axum::extract::{Path, Query, State as AxState};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::HashMap;

pub(super) fn routes() -> Router<S> {
    Router::new()
        .route("/api/v1/timeline", get(search))
        .route("/api/v1/timeline/export", get(export_timeline))
        .route("/api/v1/timeline/searches", get(list_saved).post(save))
        .route("/api/v1/timeline/searches/{name}", delete(delete_saved))
        .route("/api/v1/timeline/sources", get(sources))
}

fn hostnames(state: &State) -> ApiResult<HashMap<String, String>> {
    Ok(state
        .meta()
        .list_hosts()?
        .into_iter()
        .map(|h| (h.id, h.hostname))
        .collect())
}

async fn search(
    AxState(state): AxState<S>,
    Extension(caller): Extension<Caller>,
    Query(p): Query<search::Params>,
) -> ApiResult<Json<Value>> {
    caller.require(READERS)?;
    let (p, f) = search::resolve(state.meta(), p)?;
    let after = match &p.cursor {
        Some(c) => Some(Cursor::decode(c).ok_or_else(|| {
            Error::invalid(format!(
                "\"cursor\" {c:?} is not a cursor this API returned"
            ))
        })?),
        None => None,
    };
    let limit = p.limit.unwrap_or(100).clamp(1, 10_000);
    let want_facets = p.facets.unwrap_or(true) && after.is_none();
    let st = state.clone();
    let (rows, next, facets) = tokio::task::spawn_blocking(move || -> crate::error::Result<_> {
        let (rows, next) = query::page(st.meta(), &f, after, limit)?;
        let facets = if want_facets {
            Some(query::facets(st.meta(), &f)?)
        } else {
            None
        };
        Ok((rows, next, facets))
    })
    .await
    .map_err(|e| internal("timeline query task", e))??;
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
    Query(p): Query<search::Params>,
) -> ApiResult<Response> {
    caller.require(READERS)?;
    let (p, mut f) = search::resolve(state.meta(), p)?;
    // An export reads in time order unless asked otherwise (tools and people expect it).
    if p.order.is_none() {
        f.newest_first = false;
    }
    let name = p.format.as_deref().unwrap_or("timesketch-jsonl");
    let format = Format::parse(name).ok_or_else(|| {
        Error::invalid(format!(
            "\"format\" {name:?} is not one of {}",
            Format::NAMES
        ))
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
            let (rows, next) = match query::page(st.meta(), &f, after, EXPORT_PAGE) {
                Ok(x) => x,
                Err(e) => {
                    let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
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
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        format
            .content_type()
            .parse()
            .map_err(|e| internal("content type", e))?,
    );
    Ok((headers, body_stream(rx)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SaveBody {
    name: String,
    query: search::Params,
}

async fn save(
    AxState(state): AxState<S>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> ApiResult<Response> {
    caller.require(READERS)?;
    let b: SaveBody = parse_json(&body)?;
    let v = search::save(state.meta(), &b.name, b.query, &caller.actor())?;
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
    Ok(Json(json!({"searches": state.meta().saved_searches()?})))
}

async fn delete_saved(
    AxState(state): AxState<S>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.require(READERS)?;
    if !state.meta().delete_saved_search(&name)? {
        return Err(Error::not_found(format!("no saved search {name:?}")).into());
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
        Some(h) => Some(crate::hosts::resolve(state.meta(), h)?.id),
        None => None,
    };
    Ok(Json(
        json!({"items": state.meta().timeline_items(host.as_deref())?}),
    ))
}
