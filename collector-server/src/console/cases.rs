//! Working together: stars, tags and comments on events and collections (author and time
//! kept), and `/cases`, which group collections, saved searches and events under a title and
//! a status so everyone on an incident opens the same page; a case's events export as
//! Timesketch JSONL.

use super::auth::{safe_next, urlencode};
use super::layout::{self, page, status};
use super::{blocking, hostnames, see_other, PageError, PageResult, Viewer, S};
use crate::storage::cases::{Annotation, Case, CaseLink, Note, Target};
use crate::timeline::query::Row;
use axum::extract::{Form, Path, State as AxState};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use maud::{html, Markup};
use serde::Deserialize;

/// Longest comment or tag kept.
const MAX_TEXT: usize = 10_000;
/// Events a case exports at most.
const MAX_CASE_EVENTS: usize = 10_000;

pub(super) fn routes() -> Router<S> {
    Router::new()
        .route("/notes", post(annotate))
        .route("/cases", get(list).post(create))
        .route("/cases/{id}", get(show))
        .route("/cases/{id}/status", post(set_status))
        .route("/cases/{id}/links", post(link))
        .route("/cases/{id}/links/delete", post(unlink))
        .route("/cases/{id}/last-breath", post(mark_last_breath))
        .route("/cases/{id}/export", get(export))
}

fn bad(msg: impl Into<String>) -> PageError {
    PageError(StatusCode::BAD_REQUEST, msg.into())
}

/// The annotations of one thing and the open cases it could join, read before rendering.
pub(super) struct Notes {
    list: Vec<Annotation>,
    open_cases: Vec<Case>,
}

pub(super) fn notes_block(state: &S, target: Target, id: &str) -> PageResult<Notes> {
    Ok(Notes {
        list: state.meta().annotations(target, id)?,
        open_cases: state
            .meta()
            .cases()?
            .into_iter()
            .filter(|c| c.status == "open")
            .collect(),
    })
}

impl Notes {
    pub(super) fn render(&self, viewer: &Viewer, target: Target, id: &str, back: &str) -> Markup {
        let stars: Vec<&Annotation> = self.list.iter().filter(|a| a.note == Note::Star).collect();
        let mine = stars.iter().any(|a| a.author == viewer.actor());
        let tags: Vec<&Annotation> = self.list.iter().filter(|a| a.note == Note::Tag).collect();
        let comments: Vec<&Annotation> = self
            .list
            .iter()
            .filter(|a| a.note == Note::Comment)
            .collect();
        let hidden = |note: &str| {
            html! {
                input type="hidden" name="csrf" value=(viewer.csrf);
                input type="hidden" name="target" value=(target.as_str());
                input type="hidden" name="target_id" value=(id);
                input type="hidden" name="note" value=(note);
                input type="hidden" name="back" value=(back);
            }
        };
        html! {
            section.notes {
                h2 { "Notes" }
                p.stars {
                    span.star-count { "★ " (stars.len()) }
                    @for a in &stars { " " span.author { (layout::clean(&a.author)) } }
                    @if viewer.can_act() {
                        form.inline method="post" action="/notes" {
                            (hidden(if mine { "unstar" } else { "star" }))
                            button.star type="submit" { @if mine { "Unstar" } @else { "Star" } }
                        }
                    }
                }
                @if !tags.is_empty() {
                    p.tags { @for t in &tags { span.tag title={(t.author) " · " (t.at)} { (layout::clean(&t.text)) } " " } }
                }
                @for c in &comments {
                    div.comment {
                        p.meta { (layout::clean(&c.author)) " · " (layout::time(&c.at)) }
                        p.text { (layout::clean(&c.text)) }
                    }
                }
                @if viewer.can_act() {
                    form.comment method="post" action="/notes" {
                        (hidden("comment"))
                        textarea name="text" rows="2" placeholder="comment" aria-label="comment" required {}
                        button type="submit" { "Comment" }
                    }
                    form.add-tag method="post" action="/notes" {
                        (hidden("tag"))
                        input type="text" name="text" placeholder="tag" aria-label="tag" required;
                        button type="submit" { "Tag" }
                    }
                    @if !self.open_cases.is_empty() {
                        form.add-to-case method="post" action="/cases/0/links" {
                            input type="hidden" name="csrf" value=(viewer.csrf);
                            input type="hidden" name="target" value=(target.as_str());
                            input type="hidden" name="target_id" value=(id);
                            input type="hidden" name="back" value=(back);
                            select name="case" aria-label="case" {
                                @for c in &self.open_cases { option value=(c.id) { (layout::clean(&c.title)) } }
                            }
                            button type="submit" { "Add to case" }
                        }
                    }
                }
            }
        }
    }
}

/// The thing a form names must exist: a note on nothing is refused.
fn check_target(state: &S, target: &str, id: &str) -> PageResult<(Target, String)> {
    let t = Target::parse(target).ok_or_else(|| {
        bad(format!(
            "unknown target {target:?}: event, collection or search"
        ))
    })?;
    let id = match t {
        Target::Event => {
            let n: i64 = id
                .parse()
                .map_err(|_| bad(format!("{id:?} is not an event id")))?;
            if state.meta().timeline_event(n)?.is_none() {
                return Err(PageError(StatusCode::NOT_FOUND, format!("no event {n}")));
            }
            n.to_string()
        }
        Target::Collection => state.collections.get(id)?.id,
        Target::Search => {
            if state.meta().saved_search(id)?.is_none() {
                return Err(PageError(
                    StatusCode::NOT_FOUND,
                    format!("no saved search {id:?}"),
                ));
            }
            id.to_string()
        }
    };
    Ok((t, id))
}

fn text(s: &str) -> PageResult<String> {
    let s = s.trim();
    if s.is_empty() || s.chars().count() > MAX_TEXT {
        return Err(bad(format!(
            "a comment or tag is 1 to {MAX_TEXT} characters"
        )));
    }
    Ok(s.to_string())
}

#[derive(Deserialize)]
struct NoteForm {
    #[serde(default)]
    csrf: String,
    target: String,
    target_id: String,
    note: String,
    #[serde(default)]
    text: String,
    back: Option<String>,
}

async fn annotate(
    AxState(state): AxState<S>,
    Extension(viewer): Extension<Viewer>,
    Form(f): Form<NoteForm>,
) -> PageResult<Response> {
    viewer.check_csrf(&f.csrf)?;
    viewer.require_act()?;
    let back = safe_next(f.back.as_deref());
    let st = state.clone();
    let author = viewer.actor();
    blocking(move || {
        let (t, id) = check_target(&st, &f.target, &f.target_id)?;
        let m = st.meta();
        match f.note.as_str() {
            "star" => m.annotate(t, &id, Note::Star, "", &author)?,
            "unstar" => m.unstar(t, &id, &author)?,
            "tag" => m.annotate(t, &id, Note::Tag, &text(&f.text)?, &author)?,
            "comment" => m.annotate(t, &id, Note::Comment, &text(&f.text)?, &author)?,
            other => {
                return Err(bad(format!(
                    "unknown note {other:?}: star, unstar, tag or comment"
                )))
            }
        }
        Ok(())
    })
    .await?;
    Ok(see_other(&back))
}

async fn list(
    AxState(state): AxState<S>,
    Extension(viewer): Extension<Viewer>,
) -> PageResult<Markup> {
    let st = state.clone();
    let cases = blocking(move || Ok(st.meta().cases()?)).await?;
    let body = html! {
        h1 { "Cases" }
        @if viewer.can_act() {
            form.new-case method="post" action="/cases" {
                input type="hidden" name="csrf" value=(viewer.csrf);
                input type="text" name="title" placeholder="what happened (web-1 intrusion, 2026-12-01)" aria-label="title" required;
                button type="submit" { "Open a case" }
            }
        }
        table.cases {
            thead { tr { th { "Case" } th { "Status" } th { "Opened by" } th { "Opened" } } }
            tbody {
                @if cases.is_empty() { tr { td colspan="4" { "No case yet." } } }
                @for c in &cases { tr {
                    td { a href={"/cases/" (c.id)} { (layout::clean(&c.title)) } }
                    td { (status(&c.status)) }
                    td { (layout::clean(&c.created_by)) }
                    td { (layout::time(&c.created_at)) }
                } }
            }
        }
    };
    Ok(page("Cases", &viewer, "Cases", body))
}

#[derive(Deserialize)]
struct CreateForm {
    #[serde(default)]
    csrf: String,
    title: String,
}

async fn create(
    AxState(state): AxState<S>,
    Extension(viewer): Extension<Viewer>,
    Form(f): Form<CreateForm>,
) -> PageResult<Response> {
    viewer.check_csrf(&f.csrf)?;
    viewer.require_act()?;
    let title = f.title.trim().to_string();
    if title.is_empty() || title.chars().count() > 200 {
        return Err(bad("a case's title is 1 to 200 characters"));
    }
    let st = state.clone();
    let by = viewer.actor();
    let c = blocking(move || Ok(st.meta().create_case(&title, &by)?)).await?;
    Ok(see_other(&format!("/cases/{}", c.id)))
}

/// The timeline event a case links to (none if it is gone from the timeline).
fn linked_event(state: &S, l: &CaseLink) -> PageResult<Option<Row>> {
    match l.target_id.parse() {
        Ok(n) => Ok(state.meta().timeline_event(n)?.map(Row::from)),
        Err(_) => Ok(None),
    }
}

fn load_case(state: &S, id: i64) -> PageResult<Case> {
    state
        .meta()
        .case(id)?
        .ok_or_else(|| PageError(StatusCode::NOT_FOUND, format!("no case {id}")))
}

async fn show(
    AxState(state): AxState<S>,
    Extension(viewer): Extension<Viewer>,
    Path(id): Path<i64>,
) -> PageResult<Markup> {
    let st = state.clone();
    let (case, links, events, collections) = blocking(move || {
        let case = load_case(&st, id)?;
        let links = st.meta().case_links(id)?;
        let mut events = Vec::new();
        let mut collections = Vec::new();
        for l in &links {
            match l.target {
                Target::Event => {
                    if let Some(e) = linked_event(&st, l)? {
                        events.push(e);
                    }
                }
                Target::Collection => {
                    if let Ok(c) = st.collections.get(&l.target_id) {
                        collections.push(c);
                    }
                }
                Target::Search => {}
            }
        }
        events.sort_by_key(|r| (r.time_ns, r.id));
        Ok((case, links, events, collections))
    })
    .await?;
    let searches: Vec<&CaseLink> = links
        .iter()
        .filter(|l| l.target == Target::Search)
        .collect();
    let unlink = |l: &CaseLink| {
        html! {
            @if viewer.can_act() {
                form.inline method="post" action={"/cases/" (id) "/links/delete"} {
                    input type="hidden" name="csrf" value=(viewer.csrf);
                    input type="hidden" name="target" value=(l.target.as_str());
                    input type="hidden" name="target_id" value=(l.target_id);
                    button type="submit" { "remove" }
                }
            }
        }
    };
    let link_of = |t: Target, tid: &str| links.iter().find(|l| l.target == t && l.target_id == tid);
    let body = html! {
        h1 { (layout::clean(&case.title)) " " (status(&case.status)) }
        p { "Opened by " (layout::clean(&case.created_by)) " on " (layout::time(&case.created_at)) "." }
        @if viewer.can_act() {
            form.inline method="post" action={"/cases/" (id) "/status"} {
                input type="hidden" name="csrf" value=(viewer.csrf);
                input type="hidden" name="status" value=(if case.status == "open" { "closed" } else { "open" });
                button type="submit" { @if case.status == "open" { "Close the case" } @else { "Reopen the case" } }
            }
        }
        @if viewer.can_act() && case.status == "open" && !collections.is_empty() {
            form.inline #case-last-breath method="post" action={"/cases/" (id) "/last-breath"} {
                input type="hidden" name="csrf" value=(viewer.csrf);
                input type="text" name="reason" placeholder="reason" required;
                button type="submit" { "Mark every host of this case for a last breath" }
            }
        }
        h2 { "Collections" }
        @if collections.is_empty() { p { "None yet: add one from its page." } }
        ul { @for c in &collections { li {
            a href={"/collections/" (c.id)} { (&c.id[..c.id.len().min(8)]) } " " (c.profile) " " (status(c.status.as_str())) " — " (layout::clean(&c.reason))
            @if let Some(l) = link_of(Target::Collection, &c.id) { " " (unlink(l)) }
        } } }
        h2 { "Saved searches" }
        @if searches.is_empty() { p { "None yet: add one from the timeline." } }
        ul { @for s in &searches { li {
            a href={"/timeline?saved=" (urlencode(&s.target_id))} { (layout::clean(&s.target_id)) } " " (unlink(s))
        } } }
        h2 { "Events" }
        p { a href={"/cases/" (id) "/export"} { "Export these events as Timesketch JSONL" } }
        table.events {
            thead { tr { th { "Time" } th { "Kind" } th { "What" } th { "Added by" } th {} } }
            tbody {
                @if events.is_empty() { tr { td colspan="5" { "None yet: add one from an event's page." } } }
                @for e in &events {
                    @let l = link_of(Target::Event, &e.id.to_string());
                    tr {
                        td.mono { (layout::time(&e.time)) }
                        td { (e.kind) }
                        td.wrap { a href={"/timeline/events/" (e.id)} { (layout::clean(&e.message)) } }
                        td { @if let Some(l) = l { (layout::clean(&l.added_by)) } }
                        td { @if let Some(l) = l { (unlink(l)) } }
                    }
                }
            }
        }
    };
    Ok(page(&case.title, &viewer, "Cases", body))
}

#[derive(Deserialize)]
struct StatusForm {
    #[serde(default)]
    csrf: String,
    status: String,
}

async fn set_status(
    AxState(state): AxState<S>,
    Extension(viewer): Extension<Viewer>,
    Path(id): Path<i64>,
    Form(f): Form<StatusForm>,
) -> PageResult<Response> {
    viewer.check_csrf(&f.csrf)?;
    viewer.require_act()?;
    if !matches!(f.status.as_str(), "open" | "closed") {
        return Err(bad(format!("a case is open or closed, not {:?}", f.status)));
    }
    let st = state.clone();
    blocking(move || {
        if !st.meta().set_case_status(id, &f.status)? {
            return Err(PageError(StatusCode::NOT_FOUND, format!("no case {id}")));
        }
        Ok(())
    })
    .await?;
    Ok(see_other(&format!("/cases/{id}")))
}

#[derive(Deserialize)]
struct ReasonForm {
    #[serde(default)]
    csrf: String,
    reason: String,
}

/// `s` cut to at most `max` bytes, on a character boundary (the title may be long).
fn clip(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// The hosts a case concerns: those of its collections and of its events.
fn case_hosts(state: &S, id: i64) -> PageResult<Vec<String>> {
    let mut hosts = std::collections::BTreeSet::new();
    for l in state.meta().case_links(id)? {
        match l.target {
            Target::Collection => {
                if let Ok(c) = state.collections.get(&l.target_id) {
                    hosts.insert(c.host_id);
                }
            }
            Target::Event => {
                if let Some(e) = linked_event(state, &l)? {
                    hosts.insert(e.host_id);
                }
            }
            Target::Search => {}
        }
    }
    Ok(hosts.into_iter().collect())
}

/// Every host of the case marked for a last breath (each its own containment action, in
/// each host's custody chain): an instance of the incident scaled in still sends its evidence.
async fn mark_last_breath(
    AxState(state): AxState<S>,
    Extension(viewer): Extension<Viewer>,
    Path(id): Path<i64>,
    Form(f): Form<ReasonForm>,
) -> PageResult<Response> {
    viewer.check_csrf(&f.csrf)?;
    viewer.require_act()?;
    if f.reason.trim().is_empty() {
        return Err(bad("a reason is required"));
    }
    let st = state.clone();
    let by = viewer.actor();
    blocking(move || {
        let case = load_case(&st, id)?;
        let reason = format!("case {id} ({}): {}", case.title, f.reason.trim());
        for host_id in case_hosts(&st, id)? {
            let Some(host) = st.meta().get_host(&host_id)? else {
                continue;
            };
            let req = cairn_protocol::containment::Request {
                id: String::new(),
                action: cairn_protocol::containment::Action::MarkLastBreath,
                target: cairn_protocol::containment::Target::Host,
                allow: Vec::new(),
                reason: clip(&reason, cairn_protocol::containment::MAX_REASON),
                requested_by: String::new(),
            };
            st.containments.request(&host, req, &by)?;
        }
        Ok(())
    })
    .await?;
    Ok(see_other(&format!("/cases/{id}")))
}

#[derive(Deserialize)]
struct LinkForm {
    #[serde(default)]
    csrf: String,
    target: String,
    target_id: String,
    /// From a thing's own page the case is chosen in a list (the path's id is then 0).
    case: Option<i64>,
    back: Option<String>,
}

async fn link(
    AxState(state): AxState<S>,
    Extension(viewer): Extension<Viewer>,
    Path(id): Path<i64>,
    Form(f): Form<LinkForm>,
) -> PageResult<Response> {
    viewer.check_csrf(&f.csrf)?;
    viewer.require_act()?;
    let case_id = f.case.unwrap_or(id);
    let back = f
        .back
        .as_deref()
        .map(|b| safe_next(Some(b)))
        .unwrap_or_else(|| format!("/cases/{case_id}"));
    let st = state.clone();
    let by = viewer.actor();
    blocking(move || {
        let case = load_case(&st, case_id)?;
        if case.status != "open" {
            return Err(PageError(
                StatusCode::CONFLICT,
                format!("case {case_id} is closed: reopen it to add to it"),
            ));
        }
        let (t, tid) = check_target(&st, &f.target, &f.target_id)?;
        st.meta().link_case(case_id, t, &tid, &by)?;
        Ok(())
    })
    .await?;
    Ok(see_other(&back))
}

async fn unlink(
    AxState(state): AxState<S>,
    Extension(viewer): Extension<Viewer>,
    Path(id): Path<i64>,
    Form(f): Form<LinkForm>,
) -> PageResult<Response> {
    viewer.check_csrf(&f.csrf)?;
    viewer.require_act()?;
    let st = state.clone();
    blocking(move || {
        load_case(&st, id)?;
        let t = Target::parse(&f.target).ok_or_else(|| bad("unknown target"))?;
        st.meta().unlink_case(id, t, &f.target_id)?;
        Ok(())
    })
    .await?;
    Ok(see_other(&format!("/cases/{id}")))
}

async fn export(
    AxState(state): AxState<S>,
    Extension(_viewer): Extension<Viewer>,
    Path(id): Path<i64>,
) -> PageResult<Response> {
    let st = state.clone();
    let body = blocking(move || {
        load_case(&st, id)?;
        let names = hostnames(&st)?;
        let mut rows = Vec::new();
        for l in st.meta().case_links(id)? {
            if l.target != Target::Event || rows.len() >= MAX_CASE_EVENTS {
                continue;
            }
            if let Some(e) = linked_event(&st, &l)? {
                rows.push(e);
            }
        }
        rows.sort_by_key(|r| (r.time_ns, r.id));
        let mut out = Vec::new();
        for r in &rows {
            let host = names.get(&r.host_id).map(String::as_str).unwrap_or("");
            let line = serde_json::to_vec(&crate::timeline::export::timesketch_object(r, host))
                .map_err(|e| PageError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
            out.extend(line);
            out.push(b'\n');
        }
        Ok(out)
    })
    .await?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/x-ndjson".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"cairn-case-{id}.jsonl\""),
            ),
        ],
        body,
    )
        .into_response())
}
