//! `/`: the fleet — every host, whether it is connected now, its sensor, what it lost, its
//! readiness with the failing checks named; and the fleet's readiness per day as a chart.

use super::layout::{self, page, status, val};
use super::{PageResult, Viewer, S};
use axum::extract::State as AxState;
use axum::routing::get;
use axum::{Extension, Router};
use maud::{html, Markup};
use serde_json::Value;

pub(super) fn routes() -> Router<S> {
    Router::new().route("/", get(fleet))
}

/// The checks that failed or warned in a host's last self-test.
pub(super) fn failing_checks(history: &[Value]) -> Vec<(String, String)> {
    history
        .first()
        .and_then(|r| r["checks"].as_array())
        .into_iter()
        .flatten()
        .filter(|c| c["status"] != "pass")
        .map(|c| (val(&c["id"]), val(&c["status"])))
        .collect()
}

/// Stacked bars of pass / warn / fail per day, drawn here from numbers only.
pub(super) fn readiness_chart(per_day: &[Value]) -> String {
    let w = 16;
    let h = 80.0;
    let max = per_day
        .iter()
        .map(|d| {
            d["pass"].as_u64().unwrap_or(0)
                + d["warn"].as_u64().unwrap_or(0)
                + d["fail"].as_u64().unwrap_or(0)
        })
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let mut out = format!(
        r#"<svg class="chart" role="img" aria-label="readiness per day" width="{}" height="100" viewBox="0 0 {} 100">"#,
        (per_day.len() * w + 10).max(160),
        (per_day.len() * w + 10).max(160)
    );
    for (i, d) in per_day.iter().enumerate() {
        let mut y = h;
        for (key, colour) in [
            ("pass", "#1a7f37"),
            ("warn", "#9a6700"),
            ("fail", "#cf222e"),
        ] {
            let n = d[key].as_u64().unwrap_or(0) as f64;
            let bar = n / max * h;
            if bar > 0.0 {
                y -= bar;
                out.push_str(&format!(
                    r#"<rect x="{}" y="{y:.1}" width="{}" height="{bar:.1}" fill="{colour}"><title>{} {key}: {n}</title></rect>"#,
                    i * w + 4,
                    w - 3,
                    d["day"].as_str().unwrap_or("").chars().filter(|c| c.is_ascii_digit() || *c == '-').collect::<String>()
                ));
            }
        }
    }
    if let (Some(first), Some(last)) = (per_day.first(), per_day.last()) {
        let day = |d: &Value| {
            d["day"]
                .as_str()
                .unwrap_or("")
                .chars()
                .filter(|c| c.is_ascii_digit() || *c == '-')
                .collect::<String>()
        };
        out.push_str(&format!(r#"<text x="4" y="95">{}</text>"#, day(first)));
        if per_day.len() > 1 {
            out.push_str(&format!(
                r#"<text x="{}" y="95" text-anchor="end">{}</text>"#,
                per_day.len() * w + 6,
                day(last)
            ));
        }
    }
    out.push_str("</svg>");
    out
}

async fn fleet(
    AxState(state): AxState<S>,
    Extension(viewer): Extension<Viewer>,
) -> PageResult<Markup> {
    let hosts = state.meta().list_hosts()?;
    let per_day = state.meta().fleet_readiness(30)?;
    let mut rows = Vec::new();
    for h in hosts.iter().filter(|h| h.retired_at.is_none()) {
        let history = state.meta().readiness_history(&h.id, 1)?;
        rows.push((
            h.clone(),
            state.sessions.is_connected(&h.id),
            failing_checks(&history),
            state.containments.in_force(&h.id)?,
        ));
    }
    let connected = rows.iter().filter(|r| r.1).count();
    let body = html! {
        h1 { "Fleet" }
        p.muted { (rows.len()) " hosts, " (connected) " connected now." }
        div.card {
            h2 { "Readiness per day (last 30 days)" }
            @if per_day.is_empty() { p.muted { "No self-test reports yet." } }
            @else { (layout::svg(readiness_chart(&per_day))) }
        }
        table #hosts {
            thead { tr {
                th { "Host" } th { "Instance" } th { "Containers" } th { "Agent" } th { "Connected" }
                th { "Last seen" } th { "Sensor" } th.num { "Events lost" } th { "Readiness" } th { "Failing checks" }
            } }
            tbody {
                @for (h, conn, failing, contained) in &rows {
                    @let st = h.status.clone().unwrap_or(Value::Null);
                    tr {
                        td { a href={"/hosts/" (h.id)} { (layout::clean(&h.hostname)) } br; span.muted.mono { (&h.id[..h.id.len().min(8)]) }
                            @for f in contained { br; span.badge.bad title={(layout::clean(&f.by)) ": " (layout::clean(&f.reason))} { (f.state) " " (f.target.describe()) } } }
                        td.mono { (h.instance_id.as_deref().map(layout::clean).unwrap_or_else(|| "—".into())) }
                        td { (st["containers"].as_array().map(|c| c.len()).unwrap_or(0)) }
                        td.mono { (h.agent_version.as_deref().map(layout::clean).unwrap_or_else(|| "—".into())) }
                        td { @if *conn { (status("connected")) } @else { span.muted { "no" } } }
                        td { (layout::opt_time(&h.last_seen)) }
                        td { (val(&st["sensor_mode"])) @if let Some(r) = st["sensor_reason"].as_str() { br; span.muted { (layout::clean(r)) } } }
                        td.num { (val(&st["events_lost"])) }
                        td { @match &h.readiness { Some(r) => (status(r)), None => span.muted { "—" } } }
                        td { @for (id, s) in failing { span class={"badge " (if s == "fail" { "bad" } else { "warn" })} { (id) } " " } }
                    }
                }
            }
        }
    };
    Ok(page("Fleet", &viewer, "Fleet", body))
}
