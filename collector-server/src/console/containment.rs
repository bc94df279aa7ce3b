//! Containment on a host's page: what is isolated or frozen now (who, when, why, the hash of
//! the rules in force), the history of actions with the agent's answers, and a form to
//! isolate, release, freeze, thaw, kill or mark for a last breath (`POST /hosts/{id}/contain`).

use super::layout::{self, status};
use super::{PageError, PageResult, Viewer, S};
use crate::storage::HostRow;
use axum::extract::{Form, Path, State as AxState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::post;
use axum::{Extension, Router};
use cairn_protocol::containment::{Action, Allow, Request, Target};
use maud::{html, Markup};
use serde::Deserialize;

pub(super) fn routes() -> Router<S> {
    Router::new().route("/hosts/{id}/contain", post(contain))
}

fn target(t: &Target) -> String {
    t.describe()
}

/// The containment card of a host's page.
pub(super) fn card(state: &S, viewer: &Viewer, h: &HostRow) -> PageResult<Markup> {
    let history = state.containments.history(&h.id)?;
    let now = crate::containment::in_force(&history);
    Ok(html! {
        div.card #containment {
            h2 { "Containment" }
            @if now.is_empty() { p { "Nothing is isolated, frozen or marked for a last breath on this host." } }
            @for f in &now {
                p.error {
                    span.badge.bad { (f.state.to_uppercase()) } " " (target(&f.target))
                    " since " (layout::time(&f.since)) " by " (layout::clean(&f.by)) ": " (layout::clean(&f.reason))
                    @if let Some(h) = &f.rules_sha256 { " " span.mono.muted { "rules " (&h[..h.len().min(16)]) } }
                }
            }
            @if !history.is_empty() {
                table #containment-history { thead { tr { th { "Asked" } th { "Action" } th { "Target" } th { "By" } th { "Reason" } th { "Status" } th { "Agent's answer" } } }
                    tbody { @for r in history.iter().take(20) { tr {
                        td { (layout::time(&r.requested_at)) } td { (r.request.action.as_str()) } td { (target(&r.request.target)) }
                        td { (layout::clean(&r.request.requested_by)) } td.wrap { (layout::clean(&r.request.reason)) }
                        td { (status(r.status.as_str())) }
                        td.wrap { @if let Some(o) = &r.outcome {
                            @if o.ok { (layout::clean(&o.mechanism)) @if let Some(ms) = o.verified_rtt_ms { ", collector reached in " (format!("{ms:.0}")) " ms" } }
                            @else { @if o.rolled_back { "rolled back: " } (layout::clean(o.error.as_deref().unwrap_or("failed"))) }
                        } }
                    } } }
                }
            }
            @if viewer.can_act() {
                form.contain method="post" action={"/hosts/" (h.id) "/contain"} {
                    input type="hidden" name="csrf" value=(viewer.csrf);
                    label for="c-action" { "Action" }
                    select #c-action name="action" {
                        @for a in ["isolate", "release", "freeze", "thaw", "kill", "mark_last_breath", "unmark_last_breath"] { option value=(a) { (a.replace('_', " ")) } }
                    }
                    label for="c-container" { "Container id (empty: the whole host)" }
                    input #c-container type="text" name="container";
                    label for="c-pid" { "Process id (freeze, thaw, kill a process tree)" }
                    input #c-pid type="number" name="pid" min="2";
                    label for="c-allow" { "Keep reachable (isolate), one per line: CIDR[,tcp/PORT|udp/PORT][,note]" }
                    textarea #c-allow name="allow" rows="2" {}
                    label for="c-reason" { "Reason (goes into the host's chain of custody)" }
                    input #c-reason type="text" name="reason" required;
                    p { button type="submit" { "Contain" } }
                }
            }
        }
    })
}

#[derive(Deserialize)]
struct ContainForm {
    #[serde(default)]
    csrf: String,
    action: String,
    reason: String,
    #[serde(default)]
    container: String,
    #[serde(default)]
    pid: String,
    #[serde(default)]
    allow: String,
}

fn bad(m: impl Into<String>) -> PageError {
    PageError(StatusCode::BAD_REQUEST, m.into())
}

async fn contain(
    AxState(state): AxState<S>,
    Extension(viewer): Extension<Viewer>,
    Path(id): Path<String>,
    Form(f): Form<ContainForm>,
) -> PageResult<Response> {
    viewer.check_csrf(&f.csrf)?;
    viewer.require_act()?;
    let host = crate::hosts::resolve(state.meta(), &id)?;
    let action = match f.action.as_str() {
        "isolate" => Action::Isolate,
        "release" => Action::Release,
        "freeze" => Action::Freeze,
        "thaw" => Action::Thaw,
        "kill" => Action::Kill,
        "mark_last_breath" => Action::MarkLastBreath,
        "unmark_last_breath" => Action::UnmarkLastBreath,
        other => return Err(bad(format!("unknown action {other:?}"))),
    };
    let container = f.container.trim().to_ascii_lowercase();
    let target = match (container.is_empty(), f.pid.trim()) {
        (false, "") => Target::Container { id: container },
        (true, "") => Target::Host,
        (true, p) => Target::Process {
            pid: p
                .parse()
                .map_err(|_| bad(format!("process id {p:?} is not a number")))?,
        },
        (false, _) => return Err(bad("name a container or a process id, not both")),
    };
    let allow = f
        .allow
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(Allow::parse_spec)
        .collect::<Result<Vec<_>, _>>()
        .map_err(bad)?;
    let req = Request {
        id: String::new(),
        action,
        target,
        allow,
        reason: f.reason,
        requested_by: String::new(),
    };
    state.containments.request(&host, req, &viewer.actor())?;
    let mut r = Redirect::to(&format!("/hosts/{}#containment", host.id)).into_response();
    *r.status_mut() = StatusCode::SEE_OTHER;
    Ok(r)
}
