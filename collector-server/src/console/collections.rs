//! `/collections` and `/collections/{id}`: what was collected, from where, why and by whom;
//! every item with its size, SHA-256, how acquisition went and its gaps (an item whose
//! acquisition failed shows as failed, never as sealed); downloads of an item or of the
//! whole collection as one tar archive; the chain of custody and "verify now".

use super::layout::{self, page, status, val};
use super::{hostnames, PageError, PageResult, Viewer, S};
use crate::storage::cases::Target;
use crate::storage::CollectionRow;
use axum::extract::{Form, Path, State as AxState};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use maud::{html, Markup};
use serde::Deserialize;
use std::collections::HashMap;

pub(super) fn routes() -> Router<S> {
    Router::new()
        .route("/collections", get(list))
        .route("/collections/{id}", get(show))
        .route("/collections/{id}/verify", post(verify))
        .route("/collections/{id}/archive", get(archive))
        .route("/items/{id}/raw", get(raw))
}

/// Each collection's items and sealed bytes, for the list.
pub(super) fn sizes(
    state: &S,
    rows: &[CollectionRow],
) -> PageResult<HashMap<String, (usize, u64)>> {
    let mut out = HashMap::new();
    for c in rows {
        let items = state.meta().items_of_collection(&c.id)?;
        let bytes = items.iter().filter_map(|i| i.raw_len).sum();
        out.insert(c.id.clone(), (items.len(), bytes));
    }
    Ok(out)
}

/// From request to finish, as a person reads it (`1m 05s`), or how long it has run so far.
fn duration(from: &str, to: Option<&str>) -> String {
    let t = |s: &str| cairn_protocol::rfc3339::parse(s).ok();
    let end = match to {
        Some(s) => t(s),
        None => Some(time::OffsetDateTime::now_utc()),
    };
    match (t(from), end) {
        (Some(a), Some(b)) if b >= a => {
            let secs = (b - a).whole_seconds();
            let d = if secs >= 3600 {
                format!("{}h {:02}m", secs / 3600, secs % 3600 / 60)
            } else if secs >= 60 {
                format!("{}m {:02}s", secs / 60, secs % 60)
            } else {
                format!("{secs}s")
            };
            if to.is_some() {
                d
            } else {
                format!("{d} so far")
            }
        }
        _ => "—".into(),
    }
}

/// The list as a table (also on a host's page).
pub(super) fn table(
    rows: &[CollectionRow],
    hostnames: &HashMap<String, String>,
    sizes: &HashMap<String, (usize, u64)>,
) -> Markup {
    html! {
        table.collections {
            thead { tr { th { "Collection" } th { "Host" } th { "Profile" } th { "Status" } th { "Reason" } th { "Requested by" } th.num { "Items" } th.num { "Bytes" } th { "Requested" } th { "Duration" } } }
            tbody { @for c in rows { tr {
                td.mono { a href={"/collections/" (c.id)} { (&c.id[..c.id.len().min(8)]) } }
                td { a href={"/hosts/" (c.host_id)} { (layout::clean(hostnames.get(&c.host_id).map(String::as_str).unwrap_or(&c.host_id))) } }
                td { (c.profile) } td { (status(c.status.as_str())) }
                td.wrap { (layout::clean(&c.reason)) } td { (layout::clean(&c.requested_by)) }
                @let (n, bytes) = sizes.get(&c.id).copied().unwrap_or((0, 0));
                td.num { (n) } td.num { (layout::bytes(bytes)) }
                td { (layout::time(&c.requested_at)) } td { (duration(&c.requested_at, c.finished_at.as_deref())) }
            } } }
        }
    }
}

async fn list(
    AxState(state): AxState<S>,
    Extension(viewer): Extension<Viewer>,
) -> PageResult<Markup> {
    let rows = state.meta().list_collections(None, None, 500)?;
    let names = hostnames(&state)?;
    Ok(page(
        "Collections",
        &viewer,
        "Collections",
        html! {
            h1 { "Collections" }
            (table(&rows, &names, &sizes(&state, &rows)?))
        },
    ))
}

/// Bytes in, the rate and the ETA of a running collection, as `collections::progress` has them.
fn progress(p: &serde_json::Value) -> Markup {
    let n = |k: &str| p[k].as_u64().unwrap_or(0);
    let rate = p["bytes_per_sec"].as_f64().unwrap_or(0.0);
    let secs = p["elapsed_secs"].as_f64().unwrap_or(0.0);
    html! {
        (n("items_sealed")) " of " (n("items_begun")) " items begun sealed; "
        (layout::bytes(n("bytes_received")))
        @if let Some(e) = p["bytes_expected"].as_u64() { " of " (layout::bytes(e)) }
        " in " (format!("{secs:.0}")) " s, " (layout::bytes(rate as u64)) "/s; "
        @match (p["eta_secs"].as_f64(), n("items_of_unknown_size")) {
            (Some(eta), _) => { span.eta { "ETA about " (format!("{:.0}", eta.ceil())) " s" } " for the items begun so far" }
            (None, 0) => { "ETA unknown until bytes arrive" }
            (None, u) => { "ETA unknown: " (u) " item(s) begun are sized only as they are read (memory, volatile state)" }
        }
    }
}

fn render(state: &S, viewer: &Viewer, id: &str, verdict: Option<Markup>) -> PageResult<Markup> {
    let v = crate::api::collections::collection_view(state, id).map_err(|e| PageError(e.0, e.1))?;
    let cid = v["id"].as_str().unwrap_or(id).to_string();
    let records = state.meta().custody_records(&cid)?;
    let notes = super::cases::notes_block(state, Target::Collection, &cid)?;
    let items = v["items"].as_array().cloned().unwrap_or_default();
    let total: u64 = items.iter().filter_map(|i| i["raw_len"].as_u64()).sum();
    let received: u64 = items
        .iter()
        .filter_map(|i| i["chunks_received"].as_u64())
        .sum();
    let mut st = v["status"].as_str().unwrap_or("?").to_string();
    // Sealed bytes of an acquisition that failed are not evidence of what was asked for.
    if st == "sealed"
        && items
            .iter()
            .any(|i| i["acquisition_status"].as_str() == Some("failed"))
    {
        st = "partial".into();
    }
    Ok(page(
        "Collection",
        viewer,
        "Collections",
        html! {
            h1 data-refresh-while=(st) { "Collection " span.mono { (&cid[..cid.len().min(8)]) } " " (status(&st)) }
            @if let Some(verdict) = verdict { (verdict) }
            div.card {
                dl.facts {
                    dt { "Host" } dd { a href={"/hosts/" (val(&v["host_id"]))} { (val(&v["hostname"])) } }
                    dt { "Profile" } dd { (val(&v["profile"])) }
                    dt { "Reason" } dd { (val(&v["reason"])) }
                    dt { "Requested by" } dd { (val(&v["requested_by"])) " at " (layout::time(v["requested_at"].as_str().unwrap_or(""))) }
                    dt { "Finished" } dd { (layout::time(v["finished_at"].as_str().unwrap_or("—"))) }
                    dt { "Items" } dd { (items.len()) ", " (layout::bytes(total)) " sealed, " (received) " chunks received" }
                    @if matches!(st.as_str(), "running" | "paused") {
                        dt { "Progress" } dd #progress { (progress(&v["progress"])) }
                    }
                    dt { "Id" } dd.mono { (cid) }
                }
                @for e in v["errors"].as_array().into_iter().flatten() { p.error { (val(e)) } }
                p {
                    a href={"/collections/" (cid) "/archive"} { "Download the whole collection (tar: items, manifests, custody, SHA256SUMS)" }
                }
            }
            table #items {
                thead { tr { th { "Item" } th { "Kind" } th.num { "Size" } th { "Status" } th.num { "Gaps" } th { "SHA-256" } th {} } }
                tbody { @for i in &items {
                    @let shown = layout::item_status(i["status"].as_str().unwrap_or("?"), i["acquisition_status"].as_str());
                    tr {
                        td.wrap { (val(&i["name"])) @if let Some(p) = i["source"]["path"].as_str() { br; span.muted { (layout::clean(p)) } } }
                        td { (val(&i["kind"])) }
                        td.num { (i["raw_len"].as_u64().map(layout::bytes).unwrap_or_else(|| "—".into())) }
                        td { (status(&shown)) @if let Some(e) = i["error"].as_str() { br; span.muted { (layout::clean(e)) } } }
                        td.num { (val(&i["gaps"])) }
                        td.mono { (i["sha256"].as_str().unwrap_or("—")) }
                        td { @if i["status"] == "sealed" { a href={"/items/" (val(&i["id"])) "/raw"} { "download" } } }
                    }
                } }
            }
            (notes.render(viewer, Target::Collection, &cid, &format!("/collections/{cid}")))
            div.card {
                h2 { "Chain of custody" }
                form.inline method="post" action={"/collections/" (cid) "/verify"} {
                    input type="hidden" name="csrf" value=(viewer.csrf);
                    button type="submit" { "Verify now" }
                    span.muted { " re-checks every record, the published head, completeness and every stored byte" }
                }
                table #custody { thead { tr { th.num { "#" } th { "Time" } th { "Action" } th { "Actor" } th { "Details" } } }
                    tbody { @for r in &records { tr {
                        td.num { (r.seq) } td { (layout::time(&r.time)) } td { (r.action) } td { (layout::clean(&r.actor)) }
                        td.wrap.mono { (layout::clean(&r.details.to_string()).chars().take(300).collect::<String>()) }
                    } } } }
            }
        },
    ))
}

async fn show(
    AxState(state): AxState<S>,
    Extension(viewer): Extension<Viewer>,
    Path(id): Path<String>,
) -> PageResult<Markup> {
    render(&state, &viewer, &id, None)
}

#[derive(Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

async fn verify(
    AxState(state): AxState<S>,
    Extension(viewer): Extension<Viewer>,
    Path(id): Path<String>,
    Form(f): Form<CsrfForm>,
) -> PageResult<Markup> {
    viewer.check_csrf(&f.csrf)?;
    let st = state.clone();
    let actor = viewer.actor();
    let cid = id.clone();
    let report = tokio::task::spawn_blocking(move || st.collections.verify(&cid, &actor))
        .await
        .map_err(|e| PageError(axum::http::StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??;
    let verdict = html! {
        div.card #verdict {
            @if report.ok {
                p { (status("verified")) " custody intact: " (report.records_checked) " records, " (report.items_checked) " items, "
                    (report.chunks_checked) " chunks (" (layout::bytes(report.bytes_checked)) ") re-read" }
            } @else {
                p { (status("broken")) " custody broken:" }
                ul { @for p in &report.problems { li.error { (layout::clean(p)) } } }
            }
        }
    };
    render(&state, &viewer, &id, Some(verdict))
}

async fn archive(
    AxState(state): AxState<S>,
    Extension(viewer): Extension<Viewer>,
    Path(id): Path<String>,
) -> Response {
    match crate::api::archive::archive_response(state, &id, viewer.actor()).await {
        Ok(r) => r,
        Err(e) => PageError(e.0, e.1).into_response(),
    }
}

async fn raw(
    AxState(state): AxState<S>,
    Extension(viewer): Extension<Viewer>,
    Path(id): Path<String>,
) -> Response {
    match crate::api::items::raw_response(state, &id, viewer.actor()).await {
        Ok(r) => r,
        Err(e) => PageError(e.0, e.1).into_response(),
    }
}
