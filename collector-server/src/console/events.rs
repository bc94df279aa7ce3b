//! One event: every field with a pivot (add it to a search) or an exclusion, its context
//! (the events just before and after it on its host), its notes.

use super::cases::notes_block;
use super::layout::{self, page};
use super::timeline::{event_time, exclude, include};
use super::{blocking, hostnames, PageError, PageResult, Viewer, S};
use crate::storage::cases::Target;
use crate::storage::timeline::StoredEvent;
use crate::timeline::query::Row;
use crate::timeline::search::Params;
use axum::extract::{Path, State as AxState};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Extension, Json, Router};
use maud::{html, Markup};

/// Events on each side of one in its context.
const CONTEXT: u32 = 15;

pub(super) fn routes() -> Router<S> {
    Router::new()
        .route("/timeline/events/{id}", get(event_page))
        .route("/timeline/events/{id}/json", get(event_json))
        .route("/timeline/events/{id}/context", get(context_page))
}

fn not_found(id: i64) -> PageError {
    PageError(
        StatusCode::NOT_FOUND,
        format!("no event {id} in the timeline"),
    )
}

async fn load_event(state: &S, id: i64) -> PageResult<(Row, String)> {
    let st = state.clone();
    blocking(move || {
        let e: StoredEvent = st.meta().timeline_event(id)?.ok_or_else(|| not_found(id))?;
        let row = Row::from(e);
        let host = hostnames(&st)?
            .get(&row.host_id)
            .cloned()
            .unwrap_or_else(|| row.host_id.clone());
        Ok((row, host))
    })
    .await
}

async fn event_json(
    AxState(state): AxState<S>,
    Path(id): Path<i64>,
) -> PageResult<Json<serde_json::Value>> {
    let (row, host) = load_event(&state, id).await?;
    let mut v = serde_json::to_value(&row)
        .map_err(|e| PageError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    v["hostname"] = serde_json::Value::String(host);
    Ok(Json(v))
}

async fn event_page(
    AxState(state): AxState<S>,
    Extension(viewer): Extension<Viewer>,
    Path(id): Path<i64>,
) -> PageResult<Markup> {
    let (row, host) = load_event(&state, id).await?;
    let p = Params::default();
    let mut fields: Vec<(&str, String)> = vec![
        ("host", row.host_id.clone()),
        ("kind", row.kind.clone()),
        ("source", row.source.clone()),
    ];
    for (k, v) in [
        ("user", &row.user),
        ("exe", &row.exe),
        ("container", &row.container),
        ("pod", &row.pod),
        ("path", &row.path),
    ] {
        if let Some(v) = v {
            fields.push((k, v.clone()));
        }
    }
    if let Some(pid) = row.pid {
        fields.push(("pid", pid.to_string()));
    }
    if let Some(ppid) = row.ppid {
        fields.push(("ppid", ppid.to_string()));
    }
    if let Some(item) = &row.item_id {
        fields.push(("item", item.clone()));
    }
    let st = state.clone();
    let notes = blocking(move || notes_block(&st, Target::Event, &id.to_string())).await?;
    let body = html! {
        h1 { "Event " (id) }
        p.message { (layout::clean(&row.message)) }
        p {
            a href={"/timeline/events/" (id) "/context"} { "Context on " (layout::clean(&host)) }
            " · "
            a href="/timeline" { "Timeline" }
        }
        table.fields {
            tbody {
                tr { th { "time" } td.mono { (event_time(&row)) " (" (row.time) ")" } td {} }
                @for (k, v) in &fields {
                    @let shown = if *k == "host" { host.clone() } else { v.clone() };
                    tr {
                        th { (k) }
                        td.wrap.mono { (layout::clean(&shown)) }
                        td { a href=(include(&p, k, v)) { "pivot" } " " a href=(exclude(&p, k, v)) { "exclude" } }
                    }
                }
                @if let Some(argv) = &row.argv {
                    tr { th { "argv" } td.wrap.mono { @for (i, a) in argv.iter().enumerate() { @if i > 0 { " " } span.arg { (layout::clean(a)) } } } td {} }
                }
                @for (k, v) in &row.attrs {
                    tr { th { (layout::clean(k)) } td.wrap.mono { (layout::val(v)) } td {} }
                }
            }
        }
        (notes.render(&viewer, Target::Event, &id.to_string(), &format!("/timeline/events/{id}")))
    };
    Ok(page(&format!("Event {id}"), &viewer, "Timeline", body))
}

async fn context_page(
    AxState(state): AxState<S>,
    Extension(viewer): Extension<Viewer>,
    Path(id): Path<i64>,
) -> PageResult<Markup> {
    let st = state.clone();
    let (rows, names) = blocking(move || {
        if st.meta().timeline_event(id)?.is_none() {
            return Err(not_found(id));
        }
        let rows: Vec<Row> = st
            .meta()
            .timeline_context(id, CONTEXT)?
            .into_iter()
            .map(Row::from)
            .collect();
        Ok((rows, hostnames(&st)?))
    })
    .await?;
    let p = Params::default();
    let body = html! {
        h1 { "Context of event " (id) }
        p { (CONTEXT) " events before and after it on its host, in time order. " a href={"/timeline/events/" (id)} { "The event" } }
        table.events.context {
            thead { tr { th { "Time" } th { "Host" } th { "Kind" } th { "User" } th { "What" } } }
            tbody { @for r in &rows {
                @let host = names.get(&r.host_id).cloned().unwrap_or_else(|| r.host_id.clone());
                tr class=[(r.id == id).then_some("focus")] data-event={"/timeline/events/" (r.id) "/json"} {
                    td.time.mono { (event_time(r)) }
                    td { (layout::clean(&host)) }
                    td { a href=(include(&p, "kind", &r.kind)) { (r.kind) } }
                    td { @if let Some(u) = &r.user { (layout::clean(u)) } }
                    td.wrap { a href={"/timeline/events/" (r.id)} { (layout::clean(&r.message)) } }
                }
            } }
        }
    };
    Ok(page("Context", &viewer, "Timeline", body))
}
