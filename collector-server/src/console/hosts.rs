//! `/hosts/{id}`: one host — who it is, its readiness check by check with what to do, its
//! collections, its recent live events, and what its latest volatile collection saw: the
//! process tree, the processes with their executables' hashes (deleted binaries marked), the
//! network connections with the processes that own them. And a form to collect from it.

use super::layout::{self, page, status, val};
use super::{PageError, PageResult, Viewer, S};
use crate::collections::Ask;
use crate::storage::{CollectionStatus, HostRow, ItemStatus};
use axum::extract::{Form, Path, State as AxState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use maud::{html, Markup};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;

pub(super) fn routes() -> Router<S> {
    Router::new()
        .route("/hosts/{id}", get(host))
        .route("/hosts/{id}/collect", post(collect))
}

/// Documents of the newest finished volatile collection of a host that has them.
fn latest_snapshot(state: &S, host: &HostRow) -> PageResult<Option<(String, Value, Value)>> {
    for c in state.meta().list_collections(Some(&host.id), None, 50)? {
        if !matches!(
            c.status,
            CollectionStatus::Sealed | CollectionStatus::Partial
        ) {
            continue;
        }
        let items = state.meta().items_of_collection(&c.id)?;
        let doc = |name: &str| -> PageResult<Value> {
            let Some(i) = items
                .iter()
                .find(|i| i.name == name && i.status == ItemStatus::Sealed)
            else {
                return Ok(Value::Null);
            };
            // A snapshot larger than this is not drawn here (it is still downloadable).
            let reader = crate::evidence::ItemReader::open(&state.stores, &i.id)
                .map_err(|e| PageError::from(crate::error::Error::from(e)))?;
            Ok(
                serde_json::from_reader(std::io::Read::take(reader, 64 << 20))
                    .unwrap_or(Value::Null),
            )
        };
        let procs = doc("processes.json")?;
        if procs.is_null() {
            continue;
        }
        return Ok(Some((c.id.clone(), procs, doc("network.json")?)));
    }
    Ok(None)
}

/// A host's reports as the fleet chart's days: how many passed, warned and failed each day.
fn per_day(history: &[Value]) -> Vec<Value> {
    let mut days: BTreeMap<String, [u64; 3]> = BTreeMap::new();
    for r in history {
        let day: String = r["received_at"]
            .as_str()
            .unwrap_or("")
            .chars()
            .take(10)
            .collect();
        let slot = match r["status"].as_str() {
            Some("pass") => 0,
            Some("warn") => 1,
            _ => 2,
        };
        days.entry(day).or_default()[slot] += 1;
    }
    days.into_iter()
        .map(|(day, [pass, warn, fail])| serde_json::json!({"day": day, "pass": pass, "warn": warn, "fail": fail}))
        .collect()
}

/// `pstree`: children under their parents, the host's processes from one snapshot.
fn tree(procs: &[Value]) -> String {
    let mut children: BTreeMap<i64, Vec<&Value>> = BTreeMap::new();
    let pids: std::collections::HashSet<i64> =
        procs.iter().filter_map(|p| p["pid"].as_i64()).collect();
    for p in procs {
        let ppid = p["ppid"].as_i64().unwrap_or(0);
        let parent = if pids.contains(&ppid) { ppid } else { 0 };
        children.entry(parent).or_default().push(p);
    }
    let mut out = String::new();
    fn walk(
        out: &mut String,
        children: &BTreeMap<i64, Vec<&Value>>,
        pid: i64,
        depth: usize,
        seen: &mut std::collections::HashSet<i64>,
    ) {
        let Some(kids) = children.get(&pid) else {
            return;
        };
        for p in kids {
            let me = p["pid"].as_i64().unwrap_or(-1);
            if !seen.insert(me) || depth > 64 {
                continue;
            }
            let cmd = p["cmdline"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x.as_str())
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .filter(|c| !c.is_empty())
                .unwrap_or_else(|| format!("[{}]", p["comm"].as_str().unwrap_or("?")));
            let cmd: String = cmd.chars().take(200).collect();
            out.push_str(&format!(
                "{}{me} {}\n",
                "  ".repeat(depth),
                layout::clean(&cmd)
            ));
            walk(out, children, me, depth + 1, seen);
        }
    }
    let mut seen = std::collections::HashSet::new();
    walk(&mut out, &children, 0, 0, &mut seen);
    out
}

async fn host(
    AxState(state): AxState<S>,
    Extension(viewer): Extension<Viewer>,
    Path(id): Path<String>,
) -> PageResult<Markup> {
    let h = crate::hosts::resolve(state.meta(), &id)?;
    let connected = state.sessions.is_connected(&h.id);
    let history = state.meta().readiness_history(&h.id, 30)?;
    let collections = state.meta().list_collections(Some(&h.id), None, 50)?;
    let now = time::OffsetDateTime::now_utc().unix_timestamp_nanos() as i64;
    let events = state
        .meta()
        .query_events(&h.id, now - 3600 * 1_000_000_000, now, None, 50)?;
    let snapshot = latest_snapshot(&state, &h)?;
    let st = h.status.clone().unwrap_or(Value::Null);
    let body = html! {
        h1 { (layout::clean(&h.hostname)) " " @if connected { (status("connected")) } @else { span.badge.wait { "not connected" } } }
        div.grid2 {
            div.card {
                h2 { "Identity" }
                dl.facts {
                    dt { "Agent id" } dd.mono { (h.id) }
                    dt { "Instance" } dd.mono { (h.instance_id.as_deref().map(layout::clean).unwrap_or_else(|| "—".into())) }
                    dt { "Machine id" } dd.mono { (h.machine_id.as_deref().map(layout::clean).unwrap_or_else(|| "—".into())) }
                    dt { "Kernel" } dd { (h.kernel.as_deref().map(layout::clean).unwrap_or_else(|| "—".into())) }
                    dt { "Agent" } dd { (h.agent_version.as_deref().map(layout::clean).unwrap_or_else(|| "—".into())) }
                    dt { "Enrolled" } dd { (layout::time(&h.enrolled_at)) " (" (h.origin.as_str()) ")" }
                    dt { "Last seen" } dd { (layout::opt_time(&h.last_seen)) }
                    dt { "Sensor" } dd { (val(&st["sensor_mode"])) ", " (val(&st["events_lost"])) " events lost" }
                    @if let Some(p) = st["uploads_paused"].as_str() { dt { "Uploads" } dd.error { (layout::clean(p)) } }
                    @if let Some(r) = &h.retired_at { dt { "Retired" } dd.error { (layout::time(r)) " " (h.retired_reason.as_deref().map(layout::clean).unwrap_or_default()) } }
                }
                @if let Some(cs) = st["containers"].as_array() {
                    @if !cs.is_empty() {
                        h2 { "Containers" }
                        table { thead { tr { th { "Container" } th { "Runtime" } th { "Pod" } th { "Namespace" } } }
                            tbody { @for c in cs { tr { td.mono { (val(&c["id"]).chars().take(12).collect::<String>()) } td { (val(&c["runtime"])) } td { (val(&c["pod_name"])) } td { (val(&c["pod_namespace"])) } } } } }
                    }
                }
            }
            div.card {
                h2 { "Collect" }
                @if viewer.can_act() {
                    form.collect method="post" action={"/hosts/" (h.id) "/collect"} {
                        input type="hidden" name="csrf" value=(viewer.csrf);
                        label for="profile" { "Profile" }
                        select #profile name="profile" {
                            @for p in crate::collections::PROFILES { option value=(p) { (p) } }
                        }
                        label for="reason" { "Reason (goes into the chain of custody)" }
                        input #reason type="text" name="reason" required;
                        label for="pid" { "Process id (memory, full)" }
                        input #pid type="number" name="pid" min="1";
                        label for="container" { "Container id (memory, full, triage)" }
                        input #container type="text" name="container";
                        label for="paths" { "Files, one per line (file)" }
                        textarea #paths name="paths" rows="2" {}
                        p { button type="submit" { "Request collection" } }
                    }
                } @else { p.muted { "Signed in as a viewer: you can look, not collect." } }
            }
        }
        (super::containment::card(&state, &viewer, &h)?)
        div.card {
            h2 { "Readiness" }
            @if let Some(last) = history.first() {
                p { "Now " (status(last["status"].as_str().unwrap_or("?"))) " since " (layout::opt_time(&h.readiness_since)) }
                table #checks { thead { tr { th { "Check" } th { "Status" } th { "Measured" } th { "What to do" } } }
                    tbody { @for c in last["checks"].as_array().into_iter().flatten() {
                        tr { td.mono { (val(&c["id"])) } td { (status(c["status"].as_str().unwrap_or("?"))) } td.wrap { (val(&c["measured"])) } td.wrap { (val(&c["remediation"])) } }
                    } } }
                h2 { "Readiness per day" }
                (layout::svg(super::fleet::readiness_chart(&per_day(&history))))
                h2 { "History" }
                table { thead { tr { th { "Received" } th { "Verdict" } th.num { "Pass" } th.num { "Warn" } th.num { "Fail" } th { "Changed" } } }
                    tbody { @for r in &history { tr {
                        td { (layout::time(r["received_at"].as_str().unwrap_or(""))) } td { (status(r["status"].as_str().unwrap_or("?"))) }
                        td.num { (val(&r["passed"])) } td.num { (val(&r["warned"])) } td.num { (val(&r["failed"])) }
                        td { @if r["changed"] == true { "changed" } }
                    } } } }
            } @else { p.muted { "No self-test report yet." } }
        }
        div.card {
            h2 { "Collections" }
            (super::collections::table(&collections, &[(h.id.clone(), h.hostname.clone())].into_iter().collect(), &super::collections::sizes(&state, &collections)?))
        }
        @if let Some((cid, procs, net)) = &snapshot {
            div.card {
                h2 { "Processes" span.muted { " from collection " a href={"/collections/" (cid)} { (&cid[..8]) } } }
                @let list = procs["processes"].as_array().cloned().unwrap_or_default();
                details { summary { "Process tree (" (list.len()) ")" } div.tree { (tree(&list)) } }
                table #processes { thead { tr { th.num { "PID" } th.num { "PPID" } th { "User" } th { "Command" } th { "Executable" } th { "SHA-256" } } }
                    tbody { @for p in list.iter().filter(|p| p["kernel_thread"] != true) { tr {
                        td.num { (val(&p["pid"])) } td.num { (val(&p["ppid"])) } td { (val(&p["uid"]["real"])) }
                        td.wrap { (layout::clean(&p["cmdline"].as_array().map(|a| a.iter().filter_map(|x| x.as_str()).collect::<Vec<_>>().join(" ")).unwrap_or_default())) }
                        td.wrap { (val(&p["exe"])) @if p["exe_deleted"] == true { " " span.badge.bad { "deleted" } } }
                        td.mono { (p["exe_sha256"].as_str().map(|h| h[..h.len().min(16)].to_string()).unwrap_or_else(|| "—".into())) }
                    } } } }
            }
            div.card {
                h2 { "Network" }
                table #sockets { thead { tr { th { "Proto" } th { "Local" } th { "Remote" } th { "State" } th { "Owner" } } }
                    tbody { @for proto in ["tcp", "tcp6", "udp", "udp6"] { @for s in net[proto].as_array().into_iter().flatten() { tr {
                        td { (proto) } td.mono { (val(&s["local_address"])) ":" (val(&s["local_port"])) }
                        td.mono { (val(&s["remote_address"])) ":" (val(&s["remote_port"])) } td { (val(&s["state"])) }
                        td { @for o in s["owners"].as_array().into_iter().flatten() { (val(&o["comm"])) " (" (val(&o["pid"])) ") " } }
                    } } } } }
            }
        }
        div.card {
            h2 { "Live events (last hour)" }
            table #events { thead { tr { th { "Time" } th { "Kind" } th { "Process" } th { "Detail" } } }
                tbody { @for e in events.iter().rev() { tr {
                    td { (layout::time(e["time"].as_str().unwrap_or(""))) } td { (val(&e["kind"])) }
                    td.wrap { (val(&e["process"]["exe"])) " (" (val(&e["process"]["pid"])) ")" }
                    td.wrap { @if let Some(a) = e["process"]["args"].as_array() { (layout::clean(&a.iter().filter_map(|x| x.as_str()).collect::<Vec<_>>().join(" "))) } @else if e["socket"].is_object() { (val(&e["socket"]["daddr"])) ":" (val(&e["socket"]["dport"])) } }
                } } } }
        }
    };
    Ok(page(&layout::clean(&h.hostname), &viewer, "Fleet", body))
}

#[derive(Deserialize)]
struct CollectForm {
    #[serde(default)]
    csrf: String,
    profile: String,
    reason: String,
    #[serde(default)]
    pid: String,
    #[serde(default)]
    container: String,
    #[serde(default)]
    paths: String,
}

async fn collect(
    AxState(state): AxState<S>,
    Extension(viewer): Extension<Viewer>,
    Path(id): Path<String>,
    Form(f): Form<CollectForm>,
) -> PageResult<Response> {
    viewer.check_csrf(&f.csrf)?;
    viewer.require_act()?;
    let host = crate::hosts::resolve(state.meta(), &id)?;
    let pid = match f.pid.trim() {
        "" => None,
        p => Some(p.parse::<u32>().map_err(|_| {
            PageError(
                StatusCode::BAD_REQUEST,
                format!("process id {p:?} is not a number"),
            )
        })?),
    };
    let ask = Ask {
        profile: f.profile,
        reason: f.reason,
        paths: f
            .paths
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect(),
        pid,
        container_id: Some(f.container.trim().to_string()).filter(|c| !c.is_empty()),
        devices: Vec::new(),
    };
    ask.check()?;
    let req = ask.into_request(viewer.actor());
    state
        .collections
        .request(&host, &req, json!({"via": "console"}))?;
    let mut r = Redirect::to(&format!("/collections/{}", req.collection_id)).into_response();
    *r.status_mut() = StatusCode::SEE_OTHER;
    Ok(r)
}
