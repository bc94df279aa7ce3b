//! `/timeline`: one search across hosts, on the same engine as `GET /api/v1/timeline`
//! (`timeline::search::resolve` → the store's filter). The query language in one box, a range
//! (relative ranges stay relative), newest first; a histogram whose bars zoom to their span;
//! facets whose values include (click) or exclude (alt-click, or the `−` beside them), each
//! facet's every value a page away; pages by cursor; stacking (the rarest or commonest values
//! of a field). One event's page is [`super::events`]; saved searches are [`super::saved`].

use super::auth::urlencode;
use super::layout::{self, page};
use super::{blocking, hostnames, PageError, PageResult, Viewer, S};
use crate::storage::timeline::{Column, Cursor, Facets, Histogram};
use crate::timeline::query::Row;
use crate::timeline::search::{self, Params};
use crate::timeline::{ql, Filter};
use axum::extract::{Query, State as AxState};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Extension, Router};
use maud::{html, Markup};
use serde::Deserialize;
use std::collections::HashMap;

/// Rows on one page.
const PAGE_ROWS: u32 = 100;
/// Bars of the histogram.
const BUCKETS: u32 = 60;
/// Values shown per facet (the rest one click away).
const FACET_VALUES: usize = 8;

/// The facets shown, as (query field, title).
const FACETS: &[(&str, &str)] = &[
    ("host", "Host"),
    ("kind", "Kind"),
    ("source", "Source"),
    ("user", "User"),
    ("exe", "Executable"),
    ("parent", "Parent"),
    ("dst", "Destination"),
    ("dst_port", "Port"),
    ("container", "Container"),
    ("pod", "Pod"),
];

pub(super) fn routes() -> Router<S> {
    Router::new()
        .route("/timeline", get(search_page))
        .route("/timeline/values", get(values_page))
        .route("/timeline/stack", get(stack_page))
        .merge(super::events::routes())
        .merge(super::saved::routes())
}

/// The search's own parameters as a query string (no cursor), for links that keep it.
pub(super) fn qs(p: &Params) -> String {
    let mut parts = Vec::new();
    for (k, v) in [
        ("query", &p.query),
        ("last", &p.last),
        ("from", &p.from),
        ("to", &p.to),
        ("host", &p.host),
        ("kind", &p.kind),
        ("user", &p.user),
        ("source", &p.source),
        ("q", &p.q),
        ("order", &p.order),
    ] {
        if let Some(v) = v.as_deref().filter(|v| !v.is_empty()) {
            parts.push(format!("{k}={}", urlencode(v)));
        }
    }
    parts.join("&")
}

/// The same search with `term` added to its query (a pivot, a facet click).
fn with_term(p: &Params, term: &str) -> String {
    let mut q = p.clone();
    let query = p.query.as_deref().unwrap_or("").trim();
    q.query = Some(if query.is_empty() {
        term.to_string()
    } else {
        format!("{query} {term}")
    });
    format!("/timeline?{}", qs(&q))
}

pub(super) fn include(p: &Params, field: &str, value: &str) -> String {
    with_term(p, &ql::term(field, value))
}

pub(super) fn exclude(p: &Params, field: &str, value: &str) -> String {
    with_term(p, &format!("-{}", ql::term(field, value)))
}

/// What the search page shows, computed off the async workers.
struct Results {
    rows: Vec<Row>,
    next: Option<Cursor>,
    facets: Option<Facets>,
    histogram: Option<Histogram>,
}

fn run(state: &S, f: &Filter, after: Option<Cursor>) -> PageResult<Results> {
    let meta = state.meta();
    let (rows, next) = crate::timeline::query::page(meta, f, after, PAGE_ROWS)?;
    // Facets and the histogram describe the whole search, shown on its first page.
    let (facets, histogram) = if after.is_none() {
        let span = match (f.from_ns, f.to_ns) {
            (Some(a), Some(b)) => Some((a, b)),
            (a, b) => meta
                .timeline_span(f)?
                .map(|(lo, hi)| (a.unwrap_or(lo), b.unwrap_or(hi))),
        };
        let histogram = match span {
            Some((lo, hi)) if hi >= lo => {
                Some(meta.timeline_histogram(f, lo, hi.saturating_add(1), BUCKETS)?)
            }
            _ => None,
        };
        (Some(meta.timeline_facets(f)?), histogram)
    } else {
        (None, None)
    };
    Ok(Results {
        rows,
        next,
        facets,
        histogram,
    })
}

/// A search that did not parse is shown with its error, the form kept, never an empty page.
fn resolve(state: &S, p: Params) -> (Params, Result<Filter, String>) {
    let kept = p.clone();
    match search::resolve(state.meta(), p) {
        Ok((p, f)) => (p, Ok(f)),
        Err(e) => (kept, Err(e.to_string())),
    }
}

fn cursor(p: &Params) -> PageResult<Option<Cursor>> {
    match &p.cursor {
        Some(c) => Cursor::decode(c).map(Some).ok_or_else(|| {
            PageError(
                StatusCode::BAD_REQUEST,
                format!("{c:?} is not a page of this search: start again from the first page"),
            )
        }),
        None => Ok(None),
    }
}

async fn search_page(
    AxState(state): AxState<S>,
    Extension(viewer): Extension<Viewer>,
    Query(p): Query<Params>,
) -> PageResult<Markup> {
    let after = cursor(&p)?;
    let st = state.clone();
    let (p, results, names, saved) = blocking(move || {
        let (p, f) = resolve(&st, p);
        let results = match f {
            Ok(f) => Ok(run(&st, &f, after)?),
            Err(e) => Err(e),
        };
        let saved = st.meta().saved_searches()?;
        Ok((p, results, hostnames(&st)?, saved))
    })
    .await?;
    let body = html! {
        h1 { "Timeline" }
        (search_form(&p))
        @match &results {
            Err(e) => {
                p.error.query-error { (e) }
                (super::saved::saved_block(&viewer, &p, &saved))
            }
            Ok(r) => {
                @if let Some(h) = &r.histogram { (histogram(&p, h)) }
                div.timeline {
                    aside.facets {
                        @if let Some(fc) = &r.facets { (facets(&p, fc, &names)) }
                        (super::saved::saved_block(&viewer, &p, &saved))
                    }
                    section.results {
                        p.count {
                            @if let Some(fc) = &r.facets {
                                (fc.total) @if !fc.exact { "+" } " events"
                            }
                            " · newest first · "
                            a href={"/timeline/stack?" (qs(&p))} { "stack a field" }
                            " · "
                            a href={"/api/v1/timeline/export?format=timesketch-jsonl&" (qs(&p))} { "Timesketch JSONL" }
                        }
                        (rows_table(&p, &r.rows, &names))
                        @if let Some(next) = r.next {
                            p.pager { a.next href={"/timeline?" (qs(&p)) "&cursor=" (urlencode(&next.encode()))} { "Older events →" } }
                        }
                        div #drawer hidden {
                            h2 { "Event" }
                            p { a.context href="#" { "Context on its host" } " · " a.open href="#" { "Open, annotate" } }
                            pre {}
                        }
                    }
                }
            }
        }
    };
    Ok(page("Timeline", &viewer, "Timeline", body))
}

fn search_form(p: &Params) -> Markup {
    let last = p.last.as_deref().unwrap_or("");
    html! {
        form.search method="get" action="/timeline" {
            input #query type="search" name="query" value=(p.query.as_deref().unwrap_or(""))
                placeholder="host:web-1 kind:process_exec -user:root dst_port:(22 OR 3389) curl"
                aria-label="query";
            select name="last" aria-label="range" {
                @for (v, label) in [("", "all time"), ("15m", "last 15 minutes"), ("1h", "last hour"), ("24h", "last 24 hours"), ("7d", "last 7 days")] {
                    option value=(v) selected[last == v] { (label) }
                }
            }
            input type="text" name="from" value=(p.from.as_deref().unwrap_or("")) placeholder="from (RFC 3339 or -1h)" aria-label="from";
            input type="text" name="to" value=(p.to.as_deref().unwrap_or("")) placeholder="to" aria-label="to";
            button type="submit" { "Search" }
        }
        details.help {
            summary { "Query language" }
            p { "Terms are " code { "field:value" } " (a value may be quoted, end in " code { "*" } " for a prefix, or be a group " code { "(22 OR 3389)" } "); bare words search the message. Terms are ANDed; " code { "OR" } ", " code { "NOT" } " / " code { "-" } " and parentheses combine them." }
            p { "Fields: " @for (i, (f, _)) in ql::FIELDS.iter().enumerate() { @if i > 0 { ", " } code { (f) } } }
        }
    }
}

fn histogram(p: &Params, h: &Histogram) -> Markup {
    let max = h.counts.iter().copied().max().unwrap_or(0).max(1);
    let n = h.counts.len().max(1) as f64;
    let width = 1000.0;
    let bar = width / n;
    let at = |i: usize| {
        h.from_ns
            .saturating_add(h.bucket_ns.saturating_mul(i as i64))
    };
    let t = |ns: i64| {
        cairn_protocol::rfc3339::from_unix_ns(i128::from(ns)).unwrap_or_else(|| ns.to_string())
    };
    html! {
        figure.histogram {
            svg viewBox="0 0 1000 80" preserveAspectRatio="none" role="img" aria-label="events over time" {
                @for (i, c) in h.counts.iter().enumerate() {
                    @let height = if *c == 0 { 0.0 } else { (*c as f64 / max as f64 * 76.0).max(2.0) };
                    @let zoom = zoomed(p, t(at(i)), t(at(i + 1)));
                    a href={"/timeline?" (qs(&zoom))} {
                        title { (c) " events from " (layout::time(&t(at(i)))) }
                        rect x=(format!("{:.2}", i as f64 * bar)) y=(format!("{:.2}", 80.0 - height))
                            width=(format!("{:.2}", (bar - 1.0).max(0.5))) height=(format!("{:.2}", height)) {}
                    }
                }
            }
            figcaption {
                span { (layout::time(&t(h.from_ns))) }
                span { (max) " per bar at most" }
                span { (layout::time(&t(at(h.counts.len())))) }
            }
        }
    }
}

/// The same search over one span (a histogram bar).
fn zoomed(p: &Params, from: String, to: String) -> Params {
    Params {
        last: None,
        from: Some(from),
        to: Some(to),
        ..p.clone()
    }
}

/// One facet's values of the store's [`Facets`].
fn facet_values<'a>(fc: &'a Facets, field: &str) -> &'a [(String, u64)] {
    match field {
        "host" => &fc.host,
        "kind" => &fc.kind,
        "source" => &fc.source,
        "user" => &fc.user,
        "exe" => &fc.exe,
        "parent" => &fc.parent,
        "dst" => &fc.dst,
        "dst_port" => &fc.dst_port,
        "container" => &fc.container,
        "pod" => &fc.pod,
        _ => &[],
    }
}

fn facets(p: &Params, fc: &Facets, names: &HashMap<String, String>) -> Markup {
    html! {
        @for (field, title) in FACETS {
            @let values = facet_values(fc, field);
            @if !values.is_empty() {
                section.facet data-field=(field) {
                    h3 { (title) }
                    ul {
                        @for (v, n) in values.iter().take(FACET_VALUES) {
                            @let shown = if *field == "host" { names.get(v).cloned().unwrap_or_else(|| v.clone()) } else { v.clone() };
                            li {
                                a.include href=(include(p, field, v)) data-exclude=(exclude(p, field, v)) title="click to include, alt-click to exclude" { (layout::clean(&shown)) }
                                " "
                                span.n { (n) }
                                " "
                                a.exclude href=(exclude(p, field, v)) title="exclude" aria-label={"exclude " (shown)} { "−" }
                            }
                        }
                    }
                    @if values.len() > FACET_VALUES {
                        a.more href={"/timeline/values?field=" (field) "&" (qs(p))} { "every value…" }
                    }
                }
            }
        }
    }
}

fn rows_table(p: &Params, rows: &[Row], names: &HashMap<String, String>) -> Markup {
    html! {
        table.events {
            thead { tr { th { "Time" } th { "Host" } th { "Kind" } th { "User" } th { "What" } } }
            tbody {
                @if rows.is_empty() { tr { td colspan="5" { "No event matches." } } }
                @for r in rows {
                    @let host = names.get(&r.host_id).cloned().unwrap_or_else(|| r.host_id.clone());
                    tr data-event={"/timeline/events/" (r.id) "/json"} data-context={"/timeline/events/" (r.id) "/context"} data-open={"/timeline/events/" (r.id)} {
                        td.time.mono { (event_time(r)) }
                        td { a href=(include(p, "host", &r.host_id)) { (layout::clean(&host)) } }
                        td { a href=(include(p, "kind", &r.kind)) { (r.kind) } }
                        td { @if let Some(u) = &r.user { a href=(include(p, "user", u)) { (layout::clean(u)) } } }
                        td.wrap { a.event href={"/timeline/events/" (r.id)} { (short(&r.message)) } }
                    }
                }
            }
        }
    }
}

/// A message as a table row shows it: its first 300 characters (the event's page has it all).
pub(super) fn short(message: &str) -> String {
    let clean = layout::clean(message);
    match clean.char_indices().nth(300) {
        Some((at, _)) => format!("{}…", &clean[..at]),
        None => clean,
    }
}

/// An event's time as a person reads it: to the second, or marked when it is not a time the
/// source recorded (guessed from a file's mtime or a year) or unknown.
pub(super) fn event_time(r: &Row) -> Markup {
    html! {
        @if r.time_ns == 0 { span.unknown title="the source gave no time" { "unknown" } }
        @else if r.time_inferred {
            span.inferred title={"inferred (" (r.time_source.as_deref().unwrap_or("guessed")) "), not recorded by the source"} { "~" (layout::time(&r.time)) }
        }
        @else { (layout::time(&r.time)) }
    }
}

#[derive(Deserialize)]
struct ValuesQuery {
    field: String,
    #[serde(default)]
    offset: u32,
    #[serde(flatten)]
    search: Params,
}

fn column(field: &str) -> PageResult<Column> {
    ql::FIELDS
        .iter()
        .find(|(f, _)| *f == field)
        .map(|(_, c)| *c)
        .ok_or_else(|| {
            PageError(
                StatusCode::BAD_REQUEST,
                format!(
                    "unknown field {field:?}; fields: {}",
                    ql::FIELDS
                        .iter()
                        .map(|(f, _)| *f)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
        })
}

async fn values_page(
    AxState(state): AxState<S>,
    Extension(viewer): Extension<Viewer>,
    Query(v): Query<ValuesQuery>,
) -> PageResult<Markup> {
    let col = column(&v.field)?;
    let offset = v.offset;
    let st = state.clone();
    let search_params = v.search.clone();
    let (p, values, names) = blocking(move || {
        let (p, f) = search::resolve(st.meta(), search_params)?;
        let values = st.meta().timeline_values(&f, col, offset, 200)?;
        Ok((p, values, hostnames(&st)?))
    })
    .await?;
    let field = v.field.as_str();
    let body = html! {
        h1 { "Every " (field) " value" }
        p { a href={"/timeline?" (qs(&p))} { "← back to the search" } }
        table.values {
            thead { tr { th { (field) } th { "Events" } th {} } }
            tbody { @for (val, n) in &values {
                @let shown = if field == "host" { names.get(val).cloned().unwrap_or_else(|| val.clone()) } else { val.clone() };
                tr {
                    td { a href=(include(&p, field, val)) { (layout::clean(&shown)) } }
                    td { (n) }
                    td { a href=(exclude(&p, field, val)) { "exclude" } }
                }
            } }
        }
        @if values.len() == 200 {
            p.pager { a href={"/timeline/values?field=" (field) "&offset=" (offset + 200) "&" (qs(&p))} { "More →" } }
        }
    };
    Ok(page("Values", &viewer, "Timeline", body))
}

async fn stack_page(
    AxState(state): AxState<S>,
    Extension(viewer): Extension<Viewer>,
    Query(v): Query<StackQuery>,
) -> PageResult<Markup> {
    let field = v.field.clone().unwrap_or_else(|| "exe".into());
    let col = column(&field)?;
    let rare = v.order.as_deref() != Some("top");
    let st = state.clone();
    let search_params = v.search.clone();
    let (p, stacked, names) = blocking(move || {
        let (p, f) = search::resolve(st.meta(), search_params)?;
        let stacked = st.meta().timeline_stack(&f, col, rare, 100)?;
        Ok((p, stacked, hostnames(&st)?))
    })
    .await?;
    let body = html! {
        h1 { "Stacking" }
        p { a href={"/timeline?" (qs(&p))} { "← back to the search" } }
        form.stack method="get" action="/timeline/stack" {
            @for (k, val) in qs(&p).split('&').filter_map(|kv| kv.split_once('=')) {
                input type="hidden" name=(k) value=(percent_decode(val));
            }
            select name="field" aria-label="field" {
                @for (f, _) in ql::FIELDS { @if *f != "message" { option value=(f) selected[*f == field] { (f) } } }
            }
            select name="order" aria-label="order" {
                option value="rare" selected[rare] { "least frequent first" }
                option value="top" selected[!rare] { "most frequent first" }
            }
            button type="submit" { "Stack" }
        }
        table.stack {
            thead { tr { th { (field) } th { "Events" } th { "Hosts" } } }
            tbody {
                @if stacked.is_empty() { tr { td colspan="3" { "Nothing to stack: no event of this search has a " (field) "." } } }
                @for s in &stacked {
                    @let shown = if field == "host" { names.get(&s.value).cloned().unwrap_or_else(|| s.value.clone()) } else { s.value.clone() };
                    tr {
                        td.wrap { a href=(include(&p, &field, &s.value)) { (layout::clean(&shown)) } }
                        td { (s.events) } td { (s.hosts) }
                    }
                }
            }
        }
    };
    Ok(page("Stacking", &viewer, "Timeline", body))
}

#[derive(Deserialize)]
struct StackQuery {
    field: Option<String>,
    order: Option<String>,
    #[serde(flatten)]
    search: Params,
}

/// The inverse of [`urlencode`], for the hidden fields rebuilt from a query string.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_keep_the_search_and_add_terms() {
        let p = Params {
            query: Some("kind:process_exec".into()),
            last: Some("1h".into()),
            ..Params::default()
        };
        assert_eq!(
            include(&p, "exe", "/usr/bin/curl"),
            "/timeline?query=kind%3Aprocess_exec%20exe%3A/usr/bin/curl&last=1h"
        );
        assert_eq!(
            exclude(&p, "user", "a b"),
            "/timeline?query=kind%3Aprocess_exec%20-user%3A%22a%20b%22&last=1h"
        );
        assert_eq!(percent_decode("a%20b%3A%22"), "a b:\"");
        assert_eq!(percent_decode("100%"), "100%");
    }
}
