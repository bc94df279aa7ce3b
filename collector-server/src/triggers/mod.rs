//! Triggers: detection systems start collections themselves.
//!
//! `POST /api/v1/triggers/generic`, `/guardduty` and `/falco` read the alert ([`parse`]),
//! find the host from what agents report (instance id, hostname, the containers and pods in
//! their heartbeat status), pick a profile and keep alert storms to one collection
//! ([`policy`]), then start the collection through the same path as `POST /collections`.

pub mod parse;
pub mod policy;

pub use policy::TriggerConfig;

use crate::api::{ApiError, ApiResult, Caller, COLLECTORS};
use crate::db::HostRow;
use crate::server::State;
use axum::body::Bytes;
use axum::extract::{Path, State as AxState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Json, Router};
use cairn_protocol::manifest::CollectRequest;
use parse::{Alert, BadAlert, Lookup};
use policy::{Admit, StormGuard};
use serde_json::{json, Value};
use std::sync::Arc;

/// The trigger configuration and the storm guard's memory.
pub struct Triggers {
    pub config: TriggerConfig,
    guard: StormGuard,
}

impl Triggers {
    pub fn new(config: TriggerConfig) -> Triggers {
        Triggers {
            config,
            guard: StormGuard::default(),
        }
    }
}

pub fn routes() -> Router<Arc<State>> {
    Router::new().route("/api/v1/triggers/{format}", post(trigger))
}

impl From<BadAlert> for ApiError {
    fn from(e: BadAlert) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, e.to_string())
    }
}

/// The containers a host's agent reported in its last heartbeat.
fn containers(h: &HostRow) -> Vec<cairn_protocol::wire::ContainerInfo> {
    h.status
        .as_ref()
        .and_then(|s| s.get("containers"))
        .and_then(|c| serde_json::from_value(c.clone()).ok())
        .unwrap_or_default()
}

fn first_label(h: &str) -> &str {
    h.split('.').next().unwrap_or(h)
}

/// Whether a host matches a lookup; for container and pod matches, the full container id.
fn matches(h: &HostRow, l: &Lookup) -> Option<Option<String>> {
    let hit = |b: bool| b.then_some(None);
    match l {
        Lookup::Any(q) => hit(h.id == *q
            || h.hostname == *q
            || h.instance_id.as_deref() == Some(q)
            || h.machine_id.as_deref() == Some(q)),
        Lookup::InstanceId(i) => hit(h.instance_id.as_deref() == Some(i)),
        Lookup::Hostname(n) => hit(h.hostname.eq_ignore_ascii_case(n)
            || first_label(&h.hostname).eq_ignore_ascii_case(first_label(n))),
        Lookup::ContainerId(c) => containers(h)
            .into_iter()
            .find(|x| c.len() >= 12 && x.id.starts_with(c.as_str()))
            .map(|x| Some(x.id)),
        Lookup::Pod {
            name,
            namespace,
            prefix,
        } => containers(h)
            .into_iter()
            .find(|x| {
                let n = x.pod_name.as_deref().unwrap_or("");
                let name_ok = if *prefix {
                    n.starts_with(&format!("{name}-"))
                } else {
                    n == name
                };
                let ns_ok = match (namespace, &x.pod_namespace) {
                    (Some(want), Some(have)) => want == have,
                    _ => true,
                };
                name_ok && ns_ok
            })
            .map(|x| Some(x.id)),
    }
}

/// The one enrolled host the lookups name: the first lookup that matches anything decides,
/// and the later ones narrow it down when it matched several.
fn resolve(hosts: &[HostRow], lookups: &[Lookup]) -> ApiResult<(HostRow, String, Option<String>)> {
    let enrolled: Vec<&HostRow> = hosts.iter().filter(|h| h.origin == "enrolled").collect();
    for (i, l) in lookups.iter().enumerate() {
        let mut found: Vec<(&HostRow, Option<String>)> = enrolled
            .iter()
            .filter_map(|h| matches(h, l).map(|c| (*h, c)))
            .collect();
        if found.is_empty() {
            continue;
        }
        for narrower in &lookups[i + 1..] {
            if found.len() == 1 {
                break;
            }
            let narrowed: Vec<_> = found
                .iter()
                .filter(|(h, _)| matches(h, narrower).is_some())
                .cloned()
                .collect();
            if !narrowed.is_empty() {
                found = narrowed;
            }
        }
        return match found.as_slice() {
            [(h, c)] => Ok(((*h).clone(), l.to_string(), c.clone())),
            many => Err(ApiError::new(
                StatusCode::CONFLICT,
                format!(
                    "{l} matches {} hosts ({}); send a more specific alert or use POST /api/v1/collections with an agent id",
                    many.len(),
                    many.iter().map(|(h, _)| h.id.as_str()).collect::<Vec<_>>().join(", ")
                ),
            )),
        };
    }
    Err(ApiError::new(
        StatusCode::NOT_FOUND,
        format!(
            "no enrolled host matches; looked for {}",
            lookups
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", then ")
        ),
    ))
}

async fn trigger(
    AxState(state): AxState<Arc<State>>,
    Extension(caller): Extension<Caller>,
    Path(format): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    caller.require(COLLECTORS)?;
    let alert: Alert = match format.as_str() {
        "generic" => parse::generic(&body)?,
        "guardduty" => parse::guardduty(&body)?,
        "falco" => parse::falco(&body)?,
        other => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("no trigger format {other:?}; use generic, guardduty or falco"),
            ))
        }
    };
    let cfg = &state.triggers.config;
    let profile = cfg.profile_for(&alert);
    if !policy::PROFILES.contains(&profile.as_str()) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "malformed JSON: field \"profile\": unknown profile {profile:?}; profiles: {}",
                policy::PROFILES.join(", ")
            ),
        ));
    }
    if profile == "file" && alert.paths.is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed JSON: field \"paths\": profile \"file\" needs at least one path",
        ));
    }
    let hosts = state.db().list_hosts()?;
    let (host, matched_by, full_container) = resolve(&hosts, &alert.lookups)?;
    let collection_id = uuid::Uuid::new_v4().to_string();
    let answer = |id: &str, dedup: bool| {
        json!({"id": id, "host_id": host.id, "hostname": host.hostname, "profile": profile,
               "matched_by": matched_by, "deduplicated": dedup})
    };
    match state
        .triggers
        .guard
        .admit(cfg, &alert.dedup_key, &host.id, &collection_id)
    {
        Admit::Duplicate(existing) => {
            tracing::info!("trigger {} deduplicated into collection {existing}", alert.dedup_key);
            let mut v = answer(&existing, true);
            v["status"] = json!("deduplicated");
            return Ok((StatusCode::OK, Json(v)).into_response());
        }
        Admit::RateLimited(n) => {
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "host {} ({}) already had {n} triggered collections in the last {} s (rate_limit_per_host in triggers.toml)",
                    host.id, host.hostname, cfg.rate_window_secs
                ),
            ))
        }
        Admit::Start => {}
    }
    let req = CollectRequest {
        collection_id: collection_id.clone(),
        profile: profile.clone(),
        reason: alert.reason.clone(),
        requested_by: caller.actor(),
        paths: alert.paths.clone(),
        pid: alert.pid,
        container_id: full_container.or(alert.container_id.clone()),
        devices: Vec::new(),
    };
    let alert_facts = json!({"alert_source": alert.source, "rule": alert.rule, "severity": alert.severity,
                             "dedup_key": alert.dedup_key, "matched_by": matched_by});
    let connected = crate::api::start_collection(&state, &host, &req, alert_facts)?;
    tracing::info!(
        "{} trigger {:?} → collection {collection_id} ({profile}) on {} ({matched_by})",
        alert.source,
        alert.rule,
        host.hostname
    );
    let mut v: Value = answer(&collection_id, false);
    v["status"] = json!("requested");
    v["agent_connected"] = json!(connected);
    v["pid"] = json!(req.pid);
    v["container_id"] = json!(req.container_id);
    Ok((StatusCode::ACCEPTED, Json(v)).into_response())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn host(id: &str, hostname: &str, instance: Option<&str>, containers: Value) -> HostRow {
        HostRow {
            id: id.into(),
            hostname: hostname.into(),
            machine_id: None,
            instance_id: instance.map(Into::into),
            kernel: None,
            agent_version: None,
            enrolled_at: String::new(),
            last_seen: None,
            origin: "enrolled".into(),
            status: Some(json!({"sensor_mode": "ebpf", "containers": containers})),
            readiness: None,
            readiness_since: None,
            readiness_at: None,
        }
    }

    #[test]
    fn resolution_by_instance_container_pod_and_hostname() {
        let cid = "4c01db0b339c0b5a0d0a3b2e1f5c7d9e8a6b4c2d0e1f3a5b7c9d1e3f5a7b9c1d";
        let hosts = vec![
            host(
                "a",
                "ip-10-0-1-17.eu-west-1.compute.internal",
                Some("i-0aaa"),
                json!([]),
            ),
            host(
                "b",
                "ip-10-0-1-18",
                Some("i-0bbb"),
                json!([{"id": cid, "runtime": "containerd", "pod_name": "web-7d4b9c-x2kqp", "pod_namespace": "payments"}]),
            ),
        ];
        let (h, by, _) = resolve(&hosts, &[Lookup::InstanceId("i-0aaa".into())]).unwrap();
        assert_eq!(
            (h.id.as_str(), by.as_str()),
            ("a", "instance id \"i-0aaa\"")
        );
        let (h, _, c) = resolve(
            &hosts,
            &[
                Lookup::ContainerId(cid[..12].into()),
                Lookup::Hostname("x".into()),
            ],
        )
        .unwrap();
        assert_eq!(h.id, "b");
        assert_eq!(c.as_deref(), Some(cid));
        let pod = Lookup::Pod {
            name: "web".into(),
            namespace: Some("payments".into()),
            prefix: true,
        };
        assert_eq!(resolve(&hosts, &[pod]).unwrap().0.id, "b");
        let wrong_ns = Lookup::Pod {
            name: "web-7d4b9c-x2kqp".into(),
            namespace: Some("default".into()),
            prefix: false,
        };
        let e = resolve(&hosts, &[wrong_ns]).unwrap_err();
        assert_eq!(e.0, StatusCode::NOT_FOUND);
        assert!(e.1.contains("namespace \"default\""), "{}", e.1);
        assert_eq!(
            resolve(&hosts, &[Lookup::Hostname("ip-10-0-1-17".into())])
                .unwrap()
                .0
                .id,
            "a"
        );
        let e = resolve(&hosts, &[Lookup::InstanceId("i-0ccc".into())]).unwrap_err();
        assert!(e.1.contains("i-0ccc"), "{}", e.1);
    }
}
